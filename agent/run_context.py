"""Everything one command needs to act on one run, resolved once: settings, layout, memory, the
runner, the proposer, the git repository, the console and the limits.

`open_run` is shared by autopilot, the REPL, replay and report: it resolves the preset ("auto"
-> gpu when a GPU is visible, else cpu), opens (or creates) runs/<TAG>/memory.sqlite, records the
run row, and builds the runner (through the one factory), the proposer and the git repository.
The context is frozen: a command that needs other parts (a test's scripted proposer, replay's
preset) makes a new one with `dataclasses.replace`.

A run keeps what makes its results comparable: its preset (a mismatch is an error, not a
warning), whether it is simulated (simulated and real executions never share a run; simulated
ones never touch git) and its measurement version. `require_comparable` refuses to add measurements to a run
whose results were measured under another measurement version than the project's prepare.py
(CONTRACTS.md); the commands that launch (autopilot, the REPL's launch and baseline, replay) call
it, the ones that only read (report, REPL status/history) do not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.text import Text

from agent.config import Settings
from agent.gitops import GitError, RunRepo, validate_tag
from agent.layout import RunLayout
from agent.live import emit_json
from agent.memory import BASELINE_ID, Memory, MemoryStoreError
from sandbox.presets import measurement_version
from sandbox.runners import make_runner
from sandbox.runners.base import Clock, new_run_id
from sandbox.statuses import CANDIDATE

PACKAGE_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
SIMULATED = "simulated"
RUN_ID_KEY = "run_id"      # memory state: made once per run, names its cloud jobs (base.new_run_id)


class MeasurementVersionError(MemoryStoreError):
    """The run's results were measured under another measurement version than prepare.py's now."""


@dataclass(frozen=True)
class Limits:
    """What this invocation may spend: dollars (compute + LLM) and time on the runner's clock."""

    budget_usd: float | None = None
    deadline: float | None = None          # runner-clock seconds; no new launches after it


@dataclass(frozen=True)
class RunContext:
    tag: str
    settings: Settings
    layout: RunLayout
    memory: Memory
    runner: object | None        # sandbox.runners.base.Runner; None in a dry run
    proposer: object             # agent.proposers.base.Proposer
    console: Console
    preset: str                  # resolved (auto -> gpu/cpu)
    backend: str
    repo: RunRepo | None         # the project's git repository; None: no repository, or simulated
    json_mode: bool = False
    dry_run: bool = False
    limits: Limits = field(default_factory=Limits)
    run_id: str = ""             # this run's id (memory state "run_id"): in its SageMaker job names

    @property
    def project_dir(self) -> Path:
        return self.layout.project_dir

    @property
    def run_dir(self) -> Path:
        return self.layout.run_dir

    @property
    def simulated(self) -> bool:
        """Simulated results are not real: they never tag git and never mix with real ones."""
        return self.backend == SIMULATED

    @property
    def clock(self) -> Clock:
        """The runner's notion of time (deadlines are on it; virtual for the simulated backend)."""
        return self.runner.clock

    def say(self, text: str, style: str | None = None) -> None:
        """A line for the human (stderr in --json mode); text, not markup: titles print as they are."""
        self.console.print(Text(text, style=style or ""), highlight=False, soft_wrap=True)

    def emit(self, event: str, **fields) -> None:
        """A --json event line (nothing otherwise)."""
        if self.json_mode:
            emit_json(event, **fields)

    def close(self) -> None:
        self.memory.close()


# Instance families with an accelerator train.py's gpu preset runs on (G: NVIDIA A10G/L4/L40S/T4,
# P: A100/H100/V100); anything else on SageMaker (ml.m5, ml.c5, ...) is a CPU machine.
GPU_INSTANCE_FAMILIES = ("ml.g", "ml.p")


def resolve_preset(preset: str, backend: str | None = None, instance_type: str | None = None) -> str:
    """"auto" -> the preset of the hardware the executions run on: this machine's for local and
    simulated runs, the instance type's for SageMaker (a laptop planning ml.g5.xlarge jobs must
    not send them the cpu preset and cpu data)."""
    if preset != "auto":
        return preset
    if backend == "sagemaker":
        return "gpu" if (instance_type or "").startswith(GPU_INSTANCE_FAMILIES) else "cpu"
    from sandbox.runners.local import visible_gpus
    return "gpu" if visible_gpus() else "cpu"


def prompts_dir_for(project_dir: Path) -> Path:
    """The project's own prompts/ when it has one (the user's lever), else the packaged ones."""
    own = Path(project_dir) / "prompts"
    return own if own.is_dir() else PACKAGE_PROMPTS


def build_runner(settings: Settings, backend: str, tag: str, layout: RunLayout, run_id: str | None = None):
    return make_runner(backend, run_tag=tag, run_id=run_id, local=settings.local, aws=settings.aws_backend,
                       simulated=settings.simulated,
                       baseline_source=layout.train_py.read_text() if layout.train_py.is_file() else None)


