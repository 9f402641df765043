"""A wide family's Sankey (explorer/collapse.py): sibling groups fold into one node per parent, with the same
feature counts as when every member is drawn, and a click that expands them."""

from __future__ import annotations

from featureflow.explorer import collapse, figures


def zoo(domains=("lua", "stories"), seeds=7):
    """A root, `seeds` fine-tunes per domain, and one merge of the first two: models, edges, flows, node rows.
    Each child i of domain d takes 10 + i root features (persisting) and has 5 new ones; the root loses 3."""
    models = [{"model": "root", "label": "Root", "make": "train", "domains": ["a"]}]
    edges, flows, nodes = [], [], []
    for d in domains:
        for i in range(seeds):
            name = f"{d}-{i}"
            models.append({"model": name, "label": name.upper(), "make": "finetune", "domains": [d]})
            edges.append(("root", name))
            nodes += [{"model": "root", "side": "out", "via": name, "n": 10 + i},
                      {"model": name, "side": "in", "via": "root", "n": 10 + i},
                      {"model": name, "side": "in", "via": None, "n": 5}]
    merge = "merged"
    models.append({"model": merge, "label": "Merged", "make": "merge", "domains": ["lua", "stories"]})
    for p in (f"{domains[0]}-0", f"{domains[1]}-0"):
        edges.append((p, merge))
        nodes += [{"model": p, "side": "out", "via": merge, "n": 4}, {"model": merge, "side": "in", "via": p, "n": 4}]
    nodes.append({"model": "root", "side": "out", "via": None, "n": 3})
    flows = [{"parent": p, "child": c, "persisting": 10, "parent_alive": 100, "persist_share": 0.1, "inherited": 10}
             for p, c in edges]
    return models, edges, flows, nodes


def test_sibling_groups_fold_all_but_the_first_and_never_a_parent():
    models, edges, *_ = zoo()
    groups = collapse.sibling_groups(models, edges)
    assert groups == {"lua-0": [f"lua-{i}" for i in range(7)], "stories-0": [f"stories-{i}" for i in range(7)]}
    folded = collapse.folded(models, edges, set())
    assert folded == {"lua-0": [f"lua-{i}" for i in range(1, 7)], "stories-0": [f"stories-{i}" for i in range(1, 7)]}
    assert collapse.folded(models, edges, "all") == {}
    assert collapse.folded(models, edges, {"lua-0"}) == {"stories-0": folded["stories-0"]}
    small = models[:5]  # 5 members: nothing folds
    assert collapse.folded(small, [e for e in edges if e[1] in {m["model"] for m in small}], set()) == {}
    assert collapse.parse_expand(" all ") == "all" and collapse.parse_expand("a, b,") == {"a", "b"}
    assert collapse.expand_query({"b"}, "a") == "a,b" and collapse.expand_query({"b"}, None) == "all"


def _drawn(fig):
    node = fig["data"][0]["node"]
    keys = [c[2] for c in node["customdata"]]
    link = fig["data"][0]["link"]
    into = {}
    for s, t, v in zip(link["source"], link["target"], link["value"]):
        into[keys[t]] = into.get(keys[t], 0) + v
    out = {}
    for s, t, v in zip(link["source"], link["target"], link["value"]):
        out[keys[s]] = out.get(keys[s], 0) + v
    return keys, node, link, into, out


def test_folded_sankey_keeps_every_count_and_expands_on_click():
    models, edges, flows, nodes = zoo()
    folded = collapse.folded(models, edges, set())
    full = figures.sankey(models, flows, nodes, 0.7)
    fig = figures.sankey(models, flows, nodes, 0.7, folded=folded, expand_href=lambda g: f"/?expand={g}")
    keys, node, link, into, out = _drawn(fig)
    fkeys, _, _, _, fout = _drawn(full)
    hidden = {m for ms in folded.values() for m in ms}
    assert not any(h in k.split(":") for k in keys for h in hidden)  # no node of a folded member
    assert len(keys) < len(fkeys) / 2
    # the root sends out as many features as when every member is drawn; each folded node takes exactly what the
    # root's rows send into that group's folded members (counted from the rows, not the figure)
    assert out["model:root"] == fout["model:root"] == sum(r["n"] for r in nodes if r["model"] == "root")
    for g, names in folded.items():
        want = sum(r["n"] for r in nodes if r["model"] == "root" and r["via"] in names)
        assert into[f"collapsed:{g}:root"] == want == sum(10 + i for i in range(1, 7))
        i = keys.index(f"collapsed:{g}:root")
        assert node["customdata"][i][1] == f"/?expand={g}" and node["label"][i].startswith(f"+6 like {g.upper()}")
    # the group's first member, the merge and its parents are drawn as before
    for m in ("model:lua-0", "model:stories-0", "model:merged"):
        assert into[m] == _drawn(full)[3][m]
    # nothing folded: the same figure as without the argument
    assert figures.sankey(models, flows, nodes, 0.7, folded={}) == full
