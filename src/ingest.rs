//! Keeping the query database in step with the record files: incremental
//! ingestion of live runs' files, finalizing runs whose process died, and
//! reading finished runs' records from their git refs.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flor_core::pause;
use flor_core::record::{parse_lines, Contexts, LineEncoder, Parsed, RecordReader};
use flor_core::store::{FileProgress, IngestBatch};
use flor_core::{RunEnd, RunMeta, RunStatus, Source, Store};

use crate::error::{Error, Result};

mod ahead;

pub use flor_core::layout::{RECORDS_DIR, RUNS_REF_PREFIX};
/// Bytes parsed and ingested per transaction.
const CHUNK_BYTES: usize = 8 << 20;

/// A record that could not be read (the others were ingested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The record file (local path or `ref:path` in git).
    pub file: String,
    /// 1-based line, when the problem is one line.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What a sync or rebuild did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Value records ingested.
    pub records: u64,
    /// Record files (or spans) ingested.
    pub files: u64,
    /// Runs found dead while `running` and marked `failed` (their tstamps).
    pub marked_failed: Vec<String>,
    /// Lines or files that could not be read.
    pub problems: Vec<Problem>,
    /// Informational notes (e.g. a partial last line dropped after a kill).
    pub notes: Vec<String>,
}

pub(crate) use flor_core::layout::{label_for, ref_for};
use flor_core::layout::{replay_number, replay_segment};

/// Line numbers of a run's records must be unique per source: the records
/// of each replay file get their own range
/// ([`flor_core::layout::replay_line_base`]).
fn replay_line_base(label: &str) -> u64 {
    let Some(n) = replay_number(label) else { return 0 };
    flor_core::layout::replay_line_base(n, replay_segment(label).unwrap_or(0))
}

/// A forward record file's contexts, learned from its bytes when a replay
/// file of its run first needs them (or handed over by its ingestion).
pub(crate) struct ForwardContexts<'a> {
    bytes: &'a [u8],
    known: Option<Arc<Contexts>>,
}

impl<'a> ForwardContexts<'a> {
    /// The contexts of the forward file `bytes` (none when the run has no
    /// forward file: its replays' contexts are then all refused).
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        ForwardContexts { bytes, known: None }
    }

    fn get(&mut self) -> Arc<Contexts> {
        let bytes = self.bytes;
        Arc::clone(self.known.get_or_insert_with(|| {
            let mut reader = RecordReader::new();
            reader.skip(bytes);
            Arc::new(reader.into_contexts())
        }))
    }
}

/// Whether `label` can hold `source` records of run `run_id`: its forward
/// file's label, one of its replay files', or its extraction file's.
fn label_fits(label: &str, run_id: &str, source: Source) -> bool {
    match source {
        Source::Forward => label == label_for(run_id),
        Source::Extract => label == flor_core::layout::extract_label(run_id),
        Source::Replay => {
            label.strip_prefix(run_id).is_some_and(|rest| rest.starts_with(".replay-"))
                && replay_number(label).is_some()
        }
    }
}

