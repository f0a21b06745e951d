//! Deferred steps: the training step's calls kept as [`Step`]s in [`Fast`],
//! the `flor-steps` worker thread that applies them in batches, and fork
//! handling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, MutexGuard};

use flor::Value;
use flor_core::Recorder;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use crate::capture::{Capture, STDERR, STDOUT};
use crate::convert::push_py_float;
use crate::log::record_value;
use crate::stdout::{current_stdout_ptr, flush_pending, BATCH_BYTES};
use crate::{raw_state, state, State};

/// A training step's call, kept for a moment instead of run at once.
///
/// The calls a training step makes most — the next iteration of an inner
/// `flor.loop`, and `flor.log` of an `int` or `float` whose line goes to the
/// batched stdout (or nowhere) — only append a `Step` of 24 bytes to
/// [`Fast::steps`], under their own small lock. Every [`MAX_STEPS`] steps the
/// batch goes to a worker thread, which applies it under the `STATE` lock:
/// records to the engine, printed lines to [`State::pending`]
/// ([`State::apply_steps`]). Everything else that reads or changes the run,
/// the loop position or the printed output goes through [`state()`], which
/// first waits for the worker and applies the steps still in `Fast`: loop
/// entry and exit, the end of an outermost iteration, any other write to the
/// batched stream, the end of the run. The record file and stdout receive
/// byte for byte what immediate calls would have written, in the same order,
/// and records still become durable at the end of every outermost iteration.
///
/// Why: a training step's own Python work evicts flor's code from the CPU's
/// caches, so each step paid for reloading the whole path (formatting, JSON
/// encoding, two locks) once per call. Deferred, a step runs a few dozen
/// instructions on the training thread, and the formatting runs on another
/// core for many steps at once, its code and data hot (see BENCHMARKS.md,
/// issue 3). With one CPU the batch is applied on the calling thread.
#[derive(Clone, Copy)]
pub(crate) enum Step {
    /// The next iteration of the (inner) loop at `layer`, whose item is `item`.
    Next {
        /// The loop's layer in the printed position.
        layer: u32,
        /// The iteration's item.
        item: Item,
    },
    /// A captured line of output ([`crate::capture`]): its channel and text
    /// are in [`Taken::text`] at `start` (`name_len` bytes of channel name
    /// first when `stream` is [`Stream::Named`]), `len` bytes in all.
    Output {
        /// Which channel.
        stream: Stream,
        /// Bytes of channel name before the line (named channels only).
        name_len: u16,
        /// Where the channel name (or the line) starts in the batch's text.
        start: u32,
        /// Bytes of name and line.
        len: u32,
    },
    /// `log(names[name].1, value)`; `print`: its line goes to `pending`.
    Log {
        /// The name's slot in [`State::names`].
        name: u32,
        /// Whether the line is printed (to the batched stream).
        print: bool,
        /// The logged number.
        value: Num,
    },
}

/// The channel of a captured line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// `io::stdout`.
    Stdout,
    /// `io::stderr`.
    Stderr,
    /// Named in the batch's text (`io::log::<level>`).
    Named,
}

/// A logged number.
#[derive(Clone, Copy)]
pub(crate) enum Num {
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
}

/// A deferred loop item, as it prints (`Hidden`: as its index).
#[derive(Clone, Copy)]
pub(crate) enum Item {
    /// Prints as the iteration's index.
    Hidden,
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `bool`.
    Bool(bool),
}

impl Item {
    /// The item's text into `out` (as [`item_text`](crate::convert::item_text) writes it); whether it
    /// has one.
    fn write(self, out: &mut String) -> bool {
        match self {
            Item::Hidden => return false,
            Item::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
            Item::Float(f) => push_py_float(out, f),
            Item::Bool(b) => out.push_str(if b { "True" } else { "False" }),
        }
        true
    }
}

/// Deferred steps per batch (24 bytes each).
pub(crate) const MAX_STEPS: usize = 256;

/// Bytes of captured text per batch (at most; a batch is sent on when it
/// holds more).
pub(crate) const MAX_TEXT: usize = 1 << 16;

/// An `int` (fitting `i64`) or `float`, not a subclass: the values a step may
/// defer. Runs no Python code except on an `int` too large (its error).
pub(crate) fn quick_num(v: &Bound<'_, PyAny>) -> Option<Num> {
    if v.is_exact_instance_of::<PyFloat>() {
        return v.extract::<f64>().ok().map(Num::Float);
    }
    if v.is_exact_instance_of::<PyInt>() {
        return v.extract::<i64>().ok().map(Num::Int);
    }
    None
}

