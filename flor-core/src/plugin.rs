//! The host-side view of a framework plugin: what flor asks of a plugin that
//! teaches it about a training framework (PyTorch, JAX, ...). The WebAssembly
//! host in `flor-plugins` implements this trait for sandboxed plugins; tests
//! and embedders may implement it natively.

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}`: {message}")]
pub struct PluginError {
    /// Plugin name.
    pub plugin: String,
    /// What failed (a trap, a timeout, a malformed answer, the plugin's own error).
    pub message: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginInfo {
    /// Plugin name (`torch`).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Module names whose import marks a script as using the framework
    /// (`torch`, `jax`).
    pub imports: Vec<String>,
    /// Checkpoint formats the plugin can encode and decode (`torch.state_dict`).
    pub formats: Vec<String>,
}

/// A framework plugin, seen from the host.
pub trait FrameworkPlugin: Send {
    /// The plugin's self-description.
    fn info(&self) -> &PluginInfo;

    /// Whether `source` (a script) uses this framework. Default: the script
    /// imports one of [`PluginInfo::imports`].
    fn detect(&mut self, source: &str) -> Result<bool, PluginError> {
        Ok(self.info().imports.iter().any(|m| {
            source.lines().any(|l| {
                let l = l.trim_start();
                l.strip_prefix("import ")
                    .or_else(|| l.strip_prefix("from "))
                    .is_some_and(|rest| rest.split([' ', ',', '.']).next() == Some(m.as_str()))
            })
        }))
    }

    /// Whether the plugin handles checkpoint `format`.
    fn handles_format(&self, format: &str) -> bool {
        self.info().formats.iter().any(|f| f == format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(PluginInfo);
    impl FrameworkPlugin for Fake {
        fn info(&self) -> &PluginInfo {
            &self.0
        }
    }

    #[test]
    fn default_detection() {
        let mut p = Fake(PluginInfo { name: "torch".into(), imports: vec!["torch".into()], ..Default::default() });
        assert!(p.detect("import os\nimport torch.nn as nn\n").unwrap());
        assert!(p.detect("from torch import nn").unwrap());
        assert!(!p.detect("import torchvision").unwrap());
        assert!(!p.handles_format("pickle"));
    }
}
