//! flor-core: the data model and recording semantics of flor, shared by every
//! front end (the Rust API, the Python binding, the CLI), and the small
//! extension traits the other crates implement.
//!
//! * [`value`], [`record`]: runs, loop contexts, typed values, record kinds,
//!   and the JSON-lines record file format; [`layout`]: the names of flor's
//!   refs and of the record files inside a run's commits.
//! * [`engine`], [`args`]: the recording engine (`arg`, `log`, loops,
//!   timings, checkpoints, durability) and `--kwargs` handling;
//!   [`durability`]: what survives a killed process or a power loss.
//! * [`pause`]: named points where a test can hold a process (to kill it
//!   there, or to release many at once).
//! * [`objects`]: the content-addressed checkpoint store (objects named by
//!   the BLAKE3 digest of their bytes; checkpoints a known format
//!   recognizes stored as deduplicated chunks plus a manifest).
//! * [`formats`], [`checkpoint`]: checkpoint formats at the byte level
//!   ([`CheckpointFormat`]: name, sniff, tensor layout, chunk boundaries;
//!   the native safetensors and `.npy`; [`FormatRegistry`]), which
//!   WebAssembly plugins will implement too, and the typed
//!   [`CheckpointSerializer`](checkpoint::CheckpointSerializer) that turns
//!   Rust state into bytes.
//! * [`store`], [`pivot`], [`table`], [`select`]: the storage-backend trait,
//!   the shared pivot ("dataframe") semantics, result tables, and selections
//!   of runs and loop iterations (`--where`, `--iter`).
//! * [`propagate`]: the language-propagator trait and its registry by file
//!   type.
//!
//! No heavy dependencies live here: git, SQLite, tree-sitter and wasmtime
//! belong to the leaf crates.

#![warn(missing_docs)]

pub mod args;
pub mod check;
pub mod checkpoint;
pub mod durability;
pub mod engine;
pub mod error;
pub mod formats;
pub mod kept;
pub mod layout;
pub mod objects;
pub mod pause;
pub mod pivot;
pub mod propagate;
pub mod record;
pub mod select;
pub mod stats;
pub mod store;
pub mod table;
pub mod tensors;
pub mod time;
pub mod value;

pub use durability::Durability;
pub use engine::{ContextMap, Recorder};
pub use error::{Error, Result};
pub use formats::{CheckpointFormat, FormatRegistry};
pub use objects::{ChunkRef, Manifest, ObjectId, ObjectStore, ObjectWriter};
pub use record::{CheckpointMeta, LoopCtx, Record, RecordKind, RunEnd, RunMeta, RunStatus, Source};
pub use select::{IterSelect, IterSpec, PivotFilter, Selection};
pub use store::{Store, StoreError, StoreResult};
pub use table::{Column, Nullable, Table};
pub use value::{Value, ValueType};
