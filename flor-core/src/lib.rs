//! flor-core: the data model and recording semantics of flor, shared by every
//! front end (the Rust API, the Python binding, the CLI), and the small
//! extension traits the other crates implement.
//!
//! * [`value`], [`record`]: runs, loop contexts, typed values, record kinds,
//!   and the JSON-lines record file format.
//! * [`engine`], [`args`]: the recording engine (`arg`, `log`, loops,
//!   timings, checkpoints, durability) and `--kwargs` handling.
//! * [`objects`], [`checkpoint`]: the content-addressed checkpoint store and
//!   the checkpoint-serializer trait.
//! * [`store`], [`pivot`], [`table`]: the storage-backend trait, the shared
//!   pivot ("dataframe") semantics, and result tables.
//! * [`propagate`], [`plugin`]: the language-propagator trait (with its
//!   registry by file type) and the framework-plugin trait.
//!
//! No heavy dependencies live here: git, SQLite, tree-sitter and wasmtime
//! belong to the leaf crates.

#![warn(missing_docs)]

pub mod args;
pub mod checkpoint;
pub mod engine;
pub mod error;
pub mod objects;
pub mod pivot;
pub mod plugin;
pub mod propagate;
pub mod record;
pub mod store;
pub mod table;
pub mod time;
pub mod value;

pub use engine::{ContextMap, Recorder};
pub use error::{Error, Result};
pub use objects::{ObjectId, ObjectStore, ObjectWriter};
pub use record::{CheckpointMeta, LoopCtx, Record, RecordKind, RunEnd, RunMeta, RunStatus, Source};
pub use store::{Store, StoreError, StoreResult};
pub use table::{Column, Nullable, Table};
pub use value::{Value, ValueType};
