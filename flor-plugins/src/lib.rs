//! flor-plugins: the WebAssembly host for framework plugins. Not implemented
//! yet (its own issue). WASM plugins will implement
//! [`CheckpointFormat`]: the host wraps each plugin in that trait, serving
//! its reads of a checkpoint's bytes ([`ByteSource`]) as a host import, and
//! registers it in a [`FormatRegistry`] so the object store chunks and
//! deduplicates the plugin's checkpoints like the native formats'.

pub use flor_core::formats::{
    ByteSource, CheckpointFormat, CheckpointFormatExt, Dtype, FormatError, FormatRegistry, Layout, TensorInfo,
};
