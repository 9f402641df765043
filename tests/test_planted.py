"""The planted family at a tiny size: the fate calls of the pipeline's own machinery scored against planted truth.

Oracles: an SAE matched against an identical SAE (shared initialisation on an identical child) must be called
persisting everywhere; a child with every feature replaced against a null (the child's sample positions
shifted, its decoder rotated at random); the scorecard's counts against a count made here with NumPy from the
raw matches and the planted rows; the edit table against the rows of the built members; MCC against
`sae_lens.synthetic.mean_correlation_coefficient`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featureflow.config import ConfigError, MatchingConfig, PlantedChild, PlantedConfig, PlantedMerge, SAEConfig
from featureflow.pipeline.planted import (EDITS, build_family, edge_truth, latent_truth, run_planted,
                                          format_scorecard)

TINY_SAE = SAEConfig(architecture="topk", k=2, expansion=3, lr=5e-3, block_tokens=1, blocks_per_batch=128,
                     tokens=64_000, lr_decay_fraction=0.2)
MODES = ["pearson", "pearson-1to1", "decoder", "decoder-1to1"]


def tiny(**over) -> PlantedConfig:
    base = dict(features=24, d=12, firing_min=0.02, firing_max=0.08, sample_positions=6000, train_positions=20000,
                replicas=1, sae=TINY_SAE, matching=MatchingConfig(threshold=0.8, top_k=3, modes=MODES))
    return PlantedConfig(**{**base, **over})


@pytest.fixture(scope="module")
def edited():
    """root -> same (identical), root -> new (every feature replaced), same -> edited (every edit kind),
    merge(same, edited); independent seeds."""
    cfg = tiny(children=[PlantedChild(name="same", drifted=0, removed=0, split=0, added=0),
                         PlantedChild(name="new", drifted=0, removed=1.0, split=0, added=1.0),
                         PlantedChild(name="edited", parent="same", drifted=0.25, removed=0.25, split=0.25,
                                      added=0.25)],
               merge=PlantedMerge(name="mix", parents=["same", "edited"], t=0.5))
    keep: dict = {}
    card = run_planted(cfg, keep=keep)
    return cfg, card, keep


def test_identical_child_with_a_shared_sae_is_persisting_everywhere():
    """An identical child whose SAE is the parent's (shared initialisation and batch order, as sae.shared_init
    asks): every alive parent latent has r = 1 with its twin, so every mode's persisting recall is 1.0 and
    nothing emerges or disappears."""
    cfg = tiny(children=[PlantedChild(name="same", drifted=0, removed=0, split=0, added=0)], merge=None,
               sae=TINY_SAE.model_copy(update={"shared_init": True}))
    card = run_planted(cfg)
    for mode in MODES:
        e = card["per_edge"][mode]["root->same"]
        assert e["persisting"]["recall"] == 1.0 and e["persisting"]["support"] > 0, mode
        assert e["disappearing"]["calls"] == 0 and e["emerging"]["calls"] == 0, mode
        assert e["persisting"]["precision"] == 1.0 or e["persisting"]["calls"] > e["persisting"]["support"]


def test_identical_child_with_independent_saes_persists(edited):
    """Independent seeds on an identical child: activation Pearson finds most persisting features."""
    _, card, _ = edited
    e = card["per_edge"]["pearson"]["root->same"]
    assert e["persisting"]["recall"] >= 0.7 and e["persisting"]["precision"] >= 0.9
    assert e["emerging"]["support"] == 0 and e["disappearing"]["support"] == 0


def test_all_replaced_child_has_no_persisting_calls_beyond_chance(edited):
    _, card, _ = edited
    for mode in MODES:
        e = card["per_edge"][mode]["root->new"]
        assert e["persisting"]["support"] == 0 and e["inherited"]["support"] == 0
        chance = card["chance"][mode]["root->new"]
        assert e["persisting"]["calls"] <= chance + 1, (mode, e["persisting"]["calls"], chance)
    # and under activation Pearson there are none at all: no event is shared
    assert card["per_edge"]["pearson"]["root->new"]["persisting"]["calls"] == 0


def test_scorecard_counts_against_an_independent_count(edited):
    """Calls, correct calls and support recounted here with NumPy: the rule r > threshold on the raw matches of
    alive latents, truth from the planted rows via each latent's Hungarian row."""
    from featureflow.config import parse_mode
    from featureflow.pipeline.matching import rule_matches

    cfg, card, keep = edited
    fam, thr = keep["family"], card["threshold"]
    for mode in MODES:
        sim, rule = parse_mode(mode)
        tally = {f: [0, 0, 0] for f in ("persisting", "disappearing", "inherited", "emerging")}
        for p, c in fam.edges:
            m = rule_matches(*keep["matches"][(p, c, sim)], rule)
            pm, cm = fam.members[p], fam.members[c]
            ckeys, pkeys = set(cm.keys), set(pm.keys)
            for side, model, members_keys, other_keys, r, yes, no in (
                    ("p", p, pm.keys, ckeys, m["p2c_r"], "persisting", "disappearing"),
                    ("c", c, cm.keys, pkeys, m["c2p_r"], "inherited", "emerging")):
                alive = np.diff(keep["acts"][(model, 0)].indptr) > 0
                row = keep["truth_row"][(model, 0)]
                hit = np.nan_to_num(r, nan=-np.inf) > thr
                for i in np.flatnonzero(alive):
                    if row[i] >= 0:
                        s, g = members_keys[row[i]]
                        if (s, g) in other_keys:
                            truth = yes
                        elif g == 0 and (s, 1) in other_keys and (s, 2) in other_keys:
                            continue  # split: scored apart
                        elif g != 0 and (s, 0) in other_keys:
                            continue
                        else:
                            truth = no
                    else:
                        truth = "unresolved"
                    call = yes if hit[i] else no
                    tally[call][1] += 1
                    tally[call][0] += int(call == truth)
                    if truth in tally:
                        tally[truth][2] += 1
        for f, (tp, calls, support) in tally.items():
            s = card["modes"][mode][f]
            assert (s["correct"], s["calls"], s["support"]) == (tp, calls, support), (mode, f)


