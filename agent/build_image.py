"""`autoresearch aws build-image`: build docker/Dockerfile FROM the PyTorch training DLC and push
it to this account's ECR, for `sagemaker.image_uri`.

Steps: the ECR repository (created once, scan on push), the DLC base image resolved for the
configured region/framework/instance (sagemaker_request.resolve_image_uri), `docker login` to
both registries (the DLC's is AWS's account, ours is this one), `docker build`, `docker push`.
ECR calls go through the same clients and retries as `aws setup`; docker runs as a subprocess
and is required only for the last three steps, so a machine without docker still gets the
repository and the exact commands to run elsewhere.
"""
from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from agent.aws_setup import _call, _clients
from agent.config import Settings
from sandbox.runners import sagemaker_request as req
from sandbox.runners.aws_clients import AWSConfigError, error_code

DOCKERFILE = Path(__file__).resolve().parents[1] / "docker" / "Dockerfile"
IMAGE_ENTRY = Path(__file__).resolve().parents[1] / "sandbox" / "runners" / "image_entry.py"
DEFAULT_REPOSITORY = "autoresearch-training"


def ensure_repository(ecr: Any, name: str) -> str:
    """The repository's URI, creating it (scan on push) when missing."""
    try:
        repo = _call(ecr, "describe_repositories", repositoryNames=[name])["repositories"][0]
    except ClientError as exc:
        if error_code(exc) != "RepositoryNotFoundException":
            raise
        repo = _call(ecr, "create_repository", repositoryName=name, imageTagMutability="MUTABLE",
                     imageScanningConfiguration={"scanOnPush": True})["repository"]
    return repo["repositoryUri"]


def _logins(ecr: Any, registries: list[str]) -> list[tuple[str, str, str]]:
    """(endpoint, user, password) for each registry account id."""
    data = _call(ecr, "get_authorization_token", registryIds=registries)["authorizationData"]
    out = []
    for item in data:
        user, _, password = base64.b64decode(item["authorizationToken"]).decode().partition(":")
        out.append((item["proxyEndpoint"].removeprefix("https://"), user, password))
    return out


def build_image(settings: Settings, *, tag: str = "latest", repository: str = DEFAULT_REPOSITORY,
                base_image: str | None = None, docker: str | None = None,
                run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """Build and push; returns what was done, the last line naming the sagemaker.image_uri to set."""
    _, region, client = _clients(settings)
    ecr = client("ecr")
    repo_uri = ensure_repository(ecr, repository)
    image = f"{repo_uri}:{tag}"
    if base_image is None:
        dlc = settings.sagemaker.model_copy(update={"image_uri": None})
        base_image = req.resolve_image_uri(req.AWSBackendSettings(aws=settings.aws, s3=settings.s3, sagemaker=dlc),
                                           region)
    lines = [f"ECR repository {repo_uri}", f"base image {base_image}"]
    docker = docker or shutil.which("docker")
    build = ["docker", "build", "--build-arg", f"BASE_IMAGE={base_image}", "-t", image, "-f", str(DOCKERFILE),
             str(DOCKERFILE.parent)]
    if docker is None:
        raise AWSConfigError(
            f"docker is not installed here: the repository {repo_uri} is ready; on a machine with docker, log in to "
            f"ECR for {base_image.split('/')[0]} and {repo_uri.split('/')[0]}, copy {IMAGE_ENTRY} next to "
            f"{DOCKERFILE}, then run: {' '.join(build)} && docker push {image}; then set sagemaker.image_uri: {image}")
    registries = sorted({base_image.split(".")[0], repo_uri.split(".")[0]})
    with tempfile.TemporaryDirectory(prefix="autoresearch-image-") as tmp:
        context = Path(tmp)
        shutil.copy(DOCKERFILE, context / "Dockerfile")
        shutil.copy(IMAGE_ENTRY, context / "image_entry.py")
        for endpoint, user, password in _logins(ecr, registries):
            _run(run, [docker, "login", "--username", user, "--password-stdin", endpoint], password)
            lines.append(f"logged in to {endpoint}")
        _run(run, [docker, "build", "--build-arg", f"BASE_IMAGE={base_image}", "-t", image,
                   "-f", str(context / "Dockerfile"), str(context)])
        lines.append(f"built {image}")
        _run(run, [docker, "push", image])
    lines.append(f"pushed {image}; set in config.yaml -> sagemaker.image_uri: {image} and "
                 "sagemaker.prebuilt_image: true (jobs then run network-isolated)")
    return lines


def _run(run: Callable[..., subprocess.CompletedProcess], argv: list[str], stdin: str | None = None) -> None:
    proc = run(argv, input=stdin, text=True, capture_output=True)
    if proc.returncode != 0:
        # the password goes through stdin, never argv, so argv can be shown
        raise AWSConfigError(f"`{' '.join(argv[:3])} ...` failed (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout or '').strip()[-600:]}")
