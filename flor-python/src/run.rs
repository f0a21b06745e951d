//! The run's lifecycle and its calls: start (forward or replay) and finish,
//! `flor.arg`, recording on/off, checkpoint calls, and the file-like
//! [`Writer`] into the object store.

use std::path::Path;
use std::time::Duration;

use flor::{Project, Run};
use flor_core::ObjectWriter;
use pyo3::prelude::*;

use crate::convert::{to_py, to_value};
use crate::stdout::stop_batching;
use crate::{err, no_run, state, FlorError};

/// Starts the run on first use, the way FlorDB defers its init: the Python
/// side (`flordb._get`) knows the script, argv and interpreter.
pub(crate) fn ensure_run(py: Python<'_>) -> PyResult<()> {
    if state().run.is_some() {
        return Ok(());
    }
    py.import("flordb")?.getattr("_get")?.call0()?;
    if state().run.is_none() {
        return Err(no_run());
    }
    Ok(())
}

/// Starts a run for the script at `filename` (made relative to the
/// repository root when it is an absolute path inside it); returns its
/// timestamp.
#[pyfunction]
pub(crate) fn start(
    py: Python<'_>,
    argv: Vec<String>,
    filename: String,
    interpreter: String,
    cwd: String,
) -> PyResult<String> {
    if state().run.is_some() {
        return Err(FlorError::new_err("a flor run is already active in this process"));
    }
    let root = py.detach(|| Project::open_for_recording(Path::new(&cwd)).map(|p| p.root().to_owned())).map_err(err)?;
    let filename = match Path::new(&filename).strip_prefix(&root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => filename,
    };
    let run = py
        .detach(|| Run::builder().dir(cwd).filename(filename).argv(argv).interpreter(interpreter).start())
        .map_err(err)?;
    let tstamp = run.tstamp();
    install(run);
    Ok(tstamp)
}

/// Makes `run` the process's active run, with a fresh loop position.
fn install(run: Run) {
    let mut st = state();
    st.generation += 1;
    st.defer = !run.is_replay();
    st.run = Some(run);
    st.layers.clear();
    st.prefix_stale = true;
    st.bars = 0;
    st.recording = true;
    st.last_output.clear();
    st.output_only = false;
    st.kept_output.clear();
    crate::steps::fast().new_run();
}

/// Starts replaying the segment described by the spec file at `spec`
/// (written by `flor replay`); `argv` is the script's command line.
#[pyfunction]
pub(crate) fn start_replay(py: Python<'_>, spec: String, argv: Vec<String>) -> PyResult<()> {
    if state().run.is_some() {
        return Err(FlorError::new_err("a flor run is already active in this process"));
    }
    let run = py.detach(|| Run::start_replay(Path::new(&spec), &argv)).map_err(err)?;
    install(run);
    Ok(())
}

/// Turns recording (and printing) of `log` on or off (replay).
#[pyfunction]
pub(crate) fn set_recording(on: bool) -> PyResult<()> {
    let mut st = state();
    st.step_result()?;
    st.recording = on;
    Ok(())
}

/// Whether a run is active.
#[pyfunction]
pub(crate) fn active() -> bool {
    state().run.is_some()
}

/// The active run's timestamp.
#[pyfunction]
pub(crate) fn tstamp() -> PyResult<String> {
    Ok(state().run()?.tstamp())
}

/// The active run's repository root (`None` while replaying a segment,
/// which runs in an exported copy of the code).
#[pyfunction]
pub(crate) fn root() -> PyResult<Option<String>> {
    Ok(state().run()?.root().map(|r| r.display().to_string()))
}

/// The source checks to show now that the active run has started: its
/// script's findings the first time a run of this version of the script
/// starts (`flor::lint::findings_at_run_start`), else `None` (also for a
/// replay segment).
#[pyfunction]
pub(crate) fn source_checks(py: Python<'_>) -> PyResult<Option<String>> {
    let run = state().run()?.clone();
    let Some(root) = run.root() else { return Ok(None) };
    let script = run.meta().filename;
    py.detach(|| flor::lint::findings_at_run_start(&root, &script, &flor_propagate::registry())).map_err(err)
}

/// The verified bytes of checkpoint object `digest` from the active run's
/// object store (a replay segment's: the one its executor named).
#[pyfunction]
pub(crate) fn run_object_bytes(py: Python<'_>, digest: String) -> PyResult<Py<pyo3::types::PyBytes>> {
    let run = state().run()?.clone();
    let bytes = py.detach(|| run.object_bytes(&digest)).map_err(err)?;
    Ok(pyo3::types::PyBytes::new(py, &bytes).unbind())
}

/// `flor.arg`: the `--kwargs` value coerced to `default`'s type, else `default`.
#[pyfunction]
pub(crate) fn arg(py: Python<'_>, name: &str, default: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let d = to_value(py, default)?;
    let mut st = state();
    st.output_only = false;
    let v = st.run()?.arg_value(name, d).map_err(err)?;
    drop(st);
    to_py(py, &v)
}

/// Loop nesting depth (0 outside loops or without a run).
#[pyfunction]
pub(crate) fn depth() -> usize {
    state().run.as_ref().map_or(0, Run::depth)
}

/// Whether a checkpoint taken now respects the checkpoint interval.
#[pyfunction]
pub(crate) fn checkpoint_due() -> PyResult<bool> {
    Ok(state().run()?.checkpoint_due())
}

