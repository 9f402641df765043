"""One installable package and a light explorer install: what the base install imports, what the pipeline
commands say without the `pipeline` extra, and (slow) the wheel itself installed into a fresh venv without torch."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from synthetic_store import DOCS, PAGES

ROOT = Path(__file__).resolve().parent.parent
# What the pipeline extra brings; the explorer and the light commands must load none of it.
HEAVY = ("torch", "transformers", "sae_lens", "transformer_lens", "mergekit", "numba", "datasets", "sklearn",
         "tokenizers", "safetensors", "scipy", "tqdm", "openai")


def _modules_after(code: str, *args: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running `code` (sys.modules: the oracle)."""
    # os._exit after printing: the interpreter's teardown (a TestClient's app never shut down, DuckDB's threads)
    # once died with SIGABRT on busy cores, and teardown is not what this oracle reads
    script = code + "\nimport sys, json, os; print(json.dumps(sorted(sys.modules)), flush=True); os._exit(0)"
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_explorer_never_imports_torch_or_the_pipeline(synthetic_store):
    mods = _modules_after("import sys; from featureflow.explorer.app import create_app; "
                          "from fastapi.testclient import TestClient; c = TestClient(create_app(sys.argv[1])); "
                          "assert all(c.get(u).status_code == 200 for u in sys.argv[2:])",
                          str(synthetic_store.path), *PAGES)
    assert not {m.split(".")[0] for m in mods} & set(HEAVY)
    assert not [m for m in mods if m.startswith("featureflow.pipeline")]
    assert "featureflow.explorer.app" in mods  # it did run


def test_the_store_stage_does_not_import_the_runner():
    """The store build is a stage with explicit inputs (`StoreInputs`): importing it (and reading its inputs'
    key) loads no `featureflow.pipeline.runner`, so there is no import circle between the two."""
    mods = _modules_after("from featureflow.pipeline.store_stage import StoreInputs, build_store, inputs_key")
    assert "featureflow.pipeline.store_stage" in mods  # it did import
    assert "featureflow.pipeline.runner" not in mods


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every module `path` imports, anywhere in it (top level or inside a function), as (line, dotted name):
    `import a.b` gives a.b; `from a import b` gives a and a.b (b may be a module); relative imports resolved
    against the file's package; `importlib.import_module("a.b")` / `__import__("a.b")` with a literal name too."""
    import ast

    package = ".".join(path.relative_to(root).parts[:-1])  # a module's package (an __init__.py's: its own)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and \
                getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
            out.append((node.lineno, node.args[0].value))
    return out


def _offending(folders: tuple[str, ...], banned, root: Path = ROOT) -> list[str]:
    """`path:line: module` for every import of a module `banned(module)` in the .py files under featureflow/<folder>."""
    files = [f for d in folders for f in sorted((root / "featureflow" / d).rglob("*.py"))]
    assert len(files) > 3, files  # the walk found the package
    return [f"{f.relative_to(root)}:{line}: {name}" for f in files for line, name in _imports(f, root) if banned(name)]


def test_the_store_and_the_explorer_import_nothing_from_the_pipeline():
    """No import circle between featureflow/pipeline and featureflow/store: the store (the schema, its writers,
    the fate rule, summaries, export) and the explorer import no `featureflow.pipeline` module, anywhere in a
    file (a function-local import counts), and no library of the pipeline extra. The pipeline's store stage
    (`pipeline/store_stage.py`) reads the artefacts and writes through `store/writers.py`, never the reverse."""
    bad = _offending(("store", "explorer"), lambda m: m == "featureflow.pipeline" or
                     m.startswith("featureflow.pipeline.") or m.split(".")[0] in HEAVY)
    assert not bad, "\n".join(bad)


def test_the_pipeline_never_imports_the_explorer():
    """The other direction of the layering: the pipeline writes stores, the explorer reads them; no pipeline
    module imports the explorer."""
    bad = _offending(("pipeline",), lambda m: m == "featureflow.explorer" or m.startswith("featureflow.explorer."))
    assert not bad, "\n".join(bad)


