"""The experiment's facts the proposer is told: what a run gets, and on what.

Without them the model guesses whether a change fits: a bigger model that cannot finish one
step in a 4-second budget, a batch that does not fit the memory. Read from prepare.py's preset
table (never by importing prepare.py: it imports torch) and from the backend's settings; the
hardware of a local GPU from `nvidia-smi` once per process.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

# SageMaker instance families the backend is used with: GPU and its memory (AWS instance pages).
SAGEMAKER_GPUS = {
    "ml.g4dn": "NVIDIA T4, 16 GB", "ml.g5": "NVIDIA A10G, 24 GB", "ml.g6": "NVIDIA L4, 24 GB",
    "ml.g6e": "NVIDIA L40S, 48 GB", "ml.p3": "NVIDIA V100, 16 GB", "ml.p4d": "NVIDIA A100, 40 GB",
    "ml.p4de": "NVIDIA A100, 80 GB", "ml.p5": "NVIDIA H100, 80 GB",
}


def experiment_facts(ctx) -> dict:
    """{"preset", "budget_seconds", "clock", "max_seq_len", "vocab_size", "hardware"}; keys whose
    value cannot be read are left out (the digest says what it knows)."""
    from sandbox.presets import PrepareFactsError, preset_facts, time_budget
    out: dict = {"preset": ctx.preset}
    try:
        facts = preset_facts(ctx.preset, ctx.layout.prepare_py)
        out.update(max_seq_len=facts.get("max_seq_len"), vocab_size=facts.get("vocab_size"), clock=facts.get("clock"))
        out["budget_seconds"] = time_budget(ctx.preset, ctx.layout.prepare_py)
    except (PrepareFactsError, OSError, ValueError, KeyError):
        pass
    out["hardware"] = hardware(ctx)
    return {k: v for k, v in out.items() if v is not None}


def hardware(ctx) -> str:
    backend = ctx.backend
    if backend == "sagemaker":
        kind = ctx.settings.sagemaker.instance_type
        family = kind.rsplit(".", 1)[0]
        return f"SageMaker {kind}" + (f" ({SAGEMAKER_GPUS[family]} per GPU)" if family in SAGEMAKER_GPUS else "")
    if backend == "simulated":
        return "simulated backend (a modelled clock; nothing trains)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus = local_gpus()
    slots = ctx.settings.local.slots or (len(gpus) if gpus and ctx.preset == "gpu" else 0)
    text = f"this machine, {cores} CPU core(s)"
    if gpus and ctx.preset == "gpu":
        text += f", GPU(s): {'; '.join(gpus)}"
    return text + (f", {slots} training slot(s)" if slots else "")


@functools.lru_cache(maxsize=1)
def local_gpus() -> tuple[str, ...]:
    """("NVIDIA H100 80GB HBM3, 81559 MiB", ...) from nvidia-smi; () without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):   # a broken driver: say nothing rather than fail
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())
