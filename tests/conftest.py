"""The one stand-in project every orchestration test runs on, and the helpers around it.

The stand-in is a project folder like a user's: train.py, prepare.py, program.md, config.yaml,
optionally a git repository. Its train.py is INSTANT and follows the real one's output contract
(the knob block, `step ... (P%) | loss: ...` progress lines, the `---` summary); its prepare.py
has the real one's PRESETS table (read by sandbox/presets.py) and an `evaluate_bpb` that writes
the evaluator record the harness cross-checks. val_bpb is a smooth function of the knobs (its
optimum away from the defaults, so proposals can win; the cpu column scores 0.001 worse than
micro's) plus Gaussian noise of `noise`, seeded by
the execution's record path, so identical code still varies between runs like the real thing
and a given execution draws the same noise in every session. MATRIX_LR >= 0.2 diverges (NaN
loss, exit 1): a crashing candidate on demand. AUTORESEARCH_TIME_BUDGET makes each of its four
steps sleep budget/4 seconds (kill tests need runs that take a while).

Test modules import these helpers from here (`from tests.conftest import make_project, ...`),
never from each other. `make_project(..., real=True)` copies the real train.py/prepare.py
instead, for the few end-to-end tests at the micro preset (`micro_cache` prepares its data once).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.standins import linked_prepare, make_fake_cache

REPO = Path(__file__).resolve().parents[1]

STANDIN_TRAIN = '''\
"""Stand-in train.py for orchestration tests: instant, same output contract as the real one."""
import time

from prepare import PRESET, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

# Knobs: everything a candidate is expected to tune lives in this block.
DEPTH             = {"gpu": 8,     "cpu": 4,     "micro": 2}[PRESET]
ASPECT_RATIO      = {"gpu": 64,    "cpu": 32,    "micro": 32}[PRESET]
HEAD_DIM          = {"gpu": 128,   "cpu": 64,    "micro": 32}[PRESET]
TOTAL_BATCH_SIZE  = {"gpu": 2**19, "cpu": 2**13, "micro": 2**10}[PRESET]
DEVICE_BATCH_SIZE = {"gpu": 0,     "cpu": 16,    "micro": 8}[PRESET]
WINDOW_PATTERN = "SSSL"
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004
MATRIX_LR = 0.04
SCALAR_LR = 0.5
WEIGHT_DECAY = 0.2
ADAM_BETAS = (0.8, 0.95)
WARMUP_RATIO = 0.0
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.0
SEED = 42

t_start = time.time()
knobs = dict(DEPTH=DEPTH, ASPECT_RATIO=ASPECT_RATIO, HEAD_DIM=HEAD_DIM, TOTAL_BATCH_SIZE=TOTAL_BATCH_SIZE,
             DEVICE_BATCH_SIZE=DEVICE_BATCH_SIZE, WINDOW_PATTERN=WINDOW_PATTERN, EMBEDDING_LR=EMBEDDING_LR,
             UNEMBEDDING_LR=UNEMBEDDING_LR, MATRIX_LR=MATRIX_LR, SCALAR_LR=SCALAR_LR, WEIGHT_DECAY=WEIGHT_DECAY,
             ADAM_BETAS=ADAM_BETAS, WARMUP_RATIO=WARMUP_RATIO, WARMDOWN_RATIO=WARMDOWN_RATIO,
             FINAL_LR_FRAC=FINAL_LR_FRAC, SEED=SEED)
steps = 4
for step in range(1, steps + 1):
    if TIME_BUDGET > 0:
        time.sleep(TIME_BUDGET / steps)
    loss = 4.0 / step if MATRIX_LR < 0.2 else float("nan")
    print(f"step {step:05d} ({100 * step / steps:.1f}%) | loss: {loss:.6f} | lrm: 1.00 | dt: 1ms | "
          f"tok/sec: 1,000 | mfu: 0.0% | epoch: 1 | remaining: 0s", flush=True)
    if loss != loss:
        print("FAIL", flush=True)
        raise SystemExit(1)
training_seconds = time.time() - t_start
val_bpb = evaluate_bpb(knobs, Tokenizer(), DEVICE_BATCH_SIZE)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_seconds:.1f}")
print(f"total_seconds:    {time.time() - t_start:.1f}")
print(f"peak_vram_mb:     {1536.0 + 64 * DEPTH:.1f}")
print(f"mfu_percent:      {0.0:.2f}")
print(f"total_tokens_M:   {0.1:.1f}")
print(f"num_steps:        {steps}")
print(f"num_params_M:     {0.5 * DEPTH:.1f}")
print(f"depth:            {DEPTH}", flush=True)
'''

# The harness accepts only a record sealed down its pipe: tests/standins.py's linked_prepare gives
# the stand-in the harness's side of the contract (SETTINGS in, `report(val_bpb)` out).
STANDIN_PREPARE = linked_prepare('''
"""The constants train.py imports, and an evaluate_bpb that scores the knobs.

