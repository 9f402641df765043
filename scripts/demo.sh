#!/usr/bin/env bash
# Quick start, part 1: install featureflow, run the demo pipeline (about 10 minutes on 2 cores), then
# serve the explorer on it at http://127.0.0.1:8000 (HOST / PORT override; CONFIG picks another run).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/demo.yaml}
python -m pip install -q torch==2.13.0          # first and pinned: the local CPU build, no CUDA wheels
python -m pip install -q -e .
npm --prefix frontend ci --no-audit --no-fund   # htmx from npm (plotly.js ships in the plotly package)
featureflow run --config "$CONFIG"
featureflow report --db "data/$(python -c "import yaml,sys; print(yaml.safe_load(open('$CONFIG'))['name'])").duckdb"
exec featureflow serve --db "data/$(python -c "import yaml; print(yaml.safe_load(open('$CONFIG'))['name'])").duckdb" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
