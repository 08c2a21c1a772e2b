#!/usr/bin/env bash
# From a fresh clone to the page in a browser, in one command: install alignsam with the service, write a
# few sample scenes, index them, and start `alignsam serve` on them.
#
#   scripts/quickstart.sh              # the bundled demo models: offline, on the synthetic sample scenes
#   scripts/quickstart.sh --published  # the published checkpoints (align-base, SAM vit_b), from the hub
#   scripts/quickstart.sh --cpu        # (install options are passed on to scripts/install.sh)
#   PORT=8080 IMAGES=~/photos scripts/quickstart.sh --published    # your own images instead of the samples
#
# Then open http://127.0.0.1:8000/ (Ctrl-C stops the server). Everything it writes goes to ./quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=demo
SAM_MODEL=demo
INSTALL=()
for arg in "$@"; do
    case "$arg" in
        --published) MODEL=kakaobrain/align-base; SAM_MODEL=facebook/sam-vit-base ;;
        *) INSTALL+=("$arg") ;;
    esac
done
PORT=${PORT:-8000}
WORK=quickstart

EXTRAS=serve,data scripts/install.sh "${INSTALL[@]}"
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"

if [ -z "${IMAGES:-}" ]; then
    IMAGES=$WORK/scenes
    # 24 scenes of coloured shapes (what the demo models know), with their captions
    [ -d "$IMAGES" ] || alignsam synth folder "$IMAGES" -n 24 --size 256 --seed 11 -q >/dev/null
fi
alignsam index "$WORK/index" --add "$IMAGES" --model "$MODEL" -q >/dev/null
echo "Serving http://127.0.0.1:$PORT/ with ALIGN '$MODEL', SAM '$SAM_MODEL' and $(find "$IMAGES" -type f | wc -l) files of $IMAGES searchable."
exec alignsam serve --model "$MODEL" --sam-model "$SAM_MODEL" --index "$WORK/index" --port "$PORT"
