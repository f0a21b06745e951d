//! `.flor/config.toml`: per-project settings:
//!
//! ```toml
//! # Which engine holds the query database (a cache rebuilt from git).
//! store = "duckdb"   # or "sqlite" (the default)
//! # What survives a crash: "process" (the default) or "os" (fsync; see
//! # flor_core::durability).
//! durability = "os"
//! ```
//!
//! The file is optional. A small reader for `key = "value"` lines and `#`
//! comments (the subset of TOML flor writes and reads); unknown keys are
//! kept for later versions and ignored.

use std::path::{Path, PathBuf};

use flor_core::Durability;
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
            let example = match key {
                "store" => "\"duckdb\"",
                "durability" => "\"os\"",
                _ => continue,
            };
            let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
                return Err(bad(i + 1, key, format!("expected a quoted string such as {example}, found {value}")));
            };
            if key == "store" {
                config.store =
                    Some(text.parse().map_err(|e: flor_store::UnknownStoreKind| bad(i + 1, key, e.to_string()))?);
            } else {
                config.durability = Some(
                    text.parse()
                        .map_err(|e: flor_core::durability::UnknownDurability| bad(i + 1, key, e.to_string()))?,
                );
            }
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
