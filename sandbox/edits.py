"""Candidate edits: search/replace pairs or pasted unified diffs -> new train.py + git diff.

Three entry points, one job each:
- `apply_edits(source, edits)`: the LLM tool's `{search, replace}` pairs. Every `search` must
  match the ORIGINAL source exactly once, and no two edits may touch the same text, so the
  result never depends on the order the edits are listed in.
- `apply_unified_diff(source, diff_text)`: a diff a human pasted. Hunk line numbers are only a
  hint (people and models get them wrong); context and removed lines must match exactly.
- `diff_to_edits(old, new)`: the inverse, so a hand-edited file can be stored as edits.

Every result carries a unified diff with `a/train.py` / `b/train.py` headers that `git apply`
accepts, so a candidate can be reproduced on any checkout of its parent.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

FILE_NAME = "train.py"
EDIT_ERROR_KINDS = ("not_found", "ambiguous", "overlap", "empty", "malformed")


class EditError(ValueError):
    """An edit that cannot be applied. `index` is the 1-based edit (or hunk) number, 0 when
    the problem is not tied to one edit; `kind` is one of EDIT_ERROR_KINDS."""

    def __init__(self, index: int, kind: str, message: str):
        super().__init__(message)
        self.index = index
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class EditResult:
    source: str
    diff: str   # "" when nothing changed


def unified_diff(old: str, new: str, name: str = FILE_NAME) -> str:
    """A git-applicable unified diff between two versions of `name`."""
    if old == new:
        return ""
    out: list[str] = []
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 f"a/{name}", f"b/{name}", n=3)
    for line in lines:
        if line.endswith("\n"):
            out.append(line)
        else:
            # difflib leaves a last line without newline bare; git needs the marker line.
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


# ----------------------------------------------------------------------------- search/replace

def _count_occurrences(text: str, needle: str) -> list[int]:
    """Start offsets of every occurrence, overlapping ones included (an overlapping second
    match still makes the search ambiguous)."""
    starts, pos = [], text.find(needle)
    while pos != -1:
        starts.append(pos)
        pos = text.find(needle, pos + 1)
    return starts


def _closest_line(wanted: str, lines: list[str]) -> str | None:
    """The source line most like `wanted`; a line is also compared by its prefix, so a trailing
    comment in the file does not hide the line the search meant."""
    wanted = wanted.strip()
    best, best_score = None, 0.6
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(wanted)
    for line in lines:
        stripped = line.strip()
        for candidate in {stripped, stripped[:len(wanted) + 2]}:
            matcher.set_seq1(candidate)
            if matcher.real_quick_ratio() > best_score and matcher.quick_ratio() > best_score:
                score = matcher.ratio()
                if score > best_score:
                    best, best_score = stripped, score
    return best


def _closest_line_hint(source: str, search: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip()]
    wanted = [ln for ln in search.splitlines() if ln.strip()]
    if not wanted or not lines:
        return ""
    # The first search line that is missing verbatim is the one worth pointing at.
    missing = next((w for w in wanted if w not in lines), wanted[0])
    close = _closest_line(missing, lines)
    if close:
        return f"; closest line in {FILE_NAME}: {close!r} (search had {missing.strip()!r})"
    return f"; no line resembles {missing.strip()!r}"


def _validate(edits) -> list[tuple[str, str]]:
    if not isinstance(edits, list):
        raise EditError(0, "malformed", f"edits must be a list of {{search, replace}} objects, got {type(edits).__name__}")
    if not edits:
        raise EditError(0, "empty", "no edits given")
    pairs = []
    for i, edit in enumerate(edits, 1):
        if not isinstance(edit, dict):
            raise EditError(i, "malformed", f"edit {i}: expected an object with 'search' and 'replace', got {type(edit).__name__}")
        unknown = sorted(set(edit) - {"search", "replace"})
        if unknown or "search" not in edit or "replace" not in edit:
            raise EditError(i, "malformed", f"edit {i}: expected exactly the keys 'search' and 'replace', got {sorted(edit)}")
        search, replace = edit["search"], edit["replace"]
        if not isinstance(search, str) or not isinstance(replace, str):
            raise EditError(i, "malformed", f"edit {i}: 'search' and 'replace' must be strings")
        if search == "":
            raise EditError(i, "empty", f"edit {i}: search text is empty; quote the lines to change")
        pairs.append((search, replace))
    return pairs


def apply_edits(source: str, edits: list[dict]) -> EditResult:
    """Apply search/replace edits, each located in the ORIGINAL source."""
    spans: list[tuple[int, int, int, str]] = []   # (start, end, edit number, replacement)
    for i, (search, replace) in enumerate(_validate(edits), 1):
        starts = _count_occurrences(source, search)
        if not starts:
            raise EditError(i, "not_found", f"edit {i}: search text not found{_closest_line_hint(source, search)}")
        if len(starts) > 1:
            lines = sorted({source.count("\n", 0, s) + 1 for s in starts})
            raise EditError(i, "ambiguous", f"edit {i}: search text found {len(starts)} times "
                            f"(lines {', '.join(map(str, lines))}); include more context")
        spans.append((starts[0], starts[0] + len(search), i, replace))
    spans.sort()
    for (s1, e1, i1, _), (s2, e2, i2, _) in zip(spans, spans[1:]):
        if s2 < e1:
            a, b = sorted((i1, i2))
            raise EditError(b, "overlap", f"edit {b}: its search text overlaps edit {a}'s; merge them into one edit")
    parts, pos = [], 0
    for start, end, _, replace in spans:
        parts.append(source[pos:start])
        parts.append(replace)
        pos = end
    parts.append(source[pos:])
    new = "".join(parts)
    return EditResult(new, unified_diff(source, new))


# ----------------------------------------------------------------------------- unified diffs

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_FILE_HEADER_PREFIXES = ("diff --git", "index ", "--- ", "+++ ", "new file mode", "deleted file mode",
                         "old mode", "new mode", "similarity index", "rename from", "rename to")


@dataclass
class _Hunk:
    number: int
    header: str
    old_start: int                      # 1-based, as stated (a hint only)
    lines: list[tuple[str, str]]        # (" " | "-" | "+", text without newline)
    old_no_newline: bool = False        # "\ No newline" after a context/removed last line
    new_no_newline: bool = False        # ... after a context/added last line

    @property
    def old_block(self) -> list[str]:
        return [t for k, t in self.lines if k != "+"]

    @property
    def new_block(self) -> list[str]:
        return [t for k, t in self.lines if k != "-"]


def _parse_hunks(diff_text: str) -> list[_Hunk]:
    hunks: list[_Hunk] = []
    current: _Hunk | None = None
    files_seen = 0
    for raw in diff_text.splitlines():
        header = _HUNK_HEADER.match(raw)
        if header:
            current = _Hunk(len(hunks) + 1, raw.split(" @@")[0] + " @@", int(header.group(1)), [])
            hunks.append(current)
            continue
        if raw.startswith("--- ") and (current is None or not current.lines or raw.startswith("--- a/")
                                       or raw.startswith("--- /dev/null")):
            files_seen += 1
            current = None
            continue
        if current is None:
            if raw.startswith(_FILE_HEADER_PREFIXES) or not raw.strip():
                continue
            raise EditError(0, "malformed", f"diff: unexpected line before the first hunk header: {raw[:80]!r}")
        if raw.startswith("\\"):
            if not current.lines:
                raise EditError(current.number, "malformed", f"hunk {current.number}: stray '\\ No newline' marker")
            kind = current.lines[-1][0]
            if kind in " -":
                current.old_no_newline = True
            if kind in " +":
                current.new_no_newline = True
            continue
        if raw == "":
            # Editors and chat UIs strip the single space of an empty context line.
            current.lines.append((" ", ""))
        elif raw[0] in " -+":
            current.lines.append((raw[0], raw[1:]))
        elif raw.startswith(_FILE_HEADER_PREFIXES):
            current = None
        else:
            raise EditError(current.number, "malformed",
                            f"hunk {current.number} ({current.header}): line does not start with ' ', '-' or '+': {raw[:80]!r}")
    if files_seen > 1:
        raise EditError(0, "malformed", f"diff touches {files_seen} files; only {FILE_NAME} may change")
    for hunk in hunks:
        while hunk.lines and hunk.lines[-1] == (" ", ""):   # trailing blank lines of the paste
            hunk.lines.pop()
        if not any(k in "+-" for k, _ in hunk.lines):
            raise EditError(hunk.number, "empty", f"hunk {hunk.number} ({hunk.header}) changes nothing")
    if not hunks:
        raise EditError(0, "empty", "diff has no hunks (no '@@ -a,b +c,d @@' header)")
    return hunks


def _locate(hunk: _Hunk, lines: list[str], hint: int, floor: int) -> int:
    """0-based start of the hunk's old block in `lines`, at or after `floor`, nearest `hint`."""
    block = hunk.old_block
    if not block:   # pure insertion without context: trust the stated line
        return min(max(hint + 1, floor), len(lines)) if hunk.old_start else 0
    n = len(block)
    matches = [i for i in range(floor, len(lines) - n + 1)
               if lines[i] == block[0] and lines[i:i + n] == block]
    if matches:
        return min(matches, key=lambda i: (abs(i - hint), i))
    # Explain which line broke the match: the first old line that does not follow its predecessor.
    best_at, best_len = -1, 0
    for i in range(len(lines)):
        k = 0
        while k < n and i + k < len(lines) and lines[i + k] == block[k]:
            k += 1
        if k > best_len:
            best_at, best_len = i, k
    if best_len == 0:
        close = _closest_line(block[0], lines)
        near = f"; closest line: {close!r}" if close else ""
        why = f"its first context/removed line {block[0].strip()!r} is not in {FILE_NAME}{near}"
    else:
        found = lines[best_at + best_len] if best_at + best_len < len(lines) else "<end of file>"
        why = (f"its context/removed lines match {FILE_NAME} from line {best_at + 1} for {best_len} line(s), "
               f"then the hunk expects {block[best_len].strip()!r} but the file has {found.strip()!r}")
    raise EditError(hunk.number, "not_found", f"hunk {hunk.number} ({hunk.header}) does not apply: {why}")


