"""Noise-aware selection: the keep/discard/confirm/noise rule and the winner pick."""
from __future__ import annotations

import math

import pytest

from agent.config import SelectionSettings
from agent.selection import Decision, count_noise, decide, pick_winner, threshold

SETTINGS = SelectionSettings(min_delta=0.0005, k_sigma=2.0, confirm_margin=2.0, prior_sigma=None)


def test_threshold_is_the_larger_of_min_delta_and_k_sigma():
    assert threshold(0.0005, 2.0, 0.001) == pytest.approx(0.002)
    assert threshold(0.0005, 2.0, 0.0001) == pytest.approx(0.0005)
    assert threshold(0.0005, 2.0, None) == pytest.approx(0.0005)
    assert threshold(0.0, 0.0, 0.01) == 0.0


def test_clear_win_on_one_run_is_kept():
    # sigma 0.001 -> threshold 0.002; delta 0.005 >= 2 x threshold, so no confirmation is needed
    d = decide([0.995], [1.000], 0.001, SETTINGS)
    assert d.verdict == "keep"
    assert d.delta == pytest.approx(0.005)
    assert d.threshold == pytest.approx(0.002)
    assert d.candidate_mean == pytest.approx(0.995) and d.incumbent_mean == pytest.approx(1.0)
    assert "measured" in d.reason


def test_marginal_single_run_win_asks_for_confirmation_then_the_mean_decides():
    first = decide([0.997], [1.000], 0.001, SETTINGS)          # delta 0.003: above 0.002, below 0.004
    assert first.verdict == "confirm"
    assert "re-run" in first.reason
    confirmed = decide([0.997, 0.9975], [1.000], 0.001, SETTINGS)  # mean 0.99725 -> delta 0.00275
    assert confirmed.verdict == "keep"
    faded = decide([0.997, 1.0005], [1.000], 0.001, SETTINGS)      # mean 0.99875 -> delta 0.00125
    assert faded.verdict == "noise"


def test_marginal_win_with_two_runs_is_kept_without_another_confirmation():
    assert decide([0.997, 0.997], [1.000], 0.001, SETTINGS).verdict == "keep"


def test_apparent_win_inside_the_noise_is_noise():
    d = decide([0.999], [1.000], 0.001, SETTINGS)
    assert d.verdict == "noise"
    assert d.delta == pytest.approx(0.001)
    assert "noise" in d.reason


def test_win_exactly_at_the_threshold_is_not_enough():
    d = decide([0.998], [1.000], 0.001, SettingsOverride(k_sigma=2.0))
    assert d.threshold == pytest.approx(0.002)
    assert d.delta == pytest.approx(0.002)
    assert d.verdict in ("noise", "confirm")  # float rounding may put it either side; never a direct keep
    exact = decide([0.75], [1.0], 0.125, SettingsOverride(k_sigma=2.0))  # exactly representable: 0.25 == 0.25
    assert exact.verdict == "noise"


def SettingsOverride(**changes) -> SelectionSettings:
    return SETTINGS.model_copy(update=changes)


def test_tie_and_worse_are_discarded():
    tie = decide([1.0, 1.0], [1.0, 1.0], 0.001, SETTINGS)
    assert tie.verdict == "discard" and tie.delta == 0.0
    worse = decide([1.01], [1.0], 0.001, SETTINGS)
    assert worse.verdict == "discard" and worse.delta == pytest.approx(-0.01)


def test_incumbent_mean_uses_all_its_runs():
    # incumbent mean 1.002; candidate 0.999 beats it by 0.003 > 0.002 -> confirm (single run, < 2x)
    d = decide([0.999], [1.000, 1.004], 0.001, SETTINGS)
    assert d.incumbent_mean == pytest.approx(1.002)
    assert d.verdict == "confirm"


def test_no_sigma_falls_back_to_prior_sigma():
    settings = SettingsOverride(prior_sigma=0.002)
    d = decide([0.997], [1.000], None, settings)   # threshold 0.004 from the prior
    assert d.threshold == pytest.approx(0.004)
    assert d.sigma == pytest.approx(0.002)
    assert d.verdict == "noise"
    assert "prior_sigma" in d.reason


def test_no_sigma_and_no_prior_uses_min_delta_and_says_so():
    d = decide([0.9990], [1.000], None, SETTINGS)
    assert d.threshold == pytest.approx(0.0005)
    assert d.sigma is None
    assert d.verdict == "keep"         # 0.001 >= 2 x 0.0005
    assert "min_delta only" in d.reason


def test_zero_threshold_keeps_any_strict_win():
    settings = SettingsOverride(min_delta=0.0, prior_sigma=None)
    assert decide([0.9999], [1.0], 0.0, settings).verdict == "keep"
    assert decide([1.0], [1.0], 0.0, settings).verdict == "discard"


def test_candidate_without_ok_runs_is_discarded():
    d = decide([], [1.0], 0.001, SETTINGS, candidate_id="g001-c01")
    assert d.verdict == "discard" and d.delta is None and d.runs == 0
    assert d.candidate_id == "g001-c01"


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="incumbent has no ok run"):
        decide([1.0], [], 0.001, SETTINGS)
    with pytest.raises(ValueError, match="candidate_bpbs contains a non-finite"):
        decide([math.nan], [1.0], 0.001, SETTINGS)
    with pytest.raises(ValueError, match="incumbent_bpbs"):
        decide([1.0], [math.inf], 0.001, SETTINGS)


def test_pick_winner_takes_the_best_keep_by_mean():
    decisions = {
        "g001-c01": decide([0.990], [1.0], 0.001, SETTINGS),
        "g001-c02": decide([0.980], [1.0], 0.001, SETTINGS),
        "g001-c03": decide([0.999], [1.0], 0.001, SETTINGS),    # noise
        "g001-c04": decide([0.970], [1.0], 0.02, SETTINGS),     # would be best, but threshold 0.04: noise
    }
    winner = pick_winner(decisions)
    assert winner is not None and winner.candidate_id == "g001-c02"
    assert count_noise(decisions) == 2
    assert count_noise(list(decisions.values())) == 2


def test_pick_winner_ties_are_deterministic():
    a = Decision("keep", 0.01, 0.002, "", candidate_mean=0.99, runs=1, candidate_id="g002-c05")
    b = Decision("keep", 0.01, 0.002, "", candidate_mean=0.99, runs=2, candidate_id="g002-c07")
    c = Decision("keep", 0.01, 0.002, "", candidate_mean=0.99, runs=2, candidate_id="g002-c03")
    assert pick_winner([a, b, c]).candidate_id == "g002-c03"   # more runs first, then smaller id
    assert pick_winner([c, b, a]).candidate_id == "g002-c03"


def test_pick_winner_without_keeps_is_none():
    assert pick_winner([decide([1.01], [1.0], 0.001, SETTINGS), decide([0.9995], [1.0], 0.001, SETTINGS)]) is None
    assert pick_winner([]) is None
    assert pick_winner([decide([0.997], [1.0], 0.001, SETTINGS)]) is None   # "confirm" is not a win yet
