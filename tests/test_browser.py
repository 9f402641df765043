"""Headless Chromium (Debian's, driven by Playwright) against the explorer served on 127.0.0.1."""

import re
import shutil
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(tiny_pipeline):
    import uvicorn

    from featureflow.explorer.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(tiny_pipeline.cfg.store_path()), host="127.0.0.1", port=port,
                                        log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(5)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        browser.close()


def test_overview_draws_the_sankey_and_the_threshold_redraws_it(page, server):
    page.goto(server + "/")
    page.wait_for_selector("#sankey .sankey-node", timeout=15000)
    assert page.locator("#sankey .sankey-link").count() > 0
    before = page.locator("#flows table").first.inner_text()
    page.locator("#threshold-input").fill("0.4")
    page.locator("#threshold-input").dispatch_event("change")
    page.wait_for_function("() => location.search.includes('threshold=0.4')", timeout=10000)
    page.wait_for_selector("#flows[data-threshold='0.4'] .sankey-node", timeout=10000)
    assert page.locator("#flows table").first.inner_text() != before
    assert not page.errors


def test_click_through_to_a_feature_with_highlighted_tokens(page, server):
    page.goto(server + "/features?model=lua&sort=density")
    page.locator("#results table a").first.click()
    page.wait_for_url("**/models/lua/features/*")
    page.wait_for_selector(".ctx .tok")
    bg = page.locator(".ctx .tok.center").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert "230, 126, 34" in bg  # the centre token of a top example is highlighted (orange, any alpha)
    title = page.locator(".ctx .tok.center").first.get_attribute("title")
    assert float(title.split(" ")[0]) > 0  # hover shows its value
    page.wait_for_selector("#histogram .main-svg")
    assert not page.errors


def test_follow_a_lineage_link(page, server, tiny_pipeline):
    import duckdb

    from oracles import lineage_chains

    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    rows = con.execute("""SELECT parent, child, src, dst, r FROM matches
                          WHERE rank = 0 AND direction = 'c2p' AND similarity = 'pearson'""").fetchall()
    order = [m for (m,) in con.execute("SELECT model FROM models ORDER BY idx").fetchall()]
    t = con.execute("SELECT default_threshold FROM runs").fetchone()[0]
    con.close()
    # a luastories feature carried from a parent at the default threshold, and that parent feature
    feat, (pm, pf, _) = min((f, ch[0]) for (m, f), ch in lineage_chains(rows, order, t).items()
                            if m == "luastories" and ch)
    page.goto(f"{server}/models/luastories/features/{feat}")
    link = page.locator(f".lineage a[href^='/models/{pm}/features/{pf}?']")  # the view state rides along
    assert link.count() >= 1
    link.first.click()
    page.wait_for_url(f"**/models/{pm}/features/{pf}?threshold=*")
    assert f"#{pf}" in page.locator("h1").inner_text()


def test_search_updates_in_place_and_pushes_the_url(page, server):
    page.goto(server + "/features")
    page.select_option("#search select[name=model]", "tinystories")
    page.wait_for_function("() => location.search.includes('model=tinystories')", timeout=10000)
    rows = page.locator("#results tbody tr td:first-child").all_inner_texts()
    assert rows and all(r.startswith("tinystories") for r in rows)


def test_back_after_two_searches_shows_the_filters_of_the_results_it_restores(page, server):
    """htmx restores the results of a pushed search from its history cache; the form's selects must say which
    filters those results are of (they showed the first-rendered page's)."""
    page.goto(server + "/features?model=lua")
    page.select_option("#search select[name=model]", "tinystories")
    page.wait_for_function("() => location.search.includes('model=tinystories')", timeout=10000)
    page.select_option("#search select[name=fate]", "persisting")
    page.wait_for_function("() => location.search.includes('fate=persisting')", timeout=10000)
    page.go_back()
    page.wait_for_function("() => !location.search.includes('fate=persisting')", timeout=10000)
    page.wait_for_timeout(300)
    assert page.input_value("#search select[name=model]") == "tinystories"
    assert page.input_value("#search select[name=fate]") == ""
    rows = page.locator("#results tbody tr td:first-child").all_inner_texts()
    assert rows and all(r.startswith("tinystories") for r in rows)
    assert not page.errors


def test_bad_feature_page_is_a_helpful_404(page, server):
    resp = page.goto(server + "/models/lua/features/99999")
    assert resp.status == 404 and "features 0 to" in page.content()


