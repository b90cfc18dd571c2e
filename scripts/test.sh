#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine (CPU torch from the local wheel / PyPI, the
# project with its test extras) and run the whole test suite. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first: with 2.13.0 (CPU) installed, the project's "torch>=2.4" installs nothing more;
# asked for bare, pip would resolve torch to a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test,aws]'
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
