"""
The autoresearch baseline experiment in one file: a nanochat-style GPT trained with MuonAdamW for a
fixed time budget, then evaluated in validation bits per byte (val_bpb, lower is better).
This is the only file candidates change. Run: python train.py  (preset from AUTORESEARCH_PRESET).

The budget is prepare's TrainingClock (CUDA-synchronised wall clock on GPU, CPU time of the process
on the CPU presets), ticked once per optimizer step; the harness reads the same clock from outside.
evaluate_bpb calls model(idx) and scores the logits itself.
"""

import gc
import math
import resource
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import PRESET, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, TrainingClock, make_dataloader, evaluate_bpb

# Knobs: everything a candidate is expected to tune lives in this block.
# Size knobs hold one value per preset (prepare.PRESET picks it): "gpu" is the
# upstream experiment; "cpu" and "micro" are scaled-down versions for 2 CPU cores.
DEPTH             = {"gpu": 8,     "cpu": 4,     "micro": 2}[PRESET]  # number of transformer layers
ASPECT_RATIO      = {"gpu": 64,    "cpu": 32,    "micro": 32}[PRESET]  # model_dim = DEPTH * ASPECT_RATIO (rounded up to HEAD_DIM)
HEAD_DIM          = {"gpu": 128,   "cpu": 64,    "micro": 32}[PRESET]  # n_head = model_dim // HEAD_DIM
TOTAL_BATCH_SIZE  = {"gpu": 2**19, "cpu": 2**13, "micro": 2**10}[PRESET]  # tokens per optimizer step
DEVICE_BATCH_SIZE = {"gpu": 0,     "cpu": 16,    "micro": 8}[PRESET]  # rows per micro-batch (0 = auto)
WINDOW_PATTERN = "SSSL"  # per-layer attention window, cycled: L = full context, S = half; last layer always L
EMBEDDING_LR = 0.6  # AdamW lr of the token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW lr of the lm_head
MATRIX_LR = 0.04  # Muon lr of the 2-D block matrices
SCALAR_LR = 0.5  # AdamW lr of x0_lambdas (resid_lambdas get 0.01x)
WEIGHT_DECAY = 0.2  # cautious weight decay of the Muon matrices, decayed linearly to 0
ADAM_BETAS = (0.8, 0.95)
WARMUP_RATIO = 0.0  # share of the time budget with a linear lr warm-up
WARMDOWN_RATIO = 0.5  # share of the time budget with a linear lr warm-down at the end
FINAL_LR_FRAC = 0.0  # lr multiplier reached at the end of the warm-down
SEED = 42

# ---------------------------------------------------------------------------------------------
# Attention kernel
#
# On CUDA, the first kernel that loads and passes a smoke test, in this order:
#   1. Flash-Attention 3 through the `kernels` package (Hopper; it downloads the kernel from the hub
#      the first time, so it fails offline);
#   2. flash-attn 2, the installed `flash_attn` package (Ampere and newer: A100, A10G, L4, H100; the
#      PyTorch 2.8 training DLC ships 2.8.3). Same call, same (B, T, H, D) layout, windows kept:
#      window_size=(w, 0) with causal=True lets query i see keys i-w..i, exactly window_mask below.
#   3. FALLBACK (any other GPU, CPU, offline): torch SDPA. Full-context layers use is_causal=True
#      (fused fast path). Sliding-window layers use an explicit boolean causal+window mask, built once
#      per distinct window size when the model is created and kept as a buffer. Cost: a T*T bool
#      tensor per distinct window (4 MiB at T=2048), and a masked SDPA cannot use the flash backend
#      (it runs the memory-efficient or math kernel), so windowed layers do no less work than full
#      attention, where a flash kernel skips the blocks outside the window. It never silently turns
#      a window into full attention (plain is_causal=True would).


