// The page `flor serve` serves: runs, curves across code versions, the
// versions of each script with the hindsight statements carried into
// them, and replay plans and progress. Everything comes from the JSON API
// (/api/...); see src/bin/flor/serve/ for what each endpoint answers.

import uPlot from "uplot";
import { api, el, fmtNumber, fmtDuration, setStatus, versionColour } from "./util";
import type { RunRow, NamesAnswer, Chart, CurvesAnswer } from "./types";
import { renderVersions } from "./versions";
import { setupReplay } from "./replay";

interface State {
  runs: RunRow[];
  selected: Set<string>;
  sortKey: string;
  sortDir: 1 | -1;
  filter: string;
  plots: uPlot[];
  curves: CurvesAnswer | null;
}

const state: State = { runs: [], selected: new Set(), sortKey: "tstamp", sortDir: 1, filter: "", plots: [], curves: null };

const COLUMNS: { key: string; label: string }[] = [
  { key: "tstamp", label: "start" },
  { key: "script", label: "script" },
  { key: "version", label: "version" },
  { key: "status", label: "status" },
  { key: "args", label: "args" },
  { key: "duration_s", label: "duration" },
  { key: "records", label: "records" },
  { key: "replayed", label: "replayed" },
];

function argsText(r: RunRow): string {
  return Object.entries(r.args).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
}

function sortValue(r: RunRow, key: string): string | number {
  switch (key) {
    case "args": return argsText(r);
    case "replayed": return r.replayed.join(",");
    case "version": return `${r.script}\u0000${String(r.version_index ?? -1).padStart(6, "0")}`;
    case "duration_s": return r.duration_s ?? -1;
    case "records": return r.records;
    default: return String((r as unknown as Record<string, unknown>)[key] ?? "");
  }
}

/** Whether a run matches the filter: every word must match; `name=value`
 * (also `<`, `>`) compares an arg, anything else is a substring of the row. */
export function matches(r: RunRow, filter: string): boolean {
  const text = `${r.tstamp} ${r.script} ${r.version ?? ""} ${r.status} ${argsText(r)} ${r.replayed.join(" ")}`.toLowerCase();
  for (const word of filter.trim().toLowerCase().split(/\s+/).filter((w) => w.length > 0)) {
    const cmp = /^([^=<>]+)(=|<|>)(.+)$/.exec(word);
    if (cmp) {
      const [, name, op, want] = cmp;
      const have = Object.entries(r.args).find(([k]) => k.toLowerCase() === name)?.[1];
      if (have === undefined) return false;
      const [h, w] = [Number(have), Number(want)];
      if (op === "=" && String(have).toLowerCase() !== want && !(isFinite(h) && isFinite(w) && h === w)) return false;
      if (op === "<" && !(h < w)) return false;
      if (op === ">" && !(h > w)) return false;
    } else if (!text.includes(word)) {
      return false;
    }
  }
  return true;
}

function shownRuns(): RunRow[] {
  const rows = state.runs.filter((r) => matches(r, state.filter));
  const k = state.sortKey;
  return rows.sort((a, b) => {
    const [x, y] = [sortValue(a, k), sortValue(b, k)];
    return (x < y ? -1 : x > y ? 1 : 0) * state.sortDir;
  });
}

function renderHead(): void {
  const head = document.querySelector("#runs thead")!;
  const tr = el("tr");
  tr.append(el("th", {}, ""));
  for (const c of COLUMNS) {
    const arrow = state.sortKey === c.key ? (state.sortDir === 1 ? " ▲" : " ▼") : "";
    const th = el("th", { "data-key": c.key, tabindex: "0", "aria-sort": arrow ? (state.sortDir === 1 ? "ascending" : "descending") : "none" }, c.label + arrow);
    const sort = () => {
      state.sortDir = state.sortKey === c.key ? (-state.sortDir as 1 | -1) : 1;
      state.sortKey = c.key;
      renderRuns();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if ((e as KeyboardEvent).key === "Enter") sort(); });
    tr.append(th);
  }
  head.replaceChildren(tr);
}

