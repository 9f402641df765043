"""Issue 31: a fate that admits doubt. Under a `+transfer` mode a feature with no match above the threshold is
*uncertain* where transfer says the other model still carries it, and disappearing (emerging) only where transfer
agrees that it is gone. A constructed edge with every combination of match r and transfer r, read back through the
store's one fate rule (flows, edge lists, the Sankey's partition, fate labels) against a count made here."""

from __future__ import annotations

import numpy as np
import pytest

from featureflow.evidence.transfer import KEEP, MIN_EVENTS, TAU
from featureflow.store import flows as F
from featureflow.store.writers import insert_evidence

from edge_store import firings, one_edge  # tests/edge_store.py

T = 0.7
N = 40


@pytest.fixture(scope="module")
def edge():
    """One edge p -> c of N features each side: match r and transfer r drawn to cover every combination (some
    features without a transfer value, some dead)."""
    rng = np.random.default_rng(3)
    con, alive, r = one_edge(rng, N, [0.95, 0.75, 0.7, 0.5, 0.1, -0.2])
    tr = {d: rng.choice([0.9, KEEP + 0.01, KEEP, TAU + 0.01, TAU, 0.1, np.nan], N) for d in ("p2c", "c2p")}
    insert_evidence(con, "transfer", "p", "c", {"r": tr["p2c"]})
    insert_evidence(con, "reverse-transfer", "p", "c", {"r": tr["c2p"]})
    return con, alive, r, tr


def _expected(alive, r, tr, side, con):
    """(persist, uncertain, gone) masks over one side's features, counted here: persisting where matched above T
    or transfer r above KEEP (firing at least MIN_EVENTS times); uncertain where not, but transfer r above TAU or
    too few firings; gone otherwise."""
    d, m = ("p2c", "p") if side == "parent" else ("c2p", "c")
    t = np.nan_to_num(tr[d], nan=-1)
    enough = firings(con, m) >= MIN_EVENTS
    persist = alive[m] & ((r[d] > T) | ((t > KEEP) & enough))
    uncertain = alive[m] & ~persist & ((t > TAU) | ~enough)
    return persist, uncertain, alive[m] & ~persist & ~uncertain


def test_flows_count_uncertain_exactly_where_match_and_transfer_disagree(edge):
    con, alive, r, tr = edge
    (pp, pu, pg), (ci, cu, ce) = _expected(alive, r, tr, "parent", con), _expected(alive, r, tr, "child", con)
    assert pu.any() and pg.any() and cu.any() and ce.any()  # every combination is present
    got = F.flows(con, T, "pearson+transfer")[0]
    assert (got["persisting"], got["uncertain"], got["disappearing"]) == (pp.sum(), pu.sum(), pg.sum())
    assert (got["inherited"], got["uncertain_origin"], got["emerging"]) == (ci.sum(), cu.sum(), ce.sum())
    # without doubt the same matches give no uncertain call: disappearing is both
    plain = F.flows(con, T, "pearson")[0]
    assert plain["uncertain"] == plain["uncertain_origin"] == 0
    matched = {d: alive[m] & (r[d] > T) for d, m in (("p2c", "p"), ("c2p", "c"))}
    assert plain["persisting"] == matched["p2c"].sum() and plain["inherited"] == matched["c2p"].sum()
    assert plain["disappearing"] == (alive["p"] & ~matched["p2c"]).sum()
    assert plain["emerging"] == (alive["c"] & ~matched["c2p"]).sum()
    # transfer keeps more than matching alone: every matched feature, and some it did not match
    assert (matched["p2c"] <= pp).all() and pp.sum() > matched["p2c"].sum()
    # transfer survival: alive parent features transfer says the child carries, matched or not
    carried = alive["p"] & (np.nan_to_num(tr["p2c"], nan=-1) > TAU)
    assert got["carried"] == carried.sum() and got["carried_share"] == pytest.approx(carried.sum() / alive["p"].sum())
    assert plain["carried"] is None and plain["carried_share"] is None


@pytest.mark.parametrize("fate,side,which", [("persisting", "parent", 0), ("uncertain", "parent", 1),
                                             ("disappearing", "parent", 2), ("inherited", "child", 0),
                                             ("uncertain-origin", "child", 1), ("emerging", "child", 2)])
def test_edge_lists_hold_each_fates_features(edge, fate, side, which):
    con, alive, r, tr = edge
    want = set(np.flatnonzero(_expected(alive, r, tr, side, con)[which]).tolist())
    total, rows = F.edge_features(con, "p", "c", fate, T, "pearson+transfer", limit=1000, sort="feature")
    assert total == len(want) and {x["feature"] for x in rows} == want


