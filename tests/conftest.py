"""Shared fixtures: the tiny experiment run once per session into a temporary data folder."""

from __future__ import annotations

from pathlib import Path

import sys

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/synthetic_store.py, tests/fake_openai.py


def tiny_dict(data_dir: Path, **over) -> dict:
    d = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    d["data_dir"] = str(data_dir)
    d.update(over)
    return d


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A small store built through the schema's DDL from synthetic rows (tests/synthetic_store.py): no torch,
    about a second. Its `SyntheticRun` keeps the arrays the rows came from."""
    from synthetic_store import build

    return build(tmp_path_factory.mktemp("synthetic") / "synthetic.duckdb")


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The whole tiny pipeline (all stages, store included), built once. It keeps for tests/test_plan.py the plan
taken on the empty folder (`plan_before`), the trace of every stage call the run made (`trace`: build functions
ran, so what they read is in it) and the artefact folders on disk right after the run (`written`)."""
    from featureflow.config import parse_config
    from featureflow.pipeline.artifacts import ARTEFACT, is_done, observing
    from featureflow.pipeline.plan import Recorder, make_plan
    from featureflow.pipeline.runner import Pipeline

    data = tmp_path_factory.mktemp("tinyrun")
    cfg = parse_config(tiny_dict(data))
    plan_before = make_plan(cfg, device="cpu")
    import torch

    pl = Pipeline(cfg, device="cpu")
    pl.threads = torch.get_num_threads()  # the thread count floating-point sums followed (tests/test_executors.py)
    pl.recorder = trace = Recorder()
    with observing(trace.built):
        pl.run()
    pl.recorder = None
    pl.plan_before, pl.trace = plan_before, trace
    pl.written = {p for p in pl.root.glob("*/*") if ARTEFACT.match(p.name) and is_done(p)}
    return pl


# Fixtures that train or run models: a test that uses one (directly or through another fixture) is `slow`.
# `pytest -m "not slow"` is the fast tier (synthetic stores, formulas against their oracles).
TRAINS = {"tiny_pipeline", "byo", "family", "tiny_lm"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
