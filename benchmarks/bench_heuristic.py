"""Time per heuristic proposal, with and without the integrity checker. Prints figures; asserts nothing.

Drives the proposer as the loop does, on the project's real train.py: per preset, G generations of
10 slots (the default 3/4/2/1 mix), seen fingerprints accumulating, scored candidates becoming
crossover parents. `sandbox.candidate.check_source` and `build_candidate` are wrapped with timers, so
each request's wall time splits into the checker's share and the proposer's own work (drafting,
libcst knob lines, edit application, fingerprints). Also counts drafts built per proposal and
slots filled by a fallback class.

    .venv/bin/python benchmarks/bench_heuristic.py [--generations 10] [--presets micro,cpu,gpu] [--slots 10]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sandbox.candidate as candidate  # noqa: E402
from agent.proposing import strategy_slots  # noqa: E402
from agent.proposers import heuristic  # noqa: E402
from agent.proposers.base import PastCandidate, ProposalRequest  # noqa: E402

MIX = {"conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1}


class Timed:
    """Wraps a function and adds up the wall time spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


def stats(values: list[float]) -> str:
    return f"median {statistics.median(values):6.1f} ms   mean {statistics.fmean(values):6.1f} ms"


def run(preset: str, generations: int, population: int, seed: int) -> None:
    check = Timed(candidate.check_source)
    build = Timed(heuristic.build_candidate)
    candidate.check_source, heuristic.build_candidate = check, build
    try:
        source = (ROOT / "train.py").read_text()
        proposer = heuristic.HeuristicProposer(seed=seed)
        rng = random.Random(seed)
        seen: set[str] = set()
        recent: list[PastCandidate] = []
        with_check, without_check, first = [], [], None
        proposals_total = fallbacks = builds = 0
        slots = strategy_slots(MIX, population)
        for generation in range(1, generations + 1):
            request = ProposalRequest(source, "g000-baseline", "", "", dict(slots), preset, generation,
                                      seed * 1000 + generation, list(recent), set(seen))
            c0, b0 = check.seconds, build.calls
            t = time.perf_counter()
            proposals = proposer.propose(request)
            wall = time.perf_counter() - t
            checking = check.seconds - c0
            n = max(1, len(proposals))
            if generation == 1:
                first = wall / n * 1000      # includes the libcst parse of a new incumbent
            with_check.append(wall / n * 1000)
            without_check.append((wall - checking) / n * 1000)
            builds += build.calls - b0
            proposals_total += len(proposals)
            fallbacks += sum(" slot filled with " in p.hypothesis for p in proposals)
            seen.update(p.fingerprint for p in proposals)
            recent = sorted(recent + [PastCandidate(f"g{generation:03d}-{i}", p.strategy, p.title, p.edits,
                                                    rng.gauss(1.0, 0.01)) for i, p in enumerate(proposals)],
                            key=lambda c: c.val_bpb)[:10]
        asked = generations * population
        print(f"{preset:5s} {proposals_total}/{asked} slots filled, {fallbacks} by a fallback class, "
              f"{builds / max(1, proposals_total):.2f} checked drafts per proposal, "
              f"first generation {first:.1f} ms per proposal")
        print(f"      per proposal, with the check:    {stats(with_check)}")
        print(f"      per proposal, without the check: {stats(without_check)}")
        print(f"      checker alone: {check.seconds / max(1, check.calls) * 1000:.1f} ms per call "
              f"({check.calls} calls)")
    finally:
        candidate.check_source, heuristic.build_candidate = check.fn, build.fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--slots", type=int, default=10, help="slots per generation (the population)")
    parser.add_argument("--presets", default="micro,cpu,gpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"heuristic proposer: {args.generations} generations x {args.slots} slots per preset "
          f"(medians/means over generations; a generation's wall time / its proposals)")
    for preset in args.presets.split(","):
        run(preset.strip(), args.generations, args.slots, args.seed)


if __name__ == "__main__":
    main()
