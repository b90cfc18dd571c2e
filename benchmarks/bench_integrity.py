"""What integrity costs per execution: evaluate_bpb's probes, and the sandbox.

Probes: the project's baseline model (train.py's GPT, freshly initialised) evaluated by the real
prepare.evaluate_bpb (with the causality and statelessness probes, the fingerprints and the
monkeypatch checks) against a plain evaluation loop over the same rows (the forward passes and the
cross-entropy only), in-process, one thread, CPU time. Sandbox: the same trivial train.py
(`import prepare`) through the real harness at --isolation namespaces vs detect (the difference is
the namespaces, the new root and the capability drop), and the harness's own work around the child
(settings, fixed-file fingerprints before and after, result) as wall time outside the child's life.
The gpu preset is estimated from the model's FLOPs (no GPU here): see --gpu-mfu.

    .venv/bin/python benchmarks/bench_integrity.py [--presets micro cpu] [--runs 3] [--gpu-mfu 0.4]
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from agent.run_one import prepare_data  # noqa: E402
from sandbox.harness import run_harness  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402


def load(name: str, path: Path, preset: str):
    os.environ["AUTORESEARCH_PRESET"] = preset
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def baseline_model(T, P, vocab):
    import torch
    torch.manual_seed(T.SEED)
    dim = ((T.DEPTH * T.ASPECT_RATIO + T.HEAD_DIM - 1) // T.HEAD_DIM) * T.HEAD_DIM
    cfg = T.GPTConfig(sequence_len=P.MAX_SEQ_LEN, vocab_size=vocab, n_layer=T.DEPTH, n_head=dim // T.HEAD_DIM,
                      n_kv_head=dim // T.HEAD_DIM, n_embd=dim, window_pattern=T.WINDOW_PATTERN)
    model = T.GPT(cfg)
    model.init_weights()
    with torch.no_grad():   # trained-looking weights: the zero-initialised projections are not all zero
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def plain_eval(model, rows, token_bytes, batch):
    """The evaluation without any check: forwards and cross-entropy over the same rows."""
    import torch
    nats, nbytes = 0.0, 0
    with torch.inference_mode():
        for i in range(0, rows.shape[0], batch):
            x, y = rows[i:i + batch, :-1], rows[i:i + batch, 1:]
            logits = model(x).float()
            nll = logits.logsumexp(-1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            b = token_bytes[y]
            nats += float(torch.where(b > 0, nll.double(), torch.zeros((), dtype=torch.float64)).sum())
            nbytes += int(b.sum())
    return nats / (math.log(2) * nbytes)


def probes(preset: str, runs: int) -> dict:
    import torch
    torch.set_num_threads(1)
    P = load(f"prepare_bench_{preset}", ROOT / "prepare.py", preset)
    T = load(f"train_bench_{preset}", ROOT / "train.py", preset)
    data = P.cache_dir_for(preset)
    rows, _ = P.load_val_rows(data / "data" / "shard_val.parquet", data / "tokenizer", preset)
    tb = P.get_token_bytes()
    model = baseline_model(T, P, tb.numel())
    batch = T.DEVICE_BATCH_SIZE or 8
    plain, full, records = [], [], []
    for i in range(runs):
        t = time.process_time()
        ref = plain_eval(model, rows, tb, batch)
        plain.append(time.process_time() - t)
        fresh = load(f"prepare_bench_{preset}_{i}", ROOT / "prepare.py", preset)   # one evaluation per module
        t = time.process_time()
        bpb = fresh.evaluate_bpb(model, None, batch)
        full.append(time.process_time() - t)
        assert abs(bpb - ref) < 1e-5 * ref, (bpb, ref)
    return dict(plain=statistics.median(plain), full=statistics.median(full), rows=rows.shape[0], batch=batch,
                passes=math.ceil((P.MAX_SEQ_LEN - 1) / batch), chunks=math.ceil(rows.shape[0] / batch),
                budget=P.PRESETS[preset]["time_budget"], allowance=P.PRESETS[preset]["startup_allowance"])


TRIVIAL = "import prepare\nprint('---')\n"


def sandbox(preset: str, runs: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp) / "ws", TRIVIAL, ROOT, {"bench": True})
        for level in ("namespaces", "detect"):
            cpu, life, around = [], [], []
            for _ in range(runs):
                t = time.monotonic()
                r = run_harness(ws, preset, isolation_level=level, threads=1)
                outer = time.monotonic() - t
                cpu.append(r["cpu_seconds"])
                life.append(r["wall_seconds"])
                around.append(outer - r["wall_seconds"])
                assert (r["integrity"]["sandbox"] or {}).get("level") == level, r["failure_reason"]
            out[level] = dict(cpu=statistics.median(cpu), life=statistics.median(life), around=statistics.median(around))
    return out


def gpu_estimate(mfu: float) -> dict:
    """Probe cost at the gpu preset from FLOPs: the extra forward passes over what the evaluation
    does anyway (same model size as the baseline's gpu column, 16-row forwards under the 1 GiB bound)."""
    P = load("prepare_bench_gpu_est", ROOT / "prepare.py", "gpu")
    cfg = P.PRESETS["gpu"]
    T, V = cfg["max_seq_len"], cfg["vocab_size"]
    rows = cfg["eval_tokens"] // T
    R = min(128, P.LOGITS_BYTES_PER_FORWARD // (T * V * 4))
    passes, chunks = math.ceil((T - 1) / R), math.ceil(rows / R)
    depth, dim = 8, 512                         # train.py's gpu column
    non_embedding = depth * 12 * dim * dim + dim * V
    forward_flops_per_token = 2 * non_embedding + depth * 4 * dim * T   # + attention (causal: about half)
    peak = 989.5e12
    per_forward = R * T * forward_flops_per_token / (mfu * peak)
    extra = (passes + 2) * per_forward
    return dict(R=R, passes=passes, chunks=chunks, per_forward=per_forward, extra=extra,
                eval=chunks * per_forward, budget=cfg["time_budget"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["micro", "cpu"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gpu-mfu", type=float, default=0.4, help="assumed forward MFU on an H100 for the estimate")
    args = ap.parse_args()
    quiet = Console(file=io.StringIO())
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    for preset in args.presets:
        prepare_data(preset, project_dir=ROOT, console=quiet)
        p = probes(preset, args.runs)
        run_cpu = p["allowance"] + p["budget"] + p["full"]
        print(f"\n{preset}: evaluate_bpb over {p['rows']} rows in forwards of {p['batch']} ({p['chunks']} forwards, "
              f"{p['passes']} causality passes + 2 re-scores), CPU seconds, median of {args.runs}:")
        print(f"  plain evaluation {p['plain']:.3f}s | with probes and checks {p['full']:.3f}s | "
              f"cost {p['full'] - p['plain']:.3f}s = {100 * (p['full'] - p['plain']) / p['plain']:.0f}% of the "
              f"evaluation, {100 * (p['full'] - p['plain']) / run_cpu:.1f}% of a run ({run_cpu:.0f} CPU s)")
        s = sandbox(preset, args.runs)
        ns, det = s["namespaces"], s["detect"]
        print(f"  sandbox: child CPU {ns['cpu']:.3f}s with namespaces vs {det['cpu']:.3f}s without "
              f"(+{ns['cpu'] - det['cpu']:.3f}s); child lifetime {ns['life']:.2f}s vs {det['life']:.2f}s; "
              f"harness work around the child {ns['around']:.3f}s (fingerprints, settings, result)")
    g = gpu_estimate(args.gpu_mfu)
    print(f"\ngpu (estimate, {args.gpu_mfu:.0%} forward MFU on an H100, not measured): forwards of {g['R']} rows, "
          f"{g['chunks']} for the evaluation, {g['passes']} causality passes + 2 re-scores; "
          f"~{g['per_forward'] * 1000:.1f} ms each -> probes ~{g['extra']:.2f}s on top of an evaluation of "
          f"~{g['eval']:.1f}s = {100 * g['extra'] / g['budget']:.2f}% of the {g['budget']} s budget "
          f"(+ the sandbox's ~0.1 s and the harness's fingerprints, measured above on CPU)")


if __name__ == "__main__":
    main()
