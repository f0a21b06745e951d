//! `flor replay` in the SDK: the project's side of a hindsight replay.
//! [`flor_replay`] plans and executes; this module hands it what only the
//! project knows — the recorded runs, the names each already logged and the
//! runs a `--where` predicate selects (from the query database, synced
//! first) — runs the plan on a [`LocalExecutor`] (or, with
//! [`ExecutorKind::Ray`], a [`RayExecutor`] on a Ray cluster) with the
//! database released meanwhile, and ingests the values the replay attached
//! to the runs' refs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use flor_core::propagate::Registry;
use flor_core::select::IterSelect;
use flor_core::store::{RunKey, ValueFilter};
pub use flor_replay::worker::SPEC_ENV;
pub use flor_replay::{
    CheckpointRef, CostModel, Level, Plan, RunOutcome, RunPlan, RunProfile, RunReplay, Segment, SegmentSpec,
    StatementPlan, Step, Summary, TaskProgress, VersionPlan,
};
use flor_replay::{
    Executor, LocalExecutor, LocalOptions, Observer, ProgressBars, RayExecutor, RayOptions, Request, Runs,
};

use crate::config::{Config, ExecutorKind, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::project::Project;

/// What `flor replay` was asked.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// The names whose `flor.log` statements to replay.
    pub names: Vec<String>,
    /// A SQL predicate over the run-level dataframe columns (`--where`).
    pub where_clause: Option<String>,
    /// Worker processes.
    pub jobs: usize,
    /// Replay runs that already have the names.
    pub force: bool,
    /// Only this script (path relative to the repository root); default:
    /// every recorded script whose working-tree version has the statements.
    pub script: Option<String>,
    /// The languages replay knows (`None`: [`flor_propagate::registry`],
    /// Python). Register a [`LanguagePropagator`](flor_core::propagate::LanguagePropagator)
    /// to replay scripts of another language.
    pub propagators: Option<Registry>,
    /// Recorded names the divergence check leaves out (`--no-check`):
    /// values that cannot repeat by nature, such as times or timestamps.
    pub no_check: Vec<String>,
    /// A divergence fails the run's replay (`--strict`) instead of flagging
    /// its values.
    pub strict: bool,
    /// Which iterations record (`--iter LOOP=SPEC`): the outer loop's
    /// selection decides which iterations execute (and the plan's cost), a
    /// nested loop's which of its iterations record.
    pub iters: Vec<IterSelect>,
    /// `--override KEY=VALUE`: what `flor.arg(KEY, ...)` returns in the
    /// replay instead of the recorded value, for the keys of the allowed
    /// list (`[replay] overrides` in `.flor/config.toml`, default
    /// [`DEFAULT_OVERRIDES`]); any other key is refused.
    pub overrides: BTreeMap<String, String>,
    /// Where segments run (`--executor`; `None`: `[replay] executor` in
    /// `.flor/config.toml`, else this machine).
    pub executor: Option<ExecutorKind>,
    /// The Ray cluster (`--address`; `None`: `[replay] ray_address`, else
    /// `auto`).
    pub ray_address: Option<String>,
}

/// The args `flor replay --override` may change when the config names
/// none: environment-shaped ones that do not change what is computed.
pub const DEFAULT_OVERRIDES: &[&str] = &["device"];

