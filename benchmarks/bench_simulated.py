"""How fast is the simulated backend? N candidates through SimulatedRunner, real seconds vs
virtual seconds, with the default (SageMaker-like) start-up, stragglers, interruptions, crashes.

    .venv/bin/python benchmarks/bench_simulated.py                  # 1,000 candidates, 100 slots, gpu
    .venv/bin/python benchmarks/bench_simulated.py --candidates 1000 --slots 10 --preset micro

Each candidate is a distinct edit of train.py (Muon lr, seed) in its own workspace folder
(train.py + prepare.py, as the scheduler builds them); building them is timed apart from running.
The runner is driven the way a scheduler drives any backend: fill free slots, poll, repeat.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.runners.base import ExecutionSpec, Finished, Progress, Requeued  # noqa: E402
from sandbox.runners.simulated import SimulatedRunner, SimulatedSettings  # noqa: E402


def variants(n: int) -> list[str]:
    """n distinct train.py sources: the baseline with its Muon lr and seed moved (the runner reads
    every knob and hashes the rest; what the edit is does not matter for its speed)."""
    baseline = (ROOT / "train.py").read_text()
    assert baseline.count("MATRIX_LR = 0.04") == 1 and baseline.count("SEED = 42") == 1
    return [baseline.replace("MATRIX_LR = 0.04", f"MATRIX_LR = {0.02 + 0.04 * (i % 97) / 97:.5f}")
                    .replace("SEED = 42", f"SEED = {i}") for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=100)
    ap.add_argument("--preset", default="gpu", choices=("gpu", "cpu", "micro"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    sources = variants(args.candidates)
    with tempfile.TemporaryDirectory(prefix="bench-simulated-") as tmp:
        t0 = time.perf_counter()
        specs = []
        for i, source in enumerate(sources):
            ws = Path(tmp) / f"c{i:04d}"
            ws.mkdir()
            (ws / "train.py").write_text(source)
            shutil.copyfile(ROOT / "prepare.py", ws / "prepare.py")
            specs.append(ExecutionSpec(f"e{i:04d}", ws, args.preset))
        t_build = time.perf_counter() - t0

        runner = SimulatedRunner(SimulatedSettings(slots=args.slots, seed=args.seed, start_at=0.0),
                                 reference_source=(ROOT / "train.py").read_text())
        queue = list(reversed(specs))
        counts: Counter = Counter()
        statuses: Counter = Counter()
        polls = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        while queue or runner.active():
            while queue and runner.free_slots() > 0:
                runner.submit(queue.pop())
            polls += 1
            for event in runner.poll(timeout=float("inf")):
                counts[type(event).__name__] += 1
                if isinstance(event, Finished):
                    statuses[event.result["status"]] += 1
        t_run, cpu_run = time.perf_counter() - t0, time.process_time() - cpu0

    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} (shared)")
    print(f"simulated backend: {len(specs)} candidates, {args.slots} slots, preset {args.preset}, "
          f"default SageMaker-like settings, seed {args.seed}")
    print(f"  building the workspaces (not the runner's work): {t_build:.1f} s")
    print(f"  run: {t_run:.2f} s real ({cpu_run:.2f} s of CPU) for {runner.clock.now() / 3600:.1f} h virtual; "
          f"{t_run / len(specs) * 1000:.2f} ms real per candidate, {polls} polls")
    print(f"  events: {counts[Progress.__name__]} Progress, {counts[Requeued.__name__]} Requeued, "
          f"{counts[Finished.__name__]} Finished; statuses: {dict(statuses)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
