"""Noise-aware keep/discard: pure functions, no I/O.

val_bpb of identical code moves from run to run (the budget is wall-clock and GPU
kernels are not deterministic), so a lower number is not by itself a better
train.py. A candidate replaces the incumbent only when its mean beats the
incumbent's mean by more than max(min_delta, k x sigma), sigma being the pooled
spread of repeated runs of identical code (memory.noise_sigma). A winner that
clears the bar by a small margin on a single run is re-run first ("confirm");
after the confirmation run the mean of both decides.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

from agent.config import SelectionSettings

Verdict = Literal["keep", "discard", "confirm", "noise"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delta: float | None          # incumbent mean - candidate mean; > 0 means the candidate is better
    threshold: float             # the margin delta had to exceed
    reason: str                  # one human-readable sentence, stored in memory and shown in reports
    candidate_mean: float | None = None
    incumbent_mean: float | None = None
    runs: int = 0                # ok runs of the candidate behind candidate_mean
    sigma: float | None = None   # the sigma actually used (measured or prior), None when neither
    candidate_id: str | None = None


def threshold(min_delta: float, k_sigma: float, sigma: float | None) -> float:
    """The margin a candidate must beat the incumbent by: max(min_delta, k x sigma)."""
    if sigma is None:
        return float(min_delta)
    return max(float(min_delta), float(k_sigma) * float(sigma))


def _checked_mean(values: list[float], what: str) -> float:
    for value in values:
        if value is None or not math.isfinite(value):
            raise ValueError(f"{what} contains a non-finite val_bpb ({value!r}); only ok runs may be compared")
    return sum(values) / len(values)


def decide(candidate_bpbs: list[float], incumbent_bpbs: list[float], sigma: float | None,
           settings: SelectionSettings, candidate_id: str | None = None) -> Decision:
    """Judge one candidate against the incumbent (see the module docstring for the rule)."""
    if not incumbent_bpbs:
        raise ValueError("decide: the incumbent has no ok run to compare against "
                         "(run the incumbent, e.g. as a control, before judging candidates)")
    incumbent_mean = _checked_mean(list(incumbent_bpbs), "incumbent_bpbs")

    if sigma is not None:
        sigma_used, sigma_note = sigma, f"sigma {sigma:.6f} measured"
    elif settings.prior_sigma is not None:
        sigma_used, sigma_note = settings.prior_sigma, f"sigma {settings.prior_sigma:.6f} assumed (prior_sigma; no repeated runs yet)"
    else:
        sigma_used, sigma_note = None, "no noise measurement yet and no prior_sigma: threshold is min_delta only"
    bar = threshold(settings.min_delta, settings.k_sigma, sigma_used)
    common = dict(threshold=bar, incumbent_mean=incumbent_mean, sigma=sigma_used, candidate_id=candidate_id)

    if not candidate_bpbs:
        return Decision("discard", None, reason="no successful run to judge", runs=0, **common)
    candidate_mean = _checked_mean(list(candidate_bpbs), "candidate_bpbs")
    runs = len(candidate_bpbs)
    delta = incumbent_mean - candidate_mean
    common.update(candidate_mean=candidate_mean, runs=runs)
    margin = (f"mean {candidate_mean:.6f} over {runs} run(s) vs incumbent {incumbent_mean:.6f}: "
              f"delta {delta:+.6f}, threshold {bar:.6f} ({sigma_note})")

    if delta > bar:
        if runs == 1 and delta < settings.confirm_margin * bar:
            return Decision("confirm", delta, reason=f"marginal win on a single run, re-run to confirm; {margin}",
                            **common)
        return Decision("keep", delta, reason=f"beats the incumbent by more than the threshold; {margin}", **common)
    if delta > 0:
        return Decision("noise", delta, reason=f"apparent win within the noise; {margin}", **common)
    return Decision("discard", delta, reason=f"not better than the incumbent; {margin}", **common)


def pick_winner(decisions: Iterable[Decision] | Mapping[str, Decision]) -> Decision | None:
    """The "keep" with the lowest candidate mean, or None. Given a mapping of candidate id ->
    Decision, the returned Decision carries that id. Ties on the mean go to the candidate with
    more runs, then to the smaller candidate id, so the choice is deterministic."""
    if isinstance(decisions, Mapping):
        items = [d if d.candidate_id == key else dataclasses.replace(d, candidate_id=key)
                 for key, d in decisions.items()]
    else:
        items = list(decisions)
    keeps = [d for d in items if d.verdict == "keep"]
    if not keeps:
        return None
    return min(keeps, key=lambda d: (d.candidate_mean, -d.runs, d.candidate_id or ""))


def count_noise(decisions: Iterable[Decision] | Mapping[str, Decision]) -> int:
    """How many apparent wins were rejected as noise (for the report)."""
    values = decisions.values() if isinstance(decisions, Mapping) else decisions
    return sum(1 for d in values if d.verdict == "noise")