val_bpb = a smooth function of the knobs (optimum away from the defaults, so proposals can win)
plus Gaussian noise of NOISE, seeded by the attempt's scratch path (unique per execution)."""
import hashlib
import math
import os
import random

PRESET = SETTINGS.get("preset") or os.environ.get("AUTORESEARCH_PRESET", "micro")
if PRESET == "auto":
    PRESET = "cpu"
MAX_SEQ_LEN = 64
TIME_BUDGET = float(SETTINGS.get("budget", 0) or 0)
EVAL_TOKENS = 2**14
VOCAB_SIZE = 512
NOISE = float(os.environ.get("STANDIN_NOISE", "@NOISE@"))


class Tokenizer:
    pass


def make_dataloader(*args, **kwargs):
    return iter(())


def score(k):
    return (1.0 + 0.01 * k["WEIGHT_DECAY"]
            + 0.05 * abs(math.log(k["MATRIX_LR"] / 0.03))
            + 0.1 * abs(math.log(k["EMBEDDING_LR"] / 0.8))
            + 0.02 * abs(math.log(k["UNEMBEDDING_LR"] / 0.004))
            + 0.01 * abs(math.log(k["SCALAR_LR"] / 0.5))
            + 0.01 * abs(k["WARMDOWN_RATIO"] - 0.6)
            + 0.005 * abs(k["DEPTH"] - 3)
            + 0.001 * k["DEVICE_BATCH_SIZE"] / 8)      # presets differ: cpu's batch costs 0.001 more


def evaluate_bpb(model, tokenizer, batch_size):
    # seed: the attempt's path below runs/ (<tag>/generations/gen_N/<folder>/executions/<id>/...),
    # so a given execution draws the same noise in every test session, and different ones differ
    seed_text = SETTINGS.get("train", "").split("/runs/")[-1]
    rng = random.Random(hashlib.sha256(seed_text.encode()).hexdigest())
    val_bpb = round(score(model) + (rng.gauss(0.0, NOISE) if NOISE > 0 else 0.0), 6)
    return report(val_bpb, peak_memory_mb=1536.0 + 64 * model["DEPTH"])   # what train.py prints too
''')

CONFIG = {
    "run": {"preset": "micro", "backend": "local", "proposer": "heuristic", "seed": 0},
    "local": {"slots": 2, "threads_per_slot": 1, "startup_allowance_s": 30},
    "selection": {"baseline_repeats": 2, "controls_per_generation": 1, "min_delta": 0.0005, "k_sigma": 2.0},
}


def config_yaml(slots: int = 2, **sections) -> str:
    """config.yaml of the stand-in project: CONFIG with `slots`, each keyword a section whose keys
    are laid over CONFIG's (`selection={"prior_sigma": 0.0001}`)."""
    merged = {name: dict(keys) for name, keys in CONFIG.items()}
    merged["local"]["slots"] = slots
    for name, keys in sections.items():
        merged.setdefault(name, {}).update(keys)
    return yaml.safe_dump(merged, sort_keys=False)

# A human's change for the REPL's `add-diff` and replay's fixture: WEIGHT_DECAY 0.2 -> 0.1.
WD_DIFF = """--- a/train.py
+++ b/train.py
@@ -17,3 +17,3 @@
 SCALAR_LR = 0.5
-WEIGHT_DECAY = 0.2
+WEIGHT_DECAY = 0.1
 ADAM_BETAS = (0.8, 0.95)
"""

# $EDITOR for the REPL: a real program that edits the file it is given. What it does is read from
# a mode file next to it, so one session can make an accepted edit, then a rejected one.
EDITOR = '''
import pathlib, re, sys
mode = (pathlib.Path(__file__).parent / "editor_mode").read_text().strip()
path = pathlib.Path(sys.argv[1])
text = path.read_text()
if mode == "lr":
    text = re.sub(r"(?m)^MATRIX_LR = .*$", "MATRIX_LR = 0.0499", text)
elif mode == "cheat":
    text = "import subprocess\\n" + text
elif mode == "fail":
    sys.exit(3)
