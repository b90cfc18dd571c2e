"""Memory and digest figures: digest size after 100 and 1,000 stored experiments, and insert /
query timings at 10,000 executions. Prints figures; asserts nothing.

The synthetic history is realistic in shape: every candidate is a real edit of train.py's knob
lines with a real unified diff, generations follow the default strategy mix, some candidates
are rejected by a check rule or crash, the incumbent is re-run as a control every generation,
and selection (agent/selection.py) picks the incumbent from noisy val_bpb values.

    .venv/bin/python benchmarks/bench_memory.py [--executions 10000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import SelectionSettings  # noqa: E402
from agent.digest import (build_digest, estimate_tokens, lineage, noise_sigma, recent_results,  # noqa: E402
                          strategy_outcomes)
from agent.memory import Memory  # noqa: E402
from agent.selection import decide, pick_winner  # noqa: E402

MIX = ["conservative"] * 3 + ["moderate"] * 4 + ["aggressive"] * 2 + ["crossover"]
# knob -> candidate values (the micro column for dict knobs)
KNOB_VALUES = {
    "EMBEDDING_LR": [0.3, 0.4, 0.5, 0.7, 0.8, 1.0],
    "UNEMBEDDING_LR": [0.002, 0.003, 0.005, 0.006, 0.008],
    "MATRIX_LR": [0.02, 0.03, 0.05, 0.06, 0.08],
    "SCALAR_LR": [0.25, 0.4, 0.6, 0.8],
    "WEIGHT_DECAY": [0.0, 0.05, 0.1, 0.3, 0.4],
    "WARMUP_RATIO": [0.0, 0.02, 0.05, 0.1],
    "WARMDOWN_RATIO": [0.3, 0.4, 0.6, 0.7],
    "FINAL_LR_FRAC": [0.0, 0.05, 0.1],
    "DEPTH": [1, 3, 4],
    "ASPECT_RATIO": [16, 48, 64],
    "WINDOW_PATTERN": ['"L"', '"SL"', '"SSL"', '"SSSSL"'],
}
EDITS_PER_STRATEGY = {"conservative": 1, "moderate": 2, "aggressive": 4, "crossover": 3}
FALLBACK_SOURCE = """from prepare import PRESET, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