def _smoke_test(flash_attn_func):
    q = torch.randn(1, 8, 1, 64, device="cuda", dtype=torch.bfloat16)
    flash_attn_func(q, q, q, causal=True, window_size=(4, 0))
    return flash_attn_func


def _load_flash_attention():
    """(a flash_attn_func, the kernel's name), or (None, the fallback's name)."""
    if not torch.cuda.is_available():
        return None, "SDPA+window masks"
    try:
        from kernels import get_kernel
        cap = torch.cuda.get_device_capability()
        repo = "varunneal/flash-attention-3" if cap == (9, 0) else "kernels-community/flash-attn3"
        return _smoke_test(get_kernel(repo).flash_attn_interface.flash_attn_func), "FA3"
    except Exception as e:  # offline, no package, unsupported GPU: try flash-attn 2
        print(f"Flash-Attention 3 unavailable ({type(e).__name__}: {e})")
    try:
        import flash_attn
        return _smoke_test(flash_attn.flash_attn_func), f"FA2 {flash_attn.__version__}"
    except Exception as e:  # not installed, or a GPU older than Ampere: masked SDPA
        print(f"flash-attn 2 unavailable ({type(e).__name__}: {e}); using SDPA with window masks")
    return None, "SDPA+window masks"


def window_mask(T, window, device=None):
    """Boolean (T, T) mask, True where query i may attend key j: j <= i and i - j <= window."""
    i = torch.arange(T, device=device).unsqueeze(1)
    j = torch.arange(T, device=device).unsqueeze(0)
    return (j <= i) & (i - j <= window)


def attention(q, k, v, window, mask=None, flash=None):
    """Causal attention with a left window. q: (B, T, H, D), k/v: (B, T, Hkv, D); returns (B, T, H, D).
    window >= T - 1 means full causal attention; otherwise mask must be window_mask(>=T, window)."""
    T = q.size(1)
    if flash is not None:  # FA3 or FA2: the same call
        y = flash(q, k, v, causal=True, window_size=(window, 0))
        return y[0] if isinstance(y, tuple) else y
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = dict(enable_gqa=True) if k.size(1) != q.size(1) else {}
    if window >= T - 1:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
    else:
        assert mask is not None, "windowed attention needs its mask"
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:T, :T], **gqa)
    return y.transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# Model


@dataclass
class GPTConfig:
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    window_pattern: str = "SSSL"


def norm(x):
    return F.rms_norm(x, (x.size(-1),))  # parameter-free RMSNorm


def has_ve(layer_idx, n_layer):
    """Value embeddings on alternating layers, always including the last one."""
    return layer_idx % 2 == (n_layer - 1) % 2


