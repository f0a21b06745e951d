//! `DuckStore::dataframe`: the shared pivot (`crate::pivot`) over DuckDB
//! scans: one query per slice of runs with the names, kinds and run range
//! pushed down (row groups outside the range are skipped by their zone
//! maps; with a selection of runs, the slice's run keys too), projecting
//! only the value columns the names' stored types need. A grouped plan
//! (`PIVOT`, or `GROUP BY run, ctx` with `arg_max`) was the first version:
//! on a 2-core machine DuckDB's hash aggregation alone takes 1.5–2.5 s for
//! 10M records (its perfect-hash variant 4.8 s), against 0.36 s for the
//! scan (BENCHMARKS.md). The scan of the next slice runs on a second
//! connection and thread while this one pivots.

use std::collections::HashMap;

use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{Float64Type, Int32Type, Int64Type, Int8Type};
use flor_core::select::PivotFilter;
use flor_core::store::{RunRow, StoreResult};
use flor_core::table::Table;
use flor_core::value::ValueType;

use super::{fail, string_at, DuckStore};
use crate::pivot::{Form, Rec, Request, Scan, SliceRecs, NONE, PIVOT_SLICE_RECORDS};
use crate::rows::unusable;

/// The `flor_records` column holding values of form `f`.
fn column(f: Form) -> &'static str {
    match f {
        Form::Float => "fval",
        Form::Text | Form::Json => "tval",
        Form::Int | Form::Bool => "ival",
    }
}

