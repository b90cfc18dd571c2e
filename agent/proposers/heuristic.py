"""The offline proposer: seeded libcst edits of train.py's knob block, in the four strategy classes.

- conservative: one tuning knob (a learning rate, weight decay, an Adam beta, a schedule ratio)
  scaled by 1 +/- 10..30%, or nudged off 0;
- moderate: one or two structural moves (depth, width, batch, micro-batch, head size, window
  pattern), each within the preset's couplings and caps;
- aggressive: a recipe that moves several knobs far at once (deep-narrow, wide-shallow, high lrs,
  big batch with sqrt-scaled lrs, long anneal, ...);
- crossover: the knob changes of two good distinct recent candidates, merged (the better parent
  wins a conflict) and re-applied to the CURRENT incumbent, plus their non-knob code edits when
  those still apply.

Every slot is filled when at all possible: when a class is used up (crossover without two scored
parents, every structural neighbour already tried, ...) the slot takes another class's move,
labelled with THAT class, and the hypothesis says which slot it fills and why. Fewer proposals
than slots come back only when no class finds a new valid candidate in `max_tries` draws each;
that is logged.

Knob lines are read and rewritten with libcst: the module is parsed once per incumbent, the value
node (for size knobs `{"gpu": .., "cpu": .., "micro": ..}[PRESET]` only the run's preset entry) is
swapped with `deep_replace`, and the line is regenerated with `code_for_node`, so spacing, the
other presets' columns and trailing comments survive byte-exact. Each edit's search is the whole
original line (grown upwards only in the rare case that line is not unique in the file).

Every draft passes through `sandbox.candidate.build_candidate` (edits apply, the checker accepts,
not a duplicate of `request.seen_fingerprints` or of an earlier slot); cheap gates run first:
couplings and caps, then "the same effective experiment was already drafted in this request".

Determinism: every draw comes from `random.Random("<seed>:<request.seed>:<generation>:<slot class>:
<slot>:<draft class>:<try>")` (str seeds hash with sha512, not the salted hash()), so the same
proposer seed and request give the same proposals in any process.
"""
from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Iterator

import libcst as cst

from agent.proposers.base import STRATEGIES, PastCandidate, Proposal, ProposalRequest
from sandbox.candidate import build_candidate
from sandbox.presets import PrepareFactsError, preset_table
from sandbox.edits import EditError, apply_edits

log = logging.getLogger(__name__)

SIZE_KNOBS = ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE")
STRUCTURE_KNOBS = SIZE_KNOBS + ("WINDOW_PATTERN",)
LR_KNOBS = ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR")
RATIO_KNOBS = ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC")
TUNING_KNOBS = LR_KNOBS + ("WEIGHT_DECAY", "ADAM_BETAS") + RATIO_KNOBS
KNOBS = STRUCTURE_KNOBS + TUNING_KNOBS + ("SEED",)

# What each tuning knob does, for hypotheses that say something specific.
KNOB_ROLES = {
    "EMBEDDING_LR": "the AdamW step of the token and value embeddings",
    "UNEMBEDDING_LR": "the AdamW step of the lm_head",
    "MATRIX_LR": "the Muon step of the block matrices",
    "SCALAR_LR": "the step of the per-layer residual scalars",
    "WEIGHT_DECAY": "the cautious weight decay of the Muon matrices",
    "ADAM_BETAS": "the AdamW moment horizons",
    "WARMUP_RATIO": "the share of the budget spent warming the lr up",
    "WARMDOWN_RATIO": "the share of the budget spent annealing the lr",
    "FINAL_LR_FRAC": "the lr left at the end of the anneal",
}

@dataclass(frozen=True)
class PresetLimits:
    """What keeps a preset runnable on its hardware within its time budget."""
    max_depth: int
    max_dim: int
    batch: tuple[int, int]          # TOTAL_BATCH_SIZE range (tokens)
    max_rows: int                   # DEVICE_BATCH_SIZE upper bound
    head_dims: tuple[int, ...]      # HEAD_DIM values moderate moves pick from
    auto_rows: int                  # rows that DEVICE_BATCH_SIZE = 0 may mean: the batch must divide by them
    auto_rows_small_card: int       # rows that 0 means on the smallest target card (memory estimate)
    memory_gib: float | None        # peak memory cap on the smallest target card (None: CPU presets)


# gpu: the smallest target is SageMaker's A10G (24 GB, ~22 GiB usable; train.py's auto batch gives it
# 32 rows, an H100 128 rows, so the batch must divide by 128 rows). micro/cpu: 2 CPU cores.
LIMITS = {
    "gpu": PresetLimits(24, 2048, (2**17, 2**21), 128, (64, 128, 256), 128, 32, 20.0),
    "cpu": PresetLimits(8, 512, (2**11, 2**16), 64, (32, 64, 128), 8, 8, None),
    "micro": PresetLimits(8, 512, (2**9, 2**13), 64, (16, 32, 64), 8, 8, None),
}
MIN_MODEL_DIM = 32                  # train.py's value-embedding gate reads x[..., :32]
WINDOW_PATTERNS = tuple(p for n in range(1, 5) for p in
                        ("".join("SL"[(i >> k) & 1] for k in range(n)) for i in range(2 ** n)))
MAX_TRIES = 40                      # draws per class before a slot moves on to the next class
FALLBACKS = {"conservative": ("moderate", "aggressive"),
             "moderate": ("aggressive", "conservative"),
             "aggressive": ("moderate", "conservative"),
             "crossover": ("moderate", "aggressive", "conservative")}
MAX_PARENTS = 8                     # crossover looks at the best few scored recent candidates


# ============================================================================ knob values (libcst)

class NotLiteral(ValueError):
    pass


