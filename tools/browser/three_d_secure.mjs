// Drives 3-D Secure in headless Chromium (Debian's, through playwright-core), as a customer
// would: from the hand-off link the API gave the shop (next_action.redirect_to_url.url) to the
// sandbox's challenge page, its Pass or Fail button, and back to the shop's return page, which is
// on another origin. Checks on the way: the hand-off page shows the amount, the pages' CSP holds
// (no violation reported), and the final address carries the intent and its outcome.
//
//   node three_d_secure.mjs PASS_HANDOFF_URL FAIL_HANDOFF_URL RETURN_PREFIX SCREENSHOT_DIR
//
// Prints one JSON line of findings; exits 1 with the reason when a step fails.
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(process.env.STRONGROOM_TEST_NODE_MODULES + "/");
const { chromium } = require("playwright-core");

const [passUrl, failUrl, returnPrefix, shots] = process.argv.slice(2);

function fail(message) {
  console.error(message);
  process.exit(1);
}

const findings = {};
const browser = await chromium.launch({
  executablePath: process.env.STRONGROOM_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  for (const [name, url, button] of [["pass", passUrl, "Pass the challenge"], ["fail", failUrl, "Fail the challenge"]]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const violations = [];
    // CSP refusals only: a missing favicon on the shop's stand-in page is no finding.
    page.on("console", (m) => {
      if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) violations.push(m.text());
    });
    await page.goto(url);
    const handoff = await page.textContent("main");
    if (!handoff.includes("Your bank asks you to confirm this payment of")) fail(`${name}: hand-off page: ${handoff}`);
    if (!handoff.includes("25.00")) fail(`${name}: the hand-off page does not show the amount: ${handoff}`);
    await page.screenshot({ path: join(shots, `handoff-${name}.png`) });
    await page.click("#continue");
    await page.waitForSelector(`button:has-text("${button}")`);
    const challenge = await page.textContent("main");
    if (!challenge.includes("sandbox")) fail(`${name}: challenge page: ${challenge}`);
    await page.screenshot({ path: join(shots, `challenge-${name}.png`) });
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(returnPrefix), { timeout: 15000 }),
      page.click(`button:has-text("${button}")`),
    ]);
    const landed = new URL(page.url());
    findings[name] = {
      payment_intent: landed.searchParams.get("payment_intent"),
      redirect_status: landed.searchParams.get("redirect_status"),
      violations,
    };
    await context.close();
  }
} catch (err) {
  fail(`browser step failed: ${err}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(findings));