DEPTH             = {"gpu": 8,     "cpu": 4,     "micro": 2}[PRESET]
ASPECT_RATIO      = {"gpu": 64,    "cpu": 32,    "micro": 32}[PRESET]
WINDOW_PATTERN = "SSSL"
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004
MATRIX_LR = 0.04
SCALAR_LR = 0.5
WEIGHT_DECAY = 0.2
WARMUP_RATIO = 0.0
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.0
SEED = 42
"""


def base_source() -> str:
    path = ROOT / "train.py"
    return path.read_text() if path.exists() else FALLBACK_SOURCE


def set_knob(source: str, knob: str, value) -> tuple[str, dict] | None:
    """Edit one knob line; dict-valued size knobs get their micro column changed."""
    match = re.search(rf"^{knob}\s*=.*$", source, flags=re.M)
    if match is None:
        return None
    line = match.group(0)
    if "{" in line:
        new_line = re.sub(r'("micro":\s*)[^,}\]]+', lambda m: f"{m.group(1)}{value}", line, count=1)
    else:
        new_line = re.sub(r"=\s*[^#]+?(\s*(#.*)?)$", lambda m: f"= {value}{m.group(1)}", line, count=1)
    if new_line == line:
        return None
    return source.replace(line, new_line, 1), {"search": line, "replace": new_line}


def unified_diff(old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/train.py", "b/train.py"))


def populate(memory: Memory, experiments: int, seed: int = 0) -> dict:
    """Store about `experiments` candidates with their executions; returns counts."""
    rng = random.Random(seed)
    settings = SelectionSettings()
    source0 = base_source()
    memory.ensure_run("bench", "micro", "local", "heuristic", {"selection": settings.model_dump()}, str(ROOT))
    fp = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]  # noqa: E731
    baseline = memory.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint=fp(source0),
                                    source=source0, check_status="accepted", origin="baseline")
    true_bpb = {fp(source0): 1.80}     # by fingerprint: identical code has one true value
    sources = {baseline: source0}
    fingerprints = {baseline: fp(source0)}
    counts = {"candidates": 1, "executions": 0}

    def run(candidate_id: str, generation: int, kind: str, crash: bool = False) -> None:
        eid = memory.add_execution(candidate_id=candidate_id, generation=generation, kind=kind, backend="local",
                                   preset="micro", workspace=f"/tmp/ws/{candidate_id}", seed=42,
                                   estimated_cost_usd=0.001)
        memory.mark_started(eid, job_id=f"pid-{eid}", started_at=time.time(), log_path=f"/tmp/ws/{eid}.log")
        if crash:
            result = {"status": "crash", "val_bpb": None, "failure_reason": "train.py exited 1: FAIL (loss is NaN)",
                      "log_tail": "step 00012 | loss: nan\nFAIL"}
        else:
            result = {"status": "ok", "val_bpb": round(true_bpb[fingerprints[candidate_id]] + rng.gauss(0, 0.004), 6),
                      "peak_vram_mb": 0.0, "training_seconds": 30.1, "total_seconds": 41.7, "num_steps": 96,
                      "mfu_percent": 0.0, "num_params_M": 1.2, "total_tokens_M": 0.4, "failure_reason": None,
                      "log_tail": "---\nval_bpb: ..."}
        memory.finish_execution(eid, result=result, cost_usd=0.0005, billable_seconds=41.7)
        counts["executions"] += 1

    run(baseline, 0, "baseline")
    run(baseline, 0, "baseline")
    memory.set_state("incumbent", baseline)
    generation = 0
    while counts["candidates"] < experiments:
        generation += 1
        incumbent = memory.incumbent_id()
        run(incumbent, generation, "control")
        ids = []
        for index, strategy in enumerate(MIX):
            source, edits = sources[incumbent], []
            for knob in rng.sample(sorted(KNOB_VALUES), EDITS_PER_STRATEGY[strategy]):
                changed = set_knob(source, knob, rng.choice(KNOB_VALUES[knob]))
                if changed:
                    source, edit = changed
                    edits.append(edit)
            roll = rng.random()
            status, rule, reason = "accepted", None, None
            if roll < 0.08:
                status, rule = "rejected", rng.choice(["no-new-imports", "prepare-untouched", "edit-apply"])
                reason = {"no-new-imports": "import of 'flash_attn' is not allowed (no new dependencies)",
                          "prepare-untouched": "candidate redefines evaluate_bpb (prepare.py is fixed)",
                          "edit-apply": "search text matched 0 times in train.py"}[rule]
            cid = memory.add_candidate(
                generation=generation, strategy=strategy, title=f"{strategy} tweak #{index}: "
                + ", ".join(e["replace"].split("=")[0].strip() for e in edits),
                hypothesis=f"Changing {len(edits)} knob(s) should trade stability for speed within the budget.",
                edits=edits, parents=[incumbent], diff=unified_diff(sources[incumbent], source), fingerprint=fp(source),
                source=source if status == "accepted" else None, check_status=status, rule=rule, reason=reason,
                proposer="heuristic")
            counts["candidates"] += 1
            sources[cid], fingerprints[cid] = source, fp(source)
            true_bpb.setdefault(fp(source), true_bpb[fingerprints[incumbent]] + rng.gauss(0.004, 0.01))
            if status == "accepted":
                run(cid, generation, "candidate", crash=rng.random() < 0.07)
                ids.append(cid)
        sigma = noise_sigma(memory)
        decisions = {cid: decide(memory.val_bpbs(cid), memory.val_bpbs(incumbent), sigma, settings, cid) for cid in ids}
        for cid, decision in decisions.items():
            memory.record_decision(cid, verdict=decision.verdict, delta=decision.delta,
                                   threshold=decision.threshold, reason=decision.reason, generation=generation)
        winner = pick_winner(decisions)
        if winner is not None:
            memory.set_state("incumbent", winner.candidate_id)
    return counts


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_digest(experiments: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        memory = Memory.open(Path(tmp) / "bench")
        start = time.perf_counter()
        counts = populate(memory, experiments)
        fill = time.perf_counter() - start
        digest_s = timed(lambda: build_digest(memory, 6000), repeat)
        text = build_digest(memory, 6000)
        unbounded = build_digest(memory, 10**7)
        small = build_digest(memory, 2000)
        print(f"digest after {counts['candidates']:>5} experiments ({counts['executions']} executions, "
              f"lineage {len(lineage(memory))} steps): {estimate_tokens(text):>5} tokens at budget 6000 "
              f"(unbounded {estimate_tokens(unbounded):>6}, at budget 2000: {estimate_tokens(small)}); build {digest_s * 1000:.1f} ms; "
              f"history stored in {fill:.1f} s")
        memory.close()


def bench_executions(total: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        memory = Memory.open(Path(tmp) / "bench")
        memory.ensure_run("bench", "micro", "local", "heuristic", {}, str(ROOT))
        candidates = [memory.add_candidate(generation=1 + i // 10, strategy=MIX[i % 10], title=f"c{i}",
                                           fingerprint=f"fp{i % 500}", source="x", check_status="accepted")
                      for i in range(1000)]
        rng = random.Random(1)
        result = {"status": "ok", "val_bpb": 1.8, "peak_vram_mb": 0.0, "training_seconds": 30.0, "total_seconds": 40.0,
                  "num_steps": 96, "mfu_percent": 0.0, "num_params_M": 1.2, "failure_reason": None, "log_tail": "x" * 500}
        add, start_t, finish = [], [], []
        for i in range(total):
            cid = candidates[i % len(candidates)]
            t0 = time.perf_counter()
            eid = memory.add_execution(candidate_id=cid, generation=1 + (i % 1000) // 10, kind="candidate",
                                       backend="local", preset="micro", workspace="/tmp/ws")
            t1 = time.perf_counter()
            memory.mark_started(eid, job_id="pid", started_at=time.time())
            t2 = time.perf_counter()
            memory.finish_execution(eid, result={**result, "val_bpb": 1.8 + rng.gauss(0, 0.004)}, cost_usd=0.001)
            t3 = time.perf_counter()
            add.append(t1 - t0), start_t.append(t2 - t1), finish.append(t3 - t2)
        ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
        print(f"{total} executions: add_execution {ms(add):.3f} ms, mark_started {ms(start_t):.3f} ms, "
              f"finish_execution {ms(finish):.3f} ms (medians); last 1000 finishes median {ms(finish[-1000:]):.3f} ms")
        queries = {
            "executions(generation=50)": lambda: memory.executions(generation=50),
            "executions(candidate_id=...)": lambda: memory.executions(candidate_id=candidates[7]),
            "executions() all": lambda: memory.executions(),
            "unfinished_executions()": memory.unfinished_executions,
            "val_bpbs(candidate)": lambda: memory.val_bpbs(candidates[7]),
            "noise_sigma()": lambda: noise_sigma(memory),
            "spend()": memory.spend,
            "recent_results(20)": lambda: recent_results(memory, 20),
            "strategy_outcomes()": lambda: strategy_outcomes(memory),
            "digest(6000)": lambda: build_digest(memory, 6000),
        }
        for name, fn in queries.items():
            print(f"  {name:<30} {timed(fn, repeat) * 1000:8.2f} ms")
        size_mb = (Path(tmp) / "bench" / "memory.sqlite").stat().st_size / 1e6
        print(f"  file size {size_mb:.1f} MB (+ WAL)")
        memory.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for experiments in (100, 1000):
        bench_digest(experiments, args.repeat)
    bench_executions(args.executions, args.repeat)


if __name__ == "__main__":
    main()
