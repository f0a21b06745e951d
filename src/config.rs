//! `.flor/config.toml`: per-project settings.
//!
//! ```toml
//! # Which engine holds the query database (a cache rebuilt from git).
//! store = "duckdb"   # or "sqlite" (the default)
//! # What survives a crash: "process" (the default) or "os" (fsync; see
//! # flor_core::durability).
//! durability = "os"
//! # Show the script's source checks when a run starts (once per version).
//! lint_on_run = false   # default: true
//!
//! [replay]
//! # How replay keeps old scripts' writes out of the project's files.
//! isolation = "auto" # or "overlay" or "copy"
//! # The most a run's copies may take where replay copies (mebibytes).
//! copy_limit_mb = 1024
//! ```
//!
//! The file is optional. A small reader for `key = "value"`, `key = true|false`
//! and `key = number` lines, `[table]` headers and `#` comments (the subset
//! of TOML flor writes and reads); unknown keys are kept for later versions
//! and ignored.

use std::path::{Path, PathBuf};

use flor_core::Durability;
use flor_replay::{IsolationMode, IsolationSettings};
use flor_store::StoreKind;

use crate::error::{Error, Result};

/// The config file's name inside `.flor/`.
pub const CONFIG_FILE: &str = "config.toml";

/// The settings of `.flor/config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `store`: the query database's engine (`None`: not set).
    /// [`StoreKind`] lives in `flor-store`, re-exported as
    /// `flor::StoreKind`.
    pub store: Option<StoreKind>,
    /// `durability`: what of a run survives a crash (`None`: not set,
    /// [`Durability::Process`]).
    pub durability: Option<Durability>,
    /// `[replay] isolation`: how replay keeps old scripts' writes out of
    /// the project's files (`None`: not set, `auto`).
    pub replay_isolation: Option<IsolationMode>,
    /// `[replay] copy_limit_mb`: the most one run's copies may take where
    /// replay copies (`None`: not set, 1024).
    pub replay_copy_limit_mb: Option<u64>,
    /// `lint_on_run`: whether a starting run shows its script's source
    /// checks (`None`: not set, which means yes).
    pub lint_on_run: Option<bool>,
}

impl Config {
    /// Reads `path`; a missing file is the default configuration.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Parses the text of `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |line: usize, key: &str, message: String| Error::Config {
            path: PathBuf::from(path),
            line,
            key: key.to_owned(),
            message,
        };
        let mut config = Config::default();
        let mut table = "";
        for (i, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = match name.trim() {
                    "replay" => "replay",
                    other => {
                        return Err(bad(
                            i + 1,
                            "",
                            format!(
                                "unknown table [{other}]; flor's config has `store` at the top and a [replay] table"
                            ),
                        ))
                    }
                };
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad(i + 1, "", format!("expected `key = \"value\"`, found {:?}", raw.trim())));
            };
            let (key, value) = (key.trim(), value.trim());
            let quoted = |example: &str| {
                value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or_else(|| {
                    bad(i + 1, key, format!("expected a quoted string such as \"{example}\", found {value}"))
                })
            };
            match (table, key) {
                ("", "store") => {
                    let kind = quoted("duckdb")?.parse();
                    config.store =
                        Some(kind.map_err(|e: flor_store::UnknownStoreKind| bad(i + 1, key, e.to_string()))?);
                }
                ("", "durability") => {
                    let d = quoted("os")?.parse();
                    config.durability =
                        Some(d.map_err(|e: flor_core::durability::UnknownDurability| bad(i + 1, key, e.to_string()))?);
                }
                ("", "lint_on_run") => {
                    config.lint_on_run = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(i + 1, key, format!("expected true or false, found {value}"))),
                    });
                }
                ("replay", "isolation") => {
                    config.replay_isolation = Some(quoted("auto")?.parse().map_err(|e| bad(i + 1, key, e))?);
                }
                ("replay", "copy_limit_mb") => {
                    let mb = value.parse::<u64>().ok().filter(|mb| mb.checked_mul(1024 * 1024).is_some());
                    let mb = mb.ok_or_else(|| {
                        bad(i + 1, key, format!("expected a whole number of mebibytes, found {value}"))
                    })?;
                    config.replay_copy_limit_mb = Some(mb);
                }
                _ => {}
            }
        }
        Ok(config)
    }

    /// The replay isolation settings (defaults for what is not set).
    pub fn isolation(&self) -> IsolationSettings {
        let default = IsolationSettings::default();
        IsolationSettings {
            mode: self.replay_isolation.unwrap_or(default.mode),
            copy_limit_bytes: self.replay_copy_limit_mb.map_or(default.copy_limit_bytes, |mb| mb * 1024 * 1024),
        }
    }
}

