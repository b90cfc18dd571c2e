"""The SageMaker training quota that caps how many of our jobs can run at once.

Service Quotas answers in two places: ListServiceQuotas lists *applied* values only (a quota
nobody ever raised is not listed at all), and ListAWSDefaultServiceQuotas lists the AWS default
of every quota. New accounts usually have a spot-training quota of 0 for GPU instances, which is
not listed by the first call, so reading only that one says "unknown" exactly when it matters.
So: the applied value, else the AWS default; the quota is found by its name (the code, L-xxxx,
differs per instance type and is only learnt from these listings).

The runner uses the answer once, before its first job: 0 stops the run with the quota's name,
code, region and the command that requests an increase; a positive value caps the concurrent
jobs; an unreadable one (no permission, no such API at the endpoint) leaves the cap at
`sagemaker.max_concurrent_jobs` and ResourceLimitExceeded is handled as a wait.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from sandbox.runners.aws_clients import AWSConfigError, error_code, error_message

SERVICE_CODE = "sagemaker"
APPLIED, DEFAULT, UNKNOWN = "applied", "default", "unknown"


def quota_name(instance_type: str, spot: bool) -> str:
    """The Service Quotas name, e.g. "ml.g5.xlarge for spot training job usage"."""
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


@dataclass(frozen=True)
class Quota:
    name: str
    region: str
    value: float | None = None
    code: str | None = None
    source: str = UNKNOWN          # applied | default | unknown
    note: str = ""                 # why unknown

    def increase_command(self, desired: int) -> str:
        return (f"aws service-quotas request-service-quota-increase --service-code {SERVICE_CODE} "
                f"--quota-code {self.code or '<code>'} --desired-value {desired} --region {self.region}")

    def describe(self) -> str:
        if self.value is None:
            return f"{self.name} in {self.region}: unknown ({self.note})"
        return f"{self.name} ({self.code}) in {self.region} = {self.value:g} ({self.source} value)"


class QuotaZeroError(AWSConfigError):
    """The account may run no job of this kind in this region: waiting would never end."""


def _find(call: Callable[..., Any], operation: str, name: str) -> dict | None:
    kwargs: dict[str, Any] = {"ServiceCode": SERVICE_CODE, "MaxResults": 100}
    while True:
        page = call("service-quotas", operation, **kwargs)
        found = next((q for q in page.get("Quotas", []) if q.get("QuotaName") == name), None)
        if found is not None or not page.get("NextToken"):
            return found
        kwargs["NextToken"] = page["NextToken"]


def lookup(call: Callable[..., Any], instance_type: str, spot: bool, region: str) -> Quota:
    """`call(service, operation, **kwargs)` makes the AWS call (with the caller's retries)."""
    name = quota_name(instance_type, spot)
    try:
        applied = _find(call, "list_service_quotas", name)
        if applied is not None and applied.get("Value") is not None:
            return Quota(name, region, float(applied["Value"]), applied.get("QuotaCode"), APPLIED)
        default = _find(call, "list_aws_default_service_quotas", name)
    except ClientError as exc:
        return Quota(name, region, note=f"{error_code(exc) or 'error'}: {error_message(exc)[:160]}")
    except BotoCoreError as exc:
        return Quota(name, region, note=str(exc)[:160])
    if default is None or default.get("Value") is None:
        return Quota(name, region, note="not listed by Service Quotas for this account and region")
    return Quota(name, region, float(default["Value"]), default.get("QuotaCode"), DEFAULT)


def require_positive(quota: Quota, desired: int) -> None:
    """`desired`: the value to ask for (sagemaker.max_concurrent_jobs)."""
    if quota.value is not None and quota.value < 1:
        raise QuotaZeroError(
            f"{quota.name} is {quota.value:g} in {quota.region} ({quota.source} value): no training job can start; "
            f"request an increase of {quota.name} ({quota.code}) in {quota.region}: {quota.increase_command(desired)} "
            f"(or use another sagemaker.instance_type, or sagemaker.use_spot: false)")
