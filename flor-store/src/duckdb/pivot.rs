//! `DuckStore::dataframe`: the pivot with its heavy part planned in DuckDB.
//!
//! The answers are those of the shared pivot (`flor_core::pivot`, whose
//! docs state the semantics); only the work is split differently:
//!
//! * DuckDB pivots the values: one row per (run, loop position) holding a
//!   column per requested name, the last record winning (`arg_max` over
//!   `(source, line)`, so replay values win over forward ones), rows in
//!   `runs()` order then position order. It reads a slice of runs per
//!   query (about 262,144 records, or the store's smaller `scan_slice`), so
//!   no query holds more than a slice's groups and rows.
//! * Rust walks each run's positions once, with the run's loop spans: rows
//!   are the positions that are no ancestor of another, a missing value is
//!   taken from the nearest enclosing position that has one (else run
//!   level), and cells go straight into typed columns (`ColumnData::Int`,
//!   `Float`, `Dict` codes): no per-value objects for numbers.
//!
//! A name whose stored values do not all share one type falls back to the
//! shared pivot for the whole call (its column's storage depends on the
//! order values are met in), as does `dataframe` with no names.

use std::collections::HashMap;
use std::sync::Arc;

use duckdb::arrow::array::{Array, ArrayRef, PrimitiveArray, RecordBatch};
use duckdb::arrow::datatypes::{Float64Type, Int32Type, Int64Type, Int8Type};
use flor_core::store::{RunKey, RunRow, Store, StoreResult};
use flor_core::table::{Column, ColumnData, Table};
use flor_core::value::{Value, ValueType};

use super::{string_at, DuckStore};
use crate::rows::unusable;

const NONE: u32 = u32::MAX;

/// At most this many runs per pivot query (each is a bound parameter pair).
const MAX_RUNS_PER_QUERY: usize = 512;

/// Records per pivot query at most: DuckDB holds a query's groups and its
/// whole result until read, beside the table being built (at 10M rows,
/// 1M-record slices peaked about 60 MiB higher than 256k ones, no faster).
const PIVOT_SLICE_RECORDS: i64 = 1 << 18;

/// The longest parent chain followed (a cycle in corrupt data).
const MAX_DEPTH: usize = 10_000;

#[derive(Clone, Copy)]
struct Node {
    first_ctx: u32,
    count: u32,
    parent: u32,
    loop_id: u32,
    first_iteration: u64,
}

/// One iteration: its parent, loop and index.
#[derive(Clone, Copy)]
struct Iter {
    parent: u32,
    loop_id: u32,
    iteration: u64,
}

/// A run's loop spans, sorted by first context.
struct Spans(Vec<Node>);

impl Spans {
    fn node(&self, ctx: u32) -> Option<Iter> {
        if ctx == NONE {
            return None;
        }
        let i = self.0.partition_point(|s| s.first_ctx <= ctx);
        let s = self.0.get(i.checked_sub(1)?)?;
        (ctx - s.first_ctx < s.count).then(|| Iter {
            parent: s.parent,
            loop_id: s.loop_id,
            iteration: s.first_iteration + u64::from(ctx - s.first_ctx),
        })
    }

    fn chain(&self, ctx: u32, out: &mut Vec<Iter>) {
        out.clear();
        let mut c = ctx;
        while let Some(n) = self.node(c) {
            out.push(n);
            c = n.parent;
            if out.len() > MAX_DEPTH {
                break;
            }
        }
    }

    /// One past the largest context any span covers.
    fn end(&self) -> usize {
        self.0.iter().map(|s| s.first_ctx as usize + s.count as usize).max().unwrap_or(0)
    }
}

/// One run's pivoted positions as DuckDB returned them (ctx order, run
/// level last), one cell buffer per requested name.
#[derive(Default)]
struct RunCells {
    ctxs: Vec<u32>,
    cells: Vec<Cells>,
}

/// Cells of one name, in the form its stored type decides.
enum Cells {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Any(Vec<Option<Value>>),
}

impl Cells {
    fn for_kind(kind: Option<ValueType>) -> Cells {
        match kind {
            Some(ValueType::Int) => Cells::Int(Vec::new()),
            Some(ValueType::Float) => Cells::Float(Vec::new()),
            _ => Cells::Any(Vec::new()),
        }
    }

