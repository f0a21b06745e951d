//! The storage-backend trait: what every query database (SQLite, DuckDB, ...)
//! must provide. Backends implement a few primitives; the pivot
//! ([`Store::dataframe`]) has a shared default built on them, which a backend
//! may replace with its own plan as long as the answers are identical (the
//! conformance suite in `flor-store` checks that).
//!
//! The database is a cache: everything in it can be rebuilt from the run
//! record files stored in git.

use crate::record::{CheckpointMeta, LoopCtx, Record, RunMeta, RunStatus, Source};
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
    /// The database file is unreadable or from an incompatible version.
    #[error("the query database {path} cannot be used: {message}. Run `flor rebuild` to recreate it from the run records in git")]
    Unusable {
        /// Database path.
        path: String,
        /// What is wrong.
        message: String,
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

/// A query database. See the module docs.
///
/// Required: the primitives below. Provided: [`Store::dataframe`] (the pivot).
pub trait Store: Send {
    /// Short backend name (`sqlite`, `duckdb`).
    fn backend(&self) -> &'static str;

    /// Applies one ingestion step atomically (see [`IngestBatch`]).
    fn ingest(&mut self, batch: &IngestBatch<'_>) -> StoreResult<RunKey>;

    /// How far `file` has been ingested, `None` if never.
    fn file_progress(&self, file: &str) -> StoreResult<Option<FileProgress>>;

    /// Updates a run's status (and end time) without other changes.
    /// Returns `false` when the run is unknown.
    fn set_status(&mut self, projid: &str, tstamp: &str, status: RunStatus, ended: Option<&str>) -> StoreResult<bool>;

    /// All runs, ordered by `tstamp`.
    fn runs(&self) -> StoreResult<Vec<RunRow>>;

    /// Names of `log`/`arg` values, sorted.
    fn names(&self) -> StoreResult<Vec<NameInfo>>;

    /// Visits the values selected by `filter`, in any order.
    fn scan_values(&self, filter: ValueFilter<'_>, visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()>;

    /// Visits the loop contexts of the given runs, in any order.
    fn scan_loops(&self, runs: &[RunKey], visit: &mut dyn FnMut(RunKey, &LoopCtx)) -> StoreResult<()>;

    /// Checkpoints stored for a run, in file order.
    fn checkpoints(&self, run: RunKey) -> StoreResult<Vec<CheckpointMeta>>;

    /// Runs one read-only SQL query; returns column names and rows.
    fn query(&self, sql: &str) -> StoreResult<Table>;

    /// Deletes every run and record (the schema stays).
    fn clear(&mut self) -> StoreResult<()>;

    /// The pivot view: one row per run × loop position, one column per name.
    /// See [`crate::pivot`] for the exact semantics.
    fn dataframe(&self, names: &[&str]) -> StoreResult<Table> {
        crate::pivot::dataframe(self, names)
    }
}
