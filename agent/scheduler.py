"""The one place executions are admitted, launched, watched and recorded.

A `Scheduler` runs execution rows that memory already holds (pending, or running and
re-attached) on the run's runner, in four steps the drivers call in a loop:

    enqueue(ids)     work to do, in order (`first=True`: ahead of the rest, e.g. confirmations)
    launch()         while slots are free: admit the next queued row (ledger.Budget, the deadline
                     on the runner's clock), build its workspace, submit it
    take_results()   wait for the runner's events: every Finished is written to memory FIRST
                     (exactly once), then result.json/run.log into the workspace; progress goes
                     to the live view and to the early-stop rule (agent/stopping.py), which may
                     stop a losing candidate through runner.stop_early; returns the rows that
                     finished
    left_undone()    the stop condition's input: queued rows the budget or the deadline refused

`drain(ids)` runs a fixed set of executions to the end (generation 0, a generation, replays)
and returns what it could not do (`ScheduleOutcome`). Used as a context manager it holds the
run's lock, and on Ctrl-C / SIGTERM it stops what runs and records each as `killed`.

It also keeps the slot accounting on the runner's clock (`usage`: busy slot-seconds over
available slot-seconds since it started) that the summary reports as `slot_utilization`. On the
simulated backend there is nothing to wait for: each poll moves the virtual clock straight to
the next event.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

from agent.digest import noise_sigma
from agent.executions import ensure_workspace, pricing, publish_outputs, spec_for
from agent.ledger import Budget
from agent.live import LiveView
from agent.results_tsv import write_run_results
from agent.runlock import RunLock
from sandbox.runners.base import Charge, Finished, Progress, Requeued
from sandbox.statuses import PENDING, RUNNING, STOPPED_EARLY

POLL_S = 0.25
# results.tsv is re-rendered while runs finish at most every TSV_EVERY_S (wall clock), and never
# more often than its own rendering time x TSV_COST_FACTOR: at population 1,000 a render takes
# long enough that rendering every second would be most of the loop's work
TSV_EVERY_S = 1.0
TSV_COST_FACTOR = 20
BUDGET, DEADLINE = "budget", "deadline"
UNSETTLED_KEY = "unsettled_jobs"   # memory state: jobs stopped at a shutdown, bill not known yet


@dataclass(frozen=True)
class Stop:
    """Why a schedule stopped before finishing (the loop maps it to an exit code)."""

    kind: str                    # budget | deadline
    reason: str


@dataclass
class SlotUsage:
    """Busy and available slot-seconds on the runner's clock, since the scheduler started."""

    capacity: int
    busy_s: float = 0.0
    available_s: float = 0.0

    @property
    def utilization(self) -> float | None:
        return self.busy_s / self.available_s if self.available_s > 0 else None


@dataclass
class ScheduleOutcome:
    """What a drain could not do, for the loop's exit code and summary."""

    finished: list[str] = field(default_factory=list)
    not_admitted_budget: list[str] = field(default_factory=list)
    not_launched_deadline: list[str] = field(default_factory=list)

    @property
    def left_undone(self) -> bool:
        return bool(self.not_admitted_budget or self.not_launched_deadline)

    def stop(self) -> Stop | None:
        if self.not_launched_deadline:
            return Stop(DEADLINE, f"max-hours reached: {len(self.not_launched_deadline)} execution(s) not launched")
        if self.not_admitted_budget:
            return Stop(BUDGET, f"budget exhausted: {len(self.not_admitted_budget)} execution(s) not launched")
        return None


