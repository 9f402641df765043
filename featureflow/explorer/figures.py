"""Plotly figures as plain dicts (data + layout), drawn client-side by static/app.js.

Pure functions of query results, so they are tested without a browser.
"""

from __future__ import annotations

from urllib.parse import quote

import numpy as np

from featureflow.explorer import numbers
from featureflow.store.flows import PART_VIA, SPLIT_VIA, UNCERTAIN_VIA

PERSIST = "rgba(46, 139, 87, 0.55)"
LOST = "rgba(150, 150, 150, 0.45)"
NEW = "rgba(230, 126, 34, 0.55)"
UNSURE = "#b39b2e"                      # uncertain features' nodes (a rule with doubt, e.g. pearson+transfer)
UNSURE_BAND = "rgba(179, 155, 46, 0.45)"
SPLIT = "#8e44ad"                       # split / absorbed and split-part / absorbing features' nodes (split evidence)
SPLIT_BAND = "rgba(142, 68, 173, 0.45)"
HEAT_A, HEAT_B = "230, 126, 34", "52, 120, 219"  # token shading of /compare's features A (orange) and B (blue)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def depths(models: list[dict], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest path from a root to each model (models arrive in topological order)."""
    d: dict[str, int] = {}
    for m in models:
        d[m["model"]] = max((d[p] + 1 for p, c in edges if c == m["model"]), default=0)
    return d


