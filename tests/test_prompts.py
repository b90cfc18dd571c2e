"""prompts/ templates: strict rendering, the placeholder contract, program.md verbatim."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent import prompting

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "prompts"

PARENT_KEYS = {f"parent_{t}_{k}" for t in "ab" for k in ("id", "strategy", "title", "hypothesis", "val_bpb", "diff")}
# The placeholders each template must use: the code supplies exactly these (rendering is strict).
EXPECTED = {
    "system": {"program_md", "preset"},
    "incumbent": {"incumbent_id", "incumbent_source"},
    "history": {"generation", "digest"},
    "strategy_conservative": {"count"},
    "strategy_moderate": {"count"},
    "strategy_aggressive": {"count"},
    "strategy_crossover": {"count"} | PARENT_KEYS,
    "repair": {"failures", "count", "strategy", "accepted"},
    "repair_item": {"label", "rule", "message"},
    "idea": {"idea", "strategy"},
    "tool": set(),
    "notebook": {"generation", "digest", "figures"},
}


def test_every_template_file_has_a_known_placeholder_set():
    on_disk = {p.stem for p in PROMPTS.glob("*.md")}
    assert on_disk == set(EXPECTED), "a template was added or removed without updating the contract"
    for name, wanted in EXPECTED.items():
        assert prompting.placeholders(PROMPTS, name) == wanted, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rendering_fills_every_placeholder(name):
    values = {key: f"<{key}-value>" for key in EXPECTED[name]}
    text = prompting.render(PROMPTS, name, **values)
    for key in EXPECTED[name]:
        assert f"<{key}-value>" in text
    leftover = [ident for ident in prompting.placeholders(PROMPTS, name) if f"${ident}" in text]
    assert leftover == []


def test_code_with_braces_and_dollars_passes_through_unchanged():
    source = 'cfg = {"a": 1}\nprint(f"{x:.2f}")\nprice = "$5 and ${y}"\n'
    text = prompting.render(PROMPTS, "incumbent", incumbent_id="g000-baseline", incumbent_source=source)
    assert source.rstrip("\n") in text


def test_missing_and_unused_values_are_errors_naming_the_file():
    with pytest.raises(prompting.PromptError, match=r"system\.md.*\$preset"):
        prompting.render(PROMPTS, "system", program_md="x")
    with pytest.raises(prompting.PromptError, match=r"system\.md.*does not use: colour"):
        prompting.render(PROMPTS, "system", program_md="x", preset="micro", colour="red")


def test_missing_template_and_stray_dollar_are_clear_errors(tmp_path):
    with pytest.raises(prompting.PromptError, match="nope.md: prompt template not found"):
        prompting.render(tmp_path, "nope")
    (tmp_path / "bad.md").write_text("costs $5 a run\n")
    with pytest.raises(prompting.PromptError, match=r"bad\.md.*'\$\$'"):
        prompting.render(tmp_path, "bad")


def test_system_prompt_embeds_program_md_verbatim():
    program = (ROOT / "program.md").read_text()
    text = prompting.render(PROMPTS, "system", program_md=program, preset="micro")
    assert program.strip() in text
    assert "propose_candidates" in text


def test_program_md_covers_the_research_brief():
    program = (ROOT / "program.md").read_text().lower()
    for topic in ("val_bpb", "only `train.py` changes", "no new dependencies", "evaluate_bpb",
                  "simplicity", "conservative", "moderate", "aggressive", "crossover", "noise", "crash"):
        assert topic in program, topic


def test_edited_template_is_picked_up_without_code_changes(tmp_path):
    # The prompts are data: a human may rephrase them; only the placeholder set is the contract.
    shutil.copytree(PROMPTS, tmp_path / "prompts")
    (tmp_path / "prompts" / "history.md").write_text("Gen $generation.\n$digest\n")
    assert prompting.render(tmp_path / "prompts", "history", generation=3, digest="d") == "Gen 3.\nd"
