//! Tensor statistics as both backends store them (`flor_tensors`, the
//! queue `flor_tensor_queue`, the `tensors` view): the queries they share
//! and row decoding.

use flor_core::store::{QueuedCheckpoint, RunKey, StoreResult, TensorFilter, TensorRow};

use crate::rows::{ctx_of, decode_checkpoint, unusable};

/// The queued forward checkpoints of runs that stopped recording (bound:
/// the limit); columns: run, tstamp, then [`crate::rows::RawCheckpoint`]'s.
pub(crate) const QUEUE_SQL: &str = "SELECT q.run, u.tstamp, c.line, c.ctx, c.name, c.digest, c.bytes, c.format \
     FROM flor_tensor_queue q \
     JOIN flor_runs u ON u.run = q.run \
     JOIN flor_checkpoints c ON c.run = q.run AND c.source = 0 AND c.line = q.line \
     WHERE u.status <> 'running' \
     ORDER BY q.run, q.line LIMIT ?";

/// Every forward checkpoint queued again (see `Store::requeue_tensors`):
/// the queue emptied, then this.
pub(crate) const REQUEUE_SQL: &str =
    "INSERT INTO flor_tensor_queue (run, line) SELECT run, line FROM flor_checkpoints WHERE source = 0";

/// The columns `flor_tensors` is inserted with, in order.
pub(crate) const INSERT_SQL: &str = "INSERT INTO flor_tensors \
     (run, line, idx, tensor, dtype, shape, bytes, l2, mean, std, min, max, nonfinite, delta_l2) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// A scan of the stored tensors ([`RawTensor`]'s columns), restricted to
/// `filter`'s `(checkpoint, tensor)` pairs with two parameters per pair
/// (bound by the caller: never spliced in).
pub(crate) fn scan_sql(filter: TensorFilter<'_>) -> String {
    let mut sql = String::from(
        "SELECT t.run, c.ctx, t.line, c.name, t.tensor, t.dtype, t.shape, t.bytes, \
         t.l2, t.mean, t.std, t.min, t.max, t.nonfinite, t.delta_l2 \
         FROM flor_tensors t JOIN flor_checkpoints c ON c.run = t.run AND c.source = 0 AND c.line = t.line",
    );
    if let TensorFilter::Named(pairs) = filter {
        sql.push_str(" WHERE ");
        let conds: Vec<&str> = pairs.iter().map(|_| "(c.name = ? AND t.tensor = ?)").collect();
        sql.push_str(if conds.is_empty() { "false" } else { "" });
        sql.push_str(&conds.join(" OR "));
    }
    sql
}

/// The parameters of [`scan_sql`], in order.
pub(crate) fn scan_params<'a>(filter: TensorFilter<'a>) -> Vec<&'a str> {
    match filter {
        TensorFilter::All => Vec::new(),
        TensorFilter::Named(pairs) => pairs.iter().flat_map(|(c, t)| [*c, *t]).collect(),
    }
}

/// One row of [`scan_sql`], as the engine returned it.
pub(crate) struct RawTensor {
    pub run: i64,
    pub ctx: Option<i64>,
    pub line: i64,
    pub checkpoint: String,
    pub tensor: String,
    pub dtype: String,
    /// JSON array of integers.
    pub shape: String,
    pub bytes: i64,
    pub stats: [Option<f64>; 5],
    pub nonfinite: Option<i64>,
    pub delta_l2: Option<f64>,
}

/// A [`RawTensor`] from a row of [`scan_sql`] of either engine; evaluates
/// to the engine's `Result<RawTensor>`.
macro_rules! raw_tensor {
    ($row:expr) => {{
        let r = $row;
        (|| {
            Ok($crate::tensors::RawTensor {
                run: r.get(0)?,
                ctx: r.get(1)?,
                line: r.get(2)?,
                checkpoint: r.get(3)?,
                tensor: r.get(4)?,
                dtype: r.get(5)?,
                shape: r.get(6)?,
                bytes: r.get(7)?,
                stats: [r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?],
                nonfinite: r.get(13)?,
                delta_l2: r.get(14)?,
            })
        })()
    }};
}
pub(crate) use raw_tensor;

/// A decoded [`RawTensor`]: run, context, line, checkpoint name, row.
pub(crate) type Decoded = (RunKey, Option<u32>, u64, String, TensorRow);

impl RawTensor {
    /// The row, or an "unusable database" error naming what is wrong.
    pub(crate) fn decode(self, label: &str) -> StoreResult<Decoded> {
        let shape: Vec<u64> = serde_json::from_str(&self.shape).map_err(|e| {
            unusable(label, &format!("tensor `{}` has a malformed shape {:?} ({e})", self.tensor, self.shape))
        })?;
        let [l2, mean, std, min, max] = self.stats;
        let row = TensorRow {
            tensor: self.tensor,
            dtype: self.dtype,
            shape,
            bytes: self.bytes.max(0) as u64,
            l2,
            mean,
            std,
            min,
            max,
            nonfinite: self.nonfinite.map(|n| n.max(0) as u64),
            delta_l2: self.delta_l2,
        };
        Ok((self.run, ctx_of(label, self.ctx)?, self.line.max(0) as u64, self.checkpoint, row))
    }
}

/// The cells of one `flor_tensors` row past run, line and index: shape as
/// JSON, bytes, nonfinite as the engines' integers.
pub(crate) fn cells(row: &TensorRow) -> (String, i64, Option<i64>) {
    let shape = serde_json::to_string(&row.shape).unwrap_or_else(|_| "[]".into());
    let bytes = i64::try_from(row.bytes).unwrap_or(i64::MAX);
    (shape, bytes, row.nonfinite.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
}

/// One row of [`QUEUE_SQL`].
pub(crate) type RawQueued = (i64, String, crate::rows::RawCheckpoint);

/// The queued checkpoint of a [`RawQueued`].
pub(crate) fn decode_queued(label: &str, raw: RawQueued) -> StoreResult<QueuedCheckpoint> {
    let (run, tstamp, c) = raw;
    Ok(QueuedCheckpoint { run, tstamp, checkpoint: decode_checkpoint(label, c)? })
}