def _run_repo(layout: RunLayout, tag: str, backend: str) -> RunRepo | None:
    if backend == SIMULATED:
        return None          # simulated results are never committed or tagged
    try:
        return RunRepo.find(layout.project_dir, tag)
    except (GitError, ValueError):
        return None


def _check_backend(tag: str, recorded: str, requested: str) -> None:
    if (recorded == SIMULATED) != (requested == SIMULATED):
        kind = "simulated" if recorded == SIMULATED else "real"
        raise ValueError(f"run {tag!r} holds {kind} results (backend {recorded!r}); simulated and real "
                         f"executions never share a run: use --backend {recorded} or a new --run tag")


def open_run(settings: Settings, tag: str, project_dir: Path, *, backend: str | None = None,
             proposer: str | None = None, preset: str | None = None, create: bool = True,
             dry_run: bool = False, json_mode: bool = False, console: Console | None = None,
             limits: Limits | None = None) -> RunContext:
    """Open runs/<tag>/ (create=False: an unknown tag raises LookupError listing the known ones)."""
    validate_tag(tag)
    layout = RunLayout.of(project_dir, settings.run.runs_dir, tag)
    if console is None:
        # In JSON mode stdout carries only JSON lines; everything human goes to stderr.
        console = Console(stderr=json_mode)
    memory = Memory.open(layout.run_dir, create=create)   # UnknownRunError lists the known tags
    try:
        try:
            existing = memory.run_info()
        except MemoryStoreError:
            existing = None
        # a resumed run keeps its backend unless told otherwise (its live jobs are there)
        backend = backend or (existing["backend"] if existing is not None else settings.run.backend)
        if existing is not None and (preset is None or preset == "auto"):
            resolved = existing["preset"]           # a resumed run keeps its preset
        else:
            resolved = resolve_preset(preset or settings.run.preset, backend, settings.sagemaker.instance_type)
        if existing is not None and existing["preset"] != resolved:
            raise ValueError(f"run {tag!r} was started with preset {existing['preset']!r}; its results cannot be "
                             f"compared with preset {resolved!r}: use --preset {existing['preset']} or a new --run tag")
        if existing is not None:
            _check_backend(tag, existing["backend"], backend)
        proposer_kind = proposer or settings.run.proposer
        if not layout.train_py.is_file() and create:
            raise FileNotFoundError(f"{layout.train_py} not found: run autoresearch in the project "
                                    f"folder (the one holding train.py and prepare.py)")
        memory.ensure_run(tag, resolved, backend, proposer_kind, settings.model_dump(mode="json"),
                          str(layout.project_dir))
        run_id = memory.get_state(RUN_ID_KEY)
        if not run_id:
            # made once, with the run: a resumed run (or its dry run) names its jobs the same way
            run_id = new_run_id()
            memory.set_state(RUN_ID_KEY, run_id)
        runner = None if dry_run else build_runner(settings, backend, tag, layout, run_id)
        from agent.proposers.factory import make_proposer
        proposer_obj = make_proposer(proposer_kind, settings, memory=memory, console=console,
                                     prompts_dir=prompts_dir_for(layout.project_dir))
    except BaseException:
        memory.close()
        raise
    return RunContext(tag=tag, settings=settings, layout=layout, memory=memory, runner=runner,
                      proposer=proposer_obj, console=console, preset=resolved, backend=backend,
                      repo=_run_repo(layout, tag, backend), json_mode=json_mode, dry_run=dry_run,
                      limits=limits or Limits(), run_id=run_id)


def require_comparable(ctx: RunContext) -> None:
    """Refuse to add measurements to a run whose results were measured under another measurement
    version than the project's prepare.py measures now: their val_bpb are not comparable, so
    resuming would compare them silently. The message names what to do instead."""
    current = measurement_version(ctx.layout.prepare_py)
    other = {v: n for v, n in ctx.memory.measurement_versions().items() if v != current}
    if not other:
        return
    found = ", ".join(f"{n} ok result(s) measured under measurement version {v}" for v, n in sorted(other.items()))
    incumbent = ctx.memory.incumbent_id()
    carry = ""
    if incumbent and incumbent != BASELINE_ID:
        carry = (f" To continue from its incumbent {incumbent}, make that the project's train.py first (the new "
                 f"run measures it again as its baseline): "
                 + (f"`git show autoresearch/{ctx.tag}:train.py > train.py`" if ctx.repo is not None else
                    f"copy {ctx.layout.workspace(ctx.memory.candidate(incumbent)['generation'], incumbent, CANDIDATE, 1)}"
                    f"/train.py") + ".")
    raise MeasurementVersionError(
        f"run {ctx.tag!r} holds {found}, but {ctx.layout.prepare_py} is measurement version {current}: new results "
        f"would not be comparable with the old ones, so this run is not resumed. Start a new run with another "
        f"--run tag (its candidates can be replayed there from their train.py).{carry} This run stays readable "
        f"(`autoresearch report --run {ctx.tag}`, the REPL's status and history).")
