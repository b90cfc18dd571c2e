"""The lab notebook: lessons from the figures, a model's lines parsed, entries shown and reported."""
from __future__ import annotations

from pathlib import Path

from agent import notebook
from agent.digest import build_digest
from agent.report import render_report
from tests.test_digest import feedback_memory


def test_heuristic_lessons_read_the_figures(tmp_path: Path):
    memory = feedback_memory(tmp_path / "nb")
    lines = notebook.heuristic_lessons(memory)
    assert any("best change so far" in line and "dval -0.010000" in line for line in lines)
    assert any("1 crash(es)" in line and "RuntimeError" in line for line in lines)
    assert 1 <= len(lines) <= notebook.MAX_LINES


def test_a_models_answer_becomes_at_most_five_clean_lines():
    text = "Here you go:\n- lr 0.05 helped by 2 sigma\n2. a zero division crashed\n\n* ok\n" + "- more lessons\n" * 9
    lines = notebook.parse_lessons(text)
    assert lines[:3] == ["Here you go:", "lr 0.05 helped by 2 sigma", "a zero division crashed"]
    assert len(lines) == notebook.MAX_LINES and "ok" not in lines


def test_entries_are_due_every_n_finished_runs_and_shown_newest_first(tmp_path: Path):
    memory = feedback_memory(tmp_path / "nb")
    assert notebook.due(memory, 3) and not notebook.due(memory, 4)
    memory.log_event(notebook.EVENT, {"author": "heuristic", "lines": ["old lesson"], "finished": 1}, 1)
    memory.log_event(notebook.EVENT, {"author": "llm", "lines": ["new lesson"], "finished": 3}, 2)
    assert not notebook.due(memory, 1)
    assert notebook.prompt_lines(memory) == ["(through gen 2) new lesson", "(through gen 1) old lesson"]
    digest = build_digest(memory, 6000, notebook=notebook.prompt_lines(memory))
    assert digest.index("new lesson") < digest.index("old lesson")
    report = render_report(memory, tmp_path / "nb")
    section = report.split("## Lab notebook")[1].split("\n## ")[0]
    assert "**Through generation 2** (llm)" in section and "- new lesson" in section


def test_a_run_without_entries_gets_the_heuristic_reading_in_the_report(tmp_path: Path):
    memory = feedback_memory(tmp_path / "nb")
    section = render_report(memory, tmp_path / "nb").split("## Lab notebook")[1].split("\n## ")[0]
    assert "read off the figures now (heuristic)" in section and "best change so far" in section
