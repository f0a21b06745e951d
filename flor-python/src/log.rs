//! `flor.log`: the immediate path (record, print through a sink), the
//! deferred path's entry (a [`Step`] appended to
//! [`Fast`](crate::steps::Fast)), and the `METH_FASTCALL` C function CPython
//! calls for it.

use flor::Value;
use flor_core::Recorder;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::convert::{push_py_float_from_ryu, push_value_text, to_logged};
use crate::run::ensure_run;
use crate::stdout::{emit, hand_over, Sink, BATCH_BYTES};
use crate::steps::{fast, quick_num, submit, Step};
use crate::{no_run, state};

/// Records `v` under `name` and, with `line`, appends how it prints there
/// (`shown`, else Python's text of it). A finite float is formatted once,
/// by `ryu`, for both. Both the immediate and the deferred `log` use this.
pub(crate) fn record_value(rec: &mut Recorder, name: &str, v: &Value, shown: Option<&str>, line: Option<&mut String>) {
    match (shown, v) {
        (Some(text), _) => {
            rec.log(name, v);
            if let Some(line) = line {
                line.push_str(text);
            }
        }
        (None, Value::Float(f)) if f.is_finite() => {
            let mut digits = ryu::Buffer::new();
            let text = digits.format_finite(*f);
            rec.log_float_text(name, text);
            if let Some(line) = line {
                push_py_float_from_ryu(line, *f, text);
            }
        }
        (None, _) => {
            rec.log(name, v);
            if let Some(line) = line {
                push_value_text(line, v);
            }
        }
    }
}

/// `flor.log(name, value)`: records `value` under `name` at the current loop
/// position, prints it the way FlorDB does (`epoch: 0, step: 3, loss:
/// 0.25`), and returns it.
fn log<'py>(py: Python<'py>, name: &Bound<'py, PyString>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(num) = quick_num(value) {
        let mut f = fast();
        if f.on {
            let slot = f.names.iter().position(|&k| k == name.as_ptr() as usize);
            if let (Some(slot), Some(print)) = (slot, f.print_now(py)) {
                f.steps.push(Step::Log { name: slot as u32, print, value: num });
                let batch = f.full().then(|| f.take());
                drop(f);
                if let Some(batch) = batch {
                    submit(py, batch)?;
                }
                return Ok(value.clone());
            }
        }
    }
    let (v, shown) = to_logged(py, value)?;
    let mut st = state();
    if st.run.is_none() {
        drop(st);
        ensure_run(py)?;
        st = state();
    }
    if !st.recording {
        return Ok(value.clone());
    }
    st.step_result()?;
    st.output_only = false;
    let i = st.name_index(name)?;
    let s = &mut *st;
    s.refresh_prefix();
    let run = s.run.as_ref().ok_or_else(no_run)?;
    s.line.clear();
    s.line.push_str(&s.prefix);
    s.line.push_str(&s.names[i].1);
    s.line.push_str(": ");
    let (name, line) = (&s.names[i].1, &mut s.line);
    run.with_recorder(|rec| record_value(rec, name, &v, shown.as_deref(), Some(line)));
    let sink = s.sink(py);
    if !matches!(sink, Sink::Bar) {
        s.line.push('\n');
    }
    if let Sink::Batched = sink {
        s.pending.push_str(&s.line);
        let due = if s.pending.len() >= BATCH_BYTES { s.take_pending(py) } else { None };
        drop(st);
        if let Some((text, write)) = due {
            hand_over(py, text, &write)?;
        }
        return Ok(value.clone());
    }
    let line = PyString::new(py, &s.line);
    drop(st);
    emit(py, sink, line)?;
    Ok(value.clone())
}

/// `flor.log` as CPython calls it: a `METH_FASTCALL | METH_KEYWORDS` C
/// function, so that a call passes its arguments on the stack instead of in
/// a new tuple. (pyo3 declares functions for the stable ABI of Python 3.9 as
/// `METH_VARARGS`; the fast-call convention is implemented by every CPython
/// since 3.7 and is part of the stable ABI since 3.10.) Arguments as in
/// `log(name, value)`, positional or by keyword.
pub(crate) static mut LOG_DEF: pyo3::ffi::PyMethodDef = pyo3::ffi::PyMethodDef {
    ml_name: c"log".as_ptr(),
    ml_meth: pyo3::ffi::PyMethodDefPointer {
        // SAFETY: CPython calls the function with the fast-call signature
        // that `ml_flags` declares; both are `extern "C"` function pointers.
        PyCFunction: unsafe { std::mem::transmute::<FastCallKw, pyo3::ffi::PyCFunction>(log_fastcall as FastCallKw) },
    },
    ml_flags: METH_FASTCALL | pyo3::ffi::METH_KEYWORDS,
    ml_doc: c"log(name, value)\n--\n\nRecords `value` under `name` at the current loop position, prints it\nthe way FlorDB does (`epoch: 0, step: 3, loss: 0.25`) and returns it."
        .as_ptr(),
};

