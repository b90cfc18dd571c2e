"""SageMakerRunner against moto's server on 127.0.0.1 (real boto3 over HTTP).

Workspaces are real (sandbox.workspace.build_workspace) with a stand-in train.py; when a test
"runs" a job, SageMakerSim downloads the packed sourcedir from the local S3 and really runs
sm_entry.py -> harness.py -> train.py, then uploads output.tar.gz where SageMaker would.
"""
from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile
from pathlib import Path

import boto3
import pytest

pytest.register_assert_rewrite("tests.aws_fixtures")   # imported below before pytest loads it as a plugin

from agent.config import Settings  # noqa: E402
from sandbox.runners import sagemaker_request as req  # noqa: E402
from sandbox.runners.aws_clients import AWSConfigError  # noqa: E402
from sandbox.runners.base import Charge, ExecutionSpec, Finished, Progress, Requeued  # noqa: E402
from sandbox.runners.sagemaker import SageMakerRunner, write_dry_run_requests  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402
from tests.aws_fixtures import REGION, QuotaStandIn, hide_sagemaker_package, set_job  # noqa: E402
from tests.standins import make_fake_cache, make_project  # noqa: E402

pytest_plugins = ("tests.aws_fixtures",)   # fixtures: aws_server, aws, sim

PROJECT = Path(__file__).resolve().parents[1]
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312-cu129-ubuntu22.04-sagemaker"
ROLE = "arn:aws:iam::123456789012:role/autoresearch-sagemaker"
BUCKET = "ar-test-bucket"

# The stand-in reports through the stand-in prepare's real channel (tests/standins.py): the harness
# accepts only records that come authenticated down its pipe, never a file the script writes.
STANDIN = r'''
import os, sys, time
import prepare
print("cuda=" + os.environ.get("CUDA_VISIBLE_DEVICES", "-"), flush=True)
for i in range(1, 4):
    print(f"step {i:05d} ({33.3*i:.1f}%) | loss: {4.0 - i/10:.6f} | lrm: 1.00 | dt: 10ms | "
          f"tok/sec: 12,345 | mfu: 1.5% | epoch: 1 | remaining: {3-i}s", flush=True)
    time.sleep(CFG.get("step_s", 0))
if CFG.get("raise"):
    raise RuntimeError(CFG["raise"])
val = CFG.get("val", 1.234567)
prepare.evaluate(val)
print("---")
for k, v in {"val_bpb": f"{val:.6f}", "training_seconds": "1.0", "total_seconds": "2.0", "peak_vram_mb": "0.0",
             "mfu_percent": "1.50", "total_tokens_M": "0.1", "num_steps": "3", "num_params_M": "0.5",
             "depth": "2"}.items():
    print(f"{k + ':':<18}{v}")
'''


class FakeClock:
    """Time that moves only when the runner sleeps: no real waiting in tests."""

    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def make_settings(**sm) -> Settings:
    base = {"image_uri": IMAGE, "poll_min_s": 0, "poll_max_s": 0, "api_backoff_s": 0.01, "quota_retry_s": 30}
    base.update(sm)
    return Settings.model_validate({"aws": {"region": REGION, "role_arn": ROLE}, "s3": {"bucket": BUCKET},
                                    "sagemaker": base})


def make_spec(tmp_path: Path, execution_id: str, generation: int = 1, env: dict | None = None, **scenario) -> ExecutionSpec:
    project = make_project(tmp_path / "standin-project")
    ws = build_workspace(tmp_path / "ws" / execution_id, f"CFG = {scenario!r}\n" + STANDIN, project,
                         {"execution_id": execution_id})
    return ExecutionSpec(execution_id=execution_id, workspace=ws, preset="micro", label=execution_id,
                         env=env or {}, tags={"run": "t1", "generation": str(generation), "candidate": f"c-{execution_id}"})


def make_runner(**sm) -> tuple[SageMakerRunner, FakeClock]:
    clock = FakeClock()
    return SageMakerRunner(make_settings(**sm), run_tag="t1", run_id="rid1", clock=clock, sleep=clock.sleep), clock


@pytest.fixture
def bucket(aws, tmp_path):
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=aws.url)
    s3.create_bucket(Bucket=BUCKET)
    # the data channels a job downloads: the layout the harness checks before it starts a child
    fake = make_fake_cache(tmp_path / "fake-data", ("micro",)) / "micro"
    for path in sorted(p for p in fake.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"autoresearch/data/micro/{path.relative_to(fake).as_posix()}")
    return BUCKET


def drain(runner: SageMakerRunner, rounds: int = 5) -> list:
    events: list = []
    for _ in range(rounds):
        events += runner.poll(0)
    return events


def finished(events: list) -> dict[str, Finished]:
    return {e.execution_id: e for e in events if isinstance(e, Finished)}


def created(aws, name: str | None = None) -> list[dict]:
    calls = [c.params for c in aws.calls_of("sagemaker.CreateTrainingJob")]
    return [p for p in calls if name is None or p["TrainingJobName"] == name]


# ----- request contents ----------------------------------------------------------------------------
def test_dry_run_writes_requests_and_makes_no_aws_call(aws, tmp_path):
    specs = [make_spec(tmp_path, f"g1-e{i}") for i in range(3)]
    paths = write_dry_run_requests(specs, make_settings(), run_tag="t1", run_id="rid1")
    assert aws.calls == []   # AWS_ENDPOINT_URL points at the server, yet nothing reached it
    for spec, path in zip(specs, paths):
        assert path == spec.workspace / "create_training_job.json"
        request = json.loads(path.read_text())
        assert request["EnableManagedSpotTraining"] is True
        assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
        stop = request["StoppingCondition"]
        assert stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"] == 1800
        metrics = {m["Name"]: m["Regex"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]}
        assert re.search(metrics["val_bpb"], "val_bpb:          0.997900").group(1) == "0.997900"
        assert re.search(metrics["peak_vram_mb"], "peak_vram_mb:     45060.2").group(1) == "45060.2"
        assert {"mfu_percent", "training_seconds"} <= set(metrics)
        tags = {t["Key"]: t["Value"] for t in request["Tags"]}
        assert tags["run"] == "t1" and tags["generation"] == "1" and tags["candidate"] == f"c-{spec.execution_id}"
        assert request["Environment"]["AUTORESEARCH_PRESET"] == "micro"
        assert not any(re.search("KEY|SECRET|TOKEN", k) for k in request["Environment"])
        assert request["TrainingJobName"] == f"ar-t1-rid1-{spec.execution_id}-a1"


