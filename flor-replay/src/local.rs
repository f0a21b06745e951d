//! [`LocalExecutor`]: replay segments as processes on this machine, one per
//! worker thread.
//!
//! Each run's code version is exported from git into
//! `<work>/<run id>/<tag>/base` (never the user's checkout; `<tag>` hashes
//! the names and the propagated script, so different requests never mix),
//! the propagated script is written over the old one, and each segment runs
//! as the run's interpreter and command line with the [`Binding`] in its
//! environment, isolated as [`LocalOptions::isolation`] says
//! ([`crate::isolate`]): with the overlay, in its own view of the project
//! root whose private layer is `<work>/<run id>/<tag>/seg-<k>/upper`; with
//! copies, in `<work>/<run id>/<tag>/code`. Either stays until the run's
//! values are attached (for a failed run: until the next replay of it). A
//! segment that ends well leaves `seg-<k>.jsonl` and a `seg-<k>.done`
//! marker, so a replay that was interrupted resumes where it stopped: a
//! resubmitted segment with a marker is answered at once.
//! Stdout and stderr of each segment are kept beside it (`seg-<k>.out`,
//! `seg-<k>.err`) until the run's records are attached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flor_core::layout::{ref_for, RECORDS_DIR};

use crate::error::{Error, Result};
use crate::executor::{Event, Executor, Finished, SegmentTask, TaskId, TaskProgress};
use crate::isolate::{copy_visible, remove_tree, unlock_work_dirs, Isolation, IsolationSettings, TreeView, View};
use crate::worker::Binding;

/// How often a worker checks its process for an exit or a cancel.
const POLL: Duration = Duration::from_millis(20);

/// Where a [`LocalExecutor`] works.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The user's repository (code versions are exported from its git
    /// objects; the old code reads the rest of its tree, such as data sets,
    /// and never writes into it).
    pub root: PathBuf,
    /// The executor's own folder (`.flor/replay`).
    pub work_dir: PathBuf,
    /// The checkpoint object store (`.flor/objects`).
    pub objects: PathBuf,
    /// Worker processes at once (at least 1).
    pub jobs: usize,
    /// How segments are kept from writing into `root` (the plan's
    /// [`Plan::isolation`](crate::Plan::isolation)); `None`: decided at the
    /// first segment with the default [`IsolationSettings`].
    pub isolation: Option<Isolation>,
}

/// A segment waiting for, or running on, a worker.
struct Job {
    id: TaskId,
    dir: PathBuf,
    launch: Launch,
    interpreter: String,
    args: Vec<String>,
    binding: Binding,
    steps: usize,
    generation: u64,
}

/// How one run's code version was set up (once per run folder).
enum Prepared {
    /// `base` holds the old version; each segment's view hides `newer`.
    Overlay { base: PathBuf, newer: Vec<PathBuf> },
    /// `code` holds the old version and copies of what it sees.
    Copy { code: PathBuf },
}

/// Where and how a segment's process starts.
struct Launch {
    script: PathBuf,
    cwd: PathBuf,
    /// The overlay view it enters (its `cwd` is inside) and the segment's
    /// folder holding its layers.
    view: Option<(Arc<View>, PathBuf)>,
}

/// What a busy worker runs.
struct Slot {
    id: TaskId,
    progress: Option<PathBuf>,
    total: usize,
    started: Instant,
}

/// State the worker threads share with the executor.
struct Shared {
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
    slots: Mutex<Vec<Option<Slot>>>,
    /// Bumped by [`Executor::cancel`]: jobs of an older generation stop.
    generation: AtomicU64,
    shutdown: AtomicBool,
}

