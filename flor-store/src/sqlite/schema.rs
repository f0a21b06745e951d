//! The SQLite schema: the tables and views of `SCHEMA.md`, its version, and
//! the checks that a file is a flor query database this flor can use.

use std::path::Path;

use flor_core::store::StoreResult;
use rusqlite::{Connection, OpenFlags};

use super::fail;
use crate::rows::unusable;

/// The schema version this crate writes and reads (`PRAGMA user_version`).
///
/// Version 6 names extracted values' source (`extract`, code -1) in the
/// `logs` view; version 5 packs each batch's log and arg values per name for the pivot
/// (`flor_packed`); version 4 keeps checkpoints' tensor statistics (`flor_tensors`, the
/// queue `flor_tensor_queue`, the `tensors` view); version 3 keeps
/// replays' divergence checks (`flor_checks`, the `logs`
/// view's `diverged` column, the `replay_checks` view); version 2 stored
/// loop contexts as spans of consecutive iterations (`flor_loops`);
/// version 1 stored one row per context.
pub const SCHEMA_VERSION: i64 = 6;

/// The tables and views, created in one transaction on a new file.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE flor_runs (
    run         INTEGER PRIMARY KEY,
    projid      TEXT NOT NULL,
    tstamp      TEXT NOT NULL,
    filename    TEXT NOT NULL,
    argv        TEXT NOT NULL,
    interpreter TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    commit_sha  TEXT,
    status      TEXT NOT NULL,
    ended       TEXT,
    nrecords    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (projid, tstamp)
);
CREATE TABLE flor_names (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE flor_loops (
    run             INTEGER NOT NULL,
    first_ctx       INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    parent          INTEGER,
    loop_id         INTEGER NOT NULL,
    first_iteration INTEGER NOT NULL,
    value           TEXT,
    PRIMARY KEY (run, first_ctx)
) WITHOUT ROWID;
CREATE TABLE flor_seq (
    i INTEGER PRIMARY KEY
);
CREATE TABLE flor_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO flor_meta (key, value) VALUES ('max_span', 1);
CREATE INDEX flor_runs_tstamp ON flor_runs (tstamp);
CREATE TABLE flor_records (
    name_id INTEGER NOT NULL,
    run     INTEGER NOT NULL,
    source  INTEGER NOT NULL,
    line    INTEGER NOT NULL,
    ctx     INTEGER,
    kind    INTEGER NOT NULL,
    vtype   INTEGER NOT NULL,
    value,
    PRIMARY KEY (name_id, run, source, line)
) WITHOUT ROWID;
CREATE INDEX flor_records_run_level ON flor_records (run) WHERE ctx IS NULL;
CREATE TABLE flor_packed (
    name_id    INTEGER NOT NULL,
    run        INTEGER NOT NULL,
    source     INTEGER NOT NULL,
    first_line INTEGER NOT NULL,
    last_line  INTEGER NOT NULL,
    vtypes     INTEGER NOT NULL,
    recs       BLOB NOT NULL,
    texts      BLOB NOT NULL,
    PRIMARY KEY (name_id, run, source, first_line)
) WITHOUT ROWID;
CREATE TABLE flor_checkpoints (
    run    INTEGER NOT NULL,
    source INTEGER NOT NULL,
    line   INTEGER NOT NULL,
    ctx    INTEGER,
    name   TEXT NOT NULL,
    digest TEXT NOT NULL,
    bytes  INTEGER NOT NULL,
    format TEXT NOT NULL,
    PRIMARY KEY (run, source, line)
) WITHOUT ROWID;
CREATE TABLE flor_checks (
    run       INTEGER NOT NULL,
    line      INTEGER NOT NULL,
    replay    INTEGER NOT NULL,
    compared  INTEGER NOT NULL,
    differing INTEGER NOT NULL,
    names     TEXT NOT NULL,
    recovered TEXT NOT NULL,
    first_name     TEXT,
    first_at       TEXT,
    first_recorded TEXT,
    first_replayed TEXT,
    body      TEXT NOT NULL,
    PRIMARY KEY (run, line)
) WITHOUT ROWID;
CREATE INDEX flor_checks_replay ON flor_checks (run, replay) WHERE differing > 0;
CREATE TABLE flor_tensors (
    run       INTEGER NOT NULL,
    line      INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    tensor    TEXT NOT NULL,
    dtype     TEXT NOT NULL,
    shape     TEXT NOT NULL,
    bytes     INTEGER NOT NULL,
    l2        REAL,
    mean      REAL,
    std       REAL,
    min       REAL,
    max       REAL,
    nonfinite INTEGER,
    delta_l2  REAL,
    PRIMARY KEY (run, line, idx)
) WITHOUT ROWID;
CREATE INDEX flor_tensors_tensor ON flor_tensors (tensor);
CREATE TABLE flor_tensor_queue (
    run  INTEGER NOT NULL,
    line INTEGER NOT NULL,
    PRIMARY KEY (run, line)
) WITHOUT ROWID;
CREATE TABLE flor_files (
    file   TEXT PRIMARY KEY NOT NULL,
    run    INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    lines  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE VIEW runs AS
SELECT projid, tstamp, filename, status, commit_sha, host, argv, ended
FROM flor_runs;

CREATE VIEW logs AS
SELECT u.projid, u.tstamp, u.filename, r.ctx AS ctx_id, n.name AS value_name, r.value AS value,
       CASE r.vtype WHEN 0 THEN 'int' WHEN 1 THEN 'float' WHEN 2 THEN 'bool' WHEN 3 THEN 'text' WHEN 4 THEN 'json' END
           AS value_type,
       CASE r.kind WHEN 0 THEN 'log' ELSE 'arg' END AS kind,
       CASE r.source WHEN 0 THEN 'forward' WHEN 1 THEN 'replay' ELSE 'extract' END AS source,
       CASE WHEN r.source <> 1 THEN 0 ELSE EXISTS (
           SELECT 1 FROM flor_checks c WHERE c.run = r.run AND c.replay = (r.line >> 42) AND c.differing > 0
       ) END AS diverged
FROM flor_records r
JOIN flor_names n ON n.id = r.name_id
JOIN flor_runs u ON u.run = r.run
WHERE r.kind <= 1;

-- One row per iteration: each span joined with the context ids it covers.
-- `ctx_id` is a column of flor_seq (not an expression), so a lookup by
-- context (logs joined with loops) is a rowid search, and the span holding
-- it one short range search: it starts at most `max_span` contexts earlier.
-- The CASTs and the unary `+` keep the planner from indexing flor_loops on a
-- filtered column and then probing it once per flor_seq row (seconds):
-- flor_loops is read by run (tstamp filters) or in full, then expanded. (A
-- CAST keeps the column's affinity, so `parent_ctx_id = '3'` still matches.)
CREATE VIEW loops AS
SELECT u.projid, u.tstamp, u.filename, k.i AS ctx_id, CAST(l.parent AS INTEGER) AS parent_ctx_id,
       n.name AS loop_name, l.first_iteration + (k.i - l.first_ctx) AS loop_iteration,
       CAST(l.value AS TEXT) AS loop_value
FROM flor_loops l
JOIN flor_names n ON n.id = +l.loop_id
JOIN flor_runs u ON u.run = l.run
JOIN flor_seq k ON k.i >= l.first_ctx AND k.i < l.first_ctx + l.count
    AND l.first_ctx > k.i - (SELECT value FROM flor_meta WHERE key = 'max_span');

CREATE VIEW timings AS
SELECT u.projid, u.tstamp, u.filename, r.ctx AS ctx_id, n.name AS name, r.value AS seconds
FROM flor_records r
JOIN flor_names n ON n.id = r.name_id
JOIN flor_runs u ON u.run = r.run
WHERE r.kind = 2;

CREATE VIEW outputs AS
SELECT u.projid, u.tstamp, u.filename, r.ctx AS ctx_id, n.name AS name, r.value AS value
FROM flor_records r
JOIN flor_names n ON n.id = r.name_id
JOIN flor_runs u ON u.run = r.run
WHERE r.kind = 3;

CREATE VIEW replay_checks AS
SELECT u.projid, u.tstamp, u.filename, c.replay, c.line >> 32 & 1023 AS segment, c.compared, c.differing,
       c.names AS names_compared, c.recovered AS names_recovered,
       c.first_name, c.first_at, c.first_recorded, c.first_replayed
FROM flor_checks c
JOIN flor_runs u ON u.run = c.run;

CREATE VIEW checkpoints AS
SELECT u.projid, u.tstamp, u.filename, c.ctx AS ctx_id, c.name, c.digest, c.bytes, c.format
FROM flor_checkpoints c
JOIN flor_runs u ON u.run = c.run;

CREATE VIEW tensors AS
SELECT u.projid, u.tstamp, u.filename, c.ctx AS ctx_id, c.name AS checkpoint, t.tensor, t.dtype, t.shape, t.bytes,
       t.l2, t.mean, t.std, t.min, t.max, t.nonfinite, t.delta_l2
FROM flor_tensors t
JOIN flor_checkpoints c ON c.run = t.run AND c.source = 0 AND c.line = t.line
JOIN flor_runs u ON u.run = t.run;
"#;

/// Reads `(user_version, number of schema objects)` in one snapshot.
pub(super) fn layout(conn: &Connection, label: &str) -> StoreResult<(i64, i64)> {
    conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_schema)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .map_err(|e| fail(label, "read the schema version", e))
}

pub(super) fn check_layout(label: &str, version: i64, objects: i64) -> StoreResult<()> {
    if version > SCHEMA_VERSION {
        return Err(unusable(
            label,
            &format!(
                "it was written by a newer flor (schema version {version}; this flor reads version \
                 {SCHEMA_VERSION}); upgrade flor to use it as it is"
            ),
        ));
    }
    if version == 0 && objects > 0 {
        return Err(unusable(label, "it is a SQLite database but not a flor query database"));
    }
    if version != 0 && version < SCHEMA_VERSION {
        return Err(unusable(label, &format!("it has an older layout (schema version {version})")));
    }
    Ok(())
}

/// The schema version of the database file at `path` (`PRAGMA
/// user_version`), `None` when it is missing or not a SQLite database.
/// Opens the file read-only and changes nothing.
pub fn schema_version_of(path: &Path) -> Option<i64> {
    if !path.is_file() {
        return None;
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).ok()?;
    conn.query_row("SELECT user_version FROM pragma_user_version", [], |r| r.get(0)).ok()
}
