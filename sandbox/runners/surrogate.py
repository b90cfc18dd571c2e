"""What a simulated execution of a train.py would measure: a seeded stand-in for training.

The simulated backend trains nothing; this module says what a run WOULD have measured, so that a
scheduler, selection and early stopping have something real to work on at population 1,000:

  * true quality (the val_bpb the code would average over many runs) is a smooth function of the
    knobs the heuristic proposer edits: a quadratic bowl in log space around an optimum placed
    OFF the baseline (slightly higher lrs, a longer anneal, a bit deeper and wider, ...), so that
    better knobs really win and selection has something to find; plus a small code effect, a
    seeded hash of the non-knob code (any other edit moves quality a little, either way);
  * every run adds noise: val_bpb ~ N(true, sigma), the preset's measured run-to-run spread;
  * the loss curve: start loss -> final train loss along the preset's curve shape, time-warped
    by a per-candidate "speed" (higher lrs start fast, bigger models and batches start slow), so
    curves cross the way real ones do and early stopping can be wrong; each run's curve gets an
    offset that follows its val noise and autocorrelated reading noise;
  * crashes: a seeded share of distinct sources crash (the same code crashes every time, at the
    same point), like a real bug.

The constants per preset (PRESET_MODELS) are calibrated from real recorded curves
(benchmarks/data/curves_*.json; benchmarks/bench_early_stop.py prints the calibration); the gpu
ones are assumptions from upstream autoresearch's published figures (no GPU here). Everything a
run draws comes from random.Random(str) seeds (sha512 of the text, not the salted hash()), so the
same seed, source and execution id give the same numbers in any process.

Knobs are read line by line (a top-level `NAME = <constant expression>` in the knob block), not
by parsing the whole file: ast.parse of train.py costs ~10 ms, a thousand candidates would spend
seconds on it. A knob a candidate turned into code counts as the baseline's value.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import math
import operator
import random
import re
from dataclasses import dataclass
from typing import Optional


# The baseline's knob values (train.py) and where the surrogate puts the optimum. lrs and the
# schedule are the same at every preset; size knobs are per preset.
BASELINE = {
    "EMBEDDING_LR": 0.6, "UNEMBEDDING_LR": 0.004, "MATRIX_LR": 0.04, "SCALAR_LR": 0.5,
    "WEIGHT_DECAY": 0.2, "ADAM_BETAS": (0.8, 0.95), "WARMUP_RATIO": 0.0, "WARMDOWN_RATIO": 0.5,
    "FINAL_LR_FRAC": 0.0, "WINDOW_PATTERN": "SSSL",
}
BASELINE_SIZE = {
    "gpu": {"DEPTH": 8, "ASPECT_RATIO": 64, "HEAD_DIM": 128, "TOTAL_BATCH_SIZE": 2**19},
    "cpu": {"DEPTH": 4, "ASPECT_RATIO": 32, "HEAD_DIM": 64, "TOTAL_BATCH_SIZE": 2**13},
    "micro": {"DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32, "TOTAL_BATCH_SIZE": 2**10},
}
OPTIMUM = {
    "EMBEDDING_LR": 0.75, "UNEMBEDDING_LR": 0.005, "MATRIX_LR": 0.05, "SCALAR_LR": 0.5,
    "WEIGHT_DECAY": 0.15, "WARMUP_RATIO": 0.0, "WARMDOWN_RATIO": 0.65, "FINAL_LR_FRAC": 0.05,
    "BETA1_HORIZON": 1 / (1 - 0.85), "BETA2_HORIZON": 1 / (1 - 0.95), "SHORT_WINDOWS": 0.5,
}
OPTIMUM_SIZE = {   # depth, model_dim, head_dim, tokens per step
    "gpu": (10, 640, 128, 2**19), "cpu": (5, 160, 64, 2**12), "micro": (3, 64, 32, 2**10),
}
# Relative val_bpb penalty per unit of squared distance (log2 units for scales, plain for ratios).
WEIGHTS = {
    "EMBEDDING_LR": 0.02, "UNEMBEDDING_LR": 0.02, "MATRIX_LR": 0.03, "SCALAR_LR": 0.005,
    "WEIGHT_DECAY": 0.01, "BETA1_HORIZON": 0.005, "BETA2_HORIZON": 0.005,
    "WARMUP_RATIO": 0.3, "WARMDOWN_RATIO": 0.08, "FINAL_LR_FRAC": 0.5, "SHORT_WINDOWS": 0.004,
    "DEPTH": 0.03, "MODEL_DIM": 0.03, "HEAD_DIM": 0.004, "BATCH": 0.015,
}
CODE_EFFECT = 0.004        # relative sd of the effect of non-knob code edits
SPEED_LR, SPEED_SIZE, SPEED_BATCH = 0.3, 0.5, 0.3   # curve speed per doubling (see Surrogate._quality)
SPEED_JITTER = 0.05        # sd of log2(speed) not explained by the knobs
# DEVICE_BATCH_SIZE (same optimisation, other memory) and SEED (another draw of the same
# experiment) are knobs without an effect on quality: editing them is not a code edit.
KNOB_NAMES = tuple(BASELINE) + ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "SEED")


@dataclass(frozen=True)
class PresetModel:
    """One preset's calibrated figures (see the module docstring)."""

    base_bpb: float          # val_bpb of the baseline train.py
    noise_sigma: float       # run-to-run sd of val_bpb for identical code
    start_loss: float        # the first reading of the train loss (~ln(vocab))
    end_loss: float          # the baseline's last reading
    steps: int               # the baseline's optimizer steps in the budget
    shape_tau: float         # curve shape: (1 + p/tau)^-alpha, rescaled to 1 -> 0 (curve_shape)
    shape_alpha: float
    offset_sd: float         # sd of a run's curve offset (loss units) from identical code
    reading_sd: float        # sd of one reading's wiggle around the run's curve (loss units)