/// Runs segments as local processes. See the module docs.
pub struct LocalExecutor {
    opts: LocalOptions,
    shared: Arc<Shared>,
    events: Receiver<Event>,
    sender: Sender<Event>,
    threads: Vec<JoinHandle<()>>,
    prepared: HashMap<PathBuf, Prepared>,
    tree: Option<Arc<TreeView>>,
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExecutor").field("opts", &self.opts).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Worker threads never panic while holding these locks (no user code
    // runs under them); a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalExecutor {
    /// An executor with `opts.jobs` worker threads.
    pub fn new(opts: LocalOptions) -> LocalExecutor {
        let jobs = opts.jobs.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            slots: Mutex::new((0..jobs).map(|_| None).collect()),
            generation: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
        });
        let (sender, events) = mpsc::channel();
        let threads = (0..jobs)
            .map(|w| {
                let shared = Arc::clone(&shared);
                let tx = sender.clone();
                std::thread::Builder::new().name(format!("flor-replay-{w}")).spawn(move || worker(w, &shared, &tx))
            })
            .filter_map(std::result::Result::ok)
            .collect();
        LocalExecutor {
            opts: LocalOptions { jobs, ..opts },
            shared,
            events,
            sender,
            threads,
            prepared: HashMap::new(),
            tree: None,
        }
    }

    /// The folder holding run `run_id`'s work for the request in `spec`.
    fn run_dir(&self, task: &SegmentTask) -> PathBuf {
        self.opts.work_dir.join(task.spec.run.run_id()).join(tag(&task.spec.names, &task.spec.code.source))
    }

    /// The isolation, decided at the first call when the options have none.
    fn isolation(&mut self) -> Result<Isolation> {
        if let Some(i) = &self.opts.isolation {
            return Ok(i.clone());
        }
        let i = Isolation::decide(&self.opts.root, &self.opts.work_dir, &IsolationSettings::default())?;
        self.opts.isolation = Some(i.clone());
        Ok(i)
    }

    /// What of the user's tree the old versions see, scanned once.
    fn tree(&mut self) -> Result<Arc<TreeView>> {
        if let Some(t) = &self.tree {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(TreeView::scan(&self.opts.root)?);
        self.tree = Some(Arc::clone(&t));
        Ok(t)
    }

    /// Exports the run's code version and writes the propagated script (and
    /// with copies, copies what it sees of the user's tree), once per run
    /// folder and executor; then prepares segment `k`'s start.
    fn prepare(&mut self, dir: &Path, task: &SegmentTask, k: usize) -> Result<Launch> {
        let tree = self.tree()?;
        if !self.prepared.contains_key(dir) {
            let isolation = self.isolation()?;
            let copy = matches!(isolation, Isolation::Copy { .. });
            let base = dir.join(if copy { "code" } else { "base" });
            remove_tree(&base).map_err(|e| Error::io("remove", &base, e))?;
            flor_git::materialize(&self.opts.root, &task.spec.code.commit, &base)?;
            let script = base.join(&task.spec.code.script);
            fs::write(&script, &task.spec.code.source).map_err(|e| Error::io("write", &script, e))?;
            let prepared = if copy {
                copy_visible(&tree, Some(&base))?;
                Prepared::Copy { code: base }
            } else {
                Prepared::Overlay { newer: tree.newer_than(&base), base }
            };
            self.prepared.insert(dir.to_owned(), prepared);
        }
        let script = Path::new(&task.spec.code.script);
        let parent = script.parent().unwrap_or(Path::new(""));
        match &self.prepared[dir] {
            Prepared::Copy { code } => Ok(Launch { script: code.join(script), cwd: code.join(parent), view: None }),
            #[cfg(target_os = "linux")]
            Prepared::Overlay { base, newer } => {
                let real = [self.opts.work_dir.clone(), self.opts.objects.clone()];
                let seg = dir.join(format!("seg-{k}"));
                let view = crate::isolate::overlay_view(&tree, Some(base), newer, &seg, &real, parent)?;
                let (script, cwd) = (tree.root.join(script), tree.root.join(parent));
                Ok(Launch { script, cwd, view: Some((Arc::new(view), seg)) })
            }
            #[cfg(not(target_os = "linux"))]
            Prepared::Overlay { .. } => {
                let _ = k;
                Err(Error::OverlayUnavailable { why: "overlay mounts in a user namespace need Linux".into() })
            }
        }
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn workers(&self) -> usize {
        self.opts.jobs
    }

    fn submit(&mut self, task: SegmentTask) -> Result<()> {
        let dir = self.run_dir(&task);
        let k = task.id.segment;
        let output = dir.join(format!("seg-{k}.jsonl"));
        if dir.join(format!("seg-{k}.done")).exists() {
            if let Ok(bytes) = fs::read(&output) {
                let done = Finished { id: task.id, result: Ok(bytes), secs: 0.0, resumed: true };
                let _ = self.sender.send(Event::Finished(done));
                return Ok(());
            }
        }
        let launch = self.prepare(&dir, &task, k)?;
        if output.exists() {
            fs::remove_file(&output).map_err(|e| Error::io("remove", &output, e))?;
        }
        let spec = dir.join(format!("seg-{k}.json"));
        task.spec.write(&spec)?;
        let binding = Binding {
            spec,
            output,
            objects: self.opts.objects.clone(),
            progress: Some(dir.join(format!("seg-{k}.progress"))),
        };
        let job = Job {
            id: task.id,
            dir,
            launch,
            interpreter: task.spec.run.interpreter.clone(),
            args: task.spec.run.argv.iter().skip(1).cloned().collect(),
            binding,
            steps: task.spec.segment.steps.len(),
            generation: self.shared.generation.load(Ordering::SeqCst),
        };
        lock(&self.shared.queue).push_back(job);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // The executor holds a sender itself: never disconnected.
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Executor { executor: "local", message: "the worker threads are gone".into() })
            }
        }
    }

    fn progress(&self) -> Vec<Option<TaskProgress>> {
        lock(&self.shared.slots)
            .iter()
            .map(|slot| {
                slot.as_ref().map(|s| TaskProgress {
                    id: s.id,
                    done: s.progress.as_deref().map_or(0, read_progress).min(s.total),
                    total: s.total,
                    secs: s.started.elapsed().as_secs_f64(),
                })
            })
            .collect()
    }

    fn cancel(&mut self) -> Result<()> {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let queued: Vec<Job> = lock(&self.shared.queue).drain(..).collect();
        for job in queued {
            let _ = self.sender.send(Event::Finished(Finished::failed(job.id, "cancelled", 0.0)));
        }
        Ok(())
    }

    fn forget_run(&mut self, run_id: &str) -> Result<()> {
        let dir = self.opts.work_dir.join(run_id);
        self.prepared.retain(|p, _| !p.starts_with(&dir));
        remove_tree(&dir).map_err(|e| Error::io("remove", &dir, e))?;
        let _ = fs::remove_dir(&self.opts.work_dir); // when empty
        Ok(())
    }
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        let _ = self.cancel();
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A worker thread: takes jobs until shutdown.
fn worker(w: usize, shared: &Shared, tx: &Sender<Event>) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if shared.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(j) = q.pop_front() {
                    break j;
                }
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        lock(&shared.slots)[w] = Some(Slot {
            id: job.id,
            progress: job.binding.progress.clone(),
            total: job.steps,
            started: Instant::now(),
        });
        let _ = tx.send(Event::Started { id: job.id, worker: w });
        let done = run_job(&job, shared);
        lock(&shared.slots)[w] = None;
        let _ = tx.send(Event::Finished(done));
    }
}

