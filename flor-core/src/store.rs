//! The storage-backend trait: what every query database (SQLite, DuckDB, an
//! SDK user's own backend, ...) must provide.
//!
//! [`Store`] has three tiers:
//!
//! * **Primitives** (required): [`Store::backend`], [`Store::ingest`],
//!   [`Store::file_progress`], [`Store::set_status`], [`Store::runs`],
//!   [`Store::names`], [`Store::scan_values`], [`Store::scan_loops`],
//!   [`Store::checkpoints`], [`Store::clear`]. Ingestion, listings and two
//!   scans: enough for flor to sync, pivot and replay.
//! * **Derived** (provided, may be replaced): [`Store::dataframe`], the
//!   pivot, has a shared default built on the scans
//!   ([`crate::pivot::dataframe`]); a backend may answer it with its own plan
//!   as long as the answers are identical.
//! * **Optional capabilities** (defaulted): [`Store::query`] (raw SQL over
//!   the views `runs`, `logs`, `loops`, ...) answers
//!   [`StoreError::Unsupported`] unless the backend has an SQL engine, and
//!   [`Store::query_within`] runs it under a time limit (unlimited by
//!   default);
//!   [`Store::begin_group`] / [`Store::end_group`] (several ingestion steps
//!   made durable together) default to every step being durable on its own;
//!   captured output ([`Store::scan_outputs`]: what `flor io` reads)
//!   defaults to unsupported;
//!   tensor statistics ([`Store::tensor_queue`], [`Store::requeue_tensors`],
//!   [`Store::ingest_tensors`], [`Store::scan_tensors`]: the `tensors` view
//!   and the `tensor:` names of the pivot) default to none
//!   ([`tensors_unsupported`]).
//!
//! The conformance suite in `flor-store` (feature `conformance`) pins the
//! contract down: its *core* checks use only the primitives and the pivot,
//! its *SQL* checks the views and the read-only rule of [`Store::query`].
//!
//! The database is a cache: everything in it can be rebuilt from the run
//! record files stored in git.

use crate::check::ReplayCheck;
use crate::record::{CheckpointMeta, LoopCtx, Record, RunMeta, RunStatus, Source};
use std::sync::Arc;

use crate::table::Table;
use crate::value::Value;

/// A run's key inside one store (not stable across rebuilds).
pub type RunKey = i64;

