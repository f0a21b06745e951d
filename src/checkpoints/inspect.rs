//! Listing checkpoints and looking at one object.

use std::collections::HashMap;

use flor_core::objects::{Manifest, ObjectStore};
use flor_core::store::RunRow;
use flor_core::tensors::{self, IndexStatus, TensorIndex, TensorIndexes};

use crate::error::{Error, Result};
use crate::project::Project;

/// How an object is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAs {
    /// Not in the object store.
    Missing,
    /// One compressed file.
    Whole {
        /// Its size on disk.
        stored_bytes: u64,
    },
    /// Chunks plus a manifest.
    Chunked {
        /// The format that cut it.
        format: String,
        /// How many chunks.
        chunks: usize,
        /// The manifest's size plus its chunks' (a chunk shared with other
        /// objects is counted for each).
        stored_bytes: u64,
    },
    /// Its manifest cannot be read.
    Damaged {
        /// Why.
        what: String,
    },
}

impl StoredAs {
    /// `whole`, `packed`, `missing` or `damaged`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoredAs::Missing => "missing",
            StoredAs::Whole { .. } => "whole",
            StoredAs::Chunked { .. } => "packed",
            StoredAs::Damaged { .. } => "damaged",
        }
    }

    /// Bytes on disk, when stored.
    pub fn stored_bytes(&self) -> Option<u64> {
        match self {
            StoredAs::Whole { stored_bytes } | StoredAs::Chunked { stored_bytes, .. } => Some(*stored_bytes),
            _ => None,
        }
    }

    /// How object `digest` is stored in `objects`.
    pub fn of(objects: &ObjectStore, digest: &str) -> StoredAs {
        match objects.manifest(digest) {
            Ok(None) => objects
                .stored_size(digest)
                .ok()
                .flatten()
                .map_or(StoredAs::Missing, |stored_bytes| StoredAs::Whole { stored_bytes }),
            Ok(Some(m)) => {
                let own = objects.stored_size(digest).ok().flatten().unwrap_or(0);
                let chunks: u64 = m.chunks.iter().filter_map(|c| objects.stored_size(&c.digest).ok().flatten()).sum();
                StoredAs::Chunked { format: m.format, chunks: m.chunks.len(), stored_bytes: own + chunks }
            }
            Err(flor_core::Error::MissingObject { .. }) => StoredAs::Missing,
            Err(e) => StoredAs::Damaged { what: e.to_string() },
        }
    }
}

/// One checkpoint of a run, as `flor checkpoints ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The run's `tstamp`.
    pub tstamp: String,
    /// The checkpoint's name.
    pub name: String,
    /// Its line in the run's record file.
    pub line: u64,
    /// The loop iteration it ends: loop name and index (`None` outside
    /// loops).
    pub iteration: Option<(String, u64)>,
    /// The object's digest.
    pub digest: String,
    /// The object's length.
    pub bytes: u64,
    /// The serializer's name (`torch`, `bincode`, ...).
    pub format: String,
    /// How the object is stored.
    pub stored: StoredAs,
    /// How many tensors its index lists (`None`: not indexed, or no format
    /// describes it).
    pub tensors: Option<usize>,
}

/// What `flor checkpoints inspect` shows of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    /// Its digest.
    pub digest: String,
    /// How it is stored.
    pub stored: StoredAs,
    /// Its manifest, when chunked.
    pub manifest: Option<Manifest>,
    /// Its tensor index (made now when there was none).
    pub index: Option<TensorIndex>,
    /// The checkpoints of runs that are this object.
    pub checkpoints: Vec<CheckpointEntry>,
}

impl Project {
    /// The checkpoints of the run `run` (a `tstamp` or a prefix naming one
    /// run), or of every run, in run and record order.
    pub fn checkpoint_entries(&self, run: Option<&str>) -> Result<Vec<CheckpointEntry>> {
        let store = self.store()?;
        let runs = store.runs()?;
        let selected: Vec<&RunRow> = match run {
            Some(t) => vec![find_run(&runs, t, self.projid())?],
            None => runs.iter().collect(),
        };
        let indexes = TensorIndexes::new(self.objects());
        let mut out = Vec::new();
        for r in selected {
            let mut iterations: HashMap<u32, (String, u64)> = HashMap::new();
            store.scan_loops(&[r.key], &mut |_, span| {
                for l in span.expand() {
                    iterations.insert(l.ctx, (l.name.to_string(), l.iteration));
                }
            })?;
            for c in store.checkpoints(r.key)? {
                let index = indexes.load(&c.digest).filter(|ix| ix.status == IndexStatus::Indexed);
                out.push(CheckpointEntry {
                    tstamp: r.meta.tstamp.clone(),
                    iteration: c.ctx.and_then(|ctx| iterations.get(&ctx).cloned()),
                    stored: StoredAs::of(self.objects(), &c.digest),
                    tensors: index.map(|ix| ix.tensors.len()),
                    name: c.name,
                    line: c.line,
                    digest: c.digest,
                    bytes: c.bytes,
                    format: c.format,
                });
            }
        }
        Ok(out)
    }

