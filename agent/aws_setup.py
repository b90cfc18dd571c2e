"""`autoresearch aws setup`, `autoresearch prepare --upload` and `autoresearch doctor`.

setup is idempotent: it reuses what exists (role, bucket, objects already uploaded with the same
content) and says what it did, one line per thing. doctor changes nothing: one pass/fail line per
check, each failure with the command that fixes it; a check it cannot make (an API the endpoint
does not offer, a permission we lack) says "could not check" instead of failing the rest.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from agent.config import Settings
from sandbox.runners import sagemaker_quota
from sandbox.runners import sagemaker_request as req
from sandbox.runners.aws_clients import (
    AWSConfigError, as_setup_error, call_with_retry, error_code, error_message, make_client, make_session,
    region_of,
)
from sandbox.runners.sagemaker import LOG_GROUP

SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}
POLICY_NAME = "autoresearch-least-privilege"


@dataclass
class Check:
    name: str
    ok: bool | None          # None: could not check (not a failure, not a pass)
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        text = f"{mark}  {self.name}: {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.fix and self.ok is not True else "")


def cache_root() -> Path:
    return Path(os.environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch")


def _clients(settings: Settings) -> tuple[Any, str, Callable[[str], Any]]:
    session = make_session(settings)
    region = region_of(settings, session)
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = make_client(session, service, settings, region=region)
        return made[service]

    if settings.s3.bucket == "":     # the SageMaker default bucket: sagemaker-<region>-<account>
        account = req.account_of_role(settings.aws.role_arn)
        if account is None:
            try:
                account = _call(client("sts"), "get_caller_identity")["Account"]
            except (ClientError, AWSConfigError):
                account = None    # the credentials check says why; require_bucket names the fix
        req.resolve_default_bucket(settings.aws_backend, region, account)
    return session, region, client


def _call(client: Any, op: str, **kwargs: Any) -> Any:
    try:
        return call_with_retry(getattr(client, op), attempts=5, backoff_s=0.5, **kwargs)
    except BotoCoreError as exc:
        # no credentials / region / endpoint: one message with the fix (the runner does the same);
        # ClientErrors stay as they are, the set-up steps tell "missing" from "refused" themselves
        setup = as_setup_error(exc, f"{client.meta.service_model.service_name} {op}")
        if setup is None:
            raise
        raise setup from None


def role_policy(settings: Settings, account: str, region: str) -> dict:
    """Least privilege for a training job: read the data, read/write the run prefix, write its
    logs, pull the training image. Nothing else."""
    bucket = req.require_bucket(settings)
    data_prefix, runs_prefix = req.s3_prefixes(settings)
    # the serverless layout keeps the tokenizer under its own prefix: the job reads it too
    read = [data_prefix] + ([settings.s3.tokenizer_prefix.strip("/")] if settings.s3.tokenizer_prefix else [])
    statements = [
        {"Sid": "ListRunBucket", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [f"{p}/*" for p in read] + [f"{runs_prefix}/*"]}}},
        {"Sid": "ReadData", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{p}/*" for p in read]},
        {"Sid": "ReadWriteRuns", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:aws:s3:::{bucket}/{runs_prefix}/*"},
        {"Sid": "TrainingLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [f"arn:aws:logs:{region}:{account}:log-group:{LOG_GROUP}",
                      f"arn:aws:logs:{region}:{account}:log-group:{LOG_GROUP}:*"]},
        {"Sid": "Metrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
         "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}},
        {"Sid": "PullImageToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Sid": "PullImage", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
         "Resource": "arn:aws:ecr:*:*:repository/*"},
    ]
    ckpt = settings.sagemaker.checkpoint_s3_uri
    if ckpt:
        cb, cp = req.split_s3_uri(ckpt.rstrip("/") + "/")
        statements.append({"Sid": "Checkpoints", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                           "Resource": f"arn:aws:s3:::{cb}/{cp}*"})
    if settings.sagemaker.subnets:
        statements.append({"Sid": "VpcJobs", "Effect": "Allow", "Resource": "*", "Action": [
            "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
            "ec2:DeleteNetworkInterfacePermission", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs",
            "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]})
    return {"Version": "2012-10-17", "Statement": statements}


def _ensure_role(settings: Settings, iam: Any, account: str, region: str) -> tuple[str, str]:
    name = settings.aws.role_name
    if settings.aws.role_arn:
        name = settings.aws.role_arn.rsplit("/", 1)[-1]
    try:
        arn = _call(iam, "get_role", RoleName=name)["Role"]["Arn"]
        verb = "reused"
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        arn = _call(iam, "create_role", RoleName=name, AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST),
                    Description="autoresearch SageMaker training jobs (least privilege)")["Role"]["Arn"]
        verb = "created"
    # put_role_policy replaces the inline policy: running setup again brings it up to date
    _call(iam, "put_role_policy", RoleName=name, PolicyName=POLICY_NAME,
          PolicyDocument=json.dumps(role_policy(settings, account, region)))
    return arn, f"{verb} role {arn} (inline policy {POLICY_NAME}: run bucket/prefixes, training logs, image pull)"


def _ensure_bucket(settings: Settings, s3: Any, region: str) -> str:
    bucket = req.require_bucket(settings)
    try:
        _call(s3, "head_bucket", Bucket=bucket)
        return f"reused bucket s3://{bucket}"
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise AWSConfigError(f"bucket s3://{bucket} exists but is not usable ({error_code(exc)}: "
                                 f"{error_message(exc)}): pick another s3.bucket") from None
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    _call(s3, "create_bucket", **kwargs)
    try:
        _call(s3, "put_public_access_block", Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    except ClientError:
        pass   # new buckets block public access by default anyway
    return f"created bucket s3://{bucket} in {region}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def upload_prepared(settings: Settings, preset: str, *, cache_dir: Path | None = None) -> list[str]:
    """Upload <cache>/<preset>/{data,tokenizer} to s3://<bucket>/<data prefix>/<preset>/{data,tokenizer}/.
    Objects whose sha256 (kept in their metadata) matches are skipped, so re-running is cheap."""
    root = (cache_dir or cache_root()) / preset
    missing = [name for name in req.CHANNELS if not (root / name).is_dir() or not any((root / name).iterdir())]
    if missing:
        raise AWSConfigError(f"no prepared {', '.join(missing)} for preset {preset!r} under {root}: "
                             f"run `autoresearch prepare --preset {preset}` first")
    _, _, client = _clients(settings)
    s3 = client("s3")
    uploaded = skipped = 0
    total_bytes = 0
    for channel, uri in req.data_channel_uris(settings, preset).items():
        bucket, prefix = req.split_s3_uri(uri)
        for path in sorted(p for p in (root / channel).rglob("*") if p.is_file() and not p.name.startswith(".")):
            key = prefix + path.relative_to(root / channel).as_posix()
            digest = _sha256(path)
            try:
                head = _call(s3, "head_object", Bucket=bucket, Key=key)
                if head.get("Metadata", {}).get("sha256") == digest:
                    skipped += 1
                    continue
            except ClientError as exc:
                if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
            s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
            uploaded += 1
            total_bytes += path.stat().st_size
    base = req.data_channel_uris(settings, preset)["data"].rsplit("/data/", 1)[0]
    return [f"uploaded {uploaded} files ({total_bytes / 1e6:.1f} MB) for preset {preset} to {base}/, "
            f"{skipped} unchanged skipped"]


def aws_setup(settings: Settings, preset: str | None = None, upload: bool = True) -> list[str]:
    """Create or reuse the execution role and the bucket; upload the prepared data for `preset`.
    Returns one line per action. Raises AWSConfigError with the fix for missing prerequisites."""
    _, region, client = _clients(settings)
    try:
        account = _call(client("sts"), "get_caller_identity")["Account"]
    except (NoCredentialsError, ClientError) as exc:
        raise AWSConfigError(f"no usable AWS credentials ({exc}): run `aws configure` (or `aws sso login`), "
                             "or set aws.profile in config.yaml") from None
    lines = [f"account {account}, region {region}"]
    arn, line = _ensure_role(settings, client("iam"), account, region)
    lines.append(line)
    lines.append(_ensure_bucket(settings, client("s3"), region))
    if not settings.aws.role_arn:
        lines.append(f"set aws.role_arn: {arn} in config.yaml (the runner also finds it by name)")
    if upload and preset:
        lines += upload_prepared(settings, preset)
    return lines


# ----- doctor ------------------------------------------------------------------------------------
def _guard(name: str, fn: Callable[[], Check], fix: str) -> Check:
    try:
        return fn()
    except AWSConfigError as exc:
        return Check(name, False, str(exc), fix)
    except NoCredentialsError:
        return Check(name, False, "no AWS credentials", "run `aws configure` (or `aws sso login`), or set aws.profile")
    except ClientError as exc:
        code = error_code(exc)
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return Check(name, None, f"could not check: {code}: {error_message(exc)}", fix)
        return Check(name, False, f"{code}: {error_message(exc)}", fix)
    except BotoCoreError as exc:
        return Check(name, None, f"could not check: {exc}", fix)


def spot_quota_name(instance_type: str, spot: bool = True) -> str:
    return sagemaker_quota.quota_name(instance_type, spot)


def _quota_check(settings: Settings, client: Callable[[str], Any]) -> Check:
    """The applied quota, else the AWS default (a never-raised quota is not listed as applied:
    reading only that said SKIP for exactly the new accounts whose GPU spot quota is 0)."""
    sm = settings.sagemaker
    name = "spot quota" if sm.use_spot else "quota"
    q = sagemaker_quota.lookup(lambda service, op, **kw: _call(client(service), op, **kw), sm.instance_type,
                               sm.use_spot, region_of(settings, make_session(settings)))
    if q.value is None:
        return Check(name, None, f"could not check {q.name!r}: {q.note}",
                     "see Service Quotas -> Amazon SageMaker in the AWS console")
    want = max(1, sm.max_concurrent_jobs)
    fix = q.increase_command(want)
    if q.value < 1:
        return Check(name, False, f"{q.name} = 0 ({q.source} value): no job can start; request an increase of "
                                  f"{q.name} ({q.code}) in {q.region}", fix)
    if q.value < want:
        return Check(name, True, f"{q.name} = {q.value:g} (< sagemaker.max_concurrent_jobs {want}: at most "
                                 f"{q.value:g} jobs at once)", fix)
    return Check(name, True, f"{q.name} = {q.value:g}" + ("" if q.source == "applied" else f" ({q.source} value)"))


def _isolation_check(settings: Settings) -> Check:
    """What candidate code inside a job can reach, said plainly."""
    sm = settings.sagemaker
    if sm.isolated:
        return Check("isolation", True, "jobs run network-isolated with the pre-built image: candidate code cannot "
                                        "reach AWS or the internet")
    return Check("isolation", None,
                 "jobs are NOT network-isolated: candidate code inside a job can use the execution role's credentials "
                 "(through the container's credential endpoint, not only environment variables) to read or overwrite "
                 "other jobs' objects under the run bucket's prefixes and write training logs, and can reach the "
                 "internet",
                 "run `autoresearch aws build-image`, then set sagemaker.image_uri and sagemaker.prebuilt_image: true")


def doctor(settings: Settings, preset: str | None = None) -> list[Check]:
    """Everything a SageMaker run needs, one Check each, in the order a user would fix them."""
    checks: list[Check] = []
    from agent.run_context import resolve_preset   # "auto": the preset of the instance type, as a run resolves it
    preset = preset or resolve_preset(settings.run.preset, "sagemaker", settings.sagemaker.instance_type)
    try:
        _, region, client = _clients(settings)
        checks.append(Check("region", True, region))
    except AWSConfigError as exc:
        return [Check("region", False, str(exc), "set aws.region in config.yaml (or AWS_REGION)")]
    except BotoCoreError as exc:   # e.g. a profile name that does not exist
        return [Check("credentials", False, str(exc), "fix aws.profile in config.yaml or run `aws configure`")]
    account: dict[str, str] = {}

    def creds() -> Check:
        ident = _call(client("sts"), "get_caller_identity")
        account["id"] = ident["Account"]
        return Check("credentials", True, f"account {ident['Account']} as {ident['Arn']}")

    cred = _guard("credentials", creds, "run `aws configure` (or `aws sso login`), or set aws.profile in config.yaml")
    if cred.ok is None and not account:
        cred = Check("credentials", False, cred.detail.replace("could not check: ", ""), cred.fix)
    checks.append(cred)
    if not cred.ok:
        return checks   # every other check would fail the same way

    def role() -> Check:
        name = settings.aws.role_arn.rsplit("/", 1)[-1] if settings.aws.role_arn else settings.aws.role_name
        r = _call(client("iam"), "get_role", RoleName=name)["Role"]
        trust = r.get("AssumeRolePolicyDocument")
        trust_txt = json.dumps(trust) if not isinstance(trust, str) else trust
        if "sagemaker.amazonaws.com" not in trust_txt:
            return Check("role", False, f"{r['Arn']} cannot be assumed by SageMaker", "run `autoresearch aws setup`")
        if not settings.aws.role_arn:
            return Check("role", True, f"{r['Arn']} (found by name; set aws.role_arn to pin it)")
        return Check("role", True, r["Arn"])

    def role_or_missing() -> Check:
        try:
            return role()
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return Check("role", False, f"role {settings.aws.role_arn or settings.aws.role_name} does not exist",
                             "run `autoresearch aws setup`")
            raise

    checks.append(_guard("role", role_or_missing, "run `autoresearch aws setup`"))

    def bucket() -> Check:
        b = req.require_bucket(settings)
        try:
            _call(client("s3"), "head_bucket", Bucket=b)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return Check("bucket", False, f"s3://{b} does not exist", "run `autoresearch aws setup`")
            raise
        return Check("bucket", True, f"s3://{b}")

    bucket_check = _guard("bucket", bucket, "set s3.bucket in config.yaml, then run `autoresearch aws setup`")
    checks.append(bucket_check)

    def data() -> Check:
        counts = {}
        for channel, uri in req.data_channel_uris(settings, preset).items():
            b, prefix = req.split_s3_uri(uri)
            counts[channel] = _call(client("s3"), "list_objects_v2", Bucket=b, Prefix=prefix, MaxKeys=1000).get("KeyCount", 0)
        empty = [c for c, n in counts.items() if not n]
        fix = f"autoresearch prepare --preset {preset} --upload"
        if empty:
            return Check("data", False, f"no {' or '.join(empty)} for preset {preset} in S3", fix)
        return Check("data", True, f"preset {preset}: {counts['data']} data files, {counts['tokenizer']} tokenizer files")

    if bucket_check.ok:
        checks.append(_guard("data", data, f"autoresearch prepare --preset {preset} --upload"))
    else:
        checks.append(Check("data", False, "no bucket to look in", "run `autoresearch aws setup` first"))
    checks.append(_quota_check(settings, client))
    checks.append(_isolation_check(settings))

    def image() -> Check:
        uri = req.resolve_image_uri(settings, region)
        m = re.fullmatch(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)[:@](.+)", uri)
        if not settings.sagemaker.prebuilt_image or m is None:
            return Check("image", True, uri)
        # the pre-built image must exist where jobs pull it from (`autoresearch aws build-image` pushes it)
        account, _, repo, ref = m.groups()
        ident = {"imageDigest": ref} if ref.startswith("sha256:") else {"imageTag": ref}
        try:
            _call(client("ecr"), "describe_images", registryId=account, repositoryName=repo, imageIds=[ident])
        except ClientError as exc:
            if error_code(exc) in ("RepositoryNotFoundException", "ImageNotFoundException"):
                return Check("image", False, f"{uri}: {error_code(exc)}", "run `autoresearch aws build-image`")
            raise
        return Check("image", True, f"{uri} (pre-built, in ECR)")

    checks.append(_guard("image", image, "pip install 'autoresearch-at-scale[aws]' or set sagemaker.image_uri"))
    return checks


def doctor_report(checks: list[Check]) -> tuple[str, bool]:
    """Text for the terminal and whether everything needed passed (SKIP lines do not fail)."""
    return "\n".join(c.line() for c in checks), all(c.ok is not False for c in checks)
