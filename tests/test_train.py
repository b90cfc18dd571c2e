"""Tests of train.py: the knob block, the model pieces (window attention, optimizer, schedules) and
the real `python train.py` run as a child process at the micro preset."""
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load(name, path):
    saved = os.environ.get("AUTORESEARCH_PRESET")
    os.environ["AUTORESEARCH_PRESET"] = "micro"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if saved is None:
            os.environ.pop("AUTORESEARCH_PRESET")
        else:
            os.environ["AUTORESEARCH_PRESET"] = saved


P = _load("prepare_for_train_tests", ROOT / "prepare.py")
T = _load("train_under_test", ROOT / "train.py")  # main() does not run on import


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    """The micro preset prepared once per session (same path as test_prepare.py's fixture)."""
    root = tmp_path_factory.getbasetemp() / "arc-micro-cache"
    P.prepare("micro", cache_dir=root)
    return root


def workspace(tmp_path, edits=()):
    """A candidate-like folder: a copy of train.py (with search/replace edits) and prepare.py."""
    ws = tmp_path / "ws"
    ws.mkdir()
    src = (ROOT / "train.py").read_text()
    for old, new in edits:
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    (ws / "train.py").write_text(src)
    shutil.copy(ROOT / "prepare.py", ws / "prepare.py")
    return ws


def run_train(ws, cache, budget="2", timeout=120, **env):
    """`python train.py` on its own (the developer's path: prepare reads the environment)."""
    full = dict(os.environ, AUTORESEARCH_CACHE=str(cache), AUTORESEARCH_PRESET="micro",
                AUTORESEARCH_TIME_BUDGET=budget, PYTHONDONTWRITEBYTECODE="1", **env)
    t0 = time.time()
    r = subprocess.run([sys.executable, "train.py"], cwd=ws, env=full, capture_output=True, text=True,
                       timeout=timeout)
    return r, time.time() - t0


PROGRESS = re.compile(r"^step (\d{5}) \((\d+\.\d)%\) \| loss: (\d+\.\d{6}) \| lrm: (\d+\.\d\d) \| dt: (\d+)ms \| "
                      r"tok/sec: ([\d,]+) \| mfu: (\d+\.\d)% \| epoch: (\d+) \| remaining: (\d+)s$")
SUMMARY = [("val_bpb", r"\d+\.\d{6}"), ("training_seconds", r"-?\d+\.\d"), ("total_seconds", r"\d+\.\d"),
           ("peak_vram_mb", r"\d+\.\d"), ("mfu_percent", r"\d+\.\d\d"), ("total_tokens_M", r"\d+\.\d"),
           ("num_steps", r"\d+"), ("num_params_M", r"\d+\.\d"), ("depth", r"\d+")]


# --- the real run ---------------------------------------------------------------------------

def test_train_micro_through_the_harness(micro_cache, tmp_path, monkeypatch):
    """The real train.py in the sandbox: prints the contract, and the harness's figures come from
    prepare's record and its own clock."""
    from sandbox.harness import run_harness
    from sandbox.workspace import build_workspace
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(micro_cache))
    ws = build_workspace(tmp_path / "ws", (ROOT / "train.py").read_text(), ROOT, {"test": True})
    result = run_harness(ws, "micro", budget=2.0)
    assert result["status"] == "ok", result["failure_reason"] + "\n" + result["log_tail"]
    lines = (ws / "run.log").read_text().splitlines()
    progress = [m for m in map(PROGRESS.match, lines) if m]
    assert len(progress) >= 3
    assert [int(m.group(1)) for m in progress] == list(range(len(progress)))
    assert all(math.isfinite(float(m.group(3))) for m in progress)
    assert float(progress[-1].group(3)) < float(progress[0].group(3))  # it learns
    assert lines.count("---") == 1
    tail = [line for line in lines[lines.index("---") + 1:] if not line.startswith("[harness]")]
    assert len(tail) == len(SUMMARY)
    values = {}
    for line, (key, fmt) in zip(tail, SUMMARY):
        m = re.fullmatch(rf"{key}:\s+({fmt})", line)
        assert m, line
        assert line.index(m.group(1)) == 18  # values aligned in one column, as upstream
        values[key] = float(m.group(1))
    record = result["eval_record"]
    assert f"{record['val_bpb']:.6f}" == tail[0].split()[-1] and result["val_bpb"] == record["val_bpb"]
    assert 0 < result["val_bpb"] < 10 and values["depth"] == T.DEPTH == result["depth"]
    assert result["num_steps"] == values["num_steps"] == len(progress) == record["clock"]["ticks"]
    assert record["num_tokens"] == P.EVAL_TOKENS and record["settings"]["budget"] == 2.0
    assert record["probes"]["causality"]["positions"] >= P.MAX_SEQ_LEN - 1
    assert result["training_seconds"] <= result["integrity"]["budget"]["allowed_seconds"]
    assert result["peak_vram_mb"] > 0 and result["total_tokens_M"] > 0
    # train.py writes no files: its fresh scratch folder holds its own copy and the empty homes
    assert sorted(p.name for p in (ws / "scratch").iterdir()) == [".home", ".tmp", "train.py"]


