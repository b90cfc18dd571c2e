"""The offline proposer: seeded edits of train.py's knob block, in the four strategy classes.

- conservative: one learning-rate-like knob scaled by 1 +/- 10..30% (or nudged from 0);
- moderate: one structural knob (depth, width, batch, head size, window pattern);
- aggressive: a recipe that moves several knobs far at once (deep-narrow, wide-shallow, big batch
  with higher lr, ...);
- crossover: the knob changes of the two best distinct recent candidates, re-applied to the
  CURRENT incumbent (with fewer than two usable parents it proposes a moderate change, labelled
  moderate, and says why).

Values are read and written with libcst on the knob line itself (so comments and alignment
survive), and each edit's search is the whole knob line. Size knobs (`{"gpu": .., "cpu": ..,
"micro": ..}[PRESET]`) change only the run's preset column. Every draft passes through
`sandbox.candidate.build_candidate`; rejected or duplicate drafts are redrawn (up to
`max_tries`), so only accepted proposals are returned, possibly fewer than asked.

Determinism: every draw comes from `random.Random("<seed>:<request.seed>:<generation>:
<strategy>:<slot>:<try>")` (string seeds hash with sha512, not Python's salted hash()), so the
same proposer seed and request give the same proposals in any process.
"""
from __future__ import annotations

import ast
import math
import random
from dataclasses import dataclass
from pathlib import Path

import libcst as cst

from agent.proposers.base import Proposal, ProposalRequest
from sandbox.candidate import build_candidate

LR_KNOBS = ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY")
SCHEDULE_KNOBS = ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC", "ADAM_BETAS")
SIZE_KNOBS = ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE")
KNOBS = SIZE_KNOBS + ("WINDOW_PATTERN",) + LR_KNOBS + SCHEDULE_KNOBS + ("SEED",)

# Fallback when prepare.py cannot be read (these are prepare.py's PRESETS values).
DEFAULT_MAX_SEQ_LEN = {"gpu": 2048, "cpu": 256, "micro": 64}
# Caps that keep a preset runnable on its hardware (micro/cpu: 2 CPU cores; gpu: one 24-80 GB card).
LIMITS = {
    "gpu": dict(depth=24, width=1536, batch=(2**17, 2**21), device_batch=(8, 128), head_dims=(64, 128)),
    "cpu": dict(depth=8, width=512, batch=(2**11, 2**16), device_batch=(2, 64), head_dims=(32, 64, 128)),
    "micro": dict(depth=8, width=512, batch=(2**8, 2**14), device_batch=(2, 64), head_dims=(16, 32, 64)),
}
ASPECT_CHOICES = (16, 24, 32, 40, 48, 64, 80, 96, 128)
WINDOW_CHOICES = ("L", "SL", "SSL", "SSSL", "SSSSL", "LS", "SLL", "SSLL")
# the GPU's auto device batch (DEVICE_BATCH_SIZE = 0) can be up to 128 rows
GPU_AUTO_ROWS = 128
MAX_TRIES = 25


# ----------------------------------------------------------------------------- knob values