/// Runs one segment's process and collects its record file.
fn run_job(job: &Job, shared: &Shared) -> Finished {
    let started = Instant::now();
    let k = job.id.segment;
    let stderr_path = job.dir.join(format!("seg-{k}.err"));
    let (Ok(out), Ok(err)) = (fs::File::create(job.dir.join(format!("seg-{k}.out"))), fs::File::create(&stderr_path))
    else {
        return Finished::failed(job.id, format!("cannot create log files in {}", job.dir.display()), 0.0);
    };
    let mut cmd = Command::new(&job.interpreter);
    cmd.arg(&job.launch.script).args(&job.args).stdin(Stdio::null()).stdout(out).stderr(err);
    match &job.launch.view {
        Some((view, _)) => view.apply(&mut cmd),
        None => {
            cmd.current_dir(&job.launch.cwd);
        }
    }
    job.binding.apply(&mut cmd);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if job.launch.view.is_some() => {
            let why = format!("cannot start {} in the replay's private view of the project: {e}", job.interpreter);
            return Finished::failed(job.id, why, 0.0);
        }
        Err(e) => return Finished::failed(job.id, format!("cannot start {}: {e}", job.interpreter), 0.0),
    };
    let status = wait(child, job.generation, shared);
    if let Some((_, seg)) = &job.launch.view {
        unlock_work_dirs(seg);
    }
    let secs = started.elapsed().as_secs_f64();
    match status {
        None => Finished::failed(job.id, "cancelled", secs),
        Some(Err(e)) => Finished::failed(job.id, format!("lost the process of {}: {e}", job.interpreter), secs),
        Some(Ok(s)) if !s.success() => {
            let tail = fs::read_to_string(&stderr_path).unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            let last = lines[lines.len().saturating_sub(8)..].join("\n    ");
            Finished::failed(job.id, format!("the script crashed ({s}); last lines of its stderr:\n    {last}"), secs)
        }
        Some(Ok(_)) => match fs::read(&job.binding.output) {
            Err(_) => Finished::failed(job.id, "the script exited without recording (does it import flordb?)", secs),
            Ok(bytes) => {
                let marker = job.dir.join(format!("seg-{k}.done"));
                if let Err(e) = fs::write(&marker, b"") {
                    return Finished::failed(job.id, format!("cannot mark the segment done: {e}"), secs);
                }
                let _ = std::io::stdout().flush();
                Finished::ok(job.id, bytes, secs)
            }
        },
    }
}