def test_open_a_case_study_url_directly(page, server):
    resp = page.goto(server + "/cases/assignment")
    assert resp.status == 200
    assert "Variable assignment" in page.locator("h1").inner_text()
    page.wait_for_selector("table.matrix td")
    assert page.locator(".ctx .tok").count() > 0
    page.goto(server + "/autointerp")
    page.wait_for_selector("#sim-scores .main-svg")


def test_models_page_draws_the_fingerprint_views(page, server):
    page.goto(server + "/models")
    page.wait_for_selector("#fp-heatmap .main-svg")
    page.wait_for_selector("#fp-map .main-svg")
    page.wait_for_selector("#fp-additivity .main-svg")
    assert not page.errors


def test_click_a_sankey_band_and_land_on_its_feature_list(page, server):
    page.goto(server + "/?threshold=0.5")
    page.wait_for_selector("#sankey .sankey-link", timeout=15000)
    band = page.locator("#sankey .sankey-link").first  # the first band: parent -> junction of the first edge
    band.dispatch_event("click")
    page.wait_for_url("**/edges/**", timeout=10000)
    assert "threshold=0.5" in page.url and "fate=" in page.url
    page.wait_for_selector("#results table tbody tr td a")
    fate = page.url.split("fate=")[1].split("&")[0]
    heading = page.locator("h1").inner_text()
    assert f"{fate} features" in heading
    assert int(heading.split(": ")[1].split(" ")[0]) == page.locator("#results tbody tr").count() or "next" in \
        page.locator("nav.pages").inner_text()
    assert not page.errors


def test_a_mouse_click_on_a_merge_sankey_node_opens_its_list_and_a_drag_does_not(page, server):
    """A Sankey node is draggable, so neither Plotly nor the browser reports a click on it; app.js opens its link on
    a press and release that does not move. /merge's inheritance Sankey: a node (a class) opens the features it
    inherits so, as many as the node counts; dragging the node moves it and opens nothing."""
    def first_node():
        page.goto(server + "/merge?threshold=0.5&mode=pearson")
        page.wait_for_selector("[id^=inheritance-] .sankey-node[data-href]", timeout=15000)
        node = page.locator("[id^=inheritance-] .sankey-node[data-href]").first
        node.locator("rect.node-rect").scroll_into_view_if_needed()
        box = node.locator("rect.node-rect").bounding_box()
        return node, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    node, x, y = first_node()
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + 30, steps=5)
    page.mouse.up()
    page.wait_for_timeout(500)
    assert "/merge" in page.url
    node, x, y = first_node()
    href, label = node.get_attribute("data-href"), node.locator(".node-label").text_content()
    page.mouse.click(x, y)
    page.wait_for_url(lambda url: "inherits=" in url, timeout=10000)
    assert page.url.endswith(href) and "inherits=" in href
    page.wait_for_selector("#results")
    count = int(label.split("·")[-1].replace(",", "").strip())
    assert page.locator("#results").inner_text().split(" feature")[0].strip().endswith(str(count))
    assert not page.errors


def test_a_threshold_set_on_the_overview_reaches_a_feature_page_through_links(page, server):
    page.goto(server + "/")
    page.wait_for_selector("#sankey .sankey-node", timeout=15000)
    page.locator("#threshold-input").fill("0.42")
    page.locator("#threshold-input").dispatch_event("change")
    page.wait_for_selector("#flows[data-threshold='0.42']", timeout=10000)
    page.locator("header nav a", has_text="Features").click()
    page.wait_for_url("**/features?*threshold=0.42*")
    page.locator("#results table a").first.click()
    page.wait_for_url("**/features/*")
    assert "similarity > 0.42" in page.locator(".card h2", has_text="Lineage").inner_text()
    assert page.locator("form.viewstate input[name=threshold]").input_value() == "0.42"
    assert not page.errors


def test_api_docs_load_with_no_network(page, server):
    outside = []

    def only_local(route):
        if route.request.url.startswith(server):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", only_local)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock", timeout=15000)
    assert page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/edges/\{parent\}/\{child\}$")).count() == 1
    assert not outside and not page.errors
    page.unroute("**/*")


