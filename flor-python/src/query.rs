//! The query side: `flor.dataframe`, `flor.query`, a run's checkpoints and
//! stored objects, read through `flor::Project` (no active run needed).
//!
//! Answers reach Python as a [`Frame`]: Arrow record batches (from
//! `flor_store::arrow`, the pivot's columns moved, not copied) that pyarrow
//! and polars take through the Arrow C stream interface
//! (`__arrow_c_stream__`), and that pandas takes column by column
//! ([`Frame::pandas_columns`]: numeric columns as raw little-endian bytes
//! for `numpy.frombuffer`, repeated text as categorical codes). A project
//! whose query database is DuckDB is answered by the `flor` binary (this
//! module has no DuckDB; see [`via_binary`]) as an Arrow IPC stream.

use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchIterator};
use arrow_schema::{DataType, SchemaRef};
use flor::{IterSelect, Project, Selection, StoreKind, Table, Value};
use flor_core::table::ColumnData;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList};

use crate::convert::to_py;
use crate::{err, FlorError};

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

/// Whether the project at `cwd` keeps its query database in DuckDB, which
/// this module cannot open.
fn answered_by_binary(cwd: &str) -> PyResult<bool> {
    let p = Project::open_for_recording(Path::new(cwd)).map_err(err)?;
    Ok(p.store_kind().is_some_and(|k| k == StoreKind::Duckdb && !k.available()))
}

/// A query result on its way to Python (see the module docs).
#[pyclass(module = "flordb._flor", name = "Frame")]
pub(crate) struct Frame {
    schema: SchemaRef,
    /// One batch from this process's store; any number from an IPC stream.
    batches: Vec<RecordBatch>,
    /// Per column, its cells as today's Python values where the table held
    /// general values (text, bools, mixed types): pandas takes these as
    /// they are, so its frame is the one FlorDB scripts know.
    cells: Vec<Option<Py<PyList>>>,
    /// Dictionary-encoded text goes to pandas as a categorical (a
    /// dataframe's run columns); `flor.query` keeps its text columns as
    /// FlorDB gave them (plain strings).
    categorical: bool,
}

impl Frame {
    /// A frame of `table`, consumed: general-value columns converted to
    /// Python first, then every column moved into Arrow.
    fn of_table(py: Python<'_>, table: Table) -> PyResult<Frame> {
        let mut cells = Vec::with_capacity(table.columns.len());
        for c in &table.columns {
            cells.push(match &c.data {
                ColumnData::Values(v) => {
                    let list = PyList::empty(py);
                    for cell in v {
                        list.append(cell.as_ref().map_or_else(|| Ok(py.None()), |v| to_py(py, v))?)?;
                    }
                    Some(list.unbind())
                }
                _ => None,
            });
        }
        let batch = py.detach(|| flor_store::arrow::into_record_batch(table)).map_err(arrow_err)?;
        Ok(Frame { schema: batch.schema(), batches: vec![batch], cells, categorical: true })
    }

    /// A frame of batches read from an Arrow IPC stream.
    fn of_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> Frame {
        let cells = (0..schema.fields().len()).map(|_| None).collect();
        Frame { schema, batches, cells, categorical: true }
    }

    /// Column `i` as one array (batches concatenated).
    fn column(&self, i: usize) -> PyResult<ArrayRef> {
        let parts: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(i).as_ref()).collect();
        match parts.as_slice() {
            [] => Ok(arrow_array::new_empty_array(self.schema.field(i).data_type())),
            [one] => Ok(one.slice(0, one.len())),
            _ => arrow_select::concat::concat(&parts).map_err(|e| FlorError::new_err(e.to_string())),
        }
    }
}

fn arrow_err(e: impl std::fmt::Display) -> PyErr {
    FlorError::new_err(format!("cannot hand the result over as Arrow: {e}"))
}

/// A slice of plain values as their little-endian bytes.
fn bytes_of<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: `T` is a primitive number here (i64, f64, i32, u8): any
    // bytes are valid to read, and the length covers exactly the slice.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

