// Starts Swagger UI (from the swagger-ui-dist npm package) on this explorer's OpenAPI schema.
// A file rather than an inline script, so the Content-Security-Policy can allow scripts from 'self' only.
(function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: el.dataset.openapiUrl, dom_id: "#swagger-ui", deepLinking: true,
                                presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout" });
})();
