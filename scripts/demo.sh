#!/usr/bin/env bash
# Quick start, part 1: install featureflow (exact versions from requirements.lock, into .venv, made once and
# reused), run the demo pipeline (about 5 minutes on 2 idle cores), then serve the explorer on it at
# http://127.0.0.1:8000 (HOST / PORT override; CONFIG picks another run).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/demo.yaml}
VENV=${FEATUREFLOW_VENV:-.venv}
if [ "$VENV" != system ]; then   # FEATUREFLOW_VENV=system installs into the current Python (the Docker image)
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  . "$VENV/bin/activate"
fi
python -m pip install -q -c requirements.lock torch          # first: the CPU build named in the lock
python -m pip install -q -c requirements.lock -e ".[pipeline]"
npm --prefix featureflow/explorer ci --no-audit --no-fund   # htmx, Swagger UI, ReDoc from npm (plotly.js ships in the plotly package)
featureflow run --config "$CONFIG"
DB="data/$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$CONFIG").duckdb"
featureflow report --db "$DB"
exec featureflow serve --db "$DB" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
