"""SimulatedRunner: the Runner protocol on a virtual clock. It trains nothing.

Each submitted execution gets a timeline, drawn from seeds when it is submitted:

    submit -> start-up (lognormal, SageMaker-like; a straggler's is `straggler_factor` x longer)
           -> training: one Progress per reading of its loss curve, at pct/100 x budget
           -> evaluation (`eval_fraction` x budget) -> Finished
    a spot interruption (per attempt, `interruption_rate`) cuts an attempt anywhere after its
    start-up: Requeued, then a new attempt from scratch (new start-up, new noise), up to
    `max_requeues`; after that the execution ends `interrupted`, as the SageMaker runner does.

What a run measures comes from a replay library of real runs when it holds this train.py
(`replay`: benchmarks/data/curves_*.json or a folder of past runs with result.json next to
train.py), else from the surrogate (sandbox/runners/surrogate.py: quality from the knobs, noise,
curves, crashes). poll(timeout) never sleeps: it moves the virtual clock to the next event (at
most `timeout` ahead, as a real backend would wait at most that long), so 1,000 candidates take
seconds. The loop advances the same clock by `proposal_latency_s` per proposal it makes.

Results are never mistaken for real ones: Finished.backend and instance_type are "simulated",
result["simulated"] is True, result["host"] is "simulated", result["clock"] is "virtual", and
result["simulation"] says where the numbers came from (surrogate or replay) and the noiseless
`true_bpb` the surrogate drew (benchmarks score selection and early stopping against it).

Everything is seeded by (seed, execution id, attempt): the same settings and the same calls give
the same events.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox import statuses
from sandbox.fingerprint import fingerprint
from sandbox.presets import PRESET_NAMES, PrepareFactsError, budget_override, measurement_version, preset_table
from sandbox.runners.base import ExecutionSpec, Finished, Progress, Requeued, RunnerEvent
from sandbox.runners.surrogate import PRESET_MODELS, Surrogate, read_knobs, seeded

HOST = "simulated"
CURVE_LIMIT = 200                  # result.json v2 keeps at most this many curve points


class SimulatedSettings(BaseModel):
    """Config section `simulated:`. The defaults model SageMaker Managed Spot at the gpu preset."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    slots: int = Field(8, ge=1)                      # executions running at once (jobs incl. start-up)
    seed: int = 0
    start_at: Optional[float] = None                 # unix time of the virtual clock's start; None = now
    budget_s: dict[str, float] = Field(default_factory=dict)   # per preset; else prepare.py's table
    eval_fraction: float = Field(0.1, ge=0)          # evaluation + upload after training, x budget
    startup_median_s: float = Field(90.0, ge=0)      # SageMaker: provisioning + image + data download
    startup_sigma: float = Field(0.6, ge=0)          # lognormal shape: p95 = median x e^(1.645 sigma)
    straggler_rate: float = Field(0.03, ge=0, le=1)  # share of attempts stuck in start-up ...
    straggler_factor: float = Field(10.0, ge=1)      # ... this many times longer (15 min at the median)
    interruption_rate: float = Field(0.05, ge=0, le=1)   # spot interruptions per attempt
    max_requeues: int = Field(3, ge=0)               # then `interrupted` (sagemaker.max_spot_requeues)
    crash_rate: float = Field(0.05, ge=0, le=1)      # share of distinct train.py sources that crash
    noise_sigma: Optional[float] = Field(None, ge=0)  # val_bpb sd of identical code; None = per preset
    progress_points: int = Field(50, ge=2, le=CURVE_LIMIT)  # readings per run (fewer if it has fewer steps)
    stop_latency_s: float = Field(5.0, ge=0)         # cancel / stop_early until the execution has ended
    proposal_latency_s: float = Field(5.0, ge=0)     # the loop advances the clock by this per proposal
    replay: Optional[str] = None                     # recorded runs to replay (file or folder)

    @field_validator("budget_s")
    @classmethod
    def _known_presets(cls, value: dict[str, float]) -> dict[str, float]:
        for preset, seconds in value.items():
            if preset not in PRESET_NAMES:
                raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESET_NAMES)}")
            if not seconds > 0:
                raise ValueError(f"budget of {preset!r} must be > 0 seconds, got {seconds!r}")
        return value


class VirtualClock:
    """Seconds that pass only when told: poll() moves it to the next event, the loop by the time
    a proposal takes. Starts at `start` (unix seconds, so timestamps read like dates)."""

    def __init__(self, start: float = 0.0):
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"a clock cannot move by {seconds!r} seconds")
        self._now += seconds

    def advance_to(self, when: float) -> None:
        self._now = max(self._now, when)


