"""Where the explorer's front-end libraries are: it serves them itself (never a CDN).

htmx, Swagger UI and ReDoc come from npm (`vendor.json`: served name -> path in node_modules, versions pinned by
package-lock.json). An installed wheel carries them in `static/vendor/` (fetched from the npm registry by the
build, see setup.py); a source checkout falls back to `node_modules/` (`npm --prefix featureflow/explorer ci`).
plotly.js ships inside the plotly Python package.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"  # served at /static; the favicon
PACKAGED = STATIC / "vendor"
NPM = HERE / "node_modules"
NPM_FILES: dict[str, str] = json.loads((HERE / "vendor.json").read_text())


def vendor_files() -> dict[str, Path]:
    """Served name -> the file: the packaged copy when there is one, else the checkout's node_modules."""
    import plotly

    files = {name: PACKAGED / name if (PACKAGED / name).is_file() else NPM / rel for name, rel in NPM_FILES.items()}
    files["plotly.min.js"] = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return files


VENDOR = vendor_files()  # what /vendor/{name} serves; `create_app` refuses to start when one is missing


def missing_message(missing: list[str]) -> str:
    return ("the explorer's front-end files are not installed: " + ", ".join(missing) +
            ". In a source checkout install them with `npm --prefix featureflow/explorer ci` (htmx, Swagger UI, "
            "ReDoc); a wheel built with `pip wheel .` carries them")
