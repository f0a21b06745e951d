//! Checkpoint upkeep: packing checkpoint objects, their tensor statistics
//! (the query database's `tensors` view), listing, inspecting, verifying
//! and garbage-collecting the object store.
//!
//! # Packing and tensor statistics
//!
//! A store with tensor statistics queues every forward checkpoint it
//! ingests ([`flor_core::Store::tensor_queue`]). Once the run stopped
//! recording, [`Project::pack_checkpoints`] takes each queued checkpoint in
//! run and line order and:
//!
//! 1. finds its object's tensor index (`.flor/objects/tensors/`, see
//!    [`flor_core::tensors`]) or makes it: an object stored whole that a
//!    format claims is packed into chunks on the way; one no format claims
//!    is only sniffed;
//! 2. finds the delta against the run's previous checkpoint of the same
//!    name (indexed first if it is not yet), or computes it;
//! 3. stores the checkpoint's tensor rows, which takes it off the queue.
//!
//! Work that reads objects counts against a budget ([`PackBudget`]): the
//! `flor` command calls this after syncing, with the budget of
//! `[checkpoints]` in `.flor/config.toml`, so every command does a bounded
//! part and the rest waits for the next one; `flor checkpoints pack` has no
//! budget. An object is started only when its size fits in what is left,
//! except the first of a call (so one larger than the whole budget is
//! packed too, alone); one no format claims costs only its first bytes. Checkpoints whose indexes exist already (after `flor rebuild`,
//! on a clone that has the objects) cost no budget. A checkpoint whose
//! object is missing is taken off the queue and reported
//! ([`PackReport::missing`]); `flor rebuild` or `flor checkpoints pack
//! --all` looks again. Failures of one object are notes, never errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flor_core::formats::FormatRegistry;
use flor_core::objects::{ObjectStore, PackOutcome, Spool};
use flor_core::store::{QueuedCheckpoint, RunKey, Store, TensorRow};
use flor_core::tensors::{self, IndexStatus, TensorIndex, TensorIndexes};
use flor_core::CheckpointMeta;

use crate::config::Config;
use crate::error::Result;
use crate::project::Project;

mod gc;
mod inspect;

pub use gc::{GcOptions, GcReport, VerifyProblem, VerifyReport};
pub use inspect::{CheckpointEntry, ObjectInfo, StoredAs};

/// How much one call of [`Project::pack_checkpoints`] may do: it stops
/// starting work that reads objects once either is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackBudget {
    /// Bytes of objects read (decompressed for packing and statistics,
    /// read for deltas).
    pub bytes: u64,
    /// Time spent.
    pub time: Duration,
}

impl PackBudget {
    /// The default budget of each `flor` command: 512 MiB or 2 s.
    pub const DEFAULT: PackBudget = PackBudget { bytes: 512 << 20, time: Duration::from_secs(2) };
}

/// The `[checkpoints]` settings of `.flor/config.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpkeepSettings {
    /// The budget of each command (zero: only checkpoints whose indexes
    /// exist already).
    pub(crate) budget: PackBudget,
}

impl UpkeepSettings {
    pub(crate) fn of(config: &Config) -> UpkeepSettings {
        let bytes = config.auto_pack_mb.map_or(PackBudget::DEFAULT.bytes, |mb| mb << 20);
        let time = config.auto_pack_seconds.map_or(PackBudget::DEFAULT.time, Duration::from_secs);
        let budget =
            if bytes == 0 { PackBudget { bytes: 0, time: Duration::ZERO } } else { PackBudget { bytes, time } };
        UpkeepSettings { budget }
    }
}

/// What [`Project::pack_checkpoints`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackOptions {
    /// At most this much work (`None`: everything queued).
    pub budget: Option<PackBudget>,
    /// Queue every forward checkpoint again first: objects no format
    /// claimed, or that a format failed to describe, are looked at again,
    /// missing objects looked for again, every checkpoint's tensors stored
    /// anew.
    pub all: bool,
}

/// Progress of [`Project::pack_checkpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackProgress {
    /// Checkpoints done.
    pub done: usize,
    /// Checkpoints queued.
    pub total: usize,
    /// Bytes of objects read so far.
    pub read_bytes: u64,
    /// Time spent so far.
    pub elapsed: Duration,
}

/// A checkpoint whose object is not in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingObject {
    /// The run's `tstamp`.
    pub tstamp: String,
    /// The checkpoint's name.
    pub name: String,
    /// The object's digest.
    pub digest: String,
}

