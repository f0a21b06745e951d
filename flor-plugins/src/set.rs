//! The plugins a `flor` process uses: the built-in ones, then the per-user
//! folder's, then the project's `.flor/plugins/` — a later plugin of the
//! same name replaces an earlier one, so a project can pin a newer (or
//! older) version of a framework plugin without a new flor binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flor_core::formats::FormatRegistry;
use flor_core::propagate::Registry;

use crate::adapter::{PluginChecker, PluginFormat};
use crate::builtin;
use crate::error::{Error, Result};
use crate::plugin::{Origin, Plugin};
use crate::sandbox::Limits;

/// Environment variable naming the per-user plugin folder (default:
/// `$XDG_DATA_HOME/flor/plugins`, else `~/.local/share/flor/plugins`).
pub const USER_DIR_ENV: &str = "FLOR_PLUGIN_DIR";

/// The folder under a project's `.flor/` holding its plugins.
pub const PROJECT_DIR: &str = "plugins";

/// The per-user plugin folder, if a home is known.
pub fn user_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(USER_DIR_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    let base = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/share"))
    })?;
    Some(base.join("flor").join("plugins"))
}

/// A plugin file that could not be loaded.
#[derive(Debug)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub error: Error,
}

/// A plugin that a later one of the same name replaced.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it came from.
    pub origin: Origin,
}

/// The loaded plugins, in load order, one per name.
#[derive(Debug, Default, Clone)]
pub struct Plugins {
    plugins: Vec<Arc<Plugin>>,
    failures: Arc<Vec<LoadFailure>>,
    replaced: Vec<Replaced>,
}

/// How to load a set of plugins.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per-call limits.
    pub limits: Limits,
    /// Where compiled plugins are cached (`None`: not cached).
    pub cache_dir: Option<PathBuf>,
    /// The per-user folder (`None`: none).
    pub user_dir: Option<PathBuf>,
    /// Whether the built-in plugins are loaded.
    pub builtin: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::default(),
            cache_dir: crate::cache::default_dir(),
            user_dir: user_dir(),
            builtin: true,
        }
    }
}

impl Plugins {
    /// The built-in plugins, the per-user folder's and, when `flor_dir`
    /// (a project's `.flor`) is given, the project's. A plugin file that
    /// fails to load is kept in [`Plugins::failures`], never fatal; a
    /// built-in that fails is an error (the binary is broken).
    pub fn discover(flor_dir: Option<&Path>, options: &Options) -> Result<Plugins> {
        let mut set = Plugins::default();
        let mut failures = Vec::new();
        if options.builtin {
            for (_, bytes) in builtin::BUILTIN {
                let p = Plugin::load(bytes, Origin::Builtin, options.limits, options.cache_dir.as_deref())?;
                set.add(Arc::new(p));
            }
        }
        let dirs =
            options.user_dir.iter().map(|d| (d.clone(), true)).chain(flor_dir.map(|d| (d.join(PROJECT_DIR), false)));
        for (dir, user) in dirs {
            for path in wasm_files(&dir)? {
                let origin = if user { Origin::User(path.clone()) } else { Origin::Project(path.clone()) };
                match Plugin::load_file(&path, origin, options.limits, options.cache_dir.as_deref()) {
                    Ok(p) => set.add(Arc::new(p)),
                    Err(error) => failures.push(LoadFailure { path, error }),
                }
            }
        }
        set.failures = Arc::new(failures);
        Ok(set)
    }

    /// Adds `plugin`, replacing a loaded one of the same name.
    pub fn add(&mut self, plugin: Arc<Plugin>) {
        if let Some(i) = self.plugins.iter().position(|p| p.name() == plugin.name()) {
            let old = self.plugins.remove(i);
            self.replaced.push(Replaced {
                name: old.name().to_owned(),
                version: old.info().version.clone(),
                origin: old.origin().clone(),
            });
        }
        self.plugins.push(plugin);
    }

    /// The loaded plugins, in load order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name() == name).ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Plugin files that failed to load.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// Plugins replaced by a later one of the same name.
    pub fn replaced(&self) -> &[Replaced] {
        &self.replaced
    }

    /// `base` with every plugin format registered after its own (so a
    /// plugin's format replaces a native one of the same name and is
    /// sniffed first).
    pub fn format_registry(&self, base: FormatRegistry) -> FormatRegistry {
        let mut r = base;
        for p in &self.plugins {
            for f in &p.info().formats {
                r.register(Arc::new(PluginFormat::new(p.clone(), f.name.clone())));
            }
        }
        r
    }

    /// Adds every plugin with languages to `registry` as a source checker.
    pub fn add_checkers(&self, registry: &mut Registry) {
        for p in self.plugins.iter().filter(|p| !p.info().languages.is_empty()) {
            registry.add_checker(Arc::new(PluginChecker(p.clone())));
        }
    }
}

/// The `*.wasm` files of `dir`, sorted; none when it does not exist.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        if path.extension().is_some_and(|x| x == "wasm") && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Checks the plugin at `src` (it must load), then copies it into `dir`
/// as `<name>.wasm` (atomically), replacing an installed plugin of the
/// same name. Returns the plugin as installed and the replaced one's
/// version, if any.
pub fn install(src: &Path, dir: &Path, options: &Options) -> Result<(Plugin, Option<String>)> {
    let bytes = std::fs::read(src).map_err(|e| Error::io("read", src, e))?;
    let checked = Plugin::load(&bytes, Origin::File(src.to_owned()), options.limits, options.cache_dir.as_deref())?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let dest = dir.join(format!("{}.wasm", checked.name()));
    let previous =
        match Plugin::load_file(&dest, Origin::File(dest.clone()), options.limits, options.cache_dir.as_deref()) {
            Ok(p) => Some(p.info().version.clone()),
            Err(_) => None,
        };
    let tmp = dir.join(format!(".{}.{}.tmp", checked.name(), std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("install", &dest, e)
    })?;
    let origin = if dir.ends_with(PROJECT_DIR) && dir.parent().is_some_and(|p| p.ends_with(".flor")) {
        Origin::Project(dest)
    } else {
        Origin::User(dest)
    };
    Ok((checked.with_origin(origin), previous))
}
