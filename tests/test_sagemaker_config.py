"""What a SageMaker run resolves from config: `preset: auto` means the remote hardware's preset."""
from __future__ import annotations

import json
from pathlib import Path

from agent.run_context import resolve_preset
from tests.conftest import ScriptedProposer, make_project, open_ctx


def sagemaker_project(tmp_path: Path, monkeypatch, extra: str = "") -> Path:
    """A stand-in project for the sagemaker backend; AWS is a closed port on 127.0.0.1, so any
    AWS call fails loudly."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    project = make_project(tmp_path / "proj")
    with open(project / "config.yaml", "a") as fh:
        fh.write("aws:\n  region: us-east-1\n  role_arn: arn:aws:iam::123456789012:role/x\n"
                 "s3:\n  bucket: my-bucket\n"
                 "sagemaker:\n  image_uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/pt:2.8\n" + extra)
    return project


def test_auto_preset_is_the_remote_hardwares(monkeypatch):
    import sandbox.runners.local as local
    monkeypatch.setattr(local, "visible_gpus", lambda: [])        # a laptop without a GPU
    assert resolve_preset("auto") == "cpu"
    assert resolve_preset("auto", "sagemaker", "ml.g5.xlarge") == "gpu"
    assert resolve_preset("auto", "sagemaker", "ml.p5.48xlarge") == "gpu"
    assert resolve_preset("auto", "sagemaker", "ml.m5.xlarge") == "cpu"
    assert resolve_preset("micro", "sagemaker", "ml.g5.xlarge") == "micro"


def test_auto_preset_with_the_sagemaker_backend_sends_no_cpu_preset_or_cpu_data(tmp_path, monkeypatch):
    import sandbox.runners.local as local
    monkeypatch.setattr(local, "visible_gpus", lambda: [])
    project = sagemaker_project(tmp_path, monkeypatch)
    ctx = open_ctx(project, proposer=ScriptedProposer({}), dry_run=True, backend="sagemaker", preset="auto")
    try:
        assert ctx.preset == "gpu"
        from agent.dry_run import dry_run_plan
        assert dry_run_plan(ctx, population=1) == 0
        requests = list(ctx.run_dir.glob("generations/*/*/create_training_job.json"))
        assert requests
        for path in requests:
            body = json.loads(path.read_text())
            assert body["Environment"]["AUTORESEARCH_PRESET"] == "gpu"
            uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in body["InputDataConfig"]]
            assert uris and all("/gpu/" in u and "/cpu/" not in u for u in uris)
    finally:
        ctx.close()
