"""SageMaker Managed Spot runner: candidates become training jobs; their result.json comes back.

Lifecycle of one job (one candidate, or several packed together when
`sagemaker.candidates_per_job` > 1):

    buffered -> pending -> running -> done
                  ^   \\__ ResourceLimitExceeded: wait quota_retry_s, try again (not a failure);
                  |        after quota_wait_minutes of that: not_admitted, with the reason
                  |   (before the first job: the quota is read; 0 stops the run, N caps the jobs)
                  \\______ spot interruption / MaxWait expiry / transient error: new attempt, new name

What decides an execution's result (never a regex over the log):
  * Completed, Failed: the harness's result.json from the job's output.tar.gz; failing that the
    `AUTORESEARCH_RESULT` record sm_entry.py printed; failing that a crash built from the
    FailureReason and the log tail. A job that left no result is never `ok`.
  * Stopped after our StopTrainingJob: `killed`, or `stopped_early` with the deciding figures
    when the stop was an early stop (`stop_early`). Inside a packed job an early stop does not
    stop the job: the runner writes that candidate's stop marker to S3 (manifest `stop_uri`), the
    job's entry script hands it to that candidate's harness (--stop-file), and only that
    candidate ends, with its harness's `stopped_early` result. A network-isolated job reads no
    marker: each watched candidate carries the rule and the incumbent's curves at submission
    (manifest `stop_rule`) and the entry script applies it to the candidate's progress itself.
  * Spot capacity lost (an `Interrupted` or `MaxWaitTimeExceeded` secondary status on a job that did
    not complete): requeued up to `sagemaker.max_spot_requeues` times, then `interrupted`.
  * MaxRuntimeExceeded: `timeout`.
  * FailureReason that names an infrastructure fault ("CUDA error: unknown error", internal
    errors): re-run `sagemaker.transient_retries` times before it counts as the candidate's crash.

Polling adapts: `poll_min_s` after anything changed, growing x1.5 up to `poll_max_s` while nothing
moves; with more than `search_above_jobs` running jobs one Search call replaces N Describes.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from sandbox.runners.settings import AWSBackendSettings
from sandbox.progress import parse_progress_line
from sandbox.runners import sagemaker_quota as quota
from sandbox.runners import sagemaker_request as req
from sandbox.runners.sagemaker_efficiency import job_figures
from sandbox.runners.aws_clients import (
    as_setup_error, call_with_retry, error_code, error_message, is_retryable, make_client, make_session,
    region_of,
)
from sandbox.runners.base import Charge, ExecutionSpec, Finished, Progress, Requeued, RunnerEvent, new_run_id
from sandbox.statuses import CRASH, HARNESS_STATUSES, INTERRUPTED, KILLED, NOT_ADMITTED, STOPPED_EARLY, TIMEOUT

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
LOG_TAIL_LINES = 50
TRANSIENT_PATTERNS = (
    "cuda error: unknown error", "internalservererror", "internal server error", "internalfailure",
    "an internal error occurred", "capacityerror", "insufficientcapacity", "unable to pull image",
    "cuda error: an illegal memory access was encountered by the driver", "nccl error",
)
_PREFIXED = re.compile(r"^\[([^\]\s]+)\] ?(.*)$")
# Records are written by sm_entry.py unprefixed, at the start of a line (a candidate's own output
# is always "[<id>] "-prefixed), so they are matched at the start only. A long record comes in
# parts that say their length (sm_entry.result_lines); a part split into several log events is
# joined with the events that follow it until it has its length.
_RESULT_RECORD = re.compile(r"AUTORESEARCH_RESULT (\S+) (\{.*\})\s*$")
_RESULT_PART = re.compile(r"AUTORESEARCH_RESULT_PART (\S+) (\d+)/(\d+) (\d+) (.*)$", re.S)
_MAX_OUTPUT_BYTES = 64 * 1024 * 1024


class ForeignJobError(req.AWSConfigError):
    """A training job under one of our names belongs to another run (or nobody can tell)."""


@dataclass
class _Job:
    base: str
    specs: list[ExecutionSpec]
    state: str = "buffered"              # buffered | pending | running | done
    attempt: int = 1
    name: str = ""
    not_before: float = 0.0
    uploaded: bool = False
    stop_requested: bool = False
    early_stops: dict[str, dict] = field(default_factory=dict)   # execution id -> early_stop reason
    quota_waiting: bool = False
    waiting_since: float | None = None   # first ResourceLimitExceeded of this wait
    last_refusal: str = ""
    start_notices: int = 0               # "still Starting" notices given (_notice_long_start)
    on_demand: bool = False              # the spot fallback moved this job to on-demand
    fallback_pending: bool = False       # stopped for the spot fallback; re-submitted once Stopped
    spot_requeues: int = 0
    transient_retries: int = 0
    transitions_seen: int = 0
    last_state: tuple = ()
    started_at: float | None = None
    closed: set[str] = field(default_factory=set)        # executions already given a Finished
    log_tokens: dict[str, str] = field(default_factory=dict)
    log_streams: list[str] = field(default_factory=list)
    tails: dict[str, deque] = field(default_factory=dict)
    log_results: dict[str, dict] = field(default_factory=dict)
    record_parts: dict[str, dict[int, str]] = field(default_factory=dict)   # execution id -> part no. -> text
    open_part: tuple | None = None       # (execution id, part no., parts, length, text so far) of a split part
    last_step: dict[str, int] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)   # execution id -> its part of this attempt's bill
    figures: dict = field(default_factory=dict)               # sagemaker_efficiency.job_figures of the attempt

    def open_specs(self) -> list[ExecutionSpec]:
        return [s for s in self.specs if s.execution_id not in self.closed]


def _ts(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _early_stop_text(reason: dict) -> str:
    return "stopped early: " + str(reason.get("reason") or "its loss curve was losing against the incumbent's controls")


def _crash(reason: str, log_tail: str = "", status: str = CRASH) -> dict:
    return {"status": status, "val_bpb": None, "peak_vram_mb": None, "training_seconds": None,
            "total_seconds": None, "num_steps": None, "mfu_percent": None, "num_params_M": None,
            "failure_reason": reason, "log_tail": log_tail}


class _CallableClock:
    """The Runner protocol's clock over the runner's own time function (tests pass a fake one)."""

    def __init__(self, now: Callable[[], float]):
        self.now = now

    def advance(self, seconds: float) -> None:
        pass    # real time passes by itself


class SageMakerRunner:
    """Runner protocol over SageMaker training jobs (see module docstring).

    `session` is a boto3.Session (default: from settings.aws); `run_tag` names the run in job
    names, S3 keys and the `run` tag (default: the `run` tag of the first spec, else "adhoc");
    `run_id` (kept in the run's memory, so a resumed run passes the same one; default: a fresh
    one) makes job names unique to this run and is the `run-id` tag that proves a job is ours.
    `dry_run` writes each CreateTrainingJob request to `<workspace>/create_training_job.json`,
    makes no AWS call at all, and ends each execution with a non-ok `killed` result marked
    `dry_run: true`. `clock`/`sleep` exist so tests need no real waiting.
    """

    name = "sagemaker"
    simulated = False

    def __init__(self, settings: AWSBackendSettings, *, run_tag: str | None = None, run_id: str | None = None,
                 session: Any = None, dry_run: bool = False, image_uri: str | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.sm = settings.sagemaker
        self.run_tag = run_tag
        self.run_id = run_id or new_run_id()
        self.dry_run = dry_run
        self._clock, self._sleep = clock, sleep
        self.clock = _CallableClock(clock)
        self._session = session
        self._region: str | None = None
        self._image_uri = image_uri
        self._clients: dict[str, Any] = {}
        self._jobs: dict[str, _Job] = {}
        self._by_exec: dict[str, _Job] = {}
        self._buffer: _Job | None = None
        self._events: list[RunnerEvent] = []
        self._interval = self.sm.poll_min_s
        self._next_poll = 0.0
        self.quota: quota.Quota | None = None     # read before the first job (sagemaker_quota)
        self._unsettled: list[dict] = []           # jobs stopped by shutdown(), bill not known yet
        if settings.s3.bucket == "":     # the SageMaker default bucket: needs the account
            account = None if dry_run or req.account_of_role(settings.aws.role_arn) else \
                self._call("sts", "get_caller_identity")["Account"]
            req.resolve_default_bucket(settings, self.region, account)
        if not dry_run:
            req.require_bucket(settings)

    # ----- AWS plumbing -------------------------------------------------------------------
    @property
    def region(self) -> str:
        if self._region is None:
            if self._session is None and not self.dry_run:
                self._session = make_session(self.settings)
            self._region = region_of(self.settings, self._session)
        return self._region

    def _client(self, service: str) -> Any:
        if self.dry_run:
            raise RuntimeError("dry run: no AWS call may be made")
        if service not in self._clients:
            if self._session is None:
                self._session = make_session(self.settings)
            self._clients[service] = make_client(self._session, service, self.settings, region=self.region)
        return self._clients[service]

    def _call(self, service: str, op: str, **kwargs: Any) -> Any:
        fn = getattr(self._client(service), op)
        try:
            return call_with_retry(fn, attempts=self.sm.api_max_attempts, backoff_s=self.sm.api_backoff_s,
                                   sleep=self._sleep, **kwargs)
        except Exception as exc:   # credentials / endpoint / bucket problems: one clear message
            setup = as_setup_error(exc, f"{service} {op}")
            if setup is None:
                raise
            raise setup from None

    def image_uri(self) -> str:
        if self._image_uri is None:
            self._image_uri = req.resolve_image_uri(self.settings, self.region)
        return self._image_uri

    def _role_arn(self) -> str:
        if self.settings.aws.role_arn or self.dry_run:
            return self.settings.aws.role_arn or ""
        # `aws setup` creates the role by name; find its ARN rather than make the user copy it.
        try:
            arn = self._call("iam", "get_role", RoleName=self.settings.aws.role_name)["Role"]["Arn"]
        except ClientError as exc:
            raise req.AWSConfigError(f"aws.role_arn is not set and role {self.settings.aws.role_name!r} was not "
                                     f"found ({error_code(exc)}): run `autoresearch aws setup`") from None
        self.settings.aws.role_arn = arn
        return arn

    def job_cap(self) -> int:
        """How many of our jobs may run at once: max_concurrent_jobs, lowered to the account's
        quota once it is known (other runs of the account may still take some of it)."""
        cap = self.sm.max_concurrent_jobs
        if self.quota is not None and self.quota.value is not None:
            cap = min(cap, max(1, int(self.quota.value)))
        return cap

    def _ensure_quota(self) -> None:
        if self.quota is None and not self.dry_run:
            self.quota = quota.lookup(self._call, self.sm.instance_type, self.sm.use_spot, self.region)
            # 0: stop now, with the quota's name and the fix
            quota.require_positive(self.quota, self.sm.max_concurrent_jobs)

    # ----- Runner protocol ------------------------------------------------------------------
    def free_slots(self) -> int:
        # the quota is read at the first launch (not here: the scheduler asks before anything is
        # recorded, and an unreachable AWS must leave the run's executions pending)
        cpj = self.sm.candidates_per_job
        jobs = sum(1 for j in self._jobs.values() if j.state in ("pending", "running"))
        buffered = len(self._buffer.specs) if self._buffer else 0
        return max(0, (self.job_cap() - jobs) * cpj - buffered)

    def waiting_for_capacity(self) -> dict[str, float]:
        """Executions whose job AWS refused for capacity (ResourceLimitExceeded), with the
        seconds they have waited: the live view shows them as a queue, not as running."""
        now = self._clock()
        return {s.execution_id: now - j.waiting_since for j in self._jobs.values()
                if j.state == "pending" and j.waiting_since is not None for s in j.open_specs()}

    def active(self) -> list[str]:
        return [s.execution_id for j in self._jobs.values() if j.state != "done" for s in j.open_specs()]

    def submit(self, spec: ExecutionSpec) -> str:
        if spec.execution_id in self._by_exec:
            raise ValueError(f"execution {spec.execution_id} was already submitted")
        req.check_workspace(spec)
        req.assert_no_secrets(spec.env, f"env of execution {spec.execution_id}")
        if self.run_tag is None:
            self.run_tag = spec.tags.get("run") or "adhoc"
        buf = self._buffer
        if buf is not None and buf.specs[0].preset != spec.preset:
            self._flush_buffer()   # one job runs one preset
            buf = None
        if buf is None:
            buf = _Job(base=req.job_base_name(self.run_tag, self.run_id, spec.execution_id), specs=[])
            self._buffer = buf
            self._jobs[buf.base] = buf
        buf.specs.append(spec)
        self._by_exec[spec.execution_id] = buf
        buf.name = req.job_name(buf.base, buf.attempt)
        if len(buf.specs) >= self.sm.candidates_per_job:
            self._flush_buffer()
            self._launch_pending()   # a full job starts now, not at the next poll
        return buf.name

    def poll(self, timeout: float = 0.0) -> list[RunnerEvent]:
        deadline = self._clock() + max(0.0, timeout)
        while True:
            self._flush_buffer()     # a partly filled pack goes out once the loop starts waiting
            self._launch_pending()
            now = self._clock()
            if not self.dry_run and now >= self._next_poll and any(j.state == "running" for j in self._jobs.values()):
                changed = self._refresh()
                self._interval = self.sm.poll_min_s if changed else min(self.sm.poll_max_s,
                                                                        max(self._interval * 1.5, 0.001))
                self._next_poll = self._clock() + self._interval
            if self._events or self._clock() >= deadline:
                events, self._events = self._events, []
                return events
            wake = [deadline] + [j.not_before for j in self._jobs.values() if j.state == "pending"]
            if any(j.state == "running" for j in self._jobs.values()):
                wake.append(self._next_poll)
            self._sleep(max(0.01, min(wake) - self._clock()))

    def cancel(self, execution_id: str) -> None:
        job = self._by_exec.get(execution_id)
        if job is None or execution_id in job.closed or job.state == "done":
            return
        if job.state in ("buffered", "pending"):
            job.specs = [s for s in job.specs if s.execution_id != execution_id]
            self._finish(job, execution_id, _crash("cancelled before its job started", status=KILLED), {})
            if not job.specs:
                job.state = "done"
                if self._buffer is job:
                    self._buffer = None
            return
        others = [s for s in job.open_specs() if s.execution_id != execution_id]
        if others:
            # The job carries other candidates: let it run, forget this one's result.
            self._finish(job, execution_id, _crash("cancelled (its packed job keeps running for the others)",
                                                   status=KILLED), {})
            return
        self._stop(job)   # Finished(killed) arrives when the job reports Stopped, with its billable time

    def stop_early(self, execution_id: str, reason: dict) -> bool:
        """StopTrainingJob for a job of its own; in a packed job only this candidate's stop marker
        (the others keep training). The Finished says `stopped_early` with `reason`. False for a
        candidate of a network-isolated packed job: no marker reaches it (its stop_rule decides)."""
        job = self._by_exec.get(execution_id)
        if job is None or execution_id in job.closed or job.state != "running":
            return True      # over, or not started: there is nothing left to stop
        if [s.execution_id for s in job.open_specs()] == [execution_id]:
            job.early_stops[execution_id] = dict(reason)
            self._stop(job)
            return True
        uri = req.job_layout(self.settings, self.run_tag or "adhoc", job.base).stop_uri(execution_id)
        if uri is None:
            return False     # network-isolated: the job reads no marker; its stop_rule decides there
        job.early_stops[execution_id] = dict(reason)
        bucket, key = req.split_s3_uri(uri)
        self._call("s3", "put_object", Bucket=bucket, Key=key, Body=json.dumps(reason, default=str).encode())
        return True

    def reattach(self, spec: ExecutionSpec, job_id: str) -> bool:
        if self.run_tag is None:
            self.run_tag = spec.tags.get("run") or "adhoc"
        base, attempt = req.split_job_name(job_id)
        job = self._jobs.get(base)
        if job is not None and job.state == "running":
            if spec.execution_id not in {s.execution_id for s in job.specs}:
                job.specs.append(spec)
            self._by_exec[spec.execution_id] = job
            return True
        desc = self._describe(job_id)
        if desc is None:
            return False
        self._require_owned(base, desc)
        # A requeue may have made later attempts since the orchestrator stopped: follow the newest.
        for later in range(attempt + 1, attempt + self.sm.max_spot_requeues + self.sm.transient_retries + 2):
            newer = self._describe(req.job_name(base, later))
            if newer is None:
                break
            self._require_owned(base, newer)
            desc, attempt = newer, later
        job = _Job(base=base, specs=[spec], state="running", attempt=attempt, name=req.job_name(base, attempt),
                   uploaded=True, started_at=_ts(desc.get("TrainingStartTime")) or _ts(desc.get("CreationTime")))
        self._jobs[base] = job
        self._by_exec[spec.execution_id] = job
        self._next_poll = 0.0
        return True

    def shutdown(self) -> list[Finished]:
        """Stop every job and end its executions `killed`. A stopped job is still billed (up to
        its end, the 120 s SIGTERM grace included) but its bill is known only once SageMaker says
        Stopped: each such job is listed in `unsettled()`, for the next start to `settle()`."""
        finished: list[Finished] = []
        for job in list(self._jobs.values()):
            if job.state == "done":
                continue
            if job.state == "running" and not self.dry_run:
                try:
                    self._call("sagemaker", "stop_training_job", TrainingJobName=job.name)
                except ClientError:
                    pass   # already ending; its bill is settled all the same
                self._unsettled.append({"job": job.name, "executions": [s.execution_id for s in job.specs],
                                        "instance_type": self.sm.instance_type})
            for spec in job.open_specs():
                job.closed.add(spec.execution_id)
                finished.append(Finished(spec.execution_id, _crash("runner shut down", status=KILLED),
                                         backend=self.name, job_id=job.name, instance_type=self.sm.instance_type,
                                         ended_at=self._clock()))
            job.state = "done"
        self._buffer = None
        return finished

    def unsettled(self) -> list[dict]:
        """Jobs stopped by shutdown() whose bill is not known yet (JSON-able, for the run's memory)."""
        return [dict(e) for e in self._unsettled]

    def settle(self, entries: list[dict]) -> tuple[list[Charge], list[dict]]:
        """For jobs an earlier shutdown() stopped: the Charges of those that have ended since
        (their BillableTimeInSeconds split as a packed job's bill is), and the entries still
        stopping. A job that does not exist was never billed."""
        charges: list[Charge] = []
        left: list[dict] = []
        for entry in entries:
            desc = self._describe(entry["job"])
            if desc is None:
                continue
            if desc.get("TrainingJobStatus") not in ("Completed", "Failed", "Stopped"):
                left.append(entry)
                continue
            ids = list(entry["executions"])
            outputs = self._read_output_at(desc, entry["job"], ids) if len(ids) > 1 else {}
            billable = float(desc.get("BillableTimeInSeconds") or 0)
            for eid, share in _split(ids, outputs).items():
                charges.append(Charge(eid, billable * share, entry["job"], "stopped at the last shutdown: billed "
                                      "until it ended", entry.get("instance_type")))
        return charges, left

    # ----- submission -------------------------------------------------------------------------
    def _flush_buffer(self) -> None:
        job = self._buffer
        if job is None:
            return
        self._buffer = None
        if not job.specs:
            job.state = "done"
            return
        if self.dry_run:
            self._write_dry_run(job)
            return
        job.state, job.not_before = "pending", 0.0

    def _write_dry_run(self, job: _Job) -> None:
        request = self.build_request(job)
        for spec in job.specs:
            path = spec.workspace / "create_training_job.json"
            path.write_text(json.dumps(request, indent=2, sort_keys=True) + "\n")
            self._finish(job, spec.execution_id,
                         {**_crash(f"dry run: CreateTrainingJob request written to {path}; no job created",
                                   status=KILLED), "dry_run": True, "request_path": str(path)}, {})
        job.state = "done"

    def build_request(self, job: _Job) -> dict:
        return req.build_create_request(job.specs, self.settings, run_tag=self.run_tag or "adhoc",
                                        run_id=self.run_id, region=self.region, on_demand=job.on_demand,
                                        attempt=job.attempt, image_uri=self.image_uri(),
                                        role_arn=self._role_arn() or None)

    def _launch_pending(self) -> None:
        self._end_long_waits()
        if any(j.state == "pending" for j in self._jobs.values()):
            self._ensure_quota()
        running = sum(1 for j in self._jobs.values() if j.state == "running")
        for job in list(self._jobs.values()):
            if running >= self.job_cap():
                return
            if job.state != "pending" or job.not_before > self._clock():
                continue
            if not job.open_specs():
                job.state = "done"
                continue
            outcome = self._create(job)
            if outcome == "quota":
                return   # the account limit is shared: the next jobs would hit it too
            running += outcome == "running"

    def _create(self, job: _Job) -> str:
        job.specs = job.open_specs()
        job.name = req.job_name(job.base, job.attempt)
        request = self.build_request(job)
        if not job.uploaded:
            layout = req.job_layout(self.settings, self.run_tag or "adhoc", job.base)
            bucket, key = req.split_s3_uri(layout.source_uri)
            self._call("s3", "put_object", Bucket=bucket, Key=key, Body=req.pack_source(job.specs, layout))
            job.uploaded = True
        try:
            self._call("sagemaker", "create_training_job", **request)
        except ClientError as exc:
            code, message = error_code(exc), error_message(exc)
            if code == "ResourceLimitExceeded":
                job.not_before = self._clock() + self.sm.quota_retry_s
                if not job.quota_waiting:
                    job.quota_waiting = True
                    job.waiting_since = self._clock()
                    limit = f"; not admitted after {self.sm.quota_wait_minutes:g} min of this"
                    for spec in job.specs:
                        self._events.append(Requeued(spec.execution_id, f"waiting for quota: {message}{limit}",
                                                     job.attempt))
                job.last_refusal = message
                return "quota"
            if is_retryable(exc):
                # still throttled after every backoff: not the candidate's fault, try again later
                job.not_before = self._clock() + max(self.sm.quota_retry_s, self.sm.poll_min_s)
                return "quota"
            if code != "ResourceInUse" and "already exists" not in message.lower():
                # a request SageMaker refuses (role, image, limits) fails every candidate alike:
                # stop the run with the reason rather than record N fake crashes
                raise req.AWSConfigError(f"CreateTrainingJob {job.name} refused: {code}: {message}") from None
            # The name is taken. Follow that job only if its tags prove it is ours (our earlier,
            # e.g. timed-out, request created it); another run's job would hand us its score.
            desc = self._describe(job.name)
            if desc is None:
                raise req.AWSConfigError(f"CreateTrainingJob {job.name}: {code} ({message}) but the job cannot be "
                                         "described; try again later") from None
            self._require_owned(job.base, desc)
        job.quota_waiting, job.waiting_since = False, None
        job.state = "running"
        job.started_at = self._clock()
        job.transitions_seen, job.last_state, job.log_tokens, job.log_streams = 0, (), {}, []
        self._next_poll = min(self._next_poll, self._clock() + self.sm.poll_min_s)
        return "running"

    def _notice_long_start(self, job: _Job) -> None:
        """A spot job can sit in Starting for 30+ minutes waiting for capacity: say so, every
        sagemaker.starting_notice_s, with how long it has waited (MaxWaitTimeInSeconds ends it);
        with sagemaker.spot_fallback_minutes, stop it then and re-submit it on-demand."""
        waited = self._clock() - (job.started_at or self._clock())
        fallback = self.sm.spot_fallback_minutes
        if fallback and self.sm.use_spot and not job.on_demand and not job.fallback_pending \
                and not job.stop_requested and waited >= fallback * 60:
            job.fallback_pending = True
            try:
                self._call("sagemaker", "stop_training_job", TrainingJobName=job.name)
            except ClientError as exc:
                if error_code(exc) != "ValidationException":   # already ending: the poll will tell
                    raise
            return
        every = self.sm.starting_notice_s
        if every <= 0 or waited < every * (job.start_notices + 1):
            return
        job.start_notices = int(waited // every)
        for spec in job.open_specs():
            self._events.append(Requeued(spec.execution_id, f"still Starting after {waited / 60:.0f} min (waiting for "
                                         f"{'spot ' if self.sm.use_spot else ''}capacity for {self.sm.instance_type})",
                                         job.attempt))

    def _end_long_waits(self) -> None:
        """Executions refused for capacity for longer than quota_wait_minutes end `not_admitted`
        with the reason, rather than wait on a quota that other jobs of the account hold."""
        limit = self.sm.quota_wait_minutes * 60
        for job in self._jobs.values():
            if job.state != "pending" or job.waiting_since is None or self._clock() - job.waiting_since < limit:
                continue
            waited = (self._clock() - job.waiting_since) / 60
            why = (f"not admitted: AWS refused the job for capacity for {waited:.0f} min "
                   f"(sagemaker.quota_wait_minutes = {self.sm.quota_wait_minutes:g}): {job.last_refusal}")
            if self.quota is not None:
                why += f"; quota {self.quota.describe()}"
            self._finish_all(job, {}, {}, missing=why, status=NOT_ADMITTED)

    def _stop(self, job: _Job) -> None:
        job.stop_requested = True
        try:
            self._call("sagemaker", "stop_training_job", TrainingJobName=job.name)
        except ClientError as exc:
            if error_code(exc) != "ValidationException":   # already finished: the poll will tell
                raise
        self._next_poll = 0.0

    def _require_owned(self, base: str, desc: dict) -> None:
        """Raise ForeignJobError unless the job `desc` carries this run's tags for `base`."""
        name = desc.get("TrainingJobName", base)
        arn = desc.get("TrainingJobArn")
        tags: dict[str, str] = {}
        kwargs: dict[str, Any] = {"ResourceArn": arn, "MaxResults": 100}
        while arn:
            page = self._call("sagemaker", "list_tags", **kwargs)
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        if not req.proves_ownership(tags, run_tag=self.run_tag or "adhoc", run_id=self.run_id, base=base):
            raise ForeignJobError(
                f"training job {name} exists but is not this run's (its tags: run={tags.get('run')!r}, "
                f"{req.RUN_ID_TAG}={tags.get(req.RUN_ID_TAG)!r}, {req.EXECUTION_TAG}={tags.get(req.EXECUTION_TAG)!r}; "
                f"this run: run={self.run_tag!r}, {req.RUN_ID_TAG}={self.run_id!r}). It is never followed and its "
                "output never read; training jobs cannot be deleted, so start this run under another --run tag")

    # ----- observation ------------------------------------------------------------------------
    def _describe(self, name: str) -> dict | None:
        try:
            return self._call("sagemaker", "describe_training_job", TrainingJobName=name)
        except ClientError as exc:
            msg = error_message(exc).lower()
            if error_code(exc) in ("ValidationException", "ResourceNotFound") and ("find" in msg or "not found" in msg):
                return None
            raise

    def _refresh(self) -> bool:
        running = [j for j in self._jobs.values() if j.state == "running"]
        found: dict[str, dict] = {}
        if len(running) > self.sm.search_above_jobs:
            found = self._search_run_jobs()
        changed = False
        for job in running:
            desc = found.get(job.name) or self._describe(job.name)
            if desc is None:
                continue   # just created, not visible yet
            changed |= self._observe(job, desc)
        return changed

    def _search_run_jobs(self) -> dict[str, dict]:
        found: dict[str, dict] = {}
        kwargs: dict[str, Any] = {
            "Resource": "TrainingJob", "MaxResults": 100,
            "SearchExpression": {"Filters": [{"Name": f"Tags.{req.RUN_ID_TAG}", "Operator": "Equals",
                                              "Value": self.run_id}]},
        }
        while True:
            page = self._call("sagemaker", "search", **kwargs)
            for item in page.get("Results", []):
                tj = item.get("TrainingJob") or {}
                if tj.get("TrainingJobName"):
                    found[tj["TrainingJobName"]] = tj
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    def _observe(self, job: _Job, desc: dict) -> bool:
        status = desc.get("TrainingJobStatus", "")
        secondary = desc.get("SecondaryStatus", "")
        transitions = desc.get("SecondaryStatusTransitions") or []
        state = (status, secondary, len(transitions))
        changed = state != job.last_state
        job.last_state = state
        for tr in transitions[job.transitions_seen:]:
            if tr.get("Status") == "Interrupted" and status in ("InProgress", "Stopping"):
                # SageMaker restarts an interrupted spot job by itself; tell the loop it lost progress.
                for spec in job.open_specs():
                    self._events.append(Requeued(spec.execution_id, "spot interruption: SageMaker restarts the job "
                                                 f"({tr.get('StatusMessage', '')})".rstrip(" ()"), job.attempt))
        moved_on = len(transitions) > job.transitions_seen
        job.transitions_seen = len(transitions)
        if status == "InProgress" and secondary == "Starting":
            self._notice_long_start(job)
        if status in ("InProgress", "Stopping"):
            if secondary in ("Training", "Uploading", "Interrupted", "Restarting") or not secondary:
                # a new phase (e.g. training again after a restart) may write to a new stream
                changed |= self._read_logs(job, desc, rescan=moved_on)
            return changed
        self._read_logs(job, desc, rescan=True)
        self._conclude(job, desc, status, secondary, transitions)
        return True

    def _conclude(self, job: _Job, desc: dict, status: str, secondary: str, transitions: list) -> None:
        statuses = {t.get("Status") for t in transitions} | {secondary}
        last = transitions[-1].get("Status") if transitions else secondary
        reason = desc.get("FailureReason") or ""
        outputs = self._read_output(job, desc)
        job.figures = job_figures(desc, {**job.log_results, **outputs})
        # The attempt's bill, split by each candidate's harness wall-seconds; who left the job
        # early (cancelled) gets its share as a Charge, the others with their Finished.
        job.shares = _split([s.execution_id for s in job.specs], {**job.log_results, **outputs})
        requeue = self._requeue_reason(job, status, statuses, last, secondary, reason, outputs)
        for spec in job.specs:
            if spec.execution_id in job.closed or requeue:
                self._charge(job, desc, spec.execution_id,
                             requeue or "its packed job ran on after it was cancelled")
        if requeue:
            self._requeue(job, requeue)
            return
        if status == "Completed":
            self._finish_all(job, desc, outputs, missing="job completed without a result.json")
            return
        if status == "Stopped" and job.stop_requested:
            for spec in job.open_specs():
                reason = job.early_stops.get(spec.execution_id)
                if reason is not None:
                    result = {**_crash(_early_stop_text(reason), self._tail(job, spec), status=STOPPED_EARLY),
                              "early_stop": reason}
                else:
                    result = _crash("stopped by autoresearch", self._tail(job, spec), status=KILLED)
                self._finish(job, spec.execution_id, result, desc)
            job.state = "done"
            return
        if "MaxRuntimeExceeded" in statuses:
            self._finish_all(job, desc, outputs,
                             missing=f"job exceeded MaxRuntimeInSeconds {reason}".rstrip(), status=TIMEOUT)
            return
        if self._all_reported(job, outputs):
            self._finish_all(job, desc, outputs, missing="")   # every harness finished: its verdict stands
            return
        if self._spot_lost(statuses, last, secondary) and self.sm.use_spot:
            self._finish_all(job, desc, outputs, missing=f"{self._spot_why(statuses, reason, status)}; gave up "
                             f"after {job.spot_requeues} requeues", status=INTERRUPTED)
            return
        if status == "Stopped":
            self._finish_all(job, desc, outputs, missing="job was stopped outside autoresearch", status=KILLED)
            return
        self._finish_all(job, desc, outputs, missing=f"job failed: {reason or 'no FailureReason given'}")

    def _all_reported(self, job: _Job, outputs: dict) -> bool:
        return all(s.execution_id in outputs or s.execution_id in job.log_results for s in job.open_specs())

    @staticmethod
    def _spot_lost(statuses: set, last: str, secondary: str) -> bool:
        return "MaxWaitTimeExceeded" in statuses or "Interrupted" in (last, secondary)

    @staticmethod
    def _spot_why(statuses: set, reason: str, status: str) -> str:
        return "spot capacity: MaxWaitTimeInSeconds expired" if "MaxWaitTimeExceeded" in statuses \
            else f"spot interruption ({reason or status})"

    def _requeue_reason(self, job: _Job, status: str, statuses: set, last: str, secondary: str, reason: str,
                        outputs: dict) -> str:
        """Why this ended attempt is run again ("" if it is not): spot capacity lost, or an
        infrastructure fault, while requeues are left. Counts the requeue."""
        if job.fallback_pending and status in ("Stopped", "Failed") and not job.stop_requested:
            job.fallback_pending, job.on_demand = False, True
            return (f"spot capacity: still Starting after {self.sm.spot_fallback_minutes:g} min "
                    "(sagemaker.spot_fallback_minutes): re-submitted on-demand")
        if status == "Completed" or (status == "Stopped" and job.stop_requested) or "MaxRuntimeExceeded" in statuses:
            return ""
        if self._all_reported(job, outputs) or not job.open_specs():
            return ""
        if self._spot_lost(statuses, last, secondary) and self.sm.use_spot:
            if job.spot_requeues < self.sm.max_spot_requeues:
                job.spot_requeues += 1
                return self._spot_why(statuses, reason, status)
            return ""
        if status == "Failed" and not outputs and not job.log_results \
                and any(p in reason.lower() for p in TRANSIENT_PATTERNS) \
                and job.transient_retries < self.sm.transient_retries:
            job.transient_retries += 1
            return f"transient infrastructure error: {reason[:300]}"
        return ""

    def _charge(self, job: _Job, desc: dict, execution_id: str, reason: str) -> None:
        billable = desc.get("BillableTimeInSeconds")
        if billable is None:
            return
        self._events.append(Charge(execution_id, float(billable) * job.shares.get(execution_id, 0.0), job.name,
                                   f"{reason} (attempt {job.attempt}, {job.name})", self.sm.instance_type))

    def _requeue(self, job: _Job, reason: str) -> None:
        job.attempt += 1
        job.state, job.not_before = "pending", self._clock()
        job.log_results, job.tails, job.last_step = {}, {}, {}
        job.record_parts, job.open_part = {}, None
        for spec in job.open_specs():
            self._events.append(Requeued(spec.execution_id, reason, job.attempt))

    def _finish_all(self, job: _Job, desc: dict, outputs: dict[str, dict], *, missing: str,
                    status: str = CRASH) -> None:
        for spec in job.open_specs():
            result = outputs.get(spec.execution_id) or job.log_results.get(spec.execution_id)
            if result is None:
                result = _crash(missing, self._tail(job, spec), status=status)
            self._finish(job, spec.execution_id, result, desc)
        job.state = "done"

    def _finish(self, job: _Job, execution_id: str, result: dict, desc: dict) -> None:
        job.closed.add(execution_id)
        result = dict(result)
        if result.get("status") not in HARNESS_STATUSES + (NOT_ADMITTED,):
            result = _crash(f"result.json has no valid status: {result.get('status')!r}", result.get("log_tail", ""))
        billable = desc.get("BillableTimeInSeconds")
        n = max(1, len(job.specs))
        share = job.shares.get(execution_id, 1.0 / n)
        if "TrainingTimeInSeconds" in desc:
            result["training_time_seconds"] = desc["TrainingTimeInSeconds"]
        if billable is not None:
            result["job_billable_seconds"] = billable
        result.update({"job_name": job.name or None, "job_attempt": job.attempt, "job_candidates": n,
                       "job_bill_share": round(share, 6)})
        if job.figures:
            result["job_figures"] = dict(job.figures)   # billed vs training vs start-up (sagemaker_efficiency)
        self._events.append(Finished(
            execution_id, result, backend=self.name, job_id=job.name or None, instance_type=self.sm.instance_type,
            # a packed job's bill is split by harness wall-seconds (_split): the parts add up to the job's
            billable_seconds=(float(billable) * share) if billable is not None else None,
            started_at=_ts(desc.get("TrainingStartTime")) or job.started_at,
            ended_at=_ts(desc.get("TrainingEndTime")) or self._clock()))

    # ----- logs and outputs -------------------------------------------------------------------
    def _tail(self, job: _Job, spec: ExecutionSpec) -> str:
        return "\n".join(job.tails.get(spec.execution_id, ()))

    def _read_logs(self, job: _Job, desc: dict, *, rescan: bool = False) -> bool:
        """New CloudWatch lines of the job: progress events, log tails, result records.

        Stream names are looked up once and cached (DescribeLogStreams allows ~5 calls/s per
        account); `rescan` looks again, e.g. at the end when a restart may have added a stream."""
        if rescan or not job.log_streams:
            try:
                found = self._call("logs", "describe_log_streams", logGroupName=LOG_GROUP,
                                   logStreamNamePrefix=job.name + "/").get("logStreams", [])
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return False   # no log group or stream yet
                raise
            job.log_streams = [s["logStreamName"] for s in found]
        got = False
        for name in job.log_streams:
            while True:
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": name, "startFromHead": True}
                if name in job.log_tokens:
                    kwargs["nextToken"] = job.log_tokens[name]
                page = self._call("logs", "get_log_events", **kwargs)
                for event in page.get("events", []):
                    got = True
                    self._on_log_line(job, desc, event.get("message", ""))
                token = page.get("nextForwardToken")
                if not token or token == job.log_tokens.get(name):
                    break
                job.log_tokens[name] = token
        return got

    def _on_log_line(self, job: _Job, desc: dict, message: str) -> None:
        ids = {s.execution_id for s in job.specs}
        for raw in message.splitlines():
            if self._take_record(job, raw, ids):
                continue
            m = _PREFIXED.match(raw)
            if m and m.group(1) in ids:
                execution_id, line = m.group(1), m.group(2)
            elif len(job.specs) == 1:
                execution_id, line = job.specs[0].execution_id, raw
            else:
                continue
            job.tails.setdefault(execution_id, deque(maxlen=LOG_TAIL_LINES)).append(line)
            fields = parse_progress_line(line)
            if fields and execution_id not in job.closed and fields["step"] > job.last_step.get(execution_id, -1):
                job.last_step[execution_id] = fields["step"]
                start = _ts(desc.get("TrainingStartTime")) or job.started_at or self._clock()
                self._events.append(Progress(execution_id=execution_id, elapsed_s=max(0.0, self._clock() - start),
                                             **fields))

    def _take_record(self, job: _Job, raw: str, ids: set[str]) -> bool:
        """A result record (or a part of one, or the rest of a split part): kept, True."""
        if job.open_part is not None:
            eid, i, n, want, text = job.open_part
            job.open_part = None
            self._take_part(job, eid, i, n, want, text + raw)
            return True
        part = _RESULT_PART.match(raw)
        if part and part.group(1) in ids:
            self._take_part(job, part.group(1), int(part.group(2)), int(part.group(3)), int(part.group(4)),
                            part.group(5))
            return True
        rec = _RESULT_RECORD.match(raw)
        if rec and rec.group(1) in ids:
            try:
                job.log_results[rec.group(1)] = json.loads(rec.group(2))
            except ValueError:
                pass
            return True
        return False

    def _take_part(self, job: _Job, eid: str, i: int, n: int, want: int, text: str) -> None:
        """A part that says its length: kept once whole; until then open, the next event its rest."""
        if len(text) < want:
            job.open_part = (eid, i, n, want, text)
        else:
            self._add_part(job, eid, i, n, text[:want])

    @staticmethod
    def _add_part(job: _Job, eid: str, i: int, n: int, text: str) -> None:
        got = job.record_parts.setdefault(eid, {})
        got[i] = text
        if len(got) == n:
            try:
                job.log_results[eid] = json.loads("".join(got[k] for k in sorted(got)))
            except ValueError:
                pass
            job.record_parts.pop(eid, None)

    def _read_output(self, job: _Job, desc: dict) -> dict[str, dict]:
        """result.json per execution from <S3OutputPath>/<job>/output/output.tar.gz ({} if absent)."""
        if not (desc.get("OutputDataConfig") or {}).get("S3OutputPath"):
            desc = {**desc, "OutputDataConfig": {"S3OutputPath": req.job_layout(
                self.settings, self.run_tag or "adhoc", job.base).output_path}}
        return self._read_output_at(desc, job.name, [s.execution_id for s in job.specs])

    def _read_output_at(self, desc: dict, name: str, execution_ids: list[str]) -> dict[str, dict]:
        out_path = (desc.get("OutputDataConfig") or {}).get("S3OutputPath", "")
        bucket, prefix = req.split_s3_uri(out_path.rstrip("/") + f"/{name}/output/output.tar.gz")
        try:
            body = self._call("s3", "get_object", Bucket=bucket, Key=prefix)["Body"].read(_MAX_OUTPUT_BYTES)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
                return {}
            raise
        results: dict[str, dict] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
                for member in tar.getmembers():
                    parts = Path(member.name.lstrip("./")).parts
                    if len(parts) == 2 and parts[1] == "result.json" and member.isfile():
                        fh = tar.extractfile(member)
                        try:
                            data = json.loads(fh.read()) if fh else None
                        except ValueError:
                            data = _crash(f"unreadable result.json in {name}'s output")
                        if isinstance(data, dict):
                            results[parts[0]] = data
        except (tarfile.TarError, OSError, EOFError) as exc:
            return {eid: _crash(f"unreadable output.tar.gz of {name}: {exc}") for eid in execution_ids}
        return results


def _split(execution_ids: list[str], results: dict[str, dict]) -> dict[str, float]:
    """Each execution's part of a job's bill: its harness wall-seconds over all of theirs (the
    machine was theirs for that long); equal parts when any of them is unknown."""
    if not execution_ids:
        return {}
    walls = {}
    for eid in execution_ids:
        r = results.get(eid) or {}
        w = r.get("wall_seconds") if r.get("wall_seconds") is not None else r.get("total_seconds")
        walls[eid] = float(w) if isinstance(w, (int, float)) and w >= 0 else None
    total = sum(w for w in walls.values() if w is not None)
    if any(w is None for w in walls.values()) or total <= 0:
        return {eid: 1.0 / len(execution_ids) for eid in execution_ids}
    return {eid: w / total for eid, w in walls.items()}


def write_dry_run_requests(specs: list[ExecutionSpec], settings: AWSBackendSettings, *, run_tag: str,
                           run_id: str | None = None, image_uri: str | None = None) -> list[Path]:
    """`--dry-run`: write every CreateTrainingJob request next to its candidate; no AWS call."""
    runner = SageMakerRunner(settings, run_tag=run_tag, run_id=run_id, dry_run=True, image_uri=image_uri)
    for spec in specs:
        runner.submit(spec)
    runner.poll(0)
    return [spec.workspace / "create_training_job.json" for spec in specs]