#[pymethods]
impl Frame {
    /// The column names, in order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    /// The number of rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The Arrow C stream interface (PyCapsule `arrow_array_stream`): how
    /// pyarrow (`pa.table(frame)`) and polars (`pl.DataFrame(frame)`) take
    /// the batches, sharing their buffers. `requested_schema` is not
    /// honoured (allowed by the interface): the schema is the frame's own.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = RecordBatchIterator::new(self.batches.clone().into_iter().map(Ok), Arc::clone(&self.schema));
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        let name = CString::new("arrow_array_stream").map_err(arrow_err)?;
        PyCapsule::new(py, stream, Some(name))
    }

    /// The columns for a pandas DataFrame: `(name, kind, payload)` with kind
    /// `i8`/`f8`/`b1` (payload: the values, as a [`Buf`] numpy reads in
    /// place or as bytes; an int column with
    /// NULLs comes as floats with NaN, as pandas makes it), `cat`
    /// (`(int32 codes as a Buf, -1 for NULL; sorted categories)`) or `list`
    /// (Python values). Releases the frame's batches as it goes.
    fn pandas_columns(&mut self, py: Python<'_>) -> PyResult<Vec<(String, &'static str, Py<PyAny>)>> {
        let mut out = Vec::with_capacity(self.schema.fields().len());
        for i in 0..self.schema.fields().len() {
            let name = self.schema.field(i).name().clone();
            if let Some(list) = self.cells[i].take() {
                out.push((name, "list", list.into_any()));
                continue;
            }
            let json = self.schema.field(i).metadata().contains_key("flor.type");
            let (kind, payload) = match self.schema.field(i).data_type() {
                // Numbers straight from each batch (no concatenation first).
                DataType::Int64 | DataType::Float64 if self.batches.len() > 1 => {
                    let parts: Vec<&ArrayRef> = self.batches.iter().map(|b| b.column(i)).collect();
                    numbers(py, &parts)?
                }
                DataType::Dictionary(_, _) if !self.categorical => {
                    ("list", cells_to_py(py, &self.column(i)?, json)?.into_any())
                }
                _ => pandas_column(py, &self.column(i)?, json)?,
            };
            out.push((name, kind, payload));
        }
        self.batches.clear();
        Ok(out)
    }

    /// Every column as a list of Python values (cells as `flor.query`
    /// always gave them), for callers without pandas.
    fn values(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let out = PyList::empty(py);
        for i in 0..self.schema.fields().len() {
            if let Some(list) = &self.cells[i] {
                out.append(list.clone_ref(py))?;
                continue;
            }
            let json = self.schema.field(i).metadata().contains_key("flor.type");
            out.append(cells_to_py(py, &self.column(i)?, json)?)?;
        }
        Ok(out.unbind())
    }
}

/// A numeric column in parts (batches) for pandas: `i8` bytes when every
/// part is ints without NULLs, else `f8` (NULL as NaN).
fn numbers(py: Python<'_>, parts: &[&ArrayRef]) -> PyResult<(&'static str, Py<PyAny>)> {
    let rows: usize = parts.iter().map(|p| p.len()).sum();
    let ints = parts.iter().all(|p| p.data_type() == &DataType::Int64 && p.null_count() == 0);
    let mut out: Vec<u8> = Vec::with_capacity(rows * 8);
    for p in parts {
        match p.data_type() {
            DataType::Int64 if ints => out.extend_from_slice(bytes_of(p.as_primitive::<Int64Type>().values())),
            DataType::Int64 => {
                for v in p.as_primitive::<Int64Type>().iter() {
                    out.extend_from_slice(&v.map_or(f64::NAN, |v| v as f64).to_le_bytes());
                }
            }
            _ if p.null_count() == 0 => out.extend_from_slice(bytes_of(p.as_primitive::<Float64Type>().values())),
            _ => {
                for v in p.as_primitive::<Float64Type>().iter() {
                    out.extend_from_slice(&v.unwrap_or(f64::NAN).to_le_bytes());
                }
            }
        }
    }
    let typestr = if ints { "<i8" } else { "<f8" };
    Ok((if ints { "i8" } else { "f8" }, shared(py, arrow_buffer::Buffer::from_vec(out), typestr, 8)?))
}

/// Memory numpy reads in place: a buffer of `len` cells of `typestr`
/// behind numpy's array interface (`numpy.asarray(buf)` makes a read-only
/// array that keeps the buffer alive). The buffer protocol is not in the
/// stable ABI of Python 3.9; the array interface is a plain dict.
#[pyclass(module = "flordb._flor", name = "Buffer", frozen)]
pub(crate) struct Buf {
    buffer: arrow_buffer::Buffer,
    len: usize,
    typestr: &'static str,
}

