//! `SqliteStore::scan_outputs`: the captured output lines (`kind = 3`
//! records), read per channel name through the records' primary key.

use flor_core::store::{OutputFilter, OutputRow, StoreResult};
use rusqlite::Connection;

use super::{as_text, fail, source_of};
use crate::rows::ctx_of;

/// Visits the output records `filter` selects: the names `filter` keeps
/// are looked up first (the names table is small), then each is one range
/// of `flor_records`' primary key.
pub(super) fn scan(
    conn: &Connection,
    label: &str,
    filter: OutputFilter<'_>,
    visit: &mut dyn FnMut(OutputRow<'_>),
) -> StoreResult<()> {
    let op = "scan captured output";
    let mut names = conn.prepare_cached("SELECT id, name FROM flor_names").map_err(|e| fail(label, op, e))?;
    let ids: Vec<(i64, String)> = names
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(i64, String)>>>())
        .map_err(|e| fail(label, op, e))?
        .into_iter()
        .filter(|(_, name)| filter.keeps_channel(name))
        .collect();
    let mut st = conn
        .prepare_cached("SELECT run, ctx, source, line, value FROM flor_records WHERE name_id = ?1 AND kind = 3")
        .map_err(|e| fail(label, op, e))?;
    for (id, name) in &ids {
        let mut rows = st.query([id]).map_err(|e| fail(label, op, e))?;
        while let Some(r) = rows.next().map_err(|e| fail(label, op, e))? {
            let (run, ctx, source, line) = (|| -> rusqlite::Result<_> {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })()
            .map_err(|e| fail(label, op, e))?;
            if !filter.keeps_run(run) {
                continue;
            }
            let text = as_text(r.get_ref(4).map_err(|e| fail(label, op, e))?);
            visit(OutputRow {
                run,
                ctx: ctx_of(label, ctx)?,
                source: source_of(label, source)?,
                line: line as u64,
                channel: name,
                text: &text,
            });
        }
    }
    Ok(())
}
