//! The crate's error type: what stops a replay as a whole. A run that cannot
//! be replayed is not an error: the plan lists it as skipped, or the summary
//! as failed, with the reason, and the other runs proceed.

use std::path::PathBuf;

use flor_core::propagate::PropagateError;

/// Why a replay (its plan, its execution, or one replay worker) cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request names no value to replay.
    #[error("no names to apply (--apply NAME[,NAME...])")]
    NoNames,

    /// No recorded script's working-tree version logs any of the names.
    #[error(
        "no recorded script{} has a flor.log({}, ...) statement in the working tree{}",
        script.as_deref().map(|s| format!(" named {s}")).unwrap_or_default(),
        names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(" or "),
        if unreadable.is_empty() { String::new() } else { format!(" (not parsed: {})", unreadable.join("; ")) }
    )]
    NoStatements {
        /// The script asked for (`--script`), if any.
        script: Option<String>,
        /// The names asked for.
        names: Vec<String>,
        /// Scripts that could not be parsed, with the reason.
        unreadable: Vec<String>,
    },

    /// One of the names has no statement in any script.
    #[error("no flor.log(\"{name}\", ...) statement in the working tree's scripts")]
    NameNotFound {
        /// The name.
        name: String,
    },

    /// `--apply @LINE` names a line with no log statement.
    #[error(
        "--apply @{line}: line {line} of {} is not a flor.log statement (its log statements are at {})",
        if scripts.is_empty() { "the recorded scripts".to_owned() } else { scripts.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ") },
        if scripts.iter().all(|(_, l)| l.is_empty()) { "no line".to_owned() } else {
            scripts.iter().map(|(s, l)| format!("{s}: lines {}", l.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("; ")
        }
    )]
    NoStatementAtLine {
        /// The line asked for.
        line: usize,
        /// The scripts looked in, with the lines of their log statements.
        scripts: Vec<(String, Vec<usize>)>,
    },

    /// `--apply @LINE` names log statements in several scripts.
    #[error("--apply @{line} is a log statement in several scripts ({}): name one with --script", found.iter().map(|(s, n)| format!("{s} logs \"{n}\"")).collect::<Vec<_>>().join(", "))]
    AmbiguousLine {
        /// The line asked for.
        line: usize,
        /// The scripts and the names logged at that line.
        found: Vec<(String, String)>,
    },

    /// `--apply @X` where X is not a line number.
    #[error("--apply {given}: expected a log statement's name or @LINE with a line number, such as @42")]
    BadLine {
        /// What was given.
        given: String,
    },

    /// `--iter` names a loop none of the replayed runs has.
    #[error("--iter {}: no replayed run has a loop named {} (their loops: {})", loops.join(", "), loops.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(" or "), if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownLoops {
        /// The loops asked for that no run has.
        loops: Vec<String>,
        /// The loops the runs have.
        known: Vec<String>,
    },

    /// The script named explicitly does not parse in the working tree.
    #[error("{script} in the working tree: {source}")]
    Unparsable {
        /// Path relative to the repository root.
        script: String,
        /// What the propagator found.
        #[source]
        source: PropagateError,
    },

    /// A segment spec file cannot be read.
    #[error("{} is not a replay segment spec: {message}", path.display())]
    BadSpec {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A segment spec of a protocol version this flor does not speak.
    #[error(
        "{} is a replay segment spec of version {found}; this flor reads version {expected}: \
         the flor that planned the replay and the one running the script differ, install one \
         version of flor for both",
        path.display()
    )]
    SpecVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The version this crate reads and writes.
        expected: u32,
    },

    /// A replay worker was started without what its executor must provide.
    #[error("replay worker: environment variable {var} is not set (the executor that started this process sets it)")]
    MissingBinding {
        /// The variable.
        var: &'static str,
    },

    /// A replay worker's command line asks for other hyper-parameters than
    /// the run recorded.
    #[error(
        "the command line's --kwargs differ from the ones run {tstamp} recorded ({recorded}); \
         a replay reproduces the run and refuses overrides"
    )]
    KwargsDiffer {
        /// The run.
        tstamp: String,
        /// Its recorded command line.
        recorded: String,
    },

    /// Other processes kept moving a run's ref while this replay attached
    /// its values.
    #[error(
        "could not attach the replayed values of run {run_id}: other processes moved `{refname}` \
         {attempts} times while flor was attaching; run `flor replay` again (finished segments are kept)"
    )]
    AttachContended {
        /// The run.
        run_id: String,
        /// Its ref.
        refname: String,
        /// Attempts made.
        attempts: usize,
    },

    /// The settings ask for the overlay view and this machine cannot mount
    /// it.
    #[error(
        "replay cannot give the old scripts a private overlay view of the project: {why}. Nothing was run. \
         To copy the files git does not track into the replay's folder instead, set `isolation = \"auto\"` \
         (or \"copy\") under [replay] in .flor/config.toml"
    )]
    OverlayUnavailable {
        /// What the kernel refused.
        why: String,
    },

    /// Copies of the files the old scripts see would exceed the limit (and
    /// the overlay is unavailable or not wanted).
    #[error(
        "replay refused before running anything: {}copying the {bytes} of files git does not track \
         (data sets, outputs) into each replayed run's private folder exceeds the copy limit of {limit}. \
         To proceed, raise the limit (`copy_limit_mb = ...` under [replay] in .flor/config.toml; each run \
         gets its own copy), or replay where the kernel allows overlay mounts in user namespaces (Linux 5.11 \
         or later, no mount points inside the project)",
        overlay_refused.as_ref().map(|w| format!("overlay mounts are unavailable here ({w}), and ")).unwrap_or_default()
    )]
    CopyTooLarge {
        /// What copies would take, for people.
        bytes: String,
        /// The limit, for people.
        limit: String,
        /// Why not the overlay, when the settings let replay choose.
        overlay_refused: Option<String>,
    },

    /// The executor failed as a whole (not one segment).
    #[error("replay executor `{executor}`: {message}")]
    Executor {
        /// The executor's name.
        executor: &'static str,
        /// What failed.
        message: String,
    },

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

    /// Git (old versions, run refs, materializing code).
    #[error(transparent)]
    Git(#[from] flor_git::Error),

    /// The recording engine or object store.
    #[error(transparent)]
    Core(#[from] flor_core::Error),

    /// A run's records cannot be planned.
    #[error(transparent)]
    Plan(#[from] crate::segments::PlanError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }
}