/// Ingests the not yet ingested whole lines of one record file, each line
/// checked by a [`RecordReader`]. `run`: the contexts of the run's forward
/// file; a replay file's lines are checked against them, and a forward
/// file read to its end hands its own over. Returns the run's metadata as
/// of the file's end (status from its `end` line when present), or `None`
/// when the file has no readable header or its header does not fit its
/// name.
pub(crate) fn ingest_bytes<S: Sink + ?Sized>(
    store: &mut S,
    label: &str,
    display: &str,
    bytes: &[u8],
    run: Option<&mut ForwardContexts<'_>>,
    report: &mut SyncReport,
) -> Result<Option<RunMeta>> {
    let Some((mut meta, source)) = read_header(label, display, bytes, report) else { return Ok(None) };
    apply_end(&mut meta, last_line_end(bytes));
    let progress = store.progress_of(label)?.unwrap_or_default();
    let mut offset = progress.offset as usize;
    if offset > bytes.len() {
        report.problems.push(Problem {
            file: display.to_owned(),
            line: None,
            message: format!(
                "the file is shorter ({} bytes) than what was already ingested ({offset} bytes); it was rewritten. Run `flor rebuild`",
                bytes.len()
            ),
        });
        return Ok(Some(meta));
    }
    if offset == bytes.len() {
        report.files += 1;
        return Ok(Some(meta));
    }
    let mut reader = RecordReader::new().with_line_keys(replay_line_base(label));
    let mut run = run;
    if matches!(source, Source::Replay | Source::Extract) {
        reader = reader.with_forward(run.as_deref_mut().map(ForwardContexts::get).unwrap_or_default());
    }
    // What the lines ingested before declared (quick: only the lines that
    // can declare a context are parsed).
    reader.skip(&bytes[..offset]);
    while offset < bytes.len() {
        let end = chunk_end(bytes, offset);
        let parsed = reader.read(&bytes[offset..end]);
        if parsed.consumed == 0 {
            break;
        }
        for e in &parsed.errors {
            report.problems.push(Problem { file: display.to_owned(), line: Some(e.line), message: e.message.clone() });
        }
        let next = FileProgress { offset: (offset + parsed.consumed) as u64, lines: reader.next_line() - 1 };
        report.records += parsed.records.len() as u64;
        store.put(Step { run: &meta, source, file: label, progress: next }, parsed)?;
        offset = next.offset as usize;
    }
    if let (Source::Forward, Some(run)) = (source, run) {
        run.known = Some(Arc::new(reader.into_contexts()));
    }
    report.files += 1;
    Ok(Some(meta))
}

/// The end of the span read from `offset`: about [`CHUNK_BYTES`], at a line
/// boundary (or the file's end).
fn chunk_end(bytes: &[u8], offset: usize) -> usize {
    let end = (offset + CHUNK_BYTES).min(bytes.len());
    if end == bytes.len() {
        return end;
    }
    match bytes[offset..end].iter().rposition(|&b| b == b'\n') {
        Some(p) => offset + p + 1,
        None => match bytes[end..].iter().position(|&b| b == b'\n') {
            Some(p) => end + p + 1,
            None => bytes.len(),
        },
    }
}

/// The header of a record file, when it has one that fits the file's name
/// (`label`); else a problem is reported.
fn read_header(label: &str, display: &str, bytes: &[u8], report: &mut SyncReport) -> Option<(RunMeta, Source)> {
    let first_nl = bytes.iter().position(|&b| b == b'\n')?;
    let head = parse_lines(&bytes[..=first_nl], 1);
    let message = match head.header {
        Some((meta, source)) if label_fits(label, &meta.run_id(), source) => return Some((meta, source)),
        Some((meta, source)) => format!(
            "its header names {} records of run {}, which a file named {label} cannot hold; the file is skipped",
            source.as_str(),
            meta.tstamp
        ),
        None => match head.errors.first() {
            Some(e) => format!("the first line is not a run header ({})", e.message),
            None => "the first line is not a run header".to_owned(),
        },
    };
    report.problems.push(Problem { file: display.to_owned(), line: Some(1), message });
    None
}

fn apply_end(meta: &mut RunMeta, end: Option<RunEnd>) {
    if let Some(end) = end {
        meta.status = end.status;
        meta.ended = Some(end.ended);
    }
}

/// The `end` record when it is the last whole line of `bytes`.
fn last_line_end(bytes: &[u8]) -> Option<RunEnd> {
    let body = bytes.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    parse_lines(&bytes[start..], 1).end
}

/// Records a marker that a run commit was fully ingested.
fn mark_commit(store: &mut dyn Store, sha: &str, meta: &RunMeta) -> Result<()> {
    store.ingest(&IngestBatch {
        run: meta,
        source: Source::Forward,
        file: &format!("commit:{sha}"),
        progress: FileProgress { offset: 1, lines: 0 },
        loops: &[],
        records: &[],
        checkpoints: &[],
        checks: &[],
    })?;
    Ok(())
}

