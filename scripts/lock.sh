#!/usr/bin/env bash
# Regenerate requirements.lock, the exact versions the README's commands, the Dockerfile and CI install.
#   bash scripts/lock.sh                              # re-resolve, keeping every locked version that still fits
#   bash scripts/lock.sh --upgrade-package pytest     # move one package (and what it needs) to its newest release
#   bash scripts/lock.sh --upgrade                    # move everything to the newest releases
# Inputs: pyproject.toml (dependencies and every extra) and requirements.in (torch at the CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
# /opt/wheels holds the local CPU build of torch on this kind of machine (its version carries "+cpu").
links=(); [ -d /opt/wheels ] && links=(--find-links /opt/wheels --no-emit-find-links)
uv pip compile pyproject.toml requirements.in --all-extras --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 "${links[@]}" \
  --custom-compile-command "bash scripts/lock.sh" -o requirements.lock "$@"
