// The versions panel: per script, the code versions runs used, the diff
// from the version before, the hindsight statements as the propagator
// carries them into each version, and the args that differ between runs.

import { api, el, diffBlock, versionColour } from "./util";
import type { ScriptVersions, Version } from "./types";

function statementList(v: Version): HTMLElement {
  const list = el("ul", { class: "statements" });
  for (const s of v.statements ?? []) {
    const where = s.line !== null ? `line ${s.line}` : "not placed";
    const item = el("li", { class: `outcome-${s.outcome}`, "data-outcome": s.outcome });
    item.append(
      el("span", { class: "badge" }, s.outcome),
      ` ${where}: `,
      el("code", {}, s.text ?? s.statement ?? ""),
    );
    if (s.renames.length > 0) item.append(` (renamed ${s.renames.join(", ")})`);
    if (s.reason) item.append(el("div", { class: "reason" }, s.reason));
    list.append(item);
  }
  return list;
}

function versionBlock(v: Version): HTMLElement {
  const box = el("details", { class: "version", "data-version": v.label, open: "" });
  const summary = el("summary");
  summary.append(
    el("span", { class: "swatch", style: `background:${versionColour(v.index)}` }),
    ` ${v.label} `,
    el("code", {}, (v.commit ?? "").slice(0, 10)),
    ` · ${v.runs.length} run${v.runs.length === 1 ? "" : "s"}`,
    v.diff !== null ? ` · +${v.added} −${v.removed} lines since the version before` : "",
  );
  box.append(summary);
  if (v.statements && v.statements.length > 0) box.append(el("h4", {}, "hindsight statements, as carried into this version"), statementList(v));
  if (v.skipped) box.append(el("p", { class: "error" }, `not replayable: ${v.skipped}`));
  if (v.diff) box.append(el("h4", {}, "code diff from the version before"), diffBlock(v.diff));
  return box;
}

function argsTable(s: ScriptVersions): HTMLElement {
  const table = el("table", { class: "args" });
  const head = el("tr", {}, el("th", {}, "run"), ...s.args.map((a) => el("th", {}, a)));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const r of s.runs) {
    const cells = s.args.map((a) => el("td", { class: r.changed.includes(a) ? "changed" : "" }, JSON.stringify(r.args[a] ?? null)));
    body.append(el("tr", {}, el("td", { class: "mono" }, r.run.replace("T", " ")), ...cells));
  }
  table.append(body);
  return table;
}

export async function renderVersions(box: HTMLElement): Promise<void> {
  const answer = await api<{ scripts: ScriptVersions[] }>("/api/versions");
  box.replaceChildren();
  for (const s of answer.scripts) {
    const section = el("div", { class: "script", "data-script": s.script });
    const names = s.names.length > 0 ? ` · statements of ${s.names.join(", ")}` : "";
    section.append(el("h3", {}, `${s.script}${names}`));
    if (s.propagation_error) section.append(el("p", { class: "error" }, s.propagation_error));
    for (const v of s.versions) section.append(versionBlock(v));
    if (s.working_tree) {
      const wt = el("details", { class: "version working-tree" });
      wt.append(el("summary", {}, `working tree (newest, not yet run) · +${s.working_tree.added} −${s.working_tree.removed} lines`), diffBlock(s.working_tree.diff));
      section.append(wt);
    }
    if (s.args.length > 0) section.append(el("h4", {}, "args that differ between runs (changed since the run before: highlighted)"), argsTable(s));
    box.append(section);
  }
}
