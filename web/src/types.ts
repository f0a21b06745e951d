// The shapes of the JSON API's answers (src/bin/flor/serve/).

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface RunRow {
  tstamp: string;
  script: string;
  status: string;
  commit: string | null;
  version: string | null;
  version_index: number | null;
  code: string | null;
  args: Record<string, Json>;
  values: Record<string, Json>;
  argv: string[];
  start: string;
  ended: string | null;
  duration_s: number | null;
  records: number;
  replayed: string[];
}

export interface NamesAnswer {
  names: { name: string; kind: string; count: number }[];
  loops: string[];
  /** The names the page draws first (the server reads them ahead). */
  default: string[];
  /** `<checkpoint>.<tensor>` paths with statistics (tensor:PATH:STAT). */
  tensors: string[];
  tensor_stats: string[];
}

export interface Series {
  run: string;
  script: string;
  version: string | null;
  version_index: number | null;
  points: number;
  y: (number | null)[];
  replay: number[];
  replayed: "all" | "some" | "none";
}

export interface Chart {
  name: string;
  x_label: string;
  x: number[];
  downsampled: boolean;
  series: Series[];
}

export interface CurvesAnswer {
  charts: Chart[];
}

export interface Statement {
  new_line: number;
  statement: string | null;
  outcome: "placed" | "approximate" | "present" | "failed";
  line: number | null;
  text: string | null;
  renames: string[];
  reason: string | null;
}

export interface Version {
  label: string;
  index: number;
  commit: string | null;
  digest: string | null;
  runs: string[];
  lines: number | null;
  diff: string | null;
  added: number | null;
  removed: number | null;
  statements: Statement[] | null;
  propagated_diff: string | null;
  skipped: string | null;
}

export interface ScriptVersions {
  script: string;
  names: string[];
  propagation_error: string | null;
  versions: Version[];
  working_tree: { diff: string; added: number; removed: number } | null;
  args: string[];
  runs: { run: string; args: Record<string, Json>; changed: string[] }[];
}

export interface Segment {
  segment: number;
  state: "done" | "running" | "queued";
  done: number;
  total: number;
}

export interface ReplaysAnswer {
  replays: { run: string; work: string; segments: Segment[]; records_recovered: number }[];
  workers_busy: number;
}
