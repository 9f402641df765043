#!/usr/bin/env bash
# Quick start, part 1: install featureflow, run the demo pipeline (about 5 minutes on 2 idle cores), then
# serve the explorer on it at http://127.0.0.1:8000 (HOST / PORT override; CONFIG picks another run).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/demo.yaml}
python -m pip install -q torch==2.13.0          # first and pinned: the local CPU build, no CUDA wheels
python -m pip install -q -e .
npm --prefix frontend ci --no-audit --no-fund   # htmx from npm (plotly.js ships in the plotly package)
featureflow run --config "$CONFIG"
DB="data/$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$CONFIG").duckdb"
featureflow report --db "$DB"
exec featureflow serve --db "$DB" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
