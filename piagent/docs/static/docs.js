// Swagger UI on the document beside this page. The URL is relative, so the page also
// works behind a proxy that serves piagent under a sub-path.
"use strict";

window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  // Never send the document to validator.swagger.io: the page works with no internet.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
