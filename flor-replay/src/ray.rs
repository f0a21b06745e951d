//! [`RayExecutor`]: replay segments as tasks on a Ray cluster.
//!
//! flor does not schedule across machines itself: it starts the driver the
//! `flordb` Python package ships (`python -m flordb._ray --address ...`,
//! on this machine, with `ray` installed) and talks to it in JSON lines
//! (the protocol is in that module's docs). Nothing is assumed shared with
//! the cluster's nodes. Per segment, this side prepares under
//! `<work>/<run id>/<tag>/`:
//!
//! * `code/`: the run's code version exported from git, the propagated
//!   script written over the old one (once per run and request; the driver
//!   archives it once and Ray's object store carries it to each node);
//! * `seg-<k>.objects/`: an object store holding only the checkpoint
//!   objects the segment restores and the setup loads it answers;
//! * `seg-<k>.json`: the spec.
//!
//! A task unpacks them into a fresh temporary folder on its node, runs the
//! script with the worker binding ([`crate::worker`]) and returns the record
//! file, which the driver writes to `seg-<k>.jsonl`; this side then marks the
//! segment done (`seg-<k>.done`), as the local executor does, so a replay
//! interrupted here resumes without running finished segments again. Ray
//! retries a task whose worker process or node died (`retries`); a retried
//! task starts from a fresh folder, so nothing it wrote before is kept. A
//! script that fails is not retried: it would fail again.
//!
//! The old code sees only its commit's files on a node (not the rest of the
//! user's working tree, such as data sets git ignores): data must be
//! reachable from the nodes by the script itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use flor_core::objects::ObjectStore;
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::executor::{Event, Executor, Finished, SegmentTask, TaskId, TaskProgress};
use crate::isolate::remove_tree;

/// How long the driver may take to connect to the cluster and say so.
const CONNECT: Duration = Duration::from_secs(90);

/// Where and how a [`RayExecutor`] works.
#[derive(Debug, Clone)]
pub struct RayOptions {
    /// The user's repository (code versions are exported from its git
    /// objects).
    pub root: PathBuf,
    /// The executor's own folder (`.flor/replay`).
    pub work_dir: PathBuf,
    /// The checkpoint object store (`.flor/objects`).
    pub objects: PathBuf,
    /// The cluster, as `ray.init` takes it (`HOST:PORT`, `auto`).
    pub address: String,
    /// The Python that runs the driver here (it needs `ray` and `flordb`).
    pub driver_python: String,
    /// The interpreter segments run with on the nodes; empty: the Python
    /// each Ray node runs.
    pub worker_python: String,
    /// How many times a segment whose worker or node died is retried.
    pub retries: u32,
}

/// What the driver found when it connected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterInfo {
    /// CPUs of the cluster (segments at once: each task takes one).
    pub cpus: usize,
    /// Live nodes.
    pub nodes: usize,
    /// The Python segments run with.
    pub python: String,
    /// The `flordb` version of the driver's Python.
    pub flordb: String,
    /// Ray's version.
    pub ray: String,
}

/// A message from the driver.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Message {
    Ready(ClusterInfo),
    Error {
        message: String,
    },
    Checked {
        missing: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        python: BTreeMap<String, String>,
    },
    Started {
        key: String,
    },
    Progress {
        key: String,
        done: usize,
    },
    Finished {
        key: String,
        ok: bool,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        secs: f64,
    },
    /// The driver's standard output ended.
    #[serde(skip)]
    Gone,
}

/// A segment submitted and not finished.
struct Pending {
    dir: PathBuf,
    total: usize,
    started: Option<(usize, Instant)>,
    done: usize,
}

/// Runs segments as Ray tasks. See the module docs.
pub struct RayExecutor {
    opts: RayOptions,
    info: ClusterInfo,
    child: Child,
    stdin: Option<ChildStdin>,
    messages: Receiver<Message>,
    pending: HashMap<TaskId, Pending>,
    /// Worker slots (for progress bars): which segment each shows.
    slots: Vec<Option<TaskId>>,
    /// Run folders whose code is exported.
    prepared: HashSet<PathBuf>,
    /// Events ready to hand out (resumed segments).
    ready: Vec<Event>,
    log: PathBuf,
}

