//! flor-replay: hindsight replay. An engineer adds a log statement to the
//! newest version of a training script; replay carries it into the code
//! version of every selected old run, re-executes only the iterations that
//! produce the new values — from checkpoints, spread over workers — and
//! hands the values back to be attached to each run.
//!
//! The pieces, in the order a replay uses them:
//!
//! 1. **Planning** ([`plan()`]): the scripts whose working-tree version logs
//!    the names, the runs that lack them (the caller supplies the runs and
//!    its `--where` selection from its query database: [`Runs`]), per code
//!    version the propagation outcome, per statement where it runs
//!    ([`Level`]), per run its forward records ([`Forward`]) and from them
//!    [`plan_run`]'s segments and cost. [`Plan::render`] shows it all before
//!    anything runs.
//! 2. **The protocol** ([`SegmentSpec`]): one segment's work, versioned, with
//!    no host path in it; [`worker`] says how a worker process finds its
//!    spec and where it writes.
//! 3. **Execution** ([`execute()`]): per run a replay lock, every segment
//!    submitted to an [`Executor`] ([`LocalExecutor`]: processes on this
//!    machine, resuming what an interrupted replay finished; [`RayExecutor`]:
//!    tasks on a Ray cluster, through the driver `flordb` ships), each run's
//!    record files attached to its ref as soon as all its segments are in
//!    ([`attach_replay`]), and a [`Summary`] against the estimates. An old
//!    script reads the project as it is now and writes only into the
//!    replay's own folder ([`Isolation`], decided with the plan).
//! 4. **Divergence checks** ([`check`]): the old `flor.log`s a replayed
//!    iteration re-executes are compared, bit for bit, with what the
//!    forward run recorded; a difference flags the replay's values
//!    `diverged` (or, with [`Request::strict`], fails the run).
//!
//! This crate reads git (old code, forward records, run refs) and the
//! working tree; it knows nothing of the query database (the caller syncs
//! and ingests) and nothing of any language (it asks the propagators).
//!
//! ```no_run
//! use std::path::Path;
//! use flor_replay::{CostModel, LocalExecutor, LocalOptions, Request, Runs};
//!
//! # fn main() -> flor_replay::Result<()> {
//! let root = Path::new("/path/to/repo");
//! let runs = Runs { runs: vec![/* from the store */], ..Runs::default() };
//! let request = Request { names: vec!["grad_norm".into()], jobs: 4, ..Request::default() };
//! let plan = flor_replay::plan(root, &flor_propagate::registry(), &request, &runs, &CostModel::default())?;
//! print!("{}", plan.render());
//! let mut executor = LocalExecutor::new(LocalOptions {
//!     root: root.into(),
//!     work_dir: root.join(".flor/replay"),
//!     objects: root.join(".flor/objects"),
//!     jobs: plan.jobs,
//!     isolation: plan.isolation.clone(),
//! });
//! let summary = flor_replay::execute(root, &root.join(".flor/locks"), &plan, &mut executor, &mut |line: &str| eprintln!("{line}"))?;
//! print!("{}", summary.render(&plan));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod check;
mod error;
mod execute;
mod executor;
mod isolate;
mod local;
#[cfg(target_os = "linux")]
mod overlay;
mod plan;
mod profile;
mod ray;
mod render;
mod segments;
mod spec;
pub mod worker;

pub use error::{Error, Result};
pub use execute::{attach_replay, execute, Observer, RunOutcome, Summary};
pub use executor::{Event, Executor, Finished, SegmentTask, TaskId, TaskProgress};
pub use isolate::{Isolation, IsolationMode, IsolationSettings, DEFAULT_COPY_LIMIT_MB};
pub use local::{remove_published, LocalExecutor, LocalOptions};
pub use plan::{level_of, plan, resolve_names, Plan, Request, RunReplay, Runs, StatementPlan, VersionPlan};
pub use profile::{profile_of, Forward};
pub use ray::{ClusterInfo, RayExecutor, RayOptions};
pub use render::ProgressBars;
pub use segments::{
    makespan, plan_run, plan_run_selected, CostModel, Level, PlanError, RunPlan, RunProfile, Segment, Step,
};
pub use spec::{CheckpointRef, CodeRef, ContextSpan, LoadRef, SegmentSpec, SPEC_VERSION};
