//! flor-plugins: the WebAssembly host for framework plugins.
//!
//! A framework plugin teaches flor one ML framework — the layout of its
//! checkpoint formats and the source idioms that break hindsight replay —
//! as a sandboxed WebAssembly component implementing the `flor:plugin`
//! interface ([`INTERFACE_WIT`], `wit/plugin.wit`). Frameworks change
//! faster than flor: a new plugin, or a new version of one, needs no new
//! flor binary.
//!
//! - [`Plugin`] loads one (a component, or a core module built with
//!   `flor-plugin-sdk`, made a component here), checks its interface
//!   version and imports, and calls it: every call in a fresh instance,
//!   under a deadline and a memory cap ([`Limits`]), every trap an
//!   [`Error`].
//! - [`Plugins`] discovers the built-in plugins (pytorch, jax: embedded in
//!   this crate), the per-user folder's ([`user_dir`]) and a project's
//!   `.flor/plugins/`; [`install`] adds one.
//! - [`PluginFormat`] and [`PluginChecker`] present plugins through
//!   flor-core's traits: [`Plugins::format_registry`] gives the object
//!   store the plugins' formats (chunking, tensor statistics),
//!   [`Plugins::add_checkers`] gives `flor lint` and the replay plan their
//!   findings.
//!
//! Plugins run only in the `flor` process (CLI and SDK), never in a
//! training process: reading a chunked checkpoint needs no plugin.

mod adapter;
mod bindings;
mod builtin;
mod cache;
mod error;
mod plugin;
mod sandbox;
mod set;

pub use adapter::{PluginChecker, PluginFormat};
pub use cache::{default_dir as default_cache_dir, CACHE_ENV};
pub use error::{Error, Result};
pub use plugin::{FormatInfo, Info, Origin, Plugin, INTERFACE_PACKAGE, INTERFACE_VERSION, INTERFACE_WIT};
pub use sandbox::{Limits, MAX_READ};
pub use set::{install, user_dir, LoadFailure, Options, Plugins, Replaced, PROJECT_DIR, USER_DIR_ENV};

/// The names of the plugins built into this binary.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    builtin::BUILTIN.iter().map(|(name, _)| *name)
}

pub use flor_core::formats::{
    ByteSource, CheckpointFormat, CheckpointFormatExt, Dtype, FormatError, FormatRegistry, Layout, Provenance,
    TensorInfo,
};
