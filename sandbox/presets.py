"""The one reader of prepare.py's preset table, for everything that must not import torch.

prepare.py owns the experiment's facts (PRESETS: sequence length, budget, eval size, vocab, ...;
MEASUREMENT_VERSION). The orchestrator, the harness and the runners need those facts too but
must not import prepare.py (it imports torch, ~200 MB and seconds per process), so they read its
source: the top-level assignments are evaluated as constant expressions (literals, containers,
arithmetic on numbers) and nothing else - a name, a call or an attribute there is an error.

STDLIB ONLY: this file ships next to harness.py into every fixed bundle and SageMaker job.

    table = preset_table(path_to_prepare_py)      # {"gpu": {...}, "cpu": {...}, "micro": {...}}
    facts = preset_facts("cpu", path)              # one preset's dict
    measurement_version(path)                      # int
    time_budget("cpu", path)                       # seconds; AUTORESEARCH_TIME_BUDGET overrides
"""
from __future__ import annotations

import ast
import operator
import os
from pathlib import Path

PRESET_NAMES = ("gpu", "cpu", "micro")
BUDGET_OVERRIDE_ENV = "AUTORESEARCH_TIME_BUDGET"   # tests and benchmarks shorten the budget

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv}
_cache: dict[tuple[str, int, int], dict] = {}


class PrepareFactsError(ValueError):
    """prepare.py's table cannot be read; the message names the file and the assignment."""


def _const(node: ast.AST, where: str):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _const(node.operand, where)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_const(node.left, where), _const(node.right, where))
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_const(e, where) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {_const(k, where): _const(v, where) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and not node.args:
        return {kw.arg: _const(kw.value, where) for kw in node.keywords}
    raise PrepareFactsError(f"{where}: not a constant expression ({ast.dump(node)[:80]})")


def _top_level_constants(path: Path) -> dict:
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise PrepareFactsError(f"{path}: cannot read prepare.py ({exc})") from None
    if key not in _cache:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper():
                name = node.targets[0].id
                try:
                    found[name] = _const(node.value, f"{path}: {name}")
                except PrepareFactsError:
                    continue   # derived constants (PRESET = resolve_preset(...)) are not facts
        if "PRESETS" not in found:
            raise PrepareFactsError(f"{path}: no constant PRESETS table at the top level")
        _cache[key] = found
    return _cache[key]


def preset_table(prepare_path: str | Path) -> dict[str, dict]:
    return _top_level_constants(Path(prepare_path))["PRESETS"]


def preset_facts(preset: str, prepare_path: str | Path) -> dict:
    table = preset_table(prepare_path)
    if preset not in table:
        raise PrepareFactsError(f"{prepare_path}: unknown preset {preset!r}; PRESETS has {', '.join(table)}")
    return dict(table[preset])


def constant(name: str, prepare_path: str | Path, default=None):
    """Another top-level constant of prepare.py (e.g. MEASUREMENT_VERSION)."""
    return _top_level_constants(Path(prepare_path)).get(name, default)


def measurement_version(prepare_path: str | Path) -> int:
    return int(constant("MEASUREMENT_VERSION", prepare_path, 1))


def budget_override(env=None) -> float | None:
    """AUTORESEARCH_TIME_BUDGET as seconds, None when unset; ValueError when it is not > 0."""
    raw = (os.environ if env is None else env).get(BUDGET_OVERRIDE_ENV)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{BUDGET_OVERRIDE_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{BUDGET_OVERRIDE_ENV} must be > 0, got {raw!r}")
    return value


def time_budget(preset: str, prepare_path: str | Path, env=None) -> float:
    """The training budget in seconds of `preset`: the override when set, else prepare's table."""
    override = budget_override(env)
    return override if override is not None else float(preset_facts(preset, prepare_path)["time_budget"])