def test_dry_run_needs_role_and_image_with_clear_fixes(tmp_path, monkeypatch):
    spec = make_spec(tmp_path, "e1")
    no_role = make_settings()
    no_role.aws.role_arn = None
    with pytest.raises(AWSConfigError, match="autoresearch aws setup"):
        write_dry_run_requests([spec], no_role, run_tag="t1", run_id="rid1")
    hide_sagemaker_package(monkeypatch)
    with pytest.raises(AWSConfigError, match=r"pip install 'autoresearch-at-scale\[aws\]'.*sagemaker.image_uri"):
        write_dry_run_requests([spec], make_settings(image_uri=None), run_tag="t1", run_id="rid1")


def test_image_uri_resolves_offline_with_the_sagemaker_package(tmp_path):
    pytest.importorskip("sagemaker.core.image_uris")
    request = json.loads(write_dry_run_requests([make_spec(tmp_path, "e1")], make_settings(image_uri=None),
                                                run_tag="t1", run_id="rid1")[0].read_text())
    assert re.match(r"\d+\.dkr\.ecr\.us-east-1\.amazonaws\.com/pytorch-training:2\.8\.0-gpu",
                    request["AlgorithmSpecification"]["TrainingImage"])


def test_secrets_never_reach_the_job(tmp_path):
    runner, _ = make_runner()
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY.*secret"):
        runner.submit(make_spec(tmp_path, "e1", env={"ANTHROPIC_API_KEY": "sk-ant-api03-abcdefghijk"}))
    with pytest.raises(ValueError, match="NOTE.*secret"):
        runner.submit(make_spec(tmp_path, "e2", env={"NOTE": "AKIAABCDEFGHIJKLMNOP"}))
    spec = make_spec(tmp_path, "e3", env={"AUTORESEARCH_TIME_BUDGET": "60"})
    req.assert_no_secrets(req.job_environment([spec]), "ok")   # ordinary variables pass