/// Errors a storage backend reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The SQL text was rejected by the engine (syntax, unknown table or
    /// column, type error); `message` is the engine's own explanation.
    #[error("query failed ({backend}): {message}")]
    Query {
        /// Backend name.
        backend: &'static str,
        /// The engine's message.
        message: String,
    },
    /// A query that would modify the database.
    #[error("only read-only queries are allowed here (the database is a cache rebuilt from git): {sql}")]
    NotReadOnly {
        /// The offending SQL.
        sql: String,
    },
    /// A user query ran past its time limit and was stopped.
    #[error(
        "the query ran longer than its time limit ({} s) and was stopped; raise the limit with \
         `flor query --timeout SECS` or `query_timeout = SECS` in .flor/config.toml (0: no limit)",
        limit.as_secs_f64()
    )]
    TimedOut {
        /// Backend name.
        backend: &'static str,
        /// The limit it ran into.
        limit: std::time::Duration,
    },
    /// The database file is unreadable or from an incompatible version.
    #[error("the query database {path} cannot be used: {message}. Run `flor rebuild` to recreate it from the run records in git")]
    Unusable {
        /// Database path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The database file is damaged: not a database of its engine at all,
    /// or corrupt pages. A project's query database is a cache, so the
    /// `flor` SDK rebuilds it from git when it finds this on opening or
    /// syncing; found later, the message says how.
    #[error("the query database {path} is damaged ({message}). It only caches the run records in git: run `flor rebuild` to recreate it")]
    Damaged {
        /// Database path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An optional capability (see the module docs) this backend does not
    /// have, such as raw SQL on a store without an SQL engine.
    #[error("the {backend} store does not support {what}; {instead}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// What was asked for (`raw SQL queries (it has no SQL engine)`).
        what: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
    /// Any other backend failure.
    #[error("{backend} store: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// The answer of a backend without an SQL engine to [`Store::query`]
    /// (the trait's default): names the backend and what to use instead.
    pub fn sql_unsupported(backend: &'static str) -> StoreError {
        StoreError::Unsupported {
            backend,
            what: "raw SQL queries (it has no SQL engine)",
            instead: "use the pivot instead (`flor dataframe NAME...`, `Project::dataframe`, \
                      `flor.dataframe(...)`) or the run and name listings (`flor runs`, `flor names`); \
                      for SQL, use a store with an SQL engine (`store = \"sqlite\"` or `\"duckdb\"` \
                      in .flor/config.toml)",
        }
    }
}

/// The answer of a store without tensor statistics to
/// [`Store::ingest_tensors`] and [`Store::scan_tensors`].
pub fn tensors_unsupported(backend: &'static str) -> StoreError {
    StoreError::Unsupported {
        backend,
        what: "tensor statistics (the `tensors` view, `tensor:` names)",
        instead: "use a store that keeps them (`store = \"sqlite\"` or `\"duckdb\"` in .flor/config.toml)",
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// How far a record file has been ingested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileProgress {
    /// Bytes ingested (always at a line boundary).
    pub offset: u64,
    /// Lines ingested.
    pub lines: u64,
}

/// One atomic ingestion step: a span of one record file of one run.
///
/// A backend applies it in a single transaction: it upserts the run
/// (identified by `(projid, tstamp)`; metadata and status are replaced),
/// inserts the rows, and stores `progress` for `file`, so that a crash never
/// ingests a span twice or half.
#[derive(Debug, Clone, Copy)]
pub struct IngestBatch<'a> {
    /// The run (identity, metadata, current status).
    pub run: &'a RunMeta,
    /// Whether these records are forward or replay records.
    pub source: Source,
    /// Identifies the record file (stable across sessions).
    pub file: &'a str,
    /// Progress through `file` after this batch.
    pub progress: FileProgress,
    /// Loop iterations.
    pub loops: &'a [LoopCtx],
    /// Value records.
    pub records: &'a [Record],
    /// Checkpoints.
    pub checkpoints: &'a [CheckpointMeta],
    /// Divergence checks of a replay file ([`crate::check`]); a store keeps
    /// them ([`Store::checks`]) and flags the values of a replay whose check
    /// found a difference.
    pub checks: &'a [ReplayCheck],
}

/// A stored divergence check ([`Store::checks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    /// Its run.
    pub run: RunKey,
    /// Which of the run's replays it checked ([`crate::layout::replay_of_line`]
    /// of its line).
    pub replay: u64,
    /// The check (its `line` as ingested).
    pub check: ReplayCheck,
}

/// A run as listed by [`Store::runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Key within this store.
    pub key: RunKey,
    /// Identity and metadata.
    pub meta: RunMeta,
    /// Number of value records (all kinds) stored for it.
    pub records: u64,
}

/// Which values [`Store::scan_values`] visits.
#[derive(Debug, Clone, Copy)]
pub enum ValueFilter<'a> {
    /// `log` and `arg` records with one of these names, at any loop depth.
    Names(&'a [&'a str]),
    /// `log` and `arg` records outside any loop (run level).
    RunLevel,
}

/// A value visited by [`Store::scan_values`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValueRow<'a> {
    /// Its run.
    pub run: RunKey,
    /// Loop context, `None` at run level.
    pub ctx: Option<u32>,
    /// Forward or replay.
    pub source: Source,
    /// Line in its record file (orders values of one run and source).
    pub line: u64,
    /// Value name.
    pub name: &'a str,
    /// The value.
    pub value: Value,
}

/// Consecutive iterations of one loop: contexts `first_ctx ..
/// first_ctx + count` are iterations `first_iteration ..` of loop `name`
/// inside `parent`. Stores keep loop contexts as spans (a run of 1,000 epochs
/// × 1,000 steps is 2,000 spans, not 1,001,000 rows); [`LoopSpan::compress`]
/// builds them from a record file's iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSpan {
    /// Context id of the first iteration.
    pub first_ctx: u32,
    /// Number of iterations (≥ 1).
    pub count: u32,
    /// Enclosing iteration, `None` for an outermost loop.
    pub parent: Option<u32>,
    /// Loop name.
    pub name: Arc<str>,
    /// Iteration index of the first context.
    pub first_iteration: u64,
    /// Iterated value text; a span with a value has `count == 1`.
    pub value: Option<String>,
}

