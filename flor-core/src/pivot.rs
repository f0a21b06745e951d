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
//!
//! With no names: one row per run with all of its run-level values, columns
//! ordered by first appearance in the record file.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{RunKey, RunRow, Store, StoreResult, ValueFilter};
use crate::table::{Column, Table};
use crate::value::Value;

const NONE: u32 = u32::MAX;

struct Val {
    run: u32,
    ctx: u32,
    name: u32,
    order: (u8, u64),
    value: Value,
}

#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    loop_id: u32,
    iteration: u64,
}

/// Computes the pivot over `store`'s primitives. See the module docs.
pub fn dataframe<S: Store + ?Sized>(store: &S, names: &[&str]) -> StoreResult<Table> {
    let runs = store.runs()?;
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

    let mut vals: Vec<Val> = Vec::new();
    store.scan_values(ValueFilter::Names(&wanted), &mut |row| {
        let (Some(&run), Some(name)) = (run_idx.get(&row.run), wanted.iter().position(|n| *n == row.name)) else {
            return;
        };
        vals.push(Val {
            run,
            ctx: row.ctx.unwrap_or(NONE),
            name: name as u32,
            order: (row.source as u8, row.line),
            value: row.value,
        });
    })?;
    vals.sort_unstable_by_key(|v| (v.run, v.ctx, v.name, v.order));
    // Keep the last value per (run, ctx, name).
    vals.dedup_by(|later, earlier| {
        if later.run == earlier.run && later.ctx == earlier.ctx && later.name == earlier.name {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });

    // Loop contexts of the runs that logged inside loops.
    let mut loop_runs: Vec<RunKey> = Vec::new();
    for v in &vals {
        if v.ctx != NONE && loop_runs.last() != Some(&runs[v.run as usize].key) {
            loop_runs.push(runs[v.run as usize].key);
        }
    }
    loop_runs.dedup();
    let mut loop_names: Vec<Arc<str>> = Vec::new();
    let mut loop_ids: HashMap<Arc<str>, u32> = HashMap::new();
    let mut nodes: Vec<Vec<Node>> = vec![Vec::new(); runs.len()];
    if !loop_runs.is_empty() {
        store.scan_loops(&loop_runs, &mut |run, l| {
            let Some(&ri) = run_idx.get(&run) else { return };
            let id = *loop_ids.entry(l.name.clone()).or_insert_with(|| {
                loop_names.push(l.name.clone());
                (loop_names.len() - 1) as u32
            });
            let table = &mut nodes[ri as usize];
            let c = l.ctx as usize;
            if table.len() <= c {
                table.resize(c + 1, Node { parent: NONE, loop_id: NONE, iteration: 0 });
            }
            table[c] = Node { parent: l.parent.unwrap_or(NONE), loop_id: id, iteration: l.iteration };
        })?;
    }
    let node = |run: u32, ctx: u32| -> Option<Node> {
        nodes[run as usize].get(ctx as usize).copied().filter(|n| n.loop_id != NONE)
    };

    // Rows: per run, the maximal positions.
    let mut rows: Vec<(u32, u32)> = Vec::new();
    let mut marked: Vec<bool> = Vec::new();
    let mut start = 0;
    while start < vals.len() {
        let run = vals[start].run;
        let end = start + vals[start..].iter().take_while(|v| v.run == run).count();
        let slice = &vals[start..end];
        marked.clear();
        marked.resize(nodes[run as usize].len(), false);
        for v in slice.iter().filter(|v| v.ctx != NONE) {
            let mut p = node(run, v.ctx).map_or(NONE, |n| n.parent);
            while p != NONE && (p as usize) < marked.len() && !marked[p as usize] {
                marked[p as usize] = true;
                p = node(run, p).map_or(NONE, |n| n.parent);
            }
        }
        let before = rows.len();
        let mut last = NONE;
        for v in slice.iter().filter(|v| v.ctx != NONE) {
            if v.ctx != last && !marked.get(v.ctx as usize).copied().unwrap_or(false) {
                rows.push((run, v.ctx));
                last = v.ctx;
            }
        }
        if rows.len() == before {
            rows.push((run, NONE));
        }
        start = end;
    }

    // Loop columns: by depth, then first appearance.
    let mut loop_rank: Vec<Option<(usize, usize)>> = vec![None; loop_names.len()];
    let mut seen = 0usize;
    let mut chain: Vec<Node> = Vec::new();
    for &(run, ctx) in &rows {
        collect_chain(&node, run, ctx, &mut chain);
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
    let mut loop_cols: Vec<u32> = (0..loop_names.len() as u32).filter(|&i| loop_rank[i as usize].is_some()).collect();
    loop_cols.sort_by_key(|&i| loop_rank[i as usize]);
    let mut loop_col_of = vec![usize::MAX; loop_names.len()];
    for (pos, &id) in loop_cols.iter().enumerate() {
        loop_col_of[id as usize] = pos;
    }

    let n = rows.len();
    let mut head = head_columns(&runs, &rows);
    let mut loop_values: Vec<Vec<Option<Value>>> = vec![vec![None; n]; loop_cols.len()];
    let mut name_values: Vec<Vec<Option<Value>>> = vec![vec![None; n]; wanted.len()];
    // Index of each run's slice in `vals`.
    let mut run_span: HashMap<u32, (usize, usize)> = HashMap::new();
    let mut i = 0;
    while i < vals.len() {
        let run = vals[i].run;
        let j = i + vals[i..].iter().take_while(|v| v.run == run).count();
        run_span.insert(run, (i, j));
        i = j;
    }
    for (r, &(run, ctx)) in rows.iter().enumerate() {
        collect_chain(&node, run, ctx, &mut chain);
        for n in &chain {
            loop_values[loop_col_of[n.loop_id as usize]][r] = Some(Value::Int(n.iteration as i64));
        }
        let (s, e) = run_span.get(&run).copied().unwrap_or((0, 0));
        let slice = &vals[s..e];
        for (k, col) in name_values.iter_mut().enumerate() {
            let mut c = ctx;
            loop {
                if let Ok(hit) = slice.binary_search_by_key(&(c, k as u32), |v| (v.ctx, v.name)) {
                    col[r] = Some(slice[hit].value.clone());
                    break;
                }
                if c == NONE {
                    break;
                }
                c = node(run, c).map_or(NONE, |n| n.parent);
            }
        }
    }
    for (pos, id) in loop_cols.iter().enumerate() {
        head.push(Column { name: loop_names[*id as usize].to_string(), values: std::mem::take(&mut loop_values[pos]) });
    }
    for (k, name) in wanted.iter().enumerate() {
        head.push(Column { name: (*name).to_owned(), values: std::mem::take(&mut name_values[k]) });
    }
    Ok(Table { columns: head })
}

fn collect_chain(node: &impl Fn(u32, u32) -> Option<Node>, run: u32, ctx: u32, chain: &mut Vec<Node>) {
    chain.clear();
    let mut c = ctx;
    while c != NONE {
        let Some(n) = node(run, c) else { break };
        chain.push(n);
        c = n.parent;
        if chain.len() > 10_000 {
            break; // a cycle in corrupt data; never in recorded runs
        }
    }
}

fn head_columns(runs: &[RunRow], rows: &[(u32, u32)]) -> Vec<Column> {
    let shared: Vec<[Value; 3]> = runs
        .iter()
        .map(|r| {
            [
                Value::Text(r.meta.projid.as_str().into()),
                Value::Text(r.meta.tstamp.as_str().into()),
                Value::Text(r.meta.filename.as_str().into()),
            ]
        })
        .collect();
    ["projid", "tstamp", "filename"]
        .iter()
        .enumerate()
        .map(|(i, name)| Column {
            name: (*name).to_owned(),
            values: rows.iter().map(|(run, _)| Some(shared[*run as usize][i].clone())).collect(),
        })
        .collect()
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
        let order = (row.source as u8, row.line);
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
        columns.push(Column { name, values: cells.iter().map(|m| m.get(&idx).map(|(_, v)| v.clone())).collect() });
    }
    Ok(Table { columns })
}
