"""The early-stopping rule on synthetic curves: equal-progress comparison against the band of the
incumbent's reference curves, and each guard (min_progress, min_gap, patience, min_references)."""
from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from agent.early_stop import EarlyStopSettings
from sandbox.early_stop_rule import (
    RuleSettings, StopDecision, decide, first_stop, interpolate, reference_band, reference_curves,
)


def curve(end: float, start: float = 6.0, points: int = 21, wiggle: float = 0.0, shift: float = 0.0) -> list:
    """A smooth decaying loss curve from `start` to `end` over 0..100%, optionally wiggled by
    +/- `wiggle` (alternating) and shifted in pct (a reference sampled at other progress points)."""
    out = []
    for i in range(points):
        pct = min(100.0, 100.0 * i / (points - 1) + shift)
        loss = end + (start - end) * math.exp(-pct / 25.0) + (wiggle if i % 2 else -wiggle)
        out.append([pct, loss])
    return out


REFS = [curve(4.00), curve(4.02, shift=1.3), curve(3.99, shift=0.7)]
SETTINGS = EarlyStopSettings(min_progress=30, k=3, min_gap=0.0125, patience=3, min_references=2)


def upto(c: list, pct: float) -> list:
    return [p for p in c if p[0] <= pct]


def test_clearly_losing_candidate_is_stopped_with_the_figures():
    candidate = upto(curve(4.40), 60)
    d = decide(REFS, candidate, SETTINGS)
    assert d.stop and d.code == "losing"
    assert d.pct == 60 and d.candidate_loss == pytest.approx(candidate[-1][1])
    assert d.n_references == 3 and d.losing_readings == 3
    band = reference_band(REFS, 60)
    assert d.reference_mean == pytest.approx(band.mean) and d.spread == pytest.approx(band.spread)
    assert d.threshold == pytest.approx(max(3 * band.spread, 0.0125 * band.mean))
    assert d.gap == pytest.approx(d.candidate_loss - d.reference_mean) and d.gap > d.threshold
    for figure in ("60.0%", f"{d.candidate_loss:.4f}", f"{d.reference_mean:.4f}", "3 curves"):
        assert figure in d.reason
    reason = d.as_reason()       # what the runner stores under result["early_stop"]
    assert reason["stop"] is True and reason["pct"] == 60 and reason["rule"] == "early_stop/v1"


def test_within_the_band_goes_on():
    d = decide(REFS, upto(curve(4.03), 80), SETTINGS)
    assert not d.stop and d.code == "within_band" and d.gap < d.threshold


def test_a_better_candidate_is_never_stopped():
    assert first_stop(REFS, curve(3.80), SETTINGS) is None


def test_before_min_progress_goes_on_however_bad():
    d = decide(REFS, upto(curve(5.5), 25), SETTINGS)
    assert not d.stop and d.code == "before_min_progress" and d.pct == 25


def test_too_few_references_never_decide():
    d = decide(REFS[:1], upto(curve(5.5), 90), SETTINGS)
    assert not d.stop and d.code == "not_enough_references" and d.n_references == 1
    assert "not enough references" in d.reason
    # a curve with one reading is no reference either
    assert decide([REFS[0], [[0.0, 6.0]]], upto(curve(5.5), 90), SETTINGS).code == "not_enough_references"


def test_references_that_do_not_reach_the_candidates_progress_do_not_count():
    short = [upto(c, 50) for c in REFS]           # controls that stopped reporting at 50%
    d = decide(short, upto(curve(5.0), 70), SETTINGS)
    assert not d.stop and d.code == "not_enough_references"


def test_min_gap_guards_against_references_that_agree_by_chance():
    identical = [curve(4.0), curve(4.0)]          # spread 0: without min_gap any gap would stop
    candidate = upto(curve(4.03), 70)
    assert not decide(identical, candidate, SETTINGS).stop
    assert decide(identical, candidate, SETTINGS.model_copy(update={"min_gap": 0.0})).stop


def test_one_noisy_reading_does_not_stop_with_patience():
    candidate = upto(curve(4.0), 60)
    candidate[-1] = [candidate[-1][0], candidate[-1][1] + 1.0]      # one spike
    d = decide(REFS, candidate, SETTINGS)
    assert not d.stop and d.code == "not_held" and d.losing_readings == 1
    assert decide(REFS, candidate, SETTINGS.model_copy(update={"patience": 1})).stop
    # the spike passes: the next reading is back in the band and the count starts over
    later = candidate + [[65.0, interpolate(curve(4.0), 65.0)]]
    assert decide(REFS, later, SETTINGS).code == "within_band"


def test_patience_readings_must_all_be_past_min_progress():
    candidate = upto(curve(4.6), 35)              # losing, but only 2 readings at >= 30%
    d = decide(REFS, candidate, SETTINGS.model_copy(update={"patience": 3}))
    assert not d.stop and d.losing_readings == 2


def test_disabled_and_empty():
    assert decide(REFS, upto(curve(5.5), 90), SETTINGS.model_copy(update={"enabled": False})).code == "disabled"
    assert decide(REFS, [], SETTINGS).code == "no_reading"
    nan_only = [[50.0, float("nan")]]
    assert decide(REFS, nan_only, SETTINGS).code == "no_reading"


def test_first_stop_replays_a_curve_as_it_arrives():
    d = first_stop(REFS, curve(4.40), SETTINGS)
    assert isinstance(d, StopDecision) and d.stop
    assert 30 <= d.pct <= 50           # the first moment all three guards allow it