impl LoopSpan {
    /// Groups iterations (in file order) into maximal spans: consecutive
    /// context ids and iteration indexes, same loop and parent, no value.
    pub fn compress(loops: &[LoopCtx]) -> Vec<LoopSpan> {
        let mut out: Vec<LoopSpan> = Vec::new();
        for l in loops {
            if let Some(last) = out.last_mut() {
                if last.value.is_none()
                    && l.value.is_none()
                    && last.parent == l.parent
                    && (Arc::ptr_eq(&last.name, &l.name) || *last.name == *l.name)
                    && u64::from(last.first_ctx) + u64::from(last.count) == u64::from(l.ctx)
                    && last.first_iteration + u64::from(last.count) == l.iteration
                    && last.count < u32::MAX
                {
                    last.count += 1;
                    continue;
                }
            }
            out.push(LoopSpan {
                first_ctx: l.ctx,
                count: 1,
                parent: l.parent,
                name: l.name.clone(),
                first_iteration: l.iteration,
                value: l.value.clone(),
            });
        }
        out
    }

    /// The iterations of this span.
    pub fn expand(&self) -> impl Iterator<Item = LoopCtx> + '_ {
        (0..self.count).map(move |i| LoopCtx {
            ctx: self.first_ctx + i,
            parent: self.parent,
            name: self.name.clone(),
            iteration: self.first_iteration + u64::from(i),
            value: self.value.clone(),
        })
    }
}

/// One tensor of a checkpoint and its statistics: a row of the `tensors`
/// view, what [`Store::ingest_tensors`] stores and [`Store::scan_tensors`]
/// visits. Statistics are `None` where there are none (a dtype without
/// them, no finite element, no earlier checkpoint to compare with).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorRow {
    /// The tensor's name in its checkpoint (`fc1.weight`).
    pub tensor: String,
    /// Its dtype (`f32`, `bf16`, ...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its size in bytes.
    pub bytes: u64,
    /// L2 norm of its finite elements.
    pub l2: Option<f64>,
    /// Mean of its finite elements.
    pub mean: Option<f64>,
    /// Population standard deviation of its finite elements.
    pub std: Option<f64>,
    /// Smallest finite element.
    pub min: Option<f64>,
    /// Largest finite element.
    pub max: Option<f64>,
    /// Number of NaN and infinite elements.
    pub nonfinite: Option<u64>,
    /// L2 norm of its change since the same tensor in the run's previous
    /// checkpoint of the same name.
    pub delta_l2: Option<f64>,
}

/// The statistics a [`TensorRow`] holds, by the names `tensor:` names of
/// [`Store::dataframe`] use (`tensor:model.fc1.weight:l2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorStat {
    /// [`TensorRow::l2`].
    L2,
    /// [`TensorRow::mean`].
    Mean,
    /// [`TensorRow::std`].
    Std,
    /// [`TensorRow::min`].
    Min,
    /// [`TensorRow::max`].
    Max,
    /// [`TensorRow::nonfinite`].
    Nonfinite,
    /// [`TensorRow::delta_l2`].
    DeltaL2,
}

impl TensorStat {
    /// Every statistic, in the order of the `tensors` view's columns.
    pub const ALL: [TensorStat; 7] = [
        TensorStat::L2,
        TensorStat::Mean,
        TensorStat::Std,
        TensorStat::Min,
        TensorStat::Max,
        TensorStat::Nonfinite,
        TensorStat::DeltaL2,
    ];

    /// Its name (`l2`, `delta_l2`, ...): the `tensors` view's column.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorStat::L2 => "l2",
            TensorStat::Mean => "mean",
            TensorStat::Std => "std",
            TensorStat::Min => "min",
            TensorStat::Max => "max",
            TensorStat::Nonfinite => "nonfinite",
            TensorStat::DeltaL2 => "delta_l2",
        }
    }

    /// Its value in `row` (an integer for `nonfinite`).
    pub fn of(self, row: &TensorRow) -> Option<Value> {
        match self {
            TensorStat::L2 => row.l2.map(Value::Float),
            TensorStat::Mean => row.mean.map(Value::Float),
            TensorStat::Std => row.std.map(Value::Float),
            TensorStat::Min => row.min.map(Value::Float),
            TensorStat::Max => row.max.map(Value::Float),
            TensorStat::Nonfinite => row.nonfinite.and_then(|n| i64::try_from(n).ok()).map(Value::Int),
            TensorStat::DeltaL2 => row.delta_l2.map(Value::Float),
        }
    }
}

