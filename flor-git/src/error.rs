//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing flor's git objects
/// and refs.
///
/// Each message names what failed and where, and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The folder is not inside any git repository.
    #[error(
        "`{}` is not inside a git repository; run `git init` there first \
         (flor keeps each run's code snapshot in git)",
        path.display()
    )]
    NotARepository {
        /// The folder the search started from.
        path: PathBuf,
    },

    /// The repository has no working tree (it is bare).
    #[error(
        "the git repository at `{}` is bare (it has no working tree); run flor from a \
         clone with a checked-out working tree",
        path.display()
    )]
    BareRepository {
        /// The repository's git directory.
        path: PathBuf,
    },

    /// An environment variable flor reads holds an unusable value.
    #[error("environment variable {var}={value:?} is not a whole number; set it to e.g. `100`, or unset it")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value (lossily decoded).
        value: String,
    },

    /// A filesystem operation failed.
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        /// What flor was doing, e.g. "create folder".
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A reference name flor was asked to write is not acceptable.
    #[error("`{refname}` cannot be used as a flor ref: {reason}")]
    InvalidRefName {
        /// The rejected name.
        refname: String,
        /// Why it was rejected and what to use instead.
        reason: String,
    },

    /// The reference to create already exists.
    #[error(
        "ref `{refname}` already exists in `{}` (it points to {target}); use a fresh run id, \
         or delete the old ref with `git update-ref -d {refname}`",
        root.display()
    )]
    RefExists {
        /// The reference name.
        refname: String,
        /// The commit it currently points to.
        target: String,
        /// The repository's working-tree root.
        root: PathBuf,
    },

    /// The reference to update or read does not exist.
    #[error(
        "ref `{refname}` does not exist in `{}`; list flor's refs with \
         `git for-each-ref refs/flor/` to find the right one",
        root.display()
    )]
    RefNotFound {
        /// The reference name.
        refname: String,
        /// The repository's working-tree root.
        root: PathBuf,
    },

    /// The reference moved between reading its tip and updating it.
    #[error(
        "ref `{refname}` moved while flor was updating it (expected {expected}, found {}); \
         another process is writing to the same ref: retry, or give each process its own \
         run id",
        found.as_deref().unwrap_or("no ref")
    )]
    RefMoved {
        /// The reference name.
        refname: String,
        /// The tip flor expected.
        expected: String,
        /// The tip actually found (`None` if the ref was deleted).
        found: Option<String>,
    },

    /// Another writer held the ref's lock file for longer than flor waits.
    #[error(
        "ref `{refname}` in `{}` stayed locked by `{}`: another git or flor process is \
         updating it; retry when it is done, or, if no such process is running, the lock \
         file was left by a crash: delete it",
        root.display(),
        lock.display()
    )]
    RefLocked {
        /// The reference name.
        refname: String,
        /// The lock file git keeps while the ref is being written.
        lock: PathBuf,
        /// The repository's working-tree root.
        root: PathBuf,
    },

    /// A revision (sha or ref name) does not name a commit.
    #[error(
        "`{rev}` does not name a commit in `{}` ({source}); pass a commit sha or a ref \
         name such as `refs/flor/runs/<run id>`",
        root.display()
    )]
    RevNotFound {
        /// The revision as given.
        rev: String,
        /// The repository's working-tree root.
        root: PathBuf,
        /// The underlying error.
        #[source]
        source: git2::Error,
    },

    /// A path does not exist in the tree of a commit.
    #[error(
        "`{path}` does not exist in commit `{rev}`; check the path (relative to the \
         repository root, with `/` separators) with `git ls-tree -r {rev}`"
    )]
    PathNotFound {
        /// The revision the path was looked up in.
        rev: String,
        /// The path as given.
        path: String,
    },

    /// A path names a folder (or a submodule) where a file was expected.
    #[error(
        "`{path}` in commit `{rev}` is not a file; list what it holds with \
         `git ls-tree {rev} {path}/`"
    )]
    NotAFile {
        /// The revision the path was looked up in.
        rev: String,
        /// The path as given.
        path: String,
    },

    /// A path names a file where a folder was expected.
    #[error("`{path}` in commit `{rev}` is a file, not a folder; pass the folder that holds it")]
    NotADirectory {
        /// The revision the path was looked up in.
        rev: String,
        /// The path as given.
        path: String,
    },

    /// Folders nested deeper than flor reads ([`crate::MAX_TREE_DEPTH`]).
    #[error(
        "`{path}` in commit `{rev}` nests folders more than {max} deep; flor does not read so deep \
         (the commit was not made by flor)"
    )]
    TooDeep {
        /// The revision read.
        rev: String,
        /// The folder where the limit was reached.
        path: String,
        /// The limit.
        max: usize,
    },

    /// A path to write into a tree is malformed or clashes with the tree.
    #[error("cannot use `{path}` as a path inside a git tree: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// A string that should be a full commit sha is not one.
    #[error("`{value}` is not a full commit sha (40 hex digits); pass the sha as flor returned it")]
    InvalidSha {
        /// The string as given.
        value: String,
    },

    /// A tree holds an entry that cannot be written to disk safely.
    #[error(
        "commit `{rev}` holds an entry named {name:?}, which cannot be written to disk safely; \
         the commit was not made by flor or the repository is damaged (check it with \
         `git fsck`)"
    )]
    UnsafeTreeEntry {
        /// The revision being materialized.
        rev: String,
        /// The offending entry name (lossily decoded).
        name: String,
    },

    /// The folder to materialize into is not empty.
    #[error(
        "`{}` is not empty; flor only exports a snapshot into an empty or new folder, \
         so pass a fresh path",
        target.display()
    )]
    TargetNotEmpty {
        /// The folder.
        target: PathBuf,
    },

    /// The repository's index holds unresolved merge conflicts.
    #[error(
        "the index of `{}` holds unresolved merge conflicts ({source}); finish or abort the \
         merge (`git merge --abort`, or resolve and `git add`) before recording a run",
        root.display()
    )]
    Conflicts {
        /// The repository's working-tree root.
        root: PathBuf,
        /// The underlying error.
        #[source]
        source: git2::Error,
    },

    /// A git operation failed; `context` says which and where.
    #[error("{context}: {source}")]
    Git {
        /// What flor was doing, and in which repository.
        context: String,
        /// The underlying error.
        #[source]
        source: git2::Error,
    },

    /// A git operation failed without further context.
    #[error("git error: {0}")]
    Git2(#[from] git2::Error),
}

/// Shorthand for results whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a `git2` result.
pub(crate) trait GitContext<T> {
    /// Wraps an error in [`Error::Git`] with the message `f()` builds.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> GitContext<T> for std::result::Result<T, git2::Error> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| Error::Git { context: f(), source })
    }
}

/// Adds a path and an action to an I/O result.
pub(crate) trait IoContext<T> {
    /// Wraps an error in [`Error::Io`].
    fn io(self, action: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io { action, path: path.to_path_buf(), source })
    }
}