/// A loop item a step may defer: `int`, `float` and `bool` (not
/// subclasses), and items that print as their index. `None` for text and
/// number subclasses, whose text the immediate path makes.
pub(crate) fn quick_item(item: &Bound<'_, PyAny>) -> Option<Item> {
    if item.is_exact_instance_of::<PyInt>() {
        return item.extract::<i64>().ok().map(Item::Int);
    }
    if item.is_exact_instance_of::<PyFloat>() {
        return item.extract::<f64>().ok().map(Item::Float);
    }
    if item.is_exact_instance_of::<PyBool>() {
        return Some(Item::Bool(item.is(&*PyBool::new(item.py(), true))));
    }
    if item.is_instance_of::<PyInt>() || item.is_instance_of::<PyFloat>() || item.is_instance_of::<PyString>() {
        return None;
    }
    Some(Item::Hidden)
}

/// What the hot calls read and append to, under a lock of its own so that
/// they never wait for the worker (see [`Step`]). [`State::publish`] keeps
/// it in step with `STATE`.
pub(crate) struct Fast {
    /// Steps may be deferred: a forward run records, no progress bar is open.
    pub(crate) on: bool,
    /// [`State::generation`].
    pub(crate) generation: u64,
    /// The addresses of [`State::names`]' `str` objects (slot = position).
    pub(crate) names: Vec<usize>,
    /// The address of the batched stdout stream (0: none).
    batched: usize,
    /// Steps not yet sent to the worker.
    pub(crate) steps: Vec<Step>,
    /// The text of the [`Step::Output`]s in `steps`.
    pub(crate) text: String,
    /// A forward run is active (captured lines are recorded).
    pub(crate) live: bool,
    /// Automatic capture of output (see [`crate::capture`]).
    pub(crate) cap: Capture,
}

/// A batch of steps taken from [`Fast`], with the text of its outputs.
pub(crate) struct Taken {
    /// The steps, in order.
    pub(crate) steps: Vec<Step>,
    /// The text the [`Step::Output`]s point into.
    pub(crate) text: String,
}

/// The hot calls' state (see [`Fast`]).
static FAST: Mutex<Fast> = Mutex::new(Fast {
    on: false,
    generation: 0,
    names: Vec::new(),
    batched: 0,
    steps: Vec::new(),
    text: String::new(),
    live: false,
    cap: Capture::new(),
});

/// Locks [`FAST`] (a poisoned lock is used as is: every section leaves it
/// consistent).
pub(crate) fn fast() -> MutexGuard<'static, Fast> {
    FAST.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fast {
    /// The steps so far, leaving room for a whole batch.
    pub(crate) fn take(&mut self) -> Taken {
        Taken {
            steps: std::mem::replace(&mut self.steps, Vec::with_capacity(MAX_STEPS)),
            text: std::mem::take(&mut self.text),
        }
    }

    /// Whether the steps so far make a whole batch.
    pub(crate) fn full(&self) -> bool {
        self.steps.len() >= MAX_STEPS || self.text.len() >= MAX_TEXT
    }

    /// Whether a line printed now goes to the batched stream (`Some(true)`),
    /// nowhere (`Some(false)`), or elsewhere (`None`: not deferred).
    pub(crate) fn print_now(&self, py: Python<'_>) -> Option<bool> {
        let now = current_stdout_ptr(py);
        if now.is_null() || now == unsafe { pyo3::ffi::Py_None() } {
            Some(false)
        } else if now as usize == self.batched {
            Some(true)
        } else {
            None
        }
    }
}

/// Batches sent to the worker and not yet applied.
static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);
/// Signalled when `OUTSTANDING` drops.
static IDLE: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
/// The worker's queue (started on the first batch).
static WORKER: Mutex<Option<mpsc::Sender<Taken>>> = Mutex::new(None);
/// `State::pending.len()` as of the last batch applied.
pub(crate) static PENDING_LEN: AtomicUsize = AtomicUsize::new(0);

/// Waits until the worker has applied every batch sent to it.
pub(crate) fn wait_idle() {
    if OUTSTANDING.load(Ordering::SeqCst) == 0 {
        return;
    }
    let (lock, cv) = &IDLE;
    let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
    while OUTSTANDING.load(Ordering::SeqCst) > 0 {
        g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
    }
}

/// `FLOR_STEP_THREAD=0` applies batches of steps on the training thread
/// itself (as with one CPU) instead of a worker thread.
const STEP_THREAD_ENV: &str = "FLOR_STEP_THREAD";

/// Sends a batch to the worker (starting it if needed); gives the batch
/// back when there is no worker (one CPU, or it could not start).
fn send_to_worker(steps: Taken) -> Option<Taken> {
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let parallel = || {
        std::env::var_os(STEP_THREAD_ENV).is_none_or(|v| v != "0")
            && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    };
    if !*PARALLEL.get_or_init(parallel) {
        return Some(steps);
    }
    let mut worker = WORKER.lock().unwrap_or_else(|p| p.into_inner());
    if worker.is_none() {
        let (tx, rx) = mpsc::channel::<Taken>();
        if std::thread::Builder::new().name("flor-steps".into()).spawn(move || worker_loop(rx)).is_err() {
            return Some(steps);
        }
        *worker = Some(tx);
    }
    let Some(tx) = worker.as_ref() else { return Some(steps) };
    OUTSTANDING.fetch_add(1, Ordering::SeqCst);
    match tx.send(steps) {
        Ok(()) => None,
        Err(mpsc::SendError(steps)) => {
            OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
            *worker = None;
            Some(steps)
        }
    }
}