/// Publishes a run's record file: adds it to the run's git ref and removes
/// the local copy. The caller holds the file's lock. The query database
/// takes the records from git at the next [`sync`] (every query syncs first):
/// ingestion is most of the cost of ending a run, and a training script
/// should not wait for it at exit.
pub(crate) fn publish(root: &Path, path: &Path) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let display = path.display().to_string();
    let Some(first_nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(Error::BadRecordFile { file: display, message: "the file holds no complete record".into() });
    };
    let Some((meta, _)) = parse_lines(&bytes[..=first_nl], 1).header else {
        return Err(Error::BadRecordFile { file: display, message: "the first line is not a run header".into() });
    };
    let run_id = meta.run_id();
    let refname = ref_for(&run_id);
    let tree_path = format!("{RECORDS_DIR}/{}", label_for(&run_id));
    let message = format!("flor: records of run {} ({})", meta.tstamp, meta.filename);
    // Idempotent: a publish that attached but died before removing the
    // local file is not attached twice. Other writers of the ref (replays)
    // do not make this fail: `attach_files` rebuilds on their tip.
    let there = flor_git::read_file_at(root, &refname, &tree_path).ok();
    if there.as_deref() != Some(bytes.as_slice()) {
        pause::point(pause::PUBLISH_BEFORE_ATTACH);
        flor_git::attach_files(root, &refname, &[(tree_path.as_str(), bytes.as_slice())], &message)?;
    }
    pause::point(pause::PUBLISH_AFTER_ATTACH);
    fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
    Ok(())
}

/// Whether `path` still names the open `file` (not removed, not replaced).
fn still_at(file: &fs::File, path: &Path) -> bool {
    let (Ok(open), Ok(named)) = (file.metadata(), fs::metadata(path)) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        open.dev() == named.dev() && open.ino() == named.ino()
    }
    #[cfg(not(unix))]
    {
        open.len() == named.len()
    }
}

/// Finalizes a record file whose process is gone: drops a partial last line,
/// appends an `end` line with status `failed` when there is none, then
/// publishes it. Skips files another process is handling.
fn finalize_dead(root: &Path, path: &Path, report: &mut SyncReport) -> Result<()> {
    let file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()), // just published
        Err(e) => return Err(Error::io("open", path, e)),
    };
    if file.try_lock().is_err() {
        return Ok(()); // live again, or another flor process is finalizing it
    }
    // Its owner (or another finalizer) may have published and removed it
    // between our open and our lock: the lock is then on a removed file.
    if !still_at(&file, path) {
        return Ok(());
    }
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if keep < bytes.len() {
        file.set_len(keep as u64).map_err(|e| Error::io("truncate", path, e))?;
        report.notes.push(format!(
            "{}: dropped a partial last line ({} bytes) left by the killed process",
            path.display(),
            bytes.len() - keep
        ));
    }
    let bytes = &bytes[..keep];
    let header = bytes.iter().position(|&b| b == b'\n').and_then(|nl| parse_lines(&bytes[..=nl], 1).header);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let meta = match header {
        Some((meta, source)) if label_fits(name, &meta.run_id(), source) && source == Source::Forward => meta,
        // Published, it would land in the ref of the run its header names.
        Some((meta, source)) => {
            let why = format!("its header names {} records of run {}, not this file's", source.as_str(), meta.tstamp);
            return move_to_broken(root, path, &why, report);
        }
        None => return move_to_broken(root, path, "no run header", report),
    };
    if last_line_end(bytes).is_none() {
        let mut enc = LineEncoder::new();
        enc.end(&RunEnd { status: RunStatus::Failed, ended: flor_core::time::now_iso() });
        let mut f = &file;
        f.write_all(&enc.buf).and_then(|_| f.sync_all()).map_err(|e| Error::io("append to", path, e))?;
        report.marked_failed.push(meta.tstamp.clone());
    }
    publish(root, path)
}

/// Moves a dead run's record file that cannot be published to
/// `.flor/broken/`, reporting `why`.
fn move_to_broken(root: &Path, path: &Path, why: &str, report: &mut SyncReport) -> Result<()> {
    let broken = root.join(".flor").join("broken");
    fs::create_dir_all(&broken).map_err(|e| Error::io("create", &broken, e))?;
    let dest = broken.join(path.file_name().unwrap_or_default());
    fs::rename(path, &dest).map_err(|e| Error::io("move", path, e))?;
    report.problems.push(Problem {
        file: path.display().to_string(),
        line: Some(1),
        message: format!("{why}; the file was moved to {}", dest.display()),
    });
    Ok(())
}

/// Where a sync stands, for a progress display: handed to a [`Progress`]
/// callback before each run ref is ingested and once at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Run refs ingested so far.
    pub done: usize,
    /// Run refs this sync ingests.
    pub total: usize,
    /// Value records ingested so far (live record files included).
    pub records: u64,
}

