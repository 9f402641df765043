import pytest

from featureflow.config import ConfigError, load_config, parse_config
from conftest import ROOT, tiny_dict


def test_shipped_configs_validate():
    """Each shipped config validates, and its roots are the members its YAML lists without parents (read
    from the file with PyYAML, not through the config classes), in the order listed."""
    import yaml

    for name in ("tiny", "demo", "paper"):
        path = ROOT / "configs" / f"{name}.yaml"
        cfg = load_config(path)
        listed = yaml.safe_load(path.read_text())["family"]
        assert [m.name for m in cfg.family] == [m["name"] for m in listed]
        assert cfg.roots() == [m["name"] for m in listed if not m.get("parents")]
        assert len(cfg.roots()) < len(listed)  # every shipped family has children


def test_paper_config_has_paper_shapes():
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert (cfg.model.hidden, cfg.model.d_mlp, cfg.model.heads, cfg.model.context) == (512, 1024, 16, 256)
    assert cfg.sae.expansion == 16 and cfg.sae.l1_coefficient == 3e-4 and cfg.sae.lr == 1e-4
    assert cfg.sae.block_tokens == 24 and cfg.sae.blocks_per_batch == 128 and cfg.sae.tokens == 15_000_000


def _err(tmp_path, **over) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(tiny_dict(tmp_path, **over))
    return str(e.value)


def _family(tmp_path):
    return tiny_dict(tmp_path)["family"]


def test_unknown_domain_names_member_and_field(tmp_path):
    fam = _family(tmp_path)
    fam[1]["domains"] = ["klingon"]
    msg = _err(tmp_path, family=fam)
    assert "family[1].domains" in msg or "family.1" in msg
    assert "klingon" in msg and "lua" in msg


def test_unknown_parent(tmp_path):
    fam = _family(tmp_path)
    fam[1]["parents"] = ["babypyton"]
    msg = _err(tmp_path, family=fam)
    assert "unknown parent 'babypyton'" in msg and "babypython" in msg


def test_cycle_is_reported_with_its_path(tmp_path):
    fam = _family(tmp_path)
    fam[0] = {"name": "babypython", "make": "finetune", "parents": ["lua"], "domains": ["python"], "tokens": 10}
    msg = _err(tmp_path, family=fam)
    assert "cycle" in msg and "babypython -> lua" in msg.replace("lua -> babypython", "babypython -> lua")


def test_missing_load_path(tmp_path):
    fam = _family(tmp_path) + [{"name": "ext", "make": "load", "path": str(tmp_path / "nope")}]
    msg = _err(tmp_path, family=fam)
    assert "path" in msg and "does not exist" in msg and "ext" in msg


def test_t_outside_unit_interval(tmp_path):
    fam = _family(tmp_path)
    fam[3]["t"] = 1.5
    msg = _err(tmp_path, family=fam)
    assert "family.3" in msg and "t must lie in [0, 1]" in msg


def test_merge_needs_two_parents_and_unknown_fields_rejected(tmp_path):
    fam = _family(tmp_path)
    fam[3]["parents"] = ["lua"]
    assert "exactly two parents" in _err(tmp_path, family=fam)
    assert "epochs" in _err(tmp_path, training={"epochs": 3})


def test_unknown_generated_domain(tmp_path):
    d = tiny_dict(tmp_path)
    d["corpora"]["domains"]["klingon"] = {"chars": 10}
    with pytest.raises(ConfigError, match="no embedded generator"):
        parse_config(d)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_dag_helpers(tmp_path):
    cfg = parse_config(tiny_dict(tmp_path))
    assert cfg.edges() == [("babypython", "lua"), ("babypython", "tinystories"), ("lua", "luastories"),
                           ("tinystories", "luastories")]
    assert cfg.member_domains("luastories") == ["babylm", "python", "lua", "tinystories"]
    assert cfg.own_domains("luastories") == ["lua", "tinystories"]


def test_every_path_is_checked_at_validation_naming_its_field(tmp_path):
    d = tiny_dict(tmp_path)
    d["tokenizer"] = {"path": str(tmp_path / "no-tokenizer")}
    d["sae"]["pretrained"] = {"lua": str(tmp_path / "no-sae")}
    d["corpora"]["domains"]["lua"] = {"source": "files", "paths": [str(tmp_path / "*.lua")]}
    (tmp_path / "not-a-model").mkdir()
    d["family"].append({"name": "ext", "make": "load", "path": str(tmp_path / "not-a-model"), "parents": ["lua"]})
    with pytest.raises(ConfigError) as e:
        parse_config(d, "x.yaml")
    errors = e.value.errors
    assert f"tokenizer.path: '{tmp_path / 'no-tokenizer'}' does not exist" in errors
    assert f"sae.pretrained.lua: '{tmp_path / 'no-sae'}' does not exist" in errors
    assert f"corpora.domains.lua.paths.0: '{tmp_path / '*.lua'}' matches no file" in errors
    assert any(x.startswith("family.4.path:") and "not a Hugging Face model folder" in x for x in errors)
    assert str(e.value).splitlines() == [f"x.yaml: {x}" for x in errors]  # one line per fault