_BINARY = {cst.Add: lambda a, b: a + b, cst.Subtract: lambda a, b: a - b, cst.Multiply: lambda a, b: a * b,
           cst.Divide: lambda a, b: a / b, cst.FloorDivide: lambda a, b: a // b}


def literal_value(node: cst.BaseExpression):
    """The value of the literal arithmetic knobs use (2**19, -1e-3, (0.8, 0.95), "SSSL")."""
    if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString)):
        return node.evaluated_value
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
        value = literal_value(node.expression)
        if not isinstance(value, (int, float)):
            raise NotLiteral("sign of a non-number")
        return -value if isinstance(node.operator, cst.Minus) else value
    if isinstance(node, cst.BinaryOperation):
        a, b = literal_value(node.left), literal_value(node.right)
        if not all(isinstance(v, (int, float)) for v in (a, b)):
            raise NotLiteral("arithmetic on non-numbers")
        if isinstance(node.operator, cst.Power):
            if abs(b) > 64 or abs(a) > 2**64:      # a candidate's 10**10**10 must not hang the proposer
                raise NotLiteral("power too large")
            return a ** b
        op = _BINARY.get(type(node.operator))
        if op is None:
            raise NotLiteral("operator")
        try:
            return op(a, b)
        except ZeroDivisionError as exc:
            raise NotLiteral("division by zero") from exc
    if isinstance(node, cst.Tuple):
        if not all(isinstance(e, cst.Element) for e in node.elements):
            raise NotLiteral("starred tuple")
        return tuple(literal_value(e.value) for e in node.elements)
    raise NotLiteral(type(node).__name__)


def format_value(value, like: str = "") -> str:
    """Python text for a knob value, in the style of the code it replaces (2**k stays 2**k)."""
    if isinstance(value, str):
        return '"' + value + '"' if '"' not in value and "\\" not in value else repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, int) and not isinstance(value, bool):
        if "**" in like and value > 1 and value & (value - 1) == 0:
            power = " ** " if " ** " in like else "**"
            return f"2{power}{value.bit_length() - 1}"
        return str(value)
    text = f"{float(value):.4g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        return f"{mantissa}e{int(exp)}"
    return text if "." in text or "n" in text else text + ".0"


def _preset_column(node: cst.BaseExpression, preset: str) -> cst.BaseExpression | None:
    """For `{"gpu": .., "cpu": .., "micro": ..}[PRESET]`: the node of `preset`'s entry (None if the
    value is not that shape); raises NotLiteral when the shape is right but the column is missing."""
    if not (isinstance(node, cst.Subscript) and isinstance(node.value, cst.Dict) and len(node.slice) == 1
            and isinstance(node.slice[0].slice, cst.Index) and isinstance(node.slice[0].slice.value, cst.Name)
            and node.slice[0].slice.value.value == "PRESET"):
        return None
    for element in node.value.elements:
        if (isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString)
                and element.key.evaluated_value == preset):
            return element.value
    raise NotLiteral(f"no {preset!r} column")


@dataclass(frozen=True)
class Knob:
    name: str
    line: str                       # the whole source line with its newline: the edit's search
    offset: int                     # where the line starts in the source
    statement: cst.SimpleStatementLine   # the line's node, leading blank/comment lines stripped
    value_node: cst.BaseExpression  # the node holding the run preset's value
    value: object
    sized: bool                     # a per-preset dict


@lru_cache(maxsize=8)
def _parse(source: str) -> cst.Module:
    return cst.parse_module(source)   # ~50 ms; generations often keep the same incumbent


def _assigned_names(statement) -> list[str]:
    names = []
    if isinstance(statement, cst.SimpleStatementLine):
        for small in statement.body:
            targets = ([t.target for t in small.targets] if isinstance(small, cst.Assign) else
                       [small.target] if isinstance(small, (cst.AugAssign, cst.AnnAssign)) else [])
            names += [t.value for t in targets if isinstance(t, cst.Name)]
    return names


class KnobBlock:
    """The literal knob lines of one train.py, read for one preset. Knobs that a candidate turned
    into code, or assigns more than once at top level, are left alone (not in the block)."""

    def __init__(self, source: str, preset: str):
        self.source = source
        self.preset = preset
        self.module = module = _parse(source)
        self.knobs: dict[str, Knob] = {}
        counts: dict[str, int] = {}
        for statement in module.body:
            for name in _assigned_names(statement):
                counts[name] = counts.get(name, 0) + 1
        position = sum(len(module.code_for_node(line)) for line in module.header)
        wanted = {n for n in KNOBS if counts.get(n) == 1}
        for statement in module.body:
            if not wanted:
                break              # the knob block is near the top: no need to render the rest
            text = module.code_for_node(statement)
            knob = self._read(statement, text, position, wanted)
            if knob is not None:
                self.knobs[knob.name] = knob
                wanted.discard(knob.name)
            position += len(text)

    def _read(self, statement, text: str, position: int, wanted: set[str]) -> Knob | None:
        if not (isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1
                and isinstance(statement.body[0], cst.Assign) and len(statement.body[0].targets) == 1):
            return None
        target = statement.body[0].targets[0].target
        if not (isinstance(target, cst.Name) and target.value in wanted):
            return None
        own = statement.with_changes(leading_lines=())
        line = self.module.code_for_node(own)
        offset = position + len(text) - len(line)
        if self.source[offset:offset + len(line)] != line:    # never edit a line we cannot locate
            return None
        value_node = statement.body[0].value
        try:
            column = _preset_column(value_node, self.preset)
            node = column if column is not None else value_node
            value = literal_value(node)
        except NotLiteral:
            return None
        return Knob(target.value, line, offset, own, node, value, column is not None)

    def __contains__(self, name: str) -> bool:
        return name in self.knobs

    def get(self, name: str, default=None):
        knob = self.knobs.get(name)
        return default if knob is None else knob.value

    def values(self) -> dict[str, object]:
        return {name: self.get(name) for name in KNOBS}

    def code(self, name: str) -> str:
        return self.module.code_for_node(self.knobs[name].value_node)

    def new_line(self, name: str, value) -> str:
        """The knob's whole line with `value` written into its value node only."""
        knob = self.knobs[name]
        new_node = _replace_value(knob.value_node, knob.value, value, self.module)
        return self.module.code_for_node(knob.statement.deep_replace(knob.value_node, new_node))

    def edits_for(self, changes: dict[str, object]) -> list[dict]:
        """{search, replace} edits for `changes`: the search is each changed knob's whole line,
        grown upwards while it is not unique; edits whose spans would overlap are merged."""
        spans = []
        for name in sorted(changes, key=lambda n: self.knobs[n].offset):
            knob = self.knobs[name]
            start, end = knob.offset, knob.offset + len(knob.line)
            while self.source.count(self.source[start:end]) > 1 and start > 0:
                start = self.source.rfind("\n", 0, start - 1) + 1
            if spans and start < spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
                spans[-1][2].append(name)
            else:
                spans.append([start, end, [name]])
        edits = []
        for start, end, names in spans:
            pieces, cursor = [], start
            for name in names:
                knob = self.knobs[name]
                pieces += [self.source[cursor:knob.offset], self.new_line(name, changes[name])]
                cursor = knob.offset + len(knob.line)
            pieces.append(self.source[cursor:end])
            edits.append({"search": self.source[start:end], "replace": "".join(pieces)})
        return edits