/// Waits for the process; kills it when the job's generation is cancelled
/// (`None`).
fn wait(mut child: Child, generation: u64, shared: &Shared) -> Option<std::io::Result<ExitStatus>> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        if shared.generation.load(Ordering::SeqCst) != generation || shared.shutdown.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The `done` count of a progress file (`done total`), 0 when unreadable.
fn read_progress(path: &Path) -> usize {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|d| d.parse::<usize>().ok()))
        .unwrap_or(0)
}

/// A short tag for the statements applied to a version: segment files of a
/// different request never mix.
pub(crate) fn tag(names: &[String], source: &str) -> String {
    // FNV-1a over the names and the propagated source.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in names.join(",").bytes().chain([0u8]).chain(source.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Removes the work folders (under `work_dir`, a [`LocalExecutor`]'s) of
/// replays that are already attached to their runs' refs: a `flor replay`
/// killed between attaching a run's records and removing its folder leaves
/// it behind. A request folder goes when every segment it planned is done
/// and each one's records are, byte for byte, a replay file of the run in
/// git; anything else (an interrupted replay that can still resume) stays.
/// Safe while other replays run: what it removes is in git already. Returns
/// the run ids whose folders were removed.
pub fn remove_published(root: &Path, work_dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for run_dir in list_dirs(work_dir)? {
        let Some(run_id) = run_dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let Ok(published_files) = flor_git::read_dir_at(root, &ref_for(&run_id), RECORDS_DIR) else { continue };
        // An attached file is the worker's file checked (`crate::check`): its
        // check line names the worker's file by digest. (Files attached
        // before checks existed are the worker's bytes themselves.)
        let mut published: HashSet<Vec<u8>> = HashSet::new();
        for (_, bytes) in published_files {
            for c in flor_core::record::parse_lines(&bytes, 1).checks {
                published.extend(c.output.map(String::into_bytes));
            }
            published.insert(bytes);
        }
        for request in list_dirs(&run_dir)? {
            if is_published(&request, &published) {
                fs::remove_dir_all(&request).map_err(|e| Error::io("remove", &request, e))?;
            }
        }
        if fs::remove_dir(&run_dir).is_ok() {
            removed.push(run_id);
        }
    }
    let _ = fs::remove_dir(work_dir); // when empty
    Ok(removed)
}

/// Whether every segment planned in a request folder (a `seg-<k>.json`) is
/// done and its records are among `published`.
fn is_published(request: &Path, published: &HashSet<Vec<u8>>) -> bool {
    let Ok(entries) = fs::read_dir(request) else { return false };
    let mut segments = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(k) = name.to_str().and_then(|n| n.strip_prefix("seg-")).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let done = request.join(format!("seg-{k}.done")).exists();
        let in_git = fs::read(request.join(format!("seg-{k}.jsonl")))
            .is_ok_and(|b| published.contains(crate::check::output_digest(&b).as_bytes()) || published.contains(&b));
        if !(done && in_git) {
            return false;
        }
        segments += 1;
    }
    segments > 0
}

fn list_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list", dir, e)),
    }
}
