#!/usr/bin/env bash
# The main job on the embedded default, on a fresh machine: local CPU slots, offline data built
# from Python's own standard library, the LLM proposer when ANTHROPIC_API_KEY is set, else the
# seeded heuristic proposer. Extra arguments go to `autoresearch autopilot`.
# The local runner trains one candidate per core (one compute thread each, pinned), so two cores
# train two candidates at once; the cpu preset's budget is CPU time, so a busy machine makes the
# demo slower but does not change what a candidate computes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e .
.venv/bin/autoresearch prepare --preset cpu
.venv/bin/autoresearch autopilot --run "${RUN:-demo}" --preset cpu "$@"
.venv/bin/autoresearch report --run "${RUN:-demo}"