function runRow(r: RunRow): HTMLElement {
  const tr = el("tr", { "data-run": r.tstamp });
  const box = el("input", { type: "checkbox", "aria-label": `select run ${r.tstamp}` }) as HTMLInputElement;
  box.checked = state.selected.has(r.tstamp);
  box.addEventListener("change", () => {
    if (box.checked) state.selected.add(r.tstamp); else state.selected.delete(r.tstamp);
    scheduleCurves();
  });
  const swatch = el("span", { class: "swatch", style: `background:${versionColour(r.version_index)}` });
  const version = el("td", { title: r.commit ?? "" });
  version.append(swatch, ` ${r.version ?? "?"}`);
  tr.append(
    el("td", {}, box),
    el("td", { class: "mono" }, r.tstamp.replace("T", " ")),
    el("td", {}, r.script),
    version,
    el("td", { class: `status-${r.status}` }, r.status),
    el("td", { class: "mono" }, argsText(r)),
    el("td", { class: "num" }, fmtDuration(r.duration_s)),
    el("td", { class: "num" }, String(r.records)),
    el("td", {}, r.replayed.join(", ")),
  );
  return tr;
}

function renderRuns(): void {
  renderHead();
  const rows = shownRuns();
  document.querySelector("#runs tbody")!.replaceChildren(...rows.map(runRow));
  document.getElementById("run-count")!.textContent = `${rows.length} of ${state.runs.length} runs shown, ${state.selected.size} selected`;
}

function showRuns(answer: { runs: RunRow[] }): void {
  // New runs are selected as they appear; the user's choice for the others stays.
  const known = new Set(state.runs.map((r) => r.tstamp));
  state.runs = answer.runs;
  answer.runs.filter((r) => !known.has(r.tstamp)).forEach((r) => state.selected.add(r.tstamp));
  renderRuns();
  performance.mark("flor:runs-rendered");
}

function showNames(answer: NamesAnswer): void {
  const names = document.getElementById("names") as HTMLSelectElement;
  const logs = answer.names.filter((n) => n.kind === "log");
  const chosen = new Set<string>(answer.default);
  names.replaceChildren(...logs.map((n) => {
    const o = el("option", { value: n.name }, `${n.name} (${n.count})`) as HTMLOptionElement;
    o.selected = chosen.has(n.name);
    return o;
  }));
  if (answer.tensors.length > 0) {
    document.getElementById("tensor-pick")!.hidden = false;
    const tensor = document.getElementById("tensor") as HTMLSelectElement;
    tensor.append(...answer.tensors.map((t) => el("option", { value: t }, t)));
    const stat = document.getElementById("tensor-stat") as HTMLSelectElement;
    stat.replaceChildren(...answer.tensor_stats.map((s) => el("option", { value: s }, s)));
  }
  const x = document.getElementById("xaxis") as HTMLSelectElement;
  x.replaceChildren(el("option", { value: "global" }, "global step"), ...answer.loops.map((l) => el("option", { value: l }, l)));
}

let curveTimer: number | undefined;
function scheduleCurves(): void {
  window.clearTimeout(curveTimer);
  curveTimer = window.setTimeout(() => void loadCurves(), 150);
}

function selectedNames(): string[] {
  const names = [...(document.getElementById("names") as HTMLSelectElement).selectedOptions].map((o) => o.value);
  const tensor = (document.getElementById("tensor") as HTMLSelectElement).value;
  const stat = (document.getElementById("tensor-stat") as HTMLSelectElement).value;
  if (tensor && stat) names.push(`tensor:${tensor}:${stat}`);
  return names;
}