def apply_rotary_emb(x, cos, sin):
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], 3)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        assert self.n_head % self.n_kv_head == 0
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate_channels = 32
        self.ve_gate = (nn.Linear(self.ve_gate_channels, self.n_kv_head, bias=False)
                        if has_ve(layer_idx, config.n_layer) else None)

    def forward(self, x, ve, cos_sin, window, mask, flash):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:  # value residual: gate in (0, 2), neutral 1.0 at init
            ve = ve.view(B, T, self.n_kv_head, self.head_dim)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :self.ve_gate_channels]))
            v = v + gate.unsqueeze(-1) * ve
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)  # QK-norm
        q, k = q.to(v.dtype), k.to(v.dtype)
        y = attention(q, k, v, window, mask, flash)
        return self.c_proj(y.contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos_sin, window, mask, flash):
        x = x + self.attn(norm(x), ve, cos_sin, window, mask, flash)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config, flash=None):
        super().__init__()
        self.config = config
        self.flash = flash
        self.window_sizes = self._compute_window_sizes(config)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        head_dim = config.n_embd // config.n_head
        kv_dim = config.n_kv_head * head_dim
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(config.vocab_size, kv_dim)
                                           for i in range(config.n_layer) if has_ve(i, config.n_layer)})
        cos, sin = self._precompute_rotary(10 * config.sequence_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for w in sorted(set(self.window_sizes)):  # one cached mask per distinct sliding window
            if flash is None and w < config.sequence_len - 1:
                self.register_buffer(f"mask_{w}", window_mask(config.sequence_len, w), persistent=False)

    @staticmethod
    def _compute_window_sizes(config):
        pattern = config.window_pattern.upper()
        assert pattern and all(c in "SL" for c in pattern), f"WINDOW_PATTERN must use S/L, got {pattern!r}"
        long_window, short_window = config.sequence_len, config.sequence_len // 2
        sizes = [long_window if pattern[i % len(pattern)] == "L" else short_window
                 for i in range(config.n_layer)]
        sizes[-1] = long_window  # the last layer always sees the full context
        return sizes

    @staticmethod
    def _precompute_rotary(seq_len, head_dim, base=10000):
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]

    @torch.no_grad()
    def init_weights(self):
        n_embd = self.config.n_embd
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        s = 3**0.5 * n_embd**-0.5  # uniform with the std of N(0, 1/n_embd)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        if self.transformer.wte.weight.device.type == "cuda":  # embeddings and rotary in bf16 on GPU
            self.transformer.wte.to(dtype=torch.bfloat16)
            for ve in self.value_embeds.values():
                ve.to(dtype=torch.bfloat16)
            self.cos, self.sin = self.cos.bfloat16(), self.sin.bfloat16()

    def estimate_flops(self):
        """Training FLOPs per token: 6 * (non-embedding params) + attention."""
        nparams = sum(p.numel() for p in self.parameters())
        exclude = (self.transformer.wte.weight.numel() + self.resid_lambdas.numel() + self.x0_lambdas.numel()
                   + sum(ve.weight.numel() for ve in self.value_embeds.values()))
        h, q, t = self.config.n_head, self.config.n_embd // self.config.n_head, self.config.sequence_len
        attn = sum(12 * h * q * min(w, t) for w in self.window_sizes)
        return 6 * (nparams - exclude) + attn

    def forward(self, idx, targets=None, reduction="mean"):
        """Logits (B, T, vocab) for idx (B, T); with targets, the training loss instead."""
        B, T = idx.size()
        assert T <= self.config.sequence_len
        cos_sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.transformer.wte(idx))
        x0 = x
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            w = self.window_sizes[i]
            mask = getattr(self, f"mask_{w}", None)
            x = block(x, ve, cos_sin, w, mask, self.flash)
        x = norm(x)
        softcap = 15
        logits = self.lm_head(x).float()
        logits = softcap * torch.tanh(logits / softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1, reduction=reduction)


# ---------------------------------------------------------------------------------------------
# Optimizer: MuonAdamW (AdamW for embeddings, head and scalars; Muon for the block matrices)

POLAR_EXPRESS_COEFFS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def adamw_step(p, grad, exp_avg, exp_avg_sq, step_t, lr_t, beta1_t, beta2_t, eps_t, wd_t):
    p.mul_(1 - lr_t * wd_t)
    exp_avg.lerp_(grad, 1 - beta1_t)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2_t)
    bias1 = 1 - beta1_t**step_t
    bias2 = 1 - beta2_t**step_t
    denom = (exp_avg_sq / bias2).sqrt() + eps_t
    p.add_(exp_avg / denom * (-lr_t / bias1))


def polar_express(g, ns_steps, dtype):
    """Approximate orthogonalisation (U V^T of the SVD) of a stack of matrices."""
    X = g.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    tall = g.size(-2) > g.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:ns_steps]:
        if tall:
            A = X.mT @ X
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.mT
            X = a * X + (b * A + c * (A @ A)) @ X
    return X


