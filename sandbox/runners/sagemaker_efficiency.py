"""How much of a job's accelerator time trained candidates: the figures per job, from what
DescribeTrainingJob says and what the candidates' harnesses measured.

    wait_s          CreationTime -> TrainingStartTime: provisioning, spot capacity (not billed)
    startup_s       TrainingStartTime -> the first "Training" status: image pull, data download,
                    container start (billed)
    instance_s      TrainingTimeInSeconds: the instance's time on the job (billed on-demand)
    billed_s        BillableTimeInSeconds (for spot, the discounted time)
    training_s      the candidates' own training seconds (their harness's training_seconds)
    efficiency      training_s / instance_s: the share of the accelerator's time that trained
    spot_saving     1 - billed_s / instance_s (spot jobs)

The earlier serverless pipeline spent ~3 min start-up per 5 min experiment (5/8 = 62%).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any


def _t(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def job_figures(desc: dict, results: dict[str, dict]) -> dict[str, float | None]:
    created, started = _t(desc.get("CreationTime")), _t(desc.get("TrainingStartTime"))
    first_training = next((_t(tr.get("StartTime")) for tr in desc.get("SecondaryStatusTransitions") or []
                           if tr.get("Status") == "Training"), None)
    instance = desc.get("TrainingTimeInSeconds")
    billed = desc.get("BillableTimeInSeconds")
    trained = [r.get("training_seconds") for r in results.values() if isinstance(r, dict)]
    training = float(sum(t for t in trained if isinstance(t, (int, float)))) if trained else None
    figures: dict[str, float | None] = {
        "wait_s": started - created if created is not None and started is not None else None,
        "startup_s": first_training - started if first_training is not None and started is not None else None,
        "instance_s": float(instance) if instance is not None else None,
        "billed_s": float(billed) if billed is not None else None,
        "training_s": training,
    }
    figures["efficiency"] = (training / float(instance)) if training is not None and instance else None
    figures["spot_saving"] = (1 - float(billed) / float(instance)) \
        if desc.get("EnableManagedSpotTraining") and billed is not None and instance else None
    return figures


def run_efficiency(rows: list[dict]) -> float | None:
    """A run's training seconds over its billed seconds (memory's execution rows)."""
    billed = sum(r.get("billable_seconds") or 0.0 for r in rows)
    trained = sum(r.get("training_seconds") or 0.0 for r in rows)
    return trained / billed if billed > 0 else None
