"""Fingerprints, and build_candidate's gates (edit-apply, no-change, checker rules, duplicate)."""
from __future__ import annotations

from pathlib import Path

from sandbox.candidate import build_candidate
from sandbox.fingerprint import fingerprint

ROOT = Path(__file__).resolve().parents[1]
BASELINE = (ROOT / "train.py").read_text()


def test_comments_whitespace_and_docstrings_share_a_fingerprint():
    base = fingerprint(BASELINE)
    assert fingerprint(BASELINE.replace("import gc\n", "import gc  # collector\n\n")) == base
    assert fingerprint(BASELINE.replace('"""\nThe autoresearch', '"""\nA reworded docstring. The autoresearch', 1)) == base
    assert fingerprint(BASELINE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.040")) == base
    assert fingerprint(BASELINE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")) != base
    assert fingerprint(BASELINE.replace('"SSSL"', "'SSSL'")) == base


def test_unparsable_source_has_a_stable_distinct_fingerprint():
    broken = BASELINE + "\ndef (:\n"
    assert fingerprint(broken) == fingerprint(broken)
    assert fingerprint(broken) != fingerprint(BASELINE)
    assert len(fingerprint(broken)) == 64


def test_build_candidate_accepts_and_reports_diff():
    check = build_candidate(BASELINE, [{"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"}])
    assert check.ok and check.rule is None and check.source.count("MATRIX_LR = 0.05") == 1
    assert check.diff.startswith("--- a/train.py") and check.fingerprint == fingerprint(check.source)


def test_build_candidate_gates():
    bad_edit = build_candidate(BASELINE, [{"search": "NOT THERE", "replace": "x"}])
    assert (bad_edit.ok, bad_edit.rule) == (False, "edit-apply") and "edit 1" in bad_edit.message

    comment_only = build_candidate(BASELINE, [{"search": "SEED = 42", "replace": "SEED = 42  # the answer"}])
    assert comment_only.rule == "no-change" and not comment_only.ok

    cheat = build_candidate(BASELINE, [{"search": "SEED = 42", "replace": "SEED = 42\nTIME_BUDGET = 900\nimport socket"}])
    assert cheat.rule == "prepare-rebind" and len(cheat.violations) == 2
    assert "import-not-allowed" in cheat.message and "prepare-rebind" in cheat.message

    edits = [{"search": "SEED = 42", "replace": "SEED = 43"}]
    first = build_candidate(BASELINE, edits)
    seen = {first.fingerprint}
    again = build_candidate(BASELINE, [{"search": "SEED = 42", "replace": "SEED = 43  # again"}], seen)
    assert again.rule == "duplicate" and not again.ok
    assert build_candidate(BASELINE, edits, seen, allow_duplicate=True).ok


def test_checker_policy_follows_the_given_baseline():
    edits = [{"search": "import gc\n", "replace": "import gc\nimport pyarrow\n"}]
    assert build_candidate(BASELINE, edits).rule == "import-not-allowed"
    baseline_with_pyarrow = BASELINE.replace("import gc\n", "import gc\nimport pyarrow\n")
    assert build_candidate(BASELINE, edits, baseline_source=baseline_with_pyarrow).ok
