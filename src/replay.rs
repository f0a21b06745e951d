//! Hindsight replay: `flor replay --apply NAME[,NAME...]`.
//!
//! 1. The statements are the `flor.log("NAME", ...)` calls of the newest
//!    version of the script (the working tree).
//! 2. The runs of that script that lack a name (all with `force`), narrowed
//!    by a SQL predicate over the run-level columns of the dataframe.
//! 3. Per code version (the run's snapshot commit): the statements are
//!    propagated into the old script ([`flor_propagate`]); a version where a
//!    statement cannot be placed is skipped with the reason.
//! 4. Per run: the forward records (from the run's git ref) give the outer
//!    loop, its timings and checkpoints; [`flor_replay::plan_run`] turns them
//!    and the statements' [`Level`] into segments with cost estimates.
//! 5. Execution: each run's version is materialized into
//!    `.flor/replay/<run>/<tag>/code` (never the user's checkout), the
//!    propagated script written there, and each segment runs as a process
//!    (the run's interpreter and command line, [`SPEC_ENV`] naming its
//!    [`SegmentSpec`]) on a pool of workers. A finished segment leaves a
//!    `.done` marker, so an interrupted replay resumes where it stopped.
//! 6. When all segments of a run are done, their record files are attached
//!    to the run's ref (`.flor/records/<run>.replay-<n>-<k>.jsonl`, replay `n`
//!    of the run, segment `k`) and the
//!    query database ingests them: the values appear in `dataframe` next to
//!    the forward ones, at the same run and loop positions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flor_core::record::{parse_lines, Parsed, RecordKind};
use flor_core::store::ValueFilter;
use flor_core::{ContextMap, RunMeta, RunStatus, Value};
use flor_propagate::Outcome;
pub use flor_replay::{CostModel, Level, RunPlan, RunProfile, Segment, Step};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ingest::{label_for, ref_for, replay_label, replay_number, RECORDS_DIR};
use crate::project::Project;

/// The environment variable that makes a front end replay a segment: the
/// path of its [`SegmentSpec`] (JSON).
pub const SPEC_ENV: &str = "FLOR_REPLAY";

/// One stored object of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Object name (`model`, `__rng__`, ...).
    pub name: String,
    /// BLAKE3 digest in the object store.
    pub digest: String,
    /// Serializer format.
    pub format: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What one replay process does: written by `flor replay`, read by the
/// front end of the replayed script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSpec {
    /// Root of the repository whose run is replayed (object store, records).
    pub root: PathBuf,
    /// The run, as recorded (identity and final metadata).
    pub run: RunMeta,
    /// The names to record.
    pub names: Vec<String>,
    /// The record file this process writes.
    pub output: PathBuf,
    /// Name of the run's outermost loop.
    pub outer_loop: Option<String>,
    /// Which outer iterations to execute, and how.
    pub segment: Segment,
    /// Checkpoints by the outer iteration at whose end they were taken.
    pub checkpoints: BTreeMap<u64, Vec<CheckpointRef>>,
    /// A file the front end rewrites after each outer iteration with `done
    /// total` (the coordinator's progress bars read it).
    #[serde(default)]
    pub progress: Option<PathBuf>,
}

impl SegmentSpec {
    /// Reads a spec file.
    pub fn read(path: &Path) -> Result<SegmentSpec> {
        let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Replay(format!("{} is not a replay spec: {e}", path.display())))
    }

    fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Replay(e.to_string()))?;
        fs::write(path, json).map_err(|e| Error::io("write", path, e))
    }
}

/// The forward record file of `run`, from its git ref.
fn forward_records(root: &Path, run: &RunMeta) -> Result<Parsed> {
    let id = run.run_id();
    let path = format!("{RECORDS_DIR}/{}", label_for(&id));
    let bytes = flor_git::read_file_at(root, &ref_for(&id), &path)?;
    Ok(parse_lines(&bytes, 1))
}

/// Where `run`'s loop iterations are (for a replay recorder).
pub(crate) fn forward_contexts(root: &Path, run: &RunMeta) -> Result<ContextMap> {
    Ok(ContextMap::new(forward_records(root, run)?.loops))
}