impl std::fmt::Debug for RayExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayExecutor").field("opts", &self.opts).field("info", &self.info).finish()
    }
}

fn ray_error(message: impl Into<String>) -> Error {
    Error::Executor { executor: "ray", message: message.into() }
}

impl RayExecutor {
    /// Starts the driver and connects to the cluster; a cluster that cannot
    /// be reached (or a driver Python without `ray`) is an error here,
    /// before any work starts.
    pub fn connect(opts: RayOptions) -> Result<RayExecutor> {
        fs::create_dir_all(&opts.work_dir).map_err(|e| Error::io("create", &opts.work_dir, e))?;
        let log = opts.work_dir.join("ray-driver.log");
        let stderr = fs::File::create(&log).map_err(|e| Error::io("create", &log, e))?;
        let mut cmd = Command::new(&opts.driver_python);
        cmd.args(["-m", "flordb._ray", "--address", &opts.address, "--retries", &opts.retries.to_string()])
            .args(["--python", &opts.worker_python])
            // The driver is no run: nothing of its own is captured.
            .env("FLOR_CAPTURE", "0")
            .env_remove(crate::worker::SPEC_ENV)
            .current_dir(&opts.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .map_err(|e| ray_error(format!("could not start the Ray driver with `{}`: {e}", opts.driver_python)))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| ray_error("the driver has no standard output"))?;
        let (tx, messages) = mpsc::channel();
        std::thread::Builder::new()
            .name("flor-ray-driver".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(m) = serde_json::from_str::<Message>(&line) {
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.send(Message::Gone);
            })
            .map_err(|e| ray_error(format!("could not start a thread: {e}")))?;
        let mut ex = RayExecutor {
            info: ClusterInfo { cpus: 0, nodes: 0, python: String::new(), flordb: String::new(), ray: String::new() },
            opts,
            child,
            stdin,
            messages,
            pending: HashMap::new(),
            slots: Vec::new(),
            prepared: HashSet::new(),
            ready: Vec::new(),
            log,
        };
        match ex.answer(CONNECT)? {
            Message::Ready(info) => {
                if info.cpus == 0 {
                    return Err(ray_error(format!(
                        "the Ray cluster at {} has no CPUs to run segments on",
                        ex.opts.address
                    )));
                }
                ex.slots = vec![None; info.cpus];
                ex.info = info;
                Ok(ex)
            }
            Message::Error { message } => Err(ray_error(message)),
            _ => Err(ray_error("the driver answered out of turn")),
        }
    }

    /// The cluster the driver connected to.
    pub fn cluster(&self) -> &ClusterInfo {
        &self.info
    }

    /// Checks that every node has `flordb` and the modules `sources` (the
    /// scripts to run) import, other than `local` ones (modules of the code
    /// versions themselves). Missing ones are an error naming them per node.
    pub fn check_imports(&mut self, sources: &[String], local: &[String]) -> Result<()> {
        self.send(&json!({"op": "check", "sources": sources, "local": local}))?;
        match self.answer(Duration::from_secs(300))? {
            Message::Checked { missing, .. } if missing.is_empty() => Ok(()),
            Message::Checked { missing, python } => {
                let list: Vec<String> = missing
                    .iter()
                    .map(|(node, mods)| {
                        let py = python.get(node).map_or("its Python", String::as_str);
                        format!("node {node} ({py}) lacks {}", mods.join(", "))
                    })
                    .collect();
                Err(ray_error(format!(
                    "the cluster cannot run the scripts: {}; install them in the Python the nodes run \
                     (or name another with `ray_python` under [replay] in .flor/config.toml)",
                    list.join("; ")
                )))
            }
            Message::Error { message } => Err(ray_error(message)),
            _ => Err(ray_error("the driver answered out of turn")),
        }
    }

