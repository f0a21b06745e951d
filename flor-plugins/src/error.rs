//! Errors of the plugin host.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong loading or calling a plugin. Every variant names the
/// plugin (its name, or the file it came from) and, for calls, the export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The WebAssembly engine could not be set up.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// A plugin file could not be read, written or listed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a plugin: not WebAssembly, not a component or
    /// core module made with the plugin SDK, or missing an export.
    #[error("{origin}: not a flor plugin: {what}")]
    Invalid {
        /// Where the plugin came from (a path, or `builtin pytorch`).
        origin: String,
        /// What is wrong.
        what: String,
    },
    /// The plugin was built for another version of the plugin interface.
    #[error(
        "{origin}: built for plugin interface flor:plugin@{found}, but this flor speaks flor:plugin@{expected}; \
         rebuild the plugin against flor-plugin-sdk for {expected} (or use a flor that speaks {found})"
    )]
    Incompatible {
        /// Where the plugin came from.
        origin: String,
        /// The interface version the plugin targets.
        found: String,
        /// The interface version this host speaks.
        expected: &'static str,
    },
    /// The plugin imports something the sandbox does not grant.
    #[error(
        "{origin}: imports `{import}`, which flor does not grant: plugins get no filesystem, network, clock, \
         randomness or environment (build for wasm32-unknown-unknown with flor-plugin-sdk)"
    )]
    Forbidden {
        /// Where the plugin came from.
        origin: String,
        /// The import's name.
        import: String,
    },
    /// A call trapped (a panic, an abort, a bad memory access).
    #[error("plugin {plugin}: `{export}` failed: {what}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The export called.
        export: &'static str,
        /// What happened.
        what: String,
    },
    /// A call ran past its deadline and was stopped.
    #[error("plugin {plugin}: `{export}` ran past its deadline of {limit:?} and was stopped")]
    Deadline {
        /// The plugin's name.
        plugin: String,
        /// The export called.
        export: &'static str,
        /// The deadline.
        limit: Duration,
    },
    /// A call tried to use more memory than the cap.
    #[error("plugin {plugin}: `{export}` tried to use more than its memory cap of {} MiB and was stopped", limit >> 20)]
    Memory {
        /// The plugin's name.
        plugin: String,
        /// The export called.
        export: &'static str,
        /// The cap in bytes.
        limit: usize,
    },
    /// A call returned something its interface does not allow.
    #[error("plugin {plugin}: `{export}` answered something invalid: {what}")]
    Answer {
        /// The plugin's name.
        plugin: String,
        /// The export called.
        export: &'static str,
        /// What is wrong with the answer.
        what: String,
    },
    /// No plugin of this name is loaded.
    #[error("no plugin named `{0}` (see `flor plugins list`)")]
    NotFound(String),
}

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { what, path: path.into(), source }
    }
}
