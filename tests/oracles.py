"""Counts made another way than the project's own SQL, for tests to compare against."""

from __future__ import annotations

import numpy as np


def same_index_share(p_idx: np.ndarray, p_r: np.ndarray, threshold: float) -> tuple[int, int]:
    """(n_same, n_persisting): of the parent features whose match exceeds `threshold` (n_persisting; NaN, an
    unassigned feature, never does), how many are matched to the child feature with the same index.

    SAEs trained from one initialisation (and batch order) keep many features at their index, so a high
    share says the matches were partly manufactured by shared initialisation; independent seeds give
    about 1 / F by chance."""
    p_idx, p_r = np.asarray(p_idx), np.asarray(p_r, dtype=np.float64)
    persisting = np.nan_to_num(p_r, nan=-np.inf) > threshold
    same = persisting & (p_idx == np.arange(len(p_idx)))
    return int(same.sum()), int(persisting.sum())


def lineage_chains(parent_rows: list[tuple], family_order: list[str], threshold: float,
                   persists: dict[tuple[str, str, int], bool] | None = None) -> dict[tuple[str, int], list]:
    """Every feature's chain of best persisting parent matches, by brute force in Python: `parent_rows` are
    the stored match rows of the child side (parent, child, src = child feature, dst = parent feature, r),
    one per edge and child feature (rank 0 of `matches`, or `assignments` for the one-to-one rule). A
    feature's best parent match is its row of largest r over its parents (None r counts as below any,
    ties: the parent first in `family_order`); walk it up while r > threshold. Returns (model, feature) ->
    [(ancestor model, ancestor feature, r of the hop below it), ...] from the feature's parent up to its
    origin (empty: the feature is its own origin). `persists`, where given, says per (parent, child, src) whether
    the hop persists (a split or a part matched into its own split does not, whatever its r): a persisting hop is
    then the best before any stronger one that does not, and the walk goes up while hops persist."""
    best: dict[tuple[str, int], tuple] = {}
    for parent, child, src, dst, r in parent_rows:
        if dst is None:  # unassigned under the one-to-one rule: no partner
            continue
        ok = (r is not None and r > threshold) if persists is None else persists[(parent, child, src)]
        key = (ok, -np.inf if r is None else r, -family_order.index(parent))
        have = best.get((child, src))
        if have is None or key > have[0]:
            best[(child, src)] = (key, parent, dst, r)
    chains: dict[tuple[str, int], list] = {}

    def chain(model: str, feature: int) -> list:
        hop = best.get((model, feature))
        if hop is None or not hop[0][0]:
            return []
        _, pm, pf, r = hop
        return [(pm, pf, r)] + chain(pm, pf)

    for (model, feature) in {(c, s) for _, c, s, _, _ in parent_rows}:
        chains[(model, feature)] = chain(model, feature)
    return chains


def descendant_hops(child_rows: list[tuple], model: str, feature: int, threshold: float,
                    keep: list[str] | None = None) -> list[tuple]:
    """A feature's descendant tree by brute force in Python over the stored match rows of the parent side:
    `child_rows` are (parent, child, src = parent feature, dst = child feature, r), one per edge and parent
    feature (rank 0 of `matches` in direction p2c, or `assignments` for the one-to-one rule, dst None when
    unassigned: no partner). From the feature, every partner in each child model is a hop, persisting when
    r > threshold (None r never does); a persisting hop is followed down the same way. Returns the hops as
    (model, feature, parent model, parent feature, r, persists), kept to the models in `keep` when given."""
    partners: dict[tuple[str, int], list] = {}
    for parent, child, src, dst, r in child_rows:
        if dst is not None:
            partners.setdefault((parent, src), []).append((child, dst, r))
    hops: list[tuple] = []

    def walk(m: str, f: int) -> None:
        for child, dst, r in partners.get((m, f), []):
            persists = r is not None and r > threshold
            hops.append((child, dst, m, f, r, persists))
            if persists:
                walk(child, dst)

    walk(model, feature)
    return [h for h in hops if keep is None or h[0] in keep]


def stored_activations(con, model: str, feature: int) -> np.ndarray:
    """A feature's activation on every sample token, densified in numpy from its sparse `activation_values`
    rows (0 where it does not fire); the sample's length from `sample_tokens`."""
    n = con.execute("SELECT count(*) FROM sample_tokens").fetchone()[0]
    rows = con.execute("SELECT token_index, act FROM activation_values WHERE model = ? AND feature = ?",
                       [model, feature]).fetchall()
    x = np.zeros(n)
    for i, a in rows:
        x[i] = a
    return x


def stored_pearson(con, a: tuple[str, int], b: tuple[str, int]) -> float | None:
    """numpy's Pearson r (`np.corrcoef`) of two features' densified stored activations; None when either
    never varies over the sample."""
    x, y = stored_activations(con, *a), stored_activations(con, *b)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def sankey_node_mismatches(client, params: dict) -> list[tuple]:
    """Every side node of the overview's Sankey (lost, uncertain, split, absorbed, new, origin uncertain, from
    splits, absorbing) against the list its link opens: (node label, href, total listed) wherever the count drawn
    on the node differs from the `total` of the link's JSON twin. Empty: each node counts what it opens."""
    import re
    from urllib.parse import parse_qsl, urlsplit

    node = client.get("/api/", params=params).json()["sankey"]["data"][0]["node"]
    bad = []
    for text, (_, href, key) in zip(node["label"], node["customdata"]):
        if not href or key.startswith(("model:", "edge:", "collapsed:")):
            continue
        drawn = int(re.search(r"· ([\d,]+)$", text).group(1).replace(",", ""))
        u = urlsplit(href)
        listed = client.get("/api" + u.path, params={**dict(parse_qsl(u.query)), "per_page": 1}).json()["total"]
        if listed != drawn:
            bad.append((text, href, listed))
    return bad


def split_event(e: dict, t: float) -> np.ndarray:
    """Per feature: its split (absorption) evidence `e` ({measure: array}) makes it an event at threshold `t`, the
    rule `flows.EVENT` states, written out here: two parts or more that fire together at most MAX_OVERLAP of the
    time, and a fit above `t` with no single part above it or beating the best part by GAIN, or a fit above
    `t` - SLACK whose best part carries at most BALANCE of its r."""
    from featureflow.evidence.split import BALANCE, GAIN, MAX_OVERLAP, SLACK

    fit, single = np.nan_to_num(e["fit_r"], nan=-np.inf), np.nan_to_num(e["single_r"], nan=np.inf)
    shape = (np.nan_to_num(e["parts"], nan=0) >= 2) & (np.nan_to_num(e["overlap"], nan=np.inf) <= MAX_OVERLAP)
    return shape & (((fit > t) & ((single <= t) | (fit - single >= GAIN)))
                    | ((fit > t - SLACK) & (single <= BALANCE * fit)))


def split_owners(e: dict, t: float) -> dict[int, set[int]]:
    """Each part of an event of `e` at `t` (`split_event`) -> the features whose event it is a part of."""
    out: dict[int, set[int]] = {}
    for i in np.flatnonzero(split_event(e, t)):
        for k in (1, 2, 3):
            if np.isfinite(e[f"part_{k}"][i]):
                out.setdefault(int(e[f"part_{k}"][i]), set()).add(int(i))
    return out
