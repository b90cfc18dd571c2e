"""The integrity checker's interface: verdicts, lines, the command line, the baseline policy, the
acceptance memo, and the reading of the file as Python reads it. The adversarial tables (cheats
and their legitimate twins, by class) are in tests/check_cases.py, run by test_check_adversarial.py."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import libcst as cst
import pytest

import sandbox.check as check
from sandbox.check import RULES, Violation, check_command, check_source, clear_memo, memo_info
from tests.check_cases import BASELINES, with_os_import

ROOT = Path(__file__).resolve().parents[1]
BASELINE = BASELINES["train.py"]
BASELINE_V2 = BASELINES["train_v2.py"]
PREPARE_IMPORT = re.search(r"^from prepare import .*$", BASELINE, re.M).group(0)


def after_imports(code: str, source: str = BASELINE) -> str:
    """The baseline with `code` right after its prepare import (module level)."""
    line = re.search(r"^from prepare import .*$", source, re.M).group(0)
    return with_os_import(source.replace(line, line + "\n" + code.strip("\n") + "\n", 1))


def in_main(code: str, source: str = BASELINE) -> str:
    body = "".join(f"    {line}\n" for line in code.strip("\n").splitlines())
    return with_os_import(source.replace("def main():\n", "def main():\n" + body, 1))


def line_of(source: str, text: str) -> int:
    return source.splitlines().index(text) + 1


def rules(source: str) -> set[str]:
    return {v.rule for v in check_source(source, BASELINE)}


# ============================================================================ the baselines

@pytest.mark.parametrize("name", sorted(BASELINES))
def test_both_shapes_of_the_baseline_are_accepted_under_every_policy(name):
    source = BASELINES[name]
    assert check_source(source) == []
    for policy in BASELINES.values():
        assert check_source(source, policy) == []


def test_every_rule_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The rules a candidate must pass", 1)[1].split("\n### ", 1)[0]
    for rule in RULES:
        assert f"`{rule}`" in section, f"README's rule list does not mention {rule}"


# ============================================================================ lines and messages

def test_a_violation_names_the_line_of_its_statement():
    source = after_imports("x = 1\nTIME_BUDGET = 5")
    [v] = check_source(source, BASELINE)
    assert (v.rule, v.line) == ("prepare-rebind", line_of(source, "TIME_BUDGET = 5"))
    assert str(v) == f"REJECTED prepare-rebind: {v.message} (line {v.line})"


def test_lines_inside_compound_and_multi_line_statements():
    source = in_main("if True:\n    for i in range(2):\n        x = 1; os.system('ls')\n"
                     "torch.save({},\n           '/tmp/x')")
    found = {v.rule: v.line for v in check_source(source, BASELINE)}
    assert found["process-network"] == line_of(source, "            x = 1; os.system('ls')")
    assert found["file-write"] == line_of(source, "    torch.save({},")      # the statement's first line


def test_every_violation_has_a_line_even_whole_file_ones():
    no_eval = BASELINE.replace("val_bpb = evaluate_bpb(model, tokenizer, device_batch_size)", "val_bpb = 0.9")
    [v] = check_source(no_eval, BASELINE)
    assert v.rule == "evaluation" and v.line >= 1
    for source in ("# coding: latin-1\n" + BASELINE, BASELINE.replace("SEED = 42", "SEED = '\ud800'")):
        [v] = check_source(source, BASELINE)
        assert v.rule == "encoding" and v.line >= 1


def test_all_violations_are_reported_in_line_order():
    source = after_imports("import subprocess\nTIME_BUDGET = 1\nos.system('x')")
    found = check_source(source, BASELINE)
    assert [v.rule for v in found] == ["import-not-allowed", "prepare-rebind", "process-network"]
    assert [v.line for v in found] == sorted(v.line for v in found)


def test_messages_quote_the_candidates_own_text():
    source = in_main('open(os.path.join("out",\n        "..", "..", "x"), "w")')
    [v] = check_source(source, BASELINE)
    assert v.rule == "file-write" and 'os.path.join("out", "..", "..", "x")' in v.message


def test_a_disguised_name_is_reported_as_the_name_python_sees():
    [v] = check_source(after_imports("\uff34\uff29\uff2d\uff25_BUDGET = 600"), BASELINE)
    assert v.rule == "prepare-rebind" and "TIME_BUDGET" in v.message


def test_syntax_errors_are_the_interpreters():
    source = BASELINE + "\ndef broken(:\n"
    [v] = check_source(source)
    assert v.rule == "syntax" and v.line == source.count("\n")
    [v] = check_source(in_main("a, *b, *c = range(5)"))        # libcst parses it, the compiler refuses it
    assert v.rule == "syntax" and "starred" in v.message


def test_long_and_deep_expressions_do_not_break_the_checker():
    long_concat = "BANNER = " + " ".join(['"ab"'] * 3000)        # libcst nests these one level per piece
    long_chain = "TOTAL = " + " + ".join(["SEED"] * 600)           # the interpreter compiles it
    assert check_source(after_imports(long_concat + "\n" + long_chain), BASELINE) == []
    too_deep = "x = " + "-" * 5000 + "1"                             # the interpreter gives up
    [v] = check_source(after_imports(too_deep), BASELINE)
    assert v.rule == "syntax"


# ============================================================================ the command line

def test_check_command_prints_verdicts(tmp_path, capsys):
    good = tmp_path / "good.py"
    good.write_text(BASELINE)
    assert check_command(good) == 0
    assert capsys.readouterr().out.strip() == "ACCEPTED"
    bad = tmp_path / "bad.py"
    bad.write_text(after_imports("TIME_BUDGET = 900\nimport socket"))
    assert check_command(bad) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(re.match(r"REJECTED [a-z-]+: .* \(line \d+\)$", line) for line in out)
    assert check_command(tmp_path / "missing.py") == 1


def test_check_command_decodes_the_file_as_python_would(tmp_path, capsys):
    declared = tmp_path / "declared.py"
    declared.write_bytes("# -*- coding: latin-1 -*-\n".encode() + BASELINE.encode("latin-1", "replace"))
    assert check_command(declared) == 1
    assert capsys.readouterr().out.startswith("REJECTED encoding:")
    garbage = tmp_path / "garbage.py"
    garbage.write_bytes(BASELINE.encode() + b"\n# \xff\xfe\n")
    assert check_command(garbage) == 1
    assert capsys.readouterr().out.startswith("REJECTED encoding:")
    bom = tmp_path / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbf" + BASELINE.encode())
    assert check_command(bom) == 0


def test_module_runs_as_a_script(tmp_path):
    bad = tmp_path / "train.py"
    bad.write_text(after_imports("os.system('ls')"))
    proc = subprocess.run([sys.executable, "-m", "sandbox.check", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout.startswith("REJECTED process-network:")


# ============================================================================ the baseline's policy

def test_the_baseline_widens_imports_prepare_names_and_restricted_modules():
    baseline = ("import os, sys, gc\nimport pyarrow\nfrom prepare import TIME_BUDGET, evaluate_bpb\n"
                "print(sys.flags, gc.get_debug())\nevaluate_bpb(None, None, 1)\n")
    candidate = baseline + "import pyarrow.parquet\nprint(sys.flags.optimize, gc.get_debug())\n"
    assert check_source(candidate, baseline) == []
    assert {"import-not-allowed", "dynamic-access"} <= {v.rule for v in check_source(candidate)}
    found = check_source(baseline + "from prepare import get_token_bytes\n", baseline)
    assert [v.rule for v in found] == ["prepare-names"] and "get_token_bytes" in found[0].message


def test_a_loop_variable_is_not_the_module_an_import_elsewhere_binds():
    source = in_main("import prepare as p") + "\n\ndef norms(params):\n    return [p.norm() for p in params]\n"
    found = check_source(source, BASELINE)
    assert [v.rule for v in found] == ["prepare-names"]        # the import, not the loop variable


# ============================================================================ reading the file as Python does

def test_the_checker_rejects_a_file_its_parser_reads_differently(monkeypatch):
    """If libcst ever read a file differently from CPython (a parser bug, an unusual character),
    the identifiers the two see differ, and the file is rejected instead of judged."""
    real = cst.parse_module
    monkeypatch.setattr(check.cst, "parse_module",
                        lambda text: real(text.replace("import subprocess", "import json")))
    [v] = check_source(after_imports("import subprocess"), BASELINE)
    assert v.rule == "encoding" and "'subprocess'" in v.message


@pytest.mark.parametrize("module", ["ast", "dataclasses", "argparse", "typing", "json/decoder", "email/_header_value_parser",
                                    "asyncio/base_events", "idlelib/pyshell"])
def test_the_checkers_reading_agrees_with_pythons_on_real_code(module):
    """Honest code never trips the comparison: standard-library files (all of the standard
    library agrees; benchmarks/bench_check.py --corpus runs the whole of it)."""
    import os
    from sandbox.check_policy import baseline_policy
    from sandbox.check_rules import Walker
    from sandbox.check_text import disagreement, interpreter_view
    path = Path(os.__file__).parent / f"{module}.py"
    data = path.read_bytes()
    witness = interpreter_view(data, str(path))
    tree = cst.parse_module(data.decode())
    walker = Walker(tree, baseline_policy(None))
    walker.walk(tree)
    assert disagreement(walker.names, witness) is None


# ============================================================================ the acceptance memo

def test_a_number_only_variant_of_an_accepted_file_is_answered_from_the_memo():
    clear_memo()
    assert check_source(BASELINE, BASELINE) == []
    assert memo_info() == {"size": 1, "hits": 0}
    knobs = BASELINE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05").replace(
        '"micro": 2}[PRESET]  # number', '"micro": 3}[PRESET]  # number')
    assert check_source(knobs, BASELINE) == []
    assert memo_info() == {"size": 1, "hits": 1}
    # a comment is not a number: it is where a coding declaration lives, so it is checked in full
    commented = BASELINE.replace("# Knobs: everything", "# Knobs (edited): everything")
    assert check_source(commented, BASELINE) == [] and memo_info()["hits"] == 1
    assert [v.rule for v in check_source("# coding: unicode_escape\n" + BASELINE, BASELINE)] == ["encoding"]
    assert "val-split" in rules(BASELINE.replace('"train", device=device)', '"val", device=device)'))
    # the policy is part of the key: the same file under another baseline is checked again
    assert check_source(BASELINE) == []
    assert memo_info() == {"size": 3, "hits": 1}


def test_the_memo_never_hides_a_number_the_interpreter_rejects():
    clear_memo()
    assert check_source(BASELINE, BASELINE) == []
    huge = BASELINE.replace("SEED = 42\n", f"SEED = {'9' * 5000}\n")   # over the interpreter's int-literal limit
    assert [v.rule for v in check_source(huge, BASELINE)] == ["syntax"]


@pytest.mark.parametrize("template,rule", [
    ("m = torch.load('ckpt.pt', weights_only={n})", "unsafe-deserialisation"),
    ("import numpy as np\na = np.load('x.npy', allow_pickle={n})", "unsafe-deserialisation"),
    ("dl = torch.utils.data.DataLoader([1], num_workers={n})", "process-network"),
    ("os.write({n}, b'x')", "file-write"),
    ("f = open({n}, 'w')", "file-write"),
    ("data = os.read({n}, 8)", "dynamic-access"),
])
def test_no_rule_accepts_some_numbers_and_rejects_others(template, rule):
    """The memo answers number-only variants of an accepted file: sound only while no rule's
    verdict depends on a number's value. Where a number stands in a place that matters, every
    number is rejected."""
    for n in (0, 1, 2, 7):
        assert rule in rules(in_main(template.format(n=n))), (template, n)


def test_every_rule_has_a_description():
    assert all(isinstance(text, str) and text for text in RULES.values())
    assert Violation("syntax", "x", 3).__str__() == "REJECTED syntax: x (line 3)"
