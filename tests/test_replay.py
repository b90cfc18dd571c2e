"""Replay: recorded candidates re-run through the real scheduler, local runner and harness (stand-in
train.py), stored as linked "replay" executions, and compared with the originals."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from agent.digest import lineage as lineage_of
from agent.replay import ReplayError, run_replay, select_candidates
from tests.conftest import make_project, open_ctx, write_tools

pytestmark = pytest.mark.usefixtures("standin_data")   # the data layout the harness checks


def make_standin_project(root):
    write_tools(root)
    return make_project(root / "project", noise=0.0, use_git=True, slots=2,
                        config={"run": {"population": 3}, "selection": {"prior_sigma": 0.0001}})


def open_context(proj, **kw):
    return open_ctx(proj, "demo", **kw)


@pytest.fixture(scope="module")
def evolved(tmp_path_factory):
    """A run with the baseline (x2), one autopilot generation of three heuristic candidates + a
    control, and a second generation in which a human diff (WEIGHT_DECAY 0.2 -> 0.1, a sure win
    against the noiseless stand-in) becomes the incumbent, so the lineage has two members whatever
    the heuristic happened to find."""
    from agent.loop import run_autopilot
    from agent.repl import run_repl
    root = tmp_path_factory.mktemp("replay")
    proj = make_standin_project(root)
    ctx = open_context(proj, console=Console(file=io.StringIO(), width=200))
    try:
        assert run_autopilot(ctx, generations=1, population=3, max_hours=None, budget_usd=None) == 0
        script = io.StringIO(f"add-diff {root / 'tools' / 'wd.diff'} weight decay 0.1\nlaunch\nquit\n")
        assert run_repl(ctx, stdin=script, stdout=io.StringIO()) == 0
        assert lineage_of(ctx.memory)[-1]["title"] == "weight decay 0.1"
    finally:
        ctx.close()
    return proj


def _row(text: str, candidate_id: str) -> str:
    """The table row of a candidate (not the "replaying ..." line above the table)."""
    return next(line for line in text.splitlines() if f"│ {candidate_id}" in line)


def _ctx(proj, **kw):
    out = io.StringIO()
    return open_context(proj, console=Console(file=out, width=220), **kw), out


def test_lineage_replays_are_stored_linked_and_compared(evolved):
    ctx, out = _ctx(evolved)
    try:
        memory = ctx.memory
        lineage = [row["id"] for row in lineage_of(memory)]
        assert len(lineage) >= 2 and lineage[0] == "g000-baseline"   # the baseline and its winner(s)
        before = {e["id"] for e in memory.executions()}
        assert run_replay(ctx, lineage=True, repeats=2) == 0
        replays = [e for e in memory.executions(kind="replay") if e["id"] not in before]
        assert len(replays) == 2 * len(lineage)
        for cid in lineage:
            mine = [e for e in replays if e["candidate_id"] == cid]
            first_ok = next(e for e in memory.executions(candidate_id=cid) if e["status"] == "ok")
            assert {e["replay_of"] for e in mine} == {first_ok["id"]}
            assert all(e["status"] == "ok" and e["backend"] == "local" and e["preset"] == "micro" for e in mine)
            assert sorted(e["workspace"].rsplit("/", 1)[1] for e in mine) == [f"{cid}-replay-1", f"{cid}-replay-2"]
            # the stand-in is deterministic: the replay reproduces the original exactly
            original = memory.val_bpbs(cid)
            assert {e["val_bpb"] for e in mine} == {original[0]}
        # replays stay out of selection's numbers
        assert all(len(memory.val_bpbs(cid)) == len(memory.val_bpbs(cid, include_replays=True)) - 2
                   for cid in lineage)
        text = out.getvalue()
        assert "replay on micro/local" in text
        for cid in lineage:
            row = _row(text, cid)
            assert re.search(r"\byes\b", row) and "+0.000000" in row and "(2)" in row
        assert memory.events("replay_planned")
        # the report shows the replays next to their originals
        from agent.report import build_report
        md, png = build_report(memory, ctx.run_dir)
        report = md.read_text()
        assert "## Replays" in report and png.stat().st_size > 1000
        replays_section = report[report.index("## Replays"):]
        assert all(cid in replays_section for cid in lineage)
    finally:
        ctx.close()


def test_replay_on_another_preset_shows_the_shift_beyond_noise(evolved):
    ctx, out = _ctx(evolved)
    try:
        assert run_replay(ctx, candidate="g000-baseline", repeats=1, preset="cpu") == 0
        replay = ctx.memory.executions(candidate_id="g000-baseline", kind="replay")[-1]
        assert replay["preset"] == "cpu" and replay["status"] == "ok"
        # the stand-in's cpu column has a larger DEVICE_BATCH_SIZE, which costs 0.001 val_bpb
        base = ctx.memory.val_bpbs("g000-baseline")[0]
        assert replay["val_bpb"] == pytest.approx(base + 0.001, abs=1e-6)
        text = out.getvalue()
        assert "replay on cpu/local" in text
        row = _row(text, "g000-baseline")
        assert "+0.001000" in row and re.search(r"\bno\b", row) and "micro" in row   # original's preset shown
    finally:
        ctx.close()


def test_generation_replay_in_json_mode(evolved, capsys):
    ctx, _ = _ctx(evolved, json_mode=True)
    try:
        ran = [c["id"] for c in ctx.memory.candidates(generation=1, check_status="accepted")]
        assert run_replay(ctx, generations=[1], repeats=1) == 0
    finally:
        ctx.close()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    rows = [r for r in lines if r.get("event") == "replay"]
    assert sorted(r["candidate_id"] for r in rows) == sorted(ran)
    for r in rows:
        assert r["replay_n"] == 1 and r["original_n"] >= 1
        assert r["within_noise"] is True and r["delta"] == pytest.approx(0.0, abs=1e-9)


def test_bad_requests_name_the_problem(evolved):
    ctx, out = _ctx(evolved)
    try:
        n = len(ctx.memory.executions())
        assert run_replay(ctx, candidate="g042-c01") == 2
        assert run_replay(ctx, generations=[7]) == 2
        assert run_replay(ctx, lineage=True, repeats=0) == 2
        assert len(ctx.memory.executions()) == n          # nothing recorded for a bad request
        text = out.getvalue()
        assert "unknown candidate 'g042-c01'" in text and "g000-baseline" in text
        assert "generation 7 has no candidate that ran" in text
        assert "--repeats must be at least 1" in text
        bad = ctx.memory.add_candidate(generation=1, strategy="human", title="broken", fingerprint="",
                                       source=None, check_status="rejected", rule="edit-apply", reason="no match")
        with pytest.raises(ReplayError, match=f"candidate {bad} was rejected \\(edit-apply\\)"):
            select_candidates(ctx.memory, candidate=bad)
    finally:
        ctx.close()


def test_default_selection_is_the_lineage(evolved):
    ctx, _ = _ctx(evolved, dry_run=True)
    try:
        assert select_candidates(ctx.memory) == [row["id"] for row in lineage_of(ctx.memory)]
        both = select_candidates(ctx.memory, candidate="g000-baseline", lineage=True)
        assert both[0] == "g000-baseline" and len(both) == len(set(both))
    finally:
        ctx.close()