/// What [`Project::pack_checkpoints`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackReport {
    /// Checkpoints whose tensors were stored (possibly none).
    pub checkpoints: usize,
    /// Tensor rows stored.
    pub tensors: usize,
    /// Objects looked at with the formats (not those indexed before).
    pub objects: usize,
    /// Of those, objects stored whole until now and packed now.
    pub packed: usize,
    /// Of those, objects stored in chunks already.
    pub already_packed: usize,
    /// Of those, objects no format claims.
    pub not_claimed: usize,
    /// Objects a format claimed but that stay whole: (digest, why).
    pub kept_whole: Vec<(String, String)>,
    /// Bytes of the monolithic files of the packed objects.
    pub bytes_before: u64,
    /// Bytes written packing them (new chunks and manifests).
    pub bytes_after: u64,
    /// Bytes of objects read.
    pub read_bytes: u64,
    /// Checkpoints whose objects are missing.
    pub missing: Vec<MissingObject>,
    /// Problems with single objects (each left as it was).
    pub notes: Vec<String>,
    /// Checkpoints still waiting (the budget ran out).
    pub waiting: usize,
}

impl PackReport {
    /// The missing objects in a sentence (how many, of how many runs,
    /// and what to do), when there are any.
    pub fn missing_note(&self) -> Option<String> {
        if self.missing.is_empty() {
            return None;
        }
        let runs: HashSet<&str> = self.missing.iter().map(|m| m.tstamp.as_str()).collect();
        let objects: HashSet<&str> = self.missing.iter().map(|m| m.digest.as_str()).collect();
        Some(format!(
            "{} checkpoint(s) of {} run(s) have no object in .flor/objects ({} object(s) missing: a clone without \
             the objects?), so the tensors view lacks their tensors; copy .flor/objects from where the runs were \
             recorded, then run `flor rebuild`",
            self.missing.len(),
            runs.len(),
            objects.len()
        ))
    }
}

/// How many queued checkpoints one call takes at most.
const QUEUE_LIMIT: usize = 1 << 20;

/// Checkpoints' tensor rows stored per ingestion group (one transaction;
/// also at least every second).
const GROUP_CHECKPOINTS: usize = 256;

impl Project {
    /// Packs the checkpoint objects of runs that stopped recording and
    /// stores their tensor statistics (see the module docs), within
    /// `options.budget`, calling `progress` after each checkpoint. Errors
    /// are the query database's; an object that cannot be read or
    /// described is a note in the report.
    pub fn pack_checkpoints(
        &mut self,
        options: &PackOptions,
        progress: &mut dyn FnMut(&PackProgress),
    ) -> Result<PackReport> {
        let objects = self.objects().clone();
        let formats = Arc::clone(&self.formats);
        let store = self.store_mut()?;
        if options.all {
            store.requeue_tensors()?;
        }
        let queue = store.tensor_queue(QUEUE_LIMIT)?;
        let mut packer = Packer::new(objects, options.budget, || formats.get());
        packer.again = options.all;
        if queue.is_empty() {
            return Ok(packer.report);
        }
        packer.run(store, &queue, progress)?;
        Ok(packer.report)
    }

    /// The automatic part of [`Project::pack_checkpoints`] that each `flor`
    /// command does after syncing: the budget of `[checkpoints]` in
    /// `.flor/config.toml` (with `auto_pack_mb = 0`, only checkpoints whose
    /// tensor indexes exist already, such as after `flor rebuild`).
    pub fn pack_checkpoints_automatically(&mut self, progress: &mut dyn FnMut(&PackProgress)) -> Result<PackReport> {
        let budget = self.upkeep.budget;
        self.pack_checkpoints(&PackOptions { budget: Some(budget), all: false }, progress)
    }
}

/// What is known about an object while packing.
#[derive(Clone)]
enum Got {
    Index(Arc<TensorIndex>),
    Missing,
    /// Could not be read (a note says why).
    Broken,
    /// Needs work the budget has no room for.
    Later,
}

/// One call's work (see [`Project::pack_checkpoints`]).
struct Packer<F> {
    objects: ObjectStore,
    indexes: TensorIndexes,
    formats: Option<Arc<FormatRegistry>>,
    make_formats: Option<F>,
    budget: Option<PackBudget>,
    started: Instant,
    known: HashMap<String, Got>,
    /// The object indexed last, decompressed (its delta reads it).
    spool: Option<Spool>,
    /// Look again at objects whose index lists no tensors (a format that
    /// failed may not fail again).
    again: bool,
    report: PackReport,
}

impl<F: FnOnce() -> Arc<FormatRegistry>> Packer<F> {
    fn new(objects: ObjectStore, budget: Option<PackBudget>, make_formats: F) -> Self {
        Packer {
            indexes: TensorIndexes::new(&objects),
            objects,
            formats: None,
            make_formats: Some(make_formats),
            budget,
            started: Instant::now(),
            known: HashMap::new(),
            spool: None,
            again: false,
            report: PackReport::default(),
        }
    }

