#!/usr/bin/env bash
# Quick start, part 2: a new virtual environment (.venv-test, made anew on every run, so what passes here
# passes on a new machine) with exactly the versions in requirements.lock, Debian chromium for the browser
# tests, the front-end files from npm, then every test. Arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FEATUREFLOW_TEST_VENV:-.venv-test}
start=$(date +%s)
rm -rf "$VENV"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q -c requirements.lock torch          # first: the CPU build named in the lock
python -m pip install -q -c requirements.lock -e ".[pipeline,test,ray]"
npm --prefix featureflow/explorer ci --no-audit --no-fund
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null
fi
echo "test.sh: fresh venv $VENV ready in $(( $(date +%s) - start )) s"
python -m pytest -q "$@"
