//! `.flor/config.toml`: per-project settings:
//!
//! ```toml
//! # Which engine holds the query database (a cache rebuilt from git).
//! store = "duckdb"   # or "sqlite" (the default)
//! # Show the script's source checks when a run starts (once per version).
//! lint_on_run = false   # default: true
//! ```
//!
//! The file is optional. A small reader for `key = "value"` and `key =
//! true|false` lines and `#` comments (the subset of TOML flor writes and
//! reads); unknown keys are kept for later versions and ignored.

use std::path::{Path, PathBuf};

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
        for (i, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                return Err(bad(
                    i + 1,
                    "",
                    "tables are not used in flor's config; write `store = \"...\"` at the top".into(),
                ));
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad(i + 1, "", format!("expected `key = \"value\"`, found {:?}", raw.trim())));
            };
            let key = key.trim();
            let value = value.trim();
            match key {
                "store" => {}
                "lint_on_run" => {
                    config.lint_on_run = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(i + 1, key, format!("expected true or false, found {value}"))),
                    });
                    continue;
                }
                _ => continue,
            }
            let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
                return Err(bad(i + 1, key, format!("expected a quoted string such as \"duckdb\", found {value}")));
            };
            config.store =
                Some(text.parse().map_err(|e: flor_store::UnknownStoreKind| bad(i + 1, key, e.to_string()))?);
        }
        Ok(config)
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
}