    fn formats(&mut self) -> Arc<FormatRegistry> {
        if let Some(f) = &self.formats {
            return f.clone();
        }
        let f = self.make_formats.take().map_or_else(FormatRegistry::shared_native, |make| make());
        self.formats = Some(f.clone());
        f
    }

    fn spent(&self) -> bool {
        self.budget.is_some_and(|b| self.report.read_bytes >= b.bytes || self.started.elapsed() >= b.time)
    }

    /// Whether work reading `bytes` more may start: within the budget, or
    /// the first work of this call (so an object larger than the whole
    /// budget is still packed, one per call). A zero budget starts none.
    fn room_for(&self, bytes: u64) -> bool {
        match self.budget {
            None => true,
            Some(b) if b.bytes == 0 => false,
            Some(b) => {
                (self.report.read_bytes == 0 && self.started.elapsed() < b.time)
                    || (!self.spent() && self.report.read_bytes.saturating_add(bytes) <= b.bytes)
            }
        }
    }

    fn run(
        &mut self,
        store: &mut dyn Store,
        queue: &[QueuedCheckpoint],
        progress: &mut dyn FnMut(&PackProgress),
    ) -> Result<()> {
        let mut checkpoints: HashMap<RunKey, Vec<CheckpointMeta>> = HashMap::new();
        // Rows wait here and go to the store together: no write
        // transaction stays open while objects are packed (other processes
        // would wait for it).
        let mut pending: Vec<(RunKey, u64, Vec<TensorRow>)> = Vec::new();
        let mut flushed = Instant::now();
        for (done, q) in queue.iter().enumerate() {
            let list = match checkpoints.entry(q.run) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(store.checkpoints(q.run)?),
            };
            let c = &q.checkpoint;
            let prev = list.iter().filter(|p| p.name == c.name && p.line < c.line).max_by_key(|p| p.line);
            match self.rows(q, prev) {
                Some(rows) => {
                    self.report.checkpoints += 1;
                    self.report.tensors += rows.len();
                    pending.push((q.run, c.line, rows));
                }
                None => self.report.waiting += 1,
            }
            if pending.len() >= GROUP_CHECKPOINTS || flushed.elapsed() >= Duration::from_secs(1) {
                flush(store, &mut pending)?;
                flushed = Instant::now();
            }
            progress(&PackProgress {
                done: done + 1,
                total: queue.len(),
                read_bytes: self.report.read_bytes,
                elapsed: self.started.elapsed(),
            });
        }
        flush(store, &mut pending)
    }

    /// The tensor rows of checkpoint `q` (none for an object without
    /// tensors or a missing one); `None`: it waits (budget).
    fn rows(&mut self, q: &QueuedCheckpoint, prev: Option<&CheckpointMeta>) -> Option<Vec<TensorRow>> {
        let c = &q.checkpoint;
        if !c.kept() {
            // A setup load recorded by digest only (flor_core::kept): no object, no tensors.
            return Some(Vec::new());
        }
        let index = match self.index(&c.digest, c.bytes) {
            Got::Index(ix) => ix,
            Got::Later => return None,
            Got::Missing => {
                let m = crate::checkpoints::MissingObject {
                    tstamp: q.tstamp.clone(),
                    name: c.name.clone(),
                    digest: c.digest.clone(),
                };
                self.report.missing.push(m);
                return Some(Vec::new());
            }
            Got::Broken => return Some(Vec::new()),
        };
        if index.status != IndexStatus::Indexed {
            return Some(Vec::new());
        }
        let deltas = match prev {
            Some(p) => self.delta(&index, p)?,
            None => Vec::new(),
        };
        Some(
            index
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| TensorRow {
                    tensor: t.name.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                    bytes: t.bytes,
                    l2: t.stats.map(|s| s.l2),
                    mean: t.stats.and_then(|s| s.mean),
                    std: t.stats.and_then(|s| s.std),
                    min: t.stats.and_then(|s| s.min),
                    max: t.stats.and_then(|s| s.max),
                    nonfinite: t.stats.map(|s| s.nonfinite),
                    delta_l2: deltas.get(i).copied().flatten(),
                })
                .collect(),
        )
    }

    /// The index of object `digest` (`bytes` long): loaded, or made within
    /// the budget.
    fn index(&mut self, digest: &str, bytes: u64) -> Got {
        if let Some(got) = self.known.get(digest) {
            return got.clone();
        }
        if let Some(ix) = self.indexes.load(digest) {
            if ix.status == IndexStatus::Indexed || (!self.again && ix.is_current(&self.formats())) {
                let got = Got::Index(Arc::new(ix));
                self.known.insert(digest.to_owned(), got.clone());
                return got;
            }
        }
        if !self.objects.contains(digest) {
            self.known.insert(digest.to_owned(), Got::Missing);
            return Got::Missing;
        }
        // An object no format claims costs its first bytes only; any
        // other, its size (decompressed, then read for statistics).
        if self.spent() || (!self.room_for(bytes) && self.claimed(digest)) {
            return Got::Later;
        }
        let formats = self.formats();
        let got = match tensors::index_object(&self.objects, digest, &formats) {
            Ok(indexed) => {
                self.account(digest, &indexed);
                if let Err(e) = self.indexes.save(&indexed.index) {
                    self.report.notes.push(format!("object {digest}: its tensor index was not saved: {e}"));
                }
                self.spool = indexed.spool;
                Got::Index(Arc::new(indexed.index))
            }
            Err(e) => {
                self.report.notes.push(format!("object {digest} was left as it is: {e}"));
                Got::Broken
            }
        };
        self.known.insert(digest.to_owned(), got.clone());
        got
    }

    /// Whether `digest` was just indexed (its delta reads the spool at
    /// hand and only the earlier object's changed tensors: part of the
    /// same work).
    fn known_spooled(&self, digest: &str) -> bool {
        self.spool.as_ref().is_some_and(|s| s.id().digest == digest)
    }

    /// Whether indexing object `digest` would read all of it: it is
    /// chunked, or a format claims its first bytes (an unreadable head
    /// counts as claimed, so it waits like any large object).
    fn claimed(&mut self, digest: &str) -> bool {
        if self.objects.is_chunked(digest).unwrap_or(true) {
            return true;
        }
        let formats = self.formats();
        self.objects.head(digest).map_or(true, |head| formats.sniff(&head).is_some())
    }

    /// Counts what indexing an object did.
    fn account(&mut self, digest: &str, indexed: &tensors::Indexed) {
        let r = &mut self.report;
        r.objects += 1;
        r.read_bytes += indexed.read_bytes;
        match &indexed.pack {
            Some(PackOutcome::Packed { stored_before, new_bytes, .. }) => {
                r.packed += 1;
                r.bytes_before += stored_before;
                r.bytes_after += new_bytes;
            }
            Some(PackOutcome::AlreadyPacked { .. }) => r.already_packed += 1,
            Some(PackOutcome::KeptWhole { reason, .. }) => r.kept_whole.push((digest.to_owned(), reason.clone())),
            // `NotClaimed` (a format's sniff said yes, then no).
            Some(_) => r.not_claimed += 1,
            None if indexed.index.status == IndexStatus::NotClaimed => r.not_claimed += 1,
            None => {
                if let Some(note) = &indexed.index.note {
                    r.notes.push(format!("object {digest}: {note}"));
                }
            }
        }
    }

    /// The deltas of `next` against object `prev` (empty: none); `None`:
    /// they wait (budget).
    fn delta(&mut self, next: &TensorIndex, prev: &CheckpointMeta) -> Option<Vec<Option<f64>>> {
        let (prev, prev_bytes) = (prev.digest.as_str(), prev.bytes);
        let prev_index = match self.index(prev, prev_bytes) {
            Got::Index(ix) if ix.status == IndexStatus::Indexed => ix,
            Got::Later => return None,
            _ => return Some(Vec::new()),
        };
        if let Some(d) = self.indexes.load_delta(&next.digest, prev) {
            return Some(d.deltas);
        }
        // At most both objects' tensors are read.
        if !self.room_for(next.bytes.saturating_add(prev_bytes)) && !self.known_spooled(&next.digest) {
            return None;
        }
        let spool = self.spool.as_ref().filter(|s| s.id().digest == next.digest);
        match tensors::delta(&self.objects, next, &prev_index, spool) {
            Ok((d, read)) => {
                self.report.read_bytes += read;
                if let Err(e) = self.indexes.save_delta(&d) {
                    self.report.notes.push(format!("object {}: its delta was not saved: {e}", next.digest));
                }
                Some(d.deltas)
            }
            Err(e) => {
                self.report.notes.push(format!("object {}: no delta against {prev}: {e}", next.digest));
                Some(Vec::new())
            }
        }
    }
}

/// Stores the pending checkpoints' tensor rows in one ingestion group.
fn flush(store: &mut dyn Store, pending: &mut Vec<(RunKey, u64, Vec<TensorRow>)>) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    store.begin_group()?;
    let stored = pending.iter().try_for_each(|(run, line, rows)| store.ingest_tensors(*run, *line, rows));
    match stored {
        Ok(()) => store.end_group(true)?,
        Err(e) => {
            let _ = store.end_group(false);
            return Err(e.into());
        }
    }
    pending.clear();
    Ok(())
}

/// Bytes as a short human-readable size (`1.5 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
