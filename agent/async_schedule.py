"""The async schedule: no generation barrier. Whenever a slot frees, the next piece of work
starts; a result is judged as soon as it arrives, against the incumbent of that moment.

    while work is left:
        fill free slots, in this order: confirmations (they move the incumbent), a control re-run
            of the incumbent when one is due (every `selection.control_every` candidate launches),
            the next proposed candidate; when none is left, propose the next round against the
            incumbent current now
        take results: judge each candidate whose runs all ended; a confirmed win becomes the
            incumbent at once (and the branch moves); a marginal one gets a confirmation run
        close rounds whose candidates are all judged (verdicts, `<TAG>/gen-NNN-best`, `selected`)

A "generation" is a proposal round of `population` candidates, numbered as before, so
results.tsv, the git tags, the REPL and replay read an async run like any other. The baseline's
repeats start together with the first round (slots do not idle while noise is measured);
candidates that finish before the baseline has a result wait for it to be judged.

Everything it knows is in memory (phases, verdicts, executions), so a killed run resumes: rows
left pending or running are queued again, finished but unjudged candidates are judged, and the
round being proposed is not proposed twice.
"""
from __future__ import annotations

from collections import deque

from agent.baseline import add_baseline, baseline_done, baseline_executions, settle_baseline
from agent.commits import advance, commit_candidates, tag
from agent.digest import noise_sigma
from agent.executions import ensure_slots
from agent.generations import budget_left
from agent.judging import judge
from agent.phases import LAUNCHED, PROPOSED, SELECTED, get_phase, is_done, set_phase
from agent.proposing import ensure_proposed
from agent.scheduler import Stop
from sandbox.statuses import (BASELINE, CANDIDATE, CONFIRMATION, CONTROL, INEFFECTIVE_STATUSES, RESULT_STATUSES,
                              UNFINISHED_STATUSES)

FINAL_VERDICTS = ("keep", "discard", "noise")
MAX_ATTEMPTS = 3           # a candidate whose runs keep dying (spot) is given up after this many


def _mean(values):
    return sum(values) / len(values) if values else None


