//! Where printed lines go: the sinks (`sys.stdout.write`, a progress bar,
//! nowhere), the batching of lines for a redirected stdout, and the
//! `_stdout_write`/`_stdout_flush` hooks that keep the output in order.

use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

use crate::steps::{Stream, PENDING_LEN};
use crate::{state, FlorError, State};

/// Batching of the printed lines. A `print` per log costs a Python-level
/// `write` (most of a log call's time). When `sys.stdout` is a plain
/// `io.TextIOWrapper` that is not a terminal, flor keeps its lines in
/// [`State::pending`] and hands them over in blocks, and sets the stream's
/// `write` and `flush` (instance attributes, which `print`, `writelines` and
/// every other Python-level write look up first) to functions that hand the
/// pending lines over before anything else is written: the order of lines in
/// the output is exactly as if each had been printed at once. Pending lines
/// are also handed over at the end of every outermost iteration (when records
/// become durable), every [`BATCH_BYTES`], and when the run ends, where the
/// stream is restored.
pub(crate) struct Batch {
    /// The stream.
    pub(crate) stream: Py<PyAny>,
    /// Its own bound `write`.
    write: Py<PyAny>,
    /// Its own bound `flush`.
    flush: Py<PyAny>,
    /// The capture hook that was the stream's `write` (see
    /// [`crate::capture`]): writes through the batch are captured, and the
    /// hook is set back when batching stops.
    hook: Option<Py<PyAny>>,
}

/// Pending bytes that trigger a hand-over.
pub(crate) const BATCH_BYTES: usize = 1 << 16;

/// Where a printed line goes.
pub(crate) enum Sink {
    /// Appended to [`State::pending`] (`sys.stdout` is the batched stream).
    Batched,
    /// `sys.stdout.write`, bound.
    Write(Py<PyAny>),
    /// `sys.stdout` changed since last seen: look it up again.
    Refresh,
    /// A progress bar is open: `tqdm.write`.
    Bar,
    /// No `sys.stdout` (pythonw, closed): nothing printed.
    Nowhere,
}

/// `sys.__dict__` and the interned key `"stdout"`, set at module init: the
/// per-line check that `sys.stdout` is still the stream last seen is one
/// dictionary lookup (`PySys_GetObject` would build the key string each time).
static SYS_STDOUT: PyOnceLock<(Py<PyAny>, Py<PyString>)> = PyOnceLock::new();

/// Sets [`SYS_STDOUT`] (module init).
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    let sys_dict = py.import("sys")?.getattr("__dict__")?.unbind();
    let _ = SYS_STDOUT.set(py, (sys_dict, PyString::intern(py, "stdout").unbind()));
    Ok(())
}

/// `sys.stdout`, borrowed, only to compare identities (null: unset, or
/// before module init).
pub(crate) fn current_stdout_ptr(py: Python<'_>) -> *mut pyo3::ffi::PyObject {
    match SYS_STDOUT.get(py) {
        // Borrowed reference (or null); only compared, never used. The key is
        // an interned str: the lookup runs no Python code.
        Some((dict, key)) => unsafe { pyo3::ffi::PyDict_GetItemWithError(dict.as_ptr(), key.as_ptr()) },
        None => std::ptr::null_mut(),
    }
}

impl State {
    /// Where a line printed now goes.
    pub(crate) fn sink(&self, py: Python<'_>) -> Sink {
        if self.bars > 0 {
            return Sink::Bar;
        }
        let now = current_stdout_ptr(py);
        if now.is_null() || now == unsafe { pyo3::ffi::Py_None() } {
            return Sink::Nowhere;
        }
        if self.batch.as_ref().is_some_and(|b| b.stream.as_ptr() == now) {
            return Sink::Batched;
        }
        match &self.stdout {
            Some((obj, write)) if obj.as_ptr() == now => Sink::Write(write.clone_ref(py)),
            _ => Sink::Refresh,
        }
    }

    /// The pending lines and the stream's own `write`, to hand them over
    /// outside the lock.
    pub(crate) fn take_pending(&mut self, py: Python<'_>) -> Option<(String, Py<PyAny>)> {
        if self.pending.is_empty() {
            return None;
        }
        let b = self.batch.as_ref()?;
        PENDING_LEN.store(0, Ordering::Relaxed);
        Some((std::mem::take(&mut self.pending), b.write.clone_ref(py)))
    }
}

/// Calls `write(text)`.
pub(crate) fn call_write(py: Python<'_>, write: &Py<PyAny>, text: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    // `PyObject_CallFunctionObjArgs` passes the argument on the stack
    // (vectorcall) instead of building a tuple, and is in the stable ABI.
    // SAFETY: both pointers are live references held here; the list of
    // arguments ends with null; the result is a new reference or null.
    let r = unsafe {
        pyo3::ffi::PyObject_CallFunctionObjArgs(
            write.as_ptr(),
            text.as_ptr(),
            std::ptr::null_mut::<pyo3::ffi::PyObject>(),
        )
    };
    Ok(unsafe { Bound::from_owned_ptr_or_err(py, r) }?.unbind())
}

