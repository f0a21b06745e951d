//! Building a [`Plan`]: which scripts hold the statements, which runs lack
//! the names, which code version each run has and what propagation makes
//! of it, where each statement runs, and the segments and cost of each run.
//! Nothing runs and nothing is written (except a measured interpreter start
//! and the isolation probe, which leaves nothing behind).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use flor_core::propagate::{Finding, LanguagePropagator, LoopScope, Outcome, Registry};
use flor_core::select::IterSelect;
use flor_core::{RunMeta, RunStatus};

use crate::check::CheckNames;
use crate::error::{Error, Result};
use crate::isolate::{Isolation, IsolationSettings};
use crate::profile::Forward;
use crate::segments::{makespan, plan_run_selected, CostModel, Level, RunPlan};
use crate::spec::{CheckpointRef, CodeRef, SegmentSpec, SPEC_VERSION};

/// What the user asked to replay.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The names whose log statements to replay.
    pub names: Vec<String>,
    /// Worker processes (at least 1).
    pub jobs: usize,
    /// Replay runs that already have the names.
    pub force: bool,
    /// Only this script (path relative to the repository root); default:
    /// every recorded script whose working-tree version has the statements.
    pub script: Option<String>,
    /// Recorded names left out of the divergence check (`--no-check`):
    /// values that cannot repeat by nature, such as times.
    pub no_check: Vec<String>,
    /// Whether a divergence fails the run's replay (`--strict`) instead of
    /// flagging its values.
    pub strict: bool,
    /// How the replay may keep the old scripts' writes out of the user's
    /// files ([`Isolation::decide`]).
    pub isolation: IsolationSettings,
    /// Which iterations record (`--iter LOOP=SPEC`; the last one given for
    /// a loop wins): the outer loop's selection decides which iterations
    /// execute, a nested loop's which of its iterations record.
    pub iters: Vec<IterSelect>,
    /// `--override KEY=VALUE`: the values `flor.arg(KEY, ...)` returns in
    /// the replay instead of the recorded ones. The caller checks them
    /// against the allowed list (`[replay] overrides`).
    pub overrides: BTreeMap<String, String>,
}

/// What the caller knows of the recorded runs (from its query database):
/// replay itself reads only git and the working tree.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// Every recorded run.
    pub runs: Vec<RunMeta>,
    /// The requested names each run (by tstamp) already logged.
    pub logged: HashMap<String, BTreeSet<String>>,
    /// Only these runs (tstamps), when the user narrowed the selection
    /// (`--where`); `None`: every run.
    pub only: Option<BTreeSet<String>>,
}

/// One statement's fate in one code version.
#[derive(Debug, Clone)]
pub struct StatementPlan {
    /// Line in the newest version.
    pub new_line: usize,
    /// What propagation did.
    pub outcome: Outcome,
    /// Where it runs in the old version as its syntax shows (statements
    /// placed or already present); a [`LoopScope::Dynamic`] reason is shown
    /// with the plan.
    pub scope: Option<LoopScope>,
    /// Its replay level for the version's first run's outer loop.
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
    /// The source checks of the version as replayed (the propagated
    /// source; [`LanguagePropagator::lint`]): code whose replayed values
    /// may differ from the recorded ones.
    pub findings: Vec<Finding>,
}

/// One run to replay.
#[derive(Debug, Clone)]
pub struct RunReplay {
    /// The run.
    pub meta: RunMeta,
    /// Index into [`Plan::versions`].
    pub version: usize,
    /// Its segments and cost.
    pub plan: RunPlan,
    /// What its forward records say.
    pub forward: Forward,
}

/// Everything a replay will do, shown before it does it.
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
    /// Recorded names left out of the divergence check.
    pub no_check: Vec<String>,
    /// Whether a divergence fails a run's replay.
    pub strict: bool,
    /// How the old scripts' writes are kept out of the user's files
    /// (`None` when there is nothing to replay).
    pub isolation: Option<Isolation>,
    /// The iteration selection ([`Request::iters`]).
    pub iters: Vec<IterSelect>,
    /// The overridden args ([`Request::overrides`]).
    pub overrides: BTreeMap<String, String>,
    /// Where the segments run, when not on this machine (the caller sets
    /// it: [`crate::RayExecutor`]'s cluster); shown instead of the
    /// isolation, which is this machine's.
    pub executor: Option<String>,
}

