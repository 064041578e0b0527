// Drives the hosted account pages in headless Chromium (Debian's, through playwright-core), as a
// customer would: password sign-in, the security centre, TOTP enrolment, adding a passkey with
// Chromium's virtual authenticator, signing out and back in with the passkey; and checks the
// cookie flags, the CSP and the CSRF refusal on the way.
//
//   node account_pages.mjs BASE_URL EMAIL PASSWORD SCREENSHOT_DIR
//
// BASE_URL must be http://localhost:PORT (a secure context without a certificate). Prints one JSON
// line of findings; exits 1 with the reason when a step fails.
import { createRequire } from "node:module";
import { createHmac } from "node:crypto";

const require = createRequire(process.env.STRONGROOM_TEST_NODE_MODULES + "/");
const { chromium } = require("playwright-core");

const [base, email, password, shots] = process.argv.slice(2);

// The security history is read from the audit log, whose entries commit in the background within
// milliseconds: reload until `needles` show (at most 5 s).
async function historyWith(page, needles) {
  let text = "";
  for (let i = 0; i < 25; i++) {
    text = await page.textContent("#activity");
    if (needles.every((n) => text.includes(n))) return text;
    await new Promise((r) => setTimeout(r, 200));
    await page.reload();
  }
  fail(`the security history lacks one of ${JSON.stringify(needles)}: ${text}`);
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, "").toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8; }
  }
  return Buffer.from(out);
}

// RFC 6238 with SHA-1, 6 digits, 30 s: node's own HMAC, independent of the server's code.
function totp(secret, at = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return code.toString().padStart(6, "0");
}

const findings = {};
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

  // The sign-in page: strict CSP, no inline script, a CSRF cookie.
  const loginResponse = await page.goto(`${base}/account/login`);
  const csp = loginResponse.headers()["content-security-policy"] || "";
  if (!csp.includes("script-src 'self'") || csp.includes("unsafe-inline")) fail(`weak CSP: ${csp}`);
  findings.csp = csp;
  if (await page.locator("script:not([src])").count() !== 0) fail("the page has inline script");

  // A wrong password: an error on the page, no session.
  await page.fill("#email", email);
  await page.fill("#password", "not the password 123");
  await page.click("form button[type=submit]");
  if (!(await page.textContent("[role=alert]")).includes("not right")) fail("no error for a wrong password");

  await page.fill("#email", email);
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(`${base}/account/security`), page.click("form button[type=submit]")]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "__Host-sr_session");
  if (!session) fail(`no session cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
  if (!session.httpOnly || !session.secure || session.sameSite !== "Strict" || session.path !== "/") {
    fail(`weak session cookie: ${JSON.stringify({ ...session, value: "…" })}`);
  }
  findings.cookie = { httpOnly: session.httpOnly, secure: session.secure, sameSite: session.sameSite };
  if (await page.evaluate(() => document.cookie.includes("sr_session"))) fail("the session cookie is readable by script");
  await historyWith(page, ["Sign-in"]);
  await page.screenshot({ path: `${shots}/security-centre.png`, fullPage: true });

  // CSRF: a state change without the page's token is refused, even with the cookies.
  const forged = await context.request.post(`${base}/account/phrase`, { form: { csrf: "forged", phrase: "x" } });
  if (forged.status() !== 403) fail(`a forged form was answered ${forged.status()}`);
  const crossSite = await context.request.post(`${base}/account/sessions/end-others`, {
    form: { csrf: (await context.cookies()).find((c) => c.name === "__Host-sr_csrf").value },
    headers: { Origin: "https://evil.example", "Sec-Fetch-Site": "cross-site" },
  });
  if (crossSite.status() !== 403) fail(`a cross-site post was answered ${crossSite.status()}`);
  findings.csrf = "refused";

  // TOTP enrolment: QR code and key, a first code, ten recovery codes shown once.
  await page.goto(`${base}/account/mfa`);
  await page.click("form button[type=submit]");
  const secret = (await page.textContent("#totp-secret")).trim();
  if (!(await page.locator("img.qr").getAttribute("src")).startsWith("data:image/svg+xml")) fail("no QR code");
  await page.fill("#code", totp(secret));
  await page.click("form button[type=submit]");
  const codes = await page.locator("#recovery-codes li").count();
  if (codes !== 10) fail(`${codes} recovery codes shown`);
  findings.recovery_codes = codes;

  // The anti-phishing phrase.
  await page.goto(`${base}/account/security`);
  await page.fill("#phrase", "blue heron at dawn");
  await Promise.all([page.waitForURL(`${base}/account/security`), page.click("form[action='/account/phrase'] button")]);

  // A passkey, made by Chromium's virtual authenticator (user verification on).
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
               isUserVerified: true, automaticPresenceSimulation: true },
  });
  await page.fill("#passkey-label", "headless chromium");
  await Promise.all([page.waitForURL(`${base}/account/security`), page.click("#passkey-add")]);
  await page.waitForSelector("#passkeys li:has-text('headless chromium')", { timeout: 10000 })
    .catch(async () => fail(`no passkey listed: ${await page.textContent("#passkey-status")}`));
  findings.passkey_added = true;

  // Sign out: the cookie is gone and the security centre sends us to sign in.
  await Promise.all([page.waitForURL(`${base}/account/login`), page.click("form[action='/account/logout'] button")]);
  if ((await context.cookies()).some((c) => c.name === "__Host-sr_session" && c.value)) fail("the session cookie survived sign-out");
  await page.goto(`${base}/account/security`);
  if (!page.url().endsWith("/account/login")) fail(`signed out, the security centre answered ${page.url()}`);

  // Sign back in with the passkey alone.
  await Promise.all([page.waitForURL(`${base}/account/security`, { timeout: 15000 }), page.click("#passkey-login")])
    .catch(async () => fail(`passkey sign-in failed: ${await page.textContent("#passkey-status")}`));
  findings.passkey_sign_in = true;
  await historyWith(page, ["Passkey added", "Authenticator app turned on", "Anti-phishing phrase set"]);
  await page.screenshot({ path: `${shots}/after-passkey-sign-in.png`, fullPage: true });
  if (violations.length) fail(`CSP violations: ${violations.join("; ")}`);
  findings.csp_violations = 0;
  console.log(JSON.stringify(findings));
} finally {
  await browser.close();
}
