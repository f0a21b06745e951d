//! `.flor/config.toml`: per-project settings. Today one key:
//!
//! ```toml
//! # Which engine holds the query database (a cache rebuilt from git).
//! store = "duckdb"   # or "sqlite" (the default)
//! ```
//!
//! The file is optional. A small reader for `key = "value"` lines and `#`
//! comments (the subset of TOML flor writes and reads); unknown keys are
//! kept for later versions and ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The config file's name inside `.flor/`.
pub const CONFIG_FILE: &str = "config.toml";

/// The engine behind a project's query database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// SQLite (`.flor/flor.db`): always built in.
    #[default]
    Sqlite,
    /// DuckDB (`.flor/flor.duckdb`): needs flor built with the `duckdb`
    /// feature.
    Duckdb,
}

impl StoreKind {
    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Duckdb => "duckdb",
        }
    }

    /// Whether this build of flor includes the engine.
    pub fn available(self) -> bool {
        match self {
            StoreKind::Sqlite => true,
            StoreKind::Duckdb => cfg!(feature = "duckdb"),
        }
    }

    /// The database file's name inside `.flor/`.
    pub fn file_name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "flor.db",
            StoreKind::Duckdb => "flor.duckdb",
        }
    }

    /// The database file and the engine's side files (journals).
    pub(crate) fn files(self) -> &'static [&'static str] {
        match self {
            StoreKind::Sqlite => &["flor.db", "flor.db-wal", "flor.db-shm"],
            StoreKind::Duckdb => &["flor.duckdb", "flor.duckdb.wal"],
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<StoreKind, String> {
        match s {
            "sqlite" => Ok(StoreKind::Sqlite),
            "duckdb" => Ok(StoreKind::Duckdb),
            other => Err(format!("unknown store {other:?} (expected \"sqlite\" or \"duckdb\")")),
        }
    }
}

/// The settings of `.flor/config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `store`: the query database's engine (`None`: not set).
    pub store: Option<StoreKind>,
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
            if key != "store" {
                continue;
            }
            let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
                return Err(bad(i + 1, key, format!("expected a quoted string such as \"duckdb\", found {value}")));
            };
            config.store = Some(text.parse().map_err(|m| bad(i + 1, key, m))?);
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
