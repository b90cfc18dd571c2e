"""Harness overhead per candidate on the micro preset, with the real prepare.py and train.py.

Overhead = wall time of `python harness.py ...` (as a runner sees it) minus train.py's own
`total_seconds`. It covers interpreter + torch import in the child, log streaming, parsing and the
result.json write. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_harness.py [--runs 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.run_one import prepare_data  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AUTORESEARCH_CACHE", str(Path(tmp) / "cache"))
        prepare_data("micro", project_dir=ROOT)
        ws = build_workspace(Path(tmp) / "ws", (ROOT / "train.py").read_text(), ROOT, {"bench": True})
        rows = []
        for i in range(args.runs):
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, str(ws / "harness.py"), "--workspace", str(ws),
                                   "--preset", "micro", "--threads", str(args.threads), "--no-echo"],
                                  capture_output=True, text=True)
            outer = time.monotonic() - t0
            result = json.loads((ws / "result.json").read_text())
            if result["status"] != "ok":
                sys.exit(f"run {i}: {result['status']}: {result['failure_reason']}")
            rows.append((outer, result["wall_seconds"], result["total_seconds"]))
            print(f"run {i + 1}: harness wall {outer:6.2f}s | train.py lifetime {result['wall_seconds']:6.2f}s"
                  f" | train.py total_seconds {result['total_seconds']:6.1f}s | overhead {outer - result['total_seconds']:5.2f}s"
                  f" (harness-only {outer - result['wall_seconds']:4.2f}s) | val_bpb {result['val_bpb']:.6f}")

    def stats(values):
        return f"mean {statistics.mean(values):.2f}s  min {min(values):.2f}s  max {max(values):.2f}s"
    print(f"\n{args.runs} runs, micro preset, {args.threads} threads, {os.cpu_count()} cores")
    print("overhead (harness wall - total_seconds):        ", stats([o - t for o, _, t in rows]))
    print("harness-only (harness wall - train.py lifetime):", stats([o - w for o, w, _ in rows]))
    print("train.py lifetime - total_seconds (imports, exit):", stats([w - t for _, w, t in rows]))


if __name__ == "__main__":
    main()
