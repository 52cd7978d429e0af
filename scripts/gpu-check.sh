#!/usr/bin/env bash
# Every CUDA path of the engine on one GPU, in one table (docs/benchmarks.md, "GPU check"):
#
#   scripts/gpu-check.sh                  # on a machine with a GPU: all eight checks (meant to take < 8 minutes)
#   scripts/gpu-check.sh --device cpu     # the checks that need no GPU, at tiny sizes (under a minute)
#   scripts/gpu-check.sh --only a,b       # some of the checks (letters a-h, see `cnnbench gpu-check --help`)
#
# Needs the pinned install (`make venv`) and nothing else: where data/prepared/<dataset> is missing
# the checks use synthetic data of the same shape, and the table says so. Runs from the repository
# root (paths in the arguments are relative to it). Prints the table; writes it, a JSON of every
# figure and each check's log to results/gpu-check/ (table.md, gpu-check.json, logs/).
# Exit status 0 when every check passes; 1 when one fails, or when CUDA is not available here
# (one line that says why).
#
# VENV=path uses another virtualenv; VENV= (empty) the python on PATH, with this checkout's src/
# first on its module path (a machine with torch installed but no .venv).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV-.venv}
if [[ -n "$VENV" ]]; then
    if [[ ! -f "$VENV/bin/activate" ]]; then
        echo "gpu-check: no virtualenv at $VENV; run \`make venv\` first (or set VENV to one)" >&2
        exit 1
    fi
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    exec cnnbench gpu-check --out results/gpu-check "$@"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec python -m cnnbench.cli gpu-check --out results/gpu-check "$@"