def test_a_case_highlights_the_same_token_positions_in_every_models_row(page, server):
    page.goto(server + "/cases/assignment?threshold=0.2&mode=pearson")
    page.wait_for_selector(".shared .shared-row .tok")
    windows = page.evaluate("""() => [...document.querySelectorAll('.shared')].map(w =>
        [...w.querySelectorAll('.shared-row')].map(r => ({
            feature: r.dataset.model + ':' + r.dataset.feature,
            idx: [...r.querySelectorAll('.tok')].map(t => t.dataset.i),
            center: [...r.querySelectorAll('.tok.center')].map(t => t.dataset.i),
            lit: [...r.querySelectorAll('.tok')].filter(t => getComputedStyle(t).backgroundColor !== 'rgba(0, 0, 0, 0)')
                    .map(t => t.dataset.i),
            positive: [...r.querySelectorAll('.tok')].filter(t => parseFloat(t.title) > 0).map(t => t.dataset.i),
            outline: [...r.querySelectorAll('.tok.center')].map(t => getComputedStyle(t).outlineStyle + getComputedStyle(t).borderStyle)})))""")
    assert len(windows) >= 2
    models = {row["feature"].split(":")[0] for row in windows[0]}
    assert {"babypython", "lua", "tinystories", "luastories"} <= models  # every model has a row at this threshold
    for rows in windows:
        assert len({tuple(r["idx"]) for r in rows}) == 1 and rows[0]["idx"]  # identical token indices per row
        assert len({tuple(r["center"]) for r in rows}) == 1 and len(rows[0]["center"]) == 1  # one peak, same place
        assert len({r["outline"][0] for r in rows}) == 1 and rows[0]["outline"][0] != "nonenone"  # drawn alike
        for r in rows:
            assert r["lit"] == r["positive"]  # shaded exactly where that model's feature fires
    assert any(len({tuple(r["lit"]) for r in rows}) > 1 for rows in windows)  # the rows do differ in activation
    assert not page.errors


def test_compare_picker_opens_two_features(page, server):
    page.goto(server + "/compare")
    page.select_option("select[name=a_model]", "lua")
    page.fill("input[name=a_feature]", "3")
    page.select_option("select[name=b_model]", "tinystories")
    page.fill("input[name=b_feature]", "4")
    page.locator("form.picker button[type=submit]").click()
    page.wait_for_url("**/compare?a=lua%3A3&b=tinystories%3A4*")
    page.wait_for_selector("#scatter .main-svg")
    assert page.locator("#scatter .point").count() > 0
    assert "lua #3" in page.locator("h1").inner_text() and "tinystories #4" in page.locator("h1").inner_text()
    colours = page.evaluate("""() => ['.row-a', '.row-b'].map(s => [...document.querySelectorAll(s + ' .tok')]
        .map(t => getComputedStyle(t).backgroundColor).filter(c => c !== 'rgba(0, 0, 0, 0)')
        .map(c => c.split(',').slice(0, 3).join(',')))""")
    assert colours[0] and colours[1] and not set(colours[0]) & set(colours[1])  # two distinct highlight colours
    assert not page.errors


def _stable_alive(tiny_pipeline, model: str, threshold: float) -> int:
    """Alive features of `model` matched above `threshold` in every seed replica (pearson, best), counted
    from the replica match artefacts with numpy."""
    import numpy as np

    pl = tiny_pipeline
    alive = np.diff(pl.load_acts(model).indptr) > 0
    ok = [np.load(pl.floor(model, r, "pearson") / "topk.npz")["p2c_r"][:, 0] > threshold for r in pl.replicas(model)[1:]]
    return int((alive & np.all(ok, axis=0)).sum())


def test_the_reproducible_sankey_and_its_toggle_survive_a_shared_link(page, server, tiny_pipeline):
    root = tiny_pipeline.cfg.roots()[0]
    label = tiny_pipeline.cfg.member(root).label or root
    t = tiny_pipeline.cfg.matching.threshold
    n_alive = int((__import__("numpy").diff(tiny_pipeline.load_acts(root).indptr) > 0).sum())
    n_stable = _stable_alive(tiny_pipeline, root, t)
    assert n_stable < n_alive  # the two views differ

    def root_count() -> int:
        text = next(x for x in page.locator("#sankey .sankey-node .node-label").all_text_contents()
                    if x.startswith(f"{label} · "))
        return int(text.split("·")[1].replace(",", ""))

    page.goto(server + "/")  # replicas exist: the reproducible view is on by default
    page.wait_for_selector("#flows[data-population='reproducible'] #sankey .sankey-node", timeout=15000)
    assert page.locator("#population-reproducible").is_checked()
    assert page.locator("#sankey .gtitle").text_content().startswith("Reproducible feature flows")
    assert root_count() == n_stable
    page.locator("#population-all").check()  # toggle: redrawn in place, the URL carries the state
    page.wait_for_function("() => location.search.includes('population=all')", timeout=10000)
    page.wait_for_selector("#flows[data-population='all'] #sankey .sankey-node", timeout=10000)
    assert root_count() == n_alive
    shared = page.url
    page.goto("about:blank")
    page.goto(shared)  # the shared link opens the same view, toggle and all
    page.wait_for_selector("#flows[data-population='all'] #sankey .sankey-node", timeout=15000)
    assert page.locator("#population-all").is_checked() and not page.locator("#population-reproducible").is_checked()
    assert page.locator("#sankey .gtitle").text_content().startswith("Feature flows")
    assert root_count() == n_alive
    page.locator("#population-reproducible").check()
    page.wait_for_function("() => location.search.includes('population=reproducible')", timeout=10000)
    page.wait_for_selector("#flows[data-population='reproducible'] #sankey .sankey-node", timeout=10000)
    shared = page.url
    page.goto("about:blank")
    page.goto(shared)
    page.wait_for_selector("#flows[data-population='reproducible'] #sankey .sankey-node", timeout=15000)
    assert page.locator("#population-reproducible").is_checked()
    assert root_count() == n_stable
    assert not page.errors