/// Builds the plan (nothing runs, nothing is written): syncs the query
/// database, then asks [`flor_replay::plan`] with the isolation settings
/// of `.flor/config.toml` (`[replay]`).
pub fn plan(project: &mut Project, opts: &ReplayOptions, cost: &CostModel) -> Result<Plan> {
    if opts.names.is_empty() {
        return Err(flor_replay::Error::NoNames.into());
    }
    project.sync()?;
    let rows = project.runs()?;
    let propagators = opts.propagators.clone().unwrap_or_else(flor_propagate::registry);
    let metas: Vec<_> = rows.iter().map(|r| r.meta.clone()).collect();
    // `--apply @LINE`: the names the statements at that line log.
    let resolved =
        flor_replay::resolve_names(project.root(), &propagators, opts.script.as_deref(), &metas, &opts.names)?;
    let config = Config::load(&project.flor_dir().join(CONFIG_FILE))?;
    check_overrides(project, &config, &opts.overrides)?;
    let names: Vec<&str> = resolved.iter().map(String::as_str).collect();
    let tstamps: HashMap<_, _> = rows.iter().map(|r| (r.key, r.meta.tstamp.clone())).collect();
    let mut logged: HashMap<String, BTreeSet<String>> = HashMap::new();
    project.store()?.scan_values(ValueFilter::Names(&names), &mut |row| {
        // A value read out of printed text does not make the statement's
        // value known: the replay computes it.
        if row.source == flor_core::Source::Extract {
            return;
        }
        if let Some(t) = tstamps.get(&row.run) {
            logged.entry(t.clone()).or_default().insert(row.name.to_owned());
        }
    })?;
    let only = match &opts.where_clause {
        Some(pred) => Some(selected_by(project, pred)?),
        None => None,
    };
    let runs = Runs { runs: rows.into_iter().map(|r| r.meta).collect(), logged, only };
    let isolation = config.isolation();
    // On a cluster, the estimate counts its CPUs (one segment each).
    let cluster = match ray_options(project, opts, &config, &runs.runs)? {
        Some(ray) => {
            let executor = RayExecutor::connect(ray.clone())?;
            let info = executor.cluster().clone();
            // Kept for `execute_with`, which would otherwise connect again.
            *connected() = Some((ray.address.clone(), ray.driver_python.clone(), executor));
            Some((ray, info))
        }
        None => None,
    };
    let request = Request {
        names: resolved.clone(),
        jobs: cluster.as_ref().map_or(opts.jobs, |(_, info)| info.cpus),
        force: opts.force,
        script: opts.script.clone(),
        no_check: opts.no_check.clone(),
        strict: opts.strict,
        isolation,
        iters: opts.iters.clone(),
        overrides: opts.overrides.clone(),
    };
    let mut plan = flor_replay::plan(project.root(), &propagators, &request, &runs, cost)?;
    skip_unanswerable_loads(project, &mut plan, cluster.is_some());
    if let Some((ray, info)) = cluster {
        let python = if ray.worker_python.is_empty() {
            "the Python each Ray node runs".to_owned()
        } else {
            ray.worker_python.clone()
        };
        plan.executor = Some(format!(
            "Ray cluster at {} ({} CPU{} on {} node{}, Ray {}); segments run with {python} on the nodes, \
             checked for flordb and the scripts' imports before anything runs; driver: {} (flordb {})",
            ray.address,
            info.cpus,
            if info.cpus == 1 { "" } else { "s" },
            info.nodes,
            if info.nodes == 1 { "" } else { "s" },
            info.ray,
            ray.driver_python,
            info.flordb
        ));
    }
    Ok(plan)
}

/// Moves to [`Plan::skipped`] the runs whose replay would refuse at its
/// first setup load (see [`unanswerable_load`]), so the plan says so
/// before anything runs; the estimates are summed again without them.
fn skip_unanswerable_loads(project: &Project, plan: &mut Plan, remote: bool) {
    if std::env::var("FLOR_REPLAY_SETUP_LOADS").is_ok_and(|v| v == "disk") {
        return;
    }
    let objects = project.objects();
    let before = plan.runs.len();
    let mut kept = Vec::with_capacity(before);
    for r in std::mem::take(&mut plan.runs) {
        match unanswerable_load(project.root(), objects, &r.forward.loads, remote) {
            Some(why) => plan.skipped.push((r.meta.tstamp.clone(), why)),
            None => kept.push(r),
        }
    }
    plan.runs = kept;
    if plan.runs.len() != before {
        let durations: Vec<f64> =
            plan.runs.iter().flat_map(|r| r.plan.segments.iter().map(|s| s.estimate_secs)).collect();
        plan.total_secs = durations.iter().sum();
        plan.makespan_secs = flor_replay::makespan(&durations, plan.jobs);
    }
}

/// Why a replay could not answer one of `loads` (what the forward run
/// loaded in setup) with the bytes the forward run read: they are not in
/// the object store (not kept: over `keep_loads_mb`) and the file is
/// missing or changed — or, on a cluster (`remote`), the nodes cannot read
/// this machine's file at all.
fn unanswerable_load(
    root: &std::path::Path,
    objects: &flor_core::objects::ObjectStore,
    loads: &[flor_replay::LoadRef],
    remote: bool,
) -> Option<String> {
    for l in loads {
        if objects.contains(&l.digest) {
            continue;
        }
        let what = format!("its setup load of {} ({} bytes) was not kept", l.path, l.bytes);
        if remote {
            return Some(format!(
                "{what} (over [checkpoints] keep_loads_mb), and the cluster's nodes cannot read this machine's copy; \
                 replay it with the local executor"
            ));
        }
        let path = root.join(&l.path);
        let now = match crate::run::file_digest(&path) {
            Ok(id) if id.digest == l.digest => continue,
            Ok(id) => format!("now has other contents ({} bytes)", id.bytes),
            Err(_) => "is missing".to_owned(),
        };
        return Some(format!(
            "{what} (over [checkpoints] keep_loads_mb) and the file {now}: put back the file it loaded, or set \
             FLOR_REPLAY_SETUP_LOADS=disk to replay from the file as it is"
        ));
    }
    None
}

