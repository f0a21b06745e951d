//! Ingesting many run refs at once (a new clone's first query, a rebuild,
//! a teammate's fetched runs): worker threads read the refs' record files
//! from git and parse them ahead of one writer, the calling thread, which
//! hands them to the store in ref order, in the same ingestion groups, with
//! the same problems reported as reading each ref in turn. Reading blobs
//! (zlib) and parsing lines is most of the work; a store has one writer.
//!
//! A worker reads a commit's files through a [`Recording`]: the steps
//! [`ingest_commit`] would take, computed as if none of the commit's record
//! files had been ingested before (a finished run's usual case). The writer
//! checks that assumption against the store before replaying the steps;
//! when a file was partly ingested already (a run that was live at an
//! earlier query), it reads the commit's files again itself, from the
//! bytes the worker read from git. How far workers run ahead is bounded
//! (in refs and in bytes), so memory stays small however many refs are
//! pending.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{mpsc, Condvar, Mutex, MutexGuard, PoisonError};

use flor_core::record::Parsed;
use flor_core::store::FileProgress;
use flor_core::{pause, RunMeta, Source, Store};
use flor_git::RepoReader;

use super::{
    in_groups, ingest_commit, mark_commit, read_commit, CommitFiles, Progress, Sink, Step, SyncProgress, SyncReport,
};
use crate::error::Result;

/// Fewer pending refs than this are read on the calling thread alone
/// (starting workers, each opening the repository, costs more).
const MIN_REFS_FOR_WORKERS: usize = 8;

/// At most this many worker threads.
const MAX_WORKERS: usize = 8;

/// Refs read ahead of the writer per worker, at most.
const AHEAD_PER_WORKER: usize = 8;

/// Record file bytes read ahead of the writer, at most (a worker may start
/// one more commit under the budget, and go over it by that commit).
const AHEAD_BYTES: usize = 64 << 20;

/// Ingests the commits `pending` (`(ref name, commit sha)`, in order): each
/// commit's record files and its `commit:<sha>` marker, in ingestion
/// groups. `reader` serves the calling thread.
pub(super) fn ingest_refs(
    root: &Path,
    reader: &RepoReader,
    store: &mut dyn Store,
    report: &mut SyncReport,
    pending: &[(String, String)],
    progress: Progress<'_>,
) -> Result<()> {
    let total = pending.len();
    let mut tick = |done: usize, records: u64| progress(&SyncProgress { done, total, records });
    let workers = workers_for(total);
    if workers == 0 {
        in_groups(store, report, pending.iter().enumerate(), |store, report, (done, (refname, sha))| {
            tick(done, report.records);
            let forward = ingest_commit(store, refname, &read_commit(reader, sha), report)?;
            commit_ingested(store, sha, forward)
        })?;
        tick(total, report.records);
        return Ok(());
    }
    let feed = Feed::new(total, workers * AHEAD_PER_WORKER);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..workers {
            let (tx, feed) = (tx.clone(), &feed);
            scope.spawn(move || work(root, pending, feed, &tx));
        }
        drop(tx);
        // However the writer leaves (an error), the workers stop.
        let _stop = StopOnDrop(&feed);
        let mut inbox = Inbox { rx, early: HashMap::new() };
        in_groups(store, report, pending.iter().enumerate(), |store, report, (done, (refname, sha))| {
            tick(done, report.records);
            let prepared = inbox.take(done);
            feed.consumed(done, prepared.as_ref().map_or(0, |p| p.bytes));
            let forward = match prepared {
                Some(p) => replay(store, refname, p, report)?,
                // No worker could read it (none could open the repository,
                // or reading it panicked): read it here.
                None => ingest_commit(store, refname, &read_commit(reader, sha), report)?,
            };
            commit_ingested(store, sha, forward)
        })
    })?;
    tick(total, report.records);
    Ok(())
}

/// How many workers read `total` pending refs (0: none, the calling thread
/// reads them).
fn workers_for(total: usize) -> usize {
    if total < MIN_REFS_FOR_WORKERS {
        return 0;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WORKERS)
}

/// After a commit's files: its marker, when it has a forward file whose
/// header was read.
fn commit_ingested(store: &mut dyn Store, sha: &str, forward: Option<RunMeta>) -> Result<()> {
    if let Some(meta) = forward {
        mark_commit(store, sha, &meta)?;
    }
    pause::point(pause::SYNC_AFTER_RUN);
    Ok(())
}

/// A commit read and parsed by a worker, waiting for the writer.
struct Prepared {
    /// Its record files, as read from git.
    files: CommitFiles,
    /// Their bytes, for the read-ahead budget.
    bytes: usize,
    /// What ingesting them into a store that has none of them does.
    recording: Recording,
    /// The problems and counts of that ingestion.
    report: SyncReport,
    /// Its result: the forward file's metadata.
    forward: Result<Option<RunMeta>>,
}

/// Reads and parses the commit `sha` of `refname` (on a worker).
fn prepare(reader: &RepoReader, refname: &str, sha: &str) -> Prepared {
    let files = read_commit(reader, sha);
    let bytes = files.as_ref().map_or(0, |files| files.iter().map(|(_, b)| b.len()).sum());
    let (mut recording, mut report) = (Recording::default(), SyncReport::default());
    let forward = ingest_commit(&mut recording, refname, &files, &mut report);
    Prepared { files, bytes, recording, report, forward }
}

