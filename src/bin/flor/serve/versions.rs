//! Code versions: `/api/versions` (the versions of a script that runs
//! used, the diff between them, the hindsight statements as the propagator
//! carries them into each, the args that differ between runs),
//! `/api/plan` (the text of `flor replay --dry-run`) and `/api/replays`
//! (the progress of replays, from their work folders).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use flor::core::propagate::Outcome;
use flor::core::store::{RunKey, RunRow};
use flor::replay::{CostModel, Plan, ReplayOptions, VersionPlan};
use flor::{IterSelect, Project};
use serde_json::{json, Value as Json};

use super::api::{replay_dir, replayed_names, run_level, ApiError, ApiResult, Body, Params};
use super::diff::unified;
use super::Shared;

/// The parameters `/api/versions` takes.
pub(crate) const PARAMS: &[&str] = &["apply", "script"];

/// The parameters `/api/plan` takes.
pub(crate) const PLAN_PARAMS: &[&str] = &["apply", "where", "script", "iter", "force"];

/// A run's code version: its script's text as of its snapshot commit.
#[derive(Debug, Clone)]
pub(crate) struct VersionLabel {
    /// `v1`, `v2`, ... per script, in the order runs first used them.
    pub(crate) label: String,
    /// 0, 1, ... (the label's number less one).
    pub(crate) index: usize,
    /// A digest of the script's text (`None`: no snapshot to read).
    pub(crate) digest: Option<String>,
}

/// The digest of `script` as of `commit` (cached: commits never change).
fn script_digest(shared: &Shared, root: &Path, commit: &str, script: &str) -> Option<String> {
    let key = (commit.to_owned(), script.to_owned());
    if let Some(d) = shared.script_digests.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return d.clone();
    }
    let digest = flor_git::read_file_at(root, commit, script).ok().map(|b| blake3::hash(&b).to_hex()[..12].to_owned());
    shared.script_digests.lock().unwrap_or_else(|p| p.into_inner()).insert(key, digest.clone());
    digest
}

/// Each run's code version (runs oldest first, as the store lists them).
pub(crate) fn version_labels(shared: &Shared, root: &Path, rows: &[RunRow]) -> HashMap<RunKey, VersionLabel> {
    let mut per_script: HashMap<&str, Vec<Option<String>>> = HashMap::new();
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let digest = r.meta.commit.as_deref().and_then(|c| script_digest(shared, root, c, &r.meta.filename));
        let seen = per_script.entry(r.meta.filename.as_str()).or_default();
        let index = match seen.iter().position(|d| *d == digest) {
            Some(i) => i,
            None => {
                seen.push(digest.clone());
                seen.len() - 1
            }
        };
        out.insert(r.key, VersionLabel { label: format!("v{}", index + 1), index, digest });
    }
    out
}

/// A statement's fate in a version, as JSON.
fn statement_json(st: &flor::replay::StatementPlan, version: &VersionPlan, newest: &[&str]) -> Json {
    let source: Option<Vec<&str>> = version.source.as_deref().map(|s| s.lines().collect());
    let line_text =
        |line: usize| source.as_ref().and_then(|s| s.get(line.wrapping_sub(1))).map(|t| t.trim().to_owned());
    let (outcome, reason) = match &st.outcome {
        Outcome::Placed { .. } => ("placed", None),
        Outcome::Approximate { anchor, .. } => ("approximate", Some(format!("{anchor:?}"))),
        Outcome::AlreadyPresent { .. } => ("present", None),
        Outcome::Failed { reason } => ("failed", Some(reason.clone())),
    };
    json!({
        "new_line": st.new_line,
        "statement": newest.get(st.new_line.wrapping_sub(1)).map(|t| t.trim()),
        "outcome": outcome,
        "line": st.outcome.line(),
        "text": st.outcome.line().and_then(line_text),
        "renames": st.outcome.renames().iter().map(|(a, b)| format!("{a} -> {b}")).collect::<Vec<_>>(),
        "reason": reason,
    })
}

