//! flor-store: the query database behind `flor dataframe` and `flor query`.
//!
//! The database is a *cache*: everything in it is rebuilt from the run record
//! files stored in git (`flor rebuild`). This crate provides
//!
//! * [`SqliteStore`], the SQLite implementation of [`flor_core::Store`],
//! * `DuckStore`, the DuckDB implementation (cargo feature `duckdb`; see
//!   "The DuckDB backend" below; with it, `write_parquet` writes a table
//!   through DuckDB, which the `flor` crate's own streamed Parquet writer
//!   has replaced),
//! * [`arrow`], query results as Arrow record batches (the exchange format
//!   of the Python front and of Parquet and Arrow IPC output),
//! * [`StoreKind`], the built-in backends by name, and [`StoreKind::open`],
//!   which opens a project's query database of a kind in its `.flor/`
//!   folder (a missing engine is [`Error::DuckdbNotBuilt`]), and
//! * `conformance` (cargo feature `conformance`), the test suite every
//!   backend must pass: it pins down ingestion, value round trips, the pivot,
//!   the SQL views and the read-only rule, independently of the engine.
//!
//! Each backend has its folder with its schema documented beside the code
//! (`src/sqlite/SCHEMA.md`, `src/duckdb/SCHEMA.md`; both below).
//!
#![doc = include_str!("sqlite/SCHEMA.md")]
#![doc = ""]
#![doc = include_str!("duckdb/SCHEMA.md")]
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

pub mod arrow;
mod bigvec;
mod checks;
mod filter;
mod kind;
mod limit;
mod pivot;
mod readonly;
mod rows;
mod spans;
mod tensors;

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

pub use filter::{filter_rows, filter_rows_within, MAX_PREDICATE_BYTES, MAX_PREDICATE_DEPTH};
pub use kind::{StoreKind, UnknownStoreKind};
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
    /// Something needs DuckDB (the `duckdb` store) and this build lacks the
    /// `duckdb` feature.
    #[error("{}", duckdb_not_built_message(what))]
    DuckdbNotBuilt {
        /// What was asked for (`the duckdb store`).
        what: &'static str,
    },
}

fn duckdb_not_built_message(what: &str) -> String {
    format!(
        "{what} needs DuckDB, and this flor was built without it: build flor with \
         `export DUCKDB_LIB_DIR=\"$(bash scripts/fetch_duckdb.sh)\"; cargo install --path . --features duckdb` \
         (see the README), or use the SQLite store (`store = \"sqlite\"` in .flor/config.toml, or `--store sqlite`)"
    )
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
            Error::DuckdbNotBuilt { .. } => {
                StoreError::Backend { backend: "duckdb", message: e.to_string(), source: None }
            }
        }
    }
}
