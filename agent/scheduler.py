"""The one place executions are launched, watched and recorded.

`run_executions(ctx, ids)` takes execution rows that memory already holds (status pending, or
running and re-attached), builds each workspace if missing, admits each against the budget and
the deadline, submits to the runner as slots free up, shows progress, and writes every Finished
to memory FIRST (exactly once: memory.finish_execution is idempotent), then result.json/run.log
into the workspace folder and results.tsv. It returns the rows that finished during the call.

Recovery after a dead orchestrator is `recover_unfinished(ctx)`: a running execution whose job
lives elsewhere (SageMaker) is re-attached; one that died with the process (local children) is
marked `lost` (kept forever) so the loop records a new attempt. Only one process may drive a
run's executions at a time (`RunLock`, an flock that the kernel releases even on kill -9), so
the REPL cannot mark an autopilot's live executions lost.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.live import LiveView
from agent.results_tsv import write_run_results
from sandbox.runners.base import ExecutionSpec, Finished, Progress, Requeued

POLL_S = 0.25
TSV_EVERY_S = 1.0          # results.tsv is re-rendered at most this often while runs finish


class RunBusyError(RuntimeError):
    """Another live process is driving this run."""


class RunLock:
    """An exclusive flock on runs/<TAG>/.lock, re-entrant within one process."""

    _held: dict[str, "RunLock"] = {}

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fh = None
        self._depth = 0

    @classmethod
    def for_run(cls, run_dir: Path) -> "RunLock":
        key = str(Path(run_dir).resolve())
        if key not in cls._held:
            cls._held[key] = cls(run_dir)
        return cls._held[key]

    def __enter__(self) -> "RunLock":
        if self._depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise RunBusyError(f"run {self.path.parent.name!r} is being driven by {holder}; "
                                   f"wait for it to finish (or stop it) before launching here") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            self._fh = fh
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@dataclass
class ScheduleOutcome:
    """What `run_executions` could not do, for the loop's exit code and summary."""

    finished: list[str] = field(default_factory=list)
    not_admitted_budget: list[str] = field(default_factory=list)
    not_launched_deadline: list[str] = field(default_factory=list)
    interrupted: bool = False


# --------------------------------------------------------------------------------- pricing
# Expected training seconds per preset for cost estimates (prepare.py's TIME_BUDGET; importing
# prepare.py here would pull in torch). AUTORESEARCH_TIME_BUDGET overrides, as it does for prepare.py.
EXPECTED_BUDGET_S = {"gpu": 300.0, "cpu": 45.0, "micro": 4.0}
EVAL_OVERHEAD = 1.15       # evaluation and process start on top of the training budget


class Pricing:
    """Dollars per execution (agent.ledger): estimates for admission, rates for the live view,
    actual costs from billable seconds. Local executions cost 0."""

    def __init__(self, ctx):
        from agent import ledger
        self._ledger = ledger
        self.settings = ctx.settings
        self.prices = ledger.merged_prices(ctx.settings.instance_prices)
        self.region = ctx.settings.aws.region

    def expected_seconds(self, preset: str) -> float:
        override = os.environ.get("AUTORESEARCH_TIME_BUDGET")
        try:
            budget = float(override) if override else EXPECTED_BUDGET_S.get(preset, 300.0)
        except ValueError:
            budget = EXPECTED_BUDGET_S.get(preset, 300.0)
        return budget * EVAL_OVERHEAD

    def hourly(self, backend: str, instance_type: str | None) -> float:
        if backend in self._ledger.LOCAL_BACKENDS or not instance_type:
            return 0.0
        try:
            return self._ledger.instance_price(instance_type, self.region, self.prices)
        except self._ledger.LedgerError:
            return 0.0

    def estimate(self, backend: str, preset: str, instance_type: str | None = None) -> float:
        if backend in self._ledger.LOCAL_BACKENDS:
            return 0.0
        sm = self.settings.sagemaker
        # start-up is paid once per job and shared by the candidates packed into it
        return self._ledger.estimate_execution_cost(
            backend, instance_type or sm.instance_type, self.region, self.expected_seconds(preset), sm.use_spot,
            startup_s=sm.startup_estimate_s / max(1, sm.candidates_per_job),
            spot_billable_fraction=sm.spot_billable_fraction, prices=self.prices)

    def actual(self, finished: Finished, row: dict) -> float:
        try:
            return self._ledger.execution_cost(finished.backend, finished.instance_type or row.get("instance_type"),
                                               self.region, finished.billable_seconds, self.prices)
        except self._ledger.LedgerError:
            return 0.0   # an unpriced instance: the run goes on; the report shows billable seconds


