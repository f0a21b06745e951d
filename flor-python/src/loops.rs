//! `flor.loop` and `flor.iteration`: [`LoopIter`] (the iterator behind
//! `flor.loop`, its inner steps deferred) and `iteration_enter`/`exit`.

use pyo3::prelude::*;

use crate::convert::item_text;
use crate::run::ensure_run;
use crate::stdout::flush_pending;
use crate::steps::{fast, quick_item, submit, Step};
use crate::{err, state};

/// `flor.loop(name, iterable)` in Rust: each step is one call into the
/// engine, with no Python generator frame.
#[pyclass(module = "flordb._flor")]
pub(crate) struct LoopIter {
    /// The loop's name.
    name: Box<str>,
    /// The current item's text (reused).
    text: String,
    /// The iterator over the iterable (`None` once exhausted or left).
    iter: Option<Py<PyAny>>,
    /// Where the loop is.
    phase: Phase,
    /// Counted in [`State::bars`](crate::State::bars) while open.
    bar: bool,
}

/// Where a [`LoopIter`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not entered yet (no item asked for).
    NotStarted,
    /// Entered.
    Running {
        /// The run's [`State::generation`](crate::State::generation) when
        /// the loop was entered.
        generation: u64,
        /// The loop's layer in the printed position.
        layer: usize,
        /// Whether it is the outermost loop.
        outer: bool,
        /// Whether an iteration is open (not before the first, nor after an
        /// outermost iteration ended).
        open: bool,
    },
    /// Left: no more items.
    Done,
}

impl LoopIter {
    /// Leaves the loop (engine and printed position). Errors only matter
    /// when the loop ends normally.
    fn end(&mut self) -> PyResult<()> {
        let Phase::Running { generation, layer, .. } = self.phase else { return Ok(()) };
        self.phase = Phase::Done;
        let mut st = state();
        if st.generation != generation {
            return Ok(());
        }
        st.step_result()?;
        st.pop_layers(layer);
        if self.bar {
            st.bars = st.bars.saturating_sub(1);
        }
        match &st.run {
            Some(run) => run.loop_end().map_err(err),
            None => Ok(()),
        }
    }

    /// Leaves the loop after error `e` (an error of leaving is dropped),
    /// releases the iterator, and returns `e`.
    fn end_with<T>(&mut self, py: Python<'_>, e: PyErr) -> PyResult<T> {
        let _ = self.end();
        let it = self.iter.take();
        drop(it);
        let _ = py;
        Err(e)
    }

    /// The first call: starts the run if needed, enters the loop (engine
    /// and printed position) with no iteration open yet.
    fn enter(&mut self, py: Python<'_>) -> PyResult<Phase> {
        ensure_run(py)?;
        let mut st = state();
        let generation = st.generation;
        st.output_only = false;
        let run = st.run()?;
        run.loop_begin(&self.name).map_err(err)?;
        let outer = run.depth() == 1;
        let layer = st.push_layer(&self.name);
        if self.bar {
            st.bars += 1;
        }
        self.phase = Phase::Running { generation, layer, outer, open: false };
        Ok(self.phase)
    }

    /// The end of an outermost iteration: checkpoints, then the engine
    /// writes the iteration's records durably, then its printed lines go
    /// out. An error leaves the loop.
    fn end_outer_iteration(&mut self, py: Python<'_>, generation: u64, layer: usize) -> PyResult<Phase> {
        if let Err(e) = state().step_result() {
            return self.end_with(py, e);
        }
        if let Err(e) = py.import("flordb").and_then(|m| m.getattr("_outer_iteration_end")?.call0()) {
            return self.end_with(py, e);
        }
        let mut st = state();
        if st.generation == generation {
            if let Err(e) = st.run().and_then(|r| r.iteration_end().map_err(err)) {
                drop(st);
                return self.end_with(py, e);
            }
        }
        drop(st);
        // The iteration's printed lines go out with its records.
        if let Err(e) = flush_pending(py) {
            return self.end_with(py, e);
        }
        self.phase = Phase::Running { generation, layer, outer: true, open: false };
        Ok(self.phase)
    }

    /// The iterable is exhausted (or raised): leaves the loop and hands the
    /// printed lines over; the iterable's error comes first.
    fn exhausted(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let e = PyErr::take(py);
        let ended = self.end();
        self.iter = None;
        let ended = ended.and_then(|()| flush_pending(py));
        match (e, ended) {
            (Some(e), _) => Err(e),
            (None, r) => r.map(|()| None),
        }
    }

