// Drives the API console (/docs) in Debian's headless Chromium the way a person would: reads the
// definition selector, opens each API, registers, logs in, pastes the token into "Authorize",
// calls GET /api/users/me and places an order, then saves a screenshot. It reports what it saw
// as one JSON object on stdout; tests/e2e/test_docs_browser.py decides whether that is right.
//
//   DOCS_URL=http://127.0.0.1/docs SCREENSHOT=var/artifacts/docs.png node tests/browser/docs_console.mjs
//
// Environment: DOCS_URL, SCREENSHOT, EMAIL, PASSWORD, NAME (the account to register),
// CHROMIUM (default /usr/bin/chromium), STEP_TIMEOUT_MS (default 20000).
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const DOCS_URL = env("DOCS_URL");
const SCREENSHOT = env("SCREENSHOT");
const EMAIL = env("EMAIL");
const PASSWORD = env("PASSWORD");
const NAME = env("NAME", "Console Tester");
const STEP_TIMEOUT_MS = Number(env("STEP_TIMEOUT_MS", "20000"));
// The gateway allows 30 logins a minute per address, and other suites share it: wait on a 429.
const MAX_TRIES = 30;

const report = {
  definitions: [],
  titles: {},
  calls: {},
  cspViolations: [],
  consoleErrors: [],
  otherOrigins: [],
  screenshot: null,
};

// A fresh profile each run: nothing cached or remembered from another run.
const profile = mkdtempSync(join(tmpdir(), "docs-console-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  // What Debian's Chromium needs here (no GPU, no user namespaces for its sandbox), and no
  // traffic of its own (updates, sync, first-run fetches) to anything but the gateway.
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 1280, height: 900 },
  timeout: 60_000,
});

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const origin = new URL(DOCS_URL).origin;
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith("data:") && new URL(url).origin !== origin) report.otherOrigins.push(url);
  });
  page.on("console", (message) => {
    const text = message.text();
    if (text.startsWith("csp-violation ")) report.cspViolations.push(JSON.parse(text.slice(14)));
    else if (message.type() === "error") report.consoleErrors.push(text);
  });
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      const { effectiveDirective, blockedURI, sourceFile, lineNumber } = event;
      console.log(`csp-violation ${JSON.stringify({ effectiveDirective, blockedURI, sourceFile, lineNumber })}`);
    });
  });

  await page.goto(DOCS_URL);
  const selector = page.locator(".topbar select");
  await page.locator(".info .title").waitFor();
  report.definitions = await selector.evaluate((select) => [...select.options].map((o) => o.textContent.trim()));

  const openDefinition = async (name) => {
    await selector.selectOption({ label: name });
    // The title is that document's info.title once it is loaded and rendered.
    await page.locator(".info .title").waitFor();
    await page.locator(".opblock").first().waitFor();
    const title = await page.locator(".info .title").evaluate((h) => h.firstChild.textContent.trim());
    report.titles[name] = title;
    return title;
  };
  for (const name of report.definitions) await openDefinition(name);

  const operation = (method, path) =>
    page.locator(`.opblock-${method}`).filter({ has: page.locator(`.opblock-summary-path[data-path="${path}"]`) });

  // Try it out, with a JSON body when given; answers the live response and the request URL shown.
  const tryItOut = async (key, method, path, body) => {
    const block = operation(method, path);
    if (!(await block.locator(".opblock-body").isVisible())) await block.locator(".opblock-summary").click();
    const tryOut = block.locator("button.try-out__btn");
    if ((await tryOut.textContent()).trim() === "Try it out") await tryOut.click();
    if (body !== undefined) await block.locator("textarea.body-param__text").fill(JSON.stringify(body, null, 2));
    let call;
    for (let attempt = 1; attempt <= MAX_TRIES; attempt += 1) {
      await block.locator("button.execute").click();
      const status = block.locator(".live-responses-table .response .response-col_status");
      await status.waitFor();
      call = {
        status: Number((await status.textContent()).trim()),
        body: (await block.locator(".live-responses-table .response-col_description pre").first().textContent()).trim(),
        requestUrl: (await block.locator(".request-url pre").textContent()).trim(),
        curl: (await block.locator(".curl-command").textContent()).trim(),
        attempts: attempt,
      };
      if (call.status !== 429) break;
      await block.locator("button.btn-clear").click();
      await page.waitForTimeout(2000);
    }
    report.calls[key] = { ...call, curl: undefined, sentBearer: /Authorization: Bearer \S+/.test(call.curl) };
    return call;
  };

  await openDefinition("User API");
  await tryItOut("register", "post", "/api/auth/register", { email: EMAIL, password: PASSWORD, name: NAME });
  const login = await tryItOut("login", "post", "/api/auth/login", { email: EMAIL, password: PASSWORD });
  const accessToken = login.status === 200 ? JSON.parse(login.body).access_token : "";
  report.calls.login.body = undefined; // the tokens stay out of the report

  const authorize = async () => {
    await page.locator(".auth-wrapper button.authorize").click();
    const dialog = page.locator(".modal-ux");
    await dialog.locator(".auth-container input").fill(accessToken);
    await dialog.locator(".auth-btn-wrapper button.authorize").click();
    await dialog.locator(".auth-btn-wrapper button.btn-done").click();
    await dialog.waitFor({ state: "detached" });
  };
  await authorize();
  await tryItOut("me", "get", "/api/users/me");

  await openDefinition("Order API");
  // The token entered under the User API is kept when another definition is opened, or not.
  report.authorizedAfterSwitch = await page.locator(".auth-wrapper button.authorize.locked").isVisible();
  if (!report.authorizedAfterSwitch) await authorize();
  await tryItOut("order", "post", "/api/orders", {
    currency: "EUR",
    items: [{ sku: "CONSOLE-1", name: "Ordered from the API console", quantity: 2, unit_price: "4.50" }],
  });

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  // From the top of the page down to the order's answer: the definition selector, the title,
  // Authorize (locked), the request and the 201 with its body and headers.
  const answer = operation("post", "/api/orders").locator(".live-responses-table");
  const bottom = await answer.evaluate((table) => table.getBoundingClientRect().bottom + window.scrollY);
  await page.screenshot({ path: SCREENSHOT, fullPage: true, clip: { x: 0, y: 0, width: 1280, height: Math.ceil(bottom) + 16 } });
  report.screenshot = SCREENSHOT;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

process.stdout.write(`${JSON.stringify(report)}\n`);
