//! The plugins shipped inside the `flor` binary: built from the workspace's
//! `plugins/` crates for `wasm32-unknown-unknown` by this crate's build
//! script and embedded as core modules (made components when loaded, then
//! cached compiled).

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