impl Plan {
    /// The names run `run`'s replay compares with its records (see
    /// [`crate::check`]).
    pub fn check_names(&self, run: usize) -> Option<CheckNames> {
        let r = self.runs.get(run)?;
        Some(CheckNames::of(&r.forward.logged, &self.names, &self.no_check))
    }

    /// Whether there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The spec of segment `segment` of run `run` (indexes into
    /// [`Plan::runs`] and its segments), with only the checkpoints that
    /// segment restores.
    pub fn spec(&self, run: usize, segment: usize) -> Option<SegmentSpec> {
        let r = self.runs.get(run)?;
        let seg = r.plan.segments.get(segment)?;
        let v = self.versions.get(r.version)?;
        let mut wanted: BTreeSet<u64> = BTreeSet::new();
        for s in &seg.steps {
            wanted.extend(s.restore);
            if s.skip_nested {
                wanted.insert(s.iteration);
            }
        }
        wanted.extend(seg.final_restore);
        let checkpoints: BTreeMap<u64, Vec<CheckpointRef>> =
            r.forward.checkpoints.iter().filter(|(i, _)| wanted.contains(i)).map(|(i, c)| (*i, c.clone())).collect();
        Some(SegmentSpec {
            version: SPEC_VERSION,
            run: r.meta.clone(),
            code: CodeRef {
                commit: v.commit.clone(),
                script: v.script.clone(),
                source: v.source.clone().unwrap_or_default(),
            },
            names: self.names.clone(),
            outer_loop: r.forward.profile.outer_loop.clone(),
            segment: seg.clone(),
            checkpoints,
            contexts: r.forward.contexts.clone(),
            check: self.check_names(run)?.compared,
            iters: self.iters.iter().map(IterSelect::to_string).collect(),
            overrides: self.overrides.clone(),
            loads: r.forward.loads.clone(),
        })
    }
}

/// The newest version of a script, its statements' lines (distinct,
/// ascending) and the propagator of its language.
struct Newest<'r> {
    source: String,
    lines: Vec<usize>,
    propagator: &'r dyn LanguagePropagator,
    /// Where the source checks come from: the registry's (the propagator's
    /// and every source checker's, such as framework plugins'), or the
    /// propagator's alone.
    checks: Option<&'r Registry>,
}

/// Builds the plan for `request` over the runs recorded in the repository
/// at `root` (see the module docs); each script's language is the one
/// `propagators` has for its file type (scripts of no known language, such
/// as runs recorded from Rust programs, are not replayable). When there is
/// something to replay, the plan says how it will be isolated; a replay
/// that cannot be isolated the way `request.isolation` allows fails here,
/// before anything runs ([`Error::OverlayUnavailable`],
/// [`Error::CopyTooLarge`]).
pub fn plan(root: &Path, propagators: &Registry, request: &Request, runs: &Runs, cost: &CostModel) -> Result<Plan> {
    if request.names.is_empty() {
        return Err(Error::NoNames);
    }
    let jobs = request.jobs.max(1);
    let scripts = newest_statements(root, propagators, request, runs)?;
    let selected = select_runs(request, runs, &scripts);
    let mut cost = *cost;
    if let Some(m) = selected.first() {
        let probe = scripts.get(&m.filename).and_then(|s| s.propagator.startup_probe());
        if let Some(secs) = probe.and_then(|args| process_start_secs(&m.interpreter, &args)) {
            cost.process_secs = secs;
        }
    }

    let mut versions: Vec<VersionPlan> = Vec::new();
    let mut version_of: HashMap<(Vec<u8>, String), usize> = HashMap::new();
    let mut out_runs = Vec::new();
    let mut skipped = Vec::new();
    let per_run_segments = jobs.div_ceil(selected.len().max(1)).max(1);
    for m in selected {
        let how = HowToPlan { max_segments: per_run_segments, cost: &cost, iters: &request.iters };
        match plan_one(root, m, &scripts, &mut versions, &mut version_of, &how) {
            Ok(r) => out_runs.push(r),
            Err(why) => skipped.push((m.tstamp.clone(), why)),
        }
    }
    show_levels(&mut versions, &out_runs);
    check_loops(&request.iters, &out_runs)?;
    let isolation = if out_runs.is_empty() {
        None
    } else {
        Some(Isolation::decide(root, &root.join(".flor").join("replay"), &request.isolation)?)
    };
    let durations: Vec<f64> = out_runs.iter().flat_map(|r| r.plan.segments.iter().map(|s| s.estimate_secs)).collect();
    Ok(Plan {
        names: request.names.clone(),
        total_secs: durations.iter().fold(0.0, |a, b| a + b),
        makespan_secs: makespan(&durations, jobs),
        versions,
        runs: out_runs,
        skipped,
        no_check: request.no_check.clone(),
        strict: request.strict,
        jobs,
        isolation,
        iters: request.iters.clone(),
        overrides: request.overrides.clone(),
        executor: None,
    })
}