/// Hands the pending lines to the batched stream.
pub(crate) fn flush_pending(py: Python<'_>) -> PyResult<()> {
    let taken = {
        let mut st = state();
        st.step_result()?;
        st.take_pending(py)
    };
    match taken {
        Some((text, write)) => hand_over(py, text, &write),
        None => Ok(()),
    }
}

/// Writes a block of pending lines, then gives its buffer back (keeping its
/// capacity: no regrowth per block).
pub(crate) fn hand_over(py: Python<'_>, mut text: String, write: &Py<PyAny>) -> PyResult<()> {
    let written = call_write(py, write, PyString::new(py, &text).as_any());
    text.clear();
    let mut st = state();
    if st.pending.is_empty() && st.pending.capacity() < text.capacity() {
        st.pending = text;
    }
    written.map(drop)
}

/// Starts batching on `out` when it is a plain `io.TextIOWrapper` that is
/// not a terminal (and nothing is batched yet). Returns whether it did.
fn start_batching(py: Python<'_>, out: &Bound<'_, PyAny>) -> PyResult<bool> {
    if state().batch.is_some() {
        return Ok(false);
    }
    let textio = py.import("io")?.getattr("TextIOWrapper")?;
    if !out.get_type().is(&textio) || out.call_method0("isatty")?.is_truthy()? {
        return Ok(false);
    }
    // A stream capture has hooked: its own `write`, not the hook's (flor's
    // lines are not captured).
    let hook = crate::capture::hook_of(py, out).map(|(_, f)| f);
    let write = match crate::capture::own_write(py, out) {
        Some(w) => w.into_bound(py),
        None => out.getattr("write")?,
    };
    let flush = out.getattr("flush")?;
    let module = py.import("flordb._flor")?;
    if out.setattr("write", module.getattr("_stdout_write")?).is_err() {
        return Ok(false);
    }
    if out.setattr("flush", module.getattr("_stdout_flush")?).is_err() {
        let _ = restore_write(out, hook.as_ref());
        return Ok(false);
    }
    state().batch = Some(Batch { stream: out.clone().unbind(), write: write.unbind(), flush: flush.unbind(), hook });
    Ok(true)
}

/// Hands the pending lines over and gives the stream its own `write` and
/// `flush` back.
pub(crate) fn stop_batching(py: Python<'_>) -> PyResult<()> {
    let flushed = flush_pending(py);
    let batch = state().batch.take();
    if let Some(b) = batch {
        let stream = b.stream.bind(py);
        let _ = restore_write(stream, b.hook.as_ref());
        let _ = stream.delattr("flush");
    }
    flushed
}

/// Gives `stream` back the `write` it had before batching: capture's
/// `hook`, else its own.
fn restore_write(stream: &Bound<'_, PyAny>, hook: Option<&Py<PyAny>>) -> PyResult<()> {
    match hook {
        Some(h) => stream.setattr("write", h),
        None => stream.delattr("write"),
    }
}

/// The batched stream's `write`: hands flor's pending lines over first.
#[pyfunction]
pub(crate) fn _stdout_write(py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let (pending, write, captured) = {
        let mut st = state();
        st.step_result()?;
        let Some(b) = &st.batch else {
            return Err(FlorError::new_err("flor's stdout wrapper called without a batched stream"));
        };
        let write = b.write.clone_ref(py);
        let captured = b.hook.is_some();
        (std::mem::take(&mut st.pending), write, captured)
    };
    if !pending.is_empty() {
        hand_over(py, pending, &write)?;
    }
    let written = call_write(py, &write, text)?;
    if captured {
        crate::capture::absorb(py, Stream::Stdout, text);
    }
    Ok(written)
}

/// The batched stream's `flush`: hands flor's pending lines over first.
#[pyfunction]
pub(crate) fn _stdout_flush(py: Python<'_>) -> PyResult<Py<PyAny>> {
    flush_pending(py)?;
    let flush = state().batch.as_ref().map(|b| b.flush.clone_ref(py));
    match flush {
        Some(f) => Ok(f.bind(py).call0()?.unbind()),
        None => Ok(py.None()),
    }
}

/// Prints `line` (with its newline) where FlorDB would.
pub(crate) fn emit(py: Python<'_>, sink: Sink, line: Bound<'_, PyString>) -> PyResult<()> {
    // flor's own line: recorded as a value, not captured as output.
    let _mute = crate::capture::Mute::new();
    match sink {
        Sink::Write(write) => {
            call_write(py, &write, line.as_any())?;
        }
        Sink::Batched | Sink::Nowhere => {}
        Sink::Bar => {
            py.import("flordb")?.getattr("_bar_write")?.call1((line,))?;
        }
        Sink::Refresh => {
            let sys = py.import("sys")?;
            let out = sys.getattr("stdout")?;
            if out.is_none() {
                return Ok(());
            }
            // Lines batched for another stream go out before this one's.
            flush_pending(py)?;
            if start_batching(py, &out)? {
                state().pending.push_str(&line.to_cow()?);
                return Ok(());
            }
            let write = out.getattr("write")?;
            write.call1((line,))?;
            let old = state().stdout.replace((out.unbind(), write.unbind()));
            drop(old); // outside the lock: the old stream's dealloc may run Python code
        }
    }
    Ok(())
}