# ----- lifecycle -----------------------------------------------------------------------------------
def test_completed_job_reports_progress_metrics_and_billable_time(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    spec = make_spec(tmp_path, "g1-e1", val=1.111111)
    name = runner.submit(spec)
    assert name == "ar-t1-rid1-g1-e1-a1" and runner.active() == ["g1-e1"]
    (request,) = created(aws)
    assert request["RoleArn"] == ROLE and request["EnableManagedSpotTraining"] is True
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == "sm_entry.py"
    source = json.loads(request["HyperParameters"]["sagemaker_submit_directory"])
    assert source == f"s3://{bucket}/autoresearch/runs/t1/ar-t1-rid1-g1-e1/source/sourcedir.tar.gz"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {"data": f"s3://{bucket}/autoresearch/data/micro/data/",
                        "tokenizer": f"s3://{bucket}/autoresearch/data/micro/tokenizer/"}
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/autoresearch/runs/t1/ar-t1-rid1-g1-e1/output"
    # the source tarball in S3 carries the launcher, the manifest and the whole workspace
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=bucket, Key="autoresearch/runs/t1/ar-t1-rid1-g1-e1/source/sourcedir.tar.gz")["Body"].read()
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    assert {"sm_entry.py", "manifest.json", "requirements.txt", "candidates/g1-e1/train.py",
            "candidates/g1-e1/harness.py", "candidates/g1-e1/prepare.py"} <= set(names)

    # live progress from CloudWatch while the job trains
    set_job(name, secondary="Training")
    sim.put_logs(name, ["step 00001 (10.0%) | loss: 4.500000 | lrm: 1.00 | dt: 10ms | tok/sec: 1,000 | mfu: 1.0% "
                        "| epoch: 1 | remaining: 9s", "some other line"])
    events = runner.poll(0)
    (prog,) = [e for e in events if isinstance(e, Progress)]
    assert (prog.execution_id, prog.step, prog.loss, prog.pct) == ("g1-e1", 1, 4.5, 10.0)
    assert runner.poll(0) == []   # the same line is not reported twice

    proc = sim.run_container(name, billable=120, training_time=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = finished(drain(runner))["g1-e1"]
    assert done.result["status"] == "ok" and done.result["val_bpb"] == pytest.approx(1.111111)
    assert done.backend == "sagemaker" and done.job_id == name and done.instance_type == "ml.g5.xlarge"
    assert done.billable_seconds == 120 and done.result["training_time_seconds"] == 400
    assert done.started_at and done.ended_at and runner.active() == []


def test_crashed_candidate_is_a_failure_with_its_reason(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1", **{"raise": "exploding gradients"}))
    proc = sim.run_container(name)
    assert proc.returncode == 1
    assert sim.job(name).training_job_status == "Failed"
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "crash"
    assert "exploding gradients" in done.result["failure_reason"] + done.result.get("log_tail", "")


def test_failed_job_without_output_reports_failure_reason_and_log_tail(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    sim.put_logs(name, ["Traceback (most recent call last):", "ImportError: no module named flash_attn"])
    set_job(name, status="Failed", secondary="Failed", failure_reason="AlgorithmError: ExecuteUserScriptError",
            billable=50, transitions=["Starting", "Training", "Failed"])
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "crash"
    assert "ExecuteUserScriptError" in done.result["failure_reason"]
    assert "flash_attn" in done.result["log_tail"] and done.billable_seconds == 50


def test_completed_job_without_result_is_never_ok(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    set_job(name, status="Completed", secondary="Completed", billable=10)
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "crash" and "without a result.json" in done.result["failure_reason"]


def test_spot_interruption_and_max_wait_requeue_under_new_names(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(max_spot_requeues=1)
    name = runner.submit(make_spec(tmp_path, "e1"))
    # an interruption SageMaker recovers from by itself: the loop hears about it, nothing resubmitted
    set_job(name, secondary="Interrupted", transitions=["Starting", "Training", "Interrupted"])
    (ev,) = runner.poll(0)
    assert isinstance(ev, Requeued) and ev.attempt == 1 and "spot interruption" in ev.reason
    # capacity never came back before MaxWait: a new attempt under a new name
    set_job(name, status="Stopped", secondary="MaxWaitTimeExceeded",
            transitions=["Starting", "Training", "Interrupted", "MaxWaitTimeExceeded"])
    (ev,) = runner.poll(0)
    assert isinstance(ev, Requeued) and ev.attempt == 2 and "MaxWait" in ev.reason
    drain(runner, 1)
    assert [c["TrainingJobName"] for c in created(aws)] == [name, "ar-t1-rid1-e1-a2"]
    # the same happens again: requeues are used up, so it ends `interrupted`, not ok and not crash
    set_job("ar-t1-rid1-e1-a2", status="Stopped", secondary="MaxWaitTimeExceeded",
            transitions=["Starting", "MaxWaitTimeExceeded"])
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "interrupted" and "gave up after 1 requeues" in done.result["failure_reason"]
    assert len(created(aws)) == 2


def test_requeued_attempt_can_succeed(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1", val=1.05))
    set_job(name, status="Stopped", secondary="MaxWaitTimeExceeded", transitions=["Starting", "MaxWaitTimeExceeded"])
    drain(runner, 2)
    assert sim.run_container("ar-t1-rid1-e1-a2").returncode == 0
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "ok" and done.job_id == "ar-t1-rid1-e1-a2" and done.result["job_attempt"] == 2


def test_transient_infrastructure_error_is_retried_once(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    set_job(name, status="Failed", secondary="Failed", failure_reason="AlgorithmError: CUDA error: unknown error")
    (ev,) = runner.poll(0)
    assert isinstance(ev, Requeued) and "transient" in ev.reason and ev.attempt == 2
    drain(runner, 1)
    set_job("ar-t1-rid1-e1-a2", status="Failed", secondary="Failed",
            failure_reason="AlgorithmError: CUDA error: unknown error")
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "crash" and "CUDA error" in done.result["failure_reason"]
    assert len(created(aws)) == 2


def test_max_runtime_exceeded_is_a_timeout(aws, sim, bucket, tmp_path):
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    set_job(name, status="Stopped", secondary="MaxRuntimeExceeded", transitions=["Training", "MaxRuntimeExceeded"])
    assert finished(drain(runner))["e1"].result["status"] == "timeout"


# ----- API pressure ---------------------------------------------------------------------------------
def test_throttling_backs_off_with_jitter(aws, sim, bucket, tmp_path):
    runner, clock = make_runner(api_backoff_s=1.0)
    aws.fail("sagemaker.CreateTrainingJob", "ThrottlingException", "Rate exceeded", times=3)
    aws.fail("sagemaker.DescribeTrainingJob", "ThrottlingException", "Rate exceeded", times=2)
    name = runner.submit(make_spec(tmp_path, "e1"))
    assert len(aws.calls_of("sagemaker.CreateTrainingJob")) == 4 and len(created(aws)) == 4
    backoffs = list(clock.sleeps)
    assert len(backoffs) == 3 and all(0 <= s <= 30 for s in backoffs)
    set_job(name, status="Completed", secondary="Completed")
    sim.put_output(name, {"e1": {"status": "ok", "val_bpb": 1.0}})
    assert finished(drain(runner))["e1"].result["status"] == "ok"
    assert len(clock.sleeps) == 5


def test_throttling_that_outlasts_the_backoff_waits_and_retries(aws, sim, bucket, tmp_path):
    runner, clock = make_runner(api_max_attempts=3, quota_retry_s=30)
    aws.fail("sagemaker.CreateTrainingJob", "ThrottlingException", "Rate exceeded", times=3)
    runner.submit(make_spec(tmp_path, "e1"))
    assert sim.job_names() == [] and runner.active() == ["e1"]   # not a failure of the candidate
    runner.poll(timeout=31)
    assert sim.job_names() == ["ar-t1-rid1-e1-a1"] and len(aws.calls_of("sagemaker.CreateTrainingJob")) == 4


def test_refused_request_stops_the_run_with_the_reason(aws, bucket, tmp_path):
    runner, _ = make_runner()
    aws.fail("sagemaker.CreateTrainingJob", "ValidationException", "Could not assume role", times=1)
    with pytest.raises(AWSConfigError, match="refused: ValidationException: Could not assume role"):
        runner.submit(make_spec(tmp_path, "e1"))


def test_quota_exhaustion_queues_then_succeeds(aws, sim, bucket, tmp_path):
    runner, clock = make_runner(quota_retry_s=30, poll_min_s=1, poll_max_s=8)
    aws.fail("sagemaker.CreateTrainingJob", "ResourceLimitExceeded",
             "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0", times=2)
    runner.submit(make_spec(tmp_path, "e1"))
    assert runner.active() == ["e1"] and sim.job_names() == []
    events = runner.poll(0)
    assert [type(e) for e in events] == [Requeued] and "waiting for quota" in events[0].reason
    t0 = clock.t
    assert runner.poll(timeout=100) == []          # waits, retries after 30 s, hits the limit again, waits
    assert clock.t - t0 == pytest.approx(100, abs=0.1)
    assert len(aws.calls_of("sagemaker.CreateTrainingJob")) == 3 and sim.job_names() == ["ar-t1-rid1-e1-a1"]
    # nothing moved for 40 s: polling slowed down from 1 s towards 8 s instead of hammering the API
    assert 5 <= len(aws.calls_of("sagemaker.DescribeTrainingJob")) <= 12
    set_job("ar-t1-rid1-e1-a1", status="Completed", secondary="Completed")
    sim.put_output("ar-t1-rid1-e1-a1", {"e1": {"status": "ok", "val_bpb": 1.0}})
    assert finished(runner.poll(timeout=20))["e1"].result["status"] == "ok"


def test_max_concurrent_jobs_is_respected(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(max_concurrent_jobs=2)
    assert runner.free_slots() == 2
    for i in range(3):
        runner.submit(make_spec(tmp_path, f"e{i}"))
    assert runner.free_slots() == 0
    drain(runner, 2)
    assert len(created(aws)) == 2
    set_job("ar-t1-rid1-e0-a1", status="Completed", secondary="Completed")
    sim.put_output("ar-t1-rid1-e0-a1", {"e0": {"status": "ok", "val_bpb": 1.0}})
    events = drain(runner, 2)
    assert "e0" in finished(events) and len(created(aws)) == 3


def test_many_jobs_are_polled_with_one_search(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(search_above_jobs=2, max_concurrent_jobs=10)
    for i in range(4):
        runner.submit(make_spec(tmp_path, f"e{i}"))
    before = len(aws.calls_of("sagemaker.DescribeTrainingJob"))
    runner.poll(0)
    assert len(aws.calls_of("sagemaker.Search")) == 1
    assert len(aws.calls_of("sagemaker.DescribeTrainingJob")) == before
    set_job("ar-t1-rid1-e2-a1", status="Completed", secondary="Completed")
    sim.put_output("ar-t1-rid1-e2-a1", {"e2": {"status": "ok", "val_bpb": 0.9}})
    assert finished(runner.poll(0))["e2"].result["val_bpb"] == 0.9


# ----- packing, cancel, resume ---------------------------------------------------------------------
def test_packed_job_runs_each_candidate_through_the_harness(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(candidates_per_job=3, instance_type="ml.g5.12xlarge")
    specs = [make_spec(tmp_path, "e1", val=1.1), make_spec(tmp_path, "e2", **{"raise": "bad init"}),
             make_spec(tmp_path, "e3", val=1.3)]
    names = {runner.submit(s) for s in specs}
    assert names == {"ar-t1-rid1-e1-a1"}
    (request,) = created(aws)
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 1800   # 3 candidates on 4 GPUs: one round
    assert {t["Key"]: t["Value"] for t in request["Tags"]}["candidate"] == "c-e1 c-e2 c-e3"
    proc = sim.run_container("ar-t1-rid1-e1-a1", billable=300, gpus=2)
    assert proc.returncode == 1   # one crash fails the job ...
    done = finished(drain(runner))
    assert {k: v.result["status"] for k, v in done.items()} == {"e1": "ok", "e2": "crash", "e3": "ok"}
    assert done["e1"].result["val_bpb"] == pytest.approx(1.1) and done["e3"].result["val_bpb"] == pytest.approx(1.3)
    assert "bad init" in done["e2"].result["failure_reason"] + done["e2"].result["log_tail"]
    # the bill is split by each harness's wall-seconds, not tripled: the parts add up to the job's
    assert sum(f.billable_seconds for f in done.values()) == pytest.approx(300)
    walls = {k: v.result["wall_seconds"] for k, v in done.items()}
    assert all(v.billable_seconds == pytest.approx(300 * walls[k] / sum(walls.values())) for k, v in done.items())
    # one per GPU: two harnesses at a time, pinned to GPUs 0 and 1
    assert set(re.findall(r"\] cuda=(\d)", proc.stdout)) == {"0", "1"}


def test_partial_pack_is_sent_when_the_loop_polls(aws, bucket, tmp_path):
    runner, _ = make_runner(candidates_per_job=4)
    runner.submit(make_spec(tmp_path, "e1"))
    runner.submit(make_spec(tmp_path, "e2"))
    assert created(aws) == []
    runner.poll(0)
    (request,) = created(aws)
    assert json.loads(request["HyperParameters"]["sagemaker_submit_directory"]).endswith(
        "ar-t1-rid1-e1/source/sourcedir.tar.gz")


def test_cancel_stops_the_job_and_reports_killed(aws, sim, bucket, tmp_path):
    def stop(params):
        set_job(params["TrainingJobName"], status="Stopped", secondary="Stopped", billable=33)
        return 200, {}

    aws.handle("sagemaker.StopTrainingJob", stop)
    runner, _ = make_runner()
    runner.submit(make_spec(tmp_path, "e1"))
    runner.submit(make_spec(tmp_path, "e2"))
    runner.cancel("e1")
    assert [c.params["TrainingJobName"] for c in aws.calls_of("sagemaker.StopTrainingJob")] == ["ar-t1-rid1-e1-a1"]
    done = finished(drain(runner))
    assert done["e1"].result["status"] == "killed" and done["e1"].billable_seconds == 33
    assert runner.active() == ["e2"]
    (left,) = runner.shutdown()
    assert left.execution_id == "e2" and left.result["status"] == "killed"
    assert len(aws.calls_of("sagemaker.StopTrainingJob")) == 2 and runner.active() == []


def test_early_stop_of_a_job_of_its_own_is_a_stop_training_job_with_the_figures(aws, sim, bucket, tmp_path):
    def stop(params):
        set_job(params["TrainingJobName"], status="Stopped", secondary="Stopped", billable=40)
        return 200, {}

    aws.handle("sagemaker.StopTrainingJob", stop)
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    set_job(name, status="InProgress", secondary="Training")
    reason = {"rule": "early_stop/v1", "pct": 42.0, "candidate_loss": 4.2, "reference_mean": 3.9,
              "reason": "losing: at 42.0%: loss 4.2000 vs reference mean 3.9000"}
    runner.stop_early("e1", reason)
    assert [c.params["TrainingJobName"] for c in aws.calls_of("sagemaker.StopTrainingJob")] == [name]
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "stopped_early" and done.result["early_stop"] == reason
    assert "losing: at 42.0%" in done.result["failure_reason"] and done.billable_seconds == 40


def test_early_stop_inside_a_packed_job_writes_only_that_candidates_stop_marker(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(candidates_per_job=2, instance_type="ml.g5.12xlarge")
    specs = [make_spec(tmp_path, "e1"), make_spec(tmp_path, "e2")]
    name = {runner.submit(s) for s in specs}.pop()
    set_job(name, status="InProgress", secondary="Training")
    manifest = json.loads(tarfile.open(fileobj=io.BytesIO(boto3.client("s3", region_name=REGION, endpoint_url=aws.url)
                          .get_object(Bucket=BUCKET, Key=f"autoresearch/runs/t1/ar-t1-rid1-e1/source/sourcedir.tar.gz")
                          ["Body"].read())).extractfile("manifest.json").read())
    stop_uris = {c["execution_id"]: c["stop_uri"] for c in manifest["candidates"]}
    assert stop_uris == {e: f"s3://{BUCKET}/autoresearch/runs/t1/ar-t1-rid1-e1/stop/{e}.json" for e in ("e1", "e2")}
    runner.stop_early("e2", {"rule": "early_stop/v1", "pct": 50.0})
    assert aws.calls_of("sagemaker.StopTrainingJob") == []           # e1 keeps training in the same job
    marker = boto3.client("s3", region_name=REGION, endpoint_url=aws.url).get_object(
        Bucket=BUCKET, Key="autoresearch/runs/t1/ar-t1-rid1-e1/stop/e2.json")["Body"].read()
    assert json.loads(marker) == {"rule": "early_stop/v1", "pct": 50.0}
    assert sorted(runner.active()) == ["e1", "e2"]     # e2's harness reports stopped_early when the job ends


def test_a_network_isolated_packed_job_stops_a_losing_candidate_by_its_own_rule(aws, sim, bucket, tmp_path):
    """No marker can reach an isolated job: the watched candidate carries the rule and the
    incumbent's curves (manifest stop_rule), and sm_entry.py - run for real, with the rule and the
    progress parser packed beside it - stops only that candidate, with the figures that decided."""
    runner, _ = make_runner(candidates_per_job=2, instance_type="ml.g5.12xlarge", prebuilt_image=True)
    rule = {"settings": {"min_progress": 40.0, "patience": 1, "k": 3.0, "min_gap": 0.02, "min_references": 2,
                         "enabled": True},
            "references": [[[0, 1.0], [100, 0.9]], [[0, 1.02], [100, 0.92]]], "incumbent": "c-best"}
    keeps = make_spec(tmp_path, "e1")                                   # a control: not watched
    loses = dataclasses.replace(make_spec(tmp_path, "e2", step_s=2), stop_rule=rule)   # stopped at 66.6%
    name = {runner.submit(keeps), runner.submit(loses)}.pop()
    request = created(aws, name)[-1]
    assert request["EnableNetworkIsolation"] is True
    source = boto3.client("s3", region_name=REGION, endpoint_url=aws.url).get_object(
        Bucket=BUCKET, Key="autoresearch/runs/t1/ar-t1-rid1-e1/source/sourcedir.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(source)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert {"sandbox/early_stop_rule.py", "sandbox/progress.py"} <= set(tar.getnames())
    by_id = {c["execution_id"]: c for c in manifest["candidates"]}
    assert "stop_uri" not in by_id["e1"] and "stop_rule" not in by_id["e1"] and by_id["e2"]["stop_rule"] == rule
    set_job(name, status="InProgress", secondary="Training")
    assert runner.stop_early("e2", {"rule": "early_stop/v1"}) is False    # nothing could deliver it
    proc = sim.run_container(name)
    assert "e2] sm_entry: stopping this candidate early: losing" in proc.stdout, proc.stdout[-3000:]
    done = finished(drain(runner))
    assert done["e1"].result["status"] == "ok"
    e2 = done["e2"].result
    assert e2["status"] == "stopped_early" and e2["early_stop"]["decided_in"] == "job"
    assert e2["early_stop"]["incumbent"] == "c-best" and e2["early_stop"]["code"] == "losing"
    assert e2["early_stop"]["pct"] == 66.6 and e2["early_stop"]["gap"] > e2["early_stop"]["threshold"]
    assert "step 00003" not in proc.stdout.split("[e2] sm_entry: stopping", 1)[1].split("[e1]")[0]
    listing = boto3.client("s3", region_name=REGION, endpoint_url=aws.url).list_objects_v2(
        Bucket=BUCKET, Prefix="autoresearch/runs/t1/ar-t1-rid1-e1/")
    assert not [o["Key"] for o in listing.get("Contents", []) if "/stop/" in o["Key"]]   # no marker written


def test_resume_reattaches_to_running_jobs_by_name(aws, sim, bucket, tmp_path):
    first, _ = make_runner()
    spec = make_spec(tmp_path, "e1", val=1.2)
    name = first.submit(spec)
    set_job(name, status="Stopped", secondary="MaxWaitTimeExceeded", transitions=["MaxWaitTimeExceeded"])
    drain(first, 2)                                 # requeued as -a2; then the orchestrator "dies"
    second, _ = make_runner()
    assert second.reattach(spec, name) is True      # memory knew only -a1: the newest attempt is followed
    assert second.reattach(make_spec(tmp_path, "ghost"), "ar-t1-rid1-ghost-a1") is False
    assert second.active() == ["e1"]
    assert sim.run_container("ar-t1-rid1-e1-a2").returncode == 0
    done = finished(drain(second))["e1"]
    assert done.result["status"] == "ok" and done.job_id == "ar-t1-rid1-e1-a2"
    assert len(created(aws)) == 2                   # re-attaching created nothing


# ----- the account's quota ---------------------------------------------------------------------------
SPOT_G5 = "ml.g5.xlarge for spot training job usage"


def test_a_quota_of_zero_stops_with_the_quotas_name_code_region_and_fix(aws, bucket, tmp_path):
    """A new account: the spot quota was never raised, so ListServiceQuotas does not list it at
    all; its AWS default is 0. Nothing is created and nothing waits."""
    QuotaStandIn(aws, defaults={SPOT_G5: ("L-SPOT", 0.0), "ml.g5.xlarge for training job usage": ("L-OD", 2.0)})
    runner, _ = make_runner()
    with pytest.raises(AWSConfigError, match=r"request an increase of ml\.g5\.xlarge for spot training job usage "
                                             r"\(L-SPOT\) in us-east-1: aws service-quotas request-service-quota-"
                                             r"increase --service-code sagemaker --quota-code L-SPOT"):
        runner.submit(make_spec(tmp_path, "e1"))
    assert created(aws) == [] and len(aws.calls_of("service-quotas.ListAWSDefaultServiceQuotas")) == 2   # 2 pages


def test_an_applied_quota_wins_over_the_default_and_caps_the_concurrent_jobs(aws, sim, bucket, tmp_path):
    QuotaStandIn(aws, defaults={SPOT_G5: ("L-SPOT", 0.0)}, applied={"L-SPOT": 2.0})
    runner, _ = make_runner(max_concurrent_jobs=4)
    assert runner.free_slots() == 4                   # read at the first launch
    runner.submit(make_spec(tmp_path, "e0"))
    assert runner.quota.source == "applied" and runner.quota.value == 2 and runner.free_slots() == 1
    for i in range(1, 3):
        runner.submit(make_spec(tmp_path, f"e{i}"))
    drain(runner, 2)
    assert len(created(aws)) == 2 and runner.free_slots() == 0
    assert aws.calls_of("service-quotas.ListAWSDefaultServiceQuotas") == []


def test_capacity_waits_are_visible_and_end_not_admitted_after_the_configured_minutes(aws, sim, bucket, tmp_path):
    runner, clock = make_runner(quota_retry_s=30, quota_wait_minutes=2)
    aws.fail("sagemaker.CreateTrainingJob", "ResourceLimitExceeded",
             "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 1 Instances, with "
             "current utilization of 1 Instances", times=100)
    runner.submit(make_spec(tmp_path, "e1"))
    (ev,) = runner.poll(0)
    assert isinstance(ev, Requeued) and "waiting for quota" in ev.reason and "after 2 min" in ev.reason
    clock.sleep(61)
    assert runner.waiting_for_capacity() == {"e1": pytest.approx(61)} and runner.poll(0) == []
    done = finished(runner.poll(timeout=90))["e1"]
    assert done.result["status"] == "not_admitted" and "capacity for 2 min" in done.result["failure_reason"]
    assert "current utilization of 1" in done.result["failure_reason"] and done.billable_seconds is None
    assert runner.active() == [] and sim.job_names() == []


# ----- every billed second is charged ---------------------------------------------------------------
def charges(events: list) -> list[tuple[str, float, str]]:
    return [(e.execution_id, e.billable_seconds, e.job_id) for e in events if isinstance(e, Charge)]


def test_requeued_attempts_are_charged_when_they_end(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(max_spot_requeues=1, transient_retries=1)
    name = runner.submit(make_spec(tmp_path, "e1", val=1.0))
    set_job(name, status="Stopped", secondary="MaxWaitTimeExceeded", billable=40,
            transitions=["Starting", "Training", "Interrupted", "MaxWaitTimeExceeded"])
    events = drain(runner, 2)
    assert charges(events) == [("e1", 40.0, name)]
    set_job("ar-t1-rid1-e1-a2", status="Failed", secondary="Failed", billable=25,
            failure_reason="AlgorithmError: CUDA error: unknown error")
    events = drain(runner, 2)
    assert charges(events) == [("e1", 25.0, "ar-t1-rid1-e1-a2")] and not finished(events)
    assert sim.run_container("ar-t1-rid1-e1-a3", billable=100).returncode == 0
    events = drain(runner)
    assert finished(events)["e1"].billable_seconds == 100 and charges(events) == []   # 40 + 25 + 100 in all


def test_a_cancelled_candidate_of_a_packed_job_is_charged_its_share(aws, sim, bucket, tmp_path):
    runner, _ = make_runner(candidates_per_job=2, instance_type="ml.g5.12xlarge")
    name = {runner.submit(make_spec(tmp_path, e)) for e in ("e1", "e2")}.pop()
    runner.cancel("e2")
    (gone,) = finished(runner.poll(0)).values()
    assert gone.execution_id == "e2" and gone.result["status"] == "killed" and gone.billable_seconds is None
    set_job(name, status="Completed", secondary="Completed", billable=200)
    sim.put_output(name, {"e1": {"status": "ok", "val_bpb": 1.0, "wall_seconds": 30.0},
                          "e2": {"status": "ok", "val_bpb": 0.9, "wall_seconds": 10.0}})
    events = drain(runner)
    assert finished(events)["e1"].billable_seconds == pytest.approx(150)
    assert [(e, pytest.approx(s), j) for e, s, j in charges(events)] == [("e2", 50.0, name)]


def test_jobs_stopped_at_shutdown_are_settled_at_the_next_start(aws, sim, bucket, tmp_path):
    """StopTrainingJob leaves the job Stopping (the 120 s SIGTERM grace): its bill is not known at
    shutdown, so the job is listed as unsettled and charged once it has ended."""
    aws.handle("sagemaker.StopTrainingJob", lambda p: (set_job(p["TrainingJobName"], status="Stopping",
                                                               secondary="Stopping"), (200, {}))[1])
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    (left,) = runner.shutdown()
    assert left.result["status"] == "killed" and left.billable_seconds is None
    entries = runner.unsettled()
    assert entries == [{"job": name, "executions": ["e1"], "instance_type": "ml.g5.xlarge"}]
    later, _ = make_runner()
    assert later.settle(entries) == ([], entries)            # still stopping: kept, nothing charged
    set_job(name, status="Stopped", secondary="Stopped", billable=130)
    got, rest = later.settle(entries)
    assert [(c.execution_id, c.billable_seconds, c.job_id) for c in got] == [("e1", 130.0, name)] and rest == []
    assert later.settle([{"job": "ar-t1-rid1-never-a1", "executions": ["x"]}]) == ([], [])   # never existed


# ----- smaller: 5xx retried, long result records -----------------------------------------------------
def test_http_5xx_is_retried_like_throttling(aws, sim, bucket, tmp_path):
    from botocore.exceptions import ClientError

    from sandbox.runners.aws_clients import is_retryable
    five = ClientError({"Error": {"Code": "SomethingNew", "Message": "x"},
                        "ResponseMetadata": {"HTTPStatusCode": 503}}, "DescribeTrainingJob")
    four = ClientError({"Error": {"Code": "SomethingNew", "Message": "x"},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, "DescribeTrainingJob")
    assert is_retryable(five) and not is_retryable(four)
    runner, clock = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    aws.fail("sagemaker.DescribeTrainingJob", "InternalDependencyException", "backend down", status=502, times=2)
    set_job(name, status="Completed", secondary="Completed")
    sim.put_output(name, {"e1": {"status": "ok", "val_bpb": 1.0}})
    assert finished(drain(runner))["e1"].result["status"] == "ok" and len(clock.sleeps) >= 2


def test_a_long_result_record_split_across_log_events_is_joined(tmp_path):
    from sandbox.runners.sm_entry import RECORD_CHUNK, result_lines
    runner, _ = make_runner(candidates_per_job=2, instance_type="ml.g5.12xlarge")
    specs = [make_spec(tmp_path, "e1"), make_spec(tmp_path, "e2")]
    result = {"status": "ok", "val_bpb": 0.987, "log_tail": "x" * (5 * RECORD_CHUNK)}
    lines = result_lines("e2", json.dumps(result, separators=(",", ":"))).splitlines()
    assert len(lines) > 5 and all(len(line) < 2 * RECORD_CHUNK for line in lines)
    # the toolkit's reads (or Docker's 16 KiB lines) cut one part into three events
    events = lines[:2] + [lines[2][:100], lines[2][100:5000], lines[2][5000:]] + lines[3:]
    from sandbox.runners.sagemaker import _Job
    job = _Job(base="b", specs=specs)
    forged = '[e1] AUTORESEARCH_RESULT e1 {"status": "ok", "val_bpb": 0.1}'   # a candidate's own print
    for message in [forged] + events:
        runner._on_log_line(job, {}, message)
    assert job.log_results == {"e2": result}
    assert "AUTORESEARCH_RESULT" in job.tails["e1"][-1]       # kept as the candidate's log, never a result


# ----- efficiency figures, long spot starts -------------------------------------------------------------
def test_each_result_carries_its_jobs_billed_training_and_startup_seconds(aws, sim, bucket, tmp_path):
    import datetime as dt
    runner, _ = make_runner()
    name = runner.submit(make_spec(tmp_path, "e1"))
    job = sim.job(name)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    job.creation_time, job.training_start_time = t0, t0 + dt.timedelta(seconds=120)
    set_job(name, status="Completed", secondary="Completed", billable=105, training_time=300,
            transitions=["Starting", "Downloading", "Training", "Uploading", "Completed"])
    for tr, offset in zip(job.secondary_status_transitions, (0, 120, 170, 400, 410)):
        tr["StartTime"] = t0 + dt.timedelta(seconds=offset)
    sim.put_output(name, {"e1": {"status": "ok", "val_bpb": 1.0, "training_seconds": 240.0}})
    figures = finished(drain(runner))["e1"].result["job_figures"]
    assert figures["wait_s"] == 120 and figures["startup_s"] == 50
    assert (figures["instance_s"], figures["billed_s"], figures["training_s"]) == (300, 105, 240)
    assert figures["efficiency"] == pytest.approx(0.8) and figures["spot_saving"] == pytest.approx(0.65)


def test_a_job_long_in_starting_is_shown_with_how_long_it_has_waited(aws, sim, bucket, tmp_path):
    runner, clock = make_runner(starting_notice_s=600)
    runner.submit(make_spec(tmp_path, "e1"))
    assert runner.poll(0) == []
    clock.sleep(601)
    (ev,) = runner.poll(0)
    assert isinstance(ev, Requeued) and "still Starting after 10 min" in ev.reason and "spot capacity" in ev.reason
    assert runner.poll(0) == []          # once per interval, not at every poll


def test_opt_in_spot_fallback_resubmits_a_job_stuck_in_starting_on_demand(aws, sim, bucket, tmp_path):
    aws.handle("sagemaker.StopTrainingJob", lambda p: (set_job(p["TrainingJobName"], status="Stopped",
                                                               secondary="Stopped", billable=0), (200, {}))[1])
    runner, clock = make_runner(spot_fallback_minutes=5, starting_notice_s=0)
    name = runner.submit(make_spec(tmp_path, "e1", val=1.02))
    clock.sleep(299)
    assert runner.poll(0) == [] and aws.calls_of("sagemaker.StopTrainingJob") == []
    clock.sleep(2)
    runner.poll(0)
    assert [c.params["TrainingJobName"] for c in aws.calls_of("sagemaker.StopTrainingJob")] == [name]
    events = drain(runner, 2)
    (ev,) = [e for e in events if isinstance(e, Requeued)]
    assert "re-submitted on-demand" in ev.reason and ev.attempt == 2
    second = created(aws, "ar-t1-rid1-e1-a2")[0]
    assert second["EnableManagedSpotTraining"] is False and "MaxWaitTimeInSeconds" not in second["StoppingCondition"]
    assert sim.run_container("ar-t1-rid1-e1-a2").returncode == 0
    done = finished(drain(runner))["e1"]
    assert done.result["status"] == "ok" and done.job_id == "ar-t1-rid1-e1-a2"


# ----- job names: this run's, and only this run's ---------------------------------------------------
def test_tags_that_slug_alike_and_one_tag_in_two_fresh_runs_get_disjoint_names(tmp_path):
    """`exp_1`, `exp-1`, `EXP.1` slug alike; the same tag in two fresh runs (another folder, or
    runs/<tag> deleted) gets a fresh run id each time: no job name is shared."""
    specs = [make_spec(tmp_path, f"g1-e{i}") for i in range(3)]
    names: list[set[str]] = []
    for tag in ("exp_1", "exp-1", "EXP.1", "exp_1"):
        runner = SageMakerRunner(make_settings(), run_tag=tag, dry_run=True)   # a fresh run: a fresh id
        names.append({runner.submit(s) for s in specs})
        for spec in specs:
            spec.workspace.joinpath("create_training_job.json").unlink(missing_ok=True)
        runner.poll(0)
    assert all(len(n) == 3 for n in names)
    assert sum(len(n) for n in names) == len(set().union(*names))


def test_fresh_project_folders_with_the_same_tag_get_disjoint_names(tmp_path, monkeypatch):
    """Through open_run: the run id is made once and kept in memory, so a resume keeps it and a
    second folder (same tag) gets another."""
    import shutil

    from agent.run_context import open_run

    monkeypatch.chdir(tmp_path)
    ids = []
    for folder in ("a", "b", "a"):
        project = tmp_path / folder
        if not project.exists():
            project.mkdir()
            shutil.copy(PROJECT / "train.py", project / "train.py")
            shutil.copy(PROJECT / "prepare.py", project / "prepare.py")
        ctx = open_run(make_settings(), "exp_1", project, backend="sagemaker", proposer="heuristic",
                       preset="micro", dry_run=True)
        ids.append(ctx.run_id)
        ctx.close()
    assert ids[0] == ids[2] != ids[1]
    names = {req.job_base_name("exp_1", rid, "g001-c01-candidate-1") for rid in ids}
    assert len(names) == 2


def _foreign_job(aws, name: str, tags: list[dict]) -> None:
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws.url)
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE, Tags=tags,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/elsewhere"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 600})


@pytest.mark.parametrize("tags", [
    [{"Key": "run", "Value": "t1"}, {"Key": "run-id", "Value": "other"}, {"Key": "execution", "Value": "e1"}],
    [{"Key": "run", "Value": "t1"}, {"Key": "execution", "Value": "e1"}],            # no run id at all
    [{"Key": "run", "Value": "t1"}, {"Key": "run-id", "Value": "rid1"}, {"Key": "execution", "Value": "e9"}],
], ids=["other-run-id", "untagged", "our-run-id-other-execution"])
def test_a_job_under_our_name_with_another_runs_tags_is_never_adopted(aws, sim, bucket, tmp_path, tags):
    _foreign_job(aws, "ar-t1-rid1-e1-a1", tags)
    set_job("ar-t1-rid1-e1-a1", status="Completed", secondary="Completed", billable=99)
    sim.put_output("ar-t1-rid1-e1-a1", {"e1": {"status": "ok", "val_bpb": 0.5}})   # a tempting score
    runner, _ = make_runner()
    spec = make_spec(tmp_path, "e1")
    with pytest.raises(AWSConfigError, match=r"ar-t1-rid1-e1-a1 exists but is not this run's .*run-id='rid1'.*"
                                             r"another --run tag"):
        runner.submit(spec)
    assert aws.calls_of("s3.GET /ar-test-bucket/elsewhere/ar-t1-rid1-e1-a1/output/output.tar.gz") == []
    second, _ = make_runner()      # a resume whose memory names that job: refused the same way
    with pytest.raises(AWSConfigError, match="is not this run's"):
        second.reattach(spec, "ar-t1-rid1-e1-a1")


def test_our_own_job_is_followed_on_resource_in_use(aws, sim, bucket, tmp_path):
    """Our earlier request created the job (its answer was lost): its tags prove it, so it is followed."""
    runner, _ = make_runner()
    spec = make_spec(tmp_path, "e1", val=1.07)
    request = req.build_create_request([spec], make_settings(), run_tag="t1", run_id="rid1", region=REGION)
    boto3.client("sagemaker", region_name=REGION, endpoint_url=aws.url).create_training_job(**request)
    assert runner.submit(spec) == "ar-t1-rid1-e1-a1"
    assert len(created(aws)) == 2 and len(sim.job_names()) == 1
    set_job("ar-t1-rid1-e1-a1", status="Completed", secondary="Completed")
    sim.put_output("ar-t1-rid1-e1-a1", {"e1": {"status": "ok", "val_bpb": 1.07}})
    assert finished(drain(runner))["e1"].result["val_bpb"] == 1.07


# ----- the real experiment through the job layout -------------------------------------------------
def test_real_train_py_runs_through_upload_channels_and_sm_entry(aws, sim, bucket, tmp_path, monkeypatch):
    """prepare.py (micro) -> upload_prepared -> runner -> sourcedir in S3 -> channels downloaded ->
    sm_entry.py -> harness.py -> the project's real train.py -> output.tar.gz -> Finished ok."""
    import subprocess
    import sys

    from agent.aws_setup import upload_prepared

    cache = tmp_path / "local-cache"
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    prep = subprocess.run([sys.executable, "prepare.py", "--preset", "micro"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=120)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    settings = make_settings()
    assert "uploaded" in upload_prepared(settings, "micro")[0]
    ws = build_workspace(tmp_path / "ws-real", (PROJECT / "train.py").read_text(), PROJECT, {"execution_id": "real"})
    spec = ExecutionSpec("real", ws, "micro", tags={"run": "t1", "generation": "0", "candidate": "baseline"})
    clock = FakeClock()
    runner = SageMakerRunner(settings, run_tag="t1", run_id="rid1", clock=clock, sleep=clock.sleep)
    name = runner.submit(spec)
    proc = sim.run_container(name, billable=200, training_time=500, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = finished(drain(runner))["real"]
    assert done.result["status"] == "ok", done.result.get("failure_reason")
    assert 0 < done.result["val_bpb"] < 20 and done.result["num_steps"] >= 1
    assert done.result["eval_record"]["settings"]["preset"] == "micro" and done.result["measurement_version"] == 2
    assert re.search(r"^\[real\] step \d+ \(", proc.stdout, re.M)   # train.py's progress reached the job log
    assert re.search(r"^\[real\] val_bpb:\s+\d", proc.stdout, re.M)     # what the MetricDefinitions scrape
