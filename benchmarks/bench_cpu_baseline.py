"""The cpu preset baseline learns: untrained val_bpb vs the baseline after its time budget.

Prints the untrained model's val_bpb (the project's own train.py model, freshly initialised,
evaluated by prepare.evaluate_bpb) and N full baseline runs through the real harness, with their
mean and sample sigma (the run-to-run noise selection has to beat on this machine).

    python benchmarks/bench_cpu_baseline.py [--preset cpu] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.run_one import prepare_data, run_one  # noqa: E402

UNTRAINED = textwrap.dedent("""
    import torch, train as T
    from prepare import MAX_SEQ_LEN, Tokenizer, evaluate_bpb
    torch.manual_seed(T.SEED)
    tok = Tokenizer.from_directory()
    dim = ((T.DEPTH * T.ASPECT_RATIO + T.HEAD_DIM - 1) // T.HEAD_DIM) * T.HEAD_DIM
    cfg = T.GPTConfig(sequence_len=MAX_SEQ_LEN, vocab_size=tok.get_vocab_size(), n_layer=T.DEPTH,
                      n_head=dim // T.HEAD_DIM, n_kv_head=dim // T.HEAD_DIM, n_embd=dim,
                      window_pattern=T.WINDOW_PATTERN)
    model = T.GPT(cfg); model.init_weights(); model.eval()
    print(evaluate_bpb(model, tok, T.DEVICE_BATCH_SIZE or 8))
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    prepare_data(args.preset, project_dir=REPO)
    env = {**os.environ, "AUTORESEARCH_PRESET": args.preset, "PYTHONPATH": str(REPO)}
    untrained = float(subprocess.run([sys.executable, "-c", UNTRAINED], cwd=REPO, env=env, check=True,
                                     capture_output=True, text=True).stdout.split()[-1])
    results = [run_one(REPO / "train.py", preset=args.preset, project_dir=REPO, runs_dir="runs/bench")
               for _ in range(args.runs)]
    ok = [r for r in results if r["status"] == "ok"]
    bpbs = [r["val_bpb"] for r in ok]
    print(f"\npreset {args.preset}, {os.cpu_count()} cores, {len(results)} run(s), {len(ok)} ok")
    print(f"untrained val_bpb: {untrained:.6f}")
    for r in ok:
        print(f"  run: val_bpb {r['val_bpb']:.6f}  steps {r['num_steps']}  training {r['training_seconds']:.1f}s"
              f"  wall {r['wall_seconds']:.1f}s")
    if bpbs:
        sigma = statistics.stdev(bpbs) if len(bpbs) > 1 else float("nan")
        print(f"baseline val_bpb: mean {statistics.mean(bpbs):.6f}, sigma {sigma:.6f}, "
              f"{untrained - statistics.mean(bpbs):.3f} below untrained")


if __name__ == "__main__":
    main()
