//! `flor_packed`: the log and arg values of each ingested batch, one row per
//! name, run and source, packed into a blob that the pivot reads without a
//! SQLite row per value.
//!
//! `flor_records` keeps one row per value for the SQL views; reading 10M of
//! them costs SQLite's virtual machine about 100 ns per row and column
//! touched (2.4 s for the five a pivot needs, on one core here), more than
//! the whole pivot. The same values packed 20 bytes each read at memory
//! speed. Both tables are written in the same transaction, and a value
//! ingested again replaces the packed one exactly as it replaces the row:
//! per name, source and line.
//!
//! A row: `(name_id, run, source, first_line)` key, `last_line`, `vtypes`
//! (bit `1 << ValueType::code()` for each value type present), `recs` (per
//! value, in line order: line as u64, context as u32 with `u32::MAX` at run
//! level, value as u64: an int's bits, a float's bits — NaN included —, a
//! bool's 0 or 1, or the index of its text in `texts`) and `texts` (each
//! text or JSON value as a u32 byte length and its UTF-8 bytes).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flor_core::record::Record;
use flor_core::store::StoreResult;
use flor_core::value::Value;
use rusqlite::{params, Connection};

use super::fail;
use crate::rows::unusable;

/// Bytes per packed value.
pub(crate) const REC_BYTES: usize = 20;

/// Run-level context in `recs`.
pub(crate) const RUN_LEVEL: u32 = u32::MAX;

/// One name's values of one batch, packed.
#[derive(Default)]
struct Chunk {
    lines: Vec<u64>,
    recs: Vec<u8>,
    texts: Vec<u8>,
    ntexts: u64,
    vtypes: i64,
}

impl Chunk {
    fn push(&mut self, line: u64, ctx: Option<u32>, value: &Value) {
        let v = match value {
            Value::Int(i) => *i as u64,
            Value::Float(f) => f.to_bits(),
            Value::Bool(b) => u64::from(*b),
            Value::Text(s) | Value::Json(s) => {
                self.texts.extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.texts.extend_from_slice(s.as_bytes());
                self.ntexts += 1;
                self.ntexts - 1
            }
        };
        self.vtypes |= 1 << value.value_type().code();
        self.lines.push(line);
        push_rec(&mut self.recs, line, ctx.unwrap_or(RUN_LEVEL), v);
    }
}

fn push_rec(out: &mut Vec<u8>, line: u64, ctx: u32, v: u64) {
    out.extend_from_slice(&line.to_le_bytes());
    out.extend_from_slice(&ctx.to_le_bytes());
    out.extend_from_slice(&v.to_le_bytes());
}

/// One packed value read back: `(line, ctx, value)`.
pub(crate) fn rec_at(recs: &[u8], i: usize) -> (u64, u32, u64) {
    let b = &recs[i * REC_BYTES..(i + 1) * REC_BYTES];
    let word = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a[..r.len()].copy_from_slice(&b[r]);
        u64::from_le_bytes(a)
    };
    (word(0..8), word(8..12) as u32, word(12..20))
}

/// The texts of a `texts` blob, in order (`label` names the database in
/// errors).
pub(crate) fn texts_of(label: &str, blob: &[u8], out: &mut Vec<Arc<str>>) -> StoreResult<()> {
    let mut at = 0;
    while at < blob.len() {
        let len = blob.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let text = len.and_then(|n| blob.get(at + 4..at + 4 + n));
        let Some(text) = text else { return Err(unusable(label, "a packed text value is cut short")) };
        out.push(Arc::from(String::from_utf8_lossy(text)));
        at += 4 + text.len();
    }
    Ok(())
}

/// Packs the log and arg values among `records` (of run `run`, from
/// `source`; `ids[i]` is record `i`'s name id): one row per name, after
/// taking the lines they replace out of the rows stored before.
pub(super) fn store(
    tx: &Connection,
    label: &str,
    run: i64,
    source: i64,
    records: &[Record],
    ids: &[i64],
) -> StoreResult<()> {
    let mut chunks: BTreeMap<i64, Chunk> = BTreeMap::new();
    for (r, &id) in records.iter().zip(ids) {
        if r.kind.code() <= 1 {
            chunks.entry(id).or_default().push(r.line, r.ctx, &r.value);
        }
    }
    let err = |op: &'static str| move |e: rusqlite::Error| fail(label, op, e);
    for (id, chunk) in chunks {
        let (Some(&first), Some(&last)) = (chunk.lines.iter().min(), chunk.lines.iter().max()) else { continue };
        replace_overlapping(tx, label, (id, run, source), first, last, &chunk.lines)?;
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO flor_packed (name_id, run, source, first_line, last_line, vtypes, recs, texts) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(err("pack values"))?;
        ins.execute(params![id, run, source, first as i64, last as i64, chunk.vtypes, chunk.recs, chunk.texts])
            .map_err(err("pack values"))?;
    }
    Ok(())
}

/// Takes `lines` out of the stored rows of `(name, run, source)` whose line
/// range meets `first..=last` (values ingested again: rare), keeping the
/// rest of each row.
fn replace_overlapping(
    tx: &Connection,
    label: &str,
    (id, run, source): (i64, i64, i64),
    first: u64,
    last: u64,
    lines: &[u64],
) -> StoreResult<()> {
    let err = |op: &'static str| move |e: rusqlite::Error| fail(label, op, e);
    let mut st = tx
        .prepare_cached(
            "SELECT first_line, vtypes, recs, texts FROM flor_packed \
             WHERE name_id = ?1 AND run = ?2 AND source = ?3 AND first_line <= ?5 AND last_line >= ?4",
        )
        .map_err(err("pack values"))?;
    let old: Vec<(i64, i64, Vec<u8>, Vec<u8>)> = st
        .query_map(params![id, run, source, first as i64, last as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default()))
        })
        .and_then(|rows| rows.collect())
        .map_err(err("pack values"))?;
    if old.is_empty() {
        return Ok(());
    }
    let replaced: HashSet<u64> = lines.iter().copied().collect();
    for (old_first, vtypes, recs, texts) in old {
        tx.execute(
            "DELETE FROM flor_packed WHERE name_id = ?1 AND run = ?2 AND source = ?3 AND first_line = ?4",
            params![id, run, source, old_first],
        )
        .map_err(err("pack values"))?;
        let mut kept = Vec::with_capacity(recs.len());
        let mut kept_lines = Vec::new();
        for i in 0..recs.len() / REC_BYTES {
            let (line, ctx, v) = rec_at(&recs, i);
            if !replaced.contains(&line) {
                push_rec(&mut kept, line, ctx, v);
                kept_lines.push(line);
            }
        }
        let (Some(&f), Some(&l)) = (kept_lines.first(), kept_lines.last()) else { continue };
        // Text indices stay valid: the texts blob is kept whole.
        tx.execute(
            "INSERT INTO flor_packed (name_id, run, source, first_line, last_line, vtypes, recs, texts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, run, source, f as i64, l as i64, vtypes, kept, texts],
        )
        .map_err(err("pack values"))?;
    }
    Ok(())
}