/// Names whose statements `/api/versions` carries when `apply` is not
/// given: those replays recovered for runs of `script`.
fn default_names(project: &Project, rows: &[&RunRow]) -> flor::Result<Vec<String>> {
    let replayed = replayed_names(project)?;
    let names: BTreeSet<String> = rows.iter().filter_map(|r| replayed.get(&r.key)).flatten().cloned().collect();
    Ok(names.into_iter().collect())
}

/// The replay plan of `names` over every run of `script` (as if forced):
/// what the propagator makes of each version.
fn propagation(shared: &Shared, project: &mut Project, script: &str, names: &[String]) -> flor::Result<Plan> {
    let opts = ReplayOptions {
        names: names.to_vec(),
        jobs: 1,
        force: true,
        script: Some(script.to_owned()),
        propagators: Some(shared.propagators(project)),
        ..ReplayOptions::default()
    };
    flor::replay::plan(project, &opts, &CostModel::default())
}

/// The args whose values differ between `runs`: per run, those values and
/// which changed since the run before it.
fn args_diff(runs: &[&RunRow], args: &HashMap<RunKey, serde_json::Map<String, Json>>) -> (Vec<String>, Vec<Json>) {
    let mut values: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for r in runs {
        let a = args.get(&r.key);
        for name in args.values().flat_map(|m| m.keys()) {
            let v = a.and_then(|m| m.get(name)).map_or("null".to_owned(), |v| v.to_string());
            values.entry(name).or_default().insert(v);
        }
    }
    let differing: Vec<String> = values.iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| (*k).to_owned()).collect();
    let mut previous: Option<&serde_json::Map<String, Json>> = None;
    let mut out = Vec::with_capacity(runs.len());
    let empty = serde_json::Map::new();
    for r in runs {
        let a = args.get(&r.key).unwrap_or(&empty);
        let shown: serde_json::Map<String, Json> =
            differing.iter().map(|k| (k.clone(), a.get(k).cloned().unwrap_or(Json::Null))).collect();
        let changed: Vec<&String> = match previous {
            None => Vec::new(),
            Some(p) => differing.iter().filter(|k| p.get(*k) != a.get(*k)).collect(),
        };
        out.push(json!({ "run": r.meta.tstamp, "args": shown, "changed": changed }));
        previous = Some(a);
    }
    (differing, out)
}