class Scheduler:
    def __init__(self, ctx, view: LiveView | None = None, *, early_stop=None):
        if ctx.runner is None:
            raise RuntimeError("the scheduler needs a runner (this context is a dry run)")
        self.ctx, self.memory, self.runner = ctx, ctx.memory, ctx.runner
        self.view = view or LiveView(ctx.console, json_mode=ctx.json_mode)
        self._own_view = view is None
        self.early_stop = early_stop             # agent.stopping.EarlyStopWatch, or None
        self.clock = ctx.runner.clock
        self.poll_s = math.inf if getattr(ctx.runner, "simulated", False) else POLL_S
        self.pricing = pricing(ctx)
        self.budget = Budget(ctx.limits.budget_usd)
        self.queue: deque[str] = deque()
        self.rows: dict[str, dict] = {}          # every row this scheduler was given, by id
        self.running: dict[str, dict] = {}
        self.refused: dict[str, str] = {}        # queued id -> budget | deadline (reported once)
        self.stopping: set[str] = set()          # early stop requested, Finished not seen yet
        self.unreachable: set[str] = set()       # no stop can reach them (their job decides itself)
        self.generation: int | None = None       # for the live view's header
        self.usage = SlotUsage(capacity=max(1, ctx.runner.free_slots() + len(ctx.runner.active())))
        self.started_at = self._last = self.clock.now()
        self._last_tsv = 0.0
        self._tsv_interval = TSV_EVERY_S
        self._lock = RunLock.for_run(ctx.run_dir)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Scheduler":
        self._lock.__enter__()
        if self._own_view:
            self.view.__enter__()
        self._settle_previous()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
                self._stop_everything()
            self._account()
            write_run_results(self.memory, self.ctx.run_dir)
        finally:
            if self._own_view:
                self.view.__exit__(exc_type, exc, tb)
            self._lock.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ the steps
    def enqueue(self, execution_ids, *, first: bool = False) -> None:
        """Queue pending rows (and watch running ones that the runner still follows)."""
        fresh = []
        active = None
        for eid in execution_ids:
            if eid in self.rows and (eid in self.running or eid in self.queue):
                continue
            row = self.memory.execution(eid)
            self.rows[eid] = row
            if row["status"] == PENDING:
                fresh.append(eid)
            elif row["status"] == RUNNING:
                active = set(self.runner.active()) if active is None else active
                if eid in active:          # re-attached after a restart
                    self._watch(row, self.memory.candidate(row["candidate_id"]), row.get("job_id"))
        if first:
            self.queue.extendleft(reversed(fresh))
        else:
            self.queue.extend(fresh)

    def launch(self) -> None:
        """Start queued work while slots are free; what cannot be admitted stays queued (and
        pending in memory), reported once."""
        if not self.queue or self._open_slots() <= 0:
            return
        spent = self.memory.spend()["total_usd"] if self.budget.limit_usd is not None else 0.0
        for eid in list(self.queue):
            if self._open_slots() <= 0:
                return
            why = self._inadmissible(self.rows[eid], spent)
            if why is not None:
                self._refuse(eid, why)
                if why == DEADLINE:
                    return            # nothing else may start either
                continue
            self._submit(eid)

    def take_results(self, timeout: float | None = None) -> list[dict]:
        """Wait up to `timeout` (default: the runner's poll interval) for the runner's events;
        returns the rows that finished."""
        if not self.running:
            return []
        self._account()
        events = self.runner.poll(timeout=self.poll_s if timeout is None else timeout)
        self._account()                 # the wait: whoever ran until now was busy all along
        finished = []
        for event in events:
            if isinstance(event, Finished):
                row = self._record(event)
                if row is not None:
                    finished.append(row)
            elif isinstance(event, Progress):
                self._on_progress(event)
            elif isinstance(event, Requeued):
                self._on_requeued(event)
            elif isinstance(event, Charge):
                self._charge([event])
        if finished:
            self._header()
        return finished

    @property
    def queued(self) -> int:
        return len(self.queue)

    def free_slots(self) -> int:
        return max(0, self._open_slots() - len(self.queue))

    # ------------------------------------------------------------------ a fixed set, to the end
    def drain(self, execution_ids) -> ScheduleOutcome:
        ids = list(dict.fromkeys(execution_ids))
        self.enqueue(ids)
        outcome = ScheduleOutcome()
        wanted = set(ids)
        self._header()
        while True:
            self.launch()
            if not self.running:
                break
            outcome.finished += [row["id"] for row in self.take_results() if row["id"] in wanted]
        for eid in self.queue:
            if eid in wanted:
                why = self.refused.get(eid) or self._inadmissible(self.rows[eid], 0.0) or BUDGET
                (outcome.not_launched_deadline if why == DEADLINE else outcome.not_admitted_budget).append(eid)
        return outcome

    def left_undone(self) -> ScheduleOutcome:
        """Queued work refused so far (the async driver's stop condition reads it)."""
        outcome = ScheduleOutcome()
        for eid in self.queue:
            why = self.refused.get(eid)
            if why == DEADLINE:
                outcome.not_launched_deadline.append(eid)
            elif why == BUDGET:
                outcome.not_admitted_budget.append(eid)
        return outcome

    # ------------------------------------------------------------------ internals
    def _open_slots(self) -> int:
        """Slots free for a new launch: the runner's, but not one whose execution's Finished has
        not been taken yet (a local child frees its slot just before), so what that result asks
        for next - a confirmation, a control - gets the slot first."""
        return min(self.runner.free_slots(), self.usage.capacity - len(self.running))

    def _inadmissible(self, row: dict, spent: float) -> str | None:
        deadline = self.ctx.limits.deadline
        if deadline is not None and self.clock.now() >= deadline:
            return DEADLINE
        if self.budget.limit_usd is not None:
            committed = sum(r.get("estimated_cost_usd") or 0.0 for r in self.running.values())
            if not self.budget.can_admit(row.get("estimated_cost_usd") or 0.0, spent, committed):
                return BUDGET
        return None

    def _refuse(self, eid: str, why: str) -> None:
        if self.refused.get(eid) == why:
            return
        self.refused[eid] = why
        row = self.rows[eid]
        self.memory.log_event("not_admitted", {"execution": eid, "candidate": row["candidate_id"], "reason": why,
                                               "estimated_cost_usd": row.get("estimated_cost_usd")},
                              row["generation"])
        self.view.emit("not_admitted", execution=eid, candidate=row["candidate_id"], reason=why)
        self.view.say(f"not launched {eid} {row['candidate_id']}: "
                      f"{'budget cannot cover it' if why == BUDGET else 'max-hours reached'}", style="yellow")

    def _submit(self, eid: str) -> None:
        row = self.rows[eid]
        candidate = self.memory.candidate(row["candidate_id"])
        ensure_workspace(self.ctx, row, candidate)
        spec = spec_for(self.ctx, row, candidate)
        if self.early_stop is not None:
            spec = replace(spec, stop_rule=self.early_stop.rule_for(row))
        job_id = self.runner.submit(spec)
        self._account()
        self.memory.mark_started(eid, job_id=job_id, started_at=self.clock.now())
        self.queue.remove(eid)
        self.refused.pop(eid, None)
        self._watch(self.memory.execution(eid), candidate, job_id)

    def _watch(self, row: dict, candidate: dict, job_id: str | None) -> None:
        self.rows[row["id"]] = row
        self.running[row["id"]] = row
        self.view.started(execution_id=row["id"], candidate_id=candidate["id"], kind=row["kind"],
                          strategy=candidate.get("strategy"), title=candidate.get("title"), job_id=job_id,
                          attempt=row.get("attempt", 1),
                          usd_per_second=self.pricing.hourly(row["backend"], row.get("instance_type")) / 3600)

    def _record(self, event: Finished) -> dict | None:
        row = self.running.pop(event.execution_id, None) or self.rows.get(event.execution_id)
        if row is None:
            return None               # not this scheduler's execution
        asked = event.execution_id in self.stopping
        self.stopping.discard(event.execution_id)
        self.unreachable.discard(event.execution_id)
        decided_elsewhere = (event.result or {}).get("early_stop") if not asked else None
        if isinstance(decided_elsewhere, dict) and event.result.get("status") == STOPPED_EARLY:
            # the job's own copy of the rule stopped it (a network-isolated packed job)
            self.memory.log_event("early_stop", {"execution": event.execution_id, "candidate": row["candidate_id"],
                                                 **decided_elsewhere}, row["generation"])
        cost = self.pricing.actual(event.backend, event.instance_type or row.get("instance_type"),
                                   event.billable_seconds)
        self.memory.finish_execution(event.execution_id, result=event.result, billable_seconds=event.billable_seconds,
                                     cost_usd=cost, ended_at=event.ended_at, job_id=event.job_id,
                                     instance_type=event.instance_type, started_at=event.started_at)
        done = self.memory.execution(event.execution_id)
        self.rows[done["id"]] = done
        publish_outputs(done, event.result)
        candidate = self.memory.candidate(done["candidate_id"])
        self.view.finished(done, title=candidate.get("title") or "", strategy=candidate.get("strategy") or "")
        if self.early_stop is not None:
            self.early_stop.on_finished(done)
        self._maybe_write_tsv()
        return done

    def _on_progress(self, event: Progress) -> None:
        self.view.progress(event.execution_id, step=event.step, pct=event.pct, loss=event.loss,
                           tok_per_s=event.tok_per_s)
        row = self.running.get(event.execution_id)
        if (row is None or self.early_stop is None or event.execution_id in self.stopping
                or event.execution_id in self.unreachable):
            return
        reason = self.early_stop.check(row, event.pct, event.loss)
        if reason is None:
            return
        if not self.runner.stop_early(event.execution_id, reason):
            self.unreachable.add(event.execution_id)
            self.view.say(f"{event.execution_id} {row['candidate_id']} is losing, but no stop can reach its "
                          "network-isolated packed job: the job's own copy of the rule decides", style="yellow")
            return
        self.stopping.add(event.execution_id)
        self.memory.log_event("early_stop", {"execution": event.execution_id, "candidate": row["candidate_id"],
                                             **reason}, row["generation"])
        self.view.emit("early_stop", execution=event.execution_id, candidate=row["candidate_id"], **reason)
        self.view.say(f"stopping {event.execution_id} {row['candidate_id']} early: {reason.get('reason', '')}",
                      style="yellow")

    def _on_requeued(self, event: Requeued) -> None:
        row = self.rows.get(event.execution_id) or {}
        self.memory.log_event("requeued", {"execution": event.execution_id, "reason": event.reason,
                                           "attempt": event.attempt}, row.get("generation"))
        self.view.emit("requeued", execution=event.execution_id, reason=event.reason, attempt=event.attempt)
        self.view.say(f"requeued {event.execution_id}: {event.reason} (attempt {event.attempt})", style="yellow")

    def _account(self) -> None:
        """Count the time since the last call: every slot available, the running ones busy."""
        now = self.clock.now()
        elapsed = now - self._last
        if elapsed > 0:
            self.usage.busy_s += min(len(self.running), self.usage.capacity) * elapsed
            self.usage.available_s += self.usage.capacity * elapsed
        self._last = max(self._last, now)

    def _header(self) -> None:
        if not self.view.shows_header:
            return            # only the live table shows it; noise is a query over every result
        inc = self.memory.incumbent_id()
        bpbs = self.memory.val_bpbs(inc, preset=self.ctx.preset) if inc else []
        self.view.set_header(generation=self.generation, incumbent=inc,
                             incumbent_bpb=sum(bpbs) / len(bpbs) if bpbs else None,
                             sigma=noise_sigma(self.memory), spend_usd=self.memory.spend()["total_usd"],
                             budget_usd=self.ctx.limits.budget_usd, queued=len(self.queue))

    def _maybe_write_tsv(self) -> None:
        started = time.monotonic()
        if started - self._last_tsv >= self._tsv_interval:
            write_run_results(self.memory, self.ctx.run_dir)
            self._last_tsv = time.monotonic()
            self._tsv_interval = max(TSV_EVERY_S, (self._last_tsv - started) * TSV_COST_FACTOR)

    def _charge(self, charges: list[Charge], *, state: tuple | None = None) -> None:
        """Billed seconds a Finished does not carry (earlier attempts, a share of a packed job,
        a job stopped at the last shutdown): into the ledger, priced like any execution."""
        rows = [{"execution_id": c.execution_id, "billable_seconds": c.billable_seconds, "job_id": c.job_id,
                 "reason": c.reason, "cost_usd": self.pricing.actual(
                     "sagemaker" if c.instance_type else (self.rows.get(c.execution_id) or {}).get("backend", ""),
                     c.instance_type, c.billable_seconds)} for c in charges]
        self.memory.add_charges(rows, state=state)
        for row in rows:
            self.view.emit("charge", execution=row["execution_id"], billable_seconds=row["billable_seconds"],
                           cost_usd=row["cost_usd"], job_id=row["job_id"], reason=row["reason"])

    def _settle_previous(self) -> None:
        """Charge the jobs an earlier shutdown stopped (billed until they ended), once each."""
        entries = self.memory.get_state(UNSETTLED_KEY, []) or []
        settle = getattr(self.runner, "settle", None)
        if not entries or settle is None:
            return
        try:
            charges, left = settle(entries)
        except Exception as exc:   # AWS unreachable now: the entries stay for the next start
            self.memory.log_event("settle_failed", {"error": str(exc), "jobs": [e.get("job") for e in entries]})
            self.view.say(f"could not settle {len(entries)} job(s) stopped at the last shutdown: {exc}", style="yellow")
            return
        self._charge(charges, state=(UNSETTLED_KEY, left))
        if left:
            self.view.say(f"{len(left)} job(s) stopped at the last shutdown are still stopping: their bill is "
                          "charged at the next start", style="yellow")

    def _stop_everything(self) -> None:
        self.view.say(f"stopping: {len(self.running)} running execution(s) are being stopped and recorded",
                      style="yellow")
        for event in self.runner.shutdown():
            self._record(event)
        unsettled = getattr(self.runner, "unsettled", None)
        if unsettled is not None and unsettled():
            # billed until SageMaker says Stopped (the SIGTERM grace included): charged at the next start
            self.memory.set_state(UNSETTLED_KEY, (self.memory.get_state(UNSETTLED_KEY, []) or []) + unsettled())
        # anything still marked running without a Finished (a backend that could not stop it) is
        # left running in memory; the next start re-attaches it or marks it lost
