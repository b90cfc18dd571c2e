"""Integrity-checker timings on the real train.py: median / mean / p95 of `check_source` over N
runs (target: well under 200 ms median for the baseline on a quiet 2-core box). Prints figures;
asserts nothing.

Rows (the acceptance memo is cleared before every timed call, except in the memo row):
  accepted          the baseline train.py (what most proposals look like)
  accepted (v2)     tests/fixtures/train_v2.py (the measurement-version-2 shape of the baseline)
  rejected          the baseline plus one violation
  memo hit          a number-only edit of an accepted file (a heuristic knob draft)
  stages            where the time of an accepted check goes: reading (encoding), the interpreter's
                    parse + compile + names (the witness), libcst's parse, the walk, the judgement
  previous          the checker at --old-rev (`git show <rev>:sandbox/check.py`, a single file);
                    skipped when git or that revision is not available
With --corpus N: the checker's reading is compared with the interpreter's on N standard-library
files (identifiers and statement lines must agree; prints how many do).

    .venv/bin/python benchmarks/bench_check.py [--runs 30] [--old-rev dfac276] [--corpus 0]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import libcst  # noqa: E402

from sandbox.check import check_source, clear_memo  # noqa: E402
from sandbox.check_judge import Judge  # noqa: E402
from sandbox.check_policy import baseline_policy  # noqa: E402
from sandbox.check_rules import Walker  # noqa: E402
from sandbox.check_text import (disagreement, interpreter_view, libcst_statements, needs_normalising,  # noqa: E402
                                normalise_names, read_problems)


def timings(fn, runs: int, fresh: bool = True) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of `runs` calls (CPU time: what the check costs this process,
    much less sensitive than the wall clock to other load on a shared box)."""
    fn()   # warm caches (baseline policy, imports) the way a proposer's second call finds them
    wall, cpu = [], []
    for _ in range(runs):
        if fresh:
            clear_memo()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def row(label: str, measured: tuple[list[float], list[float]]) -> None:
    wall, cpu = sorted(measured[0]), sorted(measured[1])
    p95 = wall[min(len(wall) - 1, int(round(0.95 * (len(wall) - 1))))]
    print(f"{label:<28} median {statistics.median(wall):7.1f} ms   p95 {p95:7.1f} ms   "
          f"cpu median {statistics.median(cpu):7.1f} ms   (n={len(wall)})")


def stages(source: str, runs: int) -> None:
    """Median time of each stage of an accepted check (the same steps check_source takes)."""
    policy = baseline_policy(source)
    parts: dict[str, list[float]] = {name: [] for name in ("reading", "witness", "libcst parse", "walk", "judge")}
    clock = time.process_time
    for _ in range(runs):
        t0 = clock()
        data, _ = read_problems(source)
        t1 = clock()
        witness = interpreter_view(data)
        t2 = clock()
        module = libcst.parse_module(source)
        if needs_normalising(source):
            module = normalise_names(module)
        t3 = clock()
        walker = Walker(module, policy)
        walker.walk(module)
        disagreement(walker.names, witness)
        t4 = clock()
        Judge(walker).run()
        t5 = clock()
        for name, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            parts[name].append((b - a) * 1000)
    print("stages (cpu median ms): " + ", ".join(f"{name} {statistics.median(ms):.1f}" for name, ms in parts.items()))


def load_previous_checker(rev: str):
    """The single-file checker at git revision `rev`, imported from a temporary file; None if unavailable."""
    try:
        text = subprocess.run(["git", "show", f"{rev}:sandbox/check.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(the checker at {rev} is not available: {exc})")
        return None
    if "from sandbox.check_" in text:
        print(f"(the checker at {rev} is split into modules; pass --old-rev with a single-file revision)")
        return None
    folder = Path(tempfile.mkdtemp(prefix="bench-check-"))
    path = folder / "previous_check.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("previous_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["previous_check"] = module   # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def corpus(limit: int) -> None:
    files = sorted(Path(os.__file__).parent.glob("*.py"))[:limit]
    agree = skipped = 0
    disagreeing = []
    t0 = time.perf_counter()
    for file in files:
        data = file.read_bytes()
        witness = interpreter_view(data, str(file))
        try:
            module = libcst.parse_module(data.decode("utf-8"))
        except Exception:   # not UTF-8, or beyond libcst's grammar: nothing to compare
            skipped += 1
            continue
        if not hasattr(witness, "names"):
            skipped += 1
            continue
        walker = Walker(module, baseline_policy(None))
        walker.walk(module)
        if disagreement(walker.names, witness) is None and \
                len(libcst_statements(module.body)) == len(witness.statement_lines):
            agree += 1
        else:
            disagreeing.append(file.name)
    print(f"corpus: {agree} of {len(files) - skipped} standard-library files read alike by the checker and the "
          f"interpreter ({skipped} skipped, {time.perf_counter() - t0:.0f} s)" +
          (f"; disagree: {', '.join(disagreeing[:10])}" if disagreeing else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--old-rev", default="dfac276", help="git revision of a single-file checker to compare")
    ap.add_argument("--corpus", type=int, default=0, help="compare the two readings on this many stdlib files")
    args = ap.parse_args()

    baseline = (ROOT / "train.py").read_text()
    v2 = (ROOT / "tests" / "fixtures" / "train_v2.py").read_text()
    rejected = baseline.replace("SEED = 42\n", "SEED = 42\nTIME_BUDGET = 600\n", 1)
    assert check_source(baseline, baseline) == [], "the baseline must be accepted"
    assert check_source(v2, v2) == [], "the v2 baseline must be accepted"
    assert check_source(rejected, baseline), "the rejected variant must be rejected"

    print(f"train.py: {len(baseline.splitlines())} lines, {len(baseline):,} bytes; python {sys.version.split()[0]}, "
          f"libcst {importlib.metadata.version('libcst')}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
    row("accepted", timings(lambda: check_source(baseline, baseline), args.runs))
    row("accepted (v2)", timings(lambda: check_source(v2, v2), args.runs))
    row("rejected", timings(lambda: check_source(rejected, baseline), args.runs))
    knob_draft = baseline.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05", 1)
    clear_memo()
    check_source(baseline, baseline)   # the incumbent was accepted; its knob drafts follow
    row("memo hit", timings(lambda: check_source(knob_draft, baseline), args.runs, fresh=False))
    row("libcst parse only", timings(lambda: libcst.parse_module(baseline), args.runs))
    stages(baseline, args.runs)
    previous = load_previous_checker(args.old_rev)
    if previous is not None:
        assert previous.check_source(baseline, baseline) == []
        previous.clear_memo()
        row(f"previous ({args.old_rev}) accepted", timings(
            lambda: (previous.clear_memo(), previous.check_source(baseline, baseline)), args.runs))
    if args.corpus:
        corpus(args.corpus)


if __name__ == "__main__":
    main()
