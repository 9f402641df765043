"""Build hook: the wheel carries the explorer's npm-provided front-end files (htmx, Swagger UI, ReDoc).

`build_py` runs `npm ci` on featureflow/explorer/package.json + package-lock.json (exact versions, integrity
hashes) in a temporary folder, so they come from the npm registry (or npm's cache) on every build and never from
the repository or a checkout's node_modules, and copies the files the explorer serves into
featureflow/explorer/static/vendor/ inside the build. An editable install (`pip install -e .`) skips this: a
source checkout serves them from featureflow/explorer/node_modules (`npm --prefix featureflow/explorer ci`).
plotly.js is not fetched: it ships inside the plotly Python package, a dependency.
Everything else (metadata, dependencies, package data) is in pyproject.toml.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXPLORER = Path(__file__).resolve().parent / "featureflow" / "explorer"
# The explorer's vendor files: served name -> path inside node_modules. Read from the package itself, so the
# build and the app agree on one list (featureflow/explorer/vendor.py).
NPM_FILES = json.loads((EXPLORER / "vendor.json").read_text())


def fetch_vendor(dest: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("building featureflow needs npm (Node.js) to fetch the explorer's htmx, Swagger UI and "
                         "ReDoc from the npm registry: install Node.js (e.g. `apt-get install npm`)")
    with tempfile.TemporaryDirectory(prefix="featureflow-npm-") as tmp:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(EXPLORER / name, tmp)
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline",
                        "--loglevel=error"], cwd=tmp, check=True)
        dest.mkdir(parents=True, exist_ok=True)
        for name, rel in NPM_FILES.items():
            shutil.copyfile(Path(tmp) / "node_modules" / rel, dest / name)


class BuildPyWithVendor(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False) and not self.dry_run:
            fetch_vendor(Path(self.build_lib) / "featureflow" / "explorer" / "static" / "vendor")


setup(cmdclass={"build_py": BuildPyWithVendor})
