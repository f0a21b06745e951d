//! The pivot ("dataframe") semantics shared by every backend.
//!
//! `dataframe(names)` returns one row per run × loop position and one column
//! per requested name, preceded by `projid`, `tstamp`, `filename` and one
//! column per loop name (holding the iteration index):
//!
//! * The positions of a run are the loop contexts at which any requested name
//!   was logged, minus those that are an ancestor of another such position: a
//!   value logged per `epoch` is repeated on every `step` row of that epoch,
//!   like FlorDB's join of per-name frames on their common loop columns.
//! * A row's value for a name is the one logged at the row's position, else
//!   at its nearest enclosing iteration, else at run level (`arg`s and logs
//!   outside loops appear on every row of their run).
//! * When a name is logged more than once at one position, the last wins
//!   (replayed values after forward ones).
//! * A run with none of the names has no rows; a run whose values are all at
//!   run level has one row.
//! * Loop columns are ordered by depth, then by first appearance; rows by
//!   `tstamp`, then execution order.
//! * A loop whose iterations carry a value (`flor.loop` over a list,
//!   `flor.iteration(name, i, value)`) has a column `<loop>_value` right
//!   after its index column, holding the value's recorded text (NULL on
//!   rows whose iteration has none, e.g. a run that recorded no values),
//!   when some row of the result has a value that is not the text of its
//!   iteration index: a loop over `range(n)` gets none (FlorDB's rule,
//!   except that a row without a value is no difference). The column is
//!   left out when its name is already a column (a loop or a requested
//!   name); `SELECT * FROM loops` still has every value.
//!
//! With no names: one row per run with all of its run-level values, columns
//! ordered by first appearance in the record file.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::select::{IterFilter, IterSelect, PivotFilter, SpanRef};
use crate::store::{RunKey, RunRow, Store, StoreResult, TensorFilter, TensorName, ValueFilter};
use crate::table::{Column, ColumnData, Nullable, Table};
use crate::value::Value;

const NONE: u32 = u32::MAX;

/// One value: `(run << 32 | ctx)` as key so sorting groups by run, then
/// position; `order` is `rank << 62 | line` ([`crate::record::Source::rank`]) so the last record wins.
struct Val {
    key: u64,
    name: u32,
    order: u64,
    value: Value,
}

impl Val {
    fn run(&self) -> u32 {
        (self.key >> 32) as u32
    }
    fn ctx(&self) -> u32 {
        self.key as u32
    }
}

#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    loop_id: u32,
    iteration: u64,
    /// The iteration's value: an index into [`Loops::texts`] (`NONE`: none).
    value: u32,
}

const EMPTY: Node = Node { parent: NONE, loop_id: NONE, iteration: 0, value: NONE };

/// Computes the pivot over `store`'s primitives. See the module docs.
pub fn dataframe<S: Store + ?Sized>(store: &S, names: &[&str]) -> StoreResult<Table> {
    dataframe_filtered(store, names, &PivotFilter::default())
}

