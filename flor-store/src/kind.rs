//! Choosing a built-in backend by name: [`StoreKind`] (`sqlite` | `duckdb`,
//! as `.flor/config.toml` and `flor --store` spell it) and
//! [`StoreKind::open`], which opens the query database of a kind inside a
//! project's `.flor/` folder. A tool with its own backend skips this and
//! hands its [`Store`] to the SDK instead.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flor_core::Store;

use crate::{Error, Result, SqliteStore};

/// A built-in engine for a project's query database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreKind {
    /// SQLite (`.flor/flor.db`): always built in.
    #[default]
    Sqlite,
    /// DuckDB (`.flor/flor.duckdb`): needs flor built with the `duckdb`
    /// feature.
    Duckdb,
}

impl StoreKind {
    /// Every kind, the default first.
    pub const ALL: [StoreKind; 2] = [StoreKind::Sqlite, StoreKind::Duckdb];

    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Duckdb => "duckdb",
        }
    }

    /// Whether this build includes the engine.
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

    /// The database file and the engine's side files (journals), all
    /// inside `.flor/`.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            StoreKind::Sqlite => &["flor.db", "flor.db-wal", "flor.db-shm"],
            StoreKind::Duckdb => &["flor.duckdb", "flor.duckdb.wal"],
        }
    }

    /// The database file of this kind in the `.flor/` folder `flor_dir`.
    pub fn database_path(self, flor_dir: &Path) -> PathBuf {
        flor_dir.join(self.file_name())
    }

    /// Opens (creating it if needed) the query database of this kind in the
    /// `.flor/` folder `flor_dir`.
    ///
    /// The database is a cache of the run records in git: a SQLite
    /// database written by an older flor (an older schema version) is
    /// deleted, with a note on stderr, and created afresh, so that the next
    /// sync rebuilds it from git. Any other unusable file is an error that
    /// says to run `flor rebuild`. A kind this build lacks is
    /// [`Error::DuckdbNotBuilt`].
    pub fn open(self, flor_dir: &Path) -> Result<Box<dyn Store>> {
        let db = self.database_path(flor_dir);
        match self {
            StoreKind::Sqlite => {
                if crate::schema_version_of(&db).is_some_and(|v| v > 0 && v < crate::SCHEMA_VERSION) {
                    eprintln!("flor: note: the query database was written by an older flor; rebuilding it from git");
                    self.remove_database(flor_dir)?;
                }
                Ok(Box::new(SqliteStore::open(&db)?))
            }
            #[cfg(feature = "duckdb")]
            StoreKind::Duckdb => Ok(Box::new(crate::DuckStore::open(&db)?)),
            #[cfg(not(feature = "duckdb"))]
            StoreKind::Duckdb => Err(Error::DuckdbNotBuilt { what: "the duckdb store" }),
        }
    }

    /// Deletes the database files of this kind in `flor_dir` (the records
    /// stay in git); missing files are fine. Works whether or not this
    /// build includes the engine, and on files too damaged to open.
    pub fn remove_database(self, flor_dir: &Path) -> Result<()> {
        for name in self.files() {
            let path = flor_dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Io { action: "remove", path, source }),
            }
        }
        Ok(())
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreKind {
    type Err = UnknownStoreKind;

    fn from_str(s: &str) -> std::result::Result<StoreKind, UnknownStoreKind> {
        StoreKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownStoreKind { name: s.to_owned() })
    }
}

/// A store name that is not a [`StoreKind`] (from [`StoreKind::from_str`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown store {name:?} (expected \"sqlite\" or \"duckdb\")")]
pub struct UnknownStoreKind {
    /// The name given.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in StoreKind::ALL {
            assert_eq!(k.as_str().parse::<StoreKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
            assert_eq!(k.files()[0], k.file_name());
        }
        let e = "postgres".parse::<StoreKind>().unwrap_err().to_string();
        assert!(e.contains("postgres") && e.contains("sqlite") && e.contains("duckdb"), "{e}");
    }

    #[test]
    fn open_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreKind::Sqlite.open(dir.path()).unwrap();
        assert_eq!(store.backend(), "sqlite");
        drop(store);
        assert!(dir.path().join("flor.db").is_file());
        StoreKind::Sqlite.remove_database(dir.path()).unwrap();
        assert!(!dir.path().join("flor.db").exists());
        StoreKind::Sqlite.remove_database(dir.path()).unwrap();
    }

    #[cfg(not(feature = "duckdb"))]
    #[test]
    fn duckdb_not_built_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!StoreKind::Duckdb.available());
        let e = StoreKind::Duckdb.open(dir.path()).err().expect("no DuckDB in this build").to_string();
        assert!(e.contains("the duckdb store needs DuckDB") && e.contains("--features duckdb"), "{e}");
        assert!(e.contains("store = \"sqlite\""), "{e}");
    }
}
