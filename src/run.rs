//! The Rust recording API: start a run, read hyper-parameters, log values
//! inside named loops, checkpoint state, finish.
//!
//! ```no_run
//! # fn main() -> flor::Result<()> {
//! let run = flor::Run::start()?;
//! let lr: f64 = run.arg("lr", 0.01)?;
//! let mut w = vec![0.0f64; 4];
//! for epoch in run.loop_over("epoch", 0..10) {
//!     for step in run.loop_over("step", 0..100) {
//!         let loss = (epoch * step) as f64 * lr;
//!         run.log("loss", loss);
//!     }
//!     run.checkpoint("w", &w)?;
//! }
//! run.finish()?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flor_core::args::{ArgValue, Kwargs};
use flor_core::checkpoint::{Bincode, CheckpointSerializer};
use flor_core::record::run_id_of;
use flor_core::time::now_iso;
use flor_core::{Durability, Recorder, RunMeta, RunStatus, Value};

use crate::error::{Error, Result};
use crate::ingest::{self, ref_for, SyncReport};
use crate::project::{check_writable, Project};

mod kept;
pub use kept::{file_digest, KeptFile};

/// Options for starting a run; see [`Run::builder`].
#[derive(Debug, Clone, Default)]
pub struct RunBuilder {
    dir: Option<PathBuf>,
    filename: Option<String>,
    argv: Option<Vec<String>>,
    interpreter: Option<String>,
    durability: Option<Durability>,
}

impl RunBuilder {
    /// Folder inside the repository (default: the current directory).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The script or program name recorded as `filename` (default: the
    /// executable's file name).
    pub fn filename(mut self, name: impl Into<String>) -> Self {
        self.filename = Some(name.into());
        self
    }

    /// The command line (default: this process's). `--kwargs` are read from it.
    pub fn argv<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.argv = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// The interpreter recorded (default: this executable's path).
    pub fn interpreter(mut self, interpreter: impl Into<String>) -> Self {
        self.interpreter = Some(interpreter.into());
        self
    }

