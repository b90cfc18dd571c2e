"""Search/replace edits, pasted diffs and diff -> edits, checked with real `git apply`."""
from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from sandbox.edits import EditError, apply_edits, apply_unified_diff, diff_to_edits, unified_diff

ROOT = Path(__file__).resolve().parents[1]
BASELINE = (ROOT / "train.py").read_text()

SMALL = "a = 1\nb = 2\nc = 3\n\ndef f():\n    return a + b\n\nx = 1\ny = 1\n"


@pytest.fixture
def git_repo(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def git_apply(repo: Path, original: str, diff: str) -> str:
    """Apply `diff` with real git to a fresh train.py holding `original`; return the result."""
    (repo / "train.py").write_text(original)
    patch = repo / "change.patch"
    patch.write_text(diff)
    subprocess.run(["git", "apply", "--check", str(patch)], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "apply", str(patch)], cwd=repo, check=True, capture_output=True)
    return (repo / "train.py").read_text()


def test_apply_edits_and_git_applicable_diff(git_repo):
    edits = [{"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"},
             {"search": 'WINDOW_PATTERN = "SSSL"', "replace": 'WINDOW_PATTERN = "SL"'}]
    result = apply_edits(BASELINE, edits)
    assert "MATRIX_LR = 0.05" in result.source and 'WINDOW_PATTERN = "SL"' in result.source
    assert result.diff.startswith("--- a/train.py\n+++ b/train.py\n@@ ")
    assert git_apply(git_repo, BASELINE, result.diff) == result.source


def test_edits_are_located_in_the_original_in_any_order():
    forward = apply_edits(SMALL, [{"search": "a = 1", "replace": "a = 10"}, {"search": "c = 3", "replace": "c = 30"}])
    backward = apply_edits(SMALL, [{"search": "c = 3", "replace": "c = 30"}, {"search": "a = 1", "replace": "a = 10"}])
    assert forward == backward
    # a replacement that creates text matching a later search does not confuse it
    chained = apply_edits(SMALL, [{"search": "a = 1\n", "replace": "a = 1\nb = 2\n"}, {"search": "c = 3", "replace": "c = 4"}])
    assert chained.source.count("b = 2") == 2


def test_not_found_names_edit_and_closest_line():
    with pytest.raises(EditError) as err:
        apply_edits(BASELINE, [{"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"},
                               {"search": "MATRIX_LR = 0.4", "replace": "x"}])
    assert err.value.index == 2 and err.value.kind == "not_found"
    assert str(err.value).startswith("edit 2: search text not found; closest line")
    assert "MATRIX_LR = 0.04" in str(err.value)


def test_ambiguous_counts_matches():
    with pytest.raises(EditError) as err:
        apply_edits(SMALL, [{"search": "= 1\n", "replace": "= 2\n"}])
    assert err.value.kind == "ambiguous" and err.value.index == 1
    assert "found 3 times" in str(err.value) and "include more context" in str(err.value)


def test_overlapping_edits_rejected():
    with pytest.raises(EditError) as err:
        apply_edits(SMALL, [{"search": "a = 1\nb = 2", "replace": "z"}, {"search": "b = 2\nc", "replace": "q"}])
    assert err.value.kind == "overlap" and err.value.index == 2
    assert "overlaps edit 1" in str(err.value)


@pytest.mark.parametrize("edits, kind", [
    ([], "empty"),
    ([{"search": "", "replace": "x"}], "empty"),
    ("nope", "malformed"),
    ([{"search": "a = 1"}], "malformed"),
    ([{"search": "a = 1", "replace": 3}], "malformed"),
    (["a = 1"], "malformed"),
    ([{"search": "a = 1", "replace": "a", "extra": 1}], "malformed"),
])
def test_malformed_and_empty_edits(edits, kind):
    with pytest.raises(EditError) as err:
        apply_edits(SMALL, edits)
    assert err.value.kind == kind


def test_no_newline_at_end_roundtrips_through_git(git_repo):
    original = "a = 1\nb = 2"
    for new in ("a = 1\nb = 3", "a = 1\nb = 2\n", "a = 0\nb = 2"):
        diff = unified_diff(original, new)
        assert git_apply(git_repo, original, diff) == new
    assert unified_diff(original, original) == ""


