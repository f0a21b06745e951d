//! `flordb._flor`: the Rust half of the `flordb` Python module. It exposes
//! flor's recording engine (`flor::Run`) and query side (`flor::Project`) to
//! the pure-Python layer in `python/flordb/__init__.py`, which implements
//! FlorDB's API on top. One implementation of the recording semantics is
//! shared with the Rust API.

use std::path::Path;
use std::time::Duration;

use flor::{Project, Run, RunStatus, Table, Value};
use flor_core::ObjectWriter;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

create_exception!(_flor, FlorError, PyException, "An error reported by flor (names what failed and where).");

fn err(e: flor::Error) -> PyErr {
    FlorError::new_err(e.to_string())
}

/// Python value -> flor value. Numbers, bools and text map directly; other
/// objects go through `flordb._coerce` (numpy/torch scalars, JSON, repr).
fn to_value(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract::<bool>()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(v.extract::<f64>()?));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(match v.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Text(v.str()?.to_cow()?.as_ref().into()),
        });
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Text(s.to_cow()?.as_ref().into()));
    }
    // (kind, payload): ("json", text) or a plain Python scalar to retry.
    let coerced = py.import("flordb")?.getattr("_coerce")?.call1((v,))?;
    let (kind, payload): (String, Bound<'_, PyAny>) = coerced.extract()?;
    match kind.as_str() {
        "json" => Ok(Value::Json(payload.extract::<String>()?.into())),
        "scalar" if !payload.is(v) => to_value(py, &payload),
        _ => Ok(Value::Text(payload.str()?.to_cow()?.as_ref().into())),
    }
}

/// flor value -> Python value.
fn to_py(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Text(s) => PyString::new(py, s).into_any().unbind(),
        Value::Json(s) => py.import("json")?.getattr("loads")?.call1((&**s,))?.unbind(),
    })
}

/// One recording run of the current Python process.
#[pyclass(module = "flordb._flor")]
struct Session {
    run: Option<Run>,
    /// Recently logged names by Python object identity: under the stable ABI
    /// for Python 3.9 every `str` -> `&str` conversion allocates, and a
    /// training loop logs the same few (interned) names over and over.
    names: Vec<(Py<PyString>, Box<str>)>,
}

/// Names remembered by [`Session::names`].
const NAME_CACHE: usize = 32;

impl Session {
    fn run(&self) -> PyResult<&Run> {
        self.run.as_ref().ok_or_else(|| FlorError::new_err("this flor run has already been committed"))
    }
}

#[pymethods]
impl Session {
    /// The run's timestamp.
    #[getter]
    fn tstamp(&self) -> PyResult<String> {
        Ok(self.run()?.tstamp())
    }

    /// The repository root.
    #[getter]
    fn root(&self) -> PyResult<String> {
        Ok(self.run()?.root().display().to_string())
    }

    /// `flor.arg`: the `--kwargs` value coerced to `default`'s type, else `default`.
    fn arg(&self, py: Python<'_>, name: &str, default: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let d = to_value(py, default)?;
        let v = self.run()?.arg_value(name, d).map_err(err)?;
        to_py(py, &v)
    }

    /// `flor.log` (recording only; printing is done in Python).
    fn log(&mut self, py: Python<'_>, name: &Bound<'_, PyString>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = to_value(py, value)?;
        let run = self.run.as_ref().ok_or_else(|| FlorError::new_err("this flor run has already been committed"))?;
        if let Some((_, n)) = self.names.iter().find(|(k, _)| k.as_ptr() == name.as_ptr()) {
            run.log_value(n, &v);
            return Ok(());
        }
        let text: Box<str> = name.to_cow()?.as_ref().into();
        run.log_value(&text, &v);
        if self.names.len() >= NAME_CACHE {
            self.names.remove(0);
        }
        self.names.push((name.clone().unbind(), text));
        Ok(())
    }

    fn loop_begin(&self, name: &str) -> PyResult<()> {
        self.run()?.loop_begin(name).map_err(err)
    }

    #[pyo3(signature = (value=None, index=None))]
    fn iteration_begin(&self, value: Option<&str>, index: Option<u64>) -> PyResult<u64> {
        self.run()?.iteration_begin_at(index, value).map_err(err)
    }

    /// Ends the open iteration of the innermost loop and begins the next
    /// one: one call per step instead of two.
    #[pyo3(signature = (value=None))]
    fn next_iteration(&self, value: Option<&str>) -> PyResult<u64> {
        let run = self.run()?;
        run.iteration_end().map_err(err)?;
        run.iteration_begin_at(None, value).map_err(err)
    }

    fn iteration_end(&self) -> PyResult<()> {
        self.run()?.iteration_end().map_err(err)
    }

    fn loop_end(&self) -> PyResult<()> {
        self.run()?.loop_end().map_err(err)
    }

    fn depth(&self) -> PyResult<usize> {
        Ok(self.run()?.depth())
    }

    fn checkpoint_due(&self) -> PyResult<bool> {
        Ok(self.run()?.checkpoint_due())
    }