def test_train_py_runs_on_its_own(micro_cache, tmp_path):
    """`python train.py` next to prepare.py, without the harness (the developer's path)."""
    ws = workspace(tmp_path)
    r, _ = run_train(ws, micro_cache, budget="1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert re.search(r"^val_bpb:\s+\d+\.\d{6}$", r.stdout, re.M)


def test_nan_fast_fail(micro_cache, tmp_path):
    ws = workspace(tmp_path, [("MATRIX_LR = 0.04", "MATRIX_LR = 1e9")])
    r, _ = run_train(ws, micro_cache, budget="30")   # it fails within a few steps
    assert r.returncode != 0
    assert "FAIL" in r.stdout.splitlines()
    assert "val_bpb:" not in r.stdout


def test_batch_size_must_divide(micro_cache, tmp_path):
    ws = workspace(tmp_path, [('"micro": 8}[PRESET]', '"micro": 3}[PRESET]')])
    r, _ = run_train(ws, micro_cache)
    assert r.returncode != 0 and "must be divisible by DEVICE_BATCH_SIZE * MAX_SEQ_LEN" in r.stderr


def test_missing_data_names_the_command(tmp_path):
    ws = workspace(tmp_path)
    r, _ = run_train(ws, tmp_path / "empty-cache")
    assert r.returncode != 0 and "autoresearch prepare --preset micro" in r.stderr


# --- the knob block -------------------------------------------------------------------------

def test_knob_block_shape():
    src = (ROOT / "train.py").read_text()
    assert ("\nfrom prepare import PRESET, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, TrainingClock, make_dataloader, "
            "evaluate_bpb\n") in src
    assert "warmup_steps" not in src and "OMP_NUM_THREADS" not in src   # no untimed steps, no thread knob
    gpu = dict(DEPTH="8", ASPECT_RATIO="64", HEAD_DIM="128", TOTAL_BATCH_SIZE="2**19", DEVICE_BATCH_SIZE="0")
    for name, value in gpu.items():
        m = re.search(rf'^{name}\s*= \{{"gpu": {re.escape(value)},\s+"cpu": [^,]+,\s+"micro": [^}}]+\}}\[PRESET\]',
                      src, re.M)
        assert m, name
    for line in ['WINDOW_PATTERN = "SSSL"', "EMBEDDING_LR = 0.6", "UNEMBEDDING_LR = 0.004", "MATRIX_LR = 0.04",
                 "SCALAR_LR = 0.5", "WEIGHT_DECAY = 0.2", "ADAM_BETAS = (0.8, 0.95)", "WARMUP_RATIO = 0.0",
                 "WARMDOWN_RATIO = 0.5", "FINAL_LR_FRAC = 0.0", "SEED = 42"]:
        assert re.search(rf"^{re.escape(line)}(\s+#.*)?$", src, re.M), line
    for preset in ("cpu", "micro"):  # the invariant the heuristic proposer relies on
        knobs = {}
        for name in gpu:
            expr = re.search(rf"^{name}\s*= (\{{.*?\}})\[PRESET\]", src, re.M).group(1)
            knobs[name] = eval(expr)[preset]
        seq = P.PRESETS[preset]["max_seq_len"]
        assert knobs["TOTAL_BATCH_SIZE"] % (knobs["DEVICE_BATCH_SIZE"] * seq) == 0


# --- attention with sliding windows ---------------------------------------------------------

def reference_attention(q, k, v, allowed):
    """Plain masked softmax attention; q, k, v: (B, T, H, D); allowed: (T, T) bool."""
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


def test_window_mask():
    m = T.window_mask(6, 2)
    assert m.dtype == torch.bool
    for i in range(6):
        assert [j for j in range(6) if m[i, j]] == [j for j in range(max(0, i - 2), i + 1)]


def test_windowed_attention_matches_reference_and_differs_from_full():
    torch.manual_seed(0)
    B, Tn, H, D, window = 2, 32, 2, 8, 8
    q, k, v = (torch.randn(B, Tn, H, D) for _ in range(3))
    mask = T.window_mask(64, window)  # built for the model's sequence length, sliced to T
    y = T.attention(q, k, v, window, mask)
    assert torch.allclose(y, reference_attention(q, k, v, T.window_mask(Tn, window)), atol=1e-5)
    full = reference_attention(q, k, v, torch.ones(Tn, Tn).tril().bool())
    assert not torch.allclose(y, full, atol=1e-3)  # the window is really applied
    assert torch.allclose(y[:, :window + 1], full[:, :window + 1], atol=1e-5)  # no difference inside it
    y_full = T.attention(q, k, v, Tn, None)  # L layers: plain causal
    assert torch.allclose(y_full, full, atol=1e-5)


def test_model_window_sizes_and_masks():
    cfg = T.GPTConfig(sequence_len=32, vocab_size=64, n_layer=5, n_head=2, n_kv_head=2, n_embd=32,
                      window_pattern="SSSL")
    model = T.GPT(cfg)
    assert model.window_sizes == [16, 16, 16, 32, 32]  # S = half context; last layer always L
    assert torch.equal(model.mask_16, T.window_mask(32, 16)) and not hasattr(model, "mask_32")
    with pytest.raises(AssertionError, match="S/L"):
        T.GPT(T.GPTConfig(32, 64, 2, 2, 2, 32, "SXL"))


def test_model_forward_uses_windows():
    torch.manual_seed(0)
    cfg = T.GPTConfig(sequence_len=32, vocab_size=64, n_layer=2, n_head=2, n_kv_head=2, n_embd=32,
                      window_pattern="S")
    model = T.GPT(cfg)
    model.init_weights()
    idx = torch.randint(0, 64, (2, 32))
    loss = model(idx, idx, reduction="none")
    assert loss.shape == (64,)
    assert model(idx, idx).item() == pytest.approx(math.log(64), abs=0.05)  # tiny lm_head at init
    with torch.no_grad():  # randomise the zero-initialised projections so attention matters
        for p in model.parameters():
            p.normal_(0, 0.3)
    windowed = model(idx)
    model.window_sizes = [32, 32]
    full = model(idx)
    assert torch.allclose(windowed[:, :17], full[:, :17], atol=1e-4)
    assert not torch.allclose(windowed[:, 17:], full[:, 17:], atol=1e-3)


def documented_flash_attn_func(q, k, v, causal=False, window_size=(-1, -1)):
    """flash_attn_func as flash-attn 2 (and FA3) document it, written from the docstring: (B, T, H, D)
    layout; with window_size (left, right), query i sees keys i-left..i+right (-1: unlimited), and
    causal=True sets right to 0. Used to check that train.py asks a flash kernel for its windows."""
    Tn = q.size(1)
    i, j = torch.arange(Tn).unsqueeze(1), torch.arange(Tn).unsqueeze(0)
    left, right = window_size
    allowed = torch.ones(Tn, Tn, dtype=torch.bool)
    if causal or right >= 0:
        allowed &= j <= i + (0 if causal else right)
    if left >= 0:
        allowed &= j >= i - left
    return reference_attention(q, k, v, allowed)


def test_a_flash_kernel_keeps_every_layers_window():
    """FA3 and flash-attn 2 get the same call; the model must reach the same logits through it as
    through the masked SDPA fallback (so a window is never widened), and builds no masks."""
    torch.manual_seed(0)
    cfg = T.GPTConfig(sequence_len=32, vocab_size=64, n_layer=4, n_head=2, n_kv_head=2, n_embd=32,
                      window_pattern="SSL")
    sdpa = T.GPT(cfg)
    sdpa.init_weights()
    with torch.no_grad():
        for p in sdpa.parameters():
            p.normal_(0, 0.3)
    calls = []

    def flash(q, k, v, causal=False, window_size=(-1, -1)):
        calls.append((causal, window_size))
        return documented_flash_attn_func(q, k, v, causal, window_size)

    flashed = T.GPT(cfg, flash=flash)
    flashed.load_state_dict(sdpa.state_dict())
    assert not any(name.startswith("mask_") for name, _ in flashed.named_buffers())
    idx = torch.randint(0, 64, (2, 32))
    assert torch.allclose(flashed(idx), sdpa(idx), atol=1e-4)
    assert calls == [(True, (16, 0)), (True, (16, 0)), (True, (32, 0)), (True, (32, 0))]
    assert T._load_flash_attention() == (None, "SDPA+window masks")   # no CUDA here


def test_model_structure():
    cfg = T.GPTConfig(sequence_len=16, vocab_size=64, n_layer=4, n_head=2, n_kv_head=2, n_embd=64)
    model = T.GPT(cfg)
    model.init_weights()
    assert sorted(model.value_embeds.keys()) == ["1", "3"]  # alternating, including the last layer
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.resid_lambdas.tolist() == [1.0] * 4 and model.x0_lambdas.tolist() == pytest.approx([0.1] * 4)
    for block in model.transformer.h:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
        assert block.attn.c_q.weight.abs().max() <= 3**0.5 * 64**-0.5
    assert model.lm_head.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert model.estimate_flops() > 0


# --- optimizer and schedules ----------------------------------------------------------------

def test_polar_express_orthogonalises():
    torch.manual_seed(0)
    for shape in [(3, 64, 32), (3, 32, 64)]:
        s = torch.linalg.svdvals(T.polar_express(torch.randn(*shape), 5, torch.float32))
        assert s.min() > 0.7 and s.max() < 1.2


def test_optimizer_groups_and_step():
    torch.manual_seed(0)
    cfg = T.GPTConfig(sequence_len=16, vocab_size=64, n_layer=2, n_head=2, n_kv_head=2, n_embd=64)
    model = T.GPT(cfg)
    model.init_weights()
    opt = T.setup_optimizer(model)
    kinds = [g["kind"] for g in opt.param_groups]
    assert kinds[:5] == ["adamw"] * 5 and set(kinds[5:]) == {"muon"}
    scale = (64 / 768) ** -0.5
    assert opt.param_groups[0]["lr"] == pytest.approx(T.UNEMBEDDING_LR * scale)
    assert opt.param_groups[1]["lr"] == pytest.approx(T.EMBEDDING_LR * scale)
    assert opt.param_groups[3]["lr"] == pytest.approx(T.SCALAR_LR * 0.01)
    assert opt.param_groups[4]["betas"] == (0.96, 0.95) and opt.param_groups[4]["eps"] == 1e-10
    muon_params = sum(len(g["params"]) for g in opt.param_groups if g["kind"] == "muon")
    assert muon_params == len(list(model.transformer.h.parameters()))
    assert all(len({tuple(p.shape) for p in g["params"]}) == 1 for g in opt.param_groups if g["kind"] == "muon")
    idx = torch.randint(0, 64, (4, 16))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(5):
        loss = model(idx, idx)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "transformer.h.0.attn.c_q.weight" in changed and "lm_head.weight" in changed


def test_schedules():
    assert T.get_lr_multiplier(0.0) == 1.0 and T.get_lr_multiplier(0.49) == 1.0
    assert T.get_lr_multiplier(0.75) == pytest.approx(0.5) and T.get_lr_multiplier(1.0) == pytest.approx(0.0)
    assert T.get_muon_momentum(0) == pytest.approx(0.85) and T.get_muon_momentum(150) == pytest.approx(0.90)
    assert T.get_muon_momentum(300) == pytest.approx(0.95) and T.get_muon_momentum(1000) == pytest.approx(0.95)
    assert T.get_weight_decay(0.0) == T.WEIGHT_DECAY and T.get_weight_decay(1.0) == 0.0


def test_auto_device_batch_size():
    assert T.auto_device_batch_size(79.6) == 128  # H100 80GB
    assert T.auto_device_batch_size(44.4) == 64   # L40S / A6000
    assert T.auto_device_batch_size(22.0) == 32   # A10G 24GB
    assert T.auto_device_batch_size(15.0) == 16
    assert T.auto_device_batch_size(7.5) == 8
    for rows in (128, 64, 32, 16, 8):
        assert 2**19 % (rows * 2048) == 0
