//! `flordb._flor`: the Rust half of the `flordb` Python module. It exposes
//! flor's recording engine (`flor::Run`) and query side (`flor::Project`) to
//! the pure-Python layer in `python/flordb/__init__.py`, which implements
//! FlorDB's API on top. One implementation of the recording semantics is
//! shared with the Rust API.

mod capture;
mod convert;
mod log;
mod loops;
mod pending;
mod query;
mod run;
mod stdout;
mod steps;

use std::sync::{Mutex, MutexGuard};

use flor::Run;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::stdout::Batch;
use crate::steps::{fast, wait_idle};

create_exception!(_flor, FlorError, PyException, "An error reported by flor (names what failed and where).");

/// A flor error as a Python `FlorError` (its message names what failed and
/// where).
fn err(e: flor::Error) -> PyErr {
    FlorError::new_err(e.to_string())
}

// ---------------------------------------------------------------------------
// The process's recording state.
//
// FlorDB's API is module-level (`flor.log`, `flor.loop`), so the run and the
// loop position live in one process-wide state. The hot calls (`log` and the
// iterations of `loop`) run entirely in Rust, with no Python frame between;
// the most common ones are deferred (see `Step`).
//
// Locking: `STATE` is only held in sections that run no Python code (no
// calls, no decref of arbitrary objects, no allocation of GC-tracked
// objects), so a thread holding it never waits for the GIL and the GIL
// serializes everything else. The `flor-steps` worker holds it (never the
// GIL) while it applies a batch; callers on Python threads take it through
// `state()`, which waits for the worker first. `FAST` (the hot calls' own
// state) is taken alone or while holding `STATE`, never the other way round.
// ---------------------------------------------------------------------------

/// One open loop, for the printed position (`epoch: 0, step: 3, `).
struct Layer {
    /// The loop's name.
    name: Box<str>,
    /// The iteration's index (printed when the value has no text).
    index: u64,
    /// The iteration's value when it prints as itself (numbers, text).
    /// Valid when `has_text` (kept allocated across iterations).
    text: String,
    /// Whether `text` holds the iteration's value.
    has_text: bool,
}

/// The process's recording state (see the comment above): the run, the
/// printed position, where printed lines go, and the error of applying
/// deferred steps.
struct State {
    /// The active run (`None` before `start` and after `finish`).
    run: Option<Run>,
    /// Bumped at every start: loops opened in an earlier run leave the
    /// current one alone.
    generation: u64,
    /// Recently logged names by Python object identity: under the stable ABI
    /// for Python 3.9 every `str` -> `&str` conversion allocates, and a
    /// training loop logs the same few (interned) names over and over.
    names: Vec<(Py<PyString>, Box<str>)>,
    /// The open loops, outermost first.
    layers: Vec<Layer>,
    /// The printed position of `layers`, rebuilt when `prefix_stale`.
    prefix: String,
    /// Whether `prefix` must be rebuilt (a layer changed).
    prefix_stale: bool,
    /// The line being printed (reused).
    line: String,
    /// `sys.stdout` when last seen, and its bound `write`.
    stdout: Option<(Py<PyAny>, Py<PyAny>)>,
    /// Open progress bars: log lines then go through `tqdm.write`.
    bars: usize,
    /// Whether `log` records and prints (a replay turns it off outside the
    /// iterations whose values it recovers).
    recording: bool,
    /// Printed lines not yet handed to `batch`'s stream.
    pending: String,
    /// The stdout stream whose lines flor batches (see [`Batch`]).
    batch: Option<Batch>,
    /// Whether steps may be deferred: a forward run (not a replay) is active.
    defer: bool,
    /// The first error of applying deferred steps, reported by the next
    /// call that reads the run ([`State::step_result`]).
    step_error: Option<String>,
    /// The last captured line recorded in this run (channel, loop context,
    /// text): a repeat at the same place is not recorded again.
    last_output: capture::LastOutput,
    /// The run was started by a captured line and has recorded nothing but
    /// output since (see [`capture::release`]).
    output_only: bool,
    /// The lines recorded while `output_only` (channel, text).
    kept_output: capture::Kept,
}