    /// What of the run survives a crash (default: the project's,
    /// [`Project::durability`]): [`Durability::Os`] fsyncs the record file
    /// at the end of every outer iteration and each checkpoint before its
    /// record is written. See [`flor_core::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Starts the run: snapshots the working tree under
    /// `refs/flor/runs/<run id>` (HEAD, branch, index and files untouched)
    /// and opens its record file.
    pub fn start(self) -> Result<Run> {
        let dir = match self.dir {
            Some(d) => d,
            None => std::env::current_dir().map_err(|e| Error::io("read", "the current directory", e))?,
        };
        // No query database: a run only writes its record file (the next
        // query ingests it), so no engine is held open while training.
        let project = Project::open_for_recording(&dir)?;
        // Nothing is written (no snapshot ref either) when the record file
        // could not be.
        check_writable(&project.runs_dir())?;
        let durability = self.durability.unwrap_or(project.durability());
        if durability.syncs() {
            flor_git::set_fsync(true);
        }
        // Mark runs whose process died; a failure here must not stop training.
        let early = project.finalize_dead_runs().unwrap_or_else(|e| {
            eprintln!("flor: warning: could not publish the records of a run that died: {e}");
            SyncReport::default()
        });
        let argv = self.argv.unwrap_or_else(|| std::env::args().collect());
        let kwargs = Kwargs::from_argv(&argv)?;
        let exe = std::env::current_exe().ok();
        let filename = self.filename.unwrap_or_else(|| {
            argv.first()
                .map(|a| Path::new(a).file_name().map_or(a.clone(), |f| f.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "main".into())
        });
        let interpreter =
            self.interpreter.unwrap_or_else(|| exe.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
        let options = flor_git::SnapshotOptions::from_env()?;
        // A unique tstamp: the ref creation, checked under git's lock, is the
        // arbiter between processes. A name another run took (or is taking
        // at this instant) moves on to a later microsecond, and the tstamp
        // recorded is the one whose ref was claimed.
        let mut micros = flor_core::time::micros_from_iso(&now_iso()).unwrap_or(0);
        let mut tstamp = String::new();
        let snapshot = flor_git::snapshot_worktree_unique(project.root(), &options, |attempt| {
            if attempt > 0 {
                let now = flor_core::time::micros_from_iso(&now_iso()).unwrap_or(0);
                micros = (micros + 1).max(now);
            }
            tstamp = flor_core::time::iso_from_micros(micros);
            (ref_for(&run_id_of(&tstamp)), format!("flor: code of run {tstamp} ({filename})"))
        })?;
        // The last name tried is the one claimed.
        debug_assert_eq!(snapshot.refname, ref_for(&run_id_of(&tstamp)));
        for (path, size) in &snapshot.skipped {
            eprintln!(
                "flor: warning: {} ({} MiB) is larger than the snapshot limit and is not part of the code snapshot (set {} to change the limit)",
                path.display(),
                size >> 20,
                flor_git::MAX_FILE_MB_ENV
            );
        }
        let meta = RunMeta {
            projid: project.projid().to_owned(),
            tstamp,
            filename,
            argv,
            interpreter,
            host: hostname(),
            pid: std::process::id(),
            commit: Some(snapshot.commit),
            status: RunStatus::Running,
            ended: None,
        };
        let path = project.runs_dir().join(format!("{}.jsonl", meta.run_id()));
        let objects = project.objects().clone().with_durability(durability);
        let run_ref = ref_for(&meta.run_id());
        // A run that cannot record leaves nothing behind: no record file,
        // no snapshot ref.
        let recorder = match Recorder::create(&path, meta, kwargs, Some(objects.clone())) {
            Ok(mut r) => match r.set_durability(durability) {
                Ok(()) => r,
                Err(e) => {
                    drop(r);
                    let _ = std::fs::remove_file(&path);
                    let _ = flor_git::delete_ref(project.root(), &run_ref);
                    return Err(e.into());
                }
            },
            Err(e) => {
                let _ = flor_git::delete_ref(project.root(), &run_ref);
                return Err(e.into());
            }
        };
        let inner = Inner { rec: recorder, project: Some(project), objects, deferred: None, early };
        Ok(Run { inner: Arc::new(Mutex::new(inner)) })
    }
}

struct Inner {
    rec: Recorder,
    /// The project of a forward run; `None` for a replay segment, which
    /// ends without publishing (`flor replay` collects its records).
    project: Option<Project>,
    /// Where checkpoints are written (forward) or restored from (replay).
    objects: flor_core::ObjectStore,
    deferred: Option<Error>,
    early: SyncReport,
}

/// A recording run: a cheap, clonable handle (`Send + Sync`). End it with
/// [`Run::finish`]. A run whose last handle is dropped without `finish` (an
/// early return through `?`, a panic) is recorded as `failed`, with every
/// record up to then kept.
#[derive(Clone)]
pub struct Run {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("tstamp", &self.tstamp()).finish()
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run's final metadata.
    pub meta: RunMeta,
    /// What ingesting its records reported (problems are unexpected here).
    pub report: SyncReport,
}

impl Run {
    /// Starts a run in the repository containing the current directory, with
    /// this process's command line. See [`RunBuilder::start`].
    pub fn start() -> Result<Run> {
        RunBuilder::default().start()
    }

    /// Options for starting a run.
    pub fn builder() -> RunBuilder {
        RunBuilder::default()
    }

    /// Starts one segment of a hindsight replay (what the front ends call
    /// when [`flor_replay::worker::SPEC_ENV`] is set): the
    /// [`SegmentSpec`](flor_replay::SegmentSpec) at `spec_path` says what to
    /// do, the executor's [`Binding`](flor_replay::worker::Binding) in the
    /// environment says where to write and where the checkpoints are.
    /// `argv` is this process's command line: its `--kwargs` must be the
    /// recorded ones (a replay reproduces the run; the only overrides are
    /// the spec's, `flor replay --override`).
    pub fn start_replay(spec_path: &Path, argv: &[String]) -> Result<Run> {
        let spec = flor_replay::SegmentSpec::read(spec_path)?;
        let binding = flor_replay::worker::Binding::from_env()?;
        let recorded = Kwargs::from_argv(&spec.run.argv)?;
        let given = Kwargs::from_argv(argv)?;
        if recorded != given {
            return Err(flor_replay::Error::KwargsDiffer {
                tstamp: spec.run.tstamp.clone(),
                recorded: spec.run.argv.join(" "),
            }
            .into());
        }
        let objects = flor_core::ObjectStore::open(&binding.objects)?;
        // `--override KEY=VALUE`: what `arg(KEY, ...)` returns instead.
        let mut kwargs = recorded;
        for (k, v) in &spec.overrides {
            kwargs.set(k.clone(), v.clone());
        }
        let iters = spec.iter_filter(spec_path)?;
        let mut recorder = Recorder::create_replay(
            &binding.output,
            spec.run.clone(),
            kwargs,
            Some(objects.clone()),
            spec.context_map(),
            spec.names.clone(),
            spec.check.clone(),
        )?;
        recorder.set_replay_iters(iters);
        let inner = Inner { rec: recorder, project: None, objects, deferred: None, early: SyncReport::default() };
        Ok(Run { inner: Arc::new(Mutex::new(inner)) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent recorder (every
        // method completes its buffer writes), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run's timestamp (its identity within the project).
    pub fn tstamp(&self) -> String {
        self.lock().rec.meta().tstamp.clone()
    }

    /// The run's metadata.
    pub fn meta(&self) -> RunMeta {
        self.lock().rec.meta().clone()
    }

    /// The hyper-parameter `name`: `--kwargs name=value` from the command
    /// line (coerced to the default's type; a clear error if it cannot be),
    /// else `default`. Recorded as an `arg`.
    pub fn arg<T: ArgValue>(&self, name: &str, default: T) -> Result<T> {
        Ok(self.lock().rec.arg(name, default)?)
    }

    /// Records `value` under `name` at the current loop position; returns it.
    #[inline]
    pub fn log<V: Clone + Into<Value>>(&self, name: &str, value: V) -> V {
        let v: Value = value.clone().into();
        self.lock().rec.log(name, &v);
        value
    }

    /// Records a JSON value (anything `serde` serializes).
    pub fn log_json<T: serde::Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let v = Value::from_serialize(value).map_err(|e| flor_core::Error::Checkpoint {
            name: name.into(),
            message: format!("cannot serialize to JSON: {e}"),
        })?;
        self.lock().rec.log(name, &v);
        Ok(())
    }

    /// Records captured output text (`stream`: `stdout` or `stderr`).
    pub fn output(&self, stream: &str, text: &str) {
        self.lock().rec.output(stream, text);
    }

    /// Iterates `iter` as the loop `name`: each item is one iteration,
    /// nested inside the current one. Timings are recorded per iteration;
    /// records are written to disk at the end of every outermost iteration.
    pub fn loop_over<I: IntoIterator>(&self, name: &str, iter: I) -> Loop<I::IntoIter> {
        self.make_loop(name, iter, None)
    }

    /// Like [`Run::loop_over`], also recording each item's text (its
    /// `Display`) as the iteration's value (`loop_value` in SQL; the pivot's
    /// `<name>_value` column when the texts are not the indices).
    pub fn loop_with_values<I>(&self, name: &str, iter: I) -> Loop<I::IntoIter>
    where
        I: IntoIterator,
        I::Item: std::fmt::Display,
    {
        self.make_loop(name, iter, Some(|item: &I::Item| item.to_string()))
    }

    fn make_loop<I: IntoIterator>(
        &self,
        name: &str,
        iter: I,
        text: Option<fn(&I::Item) -> String>,
    ) -> Loop<I::IntoIter> {
        let began = {
            let mut g = self.lock();
            match g.rec.loop_begin(name) {
                Ok(()) => true,
                Err(e) => {
                    g.deferred.get_or_insert(e.into());
                    false
                }
            }
        };
        Loop { run: self.clone(), inner: iter.into_iter(), open: false, active: began, text }
    }

    /// Like [`Run::loop_over`] for an outer loop, checkpointing `state` with
    /// bincode at the end of every iteration (subject to
    /// [`Run::set_checkpoint_interval`]).
    pub fn checkpointed_loop<I, T, F>(
        &self,
        name: &str,
        iter: I,
        ckpt_name: &str,
        state: &mut T,
        mut body: F,
    ) -> Result<()>
    where
        I: IntoIterator,
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnMut(&mut T, I::Item) -> Result<()>,
    {
        for item in self.loop_over(name, iter) {
            body(state, item)?;
            if self.lock().rec.checkpoint_due() {
                self.checkpoint(ckpt_name, state)?;
            }
            // A failed write (a full disk) stops training here rather than
            // at the end: its records could not be kept anyway.
            if let Some(e) = self.lock().deferred.take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Checkpoints `state` (bincode) under `name`, attached to the current
    /// outer-loop iteration.
    pub fn checkpoint<T: serde::Serialize + serde::de::DeserializeOwned>(&self, name: &str, state: &T) -> Result<()> {
        self.checkpoint_with(name, state, &Bincode)
    }

    /// Checkpoints `state` with a custom serializer.
    pub fn checkpoint_with<T, S: CheckpointSerializer<T>>(&self, name: &str, state: &T, serializer: &S) -> Result<()> {
        let mut g = self.lock();
        g.rec.checkpoint(name, serializer.format(), |w| {
            serializer.save(state, w).map_err(|e| std::io::Error::other(e.0))
        })?;
        Ok(())
    }

    /// Minimum time between checkpoints taken by [`Run::checkpointed_loop`].
    pub fn set_checkpoint_interval(&self, interval: Duration) {
        self.lock().rec.set_checkpoint_interval(Some(interval));
    }

    /// The value form of [`Run::arg`], for front ends with dynamic types
    /// (the Python binding): coerced to the type of `default`.
    pub fn arg_value(&self, name: &str, default: Value) -> Result<Value> {
        Ok(self.lock().rec.arg_value(name, default)?)
    }

    /// The value form of [`Run::log`].
    #[inline]
    pub fn log_value(&self, name: &str, value: &Value) {
        self.lock().rec.log(name, value);
    }

    /// [`Run::log_value`] of a finite float `f` whose shortest text the
    /// caller has already made with `ryu::Buffer::format_finite(f)` (the
    /// Python binding prints it too).
    #[inline]
    pub fn log_float_text(&self, name: &str, text: &str) {
        self.lock().rec.log_float_text(name, text);
    }

    /// Low-level loop control for front ends that cannot use [`Loop`]
    /// (the Python binding's generators): enters loop `name`.
    pub fn loop_begin(&self, name: &str) -> Result<()> {
        Ok(self.lock().rec.loop_begin(name)?)
    }

    /// Begins the next iteration of the innermost loop; returns its index.
    pub fn iteration_begin(&self, value: Option<&str>) -> Result<u64> {
        Ok(self.lock().rec.iteration_begin(value)?)
    }

    /// Begins an iteration with an explicit index (or the next one).
    pub fn iteration_begin_at(&self, index: Option<u64>, value: Option<&str>) -> Result<u64> {
        Ok(self.lock().rec.iteration_begin_at(index, value)?)
    }

    /// Ends the current iteration (records reach the file at the end of an
    /// outermost iteration).
    pub fn iteration_end(&self) -> Result<()> {
        Ok(self.lock().rec.iteration_end()?)
    }

    /// Ends the open iteration of the innermost loop and begins the next
    /// one (one lock for both: the per-step call of front ends' inner loops).
    pub fn next_iteration(&self, value: Option<&str>) -> Result<u64> {
        let mut g = self.lock();
        g.rec.iteration_end()?;
        Ok(g.rec.iteration_begin_at(None, value)?)
    }

    /// Runs `f` on the run's recorder under one lock. For front ends that
    /// buffer steps and hand many of them over at once (the Python binding
    /// does, so that the code of a training step's `log` and loop step stays
    /// small). `f` must not end the run: use [`Run::finish`] for that.
    pub fn with_recorder<R>(&self, f: impl FnOnce(&mut Recorder) -> R) -> R {
        f(&mut self.lock().rec)
    }

    /// Whether this is a replay segment ([`Run::start_replay`]).
    pub fn is_replay(&self) -> bool {
        self.lock().project.is_none()
    }

    /// Leaves the innermost loop.
    pub fn loop_end(&self) -> Result<()> {
        Ok(self.lock().rec.loop_end()?)
    }

    /// Loop nesting depth (0 outside loops).
    pub fn depth(&self) -> usize {
        self.lock().rec.depth()
    }

    /// Whether a checkpoint taken now respects the checkpoint interval.
    pub fn checkpoint_due(&self) -> bool {
        self.lock().rec.checkpoint_due()
    }

    /// A streaming writer into the run's checkpoint object store; finish
    /// it and pass the id to [`Run::record_checkpoint`].
    pub fn object_writer(&self) -> Result<flor_core::ObjectWriter> {
        Ok(self.lock().objects.writer()?)
    }

    /// Records a checkpoint of object `name` stored as `id`, attached to
    /// the current outer iteration.
    pub fn record_checkpoint(&self, name: &str, format: &str, id: &flor_core::ObjectId) -> Result<()> {
        Ok(self.lock().rec.record_checkpoint(name, format, id)?)
    }

    /// The bytes of checkpoint object `digest` (a forward run's store, or
    /// the one a replay restores from), verified against the digest.
    pub fn object_bytes(&self, digest: &str) -> Result<Vec<u8>> {
        let objects = self.lock().objects.clone();
        Ok(objects.get(digest)?)
    }

    /// The repository root of the run's project (`None` for a replay
    /// segment, which runs in an exported copy of the code).
    pub fn root(&self) -> Option<std::path::PathBuf> {
        self.lock().project.as_ref().map(|p| p.root().to_owned())
    }

    /// Ends the run as `finished`: writes the last records and adds the
    /// record file to the run's git ref. The query database picks the run up
    /// at the next [`Project::sync`] (every query command syncs first).
    pub fn finish(self) -> Result<RunSummary> {
        self.end(RunStatus::Finished)
    }

    /// Ends the run as `failed`.
    pub fn fail(self) -> Result<RunSummary> {
        self.end(RunStatus::Failed)
    }

    /// Ends the run without keeping it: its record file and its code
    /// snapshot ref are deleted and nothing reaches the query database
    /// (checkpoint blobs, shared by content, stay). For trial runs, tests
    /// and benchmarks.
    pub fn discard(self) -> Result<()> {
        let mut g = self.lock();
        g.deferred = None;
        if !g.rec.is_finished() {
            g.rec.finish(RunStatus::Failed)?;
        }
        let path = g.rec.path().to_owned();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
        if let Some(project) = &g.project {
            flor_git::delete_ref(project.root(), &ref_for(&g.rec.meta().run_id()))?;
        }
        Ok(())
    }

    fn end(&self, status: RunStatus) -> Result<RunSummary> {
        let mut g = self.lock();
        end_inner(&mut g, status)
    }
}

fn end_inner(g: &mut Inner, status: RunStatus) -> Result<RunSummary> {
    if let Some(e) = g.deferred.take() {
        // Recorded as failed and published when the file could be ended;
        // else the next `flor` command ends and publishes it.
        if g.rec.finish(RunStatus::Failed).is_ok() {
            if let Some(project) = &g.project {
                let _ = ingest::publish(project.root(), g.rec.path());
            }
        }
        return Err(e);
    }
    let unused = g.rec.unused_kwargs();
    if !unused.is_empty() {
        eprintln!("flor: warning: --kwargs not used by any arg(): {}", unused.join(", "));
    }
    let meta = g.rec.finish(status)?;
    let report = std::mem::take(&mut g.early);
    let Some(project) = &g.project else {
        return Ok(RunSummary { meta, report });
    };
    ingest::publish(project.root(), g.rec.path())?;
    Ok(RunSummary { meta, report })
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.rec.is_finished() {
            if let Err(e) = end_inner(self, RunStatus::Failed) {
                eprintln!("flor: error while ending run {}: {e}", self.rec.meta().tstamp);
            }
        }
    }
}

/// An iterator that records loop iterations; see [`Run::loop_over`].
pub struct Loop<I: Iterator> {
    run: Run,
    inner: I,
    open: bool,
    active: bool,
    text: Option<fn(&I::Item) -> String>,
}

impl<I: Iterator> Iterator for Loop<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        if !self.active {
            return self.inner.next();
        }
        let mut g = self.run.lock();
        if self.open {
            self.open = false;
            if let Err(e) = g.rec.iteration_end() {
                g.deferred.get_or_insert(e.into());
            }
        }
        match self.inner.next() {
            Some(item) => {
                let text = self.text.map(|f| f(&item));
                match g.rec.iteration_begin(text.as_deref()) {
                    Ok(_) => self.open = true,
                    Err(e) => {
                        g.deferred.get_or_insert(e.into());
                    }
                }
                Some(item)
            }
            None => {
                self.active = false;
                if let Err(e) = g.rec.loop_end() {
                    g.deferred.get_or_insert(e.into());
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I: Iterator> Drop for Loop<I> {
    fn drop(&mut self) {
        if self.active {
            let mut g = self.run.lock();
            if !g.rec.is_finished() {
                if let Err(e) = g.rec.loop_end() {
                    g.deferred.get_or_insert(e.into());
                }
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