def test_interpolation_compares_at_equal_progress():
    c = [[0.0, 6.0], [0.0, 5.9], [50.0, 5.0], [100.0, 4.0]]
    assert interpolate(c, 25.0) == pytest.approx(5.45)   # between the LAST 0% reading and 50%
    assert interpolate(c, 100.0) == 4.0
    assert interpolate(c, 100.5) is None and interpolate(c, -1) is None   # never extrapolated
    band = reference_band([[[0, 6.0], [100, 4.0]], [[0, 6.0], [100, 4.2]]], 50.0)
    assert band.n == 2 and band.mean == pytest.approx(5.05) and band.spread == pytest.approx(0.1 / math.sqrt(2))


def test_reference_curves_takes_ok_results_with_a_curve():
    results = [{"status": "ok", "curve": REFS[0]}, {"status": "crash", "curve": REFS[1]},
               {"status": "ok", "curve": [[0, 6.0]]}, {"status": "ok", "curve": None}, {"status": "ok"}]
    assert reference_curves(results) == [REFS[0]]


def test_settings_are_strict():
    with pytest.raises(ValidationError, match="min_referencez"):
        EarlyStopSettings(min_referencez=3)
    with pytest.raises(ValidationError):
        EarlyStopSettings(min_references=1)
    with pytest.raises(ValidationError):
        EarlyStopSettings(min_progress=120)


def test_first_stop_is_decide_on_each_prefix():
    """The fast replay must say exactly what the scheduler's call per reading says."""
    import random
    rng = random.Random(3)
    stops = 0
    for trial in range(60):
        settings = EarlyStopSettings(k=rng.choice((1.0, 3.0)), min_gap=rng.choice((0.0, 0.03)),
                                     min_progress=rng.choice((10.0, 40.0)), patience=rng.choice((1, 2, 3)))
        refs = [curve(4.0 + rng.gauss(0, 0.03), wiggle=0.02, shift=rng.uniform(0, 2)) for _ in range(rng.choice((2, 3)))]
        candidate = curve(4.0 + rng.gauss(0, 0.1), wiggle=rng.choice((0.0, 0.05)), points=rng.choice((11, 41)))
        naive = next((d for d in (decide(refs, candidate[:i], settings) for i in range(1, len(candidate) + 1))
                      if d.stop), None)
        assert first_stop(refs, candidate, settings) == naive, trial
        stops += naive is not None
    assert 10 < stops < 50          # both outcomes are exercised


def test_the_rule_stops_a_losing_candidate_on_the_simulated_backend(tmp_path):
    """The two pieces together, the way a scheduler uses them: the incumbent's ok runs give the
    references; each Progress of a candidate is judged; a stop goes to runner.stop_early."""
    import shutil
    from pathlib import Path
    from sandbox.runners.base import ExecutionSpec, Finished, Progress
    from sandbox.runners.simulated import SimulatedRunner, SimulatedSettings

    repo = Path(__file__).resolve().parents[1]
    baseline = (repo / "train.py").read_text()

    def ws(name, source):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train.py").write_text(source)
        shutil.copyfile(repo / "prepare.py", folder / "prepare.py")
        return folder

    runner = SimulatedRunner(SimulatedSettings(start_at=0, interruption_rate=0, straggler_rate=0, crash_rate=0,
                                               slots=3), reference_source=baseline)
    for i in range(2):
        runner.submit(ExecutionSpec(f"control{i}", ws(f"c{i}", baseline), "gpu"))
    results = {}
    while runner.active():
        results.update({e.execution_id: e.result for e in runner.poll(float("inf")) if isinstance(e, Finished)})
    references = reference_curves(results.values())
    assert len(references) == 2

    losing = baseline.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.4")      # 10x the Muon lr
    winning = baseline.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    runner.submit(ExecutionSpec("bad", ws("bad", losing), "gpu"))
    runner.submit(ExecutionSpec("good", ws("good", winning), "gpu"))
    curves, done, settings = {"bad": [], "good": []}, {}, EarlyStopSettings()
    while runner.active():
        for event in runner.poll(float("inf")):
            if isinstance(event, Progress):
                curves[event.execution_id].append([event.pct, event.loss])
                decision = decide(references, curves[event.execution_id], settings)
                if decision.stop:
                    runner.stop_early(event.execution_id, decision.as_reason())
            elif isinstance(event, Finished):
                done[event.execution_id] = event.result
    assert done["good"]["status"] == "ok" and "early_stop" not in done["good"]
    bad = done["bad"]
    assert bad["status"] == "stopped_early" and bad["early_stop"]["code"] == "losing"
    assert settings.min_progress <= bad["early_stop"]["pct"] < 100
    assert bad["early_stop"]["gap"] > bad["early_stop"]["threshold"] and "losing: at" in bad["failure_reason"]


def test_the_config_section_and_the_rule_share_their_defaults():
    """One place for the defaults: the stdlib rule a job runs decides as the validated section does."""
    assert EarlyStopSettings().model_dump() == RuleSettings().__dict__
    section = EarlyStopSettings(min_progress=30, patience=2)
    assert RuleSettings.from_dict({**section.model_dump(), "unknown": 1}) == RuleSettings(min_progress=30, patience=2)
    refs, losing = [curve(3.0), curve(3.02)], curve(3.6)
    assert decide(refs, losing, section) == decide(refs, losing, RuleSettings.from_dict(section.model_dump()))