# gpu: upstream autoresearch's baseline (val_bpb ~0.998 on an H100, ~950 steps in 300 s); the
# shape fitted to a public RTX 5090 log fragment (loss ~3.4 at 61-67%); noise assumed (~0.15%).
# micro, cpu: benchmarks/data/curves_{micro,cpu}.json, the incumbent's repeats (micro: those that
# got >= 9 steps). Recorded with today's wall-clock budget on a shared 2-core machine: the load
# decides the step count (cpu: ~6 steps in 45 s), hence the noise. Rerun the recorder and
# bench_early_stop.py's calibration lines after the CPU-time clock lands, and update these.
PRESET_MODELS = {
    "gpu": PresetModel(base_bpb=0.998, noise_sigma=0.0015, start_loss=9.01, end_loss=3.10, steps=950,
                       shape_tau=0.5, shape_alpha=0.35, offset_sd=0.004, reading_sd=0.004),
    "cpu": PresetModel(base_bpb=2.73, noise_sigma=0.125, start_loss=7.62, end_loss=6.80, steps=6,
                       shape_tau=100.0, shape_alpha=0.1, offset_sd=0.14, reading_sd=0.01),
    "micro": PresetModel(base_bpb=3.07, noise_sigma=0.17, start_loss=6.24, end_loss=5.05, steps=13,
                         shape_tau=100.0, shape_alpha=0.7, offset_sd=0.3, reading_sd=0.02),
}

_KNOB_LINE = re.compile(r"^(?P<name>" + "|".join(KNOB_NAMES) + r")\s*=\s*(?P<value>[^#\n]+?)[ \t]*(?:#.*)?$", re.M)
_KNOB_STARTS = tuple(KNOB_NAMES)
_TRAILING_COMMENT = re.compile(r"[ \t]+#[^'\"]*$")     # no quote after '#': not inside a string


def seeded(*parts) -> random.Random:
    """A Random seeded from text (sha512 of it), identical in every process."""
    return random.Random(":".join(str(p) for p in parts))