/// A value column of a scan batch.
enum Col<'a> {
    Int(&'a duckdb::arrow::array::PrimitiveArray<Int64Type>),
    Float(&'a duckdb::arrow::array::PrimitiveArray<Float64Type>),
    Text(&'a duckdb::arrow::array::ArrayRef),
}

impl DuckStore {
    /// The pivot for `names` (not empty), or `None` where the shared pivot
    /// must answer (see the module docs): the names' types, their loop
    /// spans, then the records, a slice of runs at a time.
    pub(crate) fn pivot(&self, names: &[&str], filter: &PivotFilter) -> StoreResult<Option<Table>> {
        let mut req = Request::new(self, names, filter)?;
        // The names with records, and the one type of each.
        let ids: Vec<Option<i32>> = req.wanted.iter().map(|n| self.names.get(*n).copied()).collect();
        let selected: Option<Vec<i64>> = filter.runs.as_ref().map(|_| req.runs.iter().map(|r| r.key).collect());
        let Some((forms, rows)) = self.pivot_forms(&ids, selected.as_deref())? else {
            return Ok(None);
        };
        let plan = ScanPlan::new(&ids, &forms, filter.runs.is_some());
        (req.forms, req.rows) = (forms, rows);
        let label = self.label.as_str();
        let limit = self.scan_slice.min(PIVOT_SLICE_RECORDS);
        let mut inline =
            |runs: &[RunRow], slice, buf: &mut SliceRecs| scan_slice(&self.conn, label, &plan, runs, slice, buf);
        let one_slice = req.runs.iter().map(|r| r.records as i64).sum::<i64>() <= limit;
        let plan = &plan;
        let table = crate::pivot::pivot(self, req, filter, limit, one_slice.then_some(&mut inline as _), || {
            // DuckDB scans (and the batches are decoded) on a second
            // connection and thread while this one pivots the slice before.
            let conn = self.conn.try_clone().map_err(|e| self.fail("open a second connection", e))?;
            let scan: Scan<'_> = Box::new(move |runs, slice, buf| scan_slice(&conn, label, plan, runs, slice, buf));
            Ok(vec![scan])
        })?;
        Ok(Some(table))
    }

    /// How the values of each name (by id, `None` where it has no records)
    /// are stored and how many records they are, or `None` when some
    /// name's stored values differ in type.
    fn pivot_forms(
        &self,
        ids: &[Option<i32>],
        runs: Option<&[i64]>,
    ) -> StoreResult<Option<(Vec<Option<Form>>, usize)>> {
        let present: Vec<i32> = ids.iter().flatten().copied().collect();
        let mut forms: Vec<Option<Form>> = vec![None; ids.len()];
        let mut rows = 0usize;
        if !present.is_empty() && runs.is_none_or(|r| !r.is_empty()) {
            let marks = vec!["?"; present.len()].join(", ");
            // Only the selected runs' records (placeholders, bound).
            let run_marks = runs.map_or(String::new(), |r| format!(" AND run IN ({})", vec!["?"; r.len()].join(", ")));
            let sql = format!(
                "SELECT name_id, min(vtype), max(vtype), count(*) FROM flor_records \
                 WHERE kind <= 1 AND name_id IN ({marks}){run_marks} GROUP BY name_id"
            );
            let mut params: Vec<&dyn duckdb::ToSql> = present.iter().map(|i| i as &dyn duckdb::ToSql).collect();
            params.extend(runs.unwrap_or_default().iter().map(|k| k as &dyn duckdb::ToSql));
            let mut mixed = false;
            self.batches("plan a pivot", &sql, &params, &mut |b| {
                let id = self.col::<Int32Type>(b, 0)?;
                let (lo, hi) = (self.col::<Int8Type>(b, 1)?, self.col::<Int8Type>(b, 2)?);
                let count = self.col::<Int64Type>(b, 3)?;
                for row in 0..b.num_rows() {
                    rows += usize::try_from(count.value(row)).unwrap_or(0);
                    let t = ValueType::from_code(i64::from(lo.value(row)));
                    if lo.value(row) != hi.value(row) || t.is_none() {
                        mixed = true;
                    }
                    for (k, _) in ids.iter().enumerate().filter(|(_, i)| **i == Some(id.value(row))) {
                        forms[k] = t.map(Form::of);
                    }
                }
                Ok(())
            })?;
            if mixed {
                return Ok(None);
            }
        }
        Ok(Some((forms, rows)))
    }
}

/// The scan query of every slice, and how to read its rows.
struct ScanPlan {
    sql: String,
    /// The requested names' ids (bound parameters).
    name_ids: Vec<i64>,
    /// Name id → requested name index.
    k_of: HashMap<i32, u32>,
    /// The value columns selected (each once) and which one each
    /// requested name reads.
    columns: Vec<&'static str>,
    col_of: Vec<usize>,
    /// Whether runs are selected: each slice's run keys are bound too.
    selected: bool,
}

impl ScanPlan {
    fn new(ids: &[Option<i32>], forms: &[Option<Form>], selected: bool) -> ScanPlan {
        let mut columns: Vec<&'static str> = Vec::new();
        let mut col_of: Vec<usize> = vec![0; forms.len()];
        let mut k_of: HashMap<i32, u32> = HashMap::new();
        let mut name_ids = Vec::new();
        for (k, (id, f)) in ids.iter().zip(forms).enumerate() {
            let (Some(id), Some(f)) = (id, f) else { continue };
            let c = column(*f);
            col_of[k] = columns.iter().position(|x| *x == c).unwrap_or_else(|| {
                columns.push(c);
                columns.len() - 1
            });
            k_of.insert(*id, k as u32);
            name_ids.push(i64::from(*id));
        }
        // Only fixed column names and placeholders: every value is bound.
        let marks = vec!["?"; name_ids.len()].join(", ");
        let sql = format!(
            "SELECT run, ctx, name_id, CAST(source AS BIGINT) * 4611686018427387904 + line, {} FROM flor_records \
             WHERE kind <= 1 AND name_id IN ({marks}) AND run BETWEEN ? AND ?",
            columns.join(", ")
        );
        ScanPlan { sql, name_ids, k_of, columns, col_of, selected }
    }
}

/// A primitive column of a scan batch.
fn col<'a, T: duckdb::arrow::datatypes::ArrowPrimitiveType>(
    label: &str,
    b: &'a RecordBatch,
    i: usize,
) -> StoreResult<&'a duckdb::arrow::array::PrimitiveArray<T>> {
    b.column(i)
        .as_primitive_opt::<T>()
        .ok_or_else(|| unusable(label, &format!("unexpected column type {} in a scan", b.column(i).data_type())))
}

