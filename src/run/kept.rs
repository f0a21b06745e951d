//! Files a run keeps besides its checkpoints (see [`flor_core::kept`]):
//! the files its script saves and the files it loads in setup, stored in
//! the object store by content and recorded by project path.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use flor_core::kept::{StoredKind, NOT_KEPT_SUFFIX};
use flor_core::ObjectId;

use super::Run;
use crate::config::{Config, CONFIG_FILE};
use crate::error::{Error, Result};

/// How [`Run::keep_file`] kept a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptFile {
    /// The file's digest and length.
    pub id: ObjectId,
    /// Whether its bytes are in the object store (`false`: a setup load
    /// over `[checkpoints] keep_loads_mb` that no run stored; only its
    /// digest is recorded).
    pub kept: bool,
}

/// Reads buffer size for hashing and storing files.
const CHUNK: usize = 1 << 20;

impl Run {
    /// Keeps the file at `path` (on disk) as the run's saved file
    /// ([`StoredKind::File`]) or setup load ([`StoredKind::Load`]) named
    /// `name` (its project path), written by `format` (`torch.save`,
    /// `numpy.load`, ...), at the current outer iteration. A saved file is
    /// always stored; a setup load when it is at most `[checkpoints]
    /// keep_loads_mb` or already stored, else only its digest is recorded.
    /// Identical bytes are stored once. A replay segment keeps nothing
    /// (`None`).
    pub fn keep_file(&self, kind: StoredKind, path: &Path, name: &str, format: &str) -> Result<Option<KeptFile>> {
        let (objects, limit) = {
            let g = self.lock();
            let Some(project) = &g.project else { return Ok(None) };
            let limit = match kind {
                StoredKind::Load => Some(Config::load(&project.flor_dir().join(CONFIG_FILE))?.keep_loads_bytes()),
                _ => None,
            };
            (g.objects.clone(), limit)
        };
        let (id, kept) = match limit {
            // A load: most are files a run already stored (resuming) or
            // the same data set as last time, so hash first.
            Some(limit) => {
                let id = file_digest(path)?;
                if objects.contains(&id.digest) {
                    (id, true)
                } else if id.bytes <= limit {
                    (store(&objects, path)?, true)
                } else {
                    (id, false)
                }
            }
            None => (store(&objects, path)?, true),
        };
        let format = if kept { format.to_owned() } else { format!("{format}{NOT_KEPT_SUFFIX}") };
        self.lock().rec.record_kept(kind, name, &format, &id)?;
        Ok(Some(KeptFile { id, kept }))
    }
}

/// Stores the file at `path` in `objects`.
fn store(objects: &flor_core::ObjectStore, path: &Path) -> Result<ObjectId> {
    let mut file = File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut w = objects.writer()?;
    copy(&mut file, &mut w).map_err(|e| Error::io("read", path, e))?;
    Ok(w.finish()?)
}

/// The digest and length of the file at `path` (what the object store
/// would name it).
pub fn file_digest(path: &Path) -> Result<ObjectId> {
    let mut file = File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let bytes = copy(&mut file, &mut hasher).map_err(|e| Error::io("read", path, e))?;
    Ok(ObjectId { digest: hasher.finalize().to_hex().to_string(), bytes })
}

/// Copies `from` into `to` in [`CHUNK`]s; returns the length.
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        let got = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..got])?;
        n += got as u64;
    }
}