/// A progress callback of a sync (see [`SyncProgress`]).
pub type Progress<'a> = &'a mut dyn FnMut(&SyncProgress);

/// The local record files (runs recording, or whose process died before
/// publishing), sorted.
fn local_record_files(runs_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut local: Vec<PathBuf> = match fs::read_dir(runs_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", runs_dir, e)),
    };
    local.sort();
    Ok(local)
}

/// Finalizes and publishes the record files of runs whose process died,
/// without touching the query database (what a new run does at start).
pub(crate) fn finalize_dead_runs(root: &Path, runs_dir: &Path) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    for path in &local_record_files(runs_dir)? {
        if !flor_core::engine::is_record_file_live(path) && path.exists() {
            if let Err(e) = finalize_dead(root, path, &mut report) {
                report.problems.push(Problem { file: path.display().to_string(), line: None, message: e.to_string() });
            }
        }
    }
    Ok(report)
}

/// Brings the store up to date with the local record files and the run refs.
pub(crate) fn sync(root: &Path, runs_dir: &Path, store: &mut dyn Store, progress: Progress<'_>) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let mut live = Vec::new();
    for path in local_record_files(runs_dir)? {
        if flor_core::engine::is_record_file_live(&path) {
            live.push(path);
        } else if path.exists() {
            if let Err(e) = finalize_dead(root, &path, &mut report) {
                report.problems.push(Problem { file: path.display().to_string(), line: None, message: e.to_string() });
            }
        }
    }
    // What the live runs wrote since the last sync.
    in_groups(store, &mut report, live, |store, report, path| {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()), // just published
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(()) };
        ingest_bytes(store, name, &path.display().to_string(), &bytes, None, report)?;
        Ok(())
    })?;
    // One open repository for the refs and their records (opening it costs
    // more than reading a small run's records).
    let reader = flor_git::RepoReader::open(root)?;
    let mut pending = Vec::new();
    for (refname, target) in reader.ref_targets(RUNS_REF_PREFIX)? {
        // A target with a marker is a commit ingested already: no object is
        // read for it (with thousands of runs, those reads were most of a
        // query's time).
        if store.file_progress(&format!("commit:{target}"))?.is_some() {
            continue;
        }
        // A ref that names no commit is left alone.
        let Some(sha) = reader.commit_of(&target) else { continue };
        if sha == target || store.file_progress(&format!("commit:{sha}"))?.is_none() {
            pending.push((refname, sha));
        }
    }
    if pending.is_empty() {
        return Ok(report);
    }
    pause::point(pause::SYNC_BEFORE_REFS);
    ahead::ingest_refs(root, &reader, store, &mut report, &pending, progress)?;
    Ok(report)
}

/// Where [`ingest_bytes`] puts what it read: a store, or a recording of
/// the steps that a writer thread hands to the store later
/// ([`ahead`]).
pub(crate) trait Sink {
    /// How much of record file `label` was ingested (see
    /// [`Store::file_progress`]).
    fn progress_of(&mut self, label: &str) -> Result<Option<FileProgress>>;
    /// Ingests one span of a record file, read into `parsed` (see
    /// [`Store::ingest`]).
    fn put(&mut self, step: Step<'_>, parsed: Parsed) -> Result<()>;
}

/// One span of a record file, for [`Sink::ingest`]: an [`IngestBatch`]
/// without its rows.
#[derive(Clone, Copy)]
pub(crate) struct Step<'a> {
    run: &'a RunMeta,
    source: Source,
    file: &'a str,
    progress: FileProgress,
}

impl Step<'_> {
    /// The batch of this step's rows.
    fn batch<'a>(&'a self, parsed: &'a Parsed) -> IngestBatch<'a> {
        IngestBatch {
            run: self.run,
            source: self.source,
            file: self.file,
            progress: self.progress,
            loops: &parsed.loops,
            records: &parsed.records,
            checkpoints: &parsed.checkpoints,
            checks: &parsed.checks,
        }
    }
}

impl Sink for dyn Store + '_ {
    fn progress_of(&mut self, label: &str) -> Result<Option<FileProgress>> {
        Ok(self.file_progress(label)?)
    }

    fn put(&mut self, step: Step<'_>, parsed: Parsed) -> Result<()> {
        self.ingest(&step.batch(&parsed))?;
        Ok(())
    }
}