def muon_step(grads, params, momentum_buffer, second_momentum_buffer, momentum_t, lr_t, wd_t, beta2_t,
              ns_steps, red_dim, ns_dtype):
    # Nesterov momentum
    momentum = momentum_t.to(grads.dtype)
    momentum_buffer.lerp_(grads, 1 - momentum)
    g = grads.lerp_(momentum_buffer, momentum)
    g = polar_express(g, ns_steps, ns_dtype)
    # NorMuon: per-row (or per-column) second-moment normalisation that keeps the update's norm
    v_mean = g.float().square().mean(dim=red_dim, keepdim=True)
    red_size = g.size(red_dim)
    v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * red_size).sqrt()
    second_momentum_buffer.lerp_(v_mean.to(second_momentum_buffer.dtype), 1 - beta2_t.to(second_momentum_buffer.dtype))
    step_size = second_momentum_buffer.clamp_min(1e-10).rsqrt()
    v_norm_new = ((v_mean * red_size) * step_size.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    g = g * (step_size * (v_norm / v_norm_new.clamp_min(1e-10))).to(g.dtype)
    # cautious weight decay (only where update and parameter agree in sign), then the update
    lr = lr_t.to(g.dtype)
    wd = wd_t.to(g.dtype)
    mask = (g * params) >= 0
    params.sub_(lr * g + lr * wd * params * mask)


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, param_groups, compile_steps=False, ns_dtype=torch.float32):
        super().__init__(param_groups, defaults={})
        self.ns_dtype = ns_dtype
        # hyperparameters travel as 0-d CPU tensors so compiled steps never recompile on new values
        self._t = {k: torch.tensor(0.0, dtype=torch.float32) for k in
                   ("step", "lr", "beta1", "beta2", "eps", "wd", "momentum")}
        compile_fn = (lambda f: torch.compile(f, dynamic=False, fullgraph=True)) if compile_steps else (lambda f: f)
        self._adamw_step = compile_fn(adamw_step)
        self._muon_step = compile_fn(muon_step)

    def _step_adamw(self, group):
        t = self._t
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t["step"].fill_(state["step"])
            t["lr"].fill_(group["lr"])
            t["beta1"].fill_(group["betas"][0])
            t["beta2"].fill_(group["betas"][1])
            t["eps"].fill_(group["eps"])
            t["wd"].fill_(group["weight_decay"])
            self._adamw_step(p, p.grad, state["exp_avg"], state["exp_avg_sq"], t["step"], t["lr"],
                             t["beta1"], t["beta2"], t["eps"], t["wd"])

    def _step_muon(self, group):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        state = self.state[params[0]]
        rows, cols = params[0].shape
        red_dim = -1 if rows >= cols else -2
        if not state:
            state["momentum_buffer"] = torch.zeros((len(params), rows, cols), dtype=params[0].dtype,
                                                   device=params[0].device)
            shape = (len(params), rows, 1) if rows >= cols else (len(params), 1, cols)
            state["second_momentum_buffer"] = torch.zeros(shape, dtype=torch.float32, device=params[0].device)
        grads = torch.stack([p.grad for p in params])
        stacked = torch.stack(params)
        t = self._t
        t["momentum"].fill_(group["momentum"])
        t["lr"].fill_(group["lr"] * max(1.0, rows / cols) ** 0.5)
        t["wd"].fill_(group["weight_decay"])
        t["beta2"].fill_(group["beta2"])
        self._muon_step(grads, stacked, state["momentum_buffer"], state["second_momentum_buffer"],
                        t["momentum"], t["lr"], t["wd"], t["beta2"], group["ns_steps"], red_dim, self.ns_dtype)
        torch._foreach_copy_(params, list(stacked.unbind(0)))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            else:
                self._step_muon(group)


