//! flor: multiversion hindsight logging for machine-learning training.
//!
//! This crate is the SDK facade: [`Run`] records a training run (args,
//! logs inside named loops, checkpoints) and [`Project`] queries what was
//! recorded. The building blocks live in `flor-core` (data model, recording
//! engine, traits), `flor-store` (query databases), `flor-git` (snapshots
//! and run refs). The `flor` binary is the command line over [`Project`].

#![warn(missing_docs)]

pub mod checkpoints;
mod config;
mod error;
#[cfg(feature = "export")]
pub mod export;
pub mod extract;
pub mod ingest;
mod io;
pub mod lint;
#[cfg(feature = "plugins")]
pub mod plugins;
mod project;
pub mod replay;
mod run;

pub use checkpoints::{PackBudget, PackOptions, PackReport};
pub use config::{
    capture_config, CaptureConfig, Config, ExecutorKind, CONFIG_FILE, DEFAULT_KEEP_LOADS_MB, DEFAULT_QUERY_TIMEOUT,
    MAX_CAPTURE_LINE, MAX_CONFIG_BYTES,
};
pub use error::{Error, Result};
pub use flor_core::select::{IterSelect, IterSpec, PivotFilter, Selection};
pub use flor_core::{self as core, Durability, RunMeta, RunStatus, Table, Value};
pub use flor_store::StoreKind;
pub use ingest::{Problem, SyncReport};
#[cfg(feature = "export")]
pub use project::write_parquet;
pub use project::{NoDatabaseReason, Project, ProjectBuilder, DURABILITY_ENV, FLOR_DIR};
pub use run::{file_digest, KeptFile, Loop, Run, RunBuilder, RunSummary};

/// The README's code examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