#[pymethods]
impl Buf {
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("shape", (self.len,))?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("data", (self.buffer.as_ptr() as usize, true))?;
        d.set_item("version", 3)?;
        Ok(d)
    }
}

/// `buffer` (cells of `typestr`, `size` bytes each) as a [`Buf`].
fn shared(py: Python<'_>, buffer: arrow_buffer::Buffer, typestr: &'static str, size: usize) -> PyResult<Py<PyAny>> {
    let len = buffer.len() / size;
    Ok(Py::new(py, Buf { buffer, len, typestr })?.into_any())
}

/// One column for pandas (see [`Frame::pandas_columns`]): numbers and
/// codes shared with numpy where they are already in pandas' form.
fn pandas_column(py: Python<'_>, a: &ArrayRef, json: bool) -> PyResult<(&'static str, Py<PyAny>)> {
    let bytes = |b: &[u8]| PyBytes::new(py, b).into_any().unbind();
    let floats = |f: Vec<f64>| shared(py, arrow_buffer::Buffer::from_vec(f), "<f8", 8);
    Ok(match a.data_type() {
        DataType::Int64 if a.null_count() == 0 => {
            ("i8", shared(py, a.as_primitive::<Int64Type>().values().inner().clone(), "<i8", 8)?)
        }
        DataType::Int64 => {
            let p = a.as_primitive::<Int64Type>();
            ("f8", floats(p.iter().map(|v| v.map_or(f64::NAN, |v| v as f64)).collect())?)
        }
        DataType::Float64 if a.null_count() == 0 => {
            ("f8", shared(py, a.as_primitive::<Float64Type>().values().inner().clone(), "<f8", 8)?)
        }
        DataType::Float64 => {
            ("f8", floats(a.as_primitive::<Float64Type>().iter().map(|v| v.unwrap_or(f64::NAN)).collect())?)
        }
        DataType::Boolean if a.null_count() == 0 => {
            let b: Vec<u8> = a.as_boolean().values().iter().map(u8::from).collect();
            ("b1", bytes(&b))
        }
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = a.as_dictionary::<Int32Type>();
            let texts = d.values().as_string::<i32>();
            // Categories: the distinct texts, sorted (an ordered
            // categorical: min, max and sorting follow the text); codes
            // renumbered to match (a run column's dictionary has an entry
            // per run, repeated texts included).
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by(|&x, &y| texts.value(x).cmp(texts.value(y)));
            let mut rank = vec![0i32; texts.len()];
            let mut distinct: Vec<&str> = Vec::new();
            for &o in &order {
                if distinct.last() != Some(&texts.value(o)) {
                    distinct.push(texts.value(o));
                }
                rank[o] = (distinct.len() - 1) as i32;
            }
            let keys = d.keys();
            let identity = distinct.len() == texts.len() && rank.iter().enumerate().all(|(i, &r)| r as usize == i);
            if identity && keys.null_count() == 0 {
                // Distinct texts already in order (a `tstamp` column: runs
                // come in tstamp order): the keys are the codes.
                let cats = PyList::new(py, distinct)?;
                let codes = shared(py, keys.values().inner().clone(), "<i4", 4)?;
                return Ok(("cat", (codes, cats).into_pyobject(py)?.into_any().unbind()));
            }
            let codes: Vec<i32> = if distinct.len() == 1 && keys.null_count() == 0 {
                vec![0; keys.len()]
            } else if keys.null_count() == 0 {
                keys.values().iter().map(|&k| rank.get(k as usize).copied().unwrap_or(-1)).collect()
            } else {
                keys.iter().map(|k| k.and_then(|k| rank.get(k as usize).copied()).unwrap_or(-1)).collect()
            };
            let cats = PyList::new(py, distinct)?;
            let codes = shared(py, arrow_buffer::Buffer::from_vec(codes), "<i4", 4)?;
            ("cat", (codes, cats).into_pyobject(py)?.into_any().unbind())
        }
        _ => ("list", cells_to_py(py, a, json)?.into_any()),
    })
}

