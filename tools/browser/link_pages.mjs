// Drives the pages that links in mail open, in headless Chromium (Debian's, through
// playwright-core), following the links the server really mailed (read from its development
// mailbox folder): sign-up, the address check, a forgotten password and its reset link, a staff
// invitation, and the address check of a passkey-only account, which makes its first passkey
// (Chromium's virtual authenticator). Checks on the way: weak and breached passwords are refused with a clear
// message, a link works once, a link without its token says so, the token leaves the address bar,
// the CSP holds (no inline script, no violation) and the CSRF cookie is strict.
//
//   node link_pages.mjs BASE_URL MAIL_DIR EMAIL STAFF_EMAIL PASSKEY_EMAIL SCREENSHOT_DIR
//
// BASE_URL is http://localhost:PORT. Passwords: WEAK, BREACHED (in the server's breach corpus),
// PASSWORD, NEW_PASSWORD and STAFF_PASSWORD below. Prints one JSON line of findings; exits 1
// with the reason when a step fails.
import { createRequire } from "node:module";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(process.env.STRONGROOM_TEST_NODE_MODULES + "/");
const { chromium } = require("playwright-core");

const [base, mailDir, email, staffEmail, passkeyEmail, shots] = process.argv.slice(2);
const WEAK = "password123";
const BREACHED = "correct horse battery staple";
const PASSWORD = "violet tractor anthem 1987";
const NEW_PASSWORD = "quiet harbour lantern 2044";
const STAFF_PASSWORD = "copper meadow lantern 4711";

function fail(message) {
  console.error(message);
  process.exit(1);
}

