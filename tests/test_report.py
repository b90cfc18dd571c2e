"""The report: report.md sections and progress.png, rendered from a real SQLite memory."""
from __future__ import annotations

import struct

import pytest

from agent.memory import Memory
from agent.report import build_report, noise_rejections, wall_clock

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _finish(memory, execution_id, val_bpb, *, status="ok", start=1000.0, seconds=10.0, cost=0.01):
    memory.mark_started(execution_id, job_id=f"job-{execution_id}", started_at=start)
    result = {"status": status, "val_bpb": val_bpb if status == "ok" else None, "training_seconds": seconds,
              "total_seconds": seconds + 1, "peak_vram_mb": 0.0, "num_steps": 10, "mfu_percent": 0.0,
              "num_params_M": 0.1, "failure_reason": None if status == "ok" else "boom", "log_tail": ""}
    assert memory.finish_execution(execution_id, result=result, cost_usd=cost, ended_at=start + seconds)


def _add(memory, generation, title, strategy="moderate", parents=("g000-baseline",), fp=None, diff=""):
    return memory.add_candidate(generation=generation, strategy=strategy, title=title, hypothesis=f"why {title}",
                                parents=list(parents), diff=diff, fingerprint=fp or title, source="x = 1\n",
                                check_status="accepted", proposer="heuristic")


def _exec(memory, cid, generation, kind="candidate"):
    return memory.add_execution(candidate_id=cid, generation=generation, kind=kind, backend="local",
                                preset="micro", workspace=f"/tmp/{cid}")


@pytest.fixture
def populated(tmp_path):
    """Two generations: baseline x2, gen 1 with a kept winner, a noise-rejected near-win and a crash,
    gen 2 with a discard and a control; one LLM call; run in parallel pairs (overlapping times)."""
    run_dir = tmp_path / "runs" / "demo"
    memory = Memory.open(run_dir)
    memory.ensure_run("demo", "micro", "local", "heuristic", {"selection": {"k_sigma": 2.0}}, str(tmp_path))
    base = memory.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint="base",
                                source="x = 0\n", check_status="accepted", origin="baseline")
    _finish(memory, _exec(memory, base, 0, "baseline"), 1.000, start=0, seconds=10)
    _finish(memory, _exec(memory, base, 0, "baseline"), 1.002, start=0, seconds=10)
    memory.set_state("incumbent", base)
    win = _add(memory, 1, "deeper model", diff="--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-DEPTH = 2\n+DEPTH = 3\n")
    near = _add(memory, 1, "lr tweak", strategy="conservative")
    crash = _add(memory, 1, "huge lr", strategy="aggressive")
    _finish(memory, _exec(memory, win, 1), 0.950, start=20, seconds=10)
    _finish(memory, _exec(memory, near, 1), 0.9995, start=20, seconds=10)
    _finish(memory, _exec(memory, crash, 1), None, status="crash", start=31, seconds=2)
    _finish(memory, _exec(memory, base, 1, "control"), 1.001, start=31, seconds=10)
    memory.record_decision(near, verdict="confirm", delta=0.0015, threshold=0.004, reason="marginal", generation=1)
    memory.record_decision(near, verdict="noise", delta=0.0012, threshold=0.004, reason="below 2 sigma", generation=1)
    memory.record_decision(win, verdict="keep", delta=0.051, threshold=0.004, reason="clear win", generation=1)
    memory.set_state("incumbent", win)
    lose = _add(memory, 2, "wider mlp", parents=(win,))
    _finish(memory, _exec(memory, lose, 2), 0.97, start=50, seconds=10)
    _finish(memory, _exec(memory, win, 2, "control"), 0.951, start=50, seconds=10)
    memory.record_llm_call(model="claude-sonnet-4-5", input_tokens=1000, output_tokens=200, cost_usd=0.25,
                           latency_s=1.0, outcome="ok", generation=2)
    yield memory, run_dir
    memory.close()


def test_report_writes_markdown_sections_and_a_valid_png(populated):
    memory, run_dir = populated
    md, png = build_report(memory, run_dir)
    assert md == run_dir / "report.md" and png == run_dir / "progress.png"
    width, height = _png_size(png)
    assert width > 500 and height > 300
    text = md.read_text()
    for section in ("## Summary", "## Incumbent lineage", "## Strategy outcomes", "## Wins rejected as noise",
                    "## Spend", "## Wall clock", "## All executions", "![progress](progress.png)"):
        assert section in text, section
    # lineage: baseline first, then the winner with its diff
    lineage = text[text.index("## Incumbent lineage"):text.index("## Strategy outcomes")]
    assert lineage.index("g000-baseline") < lineage.index("g001-c01")
    assert "+DEPTH = 3" in lineage and "```diff" in lineage
    # one near-win rejected as noise, after a confirmation
    noise = text[text.index("## Wins rejected as noise"):text.index("## Spend")]
    assert "**1**" in noise and "1 after a confirmation" in noise and "g001-c02" in noise
    # spend per generation: 8 executions x $0.01 + one LLM call
    spend = text[text.index("## Spend"):text.index("## Wall clock")]
    assert "compute $0.08" in spend and "LLM $0.25" in spend and "total $0.33" in spend
    assert "| 2 | $0.02 | $0.25 | $0.27 |" in spend
    # strategy rows, the crash counted
    strategies = text[text.index("## Strategy outcomes"):text.index("## Wins rejected")]
    assert "| aggressive | 1 | 0 | 1 | 1 | 0 |" in strategies
    assert "| moderate | 2 | 0 | 2 | 0 | 1 |" in strategies


def test_wall_clock_compares_serial_time_with_the_run(populated):
    memory, _ = populated
    w = wall_clock(memory.executions())
    # 8 executions: 7 x 10 s + one 2 s crash, run in overlapping batches over 0..60 s
    assert w["executions"] == 8
    assert w["serial_s"] == pytest.approx(72.0)
    assert w["span_s"] == pytest.approx(60.0)
    assert w["busy_s"] == pytest.approx(10 + 10 + 10 + 10)   # [0,10] [20,30] [31,41] [50,60]
    assert w["speedup_busy"] == pytest.approx(72 / 40)


def test_wall_clock_of_serial_executions_is_one():
    rows = [{"started_at": float(i * 10), "ended_at": float(i * 10 + 10)} for i in range(3)]
    w = wall_clock(rows + [{"started_at": None, "ended_at": None}])
    assert w["executions"] == 3 and w["speedup_span"] == pytest.approx(1.0)


def test_noise_rejections_count_each_candidate_once(populated):
    memory, _ = populated
    counted = noise_rejections(memory)
    assert counted["total"] == 1 and counted["by_generation"] == {1: 1}
    assert counted["decisions"][0]["candidate_id"] == "g001-c02"


def test_report_of_a_run_with_nothing_finished(tmp_path):
    run_dir = tmp_path / "runs" / "empty"
    with Memory.open(run_dir) as memory:
        memory.ensure_run("empty", "micro", "local", "heuristic", {}, str(tmp_path))
        md, png = build_report(memory, run_dir)
    _png_size(png)
    text = md.read_text()
    assert "No incumbent yet." in text and "No timed executions yet." in text
