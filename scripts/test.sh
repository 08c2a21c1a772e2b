#!/usr/bin/env bash
# The test command CI runs (.ci/run): install the test extras (torch first), check style, types and the
# architecture's import contracts, then run the tests.
#
#   scripts/test.sh              # everything CI runs (about 20 minutes on 2 CPU cores)
#   scripts/test.sh --quick      # the quick tier: no full-size models, no load test (about 16 minutes)
#   scripts/test.sh --extended   # also the extended tier (the official notebooks on vit_b, ...; 4 minutes more)
#   VENV=.ci-venv scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MARKS=(-m "not extended")
[ "${1:-}" = "--quick" ] && MARKS=(-m "not slow and not load and not extended")
[ "${1:-}" = "--extended" ] && MARKS=()

EXTRAS=test,dev scripts/install.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
# Debian's Chromium for the page's browser tests (Playwright drives it; its own browser download is not
# reachable everywhere); without it those tests skip and say why.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"
fi

ruff check .
ruff format --check .
mypy
lint-imports  # the architecture's layers and forbidden imports (pyproject.toml, docs/architecture.md)
python -m pytest -q "${MARKS[@]}"
