"""Issue 31: a fate that admits doubt. Under a `+transfer` mode a feature with no match above the threshold is
*uncertain* where transfer says the other model still carries it, and disappearing (emerging) only where transfer
agrees that it is gone. A constructed edge with every combination of match r and transfer r, read back through the
store's one fate rule (flows, edge lists, the Sankey's partition, fate labels) against a count made here."""

from __future__ import annotations

import numpy as np
import pytest

from featureflow.evidence.transfer import TAU
from featureflow.store import flows as F
from featureflow.store.writers import insert_evidence

from edge_store import one_edge  # tests/edge_store.py

T = 0.7
N = 40


@pytest.fixture(scope="module")
def edge():
    """One edge p -> c of N features each side: match r and transfer r drawn to cover every combination (some
    features without a transfer value, some dead)."""
    rng = np.random.default_rng(3)
    con, alive, r = one_edge(rng, N, [0.95, 0.75, 0.7, 0.5, 0.1, -0.2])
    tr = {d: rng.choice([0.9, TAU + 0.01, TAU, 0.1, np.nan], N) for d in ("p2c", "c2p")}
    insert_evidence(con, "transfer", "p", "c", {"r": tr["p2c"]})
    insert_evidence(con, "reverse-transfer", "p", "c", {"r": tr["c2p"]})
    return con, alive, r, tr


def _expected(alive, r, tr, side):
    """(persist, uncertain, gone) masks over one side's features, counted here."""
    d, m = ("p2c", "p") if side == "parent" else ("c2p", "c")
    persist = alive[m] & (r[d] > T)
    uncertain = alive[m] & ~(r[d] > T) & (np.nan_to_num(tr[d], nan=-1) > TAU)
    return persist, uncertain, alive[m] & ~persist & ~uncertain


def test_flows_count_uncertain_exactly_where_match_and_transfer_disagree(edge):
    con, alive, r, tr = edge
    (pp, pu, pg), (ci, cu, ce) = _expected(alive, r, tr, "parent"), _expected(alive, r, tr, "child")
    assert pu.any() and pg.any() and cu.any() and ce.any()  # every combination is present
    got = F.flows(con, T, "pearson+transfer")[0]
    assert (got["persisting"], got["uncertain"], got["disappearing"]) == (pp.sum(), pu.sum(), pg.sum())
    assert (got["inherited"], got["uncertain_origin"], got["emerging"]) == (ci.sum(), cu.sum(), ce.sum())
    # without doubt the same matches give no uncertain call: disappearing is both
    plain = F.flows(con, T, "pearson")[0]
    assert plain["uncertain"] == plain["uncertain_origin"] == 0
    assert plain["disappearing"] == pu.sum() + pg.sum() and plain["emerging"] == cu.sum() + ce.sum()
    assert plain["persisting"] == got["persisting"] and plain["persist_share"] == got["persist_share"]
    # transfer survival: alive parent features transfer says the child carries, matched or not
    carried = alive["p"] & (np.nan_to_num(tr["p2c"], nan=-1) > TAU)
    assert got["carried"] == carried.sum() and got["carried_share"] == pytest.approx(carried.sum() / alive["p"].sum())
    assert plain["carried"] is None and plain["carried_share"] is None


@pytest.mark.parametrize("fate,side,which", [("persisting", "parent", 0), ("uncertain", "parent", 1),
                                             ("disappearing", "parent", 2), ("inherited", "child", 0),
                                             ("uncertain-origin", "child", 1), ("emerging", "child", 2)])
def test_edge_lists_hold_each_fates_features(edge, fate, side, which):
    con, alive, r, tr = edge
    want = set(np.flatnonzero(_expected(alive, r, tr, side)[which]).tolist())
    total, rows = F.edge_features(con, "p", "c", fate, T, "pearson+transfer", limit=1000, sort="feature")
    assert total == len(want) and {x["feature"] for x in rows} == want


def test_the_sankey_partition_and_fate_labels_read_the_same_rule(edge):
    con, alive, r, tr = edge
    nodes = {(x["side"], x["via"]): x["n"] for x in F.node_flows(con, T, "pearson+transfer")}
    (pp, pu, pg), (ci, cu, ce) = _expected(alive, r, tr, "parent"), _expected(alive, r, tr, "child")
    assert nodes.get(("out", "c"), 0) == pp.sum() and nodes.get(("out", F.UNCERTAIN_VIA), 0) == pu.sum()
    assert nodes.get(("out", None), 0) == pg.sum() and nodes.get(("in", F.UNCERTAIN_VIA), 0) == cu.sum()
    labels = dict(con.execute(f"""SELECT f.feature, {F.FATE_LABEL} FROM features f
                                  LEFT JOIN ({F.feature_fates('best+transfer')}) s
                                    ON s.model = f.model AND s.feature = f.feature WHERE f.model = 'p'""",
                              F.fate_params(T, "pearson+transfer")).fetchall())
    for i in range(N):
        want = "dead" if not alive["p"][i] else ("persisting" if pp[i] else "uncertain" if pu[i] else "disappearing")
        assert labels[i] == want, i
