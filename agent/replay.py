"""`autoresearch replay`: re-run recorded candidates K times and compare with the originals.

Two questions it answers: is a recorded result reproducible (same backend and preset, K more
runs), and does it transfer (evolved on A10G, replayed on H100; evolved at micro, replayed at cpu).
Replays are ordinary executions of kind "replay" whose `replay_of` points at the candidate's first
ok execution (recorded by agent/executions.py like every other row); they run through the
scheduler like everything else (budget admission, live view, memory first), and memory keeps
them out of selection (`val_bpbs` leaves replays out).
"""
from __future__ import annotations

import dataclasses
import statistics

from rich.table import Table

from agent.digest import lineage as lineage_of, noise_sigma
from agent.executions import add_replays
from agent.run_context import MeasurementVersionError, require_comparable
from agent.runlock import RunBusyError
from agent.recovery import recover_unfinished
from agent.scheduler import Scheduler
from agent.selection import threshold
from sandbox.statuses import OK, REPLAY, RESULT_STATUSES


class ReplayError(ValueError):
    """A replay request that names nothing runnable; the message says what and why."""


def _ran(memory, candidate_id: str) -> list[dict]:
    """The candidate's finished non-replay executions, oldest first."""
    return [e for e in memory.executions(candidate_id=candidate_id)
            if e.get("kind") != REPLAY and e.get("status") in RESULT_STATUSES]


def select_candidates(memory, *, generations: list[int] | None = None, candidate: str | None = None,
                      lineage: bool = False) -> list[str]:
    """Candidate ids to replay, in order, without repeats. With no choice at all: the lineage.

    Raises ReplayError for an unknown id, a candidate that cannot run (rejected or dropped, no
    source), or a selection that holds nothing that ever ran."""
    chosen: list[str] = []
    if candidate:
        try:
            row = memory.candidate(candidate)
        except KeyError:
            known = ", ".join(c["id"] for c in memory.candidates() if c["check_status"] == "accepted") or "none"
            raise ReplayError(f"unknown candidate {candidate!r}; accepted candidates of this run: {known}") from None
        if row["check_status"] != "accepted" or not row.get("source"):
            raise ReplayError(f"candidate {candidate} was {row['check_status']} ({row.get('rule') or 'no source'}): "
                              f"there is no train.py to replay")
        chosen.append(candidate)
    for generation in generations or []:
        ran = [c["id"] for c in memory.candidates(generation=generation, check_status="accepted")
               if _ran(memory, c["id"])]
        if not ran:
            raise ReplayError(f"generation {generation} has no candidate that ran; nothing to replay")
        chosen += ran
    if lineage or not (candidate or generations):
        steps = [row["id"] for row in lineage_of(memory)]
        if not steps:
            raise ReplayError("this run has no incumbent yet, so there is no lineage to replay "
                              "(name --generation N or --candidate ID)")
        chosen += steps
    return list(dict.fromkeys(chosen))


def _original_of(memory, candidate_id: str) -> str | None:
    """The execution a replay reproduces: the first ok one, else the first finished one."""
    ran = _ran(memory, candidate_id)
    ok = [e for e in ran if e["status"] == OK]
    return (ok or ran or [{}])[0].get("id")


def plan_replays(ctx, candidate_ids: list[str], repeats: int) -> list[str]:
    """Record `repeats` pending replay executions per candidate; returns their ids."""
    memory = ctx.memory
    execution_ids = []
    for cid in candidate_ids:
        execution_ids += add_replays(ctx, memory.candidate(cid), repeats, _original_of(memory, cid))
    memory.log_event("replay_planned", {"candidates": candidate_ids, "repeats": repeats, "backend": ctx.backend,
                                        "preset": ctx.preset, "executions": execution_ids,
                                        "instance_type": ctx.settings.sagemaker.instance_type
                                        if ctx.backend == "sagemaker" else None})
    return execution_ids


