// Small helpers: the API (with the page's token), elements, numbers.

/** The token the page was opened with (`?token=`), passed on to the API. */
const token = new URLSearchParams(window.location.search).get("token");

/** GETs an API path; a non-2xx answer throws its error message. */
export async function api<T>(path: string): Promise<T> {
  const url = new URL(path, window.location.href);
  if (token) url.searchParams.set("token", token);
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body?.error?.message ?? `${response.status} ${response.statusText}`);
  return body as T;
}

/** An element with attributes and children (text or nodes). */
export function el(tag: string, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

export function fmtNumber(v: number): string {
  if (!isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toPrecision(4);
}

export function fmtDuration(s: number | null): string {
  if (s === null) return "";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function setStatus(text: string, error = false): void {
  const s = document.getElementById("status")!;
  s.textContent = text;
  s.className = error ? "error" : "";
}

/** A diff as lines coloured by their first character. */
export function diffBlock(text: string): HTMLElement {
  const pre = el("pre", { class: "diff" });
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const cls = line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "ctx";
    pre.append(el("span", { class: cls }, line), "\n");
  }
  return pre;
}

/** Distinct colours per code version (index modulo length). */
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

export function versionColour(index: number | null): string {
  return index === null ? "#555" : PALETTE[index % PALETTE.length];
}