def test_each_edit_kind_in_the_truth_table_with_its_planted_fraction(edited):
    cfg, card, keep = edited
    table = card["truth"]["same->edited"]
    spec = next(c for c in cfg.children if c.name == "edited")
    member = keep["family"].members["edited"]
    R = len(keep["family"].members["same"].src)
    for k in EDITS:
        planted = (1 - spec.drifted - spec.removed - spec.split) if k == "unchanged" else getattr(spec, k)
        assert table[k]["planted"] == pytest.approx(planted)
        assert abs(table[k]["fraction"] - planted) <= 0.5 / R + 1e-9, k
        assert table[k]["n"] > 0
    # against the built rows: a split feature has two rows, a removed one none
    rows = {k: int((member.edit == k).sum()) for k in EDITS}
    assert rows["split"] == 2 * table["split"]["n"] and rows["removed"] == 0
    for k in ("unchanged", "drifted", "added"):
        assert rows[k] == table[k]["n"]
    assert R - table["removed"]["n"] - table["split"]["n"] + 2 * table["split"]["n"] + table["added"]["n"] == len(member.src)


def test_edges_truth_and_drift_angles():
    fam = build_family(tiny(children=[PlantedChild(name="a", drifted=0.25, removed=0.25, split=0.25, added=0.25)],
                            merge=None, drift_angles=[30.0]))
    tr = edge_truth(fam.members["root"], fam.members["a"])
    assert set(tr["parent"]) == {"persisting", "disappearing", "split"}
    assert set(tr["child"]) == {"inherited", "emerging", "split"}
    drifted = fam.members["a"].edit == "drifted"
    a = fam.members["a"]
    root = fam.members["root"]
    for j in np.flatnonzero(drifted):
        i = int(np.flatnonzero(root.src == a.src[j])[0])
        assert np.degrees(np.arccos(np.clip(root.dirs[i] @ a.dirs[j], -1, 1))) == pytest.approx(30.0, abs=1e-6)
    # the same events at the same positions: a kept feature fires where the root's does
    pos = fam.positions(5, 2000)
    E = pos.toarray()
    kept = int(a.src[np.flatnonzero(a.edit == "unchanged")[0]])
    assert E[:, kept].any()
    halves = a.src[a.edit == "split"]
    s0 = int(halves[0])
    lo, hi = E[:, fam.n_sources + s0], E[:, 2 * fam.n_sources + s0]
    np.testing.assert_array_equal(lo + hi, E[:, s0])
    assert not (lo * hi).any()


