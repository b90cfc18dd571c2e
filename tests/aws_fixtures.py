"""A local AWS for tests: moto's server on 127.0.0.1, reached by real boto3 over HTTP.

Import the fixtures from a test module (`from tests.aws_fixtures import *`).

moto finishes training jobs at once, has no StopTrainingJob, sets no BillableTimeInSeconds, writes
no training logs and runs nothing. So the server here is moto's own WSGI app behind a thin
middleware that:
  * records every request (service, operation, parsed parameters): tests assert on what the
    server received, not on what the client meant to send;
  * can answer an operation with a scripted AWS error (throttling, ResourceLimitExceeded) a
    given number of times, or with a handler (StopTrainingJob);
  * leaves newly created training jobs `InProgress`, so tests drive them.
`SageMakerSim` plays the SageMaker side: it moves jobs through their states, writes CloudWatch
log events, and can really run a job's packed sourcedir (sm_entry.py -> harness.py -> train.py)
in a temporary folder, uploading output.tar.gz exactly where SageMaker would.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from tests.strict_aws import strict_aws, strict_aws_everywhere  # noqa: F401,E402  (strict AWS)

ACCOUNT = "123456789012"
REGION = "us-east-1"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


@dataclass
class Call:
    service: str
    operation: str
    params: dict

    def __repr__(self) -> str:
        return f"{self.service}.{self.operation}"


class _Middleware:
    def __init__(self, app: Callable, server: "FakeAWSServer"):
        self.app, self.server = app, server

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        service, operation, params = _identify(environ, body)
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        call = Call(service, operation, params)
        with self.server.lock:
            self.server.calls.append(call)
            script = self.server.scripts.get(f"{service}.{operation}")
            reply = script.pop(0) if script else None
        if reply is not None:
            status, payload = reply(params) if callable(reply) else reply
            data = json.dumps(payload).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))]
            if status >= 400:
                headers.append(("x-amzn-ErrorType", payload.get("__type", "")))
            start_response(f"{status} {'OK' if status < 400 else 'Error'}", headers)
            return [data]
        if (service, operation) == ("sagemaker", "CreateTrainingJob"):
            name = params.get("TrainingJobName")
            if name in sagemaker_backend().training_jobs:
                # moto overwrites the job; SageMaker refuses: names are unique per account and
                # region, forever (training jobs cannot be deleted)
                return _error(start_response, "ResourceInUse",
                              f"Training job names must be unique within an AWS account and region, and a "
                              f"training job with this name already exists ({self.server.job_arn(name)})")
            out = self.app(environ, start_response)
            self.server.after_create(params)
            return out
        return self.app(environ, start_response)


def _error(start_response: Callable, code: str, message: str, status: int = 400) -> list[bytes]:
    data = json.dumps({"__type": code, "message": message}).encode()
    start_response(f"{status} Error", [("Content-Type", "application/x-amz-json-1.1"),
                                       ("Content-Length", str(len(data))), ("x-amzn-ErrorType", code)])
    return [data]


def _identify(environ: dict, body: bytes) -> tuple[str, str, dict]:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope_service = ""
    if "Credential=" in auth:
        scope = auth.split("Credential=")[1].split(",")[0].split("/")
        scope_service = scope[3] if len(scope) > 3 else ""
    if target:   # JSON protocols: SageMaker, CloudWatch Logs, Service Quotas
        prefix, op = target.split(".", 1)
        service = {"SageMaker": "sagemaker", "Logs_20140328": "logs",
                   "ServiceQuotasV20190624": "service-quotas"}.get(prefix, scope_service or prefix)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        return service, op, params
    if body and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        form = dict(urllib.parse.parse_qsl(body.decode()))   # query protocol: IAM, STS
        return scope_service, form.pop("Action", "?"), form
    # S3 (REST): the operation is the method and path
    return scope_service or "s3", f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}", {}


class FakeAWSServer(ThreadedMotoServer):
    """ThreadedMotoServer on 127.0.0.1 and a free port, with the recording middleware."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one line per request drowns the output
        self.calls: list[Call] = []
        self.scripts: dict[str, list] = {}
        self.lock = threading.Lock()
        self.jobs_start_in_progress = True

    def _server_entry(self) -> None:
        app = _Middleware(DomainDispatcherApplication(create_backend_app), self)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST"), timeout=10).read()
        with self.lock:
            self.calls.clear()
            self.scripts.clear()
        self.jobs_start_in_progress = True

    # --- scripting ---------------------------------------------------------------------------
    def fail(self, op: str, code: str, message: str = "scripted", status: int = 400, times: int = 1) -> None:
        """Answer the next `times` calls of `op` ("sagemaker.CreateTrainingJob") with an AWS error."""
        with self.lock:
            self.scripts.setdefault(op, []).extend([(status, {"__type": code, "message": message})] * times)

    def handle(self, op: str, fn: Callable[[dict], tuple[int, dict]], times: int = 1_000_000,
               replace: bool = False) -> None:
        with self.lock:
            if replace:
                self.scripts.pop(op, None)
            self.scripts.setdefault(op, []).extend([fn] * times)

    def calls_of(self, op: str) -> list[Call]:
        service, name = op.split(".", 1)
        with self.lock:
            return [c for c in self.calls if c.service == service and c.operation == name]

    def job_arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"

    def after_create(self, params: dict) -> None:
        if self.jobs_start_in_progress:
            job = sagemaker_backend().training_jobs.get(params.get("TrainingJobName"))
            if job is not None:
                set_job(job.training_job_name, status="InProgress", secondary="Starting", end=None)