/// The record files of commit `sha` (`.flor/records/` of its tree), or why
/// they cannot be read (a ref whose records cannot be read, someone else's
/// or damaged, is reported, not a reason to stop syncing the others).
type CommitFiles = std::result::Result<Vec<(String, Vec<u8>)>, String>;

fn read_commit(reader: &flor_git::RepoReader, sha: &str) -> CommitFiles {
    reader.read_dir_at(sha, RECORDS_DIR).map_err(|e| e.to_string())
}

/// Ingests the record files of a commit of run ref `refname`: the forward
/// file first (its contexts check the others'), then the replay and extraction
/// files. A file that is not one of this run's is reported and skipped.
/// Returns the forward file's metadata, when it has one.
fn ingest_commit<S: Sink + ?Sized>(
    store: &mut S,
    refname: &str,
    files: &CommitFiles,
    report: &mut SyncReport,
) -> Result<Option<RunMeta>> {
    let files = match files {
        Ok(files) => files,
        Err(message) => {
            report.problems.push(Problem { file: refname.to_owned(), line: None, message: message.clone() });
            return Ok(None);
        }
    };
    let run_id = refname.strip_prefix(RUNS_REF_PREFIX).unwrap_or(refname);
    let own = label_for(run_id);
    let name_of = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
    let forward_file = files.iter().find(|(p, _)| name_of(p) == own);
    let mut contexts = ForwardContexts::new(forward_file.map_or(&[][..], |(_, b)| b.as_slice()));
    let mut forward = None;
    if let Some((path, bytes)) = forward_file {
        let display = format!("{refname}:{path}");
        forward = ingest_bytes(store, &own, &display, bytes, Some(&mut contexts), report)?;
    }
    for (path, bytes) in files {
        let name = name_of(path);
        let display = format!("{refname}:{path}");
        if name == own {
            continue;
        }
        if !label_fits(&name, run_id, Source::Replay) && !label_fits(&name, run_id, Source::Extract) {
            let message = format!("not a record file of run {run_id} (whose ref holds it); skipped");
            report.problems.push(Problem { file: display, line: None, message });
            continue;
        }
        ingest_bytes(store, &name, &display, bytes, Some(&mut contexts), report)?;
    }
    Ok(forward)
}

/// Ingests each of `items` with `ingest`, in ingestion groups (see
/// [`Store::begin_group`]; one transaction each where the store groups: a
/// commit per step costs SQLite WAL frames and checkpoints, DuckDB
/// milliseconds) of at most [`GROUP_RUNS`] items and about
/// [`GROUP_RECORDS`] records. An error discards the open group (its steps
/// are ingested again by the next sync) and is returned.
fn in_groups<T>(
    store: &mut dyn Store,
    report: &mut SyncReport,
    items: impl IntoIterator<Item = T>,
    mut ingest: impl FnMut(&mut dyn Store, &mut SyncReport, T) -> Result<()>,
) -> Result<()> {
    let mut items = items.into_iter().peekable();
    if items.peek().is_none() {
        return Ok(()); // no write transaction for nothing
    }
    store.begin_group()?;
    let ingested = || -> Result<()> {
        let (mut group_start, mut group_items) = (report.records, 0);
        for item in items {
            ingest(&mut *store, &mut *report, item)?;
            group_items += 1;
            if group_items >= GROUP_RUNS || report.records - group_start >= GROUP_RECORDS {
                store.end_group(true)?;
                store.begin_group()?;
                (group_start, group_items) = (report.records, 0);
            }
        }
        Ok(())
    };
    match ingested() {
        Ok(()) => Ok(store.end_group(true)?),
        Err(e) => {
            let _ = store.end_group(false);
            Err(e)
        }
    }
}

/// At most this many runs (or live record files), and about this many
/// records, per ingestion group (see [`Store::begin_group`]): bounds what an
/// error discards and how long a group's transaction stays open (SQLite:
/// another process's writer waits for it, up to its busy timeout of 10 s;
/// about 2^18 records take well under a second).
const GROUP_RUNS: usize = 64;
const GROUP_RECORDS: u64 = 1 << 18;