def test_one_error_format_dotted_without_pydantic_internals(tmp_path):
    fam = _family(tmp_path)
    fam[3]["t"] = 1.5
    msg = _err(tmp_path, family=fam)
    assert msg.startswith("family.3.t: t must lie in [0, 1]")  # not family.3.merge.t
    fam = _family(tmp_path)
    fam[1]["parents"] = ["babypyton"]
    fam[2]["domains"] = ["klingon"]
    msg = _err(tmp_path, family=fam, sae={"hook": "blocks.0.mlp"})
    assert msg.splitlines() == [
        "family.1.parents: unknown parent 'babypyton' of 'lua' (members: babypython, lua, tinystories, luastories)",
        "family.2.domains: unknown domain 'klingon' of 'tinystories' (corpora.domains: babylm, python, lua, "
        "tinystories)"]
    assert "sae.hook: 'blocks.0.mlp' is not a TransformerLens hook name" in _err(tmp_path, sae={"hook": "blocks.0.mlp"})
    assert "sae.hook: 'blocks.1.mlp.hook_post' is past the last layer" in _err(tmp_path, sae={"hook": "blocks.1.mlp.hook_post"})


def test_load_only_family_needs_the_models_tokenizer(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    msg = _err(tmp_path, family=[{"name": "m", "make": "load", "path": str(folder), "domains": ["lua"]}], cases=[])
    assert msg == f"tokenizer.path: no member is trained here, so the family tokenizer must be the loaded models' " \
                  f"own: set tokenizer.path to a model folder (e.g. {folder})"


def test_cli_bad_config_exits_2_with_one_line_per_fault_and_no_traceback(tmp_path, capsys):
    import yaml

    from featureflow.cli import main

    d = tiny_dict(tmp_path)
    d["tokenizer"] = {"path": "/nonexistent/tok"}
    d["sae"]["pretrained"] = {"lua": "/nonexistent/sae"}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    for cmd in ("validate", "run"):
        assert main([cmd, "--config", str(p)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [f"featureflow: error: {p}: tokenizer.path: '/nonexistent/tok' does not exist",
                       f"featureflow: error: {p}: sae.pretrained.lua: '/nonexistent/sae' does not exist"]


def _dfs_order(family: list[dict]) -> list[str]:
    """The depth-first order config.py computed by hand before it used graphlib (the reference)."""
    parents = {m["name"]: list(m.get("parents", [])) for m in family}
    order: list[str] = []

    def visit(n):
        if n not in order:
            for p in parents[n]:
                visit(p)
            order.append(n)

    for m in family:
        visit(m["name"])
    return order


def test_family_order_is_unchanged_by_graphlib(tmp_path):
    import random

    from featureflow.config import ExperimentConfig

    for name in ("tiny", "demo", "paper", "fingerprints"):
        path = ROOT / "configs" / f"{name}.yaml"
        if path.exists():
            cfg = load_config(path)
            assert cfg.topological_order() == _dfs_order([m.model_dump() for m in cfg.family])
    rng = random.Random(0)
    for trial in range(200):  # random DAGs, listed parents-first and then shuffled
        names = [f"m{i}" for i in range(rng.randint(1, 9))]
        fam = [{"name": n, "parents": rng.sample(names[:i], rng.randint(0, min(2, i)))} for i, n in enumerate(names)]
        members = [type("M", (), {"name": m["name"], "parents": m["parents"]}) for m in fam]
        order = ExperimentConfig.topological_order(type("C", (), {"family": members})())
        assert order == _dfs_order(fam) == names  # parents-first listing: kept as listed
        rng.shuffle(members)
        shuffled = ExperimentConfig.topological_order(type("C", (), {"family": members})())
        assert sorted(shuffled) == sorted(names)
        assert all(shuffled.index(p) < shuffled.index(m["name"]) for m in fam for p in m["parents"])


def test_a_cycle_is_named_parent_to_child():
    from featureflow.config import ExperimentConfig

    fam = [type("M", (), {"name": n, "parents": ps}) for n, ps in (("a", ["c"]), ("b", ["a"]), ("c", ["b"]),
                                                                     ("d", ["a"]))]
    with pytest.raises(ValueError) as e:
        ExperimentConfig.topological_order(type("C", (), {"family": fam})())
    path = str(e.value).split("cycle ")[1].split(" (")[0].split(" -> ")
    assert path[0] == path[-1] and len(path) == 4
    parents = {"a": "c", "b": "a", "c": "b"}
    assert all(parents[child] == parent for parent, child in zip(path, path[1:]))  # each a parent of the next
