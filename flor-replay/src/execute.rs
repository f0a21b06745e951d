//! Executing a [`Plan`]: the orchestrator. It takes each run's replay lock,
//! submits every segment to an [`Executor`], reports what the executor
//! says, and as soon as all segments of a run are in, attaches their record
//! files to the run's ref — so a replay that dies keeps the runs it
//! finished, and the executor's kept segments let the next one resume.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flor_core::check::ReplayCheck;
use flor_core::layout::{ref_for, replay_label, replay_number, RECORDS_DIR};
use flor_core::record::parse_lines;

use crate::check::{check_run, replayed_values};

use crate::error::{Error, Result};
use crate::executor::{Event, Executor, Finished, SegmentTask, TaskId, TaskProgress};
use crate::plan::Plan;
use crate::render::plural;

/// How often the orchestrator asks for progress while nothing happens.
const TICK: Duration = Duration::from_millis(250);

/// How many times [`attach_replay`] numbers its files again after another
/// process attached to the same run first.
const ATTACH_ATTEMPTS: usize = 100;

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
    /// What the divergence check found (all segments together), once the
    /// run's segments are in.
    pub check: Option<ReplayCheck>,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Per run of the plan, in its order.
    pub runs: Vec<RunOutcome>,
    /// Wall-clock seconds.
    pub wall_secs: f64,
}

/// Who hears about a replay while it runs.
pub trait Observer {
    /// One line of news (a segment started or ended, a run attached).
    fn line(&mut self, text: &str);

    /// Called about four times a second while nothing else happens, with
    /// what each worker is doing.
    fn tick(&mut self, workers: &[Option<TaskProgress>]) {
        let _ = workers;
    }
}

impl<F: FnMut(&str)> Observer for F {
    fn line(&mut self, text: &str) {
        self(text)
    }
}

/// A run's segments as they come in.
struct Collecting {
    segments: Vec<Option<Vec<u8>>>,
    lock: Option<fs::File>,
}

/// Runs `plan` on `executor` for the repository at `root`; replay locks
/// live in `locks_dir` (`.flor/locks`). Returns per run what happened; a
/// run that failed does not stop the others.
pub fn execute(
    root: &Path,
    locks_dir: &Path,
    plan: &Plan,
    executor: &mut dyn Executor,
    observer: &mut dyn Observer,
) -> Result<Summary> {
    let started = Instant::now();
    let mut outcomes: Vec<RunOutcome> = plan
        .runs
        .iter()
        .map(|r| RunOutcome {
            tstamp: r.meta.tstamp.clone(),
            values: 0,
            estimate_secs: r.plan.estimate_secs,
            actual_secs: 0.0,
            failure: None,
            check: None,
        })
        .collect();
    let mut runs = Vec::with_capacity(plan.runs.len());
    let mut pending = 0;
    for (ri, r) in plan.runs.iter().enumerate() {
        let lock = lock_run(locks_dir, &r.meta.run_id())?;
        if lock.is_none() {
            outcomes[ri].failure = Some(format!(
                "another `flor replay` is replaying run {} right now; its values appear when it \
                 finishes (run `flor replay` again afterwards for anything it did not cover)",
                r.meta.tstamp
            ));
        }
        runs.push(Collecting { segments: vec![None; r.plan.segments.len()], lock });
    }
    let total: usize = runs.iter().filter(|c| c.lock.is_some()).map(|c| c.segments.len()).sum();
    observer.line(&format!(
        "{total} segment{} to run on {} worker{} ({})",
        plural(total),
        executor.workers(),
        plural(executor.workers()),
        executor.name()
    ));
    for (ri, c) in runs.iter().enumerate() {
        if c.lock.is_none() {
            continue;
        }
        for k in 0..c.segments.len() {
            let spec = plan.spec(ri, k).ok_or_else(|| Error::Executor {
                executor: executor.name(),
                message: format!("the plan has no segment {k} of run {ri}"),
            })?;
            executor.submit(SegmentTask { id: TaskId { run: ri, segment: k }, spec: Arc::new(spec) })?;
            pending += 1;
        }
    }
    let mut finished = 0;
    while pending > 0 {
        let Some(event) = executor.next_event(TICK)? else {
            observer.tick(&executor.progress());
            continue;
        };
        match event {
            Event::Started { id, worker } => {
                let r = &plan.runs[id.run];
                observer.line(&format!(
                    "worker {}: run {} segment {}/{} started (estimated {:.2} s)",
                    worker + 1,
                    r.meta.tstamp,
                    id.segment + 1,
                    r.plan.segments.len(),
                    r.plan.segments[id.segment].estimate_secs
                ));
            }
            Event::Finished(done) => {
                pending -= 1;
                finished += 1;
                observer.line(&format!("[{finished}/{total}] {}", finished_line(plan, &done)));
                let ri = done.id.run;
                outcomes[ri].actual_secs += done.secs;
                match done.result {
                    Ok(bytes) => runs[ri].segments[done.id.segment] = Some(bytes),
                    Err(why) => {
                        outcomes[ri].failure.get_or_insert(why);
                    }
                }
                if outcomes[ri].failure.is_none() && runs[ri].segments.iter().all(Option::is_some) {
                    publish(root, plan, ri, &mut runs[ri], &mut outcomes[ri], executor, observer)?;
                }
            }
        }
    }
    Ok(Summary { runs: outcomes, wall_secs: started.elapsed().as_secs_f64() })
}

