"""The one factory for runners: a backend name and its config sections in, a Runner out.

Each runner is built from its own section only (sandbox/runners/settings.py; the simulated
backend's is in simulated.py), so nothing under sandbox/ needs the researcher's Settings, and
heavy imports (boto3 for sagemaker) happen only for the backend asked for.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.runners.base import Runner
    from sandbox.runners.settings import AWSBackendSettings, LocalSettings
    from sandbox.runners.simulated import SimulatedSettings

BACKENDS = ("local", "sagemaker", "simulated")


def make_runner(backend: str, *, run_tag: str, local: "LocalSettings", aws: "AWSBackendSettings",
                simulated: "SimulatedSettings", baseline_source: str | None = None,
                run_id: str | None = None) -> "Runner":
    """The Runner for `backend`. `baseline_source` (the project's train.py) lets the simulated
    backend score the unmodified baseline at its preset's calibrated value; `run_id` (the run's,
    from its memory) makes cloud job names unique to the run."""
    if backend == "local":
        from sandbox.runners.local import LocalRunner
        return LocalRunner(slots=local.slots, threads_per_slot=local.threads_per_slot,
                           startup_allowance_s=local.startup_allowance_s)
    if backend == "sagemaker":
        from sandbox.runners.sagemaker import SageMakerRunner
        return SageMakerRunner(aws, run_tag=run_tag, run_id=run_id)
    if backend == "simulated":
        from sandbox.runners.simulated import SimulatedRunner
        return SimulatedRunner(simulated, reference_source=baseline_source)
    raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