def setup_optimizer(model, compile_steps=False, ns_dtype=torch.float32):
    model_dim = model.config.n_embd
    dmodel_lr_scale = (model_dim / 768) ** -0.5
    adam = dict(kind="adamw", betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0)
    groups = [
        dict(adam, params=list(model.lm_head.parameters()), lr=UNEMBEDDING_LR * dmodel_lr_scale),
        dict(adam, params=list(model.transformer.wte.parameters()), lr=EMBEDDING_LR * dmodel_lr_scale),
        dict(adam, params=list(model.value_embeds.parameters()), lr=EMBEDDING_LR * dmodel_lr_scale),
        dict(adam, params=[model.resid_lambdas], lr=SCALAR_LR * 0.01),
        dict(adam, params=[model.x0_lambdas], lr=SCALAR_LR, betas=(0.96, 0.95)),
    ]
    matrix_params = list(model.transformer.h.parameters())
    for shape in sorted({tuple(p.shape) for p in matrix_params}):
        groups.append(dict(kind="muon", params=[p for p in matrix_params if tuple(p.shape) == shape],
                           lr=MATRIX_LR, momentum=0.95, ns_steps=5, beta2=0.95, weight_decay=WEIGHT_DECAY))
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    return MuonAdamW(groups, compile_steps=compile_steps, ns_dtype=ns_dtype)


# ---------------------------------------------------------------------------------------------
# Schedules (progress = training time / TIME_BUDGET, from the clock)


def get_lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO if WARMDOWN_RATIO > 0 else 0.0
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


def get_muon_momentum(step):
    frac = min(step / 300, 1)
    return (1 - frac) * 0.85 + frac * 0.95


def get_weight_decay(progress):
    return WEIGHT_DECAY * (1 - progress)


def auto_device_batch_size(total_mem_gib):
    """Rows of MAX_SEQ_LEN per micro-batch for DEVICE_BATCH_SIZE = 0 on a GPU with this much memory
    (upstream peaks at ~45 GB with 128 rows of 2048 on an H100; an A10G has ~22 GiB)."""
    for min_gib, rows in ((70, 128), (40, 64), (20, 32), (10, 16)):
        if total_mem_gib >= min_gib:
            return rows
    return 8