/// The planning profile and checkpoints of a forward run's records.
pub fn profile_of(parsed: &Parsed) -> (RunProfile, BTreeMap<u64, Vec<CheckpointRef>>) {
    let mut profile = RunProfile::default();
    let outer_loop = parsed.loops.iter().find(|l| l.parent.is_none()).map(|l| l.name.clone());
    let mut outer_index: HashMap<u32, u64> = HashMap::new();
    if let Some(name) = &outer_loop {
        for l in parsed.loops.iter().filter(|l| l.parent.is_none() && &l.name == name) {
            outer_index.insert(l.ctx, l.iteration);
        }
    }
    let n = outer_index.values().copied().max().map_or(0, |m| m + 1) as usize;
    profile.outer_loop = outer_loop.map(|n| n.to_string());
    profile.iteration_secs = vec![0.0; n];
    profile.nested_secs = vec![0.0; n];
    for r in parsed.records.iter().filter(|r| r.kind == RecordKind::Timing) {
        let secs = match r.value {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            _ => continue,
        };
        let at = r.ctx.and_then(|c| outer_index.get(&c)).map(|&i| i as usize);
        match (&*r.name, at) {
            ("setup", None) => profile.setup_secs = secs,
            ("teardown", None) => profile.teardown_secs = secs,
            ("iteration", Some(i)) => profile.iteration_secs[i] = secs,
            (name, Some(i)) if name.starts_with("loop:") => profile.nested_secs[i] += secs,
            _ => {}
        }
    }
    let mut ckpts: BTreeMap<u64, BTreeMap<String, CheckpointRef>> = BTreeMap::new();
    for c in &parsed.checkpoints {
        if let Some(&i) = c.ctx.and_then(|ctx| outer_index.get(&ctx)) {
            ckpts.entry(i).or_default().insert(
                c.name.clone(),
                CheckpointRef {
                    name: c.name.clone(),
                    digest: c.digest.clone(),
                    format: c.format.clone(),
                    bytes: c.bytes,
                },
            );
        }
    }
    // An iteration counts as checkpointed when it has every object the run
    // ever checkpointed.
    let all: BTreeSet<&String> = ckpts.values().flat_map(|m| m.keys()).collect();
    let mut out = BTreeMap::new();
    for (i, objs) in &ckpts {
        if objs.len() == all.len() {
            profile.checkpoints.insert(*i, objs.values().map(|c| c.bytes).sum());
            out.insert(*i, objs.values().cloned().collect());
        }
    }
    (profile, out)
}

/// Where the statement at `line` (1-based) of `source` sits: inside the
/// loop named `outer` ([`Level::Outer`]), inside another `flor.loop`
/// ([`Level::Inner`]), inside a function (called from who knows where:
/// [`Level::Inner`], the safe choice), or at module level before or after
/// the first `flor.loop`.
pub fn statement_level(source: &str, line: usize, outer: Option<&str>) -> Level {
    let lines: Vec<&str> = source.lines().collect();
    let Some(target) = line.checked_sub(1).and_then(|i| lines.get(i)) else { return Level::Inner };
    let indent = |s: &str| s.len() - s.trim_start().len();
    let mut cur = indent(target);
    let mut innermost_loop: Option<String> = None;
    let mut in_function = false;
    for l in lines[..line - 1].iter().rev() {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent(l);
        if ind >= cur {
            continue;
        }
        cur = ind;
        if innermost_loop.is_none() {
            if let Some(name) = loop_name(t) {
                innermost_loop = Some(name);
            }
        }
        if t.starts_with("def ") || t.starts_with("async def ") {
            in_function = true;
        }
        if cur == 0 {
            break;
        }
    }
    match (innermost_loop, outer) {
        (Some(name), Some(o)) if name == o && !in_function => Level::Outer,
        (Some(_), _) => Level::Inner,
        (None, _) if in_function => Level::Inner,
        (None, _) => {
            let first_loop = lines.iter().position(|l| loop_name(l.trim_start()).is_some());
            match first_loop {
                Some(p) if p < line - 1 => Level::Teardown,
                _ => Level::Setup,
            }
        }
    }
}

/// The loop name of a `for ... in flor.loop("NAME", ...)` or `with
/// flor.iteration("NAME", ...)` header.
fn loop_name(header: &str) -> Option<String> {
    let rest = if header.starts_with("for ") {
        header.split_once("flor.loop(")?.1
    } else if header.starts_with("with ") {
        header.split_once("flor.iteration(")?.1
    } else {
        return None;
    };
    let rest = rest.trim_start();
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &rest[1..];
    body.find(q).map(|end| body[..end].to_owned())
}

/// What `flor replay` was asked.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// The names whose `flor.log` statements to replay.
    pub names: Vec<String>,
    /// A SQL predicate over the run-level dataframe columns.
    pub where_clause: Option<String>,
    /// Worker processes.
    pub jobs: usize,
    /// Replay runs that already have the names.
    pub force: bool,
    /// Only this script (path relative to the repository root); default:
    /// every recorded script whose working-tree version has the statements.
    pub script: Option<String>,
}

/// One statement's fate in one code version.
#[derive(Debug, Clone)]
pub struct StatementPlan {
    /// Line in the newest version.
    pub new_line: usize,
    /// What propagation did.
    pub outcome: Outcome,
    /// Where it sits in the old version.
    pub level: Option<Level>,
}

/// One code version (snapshot commit) of the script.
#[derive(Debug, Clone)]
pub struct VersionPlan {
    /// The snapshot commit.
    pub commit: String,
    /// Script path relative to the root.
    pub script: String,
    /// The statements.
    pub statements: Vec<StatementPlan>,
    /// The propagated source (when every statement was placed or present).
    pub source: Option<String>,
    /// Why the version is skipped.
    pub failure: Option<String>,
    /// A unified-style excerpt of the change.
    pub diff: String,
}

/// One run to replay.
#[derive(Debug, Clone)]
pub struct RunReplay {
    /// The run.
    pub meta: RunMeta,
    /// Index into [`Plan::versions`].
    pub version: usize,
    /// The plan.
    pub plan: RunPlan,
    /// Its outer loop.
    pub outer_loop: Option<String>,
    /// Its checkpoints.
    pub checkpoints: BTreeMap<u64, Vec<CheckpointRef>>,
}

