"""What a SageMaker training job for some candidates looks like: names, S3 layout, the packed
source, and the CreateTrainingJob request. Pure functions, no AWS call: the runner uses them to
submit, and `--dry-run` uses them to write the request JSON next to each candidate.

The job runs the same harness as local runs. The source tarball holds `sm_entry.py` (a stdlib
launcher), `manifest.json` and one folder per candidate (its workspace). The PyTorch training
image's toolkit downloads the tarball (`sagemaker_submit_directory`), installs `requirements.txt`
and runs `sm_entry.py` (`sagemaker_program`), which runs each candidate's `harness.py` and puts
each result.json under /opt/ml/output/data/<execution_id>/, i.e. in the job's output.tar.gz.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from sandbox.runners.settings import AWSBackendSettings
from sandbox.runners.aws_clients import AWSConfigError
from sandbox.runners.base import ExecutionSpec

ENTRY_SCRIPT = Path(__file__).with_name("sm_entry.py")
ENTRY_NAME = "sm_entry.py"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The stdlib modules sm_entry.py imports to run the early-stop rule in a network-isolated job,
# packed at the tarball's root beside it (its folder is on sys.path when it runs).
JOB_MODULES = ("sandbox/__init__.py", "sandbox/early_stop_rule.py", "sandbox/progress.py",
               "sandbox/runners/__init__.py", "sandbox/runners/base.py")
CACHE_DIR_IN_JOB = "/tmp/autoresearch-cache"   # sm_entry.py links the channels in here
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
CHANNELS = ("data", "tokenizer")
# Files a workspace may hold that the job must not carry (outputs of earlier local runs: their
# logs, results, per-execution folders and scratch folders).
SKIP_NAMES = frozenset({"run.log", "result.json", "create_training_job.json", "__pycache__", ".harness",
                        "sourcedir.tar.gz", "executions", "scratch", "stop.json", "harness.out"})

# The summary lines train.py prints (`val_bpb:          0.997900`); SageMaker scrapes them from the
# log for its console and CloudWatch metrics. The runner itself reads result.json, never these.
METRIC_DEFINITIONS = [
    {"Name": "val_bpb", "Regex": r"val_bpb:\s+([0-9]+\.?[0-9]*)"},
    {"Name": "peak_vram_mb", "Regex": r"peak_vram_mb:\s+([0-9]+\.?[0-9]*)"},
    {"Name": "mfu_percent", "Regex": r"mfu_percent:\s+([0-9]+\.?[0-9]*)"},
    {"Name": "training_seconds", "Regex": r"training_seconds:\s+([0-9]+\.?[0-9]*)"},
    {"Name": "train_loss", "Regex": r"\|\s*loss:\s+([0-9]+\.?[0-9]*)"},
]

# GPUs per instance for the multi-GPU instances we know; the entry script also asks the machine.
INSTANCE_GPUS = {
    "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8,
    "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4, "ml.g6e.48xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8,
}
# StoppingCondition documentation: "The maximum value is 28 days" for MaxRuntimeInSeconds (and a
# spot job's MaxWaitTimeInSeconds, which must be >= it, is held to the same cap here).
MAX_RUNTIME_CAP_S = 28 * 24 * 3600
HYPERPARAMETER_MAX = 256   # CreateTrainingJob documentation: each hyperparameter value <= 256 characters
RUN_FOLDER_MAX = 40        # the run's S3 folder name; longer tags are cut and given a short hash

_SECRET_KEY = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|SESSION)",
                         re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"(\bA(KIA|SIA)[A-Z0-9]{16}\b|\bsk-ant-[A-Za-z0-9_-]{8,}|\bsk-[A-Za-z0-9]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abpr]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)")


@dataclass(frozen=True)
class JobLayout:
    """Where one job's things live in S3."""

    source_uri: str        # s3://.../sourcedir.tar.gz
    output_path: str       # S3OutputPath; SageMaker adds <job-name>/output/{model,output}.tar.gz
    checkpoint_uri: str | None
    # s3://.../stop/: <execution_id>.json here asks that candidate to stop early. None when the
    # job is network-isolated and cannot read S3: its candidates then carry the rule itself.
    stop_prefix: str | None

    def stop_uri(self, execution_id: str) -> str | None:
        """Where the runner writes one candidate's early-stop marker (the early_stop reason as
        JSON); the job's entry script polls it and hands it to that candidate's harness as its
        --stop-file, so only that candidate of a packed job stops. None: no marker can reach it."""
        return None if self.stop_prefix is None else f"{self.stop_prefix}{slug(execution_id)}.json"


def slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-") or "x"


RUN_ID_TAG = "run-id"          # the tag that proves a job is this run's (see SageMakerRunner._owned)
EXECUTION_TAG = "execution"


def job_base_name(run_tag: str, run_id: str, first_execution_id: str) -> str:
    """Stable per packed job, so a resumed orchestrator finds the same names again; the run id
    (base.new_run_id, kept in the run's memory) makes it unique to this run: tags that slug alike
    (`exp_1`, `exp-1`, `EXP.1`) or one tag re-used in another folder get other names. Training jobs
    can never be deleted, so a shared name would be a permanent collision."""
    if not re.fullmatch(r"[a-z0-9]{1,16}", run_id or ""):
        raise ValueError(f"run id {run_id!r}: expected 1-16 lowercase letters or digits")
    base = f"ar-{slug(run_tag)}-{run_id}-{slug(first_execution_id)}"
    if len(base) > 56:   # leave room for "-aNN"; keep it unique with a short hash of the whole
        digest = hashlib.sha1(base.encode()).hexdigest()[:8]
        base = f"{base[:47].rstrip('-')}-{digest}"
    return base


def job_name(base: str, attempt: int) -> str:
    return f"{base}-a{attempt}"


def split_job_name(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+)-a(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, 1)


def s3_prefixes(settings: AWSBackendSettings) -> tuple[str, str]:
    """(data prefix, runs prefix) inside the bucket, honouring the serverless pipeline's keys."""
    s3 = settings.s3
    root = s3.prefix.strip("/")
    data = (s3.data_prefix or f"{root}/data").strip("/")
    runs = (s3.output_prefix or f"{root}/runs").strip("/")
    return data, runs


def require_bucket(settings: AWSBackendSettings) -> str:
    if settings.s3.bucket == "":
        raise AWSConfigError("s3.bucket is empty (the SageMaker default bucket, sagemaker-<region>-<account>) and the "
                             "account is unknown: set aws.role_arn (its account is used) or s3.bucket in config.yaml")
    if not settings.s3.bucket:
        raise AWSConfigError("s3.bucket is not set: set it in config.yaml, then run `autoresearch aws setup`")
    return settings.s3.bucket


def account_of_role(role_arn: str | None) -> str | None:
    m = re.fullmatch(r"arn:aws[a-z-]*:iam::(\d{12}):role/.+", role_arn or "")
    return m.group(1) if m else None


def resolve_default_bucket(settings: AWSBackendSettings, region: str, account: str | None = None) -> None:
    """s3.bucket "" means the SageMaker default bucket, as the SageMaker SDK names it:
    sagemaker-<region>-<account> (account: given, else aws.role_arn's). Sets s3.bucket."""
    if settings.s3.bucket != "":
        return
    account = account or account_of_role(settings.aws.role_arn)
    if account:
        settings.s3.bucket = f"sagemaker-{region}-{account}"


def data_channel_uris(settings: AWSBackendSettings, preset: str) -> dict[str, str]:
    """S3 prefixes of the data channels, which `autoresearch prepare --upload` fills. Two layouts:
      * ours: <data prefix>/<preset>/{data,tokenizer}/;
      * the serverless pipeline's (s3.tokenizer_prefix set): the gpu preset's files straight under
        <data_prefix>/ and <tokenizer_prefix>/, other presets in a <preset>/ folder under each."""
    bucket = require_bucket(settings)
    data_prefix, _ = s3_prefixes(settings)
    tok = settings.s3.tokenizer_prefix
    if tok:
        sub = "" if preset == "gpu" else f"{preset}/"
        return {"data": f"s3://{bucket}/{data_prefix}/{sub}", "tokenizer": f"s3://{bucket}/{tok.strip('/')}/{sub}"}
    return {name: f"s3://{bucket}/{data_prefix}/{preset}/{name}/" for name in CHANNELS}


def run_folder(run_tag: str) -> str:
    """The run's folder in S3: its slug, cut with a hash when long so that the source URI (a
    hyperparameter, at most 256 characters) stays short whatever the tag."""
    name = slug(run_tag)
    if len(name) > RUN_FOLDER_MAX:
        name = f"{name[:RUN_FOLDER_MAX - 9].rstrip('-')}-{hashlib.sha1(run_tag.encode()).hexdigest()[:8]}"
    return name


