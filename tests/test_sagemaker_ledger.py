"""The scheduler's side of SageMaker billing: Charge events (earlier attempts, shares of packed
jobs) reach the ledger, jobs stopped at a shutdown are listed in memory and charged at the next
start exactly once, and prices use the region boto3 resolved (a profile's, not us-east-1)."""
from __future__ import annotations

import dataclasses

import pytest

from agent.executions import pricing
from agent.scheduler import UNSETTLED_KEY, Scheduler
from sandbox.runners.base import Charge, Finished, WallClock
from tests.conftest import make_project, open_ctx


class BillingRunner:
    """A runner that answers with scripted events and settles jobs from a scripted table."""

    name, simulated = "sagemaker", False

    def __init__(self, events=(), settled=None):
        self.clock = WallClock()
        self.events = list(events)
        self.settled = settled or {}      # job -> billable seconds once it has ended
        self.settle_calls = 0

    def free_slots(self):
        return 0

    def active(self):
        return [e.execution_id for e in self.events if isinstance(e, Finished)]

    def poll(self, timeout=0.0):
        events, self.events = self.events, []
        return events
    def shutdown(self):
        return []

    def unsettled(self):
        return []

    def settle(self, entries):
        self.settle_calls += 1
        charges = [Charge(e["executions"][0], self.settled[e["job"]], e["job"], "settled", "ml.g5.xlarge")
                   for e in entries if e["job"] in self.settled]
        return charges, [e for e in entries if e["job"] not in self.settled]


def _row(ctx):
    from agent.baseline import add_baseline
    cid = add_baseline(ctx)
    return ctx.memory.add_execution(candidate_id=cid, generation=0, kind="baseline", backend="sagemaker",
                                    preset="micro", workspace=str(ctx.run_dir / "w"), instance_type="ml.g5.xlarge")


def test_charges_and_settlements_reach_the_ledger_once(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project)
    try:
        eid = _row(ctx)
        ctx.memory.mark_started(eid, job_id="j-a2", started_at=0.0)
        ctx.memory.set_state(UNSETTLED_KEY, [{"job": "j-old", "executions": [eid]},
                                             {"job": "j-stopping", "executions": [eid]}])
        runner = BillingRunner(events=[
            Charge(eid, 3600.0, "j-a1", "spot capacity: MaxWaitTimeInSeconds expired", "ml.g5.xlarge"),
            Finished(eid, {"status": "killed", "failure_reason": "runner shut down"}, backend="sagemaker",
                     job_id="j-a2", instance_type="ml.g5.xlarge", billable_seconds=None)],
            settled={"j-old": 1800.0})
        ctx = dataclasses.replace(ctx, runner=runner)
        with Scheduler(ctx) as scheduler:           # the start settles what an earlier shutdown left
            assert ctx.memory.get_state(UNSETTLED_KEY) == [{"job": "j-stopping", "executions": [eid]}]
            scheduler.enqueue([eid])
            assert scheduler.take_results(0)[0]["id"] == eid
        row = ctx.memory.execution(eid)
        assert row["status"] == "killed" and row["billable_seconds"] == 5400.0
        assert row["cost_usd"] == pytest.approx(1.408 * 1.5)            # ml.g5.xlarge us-east-1, 1.5 h
        with Scheduler(ctx):                        # nothing settled twice
            pass
        assert ctx.memory.execution(eid)["billable_seconds"] == 5400.0 and runner.settle_calls == 2
    finally:
        ctx.close()


def test_prices_use_the_region_boto3_resolved_from_the_profile(tmp_path, monkeypatch):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "aws-config").write_text("[default]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    project = make_project(tmp_path / "proj", config={"instance_prices": {"eu-west-1": {"ml.g5.xlarge": 1.6}}})
    ctx = open_ctx(project, backend="sagemaker", dry_run=True)
    try:
        price = pricing(ctx)
        assert price.region == "eu-west-1" and price.hourly("sagemaker", "ml.g5.xlarge") == 1.6
    finally:
        ctx.close()


def test_an_execution_not_admitted_for_capacity_is_recorded_with_its_reason(tmp_path):
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project)
    try:
        eid = _row(ctx)
        ctx.memory.mark_started(eid, job_id="j-a1", started_at=0.0)
        why = "not admitted: AWS refused the job for capacity for 60 min (sagemaker.quota_wait_minutes = 60): limit"
        runner = BillingRunner(events=[Finished(eid, {"status": "not_admitted", "failure_reason": why},
                                                backend="sagemaker", job_id="j-a1", instance_type="ml.g5.xlarge")])
        ctx = dataclasses.replace(ctx, runner=runner)
        with Scheduler(ctx) as scheduler:
            scheduler.enqueue([eid])
            (row,) = scheduler.take_results(0)
        assert row["status"] == "not_admitted" and row["failure_reason"] == why and row["cost_usd"] == 0
    finally:
        ctx.close()


def test_the_summary_reports_training_seconds_per_billed_second(tmp_path):
    from agent.summary import summary_data
    project = make_project(tmp_path / "proj")
    ctx = open_ctx(project)
    try:
        eid = _row(ctx)
        ctx.memory.mark_started(eid, job_id="j", started_at=0.0)
        ctx.memory.finish_execution(eid, result={"status": "ok", "val_bpb": 1.0, "training_seconds": 300.0},
                                    billable_seconds=150.0, cost_usd=0.06)
        assert summary_data(ctx, 0, "done")["training_per_billed_s"] == pytest.approx(2.0)
    finally:
        ctx.close()