/// Every loop `--iter` names is a loop of some planned run.
fn check_loops(iters: &[IterSelect], runs: &[RunReplay]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<&str> = runs.iter().flat_map(|r| r.forward.contexts.iter().map(|c| c.name.as_str())).collect();
    let unknown: Vec<String> =
        iters.iter().filter(|i| !known.contains(i.loop_name.as_str())).map(|i| i.loop_name.clone()).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::UnknownLoops { loops: unknown, known: known.into_iter().map(String::from).collect() })
}

/// The outer iterations of a run with `n` of them that `iters` selects
/// (`None`: no selection names the outer loop `outer`).
fn outer_selection(iters: &[IterSelect], outer: Option<&str>, n: u64) -> Option<BTreeSet<u64>> {
    let outer = outer?;
    let select = iters.iter().rev().find(|i| i.loop_name == outer)?;
    let last = n.saturating_sub(1);
    Some((0..n).filter(|&i| select.spec.keeps(i, last)).collect())
}

/// Resolves `@LINE` entries of `names` (`flor replay --apply @42`): the
/// names logged by the log statements at that line of the working-tree
/// version of the recorded scripts (`script` only, when given). Other
/// entries are kept as they are; duplicates are dropped.
pub fn resolve_names(
    root: &Path,
    propagators: &Registry,
    script: Option<&str>,
    runs: &[RunMeta],
    names: &[String],
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let recorded: BTreeSet<&str> =
        runs.iter().map(|r| r.filename.as_str()).filter(|f| script.is_none_or(|s| s == *f)).collect();
    for n in names {
        let Some(digits) = n.strip_prefix('@') else {
            if !out.contains(n) {
                out.push(n.clone());
            }
            continue;
        };
        let line: usize = digits.trim().parse().map_err(|_| Error::BadLine { given: n.clone() })?;
        let mut looked = Vec::new();
        let mut found: Vec<(String, String)> = Vec::new();
        for f in &recorded {
            let Some(propagator) = propagators.for_path(Path::new(f)) else { continue };
            let Ok(source) = std::fs::read_to_string(root.join(f)) else { continue };
            let Ok(statements) = propagator.log_statements(&source, &[]) else { continue };
            looked.push((
                f.to_string(),
                statements.iter().map(|s| s.line).collect::<BTreeSet<_>>().into_iter().collect(),
            ));
            for s in statements.into_iter().filter(|s| s.line == line) {
                if !found.iter().any(|(_, n)| *n == s.name) {
                    found.push((f.to_string(), s.name));
                }
            }
        }
        let scripts: BTreeSet<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
        if found.is_empty() {
            return Err(Error::NoStatementAtLine { line, scripts: looked });
        }
        if scripts.len() > 1 {
            return Err(Error::AmbiguousLine { line, found });
        }
        for (_, name) in found {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// The recorded scripts whose working-tree version logs one of the names.
fn newest_statements<'r>(
    root: &Path,
    propagators: &'r Registry,
    request: &Request,
    runs: &Runs,
) -> Result<BTreeMap<String, Newest<'r>>> {
    let names: Vec<&str> = request.names.iter().map(String::as_str).collect();
    let mut scripts = BTreeMap::new();
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut unreadable = Vec::new();
    let recorded: BTreeSet<&str> = runs.runs.iter().map(|r| r.filename.as_str()).collect();
    for f in recorded {
        if request.script.as_deref().is_some_and(|s| s != f) {
            continue;
        }
        let Some(propagator) = propagators.for_path(Path::new(f)) else { continue };
        let Ok(source) = std::fs::read_to_string(root.join(f)) else { continue };
        let statements = match propagator.log_statements(&source, &names) {
            Ok(s) => s,
            // The script named explicitly must parse; others are skipped.
            Err(e) if request.script.is_some() => return Err(Error::Unparsable { script: f.to_owned(), source: e }),
            Err(e) => {
                unreadable.push(format!("{f}: {e}"));
                continue;
            }
        };
        if !statements.is_empty() {
            found.extend(statements.iter().map(|s| s.name.clone()));
            let mut lines: Vec<usize> = statements.iter().map(|s| s.line).collect();
            lines.sort_unstable();
            lines.dedup();
            scripts.insert(f.to_owned(), Newest { source, lines, propagator, checks: Some(propagators) });
        }
    }
    if scripts.is_empty() {
        return Err(Error::NoStatements { script: request.script.clone(), names: request.names.clone(), unreadable });
    }
    if let Some(n) = request.names.iter().find(|n| !found.contains(*n)) {
        return Err(Error::NameNotFound { name: n.clone() });
    }
    Ok(scripts)
}

/// The finished runs of those scripts that lack a name (all with
/// `force`), narrowed by the caller's selection.
fn select_runs<'r>(request: &Request, runs: &'r Runs, scripts: &BTreeMap<String, Newest<'_>>) -> Vec<&'r RunMeta> {
    runs.runs
        .iter()
        .filter(|m| scripts.contains_key(&m.filename) && m.status != RunStatus::Running)
        .filter(|m| {
            request.force || runs.logged.get(&m.tstamp).is_none_or(|h| request.names.iter().any(|n| !h.contains(n)))
        })
        .filter(|m| runs.only.as_ref().is_none_or(|only| only.contains(&m.tstamp)))
        .collect()
}

/// How each run is planned: into at most `max_segments` segments, with
/// this cost model, recording the iterations `iters` selects.
struct HowToPlan<'a> {
    max_segments: usize,
    cost: &'a CostModel,
    iters: &'a [IterSelect],
}