path.write_text(text)
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_project(root: Path, *, noise: float = 0.001, use_git: bool = False, slots: int = 2,
                 real: bool = False, config: dict | None = None) -> Path:
    """A project folder: the stand-in (or the real) train.py/prepare.py, program.md, config.yaml
    (`config_yaml(slots, **config)`), the packaged prompts; a git repository with one commit
    when `use_git`."""
    root.mkdir(parents=True, exist_ok=True)
    if real:
        shutil.copy(REPO / "train.py", root / "train.py")
        shutil.copy(REPO / "prepare.py", root / "prepare.py")
    else:
        (root / "train.py").write_text(STANDIN_TRAIN)
        (root / "prepare.py").write_text(STANDIN_PREPARE.replace("@NOISE@", repr(noise)))
    (root / "program.md").write_text("# Research program\nMake val_bpb lower.\n")
    (root / "config.yaml").write_text(config_yaml(slots, **(config or {})))
    shutil.copytree(REPO / "prompts", root / "prompts", dirs_exist_ok=True)
    if use_git:
        git(root, "init", "-q", "-b", "main")
        git(root, "config", "user.name", "Test User")
        git(root, "config", "user.email", "test@example.com")
        (root / ".gitignore").write_text("runs/\n")
        git(root, "add", ".")
        git(root, "commit", "-q", "-m", "project")
    return root


@pytest.fixture(scope="module")
def standin_data(tmp_path_factory):
    """The harness checks the data layout before it starts a child: the stand-in project's runs get
    a fake one (tests that run the real prepare.py set their own AUTORESEARCH_CACHE). Module scope,
    so module-scoped fixtures that run the harness see it too; modules ask for it with
    `pytestmark = pytest.mark.usefixtures("standin_data")`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_CACHE", str(make_fake_cache(tmp_path_factory.getbasetemp() / "standin-cache")))
        yield


def write_tools(root: Path) -> Path:
    """root/tools: the $EDITOR script (mode "lr") and the WEIGHT_DECAY diff."""
    tools = root / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    (tools / "editor.py").write_text(EDITOR.lstrip())
    (tools / "editor_mode").write_text("lr\n")
    (tools / "wd.diff").write_text(WD_DIFF)
    return tools


def edit(name: str, old, new) -> dict:
    """A knob edit: `NAME = old` -> `NAME = new`."""
    return {"search": f"{name} = {old}\n", "replace": f"{name} = {new}\n"}


class ScriptedProposer:
    """A Proposer that proposes given edits per generation, checked by the real
    sandbox.candidate.build_candidate (the same gates as the real proposers)."""

    name = "scripted"

    def __init__(self, plan: dict[int, list[tuple[str, str, list[dict]]]]):
        self.plan = plan
        self.requests = []

    def propose(self, request):
        from agent.proposers.base import Proposal
        from sandbox.candidate import build_candidate
        self.requests.append(request)
        out = []
        for strategy, title, edits in self.plan.get(request.generation, []):
            check = build_candidate(request.incumbent_source, edits, request.seen_fingerprints)
            out.append(Proposal(strategy=strategy, title=title, hypothesis=f"scripted: {title}", edits=edits,
                                parents=[request.incumbent_id], accepted=check.ok, source=check.source,
                                diff=check.diff, fingerprint=check.fingerprint, rule=check.rule,
                                reason=check.message, proposer="scripted"))
        return out


def open_ctx(project: Path, tag: str = "t", *, proposer=None, runner=None, json_mode=False, dry_run=False,
             preset=None, backend=None, console=None, limits=None, **run_overrides):
    """open_run on the project's config.yaml with `run.<key>` overrides; a given proposer or
    runner object replaces the one the run would build."""
    from agent.config import load_settings
    from agent.run_context import open_run
    settings = load_settings(project / "config.yaml", {f"run.{k}": v for k, v in run_overrides.items()})
    ctx = open_run(settings, tag, project, json_mode=json_mode, dry_run=dry_run, preset=preset, backend=backend,
                   console=console, limits=limits)
    parts = {k: v for k, v in (("proposer", proposer), ("runner", runner)) if v is not None}
    return dataclasses.replace(ctx, **parts) if parts else ctx


def child_env(budget_s: float | None = None, **extra) -> dict:
    """The environment for an autoresearch child process: this checkout on PYTHONPATH, no keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AWS_"))}
    env["PYTHONPATH"] = str(REPO)
    if budget_s:
        env["AUTORESEARCH_TIME_BUDGET"] = str(budget_s)
    elif budget_s is not None:   # 0: the stand-in's own (instant) budget; an override must be > 0
        env.pop("AUTORESEARCH_TIME_BUDGET", None)
    env.update(extra)
    return env


