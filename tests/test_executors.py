"""`featureflow run --executor ray`: a local Ray (2 CPUs, started by the run itself) builds the tiny config's
artefacts under the same keys and with the same bytes as the local executor; a Ray run killed mid-way is taken
over by the local executor and finished by Ray again, and the store it ends with answers every /api route as the
local run's does."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from fastapi.testclient import TestClient

from api_calls import api_calls
from conftest import tiny_dict
from featureflow.cli import main
from featureflow.explorer.app import create_app
from featureflow.pipeline.artifacts import DONE
from featureflow.pipeline.plan import make_plan

has_ray = importlib.util.find_spec("ray") is not None


def without_timings(x):
    """An /api answer or a JSON artefact without what a clock measured (`seconds`, `timings`)."""
    if isinstance(x, dict):
        return {k: without_timings(v) for k, v in x.items() if k not in ("seconds", "timings")}
    if isinstance(x, list):
        return [without_timings(v) for v in x]
    return x


def comparable(path: Path, root: Path) -> object:
    """A file's content as the two executors must agree on it: JSON without timings, text with the run's folder
    written as ROOT and a build's temp folder without its process id (mergekit's files name their folders by
    path; its model card lists them in a set's order, so its lines are compared as a set), anything else its
    bytes."""
    data = path.read_bytes()
    if path.suffix not in (".json", ".yml", ".yaml", ".md"):
        return data
    text = re.sub(r"\.tmp-\d+", ".tmp-PID", data.decode().replace(str(root), "ROOT"))
    if path.suffix == ".md":  # mergekit's model card lists the merged models in a set's (hash seed's) order
        return sorted(text.splitlines())
    return without_timings(json.loads(text)) if path.suffix == ".json" else text


def run_cli(cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "featureflow.cli", "run", "--config", str(cfg), "--executor", "ray",
                             "--num-cpus", "2"], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: Ray's processes go with it


@pytest.mark.skipif(not has_ray, reason="the `ray` extra is not installed (scripts/test.sh installs it)")
def test_ray_run_killed_midway_resumes_to_the_local_runs_artefacts_and_store(tiny_pipeline, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    # each task with the local run's thread count: floating-point sums (numpy's BLAS in decoder matching) follow it
    raw = tiny_dict(tmp_path / "data", executor={"threads": tiny_pipeline.threads})
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))  # sort_keys=False: the domains' order is content
    run = tmp_path / "data" / "tiny"
    p = run_cli(cfg_path, tmp_path / "first.log")
    t0 = time.time()
    try:  # kill the driver (and its Ray) once a few SAEs are written, long before the end
        while len(list(run.glob("saes/*/DONE"))) < 3 and p.poll() is None and time.time() - t0 < 300:
            time.sleep(0.2)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    # a worker in the middle of a task may outlive its driver by a moment (its raylet is going): wait until the
    # finished artefacts stop changing
    seen, t0 = None, time.time()
    while time.time() - t0 < 60:
        now = sorted(run.glob("*/*/DONE"))
        if now == seen:
            break
        seen = now
        time.sleep(3)
    from featureflow.config import load_config

    cfg = load_config(cfg_path)
    assert 0 < sum(t.done for t in make_plan(cfg).tasks)
    # the local executor takes over the killed Ray run up to the SAEs; Ray finishes what is left
    local = subprocess.run([sys.executable, "-m", "featureflow.cli", "run", "--config", str(cfg_path), "--stage",
                            "saes"], capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-2000:]
    midway = make_plan(cfg)
    done = sum(t.done for t in midway.tasks)
    assert all(t.done for t in make_plan(cfg, upto="saes").tasks) and done < len(midway.tasks)

    p = run_cli(cfg_path, tmp_path / "second.log")
    assert p.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert f"plan: {len(midway.tasks)} tasks, {done} done, {len(midway.tasks) - done} to run on Ray" in log
    assert "progress sae" in log and "running" in log

    # the same artefacts, under the same keys, as the local run's: every file equal but for timings
    local = make_plan(tiny_pipeline.cfg)
    rel = lambda plan, root: {str(Path(o).relative_to(root)) for t in plan.tasks for o in t.outputs}
    after = make_plan(cfg)
    assert all(t.done for t in after.tasks)
    assert rel(after, run) == rel(local, tiny_pipeline.root)
    files = 0
    for folder in sorted(rel(after, run)):
        mine = sorted(f.relative_to(run / folder) for f in (run / folder).rglob("*") if f.is_file())
        theirs = sorted(f.relative_to(tiny_pipeline.root / folder)
                        for f in (tiny_pipeline.root / folder).rglob("*") if f.is_file())
        assert mine == theirs, folder
        for f in mine:
            if f.name != DONE:
                assert comparable(run / folder / f, run) == \
                    comparable(tiny_pipeline.root / folder / f, tiny_pipeline.root), f"{folder}/{f}"
                files += 1
    assert files > 200

    # the store: every /api answer equal to the local run's (timings aside)
    a, b = TestClient(create_app(tiny_pipeline.cfg.store_path())), TestClient(create_app(cfg.store_path()))
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    try:
        calls = api_calls(a, con)
    finally:
        con.close()
    assert len(calls) > 20
    for url, params in calls:
        ra, rb = a.get(url, params=params), b.get(url, params=params)
        assert ra.status_code == rb.status_code == 200, (url, params)
        assert without_timings(rb.json()) == without_timings(ra.json()), (url, params)


def test_ray_executor_without_the_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    import featureflow.pipeline.executors as ex

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_dict(tmp_path / "data"), sort_keys=False))  # domain order is content
    real = importlib.util.find_spec
    monkeypatch.setattr(ex.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["run", "--config", str(cfg_path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["featureflow: error: --executor ray needs Ray, which is not installed: pip install "
                   "'featureflow[ray]'"]
    assert not (tmp_path / "data").exists()  # refused before any work


def test_unknown_task_kind_in_executor_resources_is_named(tiny_pipeline):
    from featureflow.pipeline.executors import kinds_checked

    plan = make_plan(tiny_pipeline.cfg)
    cfg = tiny_pipeline.cfg.model_copy(deep=True)
    from featureflow.config import TaskResources

    cfg.executor.resources = {"sea": TaskResources()}
    with pytest.raises(ValueError, match=r"executor.resources: unknown task kind 'sea' \(this config's kinds: .*sae"):
        kinds_checked(plan, cfg)
