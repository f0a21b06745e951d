//! Tensor indexes: what flor derives from a checkpoint object once, kept
//! beside the object store as a cache.
//!
//! [`index_object`] looks at one object with the registered formats: an
//! object no format claims gets an index saying so (only its first bytes
//! are read); a claimed one stored whole is packed first
//! ([`ObjectStore::pack_spooled`]); then the layout (each tensor's name,
//! dtype, shape, byte range, and the chunk holding exactly its bytes, when
//! one does) and each tensor's [`TensorStats`] are computed from the
//! decompressed object, tensors split into pieces that rayon spreads over
//! the cores. [`delta`] compares two indexed objects tensor by tensor (the
//! L2 norm of the change): a tensor whose chunk is the same in both is 0
//! without reading anything, the others are read (only the chunks they
//! lie in).
//!
//! # On-disk layout
//!
//! ```text
//! <objects>/tensors/<2 hex>/<62 hex>.json               TensorIndex of object <digest>
//! <objects>/tensors/<2 hex>/<62 hex>.delta-<prev>.json  DeltaIndex: <digest> against object <prev>
//! ```
//!
//! Everything here is derived data: each file appears by an atomic rename
//! of a complete temporary file (in the store's `tmp/`), an unreadable or
//! outdated one is simply computed again, and garbage collection deletes
//! the files of objects it deletes. Nothing is fsynced: after a power
//! loss a damaged file reads as absent.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::{ByteSource, CheckpointFormatExt, Dtype, FormatRegistry, Layout, Provenance};
use crate::objects::{is_digest, Manifest, ObjectStore, PackOutcome, Spool};
use crate::stats::{self, merge_all, PartialStats, TensorStats};

/// The version of the index files this flor writes; files of another
/// version are computed again.
pub const INDEX_VERSION: u32 = 1;

/// The folder under the object store's root.
pub const TENSORS_DIR: &str = "tensors";

/// Statistics are computed over pieces of at most this many bytes.
const PIECE: u64 = 4 << 20;

/// Deltas read at most about this many bytes of each object at a time.
const DELTA_BATCH: u64 = 256 << 20;

/// What an index says about its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexStatus {
    /// A format described it: its tensors are listed.
    Indexed,
    /// No registered format claims it.
    NotClaimed,
    /// A format claimed it but could not describe it (or its format is
    /// not registered here); the reason is in [`TensorIndex::note`].
    Failed,
}

/// One object's tensors and their statistics (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorIndex {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// The object's digest.
    pub digest: String,
    /// The object's length.
    pub bytes: u64,
    /// What was found.
    pub status: IndexStatus,
    /// The format that claimed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The plugin behind that format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Provenance>,
    /// The formats registered when it was indexed ([`registry_names`]):
    /// an index that is not [`IndexStatus::Indexed`] is redone once a
    /// format registered later is present.
    pub formats_seen: Vec<String>,
    /// Why there are no tensors, or how packing went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The tensors, in the order of their byte ranges.
    pub tensors: Vec<IndexedTensor>,
}

/// One tensor of a [`TensorIndex`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedTensor {
    /// Its name in the object.
    pub name: String,
    /// Its dtype ([`Dtype::as_str`]).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Where its bytes start in the object.
    pub offset: u64,
    /// How many bytes it has.
    pub bytes: u64,
    /// The chunk whose bytes are exactly this tensor's, when the object is
    /// chunked so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    /// Its statistics (`None` for a dtype without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<TensorStats>,
}

impl IndexedTensor {
    /// Its byte range in the object.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.bytes
    }
}

impl TensorIndex {
    /// Whether this index still answers for `formats`: an indexed object
    /// always (its bytes do not change), any other while no format is
    /// registered that was not when it was made.
    pub fn is_current(&self, formats: &FormatRegistry) -> bool {
        self.version == INDEX_VERSION
            && (self.status == IndexStatus::Indexed
                || registry_names(formats).iter().all(|n| self.formats_seen.contains(n)))
    }
}

/// The L2 norms of the change of each tensor of object `digest` since
/// object `prev` (see [`delta`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaIndex {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// The later object.
    pub digest: String,
    /// The earlier object.
    pub prev: String,
    /// Per tensor of `digest`'s index, in its order: `None` where `prev`
    /// has no tensor of that name, dtype and shape, or the dtype has no
    /// statistics.
    pub deltas: Vec<Option<f64>>,
}

