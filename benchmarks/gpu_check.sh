#!/usr/bin/env bash
# The GPU check of issue 15 in one run: cuda tests, time to quality of the gpu recipe, sampling speed, the 9
# solution notebooks in normal mode; one table at the end (also $OUT/gpu_check.md). Options: see
# benchmarks/gpu_check.py (--only tests train sample notebooks, --budget S, --smoke). Run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
if [ -z "${LABKIT_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
  export LABKIT_DATA="$(cd ../shared/data/mnist && pwd)"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
exec "$PY" benchmarks/gpu_check.py --python "$PY" "$@"
