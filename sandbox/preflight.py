"""Preflight: run a candidate train.py for a few steps at the micro preset on this machine.

A SageMaker job pays minutes of start-up (instance, image, data) before train.py's first line
runs; a candidate with a wrong reshape or a typo in a renamed variable would spend them only to
crash. `preflight(source, project_dir)` runs the candidate first where it costs seconds: in a
temporary folder with the project's pinned prepare.py beside it, through the real harness
(sandbox/harness.py: the sandboxed child, the scrubbed environment, the process-group kill, the
authenticated evaluation record with its probes), at the micro preset with a training budget of a
few steps. So the whole path runs: model construction, forward/backward, the optimizer step,
evaluate_bpb (including its causality and statelessness probes) and the summary. The candidate
passes when the harness says `ok` (or `over_budget`, see below).

What it cannot see (limits):
- Size knobs hold one value per preset (`{"gpu": 8, "cpu": 4, "micro": 2}[PRESET]`); micro reads
  the micro column, so an edit of the gpu column only (deeper, wider, bigger batch) is not
  exercised here: its shapes, memory and speed are met first on the GPU. Code changes (a new
  attention, activation, optimizer or schedule) run whatever the preset.
- CUDA-only branches (`if use_cuda:`, Flash-Attention, torch.compile, bf16 autocast) do not run
  on a CPU; micro runs eager on CPU.
- `steps` is approximate: the budget is CPU seconds on prepare's clock, so steps become a budget
  of steps x MICRO_STEP_SECONDS beyond micro's start-up allowance; the loop runs at least one step.
- A result of `over_budget` passes: with a budget of a fraction of a second, one slow step is
  enough, and speed is not what a preflight judges.
- With no micro data prepared there is nothing to run on: the result is ok=True with an explicit
  "skipped: ..." reason (never a silent pass); `autoresearch prepare --preset micro` takes seconds.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.harness import HarnessError, run_harness
from sandbox.workspace import WorkspaceError, build_workspace

PRESET = "micro"
# One micro step (depth 2, 64-dim, 1,024 tokens, 1 thread) takes 20-40 ms on this 2-core box.
MICRO_STEP_SECONDS = 0.03
SKIPPED_NO_DATA = "skipped: micro data not prepared (run `autoresearch prepare --preset micro`)"
# A workspace status that means the code ran end to end (see the module docstring).
PASSING_STATUSES = frozenset({"ok", "over_budget"})


@dataclass(frozen=True)
class PreflightResult:
    ok: bool
    reason: str          # "passed: ...", "skipped: ...", or the harness's failure reason
    log_tail: str        # the last lines train.py printed ("" when skipped)
    seconds: float       # wall time of the whole preflight

    @property
    def skipped(self) -> bool:
        return self.reason.startswith("skipped:")


def micro_data_ready(cache_dir: Path | None = None) -> bool:
    """True when prepare.py's micro data and tokenizer are where train.py will look for them
    (<cache>/micro/{data/manifest.json + the shards it lists, tokenizer/...})."""
    root = Path(cache_dir or os.environ.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch").expanduser()
    micro = root / PRESET
    tokenizer = micro / "tokenizer"
    if not ((tokenizer / "tokenizer.pkl").is_file() and (tokenizer / "token_bytes.pt").is_file()):
        return False
    try:
        manifest = json.loads((micro / "data" / "manifest.json").read_text())
        shards = [*manifest["train"], manifest["val"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((micro / "data" / name).is_file() for name in shards)


def preflight(source: str, project_dir: Path, *, steps: int = 3, timeout: float = 60.0,
              cache_dir: Path | None = None) -> PreflightResult:
    """Run `source` as train.py for about `steps` training steps at the micro preset, then its
    evaluation, through the harness. `project_dir` holds the pinned prepare.py; `cache_dir`
    overrides AUTORESEARCH_CACHE (where the micro data is). Never raises for a bad candidate."""
    t0 = time.monotonic()
    prepare = Path(project_dir) / "prepare.py"
    if not prepare.is_file():
        raise FileNotFoundError(f"{prepare} not found: preflight needs the project's pinned prepare.py "
                                f"(is {project_dir} the project root?)")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not micro_data_ready(cache_dir):
        return PreflightResult(True, SKIPPED_NO_DATA, "", round(time.monotonic() - t0, 3))

    extra_env = {"AUTORESEARCH_CACHE": str(Path(cache_dir).expanduser().resolve())} if cache_dir else None
    budget = steps * MICRO_STEP_SECONDS
    with tempfile.TemporaryDirectory(prefix="autoresearch-preflight-") as tmp:
        try:
            workspace = build_workspace(Path(tmp) / "ws", source, Path(project_dir), {"kind": "preflight"})
            result = run_harness(workspace, PRESET, budget=budget, timeout=timeout, wall_timeout=timeout,
                                 threads=1, extra_env=extra_env)
        except WorkspaceError as exc:  # the source does not parse: the candidate's problem
            return PreflightResult(False, f"crash: {exc}", "", round(time.monotonic() - t0, 3))
        except HarnessError as exc:   # a broken workspace is ours, not the candidate's: say so
            return PreflightResult(False, f"preflight could not run the harness: {exc}", "",
                                   round(time.monotonic() - t0, 3))
    seconds = round(time.monotonic() - t0, 3)
    status = result["status"]
    tail = result.get("log_tail") or ""
    if status in PASSING_STATUSES:
        note = f" (over its {budget:g}s preflight budget: {result['failure_reason']})" if status != "ok" else ""
        return PreflightResult(True, f"passed: {result['num_steps']} steps and the evaluation at {PRESET}, "
                               f"val_bpb {result['val_bpb']:.4f}, in {seconds:.1f}s{note}", tail, seconds)
    reason = result["failure_reason"] or ""
    return PreflightResult(False, reason if reason.startswith(f"{status}:") else f"{status}: {reason}", tail, seconds)