/// The progress line of a finished segment.
fn finished_line(plan: &Plan, done: &Finished) -> String {
    let r = &plan.runs[done.id.run];
    let seg = &r.plan.segments[done.id.segment];
    let which = format!("run {} segment {}/{}", r.meta.tstamp, done.id.segment + 1, r.plan.segments.len());
    match &done.result {
        Ok(_) if done.resumed => format!("{which}: done by an earlier replay"),
        Ok(bytes) => {
            let compared = plan.check_names(done.id.run).unwrap_or_default().compared;
            let values = replayed_values(bytes, &compared);
            format!(
                "{which}: {values} value{} in {:.2} s (estimated {:.2} s)",
                plural(values),
                done.secs,
                seg.estimate_secs
            )
        }
        Err(why) => format!("{which} FAILED: {why}"),
    }
}

/// Attaches a run whose segments are all in, and lets the executor forget
/// them.
fn publish(
    root: &Path,
    plan: &Plan,
    ri: usize,
    run: &mut Collecting,
    outcome: &mut RunOutcome,
    executor: &mut dyn Executor,
    observer: &mut dyn Observer,
) -> Result<()> {
    let r = &plan.runs[ri];
    let segments: Vec<Vec<u8>> = run.segments.iter_mut().map(|s| s.take().unwrap_or_default()).collect();
    let names = plan.check_names(ri).unwrap_or_default();
    let (segments, checks) = check_run(root, &r.meta, &names, &plan.names, segments)?;
    let mut check = ReplayCheck::default();
    for c in &checks {
        check.merge(c);
    }
    outcome.values = segments.iter().map(|b| parse_lines(b, 1).records.len() as u64).sum();
    let diverged = check.diverged();
    outcome.check = Some(check);
    if diverged && plan.strict {
        outcome.failure = Some("its replay diverged from the recorded run (--strict); nothing was attached".into());
        executor.forget_run(&r.meta.run_id())?;
        run.lock = None;
        observer.line(&format!("run {}: replay diverged; not attached (--strict)", r.meta.tstamp));
        return Ok(());
    }
    let msg = format!("flor: replay of {} for run {}", plan.names.join(", "), r.meta.tstamp);
    let n = attach_replay(root, &r.meta.run_id(), &segments, &msg)?;
    flor_core::pause::point(flor_core::pause::REPLAY_AFTER_ATTACH);
    executor.forget_run(&r.meta.run_id())?;
    run.lock = None;
    let flag = if diverged { " (flagged diverged)" } else { "" };
    observer.line(&format!("run {}: {} values attached as replay {n}{flag}", r.meta.tstamp, outcome.values));
    Ok(())
}

/// Takes the lock of run `run_id`'s replay (`<dir>/replay-<run id>.lock`,
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

/// Attaches a finished replay's segment files to the run's ref as replay
/// `n` (one more than the run's latest), returning `n`.
///
/// Choosing `n` and moving the ref are one compare-and-swap on the tip `n`
/// was read from: when another replay of the same run attached meanwhile,
/// `n` is chosen again on the new tip, so two replays never share a number
/// (nor overwrite each other's files).
pub fn attach_replay(root: &Path, run_id: &str, segments: &[Vec<u8>], message: &str) -> Result<u64> {
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
    Err(Error::AttachContended { run_id: run_id.to_owned(), refname, attempts: ATTACH_ATTEMPTS })
}