async function loadCurves(): Promise<void> {
  const names = selectedNames();
  const runs = state.runs.filter((r) => state.selected.has(r.tstamp)).map((r) => r.tstamp);
  const box = document.getElementById("charts")!;
  if (names.length === 0 || runs.length === 0) {
    state.plots.forEach((p) => p.destroy());
    state.plots = [];
    box.replaceChildren(el("p", { class: "hint" }, names.length === 0 ? "Pick names to draw." : "Select runs in the table."));
    return;
  }
  const width = Math.max(200, Math.floor(box.clientWidth || 900));
  const q = new URLSearchParams();
  names.forEach((n) => q.append("name", n));
  const x = (document.getElementById("xaxis") as HTMLSelectElement).value;
  q.set("x", x);
  q.set("width", String(width));
  if (runs.length < state.runs.length) q.set("run", runs.join(","));
  const t0 = performance.now();
  state.curves = await api<CurvesAnswer>(`/api/curves?${q}`);
  const fetched = performance.now();
  drawCurves();
  const points = state.curves.charts.reduce((n, c) => n + c.series.reduce((m, s) => m + s.points, 0), 0);
  document.getElementById("curve-info")!.textContent =
    `${fmtNumber(points)} values; fetched in ${Math.round(fetched - t0)} ms, drawn in ${Math.round(performance.now() - fetched)} ms`;
  performance.mark("flor:curves-drawn");
}

/** Tick spacings of the x axis: loop positions are whole numbers. */
const INTEGER_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8].map((p) => m * p)).sort((a, b) => a - b);

/** The code versions of the drawn runs, as a legend of colours. */
function versionLegend(): HTMLElement {
  const seen = new Map<string, RunRow>();
  for (const r of state.runs) {
    if (state.selected.has(r.tstamp)) seen.set(`${r.script} ${r.version}`, r);
  }
  const legend = el("div", { class: "versions-legend" });
  for (const [label, r] of seen) {
    legend.append(el("span", { class: "swatch", style: `background:${versionColour(r.version_index)}` }), ` ${label} `);
  }
  return legend;
}