/// A `tensor:<checkpoint>.<tensor>:<stat>` name of [`Store::dataframe`]:
/// one statistic of one tensor of a run's checkpoints of one name, found at
/// each checkpoint's loop position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorName<'a> {
    /// `<checkpoint>.<tensor>` (`model.fc1.weight`).
    pub path: &'a str,
    /// The statistic.
    pub stat: TensorStat,
}

impl<'a> TensorName<'a> {
    /// The prefix of tensor names.
    pub const PREFIX: &'static str = "tensor:";

    /// Parses `tensor:<checkpoint>.<tensor>:<stat>` (or
    /// `tensor:<checkpoint>:<stat>` for the one unnamed tensor of a
    /// checkpoint, such as a `.npy` array); `None` for any other name (then
    /// it is an ordinary logged name).
    pub fn parse(name: &'a str) -> Option<TensorName<'a>> {
        let rest = name.strip_prefix(Self::PREFIX)?;
        let (path, stat) = rest.rsplit_once(':')?;
        let stat = TensorStat::ALL.into_iter().find(|s| s.as_str() == stat)?;
        (!path.is_empty() && !path.starts_with('.') && !path.ends_with('.')).then_some(TensorName { path, stat })
    }

    /// The path naming a checkpoint's tensor: `<checkpoint>.<tensor>`, or
    /// the checkpoint's name for an unnamed tensor.
    pub fn path_of(checkpoint: &str, tensor: &str) -> String {
        if tensor.is_empty() {
            checkpoint.to_owned()
        } else {
            format!("{checkpoint}.{tensor}")
        }
    }

    /// The ways `path` splits into a checkpoint name and a tensor name (at
    /// each `.`: checkpoint names may hold dots too; the whole path with an
    /// unnamed tensor last).
    pub fn splits(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let path = self.path;
        path.match_indices('.').map(move |(i, _)| (&path[..i], &path[i + 1..])).chain(std::iter::once((path, "")))
    }

    /// Whether a checkpoint `checkpoint` holding `tensor` is what this name
    /// means.
    pub fn matches(&self, checkpoint: &str, tensor: &str) -> bool {
        if tensor.is_empty() {
            return self.path == checkpoint;
        }
        self.path.len() == checkpoint.len() + 1 + tensor.len()
            && self.path.starts_with(checkpoint)
            && self.path.as_bytes()[checkpoint.len()] == b'.'
            && self.path.ends_with(tensor)
    }
}

/// A checkpoint whose tensors are not in the store yet
/// ([`Store::tensor_queue`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedCheckpoint {
    /// Its run.
    pub run: RunKey,
    /// The run's `tstamp`.
    pub tstamp: String,
    /// The checkpoint.
    pub checkpoint: CheckpointMeta,
}

/// A tensor visited by [`Store::scan_tensors`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorVisit<'a> {
    /// Its run.
    pub run: RunKey,
    /// The loop context of its checkpoint (the outer iteration it ends).
    pub ctx: Option<u32>,
    /// Its checkpoint's line in the run's record file.
    pub line: u64,
    /// Its checkpoint's name.
    pub checkpoint: &'a str,
    /// The tensor.
    pub row: &'a TensorRow,
}

/// Which tensors [`Store::scan_tensors`] visits.
#[derive(Debug, Clone, Copy)]
pub enum TensorFilter<'a> {
    /// All of them.
    All,
    /// Those whose `(checkpoint name, tensor name)` is one of these (it
    /// may visit others too; callers check).
    Named(&'a [(&'a str, &'a str)]),
}

/// A captured output line visited by [`Store::scan_outputs`]: an
/// [`crate::RecordKind::Output`] record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputRow<'a> {
    /// Its run.
    pub run: RunKey,
    /// Loop context where it was written, `None` at run level.
    pub ctx: Option<u32>,
    /// Forward or replay.
    pub source: Source,
    /// Line in its record file (orders the lines of one run and source).
    pub line: u64,
    /// The channel (the record's name: `io::stdout`, `io::log::warning`, ...).
    pub channel: &'a str,
    /// The captured text (one line, no trailing newline).
    pub text: &'a str,
}

/// Which captured lines [`Store::scan_outputs`] visits.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputFilter<'a> {
    /// Only these runs (`None`: all).
    pub runs: Option<&'a [RunKey]>,
    /// Only this channel, matched by [`OutputFilter::keeps_channel`]
    /// (`None`: all).
    pub channel: Option<&'a str>,
}