class DetachedRunner:
    """A backend whose executions outlive the orchestrator (as SageMaker jobs do): the harness
    runs fully detached and leaves result.json; `reattach` follows it again after a restart."""

    name = "local"
    simulated = False

    def __init__(self, slots: int = 2):
        from sandbox.runners.base import WallClock
        self.slots = slots
        self.clock = WallClock()
        self._jobs: dict[str, tuple] = {}

    def free_slots(self) -> int:
        return self.slots - len(self._jobs)

    def active(self) -> list[str]:
        return list(self._jobs)

    def submit(self, spec) -> str:
        out = Path(spec.workspace) / "executions" / spec.execution_id
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, str(Path(spec.workspace) / "harness.py"), "--workspace",
                                 str(spec.workspace), "--preset", spec.preset, "--out", str(out), "--no-echo"],
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._jobs[spec.execution_id] = (spec, out, proc.pid)
        return f"detached:{proc.pid}"

    def reattach(self, spec, job_id: str) -> bool:
        out = Path(spec.workspace) / "executions" / spec.execution_id
        pid = int(job_id.split(":")[1])
        if not Path(f"/proc/{pid}").exists() and not (out / "result.json").exists():
            return False
        self._jobs[spec.execution_id] = (spec, out, pid)
        return True

    def poll(self, timeout: float = 0.0) -> list:
        from sandbox.runners.base import Finished
        deadline = time.monotonic() + timeout
        while True:
            events = []
            for eid, (spec, out, pid) in list(self._jobs.items()):
                path = out / "result.json"
                if path.exists():
                    events.append(Finished(execution_id=eid, result=json.loads(path.read_text()),
                                           backend=self.name, job_id=f"detached:{pid}"))
                    del self._jobs[eid]
            if events or time.monotonic() >= deadline:
                return events
            time.sleep(0.05)

    def cancel(self, execution_id: str) -> None:
        spec, out, pid = self._jobs[execution_id]
        os.kill(pid, signal.SIGTERM)

    def stop_early(self, execution_id: str, reason: dict) -> None:
        self.cancel(execution_id)

    def shutdown(self) -> list:
        for eid in list(self._jobs):
            self.cancel(eid)
        return self.poll(timeout=10) if self._jobs else []


# --------------------------------------------------------------------------------- memory rows
# Rows written straight into a Memory, for tests of what memory stores and what it means.
OK_RESULT = {"status": "ok", "val_bpb": 1.234567, "peak_vram_mb": 512.5, "training_seconds": 30.2,
             "total_seconds": 41.9, "num_steps": 96, "mfu_percent": 1.25, "num_params_M": 1.2,
             "total_tokens_M": 0.39, "failure_reason": None, "log_tail": "---\nval_bpb: 1.234567\n"}


def add(memory, generation: int = 1, *, fingerprint: str = "fp", parents=("g000-baseline",),
        strategy: str = "moderate", check_status: str = "accepted", **extra) -> str:
    return memory.add_candidate(generation=generation, strategy=strategy, title=extra.pop("title", "t"),
                                parents=list(parents), fingerprint=fingerprint, source="src",
                                check_status=check_status, **extra)


def baseline(memory, fingerprint: str = "fp-base") -> str:
    return memory.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint=fingerprint,
                                source="src", check_status="accepted", origin="baseline")


def run(memory, candidate_id: str, val_bpb: float | None, *, status: str = "ok", kind: str = "candidate",
        generation: int = 1, preset: str = "micro", backend: str = "local", instance_type: str | None = None,
        cost: float = 0.0) -> str:
    eid = memory.add_execution(candidate_id=candidate_id, generation=generation, kind=kind, backend=backend,
                               preset=preset, workspace="/ws", instance_type=instance_type)
    result = {**OK_RESULT, "status": status, "val_bpb": val_bpb}
    if status != "ok":
        result["failure_reason"] = f"train.py {status}"
    assert memory.finish_execution(eid, result=result, cost_usd=cost)
    return eid


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    """Data and tokenizer of the real micro preset, prepared once per session."""
    cache = tmp_path_factory.mktemp("autoresearch-cache")
    env = {**os.environ, "AUTORESEARCH_CACHE": str(cache)}
    subprocess.run([sys.executable, str(REPO / "prepare.py"), "--preset", "micro"], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    return cache
