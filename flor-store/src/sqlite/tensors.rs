//! Checkpoints' tensor statistics in `flor_tensors` and their queue
//! `flor_tensor_queue` (see `SCHEMA.md`).

use flor_core::store::{QueuedCheckpoint, RunKey, StoreResult, TensorFilter, TensorRow, TensorVisit};
use rusqlite::Connection;

use super::fail;
use crate::tensors::{cells, decode_queued, raw_tensor, scan_params, scan_sql, RawQueued, INSERT_SQL, QUEUE_SQL};

/// The queued checkpoints of runs no longer recording.
pub(super) fn queue(conn: &Connection, label: &str, limit: usize) -> StoreResult<Vec<QueuedCheckpoint>> {
    let op = "list the checkpoints waiting for their tensors";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut st = conn.prepare_cached(QUEUE_SQL).map_err(|e| fail(label, op, e))?;
    let rows = st
        .query_map([limit], |r| {
            Ok((r.get(0)?, r.get(1)?, (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<RawQueued>>>())
        .map_err(|e| fail(label, op, e))?;
    rows.into_iter().map(|raw| decode_queued(label, raw)).collect()
}

/// Queues every forward checkpoint again.
pub(super) fn requeue(tx: &Connection, label: &str) -> StoreResult<()> {
    let op = "queue checkpoints again";
    tx.execute("DELETE FROM flor_tensor_queue", []).map_err(|e| fail(label, op, e))?;
    tx.execute(crate::tensors::REQUEUE_SQL, []).map_err(|e| fail(label, op, e))?;
    Ok(())
}

/// Replaces the tensors of one checkpoint and takes it off the queue.
pub(super) fn store(tx: &Connection, label: &str, run: RunKey, line: u64, rows: &[TensorRow]) -> StoreResult<()> {
    let op = "store tensor statistics";
    let err = |e| fail(label, op, e);
    let line = line as i64;
    tx.prepare_cached("DELETE FROM flor_tensors WHERE run = ?1 AND line = ?2")
        .and_then(|mut s| s.execute([run, line]))
        .map_err(err)?;
    let mut ins = tx.prepare_cached(INSERT_SQL).map_err(err)?;
    for (i, t) in rows.iter().enumerate() {
        let (shape, bytes, nonfinite) = cells(t);
        ins.execute(rusqlite::params![
            run, line, i as i64, t.tensor, t.dtype, shape, bytes, t.l2, t.mean, t.std, t.min, t.max, nonfinite,
            t.delta_l2
        ])
        .map_err(err)?;
    }
    tx.prepare_cached("DELETE FROM flor_tensor_queue WHERE run = ?1 AND line = ?2")
        .and_then(|mut s| s.execute([run, line]))
        .map_err(err)?;
    Ok(())
}

/// Visits the stored tensors `filter` selects.
pub(super) fn scan(
    conn: &Connection,
    label: &str,
    filter: TensorFilter<'_>,
    visit: &mut dyn FnMut(TensorVisit<'_>),
) -> StoreResult<()> {
    let op = "read tensor statistics";
    let mut st = conn.prepare(&scan_sql(filter)).map_err(|e| fail(label, op, e))?;
    let params = scan_params(filter);
    let mut rows = st.query(rusqlite::params_from_iter(params)).map_err(|e| fail(label, op, e))?;
    while let Some(r) = rows.next().map_err(|e| fail(label, op, e))? {
        let raw = raw_tensor!(r).map_err(|e: rusqlite::Error| fail(label, op, e))?;
        let (run, ctx, line, checkpoint, row) = raw.decode(label)?;
        visit(TensorVisit { run, ctx, line, checkpoint: &checkpoint, row: &row });
    }
    Ok(())
}