class QuotaStandIn:
    """Service Quotas for SageMaker, which moto lacks (it knows only vpc): the two listings the
    runner and `doctor` read, as AWS answers them -- ListServiceQuotas lists APPLIED values only
    (a quota never raised is absent), ListAWSDefaultServiceQuotas lists every quota's default;
    pages of at most MaxResults (1..100, default 100) with a NextToken; an unknown ServiceCode
    is NoSuchResourceException. `filler` unrelated quotas come first so paging is exercised."""

    def __init__(self, server: "FakeAWSServer", *, defaults: dict[str, tuple[str, float]],
                 applied: dict[str, float] | None = None, filler: int = 150):
        self.quotas = [(f"ml.fill{i}.xlarge for training job usage", f"L-F{i:05d}", 2.0) for i in range(filler)]
        self.quotas += [(name, code, value) for name, (code, value) in defaults.items()]
        self.applied = dict(applied or {})
        # replaces whatever answered before (e.g. the fixture's well-provisioned default account)
        server.handle("service-quotas.ListServiceQuotas", lambda p: self._page(p, applied_only=True), replace=True)
        server.handle("service-quotas.ListAWSDefaultServiceQuotas", lambda p: self._page(p, applied_only=False),
                      replace=True)

    def _page(self, params: dict, *, applied_only: bool) -> tuple[int, dict]:
        if params.get("ServiceCode") != "sagemaker":
            return 400, {"__type": "NoSuchResourceException", "message": "The request failed because the specified "
                         "service does not exist."}
        rows = [(n, c, self.applied[c] if applied_only else v) for n, c, v in self.quotas
                if not applied_only or c in self.applied]
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults", 100))
        chunk = rows[start:start + size]
        page: dict = {"Quotas": [{"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaCode": c,
                                  "QuotaName": n, "Value": v, "Unit": "None", "Adjustable": True,
                                  "GlobalQuota": False} for n, c, v in chunk]}
        if start + size < len(rows):
            page["NextToken"] = str(start + size)
        return 200, page


def sagemaker_backend() -> Any:
    from moto.sagemaker.models import sagemaker_backends
    return sagemaker_backends[ACCOUNT][REGION]


def set_job(name: str, *, status: str | None = None, secondary: str | None = None,
            transitions: list[str] | None = None, failure_reason: str | None = None,
            billable: int | None = None, training_time: int | None = None, end: Any = "keep") -> None:
    """Drive a training job the way SageMaker would; moto only stores what we set here."""
    job = sagemaker_backend().training_jobs[name]
    now = dt.datetime.now(dt.timezone.utc)
    if status is not None:
        job.training_job_status = status
    if secondary is not None:
        job.secondary_status = secondary
    if transitions is not None:
        job.secondary_status_transitions = [
            {"Status": s, "StartTime": now, "EndTime": now, "StatusMessage": f"{s} (test)"} for s in transitions]
    if failure_reason is not None:
        job.failure_reason = failure_reason
    if billable is not None:
        job.billable_time_in_seconds = billable
    if training_time is not None:
        job.training_time_in_seconds = training_time
    if end != "keep":
        job.training_end_time = end
    elif status in ("Completed", "Failed", "Stopped"):
        job.training_end_time = now