# every band as drawn: the node whose drawn box holds each end of the band's path, by its key (customdata[2])
_BANDS_JS = """() => {
  const svg = document.querySelector('#sankey .main-svg');
  const nodes = [...document.querySelectorAll('#sankey .sankey-node')].map(g => {
    const r = g.querySelector('.node-rect').getBoundingClientRect();
    return {key: g.__data__.node.customdata[2], label: g.__data__.node.label, x0: r.left, x1: r.right, y0: r.top, y1: r.bottom};
  });
  const at = (path, x, y) => {
    const p = path.ownerSVGElement.createSVGPoint(); p.x = x; p.y = y;
    return p.matrixTransform(path.getScreenCTM());
  };
  const holder = (pt, side) => nodes.filter(n => Math.abs((side === 'src' ? n.x1 : n.x0) - pt.x) < 2
                                               && pt.y >= n.y0 - 2 && pt.y <= n.y1 + 2).map(n => n.key);
  const bands = [...document.querySelectorAll('#sankey path.sankey-link')].map(path => {
    const num = path.getAttribute('d').match(/-?[0-9.]+(e-?[0-9]+)?/g).map(Number);
    // M x0,y0 C c1 c2 x1,y1 L ...: the band's top edge runs from (x0, y0) at its source to (x1, y1) at its target
    return {want: path.__data__.link.customdata[2], value: path.__data__.link.value,
            src: holder(at(path, num[0], num[1]), 'src'), dst: holder(at(path, num[6], num[7]), 'dst')};
  });
  return {nodes, bands};
}"""


def test_sankey_bands_join_the_right_models_at_every_mode_and_threshold(page, server, tiny_pipeline):
    import duckdb

    con = duckdb.connect(str(tiny_pipeline.cfg.store_path()), read_only=True)
    edges = set(con.execute("SELECT parent, child FROM model_edges").fetchall())
    labels = dict(con.execute("SELECT model, label FROM models").fetchall())
    modes = list(con.execute("SELECT modes FROM runs").fetchone()[0])
    con.close()
    parents = {c: sorted(p for p, cc in edges if cc == c) for _, c in edges}
    depth = {m: 0 for m in labels}
    for _ in labels:  # longest path from a root, by relaxation
        for p, c in edges:
            depth[c] = max(depth[c], depth[p] + 1)
    undrawn_seen = 0
    for mode in modes:
        for t, population in [(t, pop) for t in (0.5, 0.8, 0.99) for pop in ("all", "reproducible")]:
            page.goto(f"{server}/?threshold={t}&mode={mode}&population={population}")
            page.wait_for_selector("#sankey .main-svg", timeout=15000)
            data = page.evaluate("() => JSON.parse(document.getElementById('sankey').dataset.plot).data")
            if not data:  # nothing flows in this population: an empty chart that says so, no Sankey
                assert population == "reproducible" and "No reproducible feature" in page.locator("#sankey").inner_text()
                continue
            page.wait_for_selector("#sankey .sankey-node", timeout=15000)
            got = page.evaluate(_BANDS_JS)
            fig = data[0]
            assert len(got["bands"]) == len([v for v in fig["link"]["value"] if v > 0]) > 0
            for b in got["bands"]:
                src, dst = b["want"].split(" > ")
                assert b["src"] == [src] and b["dst"] == [dst], (mode, t, b)  # drawn between the nodes it names
                kind, _, rest = src.partition(":")
                if kind == "model":  # a parent's features go to the junction of one of its children, or are lost
                    assert dst == f"lost:{rest}" or (dst.startswith("edge:") and tuple(dst[5:].split(":")) in edges
                                                     and dst.split(":")[1] == rest)
                elif kind == "edge":  # a junction feeds the child of its edge
                    assert tuple(rest.split(":")) in edges and dst == f"model:{rest.split(':')[1]}"
                else:  # new features enter their own model, which has parents
                    assert kind == "new" and dst == f"model:{rest}" and parents.get(rest)
            x = {n["key"]: (n["x0"] + n["x1"]) / 2 for n in got["nodes"]}
            for n in got["nodes"]:
                if n["key"].startswith("model:"):
                    assert n["label"].startswith(labels[n["key"][6:]] + " · ")
            models = [k for k in x if k.startswith("model:")]
            for a in models:  # columns by depth in the family
                for b in models:
                    da, db = depth[a[6:]], depth[b[6:]]
                    assert (x[a] < x[b]) == (da < db) and (abs(x[a] - x[b]) < 2) == (da == db)
            for b in got["bands"]:  # every band flows rightwards, from an earlier column into a later one
                src, dst = b["want"].split(" > ")
                assert x[src] < x[dst], (mode, t, b)
            for k in x:
                if k.startswith("edge:"):
                    p, c = k[5:].split(":")
                    assert x[f"model:{p}"] < x[k] < x[f"model:{c}"]
            flows = page.evaluate("() => fetch('/api/' + location.search).then(r => r.json())")["flows"]
            empty = [f for f in flows if not (f["persisting"] or f["inherited"])]
            for f in empty:  # a zero-flow edge: no junction, named beside the Sankey
                assert f"edge:{f['parent']}:{f['child']}" not in x
                assert f"{labels[f['parent']]} → {labels[f['child']]}" in page.locator("p.undrawn").inner_text()
            undrawn_seen += len(empty)
    assert undrawn_seen > 0  # zero-flow edges were exercised
    assert not page.errors