# --------------------------------------------------------------------------------- replay
class ReplayLibrary:
    """Recorded real runs, looked up by the train.py they ran (its fingerprint: comments and
    formatting do not matter). Repeats of one train.py are handed out in turn."""

    def __init__(self, runs: dict[tuple[str, str], list[dict]]):
        self._runs = runs                       # (fingerprint, preset) -> recorded results
        self._next: dict[tuple[str, str], int] = {}
        self._fingerprints: dict[str, str] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._runs.values())

    @classmethod
    def load(cls, path: str | Path) -> "ReplayLibrary":
        path = Path(path).expanduser()
        runs: dict[tuple[str, str], list[dict]] = {}
        if path.is_dir():
            for result_file in sorted(path.rglob("result.json")):
                result = _read_json(result_file)
                train = next((d / "train.py" for d in (result_file.parent, *result_file.parents[:3])
                              if (d / "train.py").is_file()), None)
                if isinstance(result, dict) and train is not None and result.get("preset"):
                    key = (fingerprint(train.read_text()), result["preset"])
                    runs.setdefault(key, []).append(result)
        elif path.is_file():
            data = _read_json(path)
            if not (isinstance(data, dict) and isinstance(data.get("runs"), list) and data.get("preset")):
                raise ValueError(f"{path}: not a recording (expected benchmarks/record_curves.py's format: "
                                 f"an object with `preset` and `runs`)")
            for run in data["runs"]:
                result = {"budget_seconds": data.get("budget_seconds"), "preset": data["preset"], **run}
                runs.setdefault((run["fingerprint"], data["preset"]), []).append(result)
        else:
            raise FileNotFoundError(f"simulated.replay: {path} does not exist")
        return cls(runs)

    def take(self, source: str, preset: str) -> Optional[dict]:
        """The next recorded result of this train.py at this preset, or None."""
        digest = hashlib.sha1(source.encode()).hexdigest()
        if digest not in self._fingerprints:
            self._fingerprints[digest] = fingerprint(source)
        key = (self._fingerprints[digest], preset)
        recorded = self._runs.get(key)
        if not recorded:
            return None
        i = self._next.get(key, 0)
        self._next[key] = i + 1
        return recorded[i % len(recorded)]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable JSON ({exc})") from None


# --------------------------------------------------------------------------------- executions
@dataclass
class _Execution:
    spec: ExecutionSpec
    source: str
    budget: float
    submitted_at: float
    attempt: int = 0
    attempt_at: float = 0.0                 # when the current attempt was submitted / requeued
    train_start: float = 0.0
    startup_s: float = 0.0
    straggler: bool = False
    measured: dict = field(default_factory=dict)   # what this attempt measures if left alone
    timeline: list = field(default_factory=list)   # [(time, kind, payload)]
    cursor: int = 0
    token: int = 0                          # bumped when the timeline is replaced (stale heap entries)
    curve: list = field(default_factory=list)      # readings emitted so far in this attempt
    billed_s: float = 0.0                   # training + evaluation seconds of earlier attempts
    stopping: bool = False