def test_the_import_walk_sees_what_it_must(tmp_path):
    """The oracle of the two tests above, on a file written here: top-level, function-local, relative,
    `from featureflow import pipeline` and `import_module` imports of the pipeline are all found."""
    f = tmp_path / "featureflow" / "store" / "x.py"
    f.parent.mkdir(parents=True)
    f.write_text("import os\nfrom featureflow import pipeline\ndef g():\n    from ..pipeline.runner import Pipeline\n"
                 "    import featureflow.pipeline.stages\n    importlib.import_module('featureflow.pipeline.sae')\n"
                 "    from . import flows\n")
    got = _imports(f, root=tmp_path)
    assert sorted(got) == [(1, "os"), (2, "featureflow"), (2, "featureflow.pipeline"),
                           (4, "featureflow.pipeline.runner"), (4, "featureflow.pipeline.runner.Pipeline"),
                           (5, "featureflow.pipeline.stages"), (6, "featureflow.pipeline.sae"),
                           (7, "featureflow.store"), (7, "featureflow.store.flows")]


@pytest.mark.parametrize("argv", [["report"], ["export", "--format", "neuronpedia", "{tmp}/np"], ["serve-check"]])
def test_light_commands_import_no_torch(synthetic_store, tmp_path, argv):
    """`featureflow report`, `export` and `serve` (up to the point where uvicorn would listen) in a fresh
    interpreter: none of the pipeline extra's libraries is loaded."""
    db = str(synthetic_store.path)
    if argv == ["serve-check"]:  # serve builds the app in-process before it listens: do exactly that much
        code = ("import sys, uvicorn; uvicorn.run = lambda app, **kw: None; from featureflow.cli import main; "
                "assert main(['serve', '--db', sys.argv[1], '--workers', '1']) == 0")
        args = [db]
    else:
        code = "import sys; from featureflow.cli import main; assert main(sys.argv[1:]) == 0"
        args = [argv[0], "--db", db, *[a.format(tmp=tmp_path) for a in argv[1:]]]
    mods = _modules_after(code, *args)
    assert "featureflow.cli" in mods
    assert not {m.split(".")[0] for m in mods} & set(HEAVY), sorted({m.split(".")[0] for m in mods} & set(HEAVY))