def _eval_number(node: ast.AST):
    """Evaluate the literal arithmetic used in knob values (2**19, -1e-3, (0.8, 0.95))."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_eval_number(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_number(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        a, b = _eval_number(node.left), _eval_number(node.right)
        ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
               ast.Div: lambda: a / b, ast.FloorDiv: lambda: a // b, ast.Pow: lambda: a ** b}
        if type(node.op) in ops:
            return ops[type(node.op)]()
    raise ValueError(f"not a literal knob value: {ast.unparse(node)}")


def _format(value, like_code: str = "") -> str:
    """Python text for a knob value, in the style of the code it replaces."""
    if isinstance(value, bool) or isinstance(value, str):
        return repr(value).replace("'", '"') if isinstance(value, str) else repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_format(v) for v in value) + ")"
    if isinstance(value, int):
        if "**" in like_code and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return str(value)
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        text = f"{mantissa}e{int(exp)}"
    elif "." not in text:
        text += ".0"
    return text


def _round(value: float) -> float:
    return float(f"{value:.3g}") if value else 0.0


@dataclass
class Knob:
    name: str
    line: str            # the whole source line, without newline
    lineno: int          # 1-based
    sized: bool          # {"gpu": .., ...}[PRESET]
    value: object        # the value for the run's preset
    code: str            # the value's source text


class KnobBlock:
    """The knob lines of one train.py, for one preset."""

    def __init__(self, source: str, preset: str):
        self.source = source
        self.preset = preset
        self.lines = source.splitlines()
        self.knobs: dict[str, Knob] = {}
        tree = ast.parse(source)
        for stmt in tree.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in KNOBS
                    and stmt.lineno == stmt.end_lineno):
                continue
            name = stmt.targets[0].id
            try:
                sized, value, code = self._read(stmt.value)
            except ValueError:
                continue    # a knob turned into code by an earlier candidate: leave it alone
            self.knobs[name] = Knob(name, self.lines[stmt.lineno - 1], stmt.lineno, sized, value, code)

    def _read(self, node: ast.AST):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
            for key, val in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and key.value == self.preset:
                    return True, _eval_number(val), ast.get_source_segment(self.source, val) or ""
            raise ValueError(f"no {self.preset!r} column")
        return False, _eval_number(node), ast.get_source_segment(self.source, node) or ""

    def __contains__(self, name: str) -> bool:
        return name in self.knobs

    def get(self, name: str, default=None):
        knob = self.knobs.get(name)
        return default if knob is None else knob.value

    def new_line(self, name: str, value) -> str:
        """The knob's line with `value` written in (only the preset's column for size knobs)."""
        knob = self.knobs[name]
        stmt = cst.parse_statement(knob.line + "\n")
        text = _format(value, knob.code)
        new_expr = cst.parse_expression(text)
        assign = stmt.body[0]
        if knob.sized:
            sub = assign.value
            elements = []
            for el in sub.value.elements:
                if isinstance(el.key, cst.SimpleString) and el.key.evaluated_value == self.preset:
                    el = el.with_changes(value=new_expr)
                elements.append(el)
            new_value = sub.with_changes(value=sub.value.with_changes(elements=elements))
        else:
            new_value = new_expr
        new_stmt = stmt.with_changes(body=[assign.with_changes(value=new_value)])
        return cst.Module(body=[]).code_for_node(new_stmt).rstrip("\n")

    def edits_for(self, changes: dict[str, object]) -> list[dict]:
        """One {search, replace} per changed knob; the search is the whole line, extended upwards
        while it is not unique (a short line can be the tail of a longer one)."""
        edits = []
        for name, value in changes.items():
            knob = self.knobs[name]
            start = knob.lineno - 1
            while True:
                search = "\n".join(self.lines[start:knob.lineno]) + "\n"
                if self.source.count(search) == 1 or start == 0:
                    break
                start -= 1
            prefix = "\n".join(self.lines[start:knob.lineno - 1])
            replace = (prefix + "\n" if prefix else "") + self.new_line(name, value) + "\n"
            edits.append({"search": search, "replace": replace})
        return edits


def read_max_seq_len(project_dir: Path | None) -> dict[str, int]:
    """MAX_SEQ_LEN per preset from prepare.py's PRESETS table (parsed, never imported)."""
    table = dict(DEFAULT_MAX_SEQ_LEN)
    for folder in [project_dir, Path.cwd(), Path(__file__).resolve().parents[2]]:
        if folder is None or not (Path(folder) / "prepare.py").is_file():
            continue
        try:
            tree = ast.parse((Path(folder) / "prepare.py").read_text())
        except (OSError, SyntaxError, ValueError):
            continue
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PRESETS" for t in stmt.targets):
                try:
                    presets = ast.literal_eval(_presets_literal(stmt.value))
                except (ValueError, SyntaxError):
                    continue
                for name, cfg in presets.items():
                    if isinstance(cfg, dict) and isinstance(cfg.get("max_seq_len"), int):
                        table[name] = cfg["max_seq_len"]
                return table
    return table


