"""Everything one command needs to act on one run: settings, memory, runner, proposer, console.

`open_run` is shared by autopilot, the REPL, replay and report: it resolves the preset ("auto" ->
gpu when a GPU is visible, else cpu), opens (or creates) runs/<TAG>/memory.sqlite, records the run
row, and builds the runner and proposer. A resumed run keeps the preset it was started with: the
results of different presets are not comparable, so a mismatch is an error, not a warning.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from agent.config import Settings
from agent.gitops import validate_tag
from agent.memory import Memory


@dataclass
class RunContext:
    tag: str
    settings: Settings
    project_dir: Path            # where train.py, prepare.py, program.md, config.yaml live
    run_dir: Path                # project_dir / settings.run.runs_dir / tag
    memory: Memory
    runner: object | None        # sandbox.runners.base.Runner; None in dry-run
    proposer: object             # agent.proposers.base.Proposer
    console: Console
    preset: str                  # resolved (auto -> gpu/cpu)
    backend: str
    json_mode: bool = False
    dry_run: bool = False
    # Limits of this invocation (autopilot sets them; other commands leave them None).
    budget_usd: float | None = None
    deadline: float | None = None          # unix seconds; no new launches after it
    started_at: float = field(default_factory=time.time)

    def close(self) -> None:
        self.memory.close()


def resolve_preset(preset: str) -> str:
    if preset != "auto":
        return preset
    from sandbox.runners.local import visible_gpus
    return "gpu" if visible_gpus() else "cpu"


PACKAGE_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


def prompts_dir_for(project_dir: Path) -> Path:
    """The project's own prompts/ when it has one (the user's lever), else the packaged ones."""
    own = Path(project_dir) / "prompts"
    return own if own.is_dir() else PACKAGE_PROMPTS


def make_runner(settings: Settings, backend: str, tag: str):
    """The Runner for `backend` (import inside: boto3 is not needed for local runs)."""
    if backend == "local":
        from sandbox.runners.local import LocalRunner
        return LocalRunner(slots=settings.local.slots, threads_per_slot=settings.local.threads_per_slot,
                           startup_allowance_s=settings.local.startup_allowance_s)
    if backend == "sagemaker":
        from sandbox.runners.sagemaker import SageMakerRunner
        return SageMakerRunner(settings, run_tag=tag)
    raise ValueError(f"unknown backend {backend!r}: expected local or sagemaker")


def open_run(settings: Settings, tag: str, project_dir: Path, *, backend: str | None = None,
             proposer: str | None = None, preset: str | None = None, create: bool = True,
             dry_run: bool = False, json_mode: bool = False, console: Console | None = None) -> RunContext:
    """Open runs/<tag>/ (create=False: an unknown tag raises LookupError listing the known ones)."""
    validate_tag(tag)
    project_dir = Path(project_dir).resolve()
    run_dir = project_dir / settings.run.runs_dir / tag
    if console is None:
        # In JSON mode stdout carries only JSON lines; everything human goes to stderr.
        console = Console(stderr=json_mode)
    memory = Memory.open(run_dir, create=create)   # UnknownRunError lists the known tags
    try:
        existing = None
        try:
            existing = memory.run_info()
        except Exception:
            existing = None
        requested_preset = preset or settings.run.preset
        if existing is not None and (preset is None or preset == "auto"):
            resolved = existing["preset"]           # a resumed run keeps its preset
        else:
            resolved = resolve_preset(requested_preset)
        if existing is not None and existing["preset"] != resolved:
            raise ValueError(f"run {tag!r} was started with preset {existing['preset']!r}; its results cannot be "
                             f"compared with preset {resolved!r}: use --preset {existing['preset']} or a new --run tag")
        # a resumed run keeps its backend unless told otherwise (its live jobs are there)
        backend = backend or (existing["backend"] if existing is not None else settings.run.backend)
        proposer_kind = proposer or settings.run.proposer
        if not (project_dir / "train.py").is_file() and create:
            raise FileNotFoundError(f"{project_dir / 'train.py'} not found: run autoresearch in the project "
                                    f"folder (the one holding train.py and prepare.py)")
        memory.ensure_run(tag, resolved, backend, proposer_kind, settings.model_dump(mode="json"), str(project_dir))
        runner = None if dry_run else make_runner(settings, backend, tag)
        from agent.proposers.factory import make_proposer
        proposer_obj = make_proposer(proposer_kind, settings, memory=memory, console=console,
                                     prompts_dir=prompts_dir_for(project_dir))
    except BaseException:
        memory.close()
        raise
    return RunContext(tag=tag, settings=settings, project_dir=project_dir, run_dir=run_dir, memory=memory,
                      runner=runner, proposer=proposer_obj, console=console, preset=resolved, backend=backend,
                      json_mode=json_mode, dry_run=dry_run)