# --------------------------------------------------------------------------------- workspaces
def spec_for(ctx, row: dict, candidate: dict | None = None) -> ExecutionSpec:
    candidate = candidate or ctx.memory.candidate(row["candidate_id"])
    label = f"{candidate.get('strategy')}: {candidate.get('title')}" if row["kind"] == "candidate" \
        else f"{row['kind']}: {candidate['id']}"
    return ExecutionSpec(execution_id=row["id"], workspace=Path(row["workspace"]), preset=row["preset"],
                         label=label[:120],
                         tags={"run": ctx.tag, "generation": str(row["generation"]),
                               "candidate": candidate["id"], "kind": row["kind"]})


def ensure_workspace(ctx, row: dict, candidate: dict | None = None) -> Path:
    """Build the execution's workspace folder from the candidate's stored source (idempotent)."""
    from sandbox.workspace import build_workspace
    candidate = candidate or ctx.memory.candidate(row["candidate_id"])
    ws = Path(row["workspace"])
    if not (ws / "train.py").is_file() or not (ws / "harness.py").is_file():
        if not candidate.get("source"):
            raise ValueError(f"candidate {candidate['id']} has no stored train.py source; cannot build {ws}")
        meta = {"run": ctx.tag, "candidate": candidate["id"], "generation": row["generation"],
                "strategy": candidate.get("strategy"), "title": candidate.get("title"),
                "hypothesis": candidate.get("hypothesis"), "parents": candidate.get("parents"),
                "fingerprint": candidate.get("fingerprint"), "kind": row["kind"]}
        build_workspace(ws, candidate["source"], ctx.project_dir, meta)
        (ws / "diff.patch").write_text(candidate.get("diff") or "")
    return ws


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _publish_outputs(row: dict, result: dict) -> None:
    """result.json and run.log next to the candidate's train.py (the documented layout); the
    runner's own copies stay where it wrote them."""
    ws = Path(row["workspace"])
    if not ws.is_dir():
        return
    _write_json(ws / "result.json", result)
    log = result.get("log_path")
    if log and Path(log).is_file() and Path(log).resolve() != (ws / "run.log").resolve():
        shutil.copyfile(log, ws / "run.log")


# --------------------------------------------------------------------------------- recovery
def recover_unfinished(ctx) -> dict:
    """After a restart: re-attach what still runs elsewhere, mark what died with us lost.
    Pending rows were never started: they stay pending and are launched normally."""
    mem, runner = ctx.memory, ctx.runner
    active = set(runner.active()) if runner is not None else set()
    outcome = {"reattached": [], "lost": []}
    for row in mem.unfinished_executions():
        if row["status"] != "running" or row["id"] in active:
            continue
        attached = False
        if runner is not None and row.get("job_id") and row.get("backend") == runner.name:
            try:
                attached = runner.reattach(spec_for(ctx, row), row["job_id"])
            except Exception as exc:   # a backend error must not lose the bookkeeping
                mem.log_event("reattach_failed", {"execution": row["id"], "error": str(exc)}, row["generation"])
        if attached:
            mem.log_event("reattached", {"execution": row["id"], "job_id": row["job_id"]}, row["generation"])
            outcome["reattached"].append(row["id"])
        elif _ingest_left_result(ctx, row):
            outcome.setdefault("recovered", []).append(row["id"])
        else:
            mem.mark_lost(row["id"], f"orchestrator stopped while {row.get('job_id') or 'it'} was running; "
                                     f"{runner.name if runner else 'no'} runner could not re-attach")
            outcome["lost"].append(row["id"])
    return outcome


RESULT_STATUSES = ("ok", "crash", "timeout", "rejected", "over_budget")