/// The `flor-steps` thread: applies each batch under `STATE` (a panic
/// becomes the run's step error), then counts it applied and wakes
/// [`wait_idle`].
fn worker_loop(rx: mpsc::Receiver<Taken>) {
    for steps in rx {
        {
            let mut st = raw_state();
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.apply_steps(&steps)));
            if applied.is_err() {
                st.step_error.get_or_insert_with(|| "flor's step worker panicked; records may be missing".into());
            }
        }
        let (lock, cv) = &IDLE;
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        OUTSTANDING.fetch_sub(1, Ordering::SeqCst);
        cv.notify_all();
    }
}

/// Sends a full batch of steps on, first handing the pending lines over
/// when the worker is idle and they fill a block.
pub(crate) fn submit(py: Python<'_>, steps: Taken) -> PyResult<()> {
    if OUTSTANDING.load(Ordering::SeqCst) == 0 && PENDING_LEN.load(Ordering::Relaxed) >= BATCH_BYTES {
        flush_pending(py)?;
    }
    if let Some(steps) = send_to_worker(steps) {
        let mut st = raw_state();
        st.apply_steps(&steps);
        st.step_result()?;
    }
    Ok(())
}

/// `os.register_at_fork(before=...)`: nothing in flight while the process
/// forks (the child has no worker thread).
#[pyfunction]
pub(crate) fn _before_fork() {
    drop(state());
}

/// `os.register_at_fork(after_in_child=...)`: the child starts its own
/// worker when it needs one.
#[pyfunction]
pub(crate) fn _after_fork_in_child() {
    // A forked child (a data-loader worker) records nothing of its output:
    // its parent's run is not its own.
    fast().cap.disable_in_child();
    *WORKER.lock().unwrap_or_else(|p| p.into_inner()) = None;
    OUTSTANDING.store(0, Ordering::SeqCst);
}

impl State {
    /// Hands deferred steps (see [`Step`]) to the engine and their printed
    /// lines to `pending`, in order. An error is kept for [`State::step_result`].
    pub(crate) fn apply_steps(&mut self, steps: &Taken) {
        if let Some(run) = self.run.clone() {
            if let Err(e) = run.with_recorder(|rec| self.apply(rec, steps)) {
                self.step_error.get_or_insert_with(|| flor::Error::from(e).to_string());
            }
        }
        PENDING_LEN.store(self.pending.len(), Ordering::Relaxed);
    }

    /// Makes [`Fast`] agree with this state.
    pub(crate) fn publish(&self) {
        let mut f = fast();
        f.on = self.defer && self.recording && self.bars == 0 && self.run.is_some();
        f.live = self.defer && self.run.is_some();
        f.generation = self.generation;
        f.batched = self.batch.as_ref().map_or(0, |b| b.stream.as_ptr() as usize);
        let same = f.names.len() == self.names.len()
            && f.names.iter().zip(&self.names).all(|(a, (k, _))| *a == k.as_ptr() as usize);
        if !same {
            f.names.clear();
            f.names.extend(self.names.iter().map(|(k, _)| k.as_ptr() as usize));
        }
    }

    /// [`State::apply_steps`] with the run's recorder: each step's records,
    /// and its printed line appended to `pending`.
    fn apply(&mut self, rec: &mut Recorder, steps: &Taken) -> flor_core::Result<()> {
        let mut text = String::new();
        for step in &steps.steps {
            match *step {
                Step::Output { stream, name_len, start, len } => {
                    let (start, len, name_len) = (start as usize, len as usize, usize::from(name_len));
                    let Some(all) = steps.text.get(start..start + len) else { continue };
                    let (name, line) = match stream {
                        Stream::Stdout => (STDOUT, all),
                        Stream::Stderr => (STDERR, all),
                        Stream::Named => all.split_at_checked(name_len).unwrap_or(("", all)),
                    };
                    self.record_output(rec, name, line);
                }
                Step::Next { layer, item } => {
                    text.clear();
                    let shown = item.write(&mut text).then_some(text.as_str());
                    rec.iteration_end()?;
                    let index = rec.iteration_begin_at(None, shown)?;
                    self.set_layer(layer as usize, index, shown);
                }
                Step::Log { name, print, value } => {
                    self.output_only = false;
                    if print {
                        self.refresh_prefix();
                    }
                    let name = &self.names[name as usize].1;
                    let value = match value {
                        Num::Int(i) => Value::Int(i),
                        Num::Float(f) => Value::Float(f),
                    };
                    if print {
                        let out = &mut self.pending;
                        out.push_str(&self.prefix);
                        out.push_str(name);
                        out.push_str(": ");
                        record_value(rec, name, &value, None, Some(out));
                        out.push('\n');
                    } else {
                        record_value(rec, name, &value, None, None);
                    }
                }
            }
        }
        Ok(())
    }
}
