#!/usr/bin/env bash
# Quick start, part 2: install test dependencies (Debian chromium for the browser tests) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
npm --prefix frontend ci --no-audit --no-fund
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null
fi
python -m pytest -q "$@"
