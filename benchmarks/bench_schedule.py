"""Generations vs async on the simulated backend: slot utilization and time to the best result.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_schedule.py [--populations 10 100] [--seeds 3] [--generations 3]
    .venv/bin/python benchmarks/bench_schedule.py --max-hours 6 --generations 50    # equal time instead

Each run is the command a user types, `autoresearch autopilot --backend simulated --schedule S
--preset gpu --proposer heuristic --json`, in a fresh copy of this project (its real train.py
and prepare.py), with the simulated backend's SageMaker-like defaults: lognormal start-up of
median 90 s, 3% stragglers stuck 10x longer in start-up, 5% spot interruptions, 5% crashing
sources, 5 s of (virtual) proposal latency per round, 8 slots, a 300 s budget. The same seed
gives both schedules the same simulated world. Per run it reads the summary line and memory:

  * slot utilization: busy slot-seconds / available slot-seconds on the virtual clock;
  * makespan: virtual hours from the first launch to the last result;
  * time to best: virtual hours to the result that made the final incumbent;
  * gain: the final incumbent's TRUE val_bpb improvement over the baseline (the surrogate's
    noiseless value, result.simulation.true_bpb: what selection really found, not its noise);
  * gain @ T: the true gain each schedule's incumbent had when the faster of the two (same seed)
    had finished all its work: the comparison at equal time;
  * early stopped: candidate runs stopped, and the training hours that saved;
  * runs: executions that ended with a result.

With --max-hours H both schedules get the same virtual time instead of the same work (and as
many generations as fit): the figure to compare is then the true gain each found in that time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.memory import BASELINE_ID, Memory  # noqa: E402
from sandbox.statuses import RESULT_STATUSES  # noqa: E402


def incumbent_timeline(mem, rows: list[dict], schedule: str) -> list[tuple[float, str]]:
    """(virtual time it became the incumbent, candidate) for every incumbent, in order. The
    generations schedule promotes at the end of a generation (its last result); the async one as
    soon as the candidate's own runs have ended."""
    timeline = []
    for cid in mem.incumbent_history():
        candidate = mem.candidate(cid)
        if schedule == "generations" or cid == BASELINE_ID:
            mine = [e for e in rows if e["generation"] == candidate["generation"]]
        else:
            mine = [e for e in rows if e["candidate_id"] == cid and e["kind"] in ("candidate", "confirmation")]
        timeline.append((max(e["ended_at"] for e in mine if e["ended_at"] is not None), cid))
    return timeline


def gain_at(timeline: list[tuple[float, float]], t: float) -> float:
    """The true gain of the incumbent current at virtual time t (0 before the baseline)."""
    held = [g for when, g in sorted(timeline, key=lambda x: x[0]) if when <= t]
    return held[-1] if held else 0.0


def run_once(root: Path, schedule: str, population: int, generations: int, seed: int, slots: int,
             max_hours: float | None = None) -> dict:
    project = root / f"{schedule}-{population}-{seed}"
    project.mkdir(parents=True)
    for name in ("train.py", "prepare.py", "program.md"):
        shutil.copy(REPO / name, project / name)
    (project / "config.yaml").write_text(f"simulated:\n  seed: {seed}\n  slots: {slots}\n  start_at: 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AWS_"))}
    env["PYTHONPATH"] = str(REPO)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "autopilot", "--run", "b", "--backend", "simulated",
                           "--schedule", schedule, "--preset", "gpu", "--proposer", "heuristic", "--generations",
                           str(generations), "--population", str(population), "--json"]
                          + (["--max-hours", str(max_hours)] if max_hours else []),
                          cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 4):          # 4: --max-hours reached, as asked
        raise SystemExit(f"{schedule} pop {population} seed {seed}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.splitlines()[-1])
    with Memory.open(project / "runs" / "b", create=False) as mem:
        rows = mem.executions()
        started = min(e["started_at"] for e in rows if e["started_at"] is not None)
        ended = max(e["ended_at"] for e in rows if e["ended_at"] is not None)

        def true_bpb(cid):
            values = [e["result"]["simulation"]["true_bpb"] for e in rows if e["candidate_id"] == cid
                      and e["status"] == "ok" and (e["result"] or {}).get("simulation", {}).get("true_bpb") is not None]
            return statistics.fmean(values) if values else None
        base, best = true_bpb(BASELINE_ID), true_bpb(summary["incumbent"])
        timeline = incumbent_timeline(mem, rows, schedule)
    return {"timeline": [(t - started, (base - true_bpb(cid)) if base is not None and true_bpb(cid) is not None
                          else 0.0) for t, cid in timeline],"utilization": summary["slot_utilization"], "makespan_h": (ended - started) / 3600,
            "time_to_best_h": (summary["time_to_best_s"] or 0.0) / 3600,
            "gain": (base - best) if base is not None and best is not None else 0.0,
            "early_stopped": summary["early_stopped"], "saved_h": summary["compute_saved_s"] / 3600,
            # runs that ended with a result (the generations schedule records a whole generation's
            # rows up front: the ones a deadline left pending are not work done)
            "executions": sum(n for status, n in summary["executions"].items() if status in RESULT_STATUSES),
            "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--populations", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--max-hours", type=float, default=None, help="equal virtual time instead of equal work")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared); simulated backend, "
          f"gpu preset, {args.slots} slots, {args.generations} generations, seeds 0..{args.seeds - 1}"
          + (f", {args.max_hours} virtual hours each" if args.max_hours else ""))
    root = Path(tempfile.mkdtemp(prefix="bench-schedule-"))
    try:
        for population in args.populations:
            print(f"\n== population {population} ==")
            print(f"{'schedule':12s} {'utilization':>11s} {'makespan h':>10s} {'to best h':>9s} {'true gain':>9s} "
                  f"{'gain @ T':>8s} {'stopped':>7s} {'saved h':>7s} {'runs':>5s} {'wall s':>6s}")
            by_schedule = {schedule: [run_once(root, schedule, population, args.generations, seed, args.slots,
                                               args.max_hours)
                                      for seed in range(args.seeds)] for schedule in ("generations", "async")}
            for seed in range(args.seeds):      # the true gain each schedule holds when the faster one is done
                t = min(by_schedule[s][seed]["makespan_h"] for s in by_schedule) * 3600
                for s_runs in by_schedule.values():
                    s_runs[seed]["gain_at_equal_time"] = gain_at(s_runs[seed]["timeline"], t)
            for schedule, runs in by_schedule.items():
                mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0] if k != "timeline"}
                spread = statistics.stdev(r["utilization"] for r in runs) if len(runs) > 1 else 0.0
                print(f"{schedule:12s} {mean['utilization']:>7.3f}±{spread:.3f} {mean['makespan_h']:>10.2f} "
                      f"{mean['time_to_best_h']:>9.2f} {mean['gain']:>9.4f} {mean['gain_at_equal_time']:>8.4f} "
                      f"{mean['early_stopped']:>7.1f} "
                      f"{mean['saved_h']:>7.2f} {mean['executions']:>5.0f} {mean['wall_s']:>6.1f}")
                for seed, r in enumerate(runs):
                    print(f"  seed {seed}: utilization {r['utilization']:.3f}, makespan {r['makespan_h']:.2f} h, "
                          f"to best {r['time_to_best_h']:.2f} h, true gain {r['gain']:.4f} "
                          f"({r['gain_at_equal_time']:.4f} when the faster schedule was done), "
                          f"{r['early_stopped']} stopped, {r['wall_s']:.1f} s wall")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
