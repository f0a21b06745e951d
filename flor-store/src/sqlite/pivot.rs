//! `SqliteStore::dataframe`: the shared pivot (`crate::pivot`) over SQLite
//! scans of `flor_packed` (see `packed.rs`): the values of one name in one
//! run are one key range of packed rows, read in winner-key order; a slice
//! of runs is one such range per name and run (a run outside the selection
//! is never read). On a database file, the
//! slices are read by [`SCAN_THREADS`] read connections on threads of their
//! own while the calling thread pivots; in memory or inside an ingestion
//! group, the calling thread reads them itself.

use std::sync::atomic::{AtomicBool, Ordering};

use flor_core::select::PivotFilter;
use flor_core::store::{RunRow, StoreError, StoreResult};
use flor_core::table::Table;
use flor_core::value::ValueType;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{fail, packed, SqliteStore, BUSY_TIMEOUT};
use crate::pivot::{Form, Rec, Request, Scan, SliceRecs, NONE, PIVOT_SLICE_RECORDS};
use crate::rows::unusable;

/// Read connections scanning at once (besides the thread that pivots).
pub(crate) const SCAN_THREADS: usize = 2;

/// Records per slice of runs, by default.
pub(crate) const PIVOT_SLICE: i64 = PIVOT_SLICE_RECORDS;

/// How a scan reads the requested names: `(name id, index among the
/// requested names, stored type)`.
type Plan = Vec<(i64, u32, ValueType)>;

impl SqliteStore {
    /// The pivot for `names` (not empty), or `None` where the shared pivot
    /// must answer: a name whose stored values differ in type.
    pub(crate) fn pivot(&self, names: &[&str], filter: &PivotFilter) -> StoreResult<Option<Table>> {
        let op = "build a dataframe";
        let mut req = Request::new(self, names, filter)?;
        let mut plan: Plan = Vec::new();
        let mut forms: Vec<Option<Form>> = vec![None; req.wanted.len()];
        let ids = self.name_ids(&req.wanted)?;
        let mut first_type = self
            .conn
            .prepare_cached("SELECT vtype FROM flor_records WHERE name_id = ?1 AND kind <= 1 LIMIT 1")
            .map_err(|e| self.fail(op, e))?;
        for (id, name) in ids {
            let code: Option<i64> =
                first_type.query_row([id], |r| r.get(0)).optional().map_err(|e| self.fail(op, e))?;
            let Some(t) = code.and_then(ValueType::from_code) else { continue };
            let k = req.wanted.iter().position(|w| *w == name).unwrap_or(0);
            forms[k] = Some(Form::of(t));
            plan.push((id, k as u32, t));
        }
        req.forms = forms;
        req.rows = req.runs.iter().map(|r| r.records as usize).sum();
        // A record of another type than its name's first: the shared pivot
        // answers instead.
        let mixed = AtomicBool::new(false);
        let label = self.label.as_str();
        let (plan, mixed_ref) = (&plan, &mixed);
        let slice_records = self.pivot_slice;
        let one_slice = req.runs.iter().map(|r| r.records as i64).sum::<i64>() <= slice_records;
        let inline_only = label == ":memory:" || self.group.is_some();
        let mut inline = |runs: &[RunRow], slice, buf: &mut SliceRecs| {
            scan_slice(&self.conn, label, plan, runs, slice, buf, mixed_ref)
        };
        let result = crate::pivot::pivot(
            self,
            req,
            filter,
            slice_records,
            (one_slice || inline_only).then_some(&mut inline as _),
            || {
                let mut scans: Vec<Scan<'_>> = Vec::with_capacity(SCAN_THREADS);
                for _ in 0..SCAN_THREADS {
                    let conn = read_connection(label)?;
                    scans.push(Box::new(move |runs, slice, buf| {
                        scan_slice(&conn, label, plan, runs, slice, buf, mixed_ref)
                    }));
                }
                Ok(scans)
            },
        );
        if mixed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        result.map(Some)
    }
}

/// A read-only connection to the database file at `path`.
fn read_connection(path: &str) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| fail(path, "open a read connection", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| fail(path, "set the busy timeout", e))?;
    Ok(conn)
}

/// Reads the records of `runs[start..end]` named in `plan` into `out`:
/// each name's packed rows of each run (`flor_packed`, in key order:
/// source, then lines); a run's records of several names are then merged
/// into winner-key order. Sets `mixed` (and fails) at a value of another
/// type than its name's.
fn scan_slice(
    conn: &Connection,
    label: &str,
    plan: &Plan,
    runs: &[RunRow],
    (start, end): (usize, usize),
    out: &mut SliceRecs,
    mixed: &AtomicBool,
) -> StoreResult<()> {
    out.recs.clear();
    out.texts.clear();
    let op = "pivot values";
    let mut st = conn
        .prepare_cached("SELECT source, vtypes, recs, texts FROM flor_packed WHERE name_id = ?1 AND run = ?2")
        .map_err(|e| fail(label, op, e))?;
    for (i, run) in runs[start..end].iter().enumerate() {
        let rank = (start + i) as u32;
        let first = out.recs.len();
        for &(id, k, t) in plan {
            let mut rows = st.query(rusqlite::params![id, run.key]).map_err(|e| fail(label, op, e))?;
            while let Some(r) = rows.next().map_err(|e| fail(label, op, e))? {
                let row = |i| r.get_ref(i).map_err(|e| fail(label, op, e));
                let (ValueRef::Integer(source), ValueRef::Integer(vtypes), ValueRef::Blob(recs), ValueRef::Blob(texts)) =
                    (row(0)?, row(1)?, row(2)?, row(3)?)
                else {
                    return Err(unusable(label, "a packed row has columns of the wrong type"));
                };
                if vtypes != 1 << t.code() {
                    mixed.store(true, Ordering::Relaxed);
                    return Err(mixed_types(label));
                }
                if recs.len() % packed::REC_BYTES != 0 {
                    return Err(unusable(label, "a packed row's values are cut short"));
                }
                let text_base = out.texts.len() as u64;
                if matches!(t, ValueType::Text | ValueType::Json) {
                    packed::texts_of(label, texts, &mut out.texts)?;
                }
                let ntexts = out.texts.len() as u64 - text_base;
                for j in 0..recs.len() / packed::REC_BYTES {
                    let (line, ctx, mut v) = packed::rec_at(recs, j);
                    if matches!(t, ValueType::Text | ValueType::Json) {
                        if v >= ntexts {
                            return Err(unusable(label, "a packed text value is missing"));
                        }
                        v += text_base;
                    }
                    let ctx = if ctx == packed::RUN_LEVEL { NONE } else { ctx };
                    out.recs.push(Rec { rank, ctx, k, key: (source << 62) | line as i64, v });
                }
            }
        }
        // Each name's rows come in key order and hold lines in order;
        // several names' records are merged (a stable sort of sorted runs
        // is a merge), as are rows whose lines interleave.
        let recs = &mut out.recs[first..];
        if !recs.is_sorted_by_key(|r| r.key) {
            recs.sort_by_key(|r| r.key);
        }
    }
    Ok(())
}

fn mixed_types(label: &str) -> StoreError {
    StoreError::Backend {
        backend: "sqlite",
        message: format!("{label}: a name's values differ in type; the shared pivot answers"),
        source: None,
    }
}
