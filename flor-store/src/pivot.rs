//! The pivot both SQL engines answer `dataframe` with.
//!
//! The answers are those of the shared pivot (`flor_core::pivot`, whose
//! docs state the semantics); only the work is split differently:
//!
//! * The engine selects the records (`scan`, one per slice of runs, about
//!   262,144 records): DuckDB one query per slice with the names, kinds and
//!   run range pushed down (`duckdb/pivot.rs`); SQLite one range of its
//!   clustered `(name_id, run, source, line)` key per name and run
//!   (`sqlite/pivot.rs`). Scans run on their own connections and threads
//!   while this thread pivots the slices before, in order ([`pivot`]).
//! * Rust pivots each run in one pass: the run's records ordered by
//!   `(source, line)` (checked; sorted when not), so the last write wins
//!   and replay values beat forward ones; positions are the distinct
//!   contexts. Rows are the positions that are no ancestor of another, a
//!   missing value is taken from the nearest enclosing position that has
//!   one (else run level), and cells go straight into typed columns
//!   (`ColumnData::Int`, `Float`, `Dict` codes). Work that depends on a
//!   row's loop span (its ancestors, loop columns, inherited values) is
//!   done once per group of rows sharing the span.
//! * Loop values (`<loop>_value` columns) cost nothing for loops without
//!   any, nor for values that are their iteration index's text (what a
//!   `range()` loop records: marked [`INDEX`] when the spans are read, the
//!   text rebuilt from the loop column if the column is shown). Other
//!   values: a valued iteration is a span of its own, so a group of rows
//!   in one records a stretch `(first row, rows, text)` (a group without a
//!   value in a loop that has some, a stretch without text) and whether
//!   the text differs from the index; the column is made at the end, when
//!   one did.
//! * A selection ([`PivotFilter`]) is applied before: only the selected
//!   runs are scanned, and records in loop iterations it leaves out are
//!   dropped before a run's positions are formed ([`IterFilter`]).
//!
//! A name whose stored values do not all share one type falls back to the
//! shared pivot for the whole call (its column's storage depends on the
//! order values are met in), as does `dataframe` with no names.

use std::collections::HashMap;
use std::sync::Arc;

use flor_core::select::{IterFilter, IterSelect, PivotFilter, SpanRef};
use flor_core::store::{RunKey, RunRow, Store, StoreError, StoreResult};
use flor_core::table::{Column, ColumnData, Nullable, Table};
use flor_core::value::{Value, ValueType};

use crate::bigvec;
use crate::rows::unusable;

pub(crate) const NONE: u32 = u32::MAX;

/// [`Node::value`] of an iteration whose value is its index's text.
const INDEX: u32 = u32::MAX - 1;

/// Records per scan query at most: DuckDB materializes a query's result
/// before it is read, beside the table being built.
pub(crate) const PIVOT_SLICE_RECORDS: i64 = 1 << 18;

/// The longest parent chain followed (a cycle in corrupt data).
const MAX_DEPTH: usize = 10_000;

/// A loop span of one run. Packed to 4-byte alignment: 28 bytes, not 32
/// (a run recorded from Python has a span per iteration, each valued).
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
pub(crate) struct Node {
    pub(crate) first_ctx: u32,
    pub(crate) count: u32,
    pub(crate) parent: u32,
    pub(crate) loop_id: u32,
    pub(crate) first_iteration: u64,
    /// The iteration's value: an index into [`Builder::texts`] (`NONE`:
    /// none, [`INDEX`]: the iteration index's text; a valued span has one
    /// iteration).
    pub(crate) value: u32,
}

/// A run's loop spans, sorted by first context.
#[derive(Default)]
pub(crate) struct Spans(pub(crate) Vec<Node>);

impl Spans {
    /// The index of the span holding `ctx`.
    fn find(&self, ctx: u32) -> Option<usize> {
        if ctx == NONE {
            return None;
        }
        let i = self.0.partition_point(|s| s.first_ctx <= ctx).checked_sub(1)?;
        let s = &self.0[i];
        (ctx - s.first_ctx < s.count).then_some(i)
    }

    /// The enclosing context of `ctx` (`NONE` at the top or outside spans).
    fn parent(&self, ctx: u32) -> u32 {
        self.find(ctx).map_or(NONE, |i| self.0[i].parent)
    }
}

/// One record of a slice: its run (index in `runs()`), context (`NONE` at
/// run level), name (index into the requested names), winner key
/// (`source`, then `line`) and value (see [`Slice::cell`]).
#[derive(Clone, Copy)]
pub(crate) struct Rec {
    pub(crate) rank: u32,
    pub(crate) ctx: u32,
    pub(crate) k: u32,
    pub(crate) key: i64,
    pub(crate) v: u64,
}

/// Output cells of one name, in the form its stored type decides.
enum Cells {
    Int(Nullable<i64>),
    Float(Nullable<f64>),
    Any(Vec<Option<Value>>),
}

/// How a name's values are stored in [`Rec::v`].
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Form {
    /// `i64` bits.
    Int,
    /// `f64` bits.
    Float,
    /// 0 or 1.
    Bool,
    /// An index into the slice's texts.
    Text,
    /// The same, JSON.
    Json,
}