@pytest.mark.parametrize("cmd", ["run", "validate", "gc"])
def test_pipeline_commands_without_the_extra_name_it(cmd, monkeypatch, capsys):
    """In a base install (here: torch and sklearn reported absent to the check) a pipeline command refuses in one
    line naming the extra, exit 2, before any stage runs."""
    from featureflow.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "sklearn") else real(name, *a))
    assert main([cmd, "--config", str(ROOT / "configs" / "tiny.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'featureflow[pipeline]'" in err[0] and "torch, sklearn" in err[0]
    assert err[0].startswith(f"featureflow: error: `featureflow {cmd}` needs the pipeline extra")


def test_vendor_files_come_from_the_package_else_node_modules(tmp_path, monkeypatch):
    import featureflow.explorer.vendor as vendor

    names = set(vendor.NPM_FILES) | {"plotly.min.js"}
    monkeypatch.setattr(vendor, "PACKAGED", tmp_path / "vendor")
    monkeypatch.setattr(vendor, "NPM", tmp_path / "node_modules")
    got = vendor.vendor_files()
    assert set(got) == names
    assert all(got[n] == tmp_path / "node_modules" / rel for n, rel in vendor.NPM_FILES.items())  # a checkout
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "htmx.min.js").write_text("x")
    got = vendor.vendor_files()
    assert got["htmx.min.js"] == tmp_path / "vendor" / "htmx.min.js"  # an installed wheel's copy first
    assert got["redoc.standalone.js"] == tmp_path / "node_modules" / vendor.NPM_FILES["redoc.standalone.js"]
    assert got["plotly.min.js"].is_file()  # from the plotly Python package


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_wheel_installs_alone_and_serves_every_page_without_torch(synthetic_store, tmp_path):
    """`pip wheel .` -> one top-level package with the npm files inside; installed alone in a fresh venv (base
    dependencies only, no torch) `featureflow serve` answers every page, /docs and the vendored scripts with 200,
    and `featureflow run` names the extra to install. Like scripts/test.sh it reaches the package registries: pip
    for the base dependencies, npm (from its cache when it has the files) for the front-end."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "-w", str(dist), "--no-deps", "--no-build-isolation", "-q"], cwd=ROOT,
                   check=True, timeout=600)
    [wheel] = dist.glob("featureflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"featureflow", wheel.name.split("-py3")[0] + ".dist-info"}
    vendored = {n.rsplit("/", 1)[1] for n in names if n.startswith("featureflow/explorer/static/vendor/")}
    assert vendored == {"htmx.min.js", "swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"}
    assert not [n for n in names if "node_modules" in n]
    assert "featureflow/explorer/templates/base.html" in names

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    py, ff = venv / "bin" / "python", venv / "bin" / "featureflow"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900, env=env,
                   cwd=tmp_path)
    for mod in ("torch", "transformers", "sae_lens"):
        assert subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True, env=env).returncode == 1
    where = subprocess.run([str(py), "-c", "import featureflow; print(featureflow.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(venv))  # the installed package, not this checkout

    run = subprocess.run([str(ff), "run", "--config", str(ROOT / "configs" / "tiny.yaml")], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "pip install 'featureflow[pipeline]'" in run.stderr and "torch" in run.stderr
    rep = subprocess.run([str(ff), "report", "--db", str(synthetic_store.path)], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert rep.returncode == 0 and "base -> left" in rep.stdout

    port = _free_port()
    proc = subprocess.Popen([str(ff), "serve", "--db", str(synthetic_store.path), "--port", str(port),
                             "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if _get(base + "/api/schema")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the installed server did not start")
        for url in [*PAGES, *DOCS, *("/api" + p if p != "/" else "/api/" for p in PAGES)]:
            status, body = _get(base + url)
            assert status == 200, (url, body[:300])
        for name in ("htmx.min.js", "swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "plotly.min.js"):
            status, body = _get(f"{base}/vendor/{name}")
            assert status == 200 and len(body) > 10_000, name
        assert b"/vendor/swagger-ui-bundle.js" in _get(base + "/docs")[1]
        _no_console_errors(base, [*PAGES, "/docs", "/redoc"])
    finally:
        proc.terminate()
        proc.wait(30)


def _no_console_errors(base: str, urls: list[str]) -> None:
    """Every page in headless Chromium (Debian's, through Playwright, as tests/test_browser.py): no console
    error, no uncaught exception, no failed request; the Sankey, Swagger UI and ReDoc actually draw."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                       else (problems.append(f"outside request: {route.request.url}"), route.abort()))
            for url in urls:
                page.goto(base + url, wait_until="networkidle")
                if url == "/redoc":  # ReDoc 2.5's menu always draws its vendor's logo from cdn.redoc.ly, which
                    # the CSP blocks (and a run without network could not fetch): a known defect, left to the
                    # explorer's docs page; anything else there still fails
                    problems[:] = [p for p in problems if "cdn.redoc.ly/redoc/logo-mini.svg" not in p]
                assert not problems, (url, problems)
            page.goto(base + "/", wait_until="networkidle")
            page.wait_for_selector("#sankey .sankey-node", timeout=20_000)  # Plotly drew the Sankey
            page.goto(base + "/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=20_000)  # Swagger UI rendered the API
            page.goto(base + "/redoc", wait_until="networkidle")
            page.wait_for_selector(".menu-content", timeout=30_000)  # ReDoc rendered its menu
        finally:
            browser.close()