def _ingest_left_result(ctx, row: dict) -> bool:
    """A local execution that finished after its orchestrator's last write (killed between the
    child's exit and finish_execution) left a real result in WS/executions/<id>/result.json (the
    LocalRunner's layout): keep it instead of re-running. A `killed` result (the harness stopped
    because the orchestrator died) is not a measurement and does not count."""
    path = Path(row["workspace"]) / "executions" / row["id"] / "result.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(result, dict) or result.get("status") not in RESULT_STATUSES:
        return False
    if ctx.memory.finish_execution(row["id"], result=result, ended_at=path.stat().st_mtime):
        ctx.memory.log_event("recovered_result", {"execution": row["id"], "status": result["status"]},
                             row["generation"])
        _publish_outputs(ctx.memory.execution(row["id"]), result)
    return True


# --------------------------------------------------------------------------------- the watch loop
def _header(ctx, view: LiveView, generation: int | None, queued: int) -> None:
    mem = ctx.memory
    inc = mem.incumbent_id()
    bpbs = mem.val_bpbs(inc, preset=ctx.preset) if inc else []
    spend = mem.spend()
    view.set_header(generation=generation, incumbent=inc,
                    incumbent_bpb=sum(bpbs) / len(bpbs) if bpbs else None,
                    sigma=mem.noise_sigma(), spend_usd=spend["total_usd"], budget_usd=ctx.budget_usd,
                    queued=queued)


def run_executions(ctx, execution_ids: list[str], *, live: bool = True,
                   view: LiveView | None = None) -> list[dict]:
    """Run the given executions to the end (see the module docstring). Raises KeyboardInterrupt
    after recording the executions it stopped as `killed`. `ctx.last_schedule` says what was left
    undone (budget, deadline). `live=False`: plain lines instead of the rich live table; `view`:
    an open LiveView to reuse (the autopilot keeps one for the whole run)."""
    outcome = ScheduleOutcome()
    ctx.last_schedule = outcome
    if not execution_ids:
        return []
    if ctx.runner is None:
        raise RuntimeError("run_executions needs a runner (this context is a dry run)")
    with RunLock.for_run(ctx.run_dir):
        own_view = view is None
        view = view or LiveView(ctx.console, json_mode=ctx.json_mode, enabled=live)
        if own_view:
            view.__enter__()
        try:
            _watch(ctx, execution_ids, view, outcome)
        finally:
            write_run_results(ctx.memory, ctx.run_dir)
            if own_view:
                view.__exit__(None, None, None)
    return [ctx.memory.execution(i) for i in outcome.finished]


