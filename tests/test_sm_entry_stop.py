"""Early stop of one candidate inside a packed SageMaker job: the runner writes the candidate's
marker to S3 and the job's entry script copies it to that candidate's --stop-file. Against the
local AWS (real boto3), with the entry script's own watcher."""
from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

pytest.register_assert_rewrite("tests.aws_fixtures")   # imported below before pytest loads it as a plugin

from sandbox.runners import sm_entry  # noqa: E402
from tests.aws_fixtures import REGION  # noqa: E402

pytest_plugins = ("tests.aws_fixtures",)   # fixtures: aws_server, aws

BUCKET = "run-bucket"
URI = f"s3://{BUCKET}/runs/demo/stop/e00007.json"


def watch(stop_file, done, uri=URI):
    lines = []
    original = sm_entry.say
    sm_entry.say = lambda execution_id, line: lines.append(line)
    try:
        thread = threading.Thread(target=sm_entry.watch_stop_marker,
                                  args=("e00007", uri, str(stop_file), done, 0.05))
        thread.start()
        return thread, lines, lambda: setattr(sm_entry, "say", original)
    except Exception:
        sm_entry.say = original
        raise


def test_the_marker_reaches_the_stop_file_once_the_runner_writes_it(aws, tmp_path):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    stop_file = tmp_path / "stop" / "e00007.json"
    done = threading.Event()
    thread, lines, restore = watch(stop_file, done)
    try:
        time.sleep(0.3)
        assert not stop_file.exists()                     # no marker: the candidate trains on
        s3.put_object(Bucket=BUCKET, Key="runs/demo/stop/e00007.json", Body=json.dumps({"reason": "losing"}).encode())
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert json.loads(stop_file.read_text()) == {"reason": "losing"}
        assert any("stop marker received" in line for line in lines)
    finally:
        done.set()
        restore()


def test_the_watcher_ends_with_its_candidate_and_writes_nothing(aws, tmp_path):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    stop_file = tmp_path / "e00007.json"
    done = threading.Event()
    thread, lines, restore = watch(stop_file, done)
    try:
        time.sleep(0.2)
        done.set()
        thread.join(timeout=10)
        assert not thread.is_alive() and not stop_file.exists() and lines == []
    finally:
        restore()


def test_an_unreachable_s3_is_said_once_and_the_candidate_trains_on(tmp_path, monkeypatch):
    # network isolation: no route to S3 (a closed local port stands for it)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    stop_file = tmp_path / "e00007.json"
    done = threading.Event()
    thread, lines, restore = watch(stop_file, done)
    try:
        thread.join(timeout=60)
        assert not thread.is_alive() and not stop_file.exists()
        assert len(lines) == 1 and "early stop unavailable" in lines[0] and URI in lines[0]
    finally:
        done.set()
        restore()