// The link of the newest mail of `kind` to `to` that is not in `seen` (waits up to 15 s): the
// outbox delivers mail in the background.
async function mailedLink(kind, to, seen = new Set()) {
  for (let i = 0; i < 150; i++) {
    let names = [];
    try { names = readdirSync(mailDir).filter((n) => n.endsWith(`-${kind}.eml`)).sort().reverse(); } catch {}
    for (const name of names) {
      if (seen.has(name)) continue;
      const text = readFileSync(join(mailDir, name), "utf8").replace(/=\r?\n/g, "").replace(/=3D/g, "=");
      if (!text.includes(`To: ${to}`)) continue;
      const link = text.match(/https?:\/\/[^\s"<>]+#token=[A-Za-z0-9_]+/);
      if (!link) fail(`a ${kind} mail without a link: ${text}`);
      seen.add(name);
      return link[0];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`no ${kind} mail to ${to} arrived`);
}

const findings = { pages: [] };
const browser = await chromium.launch({
  executablePath: process.env.STRONGROOM_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = [];
  page.on("console", (msg) => { if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text()); });

  // Every page: the pages' strict CSP, no inline script.
  async function open(url) {
    // From elsewhere, so that a link to the page already shown loads it afresh (a fragment
    // alone would only scroll).
    if (url.includes("#")) await page.goto("about:blank");
    const response = await page.goto(url);
    const csp = response.headers()["content-security-policy"] || "";
    if (!csp.includes("script-src 'self'") || csp.includes("unsafe-inline")) fail(`weak CSP on ${url}: ${csp}`);
    if (await page.locator("script:not([src])").count() !== 0) fail(`inline script on ${url}`);
    findings.pages.push(new URL(url).pathname);
    return response;
  }
  // Submits a page's one form the browser's own way, and waits for the page it answers with.
  async function submitForm() {
    await Promise.all([page.waitForNavigation(), page.click("form button[type=submit]")]);
  }
  async function alertText() {
    await page.waitForSelector("[role=alert], #link-status.error", { timeout: 10000 });
    return (await page.locator("[role=alert], #link-status.error").first().textContent()) || "";
  }
  // Types a password into a link page and submits it; answers the status line once it settles.
  async function submitLink(fields) {
    for (const [selector, value] of Object.entries(fields)) await page.fill(selector, value);
    await Promise.all([
      page.waitForResponse((r) => r.request().method() === "POST", { timeout: 15000 }),
      page.click("form[data-link-form] button[type=submit]"),
    ]);
    await page.waitForFunction(() => {
      const status = document.getElementById("link-status");
      return document.getElementById("link-done") || (status && status.classList.contains("error"));
    }, null, { timeout: 15000 });
    if (await page.locator("#link-done").count()) return { done: await page.textContent("#link-done") };
    return { error: await page.textContent("#link-status") };
  }

  // Sign-up, from the sign-in page's link: a weak and a breached password are refused, clearly.
  await open(`${base}/account/login`);
  await Promise.all([page.waitForURL(`${base}/account/sign-up`), page.click("a[href='/account/sign-up']")]);
  await page.fill("#email", email);
  await page.fill("#password", WEAK);
  await submitForm();
  const weak = await alertText();
  if (!weak.startsWith("The password") || weak.includes(WEAK)) fail(`weak password at sign-up: ${weak}`);
  if ((await page.inputValue("#email")) !== email) fail("the address was not kept after a refusal");
  if ((await page.inputValue("#password")) !== "") fail("the password was echoed into the page");
  await page.fill("#password", BREACHED);
  await submitForm();
  const breached = await alertText();
  if (!breached.includes("data breaches") || breached.includes(BREACHED)) fail(`breached password at sign-up: ${breached}`);
  findings.sign_up_refusals = { weak, breached };
  await page.fill("#password", PASSWORD);
  await submitForm();
  await page.waitForSelector("#signed-up");
  await page.screenshot({ path: `${shots}/signed-up.png`, fullPage: true });

  // The address check, from the link in the mail.
  const verifyLink = await mailedLink("verify_email", email);
  if (!verifyLink.startsWith(`${base}/account/verify-email#token=`)) fail(`the mailed link leads elsewhere: ${verifyLink}`);
  await open(verifyLink);
  await page.waitForFunction(() => !document.querySelector("form[data-link-form] button").disabled);
  if (page.url().includes("#") || page.url().includes("token")) fail(`the token stayed in the address bar: ${page.url()}`);
  const csrf = (await context.cookies()).find((c) => c.name === "__Host-sr_csrf");
  if (!csrf || !csrf.httpOnly || !csrf.secure || csrf.sameSite !== "Strict" || csrf.path !== "/") {
    fail(`weak CSRF cookie: ${JSON.stringify({ ...csrf, value: "…" })}`);
  }
  const verified = await submitLink({});
  if (!verified.done || !verified.done.includes("confirmed")) fail(`verification: ${JSON.stringify(verified)}`);
  findings.verified = verified.done;
  await page.screenshot({ path: `${shots}/verified.png`, fullPage: true });
  // Once only.
  await open(verifyLink);
  await page.waitForFunction(() => !document.querySelector("form[data-link-form] button").disabled);
  const again = await submitLink({});
  if (!again.error || !again.error.includes("does not work")) fail(`a used link: ${JSON.stringify(again)}`);
  findings.used_link = again.error;

  // Signed in, the address shows as verified.
  await open(`${base}/account/login`);
  await page.fill("#email", email);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL(`${base}/account/security`), page.click("form button[type=submit]")]);
  if ((await page.textContent("main")).includes("not verified")) fail("the address still shows as not verified");
  await Promise.all([page.waitForURL(`${base}/account/login`), page.click("form[action='/account/logout'] button")]);

  // A forgotten password: the sign-in page's link, a mailed reset link, refusals, a new password.
  await Promise.all([page.waitForURL(`${base}/account/forgot-password`), page.click("a[href='/account/forgot-password']")]);
  await page.fill("#email", email);
  await submitForm();
  await page.waitForSelector("#reset-requested");
  const resetLink = await mailedLink("password_reset", email);
  await open(resetLink);
  await page.waitForFunction(() => !document.querySelector("form[data-link-form] button").disabled);
  if (page.url().includes("#")) fail(`the token stayed in the address bar: ${page.url()}`);
  const resetWeak = await submitLink({ "#new_password": WEAK });
  if (!resetWeak.error || !resetWeak.error.startsWith("The password")) fail(`weak reset: ${JSON.stringify(resetWeak)}`);
  const resetBreached = await submitLink({ "#new_password": BREACHED });
  if (!resetBreached.error || !resetBreached.error.includes("data breaches")) {
    fail(`breached reset: ${JSON.stringify(resetBreached)}`);
  }
  findings.reset_refusals = { weak: resetWeak.error, breached: resetBreached.error };
  await page.screenshot({ path: `${shots}/reset-refused.png`, fullPage: true });
  const reset = await submitLink({ "#new_password": NEW_PASSWORD });
  if (!reset.done || !reset.done.includes("new password is set")) fail(`reset: ${JSON.stringify(reset)}`);
  await Promise.all([page.waitForURL(`${base}/account/login`), page.click("#link-next")]);
  await page.fill("#email", email);
  await page.fill("#password", PASSWORD);
  await submitForm();
  if (!(await alertText()).includes("not right")) fail("the old password still signs in");
  await page.fill("#email", email);
  await page.fill("#password", NEW_PASSWORD);
  await Promise.all([page.waitForURL(`${base}/account/security`), page.click("form button[type=submit]")]);
  findings.reset = true;

  // A link cut short: the page says so and offers nothing to press.
  await open(`${base}/account/reset-password`);
  await page.waitForSelector("#link-status.error");
  if (!(await page.textContent("#link-status")).includes("incomplete")) fail("no word about an incomplete link");
  if (!(await page.locator("form[data-link-form] button").isDisabled())) fail("a link without a token can be submitted");
  findings.incomplete_link = true;

  // The staff invitation, from its mail.
  const invitation = await mailedLink("staff_invitation", staffEmail);
  if (!invitation.startsWith(`${base}/staff/invitation#token=sti_`)) fail(`the invitation leads elsewhere: ${invitation}`);
  await open(invitation);
  await page.waitForFunction(() => !document.querySelector("form[data-link-form] button").disabled);
  const tooWeak = await submitLink({ "#password": WEAK });
  if (!tooWeak.error || !tooWeak.error.startsWith("The password")) fail(`weak staff password: ${JSON.stringify(tooWeak)}`);
  const accepted = await submitLink({ "#password": STAFF_PASSWORD });
  if (!accepted.done || !accepted.done.includes("staff account is ready")) fail(`invitation: ${JSON.stringify(accepted)}`);
  findings.invitation_accepted = true;
  await page.screenshot({ path: `${shots}/invitation-accepted.png`, fullPage: true });

  // A passkey-only account the shop's backend made: its address check creates its first passkey
  // and signs it in.
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
               isUserVerified: true, automaticPresenceSimulation: true },
  });
  const passkeyLink = await mailedLink("verify_email", passkeyEmail);
  await open(passkeyLink);
  await page.waitForFunction(() => !document.querySelector("form[data-link-form] button").disabled);
  const confirmed = await submitLink({});
  if (!confirmed.done || !confirmed.done.includes("passkey")) fail(`passkey-only check: ${JSON.stringify(confirmed)}`);
  await Promise.all([page.waitForURL(`${base}/account/security`, { timeout: 15000 }), page.click("#first-passkey")])
    .catch(async () => fail(`first passkey: ${await page.textContent("#link-status")}`));
  if (!(await page.textContent("main")).includes(passkeyEmail)) fail("not signed in after the first passkey");
  findings.first_passkey = true;
  await page.screenshot({ path: `${shots}/first-passkey.png`, fullPage: true });

  if (violations.length) fail(`CSP violations: ${violations.join("; ")}`);
  findings.csp_violations = 0;
  findings.links = { verify: verifyLink, reset: resetLink, invitation, passkey: passkeyLink };
  console.log(JSON.stringify(findings));
} finally {
  await browser.close();
}
