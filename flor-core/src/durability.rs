//! How much of a run survives a crash: [`Durability`], and the `fsync`
//! helpers the record writer and the object store share.
//!
//! | setting | a killed process (SIGKILL, OOM killer) | an OS crash or power loss |
//! |---------|----------------------------------------|---------------------------|
//! | `process` (default) | every record up to the last completed outer iteration, every checkpoint stored | whatever the OS had written back (Linux: dirty pages older than about 30 s); a damaged object fails its digest check |
//! | `os` | the same | the same as a killed process: the record file is fsynced at the end of every outer iteration, each object (and its folder) before its record line is written |
//!
//! Both settings fsync the record file when the run ends, before it is
//! published to git.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::str::FromStr;

/// How far records and checkpoints are made durable while a run records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// Written to the OS at the end of every outer iteration: they survive
    /// the process being killed, not necessarily an OS crash.
    #[default]
    Process,
    /// Also fsynced at the end of every outer iteration (the record file),
    /// and before their rename (each checkpoint object, then its folder):
    /// they survive an OS crash or a power loss.
    Os,
}

impl Durability {
    /// Every setting, the default first.
    pub const ALL: [Durability; 2] = [Durability::Process, Durability::Os];

    /// The name used in `.flor/config.toml` and `FLOR_DURABILITY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::Os => "os",
        }
    }

    /// Whether writes are fsynced (`os`).
    pub fn syncs(self) -> bool {
        self == Durability::Os
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durability name that is neither `process` nor `os`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability {name:?} (expected \"process\" or \"os\")")]
pub struct UnknownDurability {
    /// The name given.
    pub name: String,
}

impl FromStr for Durability {
    type Err = UnknownDurability;

    fn from_str(s: &str) -> Result<Durability, UnknownDurability> {
        Durability::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| UnknownDurability { name: s.to_owned() })
    }
}

/// Makes a folder's entries (files created, renamed or removed in it)
/// durable. A no-op where folders cannot be opened (not Unix).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Durability::ALL {
            assert_eq!(d.as_str().parse::<Durability>(), Ok(d));
            assert_eq!(d.to_string(), d.as_str());
        }
        assert_eq!(Durability::default(), Durability::Process);
        let e = "fsync".parse::<Durability>().unwrap_err().to_string();
        assert!(e.contains("fsync") && e.contains("process") && e.contains("os"), "{e}");
    }

    #[test]
    fn syncs_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
