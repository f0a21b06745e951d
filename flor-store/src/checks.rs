//! Replays' divergence checks as both engines store them (`flor_checks`:
//! the check's JSON plus the columns the `logs` and `replay_checks` views
//! read).

use flor_core::check::ReplayCheck;
use flor_core::layout::replay_of_line;
use flor_core::store::{CheckRow, RunKey, StoreResult};

use crate::rows::unusable;

/// Columns of `flor_checks`, in insertion order.
pub(crate) const COLUMNS: &str = "run, line, replay, compared, differing, names, recovered, \
    first_name, first_at, first_recorded, first_replayed, body";

/// The stored columns of `c` after `run`.
pub(crate) struct CheckCells {
    pub(crate) line: i64,
    pub(crate) replay: i64,
    pub(crate) compared: i64,
    pub(crate) differing: i64,
    pub(crate) names: String,
    pub(crate) recovered: String,
    pub(crate) first: [Option<String>; 4],
    pub(crate) body: String,
}

/// Encodes a check for storage.
pub(crate) fn cells(label: &str, c: &ReplayCheck) -> StoreResult<CheckCells> {
    let first = match &c.first {
        Some(d) => [Some(d.name.clone()), Some(d.at.clone()), Some(d.recorded.clone()), Some(d.replayed.clone())],
        None => [None, None, None, None],
    };
    Ok(CheckCells {
        line: c.line as i64,
        replay: replay_of_line(c.line) as i64,
        compared: c.compared as i64,
        differing: c.differing as i64,
        names: json(label, &c.names)?,
        recovered: json(label, &c.recovered)?,
        first,
        body: json(label, c)?,
    })
}

/// Decodes a stored check (`body` as written by [`cells`]).
pub(crate) fn row(label: &str, run: RunKey, line: i64, body: &str) -> StoreResult<CheckRow> {
    let check: ReplayCheck = serde_json::from_str(body)
        .map_err(|e| unusable(label, &format!("a stored replay check is not readable: {e}")))?;
    let line = line as u64;
    Ok(CheckRow { run, replay: replay_of_line(line), check: ReplayCheck { line, ..check } })
}

fn json<T: serde::Serialize>(label: &str, v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| unusable(label, &format!("cannot encode a replay check: {e}")))
}