/// The process's one [`State`] (see the locking rules above).
static STATE: Mutex<State> = Mutex::new(State {
    run: None,
    generation: 0,
    names: Vec::new(),
    layers: Vec::new(),
    prefix: String::new(),
    prefix_stale: false,
    line: String::new(),
    stdout: None,
    bars: 0,
    recording: true,
    pending: String::new(),
    batch: None,
    defer: false,
    step_error: None,
    last_output: capture::LastOutput::new(),
    output_only: false,
    kept_output: capture::Kept::new(),
});

/// Names remembered by [`State::names`].
const NAME_CACHE: usize = 32;

/// The state as it is, deferred steps not applied: for applying them (the
/// worker, [`steps::submit`]) and for [`state()`].
fn raw_state() -> MutexGuard<'static, State> {
    // Every section leaves the state consistent, so a poisoned lock is used as is.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process's state with every deferred step applied (the worker idle,
/// `Fast::steps` empty). Dropping it publishes what the hot calls read.
fn state() -> StateGuard {
    let taken = {
        let mut f = fast();
        if f.steps.is_empty() {
            None
        } else {
            Some(f.take())
        }
    };
    wait_idle();
    let mut st = raw_state();
    if let Some(steps) = taken {
        st.apply_steps(&steps);
    }
    StateGuard(st)
}

