"""Preflight: the real train.py (and broken variants of it) for a few steps at the micro preset,
through the real harness, on data prepared once per session by the real prepare.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.check import check_source
from sandbox.preflight import SKIPPED_NO_DATA, micro_data_ready, preflight

ROOT = Path(__file__).resolve().parents[1]
BASELINE = (ROOT / "train.py").read_text()


def edit(old: str, new: str, source: str = BASELINE) -> str:
    assert source.count(old) == 1, f"anchor {old!r} is not in train.py exactly once"
    return source.replace(old, new)


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("preflight-cache")
    subprocess.run([sys.executable, "prepare.py", "--preset", "micro"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300, env={**os.environ, "AUTORESEARCH_CACHE": str(cache)})
    return cache


@pytest.mark.timeout(120)
def test_a_good_variant_passes(micro_cache):
    source = edit("F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))")
    result = preflight(source, ROOT, cache_dir=micro_cache)
    assert result.ok and not result.skipped, result
    assert result.reason.startswith("passed: ") and "val_bpb" in result.reason
    assert "val_bpb:" in result.log_tail and "step 00000" in result.log_tail
    assert 0 < result.seconds < 120


@pytest.mark.timeout(120)
def test_a_shape_error_fails_with_the_tracebacks_last_line(micro_cache):
    # head_dim and n_head swapped in the query reshape: the element count still fits, the shapes do not
    source = edit("q = self.c_q(x).view(B, T, self.n_head, self.head_dim)",
                  "q = self.c_q(x).view(B, T, self.head_dim, self.n_head)")
    assert check_source(source, BASELINE) == []   # nothing a static check can object to
    result = preflight(source, ROOT, cache_dir=micro_cache)
    assert not result.ok and not result.skipped
    last_line = [line for line in result.log_tail.splitlines() if line.strip()][-1].strip()
    assert last_line.startswith("RuntimeError")
    assert result.reason.startswith("crash: ") and last_line in result.reason


@pytest.mark.timeout(120)
def test_a_made_up_score_is_caught_by_the_harness_record(micro_cache):
    """The static checker cannot tell a printed constant from a computed value; the evaluator
    record can, and the preflight runs the same harness that the cloud runs."""
    source = edit('print(f"val_bpb:          {val_bpb:.6f}")', 'print(f"val_bpb:          {0.5:.6f}")')
    assert check_source(source, BASELINE) == []
    result = preflight(source, ROOT, cache_dir=micro_cache)
    assert not result.ok
    assert result.reason.startswith("integrity: printed val_bpb 0.500000")


@pytest.mark.timeout(120)
def test_a_hanging_candidate_times_out(micro_cache):
    source = edit("    t_start = time.time()\n", "    t_start = time.time()\n    time.sleep(600)\n")
    result = preflight(source, ROOT, cache_dir=micro_cache, timeout=3)
    assert not result.ok and result.reason.startswith("timeout: timed out: ")
    assert result.seconds < 30


def test_no_micro_data_is_an_explicit_skip(tmp_path):
    result = preflight(BASELINE, ROOT, cache_dir=tmp_path / "empty-cache")
    assert result.ok and result.skipped and result.reason == SKIPPED_NO_DATA
    assert result.log_tail == ""


def test_micro_data_ready_follows_the_environment_and_wants_every_file(micro_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(micro_cache))
    assert micro_data_ready()
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    assert not micro_data_ready()
    # a complete copy is ready; without the val shard or the tokenizer it is not
    copy = tmp_path / "copy"
    for path in (micro_cache / "micro").rglob("*"):
        if path.is_file():
            target = copy / "micro" / path.relative_to(micro_cache / "micro")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    assert micro_data_ready(copy)
    [val_shard] = [p for p in (copy / "micro" / "data").glob("*.parquet") if "val" in p.name]
    val_shard.rename(val_shard.with_suffix(".moved"))
    assert not micro_data_ready(copy)
    val_shard.with_suffix(".moved").rename(val_shard)
    (copy / "micro" / "tokenizer" / "tokenizer.pkl").unlink()
    assert not micro_data_ready(copy)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        preflight(BASELINE, tmp_path)
    with pytest.raises(ValueError, match="steps"):
        preflight(BASELINE, ROOT, steps=0)


def test_check_command_with_preflight_runs_the_candidate(micro_cache, tmp_path):
    """`autoresearch check FILE --preflight` in a project folder: the checker, then a few micro steps."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "prepare.py").write_text((ROOT / "prepare.py").read_text())
    good = project / "good.py"
    good.write_text(BASELINE)
    broken = project / "broken.py"
    broken.write_text(BASELINE.replace("SEED = 42\n", "SEED = 42\nHEAD_DIM = HEAD_DIM + 1\n", 1))
    env = {**os.environ, "AUTORESEARCH_CACHE": str(micro_cache)}
    cli = [sys.executable, "-m", "agent.cli", "check", "--preflight"]
    ok = subprocess.run(cli + [str(good)], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "ACCEPTED" in ok.stdout and "PREFLIGHT passed" in ok.stdout, ok.stdout + ok.stderr
    bad = subprocess.run(cli + [str(broken)], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "ACCEPTED" in bad.stdout and "PREFLIGHT crash:" in bad.stdout, bad.stdout
