"""Integrity-checker timings on the real train.py: median / mean / p95 of `check_source` over N
runs (target: < 200 ms median for the baseline). Prints figures; asserts nothing.

Rows (the acceptance memo is cleared before every timed call, except in the memo row):
  libcst  accepted   the baseline train.py (what most proposals look like: no positions needed)
  libcst  rejected   the baseline plus one violation (positions resolved with PositionProvider)
  libcst  memo hit   a number-only edit of an accepted file (a heuristic knob draft)
  libcst  parse      libcst.parse_module alone (the floor of any libcst checker)
  ast     accepted   the previous ast-based checker, from `git show <rev>:sandbox/check.py`
                     (skipped when git or that revision is not available)

    .venv/bin/python benchmarks/bench_check.py [--runs 50] [--old-rev HEAD]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
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


def timings(fn, runs: int, fresh: bool = True) -> list[float]:
    fn()   # warm caches (baseline policy, imports) the way a proposer's second call finds them
    out = []
    for _ in range(runs):
        if fresh:
            clear_memo()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(label: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    print(f"{label:<26} median {statistics.median(ms):7.1f} ms   mean {statistics.fmean(ms):7.1f} ms   "
          f"p95 {p95:7.1f} ms   (n={len(ms)})")


def load_old_checker(rev: str):
    """The checker at git revision `rev`, imported from a temporary file; None if unavailable."""
    try:
        text = subprocess.run(["git", "show", f"{rev}:sandbox/check.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(old checker at {rev} not available: {exc})")
        return None
    if "import libcst" in text:
        print(f"(the checker at {rev} is already the libcst one; pass --old-rev with an earlier revision)")
        return None
    folder = Path(tempfile.mkdtemp(prefix="bench-check-"))
    path = folder / "old_check.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_check"] = module   # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--old-rev", default="HEAD", help="git revision of the ast-based checker to compare")
    args = ap.parse_args()

    baseline = (ROOT / "train.py").read_text()
    rejected = baseline.replace("SEED = 42\n", "SEED = 42\nTIME_BUDGET = 600\n", 1)
    assert check_source(baseline, baseline) == [], "the baseline must be accepted"
    assert check_source(rejected, baseline), "the rejected variant must be rejected"

    print(f"train.py: {len(baseline.splitlines())} lines, {len(baseline):,} bytes; python {sys.version.split()[0]}, "
          f"libcst {importlib.metadata.version('libcst')}")
    row("libcst  accepted", timings(lambda: check_source(baseline, baseline), args.runs))
    row("libcst  rejected", timings(lambda: check_source(rejected, baseline), args.runs))
    knob_draft = baseline.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05", 1)
    assert knob_draft != baseline
    clear_memo()
    check_source(baseline, baseline)   # the incumbent was accepted; its knob drafts follow
    row("libcst  memo hit", timings(lambda: check_source(knob_draft, baseline), args.runs, fresh=False))
    row("libcst  parse only", timings(lambda: libcst.parse_module(baseline), args.runs))
    old = load_old_checker(args.old_rev)
    if old is not None:
        assert old.check_source(baseline, baseline) == []
        row(f"ast     accepted ({args.old_rev})", timings(lambda: old.check_source(baseline, baseline), args.runs))
        row(f"ast     rejected ({args.old_rev})", timings(lambda: old.check_source(rejected, baseline), args.runs))


if __name__ == "__main__":
    main()
