//! flor-plugins: the WebAssembly host for framework plugins. Not implemented
//! yet (its own issue); the host-side trait it will implement is re-exported
//! from `flor-core`.

pub use flor_core::plugin::{FrameworkPlugin, PluginError, PluginInfo};
