"""A candidate's folder: its train.py, the project's pinned prepare.py, the harness bundle, metadata.

The same folder runs locally (LocalRunner) and is uploaded as the SageMaker source dir, so it must
be self-contained: the harness bundle (harness.py and its stdlib-only siblings, HARNESS_FILES) is
copied next to prepare.py; requirements.txt lists what prepare.py and train.py import at run time
(torch excluded: it comes from the image / the local venv).

The folder is never where train.py runs: each attempt gets a fresh scratch folder with a copy of
train.py (see harness.py), so nothing an attempt writes can meet a later one.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

SANDBOX_DIR = Path(__file__).resolve().parent
HARNESS_SOURCE = SANDBOX_DIR / "harness.py"
# harness.py's siblings that ship with it (kept in sync with harness.HARNESS_FILES by a test)
HARNESS_FILES = ("harness.py", "bootstrap.py", "channel.py", "isolation.py", "statuses.py", "presets.py")

# Import name -> PyPI name where they differ.
_DIST_NAMES = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow", "cv2": "opencv-python"}
# Never listed: torch (and its namespaces) comes from the image; these are the project's own files.
_NOT_REQUIREMENTS = {"torch", "torchvision", "triton", "prepare", "train", "__future__",
                     *(name[:-3] for name in HARNESS_FILES)}


# requirements.txt is what the SageMaker training toolkit pip-installs at every job start (and
# every spot restart). The PyTorch DLC already ships numpy (a pin would replace the DLC's build);
# prepare.py's download and tokenizer-training imports never run in a job; what is left is named
# in ranges (pyproject's lower bounds), so pip keeps what the image has when it fits.
_PROVIDED_BY_IMAGE = {"numpy"}
_PREPARE_TIME_ONLY = {"requests", "rich", "rustbpe"}
_JOB_RANGES = {"pyarrow": ">=15", "tiktoken": ">=0.7", "kernels": ">=0.4"}


class WorkspaceError(ValueError):
    """A workspace that cannot be built; the message says which file and why."""


def _write_if_changed(path: Path, data: bytes) -> None:
    """Atomic write that leaves an identical file untouched (idempotent rebuilds keep mtimes)."""
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def runtime_imports(*sources: str) -> list[str]:
    """Top-level third-party module names imported anywhere in the given Python sources."""
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names)
    return sorted(n for n in names if n not in stdlib and n not in _NOT_REQUIREMENTS)


def requirements_for(*sources: str) -> str:
    """requirements.txt text: the minimal set a job installs (see _JOB_RANGES), each import mapped
    to its distribution; an import we do not know is bounded below by the version installed here."""
    lines = []
    for module in runtime_imports(*sources):
        if module in _PROVIDED_BY_IMAGE or module in _PREPARE_TIME_ONLY:
            continue
        dist = _DIST_NAMES.get(module, module)
        if dist in _JOB_RANGES:
            lines.append(f"{dist}{_JOB_RANGES[dist]}")
            continue
        try:
            lines.append(f"{dist}>={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(dist)
    return "".join(f"{line}\n" for line in lines)


def build_workspace(dest: Path, train_source: str, project_dir: Path, meta: dict) -> Path:
    """Create (or refresh) the workspace at `dest` and return its resolved path.

    Files: train.py (the candidate), prepare.py (copied from project_dir), the harness bundle
    (HARNESS_FILES), requirements.txt, candidate.json (`meta` plus the train.py sha256).
    """
    dest = Path(dest).resolve()
    project_dir = Path(project_dir).resolve()
    prepare = project_dir / "prepare.py"
    if not prepare.is_file():
        raise WorkspaceError(f"{prepare} not found: every workspace needs the project's pinned "
                             f"prepare.py (is {project_dir} the project root?)")
    missing = [name for name in HARNESS_FILES if not (SANDBOX_DIR / name).is_file()]
    if missing:
        raise WorkspaceError(f"{SANDBOX_DIR / missing[0]} not found: the sandbox package is incomplete")
    try:
        compile(train_source, "train.py", "exec")
    except SyntaxError as exc:
        raise WorkspaceError(f"candidate train.py does not parse: line {exc.lineno}: {exc.msg}") from None
    prepare_source = prepare.read_text()
    try:
        json_meta = json.dumps({**meta, "train_sha256": hashlib.sha256(train_source.encode()).hexdigest()},
                               indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(f"candidate metadata is not JSON-serialisable: {exc}") from None

    dest.mkdir(parents=True, exist_ok=True)
    _write_if_changed(dest / "prepare.py", prepare_source.encode())
    for name in HARNESS_FILES:
        _write_if_changed(dest / name, (SANDBOX_DIR / name).read_bytes())
    _write_if_changed(dest / "requirements.txt", requirements_for(prepare_source, train_source).encode())
    _write_if_changed(dest / "candidate.json", (json_meta + "\n").encode())
    # train.py last: a folder with a train.py is a complete workspace
    _write_if_changed(dest / "train.py", train_source.encode())
    return dest
