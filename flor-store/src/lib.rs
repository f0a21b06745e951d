//! flor-store: the query database behind `flor dataframe` and `flor query`.
//!
//! The database is a *cache*: everything in it is rebuilt from the run record
//! files stored in git (`flor rebuild`). This crate provides
//!
//! * [`SqliteStore`], the SQLite implementation of [`flor_core::Store`],
//! * `DuckStore`, the DuckDB implementation (cargo feature `duckdb`; see
//!   "The DuckDB backend" below), and `write_parquet`, and
//! * [`conformance`] (cargo feature `conformance`), the test suite every
//!   backend must pass: it pins down ingestion, value round trips, the pivot,
//!   the SQL views and the read-only rule, independently of the engine.
//!
//! # The SQLite backend
//!
//! One file (by convention `.flor/flor.db`), opened in WAL mode with
//! `synchronous=NORMAL` and a 10 s busy timeout. Readers never block writers
//! and vice versa; writers take turns: each [`Store::ingest`] is one
//! `BEGIN IMMEDIATE` transaction, so two training scripts finishing at the
//! same moment simply queue for the write lock (keep each ingestion span well
//! under the busy timeout; a span of a million records takes a few seconds).
//! A crash in the middle of an ingestion leaves nothing of it behind, and the
//! stored file progress always matches the stored rows.
//!
//! The schema is versioned with `PRAGMA user_version` ([`SCHEMA_VERSION`],
//! now 2: loop contexts stored as spans; version 1 stored one row per
//! context). A file written by a newer flor, a file that is not a SQLite
//! database, or a database with an older (such as version 1) or foreign
//! layout is reported as [`StoreError::Unusable`] and left untouched;
//! `flor rebuild` recreates it.
//!
//! ## Internal tables
//!
//! Internal tables are prefixed `flor_` and may change between schema
//! versions; query the views below instead.
//!
//! | table | key | columns |
//! |-------|-----|---------|
//! | `flor_runs` | `run` (integer), unique `(projid, tstamp)`, index on `tstamp` | `projid`, `tstamp`, `filename`, `argv` (JSON array), `interpreter`, `host`, `pid`, `commit_sha`, `status`, `ended`, `nrecords` (value records stored, all kinds) |
//! | `flor_names` | `id`, unique `name` | interned value names *and* loop names |
//! | `flor_loops` | `(run, first_ctx)`, `WITHOUT ROWID` | a span of iterations ([`flor_core::store::LoopSpan`]): contexts `first_ctx .. first_ctx + count` are iterations `first_iteration ..` of loop `loop_id` (→ `flor_names`) inside `parent` (ctx or NULL); `value` (the iterated value's text, only on spans of one iteration) |
//! | `flor_records` | `(name_id, run, source, line)`, `WITHOUT ROWID` | `ctx` (NULL at run level), `kind` ([`flor_core::RecordKind::code`]: 0 log, 1 arg, 2 timing, 3 output), `vtype` ([`flor_core::ValueType::code`]), `value` |
//! | `flor_checkpoints` | `(run, source, line)`, `WITHOUT ROWID` | `ctx`, `name`, `digest`, `bytes`, `format` |
//! | `flor_files` | `file` | `run`, `offset` (bytes ingested), `lines` |
//! | `flor_seq` | `i` (integer) | `0, 1, 2, …` up to at least the largest context id stored (grown by ingestion); expands spans in the `loops` view |
//! | `flor_meta` | `key` | `value`; `max_span`: at least the longest span's `count` (bounds the `loops` view's search for a context's span) |
//!
//! Loop spans: ingestion groups each batch's iterations with
//! [`LoopSpan::compress`](flor_core::store::LoopSpan::compress), cuts spans
//! longer than 4,096 iterations, merges a span that continues a stored one
//! (a record file ingested piece by piece stores the same spans as at once),
//! and replaces stored iterations of the same contexts, trimming stored spans
//! that overlap (re-ingesting a batch, or replays whose iterations overlap
//! the forward file at other boundaries, never list a context twice). A run
//! of 10 epochs × 100 steps is 20 spans instead of 1,010 rows.
//!
//! `source` is [`flor_core::Source::code`]: 0 for forward records and 1 for
//! replay records. Values are
//! stored natively: `INTEGER` for ints and bools (0/1), `REAL` for floats,
//! `TEXT` for text and JSON. SQLite cannot store a NaN (it becomes `NULL`),
//! so a NaN is stored as `NULL` with `vtype` float and read back as NaN.
//! `flor_records` is clustered by name so that the pivot's "every value named
//! `loss`" is one sequential range scan; a small partial index
//! (`flor_records_run_level`) covers the run-level rows.
//!
//! ## Views (for `flor query`)
//!
//! FlorDB-shaped views over the tables above. Every view starts with the
//! run's `projid`, `tstamp` and `filename`; `ctx_id` is the loop context
//! (NULL at run level).
//!
//! | view | columns | rows |
//! |------|---------|------|
//! | `runs` | `projid`, `tstamp`, `filename`, `status` (`running`/`finished`/`failed`), `commit_sha`, `host`, `argv` (JSON array text), `ended` | one per run |
//! | `logs` | `projid`, `tstamp`, `filename`, `ctx_id`, `value_name`, `value`, `value_type` (`int`, `float`, `bool`, `text`, `json`), `kind` (`log`/`arg`), `source` (`forward`/`replay`) | every `log` and `arg` record; `value` is typed (bools are 0/1, a NaN is `NULL`) |
//! | `loops` | `projid`, `tstamp`, `filename`, `ctx_id`, `parent_ctx_id`, `loop_name`, `loop_iteration` (from 0), `loop_value` | one per loop iteration (each context once), expanded from the spans |
//! | `timings` | `projid`, `tstamp`, `filename`, `ctx_id`, `name` (`setup`, `iteration`, `loop:NAME`, `teardown`), `seconds` | wall-clock timings |
//! | `outputs` | `projid`, `tstamp`, `filename`, `ctx_id`, `name` (`stdout`/`stderr`), `value` | captured output |
//! | `checkpoints` | `projid`, `tstamp`, `filename`, `ctx_id`, `name`, `digest`, `bytes`, `format` | stored checkpoints |
//!
//! The `loops` view joins each span with the `flor_seq` rows of its contexts,
//! so `ctx_id` is an indexed column: filters on `tstamp` read only that run's
//! spans, and joins on `(tstamp, ctx_id)` (`logs` with `loops`, `loops` with
//! its parents) look each context up directly.
//!
//! [`Store::query`] accepts exactly one read-only statement (`SELECT`,
//! `WITH`, `VALUES`, `EXPLAIN`, and informational pragmas such as
//! `PRAGMA table_info(logs)`); anything that could modify the database —
//! including `ATTACH` and pragmas that change settings — is refused with
//! [`StoreError::NotReadOnly`] before it takes effect. Result columns come
//! back in the most compact [`flor_core::table::ColumnData`] their cells
//! allow: integers and floats as typed columns, text dictionary-encoded,
//! mixed columns as general values; the cells are SQLite's own (blobs as
//! upper-case hex text).
//!
//! # The DuckDB backend (feature `duckdb`)
//!
//! `DuckStore` keeps the same data in one DuckDB file (by convention
//! `.flor/flor.duckdb`) and answers every `dataframe` and query exactly as
//! [`SqliteStore`] does: the same views with the same columns, the same
//! pivot, the same spans from `scan_loops`, NULLs ordered as in SQLite
//! (first ascending, last descending). What differs:
//!
//! * Tables are columnar and unindexed: `flor_records` holds a value in the
//!   typed column of its type (`ival` for ints and bools, `fval`, `tval` for
//!   text and JSON); the `logs` view's `value` is a `UNION(i BIGINT, f
//!   DOUBLE, t VARCHAR)` (a NaN is NULL there, as in SQLite), read back as
//!   the member's value. The `loops` view expands spans with
//!   `unnest(range(first_ctx, first_ctx + count))`.
//! * Ingestion is one transaction per batch; records go through DuckDB's
//!   Appender, flushed and checked before the commit. Lines already stored
//!   (re-ingestion, rare) are deleted first, so a line is never stored twice.
//! * One process at a time may open the file (`DuckStore::open` waits up
//!   to 10 s for another to close it). Within a process, keep one store per
//!   file: its name cache assumes it is the only writer.
//! * Raw queries: DuckDB's SQL dialect. Refused before they run: the
//!   writing statements SQLite refuses, plus `COPY`, `SET`/`RESET`,
//!   `INSTALL`/`LOAD`, `ATTACH`, `CHECKPOINT`, `EXPORT`/`IMPORT`, `CALL`
//!   and pragmas other than `table_info`, `show_tables`, `version`, ...
//!   Queries cannot read or write files (`enable_external_access` is off),
//!   and each runs in a transaction that is rolled back afterwards. Engine
//!   errors keep DuckDB's message (`Parser Error: ...`, `Catalog Error:
//!   ...`) in [`StoreError::Query`] with backend `duckdb`.
//! * Internal tables (`flor_runs`, `flor_names`, `flor_loops`,
//!   `flor_records`, `flor_checkpoints`, `flor_files`, `flor_meta` with the
//!   schema version, now 1) may change between versions.
//!
//! `write_parquet` writes any result table to a Parquet file through a
//! private in-memory DuckDB, whatever the project's store.
//!
//! [`Store::ingest`]: flor_core::Store::ingest
//! [`Store::query`]: flor_core::Store::query
//! [`StoreError::Unusable`]: flor_core::StoreError::Unusable
//! [`StoreError::NotReadOnly`]: flor_core::StoreError::NotReadOnly