/// The line without a `#` comment (outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::parse("", p).unwrap().store, None);
        let c = Config::parse("# engine\nstore = \"duckdb\"  # fast\nother = 3\n", p).unwrap();
        assert_eq!(c.store, Some(StoreKind::Duckdb));
        assert_eq!(Config::parse("store=\"sqlite\"", p).unwrap().store, Some(StoreKind::Sqlite));
    }

    #[test]
    fn parses_durability() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::parse("store = \"sqlite\"", p).unwrap().durability, None);
        let c = Config::parse("durability = \"os\" # fsync\nstore = \"sqlite\"\n", p).unwrap();
        assert_eq!((c.durability, c.store), (Some(Durability::Os), Some(StoreKind::Sqlite)));
        assert_eq!(Config::parse("durability=\"process\"", p).unwrap().durability, Some(Durability::Process));
        let e = Config::parse("\n\ndurability = \"always\"", p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("durability") && e.contains("always"), "{e}");
        assert!(e.contains("\"process\"") && e.contains("\"os\""), "{e}");
        let e = Config::parse("durability = os", p).unwrap_err().to_string();
        assert!(e.contains("quoted") && e.contains("\"os\""), "{e}");
    }

    #[test]
    fn parses_lint_on_run() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::parse("", p).unwrap().lint_on_run, None);
        assert_eq!(Config::parse("lint_on_run = false # quiet\n", p).unwrap().lint_on_run, Some(false));
        assert_eq!(Config::parse("lint_on_run=true", p).unwrap().lint_on_run, Some(true));
        let e = Config::parse("lint_on_run = \"no\"", p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("lint_on_run") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let p = Path::new("/repo/.flor/config.toml");
        let e = Config::parse("\nstore = \"postgres\"\n", p).unwrap_err().to_string();
        assert!(e.contains("/repo/.flor/config.toml") && e.contains("line 2") && e.contains("store"), "{e}");
        assert!(e.contains("postgres") && e.contains("duckdb"), "{e}");
        let e = Config::parse("store = duckdb", p).unwrap_err().to_string();
        assert!(e.contains("quoted"), "{e}");
        assert!(Config::parse("store", p).is_err());
        assert!(Config::parse("[store]", p).is_err());
    }

    #[test]
    fn parses_the_replay_table() {
        let p = Path::new(".flor/config.toml");
        let c = Config::parse("store = \"sqlite\"\n[replay]\nisolation = \"copy\" # forced\ncopy_limit_mb = 5\n", p)
            .unwrap();
        assert_eq!(c.store, Some(StoreKind::Sqlite));
        assert_eq!(c.isolation(), IsolationSettings { mode: IsolationMode::Copy, copy_limit_bytes: 5 * 1024 * 1024 });
        assert_eq!(Config::parse("", p).unwrap().isolation(), IsolationSettings::default());
        // `store` inside [replay] is not the store.
        assert_eq!(Config::parse("[replay]\nstore = \"duckdb\"\n", p).unwrap().store, None);
        let e = Config::parse("[replay]\nisolation = \"cow\"\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("isolation") && e.contains("\"overlay\""), "{e}");
        let e = Config::parse("[replay]\ncopy_limit_mb = \"big\"\n", p).unwrap_err().to_string();
        assert!(e.contains("copy_limit_mb") && e.contains("mebibytes"), "{e}");
        assert!(Config::parse("[replay]\ncopy_limit_mb = 99999999999999999\n", p).is_err());
    }
}