/// `/api/versions`.
pub(crate) fn versions(shared: &Shared, params: &Params) -> ApiResult<Body> {
    let apply = params.list("apply");
    let only = params.one("script")?;
    let mut project = shared.open()?;
    let rows = project.runs()?;
    let root = project.root().to_owned();
    let labels = version_labels(shared, &root, &rows);
    let mut scripts: Vec<&str> =
        rows.iter().map(|r| r.meta.filename.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    if let Some(s) = &only {
        if !scripts.contains(&s.as_str()) {
            return Err(ApiError::param("script", format!("no run of {s:?}; scripts: {}", scripts.join(", "))));
        }
        scripts.retain(|x| x == s);
    }
    let args: HashMap<RunKey, serde_json::Map<String, Json>> =
        run_level(shared, &project)?.into_iter().map(|(k, (a, _))| (k, a)).collect();
    let mut out = Vec::new();
    for script in scripts {
        let runs: Vec<&RunRow> = rows.iter().filter(|r| r.meta.filename == script).collect();
        let names = if apply.is_empty() { default_names(&project, &runs)? } else { apply.clone() };
        let (plan, propagation_error) = match names.is_empty() {
            true => (None, None),
            false => match propagation(shared, &mut project, script, &names) {
                Ok(p) => (Some(p), None),
                // Names asked for must be there; defaults may be gone.
                Err(e) if !apply.is_empty() => return Err(e.into()),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let newest_text = std::fs::read_to_string(root.join(script)).ok();
        let newest: Vec<&str> = newest_text.as_deref().map(|t| t.lines().collect()).unwrap_or_default();
        let mut list: Vec<Json> = Vec::new();
        let mut previous: Option<String> = None;
        let mut by_version: BTreeMap<usize, Vec<&RunRow>> = BTreeMap::new();
        for r in &runs {
            by_version.entry(labels.get(&r.key).map_or(0, |v| v.index)).or_default().push(r);
        }
        for (index, members) in &by_version {
            let commit = members.iter().find_map(|r| r.meta.commit.clone());
            let text = commit
                .as_deref()
                .and_then(|c| flor_git::read_file_at(&root, c, script).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let diff = match (&previous, &text) {
                (Some(p), Some(t)) => Some(unified(p, t, 3)),
                _ => None,
            };
            let commits: BTreeSet<&str> = members.iter().filter_map(|r| r.meta.commit.as_deref()).collect();
            let planned = plan.as_ref().and_then(|p| p.versions.iter().find(|v| commits.contains(v.commit.as_str())));
            list.push(json!({
                "label": format!("v{}", index + 1),
                "index": index,
                "commit": commit,
                "digest": members.first().and_then(|r| labels.get(&r.key)).and_then(|v| v.digest.clone()),
                "runs": members.iter().map(|r| r.meta.tstamp.as_str()).collect::<Vec<_>>(),
                "lines": text.as_deref().map(|t| t.lines().count()),
                "diff": diff.as_ref().map(|d| d.text.as_str()),
                "added": diff.as_ref().map(|d| d.added),
                "removed": diff.as_ref().map(|d| d.removed),
                "statements": planned.map(|v| v.statements.iter().map(|s| statement_json(s, v, &newest)).collect::<Vec<_>>()),
                "propagated_diff": planned.map(|v| v.diff.as_str()),
                "skipped": planned.and_then(|v| v.failure.as_deref()),
            }));
            previous = text.or(previous);
        }
        let working = match (&previous, &newest_text) {
            (Some(p), Some(t)) if p != t => {
                let d = unified(p, t, 3);
                Some(json!({ "diff": d.text, "added": d.added, "removed": d.removed }))
            }
            _ => None,
        };
        let (differing, per_run) = args_diff(&runs, &args);
        out.push(json!({
            "script": script,
            "names": names,
            "propagation_error": propagation_error,
            "versions": list,
            "working_tree": working,
            "args": differing,
            "runs": per_run,
        }));
    }
    Ok(Body::Json(json!({ "scripts": out })))
}

/// `/api/plan`: the plan text `flor replay --dry-run` prints.
pub(crate) fn plan(shared: &Shared, params: &Params) -> ApiResult<Body> {
    let names = params.list("apply");
    if names.is_empty() {
        return Err(ApiError::param(
            "apply",
            "required: the names (or @LINE) whose statements to replay, e.g. apply=grad_norm",
        ));
    }
    let mut iters = Vec::new();
    for spec in params.all("iter") {
        iters.push(spec.parse::<IterSelect>().map_err(|e| ApiError::param("iter", format!("{spec:?}: {e}")))?);
    }
    let force = params.flag("force")?;
    let mut project = shared.open()?;
    let opts = ReplayOptions {
        names,
        where_clause: params.one("where")?.filter(|w| !w.trim().is_empty()),
        iters,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        force,
        script: params.one("script")?,
        propagators: Some(shared.propagators(&project)),
        ..ReplayOptions::default()
    };
    let plan = flor::replay::plan(&mut project, &opts, &CostModel::default())?;
    let mut text = plan.render();
    text.push_str(if plan.is_empty() { "Nothing to replay.\n" } else { "Dry run: nothing was executed.\n" });
    Ok(Body::Json(json!({
        "text": text,
        "empty": plan.is_empty(),
        "runs": plan.runs.iter().map(|r| r.meta.tstamp.as_str()).collect::<Vec<_>>(),
        "skipped": plan.skipped.iter().map(|(t, why)| json!({ "run": t, "reason": why })).collect::<Vec<_>>(),
        "estimated_s": plan.makespan_secs,
    })))
}

/// One segment's state in a replay work folder.
fn segment_state(dir: &Path, k: &str) -> (String, u64, u64, u64) {
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("seg-{k}.{ext}"))).ok();
    let mut progress = read("progress")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse::<u64>().ok())
        .collect::<Vec<_>>();
    progress.resize(2, 0);
    let finished = dir.join(format!("seg-{k}.done")).exists();
    let records = if finished { read("jsonl").map_or(0, |t| t.lines().count() as u64) } else { 0 };
    let state = if finished {
        "done"
    } else if progress[0] > 0 || dir.join(format!("seg-{k}.progress")).exists() {
        "running"
    } else {
        "queued"
    };
    (state.to_owned(), progress[0], progress[1], records)
}

/// `/api/replays`: the replays whose work folders are under
/// `.flor/replay/` (a finished replay removes its own).
pub(crate) fn replays(shared: &Shared, _: &Params) -> ApiResult<Body> {
    let project = shared.open()?;
    Ok(Body::Json(scan_replays(&replay_dir(project.root()))))
}

/// The replays under `base` (`<run id>/<work tag>/seg-K.*`, as
/// `flor_replay::LocalExecutor` lays them out): per work folder its
/// segments' states and progress, the records finished segments hold, and
/// how many segments are running.
fn scan_replays(base: &Path) -> Json {
    let mut out = Vec::new();
    let mut busy = 0;
    let runs = std::fs::read_dir(base).into_iter().flatten().flatten();
    for run in runs.filter(|e| e.path().is_dir()) {
        let run_id = run.file_name().to_string_lossy().into_owned();
        let Some(tstamp) = flor::core::record::tstamp_of_run_id(&run_id) else { continue };
        for work in std::fs::read_dir(run.path()).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
            let dir = work.path();
            let mut segs: BTreeSet<String> = BTreeSet::new();
            for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(k) = name.strip_prefix("seg-").and_then(|n| n.split('.').next()) {
                    if k.bytes().all(|b| b.is_ascii_digit()) && !k.is_empty() {
                        segs.insert(k.to_owned());
                    }
                }
            }
            let mut segments = Vec::new();
            let mut records = 0;
            for k in &segs {
                let (state, done, total, recovered) = segment_state(&dir, k);
                busy += usize::from(state == "running");
                records += recovered;
                segments.push(
                    json!({ "segment": k.parse::<u64>().unwrap_or(0), "state": state, "done": done, "total": total }),
                );
            }
            segments.sort_by_key(|s| s["segment"].as_u64());
            out.push(json!({
                "run": tstamp,
                "work": work.file_name().to_string_lossy(),
                "segments": segments,
                "records_recovered": records,
            }));
        }
    }
    json!({ "replays": out, "workers_busy": busy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_work_folders_read_as_progress() {
        let base = tempfile::tempdir().unwrap();
        let work = base.path().join("2026-01-02T03-04-05.000006").join("a1b2");
        std::fs::create_dir_all(work.join("seg-1")).unwrap();
        std::fs::write(work.join("seg-0.json"), "{}").unwrap();
        std::fs::write(work.join("seg-0.jsonl"), "{}\n{}\n{}\n").unwrap();
        std::fs::write(work.join("seg-0.done"), "").unwrap();
        std::fs::write(work.join("seg-1.json"), "{}").unwrap();
        std::fs::write(work.join("seg-1.progress"), "3 10").unwrap();
        std::fs::write(work.join("seg-2.json"), "{}").unwrap();
        std::fs::create_dir_all(base.path().join("not-a-run")).unwrap();
        let answer = scan_replays(base.path());
        assert_eq!(answer["workers_busy"], 1);
        let r = &answer["replays"][0];
        assert_eq!(answer["replays"].as_array().unwrap().len(), 1);
        assert_eq!(r["run"], "2026-01-02T03:04:05.000006");
        assert_eq!(r["records_recovered"], 3);
        let states: Vec<(&str, u64, u64)> = r["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["state"].as_str().unwrap(), s["done"].as_u64().unwrap(), s["total"].as_u64().unwrap()))
            .collect();
        assert_eq!(states, [("done", 0, 0), ("running", 3, 10), ("queued", 0, 0)]);
        assert_eq!(scan_replays(&base.path().join("absent")), json!({ "replays": [], "workers_busy": 0 }));
    }
}