/// Hands a prepared commit to the store (on the writer): its recorded
/// steps when none of the files they assumed new has been ingested in
/// part, else the files read again against the store.
fn replay(store: &mut dyn Store, refname: &str, p: Prepared, report: &mut SyncReport) -> Result<Option<RunMeta>> {
    for label in &p.recording.assumed_new {
        if store.file_progress(label)?.is_some_and(|f| f.offset > 0) {
            return ingest_commit(store, refname, &p.files, report);
        }
    }
    for s in &p.recording.steps {
        let step = Step { run: &s.run, source: s.source, file: &s.file, progress: s.progress };
        store.ingest(&step.batch(&s.parsed))?;
    }
    let done = p.report;
    report.records += done.records;
    report.files += done.files;
    report.marked_failed.extend(done.marked_failed);
    report.problems.extend(done.problems);
    report.notes.extend(done.notes);
    p.forward
}

/// A [`Sink`] that keeps the steps of an ingestion instead of storing
/// them, assuming that the store has nothing of the files it is asked
/// about (and noting which those were).
#[derive(Default)]
struct Recording {
    /// Files whose progress was assumed to be none.
    assumed_new: Vec<String>,
    steps: Vec<RecordedStep>,
}

/// An owned [`Step`] with its rows.
struct RecordedStep {
    run: RunMeta,
    source: Source,
    file: String,
    progress: FileProgress,
    parsed: Parsed,
}

impl Sink for Recording {
    fn progress_of(&mut self, label: &str) -> Result<Option<FileProgress>> {
        // A file read earlier in the same commit (two paths with one name)
        // is where its steps left it.
        if let Some(s) = self.steps.iter().rev().find(|s| s.file == label) {
            return Ok(Some(s.progress));
        }
        if !self.assumed_new.iter().any(|l| l == label) {
            self.assumed_new.push(label.to_owned());
        }
        Ok(None)
    }

    fn put(&mut self, step: Step<'_>, parsed: Parsed) -> Result<()> {
        self.steps.push(RecordedStep {
            run: step.run.clone(),
            source: step.source,
            file: step.file.to_owned(),
            progress: step.progress,
            parsed,
        });
        Ok(())
    }
}

/// A worker: claims refs in order, reads and parses them, sends them to
/// the writer; stops when none is left, the writer stopped, or the
/// repository cannot be opened (the writer then reads what no worker
/// sent).
fn work(root: &Path, pending: &[(String, String)], feed: &Feed, tx: &mpsc::Sender<(usize, Option<Prepared>)>) {
    let Ok(reader) = RepoReader::open(root) else { return };
    while let Some(i) = feed.claim() {
        let (refname, sha) = &pending[i];
        // A panic is the writer's to meet again, reading the ref itself.
        let prepared = catch_unwind(AssertUnwindSafe(|| prepare(&reader, refname, sha))).ok();
        feed.read(prepared.as_ref().map_or(0, |p| p.bytes));
        if tx.send((i, prepared)).is_err() {
            return;
        }
    }
}

/// What the workers sent, in the order the writer takes it.
struct Inbox {
    rx: mpsc::Receiver<(usize, Option<Prepared>)>,
    /// Sent before the writer wanted it.
    early: HashMap<usize, Option<Prepared>>,
}

impl Inbox {
    /// Ref `i` as prepared by a worker; `None` when no worker prepared it
    /// (all are gone) or its preparation panicked.
    fn take(&mut self, i: usize) -> Option<Prepared> {
        loop {
            if let Some(p) = self.early.remove(&i) {
                return p;
            }
            let (j, p) = self.rx.recv().ok()?;
            self.early.insert(j, p);
        }
    }
}

/// Which refs workers may claim: in order, at most `window` refs and about
/// [`AHEAD_BYTES`] ahead of the writer, and always the one the writer
/// waits for.
struct Feed {
    state: Mutex<FeedState>,
    changed: Condvar,
    total: usize,
    window: usize,
}

#[derive(Default)]
struct FeedState {
    /// The next ref to claim.
    next: usize,
    /// Refs the writer took.
    consumed: usize,
    /// Bytes read and not yet taken by the writer.
    bytes: usize,
    stopped: bool,
}

impl Feed {
    fn new(total: usize, window: usize) -> Feed {
        Feed { state: Mutex::new(FeedState::default()), changed: Condvar::new(), total, window }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next ref to read, once the writer is close enough; `None` when
    /// none is left or the writer stopped.
    fn claim(&self) -> Option<usize> {
        let mut s = self.lock();
        loop {
            if s.stopped || s.next >= self.total {
                return None;
            }
            if s.next == s.consumed || (s.next < s.consumed + self.window && s.bytes < AHEAD_BYTES) {
                s.next += 1;
                return Some(s.next - 1);
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A worker read `bytes` for a ref.
    fn read(&self, bytes: usize) {
        self.lock().bytes += bytes;
    }

    /// The writer took ref `i` (of `bytes`).
    fn consumed(&self, i: usize, bytes: usize) {
        let mut s = self.lock();
        s.consumed = i + 1;
        s.bytes = s.bytes.saturating_sub(bytes);
        drop(s);
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }
}

/// Stops the workers when the writer is done or gone.
struct StopOnDrop<'a>(&'a Feed);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}
