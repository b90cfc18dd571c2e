"""boto3 sessions and clients built from the aws section, and the retry policy for AWS calls.

One place decides how we reach AWS so that the runner, `aws setup` and `doctor` agree:
the standard credential chain (env, profile, SSO, instance role), `aws.profile`, `aws.region`,
and an endpoint override (`aws.endpoint_url`, or `AWS_ENDPOINT_URL`, which boto3 reads itself).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError, EndpointConnectionError, NoCredentialsError,
                                 NoRegionError, PartialCredentialsError, ReadTimeoutError)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from sandbox.runners.settings import AWSBackendSettings
from sandbox.runners.base import BackendError

# Error codes that mean "slow down" or "try again": never a verdict on the request itself.
THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "RequestThrottled",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown",
    "ProvisionedThroughputExceededException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure", "InternalServerError", "InternalError",
})


class AWSConfigError(BackendError, ValueError):
    """Settings or environment that cannot reach AWS; the message names the fix."""


# Error codes that say the account, credentials or bucket are wrong: the same for every request.
SETUP_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidAccessKeyId",
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "NoSuchBucket",
})


def as_setup_error(exc: BaseException, what: str) -> AWSConfigError | None:
    """The AWSConfigError to raise instead of `exc` when it means "AWS is not set up or not
    reachable" (after retries), else None (the caller handles the error itself)."""
    fix = "run `autoresearch doctor` to see what is missing"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AWSConfigError(f"{what}: no usable AWS credentials ({exc}); run `aws configure` (or "
                              f"`aws sso login`), or set aws.profile in config.yaml")
    if isinstance(exc, NoRegionError):
        return AWSConfigError(f"{what}: no AWS region; set aws.region in config.yaml; {fix}")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return AWSConfigError(f"{what}: AWS unreachable after retries ({exc}); check the network or "
                              f"AWS_ENDPOINT_URL / aws.endpoint_url; {fix}")
    if error_code(exc) in SETUP_CODES:
        return AWSConfigError(f"{what}: {error_code(exc)}: {error_message(exc)}; "
                              f"`autoresearch aws setup` creates the bucket and role; {fix}")
    return None


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, connection errors and any HTTP 5xx (botocore's own retries are off here, and
    a 5xx says the service failed, not that the request was wrong)."""
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and 500 <= status <= 599:
            return True
    return error_code(exc) in THROTTLE_CODES


def make_session(settings: AWSBackendSettings) -> boto3.Session:
    aws = settings.aws
    return boto3.Session(profile_name=aws.profile or None, region_name=aws.region or None)


def region_of(settings: AWSBackendSettings, session: boto3.Session | None = None) -> str:
    """The region from config, else the credential chain's (env, profile); a clear error if none."""
    region = settings.aws.region or (session.region_name if session else None) \
        or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise AWSConfigError("no AWS region: set aws.region in config.yaml (or AWS_REGION / a profile region)")
    return region


def make_client(session: boto3.Session, service: str, settings: AWSBackendSettings, *, region: str | None = None) -> Any:
    """A client with botocore's own retries off: throttling is retried by `call_with_retry`
    (jittered, bounded, visible in tests), so one throttle is not retried twice over."""
    kwargs: dict[str, Any] = {
        "region_name": region or region_of(settings, session),
        "config": Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60),
    }
    if settings.aws.endpoint_url:
        kwargs["endpoint_url"] = settings.aws.endpoint_url
    return session.client(service, **kwargs)


def call_with_retry(fn: Callable[..., Any], *args: Any, attempts: int = 8, backoff_s: float = 1.0,
                    sleep: Callable[[float], None] | None = None, **kwargs: Any) -> Any:
    """Call an AWS API, backing off with full jitter on throttling and connection errors."""
    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        wait=wait_random_exponential(multiplier=backoff_s, max=30.0),
        stop=stop_after_attempt(max(1, attempts)),
        reraise=True,
        **({"sleep": sleep} if sleep else {}),
    )
    return retrying(fn, *args, **kwargs)