    /// The checkpoint `name` of run `run` ending iteration `iteration` of
    /// its loop (`None`: the run's last checkpoint of that name).
    pub fn find_checkpoint(&self, run: &str, name: &str, iteration: Option<u64>) -> Result<CheckpointEntry> {
        let all = self.checkpoint_entries(Some(run))?;
        let tstamp = all.first().map(|c| c.tstamp.clone()).unwrap_or_else(|| run.to_owned());
        let named: Vec<&CheckpointEntry> = all.iter().filter(|c| c.name == name).collect();
        let found = match iteration {
            None => named.last().copied(),
            Some(i) => named.iter().rev().find(|c| c.iteration.as_ref().is_some_and(|(_, it)| *it == i)).copied(),
        };
        found.cloned().ok_or_else(|| {
            let mut available: Vec<String> = all
                .iter()
                .map(|c| match &c.iteration {
                    Some((l, i)) => format!("{} ({l} {i})", c.name),
                    None => c.name.clone(),
                })
                .collect();
            available.dedup();
            let name = match iteration {
                Some(i) => format!("{name}` at iteration `{i}"),
                None => name.to_owned(),
            };
            Error::NoCheckpoint { tstamp, name, available }
        })
    }

    /// Object `digest` (or the one stored object whose digest starts with
    /// it): how it is stored, its manifest, its tensors with their
    /// statistics (indexed now with the project's formats when it was not,
    /// which packs an object stored whole that a format claims), and the
    /// checkpoints that are it.
    pub fn object_info(&self, digest: &str) -> Result<ObjectInfo> {
        let objects = self.objects();
        let checkpoints = self.checkpoint_entries(None)?;
        let digest = resolve_digest(objects, digest, &checkpoints)?;
        let mut index = TensorIndexes::new(objects).load(&digest);
        let formats = self.formats();
        if objects.contains(&digest) && index.as_ref().is_none_or(|ix| !ix.is_current(&formats)) {
            let indexed = tensors::index_object(objects, &digest, &formats)?;
            TensorIndexes::new(objects).save(&indexed.index)?;
            index = Some(indexed.index);
        }
        let manifest = objects.manifest(&digest).ok().flatten();
        Ok(ObjectInfo {
            stored: StoredAs::of(objects, &digest),
            manifest,
            index,
            checkpoints: checkpoints.into_iter().filter(|c| c.digest == digest).collect(),
            digest,
        })
    }
}

/// The run whose `tstamp` is `t`, or the one run whose `tstamp` starts
/// with it.
fn find_run<'a>(runs: &'a [RunRow], t: &str, projid: &str) -> Result<&'a RunRow> {
    if let Some(r) = runs.iter().find(|r| r.meta.tstamp == t) {
        return Ok(r);
    }
    let mut prefixed = runs.iter().filter(|r| r.meta.tstamp.starts_with(t));
    match (prefixed.next(), prefixed.next()) {
        (Some(r), None) if !t.is_empty() => Ok(r),
        _ => Err(Error::UnknownRun { projid: projid.to_owned(), tstamp: t.to_owned() }),
    }
}

/// The full digest `prefix` names: itself, or the one stored object or
/// checkpoint object starting with it.
fn resolve_digest(objects: &ObjectStore, prefix: &str, checkpoints: &[CheckpointEntry]) -> Result<String> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() == 64 {
        return Ok(prefix);
    }
    let mut found: Vec<String> = objects
        .stored_files()?
        .into_iter()
        .map(|f| f.digest)
        .chain(checkpoints.iter().map(|c| c.digest.clone()))
        .filter(|d| !prefix.is_empty() && d.starts_with(&prefix))
        .collect();
    found.sort();
    found.dedup();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(Error::UnknownObject {
            prefix,
            why: if n == 0 {
                "no stored object or checkpoint has a digest starting so".into()
            } else {
                format!("{n} objects have digests starting so; give more of it")
            },
        }),
    }
}
