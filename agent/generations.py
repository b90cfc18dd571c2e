"""The generations schedule: propose a population, run it with the incumbent's controls, wait
for the slowest member, select, repeat.

    for each generation:  propose -> run candidates + controls -> judge against the incumbent the
                          generation started with -> re-run marginal winners once -> promote the
                          best clear winner -> commit/tag -> results.tsv

`launch_generation` is one generation after proposing (the REPL's `launch` calls it too);
`run_generations` is the whole schedule for autopilot and returns why it stopped.
"""
from __future__ import annotations

import dataclasses

from agent.baseline import NoResultError, ensure_baseline
from agent.commits import commit_candidates, promote
from agent.digest import noise_sigma
from agent.executions import ensure_slots
from agent.phases import LAUNCHED, SELECTED, get_phase, is_done, set_phase
from agent.proposing import ensure_proposed
from agent.results_tsv import write_run_results
from agent.scheduler import ScheduleOutcome, Stop
from agent.judging import judge
from agent.selection import count_noise, pick_winner
from sandbox.statuses import (CANDIDATE, CONFIRMATION, CONTROL, INEFFECTIVE_STATUSES, RESULT_STATUSES,
                              UNFINISHED_STATUSES)


def _mean(values):
    return sum(values) / len(values) if values else None


def _accepted(mem, generation: int) -> list[dict]:
    return [c for c in mem.candidates(generation=generation, check_status="accepted") if c["origin"] != "baseline"]


def generation_executions(ctx, generation: int, start_incumbent: str) -> list[str]:
    """The generation's rows to run: one per accepted candidate, the incumbent's controls, and
    confirmations an interrupted selection had created."""
    mem = ctx.memory
    accepted = _accepted(mem, generation)
    commit_candidates(ctx, accepted)
    ids = []
    for cand in accepted:
        ids += ensure_slots(ctx, cand["id"], generation, CANDIDATE, 1)
    ids += ensure_slots(ctx, start_incumbent, generation, CONTROL, ctx.settings.selection.controls_per_generation)
    ids += [e["id"] for e in mem.executions(generation=generation, kind=CONFIRMATION)
            if e["status"] in UNFINISHED_STATUSES]
    return ids


def _judgeable(mem, generation: int) -> list[dict]:
    """Accepted candidates of the generation whose candidate runs all ended, one with a result."""
    out = []
    for cand in _accepted(mem, generation):
        rows = [e for e in mem.executions(generation=generation, candidate_id=cand["id"])
                if e["kind"] in (CANDIDATE, CONFIRMATION)]
        if rows and all(e["status"] in RESULT_STATUSES + INEFFECTIVE_STATUSES for e in rows) \
                and any(e["status"] in RESULT_STATUSES for e in rows):
            out.append(cand)
    return out


def _decide_all(ctx, generation: int, incumbent: str) -> dict:
    sigma = noise_sigma(ctx.memory)
    return {c["id"]: judge(ctx, c["id"], incumbent, sigma) for c in _judgeable(ctx.memory, generation)}


def _never_ran(mem, generation: int) -> int:
    """Accepted candidates that were dropped before running (REPL) count as done."""
    return sum(1 for c in _accepted(mem, generation) if not mem.executions(generation=generation, candidate_id=c["id"]))


