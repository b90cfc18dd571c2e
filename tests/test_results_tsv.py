"""results.tsv rendered from a real memory file: upstream's columns and formats, our extras."""
from __future__ import annotations

import csv

import pytest

from agent.memory import Memory
from agent.results_tsv import COLUMNS, UPSTREAM_COLUMNS, read_results_tsv, write_results_tsv


def ok(val_bpb, vram=2048.0, **extra):
    return {"status": "ok", "val_bpb": val_bpb, "peak_vram_mb": vram, "training_seconds": 4.1,
            "num_steps": 12, "failure_reason": None, **extra}


def crash(reason="train.py exited 1: FAIL (loss is NaN)"):
    return {"status": "crash", "val_bpb": None, "peak_vram_mb": None, "failure_reason": reason}


def run_exec(mem, cid, gen, kind, result=None, ws="ws"):
    eid = mem.add_execution(candidate_id=cid, generation=gen, kind=kind, backend="local", preset="micro",
                            workspace=f"/tmp/{ws}")
    mem.mark_started(eid, job_id="local:1", started_at=1.0)
    if result is not None:
        mem.finish_execution(eid, result=result)
    return eid


@pytest.fixture
def mem(tmp_path):
    m = Memory.open(tmp_path / "runs" / "t")
    m.ensure_run("t", "micro", "local", "heuristic", {}, str(tmp_path))
    yield m
    m.close()


def populate(mem):
    base = mem.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint="f" * 64,
                             source="x", check_status="accepted", origin="baseline")
    run_exec(mem, base, 0, "baseline", ok(1.100000, 1500.0))
    run_exec(mem, base, 0, "baseline", ok(1.102000, 1500.0))
    mem.set_state("incumbent", base)
    good = mem.add_candidate(generation=1, strategy="moderate", title="lower\tmatrix lr\nto 0.03",
                             fingerprint="a" * 64, source="y", check_status="accepted", parents=[base])
    bad = mem.add_candidate(generation=1, strategy="aggressive", title="huge lr", fingerprint="b" * 64,
                            source="z", check_status="accepted", parents=[base])
    meh = mem.add_candidate(generation=1, strategy="conservative", title="tiny tweak", fingerprint="c" * 64,
                            source="w", check_status="accepted", parents=[base])
    mem.add_candidate(generation=1, strategy="moderate", title="rejected one", fingerprint="",
                      source=None, check_status="rejected", rule="edit-apply")
    run_exec(mem, good, 1, "candidate", ok(1.050000, 1536.0))
    run_exec(mem, bad, 1, "candidate", crash())
    killed = run_exec(mem, meh, 1, "candidate", {"status": "killed", "failure_reason": "Ctrl-C"})
    lost = run_exec(mem, meh, 1, "candidate")
    mem.mark_lost(lost, "orchestrator died")
    run_exec(mem, meh, 1, "candidate", ok(1.099000))
    run_exec(mem, base, 1, "control", ok(1.101000, 1500.0))
    run_exec(mem, good, 1, "confirmation", ok(1.052000, 1536.0))
    run_exec(mem, meh, 1, "candidate")          # still running: not a result yet
    mem.record_decision(good, verdict="keep", delta=0.0500, threshold=0.004, reason="r", generation=1)
    mem.record_decision(meh, verdict="noise", delta=0.0020, threshold=0.004, reason="r", generation=1)
    mem.set_state("incumbent", good)
    return base, good, bad, meh, killed


def test_columns_rows_and_upstream_formats(mem, tmp_path):
    base, good, bad, meh, killed = populate(mem)
    path = write_results_tsv(mem, tmp_path / "runs" / "t" / "results.tsv", {base: "1234567890abcdef"})
    text = path.read_text()
    header = text.splitlines()[0].split("\t")
    assert tuple(header[:5]) == UPSTREAM_COLUMNS == ("commit", "val_bpb", "memory_gb", "status", "description")
    assert tuple(header) == COLUMNS
    for name in ("generation", "candidate", "strategy", "execution", "kind"):
        assert name in header
    rows = read_results_tsv(path)
    # finished results only: 2 baseline + good + bad(crash) + meh(ok) + control + confirmation
    assert [r["candidate"] for r in rows] == [base, base, good, bad, meh, base, good]
    assert all(len(line.split("\t")) == len(COLUMNS) for line in text.splitlines())
    b1, b2, g, c, m, ctl, conf = rows
    assert (b1["status"], b1["val_bpb"], b1["memory_gb"], b1["description"]) == ("keep", "1.100000", "1.5", "baseline")
    assert b1["commit"] == "1234567"               # git short sha when the candidate was committed
    assert g["commit"] == "a" * 8                  # else the short fingerprint
    assert (g["status"], g["val_bpb"], g["memory_gb"], g["verdict"]) == ("keep", "1.050000", "1.5", "keep")
    assert g["description"] == "lower matrix lr to 0.03"     # no tab/newline can break the table
    assert g["delta"] == "+0.050000"
    assert (c["status"], c["val_bpb"], c["memory_gb"]) == ("crash", "0.000000", "0.0")
    assert "FAIL" in c["failure_reason"]
    assert (m["status"], m["verdict"]) == ("discard", "noise")
    assert (ctl["status"], ctl["kind"]) == ("discard", "control")
    assert ctl["description"] == f"control: re-run of incumbent {base}"
    assert conf["status"] == "keep" and conf["description"].startswith(f"confirmation: re-run of {good}")
    assert killed not in {r["execution"] for r in rows}
    assert not list(path.parent.glob(".results.tsv*"))   # atomic write left no temp file


def test_upstream_style_analysis_reads_it(mem, tmp_path):
    """What upstream's analysis notebook does, by column name, with the csv module."""
    populate(mem)
    path = write_results_tsv(mem, tmp_path / "results.tsv")
    with open(path, newline="") as fh:
        df = list(csv.DictReader(fh, delimiter="\t"))
    statuses = [r["status"].strip().upper() for r in df]
    assert statuses.count("KEEP") == 4 and statuses.count("CRASH") == 1 and statuses.count("DISCARD") == 2
    baseline_bpb = float(df[0]["val_bpb"])
    kept = [r for r in df if r["status"] == "keep"]
    best = min(float(r["val_bpb"]) for r in kept)
    assert baseline_bpb == 1.1 and best == 1.05
    assert all(float(r["memory_gb"]) >= 0 for r in df)


def test_rendering_is_a_pure_function_of_memory(mem, tmp_path):
    populate(mem)
    p1 = write_results_tsv(mem, tmp_path / "a.tsv")
    p2 = write_results_tsv(mem, tmp_path / "b.tsv")
    assert p1.read_text() == p2.read_text()
    # a resumed orchestrator rendering again never duplicates rows
    write_results_tsv(mem, tmp_path / "a.tsv")
    assert p1.read_text() == p2.read_text()


def test_empty_run_has_just_the_header(mem, tmp_path):
    path = write_results_tsv(mem, tmp_path / "r.tsv")
    assert path.read_text() == "\t".join(COLUMNS) + "\n"
    assert read_results_tsv(path) == []