def sankey(models: list[dict], flows: list[dict], nodes: list[dict], threshold: float, mode_label: str = "",
           state: str = "", reproducible: bool = False, replicated: list[str] | tuple = (),
           folded: dict[str, list[str]] | None = None, expand_href=None) -> dict:
    """The family as a Sankey in which every alive feature is counted once per model node.

    Models sit in columns by depth in the family, each as tall as its alive features. Between a parent and
    a child a grey junction stands for their matching: a parent's alive features flow into the junction of
    the child holding their best match above the threshold (or to its 'lost' node), and a child's alive
    features flow out of the junction of the parent holding their best match (or from its 'new' node).
    `nodes` is `flows.node_flows`; `flows` gives the per-edge counts, shares and noise floors shown on
    hover and on the junctions. Every node and band carries [hover text, href, key] as customdata: the href
    opens its features (`state` is the threshold / mode query string carried along); the key names what the
    node is ("model:<m>", "edge:<parent>:<child>", "lost:<m>", "new:<m>", and under a rule with doubt
    "uncertain:<m>", "unsure-origin:<m>", with split evidence "split:<m>", "absorbed:<m>", "split-in:<m>",
    "absorbing:<m>"; a band: its source's and target's keys joined by " > ").

    Only nodes that some band touches are drawn, each at an explicit position: Plotly leaves out a node
    without links and then places the others by the wrong entries of `x` and `y`, so a junction with no
    flow (nothing persists on that edge), or whose child has no feature in this view, is not emitted at all;
    `undrawn` lists those edges.

    `reproducible`: `nodes` count only reproducible features of the `replicated` members (`flows.node_flows`),
    and the junctions show reproducible persistence beside its reproducible floor where measured.

    `folded` (`collapse.folded`): group -> members drawn as one node ("collapsed:<group>:<parent>") on their parent,
    as many features as flow from it into them; its href is `expand_href(group)`. A folded member has no children,
    so nothing else is lost: its own nodes, junctions and bands are left out."""
    hidden = {m: g for g, ms in (folded or {}).items() for m in ms}
    into_folded: dict[tuple[str, str], int] = {}  # (parent, group) -> features flowing into the group's members
    if hidden:
        for r in nodes:
            if r["side"] == "out" and r["via"] in hidden and r["model"] not in hidden:
                key = (r["model"], hidden[r["via"]])
                into_folded[key] = into_folded.get(key, 0) + r["n"]
        models = [m for m in models if m["model"] not in hidden]
        flows = [f for f in flows if f["parent"] not in hidden and f["child"] not in hidden]
        nodes = [r for r in nodes if r["model"] not in hidden and not (r["side"] == "out" and r["via"] in hidden)]
        nodes = nodes + [{"model": p, "side": "out", "via": ("folded", g), "n": n} for (p, g), n in into_folded.items()]
    order = {m["model"]: i for i, m in enumerate(models)}
    depth = depths(models, [(f["parent"], f["child"]) for f in flows])
    span = max(1, max(depth.values(), default=0))
    label = {m["model"]: m["label"] for m in models}
    out = {(r["model"], r["via"]): r["n"] for r in nodes if r["side"] == "out"}
    into = {(r["model"], r["via"]): r["n"] for r in nodes if r["side"] == "in"}
    children = {m["model"]: [f["child"] for f in flows if f["parent"] == m["model"]] for m in models}
    parents = {m["model"]: [f["parent"] for f in flows if f["child"] == m["model"]] for m in models}
    amp = "&" + state if state else ""
    spec: dict[str, dict] = {}  # every node that may be drawn, by key
    bands: list[tuple] = []     # (source key, target key, value, colour, hover, href)

    def edge_href(p: str, c: str, fate: str) -> str:
        return f"/edges/{quote(p)}/{quote(c)}?fate={fate}{amp}"

    def column_x(d: float) -> float:
        return 0.01 + 0.98 * d / span

    def node(key: str, text: str, color: str, x: float, hover: str, href: str, rank: tuple) -> str:
        """`rank` orders the nodes of a column top to bottom: each child's feeders beside it, losses last."""
        spec.setdefault(key, {"label": text, "color": color, "x": x, "custom": [hover, href, key], "rank": rank})
        return key

    def link(a: str, b: str, v: int, c: str, hover: str, href: str) -> None:
        if v > 0:
            bands.append((a, b, v, c, hover, href))

    def side_node(name: str, side: str, via, fate: str, key: str, text: str, color: str, band: str, rank: tuple,
                  hover) -> None:
        """A model's features that go into no other model on one side (`via` of `node_flows`: lost, uncertain, split
        out of a parent; new, origin uncertain, from splits into a child): a node beside the model, linked to the
        edge list of `fate` (to search, with several children or parents). `hover(n, any, some)` says what they are
        (any, some: the one other model's label, or "any child" / "some child" with several)."""
        others = children[name] if side == "out" else parents[name]
        n = (out if side == "out" else into).get((name, via), 0)
        if not (others and n):
            return
        one = len(others) == 1
        href = ((edge_href(name, others[0], fate) if side == "out" else edge_href(others[0], name, fate)) if one
                else f"/features?model={quote(name)}&fate={fate}{amp}")
        where = label[others[0]] if one else ("any child" if side == "out" else "any parent")
        some = label[others[0]] if one else ("some child" if side == "out" else "some parent")
        x = column_x(min(depth[k] for k in others)) if side == "out" else column_x(depth[name] - 0.5)
        said = hover(n, where, some)
        k = node(f"{key}:{name}", f"{text} · {n:,}", color, x, said, href, rank)
        link(*((f"model:{name}", k) if side == "out" else (k, f"model:{name}")), n, band, said, href)

    def alive(m: str) -> int:
        side = into if parents[m] else out
        return sum(n for (model, _), n in side.items() if model == m)

    kind = "reproducible" if reproducible else "alive"
    for i, m in enumerate(models):
        name = m["model"]
        own = kind if not reproducible or name in replicated else "alive (no seed replicas: all)"
        node(f"model:{name}", f"{m['label']} · {alive(name):,}", PALETTE[i % len(PALETTE)], column_x(depth[name]),
             f"{m['label']}: {alive(name):,} {own} features", f"/features?model={quote(name)}{amp}", (order[name],))
    undrawn = []
    for f in flows:
        p, c = f["parent"], f["child"]
        floor = ("no noise floor measured" if f.get("floor_share") is None else
                 f"noise floor {numbers.pct(f['floor_share'])} ({f['floor_source_label']})")
        if f.get("control_share") is not None:
            floor += f", random-weights control {numbers.pct(f['control_share'])}"
        short = "" if f.get("floor_share") is None else f" · floor {numbers.pct(f['floor_share'])}"
        text = f"{numbers.pct(f['persist_share'])} persist{short}"
        if reproducible and f.get("repro_share") is not None:
            control = ("" if f.get("repro_control_share") is None else
                       f"control {numbers.pct(f['repro_control_share'])} · ")
            text = (f"{numbers.pct(f['repro_share'])} [{numbers.pct(f['repro_lo'])}–{numbers.pct(f['repro_hi'])}] "
                    f"persist · {control}floor {numbers.pct(f['repro_floor_share'])}")
            floor += (f"; of {f['repro_features']:,} reproducible parent features ({f['stable_parent']:,} rows, each seed "
                      f"replica held out in turn) {numbers.pct(f['repro_share'])} persist (95% CI "
                      f"{numbers.pct(f['repro_lo'])}–{numbers.pct(f['repro_hi'])}); on the same features the "
                      + ("random-weights control is unavailable" if f.get("repro_control_share") is None else
                         f"random-weights control {numbers.pct(f['repro_control_share'])} (95% CI "
                         f"{numbers.pct(f['repro_control_lo'])}–{numbers.pct(f['repro_control_hi'])})")
                      + f" and the seed floor {numbers.pct(f['repro_floor_share'])} (95% CI "
                      f"{numbers.pct(f['repro_floor_lo'])}–{numbers.pct(f['repro_floor_hi'])})"
                      + ("" if f.get("beyond_share") is None else
                         f"; beyond token identity {numbers.pct(f['beyond_share'])}"))
        if f.get("token_level") is not None:
            floor += f"; {f['token_level']:,} persisting features are token-level, {f['beyond_token']:,} not"
        j = node(f"edge:{p}:{c}", text, "#7f8c8d",
                 column_x((depth[p] + depth[c]) / 2),
                 f"{label[p]} → {label[c]}: {f['persisting']:,} of {f['parent_alive']:,} parent features persist "
                 f"({numbers.pct(f['persist_share'])}; {floor}); {f['inherited']:,} child features inherit",
                 edge_href(p, c, "persisting"), (order[c], 0, order[p]))
        a, b = out.get((p, c), 0), into.get((c, p), 0)
        if not (a or b):
            undrawn.append({"parent": p, "child": c, "persisting": f["persisting"], "inherited": f["inherited"]})
        also = (f" ({f['persisting'] - a:,} more persist here but match better in another child)"
                if f["persisting"] > a else "")
        link(f"model:{p}", j, a, PERSIST, f"{a:,} {label[p]} features persist into {label[c]}{also}; "
             f"{numbers.pct(f['persist_share'])} persist on this edge, {floor}", edge_href(p, c, "persisting"))
        also = (f" ({f['inherited'] - b:,} more inherit from here but match better in another parent)"
                if f["inherited"] > b else "")
        link(j, f"model:{c}", b, PERSIST, f"{b:,} {label[c]} features inherited from {label[p]}{also}",
             edge_href(p, c, "inherited"))
    for m in models:
        name = m["model"]
        lab, last = m["label"], (len(models), order[name])
        side_node(name, "out", None, "disappearing", "lost", "lost", "#aaaaaa", LOST, last,
                  lambda n, w, s: f"{n:,} {lab} features match no feature of {w} above the threshold")
        side_node(name, "out", UNCERTAIN_VIA, "uncertain", "uncertain", "uncertain", UNSURE, UNSURE_BAND, (*last, 0),
                  lambda n, w, s: f"{n:,} {lab} features match no feature of {w} above the threshold, but the mode's "
                               f"evidence says {s} still carries them: uncertain")
        side_node(name, "out", SPLIT_VIA, "split", "split", "split", SPLIT, SPLIT_BAND, (*last, 1),
                  lambda n, w, s: f"{n:,} {lab} features are reproduced by several features of {w} together better "
                               f"than by any one: split")
        side_node(name, "out", PART_VIA, "absorbed", "absorbed", "absorbed", SPLIT, SPLIT_BAND, (*last, 2),
                  lambda n, w, s: f"{n:,} {lab} features persist in no feature of {w}, but are parts of one broader "
                               f"feature there: absorbed")
        side_node(name, "in", PART_VIA, "split-part", "split-in", "from splits", SPLIT, SPLIT_BAND, (order[name], 3),
                  lambda n, w, s: f"{n:,} {lab} features are inherited from no feature of {w}, but are parts of a "
                               f"split feature there")
        side_node(name, "in", SPLIT_VIA, "absorbing", "absorbing", "absorbing", SPLIT, SPLIT_BAND, (order[name], 4),
                  lambda n, w, s: f"{n:,} {lab} features are reproduced by several features of {w} together better "
                               f"than by any one: absorbing")
        side_node(name, "in", UNCERTAIN_VIA, "uncertain-origin", "unsure-origin", "origin uncertain", UNSURE,
                  UNSURE_BAND, (order[name], 2),
                  lambda n, w, s: f"{n:,} {lab} features match no feature of {w} above the threshold, but the mode's "
                               f"evidence says {s} already carried them: origin uncertain")
        side_node(name, "in", None, "emerging", "new", "new", "#e67e22", NEW, (order[name], 1),
                  lambda n, w, s: f"{n:,} {lab} features match no feature of {w} above the threshold: new")
    for (p, g), n in into_folded.items():  # each folded group: one node beside its first member
        names = folded[g]
        said = (f"{n:,} {label[p]} features persist into one of {len(names)} collapsed members like {label[g]} "
                f"({', '.join(names)}); click to draw them")
        k = node(f"collapsed:{g}:{p}", f"+{len(names)} like {label[g]} · {n:,}", "#95a5a6",
                 column_x(depth[g]) if g in depth else column_x(depth[p] + 1), said,
                 expand_href(g) if expand_href else "", (order.get(g, len(models)), 9))
        link(f"model:{p}", k, n, PERSIST, said, expand_href(g) if expand_href else "")
    # a junction whose child has no feature in this view (e.g. no reproducible one) would dangle: leave it out too
    touched = {k for x, y, *_ in bands for k in (x, y)}
    for f in flows:
        p, c = f["parent"], f["child"]
        j = f"edge:{p}:{c}"
        if j in touched and f"model:{c}" not in touched:
            bands[:] = [band for band in bands if j not in band[:2]]
            undrawn.append({"parent": p, "child": c, "persisting": f["persisting"], "inherited": f["inherited"]})
    title = (("Reproducible feature flows" if reproducible else "Feature flows") +
             f" at r > {numbers.thr(threshold)}" + (f" ({mode_label})" if mode_label else ""))
    if not bands:  # nothing to draw (e.g. no reproducible feature at this threshold): Plotly fails on an empty Sankey
        return {"data": [], "undrawn": undrawn,
                "layout": {"title": {"text": title}, "height": 200, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
                           "xaxis": {"visible": False}, "yaxis": {"visible": False},
                           "annotations": [{"text": f"No {kind} feature to draw at this threshold and mode",
                                            "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5,
                                            "y": 0.5}]}}
    used = {k for a, b, *_ in bands for k in (a, b)}
    keys = [k for k in spec if k in used]  # creation order, linked nodes only
    index = {k: i for i, k in enumerate(keys)}
    xs = [spec[k]["x"] for k in keys]
    return {
        "data": [{
            "type": "sankey", "arrangement": "snap",
            "node": {"label": [spec[k]["label"] for k in keys], "color": [spec[k]["color"] for k in keys],
                     "pad": 14, "thickness": 16, "x": xs, "y": _spread(xs, [spec[k]["rank"] for k in keys]),
                     "customdata": [spec[k]["custom"] for k in keys], "hovertemplate": "%{customdata[0]}<extra></extra>"},
            "link": {"source": [index[a] for a, *_ in bands], "target": [index[b] for _, b, *_ in bands],
                     "value": [v for _, _, v, *_ in bands], "color": [c for _, _, _, c, *_ in bands],
                     "customdata": [[h, href, f"{a} > {b}"] for a, b, _, _, h, href in bands],
                     "hovertemplate": "%{customdata[0]}<extra></extra>"},
        }],
        "layout": {"title": {"text": title},
                   # a wide family's column of nodes (each child with its junction, 'new', 'uncertain' and split nodes)
                   # gets room: 34 px a node, so the small nodes' labels do not overlap
                   "height": max(520, 80 + 34 * max(xs.count(x) for x in set(xs))),
                   "margin": {"l": 10, "r": 30, "t": 40, "b": 30}, "font": {"size": 12}},
        "undrawn": undrawn,
    }