#![warn(missing_docs)]

use std::path::PathBuf;

use flor_core::StoreError;

/// Creates the folders above a database file that does not exist yet.
fn create_parent(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(feature = "duckdb")]
mod bigvec;
mod filter;
mod readonly;
mod rows;
mod spans;

#[cfg(feature = "duckdb")]
mod duckdb;
#[cfg(feature = "duckdb")]
pub use crate::duckdb::{write_parquet, DuckStore, DUCKDB_SCHEMA_VERSION};
/// The `duckdb` crate this backend is built with (its exact version matches
/// the linked DuckDB library), for callers that need DuckDB directly.
#[cfg(feature = "duckdb")]
pub use ::duckdb as duckdb_crate;
mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use filter::filter_rows;
pub use sqlite::{schema_version_of, SqliteStore, SCHEMA_VERSION, SPLIT_SCAN_MIN_RECORDS};

/// Errors of this crate outside the [`flor_core::Store`] methods (which
/// return [`StoreError`] directly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store error (open failures, unusable databases, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was attempted (`create directory`, ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for StoreError {
    /// Every error of this crate as a [`StoreError`] (I/O failures become
    /// [`StoreError::Backend`]).
    fn from(e: Error) -> StoreError {
        match e {
            Error::Store(s) => s,
            Error::Io { .. } => {
                StoreError::Backend { backend: "sqlite", message: e.to_string(), source: Some(Box::new(e)) }
            }
        }
    }
}