def _replace_value(node: cst.BaseExpression, old, new, module: cst.Module) -> cst.BaseExpression:
    """A node for `new` in place of `node`: unchanged parts keep their exact text (a tuple changes
    only the elements that differ), and parentheses around the value are kept."""
    if type(old) is type(new) and old == new:
        return node
    if isinstance(node, cst.Tuple) and isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        elements = [el.with_changes(value=_replace_value(el.value, o, n, module)) for el, o, n
                    in zip(node.elements, old, new)]
        return node.with_changes(elements=elements)
    replacement = cst.parse_expression(format_value(new, module.code_for_node(node)))
    if getattr(node, "lpar", None):
        replacement = replacement.with_changes(lpar=node.lpar, rpar=node.rpar)
    return replacement


@lru_cache(maxsize=8)
def knob_block(source: str, preset: str) -> KnobBlock:
    return KnobBlock(source, preset)


def read_preset_table(project_dir: Path | None = None) -> dict[str, dict[str, int]]:
    """max_seq_len and vocab_size per preset from prepare.py's PRESETS table, through the one
    reader (sandbox/presets.py): the project's prepare.py, else the packaged one."""
    for folder in [project_dir, Path.cwd(), Path(__file__).resolve().parents[2]]:
        path = Path(folder) / "prepare.py" if folder is not None else None
        if path is None or not path.is_file():
            continue
        try:
            table = preset_table(path)
        except (PrepareFactsError, OSError, SyntaxError):
            continue      # not a prepare.py with the table (e.g. a test stand-in): try the next
        return {name: {k: int(facts[k]) for k in ("max_seq_len", "vocab_size")} for name, facts in table.items()}
    raise PrepareFactsError("no prepare.py with a PRESETS table in the project, the working directory or the package")


# ============================================================================ validity

def model_dim(depth: int, aspect_ratio: int, head_dim: int) -> int:
    return math.ceil(depth * aspect_ratio / head_dim) * head_dim     # as train.py computes it