/// The names under which `formats` are recorded in
/// [`TensorIndex::formats_seen`]: a format's name, with its plugin's name
/// and version when it has one.
pub fn registry_names(formats: &FormatRegistry) -> Vec<String> {
    formats
        .names()
        .filter_map(|n| formats.get(n).ok())
        .map(|f| match f.provenance() {
            Some(p) => format!("{} ({} {})", f.name(), p.plugin, p.version),
            None => f.name().to_owned(),
        })
        .collect()
}

/// A file under [`TENSORS_DIR`] ([`TensorIndexes::files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Its path.
    pub path: PathBuf,
    /// The object it describes.
    pub digest: String,
    /// For a delta, the earlier object.
    pub prev: Option<String>,
    /// Its size.
    pub bytes: u64,
}

/// The tensor indexes of an object store (`<root>/tensors/`).
#[derive(Debug, Clone)]
pub struct TensorIndexes {
    dir: PathBuf,
    tmp: PathBuf,
}

impl TensorIndexes {
    /// The indexes kept beside `store`.
    pub fn new(store: &ObjectStore) -> TensorIndexes {
        TensorIndexes { dir: store.root().join(TENSORS_DIR), tmp: store.root().join("tmp") }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str, suffix: &str) -> Result<PathBuf> {
        if !is_digest(digest) {
            return Err(Error::BadDigest(digest.to_owned()));
        }
        Ok(self.dir.join(&digest[..2]).join(format!("{}{suffix}", &digest[2..])))
    }

    /// The index of object `digest`, when one is stored and readable.
    pub fn load(&self, digest: &str) -> Option<TensorIndex> {
        let index: TensorIndex = read_json(&self.path(digest, ".json").ok()?)?;
        (index.digest == digest && index.version == INDEX_VERSION).then_some(index)
    }

    /// Stores an index (replacing any).
    pub fn save(&self, index: &TensorIndex) -> Result<()> {
        self.write(&self.path(&index.digest, ".json")?, &serde_json::to_vec(index).unwrap_or_default())
    }

    /// The delta of object `digest` against `prev`, when stored.
    pub fn load_delta(&self, digest: &str, prev: &str) -> Option<DeltaIndex> {
        if !is_digest(prev) {
            return None;
        }
        let d: DeltaIndex = read_json(&self.path(digest, &format!(".delta-{prev}.json")).ok()?)?;
        (d.digest == digest && d.prev == prev && d.version == INDEX_VERSION).then_some(d)
    }

    /// Stores a delta (replacing any).
    pub fn save_delta(&self, delta: &DeltaIndex) -> Result<()> {
        if !is_digest(&delta.prev) {
            return Err(Error::BadDigest(delta.prev.clone()));
        }
        let path = self.path(&delta.digest, &format!(".delta-{}.json", delta.prev))?;
        self.write(&path, &serde_json::to_vec(delta).unwrap_or_default())
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        fs::create_dir_all(&self.tmp).map_err(|e| Error::io("create", &self.tmp, e))?;
        let tmp = self.tmp.join(format!(
            "{}-{}.index",
            std::process::id(),
            INDEX_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write", path, e));
        }
        Ok(())
    }

    /// Every index and delta file, in no particular order.
    pub fn files(&self) -> Result<Vec<IndexFile>> {
        let mut out = Vec::new();
        let top = match fs::read_dir(&self.dir) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", &self.dir, e)),
        };
        for sub in top {
            let sub = sub.map_err(|e| Error::io("list", &self.dir, e))?;
            let prefix = sub.file_name().to_string_lossy().into_owned();
            let Ok(files) = fs::read_dir(sub.path()) else { continue };
            for f in files {
                let f = f.map_err(|e| Error::io("list", sub.path(), e))?;
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".json") else { continue };
                let (rest, prev) = match stem.split_once(".delta-") {
                    Some((rest, prev)) => (rest, Some(prev.to_owned())),
                    None => (stem, None),
                };
                let digest = format!("{prefix}{rest}");
                if !is_digest(&digest) || prev.as_deref().is_some_and(|p| !is_digest(p)) {
                    continue;
                }
                let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(IndexFile { path: f.path(), digest, prev, bytes });
            }
        }
        Ok(out)
    }
}