    fn clear(&mut self) {
        match self {
            Cells::Int(v) => v.clear(),
            Cells::Float(v) => v.clear(),
            Cells::Any(v) => v.clear(),
        }
    }

    fn has(&self, i: usize) -> bool {
        match self {
            Cells::Int(v) => v[i].is_some(),
            Cells::Float(v) => v[i].is_some(),
            Cells::Any(v) => v[i].is_some(),
        }
    }

    /// Appends cell `i` of `from` (the same form) to `self`.
    fn push_from(&mut self, from: &Cells, i: Option<usize>) {
        match (self, from) {
            (Cells::Int(v), Cells::Int(f)) => v.push(i.and_then(|i| f[i])),
            (Cells::Float(v), Cells::Float(f)) => v.push(i.and_then(|i| f[i])),
            (Cells::Any(v), Cells::Any(f)) => v.push(i.and_then(|i| f[i].clone())),
            (me, _) => me.push_none(),
        }
    }

    fn push_none(&mut self) {
        match self {
            Cells::Int(v) => v.push(None),
            Cells::Float(v) => v.push(None),
            Cells::Any(v) => v.push(None),
        }
    }

    fn into_data(self) -> ColumnData {
        match self {
            Cells::Int(v) => ColumnData::Int(v),
            Cells::Float(v) => ColumnData::Float(v),
            Cells::Any(v) => ColumnData::Values(v),
        }
    }
}

