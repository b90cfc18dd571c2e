"""Record REAL loss curves for the early-stopping estimate (benchmarks/bench_early_stop.py) and
for the simulated backend's replay library.

    .venv/bin/python benchmarks/record_curves.py --preset micro --candidates 60 --repeats 12
    .venv/bin/python benchmarks/record_curves.py --preset micro --limit 20     # one batch of a plan
    .venv/bin/python benchmarks/record_curves.py --preset cpu --candidates 8 --repeats 4

What it runs: the project's train.py (the incumbent; `--repeats` times, the references the rule
compares against) and `--candidates` proposals of the heuristic proposer against it (the same
seeded edits `autopilot --proposer heuristic` makes), each through the real path: a workspace
from sandbox.workspace, the LocalRunner, the harness, train.py at the preset. Incumbent repeats
are spread evenly through the plan so that a change of machine load hits both sides alike.

What it keeps, per run: status, val_bpb, training/wall seconds, steps, the load average when it
started, and the curve [[pct, loss], ...] (result.json's `curve` when the harness writes one,
else parsed from run.log with sandbox.progress), thinned to at most --points points. The file is
rewritten after every run, so a batch can be stopped at any time; running the same command again
continues the plan (same seed, same proposals) where it stopped. `--fresh` starts over.

The data and tokenizer of the preset must be prepared (`autoresearch prepare --preset P`;
AUTORESEARCH_CACHE is honoured).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.proposers.base import ProposalRequest  # noqa: E402
from agent.proposers.heuristic import HeuristicProposer  # noqa: E402
from sandbox.fingerprint import fingerprint  # noqa: E402
from sandbox.presets import measurement_version, time_budget  # noqa: E402
from sandbox.progress import parse_progress_line  # noqa: E402
from sandbox.runners.base import ExecutionSpec, Finished  # noqa: E402
from sandbox.runners.local import LocalRunner  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402

FORMAT = "autoresearch-curves/1"
STRATEGY_MIX = ("conservative", "moderate", "aggressive")   # crossover needs scored parents


def thin_curve(points: list[tuple[float, float]], limit: int) -> list[list[float]]:
    """At most `limit` points, evenly spaced in pct, always keeping the first and the last."""
    points = [(p, l) for p, l in points if math.isfinite(l)]
    if len(points) > limit:
        picked, step = [], (len(points) - 1) / (limit - 1)
        for i in range(limit):
            picked.append(points[round(i * step)])
        points = picked
    return [[round(p, 2), round(l, 5)] for p, l in points]


def curve_of(result: dict, log_path: Path) -> list[tuple[float, float]]:
    if isinstance(result.get("curve"), list) and result["curve"]:
        return [(float(p), float(l)) for p, l in result["curve"]]
    points = []
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return points
    for line in text.replace("\r", "\n").splitlines():
        fields = parse_progress_line(line)
        if fields is not None:
            points.append((fields["pct"], fields["loss"]))
    return points


def plan(baseline: str, preset: str, candidates: int, repeats: int, seed: int) -> list[dict]:
    """The ordered list of runs: incumbent repeats spread evenly among the proposals."""
    per = -(-candidates // len(STRATEGY_MIX))
    request = ProposalRequest(incumbent_source=baseline, incumbent_id="baseline", program_md="", digest="",
                              slots={s: per for s in STRATEGY_MIX}, preset=preset, generation=1, seed=seed)
    proposals = [p for p in HeuristicProposer(seed=seed, project_dir=ROOT).propose(request) if p.accepted]
    proposals = proposals[:candidates]
    entries = [{"kind": "candidate", "source": p.source, "strategy": p.strategy, "title": p.title}
               for p in proposals]
    runs: list[dict] = []
    gap = max(1, len(entries) // max(1, repeats))
    base = {"kind": "baseline", "source": baseline, "strategy": "baseline", "title": "the project's train.py"}
    for i in range(max(len(entries), repeats * gap)):
        if i % gap == 0 and sum(r["kind"] == "baseline" for r in runs) < repeats:
            runs.append(dict(base))
        if i < len(entries):
            runs.append(entries[i])
    for index, run in enumerate(runs):
        run["plan"] = index
    return runs


def run_once(entry: dict, preset: str, threads: int, work: Path) -> tuple[dict, Path]:
    ws = build_workspace(work / f"ws{entry['plan']:04d}", entry["source"], ROOT,
                         {"kind": entry["kind"], "plan": entry["plan"]})
    runner = LocalRunner(slots=1, threads_per_slot=threads)
    execution_id = f"rec{entry['plan']:04d}"
    runner.submit(ExecutionSpec(execution_id=execution_id, workspace=ws, preset=preset, label=entry["title"]))
    while True:
        for event in runner.poll(timeout=1.0):
            if isinstance(event, Finished):
                log = Path(event.result.get("log_path") or ws / "executions" / execution_id / "run.log")
                return event.result, log


def wait_for_load(max_load: float, max_wait: float) -> float:
    """Seconds spent waiting for the load average to fall below max_load (at most max_wait)."""
    if max_load <= 0:
        return 0.0
    start = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - start < max_wait:
        time.sleep(10)
    return time.monotonic() - start


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="micro", choices=("micro", "cpu", "gpu"))
    ap.add_argument("--candidates", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=12, help="runs of the unchanged train.py (references)")
    ap.add_argument("--seed", type=int, default=0, help="the heuristic proposer's seed")
    ap.add_argument("--threads", type=int, default=0, help="threads per run (0 = the LocalRunner's default)")
    ap.add_argument("--points", type=int, default=80, help="curve points kept per run")
    ap.add_argument("--limit", type=int, default=0, help="run at most this many planned runs now (0 = all)")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/data/curves_<preset>.json")
    ap.add_argument("--note", default="", help="what else was running on the machine (stored per batch)")
    ap.add_argument("--fresh", action="store_true", help="discard what the file already holds")
    ap.add_argument("--max-load", type=float, default=0.0,
                    help="before each run wait (up to --max-wait s) until the 1-minute load average is below "
                         "this; on a shared machine a wall-clock budget measures the load otherwise (0 = no wait)")
    ap.add_argument("--max-wait", type=float, default=600.0)
    args = ap.parse_args(argv)

    out = args.out or ROOT / "benchmarks" / "data" / f"curves_{args.preset}.json"
    baseline = (ROOT / "train.py").read_text()
    runs_plan = plan(baseline, args.preset, args.candidates, args.repeats, args.seed)
    data = json.loads(out.read_text()) if out.is_file() and not args.fresh else None
    settings = {"preset": args.preset, "candidates": args.candidates, "repeats": args.repeats, "seed": args.seed,
                "threads": args.threads}
    version, baseline_fp = measurement_version(ROOT / "prepare.py"), fingerprint(baseline)
    if data is not None:
        # continuing is only honest for the same plan measured the same way
        if data.get("plan_settings") != settings:
            print(f"{out} was recorded with {data.get('plan_settings')}; use the same options to continue "
                  f"it, or --fresh to start over", file=sys.stderr)
            return 2
        if data.get("measurement_version") != version or data.get("baseline_fingerprint", baseline_fp) != baseline_fp:
            print(f"{out} was recorded with measurement version {data.get('measurement_version')} and another "
                  f"train.py or prepare.py than today's (version {version}); record afresh with --fresh",
                  file=sys.stderr)
            return 2
        data.setdefault("baseline_fingerprint", baseline_fp)
    if data is None:
        data = {"format": FORMAT, "preset": args.preset, "plan_settings": settings,
                "how": ("benchmarks/record_curves.py: the project's train.py (kind baseline, the incumbent) "
                        "and heuristic-proposer edits of it (kind candidate), each run once through "
                        "sandbox.workspace + LocalRunner + harness + train.py on this machine; curve = "
                        "result.json's curve, else the progress lines of run.log (pct, debiased EMA train "
                        "loss); thinned to at most `points` points"),
                "budget_seconds": time_budget(args.preset, ROOT / "prepare.py"),
                "measurement_version": version, "baseline_fingerprint": baseline_fp,
                "candidates": {}, "runs": [], "batches": []}
    done = {r["plan"] for r in data["runs"]}
    todo = [e for e in runs_plan if e["plan"] not in done]
    if args.limit:
        todo = todo[:args.limit]
    batch = {"started_at": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
             "host": platform.node(), "cpus": os.cpu_count(), "note": args.note, "planned": len(todo), "runs": 0}
    data["batches"].append(batch)
    print(f"{len(done)} of {len(runs_plan)} planned runs recorded; running {len(todo)} now -> {out}")
    with tempfile.TemporaryDirectory(prefix="record-curves-") as tmp:
        for entry in todo:
            fp = fingerprint(entry["source"])
            data["candidates"].setdefault(fp, {"kind": entry["kind"], "strategy": entry["strategy"],
                                               "title": entry["title"]})
            waited = wait_for_load(args.max_load, args.max_wait)
            load = os.getloadavg()[0]
            result, log = run_once(entry, args.preset, args.threads, Path(tmp))
            load_end = os.getloadavg()[0]
            curve = thin_curve(curve_of(result, log), args.points)
            data["runs"].append({
                "plan": entry["plan"], "fingerprint": fp, "kind": entry["kind"], "status": result.get("status"),
                "val_bpb": result.get("val_bpb"), "training_seconds": result.get("training_seconds"),
                "wall_seconds": result.get("wall_seconds"), "num_steps": result.get("num_steps"),
                "threads": result.get("threads"), "load1_at_start": round(load, 2),
                "load1_at_end": round(load_end, 2), "waited_for_load_s": round(waited),
                "failure_reason": (result.get("failure_reason") or "")[:200] or None, "curve": curve})
            data["runs"].sort(key=lambda r: r["plan"])
            batch["runs"] += 1
            batch["ended_at"] = dt.datetime.now().isoformat(timespec="seconds")
            tmp_out = out.with_suffix(".tmp")
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
            os.replace(tmp_out, out)
            bpb = result.get("val_bpb")
            print(f"  plan {entry['plan']:3d} {entry['kind']:9s} {result.get('status'):12s} "
                  f"val_bpb {bpb if bpb is None else f'{bpb:.4f}'}  points {len(curve):3d}  "
                  f"load {load:.1f}..{load_end:.1f}  "
                  f"{entry['title'][:60]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
