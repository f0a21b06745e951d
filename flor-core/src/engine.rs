//! The recording engine: one implementation of flor's recording semantics,
//! used by the Rust API and the Python binding alike.
//!
//! A [`Recorder`] owns one run's record file. Records are encoded into a
//! buffer as they happen and written to the file (one `write` of whole
//! lines) at the end of every outer-loop iteration, when the buffer passes
//! 1 MiB, and at the end. A process killed with SIGKILL therefore keeps every
//! record up to its last completed outer iteration; with
//! [`Durability::Os`] the file is also fsynced at the end of every outer
//! iteration, so an OS crash or power loss keeps as much (see
//! [`crate::durability`]). While recording, the file is exclusively locked:
//! a lock that can be taken means the process is gone (see
//! [`is_record_file_live`]).
//!
//! A failed write (a full disk, a file system gone read-only) cuts the file
//! back to its length after the last complete write, so it always ends with
//! a whole line, and keeps the unwritten records: the error is returned by
//! that flush, and the next flush tries them again from there. When even
//! the cut fails, or an fsync fails (the OS may then have dropped the
//! written pages), no more writes are tried: the file holds whole lines up
//! to the last good flush, plus at most a partial one that the next `flor`
//! command drops.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::{ArgValue, Kwargs};
use crate::durability::{sync_dir, Durability};
use crate::error::{Error, Result};
use crate::objects::{ObjectId, ObjectStore};
use crate::record::{
    LineEncoder, RecordKind, RunEnd, RunMeta, RunStatus, Source, LOOP_TIMING_PREFIX, MAX_DEPTH, MAX_LOOP_NAME_BYTES,
    MAX_NAME_BYTES,
};
use crate::time::now_iso;
use crate::value::Value;

/// Buffered bytes that trigger a write even inside an outer iteration.
const FLUSH_BYTES: usize = 1 << 20;

struct Frame {
    name: Arc<str>,
    parent: Option<u32>,
    ctx: Option<u32>,
    next_iteration: u64,
    loop_start: Instant,
    iter_start: Instant,
}

/// Records one run into its record file. See the module docs.
pub struct Recorder {
    meta: RunMeta,
    path: PathBuf,
    file: File,
    enc: LineEncoder,
    kwargs: Kwargs,
    stack: Vec<Frame>,
    next_ctx: u32,
    started: Instant,
    setup_recorded: bool,
    last_outer_end: Option<Instant>,
    objects: Option<ObjectStore>,
    ckpt_interval: Option<Duration>,
    last_ckpt: Option<Instant>,
    write_error: Option<std::io::Error>,
    /// Bytes of the file that are whole, written lines.
    written: u64,
    /// Set when the file's end is no longer known to be a whole line (a
    /// cut after a failed write failed) or an fsync failed: nothing more is
    /// written.
    poisoned: bool,
    durability: Durability,
    finished: bool,
    /// Set when this recorder writes a hindsight replay of an earlier run.
    replay: Option<Replay>,
}

/// A replay recorder's state: iterations take the context ids the forward
/// run gave them, and only the applied names (and those to check) are
/// recorded.
struct Replay {
    contexts: ContextMap,
    names: HashSet<Box<str>>,
    /// Names the forward run recorded, recorded again so that the replay's
    /// orchestrator can compare them ([`crate::check`]).
    check: HashSet<Box<str>>,
    /// Values logged at positions the forward run never reached (not recorded).
    unmatched: u64,
    /// The iterations whose values are recorded (`flor replay --iter`);
    /// `None`: all of them.
    iters: Option<crate::select::IterFilter>,
}

/// Context id given to an iteration the forward run does not have.
const UNMATCHED: u32 = u32::MAX;

/// Where a forward run's loop iterations are: `(enclosing context, loop
/// name, iteration index)` to the context id the run gave that iteration.
/// A replay uses it to record values at the original positions.
#[derive(Debug, Default, Clone)]
pub struct ContextMap {
    map: HashMap<(Option<u32>, Arc<str>, u64), u32>,
}

