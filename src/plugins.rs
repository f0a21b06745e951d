//! Framework plugins in the SDK (feature `plugins`, on by default): the
//! plugins a project uses ([`load`]: built in, per user, the project's
//! `.flor/plugins/`), and the registries they extend — the object store's
//! checkpoint formats ([`formats`]) and the source checks of `flor lint`
//! and the replay plan ([`propagators`]). The host itself is the
//! `flor-plugins` crate, re-exported here as [`host`].
//!
//! Plugins run only in processes that use this module (the `flor` command,
//! SDK programs); the Python module and training processes never load
//! them, and read what they produced with no plugin.

use std::path::Path;
use std::sync::Arc;

use flor_core::formats::FormatRegistry;
use flor_core::propagate::Registry;
pub use flor_plugins::{self as host, Options, Plugins};

use crate::error::{Error, Result};
use crate::project::FLOR_DIR;

/// The plugins of the project whose repository contains `start` (built in,
/// per user, and its `.flor/plugins/`); outside a repository, the built-in
/// and per-user ones.
pub fn load(start: &Path, options: &Options) -> Result<Plugins> {
    let flor_dir = flor_git::discover(start).ok().map(|r| r.root.join(FLOR_DIR));
    Plugins::discover(flor_dir.as_deref(), options).map_err(Error::from)
}

/// The native checkpoint formats plus every plugin's.
pub fn formats(plugins: &Plugins) -> Arc<FormatRegistry> {
    Arc::new(plugins.format_registry(FormatRegistry::native()))
}

/// flor's language propagators with every plugin's source checks added.
pub fn propagators(plugins: &Plugins) -> Registry {
    let mut registry = flor_propagate::registry();
    plugins.add_checkers(&mut registry);
    registry
}