static INDEX_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What [`index_object`] did.
#[derive(Debug)]
pub struct Indexed {
    /// The new index (not yet saved).
    pub index: TensorIndex,
    /// What packing did (`None` when the object was not looked at for
    /// packing: no format claims it, or its format is not registered).
    pub pack: Option<PackOutcome>,
    /// Bytes of the object decompressed to compute it.
    pub read_bytes: u64,
    /// The decompressed object, when it was decompressed (for [`delta`]'s
    /// `next_src`); its temporary file goes when this drops.
    pub spool: Option<Spool>,
}

/// Indexes object `digest` with `formats`: packs it first when it is
/// stored whole and a format claims it (see the module docs). Errors are
/// the object's (missing, corrupt); a format that fails is an index with
/// status [`IndexStatus::Failed`].
pub fn index_object(store: &ObjectStore, digest: &str, formats: &FormatRegistry) -> Result<Indexed> {
    let mut index = TensorIndex {
        version: INDEX_VERSION,
        digest: digest.to_owned(),
        bytes: 0,
        status: IndexStatus::NotClaimed,
        format: None,
        plugin: None,
        formats_seen: registry_names(formats),
        note: None,
        tensors: Vec::new(),
    };
    let (spool, layout, pack) = match store.manifest(digest)? {
        Some(m) => {
            index.format = Some(m.format.clone());
            index.plugin = m.plugin.clone();
            index.bytes = m.bytes;
            let Ok(format) = formats.get(&m.format) else {
                index.status = IndexStatus::Failed;
                index.note = Some(format!("its format `{}` is not registered here", m.format));
                return Ok(Indexed { index, pack: None, read_bytes: 0, spool: None });
            };
            let spool = store.spool(digest)?;
            let layout = format.checked_layout(&spool).map_err(|e| e.to_string());
            (spool, layout, PackOutcome::AlreadyPacked { format: m.format })
        }
        None => {
            let head = store.head(digest)?;
            let Some(format) = formats.sniff(&head) else {
                index.note = Some("no registered format claims it".into());
                return Ok(Indexed { index, pack: None, read_bytes: 0, spool: None });
            };
            index.format = Some(format.name().to_owned());
            index.plugin = format.provenance();
            let spool = store.spool(digest)?;
            let (outcome, layout) = store.pack_spooled(&spool, format.as_ref())?;
            let layout = match (layout, &outcome) {
                (Some(layout), _) => Ok(layout),
                (None, PackOutcome::KeptWhole { reason, .. }) => Err(reason.clone()),
                // Packed by another process meanwhile.
                (None, _) => format.checked_layout(&spool).map_err(|e| e.to_string()),
            };
            (spool, layout, outcome)
        }
    };
    index.bytes = spool.len();
    let read_bytes = spool.len();
    match layout {
        Ok(layout) => {
            index.status = IndexStatus::Indexed;
            if let PackOutcome::KeptWhole { reason, .. } = &pack {
                index.note = Some(format!("stored whole: {reason}"));
            }
            let manifest = store.manifest(digest)?;
            index.tensors = describe(&spool, &layout, manifest.as_ref())?;
        }
        Err(reason) => {
            index.status = IndexStatus::Failed;
            index.note = Some(reason);
        }
    }
    Ok(Indexed { index, pack: Some(pack), read_bytes, spool: Some(spool) })
}

/// The indexed tensors of `layout`, statistics computed from `spool`.
fn describe(spool: &Spool, layout: &Layout, manifest: Option<&Manifest>) -> Result<Vec<IndexedTensor>> {
    let chunk_at: HashMap<(u64, u64), &str> = manifest
        .map(|m| {
            let mut at = 0u64;
            m.chunks
                .iter()
                .map(|c| {
                    let key = (at, at + c.bytes);
                    at += c.bytes;
                    (key, c.digest.as_str())
                })
                .collect()
        })
        .unwrap_or_default();
    let stats = tensor_stats(spool, layout)?;
    Ok(layout
        .tensors
        .iter()
        .zip(stats)
        .map(|(t, stats)| IndexedTensor {
            name: t.name.clone(),
            dtype: t.dtype.as_str().to_owned(),
            shape: t.shape.clone(),
            offset: t.range.start,
            bytes: t.range.end - t.range.start,
            chunk: chunk_at.get(&(t.range.start, t.range.end)).map(|d| (*d).to_owned()),
            stats,
        })
        .collect())
}