def apply_unified_diff(source: str, diff_text: str) -> EditResult:
    """Apply a pasted unified diff; hunks are found by content, nearest their stated line."""
    hunks = _parse_hunks(diff_text)
    lines = source.split("\n")
    ends_with_newline = source.endswith("\n")
    if ends_with_newline:
        lines.pop()          # the empty string after the final newline is not a line
    out: list[str] = []
    pos, shift = 0, 0        # pos: next unconsumed original line; shift: net lines added so far
    new_ends_with_newline = ends_with_newline
    for hunk in hunks:
        start = _locate(hunk, lines, hunk.old_start - 1, pos)
        if start < pos:
            raise EditError(hunk.number, "overlap", f"hunk {hunk.number} ({hunk.header}) overlaps the previous hunk")
        out.extend(lines[pos:start])
        out.extend(hunk.new_block)
        pos = start + len(hunk.old_block)
        shift += len(hunk.new_block) - len(hunk.old_block)
        if pos >= len(lines):                      # this hunk owns the end of the file
            if hunk.new_no_newline:
                new_ends_with_newline = False
            elif hunk.old_no_newline or hunk.lines[-1][0] == "+":
                new_ends_with_newline = True
    out.extend(lines[pos:])
    new = "\n".join(out) + ("\n" if new_ends_with_newline and out else "")
    return EditResult(new, unified_diff(source, new))


