//! flor's JAX plugin: JAX, flax and NumPy checkpoints laid out tensor by
//! tensor, and the JAX idioms that make a hindsight replay wrong.
//!
//! Compiled to `wasm32-unknown-unknown`, it is a component exporting the
//! `flor:plugin@0.1.0` world (`flor-plugins/wit/plugin.wit`); natively the
//! same logic is a plain library, tested with `cargo test -p
//! flor-plugin-jax` against files real flax, optax, NumPy and flordb wrote
//! (`tests/fixtures/jax/`, made by its `generate.py`).
//!
//! # Formats
//!
//! | format | what | tensors |
//! |---|---|---|
//! | `flor.pytree` | JAX/flax state as flor's Python front stores it (below) | every leaf, named by its pytree path |
//! | `flax.msgpack` | `flax.serialization.to_bytes` ([`flax`]) | ndarray and numpy-scalar extensions, named by their map keys |
//! | `numpy.npz` | `np.savez` archives ([`npz`]) | STORED `.npy` entries; DEFLATED ones are metadata |
//! | `numpy.npy` | one NumPy array ([`npy`]) | the array (unnamed) |
//!
//! A tensor's dtype is flor's name (`f32`, `bf16`, ...; `flor_plugin_sdk::dtype::KNOWN`)
//! when its elements are one of those types, little-endian; anything else
//! (a big-endian `>f4`, `int4`, numpy's `<V2` for bfloat16) keeps the
//! format's own spelling and gets no statistics. Every byte that is not a
//! tensor's element is reported as metadata.
//!
//! # The `flor.pytree` format (version 1)
//!
//! Written by `flordb` (`flor-python/python/flordb/_pytree.py`) for an
//! object under `flor.checkpointing` when jax is imported and the object is
//! a pytree whose leaves are arrays (`jax.Array`, numpy) or Python scalars,
//! at least one an array. Every integer is little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | magic `FLORTREE` |
//! | 8..16 | `u64` H: the header's length |
//! | 16..16+H | the header: UTF-8 JSON, padded with spaces so 16+H is a multiple of 64 |
//! | structure | the pytree's skeleton, pickled (its range in the header) |
//! | leaves | each leaf's bytes at a multiple of 64, zero padding between; the object ends with the last leaf |
//!
//! ```json
//! {"format": "flor.pytree", "version": 1,
//!  "structure": {"offset": 1728, "length": 269, "encoding": "pickle"},
//!  "leaves": [{"path": "params/Dense_0/kernel", "kind": "jax", "dtype": "f32", "numpy": "<f4",
//!              "shape": [4, 8], "offset": 2048, "length": 128}, ...]}
//! ```
//!
//! Per leaf: `path` (pytree keys `/`-joined), `kind` (`jax`, with `"weak":
//! true` when weakly typed; `key`, a typed PRNG key stored as its key data
//! with its `impl`, e.g. `threefry2x32`; `numpy`; `npscalar`; `int`,
//! `float`, `bool`: Python scalars as `i64`, `f64`, one byte, and an int
//! beyond `i64` as dtype `pyint`, minimal little-endian two's complement),
//! `dtype` (flor's name, else numpy's), `numpy` (the exact numpy dtype to
//! restore), `shape`, `offset`, `length`. Bytes are little-endian, C order.
//! The structure is the pytree with each leaf replaced by its index: a
//! pickle of containers only, never arrays; only the Python front reads
//! it. A reader refuses a version it does not know.
//!
//! # Lint (`python`)
//!
//! [`lint::check`] scans a script's tokens (no parser in the guest): see
//! [`lint`] for the codes (`jax::prng-key-not-checkpointed`,
//! `jax::train-state-not-checkpointed`).

pub mod flax;
pub mod layout;
pub mod lint;
pub mod npy;
pub mod npz;
pub mod pytree;
pub mod source;

use flor_plugin_sdk::{Error, Finding, Info, Plugin, Result, Source, TensorLayout};

/// The plugin's name.
pub const NAME: &str = "jax";

/// One line saying what it is for.
pub const SUMMARY: &str = "JAX, flax and NumPy checkpoints (flor.pytree, flax msgpack, .npy, .npz); JAX replay lint";

/// The formats, with their one-line summaries.
pub const FORMATS: [(&str, &str); 4] = [
    ("flor.pytree", "JAX/flax pytrees of arrays as flor's Python front stores them"),
    ("flax.msgpack", "flax.serialization.to_bytes state (MessagePack with ndarray extensions)"),
    ("numpy.npz", "NumPy .npz archives (np.savez; compressed entries kept whole)"),
    ("numpy.npy", "a NumPy .npy array"),
];

/// The JAX plugin.
pub struct Jax;

impl Plugin for Jax {
    fn describe() -> Info {
        FORMATS
            .iter()
            .fold(Info::new(NAME, env!("CARGO_PKG_VERSION"), SUMMARY), |info, (name, summary)| {
                info.format(*name, *summary)
            })
            .language("python")
    }

    fn sniff(head: &[u8]) -> Option<String> {
        let format = if head.starts_with(pytree::MAGIC) {
            "flor.pytree"
        } else if head.starts_with(npy::MAGIC) {
            "numpy.npy"
        } else if npz::sniff(head) {
            "numpy.npz"
        } else if flax::sniff(head) {
            "flax.msgpack"
        } else {
            return None;
        };
        Some(format.to_owned())
    }

    fn layout(format: &str, src: &dyn Source) -> Result<TensorLayout> {
        match format {
            "flor.pytree" => pytree::layout(src),
            "flax.msgpack" => flax::layout(src),
            "numpy.npz" => npz::layout(src),
            "numpy.npy" => {
                let header = npy::header(src, 0, src.size())?;
                let tensor = header.tensor("", 0, src.size())?;
                layout::finish(tensor.into_iter().collect(), src.size())
            }
            other => Err(Error::UnknownFormat(other.to_owned())),
        }
    }

    fn lint(language: &str, path: &str, text: &str) -> Vec<Finding> {
        lint::check(language, path, text)
    }
}

flor_plugin_sdk::export!(Jax);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_every_format_sniff_answers() {
        let info = Jax::describe();
        assert_eq!((info.name.as_str(), info.interface_version.as_str()), ("jax", flor_plugin_sdk::INTERFACE_VERSION));
        assert_eq!(info.languages, ["python"]);
        let names: Vec<&str> = info.formats.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["flor.pytree", "flax.msgpack", "numpy.npz", "numpy.npy"]);
        for head in [&b"FLORTREE"[..], b"\x93NUMPY\x01\x00", b"\x81\xa6params\x80"] {
            assert!(Jax::sniff(head).is_some_and(|f| names.contains(&f.as_str())), "{head:?}");
        }
        assert_eq!(Jax::sniff(b"\x80\x05\x95"), None); // a pickle
        assert!(matches!(Jax::layout("torch.zip", &Vec::new()), Err(Error::UnknownFormat(_))));
    }
}
