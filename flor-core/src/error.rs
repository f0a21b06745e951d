//! Errors of the recording engine and the object store.

use std::path::PathBuf;

use crate::store::StoreError;

/// Errors raised by flor-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `read`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `--kwargs` value could not be converted to the type of its default.
    #[error("--kwargs {name}={value}: {reason}")]
    BadArg {
        /// Argument name.
        name: String,
        /// The text given on the command line.
        value: String,
        /// Why it does not fit.
        reason: String,
    },
    /// The `--kwargs` part of the command line is malformed.
    #[error("malformed command line: {0} (expected `--kwargs name=value [name=value ...]`)")]
    BadKwargs(String),
    /// A checkpoint could not be written or read.
    #[error("checkpoint `{name}`: {message}")]
    Checkpoint {
        /// Checkpointed object name.
        name: String,
        /// What failed.
        message: String,
    },
    /// An object-store blob does not match its digest.
    #[error("object {digest} in {} is corrupt (its content does not match its BLAKE3 digest); it cannot be used", path.display())]
    CorruptObject {
        /// Expected digest.
        digest: String,
        /// Blob file.
        path: PathBuf,
    },
    /// A stored object's length is not the one its record (or the manifest
    /// that names it as a chunk) says.
    #[error("object {digest} in {} is not the {expected} bytes its record says ({found}); it cannot be used", path.display())]
    WrongSize {
        /// The object's digest.
        digest: String,
        /// Its file.
        path: PathBuf,
        /// The length recorded.
        expected: u64,
        /// What was found.
        found: String,
    },
    /// An object-store blob is missing.
    #[error("object {digest} is not in the object store {}", dir.display())]
    MissingObject {
        /// Wanted digest.
        digest: String,
        /// Object-store folder.
        dir: PathBuf,
    },
    /// A chunked object's manifest is unreadable or disagrees with the
    /// object's name.
    #[error("object {digest} in {}: its chunk manifest is corrupt ({what}); it cannot be used", path.display())]
    CorruptManifest {
        /// The object's digest.
        digest: String,
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A chunk of a chunked object is missing.
    #[error("object {object} is stored in {count} chunks, but chunk {index} ({chunk}) is not in the object store {}", dir.display())]
    MissingChunk {
        /// The object's digest.
        object: String,
        /// The chunk's digest.
        chunk: String,
        /// The chunk's position in the object (from 0).
        index: usize,
        /// How many chunks the object has.
        count: usize,
        /// Object-store folder.
        dir: PathBuf,
    },
    /// A chunk of a chunked object does not match its digest or length.
    #[error("object {object}: chunk {index} ({chunk}, {}) is corrupt ({what}); the object cannot be used", path.display())]
    CorruptChunk {
        /// The object's digest.
        object: String,
        /// The chunk's digest.
        chunk: String,
        /// The chunk's position in the object (from 0).
        index: usize,
        /// The chunk's file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A digest string is not 64 hex characters.
    #[error("{0:?} is not a BLAKE3 digest (64 hex characters)")]
    BadDigest(String),
    /// A name longer than record files allow (see
    /// [`crate::record::MAX_NAME_BYTES`]).
    #[error("{what} of {len} bytes is longer than record files allow ({max} bytes)")]
    NameTooLong {
        /// What kind of name (`a loop name`, `an argument name`).
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Loops or iterations were closed in the wrong order.
    #[error("loop misuse: {0}")]
    LoopMisuse(String),
    /// The run was already finished.
    #[error("the run {0} has already finished; start a new run to record more")]
    Finished(String),
    /// A storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result alias for flor-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }
}