impl ContextMap {
    /// The map of these iterations.
    pub fn new(loops: impl IntoIterator<Item = crate::record::LoopCtx>) -> ContextMap {
        ContextMap { map: loops.into_iter().map(|l| ((l.parent, l.name, l.iteration), l.ctx)).collect() }
    }

    /// The context of iteration `iteration` of loop `name` inside `parent`.
    pub fn get(&self, parent: Option<u32>, name: &Arc<str>, iteration: u64) -> Option<u32> {
        self.map.get(&(parent, name.clone(), iteration)).copied()
    }

    /// Number of iterations known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no iteration is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("run", &self.meta.tstamp).field("path", &self.path).finish()
    }
}

/// Whether a record file is still being written by a live process (its lock
/// is held). Errors opening the file count as "not live".
pub fn is_record_file_live(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().read(true).write(true).open(path) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

impl Recorder {
    /// Creates the record file at `path` (which must not exist), locks it,
    /// and writes the header for `meta`.
    pub fn create(path: &Path, meta: RunMeta, kwargs: Kwargs, objects: Option<ObjectStore>) -> Result<Recorder> {
        Recorder::create_with(path, meta, kwargs, objects, None)
    }

    /// Creates the record file of a hindsight replay of the run `meta`
    /// (its identity and final metadata): iterations are placed with
    /// `contexts` (the forward run's), only `names` and `check` are
    /// recorded (source `replay`), and no args, timings, checkpoints or
    /// `end` line are written: the forward file keeps those. `check` names
    /// values the forward run recorded: the orchestrator compares the
    /// recomputed ones with them and keeps only `names` ([`crate::check`]).
    pub fn create_replay(
        path: &Path,
        meta: RunMeta,
        kwargs: Kwargs,
        objects: Option<ObjectStore>,
        contexts: ContextMap,
        names: impl IntoIterator<Item = String>,
        check: impl IntoIterator<Item = String>,
    ) -> Result<Recorder> {
        let names = names.into_iter().map(String::into_boxed_str).collect();
        let check = check.into_iter().map(String::into_boxed_str).collect();
        Recorder::create_with(
            path,
            meta,
            kwargs,
            objects,
            Some(Replay { contexts, names, check, unmatched: 0, iters: None }),
        )
    }

    fn create_with(
        path: &Path,
        meta: RunMeta,
        kwargs: Kwargs,
        objects: Option<ObjectStore>,
        replay: Option<Replay>,
    ) -> Result<Recorder> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        if path.exists() {
            return Err(Error::io(
                "create record file",
                path,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "it already exists"),
            ));
        }
        // Created and locked under a temporary name, then renamed (the lock
        // goes with the open file): another process that lists the record
        // files never sees this one unlocked and takes it for a dead run's.
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".creating");
        let tmp = PathBuf::from(tmp_name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&tmp)
            .map_err(|e| Error::io("create record file", &tmp, e))?;
        let locked = file.try_lock().map_err(|e| Error::io("lock", &tmp, std::io::Error::other(e.to_string())));
        if let Err(e) = locked.and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let mut enc = LineEncoder::new();
        enc.header(&meta, if replay.is_some() { Source::Replay } else { Source::Forward });
        let mut r = Recorder {
            meta,
            path: path.to_owned(),
            file,
            enc,
            kwargs,
            stack: Vec::new(),
            next_ctx: 0,
            started: Instant::now(),
            setup_recorded: false,
            last_outer_end: None,
            objects,
            ckpt_interval: None,
            last_ckpt: None,
            write_error: None,
            written: 0,
            poisoned: false,
            durability: Durability::Process,
            finished: false,
            replay,
        };
        r.flush()?;
        Ok(r)
    }

    /// Sets how far records are made durable (see [`crate::durability`]).
    /// Switching to [`Durability::Os`] syncs the file and its folder at
    /// once, so the run's creation survives a power loss too.
    pub fn set_durability(&mut self, durability: Durability) -> Result<()> {
        self.durability = durability;
        if durability.syncs() {
            self.flush()?;
            if let Some(dir) = self.path.parent() {
                sync_dir(dir).map_err(|e| Error::io("sync", dir, e))?;
            }
        }
        Ok(())
    }

    /// How far records are made durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The run being recorded.
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hyper-parameter `name`: from `--kwargs name=value` when given
    /// (coerced to the default's type), else `default`. Recorded as an `arg`.
    pub fn arg_value(&mut self, name: &str, default: Value) -> Result<Value> {
        if name.len() > MAX_NAME_BYTES {
            return Err(Error::NameTooLong { what: "an argument name", len: name.len(), max: MAX_NAME_BYTES });
        }
        let v = self.kwargs.resolve(name, default)?;
        if self.replay.is_none() {
            self.enc.record(RecordKind::Arg, None, name, &v);
        }
        Ok(v)
    }

    /// Typed form of [`Recorder::arg_value`].
    pub fn arg<T: ArgValue>(&mut self, name: &str, default: T) -> Result<T> {
        let v = self.arg_value(name, default.to_value())?;
        Ok(T::from_value(&v).unwrap_or(default))
    }

    /// `--kwargs` names no `arg` asked for.
    pub fn unused_kwargs(&self) -> Vec<String> {
        self.kwargs.unused().into_iter().map(String::from).collect()
    }

    /// Records `value` under `name` at the current loop position.
    #[inline]
    pub fn log(&mut self, name: &str, value: &Value) {
        if let Some(ctx) = self.log_position(name) {
            self.enc.record(RecordKind::Log, ctx, name, value);
            self.after_log();
        }
    }

    /// [`Recorder::log`] of a finite float whose shortest text (`ryu`'s
    /// `format_finite`) the caller has already made (a front end that also
    /// prints it).
    #[inline]
    pub fn log_float_text(&mut self, name: &str, text: &str) {
        if let Some(ctx) = self.log_position(name) {
            self.enc.record_float_text(RecordKind::Log, ctx, name, text);
            self.after_log();
        }
    }

    /// Where a value logged now goes (`None`: a replay does not record it).
    #[inline]
    fn log_position(&mut self, name: &str) -> Option<Option<u32>> {
        let ctx = self.current_ctx();
        if let Some(r) = &mut self.replay {
            if !r.names.contains(name) && !r.check.contains(name) {
                return None;
            }
            if ctx == Some(UNMATCHED) {
                r.unmatched += 1;
                return None;
            }
            if let (Some(c), Some(f)) = (ctx, &r.iters) {
                if !f.keeps(c) {
                    return None;
                }
            }
        }
        Some(ctx)
    }

    #[inline]
    fn after_log(&mut self) {
        if self.enc.buf.len() >= FLUSH_BYTES {
            self.write_buffer();
        }
    }

    /// Records captured output text (`stream` is `stdout` or `stderr`).
    pub fn output(&mut self, stream: &str, text: &str) {
        if self.replay.is_some() {
            return;
        }
        let ctx = self.current_ctx();
        self.enc.record(RecordKind::Output, ctx, stream, &Value::Text(text.into()));
    }

    /// The innermost open iteration, `None` at run level.
    pub fn current_ctx(&self) -> Option<u32> {
        self.stack.last().and_then(|f| f.ctx)
    }

    /// The open outermost iteration's context.
    pub fn outer_ctx(&self) -> Option<u32> {
        self.stack.first().and_then(|f| f.ctx)
    }

    /// Loop nesting depth (0 outside loops).
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// Enters a loop named `name` (nested inside the current iteration).
    pub fn loop_begin(&mut self, name: &str) -> Result<()> {
        self.check_open()?;
        if name.len() > MAX_LOOP_NAME_BYTES {
            return Err(Error::NameTooLong { what: "a loop name", len: name.len(), max: MAX_LOOP_NAME_BYTES });
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::LoopMisuse(format!(
                "loop `{name}` would nest {} deep; record files allow {MAX_DEPTH}",
                self.stack.len() + 1
            )));
        }
        let now = Instant::now();
        if self.stack.is_empty() && !self.setup_recorded {
            self.setup_recorded = true;
            let secs = now.duration_since(self.started).as_secs_f64();
            self.timing(None, "setup", secs);
        }
        if let Some(top) = self.stack.last() {
            if top.ctx.is_none() {
                return Err(Error::LoopMisuse(format!(
                    "loop `{name}` entered inside loop `{}` but outside any of its iterations",
                    top.name
                )));
            }
        }
        let parent = self.current_ctx();
        self.stack.push(Frame {
            name: name.into(),
            parent,
            ctx: None,
            next_iteration: 0,
            loop_start: now,
            iter_start: now,
        });
        Ok(())
    }

    /// Begins the next iteration of the innermost loop; returns its index.
    pub fn iteration_begin(&mut self, value: Option<&str>) -> Result<u64> {
        self.iteration_begin_at(None, value)
    }

    /// Begins an iteration with an explicit index (FlorDB's
    /// `flor.iteration(name, idx, value)`), or the next one when `None`.
    pub fn iteration_begin_at(&mut self, index: Option<u64>, value: Option<&str>) -> Result<u64> {
        self.check_open()?;
        let ctx = self.next_ctx;
        let Some(top) = self.stack.last_mut() else {
            return Err(Error::LoopMisuse("iteration begun outside any loop".into()));
        };
        if top.ctx.is_some() {
            return Err(Error::LoopMisuse(format!("iteration of `{}` begun before the previous one ended", top.name)));
        }
        if let Some(r) = &self.replay {
            // The forward run's context for this position (an iteration it
            // never reached records nothing).
            let it = index.unwrap_or(top.next_iteration);
            top.next_iteration = it;
            let parent = if top.parent == Some(UNMATCHED) { None } else { Some(top.parent) };
            let ctx = parent.and_then(|p| r.contexts.get(p, &top.name, it)).unwrap_or(UNMATCHED);
            top.ctx = Some(ctx);
            if top.parent.is_none() {
                top.iter_start = Instant::now();
            }
            return Ok(it);
        }
        self.next_ctx += 1;
        top.ctx = Some(ctx);
        if top.parent.is_none() {
            // Only outermost iterations are timed one by one (see `iteration_end`).
            top.iter_start = Instant::now();
        }
        if let Some(i) = index {
            top.next_iteration = i;
        }
        let it = top.next_iteration;
        self.enc.iter(ctx, top.parent, &top.name, it, value);
        Ok(it)
    }

    /// Ends the innermost loop's current iteration. At the end of an
    /// outermost iteration the records are written to the file.
    pub fn iteration_end(&mut self) -> Result<()> {
        self.check_open()?;
        let depth = self.stack.len();
        let Some(top) = self.stack.last_mut() else {
            return Err(Error::LoopMisuse("iteration ended outside any loop".into()));
        };
        let Some(ctx) = top.ctx.take() else {
            return Err(Error::LoopMisuse(format!("iteration of `{}` ended but none is open", top.name)));
        };
        top.next_iteration += 1;
        if depth == 1 {
            // Outermost iterations (epochs) are timed one by one: replay plans
            // per epoch. An inner loop's iterations are timed as a whole
            // (`loop:NAME`): a clock read and a record per training step
            // would cost more than the step's log.
            let secs = top.iter_start.elapsed().as_secs_f64();
            self.timing(Some(ctx), "iteration", secs);
            self.flush()?;
        }
        Ok(())
    }

    /// Leaves the innermost loop (ending an open iteration first).
    pub fn loop_end(&mut self) -> Result<()> {
        self.check_open()?;
        if self.stack.last().is_some_and(|f| f.ctx.is_some()) {
            self.iteration_end()?;
        }
        let Some(frame) = self.stack.pop() else {
            return Err(Error::LoopMisuse("loop ended but none is open".into()));
        };
        let secs = frame.loop_start.elapsed().as_secs_f64();
        if self.replay.is_none() {
            let name = format!("{LOOP_TIMING_PREFIX}{}", frame.name);
            self.timing(frame.parent, &name, secs);
        }
        if self.stack.is_empty() {
            self.last_outer_end = Some(Instant::now());
            self.flush()?;
        }
        Ok(())
    }

    /// Sets the minimum time between checkpoints (`None`: every outer
    /// iteration).
    pub fn set_checkpoint_interval(&mut self, interval: Option<Duration>) {
        self.ckpt_interval = interval;
    }

    /// Whether a checkpoint taken now respects the interval.
    pub fn checkpoint_due(&self) -> bool {
        match (self.ckpt_interval, self.last_ckpt) {
            (Some(iv), Some(last)) => last.elapsed() >= iv,
            _ => true,
        }
    }

    /// Stores a checkpoint of object `name` whose bytes `write` produces,
    /// attached to the current outer iteration. Needs an object store.
    pub fn checkpoint(
        &mut self,
        name: &str,
        format: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<ObjectId> {
        self.check_open()?;
        let Some(objects) = &self.objects else {
            return Err(Error::Checkpoint { name: name.into(), message: "this run has no object store".into() });
        };
        let id =
            objects.put_with(write).map_err(|e| Error::Checkpoint { name: name.into(), message: e.to_string() })?;
        let ctx = self.outer_ctx();
        if self.replay.is_none() {
            self.enc.checkpoint(ctx, name, &id.digest, id.bytes, format);
        }
        self.last_ckpt = Some(Instant::now());
        Ok(id)
    }

    /// Records a checkpoint whose bytes were already stored (e.g. streamed
    /// by a front end through [`ObjectStore::writer`]), attached to the
    /// current outer iteration.
    pub fn record_checkpoint(&mut self, name: &str, format: &str, id: &ObjectId) -> Result<()> {
        self.check_open()?;
        let ctx = self.outer_ctx();
        if self.replay.is_none() {
            self.enc.checkpoint(ctx, name, &id.digest, id.bytes, format);
        }
        self.last_ckpt = Some(Instant::now());
        Ok(())
    }

    /// A timing record (none in a replay: the forward run's timings stand).
    fn timing(&mut self, ctx: Option<u32>, name: &str, secs: f64) {
        if self.replay.is_none() {
            self.enc.record(RecordKind::Timing, ctx, name, &Value::Float(secs));
        }
    }

    /// Records a replay's values only in the iterations `filter` keeps
    /// (over the forward run's context ids: `flor replay --iter`); no
    /// effect on a forward recorder.
    pub fn set_replay_iters(&mut self, filter: crate::select::IterFilter) {
        if let Some(r) = &mut self.replay {
            r.iters = (!filter.keeps_all()).then_some(filter);
        }
    }

    /// Whether this recorder writes a replay.
    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    /// Values a replay logged at positions the forward run does not have.
    pub fn unmatched_replay_values(&self) -> u64 {
        self.replay.as_ref().map_or(0, |r| r.unmatched)
    }

    /// The object store, when the run has one.
    pub fn objects(&self) -> Option<&ObjectStore> {
        self.objects.as_ref()
    }

    /// Writes buffered records to the record file (and, with
    /// [`Durability::Os`], fsyncs it). See the module docs for failures.
    pub fn flush(&mut self) -> Result<()> {
        self.write_buffer();
        if let Some(e) = self.write_error.take() {
            return Err(Error::io("write", &self.path, e));
        }
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if self.durability.syncs() {
            if let Err(e) = self.file.sync_data() {
                self.poisoned = true;
                return Err(Error::io("sync", &self.path, e));
            }
        }
        Ok(())
    }

    fn poisoned_error(&self) -> Error {
        Error::io(
            "write",
            &self.path,
            std::io::Error::other("an earlier write or sync failed; the file keeps the records written before it"),
        )
    }

    fn write_buffer(&mut self) {
        if self.enc.buf.is_empty() || self.write_error.is_some() || self.poisoned {
            return;
        }
        match self.file.write_all(&self.enc.buf) {
            Ok(()) => {
                self.written += self.enc.buf.len() as u64;
                self.enc.buf.clear();
            }
            Err(e) => {
                // Part of the buffer may have reached the file: cut it back
                // so the file ends with a whole line and a retry of the same
                // buffer duplicates nothing.
                if self.file.set_len(self.written).is_err() {
                    self.poisoned = true;
                }
                self.write_error = Some(e);
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.finished {
            Err(Error::Finished(self.meta.tstamp.clone()))
        } else {
            Ok(())
        }
    }

    /// Whether [`Recorder::finish`] ran.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the run: closes open loops, records teardown time and the `end`
    /// line, and writes and syncs the file. The file stays locked until the
    /// recorder is dropped, so that the caller can publish it (git, query
    /// database) before another process may treat it as abandoned. Returns
    /// the final metadata.
    pub fn finish(&mut self, status: RunStatus) -> Result<RunMeta> {
        self.check_open()?;
        while !self.stack.is_empty() {
            self.loop_end()?;
        }
        let now = Instant::now();
        if self.setup_recorded {
            let since = self.last_outer_end.unwrap_or(now);
            let secs = now.duration_since(since).as_secs_f64();
            self.timing(None, "teardown", secs);
        } else {
            let secs = now.duration_since(self.started).as_secs_f64();
            self.timing(None, "setup", secs);
        }
        self.finished = true;
        if self.replay.is_none() {
            let ended = now_iso();
            self.enc.end(&RunEnd { status, ended: ended.clone() });
            self.meta.status = status;
            self.meta.ended = Some(ended);
        }
        self.flush()?;
        if !self.durability.syncs() {
            // `os` synced in `flush`; both settings sync before publishing.
            self.file.sync_all().map_err(|e| Error::io("sync", &self.path, e))?;
        }
        Ok(self.meta.clone())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.finished {
            let status = if std::thread::panicking() { RunStatus::Failed } else { RunStatus::Finished };
            let _ = self.finish(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_lines;

    fn meta() -> RunMeta {
        RunMeta {
            projid: "p".into(),
            tstamp: now_iso(),
            filename: "t.rs".into(),
            argv: vec!["t".into()],
            interpreter: "t".into(),
            host: "h".into(),
            pid: std::process::id(),
            commit: None,
            status: RunStatus::Running,
            ended: None,
        }
    }

    #[test]
    fn nested_loops_and_flush_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let objects = ObjectStore::open(dir.path().join("objects")).unwrap();
        let mut r = Recorder::create(&path, meta(), Kwargs::from_pairs([("lr", "0.5")]), Some(objects)).unwrap();
        assert!(is_record_file_live(&path));
        assert_eq!(r.arg("lr", 0.1).unwrap(), 0.5);
        r.loop_begin("epoch").unwrap();
        for e in 0..2 {
            assert_eq!(r.iteration_begin(None).unwrap(), e);
            r.loop_begin("step").unwrap();
            for _ in 0..3 {
                r.iteration_begin(None).unwrap();
                r.log("loss", &Value::Float(1.0));
                r.iteration_end().unwrap();
            }
            r.loop_end().unwrap();
            // Nothing of this outer iteration is on disk until it ends.
            let before = std::fs::read(&path).unwrap();
            r.checkpoint("w", "raw", |w| w.write_all(b"state")).unwrap();
            r.iteration_end().unwrap();
            let after = std::fs::read(&path).unwrap();
            assert!(after.len() > before.len());
            let p = parse_lines(&after, 1);
            assert_eq!(p.records.iter().filter(|r| &*r.name == "loss").count(), 3 * (e as usize + 1));
        }
        r.loop_end().unwrap();
        let m = r.finish(RunStatus::Finished).unwrap();
        assert_eq!(m.status, RunStatus::Finished);
        assert!(is_record_file_live(&path), "locked until dropped");
        assert!(r.log_after_finish_is_error());
        drop(r);
        assert!(!is_record_file_live(&path));
        let p = parse_lines(&std::fs::read(&path).unwrap(), 1);
        assert!(p.errors.is_empty());
        assert_eq!(p.loops.len(), 2 + 6);
        assert_eq!(p.checkpoints.len(), 2);
        assert_eq!(p.checkpoints[1].ctx, Some(4));
        let timings: Vec<&str> = p.records.iter().filter(|r| r.kind == RecordKind::Timing).map(|r| &*r.name).collect();
        assert_eq!(timings.first(), Some(&"setup"));
        assert_eq!(timings.last(), Some(&"teardown"));
        assert_eq!(timings.iter().filter(|n| **n == "iteration").count(), 2, "outer iterations only");
        assert_eq!(timings.iter().filter(|n| **n == "loop:step").count(), 2);
        assert_eq!(p.end.unwrap().status, RunStatus::Finished);
    }

    impl Recorder {
        fn log_after_finish_is_error(&mut self) -> bool {
            matches!(self.loop_begin("x"), Err(Error::Finished(_)))
        }
    }

    #[test]
    fn os_durability_writes_the_same_file() {
        // `os` only adds fsyncs: the same records, in the same lines.
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for d in Durability::ALL {
            let path = dir.path().join(format!("{d}.jsonl"));
            let mut r = Recorder::create(&path, meta(), Kwargs::default(), None).unwrap();
            r.set_durability(d).unwrap();
            assert_eq!(r.durability(), d);
            r.loop_begin("epoch").unwrap();
            for e in 0..3 {
                r.iteration_begin(None).unwrap();
                r.log("loss", &Value::Int(e));
                r.iteration_end().unwrap();
                let p = parse_lines(&std::fs::read(&path).unwrap(), 1);
                assert_eq!(p.records.iter().filter(|r| &*r.name == "loss").count(), e as usize + 1);
            }
            r.loop_end().unwrap();
            r.finish(RunStatus::Finished).unwrap();
            drop(r);
            let p = parse_lines(&std::fs::read(&path).unwrap(), 1);
            assert!(p.errors.is_empty());
            files.push(
                p.records.iter().filter(|r| r.kind == RecordKind::Log).map(|r| r.value.clone()).collect::<Vec<_>>(),
            );
        }
        assert_eq!(files[0], files[1]);
    }

    #[test]
    fn misuse_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::create(&dir.path().join("r.jsonl"), meta(), Kwargs::default(), None).unwrap();
        assert!(matches!(r.iteration_begin(None), Err(Error::LoopMisuse(_))));
        r.loop_begin("a").unwrap();
        assert!(matches!(r.loop_begin("b"), Err(Error::LoopMisuse(_))));
        assert!(matches!(r.checkpoint("x", "raw", |_| Ok(())), Err(Error::Checkpoint { .. })));
        // Existing file: refused.
        assert!(Recorder::create(&dir.path().join("r.jsonl"), meta(), Kwargs::default(), None).is_err());
    }

    /// The recorder never writes what a reader refuses: loop and argument
    /// names, and loop nesting, within the record files' limits.
    #[test]
    fn names_and_nesting_stay_within_the_readers_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut r = Recorder::create(&path, meta(), Kwargs::default(), None).unwrap();
        let long = "x".repeat(crate::record::MAX_NAME_BYTES + 1);
        assert!(matches!(r.arg_value(&long, Value::Int(1)), Err(Error::NameTooLong { .. })));
        let long_loop = "l".repeat(MAX_LOOP_NAME_BYTES + 1);
        assert!(matches!(r.loop_begin(&long_loop), Err(Error::NameTooLong { .. })));
        for d in 0..MAX_DEPTH {
            r.loop_begin(&format!("l{d}")).unwrap();
            r.iteration_begin(None).unwrap();
        }
        let e = r.loop_begin("deeper").unwrap_err();
        assert!(e.to_string().contains("would nest 65 deep"), "{e}");
        r.log("x", &Value::Int(1));
        r.finish(RunStatus::Finished).unwrap();
        drop(r);
        let p = parse_lines(&std::fs::read(&path).unwrap(), 1);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.loops.len(), MAX_DEPTH);
        assert_eq!(p.records.iter().filter(|r| &*r.name == "x").count(), 1);
    }

    #[test]
    fn replay_records_applied_names_at_the_forward_positions() {
        let dir = tempfile::tempdir().unwrap();
        let fwd = dir.path().join("f.jsonl");
        let mut r = Recorder::create(&fwd, meta(), Kwargs::default(), None).unwrap();
        r.loop_begin("epoch").unwrap();
        for _ in 0..3 {
            r.iteration_begin(None).unwrap();
            r.loop_begin("step").unwrap();
            for _ in 0..2 {
                r.iteration_begin(None).unwrap();
                r.log("loss", &Value::Float(1.0));
                r.iteration_end().unwrap();
            }
            r.loop_end().unwrap();
            r.iteration_end().unwrap();
        }
        r.loop_end().unwrap();
        let final_meta = r.finish(RunStatus::Finished).unwrap();
        drop(r);
        let forward = parse_lines(&std::fs::read(&fwd).unwrap(), 1);
        let contexts = ContextMap::new(forward.loops.clone());
        assert_eq!(contexts.len(), 3 + 6);

        // Replay epoch 2 only (its inner loop in full) and log three names:
        // one applied, one to check, one neither.
        let rp = dir.path().join("r.jsonl");
        let mut r = Recorder::create_replay(
            &rp,
            final_meta.clone(),
            Kwargs::default(),
            None,
            contexts,
            vec!["grad".to_owned()],
            vec!["loss".to_owned()],
        )
        .unwrap();
        assert!(r.is_replay());
        assert_eq!(r.arg_value("lr", Value::Float(0.1)).unwrap(), Value::Float(0.1));
        r.loop_begin("epoch").unwrap();
        r.iteration_begin_at(Some(2), None).unwrap();
        r.log("grad", &Value::Float(7.0));
        r.log("loss", &Value::Float(9.0));
        r.log("acc", &Value::Float(0.5));
        r.loop_begin("step").unwrap();
        for _ in 0..3 {
            // One iteration more than the forward run had: not recorded.
            r.iteration_begin(None).unwrap();
            r.log("grad", &Value::Float(8.0));
            r.iteration_end().unwrap();
        }
        r.loop_end().unwrap();
        r.iteration_end().unwrap();
        r.loop_end().unwrap();
        assert_eq!(r.unmatched_replay_values(), 1);
        let m = r.finish(RunStatus::Finished).unwrap();
        assert_eq!(m, final_meta, "a replay keeps the forward run's identity and status");
        drop(r);
        let p = parse_lines(&std::fs::read(&rp).unwrap(), 1);
        assert!(p.errors.is_empty());
        assert_eq!(p.header.as_ref().map(|h| h.1), Some(Source::Replay));
        assert!(p.loops.is_empty() && p.checkpoints.is_empty() && p.end.is_none());
        let ctx_of = |parent: Option<u32>, name: &str, it: u64| {
            forward.loops.iter().find(|l| l.parent == parent && &*l.name == name && l.iteration == it).unwrap().ctx
        };
        let e2 = ctx_of(None, "epoch", 2);
        let got: Vec<(RecordKind, Option<u32>, &str, Value)> =
            p.records.iter().map(|r| (r.kind, r.ctx, &*r.name, r.value.clone())).collect();
        assert_eq!(
            got,
            vec![
                (RecordKind::Log, Some(e2), "grad", Value::Float(7.0)),
                (RecordKind::Log, Some(e2), "loss", Value::Float(9.0)),
                (RecordKind::Log, Some(ctx_of(Some(e2), "step", 0)), "grad", Value::Float(8.0)),
                (RecordKind::Log, Some(ctx_of(Some(e2), "step", 1)), "grad", Value::Float(8.0)),
            ]
        );
    }
}