def _presets_literal(node: ast.AST) -> str:
    """PRESETS is written with dict(...) calls; keep only the max_seq_len entries as a literal."""
    out = {}
    if isinstance(node, ast.Dict):
        for key, val in zip(node.keys, node.values):
            if isinstance(key, ast.Constant) and isinstance(val, ast.Call):
                for kw in val.keywords:
                    if kw.arg == "max_seq_len" and isinstance(kw.value, ast.Constant):
                        out[key.value] = {"max_seq_len": kw.value.value}
            elif isinstance(key, ast.Constant) and isinstance(val, ast.Dict):
                for k2, v2 in zip(val.keys, val.values):
                    if isinstance(k2, ast.Constant) and k2.value == "max_seq_len" and isinstance(v2, ast.Constant):
                        out[key.value] = {"max_seq_len": v2.value}
    return repr(out)


# ----------------------------------------------------------------------------- validity

class Shape:
    """The size knobs of a draft, with the preset's couplings and caps."""

    def __init__(self, knobs: KnobBlock, seq_len: int, changes: dict[str, object]):
        self.preset = knobs.preset
        self.seq_len = seq_len
        merged = {n: knobs.get(n) for n in SIZE_KNOBS + ("WINDOW_PATTERN",)}
        merged.update({k: v for k, v in changes.items() if k in merged})
        self.values = merged

    def problems(self) -> list[str]:
        v, lim = self.values, LIMITS.get(self.preset, LIMITS["gpu"])
        depth, ar, hd = v["DEPTH"], v["ASPECT_RATIO"], v["HEAD_DIM"]
        total, dbs = v["TOTAL_BATCH_SIZE"], v["DEVICE_BATCH_SIZE"]
        out = []
        if None in (depth, ar, hd):
            return out   # a size knob became code; the checker and preflight judge it
        if not (isinstance(depth, int) and 1 <= depth <= lim["depth"]):
            out.append(f"DEPTH {depth} outside 1..{lim['depth']}")
        if not (isinstance(hd, int) and hd >= 8 and hd % 8 == 0):
            out.append(f"HEAD_DIM {hd} must be a positive multiple of 8")
        elif isinstance(ar, int) and isinstance(depth, int):
            width = math.ceil(depth * ar / hd) * hd
            if ar < 1 or width < hd or width > lim["width"]:
                out.append(f"model_dim {width} outside {hd}..{lim['width']}")
        if isinstance(total, int) and isinstance(dbs, int):
            rows = dbs if dbs else (GPU_AUTO_ROWS if self.preset == "gpu" else 8)
            if rows < 0 or total % (rows * self.seq_len) or total < rows * self.seq_len:
                out.append(f"TOTAL_BATCH_SIZE {total} not a multiple of {rows} x {self.seq_len}")
            lo, hi = lim["batch"]
            if not lo <= total <= hi:
                out.append(f"TOTAL_BATCH_SIZE {total} outside {lo}..{hi}")
        pattern = v["WINDOW_PATTERN"]
        if pattern is not None and (not isinstance(pattern, str) or not pattern or set(pattern) - set("SL")):
            out.append(f"WINDOW_PATTERN {pattern!r} must be S/L characters")
        return out


def _schedule_ok(knobs: KnobBlock, changes: dict[str, object]) -> bool:
    get = lambda n: changes.get(n, knobs.get(n))  # noqa: E731
    for name in LR_KNOBS:
        value = get(name)
        if value is not None and not (isinstance(value, (int, float)) and value >= 0 and (value > 0 or name == "WEIGHT_DECAY")):
            return False
    betas = get("ADAM_BETAS")
    if betas is not None and not (isinstance(betas, tuple) and len(betas) == 2 and all(0 < b < 1 for b in betas)):
        return False
    warmup, warmdown, final = get("WARMUP_RATIO") or 0.0, get("WARMDOWN_RATIO") or 0.0, get("FINAL_LR_FRAC") or 0.0
    return 0 <= warmup and 0 <= warmdown and warmup + warmdown <= 1.0 and 0 <= final <= 1.0