class SageMakerSim:
    """The SageMaker side of a job: logs, outputs and states, through the same local server."""

    def __init__(self, server: FakeAWSServer, tmp: Path):
        self.server, self.tmp = server, tmp
        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=server.url)
        self.logs = boto3.client("logs", region_name=REGION, endpoint_url=server.url)
        try:
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass

    def job(self, name: str) -> Any:
        return sagemaker_backend().training_jobs[name]

    def job_names(self) -> list[str]:
        return list(sagemaker_backend().training_jobs)

    def put_logs(self, name: str, lines: list[str], stream_suffix: str = "algo-1-1700000000") -> None:
        stream = f"{name}/{stream_suffix}"
        try:
            self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        base = int(dt.datetime.now().timestamp() * 1000)
        events = [{"timestamp": base + i, "message": line} for i, line in enumerate(lines)]
        for start in range(0, len(events), 1000):
            self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[start:start + 1000])

    def put_output(self, name: str, results: dict[str, dict]) -> None:
        """Upload output.tar.gz as SageMaker would after copying /opt/ml/output/data."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for execution_id, result in results.items():
                data = json.dumps(result).encode()
                info = tarfile.TarInfo(f"{execution_id}/result.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        self._upload_output(name, buf.getvalue())

    def _upload_output(self, name: str, data: bytes) -> None:
        out = self.job(name).output_data_config["S3OutputPath"]
        bucket, _, prefix = out[len("s3://"):].partition("/")
        self.s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{name}/output/output.tar.gz", Body=data)

    def run_container(self, name: str, *, billable: int = 100, training_time: int = 300,
                      gpus: int = 0, timeout: float = 120) -> subprocess.CompletedProcess:
        """Really run the job's sourcedir: download it from S3, run sm_entry.py like the toolkit,
        then publish logs, output.tar.gz and the final state (Completed, or Failed with the
        failure file as FailureReason)."""
        job = self.job(name)
        uri = json.loads(job.hyper_parameters["sagemaker_submit_directory"])
        bucket, _, key = uri[len("s3://"):].partition("/")
        root = self.tmp / f"container-{name}"
        src, out, cache = root / "code", root / "output" / "data", root / "cache"
        for d in (src, out, cache):
            d.mkdir(parents=True, exist_ok=True)
        data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(src, filter="data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"SM_OUTPUT_DATA_DIR": str(out), "SM_OUTPUT_FAILURE": str(root / "output" / "failure"),
                    "SM_NUM_GPUS": str(gpus), "AUTORESEARCH_CACHE": str(cache),
                    "AUTORESEARCH_STOP_DIR": str(root / "input" / "stop")})
        # File-mode input: every object under a channel's S3 prefix lands in the channel's folder
        for channel in job.input_data_config or []:
            ch_dir = root / "input" / "data" / channel["ChannelName"]
            ch_dir.mkdir(parents=True, exist_ok=True)
            env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(ch_dir)
            ch_bucket, _, ch_prefix = channel["DataSource"]["S3DataSource"]["S3Uri"][len("s3://"):].partition("/")
            listing = self.s3.list_objects_v2(Bucket=ch_bucket, Prefix=ch_prefix).get("Contents", [])
            for obj in listing:
                # a prefix that is one object's whole key (the `code` channel) gives that file by its name
                dest = ch_dir / (obj["Key"][len(ch_prefix):].lstrip("/") or obj["Key"].rsplit("/", 1)[-1])
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(ch_bucket, obj["Key"], str(dest))
        # moto keeps no Environment: take it from the request the server received
        created = [c for c in self.server.calls_of("sagemaker.CreateTrainingJob")
                   if c.params.get("TrainingJobName") == name]
        env.update(created[-1].params.get("Environment", {}) if created else {})
        env["AUTORESEARCH_CACHE"] = str(cache)
        program = json.loads(job.hyper_parameters["sagemaker_program"])
        proc = subprocess.run([sys.executable, program], cwd=src, env=env, capture_output=True, text=True,
                              timeout=timeout)
        self.put_logs(name, (proc.stdout + proc.stderr).splitlines())
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(out, arcname=".")
        self._upload_output(name, buf.getvalue())
        failure = root / "output" / "failure"
        if proc.returncode == 0:
            set_job(name, status="Completed", secondary="Completed", billable=billable, training_time=training_time,
                    transitions=["Starting", "Downloading", "Training", "Uploading", "Completed"])
        else:
            reason = "AlgorithmError: " + (failure.read_text() if failure.exists() else f"exit {proc.returncode}")
            set_job(name, status="Failed", secondary="Failed", billable=billable, training_time=training_time,
                    failure_reason=reason, transitions=["Starting", "Downloading", "Training", "Failed"])
        return proc


def hide_sagemaker_package(monkeypatch):
    """Make `import sagemaker...` fail as it does where the [aws] extra is not installed."""
    for name in ("sagemaker", "sagemaker.core", "sagemaker.core.image_uris", "sagemaker.image_uris"):
        monkeypatch.setitem(sys.modules, name, None)



@pytest.fixture(scope="session")
def aws_server():
    server = FakeAWSServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws(aws_server, monkeypatch, tmp_path):
    """A clean local AWS with dummy credentials in the environment; yields the server."""
    aws_server.reset()
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # moto has no SageMaker quotas (it answers 500): by default an account whose quotas for the
    # instance types the tests use were raised to 100; tests of quotas install their own
    types = ("ml.g5.xlarge", "ml.g5.12xlarge", "ml.g5.48xlarge")
    names = {f"{t} for {k}training job usage": (f"L-{i:04d}", 0.0)
             for i, (t, k) in enumerate((t, k) for t in types for k in ("", "spot "))}
    QuotaStandIn(aws_server, defaults=names, applied={code: 100.0 for code, _ in names.values()}, filler=0)
    yield aws_server


@pytest.fixture
def sim(aws, tmp_path):
    return SageMakerSim(aws, tmp_path)