impl OutputFilter<'_> {
    /// Whether run `run` is selected.
    pub fn keeps_run(&self, run: RunKey) -> bool {
        self.runs.is_none_or(|r| r.contains(&run))
    }

    /// Whether a line of channel `name` is selected: the filter's channel
    /// `c` matches `name` when it is `name` or a `::`-separated prefix of it
    /// (`io::log` matches `io::log::error`, not `io::logger`); a `c` not
    /// starting with `io::` also matches as if it did (`stdout` matches
    /// `io::stdout`, `log` every `io::log::<level>`).
    pub fn keeps_channel(&self, name: &str) -> bool {
        let Some(c) = self.channel else { return true };
        let c = c.trim_end_matches(':');
        let under = |name: &str| name == c || name.strip_prefix(c).is_some_and(|rest| rest.starts_with("::"));
        under(name) || (!c.starts_with("io::") && name.strip_prefix("io::").is_some_and(under))
    }
}

/// A name known to the store, for listings and "did you mean" hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInfo {
    /// The name.
    pub name: String,
    /// `log` or `arg` (the first kind seen when both occur).
    pub kind: String,
    /// Number of records with this name.
    pub count: u64,
}

/// A query database. See the module docs for the three tiers of methods.
///
/// Required: the primitives ([`Store::backend`], [`Store::ingest`],
/// [`Store::file_progress`], [`Store::set_status`], [`Store::runs`],
/// [`Store::names`], [`Store::scan_values`], [`Store::scan_loops`],
/// [`Store::checkpoints`], [`Store::clear`]). Provided: [`Store::dataframe`]
/// (the pivot, built on the scans). Optional capabilities, defaulted:
/// [`Store::query`] (raw SQL; "unsupported" by default) and
/// [`Store::begin_group`] / [`Store::end_group`] (no grouping by default).
///
/// `flor-store` implements it with SQLite and DuckDB; the root crate's
/// `examples/custom_store.rs` is a small backend of the primitives only.
pub trait Store: Send {
    /// Short backend name (`sqlite`, `duckdb`).
    fn backend(&self) -> &'static str;