/** TensorBoard-style exponential smoothing (nulls kept). */
export function smooth(y: (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return y;
  let last: number | null = null;
  return y.map((v) => {
    if (v === null || !isFinite(v)) return v;
    last = last === null ? v : last * weight + (1 - weight) * v;
    return last;
  });
}

function drawCurves(): void {
  const answer = state.curves;
  if (!answer) return;
  const box = document.getElementById("charts")!;
  state.plots.forEach((p) => p.destroy());
  state.plots = [];
  box.replaceChildren(versionLegend());
  const log = (document.getElementById("logscale") as HTMLInputElement).checked;
  const weight = Number((document.getElementById("smoothing") as HTMLInputElement).value);
  for (const chart of answer.charts) {
    const div = el("div", { class: "chart", "data-name": chart.name });
    box.append(div);
    state.plots.push(drawChart(div, chart, log, weight, Math.max(300, box.clientWidth - 8)));
  }
}

function drawChart(div: HTMLElement, chart: Chart, log: boolean, weight: number, width: number): uPlot {
  const data: uPlot.AlignedData = [
    chart.x,
    ...chart.series.map((s) => smooth(s.y, weight).map((v) => (log && v !== null && v <= 0 ? null : v))),
  ];
  const series: uPlot.Series[] = [
    { label: chart.x_label },
    ...chart.series.map((s) => ({
      label: `${s.run} ${s.version ?? ""}`,
      stroke: versionColour(s.version_index),
      width: 1.5,
      dash: s.replayed === "all" ? [6, 4] : undefined,
      spanGaps: true,
      points: s.replay.length > 0
        ? { show: true, size: 5, fill: versionColour(s.version_index), filter: () => s.replay }
        : { show: false },
    })),
  ];
  const tip = el("div", { class: "tip", hidden: "" });
  const marked = chart.series.reduce((n, s) => n + s.replay.length, 0);
  div.setAttribute("data-series", String(chart.series.length));
  div.setAttribute("data-replay-points", String(marked));
  div.append(el("h3", {}, `${chart.name}${chart.downsampled ? " (min/max per bucket)" : ""}`), tip);
  const plot = new uPlot({
    width,
    height: 280,
    series,
    legend: { show: false },
    scales: { x: { time: false }, y: { distr: log ? 3 : 1 } },
    axes: [{ label: chart.x_label, incrs: INTEGER_STEPS }, {}],
    cursor: { focus: { prox: 30 } },
    focus: { alpha: 0.3 },
    hooks: { setCursor: [(u) => showTip(u, chart, tip)] },
  }, data, div);
  return plot;
}

/** The tooltip: the run nearest the cursor, its version, position and value. */
function showTip(u: uPlot, chart: Chart, tip: HTMLElement): void {
  const idx = u.cursor.idx;
  const top = u.cursor.top ?? -1;
  if (idx === null || idx === undefined || top < 0) {
    tip.hidden = true;
    return;
  }
  let best = -1;
  let dist = Infinity;
  for (let i = 1; i < u.series.length; i++) {
    const v = u.data[i][idx];
    if (v === null || v === undefined) continue;
    const d = Math.abs(u.valToPos(v, "y") - top);
    if (d < dist) { dist = d; best = i; }
  }
  if (best < 0) {
    tip.hidden = true;
    return;
  }
  const s = chart.series[best - 1];
  const replayed = s.replay.includes(idx);
  tip.textContent = `run ${s.run} · ${s.version ?? "?"} · ${chart.x_label} ${fmtNumber(chart.x[idx])} · ${chart.name} = ${fmtNumber(u.data[best][idx] as number)}${replayed ? " · replayed" : ""}`;
  tip.hidden = false;
}

function wire(): void {
  const filter = document.getElementById("filter") as HTMLInputElement;
  filter.addEventListener("input", () => { state.filter = filter.value; renderRuns(); });
  document.getElementById("select-all")!.addEventListener("click", () => {
    shownRuns().forEach((r) => state.selected.add(r.tstamp));
    renderRuns();
    scheduleCurves();
  });
  document.getElementById("select-none")!.addEventListener("click", () => {
    state.selected.clear();
    renderRuns();
    scheduleCurves();
  });
  for (const id of ["names", "xaxis", "tensor", "tensor-stat"]) document.getElementById(id)!.addEventListener("change", scheduleCurves);
  for (const id of ["logscale", "smoothing"]) document.getElementById(id)!.addEventListener("input", drawCurves);
  let resize: number | undefined;
  window.addEventListener("resize", () => { window.clearTimeout(resize); resize = window.setTimeout(drawCurves, 200); });
}

/** Polls the project; when its records change (a run recording, a replay
 * attached), the runs, curves and versions are asked again. */
function followChanges(version: string): void {
  let known = version;
  const poll = async () => {
    try {
      const p = await api<{ data_version: string }>("/api/project");
      if (p.data_version !== known) {
        known = p.data_version;
        showRuns(await api<{ runs: RunRow[] }>("/api/runs"));
        await loadCurves();
        await renderVersions(document.getElementById("versions")!);
      }
    } catch {
      // The next poll tries again.
    }
    window.setTimeout(() => void poll(), 5000);
  };
  window.setTimeout(() => void poll(), 5000);
}

async function main(): Promise<void> {
  wire();
  try {
    // The three answers the first curves need, asked at once.
    const [project, runs, names] = await Promise.all([
      api<{ projid: string; root: string; store: string | null; runs: number; data_version: string }>("/api/project"),
      api<{ runs: RunRow[] }>("/api/runs"),
      api<NamesAnswer>("/api/names"),
    ]);
    document.getElementById("project")!.textContent = `${project.projid} · ${project.root} · ${project.store ?? "custom"} store`;
    showRuns(runs);
    showNames(names);
    await loadCurves();
    await renderVersions(document.getElementById("versions")!);
    setupReplay(state.runs);
    followChanges(project.data_version);
    setStatus("");
  } catch (e) {
    setStatus(String(e instanceof Error ? e.message : e), true);
  }
}

void main();