/// Sets the minimum time between checkpoints, in seconds (a non-negative
/// number).
#[pyfunction]
pub(crate) fn set_checkpoint_interval(seconds: f64) -> PyResult<()> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(FlorError::new_err(format!(
            "checkpoint interval must be a non-negative number of seconds, got {seconds}"
        )));
    }
    state().run()?.set_checkpoint_interval(Duration::from_secs_f64(seconds));
    Ok(())
}

/// A file-like writer into the checkpoint object store.
#[pyfunction]
pub(crate) fn object_writer() -> PyResult<Writer> {
    Ok(Writer { inner: Some(state().run()?.object_writer().map_err(err)?) })
}

/// Records checkpoint `name` (in `format`), stored as object `digest` of
/// `bytes` bytes, attached to the current outer iteration.
#[pyfunction]
pub(crate) fn record_checkpoint(name: &str, format: &str, digest: String, bytes: u64) -> PyResult<()> {
    let id = flor_core::ObjectId { digest, bytes };
    let mut st = state();
    st.output_only = false;
    st.run()?.record_checkpoint(name, format, &id).map_err(err)
}

/// Ends the active run (`failed=True`: as failed) and publishes its
/// records; nothing happens without one.
#[pyfunction]
#[pyo3(signature = (failed=false))]
pub(crate) fn finish(py: Python<'_>, failed: bool) -> PyResult<()> {
    // An unfinished line of output is the run's last.
    crate::capture::drain(py);
    end_run(py, failed, false)
}

/// Ends the active run: [`finish`]'s work, or (`discard_output_only`) a run
/// that recorded nothing but captured output is discarded instead, its
/// lines given back to capture to hold (see [`crate::capture::release`]).
pub(crate) fn end_run(py: Python<'_>, failed: bool, discard_output_only: bool) -> PyResult<()> {
    let printed = stop_batching(py);
    let run = {
        let mut st = state();
        let drained = st.step_result();
        st.defer = false;
        st.layers.clear();
        st.prefix_stale = true;
        st.bars = 0;
        st.recording = true;
        let discard = discard_output_only && st.output_only;
        st.output_only = false;
        let kept = std::mem::take(&mut st.kept_output);
        if discard {
            crate::capture::hold_again(kept);
        }
        (st.run.take(), drained, discard)
    };
    // Deferred steps were handed over by `stop_batching` (or just above).
    let (run, drained, discard) = run;
    let printed = printed.and(drained);
    let Some(run) = run else { return printed };
    if discard {
        py.detach(|| run.discard()).map_err(err)?;
        return printed;
    }
    let result = py.detach(|| if failed { run.fail() } else { run.finish() });
    let summary = result.map_err(err)?;
    printed?;
    for p in &summary.report.problems {
        eprintln!("flor: warning: {p}");
    }
    Ok(())
}

/// Streams bytes into the object store (`pickle.dump(obj, writer)` works).
#[pyclass(module = "flordb._flor")]
pub(crate) struct Writer {
    /// The object being written (`None` once finished or aborted).
    inner: Option<ObjectWriter>,
}

#[pymethods]
impl Writer {
    /// `flush()`: nothing to do (file-like API; the object is complete at
    /// `finish`).
    fn flush(&self) {}

    /// `write(data)`: appends `data` to the object; returns its length.
    fn write(&mut self, data: &[u8]) -> PyResult<usize> {
        use std::io::Write;
        let w = self.inner.as_mut().ok_or_else(|| FlorError::new_err("checkpoint writer already closed"))?;
        w.write_all(data).map_err(|e| FlorError::new_err(format!("cannot write checkpoint bytes: {e}")))?;
        Ok(data.len())
    }

    /// Completes the object; returns `(digest, size)`.
    fn finish(&mut self) -> PyResult<(String, u64)> {
        let w = self.inner.take().ok_or_else(|| FlorError::new_err("checkpoint writer already closed"))?;
        let id = w.finish().map_err(|e| err(e.into()))?;
        Ok((id.digest, id.bytes))
    }

    /// Drops the partial object.
    fn abort(&mut self) {
        self.inner = None;
    }
}

/// Keeps the file at `path` that the script saved (`kind` `"file"`) or
/// loaded in setup (`"load"`) with the active run, under project path
/// `name`, written or read by `format` (`flor::Run::keep_file`). Returns
/// `(digest, bytes, kept)`; `None` in a replay (which keeps nothing).
#[pyfunction]
pub(crate) fn keep_file(
    py: Python<'_>,
    kind: &str,
    path: String,
    name: String,
    format: String,
) -> PyResult<Option<(String, u64, bool)>> {
    let kind = match kind {
        "file" => flor_core::kept::StoredKind::File,
        "load" => flor_core::kept::StoredKind::Load,
        other => return Err(FlorError::new_err(format!("keep_file: unknown kind {other:?} (file or load)"))),
    };
    let run = state().run()?.clone();
    let kept = py.detach(|| run.keep_file(kind, Path::new(&path), &name, &format)).map_err(err)?;
    Ok(kept.map(|k| (k.id.digest, k.id.bytes, k.kept)))
}

/// The BLAKE3 digest and length of the file at `path` (the object store's
/// name for its bytes).
#[pyfunction]
pub(crate) fn file_digest(py: Python<'_>, path: String) -> PyResult<(String, u64)> {
    let id = py.detach(|| flor::file_digest(Path::new(&path))).map_err(err)?;
    Ok((id.digest, id.bytes))
}