def test_the_sankey_partition_and_fate_labels_read_the_same_rule(edge):
    con, alive, r, tr = edge
    nodes = {(x["side"], x["via"]): x["n"] for x in F.node_flows(con, T, "pearson+transfer")}
    (pp, pu, pg), (ci, cu, ce) = _expected(alive, r, tr, "parent", con), _expected(alive, r, tr, "child", con)
    assert nodes.get(("out", "c"), 0) == pp.sum() and nodes.get(("out", F.UNCERTAIN_VIA), 0) == pu.sum()
    assert nodes.get(("out", None), 0) == pg.sum() and nodes.get(("in", F.UNCERTAIN_VIA), 0) == cu.sum()
    assert nodes.get(("in", "p"), 0) == ci.sum() and nodes.get(("in", None), 0) == ce.sum()
    labels = dict(con.execute(f"""SELECT f.feature, {F.FATE_LABEL} FROM features f
                                  LEFT JOIN ({F.feature_fates('best+transfer')}) s
                                    ON s.model = f.model AND s.feature = f.feature WHERE f.model = 'p'""",
                              F.fate_params(T, "pearson+transfer")).fetchall())
    for i in range(N):
        want = "dead" if not alive["p"][i] else ("persisting" if pp[i] else "uncertain" if pu[i] else "disappearing")
        assert labels[i] == want, i


def test_floors_and_control_read_the_same_rule(edge):
    """Like with like: under pearson+transfer the seed floor (p's replica 0 against replica 1, one unchanged model)
    counts a feature when it matches, or when it fires often enough, since the evidence of a model on itself is 1 for
    every alive feature (tests/test_evidence.py holds that); plain pearson counts matches only. The random-weights
    control reads the rule too, with transfer evidence on the control edge where it has some: a control match
    persists above T, or with the control's transfer r above KEEP."""
    from featureflow.store.writers import insert, insert_floor

    con, alive, r, tr = edge
    rng = np.random.default_rng(11)
    r_floor = rng.choice([0.9, 0.6, 0.2], N)
    insert_floor(con, "p", 1, "pearson", "best", r_floor, alive["p"])
    enough = firings(con, "p") >= MIN_EVENTS
    plain = F.floors(con, T, "pearson")["p"]
    doubt = F.floors(con, T, "pearson+transfer")["p"]
    assert plain["matched"] == (alive["p"] & (r_floor > T)).sum()
    assert doubt["matched"] == (alive["p"] & ((r_floor > T) | enough)).sum() > plain["matched"]
    # the control edge p -> p.random: matches and, for some features, transfer r
    r_ctl, t_ctl = rng.choice([0.8, 0.3], N), rng.choice([0.9, 0.1, np.nan], N)
    insert(con, "control_matches", {"similarity": np.full(N, "pearson", dtype=object),
                                    "parent": np.full(N, "p", dtype=object),
                                    "child": np.full(N, "p.random", dtype=object),
                                    "direction": np.full(N, "p2c", dtype=object), "src": np.arange(N, dtype=np.int32),
                                    "rank": np.zeros(N, dtype=np.int32), "dst": np.arange(N, dtype=np.int32),
                                    "r": r_ctl})
    insert_evidence(con, "transfer", "p", "p.random", {"r": t_ctl})
    sql = F.edge_matches("best+transfer", "AND direction = 'p2c'", control=True)
    got = dict(con.execute(f"SELECT src, persists FROM ({sql})", {"t": T, "sim": "pearson"}).fetchall())
    want = (r_ctl > T) | ((np.nan_to_num(t_ctl, nan=-1) > KEEP) & enough)
    assert [got[i] for i in range(N)] == want.tolist() and want.sum() > (r_ctl > T).sum()


def test_every_fate_at_once_equals_each_fates_edge_list(edge):
    """`flows.edge_fate_sets` (what the planted scorecard reads: one query for every fate) against `edge_features`,
    fate by fate, under every rule."""
    con = edge[0]
    for mode in ("pearson", "pearson+transfer"):
        sets = F.edge_fate_sets(con, "p", "c", T, mode)
        for fate in F.EDGE_FATES:
            rows = F.edge_features(con, "p", "c", fate, T, mode, limit=1000, sort="feature")[1]
            assert sets[fate] == {x["feature"] for x in rows}, (mode, fate)
        assert sum(map(len, sets.values())) > 0


def test_a_carried_hop_ends_the_chain_in_the_model_that_carries_it(edge):
    """Origin under a keep rule, counted here: a child feature matched above T comes from its partner in p; one
    persisting by reverse transfer alone is carried by p with no latent named (the chain ends there: any latent
    past it would be a guess); any other is its own origin, as `flows.origins` (search, the report's origin
    counts) reads it. The feature page's lineage reads it the same way (tests/test_registry.py)."""
    con, alive, r, tr = edge
    dst = dict(con.execute("SELECT src, dst FROM matches WHERE direction = 'c2p'").fetchall())
    persist, _, _ = _expected(alive, r, tr, "child", con)
    want = {}
    for j in range(N):
        if r["c2p"][j] > T:
            want[j] = ("p", dst[j], False)
        elif persist[j]:
            want[j] = ("p", None, True)
        else:
            want[j] = ("c", j, False)
    assert any(c for _, _, c in want.values()) and any(f is not None and m == "p" for m, f, _ in want.values())
    got = F.origins(con, [("c", j) for j in range(N)], T, "pearson+transfer")
    assert {j: (o["origin_model"], o["origin_feature"], o["carried"]) for (_, j), o in got.items()} == want
    plain = F.origins(con, [("c", j) for j in range(N)], T, "pearson")  # no evidence read: no carried hop
    assert not any(o["carried"] for o in plain.values())
