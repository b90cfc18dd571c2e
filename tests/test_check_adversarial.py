"""The checker against the adversarial tables of tests/check_cases.py, on today's train.py: every
cheat is rejected with its rule, on a line, and every legitimate twin accepted."""
from __future__ import annotations

from collections import Counter

import pytest

from sandbox.check import RULES, check_source
from tests.check_cases import ALL_CASES, BASELINES, CLASSES, build

IDS = [f"{cls}: {case.name}" for cls, case in ALL_CASES]


@pytest.mark.parametrize("cls,case", ALL_CASES, ids=IDS)
def test_case(cls, case):
    baseline = BASELINES["train.py"]
    source = build(case, baseline)
    assert source != baseline, "the case did not change the baseline"
    if case.rule not in ("syntax", "encoding"):
        compile(source.encode("utf-8"), "train.py", "exec")   # the edit runs (as the file), not a typo
    found = check_source(source, baseline)
    if case.rule is None:
        assert found == [], f"a legitimate edit was rejected: {[str(v) for v in found]}"
        return
    assert case.rule in {v.rule for v in found}, f"expected {case.rule}, got {[str(v) for v in found]}"
    for v in found:
        assert v.rule in RULES and v.message and v.line, v


def test_every_class_has_cheats_and_twins():
    for cls, cases in CLASSES.items():
        kinds = Counter(case.rule is None for case in cases)
        assert kinds[False], f"{cls} has no cheat"
        assert kinds[True] or cls == "syntax", f"{cls} has no legitimate twin"


def test_every_rule_is_exercised():
    assert {case.rule for _, case in ALL_CASES} - {None} == set(RULES)


def test_case_names_are_unique():
    assert len(set(IDS)) == len(IDS)