/// A column's cells as Python values (`json`: text cells are JSON
/// documents, parsed as `flor.query` parses them).
fn cells_to_py(py: Python<'_>, a: &ArrayRef, json: bool) -> PyResult<Py<PyList>> {
    let out = PyList::empty(py);
    if let DataType::Dictionary(_, _) = a.data_type() {
        let d = a.as_dictionary::<Int32Type>();
        let values = cells_to_py(py, d.values(), json)?;
        let values = values.bind(py);
        for k in d.keys().iter() {
            match k {
                Some(k) => out.append(values.get_item(k as usize)?)?,
                None => out.append(py.None())?,
            }
        }
        return Ok(out.unbind());
    }
    for i in 0..a.len() {
        if a.is_null(i) {
            out.append(py.None())?;
            continue;
        }
        let v = match a.data_type() {
            DataType::Int64 => Value::Int(a.as_primitive::<Int64Type>().value(i)),
            DataType::Float64 => Value::Float(a.as_primitive::<Float64Type>().value(i)),
            DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
            DataType::Utf8 if json => Value::Json(a.as_string::<i32>().value(i).into()),
            DataType::Utf8 => Value::Text(a.as_string::<i32>().value(i).into()),
            other => return Err(arrow_err(format!("a column of type {other} has no Python form"))),
        };
        out.append(to_py(py, &v)?)?;
    }
    Ok(out.unbind())
}

/// The selection of a `flor.dataframe` call.
fn selection(where_clause: Option<String>, iters: &[String]) -> PyResult<Selection> {
    let iters =
        iters.iter().map(|s| s.parse::<IterSelect>()).collect::<Result<Vec<_>, _>>().map_err(|e| err(e.into()))?;
    Ok(Selection { where_clause, iters })
}

/// `flor.dataframe(*names)`: a [`Frame`].
#[pyfunction]
#[pyo3(signature = (cwd, names, diverged = false, where_clause = None, iters = Vec::new()))]
pub(crate) fn dataframe(
    py: Python<'_>,
    cwd: String,
    names: Vec<String>,
    diverged: bool,
    where_clause: Option<String>,
    iters: Vec<String>,
) -> PyResult<Frame> {
    let sel = selection(where_clause, &iters)?;
    if answered_by_binary(&cwd)? {
        let mut args: Vec<String> = vec!["dataframe".into()];
        args.extend(names.iter().cloned());
        if diverged {
            args.push("--diverged".into());
        }
        if let Some(w) = &sel.where_clause {
            args.extend(["--where".into(), w.clone()]);
        }
        for i in &sel.iters {
            args.extend(["--iter".into(), i.to_string()]);
        }
        return py.detach(|| via_binary(&cwd, &args));
    }
    let table = py.detach(|| {
        let p = open_project(&cwd)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if diverged {
            p.dataframe_diverged_where(&names, &sel).map_err(err)
        } else {
            p.dataframe_where(&names, &sel).map_err(err)
        }
    })?;
    Frame::of_table(py, table)
}

/// `flor.io(channel)`: the captured lines as a [`Frame`]
/// ([`flor::Project::io`]).
#[pyfunction]
#[pyo3(signature = (cwd, channel = None, where_clause = None, iters = Vec::new()))]
pub(crate) fn io(
    py: Python<'_>,
    cwd: String,
    channel: Option<String>,
    where_clause: Option<String>,
    iters: Vec<String>,
) -> PyResult<Frame> {
    let sel = selection(where_clause, &iters)?;
    if answered_by_binary(&cwd)? {
        let mut args: Vec<String> = vec!["io".into()];
        if let Some(c) = &channel {
            args.extend(["--channel".into(), c.clone()]);
        }
        if let Some(w) = &sel.where_clause {
            args.extend(["--where".into(), w.clone()]);
        }
        for i in &sel.iters {
            args.extend(["--iter".into(), i.to_string()]);
        }
        return py.detach(|| via_binary(&cwd, &args));
    }
    let table = py.detach(|| open_project(&cwd)?.io(channel.as_deref(), &sel).map_err(err))?;
    Frame::of_table(py, table)
}

/// `flor.query(sql)`: a [`Frame`].
#[pyfunction]
pub(crate) fn query(py: Python<'_>, cwd: String, sql: String) -> PyResult<Frame> {
    let mut frame = if answered_by_binary(&cwd)? {
        py.detach(|| via_binary(&cwd, &["query".into(), sql]))?
    } else {
        let table = py.detach(|| open_project(&cwd)?.query(&sql).map_err(err))?;
        Frame::of_table(py, table)?
    };
    frame.categorical = false;
    Ok(frame)
}