/// Each tensor's statistics, its bytes read from `src` in pieces of at
/// most [`PIECE`] bytes, the pieces spread over threads.
pub fn tensor_stats(src: &(dyn ByteSource + Sync), layout: &Layout) -> Result<Vec<Option<TensorStats>>> {
    let mut pieces: Vec<(usize, Range<u64>)> = Vec::new();
    for (i, t) in layout.tensors.iter().enumerate() {
        let Some(size) = t.dtype.item_size().filter(|_| stats::has_stats(&t.dtype)) else { continue };
        let step = (PIECE / size).max(1) * size;
        let mut at = t.range.start;
        while at < t.range.end {
            let end = (at + step).min(t.range.end);
            pieces.push((i, at..end));
            at = end;
        }
    }
    let parts: Vec<(usize, PartialStats)> = pieces
        .into_par_iter()
        .map(|(i, r)| {
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            src.read_at(r.start, &mut buf)
                .map_err(|e| Error::io("read", format!("byte {} of the object", r.start), e))?;
            let dtype = &layout.tensors[i].dtype;
            Ok((i, PartialStats::of(dtype, &buf).unwrap_or_default()))
        })
        .collect::<Result<_>>()?;
    let mut out: Vec<Option<TensorStats>> =
        layout.tensors.iter().map(|t| stats::has_stats(&t.dtype).then(|| PartialStats::EMPTY.finish())).collect();
    let mut k = 0;
    while k < parts.len() {
        let i = parts[k].0;
        let end = k + parts[k..].iter().take_while(|(j, _)| *j == i).count();
        out[i] = Some(merge_all(parts[k..end].iter().map(|(_, p)| *p)).finish());
        k = end;
    }
    Ok(out)
}

/// The change of each tensor of `next` since `prev` (both indexes of
/// objects in `store`): 0 where both hold the tensor in the same chunk
/// (nothing read), else the L2 norm of the difference, read from the
/// objects (only the chunks the tensors lie in; `next_src`, when given,
/// serves `next`'s bytes instead). Returns the delta and the bytes read.
pub fn delta(
    store: &ObjectStore,
    next: &TensorIndex,
    prev: &TensorIndex,
    next_src: Option<&Spool>,
) -> Result<(DeltaIndex, u64)> {
    let by_name: HashMap<&str, &IndexedTensor> = prev.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut deltas: Vec<Option<f64>> = vec![None; next.tensors.len()];
    let mut todo: Vec<(usize, &IndexedTensor)> = Vec::new();
    for (i, t) in next.tensors.iter().enumerate() {
        let Some(p) = by_name.get(t.name.as_str()).filter(|p| p.dtype == t.dtype && p.shape == t.shape) else {
            continue;
        };
        if !stats::has_stats(&Dtype::parse(&t.dtype)) {
            continue;
        }
        if next.digest == prev.digest || (t.chunk.is_some() && t.chunk == p.chunk) {
            deltas[i] = Some(0.0);
        } else {
            todo.push((i, p));
        }
    }
    let mut read = 0u64;
    let mut start = 0;
    while start < todo.len() {
        let mut end = start;
        let mut size = 0u64;
        while end < todo.len() && (end == start || size + todo[end].1.bytes <= DELTA_BATCH) {
            size += todo[end].1.bytes;
            end += 1;
        }
        let batch = &todo[start..end];
        let mut old: HashMap<usize, Vec<u8>> = HashMap::with_capacity(batch.len());
        let ranges: Vec<Range<u64>> = batch.iter().map(|(_, p)| p.range()).collect();
        store.read_ranges(&prev.digest, &ranges, &mut |k, bytes| {
            old.insert(batch[k].0, bytes.to_vec());
            Ok(())
        })?;
        let ranges: Vec<Range<u64>> = batch.iter().map(|(i, _)| next.tensors[*i].range()).collect();
        let mut compare = |k: usize, bytes: &[u8]| {
            let i = batch[k].0;
            let dtype = Dtype::parse(&next.tensors[i].dtype);
            deltas[i] = old.get(&i).and_then(|o| stats::delta_l2(&dtype, bytes, o));
            Ok(())
        };
        match next_src {
            Some(spool) => {
                for (k, r) in ranges.iter().enumerate() {
                    compare(k, &spool.read_range(r.clone())?)?;
                }
            }
            None => store.read_ranges(&next.digest, &ranges, &mut compare)?,
        }
        read += 2 * size;
        start = end;
    }
    let d = DeltaIndex { version: INDEX_VERSION, digest: next.digest.clone(), prev: prev.digest.clone(), deltas };
    Ok((d, read))
}

#[cfg(test)]
mod tests;
