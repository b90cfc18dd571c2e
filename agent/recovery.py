"""After a restart: make memory's `running` rows true again before anything launches.

A running execution whose job lives elsewhere (SageMaker) is re-attached; one whose result is
already on disk (the orchestrator died between the child's exit and the memory write) is
ingested; one that died with the process (local children) is marked `lost` (kept forever) so
the loop records a new attempt. Pending rows were never started: they stay pending.
"""
from __future__ import annotations

import json
from pathlib import Path

from agent.executions import publish_outputs, spec_for
from sandbox.statuses import RESULT_STATUSES, RUNNING


def recover_unfinished(ctx) -> dict:
    mem, runner = ctx.memory, ctx.runner
    active = set(runner.active()) if runner is not None else set()
    outcome: dict[str, list[str]] = {"reattached": [], "lost": [], "recovered": []}
    for row in mem.unfinished_executions():
        if row["status"] != RUNNING or row["id"] in active:
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
            outcome["recovered"].append(row["id"])
        else:
            mem.mark_lost(row["id"], f"orchestrator stopped while {row.get('job_id') or 'it'} was running; "
                                     f"{runner.name if runner else 'no'} runner could not re-attach")
            outcome["lost"].append(row["id"])
    return outcome


def _ingest_left_result(ctx, row: dict) -> bool:
    """A local execution that finished after its orchestrator's last write left a real result in
    WS/executions/<id>/result.json (the LocalRunner's layout): keep it instead of re-running. A
    `killed` result (the harness stopped because the orchestrator died) is not a measurement."""
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
        publish_outputs(ctx.memory.execution(row["id"]), result)
    return True