impl Form {
    pub(crate) fn of(t: ValueType) -> Form {
        match t {
            ValueType::Int => Form::Int,
            ValueType::Float => Form::Float,
            ValueType::Bool => Form::Bool,
            ValueType::Text => Form::Text,
            ValueType::Json => Form::Json,
        }
    }
}

impl Cells {
    fn for_form(f: Form, rows: usize) -> Cells {
        match f {
            Form::Int => Cells::Int(Nullable::from_values(bigvec::with_capacity(rows))),
            Form::Float => Cells::Float(Nullable::from_values(bigvec::with_capacity(rows))),
            _ => Cells::Any(Vec::new()),
        }
    }

    /// Appends `n` cells holding `v` (a [`Rec::v`] of form `f`, or NULL).
    fn push_n(&mut self, v: Option<u64>, f: Form, texts: &[Arc<str>], n: usize) {
        match self {
            Cells::Int(c) => c.push_n(v.map(|v| v as i64), n),
            Cells::Float(c) => c.push_n(v.map(f64::from_bits), n),
            Cells::Any(c) => {
                let value = v.map(|v| match f {
                    Form::Bool => Value::Bool(v != 0),
                    Form::Int => Value::Int(v as i64),
                    Form::Float => Value::Float(f64::from_bits(v)),
                    Form::Text => Value::Text(Arc::clone(&texts[v as usize])),
                    Form::Json => Value::Json(Arc::clone(&texts[v as usize])),
                });
                c.extend(std::iter::repeat_n(value, n));
            }
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

/// One run's positions: distinct contexts in ascending order (`NONE`, run
/// level, last) with the winning value of each name.
#[derive(Default)]
struct Positions {
    ctxs: Vec<u32>,
    /// `ctxs.len() × names` cells, position-major.
    vals: Vec<Option<u64>>,
    names: usize,
}

impl Positions {
    fn index(&self, ctx: u32) -> Option<usize> {
        self.ctxs.binary_search(&ctx).ok()
    }

    fn get(&self, pos: usize, k: usize) -> Option<u64> {
        self.vals[pos * self.names + k]
    }
}

/// The result being built, a group of rows at a time.
struct Builder {
    /// At most this many rows (the requested names' records): room is
    /// made once, so large tables grow without copies.
    rows: usize,
    /// Per requested name: how its values are stored (`None`: no records).
    forms: Vec<Option<Form>>,
    /// Per row: the run's index in `runs()`.
    codes: Vec<u32>,
    loop_names: Vec<Arc<str>>,
    loop_ids: HashMap<Arc<str>, u32>,
    /// Per loop id: its column, filled up to the last row that has it.
    loop_values: Vec<Nullable<i64>>,
    /// Per loop id: (smallest depth, order of first appearance).
    loop_rank: Vec<Option<(usize, usize)>>,
    /// The loop spans' value texts, one per span whose value is not its
    /// index.
    texts: Vec<Arc<str>>,
    /// Per loop id: whether any of its spans has a value.
    has_values: Vec<bool>,
    /// Per loop id with values: its rows whose value is not the index's,
    /// as stretches `(first row, rows, text)` in row order (text `NONE`:
    /// no value).
    stretches: Vec<Vec<(usize, usize, u32)>>,
    /// Per loop id: whether a row's value is not its iteration index's
    /// text (the `<loop>_value` column is shown).
    differs: Vec<bool>,
    seen: usize,
    /// Per requested name: its column, and whether any cell has a value.
    names: Vec<Cells>,
    found: Vec<bool>,
    // Scratch, reused run to run and group to group:
    /// position numbers by context;
    slot: Vec<u32>,
    /// the run's positions;
    pos: Positions,
    /// the contexts enclosing a position (sorted);
    ancestors: Vec<u32>,
    /// a group's loop chain, innermost first;
    chain: Vec<Node>,
    /// a group's loop columns, their iteration (`None`: the row's own)
    /// and value (`NONE`: none);
    assigned: Vec<(u32, Option<u64>, u32)>,
    /// Per run (index in the request's runs): its iteration filter, when
    /// the selection has one.
    filters: Vec<Option<IterFilter>>,
    /// the records of a run its filter keeps.
    kept: Vec<Rec>,
}

impl Builder {
    /// An empty result for names whose values are stored as `forms` (`None`:
    /// no records), with room for `rows` rows.
    fn new(rows: usize, forms: Vec<Option<Form>>) -> Builder {
        Builder {
            rows,
            codes: bigvec::with_capacity(rows),
            loop_names: Vec::new(),
            loop_ids: HashMap::new(),
            loop_values: Vec::new(),
            loop_rank: Vec::new(),
            texts: Vec::new(),
            has_values: Vec::new(),
            stretches: Vec::new(),
            differs: Vec::new(),
            seen: 0,
            names: forms
                .iter()
                .map(|f| Cells::for_form(f.unwrap_or(Form::Int), if f.is_some() { rows } else { 0 }))
                .collect(),
            found: vec![false; forms.len()],
            forms,
            slot: Vec::new(),
            pos: Positions::default(),
            ancestors: Vec::new(),
            chain: Vec::new(),
            assigned: Vec::new(),
            filters: Vec::new(),
            kept: Vec::new(),
        }
    }

    fn loop_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.loop_ids.get(name) {
            return id;
        }
        let id = self.loop_names.len() as u32;
        self.loop_names.push(Arc::clone(name));
        self.loop_ids.insert(Arc::clone(name), id);
        self.loop_values.push(Nullable::from_values(bigvec::with_capacity(self.rows)));
        self.loop_rank.push(None);
        self.has_values.push(false);
        self.stretches.push(Vec::new());
        self.differs.push(false);
        id
    }

    /// Emits the rows of run `run` (its index in `runs()`) from its records
    /// (ordered by winner key): its positions, the ancestors among them,
    /// then the rows, a group at a time.
    fn run(&mut self, run: u32, recs: &[Rec], spans: &Spans, texts: &[Arc<str>]) {
        if let Some(Some(f)) = self.filters.get(run as usize) {
            if !f.keeps_all() {
                // Records in iterations the selection leaves out go; a run
                // whose loop records all go has no rows.
                let mut kept = std::mem::take(&mut self.kept);
                kept.clear();
                kept.extend(recs.iter().filter(|r| r.ctx == NONE || f.keeps(r.ctx)));
                let in_loops = |rs: &[Rec]| rs.iter().any(|r| r.ctx != NONE);
                if !in_loops(recs) || in_loops(&kept) {
                    self.run_records(run, &kept, spans, texts);
                }
                self.kept = kept;
                return;
            }
        }
        self.run_records(run, recs, spans, texts);
    }

    fn run_records(&mut self, run: u32, recs: &[Rec], spans: &Spans, texts: &[Arc<str>]) {
        if recs.is_empty() {
            return;
        }
        self.positions(recs);
        self.ancestors(spans);
        let first_row = self.codes.len();
        self.row_groups(run, spans, texts);
        if self.codes.len() == first_row {
            // No positions in loops: one run-level row.
            self.run_level_row(run, texts);
        }
    }

    /// Fills `self.pos` from a run's records.
    fn positions(&mut self, recs: &[Rec]) {
        // Positions: the distinct contexts, ascending, numbered through a
        // dense map over the run's context range (records come in winner
        // order, so the last write of a (context, name) wins).
        let nk = self.names.len();
        let max_ctx = recs.iter().map(|r| r.ctx).filter(|&c| c != NONE).max();
        let has_run_level = recs.iter().any(|r| r.ctx == NONE);
        let pos = &mut self.pos;
        pos.ctxs.clear();
        pos.vals.clear();
        pos.names = nk;
        let slot = &mut self.slot;
        slot.clear();
        if let Some(m) = max_ctx.filter(|&m| (m as usize) <= 4 * recs.len() + 4096) {
            slot.resize(m as usize + 1, NONE);
            for r in recs.iter().filter(|r| r.ctx != NONE) {
                slot[r.ctx as usize] = 0;
            }
            for (ctx, s) in slot.iter_mut().enumerate() {
                if *s != NONE {
                    *s = pos.ctxs.len() as u32;
                    pos.ctxs.push(ctx as u32);
                }
            }
        } else if max_ctx.is_some() {
            // Sparse contexts (unusual): sorted instead.
            pos.ctxs.extend(recs.iter().map(|r| r.ctx).filter(|&c| c != NONE));
            pos.ctxs.sort_unstable();
            pos.ctxs.dedup();
        }
        if has_run_level {
            pos.ctxs.push(NONE);
        }
        pos.vals.resize(pos.ctxs.len() * nk, None);
        for r in recs {
            let p = match slot.get(r.ctx as usize) {
                Some(&p) if r.ctx != NONE => p as usize,
                _ => match pos.ctxs.binary_search(&r.ctx) {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            pos.vals[p * nk + r.k as usize] = Some(r.v);
        }
    }

    /// Fills `self.ancestors` (sorted) with the contexts enclosing the
    /// run's positions.
    fn ancestors(&mut self, spans: &Spans) {
        // Ancestors of any position are no rows.
        self.ancestors.clear();
        let mut last_parent = NONE;
        let mut span_at = 0usize;
        for &ctx in self.pos.ctxs.iter().filter(|&&c| c != NONE) {
            let Some(s) = span_of(spans, &mut span_at, ctx) else { continue };
            let mut p = spans.0[s].parent;
            if p == last_parent {
                continue;
            }
            last_parent = p;
            let mut depth = 0;
            while p != NONE && depth <= MAX_DEPTH {
                self.ancestors.push(p);
                p = spans.parent(p);
                depth += 1;
            }
        }
        self.ancestors.sort_unstable();
        self.ancestors.dedup();
    }

    /// Emits the run's rows in loops: its positions that are no ancestor,
    /// in groups of consecutive positions in one span.
    fn row_groups(&mut self, run: u32, spans: &Spans, texts: &[Arc<str>]) {
        let mut span_at = 0usize;
        let mut anc_at = 0usize;
        let mut i = 0;
        let n = self.pos.ctxs.len();
        let mut group: Vec<u32> = Vec::new();
        while i < n {
            let ctx = self.pos.ctxs[i];
            if ctx == NONE {
                break;
            }
            if is_ancestor(&self.ancestors, &mut anc_at, ctx) {
                i += 1;
                continue;
            }
            let s = span_of(spans, &mut span_at, ctx);
            // The group: this row and the next rows in the same span.
            group.clear();
            group.push(i as u32);
            let mut j = i + 1;
            if let Some(s) = s {
                let end = spans.0[s].first_ctx as u64 + spans.0[s].count as u64;
                while j < n && (self.pos.ctxs[j] as u64) < end {
                    if !is_ancestor(&self.ancestors, &mut anc_at, self.pos.ctxs[j]) {
                        group.push(j as u32);
                    }
                    j += 1;
                }
            }
            self.rows(run, s, &group, spans, texts);
            i = j;
        }
    }

    /// Emits the run's one row when none of its positions is in a loop:
    /// its run-level values.
    fn run_level_row(&mut self, run: u32, texts: &[Arc<str>]) {
        let own = (self.pos.ctxs.last() == Some(&NONE)).then(|| self.pos.ctxs.len() - 1);
        self.codes.push(run);
        for k in 0..self.names.len() {
            let v = own.and_then(|p| self.pos.get(p, k));
            self.push_value(k, v, texts, 1);
        }
    }

    fn push_value(&mut self, k: usize, v: Option<u64>, texts: &[Arc<str>], n: usize) {
        self.found[k] |= v.is_some();
        let form = self.forms[k].unwrap_or(Form::Int);
        self.names[k].push_n(v, form, texts, n);
    }

    /// Emits rows for positions `group` (indices into `self.pos`), all in
    /// span `s` (or one position outside any span): the loop chain, its
    /// loop columns, then the values.
    fn rows(&mut self, run: u32, s: Option<usize>, group: &[u32], spans: &Spans, texts: &[Arc<str>]) {
        let r0 = self.codes.len();
        self.codes.extend(std::iter::repeat_n(run, group.len()));
        let mut chain = std::mem::take(&mut self.chain);
        let parent = loop_chain(&mut chain, s, spans);
        self.rank_loops(&chain);
        self.loop_columns(r0, group, &chain);
        self.chain = chain;
        self.values(group, parent, spans, texts);
    }

    /// Ranks the loops of a group's `chain` (innermost first) for the
    /// column order.
    #[inline]
    fn rank_loops(&mut self, chain: &[Node]) {
        // Loop columns: ranks as the shared pivot computes them.
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

    /// Fills the loop columns of the group's rows (the first at row `r0`)
    /// from its `chain` (innermost first).
    #[inline]
    fn loop_columns(&mut self, r0: usize, group: &[u32], chain: &[Node]) {
        let len = group.len();
        // Values per loop column: the outermost of two same-named loops
        // wins, as in the shared pivot. `None` marks the row's own loop
        // (its iteration varies by row).
        self.assigned.clear();
        for (d, n) in chain.iter().enumerate() {
            let v = if d == 0 { None } else { Some(n.first_iteration) };
            match self.assigned.iter_mut().find(|(l, _, _)| *l == n.loop_id) {
                Some(a) => *a = (n.loop_id, v, n.value),
                None => self.assigned.push((n.loop_id, v, n.value)),
            }
        }
        for a in 0..self.assigned.len() {
            let (l, v, value) = self.assigned[a];
            if value != INDEX && self.has_values[l as usize] {
                self.value_rows(r0, group, l, v, value, chain[0]);
            }
            let col = &mut self.loop_values[l as usize];
            col.pad_to(r0);
            match v {
                Some(it) => col.push_n(Some(it as i64), len),
                None => {
                    let own = chain[0];
                    col.extend(group.iter().map(|&p| {
                        let ctx = self.pos.ctxs[p as usize];
                        Some((own.first_iteration + u64::from(ctx - own.first_ctx)) as i64)
                    }));
                }
            }
        }
    }

    /// Notes that the group's rows (the first at row `r0`) have `value`
    /// (a text or `NONE`) in loop `l`, at iteration `it` (`None`: each
    /// row's own, in span `own`), and whether it differs from the index.
    #[cold]
    fn value_rows(&mut self, r0: usize, group: &[u32], l: u32, it: Option<u64>, value: u32, own: Node) {
        let l = l as usize;
        let stretches = &mut self.stretches[l];
        match stretches.last_mut() {
            Some(last) if last.0 + last.1 == r0 && last.2 == value => last.1 += group.len(),
            _ => stretches.push((r0, group.len(), value)),
        }
        if value == NONE || self.differs[l] {
            return;
        }
        let text = &self.texts[value as usize];
        self.differs[l] = match it {
            Some(it) => !flor_core::pivot::is_index_text(text, it),
            None => group.iter().any(|&p| {
                let ctx = self.pos.ctxs[p as usize];
                !flor_core::pivot::is_index_text(text, own.first_iteration + u64::from(ctx - own.first_ctx))
            }),
        };
    }

    /// Fills the value columns of the group's rows (`parent`: the context
    /// enclosing the group's span).
    #[inline]
    fn values(&mut self, group: &[u32], parent: u32, spans: &Spans, texts: &[Arc<str>]) {
        let len = group.len();
        // Values: at the position, else the nearest enclosing position
        // that has one, else run level; the inherited one is the same for
        // the whole group.
        for k in 0..self.names.len() {
            let mut inherited: Option<Option<u64>> = None;
            let mut at = 0;
            while at < len {
                let v = self.pos.get(group[at] as usize, k);
                if v.is_some() {
                    // A stretch of rows with their own values.
                    let mut end = at + 1;
                    while end < len && self.pos.get(group[end] as usize, k).is_some() {
                        end += 1;
                    }
                    self.found[k] = true;
                    let form = self.forms[k].unwrap_or(Form::Int);
                    match &mut self.names[k] {
                        Cells::Int(c) => {
                            c.extend(group[at..end].iter().map(|&p| self.pos.get(p as usize, k).map(|v| v as i64)))
                        }
                        Cells::Float(c) => {
                            c.extend(group[at..end].iter().map(|&p| self.pos.get(p as usize, k).map(f64::from_bits)))
                        }
                        cells => {
                            for &p in &group[at..end] {
                                cells.push_n(self.pos.get(p as usize, k), form, texts, 1);
                            }
                        }
                    }
                    at = end;
                } else {
                    let mut end = at + 1;
                    while end < len && self.pos.get(group[end] as usize, k).is_none() {
                        end += 1;
                    }
                    let v = *inherited.get_or_insert_with(|| self.inherited(parent, k, spans));
                    self.push_value(k, v, texts, end - at);
                    at = end;
                }
            }
        }
    }

    /// Name `k`'s value at the nearest position enclosing `ctx` (itself
    /// included) that has one, else at run level.
    fn inherited(&self, mut ctx: u32, k: usize, spans: &Spans) -> Option<u64> {
        for _ in 0..=MAX_DEPTH {
            if let Some(v) = self.pos.index(ctx).and_then(|p| self.pos.get(p, k)) {
                return Some(v);
            }
            if ctx == NONE {
                return None;
            }
            ctx = spans.parent(ctx);
        }
        None
    }
}

/// Whether `ctx` is one of the sorted `ancestors`, searching forward from
/// `*at` (contexts come in ascending order); `*at` keeps the place.
#[inline]
fn is_ancestor(ancestors: &[u32], at: &mut usize, ctx: u32) -> bool {
    while *at < ancestors.len() && ancestors[*at] < ctx {
        *at += 1;
    }
    ancestors.get(*at) == Some(&ctx)
}

/// Fills `chain` with span `s`'s loop chain: the span's own loop, then its
/// ancestors' (innermost first), each as the one iteration enclosing the
/// span; returns the span's parent context (`NONE` without a span).
#[inline]
fn loop_chain(chain: &mut Vec<Node>, s: Option<usize>, spans: &Spans) -> u32 {
    chain.clear();
    let mut parent = NONE;
    if let Some(s) = s {
        let node = spans.0[s];
        chain.push(node);
        parent = node.parent;
        let mut p = parent;
        while let Some(a) = spans.find(p) {
            let a = spans.0[a];
            chain.push(Node {
                first_ctx: p,
                count: 1,
                first_iteration: a.first_iteration + u64::from(p - a.first_ctx),
                ..a
            });
            p = a.parent;
            if chain.len() > MAX_DEPTH {
                break;
            }
        }
    }
    parent
}

/// The span holding `ctx`, searching forward from `*at` (contexts come in
/// ascending order); `*at` keeps the place.
fn span_of(spans: &Spans, at: &mut usize, ctx: u32) -> Option<usize> {
    let v = &spans.0;
    while *at < v.len() && v[*at].first_ctx as u64 + v[*at].count as u64 <= ctx as u64 {
        *at += 1;
    }
    let s = v.get(*at)?;
    (s.first_ctx <= ctx).then_some(*at)
}

/// A slice's records, each run's in winner-key order; buffers are reused
/// slice to slice.
#[derive(Default)]
pub(crate) struct SliceRecs {
    pub(crate) recs: Vec<Rec>,
    pub(crate) texts: Vec<Arc<str>>,
}

impl Builder {
    /// Pivots a slice's runs.
    fn slice(&mut self, buf: &SliceRecs, spans: &[Spans]) {
        let recs = &buf.recs;
        let mut at = 0;
        while at < recs.len() {
            let rank = recs[at].rank;
            let mut end = at + 1;
            while end < recs.len() && recs[end].rank == rank {
                end += 1;
            }
            self.run(rank, &recs[at..end], &spans[rank as usize], &buf.texts);
            at = end;
        }
    }
}

/// The table: `projid`, `tstamp`, `filename`, loop columns by depth then
/// first appearance, then one column per requested name.
fn finish(runs: &[RunRow], wanted: &[&str], mut b: Builder) -> Table {
    let n = b.codes.len();
    let mut columns = flor_core::pivot::run_columns(runs, std::mem::take(&mut b.codes));
    let mut loop_cols: Vec<u32> =
        (0..b.loop_names.len() as u32).filter(|&i| b.loop_rank[i as usize].is_some()).collect();
    loop_cols.sort_by_key(|&i| b.loop_rank[i as usize]);
    let col_names: Vec<&str> = loop_cols.iter().map(|&id| &*b.loop_names[id as usize]).collect();
    let taken = |name: &str| col_names.contains(&name) || wanted.contains(&name);
    for &id in &loop_cols {
        let id = id as usize;
        let mut v = std::mem::take(&mut b.loop_values[id]);
        v.pad_to(n);
        let values = match b.differs[id] {
            true => flor_core::pivot::value_column_name(&b.loop_names[id], &taken)
                .map(|name| Column { name, data: value_cells(&b.stretches[id], &b.texts, &v, n) }),
            false => None,
        };
        columns.push(Column { name: b.loop_names[id].to_string(), data: ColumnData::Int(v) });
        columns.extend(values);
    }
    for (k, (name, cells)) in wanted.iter().zip(b.names).enumerate() {
        let data = if b.found[k] { cells.into_data() } else { ColumnData::Values(vec![None; n]) };
        columns.push(Column { name: (*name).to_owned(), data });
    }
    Table { columns }
}

/// A loop's `<loop>_value` column of `n` rows: its `stretches`' texts
/// (NULL for a stretch without), elsewhere the text of the row's
/// iteration `index` (the value recorded there), NULL where it has none.
fn value_cells(stretches: &[(usize, usize, u32)], texts: &[Arc<str>], index: &Nullable<i64>, n: usize) -> ColumnData {
    let mut col = flor_core::pivot::ValueColumn::default();
    let mut at = 0;
    for &(r0, len, value) in stretches {
        index_cells(&mut col, index, at, r0);
        col.push(texts.get(value as usize).map(|t| &**t), len);
        at = r0 + len;
    }
    index_cells(&mut col, index, at, n);
    col.finish()
}

/// Rows `from..to` of a value column that hold their iteration index's
/// text, a stretch of equal indices at a time.
fn index_cells(col: &mut flor_core::pivot::ValueColumn, index: &Nullable<i64>, from: usize, to: usize) {
    let mut r = from;
    while r < to {
        let i = index.get(r);
        let mut end = r + 1;
        while end < to && index.get(end) == i {
            end += 1;
        }
        col.push_index(i, end - r);
        r = end;
    }
}

/// An engine's `dataframe_filtered`: its own pivot (`fast`) where it
/// applies (names given, none a `tensor:` statistic, whose values come from
/// `scan_tensors`, and `fast` answers), else the shared pivot.
pub(crate) fn dataframe_with(
    store: &dyn Store,
    names: &[&str],
    filter: &PivotFilter,
    fast: impl FnOnce() -> StoreResult<Option<Table>>,
) -> StoreResult<Table> {
    let tensors = names.iter().any(|n| flor_core::store::TensorName::parse(n).is_some());
    if !names.is_empty() && !tensors {
        if let Some(table) = fast()? {
            return Ok(table);
        }
    }
    flor_core::pivot::dataframe_filtered(store, names, filter)
}

/// What a pivot is asked: the selected runs (in `runs()` order), the
/// requested names (each once) and how each one's values are stored
/// (`None`: no records), at most `rows` records in all.
pub(crate) struct Request<'a> {
    pub(crate) runs: Vec<RunRow>,
    pub(crate) wanted: Vec<&'a str>,
    pub(crate) forms: Vec<Option<Form>>,
    pub(crate) rows: usize,
}

impl<'a> Request<'a> {
    /// The selected runs and each requested name once.
    pub(crate) fn new(store: &dyn Store, names: &[&'a str], filter: &PivotFilter) -> StoreResult<Request<'a>> {
        let mut runs = store.runs()?;
        runs.retain(|r| filter.keeps_run(r.key));
        let mut wanted: Vec<&str> = Vec::new();
        for n in names {
            if !wanted.contains(n) {
                wanted.push(n);
            }
        }
        Ok(Request { runs, wanted, forms: Vec::new(), rows: 0 })
    }
}

/// A scan on the calling thread: the records of `runs[start..end]` into
/// the buffer (cleared first), each run's in winner-key order.
pub(crate) type InlineScan<'a> = &'a mut dyn FnMut(&[RunRow], (usize, usize), &mut SliceRecs) -> StoreResult<()>;

/// The same, on a thread of its own.
pub(crate) type Scan<'s> = Box<dyn FnMut(&[RunRow], (usize, usize), &mut SliceRecs) -> StoreResult<()> + Send + 's>;

/// The pivot of `req`: loop spans from `store`, records from the scans,
/// a slice of at most `slice_records` records at a time. With one slice,
/// or `inline`, the calling thread scans with `inline`; otherwise each of
/// `scans` runs on its own thread, taking every `scans.len()`-th slice,
/// while this thread pivots them in order.
pub(crate) fn pivot<'s>(
    store: &dyn Store,
    req: Request<'_>,
    filter: &PivotFilter,
    slice_records: i64,
    inline: Option<InlineScan<'_>>,
    scans: impl FnOnce() -> StoreResult<Vec<Scan<'s>>>,
) -> StoreResult<Table> {
    let mut b = Builder::new(req.rows, req.forms);
    let runs = &req.runs;
    if b.forms.iter().any(Option::is_some) && !runs.is_empty() {
        let (spans, filters) = pivot_spans(store, runs, &filter.iters, &mut b)?;
        b.filters = filters;
        let slices = slices(runs, slice_records);
        match inline {
            Some(scan) => {
                let mut buf = SliceRecs::default();
                for s in slices {
                    scan(runs, s, &mut buf)?;
                    b.slice(&buf, &spans);
                }
            }
            None => threaded(runs, slices, &spans, &mut b, scans()?)?,
        }
    }
    Ok(finish(runs, &req.wanted, b))
}

/// Runs `scans` on threads of their own (scan `i` reads slices `i`,
/// `i + n`, ...) and pivots the slices in order into `b`; buffers go back
/// to their scan to be reused.
fn threaded(
    runs: &[RunRow],
    slices: Vec<(usize, usize)>,
    spans: &[Spans],
    b: &mut Builder,
    scans: Vec<Scan<'_>>,
) -> StoreResult<()> {
    let n = scans.len().max(1);
    std::thread::scope(|scope| -> StoreResult<()> {
        let mut inbox = Vec::with_capacity(n);
        let mut outbox = Vec::with_capacity(n);
        for (i, mut scan) in scans.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<StoreResult<SliceRecs>>(1);
            let (back, reuse) = std::sync::mpsc::channel::<SliceRecs>();
            let mine: Vec<(usize, usize)> = slices.iter().copied().skip(i).step_by(n).collect();
            scope.spawn(move || {
                for slice in mine {
                    let mut buf = reuse.try_recv().unwrap_or_default();
                    let r = scan(runs, slice, &mut buf).map(|()| buf);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
            inbox.push(rx);
            outbox.push(back);
        }
        for i in 0..slices.len() {
            let buf = inbox[i % n].recv().map_err(|_| StoreError::Backend {
                backend: "pivot",
                message: "a scan thread stopped before its last slice".into(),
                source: None,
            })??;
            b.slice(&buf, spans);
            let _ = outbox[i % n].send(buf);
        }
        Ok(())
    })
}

/// Every run's loop spans (by index in `runs`), loop names interned in
/// `b`, and each run's iteration filter when `iters` selects any.
fn pivot_spans(
    store: &dyn Store,
    runs: &[RunRow],
    iters: &[IterSelect],
    b: &mut Builder,
) -> StoreResult<(Vec<Spans>, Vec<Option<IterFilter>>)> {
    let keys: Vec<RunKey> = runs.iter().map(|r| r.key).collect();
    let index: HashMap<RunKey, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut spans: Vec<Spans> = (0..runs.len()).map(|_| Spans::default()).collect();
    let mut loop_err = None;
    store.scan_loops(&keys, &mut |run, s| {
        let Some(&i) = index.get(&run) else { return };
        let loop_id = b.loop_id(&s.name);
        if s.first_ctx.checked_add(s.count).is_none() && loop_err.is_none() {
            loop_err = Some(unusable(store.backend(), "a loop span is out of range"));
        }
        let value = match &s.value {
            None => NONE,
            Some(t) if s.count == 1 && flor_core::pivot::is_index_text(t, s.first_iteration) => INDEX,
            Some(t) => {
                b.texts.push(t.as_str().into());
                (b.texts.len() - 1) as u32
            }
        };
        b.has_values[loop_id as usize] |= value != NONE;
        spans[i].0.push(Node {
            first_ctx: s.first_ctx,
            count: s.count,
            parent: s.parent.unwrap_or(NONE),
            loop_id,
            first_iteration: s.first_iteration,
            value,
        });
    })?;
    if let Some(e) = loop_err {
        return Err(e);
    }
    for s in &mut spans {
        s.0.sort_by_key(|n| n.first_ctx);
    }
    let filters = spans
        .iter()
        .map(|s| {
            (!iters.is_empty()).then(|| {
                let refs: Vec<SpanRef<'_>> =
                    s.0.iter()
                        .map(|n| SpanRef {
                            first_ctx: n.first_ctx,
                            count: n.count,
                            parent: (n.parent != NONE).then_some(n.parent),
                            name: &b.loop_names[n.loop_id as usize],
                            first_iteration: n.first_iteration,
                        })
                        .collect();
                IterFilter::new(iters, &refs)
            })
        })
        .collect();
    Ok((spans, filters))
}

/// Index ranges of `runs` holding about `limit` records each.
fn slices(runs: &[RunRow], limit: i64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0i64);
    for (i, r) in runs.iter().enumerate() {
        let n = r.records as i64;
        if i > start && acc + n > limit {
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

#[cfg(test)]
mod tests {
    //! Each engine's pivot against the shared pivot on generated runs:
    //! nested, sibling and valued loops, every value type, replays, repeated
    //! names, runs ingested out of `tstamp` order, small query slices (and
    //! so several scan threads), selections of runs and iterations.

    use super::*;
    use crate::SqliteStore;
    use flor_core::record::{LoopCtx, Record, RecordKind, RunMeta, Source};
    use flor_core::select::IterSelect;
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
            // Values: none, the indices (as `range()` records them), some
            // other text, some indices.
            let mode = self.rng.below(4);
            for it in first..first + 1 + self.rng.below(4) {
                let ctx = self.ctx;
                self.ctx += 1;
                self.line += 1;
                let value = match mode {
                    0 => None,
                    1 => Some(it.to_string()),
                    2 => (self.rng.below(3) == 0).then(|| format!("v{it}")),
                    _ => (self.rng.below(2) == 0).then(|| it.to_string()),
                };
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

    fn populate(store: &mut dyn Store, seed: u64) {
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
                checks: &[],
            };
            if rng.below(3) == 0 && records.len() > 1 {
                // Ingested in two batches, the later lines first: the
                // table's order is then not the records' order.
                let half = records.len() / 2;
                store.ingest(&IngestBatch { records: &records[half..], ..batch }).unwrap();
                store.ingest(&IngestBatch { records: &records[..half], loops: &[], ..batch }).unwrap();
            } else {
                store.ingest(&batch).unwrap();
            }
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
                        && p.iter().zip(q.iter()).all(|(u, v)| match (u, v) {
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

    const SETS: &[&[&str]] = &[
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

    /// Selections to try on a store: none, a few runs, loop iterations,
    /// both.
    fn filters(store: &dyn Store, rng: &mut Rng) -> Vec<PivotFilter> {
        let keys: Vec<RunKey> = store.runs().unwrap().iter().map(|r| r.key).collect();
        let some: Vec<RunKey> = keys.iter().copied().filter(|_| rng.below(2) == 0).collect();
        let iters = |s: &[&str]| s.iter().map(|x| x.parse::<IterSelect>().unwrap()).collect::<Vec<_>>();
        vec![
            PivotFilter::default(),
            PivotFilter { runs: Some(some.clone()), iters: Vec::new() },
            PivotFilter { runs: Some(Vec::new()), iters: Vec::new() },
            PivotFilter { runs: None, iters: iters(&["epoch=last"]) },
            PivotFilter { runs: None, iters: iters(&["step=0,2", "batch=none"]) },
            PivotFilter { runs: Some(some), iters: iters(&["eval=1-2", "epoch=last"]) },
        ]
    }

    /// Compares `fast` (an engine's own pivot, `None`: it falls back) with
    /// the shared pivot on `store` for every name set and selection;
    /// returns how many non-empty answers the engine's pivot gave, and how
    /// many of them had a `<loop>_value` column.
    fn compare<S: Store>(
        store: &S,
        seed: u64,
        fast: &dyn Fn(&[&str], &PivotFilter) -> Option<Table>,
    ) -> (usize, usize) {
        let mut rng = Rng(seed ^ 0x5eed);
        let (mut answered, mut valued) = (0, 0);
        for f in filters(store, &mut rng) {
            for names in SETS {
                let what = format!("seed {seed} {names:?} {f:?}");
                let shared = flor_core::pivot::dataframe_filtered(store, names, &f).unwrap();
                assert_identical(&store.dataframe_filtered(names, &f).unwrap(), &shared, &what);
                if names.contains(&"m") {
                    continue; // mixed types may fall back
                }
                let Some(plan) = fast(names, &f) else { panic!("{what}: no plan") };
                assert_identical(&plan, &shared, &what);
                answered += usize::from(plan.row_count() > 0);
                valued += usize::from(plan.column_names().iter().any(|c| c.ends_with("_value")));
            }
        }
        (answered, valued)
    }

    #[test]
    fn sqlite_matches_the_shared_pivot() {
        let (mut memory, mut file, mut valued) = (0, 0, 0);
        for seed in 0..30u64 {
            let mut store = SqliteStore::open_in_memory().unwrap();
            populate(&mut store, seed);
            let (answered, with_values) = compare(&store, seed, &|n, f| store.pivot(n, f).unwrap());
            memory += answered;
            valued += with_values;
            // A file: slices of a few records read by several threads.
            let dir = tempfile::tempdir().unwrap();
            let mut store = SqliteStore::open(&dir.path().join("f.db")).unwrap();
            store.set_pivot_slice(1 + (seed as i64 % 4) * 20);
            populate(&mut store, seed);
            file += compare(&store, seed, &|n, f| store.pivot(n, f).unwrap()).0;
        }
        assert!(memory > 300 && file > 300, "{memory} {file}");
        assert!(valued > 50 && valued < memory, "answers with loop values: {valued} of {memory}");
    }

    #[cfg(feature = "duckdb")]
    #[test]
    fn duckdb_matches_the_shared_pivot() {
        let mut planned = 0;
        for seed in 0..12u64 {
            let mut store = crate::DuckStore::open_in_memory().unwrap();
            store.set_scan_slice(1 + (seed as i64 % 4) * 20);
            populate(&mut store, seed);
            planned += compare(&store, seed, &|n, f| store.pivot(n, f).unwrap()).0;
        }
        assert!(planned > 120, "{planned}");
    }

    #[test]
    fn mixed_types_fall_back() {
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
            checks: &[],
        };
        let none = PivotFilter::default();
        let mut store = SqliteStore::open_in_memory().unwrap();
        store.ingest(&batch).unwrap();
        assert!(store.pivot(&["m"], &none).unwrap().is_none());
        assert_eq!(store.dataframe(&["m"]).unwrap().cell(0, 3), Some(Value::Float(1.5)));
        #[cfg(feature = "duckdb")]
        {
            let mut store = crate::DuckStore::open_in_memory().unwrap();
            store.ingest(&batch).unwrap();
            assert!(store.pivot(&["m"], &none).unwrap().is_none());
            assert_eq!(store.dataframe(&["m"]).unwrap().cell(0, 3), Some(Value::Float(1.5)));
        }
    }
}