def test_mcc_matches_sae_lens():
    from sae_lens.synthetic import mean_correlation_coefficient

    g = np.random.default_rng(0)
    for L, R in ((20, 12), (12, 20), (16, 16)):
        W, D = g.standard_normal((L, 8)), g.standard_normal((R, 8))
        _, _, mcc = latent_truth(W, D, 0.0)
        assert mcc == pytest.approx(mean_correlation_coefficient(torch.tensor(W), torch.tensor(D)), abs=1e-9)


def test_trained_sae_mcc_matches_sae_lens(edited):
    from sae_lens.synthetic import mean_correlation_coefficient

    _, card, keep = edited
    fam = keep["family"]
    for name in ("root", "edited"):
        oracle = mean_correlation_coefficient(torch.tensor(keep["decoders"][(name, 0)]),
                                              torch.tensor(fam.members[name].dirs))
        assert card["mcc"][name]["0"] == pytest.approx(oracle, abs=1e-6)
    assert card["mcc"]["root"]["0"] > 0.7  # the tiny SAE recovers the planted dictionary


def test_scorecard_json_and_table(edited):
    _, card, _ = edited
    text = json.dumps(card)  # JSON-able throughout
    assert set(json.loads(text)["modes"]) == set(MODES)
    table = format_scorecard(card)
    for mode in MODES:
        assert mode in table
    s = card["modes"]["pearson"]["persisting"]
    assert f"{s['precision']:6.3f}" in table


