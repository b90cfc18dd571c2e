"""How often would the early-stopping rule stop a candidate that went on to win, and how much
compute does it save? On REAL recorded curves, plus the simulated backend for volume.

    .venv/bin/python benchmarks/bench_early_stop.py                 # every benchmarks/data/curves_*.json
    .venv/bin/python benchmarks/bench_early_stop.py --data benchmarks/data/curves_micro.json --simulated 0

For each recording (benchmarks/record_curves.py: the incumbent's repeats and heuristic-proposer
candidates, each with its full curve and final val_bpb), many times over: draw n reference runs
from the incumbent's repeats (what the scheduler would hold as controls), replay every candidate's
curve through agent.early_stop.first_stop against them, and count

  * winners: candidates whose final val_bpb beat the references' mean by more than the selection
    threshold max(min_delta, k_sigma x sigma) (agent.config.SelectionSettings; sigma = the spread
    of the incumbent's repeats);
  * false stops: winners the rule stopped (the figure to keep rare), as a share of winners;
  * null stops: the incumbent's OTHER repeats (identical code) the rule stopped;
  * compute saved: the share of the candidates' training budget the stops did not spend.

The simulated part does the same with the surrogate (sandbox/runners/surrogate.py) on heuristic
proposals at the gpu preset, scoring winners by their noisy final val_bpb as above.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import SelectionSettings  # noqa: E402
from agent.early_stop import EarlyStopSettings  # noqa: E402
from sandbox.early_stop_rule import first_stop_observed, observe  # noqa: E402
from agent.selection import threshold as selection_threshold  # noqa: E402

# One guard at a time moved off the chosen default, to show what each buys.
NEARBY = ({"min_progress": 30.0}, {"min_progress": 50.0}, {"min_gap": 0.01}, {"min_gap": 0.03}, {"k": 2.0},
          {"patience": 1})
GRID = {"k": (2.0, 3.0, 4.0), "min_gap": (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04), "min_progress": (20.0, 30.0, 50.0),
        "patience": (1, 2, 3)}


@dataclass
class Run:
    kind: str                    # baseline (the incumbent's repeats) | candidate
    val_bpb: float
    curve: list
    load: float | None = None
    true_bpb: float | None = None


def load_recording(path: Path, max_load: float = 0.0) -> tuple[dict, list[Run], int, int]:
    """(the file, its ok runs with a curve, how many runs were not ok, how many were left out
    for starting on a machine loaded above max_load)."""
    data = json.loads(path.read_text())
    runs, failed, loaded = [], 0, 0
    for r in data["runs"]:
        if r.get("status") != "ok" or r.get("val_bpb") is None or len(r.get("curve") or []) < 2:
            failed += 1
        elif max_load and (r.get("load1_at_start") or 0.0) >= max_load:
            loaded += 1
        else:
            runs.append(Run(r["kind"], float(r["val_bpb"]), r["curve"], r.get("load1_at_start")))
    return data, runs, failed, loaded


@dataclass
class Tally:
    candidates: int = 0
    stopped: int = 0
    winners: int = 0
    false_stops: int = 0
    nulls: int = 0
    null_stops: int = 0
    saved: float = 0.0           # budgets not spent (sum of 1 - pct/100 over stops)

    def row(self) -> str:
        fs = f"{self.false_stops}/{self.winners}" + (f" ({self.false_stops / self.winners:5.1%})" if self.winners else "")
        ns = f"{self.null_stops / self.nulls:5.1%}" if self.nulls else "  n/a"
        return (f"stopped {self.stopped / max(1, self.candidates):5.1%}  false stops {fs:>16}  "
                f"null stops {ns}  saved {self.saved / max(1, self.candidates):5.1%}")


def settings_grid(n_refs: int) -> list[EarlyStopSettings]:
    return [EarlyStopSettings(min_references=n_refs, **dict(zip(GRID, values)))
            for values in itertools.product(*GRID.values())]


def evaluate(runs: list[Run], n_refs: int, draws: int, grid: list[EarlyStopSettings], seed: int,
             selection: SelectionSettings) -> dict[int, Tally]:
    """Tallies per settings index over `draws` random reference sets of size n_refs."""
    repeats = [r for r in runs if r.kind == "baseline"]
    candidates = [r for r in runs if r.kind == "candidate"]
    sigma = statistics.stdev(r.val_bpb for r in repeats)
    bar = selection_threshold(selection.min_delta, selection.k_sigma, sigma)
    rng = random.Random(f"bench-early-stop:{seed}:{n_refs}")
    combos = list(itertools.combinations(range(len(repeats)), n_refs))
    picks = combos if len(combos) <= draws else rng.sample(combos, draws)
    tallies = {i: Tally() for i in range(len(grid))}
    for pick in picks:
        refs = [repeats[i] for i in pick]
        others = [r for i, r in enumerate(repeats) if i not in pick]
        incumbent = statistics.fmean(r.val_bpb for r in refs)
        ref_curves = [r.curve for r in refs]
        observed = [(c, observe(ref_curves, c.curve)) for c in candidates]
        observed_nulls = [observe(ref_curves, r.curve) for r in others]
        for i, settings in enumerate(grid):
            t = tallies[i]
            for c, (n, obs) in observed:
                decision = first_stop_observed(n, obs, settings)
                winner = c.val_bpb < incumbent - bar
                t.candidates += 1
                t.winners += winner
                if decision is not None:
                    t.stopped += 1
                    t.false_stops += winner
                    t.saved += 1.0 - decision.pct / 100.0
            for n, obs in observed_nulls:
                t.nulls += 1
                t.null_stops += first_stop_observed(n, obs, settings) is not None
    return tallies


def describe(settings: EarlyStopSettings) -> str:
    return (f"k {settings.k:g}  min_gap {settings.min_gap:<4g}  min_progress {settings.min_progress:>2g}%  "
            f"patience {settings.patience}")


def report(name: str, runs: list[Run], draws: int, seed: int, chosen: EarlyStopSettings, top: int) -> None:
    selection = SelectionSettings()
    repeats = [r for r in runs if r.kind == "baseline"]
    candidates = [r for r in runs if r.kind == "candidate"]
    sigma = statistics.stdev(r.val_bpb for r in repeats)
    bar = selection_threshold(selection.min_delta, selection.k_sigma, sigma)
    print(f"  rests on {len(repeats)} incumbent repeats + {len(candidates)} candidates ({len(runs)} curves, "
          f"{statistics.fmean(len(r.curve) for r in runs):.0f} readings each on average)")
    print(f"  incumbent val_bpb {statistics.fmean(r.val_bpb for r in repeats):.4f} +/- {sigma:.4f} (sd of "
          f"repeats); selection threshold max({selection.min_delta:g}, {selection.k_sigma:g} x sd) = {bar:.4f}")
    print(calibration(runs))
    for n_refs in (2, 3):
        if len(repeats) < n_refs + 1:
            continue
        grid = settings_grid(n_refs)
        chosen_here = chosen.model_copy(update={"min_references": n_refs})
        nearby = [chosen_here.model_copy(update=change) for change in NEARBY]
        tallies = evaluate(runs, n_refs, draws, grid + [chosen_here] + nearby, seed, selection)
        some = tallies[0]
        print(f"  -- {n_refs} references ({some.candidates // max(1, len(candidates))} draws; "
              f"winners per draw {some.winners / max(1, some.candidates) * len(candidates):.1f})")
        # the frontier: settings no other setting beats on both false stops and compute saved
        # (null stops break ties: stopping identical code is the noise floor's false alarm)
        key = lambda i: (tallies[i].false_stops, tallies[i].null_stops, -tallies[i].saved)  # noqa: E731
        frontier, best_saved = [], -1.0
        for i in sorted(range(len(grid)), key=key):
            if tallies[i].saved > best_saved + 1e-9:
                frontier.append(i)
                best_saved = tallies[i].saved
        print(f"     frontier (least false stops first; each row saves more than the rows above):")
        for i in frontier[:top]:
            print(f"     {describe(grid[i])}  {tallies[i].row()}")
        print(f"  => chosen default ({describe(chosen)}): {tallies[len(grid)].row()}")
        for j, other in enumerate(nearby):
            print(f"     next to it: {describe(other)}  {tallies[len(grid) + 1 + j].row()}")


def calibration(runs: list[Run]) -> str:
    """What the surrogate's PresetModel should say for these runs, and how often curves cross:
    the figures to compare between a real recording and the simulated backend."""
    repeats = [r for r in runs if r.kind == "baseline"]
    candidates = [r for r in runs if r.kind == "candidate"]
    if len(repeats) < 2:
        return "  (calibration needs two incumbent repeats)"
    from sandbox.early_stop_rule import interpolate, reference_band
    incumbent = statistics.fmean(r.val_bpb for r in repeats)
    at = lambda c, pct: interpolate(c, pct)  # noqa: E731
    mids = [v for v in (at(r.curve, 50.0) for r in repeats) if v is not None]
    lines = [f"  calibration: start loss {statistics.fmean(r.curve[0][1] for r in repeats):.3f}, last reading "
             f"{statistics.fmean(r.curve[-1][1] for r in repeats):.3f} at {statistics.fmean(r.curve[-1][0] for r in repeats):.0f}% "
             f"(mean of repeats); loss sd at 50% across repeats "
             f"{statistics.stdev(mids) if len(mids) > 1 else float('nan'):.4f}"]
    # crossing: candidates behind the incumbent's mean curve at 40% that still ended ahead of it
    behind_then_ahead = ahead = behind = 0
    for c in candidates:
        band = reference_band([r.curve for r in repeats], 40.0)
        loss40 = at(c.curve, 40.0)
        if loss40 is None or band.n < 2:
            continue
        ended_ahead = c.val_bpb < incumbent
        ahead += ended_ahead
        if loss40 > band.mean + band.spread:
            behind += 1
            behind_then_ahead += ended_ahead
    lines.append(f"  crossing: {behind} candidates were > 1 sd behind the incumbent's mean curve at 40%; "
                 f"{behind_then_ahead} of them still ended with a lower val_bpb than the incumbent's mean "
                 f"({ahead} candidates ended lower in all)")
    return "\n".join(lines)


def simulated_runs(preset: str, candidates: int, repeats: int, seed: int) -> list[Run]:
    """The surrogate's runs of heuristic proposals and of the baseline, with their true quality."""
    from agent.proposers.base import ProposalRequest
    from agent.proposers.heuristic import HeuristicProposer
    from sandbox.runners.surrogate import Surrogate

    baseline = (ROOT / "train.py").read_text()
    surrogate = Surrogate(seed, reference_source=baseline)
    per = -(-candidates // 3)
    request = ProposalRequest(incumbent_source=baseline, incumbent_id="baseline", program_md="", digest="",
                              slots={"conservative": per, "moderate": per, "aggressive": per}, preset=preset,
                              generation=1, seed=seed)
    sources = [p.source for p in HeuristicProposer(seed=seed, project_dir=ROOT).propose(request) if p.accepted]
    runs = []
    for i in range(repeats):
        m = surrogate.run(baseline, preset, f"repeat{i}")
        runs.append(Run("baseline", m["val_bpb"], m["curve"], true_bpb=m["true_bpb"]))
    for i, source in enumerate(sources[:candidates]):
        m = surrogate.run(source, preset, f"candidate{i}")
        if m["status"] == "ok":
            runs.append(Run("candidate", m["val_bpb"], m["curve"], true_bpb=m["true_bpb"]))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, nargs="*", default=None,
                    help="recordings (default: benchmarks/data/curves_*.json)")
    ap.add_argument("--draws", type=int, default=40, help="reference sets drawn per recording")
    ap.add_argument("--simulated", type=int, default=300, help="simulated candidates (0 = none)")
    ap.add_argument("--simulated-preset", default="gpu")
    ap.add_argument("--top", type=int, default=8, help="grid rows shown per case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-load", type=float, default=0.0,
                    help="also show each recording restricted to runs started below this load average")
    args = ap.parse_args(argv)
    chosen = EarlyStopSettings()
    paths = args.data if args.data is not None else sorted((ROOT / "benchmarks" / "data").glob("curves_*.json"))
    total_curves = 0
    for path in paths:
        data, runs, failed, _ = load_recording(path)
        total_curves += len(runs)
        print(f"== recorded: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} (preset {data['preset']}, "
              f"budget {data.get('budget_seconds')} s, measurement version {data.get('measurement_version')}; "
              f"{failed} run(s) without an ok result left out)")
        for batch in data.get("batches", []):
            print(f"  batch {batch.get('started_at')} .. {batch.get('ended_at')}: {batch.get('runs')} runs, "
                  f"commit {batch.get('commit')}; {batch.get('note') or ''}")
        report(path.name, runs, args.draws, args.seed, chosen, args.top)
        if args.max_load:
            _, quiet, _, loaded = load_recording(path, args.max_load)
            print(f"== the same, only runs started at load average < {args.max_load:g} ({loaded} left out)")
            report(path.name, quiet, args.draws, args.seed, chosen, args.top)
    if args.simulated:
        runs = simulated_runs(args.simulated_preset, args.simulated, 12, args.seed)
        print(f"== simulated: surrogate, preset {args.simulated_preset}, {len(runs)} runs")
        report("simulated", runs, args.draws, args.seed, chosen, args.top)
    print(f"(real curves behind these figures: {total_curves})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
