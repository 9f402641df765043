// featureflow explorer: draw every [data-plot] figure (on load and after each htmx swap), copy links.
(function () {
  function draw(root) {
    (root || document).querySelectorAll("[data-plot]").forEach(function (el) {
      if (el.dataset.drawn === "1") return;
      var fig = JSON.parse(el.dataset.plot);
      Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
      el.dataset.drawn = "1";
      // a point whose customdata is [hover text, href] opens href when clicked (Sankey bands and nodes)
      el.on("plotly_click", function (ev) {
        var p = ev && ev.points && ev.points[0];
        var href = p && Array.isArray(p.customdata) && p.customdata[1];
        if (typeof href === "string" && href.charAt(0) === "/") location.assign(href);
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) {
    draw(e.target);
    // the overview's threshold / mode changed in place: carry the new view state in every header link
    var flows = document.getElementById("flows");
    if (!flows) return;
    var q = new URLSearchParams({ threshold: flows.dataset.threshold, mode: flows.dataset.mode }).toString();
    document.querySelectorAll("header.top a[href*='threshold=']").forEach(function (a) {
      a.setAttribute("href", a.getAttribute("href").split("?")[0] + "?" + q);
    });
    document.querySelectorAll("header.top form.jump input[name=threshold]").forEach(function (i) { i.value = flows.dataset.threshold; });
    document.querySelectorAll("header.top form.jump input[name=mode]").forEach(function (i) { i.value = flows.dataset.mode; });
  });
  // a range input with data-shows="<id>" writes its value into that element while it moves (no inline handlers)
  document.addEventListener("input", function (e) {
    var out = e.target.dataset && e.target.dataset.shows && document.getElementById(e.target.dataset.shows);
    if (out) out.textContent = Number(e.target.value).toFixed(2);
  });
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy-url]");
    if (!b) return;
    var done = function () { b.textContent = "Link copied"; setTimeout(function () { b.textContent = "Copy link"; }, 1500); };
    if (navigator.clipboard) navigator.clipboard.writeText(location.href).then(done, done); else done();
  });
})();