/// Everything `flor replay` will do, shown before it does it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The names.
    pub names: Vec<String>,
    /// Code versions involved.
    pub versions: Vec<VersionPlan>,
    /// Runs that will replay.
    pub runs: Vec<RunReplay>,
    /// Runs that cannot (run tstamp, reason).
    pub skipped: Vec<(String, String)>,
    /// Worker processes.
    pub jobs: usize,
    /// Estimated seconds, all work together.
    pub total_secs: f64,
    /// Estimated wall-clock seconds with `jobs` workers.
    pub makespan_secs: f64,
}

impl Plan {
    /// Whether there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The plan as text for a terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Replay plan for {}", self.names.join(", "));
        for (i, v) in self.versions.iter().enumerate() {
            let runs: Vec<&RunReplay> = self.runs.iter().filter(|r| r.version == i).collect();
            let _ = writeln!(
                s,
                "\nversion {} of {} ({} run{})",
                short(&v.commit),
                v.script,
                runs.len(),
                plural(runs.len())
            );
            for st in &v.statements {
                let what = match &st.outcome {
                    Outcome::Placed { line, renames } if renames.is_empty() => format!("placed at line {line}"),
                    Outcome::Placed { line, renames } => format!(
                        "placed at line {line} (renamed {})",
                        renames.iter().map(|(a, b)| format!("{a} -> {b}")).collect::<Vec<_>>().join(", ")
                    ),
                    Outcome::AlreadyPresent { line } => format!("already present at line {line}"),
                    Outcome::Failed { reason } => format!("FAILED: {reason}"),
                };
                let level = st.level.map(|l| format!("; {}", l.describe())).unwrap_or_default();
                let _ = writeln!(s, "  line {} of the newest version: {what}{level}", st.new_line);
            }
            if let Some(f) = &v.failure {
                let _ = writeln!(s, "  skipped: {f}");
            }
            if !v.diff.is_empty() {
                for l in v.diff.lines() {
                    let _ = writeln!(s, "    {l}");
                }
            }
            for r in runs {
                let segs = r.plan.segments.len();
                let _ = writeln!(
                    s,
                    "  run {} ({}): {} outer iteration{} to execute in {} segment{}; estimated {:.2} s (the original run took {:.2} s)",
                    r.meta.tstamp,
                    kwargs_text(&r.meta.argv),
                    r.plan.segments.iter().map(|s| s.steps.len()).sum::<usize>(),
                    plural(r.plan.segments.iter().map(|s| s.steps.len()).sum::<usize>()),
                    segs,
                    plural(segs),
                    r.plan.estimate_secs,
                    r.plan.forward_secs
                );
            }
        }
        for (t, why) in &self.skipped {
            let _ = writeln!(s, "\nrun {t}: skipped: {why}");
        }
        let _ = writeln!(
            s,
            "\n{} run{} to replay; estimated {:.2} s of work, {:.2} s with {} worker{}",
            self.runs.len(),
            plural(self.runs.len()),
            self.total_secs,
            self.makespan_secs,
            self.jobs,
            plural(self.jobs)
        );
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

fn kwargs_text(argv: &[String]) -> String {
    let k: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    if k.is_empty() {
        "no arguments".into()
    } else {
        k.join(" ")
    }
}

/// The lines added by a propagation, with two lines of context.
fn excerpt(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Inserted lines only: walk both, b has extra lines.
    let mut added = Vec::new();
    let (mut i, mut j) = (0, 0);
    while j < b.len() {
        if i < a.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else {
            added.push(j);
            j += 1;
        }
    }
    let mut out = String::new();
    let mut shown = BTreeSet::new();
    for &k in &added {
        for c in k.saturating_sub(2)..(k + 3).min(b.len()) {
            shown.insert(c);
        }
    }
    let mut prev: Option<usize> = None;
    for k in shown {
        if prev.is_some_and(|p| k > p + 1) {
            out.push_str("...\n");
        }
        let mark = if added.contains(&k) { '+' } else { ' ' };
        let _ = writeln!(out, "{mark} {:>4} | {}", k + 1, b[k]);
        prev = Some(k);
    }
    out
}

/// Builds the plan (nothing runs, nothing is written).
pub fn plan(project: &mut Project, opts: &ReplayOptions, cost: &CostModel) -> Result<Plan> {
    if opts.names.is_empty() {
        return Err(Error::Replay("no names to apply (--apply NAME[,NAME...])".into()));
    }
    project.sync()?;
    let root = project.root().to_owned();
    let runs = project.runs()?;
    let jobs = opts.jobs.max(1);
    let names: Vec<&str> = opts.names.iter().map(String::as_str).collect();

    // The scripts whose newest version holds the statements.
    let mut scripts: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let recorded: BTreeSet<&str> = runs.iter().map(|r| r.meta.filename.as_str()).collect();
    for f in recorded {
        if opts.script.as_deref().is_some_and(|s| s != f) {
            continue;
        }
        // Only scripts a propagator handles (runs recorded from Rust are not replayable).
        if flor_propagate::for_path(Path::new(f)).is_none() {
            continue;
        }
        let Ok(src) = fs::read_to_string(root.join(f)) else { continue };
        let lines = match flor_propagate::find_log_statements(&src, &names) {
            Ok(lines) => lines,
            // The script named explicitly must parse; others are skipped.
            Err(e) if opts.script.is_some() => return Err(Error::Replay(format!("{f} in the working tree: {e}"))),
            Err(e) => {
                unreadable.push(format!("{f}: {e}"));
                continue;
            }
        };
        if !lines.is_empty() {
            scripts.insert(f.to_owned(), (src, lines));
        }
    }
    if scripts.is_empty() {
        let why =
            if unreadable.is_empty() { String::new() } else { format!(" (not parsed: {})", unreadable.join("; ")) };
        return Err(Error::Replay(format!(
            "no recorded script{} has a flor.log({}, ...) statement in the working tree{why}",
            opts.script.as_deref().map(|s| format!(" named {s}")).unwrap_or_default(),
            names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(" or ")
        )));
    }
    for n in &names {
        let found = scripts.values().any(|(src, lines)| {
            lines.iter().any(|l| {
                src.lines().nth(l - 1).is_some_and(|t| t.contains(&format!("\"{n}\"")) || t.contains(&format!("'{n}'")))
            })
        });
        if !found {
            return Err(Error::Replay(format!("no flor.log(\"{n}\", ...) statement in the working tree's scripts")));
        }
    }

    // Runs lacking a name.
    let mut has: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    let keys: HashMap<_, _> = runs.iter().map(|r| (r.key, (r.meta.projid.clone(), r.meta.tstamp.clone()))).collect();
    project.store()?.scan_values(ValueFilter::Names(&names), &mut |row| {
        if let Some(k) = keys.get(&row.run) {
            has.entry(k.clone()).or_default().insert(row.name.to_owned());
        }
    })?;
    let mut selected: Vec<&RunMeta> = runs
        .iter()
        .map(|r| &r.meta)
        .filter(|m| scripts.contains_key(&m.filename) && m.status != RunStatus::Running)
        .filter(|m| {
            opts.force
                || has.get(&(m.projid.clone(), m.tstamp.clone())).is_none_or(|h| names.iter().any(|n| !h.contains(*n)))
        })
        .collect();
    if let Some(pred) = &opts.where_clause {
        let args: Vec<String> = project.names()?.into_iter().filter(|n| n.kind == "arg").map(|n| n.name).collect();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let table = project.dataframe(&arg_refs)?;
        let keep = flor_store::filter_rows(&table, pred)?;
        let tcol = table.column_names().iter().position(|c| *c == "tstamp");
        let mut ok = BTreeSet::new();
        for (r, k) in keep.iter().enumerate() {
            if let (true, Some(c)) = (*k, tcol) {
                if let Some(Value::Text(t)) = table.cell(r, c) {
                    ok.insert(t.to_string());
                }
            }
        }
        selected.retain(|m| ok.contains(&m.tstamp));
    }

    // The cost of starting a replay process, measured with the runs' interpreter.
    let mut cost = *cost;
    if let Some(m) = selected.first() {
        if let Some(secs) = process_start_secs(&m.interpreter) {
            cost.process_secs = secs;
        }
    }
    let cost = &cost;

    // Versions.
    let mut versions: Vec<VersionPlan> = Vec::new();
    let mut version_of: HashMap<(String, String), usize> = HashMap::new();
    let mut out_runs = Vec::new();
    let mut skipped = Vec::new();
    let per_run_segments = jobs.div_ceil(selected.len().max(1)).max(1);
    for m in selected {
        let Some(commit) = m.commit.clone() else {
            skipped.push((m.tstamp.clone(), "the run has no code snapshot".into()));
            continue;
        };
        // Runs of the same code share a version (each run has its own
        // snapshot commit, so the script's bytes decide).
        let old = match flor_git::read_file_at(&root, &commit, &m.filename) {
            Ok(b) => b,
            Err(e) => {
                skipped.push((m.tstamp.clone(), format!("its version of {} cannot be read: {e}", m.filename)));
                continue;
            }
        };
        let key = (tag(&[], &String::from_utf8_lossy(&old)), m.filename.clone());
        let vi = match version_of.get(&key) {
            Some(&i) => i,
            None => {
                let (src, lines) = &scripts[&m.filename];
                let v = version_plan(&root, &commit, &m.filename, src, lines);
                versions.push(v);
                version_of.insert(key, versions.len() - 1);
                versions.len() - 1
            }
        };
        let v = &versions[vi];
        if v.failure.is_some() {
            skipped.push((m.tstamp.clone(), format!("version {} cannot take the statements", short(&commit))));
            continue;
        }
        let parsed = match forward_records(&root, m) {
            Ok(p) => p,
            Err(e) => {
                skipped.push((m.tstamp.clone(), format!("its records cannot be read: {e}")));
                continue;
            }
        };
        let (profile, checkpoints) = profile_of(&parsed);
        let src = v.source.as_deref().unwrap_or_default();
        let levels: Vec<Level> = v
            .statements
            .iter()
            .filter_map(|s| match s.outcome {
                Outcome::Placed { line, .. } | Outcome::AlreadyPresent { line } => {
                    Some(statement_level(src, line, profile.outer_loop.as_deref()))
                }
                Outcome::Failed { .. } => None,
            })
            .collect();
        match flor_replay::plan_run(&profile, &levels, per_run_segments, cost) {
            Ok(plan) => out_runs.push(RunReplay {
                meta: m.clone(),
                version: vi,
                plan,
                outer_loop: profile.outer_loop.clone(),
                checkpoints,
            }),
            Err(e) => skipped.push((m.tstamp.clone(), e.to_string())),
        }
    }
    // The levels shown per version are those of its first run's outer loop.
    for r in &out_runs {
        let v = &mut versions[r.version];
        let src = v.source.clone().unwrap_or_default();
        for st in &mut v.statements {
            if st.level.is_none() {
                if let Outcome::Placed { line, .. } | Outcome::AlreadyPresent { line } = st.outcome {
                    st.level = Some(statement_level(&src, line, r.outer_loop.as_deref()));
                }
            }
        }
    }
    let durations: Vec<f64> = out_runs.iter().flat_map(|r| r.plan.segments.iter().map(|s| s.estimate_secs)).collect();
    Ok(Plan {
        names: opts.names.clone(),
        total_secs: durations.iter().fold(0.0, |a, b| a + b),
        makespan_secs: flor_replay::makespan(&durations, jobs),
        versions,
        runs: out_runs,
        skipped,
        jobs,
    })
}

/// Seconds `interpreter` takes to start and import flordb (the fixed cost
/// of a replay process), or `None` when it cannot.
fn process_start_secs(interpreter: &str) -> Option<f64> {
    let started = Instant::now();
    let ok = Command::new(interpreter)
        .args(["-c", "import flordb"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| started.elapsed().as_secs_f64())
}

fn version_plan(root: &Path, commit: &str, script: &str, new_src: &str, lines: &[usize]) -> VersionPlan {
    let mut v = VersionPlan {
        commit: commit.to_owned(),
        script: script.to_owned(),
        statements: Vec::new(),
        source: None,
        failure: None,
        diff: String::new(),
    };
    match flor_propagate::propagate_at_commit(root, commit, script, new_src, lines) {
        Ok(p) => {
            let old = flor_git::read_file_at(root, commit, script).ok().and_then(|b| String::from_utf8(b).ok());
            let failed: Vec<String> = p
                .outcomes
                .iter()
                .zip(lines)
                .filter_map(|(o, l)| match o {
                    Outcome::Failed { reason } => Some(format!("line {l}: {reason}")),
                    _ => None,
                })
                .collect();
            v.statements = p
                .outcomes
                .into_iter()
                .zip(lines)
                .map(|(outcome, &new_line)| StatementPlan { new_line, outcome, level: None })
                .collect();
            if failed.is_empty() {
                v.diff = old.map(|o| excerpt(&o, &p.source)).unwrap_or_default();
                v.source = Some(p.source);
            } else {
                v.failure = Some(format!("propagation failed ({})", failed.join("; ")));
            }
        }
        Err(e) => v.failure = Some(e.to_string()),
    }
    v
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run.
    pub tstamp: String,
    /// Values recorded by its segments.
    pub values: u64,
    /// Estimated seconds.
    pub estimate_secs: f64,
    /// Seconds its segments took (summed).
    pub actual_secs: f64,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Per run.
    pub runs: Vec<RunOutcome>,
    /// Wall-clock seconds.
    pub wall_secs: f64,
}

struct Task {
    run: usize,
    segment: usize,
    steps: usize,
    dir: PathBuf,
    script: PathBuf,
    spec: PathBuf,
    output: PathBuf,
    estimate: f64,
}

struct Done {
    run: usize,
    values: u64,
    secs: f64,
    failure: Option<String>,
}

/// A short tag for the statements applied to a version: segment files of a
/// different request never mix.
fn tag(names: &[String], source: &str) -> String {
    // FNV-1a over the names and the propagated source.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in names.join(",").bytes().chain([0u8]).chain(source.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What a worker is doing, for its progress bar.
struct Slot {
    label: String,
    progress: PathBuf,
    steps: usize,
    started: Instant,
}

/// One progress bar per worker, redrawn in place on a terminal.
struct Bars {
    slots: Arc<Mutex<Vec<Option<Slot>>>>,
    drawn: usize,
}

impl Bars {
    fn erase(&mut self, err: &mut dyn Write) {
        for _ in 0..self.drawn {
            let _ = write!(err, "\x1b[1A\x1b[2K");
        }
        self.drawn = 0;
    }

    fn draw(&mut self, err: &mut dyn Write) {
        let Ok(slots) = self.slots.lock() else { return };
        for (w, slot) in slots.iter().enumerate() {
            let line = match slot {
                None => format!("worker {:>2}  idle", w + 1),
                Some(s) => {
                    let done = fs::read_to_string(&s.progress)
                        .ok()
                        .and_then(|t| t.split_whitespace().next().and_then(|d| d.parse::<usize>().ok()))
                        .unwrap_or(0)
                        .min(s.steps);
                    let width = 20;
                    let filled = (done * width).checked_div(s.steps).unwrap_or(width);
                    format!(
                        "worker {:>2} [{}{}] {done}/{} iterations  {}  {:.1} s",
                        w + 1,
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        s.steps,
                        s.label,
                        s.started.elapsed().as_secs_f64()
                    )
                }
            };
            let _ = writeln!(err, "{line}");
        }
        self.drawn = slots.len();
    }
}

/// Runs a plan: materializes, executes the segments on `plan.jobs`
/// workers, publishes and ingests. `progress` receives one line per event;
/// with `bars`, a progress bar per worker is redrawn on stderr (a terminal).
pub fn execute(project: &mut Project, plan: &Plan, bars: bool, progress: &mut dyn FnMut(&str)) -> Result<Summary> {
    let started = Instant::now();
    let root = project.root().to_owned();
    let base = project.flor_dir().join("replay");
    let locks = project.flor_dir().join("locks");
    let mut tasks = VecDeque::new();
    let mut outcomes: Vec<RunOutcome> = plan
        .runs
        .iter()
        .map(|r| RunOutcome {
            tstamp: r.meta.tstamp.clone(),
            values: 0,
            estimate_secs: r.plan.estimate_secs,
            actual_secs: 0.0,
            failure: None,
        })
        .collect();
    let mut run_dirs = Vec::new();
    // A run is replayed by one `flor replay` at a time: its lock is held from
    // materialization to publishing, so two replays of one run never share a
    // folder or attach the same segments twice.
    let mut run_locks: Vec<Option<fs::File>> = Vec::new();
    for (ri, r) in plan.runs.iter().enumerate() {
        let v = &plan.versions[r.version];
        let source = v.source.as_deref().unwrap_or_default();
        let dir = base.join(r.meta.run_id()).join(tag(&plan.names, source));
        run_dirs.push(dir.clone());
        let lock = lock_run(&locks, &r.meta.run_id())?;
        if lock.is_none() {
            outcomes[ri].failure = Some(format!(
                "another `flor replay` is replaying run {} right now; its values appear when it \
                 finishes (run `flor replay` again afterwards for anything it did not cover)",
                r.meta.tstamp
            ));
        }
        let locked = lock.is_some();
        run_locks.push(lock);
        if !locked {
            continue;
        }
        let code = dir.join("code");
        let pending: Vec<usize> =
            (0..r.plan.segments.len()).filter(|k| !dir.join(format!("seg-{k}.done")).exists()).collect();
        if pending.is_empty() {
            continue;
        }
        if code.exists() {
            fs::remove_dir_all(&code).map_err(|e| Error::io("remove", &code, e))?;
        }
        flor_git::materialize(&root, &v.commit, &code)?;
        link_untracked(&root, &code)?;
        let script = code.join(&v.script);
        fs::write(&script, source).map_err(|e| Error::io("write", &script, e))?;
        for k in pending {
            let seg = &r.plan.segments[k];
            let output = dir.join(format!("seg-{k}.jsonl"));
            if output.exists() {
                fs::remove_file(&output).map_err(|e| Error::io("remove", &output, e))?;
            }
            let spec = SegmentSpec {
                root: root.clone(),
                run: r.meta.clone(),
                names: plan.names.clone(),
                output: output.clone(),
                outer_loop: r.outer_loop.clone(),
                segment: seg.clone(),
                checkpoints: r.checkpoints.clone(),
                progress: Some(dir.join(format!("seg-{k}.progress"))),
            };
            let spec_path = dir.join(format!("seg-{k}.json"));
            spec.write(&spec_path)?;
            tasks.push_back(Task {
                run: ri,
                segment: k,
                steps: seg.steps.len(),
                dir: dir.clone(),
                script: script.clone(),
                spec: spec_path,
                output,
                estimate: seg.estimate_secs,
            });
        }
    }
    let total = tasks.len();
    progress(&format!("{total} segment{} to run on {} worker{}", plural(total), plan.jobs, plural(plan.jobs)));
    let queue = Arc::new(Mutex::new(tasks));
    let (tx, rx) = std::sync::mpsc::channel::<(String, Option<Done>)>();
    let metas: Arc<Vec<RunMeta>> = Arc::new(plan.runs.iter().map(|r| r.meta.clone()).collect());
    let segs_per_run: Vec<usize> = plan.runs.iter().map(|r| r.plan.segments.len()).collect();
    // Workers open the project too: a DuckDB database is released meanwhile.
    project.release_store();
    let workers = plan.jobs.min(total.max(1));
    let slots: Arc<Mutex<Vec<Option<Slot>>>> = Arc::new(Mutex::new((0..workers).map(|_| None).collect()));
    let mut bars = bars.then(|| Bars { slots: Arc::clone(&slots), drawn: 0 });
    std::thread::scope(|scope| {
        for w in 0..workers {
            let queue = Arc::clone(&queue);
            let tx = tx.clone();
            let metas = Arc::clone(&metas);
            let slots = Arc::clone(&slots);
            let segs_per_run = &segs_per_run;
            scope.spawn(move || loop {
                let task = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(t) = task else { break };
                let meta = &metas[t.run];
                if let Ok(mut s) = slots.lock() {
                    s[w] = Some(Slot {
                        label: format!("run {} segment {}/{}", meta.tstamp, t.segment + 1, segs_per_run[t.run]),
                        progress: t.dir.join(format!("seg-{}.progress", t.segment)),
                        steps: t.steps,
                        started: Instant::now(),
                    });
                }
                let _ = tx.send((
                    format!(
                        "worker {}: run {} segment {}/{} started (estimated {:.2} s)",
                        w + 1,
                        meta.tstamp,
                        t.segment + 1,
                        segs_per_run[t.run],
                        t.estimate
                    ),
                    None,
                ));
                let done = run_segment(meta, &t);
                if let Ok(mut s) = slots.lock() {
                    s[w] = None;
                }
                let line = match &done.failure {
                    None => format!(
                        "worker {}: run {} segment {}/{}: {} value{} in {:.2} s (estimated {:.2} s)",
                        w + 1,
                        meta.tstamp,
                        t.segment + 1,
                        segs_per_run[t.run],
                        done.values,
                        plural(done.values as usize),
                        done.secs,
                        t.estimate
                    ),
                    Some(f) => format!(
                        "worker {}: run {} segment {}/{} FAILED: {f}",
                        w + 1,
                        meta.tstamp,
                        t.segment + 1,
                        segs_per_run[t.run]
                    ),
                };
                let _ = tx.send((line, Some(done)));
            });
        }
        drop(tx);
        let mut finished = 0;
        let mut err = std::io::stderr();
        loop {
            let (line, done) = match rx.recv_timeout(std::time::Duration::from_millis(250)) {
                Ok(m) => m,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(b) = bars.as_mut() {
                        b.erase(&mut err);
                        b.draw(&mut err);
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(b) = bars.as_mut() {
                b.erase(&mut err);
            }
            if let Some(d) = done {
                finished += 1;
                progress(&format!("[{finished}/{total}] {line}"));
                let o = &mut outcomes[d.run];
                o.actual_secs += d.secs;
                if d.failure.is_some() && o.failure.is_none() {
                    o.failure = d.failure;
                }
            } else {
                progress(&line);
            }
            if let Some(b) = bars.as_mut() {
                b.draw(&mut err);
            }
        }
        if let Some(b) = bars.as_mut() {
            b.erase(&mut err);
        }
    });
    project.reacquire_store()?;
    // Publish the runs whose segments are all done.
    for (ri, r) in plan.runs.iter().enumerate() {
        let dir = &run_dirs[ri];
        let k = r.plan.segments.len();
        if run_locks[ri].is_none() || (0..k).any(|s| !dir.join(format!("seg-{s}.done")).exists()) {
            continue;
        }
        let id = r.meta.run_id();
        let mut segments = Vec::new();
        let mut values = 0;
        for s in 0..k {
            let p = dir.join(format!("seg-{s}.jsonl"));
            let bytes = fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
            values += parse_lines(&bytes, 1).records.len() as u64;
            segments.push(bytes);
        }
        let msg = format!("flor: replay of {} for run {}", plan.names.join(", "), r.meta.tstamp);
        attach_replay(&root, &id, &segments, &msg)?;
        outcomes[ri].values = values;
        let run_dir = dir.parent().unwrap_or(dir);
        fs::remove_dir_all(run_dir).map_err(|e| Error::io("remove", run_dir, e))?;
    }
    let _ = fs::remove_dir(&base); // when empty
    let report = project.sync()?;
    for p in &report.problems {
        progress(&format!("warning: {p}"));
    }
    Ok(Summary { runs: outcomes, wall_secs: started.elapsed().as_secs_f64() })
}

/// Takes the lock of run `run_id`'s replay (`.flor/locks/replay-<run id>.lock`,
/// an advisory lock on an open file, released when the process ends however
/// it ends); `None` when another process holds it. The file itself stays:
/// removing a lock file others may have opened would let two holders in.
fn lock_run(dir: &Path, run_id: &str) -> Result<Option<fs::File>> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let path = dir.join(format!("replay-{run_id}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// How many times [`attach_replay`] numbers its files again after another
/// process attached to the same run first.
const ATTACH_ATTEMPTS: usize = 100;

/// Attaches a finished replay's segment files to the run's ref as replay
/// `n` (one more than the run's latest), returning `n`.
///
/// Choosing `n` and moving the ref are one compare-and-swap on the tip `n`
/// was read from: when another replay of the same run attached meanwhile,
/// `n` is chosen again on the new tip, so two replays never share a number
/// (nor overwrite each other's files).
pub(crate) fn attach_replay(root: &Path, run_id: &str, segments: &[Vec<u8>], message: &str) -> Result<u64> {
    let refname = ref_for(run_id);
    for _ in 0..ATTACH_ATTEMPTS {
        let tip = flor_git::ref_tip(root, &refname)?;
        let n = flor_git::list_dir_at(root, &tip, RECORDS_DIR)?
            .iter()
            .filter_map(|p| replay_number(p.rsplit('/').next().unwrap_or(p)))
            .max()
            .unwrap_or(0)
            + 1;
        let paths: Vec<String> =
            (0..segments.len()).map(|k| format!("{RECORDS_DIR}/{}", replay_label(run_id, n, k))).collect();
        let files: Vec<(&str, &[u8])> =
            paths.iter().map(String::as_str).zip(segments.iter().map(Vec::as_slice)).collect();
        match flor_git::attach_files_expecting(root, &refname, &tip, &files, message) {
            Ok(_) => return Ok(n),
            Err(flor_git::Error::RefMoved { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Replay(format!(
        "could not attach the replayed values of run {run_id}: other processes moved `{refname}` \
         {ATTACH_ATTEMPTS} times while flor was attaching; run `flor replay` again (finished \
         segments are kept)"
    )))
}

/// Makes what the snapshot lacks at the top of the working tree (data sets,
/// caches: files git ignores) reachable from the materialized code, as
/// symbolic links to the user's copies; the code itself stays the old version.
fn link_untracked(root: &Path, code: &Path) -> Result<()> {
    let entries = fs::read_dir(root).map_err(|e| Error::io("list", root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", root, e))?;
        let name = entry.file_name();
        if name == ".git" || name == crate::project::FLOR_DIR {
            continue;
        }
        let target = code.join(&name);
        if target.symlink_metadata().is_ok() {
            continue;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(entry.path(), &target).map_err(|e| Error::io("link", &target, e))?;
        #[cfg(not(unix))]
        let _ = target;
    }
    Ok(())
}

fn run_segment(meta: &RunMeta, t: &Task) -> Done {
    let started = Instant::now();
    let fail = |msg: String, secs: f64| Done { run: t.run, values: 0, secs, failure: Some(msg) };
    let stdout_path = t.dir.join(format!("seg-{}.out", t.segment));
    let stderr_path = t.dir.join(format!("seg-{}.err", t.segment));
    let (Ok(out), Ok(err)) = (fs::File::create(&stdout_path), fs::File::create(&stderr_path)) else {
        return fail(format!("cannot create log files in {}", t.dir.display()), 0.0);
    };
    let cwd = t.script.parent().unwrap_or(&t.dir);
    let status = Command::new(&meta.interpreter)
        .arg(&t.script)
        .args(meta.argv.iter().skip(1))
        .current_dir(cwd)
        .env(SPEC_ENV, &t.spec)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status();
    let secs = started.elapsed().as_secs_f64();
    match status {
        Err(e) => fail(format!("cannot start {}: {e}", meta.interpreter), secs),
        Ok(s) if !s.success() => {
            let tail = fs::read_to_string(&stderr_path).unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            let last = lines[lines.len().saturating_sub(8)..].join("\n    ");
            fail(format!("the script crashed ({s}); last lines of its stderr:\n    {last}"), secs)
        }
        Ok(_) => match fs::read(&t.output) {
            Err(_) => fail("the script exited without recording (does it import flordb?)".into(), secs),
            Ok(bytes) => {
                let parsed = parse_lines(&bytes, 1);
                let done = t.dir.join(format!("seg-{}.done", t.segment));
                if let Err(e) = fs::write(&done, b"") {
                    return fail(format!("cannot mark the segment done: {e}"), secs);
                }
                let _ = std::io::stdout().flush();
                Done { run: t.run, values: parsed.records.len() as u64, secs, failure: None }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"import flordb as flor
lr = flor.arg("lr", 0.1)
flor.log("setup_stat", 1)

def helper(x):
    flor.log("in_fn", x)

with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        flor.log("epoch_stat", epoch)
        for step in flor.loop("step", range(4)):
            flor.log("loss", step)

        flor.log("acc", 1)
flor.log("final", 2)
"#;

    #[test]
    fn levels_from_the_enclosing_loops() {
        let line = |pat: &str| SCRIPT.lines().position(|l| l.contains(pat)).unwrap() + 1;
        let lvl = |pat: &str| statement_level(SCRIPT, line(pat), Some("epoch"));
        assert_eq!(lvl("setup_stat"), Level::Setup);
        assert_eq!(lvl("in_fn"), Level::Inner);
        assert_eq!(lvl("epoch_stat"), Level::Outer);
        assert_eq!(lvl("\"loss\""), Level::Inner);
        assert_eq!(lvl("\"acc\""), Level::Outer);
        assert_eq!(lvl("final"), Level::Teardown);
    }

    #[test]
    fn excerpt_marks_inserted_lines() {
        let e = excerpt("a\nb\nc\nd\n", "a\nb\nX\nc\nd\n");
        assert!(e.contains("+    3 | X"), "{e}");
        assert!(e.contains("     2 | b"), "{e}");
    }

    #[test]
    fn loop_names_from_headers() {
        assert_eq!(loop_name("for e in flor.loop(\"epoch\", range(3)):"), Some("epoch".into()));
        assert_eq!(loop_name("for x in flor.loop('step', data):"), Some("step".into()));
        assert_eq!(loop_name("with flor.iteration(\"epoch\", i, None):"), Some("epoch".into()));
        assert_eq!(loop_name("for x in range(3):"), None);
    }

    #[test]
    fn replays_attached_to_one_run_at_once_each_get_their_own_number() {
        // Two `flor replay`s (of different names) finishing together on one
        // run: each attach must land under its own replay number, and no
        // segment file may replace another's.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let git = |args: &[&str]| {
            let st = std::process::Command::new("git").args(args).current_dir(root).output().unwrap();
            assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        };
        git(&["init", "-q"]);
        fs::write(root.join("train.py"), "print(1)\n").unwrap();
        let id = "2026-01-01T00-00-00.000001";
        let opts = flor_git::SnapshotOptions::from_env().unwrap();
        flor_git::snapshot_worktree(root, &ref_for(id), "code", &opts).unwrap();
        const N: usize = 8;
        let barrier = std::sync::Barrier::new(N);
        let numbers: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..N)
                .map(|i| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let segs = vec![
                            format!("replay {i} seg 0\n").into_bytes(),
                            format!("replay {i} seg 1\n").into_bytes(),
                        ];
                        barrier.wait();
                        attach_replay(root, id, &segs, &format!("replay {i}")).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(sorted, (1..=N as u64).collect::<Vec<_>>());
        for (i, n) in numbers.iter().enumerate() {
            for k in 0..2 {
                let path = format!("{RECORDS_DIR}/{}", replay_label(id, *n, k));
                let bytes = flor_git::read_file_at(root, &ref_for(id), &path).unwrap();
                assert_eq!(bytes, format!("replay {i} seg {k}\n").into_bytes());
            }
        }
    }
}
