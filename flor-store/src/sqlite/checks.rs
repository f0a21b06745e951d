//! Replays' divergence checks in `flor_checks` (see `SCHEMA.md`).

use flor_core::check::ReplayCheck;
use flor_core::store::{CheckRow, StoreResult};
use rusqlite::Connection;

use super::fail;
use crate::checks::{cells, row, COLUMNS};

/// Stores a batch's checks (a check at a stored line is replaced).
pub(super) fn store(tx: &Connection, label: &str, run: i64, checks: &[ReplayCheck]) -> StoreResult<()> {
    if checks.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT OR REPLACE INTO flor_checks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    );
    let mut st = tx.prepare_cached(&sql).map_err(|e| fail(label, "store replay checks", e))?;
    for c in checks {
        let x = cells(label, c)?;
        let [a, b, cc, d] = &x.first;
        st.execute(rusqlite::params![
            run,
            x.line,
            x.replay,
            x.compared,
            x.differing,
            x.names,
            x.recovered,
            a,
            b,
            cc,
            d,
            x.body
        ])
        .map_err(|e| fail(label, "store replay checks", e))?;
    }
    Ok(())
}

/// Every stored check, by run and line.
pub(super) fn list(conn: &Connection, label: &str) -> StoreResult<Vec<CheckRow>> {
    let op = "list replay checks";
    let mut st = conn
        .prepare_cached("SELECT run, line, body FROM flor_checks ORDER BY run, line")
        .map_err(|e| fail(label, op, e))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| fail(label, op, e))?;
    rows.into_iter().map(|(run, line, body)| row(label, run, line, &body)).collect()
}
