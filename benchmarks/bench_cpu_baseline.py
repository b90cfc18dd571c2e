"""The cpu preset baseline: does it learn, and does the CPU clock make it repeatable under load?

Prints the untrained model's val_bpb (train.py's model, freshly initialised, scored by
prepare.evaluate_bpb) and N full baseline runs through the real path (run-one: workspace,
LocalRunner, sandboxed harness) with their steps, val_bpb, mean, sample sigma and step spread.
With --busy K, K busy loops (`python3 -c 'while True: pass'`, one pinned to each core in turn)
compete for the cores during the runs. With --parallel, the runs go two at a time on the
runner's slots (what the demo does).
What else was running on the machine (the heaviest processes, the load average) is printed too:
on a shared machine "quiet" is relative.

    python benchmarks/bench_cpu_baseline.py [--preset cpu] [--runs 3] [--busy 2] [--parallel]
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from agent.run_one import prepare_data  # noqa: E402
from sandbox.runners.base import ExecutionSpec, Finished  # noqa: E402
from sandbox.runners.local import LocalRunner  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402

UNTRAINED = textwrap.dedent("""
    import torch, train as T
    from prepare import MAX_SEQ_LEN, Tokenizer, evaluate_bpb
    torch.manual_seed(T.SEED)
    tok = Tokenizer.from_directory()
    dim = ((T.DEPTH * T.ASPECT_RATIO + T.HEAD_DIM - 1) // T.HEAD_DIM) * T.HEAD_DIM
    cfg = T.GPTConfig(sequence_len=MAX_SEQ_LEN, vocab_size=tok.get_vocab_size(), n_layer=T.DEPTH,
                      n_head=dim // T.HEAD_DIM, n_kv_head=dim // T.HEAD_DIM, n_embd=dim,
                      window_pattern=T.WINDOW_PATTERN)
    model = T.GPT(cfg); model.init_weights()
    print(evaluate_bpb(model, tok, T.DEVICE_BATCH_SIZE or 8))
""")


def busiest(n: int = 6) -> list[str]:
    """The processes using the most CPU right now (sampled over half a second), besides us."""
    def sample():
        out = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    stat = open(f"/proc/{pid}/stat").read()
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                out[int(pid)] = (int(fields[11]) + int(fields[12]), cmd[:90])
        return out
    a = sample()
    time.sleep(0.5)
    b = sample()
    rates = sorted(((b[p][0] - a[p][0], b[p][1]) for p in b if p in a and p != os.getpid()), reverse=True)
    return [f"{100 * ticks / os.sysconf('SC_CLK_TCK') / 0.5:5.0f}% {cmd}" for ticks, cmd in rates[:n] if ticks > 0]


def run_baselines(preset: str, runs: int, slots: int) -> list[dict]:
    root = REPO / "runs" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    runner = LocalRunner(slots=slots, threads_per_slot=1, gpus=[])
    todo, done = list(range(runs)), {}
    while len(done) < runs:
        while todo and runner.free_slots():
            i = todo.pop(0)
            ws = build_workspace(root / f"baseline-{i}", (REPO / "train.py").read_text(), REPO, {"bench": i})
            runner.submit(ExecutionSpec(execution_id=f"baseline-{i}", workspace=ws, preset=preset))
        for event in runner.poll(timeout=1.0):
            if isinstance(event, Finished):
                done[event.execution_id] = event.result
    return [done[f"baseline-{i}"] for i in range(runs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="busy loops competing for the cores during the runs")
    ap.add_argument("--parallel", action="store_true", help="two runs at a time (one per core), as the demo")
    ap.add_argument("--no-untrained", action="store_true")
    args = ap.parse_args()
    prepare_data(args.preset, project_dir=REPO, console=Console(file=io.StringIO()))
    if not args.no_untrained:
        env = {**os.environ, "AUTORESEARCH_PRESET": args.preset, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        untrained = float(subprocess.run([sys.executable, "-c", UNTRAINED], cwd=REPO, env=env, check=True,
                                         capture_output=True, text=True).stdout.split()[-1])
    print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()}")
    print("busiest processes before:", *busiest(), sep="\n  ")
    # one loop per core in turn: left to the scheduler, both loops may share the core the run is
    # not pinned to, and the run then competes with nothing
    cores = sorted(os.sched_getaffinity(0))
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              preexec_fn=lambda core=cores[i % len(cores)]: os.sched_setaffinity(0, {core}))
             for i in range(args.busy)]
    try:
        time.sleep(1 if loops else 0)
        t0 = time.monotonic()
        results = run_baselines(args.preset, args.runs, 2 if args.parallel else 1)
        wall = time.monotonic() - t0
        load_after = os.getloadavg()
    finally:
        for p in loops:
            p.kill()
            p.wait()
    ok = [r for r in results if r["status"] == "ok"]
    print(f"\npreset {args.preset}, {len(results)} run(s) {'two at a time' if args.parallel else 'one at a time'}, "
          f"{args.busy} busy loop(s), {len(ok)} ok, {wall:.0f}s wall; load average after: {load_after}")
    if not args.no_untrained:
        print(f"untrained val_bpb: {untrained:.6f}")
    for r in results:
        if r["status"] != "ok":
            print(f"  run: {r['status']}: {r['failure_reason']}")
            continue
        print(f"  run: val_bpb {r['val_bpb']:.6f}  steps {r['num_steps']}  training {r['training_seconds']:.1f} "
              f"CPU s  wall {r['wall_seconds']:.1f}s  cpus {r['cpus']}")
    if len(ok) > 1:
        bpbs, steps = [r["val_bpb"] for r in ok], [r["num_steps"] for r in ok]
        print(f"val_bpb: mean {statistics.mean(bpbs):.6f}, sigma {statistics.stdev(bpbs):.6f}, "
              f"range {max(bpbs) - min(bpbs):.4f}"
              + (f", {untrained - statistics.mean(bpbs):.3f} below untrained" if not args.no_untrained else ""))
        print(f"steps: mean {statistics.mean(steps):.1f}, min {min(steps)}, max {max(steps)}, "
              f"spread {100 * (max(steps) - min(steps)) / statistics.mean(steps):.1f}%")


if __name__ == "__main__":
    main()
