"""One candidate against one incumbent, from what memory holds: the verdict both schedules use.

agent/selection.py decides from numbers (val_bpbs and sigma); this module reads those numbers for
a candidate and an incumbent on the run's preset (replays left out) and says why a candidate
without a result was discarded when its run was stopped early (the rule's figures), so the
verdict's reason tells the whole story.
"""
from __future__ import annotations

import dataclasses

from agent.digest import noise_sigma
from agent.selection import Decision, decide
from sandbox.statuses import STOPPED_EARLY


def judge(ctx, candidate_id: str, incumbent_id: str, sigma: float | None = None) -> Decision:
    mem = ctx.memory
    sigma = noise_sigma(mem) if sigma is None else sigma
    decision = decide(mem.val_bpbs(candidate_id, preset=ctx.preset), mem.val_bpbs(incumbent_id, preset=ctx.preset),
                      sigma, ctx.settings.selection, candidate_id=candidate_id)
    if decision.candidate_mean is None:
        stopped = [e for e in mem.executions(candidate_id=candidate_id) if e["status"] == STOPPED_EARLY]
        if stopped:
            why = stopped[-1].get("failure_reason") or "its loss curve was losing against the incumbent's controls"
            decision = dataclasses.replace(decision, reason=f"stopped early against {incumbent_id}: {why}")
    return decision
