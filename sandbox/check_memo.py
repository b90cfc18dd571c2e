"""The acceptance memo: a draft that differs from an accepted file only in number literals gets the
same verdict, without a second full check.

Proposers check many drafts that differ from an accepted file only in numbers (the heuristic
proposer's knob edits: MATRIX_LR = 0.04 -> 0.05). The memo keys an accepted file by its token
stream with the numbers blanked and answers a repeat in a few milliseconds. Everything else in the
stream stays exact, comments and blank lines included (a comment is where a coding declaration
lives, and a line break inside one is where the interpreter and a tokenizer may disagree).

It is sound only while NO RULE READS THE VALUE OF A NUMBER: rules read names, strings, call
shapes and structure, and where a number stands in a place that matters (a file descriptor,
`weights_only=1`, `num_workers=0`) the rule rejects it whatever its value. A rule that one day
accepts some numbers and rejects others must drop the memo (tests/test_check.py holds a test for
each rule that sees a number). Only acceptances are remembered.
"""
from __future__ import annotations

import io
import threading
import tokenize
from collections import OrderedDict

MEMO_SIZE = 512
MAX_NUMBER_CHARS = 40          # a number too long to be a knob (4,300+ digits fail to compile)

_accepted: OrderedDict[tuple, None] = OrderedDict()
_lock = threading.Lock()       # proposers may check drafts from several threads
_hits = 0


def shape(source: str, policy: object) -> tuple | None:
    """The number-blind token stream of `source` under `policy`; None when it does not tokenize or
    holds a number too long to trust."""
    out: list = [policy]
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NUMBER:
                if len(token.string) > MAX_NUMBER_CHARS:
                    return None
                out.append(tokenize.NUMBER)
            else:
                out.append((token.type, token.string))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    return tuple(out)


def lookup(key: tuple) -> bool:
    global _hits
    with _lock:
        if key not in _accepted:
            return False
        _accepted.move_to_end(key)
        _hits += 1
        return True


def remember(key: tuple) -> None:
    with _lock:
        _accepted[key] = None
        _accepted.move_to_end(key)
        while len(_accepted) > MEMO_SIZE:
            _accepted.popitem(last=False)


def clear() -> None:
    global _hits
    with _lock:
        _accepted.clear()
        _hits = 0


def info() -> dict[str, int]:
    with _lock:
        return {"size": len(_accepted), "hits": _hits}