def test_back_after_two_threshold_moves_restores_one_threshold_everywhere_and_a_live_sankey(page, server):
    page.goto(server + "/?population=all")
    page.wait_for_selector("#sankey .sankey-node", timeout=15000)
    for t in ("0.6", "0.7"):  # fill() moves the slider as a user would: input, then one change event
        page.locator("#threshold-input").fill(t)
        page.wait_for_selector(f"#flows[data-threshold='{t}'] .sankey-node", timeout=10000)
    page.go_back()
    page.wait_for_function("() => location.search.includes('threshold=0.6')", timeout=10000)
    page.wait_for_selector("#flows[data-threshold='0.6'] .sankey-link", timeout=10000)
    page.wait_for_function("() => document.querySelector('#sankey path.sankey-link').__data__ !== undefined",
                           timeout=10000)
    assert page.locator("#threshold-input").input_value() == "0.6"
    assert page.locator("#threshold-value").inner_text() == "0.60"
    want = page.evaluate("() => fetch('/api/?threshold=0.6&population=all').then(r => r.json())")
    rows = page.locator("#flows table.flows").first.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[1] for r in rows] == [str(f["persisting"]) for f in want["flows"]]
    assert "r > 0.60" in page.locator("#sankey .gtitle").text_content()
    # the Sankey is live: a band still hovers and opens its features at the restored threshold
    band = page.locator("#sankey path.sankey-link").first
    band.dispatch_event("click")
    page.wait_for_url("**/edges/**threshold=0.6**", timeout=10000)
    assert not page.errors


def test_the_sankey_is_reachable_by_keyboard(page, server):
    page.goto(server + "/?threshold=0.5")
    page.wait_for_selector("#sankey .sankey-node[tabindex='0']", timeout=15000)
    assert page.locator("#sankey .modebar-btn").count() == 0  # no unlabelled buttons in the tab order
    page.locator("#threshold-input").focus()
    for _ in range(10):  # tab from the slider into the Sankey
        page.keyboard.press("Tab")
        if page.evaluate("() => !!document.activeElement.closest('#sankey')"):
            break
    el = page.evaluate("() => [document.activeElement.getAttribute('role'), document.activeElement.getAttribute('aria-label'),"
                       " document.activeElement.dataset.href]")
    assert el[0] == "link" and el[1] and el[2].startswith("/")
    page.keyboard.press("Enter")
    page.wait_for_url("**" + el[2].split("?")[0] + "*", timeout=10000)
    assert not page.errors


def test_every_page_fits_a_390_px_phone(page, server):
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for path in ("/", "/features", "/models", "/models/lua", "/floors", "/merge", "/autointerp", "/cases",
                     "/cases/assignment", "/models/lua/features/3", "/edges/babypython/lua", "/compare?a=lua:3&b=lua:4"):
            page.goto(server + path)
            page.wait_for_load_state("networkidle")
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, path  # nothing sticks out
            nav = page.locator("header nav a").last.bounding_box()
            assert nav["x"] + nav["width"] <= 390, path  # the whole nav is on screen
        assert not page.errors
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
