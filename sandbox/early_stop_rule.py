"""Early stopping: is a running candidate clearly losing against the incumbent's controls?

Pure functions, no I/O, STDLIB ONLY: the orchestrator runs the rule (agent/stopping.py), and so
does a network-isolated packed SageMaker job (sm_entry.py), which no stop request can reach. The
caller feeds in the incumbent's reference curves (the `curve` of its ok control and baseline runs:
[[pct, loss], ...], pct 0..100 of the training budget) and the running candidate's partial curve
(its progress readings so far), and records the decision's figures as the stop reason.

The rule compares at EQUAL PROGRESS, never at equal wall time: each reference curve is
interpolated at the candidate's pct, giving a band of their mean and measured spread (sample
standard deviation) there. A reading is losing when

    candidate loss - reference mean > max(k x spread, min_gap x reference mean)

The candidate is stopped when its last `patience` readings, all at or past `min_progress`, are
losing. Why each guard:
  * min_progress: early losses say little about the final val_bpb (a higher lr or a bigger model
    starts slower and may still win), and stopping late saves little;
  * min_gap: two or three references can agree by chance, so their spread alone may be ~0; it is
    relative (0.01 = 1% of the reference loss) so that one value suits every preset's loss scale;
  * patience: train losses are noisy step to step; one bad reading must not end a run;
  * min_references: a band needs at least two curves to have a spread at all.
The defaults are chosen from real recorded curves (benchmarks/bench_early_stop.py prints the
false-stop rate and the compute saved behind them).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Literal, Optional, Protocol, Sequence

Curve = Sequence[Sequence[float]]          # [[pct, loss], ...] in increasing pct

Code = Literal["losing", "within_band", "not_held", "before_min_progress", "not_enough_references",
               "no_reading", "disabled"]


@dataclass(frozen=True)
class RuleSettings:
    """The rule's guards and their defaults (the config section `early_stop:` validates these,
    agent/early_stop.py). Defaults chosen with benchmarks/bench_early_stop.py (run it for the
    figures): on the recorded curves they never stopped a later winner; on the simulated gpu
    preset, where bigger models start slow and win late, min_progress 30% or min_gap 1% did."""

    enabled: bool = True
    min_progress: float = 40.0      # % of the budget before any stop
    k: float = 3.0                  # band half-width in reference spreads
    min_gap: float = 0.02           # the band's floor, x the reference mean loss
    patience: int = 3               # consecutive losing readings needed
    min_references: int = 2         # reference curves needed to decide at all

    @classmethod
    def from_dict(cls, data: dict) -> "RuleSettings":
        """From a job manifest: the known fields, nothing else."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class Settings(Protocol):
    """What the rule reads: RuleSettings, or the validated config section."""

    enabled: bool
    min_progress: float
    k: float
    min_gap: float
    patience: int
    min_references: int


@dataclass(frozen=True)
class StopDecision:
    """What the rule said about one candidate at its latest reading, with the figures."""

    stop: bool
    code: Code
    reason: str                          # one sentence with the figures, for logs and reports
    pct: Optional[float] = None          # the candidate's progress at the latest reading
    candidate_loss: Optional[float] = None
    reference_mean: Optional[float] = None
    spread: Optional[float] = None       # sample std of the references at pct
    threshold: Optional[float] = None    # the gap over the mean a losing reading must exceed
    gap: Optional[float] = None          # candidate_loss - reference_mean
    n_references: int = 0
    losing_readings: int = 0             # how many of the latest readings in a row were losing

    def as_reason(self) -> dict:
        """The dict the runner stores under result["early_stop"]."""
        return {"rule": "early_stop/v1", **asdict(self)}


@dataclass(frozen=True)
class Band:
    mean: float
    spread: float
    n: int


class _Prepared:
    """A reference curve checked and split once (the rule runs on every Progress event)."""

    __slots__ = ("pcts", "losses")

    def __init__(self, curve: Curve):
        # stable by pct: of several readings at one pct (untimed warm-up steps sit at 0%) the
        # latest counts
        points = sorted(((float(p), float(v)) for p, v in curve if math.isfinite(float(v))), key=lambda t: t[0])
        self.pcts = [p for p, _ in points]
        self.losses = [v for _, v in points]

    def at(self, pct: float) -> Optional[float]:
        pcts, losses = self.pcts, self.losses
        if not pcts or pct < pcts[0] or pct > pcts[-1]:
            return None
        i = bisect.bisect_right(pcts, pct) - 1        # the last reading at or before pct
        if pcts[i] == pct:
            return losses[i]
        p0, p1 = pcts[i], pcts[i + 1]
        return losses[i] + (losses[i + 1] - losses[i]) * (pct - p0) / (p1 - p0)


def interpolate(curve: Curve, pct: float) -> Optional[float]:
    """The curve's loss at `pct` (linear between readings); None outside the curve's range,
    because extrapolating a loss curve says nothing we could defend."""
    return _Prepared(curve).at(pct)


def _band(prepared: Sequence[_Prepared], pct: float) -> Band:
    values = [v for v in (c.at(pct) for c in prepared) if v is not None]
    n = len(values)
    if n == 0:
        return Band(math.nan, math.nan, 0)
    mean = sum(values) / n
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Band(mean, spread, n)


def reference_band(references: Iterable[Curve], pct: float) -> Band:
    """Mean and sample standard deviation of the references' losses at `pct` (those that reach
    it); spread is 0 for a single value."""
    return _band([_Prepared(c) for c in references], pct)