    /// Applies one ingestion step atomically (see [`IngestBatch`]).
    fn ingest(&mut self, batch: &IngestBatch<'_>) -> StoreResult<RunKey>;

    /// How far `file` has been ingested, `None` if never.
    fn file_progress(&self, file: &str) -> StoreResult<Option<FileProgress>>;

    /// Opens a group of ingestion steps that become durable together, at
    /// [`Store::end_group`], for backends whose transactions have a high
    /// fixed cost (DuckDB: about 5 ms each; SQLite: a commit's WAL frames
    /// and checkpoints, about a tenth of ingesting a small run). Inside a
    /// group, `ingest`, `file_progress`, `set_status` and `runs` see the
    /// group's steps; `query`, `dataframe` and `clear` are refused. An
    /// error in any step, or `end_group(false)`, discards the whole group,
    /// so nothing is half stored (the record files stay: the next sync
    /// ingests them again).
    /// The default does nothing: every `ingest` is durable on its own.
    fn begin_group(&mut self) -> StoreResult<()> {
        Ok(())
    }

    /// Ends the group opened by [`Store::begin_group`]: makes its steps
    /// durable (`commit`) or discards them. Fails, discarding the group,
    /// when one of its steps failed. Does nothing without an open group.
    fn end_group(&mut self, commit: bool) -> StoreResult<()> {
        let _ = commit;
        Ok(())
    }

    /// Updates a run's status (and end time) without other changes.
    /// Returns `false` when the run is unknown.
    fn set_status(&mut self, projid: &str, tstamp: &str, status: RunStatus, ended: Option<&str>) -> StoreResult<bool>;

    /// All runs, ordered by `tstamp`.
    fn runs(&self) -> StoreResult<Vec<RunRow>>;

    /// Names of `log`/`arg` values, sorted.
    fn names(&self) -> StoreResult<Vec<NameInfo>>;

    /// Visits the values selected by `filter`, in any order.
    fn scan_values(&self, filter: ValueFilter<'_>, visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()>;

    /// Visits the loop contexts of the given runs, as spans, in any order.
    fn scan_loops(&self, runs: &[RunKey], visit: &mut dyn FnMut(RunKey, &LoopSpan)) -> StoreResult<()>;

    /// Checkpoints stored for a run, in file order.
    fn checkpoints(&self, run: RunKey) -> StoreResult<Vec<CheckpointMeta>>;

    /// Every stored divergence check ([`IngestBatch::checks`]), ordered by
    /// run and line.
    fn checks(&self) -> StoreResult<Vec<CheckRow>>;

    /// Optional capability: runs one read-only SQL query over the views
    /// (`runs`, `logs`, `loops`, `timings`, `outputs`, `checkpoints`);
    /// returns column names and rows. A backend with an SQL engine refuses
    /// anything that could write with [`StoreError::NotReadOnly`] and
    /// reports engine errors as [`StoreError::Query`]. The default, for
    /// backends without one, is [`StoreError::sql_unsupported`].
    fn query(&self, sql: &str) -> StoreResult<Table> {
        let _ = sql;
        Err(StoreError::sql_unsupported(self.backend()))
    }

    /// Optional capability: [`Store::query`] stopped after `limit` (`None`:
    /// no limit) with [`StoreError::TimedOut`], the store usable again
    /// afterwards. The default runs [`Store::query`] with no limit (a
    /// backend without an SQL engine answers at once); the built-in engines
    /// interrupt the query.
    fn query_within(&self, sql: &str, limit: Option<std::time::Duration>) -> StoreResult<Table> {
        let _ = limit;
        self.query(sql)
    }

    /// Optional capability (tensor statistics, the `tensors` view): the
    /// forward checkpoints of runs no longer recording whose tensors were
    /// not ingested yet ([`Store::ingest_tensors`]), by run and line, at
    /// most `limit`. A store with the capability queues each forward
    /// checkpoint it ingests. The default: none (a store without the
    /// capability).
    fn tensor_queue(&self, limit: usize) -> StoreResult<Vec<QueuedCheckpoint>> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Optional capability: queues every forward checkpoint again (so that
    /// each is looked at anew). The default does nothing.
    fn requeue_tensors(&mut self) -> StoreResult<()> {
        Ok(())
    }

    /// Optional capability: stores the tensors of the checkpoint at `line`
    /// of run `run`'s forward record file (replacing any stored for it) and
    /// takes it off the queue; none: looked at, nothing to show. The
    /// default answers [`StoreError::Unsupported`].
    fn ingest_tensors(&mut self, run: RunKey, line: u64, tensors: &[TensorRow]) -> StoreResult<()> {
        let _ = (run, line, tensors);
        Err(tensors_unsupported(self.backend()))
    }

    /// Optional capability: visits the stored tensors that `filter`
    /// selects, in any order. The default answers
    /// [`StoreError::Unsupported`].
    fn scan_tensors(&self, filter: TensorFilter<'_>, visit: &mut dyn FnMut(TensorVisit<'_>)) -> StoreResult<()> {
        let _ = (filter, visit);
        Err(tensors_unsupported(self.backend()))
    }

    /// Optional capability: visits the captured output lines
    /// ([`crate::RecordKind::Output`] records) `filter` selects, in any
    /// order (callers sort by run and line). The default answers
    /// [`StoreError::Unsupported`]; both built-in engines have it.
    fn scan_outputs(&self, filter: OutputFilter<'_>, visit: &mut dyn FnMut(OutputRow<'_>)) -> StoreResult<()> {
        let _ = (filter, visit);
        Err(StoreError::Unsupported {
            backend: self.backend(),
            what: "reading captured output",
            instead: "use a store that keeps it (`store = \"sqlite\"` or `\"duckdb\"` in .flor/config.toml)",
        })
    }

    /// Deletes every run and record (the schema stays).
    fn clear(&mut self) -> StoreResult<()>;

    /// The pivot view: one row per run × loop position, one column per name.
    /// See [`crate::pivot`] for the exact semantics.
    fn dataframe(&self, names: &[&str]) -> StoreResult<Table> {
        self.dataframe_filtered(names, &crate::select::PivotFilter::default())
    }

    /// [`Store::dataframe`] over the runs and loop iterations `filter`
    /// selects (see [`crate::select`]): a backend applies it before the
    /// pivot, reading no records of runs outside `filter.runs`. The default
    /// is the shared pivot's.
    fn dataframe_filtered(&self, names: &[&str], filter: &crate::select::PivotFilter) -> StoreResult<Table> {
        crate::pivot::dataframe_filtered(self, names, filter)
    }

    /// Whether each of `names` has log or arg records (`names()` answers
    /// the same, but counts every record).
    fn has_names(&self, names: &[&str]) -> StoreResult<Vec<bool>> {
        let known = self.names()?;
        Ok(names.iter().map(|n| known.iter().any(|k| k.name == *n)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(ctx: u32, parent: Option<u32>, name: &str, iteration: u64) -> LoopCtx {
        LoopCtx { ctx, parent, name: name.into(), iteration, value: None }
    }

    #[test]
    fn tensor_names_parse_and_match() {
        let t = TensorName::parse("tensor:model.fc1.weight:l2").unwrap();
        assert_eq!((t.path, t.stat), ("model.fc1.weight", TensorStat::L2));
        assert_eq!(
            t.splits().collect::<Vec<_>>(),
            [("model", "fc1.weight"), ("model.fc1", "weight"), ("model.fc1.weight", "")]
        );
        assert!(t.matches("model", "fc1.weight") && t.matches("model.fc1", "weight"));
        assert!(!t.matches("model", "fc1") && !t.matches("mode", "l.fc1.weight") && !t.matches("model", "fc1xweight"));
        // An unnamed tensor (a `.npy` array) by its checkpoint's name.
        let u = TensorName::parse("tensor:opt:mean").unwrap();
        assert!(u.matches("opt", "") && !u.matches("opt", "x") && !t.matches("model", ""));
        assert_eq!((TensorName::path_of("opt", ""), TensorName::path_of("m", "w")), ("opt".into(), "m.w".into()));
        let d = TensorName::parse("tensor:opt.params/Dense_0/kernel:delta_l2").unwrap();
        assert_eq!((d.path, d.stat), ("opt.params/Dense_0/kernel", TensorStat::DeltaL2));
        for not in ["loss", "tensor:model.w", "tensor:model.w:median", "tensor::l2", "tensor:.w:l2", "tensor:m.:l2"] {
            assert_eq!(TensorName::parse(not), None, "{not}");
        }
        let row = TensorRow { l2: Some(2.0), nonfinite: Some(3), ..TensorRow::default() };
        assert_eq!(TensorStat::L2.of(&row), Some(Value::Float(2.0)));
        assert_eq!(TensorStat::Nonfinite.of(&row), Some(Value::Int(3)));
        assert_eq!(TensorStat::Mean.of(&row), None);
    }

    #[test]
    fn output_channels_match_exactly_or_by_prefix() {
        let keeps = |c: &str, name: &str| OutputFilter { runs: None, channel: Some(c) }.keeps_channel(name);
        assert!(OutputFilter::default().keeps_channel("anything"));
        assert!(keeps("io::stdout", "io::stdout") && !keeps("io::stdout", "io::stderr"));
        assert!(keeps("io::log", "io::log::error") && keeps("io::log::", "io::log::info"));
        assert!(keeps("io::log::error", "io::log::error") && !keeps("io::log::error", "io::log::warning"));
        assert!(!keeps("io::log", "io::logger") && !keeps("io::std", "io::stdout"));
        // Shorthands without `io::`.
        assert!(keeps("stdout", "io::stdout") && keeps("stdout", "stdout") && keeps("log", "io::log::debug"));
        assert!(!keeps("stdout", "io::stderr") && !keeps("io", "stdout"));
        let runs = [3];
        let f = OutputFilter { runs: Some(&runs), channel: None };
        assert!(f.keeps_run(3) && !f.keeps_run(4));
    }

    #[test]
    fn spans_compress_and_expand() {
        let mut loops = Vec::new();
        let mut ctx = 0;
        for e in 0..3 {
            let ectx = ctx;
            loops.push(l(ctx, None, "epoch", e));
            ctx += 1;
            for s in 0..4 {
                loops.push(l(ctx, Some(ectx), "step", s));
                ctx += 1;
            }
        }
        loops.push(LoopCtx { value: Some("x".into()), ..l(ctx, None, "eval", 0) });
        loops.push(LoopCtx { value: Some("y".into()), ..l(ctx + 1, None, "eval", 1) });
        let spans = LoopSpan::compress(&loops);
        assert_eq!(spans.len(), 3 * 2 + 2);
        assert_eq!(spans[1].count, 4);
        let back: Vec<LoopCtx> = spans.iter().flat_map(|s| s.expand().collect::<Vec<_>>()).collect();
        assert_eq!(back, loops);
    }
}