/// [`State`], locked by [`state()`]; dropping it publishes
/// [`Fast`](steps::Fast)'s view of the state ([`State::publish`]).
struct StateGuard(MutexGuard<'static, State>);

impl std::ops::Deref for StateGuard {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for StateGuard {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        self.0.publish();
    }
}

/// The error of a call that needs a run when none is active.
fn no_run() -> PyErr {
    FlorError::new_err("no flor run is active (it was committed)")
}

impl State {
    /// The active run (reporting an error of applying deferred steps).
    fn run(&mut self) -> PyResult<&Run> {
        self.step_result()?;
        self.run.as_ref().ok_or_else(no_run)
    }

    /// The error of applying deferred steps since the last call, if any.
    fn step_result(&mut self) -> PyResult<()> {
        match self.step_error.take() {
            Some(e) => Err(FlorError::new_err(e)),
            None => Ok(()),
        }
    }

    /// The position of a logged name in the identity cache (added on a miss).
    fn name_index(&mut self, name: &Bound<'_, PyString>) -> PyResult<usize> {
        if let Some(i) = self.names.iter().position(|(k, _)| k.as_ptr() == name.as_ptr()) {
            return Ok(i);
        }
        // Deferred steps name cached names by position: none is pending
        // here (`state()` applied them).
        let text: Box<str> = name.to_cow()?.as_ref().into();
        if text.len() > flor_core::record::MAX_NAME_BYTES {
            return Err(FlorError::new_err(format!(
                "flor.log: a name of {} bytes is longer than record files allow ({} bytes)",
                text.len(),
                flor_core::record::MAX_NAME_BYTES
            )));
        }
        if self.names.len() >= NAME_CACHE {
            // Dropping a `str` runs no Python code.
            self.names.remove(0);
        }
        self.names.push((name.clone().unbind(), text));
        Ok(self.names.len() - 1)
    }

    /// Rebuilds the printed position (`epoch: 0, step: 3, `) if a layer
    /// changed since.
    fn refresh_prefix(&mut self) {
        if !self.prefix_stale {
            return;
        }
        self.prefix.clear();
        for l in &self.layers {
            self.prefix.push_str(&l.name);
            self.prefix.push_str(": ");
            if l.has_text {
                self.prefix.push_str(&l.text);
            } else {
                self.prefix.push_str(itoa::Buffer::new().format(l.index));
            }
            self.prefix.push_str(", ");
        }
        self.prefix_stale = false;
    }

    /// Opens a layer for loop `name`, at index 0 with no text; returns its
    /// position.
    fn push_layer(&mut self, name: &str) -> usize {
        self.layers.push(Layer { name: name.into(), index: 0, text: String::new(), has_text: false });
        self.prefix_stale = true;
        self.layers.len() - 1
    }

    /// Sets the layer at `at` to iteration `index`, printed as `text` (none:
    /// as the index).
    fn set_layer(&mut self, at: usize, index: u64, text: Option<&str>) {
        if let Some(l) = self.layers.get_mut(at) {
            l.index = index;
            l.text.clear();
            l.has_text = text.is_some();
            l.text.push_str(text.unwrap_or_default());
            self.prefix_stale = true;
        }
    }

    /// Closes the layers from `at` on.
    fn pop_layers(&mut self, at: usize) {
        if at < self.layers.len() {
            self.layers.truncate(at);
            self.prefix_stale = true;
        }
    }
}

/// The `flordb._flor` module: `FlorError`, the classes and functions of the
/// modules above, and `log` as a `METH_FASTCALL` C function.
#[pymodule]
fn _flor(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FlorError", py.get_type::<FlorError>())?;
    stdout::init(py)?;
    m.add_class::<loops::LoopIter>()?;
    m.add_class::<run::Writer>()?;
    m.add_class::<capture::Hook>()?;
    for f in [
        wrap_pyfunction!(stdout::_stdout_write, m)?,
        wrap_pyfunction!(capture::capture_hook, m)?,
        wrap_pyfunction!(capture::capture_on, m)?,
        wrap_pyfunction!(capture::capture_hold, m)?,
        wrap_pyfunction!(capture::capture_release, m)?,
        wrap_pyfunction!(capture::capture_off, m)?,
        wrap_pyfunction!(capture::capture_own_write, m)?,
        wrap_pyfunction!(capture::capture_text, m)?,
        wrap_pyfunction!(capture::capture_log, m)?,
        wrap_pyfunction!(capture::capture_mute, m)?,
        wrap_pyfunction!(capture::capture_set, m)?,
        wrap_pyfunction!(capture::capture_settings, m)?,
        wrap_pyfunction!(capture::capture_config, m)?,
        wrap_pyfunction!(stdout::_stdout_flush, m)?,
        wrap_pyfunction!(loops::loop_iter, m)?,
        wrap_pyfunction!(loops::iteration_enter, m)?,
        wrap_pyfunction!(loops::iteration_exit, m)?,
        wrap_pyfunction!(run::start, m)?,
        wrap_pyfunction!(run::start_replay, m)?,
        wrap_pyfunction!(run::set_recording, m)?,
        wrap_pyfunction!(run::active, m)?,
        wrap_pyfunction!(run::tstamp, m)?,
        wrap_pyfunction!(run::root, m)?,
        wrap_pyfunction!(run::source_checks, m)?,
        wrap_pyfunction!(run::arg, m)?,
        wrap_pyfunction!(run::depth, m)?,
        wrap_pyfunction!(run::checkpoint_due, m)?,
        wrap_pyfunction!(run::set_checkpoint_interval, m)?,
        wrap_pyfunction!(run::object_writer, m)?,
        wrap_pyfunction!(run::record_checkpoint, m)?,
        wrap_pyfunction!(run::finish, m)?,
        wrap_pyfunction!(convert::py_float_repr, m)?,
        wrap_pyfunction!(query::dataframe, m)?,
        wrap_pyfunction!(query::query, m)?,
        wrap_pyfunction!(query::io, m)?,
        wrap_pyfunction!(query::checkpoints, m)?,
        wrap_pyfunction!(query::object_bytes, m)?,
        wrap_pyfunction!(run::run_object_bytes, m)?,
        wrap_pyfunction!(pending::pending, m)?,
        wrap_pyfunction!(run::keep_file, m)?,
        wrap_pyfunction!(run::file_digest, m)?,
        wrap_pyfunction!(query::checkpoint_entries, m)?,
        wrap_pyfunction!(steps::_before_fork, m)?,
        wrap_pyfunction!(steps::_after_fork_in_child, m)?,
    ] {
        m.add_function(f)?;
    }
    m.add_class::<query::Frame>()?;
    m.add_class::<query::Buf>()?;
    // SAFETY: `LOG_DEF` lives for the process and CPython only reads it;
    // `m` is a live module; the result is a new reference or null.
    let log = unsafe {
        Bound::from_owned_ptr_or_err(
            m.py(),
            pyo3::ffi::PyCFunction_NewEx(&raw mut log::LOG_DEF, m.as_ptr(), m.name()?.as_ptr()),
        )
    }?;
    m.add("log", log)?;
    Ok(())
}
