//! `flor.output_buffer`: the records of the active run that are not yet
//! committed (FlorDB's list of records not yet written), read back from the
//! run's record file.

use std::collections::HashMap;

use flor_core::record::read::parse_lines;
use flor_core::RecordKind;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::convert::to_py;
use crate::{state, FlorError};

/// FlorDB's `value_type` of a record kind: 1 for `log`/`arg`, 2 for
/// captured output, 3 for timings.
fn value_type(kind: RecordKind) -> u8 {
    match kind {
        RecordKind::Log | RecordKind::Arg => 1,
        RecordKind::Output => 2,
        RecordKind::Timing => 3,
    }
}

/// The active run's uncommitted records, in the order they were made, as
/// tuples `(projid, tstamp, filename, ctx, name, value, value_type)` where
/// `ctx` is `None` at run level, else a list of `(loop, iteration)` from
/// the outermost loop in; an empty list when no run is active. Buffered
/// steps are written to the record file first, so nothing logged is
/// missing.
#[pyfunction]
pub(crate) fn pending(py: Python<'_>) -> PyResult<Py<PyList>> {
    let (meta, bytes) = {
        let mut st = state();
        if st.run.is_none() {
            return Ok(PyList::empty(py).unbind());
        }
        let run = st.run()?;
        let path = run
            .with_recorder(|r| r.flush().map(|()| r.path().to_owned()))
            .map_err(|e| FlorError::new_err(format!("cannot write the run's buffered records: {e}")))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| FlorError::new_err(format!("cannot read the run's record file {}: {e}", path.display())))?;
        (run.meta(), bytes)
    };
    let parsed = parse_lines(&bytes, 1);
    let loops: HashMap<u32, _> = parsed.loops.iter().map(|l| (l.ctx, l)).collect();
    let out = PyList::empty(py);
    for rec in &parsed.records {
        let ctx = match rec.ctx {
            None => py.None(),
            Some(mut id) => {
                let mut chain = Vec::new();
                while let Some(l) = loops.get(&id) {
                    chain.push((l.name.to_string(), l.iteration));
                    match l.parent {
                        Some(p) => id = p,
                        None => break,
                    }
                }
                chain.reverse();
                PyList::new(py, chain)?.into_any().unbind()
            }
        };
        let row: [Py<PyAny>; 7] = [
            meta.projid.clone().into_pyobject(py)?.into_any().unbind(),
            meta.tstamp.clone().into_pyobject(py)?.into_any().unbind(),
            meta.filename.clone().into_pyobject(py)?.into_any().unbind(),
            ctx,
            rec.name.to_string().into_pyobject(py)?.into_any().unbind(),
            to_py(py, &rec.value)?,
            value_type(rec.kind).into_pyobject(py)?.into_any().unbind(),
        ];
        out.append(PyTuple::new(py, row)?)?;
    }
    Ok(out.unbind())
}
