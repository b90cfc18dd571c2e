"""Execution rows: the one way they are planned and recorded, and what a row becomes on disk.

Every execution - a candidate's run, a baseline repeat, a control, a confirmation, a replay, or a
dry run's plan - is first a `PlannedExecution` (which slot, which folder, which attempt, what it
is expected to cost), made by `plan`. The loop and replay record it in memory (`ensure_slots`,
`add_replays`) before anything launches; the dry run only shows it. Then:

    ensure_workspace(ctx, row)   the slot's folder, built from the candidate's stored source
    spec_for(ctx, row)           the runner's ExecutionSpec
    publish_outputs(row, result) result.json and run.log next to the candidate's train.py
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agent.ledger import Pricing
from sandbox.runners.base import ExecutionSpec
from sandbox.statuses import CANDIDATE, INEFFECTIVE_STATUSES, REPLAY, UNFINISHED_STATUSES


@dataclass(frozen=True)
class PlannedExecution:
    candidate_id: str
    generation: int
    kind: str
    slot: int                      # 1.. within (candidate, generation, kind): names the folder
    workspace: Path
    attempt: int
    backend: str
    preset: str
    instance_type: str | None
    estimated_cost_usd: float
    replay_of: str | None = None

    def row(self, execution_id: str) -> dict:
        """The execution as memory would return it (for a plan that is never recorded)."""
        return {"id": execution_id, "candidate_id": self.candidate_id, "generation": self.generation,
                "kind": self.kind, "workspace": str(self.workspace), "preset": self.preset,
                "backend": self.backend, "instance_type": self.instance_type, "attempt": self.attempt,
                "estimated_cost_usd": self.estimated_cost_usd, "replay_of": self.replay_of}


def pricing(ctx) -> Pricing:
    return Pricing(ctx.settings.aws_backend, ctx.settings.instance_prices, ctx.layout.prepare_py,
                   region=_billing_region(ctx))


def _billing_region(ctx) -> str | None:
    """The region the jobs run in, as boto3 resolves it (aws.region, AWS_REGION, the profile's)."""
    if ctx.backend != "sagemaker":
        return None
    try:
        region = getattr(ctx.runner, "region", None)
        if region:
            return region
        from sandbox.runners.aws_clients import make_session, region_of
        return region_of(ctx.settings.aws_backend, make_session(ctx.settings.aws_backend))
    except Exception:   # no region anywhere (or a broken profile): prices fall back, price_note says so
        return None


def _instance_type(ctx) -> str | None:
    return ctx.settings.sagemaker.instance_type if ctx.backend == "sagemaker" else None


def plan(ctx, candidate_id: str, generation: int, kind: str, slot: int, *, attempt: int = 1,
         replay_of: str | None = None, price: Pricing | None = None) -> PlannedExecution:
    instance = _instance_type(ctx)
    price = price or pricing(ctx)
    return PlannedExecution(candidate_id=candidate_id, generation=generation, kind=kind, slot=slot,
                            workspace=ctx.layout.workspace(generation, candidate_id, kind, slot),
                            attempt=attempt, backend=ctx.backend, preset=ctx.preset, instance_type=instance,
                            estimated_cost_usd=price.estimate(ctx.backend, ctx.preset, instance),
                            replay_of=replay_of)


def record(memory, planned: PlannedExecution) -> str:
    return memory.add_execution(candidate_id=planned.candidate_id, generation=planned.generation,
                                kind=planned.kind, backend=planned.backend, preset=planned.preset,
                                workspace=str(planned.workspace), instance_type=planned.instance_type,
                                attempt=planned.attempt, replay_of=planned.replay_of,
                                estimated_cost_usd=planned.estimated_cost_usd)


def ensure_slots(ctx, candidate_id: str, generation: int, kind: str, count: int) -> list[str]:
    """Make sure `candidate_id` has `count` executions of `kind` in `generation` that measure (or
    will measure) the code; a slot whose run was lost/killed/interrupted gets a new attempt in
    the same folder. Returns the ids of the executions that are not finished (to run)."""
    rows = ctx.memory.executions(generation=generation, candidate_id=candidate_id, kind=kind)
    price = pricing(ctx)
    to_run = []
    for slot in range(1, count + 1):
        ws = ctx.layout.workspace(generation, candidate_id, kind, slot)
        mine = [r for r in rows if Path(r["workspace"]) == ws]
        live = [r for r in mine if r["status"] not in INEFFECTIVE_STATUSES]
        if not live:
            to_run.append(record(ctx.memory, plan(ctx, candidate_id, generation, kind, slot,
                                                  attempt=len(mine) + 1, price=price)))
        else:
            to_run += [r["id"] for r in live if r["status"] in UNFINISHED_STATUSES]
    return to_run


def add_replays(ctx, candidate: dict, repeats: int, replay_of: str | None) -> list[str]:
    """`repeats` new replay executions of the candidate, numbered after the ones it already has."""
    done = len(ctx.memory.executions(candidate_id=candidate["id"], kind=REPLAY))
    price = pricing(ctx)
    return [record(ctx.memory, plan(ctx, candidate["id"], candidate["generation"], REPLAY, n,
                                    replay_of=replay_of, price=price))
            for n in range(done + 1, done + repeats + 1)]


# --------------------------------------------------------------------------------- on disk
def label_of(row: dict, candidate: dict) -> str:
    if row["kind"] == CANDIDATE:
        return f"{candidate.get('strategy')}: {candidate.get('title')}"[:120]
    return f"{row['kind']}: {candidate['id']}"[:120]


def spec_for(ctx, row: dict, candidate: dict | None = None) -> ExecutionSpec:
    candidate = candidate or ctx.memory.candidate(row["candidate_id"])
    return ExecutionSpec(execution_id=row["id"], workspace=Path(row["workspace"]), preset=row["preset"],
                         label=label_of(row, candidate),
                         tags={"run": ctx.tag, "generation": str(row["generation"]),
                               "candidate": candidate["id"], "kind": row["kind"]})


def ensure_workspace(ctx, row: dict, candidate: dict | None = None) -> Path:
    """Build the execution's workspace folder from the candidate's stored source (idempotent).

    A simulated execution runs nothing and reads only train.py and prepare.py's table, so its
    folder holds those, the diff and candidate.json: the harness bundle (harness.py,
    requirements.txt, which parses both files) would cost ~50 ms per execution for nothing."""
    candidate = candidate or ctx.memory.candidate(row["candidate_id"])
    ws = Path(row["workspace"])
    complete = (ws / "train.py").is_file() and (ctx.simulated or (ws / "harness.py").is_file())
    if not complete:
        if not candidate.get("source"):
            raise ValueError(f"candidate {candidate['id']} has no stored train.py source; cannot build {ws}")
        meta = {"run": ctx.tag, "candidate": candidate["id"], "generation": row["generation"],
                "strategy": candidate.get("strategy"), "title": candidate.get("title"),
                "hypothesis": candidate.get("hypothesis"), "parents": candidate.get("parents"),
                "fingerprint": candidate.get("fingerprint"), "kind": row["kind"]}
        if ctx.simulated:
            _simulated_workspace(ws, candidate["source"], ctx.layout.prepare_py, meta)
        else:
            from sandbox.workspace import build_workspace
            build_workspace(ws, candidate["source"], ctx.project_dir, meta)
        (ws / "diff.patch").write_text(candidate.get("diff") or "")
    return ws


def _simulated_workspace(ws: Path, source: str, prepare: Path, meta: dict) -> None:
    ws.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(prepare, ws / "prepare.py")
    write_json(ws / "candidate.json", {**meta, "simulated": True})
    (ws / "train.py").write_text(source)       # last: a folder with a train.py is complete


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def publish_outputs(row: dict, result: dict) -> None:
    """result.json and run.log next to the candidate's train.py (the documented layout); the
    runner's own copies stay where it wrote them."""
    ws = Path(row["workspace"])
    if not ws.is_dir():
        return
    write_json(ws / "result.json", result)
    log = result.get("log_path")
    if log and Path(log).is_file() and Path(log).resolve() != (ws / "run.log").resolve():
        shutil.copyfile(log, ws / "run.log")