# ----------------------------------------------------------------------------- diff -> edits

def _widen_until_unique(old_lines: list[str], old_text: str, i1: int, i2: int) -> tuple[int, int]:
    """Smallest [s, e) around old lines [i1, i2) whose text occurs exactly once in old_text,
    with at least one line (an insertion needs a neighbour to anchor it)."""
    n = len(old_lines)
    for extra in range(0, n + 1):
        for before in sorted(range(extra + 1), key=lambda b: (abs(2 * b - extra), -b)):
            s, e = i1 - before, i2 + (extra - before)
            if s < 0 or e > n or e <= s:
                continue
            search = "".join(old_lines[s:e])
            if search.strip() and len(_count_occurrences(old_text, search)) == 1:
                return s, e
    return 0, n   # the whole file is always unique


def diff_to_edits(old: str, new: str) -> list[dict]:
    """Minimal {search, replace} pairs turning `old` into `new`; each search is unique in `old`
    and the pairs never overlap, so `apply_edits(old, edits).source == new`."""
    if old == new:
        return []
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    if not old_lines:
        raise ValueError("diff_to_edits: the old file is empty; there is nothing to anchor a search to")
    ops = [op[1:] for op in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    while True:
        spans = [_widen_until_unique(old_lines, old, i1, i2) for i1, i2, _, _ in ops]
        merged = False
        for k in range(1, len(ops)):
            if spans[k][0] <= spans[k - 1][1]:   # touching or overlapping: one edit
                ops[k - 1:k + 1] = [(ops[k - 1][0], ops[k][1], ops[k - 1][2], ops[k][3])]
                merged = True
                break
        if not merged:
            break
    edits = []
    for (i1, i2, j1, j2), (s, e) in zip(ops, spans):
        # Context lines lie in equal regions, so they map 1:1 onto the new file.
        replace = "".join(old_lines[s:i1]) + "".join(new_lines[j1:j2]) + "".join(old_lines[i2:e])
        edits.append({"search": "".join(old_lines[s:e]), "replace": replace})
    return edits
