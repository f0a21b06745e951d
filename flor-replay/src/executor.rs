//! The [`Executor`] trait: what runs replay segments. The orchestrator
//! ([`crate::execute`]) submits every segment of a plan, then drains events
//! until each has finished; it attaches a run's records once all its
//! segments are in. [`LocalExecutor`](crate::LocalExecutor) (processes on
//! this machine) is the first implementation and the default.
//!
//! An executor receives a [`SegmentSpec`] (no host paths: code by commit,
//! checkpoints by digest) and hands the segment's record file back as bytes,
//! so one on another machine needs nothing but this trait. Resumption is an
//! executor's business too: one that keeps finished segments (the local one
//! does, under `.flor/replay/`) answers a resubmitted segment at once.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::Duration;
//! use flor_replay::{Event, Executor, Finished, Result, SegmentTask, TaskId, TaskProgress};
//!
//! /// An executor that fails every segment: the smallest complete one.
//! #[derive(Default)]
//! struct Refuse(VecDeque<TaskId>);
//!
//! impl Executor for Refuse {
//!     fn name(&self) -> &'static str { "refuse" }
//!     fn workers(&self) -> usize { 1 }
//!     fn submit(&mut self, task: SegmentTask) -> Result<()> {
//!         self.0.push_back(task.id);
//!         Ok(())
//!     }
//!     fn next_event(&mut self, _timeout: Duration) -> Result<Option<Event>> {
//!         Ok(self.0.pop_front().map(|id| Event::Finished(Finished::failed(id, "no workers here", 0.0))))
//!     }
//!     fn progress(&self) -> Vec<Option<TaskProgress>> { vec![None] }
//!     fn cancel(&mut self) -> Result<()> { self.0.clear(); Ok(()) }
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::spec::SegmentSpec;

/// Names one segment of one run of a plan: indexes into
/// [`Plan::runs`](crate::Plan::runs) and that run's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The run's index in the plan.
    pub run: usize,
    /// The segment's index within the run.
    pub segment: usize,
}

/// One segment to run.
#[derive(Debug, Clone)]
pub struct SegmentTask {
    /// Which one.
    pub id: TaskId,
    /// What to do.
    pub spec: Arc<SegmentSpec>,
}

/// What became of a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Which one.
    pub id: TaskId,
    /// The segment's record file (`Ok`), or why it failed.
    pub result: std::result::Result<Vec<u8>, String>,
    /// Seconds it ran (0 for one resumed from an earlier replay).
    pub secs: f64,
    /// Whether the result comes from an earlier, interrupted replay.
    pub resumed: bool,
}

impl Finished {
    /// A segment that recorded `records`.
    pub fn ok(id: TaskId, records: Vec<u8>, secs: f64) -> Finished {
        Finished { id, result: Ok(records), secs, resumed: false }
    }

    /// A segment that failed for `why`.
    pub fn failed(id: TaskId, why: impl Into<String>, secs: f64) -> Finished {
        Finished { id, result: Err(why.into()), secs, resumed: false }
    }
}

/// Something an executor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A worker started a segment.
    Started {
        /// Which one.
        id: TaskId,
        /// The worker (0-based, below [`Executor::workers`]).
        worker: usize,
    },
    /// A segment ended, well or not.
    Finished(Finished),
}

/// What a busy worker is doing, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskProgress {
    /// The segment.
    pub id: TaskId,
    /// Outer iterations done so far.
    pub done: usize,
    /// Outer iterations the segment executes.
    pub total: usize,
    /// Seconds since the worker started it.
    pub secs: f64,
}

/// Runs replay segments. See the module docs; keep implementations small:
/// everything else (planning, locking, publishing) is the orchestrator's.
pub trait Executor {
    /// A short name for messages (`local`).
    fn name(&self) -> &'static str;

    /// How many segments run at once.
    fn workers(&self) -> usize;

    /// Queues a segment; its [`Event`]s come from [`Executor::next_event`].
    fn submit(&mut self, task: SegmentTask) -> Result<()>;

    /// The next event, waiting up to `timeout`; `None` when nothing happened
    /// meanwhile.
    fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>>;

    /// What each worker is doing now (`None`: idle), one entry per worker.
    fn progress(&self) -> Vec<Option<TaskProgress>>;

    /// Stops queued and running segments; each still ends with a
    /// [`Event::Finished`] (failed, "cancelled").
    fn cancel(&mut self) -> Result<()>;

    /// The records of run `run_id` are attached to its ref: results kept
    /// for resumption may go.
    fn forget_run(&mut self, run_id: &str) -> Result<()> {
        let _ = run_id;
        Ok(())
    }
}
