// The API console: each service's own OpenAPI document, as the gateway publishes it.
// Their `servers: [{url: "/"}]` resolves against the document's address, so "Try it out"
// calls go to this same gateway (same origin: no CORS, and the page's CSP allows it).

// Swagger UI's own logo carries an inline <style>, which the page's CSP refuses: the top bar
// names this system instead.
const ConsoleTitle = (system) => ({
  components: {
    Logo: () => system.React.createElement("span", { className: "console-title" }, "microservices-app API console"),
  },
});

window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    urls: [
      { url: "/openapi/user.yaml", name: "User API" },
      { url: "/openapi/order.yaml", name: "Order API" },
      { url: "/openapi/notification.yaml", name: "Notification API" },
    ],
    "urls.primaryName": "User API",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl, ConsoleTitle],
    layout: "StandaloneLayout",
    // Never send the documents to the public validator (and the CSP would refuse it anyway).
    validatorUrl: null,
  });
});
