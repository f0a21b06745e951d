//! Compiled plugins cached on disk: compiling a component with Cranelift
//! takes a while, loading a compiled one a few milliseconds.
//!
//! A compiled plugin is stored as `<dir>/<digest>-<engine>.cwasm`, where
//! `digest` is the BLAKE3 of the component and `engine` a hash of the
//! engine's compilation settings and version, so another flor build never
//! loads it. Files appear by atomic rename. The folder must be the user's
//! own: a compiled file is machine code that is loaded as is.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// Environment variable naming the cache folder (default:
/// `$XDG_CACHE_HOME/flor/plugins`, else `~/.cache/flor/plugins`); empty
/// disables the cache.
pub const CACHE_ENV: &str = "FLOR_PLUGIN_CACHE";

/// The cache folder to use, if any.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(CACHE_ENV) {
        return (!v.is_empty()).then(|| PathBuf::from(v));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("flor").join("plugins"))
}

fn file_name(engine: &Engine, component: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{}-{:016x}.cwasm", blake3::hash(component).to_hex(), h.finish())
}

/// The compiled `component`: from the cache when it holds it, else
/// compiled now and (best effort) cached. A cache that cannot be read or
/// written is ignored.
pub(crate) fn compile(engine: &Engine, component: &[u8], dir: Option<&Path>) -> Result<Component, String> {
    let Some(dir) = dir else { return Component::new(engine, component).map_err(|e| format!("{e:#}")) };
    let path = dir.join(file_name(engine, component));
    if path.is_file() {
        // SAFETY: the file was written by `Component::serialize` of this
        // same engine configuration (its name says so, and wasmtime checks
        // the header again), in the user's own cache folder.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok(c);
        }
    }
    let compiled = Component::new(engine, component).map_err(|e| format!("{e:#}"))?;
    if let Ok(bytes) = compiled.serialize() {
        let _ = store(dir, &path, &bytes);
    }
    Ok(compiled)
}

fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), blake3::hash(bytes).to_hex()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
