"""`autopilot --dry-run`: propose and check the next generation, show what would run and its
estimated cost against the budget, launch nothing. With the SageMaker backend, each planned
execution's CreateTrainingJob request is written as JSON next to its candidate (no AWS call).

The plan is made of the same `PlannedExecution`s the real run records (agent/executions.py);
nothing of it is written to memory, so the real run afterwards plans the same executions again
(and re-uses the stored proposals: the proposer is not asked twice).
"""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from agent.baseline import add_baseline
from agent.executions import ensure_workspace, plan, pricing, spec_for
from agent.phases import first_open_generation, get_phase, is_done
from agent.proposing import ensure_proposed
from sandbox.statuses import BASELINE, CANDIDATE, CONTROL

EXIT_OK = 0


def _rows(ctx, population: int) -> tuple[int, list[tuple[object, dict]], list[dict]]:
    """(generation, [(planned execution, display fields)], rejected candidates)."""
    mem = ctx.memory
    price = pricing(ctx)
    baseline = mem.candidate(add_baseline(ctx))
    rows = []
    if not is_done(mem, 0):
        for slot in range(1, ctx.settings.selection.baseline_repeats + 1):
            rows.append((plan(ctx, baseline["id"], 0, BASELINE, slot, price=price),
                         {"strategy": "baseline", "title": "baseline"}))
    generation = first_open_generation(mem)
    ensure_proposed(ctx, generation, population)
    start = get_phase(mem, generation).get("incumbent") or baseline["id"]
    rejected = []
    for cand in mem.candidates(generation=generation):
        if cand["check_status"] != "accepted":
            rejected.append(cand)
        elif not mem.executions(generation=generation, candidate_id=cand["id"], kind=CANDIDATE):
            rows.append((plan(ctx, cand["id"], generation, CANDIDATE, 1, price=price),
                         {"strategy": cand["strategy"], "title": cand["title"]}))
    for slot in range(1, ctx.settings.selection.controls_per_generation + 1):
        rows.append((plan(ctx, start, generation, CONTROL, slot, price=price),
                     {"strategy": "control", "title": f"control: re-run of incumbent {start}"}))
    return generation, rows, rejected


def dry_run_plan(ctx, population: int) -> int:
    generation, rows, rejected = _rows(ctx, population)
    left = None if ctx.limits.budget_usd is None else ctx.limits.budget_usd - ctx.memory.spend()["total_usd"]
    shown = []
    for planned, extra in rows:
        each = planned.estimated_cost_usd
        admitted = left is None or each <= left + 1e-12
        if left is not None and admitted:
            left -= each
        line = {"generation": planned.generation, "candidate": planned.candidate_id, "kind": planned.kind,
                **extra, "folder": planned.workspace.name, "estimated_cost_usd": each, "admitted": admitted}
        ctx.emit("plan", **line)
        shown.append(line)
    written = _requests(ctx, [p for p, _ in rows]) if ctx.backend == "sagemaker" else []
    total = sum(line["estimated_cost_usd"] for line in shown)
    over = sum(1 for line in shown if not line["admitted"])
    if not ctx.json_mode:
        _print(ctx, shown, rejected, total, over, written)
    ctx.memory.log_event("dry_run", {"generation": generation, "executions": len(shown), "estimated_usd": total,
                                     "requests": [str(p) for p in written]})
    ctx.emit("summary", exit_code=EXIT_OK, reason="dry run: nothing launched", dry_run=True,
             executions=len(shown), estimated_cost_usd=total, rejected=len(rejected), not_admitted=over,
             requests=[str(p) for p in written])
    return EXIT_OK


def _print(ctx, shown, rejected, total, over, written) -> None:
    table = Table(title=f"dry run: {ctx.tag} ({ctx.backend}, preset {ctx.preset}) - nothing is launched")
    for col in ("gen", "candidate", "kind", "strategy", "title", "est. $", "budget"):
        table.add_column(col, justify="right" if col in ("gen", "est. $") else "left")
    for line in shown:
        table.add_row(str(line["generation"]), line["candidate"], line["kind"], escape(line["strategy"]),
                      escape(line["title"][:60]), f"{line['estimated_cost_usd']:.4f}",
                      "fits" if line["admitted"] else "[yellow]over[/yellow]")
    ctx.console.print(table)
    for cand in rejected:
        ctx.say(f"rejected {cand['id']} [{cand['strategy']}] {cand['title']}: {cand['rule']} "
                f"{(cand.get('reason') or '')[:120]}", "dim")
    budget = ctx.limits.budget_usd
    missing = pricing(ctx).unpriced_note(ctx.backend, ctx.settings.sagemaker.instance_type)
    if missing:
        ctx.say(f"no price: {missing}", "yellow")
    ctx.say(f"{len(shown)} execution(s), estimated ${total:.4f}"
            + (f"; budget ${budget:.2f}: {over} would not be admitted" if budget else ""))
    for path in written:
        ctx.say(f"wrote {path}")


def _requests(ctx, planned: list) -> list[Path]:
    """Build each planned workspace and write its CreateTrainingJob request JSON (no AWS call)."""
    from sandbox.runners.sagemaker import write_dry_run_requests
    specs = []
    for p in planned:
        row = p.row(execution_id=p.workspace.name)     # the folder names the job: unique per plan
        candidate = ctx.memory.candidate(p.candidate_id)
        ensure_workspace(ctx, row, candidate)
        specs.append(spec_for(ctx, row, candidate))
    try:
        return write_dry_run_requests(specs, ctx.settings.aws_backend, run_tag=ctx.tag, run_id=ctx.run_id or None)
    except Exception as exc:   # e.g. no bucket configured: say so, the plan is still useful
        ctx.say(f"could not write the SageMaker requests: {exc}", "yellow")
        ctx.memory.log_event("dry_run_requests_failed", {"error": str(exc)})
        return []
