//! Plugins seen through flor-core's extension traits: each format a plugin
//! describes is a [`CheckpointFormat`], each plugin a [`SourceChecker`].

use std::path::Path;
use std::sync::Arc;

use flor_core::formats::{ByteSource, CheckpointFormat, FormatError, Layout, Provenance};
use flor_core::propagate::{Finding, SourceChecker};

use crate::plugin::Plugin;

/// One format of a plugin, as a [`CheckpointFormat`]: sniffing, layout and
/// chunk boundaries are the plugin's calls; any failure of the plugin is a
/// [`FormatError::Plugin`] (a sniff that fails answers "not mine"), so the
/// object store keeps the checkpoint whole.
#[derive(Debug, Clone)]
pub struct PluginFormat {
    plugin: Arc<Plugin>,
    format: String,
}

impl PluginFormat {
    /// Format `format` of `plugin`.
    pub fn new(plugin: Arc<Plugin>, format: impl Into<String>) -> PluginFormat {
        PluginFormat { plugin, format: format.into() }
    }

    /// The plugin behind it.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn failed(&self, e: impl std::fmt::Display) -> FormatError {
        FormatError::Plugin { format: self.format.clone(), what: e.to_string() }
    }
}

impl CheckpointFormat for PluginFormat {
    fn name(&self) -> &str {
        &self.format
    }

    fn sniff(&self, head: &[u8]) -> bool {
        matches!(self.plugin.sniff(head), Ok(Some(f)) if f == self.format)
    }

    fn layout(&self, src: &dyn ByteSource) -> Result<Layout, FormatError> {
        match self.plugin.layout(&self.format, src) {
            Ok(Ok(layout)) => Ok(layout),
            Ok(Err(why)) => {
                Err(FormatError::malformed(&self.format, 0, format!("plugin {}: {why}", self.plugin.name())))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn chunk_boundaries(&self, src: &dyn ByteSource, layout: &Layout) -> Result<Vec<u64>, FormatError> {
        match self.plugin.split(&self.format, src) {
            Ok(Ok(cuts)) if cuts.is_empty() => Ok(layout.boundaries(src.len())),
            Ok(Ok(cuts)) => Ok(cuts),
            Ok(Err(why)) => {
                Err(FormatError::malformed(&self.format, 0, format!("plugin {}: {why}", self.plugin.name())))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn provenance(&self) -> Option<Provenance> {
        Some(self.plugin.provenance())
    }
}

/// A plugin's `lint` as a [`SourceChecker`].
#[derive(Debug, Clone)]
pub struct PluginChecker(pub Arc<Plugin>);

impl SourceChecker for PluginChecker {
    fn name(&self) -> String {
        format!("plugin {} {}", self.0.name(), self.0.info().version)
    }

    fn check(&self, language: &str, path: &Path, source: &str) -> Result<Vec<Finding>, String> {
        self.0.lint(language, &path.display().to_string(), source).map_err(|e| e.to_string())
    }
}
