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


def test_report_prints_the_stored_flows(tiny_pipeline, capsys):
    from featureflow.cli import main

    assert main(["report", "--db", str(tiny_pipeline.cfg.store_path())]) == 0
    out = capsys.readouterr().out
    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    sections = out.split("\nmode ")[1:]
    assert [s.split()[0] for s in sections] == tiny_pipeline.cfg.matching.modes
    for section in sections:
        mode = section.split()[0]
        for parent, child, persisting, disappearing, share, floor, same in con.execute(
                "SELECT parent, child, persisting, disappearing, persist_share, floor_share, same_index FROM flows "
                "WHERE mode = ?", [mode]).fetchall():
            line = next(l for l in section.splitlines() if l.startswith(f"{parent} -> {child} "))
            cols = line.split()
            assert cols[3:5] == [str(persisting), str(disappearing)]
            assert cols[7:10] == [f"{100 * share:.1f}%", f"{100 * floor:.1f}%", str(same)]
    assert "uses replica 0" in out and "floor babypython" in out
    con.close()


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
