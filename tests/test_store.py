import hashlib

import duckdb
import pytest

from featureflow.config import parse_config
from featureflow.pipeline.runner import Pipeline
from featureflow.store.schema import SCHEMA_VERSION, TABLES


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_store_has_every_documented_table_and_the_version(tiny_pipeline):
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(TABLES) <= tables
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    n_feat = con.execute("SELECT count(*) FROM features").fetchone()[0]
    assert n_feat == sum(tiny_pipeline.load_acts(m).shape[1] for m in tiny_pipeline.cfg.topological_order())
    con.close()


def test_killed_build_leaves_the_previous_store_untouched(tiny_pipeline, monkeypatch):
    from featureflow.store import build

    path = tiny_pipeline.cfg.store_path()
    before = _digest(path)
    d = tiny_pipeline.cfg.model_dump()
    d["description"] = "changed, so the store must be rebuilt"
    pl = Pipeline(parse_config(d), device="cpu")

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while writing fingerprints")

    monkeypatch.setattr(build, "_fill_fingerprints", killed)
    with pytest.raises(KeyboardInterrupt):
        pl.store()
    assert _digest(path) == before
    assert not list(path.parent.glob(f".{path.name}.tmp-*"))
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT description FROM runs").fetchone()[0] != "changed, so the store must be rebuilt"
    con.close()


def test_unchanged_inputs_skip_the_build(tiny_pipeline):
    path = tiny_pipeline.cfg.store_path()
    stamp = path.stat().st_mtime_ns
    Pipeline(tiny_pipeline.cfg, device="cpu").store()
    assert path.stat().st_mtime_ns == stamp


def test_report_prints_every_mode_and_the_floor(tiny_pipeline, capsys):
    # the counts themselves: tests/test_explorer_fast.py (against numpy on the synthetic store's arrays)
    from featureflow.cli import main

    assert main(["report", "--db", str(tiny_pipeline.cfg.store_path())]) == 0
    out = capsys.readouterr().out
    sections = out.split("\nmode ")[1:]
    assert [s.split()[0] for s in sections] == tiny_pipeline.cfg.matching.modes
    assert "uses replica 0" in out and "floor babypython" in out


def test_cli_errors_are_clear(tmp_path, capsys):
    from featureflow.cli import main

    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pretrained_saelens_sae_is_loaded_not_trained(tiny_pipeline):
    from featureflow.pipeline.artifacts import read_json

    d = tiny_pipeline.cfg.model_dump()
    d["sae"]["pretrained"] = {"lua": str(tiny_pipeline.sae("lua"))}
    d["sae"]["replicas"] = {k: v for k, v in (d["sae"]["replicas"] or {}).items() if k != "lua"}  # loaded: no seeds
    pl = Pipeline(parse_config(d), device="cpu")
    folder = pl.sae("lua")
    info = read_json(folder / "featureflow.json")
    assert folder != tiny_pipeline.sae("lua") and info["recipe"].startswith("loaded from") and info["log"] == []
    assert info["health"]["l0"] == pytest.approx(read_json(tiny_pipeline.sae("lua") / "featureflow.json")["health"]["l0"])