/// Reads the records of `runs[start..end]` into `out`.
fn scan_slice(
    conn: &duckdb::Connection,
    label: &str,
    plan: &ScanPlan,
    runs: &[RunRow],
    (start, end): (usize, usize),
    out: &mut SliceRecs,
) -> StoreResult<()> {
    out.recs.clear();
    out.texts.clear();
    let slice = &runs[start..end];
    let lo = slice.iter().map(|r| r.key).min().unwrap_or(0);
    let hi = slice.iter().map(|r| r.key).max().unwrap_or(0);
    // Run key → index in `runs` (NONE: a run of another slice).
    let width = usize::try_from(hi - lo + 1).unwrap_or(0);
    let mut rank_of = vec![NONE; width];
    for (i, r) in slice.iter().enumerate() {
        rank_of[(r.key - lo) as usize] = (start + i) as u32;
    }
    let mut params: Vec<i64> = plan.name_ids.clone();
    params.push(lo);
    params.push(hi);
    let op = "pivot values";
    let mut st = if plan.selected {
        // Selected runs: their keys too (placeholders, bound).
        params.extend(slice.iter().map(|r| r.key));
        let marks = vec!["?"; slice.len()].join(", ");
        conn.prepare(&format!("{} AND run IN ({marks})", plan.sql))
    } else {
        conn.prepare(&plan.sql)
    }
    .map_err(|e| fail(label, op, e))?;
    let refs: Vec<&dyn duckdb::ToSql> = params.iter().map(|p| p as &dyn duckdb::ToSql).collect();
    let arrow = st.query_arrow(refs.as_slice()).map_err(|e| fail(label, op, e))?;
    let (recs, texts) = (&mut out.recs, &mut out.texts);
    for batch in arrow {
        let run = col::<Int64Type>(label, &batch, 0)?;
        let ctx = col::<Int64Type>(label, &batch, 1)?;
        let name = col::<Int32Type>(label, &batch, 2)?;
        let key = col::<Int64Type>(label, &batch, 3)?;
        let mut cols: Vec<Col<'_>> = Vec::with_capacity(plan.columns.len());
        for (i, c) in plan.columns.iter().enumerate() {
            cols.push(match *c {
                "fval" => Col::Float(col::<Float64Type>(label, &batch, 4 + i)?),
                "tval" => Col::Text(batch.column(4 + i)),
                _ => Col::Int(col::<Int64Type>(label, &batch, 4 + i)?),
            });
        }
        let mut last_name = (i32::MIN, 0u32);
        for row in 0..batch.num_rows() {
            let rank = usize::try_from(run.value(row) - lo).ok().and_then(|i| rank_of.get(i)).copied().unwrap_or(NONE);
            if rank == NONE {
                continue;
            }
            let id = name.value(row);
            if id != last_name.0 {
                let Some(&k) = plan.k_of.get(&id) else { continue };
                last_name = (id, k);
            }
            let k = last_name.1;
            let v = match &cols[plan.col_of[k as usize]] {
                Col::Int(a) if !a.is_null(row) => a.value(row) as u64,
                Col::Float(a) if !a.is_null(row) => a.value(row).to_bits(),
                Col::Text(a) if !a.is_null(row) => {
                    let s = string_at(a, row).ok_or_else(|| unusable(label, "a stored text value is not text"))?;
                    texts.push(s.into());
                    (texts.len() - 1) as u64
                }
                // NULL values are skipped, as `arg_max` skips them.
                _ => continue,
            };
            let c = if ctx.is_null(row) {
                NONE
            } else {
                u32::try_from(ctx.value(row))
                    .ok()
                    .filter(|&c| c != NONE)
                    .ok_or_else(|| unusable(label, &format!("a loop context id {} is out of range", ctx.value(row))))?
            };
            recs.push(Rec { rank, ctx: c, k, key: key.value(row), v });
        }
    }
    // Each run's records in winner-key order: insertion order as a rule
    // (checked), sorted otherwise.
    if !recs.windows(2).all(|w| (w[0].rank, w[0].key) < (w[1].rank, w[1].key)) {
        recs.sort_by_key(|r| (r.rank, r.key));
    }
    Ok(())
}