def estimated_peak_gib(depth: int, dim: int, vocab: int, rows: int, seq_len: int) -> float:
    """A rough bf16 peak: fp32 weights + grads + two optimizer moments (16 B/param) plus
    activations (~20 B per token, layer and channel) and fp32 logits with their softcap and
    gradient (~12 B per token and vocab entry). Calibrated on upstream's 45 GB for depth 8,
    width 512, 128 rows of 2048; good to maybe +/-30%, enough to keep an A10G from OOM."""
    params = depth * 12 * dim * dim + (2 + (depth + 1) // 2) * vocab * dim
    activations = rows * seq_len * (depth * dim * 20 + vocab * 12)
    return (params * 16 + activations) / 2**30


@dataclass(frozen=True)
class Setting:
    """The preset's facts a draft is judged against."""
    preset: str
    seq_len: int
    vocab: int
    limits: PresetLimits


def problems(values: dict[str, object], setting: Setting) -> list[str]:
    """Why a set of knob values would not run (or not fairly) at this preset; [] when it would.
    A knob that is None (turned into code by a candidate) is left to the checker and preflight."""
    v, lim, out = values, setting.limits, []
    depth, ar, hd = v.get("DEPTH"), v.get("ASPECT_RATIO"), v.get("HEAD_DIM")
    total, rows = v.get("TOTAL_BATCH_SIZE"), v.get("DEVICE_BATCH_SIZE")
    ints = lambda *xs: all(isinstance(x, int) and not isinstance(x, bool) for x in xs)  # noqa: E731
    width = None
    if depth is not None and not (ints(depth) and 1 <= depth <= lim.max_depth):
        out.append(f"DEPTH {depth!r} outside 1..{lim.max_depth}")
    if hd is not None and not (ints(hd) and hd >= 2 and hd % 2 == 0):
        out.append(f"HEAD_DIM {hd!r} must be a positive even number (rotary halves it)")
    if ar is not None and not (ints(ar) and ar >= 1):
        out.append(f"ASPECT_RATIO {ar!r} must be a positive integer")
    if not out and ints(depth, ar, hd):
        width = model_dim(depth, ar, hd)
        if not max(MIN_MODEL_DIM, hd) <= width <= lim.max_dim:
            out.append(f"model_dim {width} outside {max(MIN_MODEL_DIM, hd)}..{lim.max_dim}")
    if rows is not None:
        if not ints(rows) or rows < 0 or rows > lim.max_rows or (rows and rows & (rows - 1)):
            out.append(f"DEVICE_BATCH_SIZE {rows!r} must be 0 (auto) or a power of two up to {lim.max_rows}")
        elif total is not None:
            effective_rows = rows or lim.auto_rows
            if not ints(total) or total % (effective_rows * setting.seq_len):
                out.append(f"TOTAL_BATCH_SIZE {total!r} not a multiple of {effective_rows} rows x "
                           f"{setting.seq_len} (MAX_SEQ_LEN)")
    if total is not None and ints(total) and not lim.batch[0] <= total <= lim.batch[1]:
        out.append(f"TOTAL_BATCH_SIZE {total} outside {lim.batch[0]}..{lim.batch[1]}")
    if lim.memory_gib is not None and width is not None and ints(rows):
        gib = estimated_peak_gib(depth, width, setting.vocab, rows or lim.auto_rows_small_card, setting.seq_len)
        if gib > lim.memory_gib:
            out.append(f"estimated peak {gib:.0f} GiB over the {lim.memory_gib:.0f} GiB cap of the smallest card")
    pattern = v.get("WINDOW_PATTERN")
    if pattern is not None and (not isinstance(pattern, str) or not pattern or set(pattern.upper()) - set("SL")):
        out.append(f"WINDOW_PATTERN {pattern!r} must be S/L characters")
    for name in LR_KNOBS:
        if v.get(name) is not None and not (isinstance(v[name], (int, float)) and v[name] > 0):
            out.append(f"{name} {v[name]!r} must be > 0")
    if v.get("WEIGHT_DECAY") is not None and not (isinstance(v["WEIGHT_DECAY"], (int, float))
                                                  and v["WEIGHT_DECAY"] >= 0):
        out.append(f"WEIGHT_DECAY {v['WEIGHT_DECAY']!r} must be >= 0")
    betas = v.get("ADAM_BETAS")
    if betas is not None and not (isinstance(betas, tuple) and len(betas) == 2
                                  and all(isinstance(b, (int, float)) and 0 < b < 1 for b in betas)):
        out.append(f"ADAM_BETAS {betas!r} must be two numbers in (0, 1)")
    ratios = {n: v.get(n) for n in RATIO_KNOBS}
    for name, value in ratios.items():
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            out.append(f"{name} {value!r} outside 0..1")
    if all(isinstance(ratios[n], (int, float)) for n in ("WARMUP_RATIO", "WARMDOWN_RATIO")) \
            and ratios["WARMUP_RATIO"] + ratios["WARMDOWN_RATIO"] > 1:
        out.append("WARMUP_RATIO + WARMDOWN_RATIO > 1")
    return out


def effective_signature(values: dict[str, object], setting: Setting) -> tuple:
    """What the experiment actually runs: two drafts with the same signature are the same
    experiment even when their code differs (ASPECT_RATIO 40 and 48 both give model_dim 96 at depth
    2 with HEAD_DIM 32; WINDOW_PATTERN "SL" and "SLSL" give the same layers)."""
    v = dict(values)
    depth, ar, hd = v.get("DEPTH"), v.get("ASPECT_RATIO"), v.get("HEAD_DIM")
    if all(isinstance(x, int) for x in (depth, ar, hd)) and hd > 0:
        v["ASPECT_RATIO"] = model_dim(depth, ar, hd)
        pattern = v.get("WINDOW_PATTERN")
        if isinstance(pattern, str) and pattern and depth > 0:
            v["WINDOW_PATTERN"] = window_layout(pattern, depth)
    return tuple(sorted((k, repr(x)) for k, x in v.items()))


def window_layout(pattern: str, depth: int) -> str:
    """Per-layer windows as train.py builds them: the pattern cycled, the last layer always L."""
    layers = [pattern.upper()[i % len(pattern)] for i in range(depth)]
    layers[-1] = "L"
    return "".join(layers)


# ============================================================================ drafts

@dataclass
class Draft:
    strategy: str
    changes: dict[str, object]
    title: str
    hypothesis: str
    parents: list[str]
    extra_edits: list[dict] = field(default_factory=list)   # crossover: parents' code edits


@dataclass
class Context:
    """One request's state while its slots are filled."""
    request: ProposalRequest
    knobs: KnobBlock
    setting: Setting
    seen: set[str]                                          # fingerprints: the run's and this request's
    drafted: set[tuple] = field(default_factory=set)        # effective signatures already drafted
    novelty: object | None = None                           # agent.novelty.NoveltyIndex: near twins skipped

    def values(self, changes: dict[str, object] | None = None) -> dict[str, object]:
        values = self.knobs.values()
        values.update(changes or {})
        return values


def _round(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if value else 0.0


def _percent(old, new) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and old:
        return f" ({(new / old - 1) * 100:+.0f}%)"
    return ""


def describe(knobs: KnobBlock, changes: dict[str, object]) -> str:
    parts = []
    for name, new in changes.items():
        old = knobs.get(name)
        like = knobs.code(name)
        parts.append(f"{name} {format_value(old, like)} -> {format_value(new, like)}{_percent(old, new)}")
    return ", ".join(parts)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dim_for(depth: int, target: int, hd: int) -> int | None:
    """ASPECT_RATIO that gives model_dim == target at this depth (None when none does)."""
    ar = target // depth
    return ar if ar >= 1 and model_dim(depth, ar, hd) == target else None


# ---------------------------------------------------------------------------- conservative

def conservative(rng: random.Random, ctx: Context) -> Draft | None:
    knobs = ctx.knobs
    choices = [(n, None) for n in LR_KNOBS + ("WEIGHT_DECAY",) + RATIO_KNOBS if _is_number(knobs.get(n))]
    betas = knobs.get("ADAM_BETAS")
    if isinstance(betas, tuple) and len(betas) == 2 and all(_is_number(b) for b in betas):
        choices += [("ADAM_BETAS", 0), ("ADAM_BETAS", 1)]
    if not choices:
        return None
    name, index = rng.choice(choices)
    up = rng.random() < 0.5
    factor = 1 + (1 if up else -1) * rng.uniform(0.1, 0.3)
    if name == "ADAM_BETAS":
        # scale the averaging horizon 1/(1-beta), the quantity that matters, not beta itself
        old_beta = betas[index]
        new_beta = round(1 - _round((1 - old_beta) / factor), 6)
        if not 0.5 <= new_beta <= 0.999:
            return None
        new = tuple(new_beta if i == index else b for i, b in enumerate(betas))
        what = ("first" if index == 0 else "second") + "-moment horizon"
        why = (f"a {'longer' if new_beta > old_beta else 'shorter'} AdamW {what} "
               f"({1 / (1 - old_beta):.1f} -> {1 / (1 - new_beta):.1f} steps) suits the short budget better")
    else:
        old = knobs.get(name)
        if old == 0:
            new = _round(rng.uniform(0.01, 0.1), 2)
            why = {"WARMUP_RATIO": "a short lr warm-up steadies the first steps",
                   "FINAL_LR_FRAC": "ending the anneal above 0 keeps learning until the last step",
                   "WEIGHT_DECAY": "a little weight decay regularises the Muon matrices"}.get(
                name, f"a small non-zero {name} helps")
        else:
            new = _round(old * factor)
            why = (f"a {'larger' if new > old else 'smaller'} {name} ({KNOB_ROLES.get(name, name)}) "
                   "suits this model and budget better")
    changes = {name: new}
    if problems(ctx.values(changes), ctx.setting) or new == knobs.get(name):
        return None
    return Draft("conservative", changes, describe(knobs, changes),
                 f"A small step from the incumbent: tests whether {why}; expected effect on val_bpb is small "
                 "but its sign tells which way to keep going.", [ctx.request.incumbent_id])


# ---------------------------------------------------------------------------- moderate

def _move_depth(rng, values, setting):
    depth, ar = values.get("DEPTH"), values.get("ASPECT_RATIO")
    if not (isinstance(depth, int) and isinstance(ar, int)):
        return None
    new = depth + rng.choice((-2, -1, 1, 2))
    if new < 1:
        return None
    return ({"DEPTH": new}, f"a {'deeper' if new > depth else 'shallower'} model (width follows DEPTH x "
            "ASPECT_RATIO) uses the fixed time budget better")


def _move_depth_same_width(rng, values, setting):
    depth, ar, hd = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    if not all(isinstance(x, int) for x in (depth, ar, hd)) or hd <= 0:
        return None
    new = depth + rng.choice((-2, -1, 1, 2))
    new_ar = _dim_for(new, model_dim(depth, ar, hd), hd) if new >= 1 else None
    if new_ar is None:
        return None
    return ({"DEPTH": new, "ASPECT_RATIO": new_ar},
            f"{'more' if new > depth else 'fewer'} layers at the same width is a better use of the budget")


def _move_width(rng, values, setting):
    depth, ar, hd = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    if not all(isinstance(x, int) for x in (depth, ar, hd)) or hd <= 0:
        return None
    dim = model_dim(depth, ar, hd)
    target = dim + rng.choice((-2, -1, 1, 2)) * hd
    new_ar = _dim_for(depth, target, hd) if target > 0 else None
    if new_ar is None:
        return None
    return ({"ASPECT_RATIO": new_ar}, f"a {'wider' if target > dim else 'narrower'} model (model_dim {dim} -> "
            f"{target}) balances capacity against steps per second better")


def _move_batch(rng, values, setting):
    total, rows = values.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if not isinstance(total, int) or total <= 0:
        return None
    new = rng.choice((total * 2, total * 4, total // 2, total // 4))
    changes = {"TOTAL_BATCH_SIZE": new}
    if isinstance(rows, int) and rows > 0 and new % (rows * setting.seq_len):
        fitting = new // setting.seq_len       # a smaller batch than one micro-batch: shrink the rows too
        if fitting < 1 or fitting & (fitting - 1):
            return None
        changes["DEVICE_BATCH_SIZE"] = fitting
    return (changes, f"a {'larger' if new > total else 'smaller'} batch trades gradient noise against the number "
            "of optimizer steps better")


def _move_rows(rng, values, setting):
    total, rows = values.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if not (isinstance(total, int) and isinstance(rows, int)):
        return None
    if setting.preset == "gpu":
        options = [r for r in (0, 8, 16, 32, 64) if r != rows]     # 0 = sized to the card by train.py
    else:
        options = [r for r in (rows // 2, rows * 2) if r >= 1]
    new = rng.choice(options) if options else None
    if new is None or total % ((new or setting.limits.auto_rows) * setting.seq_len):
        return None
    what = "sized to the card (0 = auto)" if new == 0 else f"{new} rows"
    return ({"DEVICE_BATCH_SIZE": new}, f"a micro-batch of {what} (same TOTAL_BATCH_SIZE, so the same optimisation) "
            "runs more tokens per second")


def _move_head_dim(rng, values, setting):
    hd = values.get("HEAD_DIM")
    options = [h for h in setting.limits.head_dims if h != hd]
    if not isinstance(hd, int) or not options:
        return None
    new = rng.choice(options)
    return ({"HEAD_DIM": new}, f"{'fewer, larger' if new > hd else 'more, smaller'} attention heads model the "
            "data better")


def _move_window(rng, values, setting):
    pattern, depth = values.get("WINDOW_PATTERN"), values.get("DEPTH")
    if not isinstance(pattern, str) or not isinstance(depth, int) or depth < 1:
        return None
    options = [p for p in WINDOW_PATTERNS if window_layout(p, depth) != window_layout(pattern or "L", depth)]
    if not options:
        return None
    new = rng.choice(options)
    before, after = window_layout(pattern or "L", depth).count("S"), window_layout(new, depth).count("S")
    return ({"WINDOW_PATTERN": new}, f"half-context windows on {after} of {depth} layers (was {before}) balance "
            "long-range modelling against attention cost better")


MODERATE_MOVES = {"depth": _move_depth, "depth at the same width": _move_depth_same_width, "width": _move_width,
                  "batch": _move_batch, "micro-batch": _move_rows, "head size": _move_head_dim,
                  "window pattern": _move_window}


def moderate(rng: random.Random, ctx: Context) -> Draft | None:
    names = list(MODERATE_MOVES)
    picked = rng.sample(names, 2) if rng.random() < 0.35 else [rng.choice(names)]
    changes: dict[str, object] = {}
    claims = []
    for move in picked:
        result = MODERATE_MOVES[move](rng, ctx.values(changes), ctx.setting)
        if result is None:
            return None
        changes.update(result[0])
        claims.append(result[1])
    changes = {k: v for k, v in changes.items() if v != ctx.knobs.get(k)}
    if not changes or problems(ctx.values(changes), ctx.setting):
        return None
    label = " + ".join(picked)
    claim = " and ".join(claims)
    hypothesis = (f"A structural change ({label}) tests whether {claim}." if len(picked) == 1 else
                  f"Two structural changes at once ({label}) test whether {claim}; together they explore a "
                  "neighbour that single moves do not reach.")
    return Draft("moderate", changes, f"{label}: {describe(ctx.knobs, changes)}", hypothesis,
                 [ctx.request.incumbent_id])


# ---------------------------------------------------------------------------- aggressive

def _scale_lrs(rng, values, factor_range, k=None) -> dict[str, object]:
    lrs = [n for n in LR_KNOBS if _is_number(values.get(n)) and values[n] > 0]
    chosen = rng.sample(lrs, k=min(len(lrs), k or rng.randint(1, len(lrs)))) if lrs else []
    factor = rng.uniform(*factor_range)
    return {n: _round(values[n] * factor) for n in chosen}


def _recipe_resize(rng, values, setting, deeper: bool):
    depth, ar, hd = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    if not all(isinstance(x, int) for x in (depth, ar, hd)) or hd <= 0:
        return None
    dim = model_dim(depth, ar, hd)
    if deeper:
        new_depth = depth + max(2, round(depth * rng.uniform(0.5, 1.0)))
        target = dim * math.sqrt(depth / new_depth) * rng.uniform(0.8, 1.0)    # about the same parameters
    else:
        new_depth = depth - max(1, round(depth * rng.uniform(0.25, 0.5)))
        target = dim * rng.uniform(1.4, 2.0)
    target = max(hd, round(target / hd) * hd)
    new_ar = _dim_for(new_depth, target, hd) if new_depth >= 1 else None
    if new_ar is None or (deeper and target >= dim) or (not deeper and target <= dim):
        return None
    changes = {"DEPTH": new_depth, "ASPECT_RATIO": new_ar}
    if rng.random() < 0.5:       # a different shape often wants a different Muon step
        changes.update(_scale_lrs(rng, values, (0.7, 0.9) if deeper else (1.1, 1.4), k=1))
    why = ("depth matters more than width at this scale" if deeper else
           "a wider, shallower model gets more steps and more parallel work per step")
    return changes, why


def _recipe_batch(rng, values, setting, up: bool):
    total, rows = values.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if not isinstance(total, int) or total <= 0:
        return None
    mult = rng.choice((2, 4))
    new = total * mult if up else total // mult
    changes = {"TOTAL_BATCH_SIZE": new}
    if isinstance(rows, int) and rows > 0 and new % (rows * setting.seq_len):
        fitting = new // setting.seq_len
        if fitting < 1 or fitting & (fitting - 1):
            return None
        changes["DEVICE_BATCH_SIZE"] = fitting
    base = math.sqrt(mult) if up else 1 / math.sqrt(mult)
    changes.update(_scale_lrs(rng, values, (base * 0.85, base * 1.15)))
    why = ("a larger batch with sqrt-scaled lrs gives cleaner gradients for the same tokens" if up else
           "more, noisier steps with sqrt-scaled lrs beat fewer clean ones in a short budget")
    return changes, why


def _recipe_lrs(rng, values, setting, up: bool):
    changes = _scale_lrs(rng, values, (1.5, 3.0) if up else (0.3, 0.6))
    why = ("the incumbent under-trains in its short budget and tolerates much larger steps" if up else
           "the incumbent's steps are too large and much smaller ones converge further")
    return (changes, why) if changes else None


def _recipe_anneal(rng, values, setting, up: bool = True):
    changes: dict[str, object] = {}
    if _is_number(values.get("WARMDOWN_RATIO")):
        changes["WARMDOWN_RATIO"] = _round(rng.uniform(0.6, 0.95), 2)
    if _is_number(values.get("WARMUP_RATIO")):
        changes["WARMUP_RATIO"] = rng.choice((0.0, 0.01, 0.02, 0.05))
    if _is_number(values.get("FINAL_LR_FRAC")):
        changes["FINAL_LR_FRAC"] = rng.choice((0.0, 0.02, 0.05, 0.1))
    changes.update(_scale_lrs(rng, values, (1.2, 1.8)))
    return (changes, "a longer anneal from a higher peak lr converges further in the same time") if changes else None


def _recipe_small_fast(rng, values, setting, up: bool = True):
    depth, ar, hd = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    if not all(isinstance(x, int) for x in (depth, ar, hd)) or hd <= 0 or depth < 2:
        return None
    new_depth = max(1, depth - rng.randint(1, max(1, depth // 2)))
    new_ar = _dim_for(new_depth, max(hd, model_dim(depth, ar, hd) - hd * rng.randint(0, 2)), hd)
    if new_ar is None:
        return None
    changes = {"DEPTH": new_depth, "ASPECT_RATIO": new_ar}
    changes.update(_scale_lrs(rng, values, (1.2, 1.8)))
    return changes, "a smaller model that takes many more steps, with larger lrs, wins a short budget"


AGGRESSIVE_RECIPES = {
    "deep-narrow": lambda rng, v, s: _recipe_resize(rng, v, s, deeper=True),
    "wide-shallow": lambda rng, v, s: _recipe_resize(rng, v, s, deeper=False),
    "high-lr": lambda rng, v, s: _recipe_lrs(rng, v, s, up=True),
    "low-lr": lambda rng, v, s: _recipe_lrs(rng, v, s, up=False),
    "big-batch-high-lr": lambda rng, v, s: _recipe_batch(rng, v, s, up=True),
    "small-batch-low-lr": lambda rng, v, s: _recipe_batch(rng, v, s, up=False),
    "long-anneal": _recipe_anneal,
    "small-and-fast": _recipe_small_fast,
}


def aggressive(rng: random.Random, ctx: Context) -> Draft | None:
    recipe = rng.choice(list(AGGRESSIVE_RECIPES))
    result = AGGRESSIVE_RECIPES[recipe](rng, ctx.values(), ctx.setting)
    if result is None:
        return None
    changes = {k: v for k, v in result[0].items() if v != ctx.knobs.get(k)}
    if not changes or problems(ctx.values(changes), ctx.setting):
        return None
    return Draft("aggressive", changes, f"{recipe}: {describe(ctx.knobs, changes)}",
                 f"A big jump ({recipe}) tests whether {result[1]}; far from the incumbent, so it can find "
                 "a better basin or fail clearly.", [ctx.request.incumbent_id])


# ---------------------------------------------------------------------------- crossover

def knob_changes_in_edit(edit: dict, preset: str) -> dict[str, object] | None:
    """The knob values an edit sets (only those its replace changes), or None when the edit is not
    purely knob lines (a code edit)."""
    before, after = _knob_lines(edit.get("search", ""), preset), _knob_lines(edit.get("replace", ""), preset)
    if before is None or after is None:
        return None
    return {k: v for k, v in after.items() if k not in before or before[k] != v}


def _knob_lines(text: str, preset: str) -> dict[str, object] | None:
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError:
        return None
    values: dict[str, object] = {}
    for statement in module.body:
        names = _assigned_names(statement)
        if not (len(names) == 1 and names[0] in KNOBS and isinstance(statement.body[0], cst.Assign)):
            return None
        value = statement.body[0].value
        try:
            column = _preset_column(value, preset)
        except NotLiteral:
            continue             # a per-preset dict without this preset's column: nothing for this run
        try:
            values[names[0]] = literal_value(column if column is not None else value)
        except NotLiteral:
            return None          # a knob set to code: carry the edit over as a code edit
    return values


def parent_changes(parent: PastCandidate, preset: str) -> tuple[dict[str, object], list[dict]]:
    """A parent's knob changes and its other (code) edits."""
    changes: dict[str, object] = {}
    code: list[dict] = []
    for edit in parent.edits:
        found = knob_changes_in_edit(edit, preset)
        if found is None:
            code.append({"search": edit.get("search", ""), "replace": edit.get("replace", "")})
        else:
            changes.update(found)
    return changes, code


def crossover_drafts(ctx: Context) -> Iterator[Draft]:
    """Merges of the best pairs of distinct scored parents, best pairs first; for each pair first
    with the parents' code edits, then their knob changes alone. A pair where either parent adds
    nothing new to the current incumbent is not a crossover and is skipped."""
    request, knobs = ctx.request, ctx.knobs
    parents = usable_parents(request)
    pairs = sorted(((a, b) for i, a in enumerate(parents) for b in parents[i + 1:]),
                   key=lambda ab: (ab[0].val_bpb + ab[1].val_bpb, ab[0].candidate_id, ab[1].candidate_id))
    for a, b in pairs:
        (ca, code_a), (cb, code_b) = parent_changes(a, request.preset), parent_changes(b, request.preset)
        ca = {k: v for k, v in ca.items() if k in knobs}
        cb = {k: v for k, v in cb.items() if k in knobs}
        # a is the better parent: it wins conflicts, even where its value is the incumbent's already
        merged = {k: v for k, v in {**cb, **ca}.items() if v != knobs.get(k)}
        a_adds, b_adds = [k for k in merged if k in ca], [k for k in merged if k not in ca]
        for code in ([*code_a, *code_b], []) if code_a or code_b else ([],):
            if not ((a_adds or code_a and code) and (b_adds or code_b and code)):
                continue
            if problems(ctx.values(merged), ctx.setting):
                continue
            title = f"cross {a.candidate_id} x {b.candidate_id}"
            parts = ([describe(knobs, merged)] if merged else []) + ([f"{len(code)} code edit(s)"] if code else [])
            dropped = "" if code or not (code_a or code_b) else " (knob changes only, without their code edits)"
            yield Draft("crossover", merged, f"{title}: {', '.join(parts)}",
                        f"Combining {a.candidate_id} ({a.title}; val_bpb {a.val_bpb:.6f}) with {b.candidate_id} "
                        f"({b.title}; val_bpb {b.val_bpb:.6f}) on the current incumbent tests whether their gains "
                        f"add up{dropped}.", [request.incumbent_id, a.candidate_id, b.candidate_id],
                        extra_edits=list(code))


def usable_parents(request: ProposalRequest) -> list[PastCandidate]:
    out, ids = [], set()
    for p in sorted(request.recent, key=lambda p: (p.val_bpb if p.val_bpb is not None else math.inf,
                                                   p.candidate_id)):
        # never an ancestor of the incumbent: its changes are in the incumbent already
        if p.edits and p.val_bpb is not None and p.candidate_id != request.incumbent_id and p.candidate_id not in ids \
                and p.candidate_id not in request.lineage_ids:
            out.append(p)
            ids.add(p.candidate_id)
    return out[:MAX_PARENTS]


DRAFTERS = {"conservative": conservative, "moderate": moderate, "aggressive": aggressive}


# ============================================================================ the proposer

class HeuristicProposer:
    name = "heuristic"

    def __init__(self, seed: int = 0, project_dir: str | Path | None = None, max_tries: int = MAX_TRIES):
        self.seed = seed
        self.max_tries = max_tries
        self.presets = read_preset_table(Path(project_dir) if project_dir else None)
        # sha1 of a drafted source -> its fingerprint: a redraw of something already tried (in an
        # earlier generation of this process) is skipped without re-running the checker
        self._fingerprints: dict[bytes, str] = {}

    def setting(self, preset: str) -> Setting:
        table = self.presets.get(preset) or self.presets["gpu"]
        return Setting(preset, table["max_seq_len"], table["vocab_size"], LIMITS.get(preset, LIMITS["gpu"]))

    def propose(self, request: ProposalRequest) -> list[Proposal]:
        ctx = Context(request, knob_block(request.incumbent_source, request.preset), self.setting(request.preset),
                      set(request.seen_fingerprints),
                      novelty=request.novelty.fork() if request.novelty is not None else None)
        ctx.drafted.add((effective_signature(ctx.values(), ctx.setting), ()))   # the incumbent itself
        proposals: list[Proposal] = []
        wanted = 0
        for strategy in STRATEGIES:
            for slot in range(request.slots.get(strategy, 0)):
                wanted += 1
                proposal = self._fill_slot(ctx, strategy, slot)
                if proposal is not None:
                    ctx.seen.add(proposal.fingerprint)
                    proposals.append(proposal)
        if len(proposals) < wanted:
            log.warning("heuristic proposer filled %d of %d slots (generation %d, preset %s): no new valid "
                        "candidate found in %d draws per class", len(proposals), wanted, request.generation,
                        request.preset, self.max_tries)
        return proposals

    def _fill_slot(self, ctx: Context, strategy: str, slot: int) -> Proposal | None:
        reasons = []
        for kind in (strategy,) + FALLBACKS[strategy]:
            proposal = next(filter(None, (self._try(ctx, d) for d in self._drafts(ctx, strategy, slot, kind))), None)
            if proposal is not None:
                if kind != strategy:
                    article = "an" if kind[0] in "aeiou" else "a"
                    proposal.hypothesis = (f"{strategy.capitalize()} slot filled with {article} {kind} change "
                                           f"({'; '.join(reasons)}). {proposal.hypothesis}")
                return proposal
            reasons.append(self._exhausted(ctx, kind))
        log.info("heuristic proposer: %s slot %d left empty: %s", strategy, slot, "; ".join(reasons))
        return None

    def _drafts(self, ctx: Context, strategy: str, slot: int, kind: str) -> Iterator[Draft]:
        if kind == "crossover":
            yield from islice(crossover_drafts(ctx), self.max_tries)
            return
        request = ctx.request
        for attempt in range(self.max_tries):
            rng = random.Random(f"{self.seed}:{request.seed}:{request.generation}:{strategy}:{slot}:{kind}:{attempt}")
            draft = DRAFTERS[kind](rng, ctx)
            if draft is not None:
                yield draft

    def _exhausted(self, ctx: Context, kind: str) -> str:
        if kind == "crossover":
            parents = usable_parents(ctx.request)
            if len(parents) < 2:
                return (f"crossover needs two scored earlier candidates with edits besides the incumbent; "
                        f"there {'is' if len(parents) == 1 else 'are'} {len(parents)}")
            return f"every merge of the best {len(parents)} earlier candidates was already tried or adds nothing"
        return f"no new valid {kind} change found in {self.max_tries} draws"

    def _try(self, ctx: Context, draft: Draft) -> Proposal | None:
        """The draft as an accepted proposal, or None (same experiment drafted before, edits that
        do not apply, checker rejection, duplicate of something tried)."""
        signature = (effective_signature(ctx.values(draft.changes), ctx.setting),
                     tuple((e["search"], e["replace"]) for e in draft.extra_edits))
        if signature in ctx.drafted:
            return None
        ctx.drafted.add(signature)
        edits = ctx.knobs.edits_for(draft.changes) + list(draft.extra_edits)
        try:
            source = apply_edits(ctx.request.incumbent_source, edits).source
        except EditError:
            return None
        key = hashlib.sha1(source.encode()).digest()
        if self._fingerprints.get(key) in ctx.seen:
            return None
        check = build_candidate(ctx.request.incumbent_source, edits, ctx.seen)
        if check.fingerprint:
            if len(self._fingerprints) > 200_000:
                self._fingerprints.clear()
            self._fingerprints[key] = check.fingerprint
        if not check.ok:
            return None
        # a near twin of something tried (or drafted this round) would be refused before it runs: draw again
        if ctx.novelty is not None and ctx.novelty.claim(f"this round's {draft.title!r}", check.source) is not None:
            return None
        return Proposal(strategy=draft.strategy, title=draft.title, hypothesis=draft.hypothesis, edits=edits,
                        parents=draft.parents, accepted=True, source=check.source, diff=check.diff,
                        fingerprint=check.fingerprint, proposer=self.name)
