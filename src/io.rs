//! Reading captured output back: [`Project::io`], what `flor io` and
//! `flor.io()` show. A run's `print` and `logging` lines are stored as
//! `output` records (their name is the channel: `io::stdout`, `io::stderr`,
//! `io::log::<level>`) at the loop position where they were written; this
//! module lays them out as a table with the position's loop columns, like
//! the pivot's.

use std::collections::HashMap;
use std::sync::Arc;

use flor_core::select::{IterFilter, Selection, SpanRef};
use flor_core::store::{LoopSpan, OutputFilter, RunKey, RunRow};
use flor_core::{Table, Value};

use crate::error::Result;
use crate::project::Project;

/// One captured line, as read.
struct Line {
    run: RunKey,
    ctx: Option<u32>,
    order: (i64, u64),
    channel: Arc<str>,
    text: String,
}

/// A run's loop iterations, as spans sorted by their first context.
struct Loops {
    spans: Vec<LoopSpan>,
}

impl Loops {
    /// The span holding context `ctx`.
    fn span_of(&self, ctx: u32) -> Option<&LoopSpan> {
        let i = self.spans.partition_point(|s| s.first_ctx <= ctx).checked_sub(1)?;
        let s = &self.spans[i];
        (ctx - s.first_ctx < s.count).then_some(s)
    }

    /// `(loop name, iteration)` of `ctx` and its enclosing iterations,
    /// outermost first.
    fn chain(&self, ctx: Option<u32>) -> Vec<(Arc<str>, u64)> {
        let mut out = Vec::new();
        let mut at = ctx;
        while let Some(c) = at {
            let Some(s) = self.span_of(c) else { break };
            out.push((s.name.clone(), s.first_iteration + u64::from(c - s.first_ctx)));
            // A malformed parent chain (a cycle) must not loop forever.
            if out.len() > self.spans.len() {
                break;
            }
            at = s.parent;
        }
        out.reverse();
        out
    }
}

impl Project {
    /// The captured output lines (`print` and `logging`, see the module
    /// docs) as a table: `projid`, `tstamp`, `filename`, one column per
    /// loop (the iteration index at the line's position, empty outside
    /// that loop; ordered by depth, then first appearance), then `channel`
    /// and `line`. Runs in `tstamp` order, each run's lines in the order
    /// they were written.
    ///
    /// `channel` keeps one channel or a family: exact or by `::` prefix
    /// (`io::log` is every logging level, `io::log::error` one), and a
    /// channel without the `io::` prefix means the one with it (`stdout`
    /// is `io::stdout`). `selection` keeps runs by a `where` predicate over
    /// their run-level columns (as [`Project::dataframe_where`]) and loop
    /// iterations by `iters` (lines outside the selected loop stay).
    pub fn io(&self, channel: Option<&str>, selection: &Selection) -> Result<Table> {
        let store = self.store()?;
        let filter = self.resolve(selection)?;
        let runs: Vec<RunRow> = store.runs()?.into_iter().filter(|r| filter.keeps_run(r.key)).collect();
        let keys: Vec<RunKey> = runs.iter().map(|r| r.key).collect();
        let mut lines: Vec<Line> = Vec::new();
        let mut channels: HashMap<String, Arc<str>> = HashMap::new();
        store.scan_outputs(OutputFilter { runs: Some(&keys), channel }, &mut |o| {
            let ch = channels.entry(o.channel.to_owned()).or_insert_with(|| Arc::from(o.channel)).clone();
            lines.push(Line {
                run: o.run,
                ctx: o.ctx,
                order: (o.source.code(), o.line),
                channel: ch,
                text: o.text.to_owned(),
            });
        })?;
        let position: HashMap<RunKey, usize> = runs.iter().enumerate().map(|(i, r)| (r.key, i)).collect();
        lines.sort_by_key(|l| (position.get(&l.run).copied().unwrap_or(usize::MAX), l.order));

        let with_lines: Vec<RunKey> = {
            let mut v: Vec<RunKey> = lines.iter().map(|l| l.run).collect();
            v.dedup();
            v
        };
        let mut loops: HashMap<RunKey, Loops> = HashMap::new();
        store.scan_loops(&with_lines, &mut |run, span| {
            loops.entry(run).or_insert_with(|| Loops { spans: Vec::new() }).spans.push(span.clone());
        })?;
        for l in loops.values_mut() {
            l.spans.sort_by_key(|s| s.first_ctx);
        }
        let kept: HashMap<RunKey, IterFilter> = if filter.iters.is_empty() {
            HashMap::new()
        } else {
            loops.iter().map(|(run, l)| (*run, IterFilter::new(&filter.iters, &span_refs(&l.spans)))).collect()
        };
        lines.retain(|l| match (l.ctx, kept.get(&l.run)) {
            (Some(ctx), Some(f)) => f.keeps(ctx),
            _ => true,
        });
        Ok(layout(&runs, &lines, &loops))
    }
}

/// The spans as [`IterFilter`] reads them.
fn span_refs(spans: &[LoopSpan]) -> Vec<SpanRef<'_>> {
    spans
        .iter()
        .map(|s| SpanRef {
            first_ctx: s.first_ctx,
            count: s.count,
            parent: s.parent,
            name: &s.name,
            first_iteration: s.first_iteration,
        })
        .collect()
}

/// The table of [`Project::io`]: run columns, loop columns, `channel`,
/// `line`.
fn layout(runs: &[RunRow], lines: &[Line], loops: &HashMap<RunKey, Loops>) -> Table {
    let meta: HashMap<RunKey, &RunRow> = runs.iter().map(|r| (r.key, r)).collect();
    let empty = Loops { spans: Vec::new() };
    let chains: Vec<Vec<(Arc<str>, u64)>> =
        lines.iter().map(|l| loops.get(&l.run).unwrap_or(&empty).chain(l.ctx)).collect();
    // Loop columns by depth, then first appearance.
    let mut columns: Vec<(usize, usize, Arc<str>)> = Vec::new();
    for chain in &chains {
        for (depth, (name, _)) in chain.iter().enumerate() {
            if !columns.iter().any(|(_, _, n)| n == name) {
                columns.push((depth, columns.len(), name.clone()));
            }
        }
    }
    columns.sort_by_key(|(depth, first, _)| (*depth, *first));
    let names: Vec<&str> = ["projid", "tstamp", "filename"]
        .into_iter()
        .chain(columns.iter().map(|(_, _, n)| &**n))
        .chain(["channel", "line"])
        .collect();
    let mut table = Table::with_columns(names);
    for (l, chain) in lines.iter().zip(&chains) {
        let Some(run) = meta.get(&l.run) else { continue };
        let mut row: Vec<Option<Value>> = vec![
            Some(Value::from(run.meta.projid.as_str())),
            Some(Value::from(run.meta.tstamp.as_str())),
            Some(Value::from(run.meta.filename.as_str())),
        ];
        for (_, _, name) in &columns {
            let it = chain.iter().find(|(n, _)| n == name).map(|(_, i)| *i);
            row.push(it.map(|i| Value::Int(i64::try_from(i).unwrap_or(i64::MAX))));
        }
        row.push(Some(Value::from(&*l.channel)));
        row.push(Some(Value::from(l.text.as_str())));
        table.push_row(row);
    }
    table
}