    /// The immediate path of the next iteration (an outer loop, an item
    /// that is not deferred, or deferral off): the item's text, the engine's
    /// next iteration, the printed position. An error leaves the loop.
    /// Inlined: it runs on every step when steps are not deferred.
    #[inline]
    fn begin_iteration(
        &mut self,
        py: Python<'_>,
        item: Bound<'_, PyAny>,
        generation: u64,
        layer: usize,
        outer: bool,
        open: bool,
    ) -> PyResult<Option<Py<PyAny>>> {
        let has_text = item_text(&item, &mut self.text);
        let text = has_text.then_some(self.text.as_str());
        let mut st = state();
        if st.generation != generation {
            return Ok(Some(item.unbind()));
        }
        let r = st.run().and_then(|run| {
            if open && !outer {
                run.next_iteration(text).map_err(err)
            } else {
                run.iteration_begin_at(None, text).map_err(err)
            }
        });
        match r {
            Ok(index) => {
                st.set_layer(layer, index, text);
                drop(st);
                self.phase = Phase::Running { generation, layer, outer, open: true };
                Ok(Some(item.unbind()))
            }
            Err(e) => {
                drop(st);
                self.end_with(py, e)
            }
        }
    }
}

#[pymethods]
impl LoopIter {
    /// `iter(loop)`: the loop itself.
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next item. Steps: enter the loop on the first call
    /// ([`LoopIter::enter`]); end an open outermost iteration
    /// ([`LoopIter::end_outer_iteration`]); take the next item (none: leave
    /// the loop, [`LoopIter::exhausted`]); then the next iteration: an inner
    /// loop's next item is deferred as a [`Step`] when it can be, else it
    /// begins at once ([`LoopIter::begin_iteration`]).
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let phase = match self.phase {
            Phase::Done => return Ok(None),
            Phase::NotStarted => self.enter(py)?,
            Phase::Running { generation, outer: true, open: true, layer } => {
                self.end_outer_iteration(py, generation, layer)?
            }
            running @ Phase::Running { .. } => running,
        };
        let Some(iter) = &self.iter else { return Ok(None) };
        // SAFETY: `iter` is an iterator (checked at construction); the
        // result is a new reference or null.
        let item = unsafe { Bound::from_owned_ptr_or_opt(py, pyo3::ffi::PyIter_Next(iter.as_ptr())) };
        let Some(item) = item else { return self.exhausted(py) };
        let Phase::Running { generation, layer, outer, open } = phase else { return Ok(None) };
        if open && !outer {
            // A training step: deferred when it can be (see `Step`).
            if let Some(item_now) = quick_item(&item) {
                let mut f = fast();
                if f.generation != generation {
                    return Ok(Some(item.unbind()));
                }
                if f.on {
                    f.steps.push(Step::Next { layer: layer as u32, item: item_now });
                    let batch = f.full().then(|| f.take());
                    drop(f);
                    if let Some(batch) = batch {
                        if let Err(e) = submit(py, batch) {
                            return self.end_with(py, e);
                        }
                    }
                    return Ok(Some(item.unbind()));
                }
            }
        }
        self.begin_iteration(py, item, generation, layer, outer, open)
    }
}

impl Drop for LoopIter {
    fn drop(&mut self) {
        // A loop left by `break`, `return` or an exception.
        let _ = self.end();
    }
}

/// `flor.loop(name, iterable)` for the Python layer: `bar` when `iterable`
/// is a progress bar (log lines then print through it).
#[pyfunction]
#[pyo3(signature = (name, iterable, bar=false))]
pub(crate) fn loop_iter(name: &str, iterable: &Bound<'_, PyAny>, bar: bool) -> PyResult<LoopIter> {
    let iter = iterable.try_iter()?;
    Ok(LoopIter {
        name: name.into(),
        text: String::new(),
        iter: Some(iter.into_any().unbind()),
        phase: Phase::NotStarted,
        bar,
    })
}

/// `flor.iteration`'s entry: enters loop `name` and begins one iteration;
/// returns `(index, outer, token)` (the token goes to [`iteration_exit`]).
#[pyfunction]
#[pyo3(signature = (name, index=None, value=None))]
pub(crate) fn iteration_enter(
    py: Python<'_>,
    name: &str,
    index: Option<u64>,
    value: Option<&str>,
) -> PyResult<(u64, bool, usize)> {
    ensure_run(py)?;
    let mut st = state();
    st.output_only = false;
    let run = st.run()?;
    run.loop_begin(name).map_err(err)?;
    let outer = run.depth() == 1;
    let i = match run.iteration_begin_at(index, value) {
        Ok(i) => i,
        Err(e) => {
            let _ = run.loop_end();
            return Err(err(e));
        }
    };
    let layer = st.push_layer(name);
    st.set_layer(layer, i, value);
    Ok((i, outer, layer))
}

/// `flor.iteration`'s exit: ends the iteration and leaves the loop.
#[pyfunction]
pub(crate) fn iteration_exit(py: Python<'_>, token: usize) -> PyResult<()> {
    let ended = {
        let mut st = state();
        st.step_result()?;
        st.pop_layers(token);
        match &st.run {
            Some(run) => run.loop_end().map_err(err),
            None => Ok(()),
        }
    };
    if token == 0 {
        flush_pending(py)?; // an outermost iteration ended
    }
    ended
}
