"""What a SageMaker run resolves from config: `preset: auto` means the remote hardware's preset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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


# ----- the serverless pipeline's config.yaml.example, as a migrating user brings it --------------------
SERVERLESS_EXAMPLE = Path(__file__).with_name("fixtures") / "serverless_config.yaml.example"


def serverless_project(tmp_path: Path, monkeypatch, bucket: str | None) -> Path:
    """A project whose config.yaml is the serverless pipeline's example (bucket "" as shipped,
    or filled in); its `profile: default` exists; AWS is a closed port."""
    import shutil
    sagemaker_project(tmp_path, monkeypatch)        # the environment; its config.yaml is replaced
    project = tmp_path / "proj"
    text = SERVERLESS_EXAMPLE.read_text()
    if bucket is not None:
        text = text.replace('bucket: ""', f"bucket: {bucket}")
    (project / "config.yaml").write_text(text)
    (tmp_path / "aws-config").write_text("[default]\nregion = ap-northeast-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    shutil.rmtree(project / "runs", ignore_errors=True)
    return project


def test_the_serverless_example_loads_and_every_key_takes_effect_or_says_why_not():
    from agent.config import load_settings
    s = load_settings(SERVERLESS_EXAMPLE)
    assert (s.run.generations, s.run.population) == (10, 10)
    assert s.strategy_mix == {"conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1}
    assert (s.aws.profile, s.aws.region, s.sagemaker.instance_type, s.sagemaker.max_run) == \
        ("default", "ap-northeast-1", "ml.p5.4xlarge", 900)
    notes = "\n".join(s.notes)
    for key, const in (("depth", "DEPTH"), ("device_batch_size", "DEVICE_BATCH_SIZE"),
                       ("total_batch_size", "TOTAL_BATCH_SIZE"), ("window_pattern", "WINDOW_PATTERN")):
        assert f"model_defaults.{key} is ignored" in notes and f"constant {const}" in notes
    assert "SageMaker default bucket sagemaker-<region>-<account>" in notes
    assert "serverless pipeline's data layout" in notes


def test_its_empty_bucket_is_the_sagemaker_default_bucket_and_its_data_layout_is_kept():
    from agent.config import load_settings
    from sandbox.runners import sagemaker_request as req
    s = load_settings(SERVERLESS_EXAMPLE).aws_backend
    req.resolve_default_bucket(s, "ap-northeast-1")          # the account comes from aws.role_arn
    assert s.s3.bucket == "sagemaker-ap-northeast-1-123456789012"
    assert req.data_channel_uris(s, "gpu") == {
        "data": "s3://sagemaker-ap-northeast-1-123456789012/autoresearch/data/",
        "tokenizer": "s3://sagemaker-ap-northeast-1-123456789012/autoresearch/tokenizer/"}
    assert req.data_channel_uris(s, "micro")["tokenizer"].endswith("/autoresearch/tokenizer/micro/")
    layout = req.job_layout(s, "exp", "ar-exp-0a1b2c3d-e1")
    assert layout.output_path.startswith("s3://sagemaker-ap-northeast-1-123456789012/autoresearch/output/exp/")


@pytest.mark.parametrize("bucket", [None, "my-autoresearch-bucket"], ids=["bucket-as-shipped", "bucket-filled-in"])
def test_a_dry_run_of_the_serverless_example_plans_ten_candidates_from_its_pipeline_keys(
        tmp_path, monkeypatch, capsys, bucket):
    from agent.loop import autopilot_command
    project = serverless_project(tmp_path, monkeypatch, bucket)
    code = autopilot_command(run="migrated", backend="sagemaker", proposer="heuristic", dry_run=True,
                             json_mode=True, project_dir=project)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    plans = [json.loads(line) for line in out.out.splitlines() if '"plan"' in line]
    candidates = [p for p in plans if p.get("kind") == "candidate"]
    assert len(candidates) == 10
    from collections import Counter

    from agent.config import load_settings
    from agent.proposing import strategy_slots
    mix = load_settings(project / "config.yaml").strategy_mix
    assert strategy_slots(mix, 10) == {"conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1}
    got = Counter(p["strategy"] for p in candidates)
    # generation 1 has no two results to cross yet: the heuristic proposer makes its crossover slot a moderate one
    assert (got["conservative"], got["aggressive"], got["moderate"] + got["crossover"]) == (3, 2, 5)
    assert "config: model_defaults.depth is ignored" in out.err
    requests = list((project / "runs" / "migrated").glob("generations/*/*/create_training_job.json"))
    assert requests
    want_bucket = bucket or "sagemaker-ap-northeast-1-123456789012"
    for path in requests:
        body = json.loads(path.read_text())
        assert body["ResourceConfig"]["InstanceType"] == "ml.p5.4xlarge"
        assert body["Environment"]["AUTORESEARCH_PRESET"] == "gpu"
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in body["InputDataConfig"]}
        assert channels == {"data": f"s3://{want_bucket}/autoresearch/data/",
                            "tokenizer": f"s3://{want_bucket}/autoresearch/tokenizer/"}
        assert body["StoppingCondition"]["MaxRuntimeInSeconds"] == 900


def test_the_prebuilt_image_brings_code_as_a_channel_and_runs_network_isolated(tmp_path):
    from agent.config import Settings
    from sandbox.runners import sagemaker_request as req
    from sandbox.runners.base import ExecutionSpec
    from sandbox.workspace import build_workspace
    from tests.strict_aws import validate_request

    project = Path(__file__).resolve().parents[1]
    ws = build_workspace(tmp_path / "w", (project / "train.py").read_text(), project, {"execution_id": "e1"})
    base = {"aws": {"region": "us-east-1", "role_arn": "arn:aws:iam::123456789012:role/r"}, "s3": {"bucket": "b"}}
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/autoresearch-training:v1"
    s = Settings.model_validate({**base, "sagemaker": {"image_uri": image, "prebuilt_image": True}})
    r = req.build_create_request([ExecutionSpec("e1", ws, "gpu")], s.aws_backend, run_tag="t", run_id="0a1b2c3d",
                                 region="us-east-1")
    assert r["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in r["InputDataConfig"]}
    assert channels["code"].endswith("/source/sourcedir.tar.gz")
    assert validate_request("sagemaker", "CreateTrainingJob", r) == []
    dlc = Settings.model_validate({**base, "sagemaker": {"image_uri": image}})
    r = req.build_create_request([ExecutionSpec("e1", ws, "gpu")], dlc.aws_backend, run_tag="t", run_id="0a1b2c3d",
                                 region="us-east-1")
    assert "EnableNetworkIsolation" not in r and "code" not in {c["ChannelName"] for c in r["InputDataConfig"]}


def test_isolation_without_the_prebuilt_image_is_one_setup_error_not_n_crashes():
    from pydantic import ValidationError

    from sandbox.runners.settings import SageMakerSettings
    with pytest.raises(ValidationError, match="network_isolation: true needs the pre-built image.*build-image"):
        SageMakerSettings(network_isolation=True)