/// The `flor` command that answers for a DuckDB project: `FLOR_BIN`, else
/// `flor` on the `PATH`.
fn flor_binary() -> String {
    std::env::var("FLOR_BIN").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "flor".into())
}

/// Answers `flor -C cwd ARGS --format arrow` through the `flor` binary and
/// reads its Arrow IPC stream. A DuckDB database admits one process at a
/// time: a notebook holding it open would lock out `flor replay`, training
/// runs' queries and the CLI, so the binary opens it, answers and exits.
fn via_binary(cwd: &str, args: &[String]) -> PyResult<Frame> {
    let bin = flor_binary();
    let child = Command::new(&bin)
        .arg("-C")
        .arg(cwd)
        .args(args)
        .args(["--format", "arrow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.map_err(|e| {
        FlorError::new_err(format!(
            "this project's query database is DuckDB (store = \"duckdb\" in .flor/config.toml), which this Python \
             module answers through the `flor` command built with DuckDB; running {bin:?} failed: {e}. Install it \
             (cargo install flor --features duckdb) or name it in FLOR_BIN"
        ))
    })?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let (out, errp) = (child.stdout.take(), child.stderr.take());
    std::thread::scope(|s| {
        let reader = s.spawn(|| errp.map(|mut e| e.read_to_end(&mut stderr)));
        if let Some(mut o) = out {
            let _ = o.read_to_end(&mut stdout);
        }
        let _ = reader.join();
    });
    let status = child.wait().map_err(|e| FlorError::new_err(format!("{bin}: {e}")))?;
    let stderr = String::from_utf8_lossy(&stderr);
    if !stderr.trim().is_empty() && status.success() {
        eprint!("{stderr}");
    }
    if !status.success() {
        return Err(FlorError::new_err(format!("{bin} {}: {}", args.join(" "), stderr.trim())));
    }
    // Decoded in place: the batches' buffers are slices of `stdout`.
    let no_stream = |e: arrow_schema::ArrowError| FlorError::new_err(format!("{bin} answered no Arrow stream: {e}"));
    let mut buf = arrow_buffer::Buffer::from_vec(stdout);
    let mut decoder = arrow_ipc::reader::StreamDecoder::new();
    let mut batches = Vec::new();
    while !buf.is_empty() {
        let before = buf.len();
        if let Some(b) = decoder.decode(&mut buf).map_err(no_stream)? {
            batches.push(b);
        }
        if buf.len() == before {
            break;
        }
    }
    decoder.finish().map_err(no_stream)?;
    let schema = decoder.schema().ok_or_else(|| FlorError::new_err(format!("{bin} answered an empty Arrow stream")))?;
    Ok(Frame::of_stream(schema, batches))
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

/// A run's checkpoints and kept files, in record order (`flor.checkpoints`):
/// list of dicts (tstamp, name, kind, path, loop, iteration, format,
/// digest, bytes, stored).
#[pyfunction]
pub(crate) fn checkpoint_entries(py: Python<'_>, cwd: String, tstamp: String) -> PyResult<Py<PyList>> {
    use flor_core::kept::{StoredKind, NOT_KEPT_SUFFIX};
    let list = py.detach(|| open_project(&cwd)?.checkpoint_entries(Some(&tstamp)).map_err(err))?;
    let out = PyList::empty(py);
    for c in list {
        let d = PyDict::new(py);
        let (kind, path) = StoredKind::of_name(&c.name);
        d.set_item("tstamp", &c.tstamp)?;
        d.set_item("name", &c.name)?;
        d.set_item("kind", kind.as_str())?;
        d.set_item("path", (kind != StoredKind::Object).then_some(path))?;
        d.set_item("loop", c.iteration.as_ref().map(|(l, _)| l.clone()))?;
        d.set_item("iteration", c.iteration.as_ref().map(|(_, i)| *i))?;
        d.set_item("format", c.format.strip_suffix(NOT_KEPT_SUFFIX).unwrap_or(&c.format))?;
        d.set_item("digest", &c.digest)?;
        d.set_item("bytes", c.bytes)?;
        d.set_item("stored", c.stored.as_str())?;
        out.append(d)?;
    }
    Ok(out.unbind())
}