    fn set_checkpoint_interval(&self, seconds: f64) -> PyResult<()> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(FlorError::new_err(format!(
                "checkpoint interval must be a non-negative number of seconds, got {seconds}"
            )));
        }
        self.run()?.set_checkpoint_interval(Duration::from_secs_f64(seconds));
        Ok(())
    }

    /// A file-like writer into the checkpoint object store.
    fn object_writer(&self) -> PyResult<Writer> {
        Ok(Writer { inner: Some(self.run()?.object_writer().map_err(err)?) })
    }

    fn record_checkpoint(&self, name: &str, format: &str, digest: String, bytes: u64) -> PyResult<()> {
        let id = flor_core::ObjectId { digest, bytes };
        self.run()?.record_checkpoint(name, format, &id).map_err(err)
    }

    /// Ends the run (`failed=True`: as failed) and publishes its records.
    #[pyo3(signature = (failed=false))]
    fn finish(&mut self, py: Python<'_>, failed: bool) -> PyResult<()> {
        let Some(run) = self.run.take() else { return Ok(()) };
        let result = py.detach(|| if failed { run.fail() } else { run.finish() });
        let summary = result.map_err(err)?;
        for p in &summary.report.problems {
            eprintln!("flor: warning: {p}");
        }
        let _ = summary.meta.status == RunStatus::Finished;
        Ok(())
    }
}

/// Streams bytes into the object store (`pickle.dump(obj, writer)` works).
#[pyclass(module = "flordb._flor")]
struct Writer {
    inner: Option<ObjectWriter>,
}

#[pymethods]
impl Writer {
    fn flush(&self) {}

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

/// Starts a run for the script at `filename` (made relative to the
/// repository root when it is an absolute path inside it).
#[pyfunction]
fn start(py: Python<'_>, argv: Vec<String>, filename: String, interpreter: String, cwd: String) -> PyResult<Session> {
    let root = py.detach(|| Project::open(Path::new(&cwd)).map(|p| p.root().to_owned())).map_err(err)?;
    let filename = match Path::new(&filename).strip_prefix(&root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => filename,
    };
    let run = py
        .detach(|| Run::builder().dir(cwd).filename(filename).argv(argv).interpreter(interpreter).start())
        .map_err(err)?;
    Ok(Session { run: Some(run), names: Vec::new() })
}

fn open_project(cwd: &str) -> PyResult<Project> {
    let mut p = Project::open(Path::new(cwd)).map_err(err)?;
    let report = p.sync().map_err(err)?;
    for t in &report.marked_failed {
        eprintln!("flor: run {t} stopped without finishing (its process is gone); marked failed");
    }
    for p in &report.problems {
        eprintln!("flor: warning: unreadable record skipped: {p}");
    }
    Ok(p)
}

/// A table as `(columns, rows)`: column names and one list of cells per row.
fn table_to_py(py: Python<'_>, t: &Table) -> PyResult<(Vec<String>, Py<PyList>)> {
    let names = t.column_names().into_iter().map(String::from).collect();
    let cols: Vec<Vec<Py<PyAny>>> = t
        .columns
        .iter()
        .map(|c| c.cells().map(|v| v.map_or_else(|| Ok(py.None()), |v| to_py(py, &v))).collect::<PyResult<Vec<_>>>())
        .collect::<PyResult<_>>()?;
    let out = PyList::empty(py);
    for c in cols {
        out.append(PyList::new(py, c)?)?;
    }
    Ok((names, out.unbind()))
}

/// `flor.dataframe(*names)`: `(columns, column_values)`.
#[pyfunction]
fn dataframe(py: Python<'_>, cwd: String, names: Vec<String>) -> PyResult<(Vec<String>, Py<PyList>)> {
    let table = py.detach(|| {
        let p = open_project(&cwd)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        p.dataframe(&names).map_err(err)
    })?;
    table_to_py(py, &table)
}

/// `flor.query(sql)`: `(columns, column_values)`.
#[pyfunction]
fn query(py: Python<'_>, cwd: String, sql: String) -> PyResult<(Vec<String>, Py<PyList>)> {
    let table = py.detach(|| open_project(&cwd)?.query(&sql).map_err(err))?;
    table_to_py(py, &table)
}

/// The checkpoints of a run: list of dicts (name, ctx, digest, bytes, format).
#[pyfunction]
fn checkpoints(py: Python<'_>, cwd: String, tstamp: String) -> PyResult<Py<PyList>> {
    let list = py.detach(|| open_project(&cwd)?.checkpoints(&tstamp).map_err(err))?;
    let out = PyList::empty(py);
    for c in list {
        let d = PyDict::new(py);
        d.set_item("name", c.name)?;
        d.set_item("ctx", c.ctx)?;
        d.set_item("digest", c.digest)?;
        d.set_item("bytes", c.bytes)?;
        d.set_item("format", c.format)?;
        out.append(d)?;
    }
    Ok(out.unbind())
}

/// The verified bytes of a stored object.
#[pyfunction]
fn object_bytes(py: Python<'_>, cwd: String, digest: String) -> PyResult<Py<PyBytes>> {
    let bytes = py.detach(|| {
        let p = Project::open(Path::new(&cwd)).map_err(err)?;
        p.objects().get(&digest).map_err(|e| err(e.into()))
    })?;
    Ok(PyBytes::new(py, &bytes).unbind())
}

#[pymodule]
fn _flor(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FlorError", m.py().get_type::<FlorError>())?;
    m.add_class::<Session>()?;
    m.add_class::<Writer>()?;
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(dataframe, m)?)?;
    m.add_function(wrap_pyfunction!(query, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoints, m)?)?;
    m.add_function(wrap_pyfunction!(object_bytes, m)?)?;
    Ok(())
}
