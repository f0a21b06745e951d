// Figures for BENCHMARKS.md: the page of `flor serve` over a large project
// (scripts/bench_serve.sh makes one: 1,000 runs × 10,000 steps) in
// headless Chromium — first paint, runs table, curves drawn — and the
// API's latency under 20 concurrent clients on 127.0.0.1.
//
// Usage: node web/tests/bench.mjs URL [--clients 20] [--requests 50] [--loads 3]
// Prints one JSON object.

import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const clients = opt("clients", 20);
const requests = opt("requests", 50);
const loads = opt("loads", 3);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50_ms: +pct(s, 50).toFixed(1), p95_ms: +pct(s, 95).toFixed(1), max_ms: +s[s.length - 1].toFixed(1) };
};

/** One page load: ms from navigation start to first paint, the runs table, the curves drawn. */
async function pageLoad(browser) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(url);
  await page.waitForFunction(() => performance.getEntriesByName("flor:curves-drawn").length > 0, null, { timeout: 300000 });
  const m = await page.evaluate(() => {
    const at = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
    return {
      first_contentful_paint_ms: at("first-contentful-paint"),
      runs_rendered_ms: at("flor:runs-rendered"),
      curves_drawn_ms: at("flor:curves-drawn"),
      curve_info: document.getElementById("curve-info").textContent,
      series: [...document.querySelectorAll(".chart")].map((c) => Number(c.getAttribute("data-series"))),
    };
  });
  await page.close();
  return m;
}

/** `clients` concurrent loops of `requests` GETs over the endpoints the page uses. */
async function load(runs) {
  const paths = [
    () => "/api/project",
    () => "/api/runs",
    () => "/api/names",
    () => "/api/curves?name=loss&width=1400", // all runs: cached after the first
    () => `/api/curves?name=loss&width=1400&run=${runs[Math.floor(Math.random() * runs.length)]}`, // one run: mostly uncached
  ];
  const per = new Map();
  const all = [];
  const client = async (c) => {
    for (let i = 0; i < requests; i++) {
      const k = (i + c) % paths.length;
      const path = paths[k]();
      const t0 = performance.now();
      const r = await fetch(new URL(path, url));
      await r.arrayBuffer();
      const ms = performance.now() - t0;
      if (!r.ok) throw new Error(`${path}: ${r.status}`);
      const key = path.split("?")[0] + (k === 4 ? " (one run)" : k === 3 ? " (all runs)" : "");
      if (!per.has(key)) per.set(key, []);
      per.get(key).push(ms);
      all.push(ms);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  const secs = (performance.now() - t0) / 1000;
  return {
    clients,
    requests: all.length,
    seconds: +secs.toFixed(2),
    per_second: +(all.length / secs).toFixed(1),
    all: summary(all),
    by_endpoint: Object.fromEntries([...per].map(([k, v]) => [k, summary(v)])),
  };
}

const timed = async (path) => {
  const t0 = performance.now();
  const r = await fetch(new URL(path, url));
  const bytes = (await r.arrayBuffer()).byteLength;
  return { path, status: r.status, ms: +(performance.now() - t0).toFixed(1), bytes };
};

const runs = (await (await fetch(new URL("/api/runs", url))).json()).runs.map((r) => r.tstamp);
// Right after the server started: the page's first curves (the server is
// reading them ahead), then a view nothing read yet (x by epoch: every
// value read again), then the same once more (kept).
const first = {
  runs: await timed("/api/runs"),
  default_curves_at_start: await timed("/api/curves?name=loss&width=1400"),
  curves_cold: await timed("/api/curves?name=loss&x=epoch&width=1400"),
  curves_kept: await timed("/api/curves?name=loss&x=epoch&width=1400"),
  curves_kept_other_width: await timed("/api/curves?name=loss&x=epoch&width=700"),
};
const browser = await chromium.launch({ executablePath: process.env.FLOR_CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const pages = [];
try {
  for (let i = 0; i < loads; i++) pages.push(await pageLoad(browser));
} finally {
  await browser.close();
}
const latency = await load(runs);
console.log(JSON.stringify({ runs: runs.length, first, pages, latency }, null, 2));