def _watch(ctx, execution_ids: list[str], view: LiveView, outcome: ScheduleOutcome) -> None:
    mem, runner = ctx.memory, ctx.runner
    pricing = Pricing(ctx)
    rows = {i: mem.execution(i) for i in execution_ids}
    candidates: dict[str, dict] = {}

    def cand(row):
        cid = row["candidate_id"]
        if cid not in candidates:
            candidates[cid] = mem.candidate(cid)
        return candidates[cid]

    active_now = set(runner.active())
    queue = [i for i in execution_ids if rows[i]["status"] == "pending"]
    watching: dict[str, dict] = {i: rows[i] for i in execution_ids
                                 if rows[i]["status"] == "running" and i in active_now}
    for i in watching:
        c = cand(rows[i])
        view.started(execution_id=i, candidate_id=c["id"], kind=rows[i]["kind"], strategy=c.get("strategy"),
                     title=c.get("title"), job_id=rows[i].get("job_id"), attempt=rows[i].get("attempt", 1),
                     usd_per_second=pricing.hourly(rows[i]["backend"], rows[i].get("instance_type")) / 3600)
    generation = rows[execution_ids[0]]["generation"]
    refused: set[str] = set()
    last_tsv = 0.0

    def record(ev: Finished) -> None:
        nonlocal last_tsv
        row = watching.pop(ev.execution_id, None) or rows.get(ev.execution_id) or mem.execution(ev.execution_id)
        cost = pricing.actual(ev, row)
        if mem.finish_execution(ev.execution_id, result=ev.result, billable_seconds=ev.billable_seconds,
                                cost_usd=cost, ended_at=ev.ended_at, job_id=ev.job_id,
                                instance_type=ev.instance_type, started_at=ev.started_at):
            outcome.finished.append(ev.execution_id)
        done = mem.execution(ev.execution_id)
        _publish_outputs(done, ev.result)
        c = cand(done)
        view.finished(done, title=c.get("title") or "", strategy=c.get("strategy") or "")
        _header(ctx, view, generation, len(queue))
        if time.monotonic() - last_tsv >= TSV_EVERY_S:
            write_run_results(mem, ctx.run_dir)
            last_tsv = time.monotonic()

    def admissible(row: dict) -> str | None:
        """None when the execution may start now, else why not (budget | deadline)."""
        if ctx.deadline is not None and time.time() >= ctx.deadline:
            return "deadline"
        if ctx.budget_usd is not None:
            spend = mem.spend()
            in_flight = sum(r.get("estimated_cost_usd") or 0.0 for r in watching.values())
            if spend["total_usd"] + in_flight + (row.get("estimated_cost_usd") or 0.0) > ctx.budget_usd + 1e-12:
                return "budget"
        return None

    _header(ctx, view, generation, len(queue))
    try:
        while queue or watching:
            # launch while slots are free; skip (and report once) what cannot be admitted
            progressed = True
            while queue and runner.free_slots() > 0 and progressed:
                progressed = False
                for i in list(queue):
                    row = rows[i]
                    why = admissible(row)
                    if why is not None:
                        if i not in refused:
                            refused.add(i)
                            mem.log_event("not_admitted", {"execution": i, "candidate": row["candidate_id"],
                                                           "reason": why,
                                                           "estimated_cost_usd": row.get("estimated_cost_usd")},
                                          row["generation"])
                            view.emit("not_admitted", execution=i, candidate=row["candidate_id"], reason=why)
                            view.say(f"not launched {i} {row['candidate_id']}: "
                                     f"{'budget cannot cover it' if why == 'budget' else 'max-hours reached'}",
                                     style="yellow")
                        if why == "deadline":
                            break       # nothing else may start either
                        continue
                    c = cand(row)
                    ensure_workspace(ctx, row, c)
                    spec = spec_for(ctx, row, c)
                    job_id = runner.submit(spec)
                    mem.mark_started(i, job_id=job_id, started_at=time.time())
                    queue.remove(i)
                    watching[i] = mem.execution(i)
                    view.started(execution_id=i, candidate_id=c["id"], kind=row["kind"],
                                 strategy=c.get("strategy"), title=c.get("title"), job_id=job_id,
                                 attempt=row.get("attempt", 1),
                                 usd_per_second=pricing.hourly(row["backend"], row.get("instance_type")) / 3600)
                    progressed = True
                    break
            if not watching:
                # nothing runs and nothing in the queue can start: leave the rest pending
                for i in queue:
                    why = admissible(rows[i]) or "budget"
                    (outcome.not_launched_deadline if why == "deadline" else outcome.not_admitted_budget).append(i)
                break
            for ev in runner.poll(timeout=POLL_S):
                if isinstance(ev, Finished):
                    if ev.execution_id in watching or ev.execution_id in rows:
                        record(ev)
                elif isinstance(ev, Progress):
                    view.progress(ev.execution_id, step=ev.step, pct=ev.pct, loss=ev.loss, tok_per_s=ev.tok_per_s)
                elif isinstance(ev, Requeued):
                    mem.log_event("requeued", {"execution": ev.execution_id, "reason": ev.reason,
                                               "attempt": ev.attempt}, generation)
                    view.emit("requeued", execution=ev.execution_id, reason=ev.reason, attempt=ev.attempt)
                    view.say(f"requeued {ev.execution_id}: {ev.reason} (attempt {ev.attempt})", style="yellow")
    except (KeyboardInterrupt, SystemExit):
        outcome.interrupted = True
        view.say(f"stopping: {len(watching)} running execution(s) are being stopped and recorded", style="yellow")
        for ev in runner.shutdown():
            record(ev)
        # anything still marked running without a Finished (a backend that could not stop it) is left
        # running in memory; the next start re-attaches it or marks it lost
        raise
