"""The end of an autopilot invocation: one summary, as a rich table or as the `summary` JSON line.

Figures of the run as a whole come from memory (incumbent, baseline, improvement, noise,
executions by status, spend, what is still not launched, how many were stopped early and the
training that saved); figures of this invocation come from
its scheduler: slot utilization (busy slot-seconds / available slot-seconds on the runner's
clock) and the time to the best result (from this invocation's start to the result that made
the incumbent, on the same clock). A simulated run says so in every rendering.
"""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from agent.digest import early_stop_savings, noise_sigma
from agent.memory import BASELINE_ID
from agent.phases import generations_done
from sandbox.runners.sagemaker_efficiency import run_efficiency
from sandbox.statuses import BASELINE, CANDIDATE, CONFIRMATION, PENDING


def _mean(values):
    return sum(values) / len(values) if values else None


def _time_to_best(mem, incumbent: str | None, since: float | None) -> float | None:
    """Runner-clock seconds from `since` to the result that made the incumbent (None when that
    happened in an earlier invocation)."""
    if incumbent is None or since is None:
        return None
    ends = [e["ended_at"] for e in mem.executions(candidate_id=incumbent)
            if e["kind"] in (CANDIDATE, CONFIRMATION, BASELINE) and e.get("ended_at") is not None]
    if not ends or max(ends) < since:
        return None
    return max(ends) - since


def summary_data(ctx, code: int, reason: str, scheduler=None) -> dict:
    mem = ctx.memory
    inc = mem.incumbent_id()
    spend = mem.spend()
    base = mem.val_bpbs(BASELINE_ID, preset=ctx.preset)
    inc_bpbs = mem.val_bpbs(inc, preset=ctx.preset) if inc else []
    executions = mem.executions()
    status_of = {e["id"]: e["status"] for e in executions}
    not_admitted = [e["payload"] for e in mem.events("not_admitted")
                    if status_of.get(e["payload"]["execution"]) == PENDING]
    by_status: dict[str, int] = {}
    for e in executions:
        by_status[e["status"]] = by_status.get(e["status"], 0) + 1
    usage = scheduler.usage if scheduler is not None else None
    return {"exit_code": code, "reason": reason, "run": ctx.tag, "backend": ctx.backend,
            "simulated": ctx.simulated, "schedule": ctx.settings.run.schedule, "incumbent": inc,
            "incumbent_val_bpb": _mean(inc_bpbs), "baseline_val_bpb": _mean(base),
            "improvement": (_mean(base) - _mean(inc_bpbs)) if base and inc_bpbs else None,
            "sigma": noise_sigma(mem), "generations_done": generations_done(mem),
            "executions": by_status, "spend": {k: v for k, v in spend.items() if k != "by_generation"},
            "not_admitted": not_admitted, **early_stop_savings(executions),
            "slot_utilization": usage.utilization if usage else None, "slots": usage.capacity if usage else None,
            # SageMaker: candidates' training seconds per billed second (spot billing is discounted)
            "training_per_billed_s": run_efficiency([e for e in executions if e.get("backend") == "sagemaker"]),
            "time_to_best_s": _time_to_best(mem, inc, scheduler.started_at if scheduler else None),
            "results_tsv": str(ctx.layout.results_tsv)}


def print_summary(ctx, code: int, reason: str, scheduler=None) -> dict:
    data = summary_data(ctx, code, reason, scheduler)
    ctx.emit("summary", **data)
    if ctx.json_mode:
        return data
    title = f"run {ctx.tag}{' (SIMULATED: nothing was trained)' if ctx.simulated else ''}: {reason} (exit {code})"
    table = Table(title=escape(title), show_header=False)
    table.add_column("what")
    table.add_column("value")
    fmt = lambda v: "-" if v is None else f"{v:.6f}"   # noqa: E731
    table.add_row("incumbent", f"{data['incumbent'] or '-'} (val_bpb {fmt(data['incumbent_val_bpb'])})")
    table.add_row("baseline val_bpb", fmt(data["baseline_val_bpb"]))
    table.add_row("improvement", "-" if data["improvement"] is None else f"{data['improvement']:+.6f}")
    table.add_row("noise sigma", fmt(data["sigma"]))
    table.add_row("generations done", str(data["generations_done"]))
    table.add_row("executions", ", ".join(f"{k} {v}" for k, v in sorted(data["executions"].items())) or "-")
    if data["early_stopped"]:
        table.add_row("stopped early", f"{data['early_stopped']} (saved {data['compute_saved_s']:.0f} s of training)")
    if data["slot_utilization"] is not None:
        table.add_row("slot utilization", f"{data['slot_utilization']:.1%} of {data['slots']} slot(s)")
    if data["training_per_billed_s"] is not None:
        table.add_row("accelerator efficiency", f"{data['training_per_billed_s']:.2f} training s per billed s")
    if data["time_to_best_s"] is not None:
        table.add_row("time to the best result", f"{data['time_to_best_s']:.0f} s")
    s = data["spend"]
    table.add_row("spend", f"${s['total_usd']:.4f} (compute ${s['compute_usd']:.4f}, LLM ${s['llm_usd']:.4f})")
    if data["not_admitted"]:
        table.add_row("not launched", escape(", ".join(f"{x['candidate']} ({x['reason']})" for x in data["not_admitted"])))
    table.add_row("results", data["results_tsv"])
    ctx.console.print(table)
    return data
