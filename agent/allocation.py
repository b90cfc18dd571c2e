"""Strategy allocation that learns: slots per class follow the measured confirmed gain per
compute-second (per dollar where compute is billed), with a floor per class so none starves.

Why: the fixed strategy_mix spends slots on a class however it fares. Here, after the first
kept changes, each class's rate = (val_bpb gained by its candidates that became the incumbent)
/ (the compute its candidate runs used); the slots are the mix blended with those rates
(`learning_weight`), then every class of the mix gets at least `floor` slots when the
population allows. Until something is kept the mix stands as it is. Each round's allocation is
an `allocation` event, shown in report.md. `allocation.enabled: false` keeps the plain mix.
"""
from __future__ import annotations

import math

from agent.digest import candidate_results
from agent.proposers.base import STRATEGIES
from agent.research_settings import AllocationSettings

EVENT = "allocation"



def rates(memory) -> dict[str, dict]:
    """strategy -> {"gain", "compute", "unit", "rate", "kept"}: confirmed val_bpb gain (positive =
    better) of its kept candidates, the compute its candidate runs used (dollars when any was
    billed, else training seconds), and gain per unit."""
    results = {c["id"]: c for c in candidate_results(memory)}
    kept = set(memory.incumbent_history())
    executions = [e for e in memory.executions(kind="candidate") if e["status"] not in ("pending", "running")]
    billed = any((e.get("cost_usd") or 0) > 0 for e in executions)
    out: dict[str, dict] = {}
    for e in executions:
        c = results.get(e["candidate_id"])
        if c is None or c["origin"] == "baseline":
            continue
        entry = out.setdefault(c["strategy"], {"gain": 0.0, "compute": 0.0, "kept": 0,
                                               "unit": "USD" if billed else "s"})
        entry["compute"] += float((e.get("cost_usd") if billed else
                                   (e.get("billable_seconds") or e.get("training_seconds"))) or 0.0)
    for cid in kept:
        c = results.get(cid)
        if c is None or c["origin"] == "baseline" or not c.get("delta_vs_parent"):
            continue
        entry = out.setdefault(c["strategy"], {"gain": 0.0, "compute": 0.0, "kept": 0,
                                               "unit": "USD" if billed else "s"})
        entry["gain"] += max(0.0, c["delta_vs_parent"])
        entry["kept"] += 1
    for entry in out.values():
        entry["rate"] = entry["gain"] / entry["compute"] if entry["compute"] > 0 else 0.0
    return out


def weights(mix: dict[str, int], measured: dict[str, dict], learning_weight: float) -> dict[str, float]:
    """The mix's shares blended with the measured rates' shares (the mix alone until a gain exists)."""
    total = sum(mix.values())
    shares = {s: mix[s] / total for s in mix if mix[s] > 0}
    rate_total = sum(measured.get(s, {}).get("rate", 0.0) for s in shares)
    if rate_total <= 0 or learning_weight <= 0:
        return shares
    return {s: (1 - learning_weight) * shares[s] + learning_weight * measured.get(s, {}).get("rate", 0.0) / rate_total
            for s in shares}


def slots_for(mix: dict[str, int], population: int, measured: dict[str, dict],
              settings: AllocationSettings) -> dict[str, int]:
    """Slots per strategy summing to `population`: the floor first (while there is room), the rest
    by largest remainders of the blended weights (deterministic: ties in the mix's order)."""
    w = weights(mix, measured, settings.learning_weight)
    order = [s for s in mix if s in w]
    slots = {s: 0 for s in order}
    floor = settings.floor if population >= settings.floor * len(order) else 0
    for s in order:
        slots[s] = floor
    left = population - sum(slots.values())
    exact = {s: left * w[s] for s in order}
    for s in order:
        slots[s] += math.floor(exact[s])
    rest = population - sum(slots.values())
    for s in sorted(order, key=lambda s: (-(exact[s] - math.floor(exact[s])), order.index(s)))[:rest]:
        slots[s] += 1
    return {s: n for s, n in slots.items() if n > 0}


def strategy_slots(mix: dict[str, int], population: int) -> dict[str, int]:
    """Scale the strategy weights to `population` slots: floors first, then the largest remainders
    (ties in STRATEGIES order), so the result is deterministic and sums to `population`."""
    total = sum(mix.values())
    order = [s for s in STRATEGIES if mix.get(s, 0) > 0]
    exact = {s: population * mix[s] / total for s in order}
    slots = {s: math.floor(exact[s]) for s in order}
    left = population - sum(slots.values())
    for s in sorted(order, key=lambda s: (-(exact[s] - slots[s]), STRATEGIES.index(s)))[:left]:
        slots[s] += 1
    return {s: n for s, n in slots.items() if n > 0}


def allocate(ctx, generation: int, population: int) -> dict[str, int]:
    """This round's slots (the plain mix when allocation is off), recorded as an event."""
    settings = ctx.settings.allocation
    mix = ctx.settings.strategy_mix
    if not settings.enabled:
        return strategy_slots(mix, population)
    measured = rates(ctx.memory)
    learned = any(m["rate"] > 0 for m in measured.values()) and settings.learning_weight > 0
    # until a gain is measured the mix stands exactly as configured
    slots = slots_for(mix, population, measured, settings) if learned else strategy_slots(mix, population)
    ctx.memory.log_event(EVENT, {"slots": slots, "rates": {s: round(m["rate"], 12) for s, m in measured.items()},
                                 "unit": next((m["unit"] for m in measured.values()), "s"),
                                 "learned": learned}, generation)
    return slots