# ----------------------------------------------------------------------------- drafts

@dataclass
class Draft:
    strategy: str
    changes: dict[str, object]
    title: str
    hypothesis: str
    parents: list[str]
    extra_edits: list[dict] | None = None


def _describe(knobs: KnobBlock, changes: dict[str, object]) -> str:
    parts = []
    for name, new in changes.items():
        old = knobs.get(name)
        text = f"{name} {_format(old, knobs.knobs[name].code)} -> {_format(new, knobs.knobs[name].code)}"
        if isinstance(old, (int, float)) and not isinstance(old, bool) and old and isinstance(new, (int, float)):
            text += f" ({(new / old - 1) * 100:+.0f}%)"
        parts.append(text)
    return ", ".join(parts)


def _scale(rng: random.Random, value: float, low=0.1, high=0.3) -> float:
    factor = 1 + rng.choice((-1, 1)) * rng.uniform(low, high)
    return _round(value * factor)


def _pow2_neighbors(value: int, lo: int, hi: int) -> list[int]:
    return [v for v in (value // 4, value // 2, value * 2, value * 4) if lo <= v <= hi and v != value and v > 0]


class HeuristicProposer:
    name = "heuristic"

    def __init__(self, seed: int = 0, project_dir: str | Path | None = None, max_tries: int = MAX_TRIES):
        self.seed = seed
        self.max_tries = max_tries
        self.seq_len = read_max_seq_len(Path(project_dir) if project_dir else None)

    # ------------------------------------------------------------------ protocol
    def propose(self, request: ProposalRequest) -> list[Proposal]:
        knobs = KnobBlock(request.incumbent_source, request.preset)
        seq_len = self.seq_len.get(request.preset, DEFAULT_MAX_SEQ_LEN.get(request.preset, 2048))
        seen = set(request.seen_fingerprints)
        proposals: list[Proposal] = []
        for strategy in ("conservative", "moderate", "aggressive", "crossover"):
            for slot in range(request.slots.get(strategy, 0)):
                proposal = self._fill_slot(request, knobs, seq_len, strategy, slot, seen)
                if proposal is not None:
                    seen.add(proposal.fingerprint)
                    proposals.append(proposal)
        return proposals

    def _fill_slot(self, request, knobs, seq_len, strategy, slot, seen) -> Proposal | None:
        for attempt in range(self.max_tries):
            rng = random.Random(f"{self.seed}:{request.seed}:{request.generation}:{strategy}:{slot}:{attempt}")
            draft = self._draft(strategy, rng, knobs, seq_len, request, attempt)
            if draft is None or not draft.changes and not draft.extra_edits:
                continue
            if Shape(knobs, seq_len, draft.changes).problems() or not _schedule_ok(knobs, draft.changes):
                continue
            edits = knobs.edits_for(draft.changes) + list(draft.extra_edits or [])
            check = build_candidate(request.incumbent_source, edits, seen)
            if not check.ok and draft.extra_edits:
                # a parent's code edit that no longer applies or passes: keep its knob changes only
                draft.extra_edits = None
                edits = knobs.edits_for(draft.changes)
                check = build_candidate(request.incumbent_source, edits, seen) if edits else check
            if not check.ok:
                continue
            return Proposal(strategy=draft.strategy, title=draft.title, hypothesis=draft.hypothesis, edits=edits,
                            parents=draft.parents, accepted=True, source=check.source, diff=check.diff,
                            fingerprint=check.fingerprint, proposer=self.name)
        return None

    def _draft(self, strategy, rng, knobs, seq_len, request, attempt) -> Draft | None:
        parents = [request.incumbent_id]
        if strategy == "conservative":
            return self._conservative(rng, knobs, parents)
        if strategy == "moderate":
            return self._moderate(rng, knobs, seq_len, parents)
        if strategy == "aggressive":
            return self._aggressive(rng, knobs, seq_len, parents)
        return self._crossover(rng, knobs, seq_len, request, attempt)

    # ------------------------------------------------------------------ conservative
    def _conservative(self, rng, knobs: KnobBlock, parents) -> Draft | None:
        choices = [n for n in LR_KNOBS + SCHEDULE_KNOBS if n in knobs]
        if not choices:
            return None
        name = rng.choice(choices)
        old = knobs.get(name)
        if name == "ADAM_BETAS":
            b1, b2 = old
            if rng.random() < 0.5:
                new = (_round(min(0.98, max(0.5, b1 + rng.choice((-1, 1)) * rng.uniform(0.03, 0.1)))), b2)
            else:
                new = (b1, _round(min(0.999, max(0.8, b2 + rng.choice((-1, 1)) * rng.uniform(0.01, 0.04)))))
            why = "momentum averaging horizons"
        elif name in ("WARMUP_RATIO", "FINAL_LR_FRAC") and not old:
            new = rng.choice((0.02, 0.05, 0.1))
            why = "a short warm-up" if name == "WARMUP_RATIO" else "not annealing the lr all the way to 0"
        elif name in ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC"):
            new = min(1.0, _scale(rng, old))
            why = "the lr schedule's shape"
        else:
            new = _scale(rng, old)
            why = "the step size" if name != "WEIGHT_DECAY" else "regularisation strength"
        if new == old:
            return None
        desc = _describe(knobs, {name: new})
        return Draft("conservative", {name: new}, desc,
                     f"A small change to {name} tunes {why} near the incumbent's optimum and should move val_bpb "
                     "by a little, in a direction worth knowing.", parents)

    # ------------------------------------------------------------------ moderate
    def _moderate(self, rng, knobs: KnobBlock, seq_len, parents, why_prefix: str = "") -> Draft | None:
        lim = LIMITS.get(knobs.preset, LIMITS["gpu"])
        options = [n for n in ("DEPTH", "ASPECT_RATIO", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "HEAD_DIM",
                               "WINDOW_PATTERN") if isinstance(knobs.get(n), (int, str))]
        if knobs.preset == "gpu" and knobs.get("DEVICE_BATCH_SIZE") == 0 and "DEVICE_BATCH_SIZE" in options:
            options.remove("DEVICE_BATCH_SIZE")   # 0 = sized to the card's memory; leave it to the card
        if not options:
            return None
        name = rng.choice(options)
        old = knobs.get(name)
        changes: dict[str, object] = {}
        if name == "DEPTH":
            changes[name] = old + rng.choice((-2, -1, 1, 2))
            claim = f"a {'deeper' if changes[name] > old else 'shallower'} model uses the fixed time budget better"
        elif name == "ASPECT_RATIO":
            changes[name] = rng.choice([a for a in ASPECT_CHOICES if a != old])
            claim = (f"a {'wider' if changes[name] > old else 'narrower'} model balances capacity against "
                     "steps per second better")
        elif name == "TOTAL_BATCH_SIZE":
            changes[name] = rng.choice(_pow2_neighbors(old, *lim["batch"]) or [old])
            claim = (f"a {'larger' if changes[name] > old else 'smaller'} batch trades gradient noise against "
                     "the number of optimizer steps better")
        elif name == "DEVICE_BATCH_SIZE":
            lo, hi = lim["device_batch"]
            changes[name] = rng.choice([v for v in (old // 2, old * 2) if lo <= v <= hi] or [old])
            total = knobs.get("TOTAL_BATCH_SIZE")
            if isinstance(total, int) and total % (changes[name] * seq_len):
                changes["TOTAL_BATCH_SIZE"] = changes[name] * seq_len   # keep the divisibility contract
            claim = (f"a {'larger' if changes[name] > old else 'smaller'} micro-batch raises throughput "
                     "at the same optimisation")
        elif name == "HEAD_DIM":
            changes[name] = rng.choice([h for h in lim["head_dims"] if h != old] or [old])
            claim = (f"{'fewer, larger' if changes[name] > old else 'more, smaller'} attention heads "
                     "model the data better")
        else:
            changes[name] = rng.choice([w for w in WINDOW_CHOICES if w != old])
            claim = ("a different share of full-context layers balances long-range modelling against "
                     "attention cost better")
        changes = {k: v for k, v in changes.items() if v != knobs.get(k)}
        if not changes:
            return None
        return Draft("moderate", changes, _describe(knobs, changes),
                     f"{why_prefix}Changing {name} tests whether {claim}.", parents)

    # ------------------------------------------------------------------ aggressive
    def _aggressive(self, rng, knobs: KnobBlock, seq_len, parents) -> Draft | None:
        lim = LIMITS.get(knobs.preset, LIMITS["gpu"])
        depth, ar = knobs.get("DEPTH"), knobs.get("ASPECT_RATIO")
        total = knobs.get("TOTAL_BATCH_SIZE")
        lrs = [n for n in ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR") if n in knobs]
        recipes = []
        if isinstance(depth, int) and isinstance(ar, int):
            recipes += ["deep-narrow", "wide-shallow"]
        if lrs:
            recipes.append("high-lr")
        if isinstance(total, int) and lrs:
            recipes += ["big-batch-high-lr", "small-batch-low-lr"]
        if "WARMDOWN_RATIO" in knobs:
            recipes.append("long-anneal")
        if not recipes:
            return None
        recipe = rng.choice(recipes)
        changes: dict[str, object] = {}
        if recipe == "deep-narrow":
            changes["DEPTH"] = min(lim["depth"], depth + max(2, int(depth * rng.uniform(0.5, 1.0))))
            changes["ASPECT_RATIO"] = max(8, int(ar * rng.uniform(0.4, 0.7)) // 8 * 8)
            why = "depth matters more than width at this scale"
        elif recipe == "wide-shallow":
            changes["DEPTH"] = max(1, depth - max(1, int(depth * rng.uniform(0.25, 0.5))))
            changes["ASPECT_RATIO"] = int(ar * rng.uniform(1.5, 2.5)) // 8 * 8
            why = "a wider, shallower model gets more steps and more parallel work per step"
        elif recipe == "high-lr":
            factor = rng.uniform(1.5, 2.5)
            for n in rng.sample(lrs, k=min(len(lrs), rng.randint(1, 2))):
                changes[n] = _round(knobs.get(n) * factor)
            why = "the incumbent under-trains in its short budget and tolerates much larger steps"
        elif recipe in ("big-batch-high-lr", "small-batch-low-lr"):
            up = recipe == "big-batch-high-lr"
            mult = rng.choice((2, 4))
            changes["TOTAL_BATCH_SIZE"] = total * mult if up else total // mult
            factor = math.sqrt(mult) if up else 1 / math.sqrt(mult)
            for n in lrs:
                changes[n] = _round(knobs.get(n) * factor)
            why = ("a larger batch with sqrt-scaled lrs gives cleaner gradients at the same step count" if up else
                   "more, noisier steps with sqrt-scaled lrs beat fewer clean ones in a short budget")
        else:
            changes["WARMDOWN_RATIO"] = _round(rng.uniform(0.6, 0.9))
            if "FINAL_LR_FRAC" in knobs:
                changes["FINAL_LR_FRAC"] = rng.choice((0.0, 0.05, 0.1))
            if "WARMUP_RATIO" in knobs:
                changes["WARMUP_RATIO"] = rng.choice((0.0, 0.02, 0.05))
            if "MATRIX_LR" in knobs:
                changes["MATRIX_LR"] = _round(knobs.get("MATRIX_LR") * rng.uniform(1.2, 1.6))
            why = "a longer anneal from a higher peak lr converges further in the same time"
        changes = {k: v for k, v in changes.items() if v != knobs.get(k)}
        if not changes:
            return None
        return Draft("aggressive", changes, f"{recipe}: {_describe(knobs, changes)}",
                     f"A big jump ({recipe}) tests whether {why}.", parents)

    # ------------------------------------------------------------------ crossover
    def _crossover(self, rng, knobs: KnobBlock, seq_len, request: ProposalRequest, attempt: int) -> Draft | None:
        parents = [p for p in request.recent if p.edits and p.candidate_id != request.incumbent_id]
        pairs = [(a, b) for i, a in enumerate(parents) for b in parents[i + 1:]]
        pairs.sort(key=lambda ab: (_score(ab[0]) + _score(ab[1])))
        pairs = pairs[:6]          # the best few pairs
        for offset in range(len(pairs)):
            # retries walk down the pairs; odd tries carry the knob changes alone
            a, b = pairs[(attempt // 2 + offset) % len(pairs)]
            changes = _parent_changes(b, knobs.preset)
            changes.update(_parent_changes(a, knobs.preset))        # the better parent wins conflicts
            changes = {k: v for k, v in changes.items() if k in knobs and v != knobs.get(k)}
            extra = [] if attempt % 2 else _code_edits(a) + _code_edits(b)
            if not changes and not extra:
                continue
            if Shape(knobs, seq_len, changes).problems() or not _schedule_ok(knobs, changes):
                continue
            title = f"cross {a.candidate_id} x {b.candidate_id}"
            if changes:
                title += f": {_describe(knobs, changes)}"
            return Draft("crossover", changes, title,
                         f"Combining the changes of {a.candidate_id} ({a.title}) and {b.candidate_id} ({b.title}) "
                         "tests whether their gains add up.", [request.incumbent_id, a.candidate_id, b.candidate_id],
                         extra_edits=extra or None)
        reason = ("fewer than two earlier candidates with edits to combine" if len(parents) < 2
                  else "no pair of earlier candidates adds anything new to the incumbent")
        return self._moderate(rng, knobs, seq_len, [request.incumbent_id],
                              why_prefix=f"Crossover slot filled with a moderate change ({reason}). ")


def _score(candidate) -> float:
    return candidate.val_bpb if candidate.val_bpb is not None else float("inf")


def _knob_values(text: str, preset: str) -> dict[str, object] | None:
    """Knob assignments in a block of code, or None when it holds anything else."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    values: dict[str, object] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id in KNOBS):
            return None
        node = stmt.value
        try:
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
                column = {k.value: v for k, v in zip(node.value.keys, node.value.values) if isinstance(k, ast.Constant)}
                if preset not in column:
                    continue
                values[stmt.targets[0].id] = _eval_number(column[preset])
            else:
                values[stmt.targets[0].id] = _eval_number(node)
        except ValueError:
            return None
    return values


def _parent_changes(parent, preset: str) -> dict[str, object]:
    """The knob values a parent's edits set (only knobs its edits actually changed)."""
    changes: dict[str, object] = {}
    for edit in parent.edits:
        before = _knob_values(_dedent_block(edit.get("search", "")), preset)
        after = _knob_values(_dedent_block(edit.get("replace", "")), preset)
        if before is None or after is None:
            continue
        changes.update({k: v for k, v in after.items() if before.get(k) != v})
    return changes


def _code_edits(parent) -> list[dict]:
    """A parent's edits that are not pure knob changes (code changes carried over verbatim)."""
    return [e for e in parent.edits
            if _knob_values(_dedent_block(e.get("search", "")), "gpu") is None
            or _knob_values(_dedent_block(e.get("replace", "")), "gpu") is None]


def _dedent_block(text: str) -> str:
    # A knob edit's search can start mid-line; only whole knob lines parse, others are "code".
    return text if text.endswith("\n") else text + "\n"