/// A batch column of pivoted values.
enum Col<'a> {
    Int(&'a PrimitiveArray<Int64Type>),
    Float(&'a PrimitiveArray<Float64Type>),
    /// Text, and whether it is JSON.
    Text(&'a ArrayRef, bool),
}

/// The result being built, row by row.
struct Builder {
    codes: Vec<u32>,
    loop_names: Vec<Arc<str>>,
    loop_ids: HashMap<Arc<str>, u32>,
    loop_values: Vec<Vec<Option<i64>>>,
    /// Per loop id: (smallest depth, order of first appearance).
    loop_rank: Vec<Option<(usize, usize)>>,
    seen: usize,
    last_seen: (u32, u32, u32),
    names: Vec<Cells>,
    found: Vec<bool>,
    chain: Vec<Iter>,
    marked: Vec<bool>,
    /// The last context looked up among the run's positions, and where.
    found_at: Option<(u32, Option<usize>)>,
}

impl Builder {
    fn loop_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.loop_ids.get(name) {
            return id;
        }
        let id = self.loop_names.len() as u32;
        self.loop_names.push(Arc::clone(name));
        self.loop_ids.insert(Arc::clone(name), id);
        self.loop_values.push(Vec::new());
        self.loop_rank.push(None);
        id
    }

    /// Emits the rows of run `run` (its index in `runs()`).
    fn run(&mut self, run: u32, pos: &RunCells, spans: &Spans) {
        if pos.ctxs.is_empty() {
            return;
        }
        self.found_at = None;
        // Ancestors of any position are no rows.
        self.marked.clear();
        self.marked.resize(spans.end(), false);
        for &ctx in pos.ctxs.iter().filter(|&&c| c != NONE) {
            let mut p = spans.node(ctx).map_or(NONE, |n| n.parent);
            while p != NONE && (p as usize) < self.marked.len() && !self.marked[p as usize] {
                self.marked[p as usize] = true;
                p = spans.node(p).map_or(NONE, |n| n.parent);
            }
        }
        let mut any = false;
        for (i, &ctx) in pos.ctxs.iter().enumerate() {
            if ctx != NONE && !self.marked.get(ctx as usize).copied().unwrap_or(false) {
                self.row(run, ctx, Some(i), pos, spans);
                any = true;
            }
        }
        if !any {
            let own = (pos.ctxs.last() == Some(&NONE)).then(|| pos.ctxs.len() - 1);
            self.row(run, NONE, own, pos, spans);
        }
    }

    fn row(&mut self, run: u32, ctx: u32, own: Option<usize>, pos: &RunCells, spans: &Spans) {
        let r = self.codes.len();
        self.codes.push(run);
        // Loop columns: ranks as the shared pivot computes them.
        let here = spans.node(ctx).map_or((run, NONE, NONE), |n| (run, n.parent, n.loop_id));
        let mut chain = std::mem::take(&mut self.chain);
        spans.chain(ctx, &mut chain);
        if here != self.last_seen || ctx == NONE {
            self.last_seen = here;
            for (depth, n) in chain.iter().rev().enumerate() {
                let slot = &mut self.loop_rank[n.loop_id as usize];
                match slot {
                    Some((d, _)) if *d <= depth => {}
                    Some((d, _)) => *d = depth,
                    None => {
                        *slot = Some((depth, self.seen));
                        self.seen += 1;
                    }
                }
            }
        }
        for n in &chain {
            // Columns are filled up to this row when a loop is met (NULL
            // before); the outermost of two same-named loops wins, as in
            // the shared pivot.
            let v = &mut self.loop_values[n.loop_id as usize];
            if v.len() <= r {
                v.resize(r + 1, None);
            }
            v[r] = Some(n.iteration as i64);
        }
        // Values: at the position, else the nearest enclosing one, else run level.
        for (k, out) in self.names.iter_mut().enumerate() {
            let cells = &pos.cells[k];
            let mut hit = own.filter(|&i| cells.has(i));
            if hit.is_none() {
                let mut c = ctx;
                let mut steps = 0;
                while hit.is_none() {
                    c = spans.node(c).map_or(NONE, |n| n.parent);
                    // Consecutive rows mostly share their parent.
                    let at = match self.found_at {
                        Some((x, at)) if x == c => at,
                        _ => {
                            let at = pos.ctxs.binary_search(&c).ok();
                            self.found_at = Some((c, at));
                            at
                        }
                    };
                    if let Some(i) = at {
                        hit = Some(i).filter(|&i| cells.has(i));
                    }
                    steps += 1;
                    if c == NONE || steps > MAX_DEPTH {
                        break;
                    }
                }
            }
            self.found[k] |= hit.is_some();
            out.push_from(cells, hit);
        }
        self.chain = chain;
    }
}

impl DuckStore {
    /// The pivot for `names` (not empty), or `None` where the shared pivot
    /// must answer (see the module docs).
    pub(super) fn pivot(&self, names: &[&str]) -> StoreResult<Option<Table>> {
        let runs = self.runs()?;
        let mut wanted: Vec<&str> = Vec::new();
        for n in names {
            if !wanted.contains(n) {
                wanted.push(n);
            }
        }
        // The names with records, and the one type of each.
        let ids: Vec<Option<i32>> = wanted.iter().map(|n| self.names.get(*n).copied()).collect();
        let present: Vec<i32> = ids.iter().flatten().copied().collect();
        let mut kinds: Vec<Option<ValueType>> = vec![None; wanted.len()];
        if !present.is_empty() {
            let marks = vec!["?"; present.len()].join(", ");
            let sql = format!(
                "SELECT name_id, min(vtype), max(vtype) FROM flor_records \
                 WHERE kind <= 1 AND name_id IN ({marks}) GROUP BY name_id"
            );
            let params: Vec<&dyn duckdb::ToSql> = present.iter().map(|i| i as &dyn duckdb::ToSql).collect();
            let mut mixed = false;
            self.batches("plan a pivot", &sql, &params, &mut |b| {
                let id = self.col::<Int32Type>(b, 0)?;
                let (lo, hi) = (self.col::<Int8Type>(b, 1)?, self.col::<Int8Type>(b, 2)?);
                for row in 0..b.num_rows() {
                    let t = ValueType::from_code(i64::from(lo.value(row)));
                    if lo.value(row) != hi.value(row) || t.is_none() {
                        mixed = true;
                    }
                    for (k, _) in ids.iter().enumerate().filter(|(_, i)| **i == Some(id.value(row))) {
                        kinds[k] = t;
                    }
                }
                Ok(())
            })?;
            if mixed {
                return Ok(None);
            }
        }
        let mut b = Builder {
            codes: Vec::new(),
            loop_names: Vec::new(),
            loop_ids: HashMap::new(),
            loop_values: Vec::new(),
            loop_rank: Vec::new(),
            seen: 0,
            last_seen: (NONE, NONE, NONE),
            names: kinds.iter().map(|k| Cells::for_kind(*k)).collect(),
            found: vec![false; wanted.len()],
            chain: Vec::new(),
            marked: Vec::new(),
            found_at: None,
        };
        // Only names with records get a pivot column.
        let queried: Vec<usize> = (0..wanted.len()).filter(|&k| kinds[k].is_some()).collect();
        if !queried.is_empty() {
            for (start, end) in self.pivot_slices(&runs) {
                self.pivot_slice(&runs, start, end, &ids, &kinds, &queried, &mut b)?;
            }
        }
        Ok(Some(finish(&runs, &wanted, b)))
    }

    /// Index ranges of `runs` holding about [`PIVOT_SLICE_RECORDS`] (or
    /// `scan_slice`, if smaller) records each.
    fn pivot_slices(&self, runs: &[RunRow]) -> Vec<(usize, usize)> {
        let limit = self.scan_slice.min(PIVOT_SLICE_RECORDS);
        let mut out = Vec::new();
        let (mut start, mut acc) = (0, 0i64);
        for (i, r) in runs.iter().enumerate() {
            let n = r.records as i64;
            if i > start && (acc + n > limit || i - start >= MAX_RUNS_PER_QUERY) {
                out.push((start, i));
                start = i;
                acc = 0;
            }
            acc += n;
        }
        if start < runs.len() {
            out.push((start, runs.len()));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn pivot_slice(
        &self,
        runs: &[RunRow],
        start: usize,
        end: usize,
        ids: &[Option<i32>],
        kinds: &[Option<ValueType>],
        queried: &[usize],
        b: &mut Builder,
    ) -> StoreResult<()> {
        let slice = &runs[start..end];
        // Loop spans of these runs.
        let keys: Vec<RunKey> = slice.iter().map(|r| r.key).collect();
        let index: HashMap<RunKey, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let mut spans: Vec<Vec<Node>> = (0..slice.len()).map(|_| Vec::new()).collect();
        let mut loop_err = None;
        self.scan_loops(&keys, &mut |run, s| {
            let Some(&i) = index.get(&run) else { return };
            let loop_id = b.loop_id(&s.name);
            if s.first_ctx.checked_add(s.count).is_none() && loop_err.is_none() {
                loop_err = Some(unusable(&self.label, "a loop span is out of range"));
            }
            spans[i].push(Node {
                first_ctx: s.first_ctx,
                count: s.count,
                parent: s.parent.unwrap_or(NONE),
                loop_id,
                first_iteration: s.first_iteration,
            });
        })?;
        if let Some(e) = loop_err {
            return Err(e);
        }
        let spans: Vec<Spans> = spans
            .into_iter()
            .map(|mut v| {
                v.sort_by_key(|n| n.first_ctx);
                Spans(v)
            })
            .collect();

        // The pivot: one row per (run, position), a column per name.
        // Value columns are chosen from a fixed list by the name's stored
        // type; every value from the caller is a bound parameter.
        let mut params: Vec<i64> = Vec::new();
        let mut aggs = String::new();
        for &k in queried {
            let column = match kinds[k] {
                Some(ValueType::Float) => "fval",
                Some(ValueType::Text | ValueType::Json) => "tval",
                _ => "ival",
            };
            aggs.push_str(&format!(
                ", arg_max(r.{column}, CAST(r.source AS BIGINT) * 4611686018427387904 + r.line) \
                 FILTER (WHERE r.name_id = ?) AS v{k}"
            ));
            params.push(i64::from(ids[k].unwrap_or(-1)));
        }
        let mut values_list = Vec::with_capacity(slice.len());
        for (i, r) in slice.iter().enumerate() {
            values_list.push("(CAST(? AS BIGINT), CAST(? AS INTEGER))");
            params.push(r.key);
            params.push(i as i64);
        }
        let name_marks = vec!["?"; queried.len()].join(", ");
        for &k in queried {
            params.push(i64::from(ids[k].unwrap_or(-1)));
        }
        let (lo, hi) = (keys.iter().min().copied().unwrap_or(0), keys.iter().max().copied().unwrap_or(0));
        params.push(lo);
        params.push(hi);
        let sql = format!(
            "SELECT o.rank, r.ctx{aggs} \
             FROM flor_records r JOIN (VALUES {}) AS o(run, rank) ON o.run = r.run \
             WHERE r.kind <= 1 AND r.name_id IN ({name_marks}) AND r.run BETWEEN ? AND ? \
             GROUP BY o.rank, r.ctx ORDER BY o.rank, r.ctx NULLS LAST",
            values_list.join(", ")
        );
        let refs: Vec<&dyn duckdb::ToSql> = params.iter().map(|p| p as &dyn duckdb::ToSql).collect();

        let mut cur = RunCells { ctxs: Vec::new(), cells: kinds.iter().map(|k| Cells::for_kind(*k)).collect() };
        let mut cur_rank: Option<usize> = None;
        let flush = |b: &mut Builder, cur: &mut RunCells, rank: Option<usize>| {
            if let Some(i) = rank {
                b.run((start + i) as u32, cur, &spans[i]);
            }
            cur.ctxs.clear();
            cur.cells.iter_mut().for_each(Cells::clear);
        };
        self.batches("pivot values", &sql, &refs, &mut |batch: &RecordBatch| {
            let rank = self.col::<Int32Type>(batch, 0)?;
            let ctx = self.col::<Int64Type>(batch, 1)?;
            // Each name's column of this batch, typed once.
            let mut cols: Vec<Option<Col<'_>>> = Vec::with_capacity(kinds.len());
            for (k, kind) in kinds.iter().enumerate() {
                let Some(p) = queried.iter().position(|&q| q == k) else {
                    cols.push(None);
                    continue;
                };
                let i = p + 2;
                cols.push(Some(match kind {
                    Some(ValueType::Float) => Col::Float(self.col::<Float64Type>(batch, i)?),
                    Some(ValueType::Text) => Col::Text(batch.column(i), false),
                    Some(ValueType::Json) => Col::Text(batch.column(i), true),
                    _ => Col::Int(self.col::<Int64Type>(batch, i)?),
                }));
            }
            for row in 0..batch.num_rows() {
                let rk = usize::try_from(rank.value(row)).ok().filter(|&r| r < slice.len());
                let Some(rk) = rk else {
                    return Err(unusable(&self.label, "a pivot row names an unknown run"));
                };
                if cur_rank != Some(rk) {
                    flush(b, &mut cur, cur_rank);
                    cur_rank = Some(rk);
                }
                let c = if ctx.is_null(row) {
                    NONE
                } else {
                    u32::try_from(ctx.value(row)).ok().filter(|&c| c != NONE).ok_or_else(|| {
                        unusable(&self.label, &format!("a loop context id {} is out of range", ctx.value(row)))
                    })?
                };
                cur.ctxs.push(c);
                for (k, cells) in cur.cells.iter_mut().enumerate() {
                    let Some(col) = &cols[k] else {
                        cells.push_none();
                        continue;
                    };
                    match (cells, col) {
                        (Cells::Int(v), Col::Int(a)) => v.push((!a.is_null(row)).then(|| a.value(row))),
                        (Cells::Float(v), Col::Float(a)) => v.push((!a.is_null(row)).then(|| a.value(row))),
                        (Cells::Any(v), Col::Int(a)) => {
                            v.push((!a.is_null(row)).then(|| Value::Bool(a.value(row) != 0)))
                        }
                        (Cells::Any(v), Col::Text(a, json)) => {
                            if a.is_null(row) {
                                v.push(None);
                                continue;
                            }
                            let s: Arc<str> = string_at(a, row)
                                .ok_or_else(|| unusable(&self.label, "a stored text value is not text"))?
                                .into();
                            v.push(Some(if *json { Value::Json(s) } else { Value::Text(s) }));
                        }
                        (cells, _) => cells.push_none(),
                    }
                }
            }
            Ok(())
        })?;
        flush(b, &mut cur, cur_rank);
        Ok(())
    }
}

/// The table: `projid`, `tstamp`, `filename`, loop columns by depth then
/// first appearance, then one column per requested name.
fn finish(runs: &[RunRow], wanted: &[&str], mut b: Builder) -> Table {
    let n = b.codes.len();
    let dict = |f: &dyn Fn(&RunRow) -> &str| -> Vec<Value> { runs.iter().map(|r| Value::Text(f(r).into())).collect() };
    let mut columns = vec![
        Column {
            name: "projid".into(),
            data: ColumnData::Dict { dict: dict(&|r| &r.meta.projid), codes: b.codes.clone() },
        },
        Column {
            name: "tstamp".into(),
            data: ColumnData::Dict { dict: dict(&|r| &r.meta.tstamp), codes: b.codes.clone() },
        },
        Column {
            name: "filename".into(),
            data: ColumnData::Dict { dict: dict(&|r| &r.meta.filename), codes: std::mem::take(&mut b.codes) },
        },
    ];
    let mut loop_cols: Vec<u32> =
        (0..b.loop_names.len() as u32).filter(|&i| b.loop_rank[i as usize].is_some()).collect();
    loop_cols.sort_by_key(|&i| b.loop_rank[i as usize]);
    for id in loop_cols {
        let mut v = std::mem::take(&mut b.loop_values[id as usize]);
        v.resize(n, None);
        columns.push(Column { name: b.loop_names[id as usize].to_string(), data: ColumnData::Int(v) });
    }
    for (k, (name, cells)) in wanted.iter().zip(b.names).enumerate() {
        let data = if b.found[k] { cells.into_data() } else { ColumnData::Values(vec![None; n]) };
        columns.push(Column { name: (*name).to_owned(), data });
    }
    Table { columns }
}

#[cfg(test)]
mod tests {
    //! The plan against the shared pivot on generated runs: nested, sibling
    //! and valued loops, every value type, replays, repeated names, runs
    //! ingested out of `tstamp` order, small query slices.

    use super::*;
    use flor_core::record::{LoopCtx, Record, RecordKind, RunMeta, Source};
    use flor_core::store::{FileProgress, IngestBatch};

    /// A small deterministic generator (64-bit LCG).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Names and the type each is always logged with; `m` mixes types.
    const NAMES: &[&str] = &["a", "b", "c", "d", "e", "m"];

    fn value(rng: &mut Rng, name: &str) -> Value {
        let x = rng.below(1000) as i64;
        match name {
            "a" if x % 97 == 0 => Value::Float(f64::NAN),
            "a" => Value::Float(x as f64 / 7.0),
            "b" => Value::Int(x - 500),
            "c" => Value::Text(format!("t{}", x % 5).into()),
            "d" => Value::Bool(x % 2 == 0),
            "e" => Value::json(&format!("{{\"k\":{x}}}")).unwrap(),
            _ if x % 2 == 0 => Value::Int(x),
            _ => Value::Float(x as f64),
        }
    }

    struct Gen<'a> {
        rng: &'a mut Rng,
        loops: Vec<LoopCtx>,
        records: Vec<Record>,
        line: u64,
        ctx: u32,
    }

    impl Gen<'_> {
        fn logs(&mut self, ctx: Option<u32>, p: u64) {
            for name in NAMES {
                if self.rng.below(100) < p {
                    // Sometimes twice: the last one wins.
                    for _ in 0..1 + (self.rng.below(5) == 0) as u32 {
                        self.line += 1;
                        let value = value(self.rng, name);
                        let kind =
                            if ctx.is_none() && self.rng.below(2) == 0 { RecordKind::Arg } else { RecordKind::Log };
                        self.records.push(Record { line: self.line, ctx, kind, name: (*name).into(), value });
                    }
                }
            }
        }

        fn loop_(&mut self, parent: Option<u32>, depth: u32) {
            let names = ["epoch", "step", "batch", "eval"];
            let name: Arc<str> = names[(depth as usize + self.rng.below(2) as usize) % names.len()].into();
            let first = self.rng.below(3);
            for it in first..first + 1 + self.rng.below(4) {
                let ctx = self.ctx;
                self.ctx += 1;
                self.line += 1;
                let value = (self.rng.below(6) == 0).then(|| format!("v{it}"));
                self.loops.push(LoopCtx { ctx, parent, name: name.clone(), iteration: it, value });
                self.logs(Some(ctx), 30);
                if depth < 3 && self.rng.below(3) > 0 {
                    for _ in 0..1 + self.rng.below(2) {
                        self.loop_(Some(ctx), depth + 1);
                    }
                }
                self.logs(Some(ctx), 15);
            }
        }
    }

    fn populate(store: &mut DuckStore, seed: u64) {
        let mut rng = Rng(seed);
        let runs = 6 + rng.below(4);
        for r in 0..runs {
            // Keys in ingestion order, rows in tstamp order: not the same.
            let meta = RunMeta::new("p", format!("2026-01-01T00:00:{:02}", (r * 7) % runs), "train.py");
            let mut g = Gen { rng: &mut rng, loops: Vec::new(), records: Vec::new(), line: 0, ctx: 0 };
            g.logs(None, 40);
            for _ in 0..g.rng.below(3) {
                g.loop_(None, 0);
            }
            let (loops, records, line) = (g.loops, g.records, g.line);
            let file = format!("{r}.forward");
            let batch = IngestBatch {
                run: &meta,
                source: Source::Forward,
                file: &file,
                progress: FileProgress { offset: line * 10, lines: line },
                loops: &loops,
                records: &records,
                checkpoints: &[],
            };
            store.ingest(&batch).unwrap();
            if rng.below(2) == 0 && !loops.is_empty() {
                let mut replay = Vec::new();
                for line in 1..1 + rng.below(8) {
                    let ctx = (rng.below(4) > 0).then(|| loops[rng.below(loops.len() as u64) as usize].ctx);
                    let name = NAMES[rng.below(NAMES.len() as u64) as usize];
                    replay.push(Record {
                        line,
                        ctx,
                        kind: RecordKind::Log,
                        name: name.into(),
                        value: value(&mut rng, name),
                    });
                }
                let file = format!("{r}.replay");
                let batch = IngestBatch {
                    source: Source::Replay,
                    file: &file,
                    progress: FileProgress { offset: 10, lines: 1 },
                    loops: &[],
                    records: &replay,
                    ..batch
                };
                store.ingest(&batch).unwrap();
            }
        }
    }

    /// Same columns, same storage forms, same cells (NaN equal to NaN).
    fn assert_identical(a: &Table, b: &Table, what: &str) {
        assert_eq!(a.column_names(), b.column_names(), "{what}: columns");
        for (x, y) in a.columns.iter().zip(&b.columns) {
            let same = match (&x.data, &y.data) {
                (ColumnData::Float(p), ColumnData::Float(q)) => {
                    p.len() == q.len()
                        && p.iter().zip(q).all(|(u, v)| match (u, v) {
                            (Some(u), Some(v)) => u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()),
                            _ => u.is_none() && v.is_none(),
                        })
                }
                (ColumnData::Values(p), ColumnData::Values(q)) => {
                    p.len() == q.len()
                        && p.iter().zip(q).all(|(u, v)| match (u, v) {
                            (Some(Value::Float(u)), Some(Value::Float(v))) => u.to_bits() == v.to_bits(),
                            _ => u == v,
                        })
                }
                (p, q) => p == q,
            };
            assert!(same, "{what}: column {} differs:\nplan:   {:?}\nshared: {:?}", x.name, x.data, y.data);
        }
    }

    #[test]
    fn plan_matches_the_shared_pivot() {
        let mut planned = 0;
        for seed in 0..40u64 {
            let mut store = DuckStore::open_in_memory().unwrap();
            store.set_scan_slice(1 + (seed as i64 % 4) * 20);
            populate(&mut store, seed);
            let sets: &[&[&str]] = &[
                &["a"],
                &["b"],
                &["c"],
                &["d"],
                &["e"],
                &["a", "b"],
                &["b", "a", "b"],
                &["e", "d", "c", "b", "a"],
                &["a", "missing"],
                &["missing"],
                &["m", "a"],
            ];
            for names in sets {
                let shared = flor_core::pivot::dataframe(&store, names).unwrap();
                let plan = store.pivot(names).unwrap();
                if names.contains(&"m") {
                    // Mixed types may fall back; the answer must not change.
                    assert_identical(&store.dataframe(names).unwrap(), &shared, &format!("seed {seed} {names:?}"));
                    continue;
                }
                let Some(plan) = plan else { panic!("seed {seed} {names:?}: no plan") };
                assert_identical(&plan, &shared, &format!("seed {seed} {names:?}"));
                planned += usize::from(plan.row_count() > 0);
            }
        }
        assert!(planned > 200, "{planned}");
    }

    #[test]
    fn mixed_types_fall_back() {
        let mut store = DuckStore::open_in_memory().unwrap();
        let meta = RunMeta::new("p", "2026-01-01T00:00:00", "train.py");
        let records = vec![
            Record { line: 1, ctx: None, kind: RecordKind::Log, name: "m".into(), value: Value::Int(1) },
            Record { line: 2, ctx: None, kind: RecordKind::Log, name: "m".into(), value: Value::Float(1.5) },
        ];
        let batch = IngestBatch {
            run: &meta,
            source: Source::Forward,
            file: "f",
            progress: FileProgress { offset: 10, lines: 2 },
            loops: &[],
            records: &records,
            checkpoints: &[],
        };
        store.ingest(&batch).unwrap();
        assert!(store.pivot(&["m"]).unwrap().is_none());
        assert_eq!(store.dataframe(&["m"]).unwrap().cell(0, 3), Some(Value::Float(1.5)));
    }
}