    /// The next message that answers a request (progress events that come
    /// meanwhile are kept for [`Executor::next_event`]).
    fn answer(&mut self, timeout: Duration) -> Result<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m @ (Message::Ready(_) | Message::Error { .. } | Message::Checked { .. })) => return Ok(m),
                Ok(Message::Gone) | Err(RecvTimeoutError::Disconnected) => return Err(self.gone()),
                Ok(other) => {
                    if let Some(e) = self.event_of(other) {
                        self.ready.push(e);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ray_error(format!(
                        "the Ray driver did not answer in {} s (its log: {})",
                        timeout.as_secs(),
                        self.log.display()
                    )))
                }
            }
        }
    }

    /// Why the driver stopped: the end of its log.
    fn gone(&mut self) -> Error {
        let _ = self.child.wait();
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        ray_error(format!(
            "the Ray driver stopped ({}); the end of its log ({}):\n{}",
            self.child.try_wait().ok().flatten().map_or("killed".into(), |s| s.to_string()),
            self.log.display(),
            tail.join("\n")
        ))
    }

    fn send(&mut self, msg: &serde_json::Value) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else { return Err(ray_error("the driver's input is closed")) };
        let mut line = msg.to_string();
        line.push('\n');
        if stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).is_err() {
            return Err(self.gone());
        }
        Ok(())
    }

    /// The event a driver message makes, if any.
    fn event_of(&mut self, m: Message) -> Option<Event> {
        match m {
            // Again for a retry (its worker or node died): the same slot,
            // progress from 0.
            Message::Started { key } => {
                let id = parse_key(&key)?;
                let known = self.pending.get(&id)?.started.map(|(slot, _)| slot);
                let slot = known.or_else(|| self.slots.iter().position(Option::is_none)).unwrap_or(0);
                if let Some(s) = self.slots.get_mut(slot) {
                    *s = Some(id);
                }
                let p = self.pending.get_mut(&id)?;
                p.started = Some((slot, Instant::now()));
                p.done = 0;
                Some(Event::Started { id, worker: slot })
            }
            Message::Progress { key, done } => {
                let id = parse_key(&key)?;
                if let Some(p) = self.pending.get_mut(&id) {
                    p.done = done;
                }
                None
            }
            Message::Finished { key, ok, error, secs } => {
                let id = parse_key(&key)?;
                let p = self.pending.remove(&id)?;
                for s in &mut self.slots {
                    if *s == Some(id) {
                        *s = None;
                    }
                }
                let k = id.segment;
                let result = if ok { self.collect(&p.dir, k) } else { Err(error.unwrap_or_else(|| "failed".into())) };
                let _ = remove_tree(&p.dir.join(format!("seg-{k}.objects")));
                Some(Event::Finished(Finished { id, result, secs, resumed: false }))
            }
            Message::Ready(_) | Message::Error { .. } | Message::Checked { .. } | Message::Gone => None,
        }
    }

    /// A finished segment's records, marked done for resumption.
    fn collect(&self, dir: &Path, k: usize) -> std::result::Result<Vec<u8>, String> {
        let out = dir.join(format!("seg-{k}.jsonl"));
        let bytes = fs::read(&out).map_err(|e| format!("could not read {}: {e}", out.display()))?;
        let done = dir.join(format!("seg-{k}.done"));
        fs::write(&done, b"").map_err(|e| format!("could not write {}: {e}", done.display()))?;
        Ok(bytes)
    }

    /// Exports the run's code version once per run folder, and writes the
    /// segment's spec and object store.
    fn prepare(&mut self, dir: &Path, task: &SegmentTask) -> Result<PathBuf> {
        let code = dir.join("code");
        if !self.prepared.contains(dir) {
            remove_tree(&code).map_err(|e| Error::io("remove", &code, e))?;
            flor_git::materialize(&self.opts.root, &task.spec.code.commit, &code)?;
            let script = code.join(&task.spec.code.script);
            fs::write(&script, &task.spec.code.source).map_err(|e| Error::io("write", &script, e))?;
            self.prepared.insert(dir.to_owned());
        }
        let k = task.id.segment;
        let objects = dir.join(format!("seg-{k}.objects"));
        remove_tree(&objects).map_err(|e| Error::io("remove", &objects, e))?;
        let from = ObjectStore::open(&self.opts.objects)?;
        let to = ObjectStore::open(&objects)?;
        // Setup loads kept by digest only travel when some run stored the
        // same bytes; otherwise the node's worker says it cannot answer.
        let loads = task.spec.loads.iter().filter(|l| l.kept || from.contains(&l.digest)).map(|l| l.digest.as_str());
        let digests = task.spec.checkpoints.values().flatten().map(|c| c.digest.as_str()).chain(loads);
        for digest in digests.collect::<HashSet<_>>() {
            if to.contains(digest) {
                continue;
            }
            let bytes = from.get(digest)?;
            to.put(&bytes)?;
        }
        task.spec.write(&dir.join(format!("seg-{k}.json")))?;
        Ok(objects)
    }
}