class AsyncSchedule:
    def __init__(self, ctx, scheduler, generations: int, population: int):
        self.ctx, self.mem, self.scheduler = ctx, ctx.memory, scheduler
        self.generations, self.population = generations, population
        per_round = ctx.settings.selection.controls_per_generation
        self.control_every = ctx.settings.selection.control_every or (
            max(1, population // per_round) if per_round else None)
        self.to_launch: deque[tuple[int, str]] = deque()     # (generation, candidate id) not launched yet
        self.launched_since_control = 0
        self.round = 0                                       # the newest round proposed
        self.open_rounds: set[int] = set()
        self.waiting: set[str] = set()                       # finished candidates judged once the baseline is in
        self._noise: tuple[int, float | None] | None = None  # (ok results counted, sigma)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Stop | None:
        self._resume()
        while True:
            self._fill()
            self.scheduler.launch()
            stop = self._stop_condition()
            if stop is not None or self._done():
                return stop
            for row in self.scheduler.take_results():
                self._on_result(row)

    def _done(self) -> bool:
        return (self.round >= self.generations and not self.open_rounds and not self.to_launch
                and not self.scheduler.running and not self.scheduler.queued and baseline_done(self.ctx))

    def _stop_condition(self) -> Stop | None:
        """Why nothing more can happen now, if so: the budget or the deadline refused the rest."""
        if self.scheduler.running or self._done():
            return None
        left = self.scheduler.left_undone()
        if left.left_undone:
            return left.stop()
        if self.scheduler.queued:
            return None
        why = self._why_not_propose()
        if why is not None:
            return why
        raise RuntimeError("async schedule: idle with work left and nothing to launch (a bug)")

    # ------------------------------------------------------------------ filling slots
    def _fill(self) -> None:
        while self.scheduler.free_slots() > 0:
            eid = self._next_execution()
            if eid is None:
                return
            self.scheduler.enqueue([eid])

    def _next_execution(self) -> str | None:
        incumbent = self.mem.incumbent_id()
        if self.control_every and incumbent and self.launched_since_control >= self.control_every \
                and self.mem.val_bpbs(incumbent, preset=self.ctx.preset):
            self.launched_since_control = 0
            return self._plan_control(incumbent)
        while not self.to_launch:
            if not self._propose_next_round():
                return None
        generation, cid = self.to_launch.popleft()
        if get_phase(self.mem, generation).get("phase") == PROPOSED:
            set_phase(self.mem, generation, phase=LAUNCHED)
        self.scheduler.generation = generation
        self.launched_since_control += 1
        ids = ensure_slots(self.ctx, cid, generation, CANDIDATE, 1)
        return ids[0] if ids else self._next_execution()

    def _plan_control(self, incumbent: str) -> str:
        """A new control slot of the incumbent in the newest round (its folder -control-N+1)."""
        generation = max(1, self.round)
        rows = self.mem.executions(generation=generation, candidate_id=incumbent, kind=CONTROL)
        slots = len({e["workspace"] for e in rows})
        return ensure_slots(self.ctx, incumbent, generation, CONTROL, slots + 1)[-1]

    def _why_not_propose(self) -> Stop | None:
        generation = self.round + 1
        if generation > self.generations:
            return None
        if self.ctx.limits.deadline is not None and self.ctx.clock.now() >= self.ctx.limits.deadline:
            return Stop("deadline", f"max-hours reached before generation {generation}")
        left = budget_left(self.ctx)
        if left is not None and left <= 0:
            return Stop("budget", f"budget exhausted before generation {generation}")
        return None

    def _propose_next_round(self) -> bool:
        """Propose the next round against the incumbent of this moment; False when no round is
        left or the limits say no."""
        if self.round >= self.generations or self._why_not_propose() is not None:
            return False
        self.round += 1
        generation = self.round
        incumbent = self.mem.incumbent_id() or add_baseline(self.ctx)
        ensure_proposed(self.ctx, generation, self.population, incumbent_id=incumbent)
        accepted = self._accepted(generation)
        commit_candidates(self.ctx, accepted)
        self.ctx.emit("generation_start", generation=generation, population=len(accepted),
                      incumbent=get_phase(self.mem, generation).get("incumbent"),
                      incumbent_val_bpb=_mean(self.mem.val_bpbs(incumbent, preset=self.ctx.preset)),
                      sigma=noise_sigma(self.mem))
        self.open_rounds.add(generation)
        self.to_launch.extend((generation, c["id"]) for c in accepted)
        if not accepted:
            self._close_rounds()
        return True

    # ------------------------------------------------------------------ results
    def _on_result(self, row: dict) -> None:
        if row["kind"] == BASELINE and not baseline_done(self.ctx):
            if row["status"] in INEFFECTIVE_STATUSES:     # lost for good (spot): a new attempt
                self.scheduler.enqueue(baseline_executions(self.ctx), first=True)
            else:
                self._settle_baseline()
        elif row["status"] in INEFFECTIVE_STATUSES:
            self._retry(row)
        elif row["kind"] in (CANDIDATE, CONFIRMATION):
            self._judge_when_ready(row["candidate_id"], row["generation"])
        self._close_rounds()        # a control's end may be what a round was waiting for

    def _settle_baseline(self) -> None:
        unfinished = [e for e in self.mem.executions(generation=0) if e["status"] in UNFINISHED_STATUSES]
        if unfinished:
            return
        settle_baseline(self.ctx)          # raises NoResultError when no repeat produced a val_bpb
        for cid in sorted(self.waiting):
            generation = self.mem.candidate(cid)["generation"]
            self._judge_when_ready(cid, generation)
        self.waiting.clear()

    def _retry(self, row: dict) -> None:
        """A run that said nothing about the code (spot lost it for good): a new attempt, at most
        MAX_ATTEMPTS in all; then the candidate is given up, with the reason."""
        kind, cid, generation = row["kind"], row["candidate_id"], row["generation"]
        attempts = [e for e in self.mem.executions(generation=generation, candidate_id=cid, kind=kind)
                    if e["workspace"] == row["workspace"]]
        if len(attempts) < MAX_ATTEMPTS:
            slot = len({e["workspace"] for e in self.mem.executions(generation=generation, candidate_id=cid,
                                                                    kind=kind)})
            self.scheduler.enqueue(ensure_slots(self.ctx, cid, generation, kind, slot), first=True)
            return
        if kind == CANDIDATE:
            self.mem.record_decision(cid, verdict="discard", delta=None, threshold=0.0, generation=generation,
                                     reason=f"no result after {len(attempts)} attempts ({row['status']}: "
                                            f"{row.get('failure_reason') or 'no reason'})")
        elif kind == CONFIRMATION:
            self._judge_when_ready(cid, generation)      # not proven: judged as noise

    def _judge_when_ready(self, cid: str, generation: int) -> None:
        """Judge the candidate once all its runs ended, against the incumbent current now."""
        rows = [e for e in self.mem.executions(generation=generation, candidate_id=cid)
                if e["kind"] in (CANDIDATE, CONFIRMATION)]
        if not rows or any(e["status"] in UNFINISHED_STATUSES for e in rows) \
                or not any(e["status"] in RESULT_STATUSES for e in rows):
            return
        if self.mem.candidate(cid)["verdict"] in FINAL_VERDICTS:
            return
        incumbent = self.mem.incumbent_id()
        if incumbent is None or not self.mem.val_bpbs(incumbent, preset=self.ctx.preset):
            self.waiting.add(cid)          # the baseline has no result yet
            return
        d = judge(self.ctx, cid, incumbent, self._sigma())
        verdict, reason = d.verdict, d.reason
        confirmations = [e for e in rows if e["kind"] == CONFIRMATION]
        if verdict == "confirm":
            # a confirmation lost with a dead process said nothing: it gets a new attempt
            ran = any(e["status"] not in INEFFECTIVE_STATUSES for e in confirmations)
            if not ran and len(confirmations) < MAX_ATTEMPTS:
                self.mem.record_decision(cid, verdict="confirm", delta=d.delta, threshold=d.threshold, reason=reason,
                                         generation=generation)
                self.mem.log_event("confirmation", {"candidate": cid, "reason": reason}, generation)
                self.scheduler.enqueue(ensure_slots(self.ctx, cid, generation, CONFIRMATION, 1), first=True)
                return
            # the confirmation ran and produced no result: not proven
            verdict, reason = "noise", f"confirmation run did not produce a result; not kept; {reason}"
        self.mem.record_decision(cid, verdict=verdict, delta=d.delta, threshold=d.threshold, reason=reason,
                                 generation=generation)
        if verdict == "keep":
            self._promote(cid, incumbent, d)

    def _promote(self, cid: str, previous: str, decision) -> None:
        self.mem.set_state("incumbent", cid)
        advance(self.ctx, cid)
        inc_bpb = _mean(self.mem.val_bpbs(cid, preset=self.ctx.preset))
        self.ctx.emit("incumbent", candidate=cid, previous=previous, val_bpb=inc_bpb, delta=decision.delta,
                      threshold=decision.threshold)
        if not self.ctx.json_mode:
            self.ctx.say(f"new incumbent {cid} (val_bpb {inc_bpb:.6f}, delta {decision.delta:+.6f} > threshold "
                         f"{decision.threshold:.6f} against {previous})", "bold green")

    # ------------------------------------------------------------------ rounds
    def _close_rounds(self) -> None:
        """Close, in order, every open round whose candidates are all judged and whose runs ended
        (after the baseline: a round's tag points at the incumbent of its end)."""
        if not baseline_done(self.ctx):
            return
        for generation in sorted(self.open_rounds):
            if any(g == generation for g, _ in self.to_launch):
                return
            accepted = self._accepted(generation)
            if any(c["verdict"] not in FINAL_VERDICTS for c in accepted):
                return
            if any(e["status"] in UNFINISHED_STATUSES for e in self.mem.executions(generation=generation)):
                return
            self._close(generation, accepted)

    def _close(self, generation: int, accepted: list[dict]) -> None:
        phase = get_phase(self.mem, generation)
        incumbent = self.mem.incumbent_id()
        tag(self.ctx, generation, incumbent)     # before the phase is marked: a kill in between re-does it
        set_phase(self.mem, generation, phase=SELECTED, winner=incumbent, complete=True)
        self.open_rounds.discard(generation)
        decisions = {c["id"]: c["verdict"] for c in accepted}
        summary = {"generation": generation, "previous": phase.get("incumbent"), "incumbent": incumbent,
                   "changed": incumbent != phase.get("incumbent"),
                   "incumbent_val_bpb": _mean(self.mem.val_bpbs(incumbent, preset=self.ctx.preset)),
                   "sigma": noise_sigma(self.mem), "noise_rejected": sum(v == "noise" for v in decisions.values()),
                   "complete": True, "decisions": decisions}
        self.mem.log_event(SELECTED, summary, generation)
        self.ctx.emit("selected", **summary)
        if not self.ctx.json_mode:
            self.ctx.say(f"round {generation} closed: incumbent {incumbent} "
                         f"({summary['noise_rejected']} apparent win(s) rejected as noise)", "bold")

    # ------------------------------------------------------------------ resume
    def _resume(self) -> None:
        """Queue what memory says is left to do (a fresh run: the baseline's repeats)."""
        self.scheduler.enqueue(baseline_executions(self.ctx))
        for generation in range(1, self.generations + 1):
            phase = get_phase(self.mem, generation).get("phase")
            if phase is None or is_done(self.mem, generation):
                if phase is not None:
                    self.round = generation
                continue
            if phase not in (PROPOSED, LAUNCHED):
                break                      # being proposed when the last process died: propose it again
            self.round = generation
            self.open_rounds.add(generation)
            for cand in self._accepted(generation):
                rows = self.mem.executions(generation=generation, candidate_id=cand["id"])
                live = [e for e in rows if e["kind"] in (CANDIDATE, CONFIRMATION)
                        and e["status"] not in INEFFECTIVE_STATUSES]
                if not any(e["kind"] == CANDIDATE for e in live):
                    self.to_launch.append((generation, cand["id"]))
                elif any(e["status"] in UNFINISHED_STATUSES for e in live):
                    self.scheduler.enqueue([e["id"] for e in live if e["status"] in UNFINISHED_STATUSES])
                else:
                    self.waiting.add(cand["id"])
            # controls left pending or running, and new attempts of those lost with the process
            controls = self.mem.executions(generation=generation, kind=CONTROL)
            for cid in sorted({e["candidate_id"] for e in controls}):
                slots = len({e["workspace"] for e in controls if e["candidate_id"] == cid})
                self.scheduler.enqueue(ensure_slots(self.ctx, cid, generation, CONTROL, slots))
        if not baseline_done(self.ctx):
            self._settle_baseline()        # when its runs had all ended before the last process died
        else:
            for cid in sorted(self.waiting):
                self._judge_when_ready(cid, self.mem.candidate(cid)["generation"])
            self.waiting.clear()
        self._close_rounds()

    # ------------------------------------------------------------------ helpers
    def _sigma(self) -> float | None:
        """The pooled noise, recomputed only when an ok result came in (it reads every result)."""
        count = self.mem.ok_count()
        if self._noise is None or self._noise[0] != count:
            self._noise = (count, noise_sigma(self.mem))
        return self._noise[1]

    def _accepted(self, generation: int) -> list[dict]:
        return [c for c in self.mem.candidates(generation=generation, check_status="accepted")
                if c["origin"] != "baseline"]


def run_async(ctx, scheduler, generations: int, population: int) -> Stop | None:
    """The async schedule for autopilot (see the module docstring); a Stop when the budget or the
    deadline ends it before every round is closed."""
    return AsyncSchedule(ctx, scheduler, generations, population).run()
