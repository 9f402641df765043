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
    from featureflow.pipeline import store_stage

    path = tiny_pipeline.cfg.store_path()
    before = _digest(path)
    d = tiny_pipeline.cfg.model_dump()
    d["description"] = "changed, so the store must be rebuilt"
    pl = Pipeline(parse_config(d), device="cpu")

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while writing fingerprints")

    monkeypatch.setattr(store_stage, "_fill_fingerprints", killed)
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


def _fake_inputs(cfg, root):
    """StoreInputs naming folders that need not exist: the key reads only the folders' names (their keys)."""
    from featureflow.pipeline.store_stage import StoreInputs

    order = cfg.topological_order()
    reps = cfg.sae_replicas()
    return StoreInputs(
        corpora=root / "corpora" / "text-k", tokenizer=root / "tokenizer" / "bpe-k", sample=root / "sample" / "shared-k",
        members={n: root / "models" / f"{n}-k" for n in order},
        saes={n: [root / "saes" / f"{n}.r{r}-k" for r in range(1 + reps.get(n, 0))] for n in order},
        activations={n: root / "activations" / f"{n}-k" for n in order},
        matches={(p, c, s): root / "matching" / f"{p}--{c}.{s}-k" for s in cfg.matching.similarities
                 for p, c in cfg.edges()},
        floors={(n, r, s): root / "floors" / f"{n}.r0--r{r}.{s}-k" for n in order for r in range(1, 1 + reps.get(n, 0))
                for s in cfg.matching.similarities},
        agreements=[root / "matching" / f"{p}--{c}.pwmcc-k" for p, c in cfg.edges()],
        autointerp={n: root / "autointerp" / f"{n}-k" for n in order}, cases=root / "cases" / "cases-k",
        fingerprints=root / "fingerprints" / "delta-k", planted=None, device="cpu",
        controls={c: {"root": r, "model": root / "controls" / f"{c}-k", "saes": [root / "saes" / f"{c}-k"],
                      "acts": root / "activations" / f"{c}.r0-k"} for c, r in cfg.control_members().items()},
        control_matches={(p, c, s): root / "matching" / f"{p}--{c}.{s}-k" for s in cfg.matching.similarities
                         for p, c in cfg.control_edges()},
        evidence={("transfer", p, c): root / "evidence" / f"transfer.{p}--{c}-k" for p, c in cfg.edges()},
        cross={(p, c): root / "activations" / f"{p}.r0.on.{c}-k" for p, c in cfg.edges()},
        survival={m.name: root / "survival" / f"{m.name}-k" for m in cfg.family if m.make == "merge"},
        crosscoders={(p, c): root / "crosscoders" / f"{p}--{c}.batchtopk-k" for p, c in cfg.edges()},
        default_mode=cfg.matching.modes[0], timings={"corpora": 1.0}, stage_seconds={"corpora": 1.0})


def test_the_store_key_follows_its_inputs(tmp_path):
    """`inputs_key(cfg, inputs)`: the same inputs give the same key (a resumed run finds the store up to date);
    another artefact behind any input the key hashes (activations, default-mode matches, floors, agreements,
    autointerp, cases, fingerprints, planted, controls, evidence, crosscoders; members, SAEs, corpora, tokenizer and sample reach it through the
    activation keys and the config) gives another key (the store is rebuilt); the building process's device
    and timings are not inputs."""
    import dataclasses

    from conftest import tiny_dict
    from featureflow.config import parse_mode
    from featureflow.pipeline.store_stage import inputs_key

    cfg = parse_config(tiny_dict(tmp_path))
    inp = _fake_inputs(cfg, tmp_path)
    key = inputs_key(cfg, inp)
    assert inputs_key(cfg, _fake_inputs(cfg, tmp_path / "elsewhere")) == key  # folder names, not locations
    assert inputs_key(cfg, dataclasses.replace(inp, device="cuda", timings={}, stage_seconds={"x": 2.0})) == key
    moved = lambda p: p.with_name(p.name + "2")  # the same stage's artefact under another key
    (p0, c0), sim = cfg.edges()[0], parse_mode(cfg.matching.modes[0])[0]
    changed = {
        "activations": {**inp.activations, cfg.roots()[0]: moved(inp.activations[cfg.roots()[0]])},
        "matches": {**inp.matches, (p0, c0, sim): moved(inp.matches[(p0, c0, sim)])},
        "floors": {k: moved(v) for k, v in inp.floors.items()},
        "agreements": [moved(inp.agreements[0])] + inp.agreements[1:],
        "autointerp": {k: moved(v) for k, v in inp.autointerp.items()},
        "cases": moved(inp.cases), "fingerprints": moved(inp.fingerprints),
        "planted": tmp_path / "planted" / "scorecard-k",
        "controls": {c: {**v, "acts": moved(v["acts"])} for c, v in inp.controls.items()},
        "control_matches": {k: moved(v) for k, v in inp.control_matches.items()},
        "evidence": {k: moved(v) for k, v in inp.evidence.items()},
        "cross": {k: moved(v) for k, v in inp.cross.items()},
        "crosscoders": {k: moved(v) for k, v in inp.crosscoders.items()}}
    assert inp.controls and inp.control_matches  # the tiny config has a random-weights control by default
    assert inp.floors  # the tiny config has seed replicas: the floors are an input
    keys = {f: inputs_key(cfg, dataclasses.replace(inp, **{f: v})) for f, v in changed.items()}
    assert all(k != key for k in keys.values()), keys
    other = parse_config({**tiny_dict(tmp_path), "description": "another run"})
    assert inputs_key(other, inp) != key  # the config is an input too


def test_a_resumed_run_finds_the_store_built_from_its_inputs(tiny_pipeline, tmp_path):
    """Run again on the same artefacts, the store stage leaves the file as it is (same inode, bytes and
    modification time); given one input under another key (a copy of an autointerp folder), it builds it anew."""
    import dataclasses
    import shutil

    from featureflow.pipeline.store_stage import build_store

    pl = tiny_pipeline
    path = pl.cfg.store_path()
    before = path.stat()
    assert pl.store() == path
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    cfg = pl.cfg.model_copy(update={"data_dir": str(tmp_path)})  # build the new one elsewhere: the session's stays
    inputs = pl.store_inputs()
    model, folder = next(iter(inputs.autointerp.items()))
    copy = shutil.copytree(folder, tmp_path / (folder.name + "-copy"))
    assert build_store(cfg, inputs) == cfg.store_path()  # built there once
    old = cfg.store_path().stat().st_ino
    assert build_store(cfg, inputs) == cfg.store_path() and cfg.store_path().stat().st_ino == old  # up to date
    built = build_store(cfg, dataclasses.replace(inputs, autointerp={**inputs.autointerp, model: copy}))
    assert built == cfg.store_path() and built.stat().st_ino != old  # written anew (temp file, then rename)
