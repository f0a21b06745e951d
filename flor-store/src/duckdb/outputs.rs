//! `DuckStore::scan_outputs`: the captured output lines (`kind = 3`
//! records, their text in `tval`).

use duckdb::Connection;
use flor_core::record::Source;
use flor_core::store::{OutputFilter, OutputRow, StoreResult};

use super::fail;
use crate::rows::{ctx_of, unusable};

/// One output record as read: run, ctx, source, line, channel, text.
type RawOutput = (i64, Option<i64>, i8, i64, String, Option<String>);

/// Visits the output records `filter` selects.
pub(super) fn scan(
    conn: &Connection,
    label: &str,
    filter: OutputFilter<'_>,
    visit: &mut dyn FnMut(OutputRow<'_>),
) -> StoreResult<()> {
    let op = "scan captured output";
    let mut st = conn
        .prepare(
            "SELECT r.run, r.ctx, r.source, r.line, n.name, r.tval \
             FROM flor_records r JOIN flor_names n ON n.id = r.name_id WHERE r.kind = 3",
        )
        .map_err(|e| fail(label, op, e))?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .and_then(|rows| rows.collect::<duckdb::Result<Vec<RawOutput>>>())
        .map_err(|e| fail(label, op, e))?;
    for (run, ctx, source, line, channel, text) in rows {
        if !filter.keeps_run(run) || !filter.keeps_channel(&channel) {
            continue;
        }
        let source = Source::from_code(i64::from(source))
            .ok_or_else(|| unusable(label, &format!("a record has an unknown source code {source}")))?;
        visit(OutputRow {
            run,
            ctx: ctx_of(label, ctx)?,
            source,
            line: line as u64,
            channel: &channel,
            text: text.as_deref().unwrap_or(""),
        });
    }
    Ok(())
}
