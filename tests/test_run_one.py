"""run-one and prepare: the real prepare.py / train.py at the micro preset, through LocalRunner."""
from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agent.run_one import RunOneError, load_prepare_module, prepare_data, run_one

pytest.register_assert_rewrite("tests.aws_fixtures")   # imported below before pytest loads it as a plugin
from tests.aws_fixtures import REGION  # noqa: E402

pytest_plugins = ("tests.aws_fixtures",)   # fixtures: aws_server, aws

REPO = Path(__file__).resolve().parents[1]


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=120, force_terminal=False)


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory) -> Path:
    """Micro data + tokenizer prepared once, with the project's real prepare.py."""
    cache = tmp_path_factory.mktemp("arcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_CACHE", str(cache))
        info = prepare_data("micro", project_dir=REPO, console=quiet_console())
    assert info["preset"] == "micro" and Path(info["tokenizer_dir"]).is_dir()
    return cache


@pytest.fixture
def use_cache(micro_cache, monkeypatch) -> Path:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(micro_cache))
    monkeypatch.delenv("AUTORESEARCH_TIME_BUDGET", raising=False)
    return micro_cache


def test_run_one_real_train_py_at_micro(use_cache, tmp_path):
    console = quiet_console()
    result = run_one(REPO / "train.py", preset="micro", project_dir=REPO, runs_dir=tmp_path / "runs",
                     threads=2, console=console)
    assert result["status"] == "ok", result["failure_reason"]
    assert math.isfinite(result["val_bpb"]) and 0 < result["val_bpb"] < 10
    assert result["num_steps"] > 0 and result["depth"] == 2 and result["preset"] == "micro"
    # the score is the one prepare's authenticated record carries, measured under version 2
    assert result["eval_record"]["val_bpb"] == result["val_bpb"] and result["measurement_version"] == 2
    assert result["eval_record"]["settings"]["budget"] == 4 and result["clock"] == "cpu"
    assert result["integrity"]["sandbox"]["level"] == "namespaces"   # root with CAP_SYS_ADMIN here
    result_path = Path(result["result_path"])
    assert json.loads(result_path.read_text())["val_bpb"] == result["val_bpb"]
    ws = result_path.parents[2]
    assert ws.parent == tmp_path / "runs" / "run-one"
    assert (ws / "train.py").read_text() == (REPO / "train.py").read_text()
    assert json.loads((ws / "candidate.json").read_text())["kind"] == "run-one"
    out = console.file.getvalue()
    assert "val_bpb" in out and str(result_path) in out


def test_run_one_reports_a_crashing_candidate(use_cache, tmp_path):
    bad = tmp_path / "bad_train.py"
    bad.write_text("from prepare import PRESET\nraise ValueError(f'broken on {PRESET}')\n")
    console = quiet_console()
    result = run_one(bad, preset="micro", project_dir=REPO, runs_dir=tmp_path / "runs", console=console)
    assert result["status"] == "crash"
    assert result["failure_reason"] == "train.py exited 1: ValueError: broken on micro"
    assert "crash" in console.file.getvalue()


def test_run_one_without_prepared_data_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "empty"))
    with pytest.raises(RunOneError, match=r"run `autoresearch prepare --preset micro` first"):
        run_one(REPO / "train.py", preset="micro", project_dir=REPO, runs_dir=tmp_path / "runs",
                console=quiet_console())
    assert not (tmp_path / "runs").exists()


def test_run_one_errors_for_missing_files(tmp_path):
    with pytest.raises(RunOneError, match="nope.py not found"):
        run_one(tmp_path / "nope.py", preset="micro", project_dir=REPO, console=quiet_console())
    (tmp_path / "train.py").write_text("x = 1\n")
    with pytest.raises(RunOneError, match="prepare.py not found"):
        run_one(tmp_path / "train.py", preset="micro", project_dir=tmp_path, console=quiet_console())


def test_prepare_is_idempotent_and_leaves_no_global_state(use_cache, monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_PRESET", raising=False)
    before = sys.modules.get("prepare")
    info = prepare_data("micro", project_dir=REPO, console=quiet_console())
    assert (info["data"], info["tokenizer"]) == ("cached", "cached")
    assert "AUTORESEARCH_PRESET" not in os.environ
    assert sys.modules.get("prepare") is before
    assert load_prepare_module(REPO, "micro").PRESET == "micro"


def test_prepare_rejects_unknown_preset():
    with pytest.raises(RunOneError, match="unknown preset 'huge'"):
        prepare_data("huge", project_dir=REPO, console=quiet_console())


def test_prepare_upload_puts_data_and_tokenizer_in_the_run_bucket(use_cache, aws):
    """`autoresearch prepare --upload`: the real upload against moto's S3 on 127.0.0.1."""
    import boto3
    from agent.aws_setup import aws_setup
    from agent.config import Settings
    settings = Settings.model_validate({"aws": {"region": REGION}, "s3": {"bucket": "ar-upload"}})
    aws_setup(settings, upload=False)                       # role + bucket
    info = prepare_data("micro", upload=True, project_dir=REPO, settings=settings, console=quiet_console())
    assert info["upload"] and "uploaded" in info["upload"][0]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="ar-upload")["Contents"]]
    assert any(k.endswith("micro/tokenizer/tokenizer.pkl") for k in keys)
    assert any("micro/data/" in k and k.endswith(".parquet") for k in keys)
    again = prepare_data("micro", upload=True, project_dir=REPO, settings=settings, console=quiet_console())
    assert "uploaded 0 files" in again["upload"][0]          # idempotent: unchanged files are skipped


def test_prepare_upload_without_settings_is_a_clear_error(use_cache):
    with pytest.raises(RunOneError, match="needs the AWS settings"):
        prepare_data("micro", upload=True, project_dir=REPO, console=quiet_console())