def job_layout(settings: AWSBackendSettings, run_tag: str, base: str) -> JobLayout:
    bucket = require_bucket(settings)
    _, runs_prefix = s3_prefixes(settings)
    root = f"s3://{bucket}/{runs_prefix}/{run_folder(run_tag)}/{base}"
    ckpt = settings.sagemaker.checkpoint_s3_uri
    return JobLayout(
        source_uri=f"{root}/source/sourcedir.tar.gz",
        output_path=f"{root}/output",
        checkpoint_uri=f"{ckpt.rstrip('/')}/{run_folder(run_tag)}/{base}/" if ckpt else None,
        stop_prefix=None if settings.sagemaker.isolated else f"{root}/stop/",
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    m = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not m:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return m.group(1), m.group(2)


def assert_no_secrets(mapping: dict[str, str], where: str) -> None:
    """Jobs get only non-secret variables: their Environment is visible to anyone who can
    describe the job. Refuse names or values that look like credentials."""
    for key, value in mapping.items():
        if _SECRET_KEY.search(key) or _SECRET_VALUE.search(str(value)):
            raise ValueError(f"{where}: refusing to send {key!r} to SageMaker: it looks like a secret "
                             "(job environments are readable by anyone who can describe the job)")


def resolve_image_uri(settings: AWSBackendSettings, region: str) -> str:
    """The training image: `sagemaker.image_uri` when set (a pre-built image), else the PyTorch
    DLC resolved offline by the `sagemaker` package (bundled JSON tables, no network)."""
    sm = settings.sagemaker
    if sm.image_uri:
        return sm.image_uri
    try:
        from sagemaker.core import image_uris  # sagemaker >= 3
    except ImportError:
        try:
            from sagemaker import image_uris  # type: ignore[no-redef]  # sagemaker 2.x
        except ImportError:
            raise AWSConfigError(
                "sagemaker.image_uri is not set and the `sagemaker` package is not installed to resolve the "
                "PyTorch training image: run `pip install 'autoresearch-at-scale[aws]'` or set "
                "sagemaker.image_uri in config.yaml") from None
    try:
        return image_uris.retrieve(framework="pytorch", region=region, version=sm.framework_version,
                                   instance_type=sm.instance_type, image_scope="training",
                                   py_version=sm.py_version)
    except Exception as exc:  # the package raises ValueError for unknown versions/regions
        raise AWSConfigError(
            f"cannot resolve the PyTorch {sm.framework_version} ({sm.py_version}) training image for "
            f"{sm.instance_type} in {region}: {exc}; set sagemaker.framework_version or sagemaker.image_uri") from None


def gpus_per_instance(instance_type: str) -> int:
    return INSTANCE_GPUS.get(instance_type, 1)


def job_environment(specs: Sequence[ExecutionSpec]) -> dict[str, str]:
    """Variables every candidate of the job shares; per-candidate ones go in the manifest."""
    env = {"AUTORESEARCH_PRESET": specs[0].preset, "AUTORESEARCH_CACHE": CACHE_DIR_IN_JOB,
           "PYTHONUNBUFFERED": "1"}
    shared = set.intersection(*(set(s.env.items()) for s in specs)) if specs else set()
    env.update(dict(sorted(shared)))
    return env


def manifest_for(specs: Sequence[ExecutionSpec], layout: JobLayout | None = None) -> dict:
    """What sm_entry.py runs; with the job's layout, how each candidate can be stopped early: its
    `stop_uri` (a marker in S3 the job polls), or, when the job cannot read S3 (network isolation)
    and the candidate is watched, its `stop_rule` (the rule and the incumbent's reference curves,
    which sm_entry.py applies to the candidate's progress lines itself)."""
    presets = {s.preset for s in specs}
    if len(presets) != 1:
        raise ValueError(f"one job runs one preset; got {sorted(presets)}")

    def stopping(spec: ExecutionSpec) -> dict:
        if layout is None:
            return {}
        uri = layout.stop_uri(spec.execution_id)
        if uri is not None:
            return {"stop_uri": uri}
        return {"stop_rule": spec.stop_rule} if spec.stop_rule else {}

    return {
        "preset": specs[0].preset,
        "candidates": [{"execution_id": s.execution_id, "dir": f"candidates/{slug(s.execution_id)}",
                        "timeout_s": s.timeout_s, "env": dict(s.env), "label": s.label, **stopping(s)}
                       for s in specs],
    }


def _workspace_files(workspace: Path) -> Iterable[Path]:
    for path in sorted(workspace.rglob("*")):
        rel = path.relative_to(workspace)
        if any(part in SKIP_NAMES or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            yield path


def check_workspace(spec: ExecutionSpec) -> None:
    missing = [name for name in ("train.py", "harness.py", "prepare.py") if not (spec.workspace / name).is_file()]
    if missing:
        raise ValueError(f"workspace {spec.workspace} of execution {spec.execution_id} lacks {', '.join(missing)} "
                         "(build it with sandbox.workspace.build_workspace)")


def pack_source(specs: Sequence[ExecutionSpec], layout: JobLayout | None = None) -> bytes:
    """sourcedir.tar.gz for one job; deterministic (sorted, fixed mtimes) so a re-upload is identical."""
    manifest = manifest_for(specs, layout)

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        add_bytes(tar, ENTRY_NAME, ENTRY_SCRIPT.read_bytes())
        for module in JOB_MODULES:          # what sm_entry.py imports to apply a stop_rule
            add_bytes(tar, module, (PROJECT_ROOT / module).read_bytes())
        add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
        # The toolkit pip-installs the root requirements.txt; candidates cannot add dependencies,
        # so the first workspace's list is every workspace's list.
        req = specs[0].workspace / "requirements.txt"
        if req.is_file():
            add_bytes(tar, "requirements.txt", req.read_bytes())
        for spec, entry in zip(specs, manifest["candidates"]):
            check_workspace(spec)
            for path in _workspace_files(spec.workspace):
                add_bytes(tar, f"{entry['dir']}/{path.relative_to(spec.workspace).as_posix()}", path.read_bytes())
    return buf.getvalue()


def stopping_condition(settings: AWSBackendSettings, n_candidates: int, spot: bool | None = None) -> dict[str, int]:
    """Candidates run one after another per GPU, so a job of n gets ceil(n/gpus) x the per-job limits."""
    sm = settings.sagemaker
    spot = sm.use_spot if spot is None else spot
    rounds = -(-n_candidates // gpus_per_instance(sm.instance_type))
    max_run = min(sm.max_run * rounds, MAX_RUNTIME_CAP_S)
    cond = {"MaxRuntimeInSeconds": max_run}
    if spot:
        cond["MaxWaitTimeInSeconds"] = max(max_run, min(sm.max_wait + sm.max_run * (rounds - 1), MAX_RUNTIME_CAP_S))
    return cond


def build_create_request(specs: Sequence[ExecutionSpec], settings: AWSBackendSettings, *, run_tag: str, run_id: str,
                         region: str, attempt: int = 1, image_uri: str | None = None,
                         role_arn: str | None = None, on_demand: bool = False) -> dict:
    """The CreateTrainingJob request for one job running `specs` (one or several candidates).

    Pure: no AWS call. `image_uri`/`role_arn` default to the resolved image and `aws.role_arn`.
    """
    if not specs:
        raise ValueError("a job needs at least one execution")
    sm = settings.sagemaker
    role = role_arn or settings.aws.role_arn
    if not role:
        raise AWSConfigError("aws.role_arn is not set: run `autoresearch aws setup` (it prints the role ARN) "
                             "and put it in config.yaml under aws.role_arn")
    base = job_base_name(run_tag, run_id, specs[0].execution_id)
    name = job_name(base, attempt)
    layout = job_layout(settings, run_tag, base)
    env = job_environment(specs)
    assert_no_secrets(env, f"Environment of job {name}")
    for spec in specs:
        assert_no_secrets(spec.env, f"env of execution {spec.execution_id}")
    hyper = {
        # The PyTorch image's toolkit reads these (JSON-encoded, as the SageMaker SDK writes them).
        "sagemaker_program": json.dumps(ENTRY_NAME),
        "sagemaker_submit_directory": json.dumps(layout.source_uri),
        "sagemaker_region": json.dumps(region),
        "sagemaker_container_log_level": "20",
    }
    for key, value in hyper.items():
        if len(value) > HYPERPARAMETER_MAX:
            raise AWSConfigError(
                f"hyperparameter {key} of job {name} is {len(value)} characters ({value}); CreateTrainingJob allows "
                f"{HYPERPARAMETER_MAX}: shorten s3.bucket, s3.prefix or s3.output_prefix in config.yaml")
    channels = data_channel_uris(settings, specs[0].preset)
    if sm.prebuilt_image:
        # the image's entry (image_entry.py) unpacks this: SageMaker copies it in before start,
        # so the container itself needs no network
        channels["code"] = layout.source_uri
    request: dict = {
        "TrainingJobName": name,
        "RoleArn": role,
        "AlgorithmSpecification": {
            "TrainingImage": image_uri or resolve_image_uri(settings, region),
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(m) for m in METRIC_DEFINITIONS],
        },
        "HyperParameters": hyper,
        "InputDataConfig": [
            {"ChannelName": ch, "InputMode": "File",
             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                             "S3DataDistributionType": "FullyReplicated"}}}
            for ch, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": layout.output_path},
        "ResourceConfig": {"InstanceType": sm.instance_type, "InstanceCount": 1, "VolumeSizeInGB": sm.volume_size_gb},
        # on_demand: the spot fallback's attempt (sagemaker.spot_fallback_minutes)
        "StoppingCondition": stopping_condition(settings, len(specs), spot=sm.use_spot and not on_demand),
        "EnableManagedSpotTraining": bool(sm.use_spot and not on_demand),
        "Environment": env,
        "Tags": job_tags(specs, run_tag, run_id),
    }
    if layout.checkpoint_uri:
        request["CheckpointConfig"] = {"S3Uri": layout.checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH}
    if sm.subnets or sm.security_group_ids:
        if not (sm.subnets and sm.security_group_ids):
            raise AWSConfigError("sagemaker.subnets and sagemaker.security_group_ids must be set together for a VPC job")
        request["VpcConfig"] = {"Subnets": list(sm.subnets), "SecurityGroupIds": list(sm.security_group_ids)}
    if sm.isolated:
        request["EnableNetworkIsolation"] = True
    return request


# Tag values must match `[\p{L}\p{Z}\p{N}_.:/=+\-@]*` (botocore's TagValue shape): no comma, so the
# ids of a packed job are joined with a space, and any other character becomes "_".
TAG_SEPARATOR = " "
TAG_VALUE_MAX = 256


def tag_value(text: str) -> str:
    """`text` with every character TagValue refuses replaced by "_" (str.isalnum is Unicode letters
    and numbers, the pattern's \\p{L}\\p{N}; of \\p{Z} only the ASCII space is kept)."""
    return "".join(ch if (ch.isalnum() or ch in " _.:/=+-@") else "_" for ch in text)


def joined_tag(values: Sequence[str]) -> str:
    """Distinct values joined by TAG_SEPARATOR, cut at a whole value so none is half kept."""
    out = ""
    for value in dict.fromkeys(tag_value(v) for v in values if v):
        candidate = f"{out}{TAG_SEPARATOR}{value}" if out else value
        if len(candidate) > TAG_VALUE_MAX:
            break
        out = candidate
    return out


def job_tags(specs: Sequence[ExecutionSpec], run_tag: str, run_id: str) -> list[dict[str, str]]:
    tags = {"run": tag_value(run_tag)[:TAG_VALUE_MAX], RUN_ID_TAG: run_id,
            "generation": joined_tag([s.tags.get("generation", "") for s in specs]),
            "candidate": joined_tag([s.tags.get("candidate", "") for s in specs]),
            EXECUTION_TAG: joined_tag([s.execution_id for s in specs]), "tool": "autoresearch"}
    return [{"Key": k, "Value": v} for k, v in tags.items() if v]


def proves_ownership(tags: dict[str, str], *, run_tag: str, run_id: str, base: str) -> bool:
    """Whether a job's tags say it is this run's job `base`: the run id matches, and the first id
    in its `execution` tag (the one its name is made from) gives that very name. A name alone
    proves nothing (see job_base_name)."""
    if tags.get(RUN_ID_TAG) != run_id:
        return False
    first = tags.get(EXECUTION_TAG, "").split(TAG_SEPARATOR)[0]
    return bool(first) and job_base_name(run_tag, run_id, first) == base