def inheritance_sankey(h: dict, labels: dict[str, str], href: str = "") -> dict:
    """A merged member's features by where they come from (`flows.inheritance_counts` row `h`): one band per class
    into the merged model: from both parents, from the first only, from the second only, split or absorbed,
    uncertain, new. Every band's width is its count, so the merged node is as tall as its features. `href` opens
    the merged model's features; a class's node and band open those it inherits so (`&inherits=<class>`)."""
    first, second = labels.get(h["first_parent"], h["first_parent"]), labels.get(h["second_parent"], h["second_parent"])
    classes = [("both", f"both {first} and {second}", "#8e6bb8"), ("first", f"{first} only", PALETTE[0]),
               ("second", f"{second} only", PALETTE[1]), ("split", "from splits / absorbing", SPLIT),
               ("uncertain", "uncertain", UNSURE), ("new", "new", "#e67e22")]
    shown = [(k, text, color) for k, text, color in classes if h.get(k)]
    merged = labels.get(h["model"], h["model"])
    if not shown:
        return {"data": [], "layout": {"title": {"text": f"No feature of {merged} in this view"}, "height": 120}}
    n = len(shown)
    node_labels = [f"{text} · {h[k]:,}" for k, text, _ in shown] + [f"{merged} · {h['n']:,}"]
    hover = [f"{h[k]:,} of {h['n']:,} {merged} features ({numbers.pct(h[k] / h['n'])}): {text}" for k, text, _ in shown]
    links = [f"{href}&inherits={k}" if href else "" for k, *_ in shown]  # a class's node and band open its list
    return {
        "data": [{"type": "sankey", "arrangement": "snap",  # two columns: Plotly stacks each without overlap
                  "node": {"label": node_labels, "color": [c for *_, c in shown] + ["#34495e"], "pad": 12,
                           "thickness": 16,
                           "customdata": [[t, link, f"class:{k}"] for (k, *_), t, link in zip(shown, hover, links)]
                           + [[f"{merged}: {h['n']:,} features", href, f"model:{h['model']}"]],
                           "hovertemplate": "%{customdata[0]}<extra></extra>"},
                  "link": {"source": list(range(n)), "target": [n] * n, "value": [h[k] for k, *_ in shown],
                           "color": [_alpha(c) for *_, c in shown],
                           "customdata": [[t, link, f"class:{k} > model:{h['model']}"]
                                          for (k, *_), t, link in zip(shown, hover, links)],
                           "hovertemplate": "%{customdata[0]}<extra></extra>"}}],
        "layout": {"title": {"text": f"Where {merged}'s features come from"}, "height": 320,
                   "margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "font": {"size": 12}},
    }


def _alpha(color: str, a: float = 0.45) -> str:
    """A #rrggbb colour as rgba with alpha `a` (a band's colour from its node's)."""
    c = color.lstrip("#")
    return f"rgba({int(c[0:2], 16)}, {int(c[2:4], 16)}, {int(c[4:6], 16)}, {a})" if len(c) == 6 else color


def _spread(xs: list[float], ranks: list[tuple] | None = None) -> list[float]:
    """Evenly spaced y positions within each column, top to bottom by rank (default: node order)."""
    ranks = ranks or [(i,) for i in range(len(xs))]
    out = []
    for i, x in enumerate(xs):
        column = sorted(ranks[j] for j in range(len(xs)) if xs[j] == x)
        out.append(0.01 + 0.98 * (column.index(ranks[i]) + 0.5) / len(column))
    return out


def histogram(edges: list[float], counts: list[int], title: str = "Activation histogram (non-zero)",
              x: str = "activation", y: str = "tokens", log_y: bool = True) -> dict:
    if not counts:
        return {"data": [], "layout": {"title": {"text": "never fires in the sample"}, "height": 220}}
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    width = edges[1] - edges[0]
    return {
        "data": [{"type": "bar", "x": centers, "y": counts, "width": width, "marker": {"color": "#e67e22"},
                  "hovertemplate": f"{x} %{{x:.3f}}: %{{y}} {y}<extra></extra>"}],
        "layout": {"title": {"text": title}, "height": 240, "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
                   "xaxis": {"title": {"text": x}},
                   # log counts by default: one tall bin near 0 would flatten the rest (the page toggles linear)
                   "yaxis": {"title": {"text": y}, **({"type": "log"} if log_y else {})}},
    }


def slerp_curves(merge: dict, labels: dict[str, str]) -> dict:
    """Accuracy on each parent's own domains against t, root baselines dashed, chosen t marked; the title names
    the merge's method (`method_label`: 'SLERP', 'linear merge', ...)."""
    traces = []
    p0, p1 = merge["parent0"], merge["parent1"]
    method = merge.get("method_label") or "merge"
    for i, parent in enumerate((p0, p1)):
        doms = merge["curve_domains"][parent]
        by_t: dict[float, list[float]] = {}
        for p in merge["points"]:
            if p["domain"] in doms:
                by_t.setdefault(p["t"], []).append(p["accuracy"])
        ts = sorted(by_t)
        traces.append({"type": "scatter", "mode": "lines+markers", "x": ts,
                       "y": [sum(by_t[t]) / len(by_t[t]) for t in ts], "name": f"{'/'.join(doms)} accuracy",
                       "line": {"color": PALETTE[i]}})
        for b in {r["root"] for r in merge["baselines"]}:
            vals = [r["accuracy"] for r in merge["baselines"] if r["root"] == b and r["domain"] in doms]
            if vals:
                traces.append({"type": "scatter", "mode": "lines", "x": [0, 1], "y": [sum(vals) / len(vals)] * 2,
                               "name": f"{labels.get(b, b)} on {'/'.join(doms)}",
                               "line": {"dash": "dash", "color": PALETTE[i]}})
    return {
        "data": traces,
        "layout": {
            "title": {"text": f"{method} {labels.get(p0, p0)} (t=0) → {labels.get(p1, p1)} (t=1)"}, "height": 420,
            "xaxis": {"title": {"text": "t"}, "range": [0, 1]}, "yaxis": {"title": {"text": "next-token accuracy"}},
            "shapes": [{"type": "line", "x0": merge["t"], "x1": merge["t"], "yref": "paper", "y0": 0, "y1": 1,
                        "line": {"color": "#333", "dash": "dot"}}],
            # above the plot area, beside the line: clear of the curves' markers and of the line itself
            "annotations": [{"x": merge["t"], "yref": "paper", "y": 1.0, "yanchor": "bottom", "showarrow": False,
                             "xanchor": "left" if merge["t"] <= 0.7 else "right", "xshift": 5 if merge["t"] <= 0.7 else -5,
                             "bgcolor": "rgba(255, 255, 255, 0.85)", "text": f"chosen t = {numbers.num(merge['t'])}"}],
            "margin": {"l": 60, "r": 20, "t": 70, "b": 50}, "legend": {"orientation": "h", "y": -0.2},
        },
    }


def survival_curves(merge: dict, labels: dict[str, str], threshold: float) -> dict:
    """Each parent's features along the merge's path, on the accuracy curves' t axis: the share of its features
    (`survival`'s population) whose survival r exceeds the threshold at each t, its 95% interval as error bars, the
    chosen t and the t where the two shares cross marked; under each curve, dashed in its colour, the share of the
    same features that survive into the parent's random-weights control (`survival_control`: token identity alone,
    the scale's bottom; its interval in the hover)."""
    traces, shapes, notes = [], [], []
    for i, parent in enumerate((merge["parent0"], merge["parent1"])):
        pts = merge["survival"].get(parent, [])
        if not pts:
            continue
        traces.append({"type": "scatter", "mode": "lines+markers", "x": [p["t"] for p in pts],
                       "y": [p["share"] for p in pts], "line": {"color": PALETTE[i]},
                       "name": f"{labels.get(parent, parent)}'s {pts[0]['population']} features that fire on the "
                               f"path's tokens ({pts[0]['n']:,})",
                       "error_y": {"type": "data", "symmetric": False,
                                   "array": [p["hi"] - p["share"] for p in pts],
                                   "arrayminus": [p["share"] - p["lo"] for p in pts]}})
        c = (merge.get("survival_control") or {}).get(parent)
        if c and c["share"] is not None:
            text = (f"{c['survived']:,} of {c['n']:,} {labels.get(parent, parent)} features survive into its root's "
                    f"random-weights control ({c['control']}): {numbers.pct(c['share'])} "
                    f"[{numbers.pct(c['lo'])}, {numbers.pct(c['hi'])}]")
            traces.append({"type": "scatter", "mode": "lines", "x": [0, 1], "y": [c["share"], c["share"]],
                           "line": {"color": PALETTE[i], "dash": "dash", "width": 1},
                           "name": f"{labels.get(parent, parent)} into its root's random-weights control",
                           "hovertemplate": text + "<extra></extra>"})
    cross = merge.get("survival_crossing")
    for x, text, dash in ((merge["t"], f"chosen t = {numbers.num(merge['t'])}", "dot"),
                          (cross, "features cross", "dash")):
        if x is None:
            continue
        shapes.append({"type": "line", "x0": x, "x1": x, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#333", "dash": dash}})
        # each label on the side away from the other line (the two are often close)
        other = cross if dash == "dot" else merge["t"]
        left = (x >= other) if other is not None else x <= 0.7
        notes.append({"x": x, "yref": "paper", "y": 1.0, "yanchor": "bottom", "showarrow": False,
                      "xanchor": "left" if left else "right", "xshift": 5 if left else -5,
                      "bgcolor": "rgba(255, 255, 255, 0.85)",
                      "text": text if dash == "dot" else f"{text} at t = {numbers.num(x)}"})
    return {"data": traces, "layout": {
        "title": {"text": f"Features along the path: survival r > {numbers.thr(threshold)}"}, "height": 380,
        "xaxis": {"title": {"text": "t"}, "range": [0, 1]},
        "yaxis": {"title": {"text": "share of the parent's features"}, "range": [-0.03, 1.05]},  # a share of 0 (the control) drawn above the axis
        "shapes": shapes, "annotations": notes, "margin": {"l": 60, "r": 20, "t": 70, "b": 50},
        "legend": {"orientation": "h", "y": -0.2}}}


def score_histograms(rows: list[dict], labels: list[tuple[str, str]], score: str = "sim_score", bins: int = 20) -> dict:
    """One panel per model: the distribution of explanation scores (share of the group's features per bin),
    persisting vs not-persisting features overlaid (the paper's Figure 6), over the score's own range:
    [0, 1] for detection (balanced accuracy), [-1, 1] for simulation (Pearson r). Models without children
    show all their features in one trace."""
    n = max(1, len(labels))
    lo = 0.0 if score == "detection_score" else -1.0  # balanced accuracy lies in [0, 1], a Pearson r in [-1, 1]
    data, layout = [], {"height": 300, "barmode": "overlay", "margin": {"l": 50, "r": 10, "t": 60, "b": 40},
                        "title": {"text": f"Explanation scores ({score.replace('_', ' ')}) per model", "x": 0.01},
                        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}}
    shown: set[str] = set()
    for i, (model, label) in enumerate(labels):
        axis = "" if i == 0 else str(i + 1)
        groups = {"persisting": [], "not persisting": [], "all (no children)": []}
        for r in rows:
            if r["model"] == model and r[score] is not None:
                key = "all (no children)" if r["persisting"] is None else (
                    "persisting" if r["persisting"] else "not persisting")
                groups[key].append(r[score])
        for (name, vals), color in zip(groups.items(), [PALETTE[2], PALETTE[1], PALETTE[0]]):
            if vals:
                counts, edges = np.histogram(vals, bins=bins, range=(lo, 1.0))  # last bin closed: 1.0 counts
                data.append({"type": "bar", "x": ((edges[:-1] + edges[1:]) / 2).tolist(),
                             "y": (counts / len(vals)).tolist(), "width": (1 - lo) / bins, "name": name,
                             "legendgroup": name, "showlegend": name not in shown, "opacity": 0.6,
                             "customdata": counts.tolist(), "marker": {"color": color, "line": {"width": 0}},
                             "hovertemplate": "%{x:.3f}: %{customdata} features (%{y:.1%})<extra>" + name + "</extra>",
                             "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
                shown.add(name)
        layout[f"xaxis{axis}"] = {"domain": [i / n + 0.02, (i + 1) / n - 0.02], "range": [lo, 1],
                                  "title": {"text": label}, "automargin": True}
        layout[f"yaxis{axis}"] = {"anchor": f"x{axis}", "title": {"text": "share" if i == 0 else ""}, "automargin": True}
    return {"data": data, "layout": layout}


def heatmap(names: list[str], sims: list[dict], title: str) -> dict:
    """Cosine similarities coloured over their real range: diverging around 0 (RdBu) when they span it,
    else a sequential scale from their minimum to their maximum."""
    idx = {n: i for i, n in enumerate(names)}
    z = [[None] * len(names) for _ in names]
    for r in sims:
        if r["a"] in idx and r["b"] in idx:
            z[idx[r["a"]]][idx[r["b"]]] = r["cos"]
    vals = [v for row in z for v in row if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (-1.0, 1.0)
    colors = ({"colorscale": "RdBu", "reversescale": True, "zmid": 0} if lo < 0 < hi else
              {"colorscale": "Blues" if lo >= 0 else "Reds", "reversescale": True})  # darker = further from 0
    return {"data": [{"type": "heatmap", "x": names, "y": names, "z": z, "zmin": lo, "zmax": hi, **colors,
                      "colorbar": {"title": {"text": "cos"}},
                      "hovertemplate": "%{y} vs %{x}: cos %{z:.3f}<extra></extra>"}],
            "layout": {"title": {"text": title}, "height": 460, "margin": {"l": 20, "r": 10, "t": 40, "b": 20},
                       "xaxis": {"automargin": True, "tickangle": -40},
                       "yaxis": {"autorange": "reversed", "automargin": True}}}


def fingerprint_map(points: list[dict], ratio: tuple[float, float] | None, method: str = "pca") -> dict:
    by_label: dict[str, list[dict]] = {}
    for p in points:
        by_label.setdefault(p["label"], []).append(p)
    data = []
    for i, (label, pts) in enumerate(sorted(by_label.items())):
        data.append({"type": "scatter", "mode": "markers+text", "name": label,
                     "x": [p["x"] for p in pts], "y": [p["y"] for p in pts],
                     "text": [p["entity"] if p["kind"] == "member" else "" for p in pts], "textposition": "top center",
                     "marker": {"size": [14 if p["kind"] == "member" else 8 for p in pts],
                                "color": PALETTE[i % len(PALETTE)],
                                "symbol": ["diamond" if p["kind"] == "member" else "circle" for p in pts]},
                     "customdata": [p["entity"] for p in pts], "hovertemplate": "%{customdata}<extra></extra>"})
    if method == "pca":
        axes = {"xaxis": {"title": {"text": f"PC1 ({numbers.pct(ratio[0])} of variance)"}},
                "yaxis": {"title": {"text": f"PC2 ({numbers.pct(ratio[1])} of variance)"}}}
    else:
        axes = {"xaxis": {"title": {"text": "t-SNE 1"}}, "yaxis": {"title": {"text": "t-SNE 2"}}}
    return {"data": data, "layout": {
        "title": {"text": f"Fingerprint map ({'PCA' if method == 'pca' else 't-SNE, cosine'})"}, "height": 460,
        "margin": {"l": 50, "r": 10, "t": 40, "b": 50}, **axes}}


def additivity_curves(rows: list[dict]) -> dict:
    data = []
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        pts = [r for r in rows if r["model"] == model]
        for key, name, dash in (("cos_interp", "cos to (1-t)·d0 + t·d1", None), ("cos_sum", "cos to d0 + d1", "dot"),
                                ("rel_norm_interp", "|d| / |(1-t)·d0 + t·d1|", "dash")):
            data.append({"type": "scatter", "mode": "lines+markers", "name": f"{model}: {name}",
                         "x": [p["t"] for p in pts], "y": [p[key] for p in pts],
                         "line": {"color": PALETTE[(i * 3 + len(data)) % len(PALETTE)], "dash": dash}})
    return {"data": data, "layout": {"title": {"text": "Additivity of merge fingerprints along the merge sweep"},
                                     "height": 380, "xaxis": {"title": {"text": "t"}, "range": [0, 1]},
                                     "margin": {"l": 50, "r": 10, "t": 40, "b": 50},
                                     "legend": {"orientation": "h", "y": -0.3}}}


def pair_scatter(joint: dict, name_a: str, name_b: str, r: float | None, max_points: int = 4000) -> dict:
    """Feature A's activation against B's on every sample token where either fires (`Store.joint_activations`;
    beyond `max_points` every k-th of them, in token order); the tokens where neither fires sit at (0, 0) and
    are counted in the title, not drawn. Axis titles carry the two features' colours on /compare."""
    n = len(joint["a"])
    step = max(1, -(-n // max_points))
    head = f"{name_a} against {name_b}: r = {r:.3f}" if r is not None else f"{name_a} against {name_b} (r undefined)"
    note = (f"{n:,} tokens where either fires" + (f", every {step}th drawn" if step > 1 else "") +
            f"; {joint['neither']:,} where neither fires, not drawn")
    return {
        "data": [{"type": "scatter", "mode": "markers", "x": joint["a"][::step].tolist(),
                  "y": joint["b"][::step].tolist(), "customdata": joint["token_index"][::step].tolist(),
                  "marker": {"size": 5, "color": "rgba(80, 80, 80, 0.45)"},
                  "hovertemplate": "sample token %{customdata}: A %{x:.3f}, B %{y:.3f}<extra></extra>"}],
        "layout": {"title": {"text": f"{head}<br><sup>{note}</sup>"}, "height": 440,
                   "margin": {"l": 20, "r": 20, "t": 70, "b": 20},
                   "xaxis": {"title": {"text": f"A: {name_a}", "font": {"color": f"rgb({HEAT_A})"}},
                             "automargin": True, "rangemode": "tozero"},
                   "yaxis": {"title": {"text": f"B: {name_b}", "font": {"color": f"rgb({HEAT_B})"}},
                             "automargin": True, "rangemode": "tozero"}},
    }


def floor_histogram(hist: list[dict], label: str, threshold: float, bins: int = 20) -> dict:
    """Replica-vs-replica match r of one member's features (bins on [-1, 1]) with the threshold marked."""
    width = 2 / bins
    counts = {h["bin"]: h["n"] for h in hist}
    return {
        "data": [{"type": "bar", "x": [-1 + width * (i + 0.5) for i in range(bins)],
                  "y": [counts.get(i, 0) for i in range(bins)], "width": width * 0.95, "marker": {"color": PERSIST},
                  "hovertemplate": "r %{x:.2f}: %{y} features<extra></extra>"}],
        "layout": {"title": {"text": f"{label}: match r between seed replicas"}, "height": 260,
                   "xaxis": {"title": {"text": "match r in the other replica"}, "range": [-1, 1]},
                   "yaxis": {"title": {"text": "features"}},
                   "shapes": [{"type": "line", "x0": threshold, "x1": threshold, "yref": "paper", "y0": 0, "y1": 1,
                               "line": {"dash": "dash", "color": "#444"}}],
                   "margin": {"l": 50, "r": 10, "t": 40, "b": 45}},
    }