def read_knobs(source: str, preset: str) -> dict[str, object]:
    """The knob values a train.py sets at top level for `preset` (`{..}[PRESET]` picks the
    preset's column); knobs it does not set as constants are missing from the dict."""
    return dict(_read_knobs(source, preset))


@functools.lru_cache(maxsize=4096)
def _read_knobs(source: str, preset: str) -> tuple:
    found: dict[str, object] = {}
    for m in _KNOB_LINE.finditer(source):
        name, text = m.group("name"), m.group("value")
        column = re.fullmatch(r"(\{.*\})\s*\[\s*PRESET\s*\]", text)
        try:
            value = _constant(ast.parse(column.group(1) if column else text, mode="eval").body)
        except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
            found.pop(name, None)      # the last assignment counts, as when Python runs it
            continue
        if column:
            if not isinstance(value, dict) or preset not in value:
                found.pop(name, None)
                continue
            value = value[preset]
        found[name] = value
    return tuple(found.items())


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def _constant(node: ast.AST):
    """The value of a knob's constant expression (2**19, -1e-3, (0.8, 0.95), {"gpu": 8, ...});
    ValueError for anything else. Powers are bounded: a candidate's 10**10**10 must not hang the
    simulation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _constant(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _constant(node.left), _constant(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 2**64):
            raise ValueError("power too large")
        return _OPS[type(node.op)](a, b)
    if isinstance(node, ast.Tuple):
        return tuple(_constant(e) for e in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_constant(k): _constant(v) for k, v in zip(node.keys, node.values)}
    raise ValueError(f"not a constant: {type(node).__name__}")


def _log2_ratio(value, optimum) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 or optimum <= 0:
        return 3.0                     # nonsense or turned off: far from any good value
    return math.log2(value / optimum)


@dataclass(frozen=True)
class Quality:
    true_bpb: float          # what the code would average over many runs
    speed: float             # > 1: gets down its curve faster than the baseline early on
    crashes_at: Optional[float]   # pct where it crashes, None when it does not


def _baseline_dim(preset: str) -> int:
    size = BASELINE_SIZE[preset]
    return math.ceil(size["DEPTH"] * size["ASPECT_RATIO"] / size["HEAD_DIM"]) * size["HEAD_DIM"]


def knob_distances(knobs: dict[str, object], preset: str) -> dict[str, float]:
    """How far each knob is from the surrogate's optimum (log2 units for scales)."""
    knobs = {**BASELINE, **BASELINE_SIZE[preset], **knobs}
    depth_opt, dim_opt, hd_opt, batch_opt = OPTIMUM_SIZE[preset]
    depth, ar, hd = knobs["DEPTH"], knobs["ASPECT_RATIO"], knobs["HEAD_DIM"]
    try:
        dim = math.ceil(depth * ar / hd) * hd
    except (TypeError, ZeroDivisionError):
        dim = -1
    betas = knobs["ADAM_BETAS"]
    b1, b2 = betas if isinstance(betas, tuple) and len(betas) == 2 else (2.0, 2.0)
    horizon = lambda b: 1 / (1 - b) if isinstance(b, (int, float)) and 0 <= b < 1 else -1.0  # noqa: E731
    pattern = knobs["WINDOW_PATTERN"]
    short = pattern.upper().count("S") / len(pattern) if isinstance(pattern, str) and pattern else 0.0

    d = {name: _log2_ratio(knobs[name], OPTIMUM[name])
         for name in ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR")}
    d["BETA1_HORIZON"] = _log2_ratio(horizon(b1), OPTIMUM["BETA1_HORIZON"])
    d["BETA2_HORIZON"] = _log2_ratio(horizon(b2), OPTIMUM["BETA2_HORIZON"])
    for name in ("WEIGHT_DECAY", "WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC"):
        value = knobs[name]
        d[name] = (value - OPTIMUM[name]) if isinstance(value, (int, float)) else 3.0
    d["SHORT_WINDOWS"] = short - OPTIMUM["SHORT_WINDOWS"]
    d["DEPTH"] = _log2_ratio(depth, depth_opt)
    d["MODEL_DIM"] = _log2_ratio(dim, dim_opt)
    d["HEAD_DIM"] = _log2_ratio(hd, hd_opt)
    d["BATCH"] = _log2_ratio(knobs["TOTAL_BATCH_SIZE"], batch_opt)
    # the speed terms (relative to the BASELINE, not the optimum)
    d["_lr_push"] = sum(_log2_ratio(knobs[n], BASELINE[n]) for n in ("EMBEDDING_LR", "UNEMBEDDING_LR",
                                                                       "MATRIX_LR")) / 3
    d["_size_push"] = (_log2_ratio(depth, BASELINE_SIZE[preset]["DEPTH"])
                       + 2 * _log2_ratio(dim, _baseline_dim(preset)))
    d["_batch_push"] = _log2_ratio(knobs["TOTAL_BATCH_SIZE"], BASELINE_SIZE[preset]["TOTAL_BATCH_SIZE"])
    return d


def knob_penalty(distances: dict[str, float]) -> float:
    """Relative val_bpb excess over the optimum: a quadratic bowl."""
    return sum(WEIGHTS[name] * d * d for name, d in distances.items() if name in WEIGHTS)


def non_knob_code(source: str) -> str:
    """The source without its knob lines, comments and blank lines: what a code edit changes.
    (A cheap approximation of sandbox.fingerprint, which parses the file: ~10 ms a candidate.)"""
    kept = []
    for line in source.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] == "#" or (line.startswith(_KNOB_STARTS) and _KNOB_LINE.match(line)):
            continue
        kept.append(_TRAILING_COMMENT.sub("", line) if "#" in line else line.rstrip())
    return "\n".join(kept)


