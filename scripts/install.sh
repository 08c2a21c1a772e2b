#!/usr/bin/env bash
# Install alignsam into a virtual environment, torch first so that the build you want is the one installed.
#
#   scripts/install.sh                  # .venv, torch 2.13.0 as pip finds it, then alignsam with its extras
#   scripts/install.sh --cpu            # torch's CPU build from download.pytorch.org (no CUDA libraries)
#   scripts/install.sh --cuda 12.8      # torch's CUDA 12.8 build from download.pytorch.org
#   EXTRAS=test,dev scripts/install.sh  # the extras to install (default: all)
#   VENV=.ci-venv scripts/install.sh    # another environment folder
#
# Plain `pip install torch==2.13.0` takes PyPI's build: CUDA on Linux x86_64 (several GB; it runs on a CPU
# too), CPU elsewhere; on machines whose pip is configured with a local torch file, that file.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-all}
TORCH_INDEX=${TORCH_INDEX:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) TORCH_INDEX=https://download.pytorch.org/whl/cpu ;;
        --cuda) shift; TORCH_INDEX=https://download.pytorch.org/whl/cu${1//./} ;;
        *) echo "install.sh: unknown option $1 (--cpu, --cuda VERSION)" >&2; exit 2 ;;
    esac
    shift
done

[ -d "$VENV" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
if [ -n "$TORCH_INDEX" ]; then
    python -m pip install --quiet torch==2.13.0 --index-url "$TORCH_INDEX"
else
    python -m pip install --quiet torch==2.13.0
fi
python -m pip install --quiet -e ".[$EXTRAS]"
echo "alignsam installed in $VENV (torch $(python -c 'import torch; print(torch.__version__)'))"
