"""What the attention kernel costs: FA3, flash-attn 2 and the masked-SDPA fallback of train.py.

Two parts:
1. The work, counted (any machine): per layer of the gpu preset's model (T 2048, window pattern
   SSSL: three half-context layers, then a full one; the last always full), the (query, key) pairs
   each kernel computes. A flash kernel skips blocks outside a causal window; torch SDPA with an
   explicit mask (the fallback for windows) computes every pair of the T x T square. With the
   model's matmul FLOPs, this gives the fallback's extra FLOPs per training step - the floor of its
   cost, at equal speed per FLOP (the memory-efficient kernel it runs is slower still).
2. The time, measured (where the kernels exist): forward + backward of train.py's own
   `attention()` at the gpu preset's shapes for every kernel that loads here. Without CUDA only the
   SDPA paths run, at a smaller shape (--seq), and the figures say so.

    .venv/bin/python benchmarks/bench_attention.py [--seq 2048] [--batch 8] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTORESEARCH_PRESET", "gpu")

import torch  # noqa: E402

import train  # noqa: E402


def pairs(T: int, window: int) -> int:
    """(query, key) pairs with 0 <= i - j <= window: what a flash kernel computes."""
    return sum(min(i, window) + 1 for i in range(T))


def counted(T: int, n_layer: int, n_head: int, head_dim: int, model: "train.GPT") -> None:
    matmul = model.estimate_flops() - sum(12 * n_head * head_dim * min(w, T) for w in model.window_sizes)
    per_pair = 12 * n_head * head_dim / T        # fwd + bwd FLOPs per token and per key seen, / T
    flash = sum(pairs(T, w) for w in model.window_sizes) * per_pair
    fallback = sum(pairs(T, w) if w >= T - 1 else T * T for w in model.window_sizes) * per_pair
    print(f"gpu preset: T {T}, {n_layer} layers, windows {model.window_sizes}")
    print(f"  matmul FLOPs/token {matmul / 1e6:.1f}M; attention with a flash kernel {flash / 1e6:.1f}M "
          f"({flash / (matmul + flash):.0%} of the step), with the masked-SDPA fallback {fallback / 1e6:.1f}M "
          f"({fallback / (matmul + fallback):.0%})")
    print(f"  the fallback does {(matmul + fallback) / (matmul + flash) - 1:.0%} more FLOPs per step: at equal "
          f"speed per FLOP, {1 - (matmul + flash) / (matmul + fallback):.0%} fewer steps in the same budget")


def kernels(device: str) -> dict:
    found = {"SDPA (masked windows)": None}
    if device == "cuda":
        flash, name = train._load_flash_attention()
        if flash is not None:
            found[name] = flash
        try:
            import flash_attn
            found.setdefault(f"FA2 {flash_attn.__version__}", flash_attn.flash_attn_func)
        except Exception as exc:
            print(f"flash-attn 2 not importable here ({type(exc).__name__})")
    return found


def timed(fn, repeats: int, device: str) -> float:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    for _ in range(3):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default 2048 on CUDA, 256 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="rows (default 8 on CUDA, 2 on CPU)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    n_layer, head_dim, dim = 8, 128, 512          # the gpu preset's model (train.py's knob block)
    n_head = dim // head_dim
    T = 2048
    cfg = train.GPTConfig(sequence_len=T, vocab_size=8192, n_layer=n_layer, n_head=n_head, n_kv_head=n_head,
                          n_embd=dim, window_pattern="SSSL")
    with torch.device("meta"):
        counted(T, n_layer, n_head, head_dim, train.GPT(cfg))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    seq = args.seq or (2048 if device == "cuda" else 256)
    batch = args.batch or (8 if device == "cuda" else 2)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    print(f"\nmeasured on {torch.cuda.get_device_name() if device == 'cuda' else 'CPU (no CUDA: SDPA only)'}: "
          f"B {batch}, T {seq}, {n_head} heads x {head_dim}, {dtype}, fwd+bwd, median of {args.repeats}")
    q, k, v = (torch.randn(batch, seq, n_head, head_dim, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    windows = sorted({seq // 2, seq})
    masks = {w: train.window_mask(seq, w, device=device) for w in windows if w < seq - 1}
    for name, flash in kernels(device).items():
        cells = []
        for w in windows:
            def step():
                y = train.attention(q, k, v, w, masks.get(w), flash)
                y.sum().backward()
            cells.append(f"window {w}: {timed(step, args.repeats, device) * 1e3:.2f} ms")
        print(f"  {name:24s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