def experiment_key(knobs: dict[str, object], code: str) -> str:
    """What identifies an experiment to the surrogate: its knob values and its other code."""
    return hashlib.sha256((repr(sorted(knobs.items())) + "\n" + code).encode()).hexdigest()


def curve_shape(pct: float, model: PresetModel, speed: float = 1.0) -> float:
    """1 at 0%, 0 at 100%: how far the loss still is from its final value. The baseline follows
    (1 + p/tau)^-alpha; a candidate of speed v is that curve time-warped (at p it is where the
    baseline is at p x v: higher lrs get there sooner, bigger models and batches later),
    rescaled so that it still starts at 1 and ends at 0."""
    raw = lambda p: (1.0 + max(0.0, p) / model.shape_tau) ** -model.shape_alpha  # noqa: E731
    end = raw(100.0 * speed)
    return max(0.0, min(1.0, (raw(pct * speed) - end) / (1.0 - end)))


class Surrogate:
    """Quality and runs of train.py sources under one seed (see the module docstring).

    `reference_source`: the project's own train.py; its non-knob code has no code effect, so
    the baseline scores its preset's base_bpb exactly. Without it every code gets a draw."""

    def __init__(self, seed: int = 0, *, crash_rate: float = 0.0, noise_sigma: Optional[float] = None,
                 reference_source: Optional[str] = None):
        self.seed = seed
        self.crash_rate = crash_rate
        self.noise_sigma = noise_sigma
        self._reference_code = non_knob_code(reference_source) if reference_source is not None else None
        self._reference_source = reference_source
        self._reference_keys: dict[str, str] = {}
        self._baseline_penalty = {p: knob_penalty(knob_distances({}, p)) for p in PRESET_MODELS}
        self._cache: dict[tuple[str, str], Quality] = {}

    def quality(self, source: str, preset: str) -> Quality:
        """The surrogate's verdict on one train.py (deterministic in source, preset and seed)."""
        key = (hashlib.sha1(source.encode()).hexdigest(), preset)
        if key not in self._cache:
            self._cache[key] = self._quality(source, preset)
        return self._cache[key]

    def _quality(self, source: str, preset: str) -> Quality:
        model = _model(preset)
        knobs, code = read_knobs(source, preset), non_knob_code(source)
        identity = experiment_key(knobs, code)
        is_reference = identity == self._reference_key(preset)
        d = knob_distances(knobs, preset)
        code_rng = seeded("code", self.seed, preset, hashlib.sha256(code.encode()).hexdigest())
        code_effect = code_rng.gauss(0.0, CODE_EFFECT)
        if code == self._reference_code:
            code_effect = 0.0
        true_bpb = model.base_bpb * (1.0 + knob_penalty(d) - self._baseline_penalty[preset] + code_effect)
        # Speed: larger steps descend faster early; more parameters and bigger batches (fewer
        # steps) descend slower early, and may still end lower.
        jitter = 0.0 if is_reference else seeded("speed", self.seed, preset, identity).gauss(0.0, SPEED_JITTER)
        # time-warp, in log2 units: a model with 2x the parameters gets through its curve at ~2^-0.5
        # the baseline's pace (half its steps, more learnt per step), 2x the batch at 2^-0.3,
        # 2x the lrs at 2^0.3 (faster early)
        log2_speed = (SPEED_LR * d["_lr_push"] - SPEED_SIZE * d["_size_push"] - SPEED_BATCH * d["_batch_push"]
                      + jitter)
        speed = 2.0 ** max(-2.0, min(2.0, log2_speed))
        crash_rng = seeded("crash", self.seed, preset, identity)
        crashes_at = crash_rng.uniform(0.0, 60.0) if crash_rng.random() < self.crash_rate else None
        return Quality(true_bpb=true_bpb, speed=speed, crashes_at=crashes_at)

    def _reference_key(self, preset: str) -> Optional[str]:
        if self._reference_source is None:
            return None
        if preset not in self._reference_keys:
            self._reference_keys[preset] = experiment_key(read_knobs(self._reference_source, preset),
                                                          self._reference_code)
        return self._reference_keys[preset]

    def run(self, source: str, preset: str, run_key: str, points: int = 50) -> dict:
        """One run's measurements: {status, val_bpb, true_bpb, speed, curve, crash_pct, num_steps}.
        `run_key` (the execution id and attempt) seeds the run's own noise."""
        model = _model(preset)
        q = self.quality(source, preset)
        rng = seeded("run", self.seed, preset, run_key)
        sigma = model.noise_sigma if self.noise_sigma is None else self.noise_sigma
        val_noise = rng.gauss(0.0, 1.0)
        # the run's final train loss follows its quality; its offset half follows its val noise
        end_loss = model.end_loss * q.true_bpb / model.base_bpb
        offset = model.offset_sd * (0.7 * val_noise + 0.71 * rng.gauss(0.0, 1.0))
        curve, wiggle = [], 0.0
        for i in range(points + 1):
            pct = 100.0 * i / points
            if q.crashes_at is not None and pct > q.crashes_at:
                break
            wiggle = 0.8 * wiggle + 0.6 * rng.gauss(0.0, model.reading_sd)
            far = curve_shape(pct, model, q.speed)
            loss = end_loss + (model.start_loss - end_loss) * far + (offset + wiggle) * (1.0 - far)
            curve.append([round(pct, 2), round(loss, 5)])
        crashed = q.crashes_at is not None
        return {"status": "crash" if crashed else "ok",
                "val_bpb": None if crashed else round(q.true_bpb + sigma * val_noise, 6),
                "true_bpb": q.true_bpb, "speed": q.speed, "curve": curve, "crash_pct": q.crashes_at,
                "num_steps": model.steps}


def _model(preset: str) -> PresetModel:
    try:
        return PRESET_MODELS[preset]
    except KeyError:
        raise ValueError(f"the surrogate has no model of preset {preset!r}; "
                         f"it knows {', '.join(PRESET_MODELS)}") from None