/// CPython's `METH_FASTCALL` (missing from pyo3's declarations for the
/// stable ABI of 3.9, though every CPython since 3.7 implements it).
const METH_FASTCALL: std::ffi::c_int = 0x0080;

/// The C signature of a `METH_FASTCALL | METH_KEYWORDS` function.
type FastCallKw = unsafe extern "C" fn(
    *mut pyo3::ffi::PyObject,
    *const *mut pyo3::ffi::PyObject,
    pyo3::ffi::Py_ssize_t,
    *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject;

/// [`LOG_DEF`]'s function: [`log`] with its arguments read from the stack;
/// a Rust panic is raised as Python's `PanicException`.
unsafe extern "C" fn log_fastcall(
    _module: *mut pyo3::ffi::PyObject,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls C functions with the GIL held (the stable ABI
    // excludes free-threaded builds).
    let py = unsafe { Python::assume_attached() };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `args` holds `nargs` positional arguments followed by one
        // value per name in `kwnames` (a tuple, or null), all borrowed.
        let (name, value) = unsafe { log_arguments(py, args, nargs, kwnames) }?;
        log(py, &name, &value).map(Bound::into_ptr)
    }));
    let e = match outcome {
        Ok(Ok(result)) => return result,
        Ok(Err(e)) => e,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            pyo3::panic::PanicException::new_err(format!("flor.log panicked: {what}"))
        }
    };
    e.restore(py);
    std::ptr::null_mut()
}

/// `(name, value)` from a fast call's arguments, with Python's own errors
/// for a wrong call.
///
/// # Safety
/// `args` must hold `nargs` borrowed references followed by one for each
/// entry of `kwnames`, a tuple of `str` (or null).
unsafe fn log_arguments<'py>(
    py: Python<'py>,
    args: *const *mut pyo3::ffi::PyObject,
    nargs: pyo3::ffi::Py_ssize_t,
    kwnames: *mut pyo3::ffi::PyObject,
) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyAny>)> {
    use pyo3::exceptions::PyTypeError;
    const NAMES: [&str; 2] = ["name", "value"];
    let nargs = usize::try_from(nargs).unwrap_or(0);
    if nargs > 2 {
        return Err(PyTypeError::new_err(format!("log() takes 2 positional arguments but {nargs} were given")));
    }
    let mut slots: [Option<Bound<'py, PyAny>>; 2] = [None, None];
    for (i, slot) in slots.iter_mut().enumerate().take(nargs) {
        // SAFETY: i < nargs.
        *slot = Some(unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) });
    }
    if !kwnames.is_null() {
        // SAFETY: a non-null `kwnames` is a live tuple.
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) }.cast_into::<pyo3::types::PyTuple>()?;
        for (k, key) in names.iter().enumerate() {
            let key = key.str()?;
            let key = key.to_cow()?;
            let Some(at) = NAMES.iter().position(|n| *n == key) else {
                return Err(PyTypeError::new_err(format!("log() got an unexpected keyword argument '{key}'")));
            };
            if slots[at].is_some() {
                return Err(PyTypeError::new_err(format!("log() got multiple values for argument '{}'", NAMES[at])));
            }
            // SAFETY: keyword values follow the positional ones.
            slots[at] = Some(unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs + k)) });
        }
    }
    let [name, value] = slots;
    let name = name.ok_or_else(|| PyTypeError::new_err("log() missing required argument 'name' (pos 1)"))?;
    let value = value.ok_or_else(|| PyTypeError::new_err("log() missing required argument 'value' (pos 2)"))?;
    let name = name.cast_into::<PyString>().map_err(|e| {
        let got = e.into_inner().get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("log() argument 'name' must be str, not {got}"))
    })?;
    Ok((name, value))
}