def compare(memory, candidate_ids: list[str], replay_ids: list[str], k_sigma: float, min_delta: float) -> list[dict]:
    """One row per candidate: original mean/n (its non-replay ok runs), this replay's mean/n/sigma,
    delta (replay - original) and whether |delta| is within max(min_delta, k x pooled sigma)."""
    sigma = noise_sigma(memory)
    bar = threshold(min_delta, k_sigma, sigma)
    wanted = set(replay_ids)
    rows = []
    for cid in candidate_ids:
        candidate = memory.candidate(cid)
        originals = [e for e in _ran(memory, cid) if e["status"] == OK and e.get("val_bpb") is not None]
        replays = [e for e in memory.executions(candidate_id=cid, kind=REPLAY) if e["id"] in wanted]
        values = [e["val_bpb"] for e in replays if e["status"] == OK and e.get("val_bpb") is not None]
        orig_values = [e["val_bpb"] for e in originals]
        orig_mean = statistics.fmean(orig_values) if orig_values else None
        rep_mean = statistics.fmean(values) if values else None
        delta = rep_mean - orig_mean if orig_mean is not None and rep_mean is not None else None
        rows.append({
            "candidate_id": cid, "title": candidate["title"],
            "original_preset": ",".join(sorted({e["preset"] for e in originals})) or None,
            "original_mean": orig_mean, "original_n": len(orig_values),
            "replay_preset": replays[0]["preset"] if replays else None,
            "replay_backend": replays[0]["backend"] if replays else None,
            "replay_instance_type": replays[0].get("instance_type") if replays else None,
            "replay_mean": rep_mean, "replay_n": len(values),
            "replay_sigma": statistics.stdev(values) if len(values) >= 2 else None,
            "replay_failed": sum(1 for e in replays if e["status"] != OK),
            "delta": delta, "threshold": bar,
            "within_noise": None if delta is None else abs(delta) <= bar,
        })
    return rows


def _f(value, digits: int = 6) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(rows: list[dict], sigma: float | None, k_sigma: float) -> Table:
    where = sorted({"/".join(x for x in (r["replay_preset"], r["replay_backend"], r["replay_instance_type"]) if x)
                    for r in rows if r["replay_preset"]})
    table = Table(title=f"replay on {', '.join(where) or '-'} vs original",
                  caption=f"within noise: |Δ| ≤ max(min_delta, {k_sigma:g}σ), pooled σ {_f(sigma)}")
    table.add_column("candidate", no_wrap=True)
    table.add_column("original (n)", justify="right", no_wrap=True)
    table.add_column("replay (n)", justify="right", no_wrap=True)
    table.add_column("replay σ", justify="right")
    table.add_column("Δ", justify="right", no_wrap=True)
    table.add_column("within noise", justify="center")
    for r in rows:
        failed = f", {r['replay_failed']} failed" if r["replay_failed"] else ""
        verdict = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[r["within_noise"]]
        original = f"{_f(r['original_mean'])} ({r['original_n']})"
        if r["original_preset"] and r["original_preset"] != r["replay_preset"]:
            original += f" {r['original_preset']}"
        table.add_row(r["candidate_id"], original, f"{_f(r['replay_mean'])} ({r['replay_n']}{failed})",
                      _f(r["replay_sigma"]), "-" if r["delta"] is None else f"{r['delta']:+.6f}", verdict)
    return table


def run_replay(ctx, *, generations: list[int] | None = None, candidate: str | None = None,
               lineage: bool = False, repeats: int = 1, preset: str | None = None) -> int:
    """Replay the chosen candidates `repeats` times on ctx's backend (and `preset`, default the
    run's own), print original vs replay, and return 0 (2 when the request names nothing runnable).

    `preset` is separate from ctx because a run's context keeps the preset it was started with
    (open_run refuses another one so autopilot never mixes presets); a replay may cross presets."""
    console = ctx.console
    if repeats < 1:
        console.print(f"[red]--repeats must be at least 1, got {repeats}[/red]")
        return 2
    if preset and preset != ctx.preset:
        from agent.run_context import resolve_preset
        ctx = dataclasses.replace(ctx, preset=resolve_preset(preset, ctx.backend,
                                                             ctx.settings.sagemaker.instance_type))
    try:
        chosen = select_candidates(ctx.memory, generations=generations, candidate=candidate, lineage=lineage)
    except ReplayError as exc:
        console.print(f"[red]replay: {exc}[/red]")
        return 2
    if ctx.runner is None:
        console.print(f"dry run: would replay {len(chosen)} candidate(s) x {repeats} on "
                      f"{ctx.backend}/{ctx.preset}: {', '.join(chosen)}; nothing recorded or launched")
        return 0
    try:
        require_comparable(ctx)     # replays compare with the originals: same measurement only
        with Scheduler(ctx) as scheduler:
            # replays left "running" by a killed earlier session are marked lost (kept, not re-run:
            # this call plans its own)
            recover_unfinished(ctx)
            execution_ids = plan_replays(ctx, chosen, repeats)
            console.print(f"replaying {len(chosen)} candidate(s) x {repeats} on {ctx.backend}/{ctx.preset}: "
                          f"{', '.join(chosen)}", highlight=False)
            scheduler.drain(execution_ids)
    except (RunBusyError, MeasurementVersionError) as exc:
        console.print(f"[red]replay: {exc}[/red]")
        return 2
    selection = ctx.settings.selection
    rows = compare(ctx.memory, chosen, execution_ids, selection.k_sigma, selection.min_delta)
    if ctx.json_mode:
        for row in rows:
            ctx.emit("replay", **row)
    else:
        console.print(render_table(rows, noise_sigma(ctx.memory), selection.k_sigma))
    return 0
