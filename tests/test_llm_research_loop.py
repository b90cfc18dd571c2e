"""Issue 11's checks on a whole run: a 2-generation micro run (the stand-in project, the real
harness and local runner) with the LLM proposer against the strict Messages-API stand-in."""
from __future__ import annotations

import pytest

from agent.loop import EXIT_OK, run_autopilot
from agent.memory import Memory
from agent.report import build_report
from tests.conftest import make_project, open_ctx
from tests.fake_anthropic import FakeAnthropic, text_reply, tool_reply

pytestmark = pytest.mark.usefixtures("standin_data")   # the data layout the harness checks

CRASH = {"strategy": "moderate", "title": "check the lr", "hypothesis": "h",
         "edits": [{"search": "MATRIX_LR = 0.04\n", "replace": "MATRIX_LR = 0.04\nBROKEN = 1 / 0  # boom-7731\n"}]}
TWIN_A = {"strategy": "conservative", "title": "wd 0.18", "hypothesis": "h",
          "edits": [{"search": "WEIGHT_DECAY = 0.2\n", "replace": "WEIGHT_DECAY = 0.18\n"}]}
TWIN_B = {"strategy": "aggressive", "title": "wd 0.1801", "hypothesis": "h",
          "edits": [{"search": "WEIGHT_DECAY = 0.2\n", "replace": "WEIGHT_DECAY = 0.1801\n"}]}
LESSONS = "- A zero division at import time crashed the run; check edits execute.\n- wd 0.18 was within noise."


@pytest.fixture
def api(monkeypatch):
    with FakeAnthropic(latency_s=0.2) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-dummy")
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield server


def test_a_later_prompt_sees_the_crash_traceback_run_figures_and_budget_and_the_report_has_a_notebook(
        tmp_path, api):
    project = make_project(tmp_path / "proj", config={"run": {"proposer": "llm"}})
    # generation 1: the moderate call proposes a crasher, the conservative and the aggressive calls
    # (concurrent) two near twins
    api.queue(tool_reply([CRASH], match='strategy "moderate"'),
              tool_reply([TWIN_A], match='strategy "conservative"'),
              tool_reply([TWIN_B], match='strategy "aggressive"'),
              text_reply(LESSONS, match="You keep the lab notebook"))
    ctx = open_ctx(project, "fb", schedule="generations")
    try:
        assert run_autopilot(ctx, generations=2, population=3) == EXIT_OK
    finally:
        ctx.close()

    later = [r for r in api.message_requests() if "Generation 2." in r.text and r.body["max_tokens"] > 0
             and "You keep the lab notebook" not in r.text]
    assert later, "no proposal request for generation 2"
    text = later[0].text
    assert "ZeroDivisionError" in text and "boom-7731" in text            # the crash's traceback
    assert " steps" in text and "tok/s" in text                           # past runs' figures
    assert "time budget" in text and " s of training" in text             # the budget in seconds
    assert "lab notebook (lessons so far" in text and "zero division" in text   # the notebook, shown
    assert any("Repair candidate" in r.text and "ZeroDivisionError" in r.text for r in later)

    with Memory.open(ctx.run_dir, create=False) as mem:
        twins = [c for c in mem.candidates(generation=1) if c["title"] in ("wd 0.18", "wd 0.1801")]
        trained = {e["candidate_id"] for e in mem.executions()}
        assert sum(c["id"] in trained for c in twins) == 1
        assert [c["rule"] for c in twins if c["check_status"] == "rejected"] == ["near-duplicate"]
        # generation 2 spent one slot repairing the crash (it did not diverge), starting from it
        crashed = next(c for c in mem.candidates(generation=1) if c["title"] == "check the lr")
        [repair] = [c for c in mem.candidates(generation=2) if c["title"].startswith("repair:")]
        assert repair["parents"] == [crashed["id"]]
        md, _ = build_report(mem, ctx.run_dir)
    report = md.read_text()
    notebook = report.split("## Lab notebook")[1].split("\n## ")[0]
    assert "(llm" in notebook and "zero division" in notebook
    assert notebook.count("\n- ") >= 2


def test_a_run_against_an_api_that_never_answers_completes_on_the_heuristic(tmp_path, api):
    from tests.fake_anthropic import hang_reply
    api.outage = hang_reply()
    project = make_project(tmp_path / "proj", config={"run": {"proposer": "llm"},
                                                     "llm": {"timeout_s": 2, "max_retries": 2}})
    ctx = open_ctx(project, "hang", schedule="generations")
    try:
        assert run_autopilot(ctx, generations=2, population=3) == EXIT_OK
    finally:
        ctx.close()
    with Memory.open(ctx.run_dir, create=False) as mem:
        proposed = [c for c in mem.candidates() if c["origin"] == "proposed"]
        assert proposed and all(c["proposer"] == "heuristic" for c in proposed)
        calls = mem.llm_calls()
    # per round: the warm-up's attempts stop the round, so at most (max_retries + 1) requests per
    # strategy call (3 calls a round here), and no call was booked as free
    rounds = {c["generation"] for c in calls if c["purpose"].startswith("propose")}
    assert len(api.message_requests()) <= 3 * 3 * len(rounds)
    assert all(c["outcome"] == "unreachable" and "cost estimated" in c["error"] for c in calls)
