// featureflow explorer: draw every [data-plot] figure (on load and after each htmx swap), copy links.
(function () {
  function draw(root) {
    (root || document).querySelectorAll("[data-plot]").forEach(function (el) {
      if (el.dataset.drawn === "1") return;
      var fig = JSON.parse(el.dataset.plot);
      Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
      el.dataset.drawn = "1";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy-url]");
    if (!b) return;
    var done = function () { b.textContent = "Link copied"; setTimeout(function () { b.textContent = "Copy link"; }, 1500); };
    if (navigator.clipboard) navigator.clipboard.writeText(location.href).then(done, done); else done();
  });
})();
