// The replay panel: the plan of a replay (the text of `flor replay
// --dry-run`) and the progress of running replays, polled.

import { api, el } from "./util";
import type { ReplaysAnswer, RunRow } from "./types";

async function showPlan(): Promise<void> {
  const apply = (document.getElementById("apply") as HTMLInputElement).value.trim();
  const where = (document.getElementById("where") as HTMLInputElement).value.trim();
  const out = document.getElementById("plan")!;
  if (!apply) {
    out.textContent = "Name the statements to replay (e.g. grad_norm).";
    return;
  }
  const q = new URLSearchParams({ apply });
  if (where) q.set("where", where);
  out.textContent = "planning…";
  try {
    const plan = await api<{ text: string }>(`/api/plan?${q}`);
    out.textContent = plan.text;
  } catch (e) {
    out.textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
  }
}

async function pollReplays(): Promise<void> {
  const box = document.getElementById("replays")!;
  try {
    const answer = await api<ReplaysAnswer>("/api/replays");
    if (answer.replays.length === 0) {
      box.replaceChildren(el("p", { class: "hint" }, "No replay is running (a finished replay removes its work folders)."));
    } else {
      const list = el("ul");
      for (const r of answer.replays) {
        const segs = r.segments.map((s) => `${s.segment + 1}: ${s.state}${s.total > 0 ? ` ${s.done}/${s.total}` : ""}`).join(", ");
        list.append(el("li", {}, `run ${r.run}: segments ${segs}; ${r.records_recovered} records recovered`));
      }
      box.replaceChildren(el("p", {}, `${answer.workers_busy} worker(s) busy`), list);
    }
  } catch {
    // The next poll tries again.
  }
  window.setTimeout(() => void pollReplays(), 2000);
}

export function setupReplay(runs: RunRow[]): void {
  const apply = document.getElementById("apply") as HTMLInputElement;
  const replayed = [...new Set(runs.flatMap((r) => r.replayed))];
  if (!apply.value && replayed.length > 0) apply.value = replayed.join(",");
  document.getElementById("plan-button")!.addEventListener("click", () => void showPlan());
  void pollReplays();
}