/// The Ray driver [`plan`] connected (address, driver Python, executor),
/// until [`execute_with`] takes it.
fn connected() -> std::sync::MutexGuard<'static, Option<(String, String, RayExecutor)>> {
    static CONNECTED: std::sync::Mutex<Option<(String, String, RayExecutor)>> = std::sync::Mutex::new(None);
    CONNECTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where Ray replays, when `opts` or the config chose the Ray executor:
/// the driver runs with `[replay] ray_driver_python`, else
/// `FLOR_RAY_DRIVER_PYTHON`, else the newest run's interpreter.
fn ray_options(
    project: &Project,
    opts: &ReplayOptions,
    config: &Config,
    runs: &[flor_core::RunMeta],
) -> Result<Option<RayOptions>> {
    if opts.executor.or(config.replay_executor).unwrap_or_default() != ExecutorKind::Ray {
        return Ok(None);
    }
    let driver_python = config
        .ray_driver_python
        .clone()
        .or_else(|| std::env::var("FLOR_RAY_DRIVER_PYTHON").ok().filter(|p| !p.is_empty()))
        .or_else(|| runs.iter().rev().map(|r| r.interpreter.clone()).find(|i| !i.is_empty()))
        .ok_or_else(|| {
            Error::from(flor_replay::Error::Executor {
                executor: "ray",
                message: "no Python to run the Ray driver with: set `ray_driver_python` under [replay] in \
                          .flor/config.toml (a Python with `ray` and `flordb`)"
                    .into(),
            })
        })?;
    let flor_dir = project.flor_dir();
    Ok(Some(RayOptions {
        root: project.root().to_owned(),
        work_dir: flor_dir.join("replay"),
        objects: flor_dir.join("objects"),
        address: opts.ray_address.clone().or_else(|| config.ray_address.clone()).unwrap_or_else(|| "auto".into()),
        driver_python,
        worker_python: config.ray_python.clone().unwrap_or_default(),
        retries: 2,
    }))
}

/// Refuses an override whose key is not in the allowed list: a recorded
/// hyper-parameter changes what the replay computes (replay reproduces a
/// run; record a new one instead), anything else is not known to be safe.
fn check_overrides(project: &Project, config: &Config, overrides: &BTreeMap<String, String>) -> Result<()> {
    let allowed = config.replay_overrides();
    let list = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
    for key in overrides.keys() {
        if allowed.iter().any(|a| a == key) {
            continue;
        }
        let names = [key.as_str()];
        let mut recorded_in: Option<RunKey> = None;
        project.store()?.scan_values(ValueFilter::Names(&names), &mut |row| {
            if row.ctx.is_none() && recorded_in.is_none() && row.source != flor_core::Source::Extract {
                recorded_in = Some(row.run);
            }
        })?;
        let reason = match recorded_in {
            Some(_) => format!(
                "`{key}` is a recorded hyper-parameter (flor.arg) of the runs, and a replay reproduces a run as it \
                 was recorded; record a new run with --kwargs {key}=... instead. Only environment-shaped args may be \
                 overridden: {list} (the `[replay] overrides` list in .flor/config.toml)"
            ),
            None => format!(
                "`{key}` is not in the list of args replay may override ({list}); add it to `overrides` under \
                 [replay] in .flor/config.toml if changing it cannot change the values computed"
            ),
        };
        return Err(Error::OverrideRefused { key: key.clone(), reason });
    }
    Ok(())
}

/// The tstamps of the runs whose run-level columns (args) satisfy the SQL
/// predicate `pred` (the same selection as `flor dataframe --where`).
fn selected_by(project: &Project, pred: &str) -> Result<BTreeSet<String>> {
    let selection = flor_core::select::Selection { where_clause: Some(pred.to_owned()), iters: Vec::new() };
    let keys = project.resolve(&selection)?.runs.unwrap_or_default();
    Ok(project.runs()?.into_iter().filter(|r| keys.contains(&r.key)).map(|r| r.meta.tstamp).collect())
}

/// Runs a plan on local worker processes (`plan.jobs` at once), or on the
/// Ray cluster `.flor/config.toml` names when it was planned there, then
/// ingests what it attached. `progress` receives one line per event; with
/// `bars`, a progress bar per worker is redrawn on stderr (a terminal).
pub fn execute(project: &mut Project, plan: &Plan, bars: bool, progress: &mut dyn FnMut(&str)) -> Result<Summary> {
    execute_with(project, &ReplayOptions::default(), plan, bars, progress)
}

