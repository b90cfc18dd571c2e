"""Where a run's files live: the one place that knows the folder layout.

    <project>/<runs_dir>/<TAG>/
        memory.sqlite                      everything, written first (agent/memory.py)
        results.tsv                        rendered from memory (agent/results_tsv.py)
        report.md, progress.png            `autoresearch report`
        .lock                              who drives the run (agent/runlock.py)
        generations/gen_NNN/<folder>/      one workspace per execution slot: train.py, diff.patch,
                                           prepare.py, harness.py, run.log, result.json

An execution slot's folder is the candidate id for its first candidate (or baseline) run, and
`<candidate>-<suffix>-<n>` for every other run of the same code: `-control-1`, `-confirm-1`,
`-replay-2`, `-repeat-2` (baseline repeats), `-rerun-2`. A new attempt of a lost or killed run
re-uses its slot's folder (the runner writes each attempt under executions/<execution id>/).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.statuses import BASELINE, CANDIDATE, CONFIRMATION, CONTROL, REPLAY

DB_NAME = "memory.sqlite"
LOCK_NAME = ".lock"
RESULTS_TSV = "results.tsv"
FOLDER_SUFFIX = {CONTROL: "control", CONFIRMATION: "confirm", REPLAY: "replay", BASELINE: "repeat",
                 CANDIDATE: "rerun"}


def new_run_tag(runs_dir: Path, *, simulated: bool = False) -> str:
    """A fresh tag for a run started without --run: its start time (`sim-` first for a simulated
    one), never one that exists already."""
    base = ("sim-" if simulated else "") + time.strftime("%Y%m%d-%H%M%S")
    tag, n = base, 1
    while (Path(runs_dir) / tag).exists():
        n += 1
        tag = f"{base}-{n}"
    return tag


def slot_folder(candidate_id: str, kind: str, slot: int) -> str:
    if kind in (CANDIDATE, BASELINE) and slot == 1:
        return candidate_id
    return f"{candidate_id}-{FOLDER_SUFFIX[kind]}-{slot}"


@dataclass(frozen=True)
class RunLayout:
    project_dir: Path
    run_dir: Path

    @classmethod
    def of(cls, project_dir: Path, runs_dir: str, tag: str) -> "RunLayout":
        project_dir = Path(project_dir).resolve()
        return cls(project_dir, project_dir / runs_dir / tag)

    @property
    def memory(self) -> Path:
        return self.run_dir / DB_NAME

    @property
    def results_tsv(self) -> Path:
        return self.run_dir / RESULTS_TSV

    @property
    def report_md(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def progress_png(self) -> Path:
        return self.run_dir / "progress.png"

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK_NAME

    @property
    def train_py(self) -> Path:
        return self.project_dir / "train.py"

    @property
    def prepare_py(self) -> Path:
        return self.project_dir / "prepare.py"

    @property
    def program_md(self) -> Path:
        return self.project_dir / "program.md"

    def generation_dir(self, generation: int) -> Path:
        return self.run_dir / "generations" / f"gen_{generation:03d}"

    def workspace(self, generation: int, candidate_id: str, kind: str, slot: int) -> Path:
        return self.generation_dir(generation) / slot_folder(candidate_id, kind, slot)