# Peak dense bf16 FLOP/s for the MFU figure (approximate datasheet values; H100 when unknown).
PEAK_FLOPS = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def main():
    t_start = time.time()
    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.cuda.manual_seed(SEED)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        gpu_name = torch.cuda.get_device_name()
        peak_flops = next((v for k, v in PEAK_FLOPS.items() if k in gpu_name), PEAK_FLOPS["H100"])
    autocast_ctx = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_cuda
                    else torch.autocast(device_type="cpu", enabled=False))

    device_batch_size = DEVICE_BATCH_SIZE
    if device_batch_size == 0:
        device_batch_size = (auto_device_batch_size(torch.cuda.get_device_properties(0).total_memory / 2**30)
                             if use_cuda else 8)
    tokens_per_fwdbwd = device_batch_size * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0, (
        f"TOTAL_BATCH_SIZE ({TOTAL_BATCH_SIZE}) must be divisible by DEVICE_BATCH_SIZE * MAX_SEQ_LEN "
        f"({device_batch_size} * {MAX_SEQ_LEN} = {tokens_per_fwdbwd})")
    grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_fwdbwd

    tokenizer = Tokenizer.from_directory()
    vocab_size = tokenizer.get_vocab_size()
    model_dim = ((DEPTH * ASPECT_RATIO + HEAD_DIM - 1) // HEAD_DIM) * HEAD_DIM
    n_head = model_dim // HEAD_DIM
    config = GPTConfig(sequence_len=MAX_SEQ_LEN, vocab_size=vocab_size, n_layer=DEPTH, n_head=n_head,
                       n_kv_head=n_head, n_embd=model_dim, window_pattern=WINDOW_PATTERN)
    flash, attention_kernel = _load_flash_attention()
    model = GPT(config, flash=flash).to(device)
    model.init_weights()
    num_params = sum(p.numel() for p in model.parameters())
    num_flops_per_token = model.estimate_flops()
    print(f"preset: {PRESET} | device: {device} | attention: {attention_kernel}")
    print(f"vocab: {vocab_size} | depth: {DEPTH} | model_dim: {model_dim} | heads: {n_head} | "
          f"windows: {model.window_sizes} | params: {num_params / 1e6:.2f}M")
    print(f"batch: {TOTAL_BATCH_SIZE} tokens = {grad_accum_steps} x {device_batch_size} x {MAX_SEQ_LEN} | "
          f"time budget: {TIME_BUDGET}s", flush=True)

    optimizer = setup_optimizer(model, compile_steps=use_cuda,
                                ns_dtype=torch.bfloat16 if use_cuda else torch.float32)
    if use_cuda:
        model = torch.compile(model, dynamic=False)
    train_loader = make_dataloader(tokenizer, device_batch_size, MAX_SEQ_LEN, "train", device=device)
    x, y, epoch = next(train_loader)

    clock = TrainingClock()  # time since interpreter start, minus prepare's fixed start-up allowance
    smooth_train_loss = 0.0
    progress = 0.0
    step = 0
    while True:
        t0 = time.time()
        for _ in range(grad_accum_steps):
            with autocast_ctx:
                loss = model(x, y)
            train_loss = loss.detach()
            (loss / grad_accum_steps).backward()
            x, y, epoch = next(train_loader)
        lrm = get_lr_multiplier(progress)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if group["kind"] == "muon":
                group["momentum"] = get_muon_momentum(step)
                group["weight_decay"] = get_weight_decay(progress)
        optimizer.step()
        model.zero_grad(set_to_none=True)
        train_loss_f = train_loss.item()
        if math.isnan(train_loss_f) or train_loss_f > 100:  # fast fail
            print("FAIL", flush=True)
            sys.exit(1)
        progress = clock.tick()
        dt = clock.last_step_seconds if step else time.time() - t0  # for the display only

        ema_beta = 0.9
        smooth_train_loss = ema_beta * smooth_train_loss + (1 - ema_beta) * train_loss_f
        debiased = smooth_train_loss / (1 - ema_beta ** (step + 1))
        tok_per_sec = int(TOTAL_BATCH_SIZE / dt)
        mfu = 100 * num_flops_per_token * TOTAL_BATCH_SIZE / dt / peak_flops if use_cuda else 0.0
        remaining = clock.remaining
        print(f"step {step:05d} ({100 * progress:.1f}%) | loss: {debiased:.6f} | lrm: {lrm:.2f} | "
              f"dt: {dt * 1000:.0f}ms | tok/sec: {tok_per_sec:,} | mfu: {mfu:.1f}% | epoch: {epoch} | "
              f"remaining: {remaining:.0f}s", flush=True)

        if step == 0:  # everything allocated so far lives to the end: keep it out of the GC's way
            gc.collect()
            gc.freeze()
            gc.disable()
        elif (step + 1) % 5000 == 0:
            gc.collect()
        step += 1
        if clock.done:
            break

    total_training_time = clock.seconds
    total_tokens = step * TOTAL_BATCH_SIZE
    model.eval()
    with autocast_ctx:
        val_bpb = evaluate_bpb(model, tokenizer, device_batch_size)

    steady_mfu = (100 * num_flops_per_token * TOTAL_BATCH_SIZE * step / total_training_time / peak_flops
                  if use_cuda and total_training_time > 0 else 0.0)
    if use_cuda:
        peak_mem_mb = torch.cuda.max_memory_allocated() / 1024 / 1024
    else:  # peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mem_mb = rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024
    t_end = time.time()
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {total_training_time:.1f}")
    print(f"total_seconds:    {t_end - t_start:.1f}")
    print(f"peak_vram_mb:     {peak_mem_mb:.1f}")
    print(f"mfu_percent:      {steady_mfu:.2f}")
    print(f"total_tokens_M:   {total_tokens / 1e6:.1f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}", flush=True)


if __name__ == "__main__":
    main()