class SimulatedRunner:
    """Runner protocol on a virtual clock (see the module docstring)."""

    name = "simulated"
    simulated = True

    def __init__(self, settings: SimulatedSettings | None = None, *, reference_source: str | None = None,
                 clock: VirtualClock | None = None):
        """`reference_source`: the project's train.py (its code edits have no surrogate code
        effect, so the baseline scores the preset's calibrated val_bpb exactly)."""
        self.settings = settings or SimulatedSettings()
        s = self.settings
        self.clock = clock or VirtualClock(s.start_at if s.start_at is not None else time.time())
        self.surrogate = Surrogate(s.seed, crash_rate=s.crash_rate, noise_sigma=s.noise_sigma,
                                   reference_source=reference_source)
        self.library = ReplayLibrary.load(s.replay) if s.replay else None
        self._running: dict[str, _Execution] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._versions: dict[str, int] = {}        # execution id -> latest timeline token
        self._prepare_cache: dict[str, tuple[dict, Optional[int]]] = {}

    # ------------------------------------------------------------------ protocol
    def free_slots(self) -> int:
        return self.settings.slots - len(self._running)

    def active(self) -> list[str]:
        return list(self._running)

    def submit(self, spec: ExecutionSpec) -> str:
        if spec.execution_id in self._running:
            raise ValueError(f"execution {spec.execution_id!r} is already running")
        if self.free_slots() <= 0:
            raise RuntimeError(f"SimulatedRunner: all {self.settings.slots} slots are busy; check "
                               f"free_slots() before submit (queueing is the caller's job)")
        ws = Path(spec.workspace)
        try:
            source = (ws / "train.py").read_text()
        except OSError as exc:
            raise FileNotFoundError(f"{ws / 'train.py'} not readable ({exc}): build the workspace before "
                                    f"submitting") from None
        if spec.preset not in PRESET_MODELS:
            raise ValueError(f"the simulated backend has no model of preset {spec.preset!r}; "
                             f"use one of {', '.join(PRESET_MODELS)}")
        now = self.clock.now()
        ex = _Execution(spec=spec, source=source, budget=self._budget(spec), submitted_at=now,
                        token=self._versions.get(spec.execution_id, 0))
        self._running[spec.execution_id] = ex
        self._start_attempt(ex, now)
        return self._job_id(ex)

    def poll(self, timeout: float = 0.0) -> list[RunnerEvent]:
        """Events due now; if none, move the clock to the first event at most `timeout` ahead
        and return everything due then."""
        deadline = self.clock.now() + max(0.0, timeout)
        events: list[RunnerEvent] = []
        while self._heap:
            when, _, execution_id, token = self._heap[0]
            if when > self.clock.now() and (events or when > deadline):
                break
            heapq.heappop(self._heap)
            ex = self._running.get(execution_id)
            if ex is None or token != ex.token:
                continue                          # superseded by a cancel, stop or requeue
            self.clock.advance_to(when)
            events.extend(self._step(ex))
        if not events and math.isfinite(deadline):
            self.clock.advance_to(deadline)       # nothing happened: the time passed anyway
        return events

    def cancel(self, execution_id: str) -> None:
        self._stop(execution_id, statuses.KILLED, None)

    def stop_early(self, execution_id: str, reason: dict) -> bool:
        self._stop(execution_id, statuses.STOPPED_EARLY, dict(reason))
        return True

    def reattach(self, spec: ExecutionSpec, job_id: str) -> bool:
        return False          # a simulation lives in its orchestrator's memory: the loop re-runs it

    def shutdown(self, status: str = statuses.KILLED) -> list[Finished]:
        """End everything still running now, status `killed` (or `interrupted`, as the local
        runner after Ctrl-C); their Finished are returned here and never by poll."""
        statuses.check(status, (statuses.KILLED, statuses.INTERRUPTED))
        finished = [self._finished(ex, status, "runner shut down") for ex in list(self._running.values())]
        self._running.clear()
        self._heap.clear()
        return finished

    # ------------------------------------------------------------------ timelines
    def _budget(self, spec: ExecutionSpec) -> float:
        """simulated.budget_s, else what the harness would use: AUTORESEARCH_TIME_BUDGET, else
        the workspace's prepare.py table."""
        if spec.preset in self.settings.budget_s:
            return float(self.settings.budget_s[spec.preset])
        override = budget_override()
        if override is not None:
            return override
        try:
            table, _ = self._prepare_facts(Path(spec.workspace))
            budget = float(table[spec.preset]["time_budget"])
        except (PrepareFactsError, KeyError) as exc:
            raise FileNotFoundError(f"simulated.budget_s has no {spec.preset!r} entry and the workspace's "
                                    f"prepare.py cannot say ({exc})") from None
        if not budget > 0:   # a curve needs time to run along: say which setting gives it one
            raise ValueError(f"the workspace's prepare.py gives preset {spec.preset!r} a time budget of {budget:g} s; "
                             f"the simulated backend needs one > 0: set simulated.budget_s.{spec.preset}")
        return budget

    def _measurement_version(self, spec: ExecutionSpec) -> Optional[int]:
        try:
            return self._prepare_facts(Path(spec.workspace))[1]
        except PrepareFactsError:
            return None

    def _job_id(self, ex: _Execution) -> str:
        return f"sim:{ex.spec.execution_id}:{ex.attempt}"

    def _start_attempt(self, ex: _Execution, now: float) -> None:
        """Draw a new attempt: start-up, what it measures, its readings, and maybe its
        interruption."""
        s = self.settings
        ex.attempt += 1
        ex.attempt_at, ex.curve, ex.cursor = now, [], 0
        rng = seeded("attempt", s.seed, ex.spec.execution_id, ex.attempt)
        ex.straggler = rng.random() < s.straggler_rate
        startup = s.startup_median_s * math.exp(s.startup_sigma * rng.gauss(0.0, 1.0)) if s.startup_median_s else 0.0
        ex.startup_s = startup * (s.straggler_factor if ex.straggler else 1.0)
        ex.train_start = now + ex.startup_s
        ex.measured = self._measure(ex)
        eval_s = s.eval_fraction * ex.budget * (s.straggler_factor if ex.straggler else 1.0)
        trained = ex.measured["trained_fraction"] * ex.budget
        end = ex.train_start + trained + (eval_s if ex.measured["status"] == statuses.OK else 1.0)
        timeline = [(ex.train_start + ex.budget * pct / 100.0, "reading", (pct, loss))
                    for pct, loss in ex.measured["curve"]]
        if rng.random() < s.interruption_rate:
            cut = rng.uniform(ex.train_start, end)
            timeline = [item for item in timeline if item[0] < cut] + [(cut, "interrupted", None)]
        else:
            timeline.append((end, "finished", None))
        self._set_timeline(ex, timeline)

    def _measure(self, ex: _Execution) -> dict:
        """What this attempt measures: a recorded real run of this train.py, else the surrogate."""
        preset = ex.spec.preset
        recorded = self.library.take(ex.source, preset) if self.library is not None else None
        if recorded is not None:
            curve = [[float(p), float(v)] for p, v in (recorded.get("curve") or [])]
            status = recorded.get("status") or statuses.CRASH
            fraction = 1.0 if status == statuses.OK else (curve[-1][0] / 100.0 if curve else 0.0)
            return {"source": "replay", "status": status, "val_bpb": recorded.get("val_bpb"), "true_bpb": None,
                    "curve": _thin(curve, self.settings.progress_points), "trained_fraction": fraction,
                    "num_steps": recorded.get("num_steps"),
                    "failure_reason": recorded.get("failure_reason"),
                    "replayed": {k: recorded.get(k) for k in ("plan", "fingerprint", "kind") if k in recorded}}
        steps = PRESET_MODELS[preset].steps
        run = self.surrogate.run(ex.source, preset, f"{ex.spec.execution_id}#{ex.attempt}",
                                 points=max(2, min(self.settings.progress_points, steps)))
        crashed = run["status"] != statuses.OK
        return {"source": "surrogate", "status": run["status"], "val_bpb": run["val_bpb"],
                "true_bpb": run["true_bpb"], "curve": run["curve"], "num_steps": run["num_steps"],
                "trained_fraction": (run["crash_pct"] / 100.0) if crashed else 1.0,
                "failure_reason": (f"simulated crash at {run['crash_pct']:.1f}% of the budget (the surrogate "
                                   f"crashes a seeded {self.settings.crash_rate:.0%} of distinct train.py "
                                   f"sources, every time they run)") if crashed else None}

    def _set_timeline(self, ex: _Execution, timeline: list) -> None:
        ex.token += 1
        self._versions[ex.spec.execution_id] = ex.token
        ex.timeline, ex.cursor = sorted(timeline, key=lambda item: item[0]), 0
        self._push_next(ex)

    def _push_next(self, ex: _Execution) -> None:
        if ex.cursor < len(ex.timeline):
            heapq.heappush(self._heap, (ex.timeline[ex.cursor][0], next(self._seq), ex.spec.execution_id, ex.token))

    def _step(self, ex: _Execution) -> list[RunnerEvent]:
        when, kind, payload = ex.timeline[ex.cursor]
        ex.cursor += 1
        execution_id = ex.spec.execution_id
        if kind == "reading":
            pct, loss = payload
            ex.curve.append([pct, loss])
            self._push_next(ex)
            steps = ex.measured.get("num_steps") or 0
            return [Progress(execution_id=execution_id, step=int(round(steps * pct / 100.0)), pct=pct, loss=loss,
                             tok_per_s=0.0, remaining_s=max(0.0, ex.budget * (1 - pct / 100.0)),
                             elapsed_s=when - ex.attempt_at)]
        if kind == "interrupted":
            ex.billed_s += max(0.0, when - ex.train_start)
            pct = 100.0 * max(0.0, min(1.0, (when - ex.train_start) / ex.budget))
            why = f"simulated spot interruption at {pct:.0f}% of attempt {ex.attempt}"
            if ex.attempt <= self.settings.max_requeues:
                self._start_attempt(ex, when)
                return [Requeued(execution_id, f"{why}: the job restarts from scratch", ex.attempt)]
            return [self._end(ex, self._finished(ex, statuses.INTERRUPTED,
                                                 f"{why}; gave up after {self.settings.max_requeues} requeues"))]
        if kind == "finished":
            m = ex.measured
            return [self._end(ex, self._finished(ex, m["status"], m.get("failure_reason"),
                                                 val_bpb=m["val_bpb"] if m["status"] == statuses.OK else None,
                                                 complete=True))]
        if kind == "stopped":
            status, reason = payload
            why = ("cancelled" if status == statuses.KILLED else
                   f"stopped early: {reason.get('reason') or json.dumps(reason, default=str)[:300]}")
            return [self._end(ex, self._finished(ex, status, why, early_stop=reason))]
        raise AssertionError(f"unknown timeline event {kind!r}")

    def _stop(self, execution_id: str, status: str, reason: dict | None) -> None:
        ex = self._running.get(execution_id)
        if ex is None or ex.stopping:
            return
        ex.stopping = True
        when = self.clock.now() + self.settings.stop_latency_s
        self._set_timeline(ex, [(when, "stopped", (status, reason))])

    def _end(self, ex: _Execution, finished: Finished) -> Finished:
        self._running.pop(ex.spec.execution_id, None)   # the slot frees with the Finished
        return finished

    def _finished(self, ex: _Execution, status: str, failure_reason: str | None, *, val_bpb: float | None = None,
                  complete: bool = False, early_stop: dict | None = None) -> Finished:
        now = self.clock.now()
        m = ex.measured
        trained = max(0.0, min(now, ex.train_start + m["trained_fraction"] * ex.budget) - ex.train_start)
        billed = ex.billed_s + max(0.0, now - ex.train_start)
        curve = list(m["curve"]) if complete else list(ex.curve)
        knobs = read_knobs(ex.source, ex.spec.preset)
        tokens = knobs.get("TOTAL_BATCH_SIZE")
        result = {
            "status": status, "failure_reason": failure_reason, "exit_code": statuses.HARNESS_EXIT_CODES.get(status),
            "measurement_version": self._measurement_version(ex.spec), "val_bpb": val_bpb,
            "training_seconds": round(trained, 3), "total_seconds": round(now - ex.attempt_at, 3),
            "wall_seconds": round(now - ex.attempt_at, 3), "cpu_seconds": None,
            "num_steps": (round((m.get("num_steps") or 0) * (curve[-1][0] if curve else 0.0) / 100.0)
                          if m.get("num_steps") else None),
            "total_tokens_M": (round(tokens * m["num_steps"] / 1e6, 3)
                               if complete and isinstance(tokens, int) and m.get("num_steps") else None),
            "peak_vram_mb": None, "mfu_percent": None, "num_params_M": None,
            "depth": knobs.get("DEPTH") if isinstance(knobs.get("DEPTH"), int) else None,
            "tokens_per_second": None, "clock": "virtual", "budget_seconds": ex.budget,
            "startup_allowance_seconds": None, "timeout_seconds": None, "threads": None,
            "preset": ex.spec.preset, "host": HOST, "started_at": _iso(ex.attempt_at), "ended_at": _iso(now),
            "log_path": None,
            "log_tail": f"[simulated] no code ran: {m['source']} result, attempt {ex.attempt}, status {status}",
            "curve": curve[-CURVE_LIMIT:], "reported": None, "integrity": None, "eval_record": None,
            "simulated": True,
            "simulation": {"source": m["source"], "true_bpb": m.get("true_bpb"), "attempt": ex.attempt,
                           "startup_seconds": round(ex.startup_s, 3), "straggler": ex.straggler,
                           "seed": self.settings.seed, **({"replayed": m["replayed"]} if "replayed" in m else {})},
        }
        if status == statuses.STOPPED_EARLY:
            result["early_stop"] = early_stop or {}
        return Finished(execution_id=ex.spec.execution_id, result=result, backend=self.name, job_id=self._job_id(ex),
                        instance_type=HOST, billable_seconds=round(billed, 3), started_at=ex.submitted_at,
                        ended_at=now)

    def _prepare_facts(self, workspace: Path) -> tuple[dict, Optional[int]]:
        """(preset table, measurement version) of a workspace's prepare.py, read once per content:
        every workspace holds its own copy, and parsing one costs ~10 ms."""
        path = workspace / "prepare.py"
        try:
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise PrepareFactsError(f"{path}: cannot read prepare.py ({exc})") from None
        if digest not in self._prepare_cache:
            self._prepare_cache[digest] = (preset_table(path), measurement_version(path))
        return self._prepare_cache[digest]

def _thin(curve: list, limit: int) -> list:
    if len(curve) <= limit:
        return curve
    step = (len(curve) - 1) / (limit - 1)
    return [curve[round(i * step)] for i in range(limit)]


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds")
