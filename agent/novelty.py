"""Near-duplicate rejection: a candidate too close to one already tried does not get a slot.

Exact fingerprints let near-twins through (one learning rate x0.9 and another x0.9003 both
train, and the second measures nothing the first did not). The distance, on normalised sources:

- code: the source with comments, blank lines and spacing dropped and every number replaced by
  `N`; two candidates whose code differs (1 - difflib similarity of those lines) by more than
  `code_tolerance` are not twins, whatever their numbers;
- knobs: when the code matches, the largest relative difference over their numbers, position by
  position (|a - b| / max(|a|, |b|)); twins when it is at most `knob_tolerance`.

Applied twice: by the LLM proposer inside a round (so a twin goes back to the model as a repair
and between concurrent calls the second twin is refused), and by `propose_round` over the whole
run before anything is stored as accepted (every proposer, the last word).
"""
from __future__ import annotations

import difflib
import functools
import io
import re
import threading
import tokenize
from dataclasses import dataclass

from agent.research_settings import NoveltySettings

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")



@dataclass(frozen=True)
class Shape:
    code: tuple[str, ...]        # normalised lines, numbers masked
    numbers: tuple[float, ...]


@functools.lru_cache(maxsize=4096)     # every round re-reads the run's sources: normalise each once
def shape_of(source: str) -> Shape:
    lines, numbers = [], []
    for line in _strip_comments(source).splitlines():
        text = " ".join(line.split())
        if not text:
            continue
        found = [float(m.group(0)) for m in _NUMBER.finditer(text)]
        numbers.extend(found)
        lines.append(_NUMBER.sub("N", text))
    return Shape(tuple(lines), tuple(numbers))


def _strip_comments(source: str) -> str:
    """The source without comments (tokenize, so a '#' inside a string stays); as is when it does not tokenize."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source


@dataclass
class Twin:
    other: str                   # the id (or label) of the near twin
    distance: float              # the knob distance (relative)
    detail: str                  # what differs, for the reason text

    def reason(self, tolerance: float) -> str:
        return (f"near twin of {self.other}: the same code, numbers within {tolerance:.0%} "
                f"(largest relative difference {self.distance:.4%}{': ' + self.detail if self.detail else ''}); "
                f"propose something that differs more")


def compare(a: Shape, b: Shape, settings: NoveltySettings) -> Twin | None:
    """A Twin (other left empty) when `a` and `b` are near-duplicates."""
    if a.code != b.code:
        if settings.code_tolerance <= 0:
            return None
        ratio = difflib.SequenceMatcher(None, a.code, b.code, autojunk=False).ratio()
        if 1.0 - ratio > settings.code_tolerance or len(a.numbers) != len(b.numbers):
            return None
    if len(a.numbers) != len(b.numbers):
        return None
    worst, where = 0.0, -1
    for i, (x, y) in enumerate(zip(a.numbers, b.numbers)):
        scale = max(abs(x), abs(y))
        rel = abs(x - y) / scale if scale else 0.0
        if rel > worst:
            worst, where = rel, i
    if worst > settings.knob_tolerance:
        return None
    detail = f"{a.numbers[where]:g} vs {b.numbers[where]:g}" if where >= 0 else "identical"
    return Twin("", worst, detail)


class NoveltyIndex:
    """Tried sources by id; thread-safe (the LLM proposer's concurrent calls share one)."""

    def __init__(self, settings: NoveltySettings | None = None):
        self.settings = settings or NoveltySettings()
        self._shapes: dict[str, Shape] = {}
        self._lock = threading.Lock()

    def add(self, key: str, source: str) -> None:
        shape = shape_of(source)
        with self._lock:
            self._shapes[key] = shape

    def fork(self) -> "NoveltyIndex":
        other = NoveltyIndex(self.settings)
        with self._lock:
            other._shapes = dict(self._shapes)
        return other

    def twin(self, source: str) -> Twin | None:
        """The nearest tried source within the tolerances, or None (always None when disabled)."""
        if not self.settings.enabled:
            return None
        shape = shape_of(source)
        with self._lock:
            items = list(self._shapes.items())
        best: Twin | None = None
        for key, other in items:
            found = compare(shape, other, self.settings)
            if found is not None and (best is None or found.distance < best.distance):
                best = Twin(key, found.distance, found.detail)
        return best

    def claim(self, key: str, source: str) -> Twin | None:
        """Check and add in one step (two concurrent twins cannot both pass)."""
        shape = shape_of(source)
        with self._lock:
            if self.settings.enabled:
                for other_key, other in self._shapes.items():
                    found = compare(shape, other, self.settings)
                    if found is not None:
                        return Twin(other_key, found.distance, found.detail)
            self._shapes[key] = shape
        return None
