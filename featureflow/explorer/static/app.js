// featureflow explorer: draw every [data-plot] figure (on load, after each htmx swap and after htmx restores a
// page from its history), keep the overview's controls in step with the flows shown, copy links.
(function () {
  var PLOTLY = "/vendor/plotly.min.js"; // loaded only by a page that has a figure to draw
  var loading = null;

  function withPlotly(fn) {
    if (window.Plotly) return fn();
    if (!loading) {
      loading = new Promise(function (ok, fail) {
        var s = document.createElement("script");
        s.src = PLOTLY;
        s.onload = ok;
        s.onerror = fail;
        document.head.appendChild(s);
      });
    }
    loading.then(fn);
  }

  function dark() {
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  }

  // Sankey nodes and bands as keyboard links: each one a tab stop named by its hover text; Enter opens it
  function reachable(el) {
    el.querySelectorAll(".sankey-node, .sankey-link").forEach(function (g) {
      var d = g.__data__ && (g.__data__.node || g.__data__.link);
      var c = d && d.customdata;
      if (!Array.isArray(c) || typeof c[1] !== "string") return;
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "link");
      g.setAttribute("aria-label", c[0]);
      g.dataset.href = c[1];
      if (c[2]) g.dataset.key = c[2];
    });
  }

  function draw(root) {
    var els = (root || document).querySelectorAll("[data-plot]");
    if (!els.length) return;
    withPlotly(function () {
      els.forEach(function (el) {
        if (el.dataset.drawn === "1") return;
        el.textContent = ""; // a dead SVG restored from htmx's history cache is drawn again from the data
        var fig = JSON.parse(el.dataset.plot);
        var sankey = fig.data.length && fig.data[0].type === "sankey";
        var layout = fig.layout || {};
        if (!sankey && window.innerWidth < 700) { // a phone: mode bar and legend clear of the title
          layout.modebar = { orientation: "v" };
          if (layout.legend) layout.legend = Object.assign({}, layout.legend, { orientation: "h", x: 0, xanchor: "left", y: -0.5, yanchor: "top" });
        }
        if (dark()) {
          layout.paper_bgcolor = "rgba(0,0,0,0)";
          layout.plot_bgcolor = "rgba(0,0,0,0)";
          layout.font = Object.assign({}, layout.font, { color: "#dde3ea" });
        }
        // the Sankey has nothing to zoom: no mode bar (its unlabelled buttons were the only tab stops)
        Plotly.newPlot(el, fig.data, layout, { responsive: true, displaylogo: false, displayModeBar: !sankey });
        el.dataset.drawn = "1";
        if (sankey) {
          el.setAttribute("role", "group");
          el.setAttribute("aria-label", (layout.title && layout.title.text) || "Sankey");
          reachable(el);
          el.on("plotly_afterplot", function () { reachable(el); });
        }
        // a Sankey node is draggable, and its drag handler swallows the click: Plotly never reports it, nor does
        // the browser. A press and release on the same node without moving (under 4 px) opens its link
        // (`reachable` put it in data-href); a drag still only moves the node
        if (sankey) {
          var press = null;
          el.addEventListener("pointerdown", function (ev) {
            var g = ev.target && ev.target.closest && ev.target.closest(".sankey-node[data-href]");
            press = g && ev.button === 0 ? { g: g, x: ev.clientX, y: ev.clientY } : null;
          });
          el.addEventListener("pointerup", function (ev) {
            var g = ev.target && ev.target.closest && ev.target.closest(".sankey-node[data-href]");
            var p = press;
            press = null;
            if (!p || g !== p.g || Math.abs(ev.clientX - p.x) + Math.abs(ev.clientY - p.y) > 4) return;
            if (g.dataset.href.charAt(0) === "/") location.assign(g.dataset.href);
          });
        }
        // a point whose customdata is [hover text, href] opens href when clicked (Sankey bands and nodes)
        el.on("plotly_click", function (ev) {
          var p = ev && ev.points && ev.points[0];
          var href = p && Array.isArray(p.customdata) && p.customdata[1];
          if (typeof href === "string" && href.charAt(0) === "/") location.assign(href);
        });
      });
    });
  }

  // the overview's flows (#flows) say which threshold and mode they show: the slider, its label, the mode
  // select, the header links and the jump form follow them (after a swap, and after Back restores a page)
  function sync() {
    var flows = document.getElementById("flows");
    if (!flows) return;
    var t = flows.dataset.threshold, mode = flows.dataset.mode;
    var slider = document.getElementById("threshold-input");
    if (slider) {
      slider.value = t;
      slider.setAttribute("value", t);
      var out = slider.dataset.shows && document.getElementById(slider.dataset.shows);
      if (out) out.textContent = Number(t).toFixed(2);
    }
    var select = document.getElementById("mode-input");
    if (select) {
      select.value = mode;
      select.querySelectorAll("option").forEach(function (o) { o.toggleAttribute("selected", o.value === mode); });
    }
    var q = new URLSearchParams({ threshold: t, mode: mode }).toString();
    document.querySelectorAll("header.top a[href*='threshold=']").forEach(function (a) {
      a.setAttribute("href", a.getAttribute("href").split("?")[0] + "?" + q);
    });
    document.querySelectorAll("header.top form.jump input[name=threshold]").forEach(function (i) { i.value = t; });
    document.querySelectorAll("header.top form.jump input[name=mode]").forEach(function (i) { i.value = mode; });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); sync(); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); sync(); });
  // Back to a search htmx pushed: its results come back from htmx's history cache, but the form's fields show
  // what the page was first rendered with (a field's current value is not in the cached HTML). Each field of the
  // search form takes its value from the restored URL, which holds every field the form sent.
  function syncSearch() {
    var form = document.getElementById("search");
    if (!form) return;
    var q = new URLSearchParams(location.search);
    form.querySelectorAll("select[name], input[name]").forEach(function (f) {
      if (f.type === "radio" || f.type === "checkbox" || !q.has(f.name)) return;
      f.value = q.get(f.name);
      if (f.tagName === "SELECT") {
        f.querySelectorAll("option").forEach(function (o) { o.toggleAttribute("selected", o.value === f.value); });
      }
    });
  }

  document.addEventListener("htmx:historyRestore", function () {
    document.querySelectorAll("[data-plot]").forEach(function (el) { delete el.dataset.drawn; });
    draw(document);
    sync();
    syncSearch();
  });
  // a range input with data-shows="<id>" writes its value into that element while it moves (no inline handlers)
  document.addEventListener("input", function (e) {
    var out = e.target.dataset && e.target.dataset.shows && document.getElementById(e.target.dataset.shows);
    if (out) out.textContent = Number(e.target.value).toFixed(2);
  });
  document.addEventListener("keydown", function (e) {
    var g = e.target.closest && e.target.closest(".sankey-node[data-href], .sankey-link[data-href]");
    if (g && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      location.assign(g.dataset.href);
    }
  });
  // a log / linear switch for a figure: <input type=radio name=... data-scale-for="<plot id>" value="log">
  document.addEventListener("change", function (e) {
    var id = e.target.dataset && e.target.dataset.scaleFor;
    var el = id && document.getElementById(id);
    if (el && window.Plotly && el.dataset.drawn === "1") Plotly.relayout(el, { "yaxis.type": e.target.value });
  });
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy-url]");
    if (!b) return;
    var done = function () { b.textContent = "Link copied"; setTimeout(function () { b.textContent = "Copy link"; }, 1500); };
    if (navigator.clipboard) navigator.clipboard.writeText(location.href).then(done, done); else done();
  });
})();
