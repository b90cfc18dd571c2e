"""LocalRunner idle time between consecutive candidates on one slot.

Idle = from the moment poll() hands back one execution's Finished (and the next is submitted at
once) to the next train.py's first log line. The stand-in train.py is instant (no torch), so the
figure is the runner + harness + interpreter start-up cost alone. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_local_runner.py [--candidates 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.runners.base import ExecutionSpec, Finished  # noqa: E402
from sandbox.runners.local import LocalRunner  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402

INSTANT = '''
import json, os, time
print(f"first-line {time.time():.6f}", flush=True)
json.dump({"val_bpb": 1.0, "time_budget": 4, "preset": "micro"}, open(os.environ["AUTORESEARCH_EVAL_RECORD"], "w"))
print("---")
for k, v in [("val_bpb", "1.000000"), ("training_seconds", "0.0"), ("total_seconds", "0.0"),
             ("peak_vram_mb", "0.0"), ("mfu_percent", "0.00"), ("total_tokens_M", "0.0"),
             ("num_steps", "1"), ("num_params_M", "0.0"), ("depth", "1")]:
    print(f"{k}: {v}")
'''


def first_line_time(log: Path) -> float:
    return float(log.read_text().split("\n", 1)[0].split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp) / "ws", INSTANT, ROOT, {"bench": True})
        runner = LocalRunner(slots=1, threads_per_slot=1, gpus=[])
        idle, per_candidate = [], []
        handed_back = None
        t_start = time.time()
        for i in range(args.candidates):
            submitted = time.time()
            runner.submit(ExecutionSpec(execution_id=f"c{i}", workspace=ws, preset="micro"))
            finished = None
            while finished is None:
                finished = next((e for e in runner.poll(timeout=5) if isinstance(e, Finished)), None)
            now = time.time()
            if finished.result["status"] != "ok":
                sys.exit(f"c{i}: {finished.result['status']}: {finished.result['failure_reason']}")
            first = first_line_time(Path(finished.result["log_path"]))
            if handed_back is not None:
                idle.append(first - handed_back)
            per_candidate.append(now - submitted)
            handed_back = now
        total = time.time() - t_start

    def stats(values):
        return (f"mean {1000 * statistics.mean(values):.0f} ms  median {1000 * statistics.median(values):.0f} ms  "
                f"min {1000 * min(values):.0f} ms  max {1000 * max(values):.0f} ms")
    print(f"{args.candidates} instant candidates on 1 slot, {os.cpu_count()} cores, {total:.2f}s in all")
    print("idle (Finished handed back -> next train.py's first log line):", stats(idle))
    print("submit -> Finished per candidate:                           ", stats(per_candidate))


if __name__ == "__main__":
    main()