/// [`dataframe`] over the runs and loop iterations `filter` selects (see
/// [`crate::select`]): other runs are left out before any value is read,
/// values in unselected iterations before the rows are formed; a run that
/// logged the names only in unselected iterations has no rows.
pub fn dataframe_filtered<S: Store + ?Sized>(store: &S, names: &[&str], filter: &PivotFilter) -> StoreResult<Table> {
    let mut runs = store.runs()?;
    runs.retain(|r| filter.keeps_run(r.key));
    if names.is_empty() {
        return run_level(store, &runs);
    }
    let mut wanted: Vec<&str> = Vec::new();
    for n in names {
        if !wanted.contains(n) {
            wanted.push(n);
        }
    }
    let run_idx: HashMap<RunKey, u32> = runs.iter().enumerate().map(|(i, r)| (r.key, i as u32)).collect();
    let mut vals = collect_values(store, &wanted, &run_idx)?;
    let loops = Loops::scan(store, &runs, &run_idx, &vals)?;
    if !filter.iters.is_empty() {
        select_iterations(&mut vals, &loops, &filter.iters, runs.len());
    }
    let rows = Rows::of(&vals, &loops, runs.len());
    let (loop_cols, loop_col_of) = loop_columns(&rows.rows, &loops);

    let mut columns = head_columns(&runs, &rows.rows);
    let (loop_values, value_ids) = loop_cells(&rows.rows, &loops, &loop_cols, &loop_col_of);
    let col_names: Vec<&str> = loop_cols.iter().map(|&id| &*loops.names[id as usize]).collect();
    let taken = |n: &str| col_names.contains(&n) || wanted.contains(&n);
    for ((id, values), ids) in loop_cols.iter().zip(loop_values).zip(value_ids) {
        let name = &loops.names[*id as usize];
        let value_col = ids.and_then(|ids| {
            let column = value_column_name(name, &taken)?;
            let differs = ids.iter().zip(&values).any(|(&t, it)| match (t, it) {
                (NONE, _) | (_, None) => false,
                (t, Some(it)) => !is_index_text(&loops.texts[t as usize], *it as u64),
            });
            differs.then(|| {
                let mut cells = ValueColumn::default();
                for &t in &ids {
                    cells.push(loops.texts.get(t as usize).map(|t| &**t), 1);
                }
                Column { name: column, data: cells.finish() }
            })
        });
        columns.push(Column { name: name.to_string(), data: ColumnData::Int(values.into()) });
        columns.extend(value_col);
    }
    for (k, name) in wanted.iter().enumerate() {
        let data = name_cells(k as u32, &vals, &rows, &loops);
        columns.push(Column { name: (*name).to_owned(), data });
    }
    Ok(Table { columns })
}

/// The `tensor:` names among `wanted` (with their index) apart from the
/// others.
fn split_tensor_names<'a>(wanted: &[&'a str]) -> (Vec<&'a str>, Vec<(u32, TensorName<'a>)>) {
    let mut plain = Vec::new();
    let mut tensors = Vec::new();
    for (i, n) in wanted.iter().enumerate() {
        match TensorName::parse(n) {
            Some(t) => tensors.push((i as u32, t)),
            None => plain.push(*n),
        }
    }
    (plain, tensors)
}

