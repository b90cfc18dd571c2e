"""Slots that do not start from the incumbent: a promising non-incumbent, and a crash worth repairing.

Every edit targeting the incumbent makes the search a single line: a candidate that measured
as well as the incumbent (within the noise) but was not kept is never built upon, and a
candidate that crashed for a simple reason (a shape error at start-up, a typo) is never fixed.

- branch: `exploration.branch_share` of a round's slots start from the best candidate outside
  the incumbent's lineage whose mean val_bpb is within k_sigma x sigma (the selection bar) of
  the incumbent's; its candidates have it as their parent and are judged like any other.
- repair: one slot per round asks the proposer (the LLM's propose_from_idea; the heuristic
  cannot read a traceback) to fix the newest crash that is promising: it did not diverge (no
  NaN / inf loss) and was not stopped or timed out, and no candidate has repaired it yet.
"""
from __future__ import annotations

from agent.digest import lineage, noise_sigma, recent_results
from agent.research_settings import ExplorationSettings  # noqa: F401 (the section's settings)
from agent.selection import threshold
from sandbox.statuses import CRASH

REPAIR_TAIL_LINES = 30
HOPELESS = ("nan", "inf loss", "diverg", "timed out", "timeout", "out of memory")



def promising_branch(ctx, incumbent_id: str) -> dict | None:
    """The best accepted candidate outside the lineage that is indistinguishable from the incumbent."""
    lineage_ids = {c["id"] for c in lineage(ctx.memory)} | {incumbent_id}
    ranked = recent_results(ctx.memory)
    scores = {p.candidate_id: p.val_bpb for p in ranked}
    own = scores.get(incumbent_id)
    if own is None:
        values = ctx.memory.val_bpbs(incumbent_id)
        own = sum(values) / len(values) if values else None
    if own is None:
        return None
    sel = ctx.settings.selection
    bar = threshold(sel.min_delta, sel.k_sigma, noise_sigma(ctx.memory) or sel.prior_sigma)
    for p in ranked:
        if p.candidate_id in lineage_ids or p.val_bpb is None:
            continue
        if p.val_bpb <= own + bar:
            candidate = ctx.memory.candidate(p.candidate_id)
            return candidate if candidate.get("source") else None
        break   # ranked best first: the rest are further away
    return None


def promising_crash(ctx) -> tuple[dict, dict] | None:
    """(candidate, its crashed execution) for the newest crash worth a repair, or None."""
    repaired = {c["parents"][0] for c in ctx.memory.candidates() if c.get("parents")
                and str(c.get("title", "")).startswith("repair:")}
    crashes = [e for e in ctx.memory.executions(kind="candidate") if e["status"] == CRASH]
    for execution in reversed(crashes):
        cid = execution["candidate_id"]
        if cid in repaired:
            continue
        reason = (execution.get("failure_reason") or "").lower()
        if any(word in reason for word in HOPELESS):
            continue
        candidate = ctx.memory.candidate(cid)
        if candidate.get("source") and candidate.get("check_status") == "accepted":
            return candidate, execution
    return None


def repair_idea(candidate: dict, execution: dict) -> str:
    result = execution.get("result") if isinstance(execution.get("result"), dict) else {}
    tail = "\n".join((result.get("log_tail") or "").splitlines()[-REPAIR_TAIL_LINES:])
    return (f"Repair candidate {candidate['id']} (\"{candidate['title']}\", hypothesis: "
            f"{candidate.get('hypothesis') or 'none given'}). The train.py shown as the incumbent is that "
            f"candidate, and it crashed: {execution.get('failure_reason') or 'no reason recorded'}. The last "
            f"lines of its log:\n{tail}\nFix the cause of the crash with the smallest edit, keeping the "
            f"candidate's idea; title it starting with 'repair:'.")