def test_pasted_diff_with_wrong_line_numbers_applies():
    target = BASELINE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.03").replace("SEED = 42", "SEED = 7")
    diff = unified_diff(BASELINE, target)
    wrong = "\n".join(line.replace("@@ -", "@@ -1").replace(" +", " +1", 1) if line.startswith("@@") else line
                      for line in diff.splitlines()) + "\n"
    assert wrong != diff
    assert apply_unified_diff(BASELINE, wrong).source == target
    # without the file headers, and with the space of empty context lines stripped (chat pastes)
    body = "\n".join(line.rstrip() if not line.startswith("+") else line
                     for line in wrong.splitlines()[2:]) + "\n"
    assert apply_unified_diff(BASELINE, body).source == target


def test_pasted_diff_picks_the_occurrence_nearest_the_stated_line():
    source = "x = 1\ny = 1\n" + "pass\n" * 20 + "x = 1\ny = 1\n"
    diff = "@@ -23,2 +23,2 @@\n x = 1\n-y = 1\n+y = 2\n"
    assert apply_unified_diff(source, diff).source == "x = 1\ny = 1\n" + "pass\n" * 20 + "x = 1\ny = 2\n"
    diff_top = "@@ -2,2 +2,2 @@\n x = 1\n-y = 1\n+y = 2\n"
    assert apply_unified_diff(source, diff_top).source.startswith("x = 1\ny = 2\n")


def test_pasted_diff_with_wrong_context_names_the_hunk():
    diff = ("--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,3 @@\n a = 1\n-b = 2\n+b = 5\n c = 3\n"
            "@@ -8,2 +8,2 @@\n x = 1\n-y = 2\n+y = 3\n")
    with pytest.raises(EditError) as err:
        apply_unified_diff(SMALL, diff)
    assert err.value.index == 2 and err.value.kind == "not_found"
    assert str(err.value).startswith("hunk 2 (@@ -8,2 +8,2 @@) does not apply")
    assert "'y = 2'" in str(err.value) and "'y = 1'" in str(err.value)


def test_pasted_diff_errors():
    with pytest.raises(EditError) as err:
        apply_unified_diff(SMALL, "just some text\n")
    assert err.value.kind == "malformed"
    with pytest.raises(EditError) as err:
        apply_unified_diff(SMALL, "")
    assert err.value.kind == "empty"
    two_files = ("--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"
                 "--- a/prepare.py\n+++ b/prepare.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n")
    with pytest.raises(EditError, match="only train.py"):
        apply_unified_diff(SMALL, two_files)


def test_git_generated_diff_applies(git_repo):
    (git_repo / "train.py").write_text(BASELINE)
    subprocess.run(["git", "add", "train.py"], cwd=git_repo, check=True)
    new = BASELINE.replace("SEED = 42", "SEED = 1").replace("import gc\n", "import gc\nimport functools\n")
    (git_repo / "train.py").write_text(new)
    diff = subprocess.run(["git", "diff"], cwd=git_repo, check=True, capture_output=True, text=True).stdout
    assert diff.startswith("diff --git")
    assert apply_unified_diff(BASELINE, diff).source == new


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(lines))
        op = rng.choice(["edit", "insert", "delete", "blank"])
        if op == "edit":
            lines[i] = lines[i].rstrip("\n") + f"  # m{rng.randint(0, 99)}\n"
        elif op == "insert":
            lines.insert(i, f"extra_{rng.randint(0, 9)} = 1\n")
        elif op == "delete" and len(lines) > 1:
            del lines[i]
        else:
            lines.insert(i, "\n")
    return "".join(lines)


@pytest.mark.parametrize("seed", range(40))
def test_diff_to_edits_roundtrip(seed, git_repo):
    rng = random.Random(seed)
    new = _mutate(BASELINE, rng)
    edits = diff_to_edits(BASELINE, new)
    result = apply_edits(BASELINE, edits)     # every search is unique, no overlaps
    assert result.source == new
    if seed < 3:
        assert git_apply(git_repo, BASELINE, result.diff) == new


def test_diff_to_edits_is_minimal_and_anchored():
    edits = diff_to_edits(BASELINE, BASELINE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05"))
    assert len(edits) == 1 and edits[0]["search"].count("\n") == 1
    # repeated lines need context to be unique
    repeated = "v = 0\nx = 1\nw = 0\nx = 1\n"
    edits = diff_to_edits(repeated, "v = 0\nx = 1\nw = 0\nx = 2\n")
    assert edits == [{"search": "w = 0\nx = 1\n", "replace": "w = 0\nx = 2\n"}]
    assert diff_to_edits(SMALL, SMALL) == []
    # insertion at the very end and start
    assert apply_edits(SMALL, diff_to_edits(SMALL, "# head\n" + SMALL + "z = 0\n")).source == "# head\n" + SMALL + "z = 0\n"
