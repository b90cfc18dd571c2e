"""The Runner seam: how a candidate workspace becomes a result, on any backend.

The loop knows only this protocol. Every backend runs the SAME harness
(`sandbox/harness.py`, copied into each workspace), so a result means the same
thing locally and on SageMaker. Runners never decide keep/discard; they report.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Union


@dataclass(frozen=True)
class ExecutionSpec:
    """One execution of one candidate workspace (a candidate may run several times)."""

    execution_id: str            # unique within a run (memory assigns it), also used in job names
    workspace: Path              # folder holding train.py, prepare.py, harness.py
    preset: str                  # gpu | cpu | micro
    label: str = ""              # short human label for live views ("moderate: deeper")
    timeout_s: float | None = None   # hard wall-clock limit; None = harness default for the preset
    env: dict[str, str] = field(default_factory=dict)  # extra NON-secret variables for the child
    tags: dict[str, str] = field(default_factory=dict)  # run / generation / candidate, for cloud tags
    # The early-stop rule's settings and the incumbent's reference curves at submission
    # ({"settings", "references", "incumbent"}), for a backend whose executions no stop request can
    # reach (a network-isolated packed SageMaker job runs the rule itself); None: not watched.
    stop_rule: dict | None = None


@dataclass
class Progress:
    """A live reading parsed from a training log line."""

    execution_id: str
    step: int
    pct: float                   # progress through the time budget, 0..100
    loss: float
    tok_per_s: float
    mfu: float | None = None
    remaining_s: float | None = None
    elapsed_s: float = 0.0       # wall seconds since the execution started


@dataclass
class Finished:
    """An execution that ended, whatever the way. `result` is the harness's result.json."""

    execution_id: str
    result: dict                 # at least the DESIGN.md result.json fields; status != "ok" is a failure
    backend: str
    job_id: str | None = None
    instance_type: str | None = None
    billable_seconds: float | None = None
    started_at: float | None = None  # unix seconds
    ended_at: float | None = None


@dataclass
class Requeued:
    """The backend lost the execution through no fault of the candidate (spot interruption,
    capacity) and will run it again by itself; the loop only records the event."""

    execution_id: str
    reason: str
    attempt: int


@dataclass
class Charge:
    """Billed seconds of an execution that its Finished does not carry: an earlier attempt of it
    (requeued after a spot loss or a transient failure), its share of a packed job it left early
    (cancelled), or a job stopped at the last shutdown that has since ended. Added to the ledger
    once; the cost is the scheduler's (it knows the prices)."""

    execution_id: str
    billable_seconds: float
    job_id: str | None
    reason: str
    instance_type: str | None = None


RunnerEvent = Union[Progress, Finished, Requeued, Charge]


def new_run_id() -> str:
    """A fresh id for one run: 8 hex digits, made once when the run is created and kept in its
    memory (agent/run_context.py), so a resumed run names and recognises its jobs again while
    another run -- even one with the same tag in another folder -- never shares a name."""
    return secrets.token_hex(4)


class BackendError(RuntimeError):
    """The backend cannot be used as configured (no credentials, endpoint unreachable, a request
    the service refuses for every candidate alike). Not a verdict on any candidate: the loop stops
    with this message, which names the fix, and the same command resumes once it is fixed."""


class Clock(Protocol):
    """Where the scheduler and the loop take "now" from. Real backends use the wall clock; the
    simulated backend runs on a virtual clock that its poll() advances to the next event, and
    that the loop advances by the (modelled) time a proposal takes."""

    def now(self) -> float:
        """Seconds (unix time for the wall clock, virtual seconds for the simulated backend)."""

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass (a no-op on the wall clock, which passes by itself)."""


class WallClock:
    def now(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> None:
        pass


class Runner(Protocol):
    name: str
    clock: Clock                 # WallClock() for local and sagemaker
    simulated: bool              # True only for the simulated backend: its results are not real

    def free_slots(self) -> int:
        """How many more executions `submit` may take right now."""

    def submit(self, spec: ExecutionSpec) -> str:
        """Start (or queue) an execution; returns the backend's handle (pid label or job name)."""

    def poll(self, timeout: float = 0.0) -> list[RunnerEvent]:
        """Events since the last call, waiting up to `timeout` seconds for the first one."""

    def active(self) -> list[str]:
        """Execution ids submitted and not yet finished."""

    def cancel(self, execution_id: str) -> None:
        """Stop one execution; it still ends with a Finished event (status `killed`)."""

    def stop_early(self, execution_id: str, reason: dict) -> bool:
        """Stop one execution because its loss curve is losing. It still ends with a Finished
        event, status `stopped_early`, whose result carries `reason` (the figures that decided)
        under `early_stop`. Inside a packed job only that candidate stops. False when no stop
        can reach it (a network-isolated packed job, where its spec's stop_rule decides)."""

    def reattach(self, spec: ExecutionSpec, job_id: str) -> bool:
        """After an orchestrator restart: follow an execution started earlier. False when the
        backend cannot (a local child died with its parent), so the loop re-runs it."""

    def shutdown(self) -> list[Finished]:
        """Cancel everything still running and return their Finished (status `killed`)."""