def reference_curves(results: Iterable[dict]) -> list[list[list[float]]]:
    """The usable curves of the incumbent's results: status ok, a `curve` of two or more readings."""
    curves = []
    for result in results:
        curve = result.get("curve") if isinstance(result, dict) else None
        if result.get("status") == "ok" and isinstance(curve, list) and len(curve) >= 2:
            curves.append(curve)
    return curves


@dataclass(frozen=True)
class Observation:
    """One reading of the candidate with the reference band at its progress."""

    pct: float
    loss: float
    band: Band


def _usable(references: Iterable[Curve]) -> list[_Prepared]:
    return [c for c in (_Prepared(r) for r in references) if len(c.pcts) >= 2]


def observe(references: Sequence[Curve], candidate: Curve) -> tuple[int, list[Observation]]:
    """(usable reference curves, every finite reading of the candidate with its band). The band
    does not depend on the settings: benchmarks observe once and try many settings."""
    usable = _usable(references)
    return len(usable), [Observation(p, v, _band(usable, p)) for p, v in _finite(candidate)]


def decide(references: Sequence[Curve], candidate: Curve, settings: Settings) -> StopDecision:
    """Stop the candidate now? See the module docstring for the rule."""
    usable = _usable(references)
    latest = _finite(candidate)[-settings.patience:]
    return _decide(len(usable), [Observation(p, v, _band(usable, p)) for p, v in latest], settings)


def first_stop(references: Sequence[Curve], candidate: Curve,
               settings: Settings) -> Optional[StopDecision]:
    """Replay a whole curve reading by reading, as the scheduler sees it arrive: the first
    decision that stops it, or None when it would have run to the end."""
    return first_stop_observed(*observe(references, candidate), settings)


def first_stop_observed(n_references: int, observations: Sequence[Observation],
                        settings: Settings) -> Optional[StopDecision]:
    """first_stop on what observe() returned."""
    if not settings.enabled or n_references < settings.min_references:
        return None
    # _decide stops exactly when the newest `patience` readings are all losing; count them as
    # they arrive instead of building a decision (and its sentence) for every reading
    run = 0
    for i, obs in enumerate(observations):
        run = run + 1 if _losing(obs, settings) else 0
        if run >= settings.patience:
            return _decide(n_references, observations[i + 1 - settings.patience:i + 1], settings)
    return None


def _finite(curve: Curve) -> list[tuple[float, float]]:
    """The readings as floats, a NaN loss dropped (it is no reading)."""
    return [(float(p), float(v)) for p, v in curve if math.isfinite(float(v))]


def _decide(n_references: int, latest: Sequence[Observation], settings: Settings) -> StopDecision:
    """The decision at the last of `latest` (the newest `patience` readings, oldest first)."""
    if not settings.enabled:
        return StopDecision(False, "disabled", "early stopping is disabled")
    if not latest:
        return StopDecision(False, "no_reading", "no loss reading yet", n_references=n_references)
    now = latest[-1]
    pct, loss = now.pct, now.loss
    if n_references < settings.min_references:
        return StopDecision(False, "not_enough_references",
                            f"not enough references: {n_references} reference curve(s), "
                            f"{settings.min_references} needed", pct=pct, candidate_loss=loss,
                            n_references=n_references)
    if pct < settings.min_progress:
        return StopDecision(False, "before_min_progress",
                            f"at {pct:.1f}% of the budget, before min_progress {settings.min_progress:g}%",
                            pct=pct, candidate_loss=loss, n_references=n_references)
    if now.band.n < settings.min_references:
        return StopDecision(False, "not_enough_references",
                            f"not enough references at {pct:.1f}%: {now.band.n} curve(s) reach it, "
                            f"{settings.min_references} needed", pct=pct, candidate_loss=loss,
                            n_references=now.band.n)
    # count losing readings backwards from the newest; each is judged against its own band
    losing = 0
    for obs in reversed(latest):
        if not _losing(obs, settings):
            break
        losing += 1
    band, threshold = now.band, _threshold(now.band, settings)
    figures = dict(pct=pct, candidate_loss=loss, reference_mean=band.mean, spread=band.spread,
                   threshold=threshold, gap=loss - band.mean, n_references=band.n, losing_readings=losing)
    summary = (f"at {pct:.1f}%: loss {loss:.4f} vs reference mean {band.mean:.4f} of {band.n} curves "
               f"(spread {band.spread:.4f}), gap {loss - band.mean:+.4f}, threshold {threshold:.4f} "
               f"= max({settings.k:g} x spread, min_gap {settings.min_gap:g} x mean)")
    if losing >= settings.patience:
        return StopDecision(True, "losing", f"losing: {summary}, for {losing} reading(s) in a row", **figures)
    if losing == 0:
        return StopDecision(False, "within_band", f"within the band: {summary}", **figures)
    return StopDecision(False, "not_held", f"losing for {losing} of {settings.patience} readings needed: "
                                           f"{summary}", **figures)


def _losing(obs: Observation, settings: Settings) -> bool:
    """One reading, on its own: past min_progress, enough references reach it, and worse than
    the band by more than the threshold."""
    return (obs.pct >= settings.min_progress and obs.band.n >= settings.min_references
            and obs.loss - obs.band.mean > _threshold(obs.band, settings))


def _threshold(band: Band, settings: Settings) -> float:
    return max(settings.k * band.spread, settings.min_gap * abs(band.mean))
