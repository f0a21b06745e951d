//! The query side: `flor.dataframe`, `flor.query`, a run's checkpoints and
//! stored objects, read through `flor::Project` (no active run needed).

use std::path::Path;

use flor::{Project, Table};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::convert::to_py;
use crate::err;

/// Opens the project at `cwd` and brings its query database up to date with
/// the run refs; runs found dead and unreadable records are reported on
/// stderr.
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
#[pyo3(signature = (cwd, names, diverged = false))]
pub(crate) fn dataframe(
    py: Python<'_>,
    cwd: String,
    names: Vec<String>,
    diverged: bool,
) -> PyResult<(Vec<String>, Py<PyList>)> {
    let table = py.detach(|| {
        let p = open_project(&cwd)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if diverged {
            p.dataframe_diverged(&names).map_err(err)
        } else {
            p.dataframe(&names).map_err(err)
        }
    })?;
    table_to_py(py, &table)
}

/// `flor.query(sql)`: `(columns, column_values)`.
#[pyfunction]
pub(crate) fn query(py: Python<'_>, cwd: String, sql: String) -> PyResult<(Vec<String>, Py<PyList>)> {
    let table = py.detach(|| open_project(&cwd)?.query(&sql).map_err(err))?;
    table_to_py(py, &table)
}

/// The checkpoints of a run: list of dicts (name, ctx, digest, bytes, format).
#[pyfunction]
pub(crate) fn checkpoints(py: Python<'_>, cwd: String, tstamp: String) -> PyResult<Py<PyList>> {
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
pub(crate) fn object_bytes(py: Python<'_>, cwd: String, digest: String) -> PyResult<Py<PyBytes>> {
    let bytes = py.detach(|| {
        let p = Project::open_for_recording(Path::new(&cwd)).map_err(err)?;
        p.objects().get(&digest).map_err(|e| err(e.into()))
    })?;
    Ok(PyBytes::new(py, &bytes).unbind())
}