def select_generation(ctx, generation: int, start_incumbent: str, scheduler) -> tuple[dict, ScheduleOutcome]:
    """Judge the generation's candidates against the incumbent it started with; re-run marginal
    winners once; promote the best clear winner. Returns the selection summary and what the
    confirmation runs left undone."""
    mem = ctx.memory
    if not mem.val_bpbs(start_incumbent, preset=ctx.preset):
        raise NoResultError(f"incumbent {start_incumbent} has no ok run to compare against")
    decisions = _decide_all(ctx, generation, start_incumbent)
    # a marginal winner gets one confirmation run (a new attempt if the earlier one was lost/killed)
    marginal = [cid for cid, d in decisions.items() if d.verdict == "confirm"
                and not any(e["status"] not in INEFFECTIVE_STATUSES for e in
                            mem.executions(generation=generation, candidate_id=cid, kind=CONFIRMATION))]
    left = ScheduleOutcome()
    if marginal:
        ids = []
        for cid in marginal:
            mem.log_event("confirmation", {"candidate": cid, "reason": decisions[cid].reason}, generation)
            ids += ensure_slots(ctx, cid, generation, CONFIRMATION, 1)
        left = scheduler.drain(ids)
        decisions = _decide_all(ctx, generation, start_incumbent)
    for cid, d in decisions.items():
        verdict, reason = d.verdict, d.reason
        if verdict == "confirm":   # the confirmation run failed or was not admitted: not proven
            verdict, reason = "noise", f"confirmation run did not produce a result; not kept; {d.reason}"
        mem.record_decision(cid, verdict=verdict, delta=d.delta, threshold=d.threshold, reason=reason,
                            generation=generation)
        decisions[cid] = d if verdict == d.verdict else dataclasses.replace(d, verdict=verdict, reason=reason)
    winner = pick_winner(decisions)
    previous = mem.incumbent_id()
    new_incumbent = winner.candidate_id if winner else start_incumbent
    if new_incumbent != previous:
        mem.set_state("incumbent", new_incumbent)
    counted = {c["id"] for c in mem.candidates(generation=generation, check_status="accepted")} | {start_incumbent}
    unfinished = [e for e in mem.executions(generation=generation)
                  if e["status"] in UNFINISHED_STATUSES and e["candidate_id"] in counted]
    complete = not unfinished and len(_judgeable(mem, generation)) + _never_ran(mem, generation) \
        >= len(_accepted(mem, generation))
    promote(ctx, generation, new_incumbent)   # before the phase is marked: a kill in between re-does it
    set_phase(mem, generation, phase=SELECTED, incumbent=start_incumbent, winner=new_incumbent, complete=complete)
    inc_bpbs = mem.val_bpbs(new_incumbent, preset=ctx.preset)
    summary = {"generation": generation, "previous": previous, "incumbent": new_incumbent,
               "changed": new_incumbent != previous, "incumbent_val_bpb": _mean(inc_bpbs),
               "delta": winner.delta if winner else None, "sigma": noise_sigma(mem),
               "threshold": winner.threshold if winner else (next(iter(decisions.values())).threshold
                                                             if decisions else None),
               "noise_rejected": count_noise(decisions), "complete": complete,
               "decisions": {cid: d.verdict for cid, d in decisions.items()}}
    mem.log_event(SELECTED, summary, generation)
    ctx.emit("selected", **summary)
    if not ctx.json_mode:
        if winner:
            ctx.say(f"generation {generation}: new incumbent {new_incumbent} (val_bpb {_mean(inc_bpbs):.6f}, "
                    f"delta {winner.delta:+.6f} > threshold {winner.threshold:.6f})", "bold green")
        else:
            ctx.say(f"generation {generation}: incumbent {new_incumbent} stays "
                    f"({summary['noise_rejected']} apparent win(s) rejected as noise)", "bold")
    return summary, left


def launch_generation(ctx, generation: int, scheduler) -> dict:
    """Run the generation's accepted, not-yet-run candidates plus the incumbent's controls, then
    select, commit/tag and render results.tsv. Returns the selection summary (with
    `not_admitted`/`deadline` lists when the budget or deadline left executions pending)."""
    mem = ctx.memory
    start_incumbent = get_phase(mem, generation).get("incumbent") or mem.incumbent_id()
    if start_incumbent is None:
        raise NoResultError("no incumbent yet: run the baseline (generation 0) first")
    set_phase(mem, generation, phase=LAUNCHED, incumbent=start_incumbent)
    inc_bpb = _mean(mem.val_bpbs(start_incumbent, preset=ctx.preset))
    ctx.emit("generation_start", generation=generation, population=len(_accepted(mem, generation)),
             incumbent=start_incumbent, incumbent_val_bpb=inc_bpb, sigma=noise_sigma(mem))
    if not ctx.json_mode:
        ctx.say(f"generation {generation}: running against incumbent {start_incumbent}"
                + (f" (val_bpb {inc_bpb:.6f})" if inc_bpb is not None else ""), "bold")
    scheduler.generation = generation
    left = scheduler.drain(generation_executions(ctx, generation, start_incumbent))
    summary, confirm_left = select_generation(ctx, generation, start_incumbent, scheduler)
    summary["not_admitted"] = left.not_admitted_budget + confirm_left.not_admitted_budget
    summary["deadline"] = left.not_launched_deadline + confirm_left.not_launched_deadline
    write_run_results(mem, ctx.run_dir)
    return summary


def run_generations(ctx, scheduler, generations: int, population: int) -> Stop | None:
    """The baseline, then generation after generation until `generations` are selected; a Stop
    when the budget or the deadline ends it first."""
    stop = ensure_baseline(ctx, scheduler)
    if stop is not None:
        return stop
    for generation in range(1, generations + 1):
        if is_done(ctx.memory, generation):
            continue
        if ctx.limits.deadline is not None and ctx.clock.now() >= ctx.limits.deadline:
            return Stop("deadline", f"max-hours reached before generation {generation}")
        left = budget_left(ctx)
        if left is not None and left <= 0:
            return Stop("budget", f"budget exhausted before generation {generation}")
        ensure_proposed(ctx, generation, population)
        summary = launch_generation(ctx, generation, scheduler)
        stop = ScheduleOutcome(not_admitted_budget=summary["not_admitted"],
                               not_launched_deadline=summary["deadline"]).stop()
        if stop is not None:
            return stop
    return None


def budget_left(ctx) -> float | None:
    if ctx.limits.budget_usd is None:
        return None
    return ctx.limits.budget_usd - ctx.memory.spend()["total_usd"]
