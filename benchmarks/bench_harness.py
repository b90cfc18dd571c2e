"""Harness overhead per candidate on the micro preset, with the real prepare.py and train.py.

For each run: the wall time of `python -I harness.py ...` as a runner sees it, the child's
lifetime (bootstrap, sandbox, prepare, train.py, evaluation), and the harness's own work around
the child (interpreter start, settings, fixed-file fingerprints before and after, the result).
Inside the child, from prepare's record: CPU seconds before the clock's first tick (start-up),
training, and the evaluation. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_harness.py [--runs 3]
"""
from __future__ import annotations

import argparse
import io
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

from rich.console import Console  # noqa: E402

from agent.run_one import prepare_data  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AUTORESEARCH_CACHE", str(Path(tmp) / "cache"))
        prepare_data("micro", project_dir=ROOT, console=Console(file=io.StringIO()))
        ws = build_workspace(Path(tmp) / "ws", (ROOT / "train.py").read_text(), ROOT, {"bench": True})
        rows = []
        for i in range(args.runs):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-I", str(ws / "harness.py"), "--workspace", str(ws),
                            "--preset", "micro", "--cpus", "0", "--no-echo"], capture_output=True, text=True)
            outer = time.monotonic() - t0
            result = json.loads((ws / "result.json").read_text())
            if result["status"] != "ok":
                sys.exit(f"run {i}: {result['status']}: {result['failure_reason']}")
            rec = result["eval_record"]
            startup = rec["clock"]["created_at"] + rec["clock"]["startup_allowance"]
            rows.append(dict(outer=outer, life=result["wall_seconds"], around=outer - result["wall_seconds"],
                             cpu=result["cpu_seconds"], startup=startup, training=result["training_seconds"],
                             eval=rec["eval"]["process_cpu_seconds"]))
            print(f"run {i + 1}: harness wall {outer:6.2f}s | child lifetime {result['wall_seconds']:6.2f}s "
                  f"({result['cpu_seconds']:.2f} CPU s: start-up {startup:.2f}, training {result['training_seconds']:.2f}, "
                  f"evaluation {rec['eval']['process_cpu_seconds']:.2f}) | harness-only {outer - result['wall_seconds']:.2f}s"
                  f" | sandbox {result['integrity']['sandbox']['level']} | val_bpb {result['val_bpb']:.6f}")

    def stats(key):
        values = [r[key] for r in rows]
        return f"mean {statistics.mean(values):.2f}s  min {min(values):.2f}s  max {max(values):.2f}s"
    print(f"\n{args.runs} runs, micro preset, 1 thread pinned to core 0, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("harness-only (wall outside the child's life):", stats("around"))
    print("child start-up before the first tick (CPU):  ", stats("startup"))
    print("child evaluation incl. probes (CPU):         ", stats("eval"))


if __name__ == "__main__":
    main()