def test_bad_planted_configs_name_the_field(tmp_path):
    from featureflow.cli import main

    with pytest.raises(ValueError, match="firing_min"):
        PlantedConfig(firing_min=0.5, firing_max=0.1)
    with pytest.raises(ValueError, match="children: the drifted"):
        PlantedConfig(children=[PlantedChild(name="a", drifted=0.6, removed=0.1),
                                PlantedChild(name="b", drifted=0.5)], merge=None)
    with pytest.raises(ValueError, match="unknown member 'zz'"):
        PlantedConfig(merge=PlantedMerge(parents=["a", "zz"]))
    with pytest.raises(ValueError, match="needs tokens"):
        PlantedConfig(matching=MatchingConfig(modes=["token-type"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("planted: {features: 1}\n")
    assert main(["planted", "--config", str(bad), "--out", str(tmp_path / "x.json")]) == 2
    with pytest.raises(ConfigError):
        from featureflow.config import load_planted
        load_planted(bad)


def test_cli_writes_the_scorecard_and_prints_the_table(tmp_path, capsys):
    import yaml

    from featureflow.cli import main

    cfg = {"planted": {"features": 12, "d": 6, "firing_min": 0.04, "firing_max": 0.1, "sample_positions": 2000,
                       "train_positions": 5000, "merge": None,
                       "children": [{"name": "a", "drifted": 0.25, "removed": 0.25, "split": 0, "added": 0.25}],
                       "sae": TINY_SAE.model_dump(mode="json") | {"tokens": 20000},
                       "matching": {"modes": ["pearson", "decoder-1to1"], "top_k": 3}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "planted.json"
    assert main(["planted", "--config", str(path), "--out", str(out)]) == 0
    card = json.loads(out.read_text())
    assert set(card["modes"]) == {"pearson", "decoder-1to1"} and card["config"]["features"] == 12
    for fates in card["modes"].values():
        assert set(fates) == {"persisting", "disappearing", "inherited", "emerging"}
        for s in fates.values():
            assert set(s) >= {"precision", "recall", "f1", "support"}
    printed = capsys.readouterr().out
    assert format_scorecard(card).splitlines()[2] in printed and f"wrote {out}" in printed
    assert main(["planted", "--config", str(path), "--out", str(tmp_path / "nope" / "x.json")]) == 2


def test_the_planted_merges_path_keeps_each_parent_whole_at_its_own_end(edited):
    """At t = 0 the planted merge is its first parent's dictionary and at t = 1 its second's (split halves
    summing to the whole): every latent of that parent survives there."""
    cfg, card, _ = edited
    first, second = cfg.merge.parents
    s = card["survival"]
    assert s[first]["t"][0] == 0.0 and s[first]["share"][0] == 1.0 and s[first]["n"] > 0
    assert s[second]["t"][-1] == 1.0 and s[second]["share"][-1] == 1.0 and s[second]["n"] > 0
    assert float(cfg.merge.t) in s[first]["t"]


def _shapes_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "planted_shapes.py"
    spec = importlib.util.spec_from_file_location("planted_shapes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["B", "C"])
def test_the_default_mode_meets_the_target_on_planted_shapes_it_was_not_tuned_on_alone(shape):
    """Issue 31's target on two of the README's planted shapes (the two where plain matching and the first transfer
    rule missed it: B's persisting recall 0.74, C's disappearing precision 0.83): the planted config's default mode
    (its first, `pearson+transfer`) calls every fate with precision >= 0.9 and recall >= 0.8 among reproducible
    latents, leaves under 5% of a side uncertain, beats plain `pearson` on disappearing precision, and calls splits
    with precision and recall (over resolved splits) >= 0.8 (C: 0.54 before the rule's gain and balance clauses).
    The config as `configs/planted.yaml` has it (SAE recipe, split evidence), crosscoders off, two modes."""
    import yaml
    from pathlib import Path

    from featureflow.config import PlantedFile

    shapes = _shapes_module()
    planted = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "planted.yaml").read_text())["planted"]
    default = planted["matching"]["modes"][0]
    assert default == "pearson+transfer"
    d = {**shapes.shape_config(planted, shapes.SHAPES[shape]), "crosscoder": None}
    d["matching"] = {**d["matching"], "modes": [default, "pearson"]}
    card = run_planted(PlantedFile(planted=d).planted)
    got = card["reproducible"][default]
    for fate in ("persisting", "disappearing", "inherited", "emerging"):
        assert got[fate]["support"] > 0 and got[fate]["precision"] >= 0.9 and got[fate]["recall"] >= 0.8, (fate, got)
    u = card["uncertain"][default]["reproducible"]
    assert 0 < u["parent"]["calls"] and u["parent"]["share"] < 0.05 and u["child"]["share"] < 0.05
    assert got["disappearing"]["precision"] > card["reproducible"]["pearson"]["disappearing"]["precision"] + 0.3
    # and the split target, over the splits the child's SAE resolved (C's merge-edge halves among them)
    split = card["split"][default]["reproducible"]
    assert split["resolved"] >= 10 and split["precision"] >= 0.8 and split["resolved_recall"] >= 0.8, split
    _assert_inheritance_target(card["inheritance"][default]["reproducible"])


def _assert_inheritance_target(inh: dict) -> None:
    """Issue 32's target: the merge's inheritance calls (both parents, first only, second only) with precision and
    recall >= 0.9 against the planted truth of which parents each merged feature's true feature is in."""
    for k in ("both", "first", "second"):
        assert inh[k]["support"] > 0 and inh[k]["precision"] >= 0.9 and inh[k]["recall"] >= 0.9, (k, inh)


@pytest.mark.slow
def test_the_planted_merge_inherits_what_its_truth_says():
    """`configs/planted.yaml`'s own merge (shape A of the README), under its default mode: issue 32's target
    (`_assert_inheritance_target`). Before a doubt in the other parent stopped blocking a one-parent call, one
    feature of each parent was left uncertain here (recall 0.909 and 0.889)."""
    import yaml
    from pathlib import Path

    from featureflow.config import PlantedFile

    planted = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "planted.yaml").read_text())["planted"]
    default = planted["matching"]["modes"][0]
    d = {**planted, "crosscoder": None, "matching": {**planted["matching"], "modes": [default]}}
    card = run_planted(PlantedFile(planted=d).planted)
    _assert_inheritance_target(card["inheritance"][default]["reproducible"])
