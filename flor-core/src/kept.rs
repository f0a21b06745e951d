//! Files a run keeps besides its checkpoints: the files a script saves
//! (`torch.save(obj, "ckpt.pth")`, `numpy.save`) and the files it loads in
//! setup, before its first loop (`torch.load("ckpt.pth")` when resuming).
//!
//! They are stored like checkpoints — content-addressed objects in the
//! object store, one `ckpt` line each in the record file, so garbage
//! collection, `flor checkpoints ls` and the `checkpoints` view see them —
//! and told apart by their name: `file:<path>` for a saved file,
//! `load:<path>` for a setup load, `<path>` relative to the project root
//! (`/`-separated) or absolute when outside it. A checkpointed object's
//! name never starts with either prefix ([`StoredKind::reserved`]).
//!
//! A setup load whose bytes were not kept (a file over the keep limit that
//! no flor run stored) records only its digest: its format ends with
//! [`NOT_KEPT_SUFFIX`] and the object store does not have it.

/// Prefix of a saved file's name.
pub const FILE_PREFIX: &str = "file:";

/// Prefix of a setup load's name.
pub const LOAD_PREFIX: &str = "load:";

/// Suffix of the format of a setup load recorded by digest only.
pub const NOT_KEPT_SUFFIX: &str = "+digest-only";

/// What a `ckpt` line stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredKind {
    /// An object checkpointed at the end of an outer iteration (a restore
    /// point for replay).
    Object,
    /// A file the script saved.
    File,
    /// A file the script loaded in setup.
    Load,
}

impl StoredKind {
    /// The kind a `ckpt` line's name says, and the name without its prefix
    /// (the path, for files and loads).
    pub fn of_name(name: &str) -> (StoredKind, &str) {
        if let Some(path) = name.strip_prefix(FILE_PREFIX) {
            (StoredKind::File, path)
        } else if let Some(path) = name.strip_prefix(LOAD_PREFIX) {
            (StoredKind::Load, path)
        } else {
            (StoredKind::Object, name)
        }
    }

    /// The `ckpt` name of `path` (of an object: the name itself).
    pub fn name(self, path: &str) -> String {
        match self {
            StoredKind::Object => path.to_owned(),
            StoredKind::File => format!("{FILE_PREFIX}{path}"),
            StoredKind::Load => format!("{LOAD_PREFIX}{path}"),
        }
    }

    /// `object`, `file` or `load`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredKind::Object => "object",
            StoredKind::File => "file",
            StoredKind::Load => "load",
        }
    }

    /// Whether a checkpointed object's `name` would read as a file or a
    /// load (such names are refused for objects).
    pub fn reserved(name: &str) -> bool {
        StoredKind::of_name(name).0 != StoredKind::Object
    }
}

impl crate::record::CheckpointMeta {
    /// What this line stands for.
    pub fn kind(&self) -> StoredKind {
        StoredKind::of_name(&self.name).0
    }

    /// Whether its bytes were kept (all but digest-only setup loads).
    pub fn kept(&self) -> bool {
        !self.format.ends_with(NOT_KEPT_SUFFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_objects_keep_theirs() {
        for kind in [StoredKind::File, StoredKind::Load] {
            let name = kind.name("out/ckpt.pth");
            assert_eq!(StoredKind::of_name(&name), (kind, "out/ckpt.pth"));
            assert!(StoredKind::reserved(&name));
        }
        assert_eq!(StoredKind::of_name("model"), (StoredKind::Object, "model"));
        assert!(!StoredKind::reserved("__rng__"));
    }
}
