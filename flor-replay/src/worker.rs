//! The worker's side: how a replay process learns what to do and where.
//!
//! An executor starts the run's interpreter on the propagated script with
//! these environment variables; the front end (the Python `flordb` module,
//! or a Rust program through `flor::Run::start_replay`) reads them at its
//! first flor call:
//!
//! | variable | holds |
//! |----------|-------|
//! | [`SPEC_ENV`] (`FLOR_REPLAY`) | path of the [`SegmentSpec`](crate::SegmentSpec) (JSON) |
//! | [`OUTPUT_ENV`] (`FLOR_REPLAY_OUTPUT`) | path of the record file to write (must not exist) |
//! | [`OBJECTS_ENV`] (`FLOR_REPLAY_OBJECTS`) | folder of the checkpoint object store to restore from |
//! | [`PROGRESS_ENV`] (`FLOR_REPLAY_PROGRESS`) | optional: a file the front end rewrites with `done total` after each outer iteration |
//!
//! The spec is the same wherever the segment runs; the [`Binding`] is what
//! the executor made of it on the worker's host.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The path of the segment spec.
pub const SPEC_ENV: &str = "FLOR_REPLAY";
/// The record file the worker writes.
pub const OUTPUT_ENV: &str = "FLOR_REPLAY_OUTPUT";
/// The checkpoint object store the worker restores from.
pub const OBJECTS_ENV: &str = "FLOR_REPLAY_OBJECTS";
/// The progress file (optional).
pub const PROGRESS_ENV: &str = "FLOR_REPLAY_PROGRESS";

/// Where one worker reads and writes on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The segment spec file.
    pub spec: PathBuf,
    /// The record file to write.
    pub output: PathBuf,
    /// The checkpoint object store folder.
    pub objects: PathBuf,
    /// The progress file, if the executor wants progress.
    pub progress: Option<PathBuf>,
}

impl Binding {
    /// The binding the executor gave this process (its environment).
    pub fn from_env() -> Result<Binding> {
        let get = |var: &'static str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
        let need = |var: &'static str| get(var).ok_or(Error::MissingBinding { var });
        Ok(Binding {
            spec: need(SPEC_ENV)?,
            output: need(OUTPUT_ENV)?,
            objects: need(OBJECTS_ENV)?,
            progress: get(PROGRESS_ENV),
        })
    }

    /// Whether this process was started as a replay worker.
    pub fn is_worker() -> bool {
        std::env::var_os(SPEC_ENV).is_some_and(|v| !v.is_empty())
    }

    /// Sets the binding's variables on a worker command.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env(SPEC_ENV, &self.spec).env(OUTPUT_ENV, &self.output).env(OBJECTS_ENV, &self.objects);
        match &self.progress {
            Some(p) => cmd.env(PROGRESS_ENV, p),
            None => cmd.env_remove(PROGRESS_ENV),
        };
    }

    /// The spec path.
    pub fn spec(&self) -> &Path {
        &self.spec
    }
}
