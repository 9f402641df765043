import pytest

from backend.config import ConfigError, load_config, parse_config
from conftest import ROOT, tiny_dict


def test_shipped_configs_validate():
    for name in ("tiny", "demo", "paper"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.topological_order()[0] == cfg.roots()[0]


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
