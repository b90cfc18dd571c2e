"""The integrity checker: what a candidate train.py may not do, judged on what Python will run.

`check_source(source, baseline_source=None)` returns every violation; `check_command(path)` is
`autoresearch check FILE` (prints ACCEPTED, or one `REJECTED <rule>: <message> (line N)` per
violation; exit 0 / 1). The rules and their ids are listed in RULES (sandbox/check_policy.py)
and in the README section "The rules a candidate must pass".

The checker keeps the experiment's rules: only train.py changes; prepare's constants, data,
clock and evaluation are fixed; nothing escapes the candidate's folder. A false rejection costs as
much as a miss, so every rule is about what the code does to the experiment, never about the
words it uses: any architecture, optimizer or schedule change, new functions and classes, any
torch API, a parameter named `compile`, `getattr(torch, "bfloat16")`, checkpoints written inside
its folder, its own environment knobs, threads, and the words "val"/"split"/"shard" all pass.

How a file is judged (each step in its own module):
1. sandbox/check_text.py: the bytes the workspace writes, decoded only if they are UTF-8 (any other
   coding declaration is an `encoding` rejection); the interpreter's own parse and compile of
   those bytes (the authority for `syntax`); libcst's tree with every identifier NFKC-normalised
   as Python binds it. The two readings are compared name by name: a name only one of them sees
   is an `encoding` rejection, so the rules never judge text Python would run differently.
2. sandbox/check_rules.py: one read-only walk over the normalised tree, applying the structural
   rules and recording scopes, bindings and sites; sandbox/check_judge.py judges the sites with
   the whole file known (which `open` is the builtin, what a name can hold, whose object is
   patched), with the file rules (sandbox/check_files.py) and the environment, loading and
   process rules (sandbox/check_calls.py) mixed in. sandbox/check_flow.py follows names to the
   expressions they can hold, sandbox/check_values.py evaluates strings and numbers,
   sandbox/check_paths.py says where a path lands. sandbox/check_policy.py holds every table.
3. here: the evaluation rule (evaluate_bpb reachable from code that runs), lines, and the memo
   for number-only drafts (sandbox/check_memo.py).

What a static check cannot see (stated so that nobody relies on it): a candidate runs arbitrary
Python in the same process as prepare's evaluation. The checker closes the direct and the known
indirect routes (reflection, computed names, aliases, monkeypatching, torch's extension points,
writes outside the folder); the runtime layer (prepare's probes, the harness's sandbox and its
authenticated record) is what makes a result trustworthy. See the README's threat model.

Lines: a violation is placed on the first line of the statement that holds it, taken from the
interpreter's own tree (statements correspond one to one); libcst's PositionProvider is the
fallback, as it costs about as much as the parse.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from sandbox import check_memo
from sandbox.check_judge import Judge
from sandbox.check_policy import RULES, Baseline, baseline_policy
from sandbox.check_rules import Finding, Walker
from sandbox.check_text import (TextProblem, Witness, coding_problem, disagreement, interpreter_view,
                                libcst_statements, needs_normalising, normalise_names, read_problems)

__all__ = ["RULES", "Violation", "check_source", "check_command", "clear_memo", "memo_info", "main"]

_RECURSION_LIMIT = 20_000


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"REJECTED {self.rule}: {self.message}{where}"


def check_source(source: str, baseline_source: str | None = None) -> list[Violation]:
    """Every violation in `source`, sorted by line; [] means the candidate is accepted.
    `baseline_source` (the fixed baseline train.py) widens the import, prepare-name and restricted-
    module policy to what it uses itself; without it the defaults apply."""
    baseline = baseline_policy(baseline_source)
    data, problems = read_problems(source)
    if problems:
        return [Violation(p.rule, p.message, p.line or 1) for p in problems]
    key = check_memo.shape(source, baseline)
    if key is not None and check_memo.lookup(key):
        return []
    found = _check_fully(source, data, baseline)
    if not found and key is not None:
        check_memo.remember(key)
    return found


def _check_fully(source: str, data: bytes, baseline: Baseline) -> list[Violation]:
    witness = interpreter_view(data)
    try:
        module = cst.parse_module(source)
    except Exception as exc:   # ParserSyntaxError, or libcst's own limits (recursion, encodings)
        if isinstance(witness, TextProblem):
            return [Violation(witness.rule, witness.message, witness.line or 1)]
        line = getattr(exc, "raw_line", None) or 1
        return [Violation("syntax", f"the checker's parser (libcst) cannot read this file: "
                          f"{getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}", line)]
    if isinstance(witness, TextProblem):
        return [Violation(witness.rule, witness.message, witness.line or 1)]
    limit = sys.getrecursionlimit()
    # The walk recurses a few frames per tree level: code the interpreter compiles (up to ~200
    # nested levels, long operator chains) can need more than the default limit of 1000.
    sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
    try:
        if needs_normalising(source):
            module = normalise_names(module)
        walker = Walker(module, baseline)
        walker.walk(module)
        mismatch = disagreement(walker.names, witness)
        if mismatch is not None:
            return [Violation(mismatch.rule, mismatch.message, mismatch.line or 1)]
        findings = walker.found + Judge(walker).run()
    except RecursionError:
        return [Violation("syntax", "the file is nested too deeply for the checker to read "
                          "(split long expressions or deep nesting)", 1)]
    finally:
        sys.setrecursionlimit(limit)
    found = _place(module, witness, findings) + _evaluation_violations(walker, module, witness)
    unique = dict.fromkeys(found)   # the same message on the same line once
    return sorted(unique, key=lambda v: (v.line or 10**9, v.rule, v.message))


# ---------------------------------------------------------------------------------------- evaluation

def _evaluation_violations(walker: Walker, module: cst.Module, witness: Witness) -> list[Violation]:
    """Is evaluate_bpb called from code that runs? Reachability follows names (plain calls, method
    calls, references) from module-level code into definitions of that name; it over-approximates,
    so it never rejects code that does evaluate. What is printed is not required: the harness takes
    the score from prepare's record, never from train.py's output."""
    evaluated = None in walker.evaluating
    frontier, seen = set(walker.refs[None]), set()
    while frontier and not evaluated:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        for definition in walker.definitions.get(name, ()):
            for scope in [definition, *walker.methods.get(definition, ())]:
                evaluated |= scope in walker.evaluating
                frontier |= walker.refs.get(scope, set()) - seen
    statements = [s for s, _ in walker.evaluate_calls if s is not None]
    lines = _lines(module, witness, statements)
    if evaluated:
        # prepare allows one evaluation per run: a second call (or one in a loop) fails the run
        repeated = [s for s, in_loop in walker.evaluate_calls if in_loop] + statements[1:]
        return [Violation("evaluation", "evaluate_bpb(...) may run once per run: call it from one place, "
                          "outside any loop", lines.get(id(s), 1)) for s in repeated[:1]]
    line = lines.get(id(statements[0]), 1) if statements else 1
    return [Violation("evaluation", "evaluate_bpb(...) is no longer called from code that runs; the score "
                      "must come from prepare's evaluation", line)]


# ---------------------------------------------------------------------------------------- lines

def _place(module: cst.Module, witness: Witness, findings: list[Finding]) -> list[Violation]:
    lines = _lines(module, witness, [f.statement for f in findings if f.statement is not None])
    return [Violation(f.rule, f.message, lines.get(id(f.statement), 1)) for f in findings]


def _lines(module: cst.Module, witness: Witness, statements: list[cst.CSTNode]) -> dict[int, int]:
    """First line of each statement, from the interpreter's tree (one to one with libcst's)."""
    if not statements:
        return {}
    ours = libcst_statements(module.body)
    if len(ours) == len(witness.statement_lines):
        return {id(node): line for node, line in zip(ours, witness.statement_lines)}
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    return {id(node): positions[node].start.line for node in statements if node in positions}


# ---------------------------------------------------------------------------------------- memo

def clear_memo() -> None:
    """Forget remembered acceptances (benchmarks measure the full check without it)."""
    check_memo.clear()


def memo_info() -> dict[str, int]:
    """How many accepted shapes are remembered, and how many checks they answered."""
    return check_memo.info()


# ---------------------------------------------------------------------------------------- command line

def read_candidate(file: Path) -> tuple[str | None, Violation | None]:
    """The text of a candidate file as Python would decode it, or why it cannot be read."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return None, Violation("syntax", f"cannot read {file}: {exc}", 1)
    problem = coding_problem(data)
    if problem is not None:
        return None, Violation(problem.rule, problem.message, problem.line or 1)
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, Violation("encoding", f"{file} is not valid UTF-8 (byte {exc.start}: {exc.reason})", line)


def check_command(path: str | Path, baseline: str | Path | None = None) -> int:
    """`autoresearch check FILE`: print ACCEPTED or the violations; return the exit code."""
    source, problem = read_candidate(Path(path))
    if problem is not None:
        print(problem)
        return 1
    baseline_source = Path(baseline).read_text(encoding="utf-8") if baseline else None
    violations = check_source(source, baseline_source)
    if not violations:
        print("ACCEPTED")
        return 0
    for v in violations:
        print(v)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 2):
        print("usage: python -m sandbox.check FILE [BASELINE]", file=sys.stderr)
        return 2
    return check_command(*args)


if __name__ == "__main__":
    raise SystemExit(main())