/// The values of `tensor:` names: each statistic at its checkpoint's
/// position ([`Store::scan_tensors`]).
fn tensor_values<S: Store + ?Sized>(
    store: &S,
    names: &[(u32, TensorName<'_>)],
    run_idx: &HashMap<RunKey, u32>,
    vals: &mut Vec<Val>,
) -> StoreResult<()> {
    let pairs: Vec<(&str, &str)> = names.iter().flat_map(|(_, t)| t.splits()).collect();
    store.scan_tensors(TensorFilter::Named(&pairs), &mut |v| {
        let Some(&run) = run_idx.get(&v.run) else { return };
        for (k, t) in names {
            if !t.matches(v.checkpoint, &v.row.tensor) {
                continue;
            }
            if let Some(value) = t.stat.of(v.row) {
                vals.push(Val {
                    key: (u64::from(run) << 32) | u64::from(v.ctx.unwrap_or(NONE)),
                    name: *k,
                    order: v.line,
                    value,
                });
            }
        }
    })
}

/// Step 1: the values of the wanted names, sorted by (run, position, name),
/// the last one per (run, position, name) kept.
fn collect_values<S: Store + ?Sized>(
    store: &S,
    wanted: &[&str],
    run_idx: &HashMap<RunKey, u32>,
) -> StoreResult<Vec<Val>> {
    let mut vals: Vec<Val> = Vec::new();
    let (plain, tensor_names) = split_tensor_names(wanted);
    if !tensor_names.is_empty() {
        tensor_values(store, &tensor_names, run_idx, &mut vals)?;
    }
    let mut last_run: Option<(RunKey, u32)> = None;
    let mut last_name: Option<(usize, u32)> = None; // (pointer of the &str, index)
    let scan = |visit: &mut dyn FnMut(crate::store::ValueRow<'_>)| match plain.len() {
        0 => Ok(()),
        _ => store.scan_values(ValueFilter::Names(&plain), visit),
    };
    scan(&mut |row| {
        let run = match last_run {
            Some((k, i)) if k == row.run => i,
            _ => match run_idx.get(&row.run) {
                Some(&i) => {
                    last_run = Some((row.run, i));
                    i
                }
                None => return,
            },
        };
        let name = match last_name {
            Some((ptr, i)) if ptr == row.name.as_ptr() as usize && wanted[i as usize] == row.name => i,
            _ => match wanted.iter().position(|n| *n == row.name) {
                Some(i) => {
                    last_name = Some((row.name.as_ptr() as usize, i as u32));
                    i as u32
                }
                None => return,
            },
        };
        vals.push(Val {
            key: (u64::from(run) << 32) | u64::from(row.ctx.unwrap_or(NONE)),
            name,
            order: (u64::from(row.source.rank()) << 62) | row.line,
            value: row.value,
        });
    })?;
    let sort_key = |v: &Val| (v.key, v.name, v.order);
    if !vals.is_sorted_by_key(sort_key) {
        vals.sort_unstable_by_key(sort_key);
    }
    vals.dedup_by(|later, earlier| {
        if later.key == earlier.key && later.name == earlier.name {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    Ok(vals)
}

/// Drops the values in iterations `iters` leaves out, and every value of
/// a run whose loop values are all dropped (see [`dataframe_filtered`]).
fn select_iterations(vals: &mut Vec<Val>, loops: &Loops, iters: &[IterSelect], runs: usize) {
    let filters: Vec<IterFilter> = loops
        .spans
        .iter()
        .map(|spans| {
            let refs: Vec<SpanRef<'_>> = spans
                .iter()
                .map(|&(first_ctx, count, n)| SpanRef {
                    first_ctx,
                    count,
                    parent: (n.parent != NONE).then_some(n.parent),
                    name: &loops.names[n.loop_id as usize],
                    first_iteration: n.iteration,
                })
                .collect();
            IterFilter::new(iters, &refs)
        })
        .collect();
    // Per run: (loop values before, loop values kept).
    let mut counts = vec![(0u64, 0u64); runs];
    vals.retain(|v| {
        if v.ctx() == NONE {
            return true;
        }
        let c = &mut counts[v.run() as usize];
        c.0 += 1;
        let keep = filters.get(v.run() as usize).is_none_or(|f| f.keeps(v.ctx()));
        c.1 += u64::from(keep);
        keep
    });
    vals.retain(|v| {
        let (before, kept) = counts[v.run() as usize];
        before == 0 || kept > 0
    });
}

/// Step 2: the loop contexts of the runs that logged inside loops: per
/// run, a table indexed by context id where the ids are dense next to the
/// values read, else the spans themselves (looked up by binary search), so
/// memory follows what the store holds, never the size of an id.
struct Loops {
    names: Vec<Arc<str>>,
    /// The iterations' value texts, one per valued span.
    texts: Vec<Arc<str>>,
    /// Per loop id: whether any of its spans has a value.
    valued: Vec<bool>,
    runs: Vec<RunLoops>,
    /// Per run, its spans `(first_ctx, count, node of the first)`.
    spans: Vec<Vec<(u32, u32, Node)>>,
}

/// One run's loop contexts (see [`Loops`]).
enum RunLoops {
    /// Indexed by context id (`EMPTY` where none).
    Dense(Vec<Node>),
    /// Spans sorted by first context: `(first_ctx, count, node of the first)`.
    Spans(Vec<(u32, u32, Node)>),
}

impl RunLoops {
    fn node(&self, ctx: u32) -> Option<Node> {
        match self {
            RunLoops::Dense(nodes) => nodes.get(ctx as usize).copied().filter(|n| n.loop_id != NONE),
            RunLoops::Spans(spans) => {
                let i = spans.partition_point(|s| s.0 <= ctx).checked_sub(1)?;
                let (first, count, n) = spans[i];
                (ctx - first < count).then_some(Node { iteration: n.iteration + u64::from(ctx - first), ..n })
            }
        }
    }
}

/// A dense table may be this many times longer than the values it serves,
/// plus [`DENSE_SLACK`] entries.
const DENSE_FACTOR: u64 = 4;
const DENSE_SLACK: u64 = 4096;

impl Loops {
    fn scan<S: Store + ?Sized>(
        store: &S,
        runs: &[RunRow],
        run_idx: &HashMap<RunKey, u32>,
        vals: &[Val],
    ) -> StoreResult<Loops> {
        let mut loop_runs: Vec<RunKey> = Vec::new();
        let mut values_of: Vec<u64> = vec![0; runs.len()];
        for v in vals {
            let key = runs[v.run() as usize].key;
            values_of[v.run() as usize] += 1;
            if v.ctx() != NONE && loop_runs.last() != Some(&key) {
                loop_runs.push(key);
            }
        }
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut texts: Vec<Arc<str>> = Vec::new();
        let mut valued: Vec<bool> = Vec::new();
        let mut loop_ids: HashMap<Arc<str>, u32> = HashMap::new();
        let mut spans: Vec<Vec<(u32, u32, Node)>> = vec![Vec::new(); runs.len()];
        if !loop_runs.is_empty() {
            store.scan_loops(&loop_runs, &mut |run, span| {
                let Some(&ri) = run_idx.get(&run) else { return };
                if span.count == 0 {
                    return;
                }
                let id = match loop_ids.get(&span.name) {
                    Some(&id) => id,
                    None => {
                        names.push(span.name.clone());
                        valued.push(false);
                        let id = (names.len() - 1) as u32;
                        loop_ids.insert(span.name.clone(), id);
                        id
                    }
                };
                let value = match &span.value {
                    Some(t) => {
                        valued[id as usize] = true;
                        texts.push(t.as_str().into());
                        (texts.len() - 1) as u32
                    }
                    None => NONE,
                };
                let node =
                    Node { parent: span.parent.unwrap_or(NONE), loop_id: id, iteration: span.first_iteration, value };
                spans[ri as usize].push((span.first_ctx, span.count, node));
            })?;
        }
        let runs = spans.iter().cloned().zip(values_of).map(|(s, values)| RunLoops::of(s, values)).collect();
        Ok(Loops { names, texts, valued, runs, spans })
    }

    /// The iteration at context `ctx` of run `run`, if any.
    fn node(&self, run: u32, ctx: u32) -> Option<Node> {
        self.runs[run as usize].node(ctx)
    }
}

impl RunLoops {
    /// A run's contexts from its spans, dense when the ids are, next to
    /// the run's `values` and spans.
    fn of(mut spans: Vec<(u32, u32, Node)>, values: u64) -> RunLoops {
        let end = spans.iter().map(|s| u64::from(s.0) + u64::from(s.1)).max().unwrap_or(0);
        if end <= DENSE_FACTOR * (values + spans.len() as u64) + DENSE_SLACK {
            let mut table = vec![EMPTY; end as usize];
            for (first, count, n) in spans {
                let first = first as usize;
                for (i, slot) in table[first..first + count as usize].iter_mut().enumerate() {
                    *slot = Node { iteration: n.iteration + i as u64, ..n };
                }
            }
            return RunLoops::Dense(table);
        }
        spans.sort_unstable_by_key(|s| s.0);
        // Overlapping spans (never written by flor): the later one wins
        // from its start, as in the dense table.
        let mut out: Vec<(u32, u32, Node)> = Vec::with_capacity(spans.len());
        for s in spans {
            if let Some(last) = out.last_mut() {
                if u64::from(last.0) + u64::from(last.1) > u64::from(s.0) {
                    last.1 = s.0 - last.0;
                    if last.1 == 0 {
                        out.pop();
                    }
                }
            }
            out.push(s);
        }
        RunLoops::Spans(out)
    }

    /// The number of context ids a dense marking table needs (0: use a
    /// set).
    fn dense_len(&self) -> usize {
        match self {
            RunLoops::Dense(nodes) => nodes.len(),
            RunLoops::Spans(_) => 0,
        }
    }
}

/// Step 3: per run, the positions that are not an ancestor of another.
struct Rows {
    /// (run, position) of each row; position `NONE`: run level.
    rows: Vec<(u32, u32)>,
    /// For each row, the index in `vals` of its position's first value.
    row_first: Vec<u32>,
    /// Per run, where its values start and end in `vals`.
    span_of_run: Vec<(u32, u32)>,
}

impl Rows {
    fn of(vals: &[Val], loops: &Loops, runs: usize) -> Rows {
        let mut rows: Vec<(u32, u32)> = Vec::new();
        let mut row_first: Vec<u32> = Vec::new();
        let mut span_of_run = vec![(0u32, 0u32); runs];
        let mut marked = Marks::default();
        let mut start = 0;
        while start < vals.len() {
            let run = vals[start].run();
            let end = start + vals[start..].partition_point(|v| v.run() == run);
            let slice = &vals[start..end];
            marked.reset(loops.runs[run as usize].dense_len());
            for v in slice.iter().filter(|v| v.ctx() != NONE) {
                let mut p = loops.node(run, v.ctx()).map_or(NONE, |n| n.parent);
                let mut depth = 0;
                while p != NONE && depth < MAX_CHAIN && marked.mark(p) {
                    p = loops.node(run, p).map_or(NONE, |n| n.parent);
                    depth += 1;
                }
            }
            let before = rows.len();
            let mut last = NONE;
            for (i, v) in slice.iter().enumerate() {
                if v.ctx() != NONE && v.ctx() != last && !marked.has(v.ctx()) {
                    rows.push((run, v.ctx()));
                    row_first.push((start + i) as u32);
                    last = v.ctx();
                }
            }
            if rows.len() == before {
                rows.push((run, NONE));
                row_first.push(NONE);
            }
            span_of_run[run as usize] = (start as u32, end as u32);
            start = end;
        }
        Rows { rows, row_first, span_of_run }
    }
}

/// The contexts of one run that are an ancestor of a position: a table by
/// context id when the run's contexts are dense, else a set.
#[derive(Default)]
struct Marks {
    dense: Vec<bool>,
    sparse: HashSet<u32>,
    use_dense: bool,
}

impl Marks {
    fn reset(&mut self, dense_len: usize) {
        self.dense.clear();
        self.sparse.clear();
        self.use_dense = dense_len > 0;
        self.dense.resize(dense_len, false);
    }

    /// Marks `ctx`; `false` when it was marked already.
    fn mark(&mut self, ctx: u32) -> bool {
        if !self.use_dense {
            return self.sparse.insert(ctx);
        }
        match self.dense.get_mut(ctx as usize) {
            Some(m) if !*m => {
                *m = true;
                true
            }
            _ => false,
        }
    }

    fn has(&self, ctx: u32) -> bool {
        if self.use_dense {
            self.dense.get(ctx as usize).copied().unwrap_or(false)
        } else {
            self.sparse.contains(&ctx)
        }
    }
}

/// The longest parent chain followed (a cycle in corrupt data; record
/// files nest at most [`crate::record::MAX_DEPTH`] deep).
const MAX_CHAIN: usize = 10_000;

/// Step 4: the loop columns, by depth then first appearance; returns their
/// loop ids in column order and each loop id's column (`usize::MAX`: none).
fn loop_columns(rows: &[(u32, u32)], loops: &Loops) -> (Vec<u32>, Vec<usize>) {
    let mut loop_rank: Vec<Option<(usize, usize)>> = vec![None; loops.names.len()];
    let mut seen = 0usize;
    let mut chain: Vec<Node> = Vec::new();
    let mut last_seen = (NONE, NONE, NONE);
    for &(run, ctx) in rows {
        // Iterations of one loop under one parent share their chain of loop
        // names: look at each (run, parent, loop) once.
        let here = loops.node(run, ctx).map_or((run, NONE, NONE), |n| (run, n.parent, n.loop_id));
        if here == last_seen && ctx != NONE {
            continue;
        }
        last_seen = here;
        collect_chain(loops, run, ctx, &mut chain);
        for (depth, n) in chain.iter().rev().enumerate() {
            let slot = &mut loop_rank[n.loop_id as usize];
            match slot {
                Some((d, _)) if *d <= depth => {}
                Some((d, _)) => *d = depth,
                None => {
                    *slot = Some((depth, seen));
                    seen += 1;
                }
            }
        }
    }
    let mut loop_cols: Vec<u32> = (0..loops.names.len() as u32).filter(|&i| loop_rank[i as usize].is_some()).collect();
    loop_cols.sort_by_key(|&i| loop_rank[i as usize]);
    let mut loop_col_of = vec![usize::MAX; loops.names.len()];
    for (pos, &id) in loop_cols.iter().enumerate() {
        loop_col_of[id as usize] = pos;
    }
    (loop_cols, loop_col_of)
}

/// Per loop column: its cells and, for a loop with values, each row's
/// value (an index into [`Loops::texts`], `NONE` where none).
type LoopCells = (Vec<Vec<Option<i64>>>, Vec<Option<Vec<u32>>>);

/// Step 5a: the loop columns' cells (the iteration index of each row's
/// enclosing iteration of that loop) and their values.
fn loop_cells(rows: &[(u32, u32)], loops: &Loops, loop_cols: &[u32], loop_col_of: &[usize]) -> LoopCells {
    let mut loop_values: Vec<Vec<Option<i64>>> = vec![vec![None; rows.len()]; loop_cols.len()];
    let mut value_ids: Vec<Option<Vec<u32>>> =
        loop_cols.iter().map(|&id| loops.valued[id as usize].then(|| vec![NONE; rows.len()])).collect();
    let mut chain: Vec<Node> = Vec::new();
    for (r, &(run, ctx)) in rows.iter().enumerate() {
        collect_chain(loops, run, ctx, &mut chain);
        // Innermost first: of two same-named loops, the outermost wins.
        for n in &chain {
            let col = loop_col_of[n.loop_id as usize];
            loop_values[col][r] = Some(n.iteration as i64);
            if let Some(ids) = &mut value_ids[col] {
                ids[r] = n.value;
            }
        }
    }
    (loop_values, value_ids)
}

/// Whether `text` is the decimal text of iteration index `iteration` (the
/// value a loop over `range(n)` records): such a value says nothing its
/// loop column does not.
pub fn is_index_text(text: &str, iteration: u64) -> bool {
    let digits = text.as_bytes();
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
        && text.parse::<u64>() == Ok(iteration)
}

/// The name of loop `loop_name`'s value column, `<loop>_value`, unless
/// `taken` says a column of the pivot already has it.
pub fn value_column_name(loop_name: &str, taken: &dyn Fn(&str) -> bool) -> Option<String> {
    let name = format!("{loop_name}_value");
    (!taken(&name)).then_some(name)
}

/// A `<loop>_value` column being built: text in a dictionary of the
/// distinct values in order of first appearance. Shared by the store
/// backends that pivot on their own, so their columns are the same.
#[derive(Default)]
pub struct ValueColumn {
    dict: Vec<Value>,
    code_of: HashMap<Arc<str>, u32>,
    codes: Vec<u32>,
}

impl ValueColumn {
    /// Appends `n` cells holding `text` (`None`: NULL).
    pub fn push(&mut self, text: Option<&str>, n: usize) {
        let code = match text {
            None => crate::table::Dict::NULL,
            Some(t) => match self.code_of.get(t) {
                Some(&c) => c,
                None => {
                    let t: Arc<str> = t.into();
                    let c = self.dict.len() as u32;
                    self.dict.push(Value::Text(Arc::clone(&t)));
                    self.code_of.insert(t, c);
                    c
                }
            },
        };
        self.codes.extend(std::iter::repeat_n(code, n));
    }

    /// Appends `n` cells holding the text of iteration index `index`
    /// (`None`: NULL).
    pub fn push_index(&mut self, index: Option<i64>, n: usize) {
        match index {
            Some(i) => self.push(Some(itoa::Buffer::new().format(i)), n),
            None => self.push(None, n),
        }
    }

    /// The column.
    pub fn finish(self) -> ColumnData {
        ColumnData::Dict { dict: self.dict, codes: Arc::new(self.codes) }
    }
}

/// Step 5b: the cells of name `k`: per row the value at its position, else
/// at the nearest enclosing iteration, else at run level. The first value
/// decides the column's storage (`push` widens).
fn name_cells(k: u32, vals: &[Val], rows: &Rows, loops: &Loops) -> ColumnData {
    let mut col = ColumnData::Values(Vec::new());
    let mut typed = false;
    for r in 0..rows.rows.len() {
        let found = value_at(k, vals, rows, loops, r);
        if !typed {
            match &found {
                Some(Value::Float(_)) => col = ColumnData::Float(Nullable::nulls(r)),
                Some(Value::Int(_)) => col = ColumnData::Int(Nullable::nulls(r)),
                Some(_) => col = ColumnData::Values(vec![None; r]),
                None => {}
            }
            typed = found.is_some();
            if !typed {
                continue;
            }
        }
        col.push(found);
    }
    if typed {
        col
    } else {
        ColumnData::Values(vec![None; rows.rows.len()])
    }
}

/// The value of name `k` for row `r` (see [`name_cells`]).
fn value_at(k: u32, vals: &[Val], rows: &Rows, loops: &Loops, r: usize) -> Option<Value> {
    let (run, ctx) = rows.rows[r];
    // Fast path: the value sits at the row's own position.
    let own = rows.row_first[r];
    if own != NONE {
        let key = (u64::from(run) << 32) | u64::from(ctx);
        for v in vals[own as usize..].iter().take_while(|v| v.key == key) {
            if v.name == k {
                return Some(v.value.clone());
            }
        }
    }
    let (s, e) = rows.span_of_run[run as usize];
    let slice = &vals[s as usize..e as usize];
    let mut c = ctx;
    loop {
        let key = (u64::from(run) << 32) | u64::from(c);
        if let Ok(hit) = slice.binary_search_by_key(&(key, k), |v| (v.key, v.name)) {
            return Some(slice[hit].value.clone());
        }
        if c == NONE {
            return None;
        }
        c = loops.node(run, c).map_or(NONE, |n| n.parent);
    }
}

/// The iterations enclosing context `ctx` of run `run`, innermost first.
fn collect_chain(loops: &Loops, run: u32, ctx: u32, chain: &mut Vec<Node>) {
    chain.clear();
    let mut c = ctx;
    while c != NONE {
        let Some(n) = loops.node(run, c) else { break };
        chain.push(n);
        c = n.parent;
        if chain.len() > MAX_CHAIN {
            break; // a cycle in corrupt data; never in recorded runs
        }
    }
}

/// `projid`, `tstamp`, `filename`: dictionary columns indexed by run.
fn head_columns(runs: &[RunRow], rows: &[(u32, u32)]) -> Vec<Column> {
    run_columns(runs, rows.iter().map(|(run, _)| *run).collect())
}

/// A pivot's first columns, `projid`, `tstamp` and `filename`, for rows
/// whose run is `runs[codes[i]]`: dictionary columns sharing `codes`.
/// Shared by the store backends that pivot on their own.
pub fn run_columns(runs: &[RunRow], codes: Vec<u32>) -> Vec<Column> {
    let codes = Arc::new(codes);
    let dict = |f: &dyn Fn(&RunRow) -> &str| -> Vec<Value> { runs.iter().map(|r| Value::Text(f(r).into())).collect() };
    vec![
        Column {
            name: "projid".into(),
            data: ColumnData::Dict { dict: dict(&|r| &r.meta.projid), codes: Arc::clone(&codes) },
        },
        Column {
            name: "tstamp".into(),
            data: ColumnData::Dict { dict: dict(&|r| &r.meta.tstamp), codes: Arc::clone(&codes) },
        },
        Column { name: "filename".into(), data: ColumnData::Dict { dict: dict(&|r| &r.meta.filename), codes } },
    ]
}

fn run_level<S: Store + ?Sized>(store: &S, runs: &[RunRow]) -> StoreResult<Table> {
    let run_idx: HashMap<RunKey, usize> = runs.iter().enumerate().map(|(i, r)| (r.key, i)).collect();
    // name -> (first line seen, column index)
    let mut cols: HashMap<String, (u64, usize)> = HashMap::new();
    type Cells = HashMap<usize, ((u8, u64), Value)>;
    let mut cells: Vec<Cells> = vec![HashMap::new(); runs.len()];
    store.scan_values(ValueFilter::RunLevel, &mut |row| {
        let Some(&ri) = run_idx.get(&row.run) else {
            return;
        };
        let next = cols.len();
        let entry = cols.entry(row.name.to_owned()).or_insert((row.line, next));
        entry.0 = entry.0.min(row.line);
        let order = (row.source.rank(), row.line);
        let slot = cells[ri].entry(entry.1).or_insert((order, row.value.clone()));
        if order >= slot.0 {
            *slot = (order, row.value);
        }
    })?;
    let mut names: Vec<(String, u64, usize)> = cols.into_iter().map(|(n, (l, i))| (n, l, i)).collect();
    names.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let rows: Vec<(u32, u32)> = (0..runs.len() as u32).map(|r| (r, NONE)).collect();
    let mut columns = head_columns(runs, &rows);
    for (name, _, idx) in names {
        columns.push(Column::new(name, cells.iter().map(|m| m.get(&idx).map(|(_, v)| v.clone())).collect()));
    }
    Ok(Table { columns })
}