/// Plans one run: its code version (shared with the runs of the same
/// script bytes), its forward records, its segments. `Err`: why it is
/// skipped.
fn plan_one(
    root: &Path,
    m: &RunMeta,
    scripts: &BTreeMap<String, Newest<'_>>,
    versions: &mut Vec<VersionPlan>,
    version_of: &mut HashMap<(Vec<u8>, String), usize>,
    how: &HowToPlan<'_>,
) -> std::result::Result<RunReplay, String> {
    let commit = m.commit.clone().ok_or("the run has no code snapshot")?;
    let old = flor_git::read_file_at(root, &commit, &m.filename)
        .map_err(|e| format!("its version of {} cannot be read: {e}", m.filename))?;
    let key = (old, m.filename.clone());
    let vi = match version_of.get(&key) {
        Some(&i) => i,
        None => {
            let newest = &scripts[&m.filename];
            versions.push(version_plan(&commit, &m.filename, newest, &key.0));
            version_of.insert(key, versions.len() - 1);
            versions.len() - 1
        }
    };
    let v = &versions[vi];
    if v.failure.is_some() {
        return Err(format!("version {} cannot take the statements", short(&commit)));
    }
    let forward = Forward::read(root, m).map_err(|e| match e {
        crate::Error::Plan(e) => e.to_string(),
        e => format!("its records cannot be read: {e}"),
    })?;
    let outer = forward.profile.outer_loop.as_deref();
    let levels: Vec<Level> = v.statements.iter().filter_map(|s| Some(level_of(s.scope.as_ref()?, outer))).collect();
    let selected = outer_selection(how.iters, outer, forward.profile.iterations());
    let plan = plan_run_selected(&forward.profile, &levels, how.max_segments, how.cost, selected.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(RunReplay { meta: m.clone(), version: vi, plan, forward })
}

/// The line of a statement in the propagated source, unless it failed.
fn placed_line(outcome: &Outcome) -> Option<usize> {
    outcome.line()
}

/// The levels shown per version are those of its first run's outer loop.
fn show_levels(versions: &mut [VersionPlan], runs: &[RunReplay]) {
    for r in runs {
        for st in &mut versions[r.version].statements {
            if st.level.is_none() {
                st.level = st.scope.as_ref().map(|s| level_of(s, r.forward.profile.outer_loop.as_deref()));
            }
        }
    }
}

/// The replay level of a statement whose loop scope (from the script's
/// propagator, [`LanguagePropagator::loop_scope`]) is `scope`, in a run
/// whose outermost loop is `outer`: inside exactly that loop
/// [`Level::Outer`]; inside other loops, or anywhere
/// ([`LoopScope::Dynamic`]: replay every iteration in full),
/// [`Level::Inner`]; outside every loop [`Level::Setup`] or
/// [`Level::Teardown`] by whether a loop starts before it.
pub fn level_of(scope: &LoopScope, outer: Option<&str>) -> Level {
    match scope {
        LoopScope::Static { loops, .. } if loops.len() == 1 && outer == Some(loops[0].as_str()) => Level::Outer,
        LoopScope::Static { loops, .. } if !loops.is_empty() => Level::Inner,
        LoopScope::Static { after_first_loop: true, .. } => Level::Teardown,
        LoopScope::Static { .. } => Level::Setup,
        LoopScope::Dynamic { .. } => Level::Inner,
    }
}

/// The loop scope of the statement at `line` of `source`; a scope that
/// cannot be read counts as dynamic (replay everything), with the reason.
fn scope_of(propagator: &dyn LanguagePropagator, source: &str, line: usize) -> LoopScope {
    propagator
        .loop_scope(source, line)
        .unwrap_or_else(|e| LoopScope::Dynamic { reason: format!("its loops cannot be read: {e}") })
}

/// Propagates the newest statements into one old version of the script.
fn version_plan(commit: &str, script: &str, newest: &Newest<'_>, old: &[u8]) -> VersionPlan {
    let mut v = VersionPlan {
        commit: commit.to_owned(),
        script: script.to_owned(),
        statements: Vec::new(),
        source: None,
        failure: None,
        diff: String::new(),
        findings: Vec::new(),
    };
    let Ok(old) = std::str::from_utf8(old) else {
        v.failure = Some(format!("{script} at {} is not UTF-8 text", short(commit)));
        return v;
    };
    let lines = &newest.lines;
    match newest.propagator.propagate(&newest.source, lines, old) {
        Ok(p) => {
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
                .map(|(outcome, &new_line)| {
                    let scope = placed_line(&outcome).map(|line| scope_of(newest.propagator, &p.source, line));
                    StatementPlan { new_line, outcome, scope, level: None }
                })
                .collect();
            if failed.is_empty() {
                v.diff = crate::render::excerpt(old, &p.source);
                // A source the checks cannot read has no findings to show;
                // a source checker that fails is left out.
                v.findings = match newest.checks {
                    Some(registry) => registry.lint(Path::new(script), &p.source),
                    None => newest.propagator.lint(&p.source),
                }
                .unwrap_or_default();
                v.source = Some(p.source);
            } else {
                v.failure = Some(format!("propagation failed ({})", failed.join("; ")));
            }
        }
        Err(e) => v.failure = Some(e.to_string()),
    }
    v
}

/// Seconds `interpreter` takes to run `probe` (the propagator's
/// [`LanguagePropagator::startup_probe`]: start and load flor's front end,
/// the fixed cost of a replay process), or `None` when the probe fails.
fn process_start_secs(interpreter: &str, probe: &[String]) -> Option<f64> {
    let started = Instant::now();
    let ok = Command::new(interpreter)
        .args(probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| started.elapsed().as_secs_f64())
}

/// The first characters of a sha.
pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
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
    fn the_plan_shows_the_source_checks_of_each_version_as_replayed() {
        let newest = "import flordb as flor\nw = [0.0]\nwith flor.checkpointing(w=w):\n    for e in \
                      flor.loop('epoch', range(3)):\n        w = [x + 1 for x in w]\n        flor.log('w0', w[0])\n";
        let old = newest.replace("        flor.log('w0', w[0])\n", "");
        let py = flor_propagate::python();
        let newest = Newest { source: newest.into(), lines: vec![6], propagator: &py, checks: None };
        let v = version_plan("0123456789abcdef", "train.py", &newest, old.as_bytes());
        assert!(v.failure.is_none(), "{:?}", v.failure);
        let [f] = &v.findings[..] else { panic!("one finding expected: {:?}", v.findings) };
        assert_eq!((f.line, f.code.as_str()), (5, "flor::rebound-checkpoint"));
        let plan = Plan {
            names: vec!["w0".into()],
            versions: vec![v],
            runs: vec![],
            skipped: vec![],
            jobs: 1,
            total_secs: 0.0,
            makespan_secs: 0.0,
            no_check: vec![],
            strict: false,
            isolation: None,
            iters: vec![],
            overrides: BTreeMap::new(),
            executor: None,
        };
        let text = plan.render();
        assert!(
            text.contains(
                "  source checks (replayed values may differ from the recorded ones):\n    line 5: \
                 warning[flor::rebound-checkpoint]: `w` is passed to flor.checkpointing at line 3"
            ),
            "{text}"
        );
        // A version in place has none, and the plan says nothing.
        let fixed = old.replace("w = [x + 1 for x in w]", "w[0] += 1");
        let newest = Newest { source: newest.source.replace("w = [x + 1 for x in w]", "w[0] += 1"), ..newest };
        let v = version_plan("0123456789abcdef", "train.py", &newest, fixed.as_bytes());
        assert!(v.findings.is_empty(), "{:?}", v.findings);
    }

    #[test]
    fn levels_from_the_enclosing_loops() {
        let line = |pat: &str| SCRIPT.lines().position(|l| l.contains(pat)).unwrap() + 1;
        let py = flor_propagate::python();
        let lvl = |pat: &str| level_of(&py.loop_scope(SCRIPT, line(pat)).unwrap(), Some("epoch"));
        assert_eq!(lvl("setup_stat"), Level::Setup);
        assert_eq!(lvl("in_fn"), Level::Inner);
        assert_eq!(lvl("epoch_stat"), Level::Outer);
        assert_eq!(lvl("\"loss\""), Level::Inner);
        assert_eq!(lvl("\"acc\""), Level::Outer);
        assert_eq!(lvl("final"), Level::Teardown);
        // The run's outer loop decides which loop is `Outer`.
        assert_eq!(level_of(&py.loop_scope(SCRIPT, line("epoch_stat")).unwrap(), Some("other")), Level::Inner);
        assert_eq!(level_of(&py.loop_scope(SCRIPT, line("epoch_stat")).unwrap(), None), Level::Inner);
        // Statements in a function holding the loop are placed by it.
        let main = "import flordb as flor\ndef main():\n    for e in flor.loop('epoch', range(3)):\n        flor.log('a', e)\n";
        assert_eq!(level_of(&py.loop_scope(main, 4).unwrap(), Some("epoch")), Level::Outer);
        // A helper's statement runs anywhere: every iteration in full, and the plan says why.
        let scope = scope_of(&py, SCRIPT, line("in_fn"));
        assert!(matches!(&scope, LoopScope::Dynamic { reason } if reason.contains("`helper`")), "{scope:?}");
        assert_eq!(level_of(&scope, Some("epoch")), Level::Inner);
    }
}
