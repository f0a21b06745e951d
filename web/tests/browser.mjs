// Browser tests of the page `flor serve` serves, in headless Chromium
// (Debian's `chromium`) driven by playwright-core, against the demo's
// project (web/tests/demo_project.sh): the page loads, the runs table has
// the demo's runs, the curves draw one series per selected run, replayed
// values are marked, the versions panel shows the propagated statement, a
// filter narrows the table, sorting and hovering work, a run recorded
// while the page is open appears (with FLOR_DEMO_DIR and FLOR_PYTHON set);
// a screenshot of the curves is written for the README.
//
// Usage: node web/tests/browser.mjs URL [SCREENSHOT.png]
// (scripts/test_web.sh starts the server and runs this.)

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";

const [url, screenshot] = process.argv.slice(2);
if (!url) {
  console.error("usage: node browser.mjs URL [SCREENSHOT.png]");
  process.exit(2);
}

const executablePath = process.env.FLOR_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
const failures = [];
const test = async (name, body) => {
  try {
    await body();
    console.log(`ok - ${name}`);
  } catch (e) {
    failures.push(name);
    console.log(`not ok - ${name}\n  ${String(e?.stack ?? e).split("\n").join("\n  ")}`);
  }
};

try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  const api = async (path) => (await page.request.get(new URL(path, url).href)).json();
  const runs = (await api("/api/runs")).runs;

  await test("the page loads on the demo's project", async () => {
    await page.goto(url);
    await page.waitForSelector("#runs tbody tr");
    assert.match(await page.textContent("#project"), /sqlite store/);
  });

  await test("the runs table has the demo's runs", async () => {
    assert.equal(runs.length, 4);
    const shown = await page.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.getAttribute("data-run")));
    assert.deepEqual(shown, runs.map((r) => r.tstamp));
    const versions = await page.$$eval("#runs tbody tr td:nth-child(4)", (cells) => cells.map((c) => c.textContent.trim()));
    assert.deepEqual(versions, ["v1", "v1", "v2", "v3"]);
    assert.match(await page.textContent("#runs tbody tr:first-child"), /lr=0\.05/);
  });

  await test("the curves draw one series per selected run", async () => {
    const chart = page.locator('.chart[data-name="grad_norm"]');
    await chart.waitFor();
    assert.equal(await chart.getAttribute("data-series"), "4");
    assert.equal(await chart.locator("canvas").count(), 1);
    // Deselect one run: three series.
    await page.locator(`#runs tbody tr[data-run="${runs[1].tstamp}"] input`).uncheck();
    await page.waitForSelector('.chart[data-name="grad_norm"][data-series="3"]');
    await page.locator(`#runs tbody tr[data-run="${runs[1].tstamp}"] input`).check();
    await page.waitForSelector('.chart[data-name="grad_norm"][data-series="4"]');
  });

  await test("replayed values are marked, logged ones are not", async () => {
    const grad = page.locator('.chart[data-name="grad_norm"]');
    assert.ok(Number(await grad.getAttribute("data-replay-points")) > 0);
    const loss = page.locator('.chart[data-name="loss"]');
    assert.equal(await loss.getAttribute("data-replay-points"), "0");
  });

  await test("hovering a curve names the run, version, position and value", async () => {
    const over = page.locator('.chart[data-name="grad_norm"] .u-over');
    const box = await over.boundingBox();
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
    const tip = page.locator('.chart[data-name="grad_norm"] .tip');
    await tip.waitFor({ state: "visible" });
    assert.match(await tip.textContent(), /^run \S+ · v\d · global step \d+ · grad_norm = \S+ · replayed$/);
  });

  await test("log scale and smoothing redraw the curves", async () => {
    await page.check("#logscale");
    await page.waitForSelector('.chart[data-name="loss"] canvas');
    await page.fill("#smoothing", "0.6");
    await page.waitForSelector('.chart[data-name="loss"][data-series="4"]');
    await page.uncheck("#logscale");
    await page.fill("#smoothing", "0");
  });

  await test("the versions panel shows the propagated statement in every version", async () => {
    await page.waitForSelector("#versions details.version");
    const items = await page.$$eval("#versions details.version[data-version] ul.statements li", (lis) =>
      lis.map((li) => ({ outcome: li.getAttribute("data-outcome"), text: li.querySelector("code").textContent })));
    assert.equal(items.length, 3);
    for (const i of items) {
      assert.ok(["placed", "approximate"].includes(i.outcome), i.outcome);
      assert.match(i.text, /^flor\.log\("grad_norm"/);
    }
    assert.match(await page.textContent('#versions details[data-version="v2"] pre.diff'), /params/);
  });

  await test("a filter narrows the table", async () => {
    await page.fill("#filter", "lr=0.1");
    await page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 1);
    assert.equal(await page.getAttribute("#runs tbody tr", "data-run"), runs[1].tstamp);
    await page.fill("#filter", "v1");
    await page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 2);
    await page.fill("#filter", "");
    await page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 4);
  });

  await test("a column header sorts the table", async () => {
    await page.click('#runs th[data-key="tstamp"]');
    const order = await page.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.getAttribute("data-run")));
    assert.deepEqual(order, runs.map((r) => r.tstamp).reverse());
    await page.click('#runs th[data-key="tstamp"]');
  });

  await test("the replay panel shows the dry-run plan", async () => {
    assert.equal(await page.inputValue("#apply"), "grad_norm");
    await page.click("#plan-button");
    await page.waitForFunction(() => /Nothing to replay|Dry run/.test(document.getElementById("plan").textContent));
    assert.match(await page.textContent("#plan"), /^Replay plan for grad_norm/);
  });

  if (screenshot) {
    await page.locator("#curves-panel").screenshot({ path: screenshot });
    console.log(`screenshot: ${screenshot}`);
  }

  const { FLOR_DEMO_DIR: demo, FLOR_PYTHON: python } = process.env;
  if (demo && python) {
    await test("a run recorded while the page is open appears in the table and the curves", async () => {
      // The newest script (uncommitted) logs grad_norm itself: a forward series.
      execFileSync(python, ["train.py", "--kwargs", "epochs=2"], { cwd: demo, stdio: "ignore" });
      await page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 5, null, { timeout: 20000 });
      await page.waitForSelector('.chart[data-name="grad_norm"][data-series="5"]', { timeout: 20000 });
      assert.match(await page.textContent("#runs tbody tr:last-child"), /epochs=2/);
    });
  }

  await test("no script errors", async () => {
    assert.deepEqual(errors, []);
  });
} finally {
  await browser.close();
}
if (failures.length > 0) {
  console.error(`${failures.length} browser test(s) failed: ${failures.join("; ")}`);
  process.exit(1);
}