/// [`execute`] where `opts` (what [`plan`] was given) may choose the
/// executor: a plan made for a Ray cluster (its [`Plan::executor`]) runs
/// there, after checking that the nodes have `flordb` and the modules the
/// scripts import.
pub fn execute_with(
    project: &mut Project,
    opts: &ReplayOptions,
    plan: &Plan,
    bars: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let root = project.root().to_owned();
    let flor_dir = project.flor_dir().to_owned();
    // Work folders a killed `flor replay` left after attaching its records.
    flor_replay::remove_published(&root, &flor_dir.join("replay"))?;
    // Workers open the project too: a DuckDB database is released meanwhile.
    project.release_store();
    let config = Config::load(&flor_dir.join(CONFIG_FILE))?;
    let metas: Vec<flor_core::RunMeta> = plan.runs.iter().map(|r| r.meta.clone()).collect();
    let ray = match plan.executor {
        Some(_) => {
            ray_options(project, &ReplayOptions { executor: Some(ExecutorKind::Ray), ..opts.clone() }, &config, &metas)?
        }
        None => None,
    };
    let mut executor: Box<dyn Executor> = match ray {
        Some(ray) => {
            let kept = connected().take().filter(|(a, p, _)| *a == ray.address && *p == ray.driver_python);
            let mut ray = match kept {
                Some((_, _, executor)) => executor,
                None => RayExecutor::connect(ray)?,
            };
            let (sources, local) = scripts_of(&root, plan)?;
            ray.check_imports(&sources, &local)?;
            Box::new(ray)
        }
        None => Box::new(LocalExecutor::new(LocalOptions {
            root: root.clone(),
            work_dir: flor_dir.join("replay"),
            objects: flor_dir.join("objects"),
            jobs: plan.jobs,
            isolation: plan.isolation.clone(),
        })),
    };
    let mut observer = Terminal { plan, progress, bars: bars.then(ProgressBars::new), last: Vec::new() };
    let summary = flor_replay::execute(&root, &flor_dir.join("locks"), plan, &mut *executor, &mut observer);
    observer.erase();
    drop(executor);
    project.reacquire_store()?;
    let summary = summary?;
    let report = project.sync()?;
    for p in &report.problems {
        progress(&format!("warning: {p}"));
    }
    Ok(summary)
}

/// The propagated scripts of `plan`'s versions, and the top-level module
/// names their code versions hold (`name.py` files and folders beside each
/// script and at the top): imports of those are the code's own.
fn scripts_of(root: &std::path::Path, plan: &Plan) -> Result<(Vec<String>, Vec<String>)> {
    let mut sources = Vec::new();
    let mut local = BTreeSet::new();
    for v in &plan.versions {
        let Some(source) = &v.source else { continue };
        sources.push(source.clone());
        let dir = v.script.rsplit_once('/').map_or("", |(d, _)| d);
        for d in BTreeSet::from([dir, ""]) {
            let listed = match flor_git::list_dir_at(root, &v.commit, d) {
                Ok(l) => l,
                Err(_) => continue, // a folder the commit lacks
            };
            for path in listed {
                let rest = path.strip_prefix(d).unwrap_or(&path).trim_start_matches('/');
                let first = rest.split('/').next().unwrap_or(rest);
                local.insert(first.strip_suffix(".py").unwrap_or(first).to_owned());
            }
        }
    }
    Ok((sources, local.into_iter().collect()))
}

/// Progress lines for the caller, and optionally bars on stderr below them.
struct Terminal<'a> {
    plan: &'a Plan,
    progress: &'a mut dyn FnMut(&str),
    bars: Option<ProgressBars>,
    last: Vec<Option<TaskProgress>>,
}

impl Terminal<'_> {
    fn erase(&mut self) {
        if let Some(b) = self.bars.as_mut() {
            b.erase(&mut std::io::stderr());
        }
    }

    fn draw(&mut self) {
        let plan = self.plan;
        let label = |p: &TaskProgress| {
            let r = &plan.runs[p.id.run];
            format!("run {} segment {}/{}", r.meta.tstamp, p.id.segment + 1, r.plan.segments.len())
        };
        if let Some(b) = self.bars.as_mut() {
            let mut err = std::io::stderr();
            b.draw(&mut err, &self.last, &label);
            let _ = err.flush();
        }
    }
}

impl Observer for Terminal<'_> {
    fn line(&mut self, text: &str) {
        self.erase();
        (self.progress)(text);
        self.draw();
    }

    fn tick(&mut self, workers: &[Option<TaskProgress>]) {
        self.last = workers.to_vec();
        self.erase();
        self.draw();
    }
}
