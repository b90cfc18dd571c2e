"""The config sections the runners read, one pydantic model per backend (`local:`, `aws:`, `s3:`,
`sagemaker:` in config.yaml).

They live here, not in agent/config.py, so that sandbox/runners/ never imports from agent/: each
runner is built from its own section by the one factory (sandbox/runners/__init__.py), and
agent/config.py composes these sections into the whole Settings. Unknown keys are errors, as
everywhere in config.yaml.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """One config.yaml section: a typo is an error, never a silent default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LocalSettings(Section):
    slots: int = Field(0, ge=0)                # 0 = one per visible GPU, else cores // threads_per_slot
    threads_per_slot: int = Field(0, ge=0)     # 0 = cores // slots (at least 1)
    startup_allowance_s: float = Field(120.0, gt=0)  # harness timeout = budget + this + eval allowance


class AWSSettings(Section):
    profile: Optional[str] = None
    region: Optional[str] = None
    role_arn: Optional[str] = None
    role_name: str = "autoresearch-sagemaker"
    endpoint_url: Optional[str] = None         # AWS_ENDPOINT_URL is honoured too


class S3Settings(Section):
    # "" (the serverless pipeline's "leave empty"): the SageMaker default bucket,
    # sagemaker-<region>-<account>, resolved when the account is known (sagemaker_request)
    bucket: Optional[str] = None
    prefix: str = "autoresearch"
    data_prefix: Optional[str] = None          # default <prefix>/data; see data_channel_uris for the layouts
    # serverless pipeline key: with it, the pipeline's flat layout -- the gpu preset's data files
    # straight under data_prefix, its tokenizer under tokenizer_prefix (as its prepare_s3.py uploaded them)
    tokenizer_prefix: Optional[str] = None
    output_prefix: Optional[str] = None        # serverless pipeline key; default <prefix>/runs


@lru_cache(maxsize=1)
def training_instance_types() -> tuple[str, ...]:
    """The values CreateTrainingJob accepts for ResourceConfig.InstanceType: the enum of botocore's
    shipped SageMaker model (the same list AWS validates against; newer types arrive with botocore)."""
    import botocore.session
    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(model.shape_for("TrainingInstanceType").enum)


class SageMakerSettings(Section):
    instance_type: str = "ml.g5.xlarge"
    use_spot: bool = True
    max_run: int = Field(1800, ge=60)          # MaxRuntimeInSeconds per job
    max_wait: int = Field(3600, ge=60)         # MaxWaitTimeInSeconds, >= max_run for spot
    image_uri: Optional[str] = None            # pre-built image; else resolved offline from the version
    framework_version: str = "2.8.0"
    py_version: str = "py312"
    max_concurrent_jobs: int = Field(4, ge=1)
    candidates_per_job: int = Field(1, ge=1)
    volume_size_gb: int = Field(50, ge=1)
    checkpoint_s3_uri: Optional[str] = None
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    # image_uri is the image `autoresearch aws build-image` made (docker/Dockerfile): jobs get their
    # code as the `code` input channel and install nothing at start, so they can run isolated
    prebuilt_image: bool = False
    # None: on with the pre-built image (candidate code then cannot reach AWS or the internet), off
    # without it (the toolkit downloads the code and pip-installs over the network)
    network_isolation: Optional[bool] = None
    max_spot_requeues: int = Field(3, ge=0)
    transient_retries: int = Field(1, ge=0)    # re-runs after e.g. "CUDA error: unknown error"
    # polling adapts between these bounds: fast after a change, slower while nothing moves
    poll_min_s: float = Field(10.0, ge=0)
    poll_max_s: float = Field(60.0, ge=0)
    search_above_jobs: int = Field(8, ge=1)    # more running jobs than this: one Search call, not N Describes
    quota_retry_s: float = Field(120.0, ge=0)  # wait after ResourceLimitExceeded before trying again
    # refused for capacity this long (other jobs hold the account's quota): not_admitted, with the reason
    quota_wait_minutes: float = Field(60.0, ge=0)
    starting_notice_s: float = Field(600.0, ge=0)   # a job still Starting: a notice this often (0: never)
    # opt-in: a spot job still Starting (no capacity) after this many minutes is stopped and its
    # candidates re-submitted on-demand (dearer, but it starts); null: wait up to max_wait
    spot_fallback_minutes: Optional[float] = Field(None, gt=0)
    api_max_attempts: int = Field(8, ge=1)     # throttled AWS calls are retried this often (jittered backoff)
    api_backoff_s: float = Field(1.0, ge=0)    # first backoff step; grows exponentially up to 30 s
    # estimates only (agent/ledger.py): start-up per job, and billable/training for spot jobs
    startup_estimate_s: float = Field(180.0, ge=0)
    spot_billable_fraction: float = Field(0.35, gt=0, le=1)

    @field_validator("instance_type")
    @classmethod
    def _known_instance_type(cls, value: str) -> str:
        known = training_instance_types()
        if value not in known:
            close = [t for t in known if t.split(".")[1:2] == value.split(".")[1:2]][:8] \
                or [t for t in known if t.startswith("ml.g")][:8]
            raise ValueError(f"sagemaker.instance_type {value!r} is not a SageMaker training instance type "
                             f"(botocore's TrainingInstanceType: {len(known)} types, e.g. {', '.join(close)}); "
                             "upgrade boto3 if the type is new")
        return value

    @property
    def isolated(self) -> bool:
        return self.prebuilt_image if self.network_isolation is None else self.network_isolation

    @model_validator(mode="after")
    def _wait_covers_run(self):
        if self.prebuilt_image and not self.image_uri:
            raise ValueError("sagemaker.prebuilt_image needs sagemaker.image_uri (run `autoresearch aws build-image`)")
        if self.network_isolation and not self.prebuilt_image:
            raise ValueError("sagemaker.network_isolation: true needs the pre-built image: without it every job "
                             "downloads its code from S3 and pip-installs requirements.txt, which isolation forbids "
                             "(every candidate would crash); run `autoresearch aws build-image` and set "
                             "sagemaker.image_uri and sagemaker.prebuilt_image: true")
        if self.use_spot and self.max_wait < self.max_run:
            raise ValueError(f"max_wait ({self.max_wait}) must be >= max_run ({self.max_run}) for spot jobs")
        if self.poll_max_s < self.poll_min_s:
            raise ValueError(f"poll_max_s ({self.poll_max_s}) must be >= poll_min_s ({self.poll_min_s})")
        return self


class AWSBackendSettings(Section):
    """What the SageMaker backend (and `aws setup` / `doctor`) read: the aws, s3 and sagemaker
    sections together. The same section objects as the run's Settings, not copies, so a role ARN
    the runner looks up is seen by everyone."""

    aws: AWSSettings = Field(default_factory=AWSSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    sagemaker: SageMakerSettings = Field(default_factory=SageMakerSettings)
