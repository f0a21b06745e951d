//! The facade's error type.

use std::path::PathBuf;

use crate::project::NoDatabaseReason;

/// Errors of the `flor` SDK and command line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Recording engine or object store.
    #[error(transparent)]
    Core(#[from] flor_core::Error),
    /// A framework plugin (loading, sandboxed calls).
    #[cfg(feature = "plugins")]
    #[error(transparent)]
    Plugin(#[from] flor_plugins::Error),
    /// Git (repository discovery, snapshots, run refs).
    #[error(transparent)]
    Git(#[from] flor_git::Error),
    /// The query database: opening it (a kind this build lacks is
    /// [`flor_store::Error::DuckdbNotBuilt`]).
    #[error(transparent)]
    Store(#[from] flor_store::Error),
    /// The query database (backend-level).
    #[error(transparent)]
    Query(#[from] flor_core::StoreError),
    /// Writing a query result (CSV, JSON, Parquet, Arrow IPC) failed.
    #[cfg(feature = "export")]
    #[error(transparent)]
    Export(#[from] crate::export::Error),
    /// A file operation.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// flor's folder cannot be written (a read-only file system or mount,
    /// permissions): found when an operation there failed.
    #[error("{} is not writable ({source}): flor keeps its record files, checkpoints and query database there; make it writable and try again", path.display())]
    NotWritable {
        /// The folder (`.flor/` or one inside it).
        path: PathBuf,
        /// What the OS said when flor tried to write there.
        #[source]
        source: std::io::Error,
    },
    /// No run with this timestamp.
    #[error("no run with tstamp {tstamp} in project {projid} (see `flor runs`)")]
    UnknownRun {
        /// Project.
        projid: String,
        /// Timestamp asked for.
        tstamp: String,
    },
    /// Names that no run logged.
    #[error("{}", unknown_names_message(names, known))]
    UnknownNames {
        /// The unknown names.
        names: Vec<String>,
        /// Names that do exist.
        known: Vec<String>,
    },
    /// Loops an iteration selection names that no run has.
    #[error("no run has a loop named {}; loops: {}", names.join(", "), if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownLoops {
        /// The unknown loop names.
        names: Vec<String>,
        /// Loop names that do exist.
        known: Vec<String>,
    },
    /// `flor replay --override KEY=VALUE` for a key replay may not override.
    #[error("--override {key}=...: {reason}")]
    OverrideRefused {
        /// The key.
        key: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A malformed iteration selection (`--iter LOOP=SPEC`).
    #[error(transparent)]
    BadSelection(#[from] flor_core::select::BadSelection),
    /// A record file that cannot be ingested at all (no header).
    #[error("record file {file}: {message}")]
    BadRecordFile {
        /// The file (or git path).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A replay that cannot go on (what and why in the message).
    #[error("replay: {0}")]
    Replay(#[from] flor_replay::Error),
    /// A script the source checks cannot read (it does not parse).
    #[error("cannot check {}: {source}", path.display())]
    Lint {
        /// The script.
        path: PathBuf,
        /// Why.
        #[source]
        source: flor_core::propagate::PropagateError,
    },
    /// A bad setting in `.flor/config.toml` (or an override).
    #[error("{}{}: {key}{}{message}", path.display(), if *line > 0 { format!(", line {line}") } else { String::new() }, if key.is_empty() { "" } else { ": " })]
    Config {
        /// The config file.
        path: PathBuf,
        /// Its line (1-based; 0 when not from a line).
        line: usize,
        /// The key concerned (empty when the line has none).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The project holds no query database: opened for recording, or its
    /// DuckDB database released while replay workers run.
    #[error("{}", no_database_message(*reason))]
    NoDatabase {
        /// Why there is none.
        reason: NoDatabaseReason,
    },
    /// A digest (or digest prefix) that names no object, or several.
    #[error("object {prefix}: {why}")]
    UnknownObject {
        /// The digest or prefix given.
        prefix: String,
        /// Why it names none.
        why: String,
    },
    /// A checkpoint that is not there.
    #[error("run {tstamp} has no checkpoint named `{name}`{}", if available.is_empty() { String::new() } else { format!(" (it has: {})", available.join(", ")) })]
    NoCheckpoint {
        /// Run.
        tstamp: String,
        /// Name asked for.
        name: String,
        /// Names it has.
        available: Vec<String>,
    },
}

fn no_database_message(reason: NoDatabaseReason) -> String {
    match reason {
        NoDatabaseReason::Released => "this project's query database is released while replay workers use it \
             (`Project::release_store`): call `Project::reacquire_store` first"
            .into(),
        NoDatabaseReason::Recording => "this project was opened without its query database (for recording: \
              `Project::open_for_recording`, `ProjectBuilder::without_database`); open it with `Project::open` \
              or `Project::builder(..).open()` to query it"
            .into(),
    }
}

fn unknown_names_message(names: &[String], known: &[String]) -> String {
    let mut s = format!("no run logged {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
    if known.is_empty() {
        s.push_str(" (no values are recorded yet: run a training script first)");
    } else {
        s.push_str(&format!("; known names: {}", known.join(", ")));
    }
    s
}

/// Result alias for the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }
}