/// `R/S` → the task id.
fn parse_key(key: &str) -> Option<TaskId> {
    let (r, s) = key.split_once('/')?;
    Some(TaskId { run: r.parse().ok()?, segment: s.parse().ok()? })
}

impl Executor for RayExecutor {
    fn name(&self) -> &'static str {
        "ray"
    }

    fn workers(&self) -> usize {
        self.info.cpus.max(1)
    }

    fn submit(&mut self, task: SegmentTask) -> Result<()> {
        let dir = self
            .opts
            .work_dir
            .join(task.spec.run.run_id())
            .join(crate::local::tag(&task.spec.names, &task.spec.code.source));
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let k = task.id.segment;
        let output = dir.join(format!("seg-{k}.jsonl"));
        if dir.join(format!("seg-{k}.done")).exists() {
            if let Ok(bytes) = fs::read(&output) {
                self.ready.push(Event::Finished(Finished { id: task.id, result: Ok(bytes), secs: 0.0, resumed: true }));
                return Ok(());
            }
        }
        if output.exists() {
            fs::remove_file(&output).map_err(|e| Error::io("remove", &output, e))?;
        }
        let objects = self.prepare(&dir, &task)?;
        let key = format!("{}/{}", task.id.run, task.id.segment);
        let total = task.spec.segment.steps.len();
        self.pending.insert(task.id, Pending { dir: dir.clone(), total, started: None, done: 0 });
        self.send(&json!({
            "op": "submit",
            "key": key,
            "code": dir.join("code"),
            "objects": objects,
            "spec": dir.join(format!("seg-{k}.json")),
            "output": output,
            "steps": total,
        }))
    }

    fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        if let Some(e) = self.ready.pop() {
            return Ok(Some(e));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(Message::Gone) | Err(RecvTimeoutError::Disconnected) => return Err(self.gone()),
                Ok(Message::Error { message }) => return Err(ray_error(message)),
                Ok(m) => {
                    if let Some(e) = self.event_of(m) {
                        return Ok(Some(e));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Ok(None),
            }
        }
    }

    fn progress(&self) -> Vec<Option<TaskProgress>> {
        self.slots
            .iter()
            .map(|slot| {
                let id = (*slot)?;
                let p = self.pending.get(&id)?;
                let (_, since) = p.started?;
                Some(TaskProgress {
                    id,
                    done: p.done.min(p.total),
                    total: p.total,
                    secs: since.elapsed().as_secs_f64(),
                })
            })
            .collect()
    }

    fn cancel(&mut self) -> Result<()> {
        self.send(&json!({"op": "cancel"}))
    }

    fn forget_run(&mut self, run_id: &str) -> Result<()> {
        let dir = self.opts.work_dir.join(run_id);
        self.prepared.retain(|p| !p.starts_with(&dir));
        remove_tree(&dir).map_err(|e| Error::io("remove", &dir, e))
    }
}

impl Drop for RayExecutor {
    fn drop(&mut self) {
        // Closing its input ends the driver: it cancels what is left,
        // disconnects and exits.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
