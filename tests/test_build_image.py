"""`autoresearch aws build-image` as far as this machine allows: ECR against the local AWS (strict
layer on), docker replaced by a recording stand-in (no daemon and no registry here), the
Dockerfile checked statically, and the image's entry point run on a real code channel."""
from __future__ import annotations

import io
import json
import re
import stat
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

pytest.register_assert_rewrite("tests.aws_fixtures")

from agent.build_image import DOCKERFILE, build_image  # noqa: E402
from agent.config import Settings  # noqa: E402
from sandbox.runners import image_entry  # noqa: E402
from sandbox.runners.aws_clients import AWSConfigError  # noqa: E402
from tests.aws_fixtures import REGION  # noqa: E402

pytest_plugins = ("tests.aws_fixtures",)

BASE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312-cu129-ubuntu22.04-sagemaker"


def settings() -> Settings:
    return Settings.model_validate({"aws": {"region": REGION, "role_arn": "arn:aws:iam::123456789012:role/r"},
                                    "s3": {"bucket": "b"}})


def fake_docker(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path]:
    log = tmp_path / "docker.log"
    script = tmp_path / "docker"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"stdin = sys.stdin.read() if '--password-stdin' in sys.argv else ''\n"
                      f"open({str(log)!r}, 'a').write(json.dumps([sys.argv[1:], bool(stdin)]) + '\\n')\n"
                      f"sys.exit({exit_code})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def test_build_image_creates_the_repository_logs_in_builds_and_pushes(aws, tmp_path):
    docker, log = fake_docker(tmp_path)
    lines = build_image(settings(), tag="v1", base_image=BASE, docker=docker)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    logins = [argv for argv, had_stdin in calls if argv[0] == "login"]
    assert len(logins) == 2 and all(had for argv, had in calls if argv[0] == "login")   # passwords via stdin
    assert not any("password" in a.lower() and "stdin" not in a for argv, _ in calls for a in argv)
    build = next(argv for argv, _ in calls if argv[0] == "build")
    image = re.search(r"pushed (\S+);", lines[-1]).group(1)
    assert f"BASE_IMAGE={BASE}" in build and build[build.index("-t") + 1] == image
    assert calls[-1][0] == ["push", image]
    assert image.endswith("/autoresearch-training:v1") and "sagemaker.image_uri: " + image in lines[-1]
    repos = boto3.client("ecr", region_name=REGION, endpoint_url=aws.url).describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == ["autoresearch-training"]
    assert repos[0]["imageScanningConfiguration"]["scanOnPush"] is True
    build_image(settings(), tag="v1", base_image=BASE, docker=docker)      # idempotent: the repository is reused
    assert len(aws.calls_of("ecr.CreateRepository")) == 1


def test_without_docker_the_repository_is_made_and_the_commands_are_named(aws, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(AWSConfigError, match=r"docker is not installed here: the repository .*autoresearch-training"
                                             r" is ready.*docker build --build-arg BASE_IMAGE=763104351884"):
        build_image(settings(), base_image=BASE)
    assert len(aws.calls_of("ecr.CreateRepository")) == 1


def test_a_failed_docker_step_is_one_clear_error(aws, tmp_path):
    docker, _ = fake_docker(tmp_path, exit_code=3)
    with pytest.raises(AWSConfigError, match=r"`.*docker login --username ...` failed \(exit 3\)"):
        build_image(settings(), base_image=BASE, docker=docker)


def test_the_dockerfile_builds_from_the_dlc_and_installs_no_orchestrator_pins():
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "ARG BASE_IMAGE" and instructions[1] == "FROM ${BASE_IMAGE}"
    assert 'ENTRYPOINT ["python", "/opt/autoresearch/image_entry.py"]' in instructions
    pip = " ".join(line for line in instructions if "pip install" in line or line.startswith("    "))
    assert "numpy" not in pip.split("import")[0] and "torch" not in pip.split("import")[0]
    assert not re.search(r"==", pip) and "rustbpe" not in pip and "requests" not in pip
    from sandbox.workspace import _JOB_RANGES      # the same ranges a job without the image installs
    assert all(f'"{d}{_JOB_RANGES[d]}"' in pip for d in ("pyarrow", "tiktoken"))


def test_image_entry_unpacks_the_code_channel_and_runs_sm_entry(tmp_path):
    channel, code = tmp_path / "input" / "code", tmp_path / "code"
    channel.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = f"open({str(tmp_path / 'ran')!r}, 'w').write('yes')\n".encode()
        info = tarfile.TarInfo("sm_entry.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (channel / "sourcedir.tar.gz").write_bytes(buf.getvalue())
    assert image_entry.main(channel, code) == 0 and (tmp_path / "ran").read_text() == "yes"


def test_image_entry_without_a_tarball_fails_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(image_entry, "FAILURE", tmp_path / "failure")
    (tmp_path / "empty").mkdir()
    assert image_entry.main(tmp_path / "empty", tmp_path / "code") == 1
    assert "expected one sourcedir .tar.gz" in (tmp_path / "failure").read_text()


def test_doctor_checks_the_prebuilt_image_is_in_ecr(aws, tmp_path):
    from agent.aws_setup import doctor
    s = settings()
    uri = boto3.client("ecr", region_name=REGION, endpoint_url=aws.url).create_repository(
        repositoryName="autoresearch-training")["repository"]["repositoryUri"] + ":v1"
    s.sagemaker.image_uri, s.sagemaker.prebuilt_image = uri, True
    image = {c.name: c for c in doctor(s)}["image"]
    assert image.ok is False and "ImageNotFoundException" in image.detail and "build-image" in image.fix
    boto3.client("ecr", region_name=REGION, endpoint_url=aws.url).put_image(
        repositoryName="autoresearch-training", imageTag="v1", imageManifest=json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "config": {"digest": "sha256:" + "0" * 64, "size": 1, "mediaType": "x"}, "layers": []}))
    image = {c.name: c for c in doctor(s)}["image"]
    assert image.ok is True and "pre-built, in ECR" in image.detail
