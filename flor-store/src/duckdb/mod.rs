//! The DuckDB backend (cargo feature `duckdb`): [`DuckStore`].
//!
//! `mod.rs` holds the store (opening, ingestion, scans, listings);
//! `pivot.rs` its own `dataframe` plan; `query.rs` user queries and
//! `write_parquet`. `SCHEMA.md` beside them documents the tables and views
//! (and what differs from SQLite).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use duckdb::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, Int8Type};
use duckdb::{params, Config, Connection, OptionalExt};
use flor_core::record::{CheckpointMeta, RecordKind, RunStatus, Source};
use flor_core::store::{
    FileProgress, IngestBatch, LoopSpan, NameInfo, OutputFilter, OutputRow, QueuedCheckpoint, RunKey, RunRow, Store,
    StoreError, StoreResult, TensorFilter, TensorRow, TensorVisit, ValueFilter, ValueRow,
};
use flor_core::table::Table;
use flor_core::value::{Value, ValueType};

use crate::rows::{decode_checkpoint, raw_run, unusable, RawCheckpoint, RawRun, CHECKPOINTS_SQL, RUNS_SQL};
use crate::spans::{self, Span};

/// The schema version this backend writes and reads (`flor_meta`).
///
/// Version 4 names extracted values' source (`extract`, code -1) in the
/// `logs` view ([`MIGRATE_3_TO_4`]); version 3 adds checkpoints' tensor statistics (`flor_tensors`, the
/// queue `flor_tensor_queue`, the `tensors` view); version 2 added replays'
/// divergence checks (`flor_checks`, the `logs` view's `diverged` column,
/// the `replay_checks` view). Older files are upgraded in place when
/// opened ([`MIGRATE_1_TO_2`], [`MIGRATE_2_TO_3`], [`MIGRATE_3_TO_4`]).
pub const DUCKDB_SCHEMA_VERSION: i64 = 4;

mod outputs;
mod pivot;
mod query;
mod tensors;

pub use query::write_parquet;

const BACKEND: &str = "duckdb";

/// Name scans read about this many records per query (see
/// `DuckStore::run_slices`).
const SCAN_SLICE_RECORDS: i64 = 1 << 20;

/// The longest stored span, as in the SQLite backend (the same spans come
/// back from `scan_loops` on both engines).
const MAX_SPAN: i64 = 1 << 12;

/// The tables holding data (emptied by [`Store::clear`]).
const DATA_TABLES: &[&str] = &[
    "flor_runs",
    "flor_names",
    "flor_loops",
    "flor_records",
    "flor_checkpoints",
    "flor_checks",
    "flor_tensors",
    "flor_tensor_queue",
    "flor_files",
];

/// The divergence-check table and the views that read it (also what
/// [`MIGRATE_1_TO_2`] adds to a version 1 file).
const CHECKS_SCHEMA: &str = r#"
CREATE TABLE flor_checks (
    run       BIGINT NOT NULL,
    line      BIGINT NOT NULL,
    replay    BIGINT NOT NULL,
    compared  BIGINT NOT NULL,
    differing BIGINT NOT NULL,
    names     VARCHAR NOT NULL,
    recovered VARCHAR NOT NULL,
    first_name     VARCHAR,
    first_at       VARCHAR,
    first_recorded VARCHAR,
    first_replayed VARCHAR,
    body      VARCHAR NOT NULL
);

CREATE OR REPLACE VIEW logs AS
SELECT u.projid, u.tstamp, u.filename, r.ctx AS ctx_id, n.name AS value_name,
       CASE WHEN r.vtype IN (0, 2) THEN CAST(r.ival AS UNION(i BIGINT, f DOUBLE, t VARCHAR))
            WHEN r.vtype = 1 THEN CASE WHEN isnan(r.fval) THEN NULL
                                       ELSE CAST(r.fval AS UNION(i BIGINT, f DOUBLE, t VARCHAR)) END
            ELSE CAST(r.tval AS UNION(i BIGINT, f DOUBLE, t VARCHAR)) END AS value,
       CASE r.vtype WHEN 0 THEN 'int' WHEN 1 THEN 'float' WHEN 2 THEN 'bool' WHEN 3 THEN 'text' WHEN 4 THEN 'json' END
           AS value_type,
       CASE r.kind WHEN 0 THEN 'log' ELSE 'arg' END AS kind,
       CASE r.source WHEN 0 THEN 'forward' WHEN 1 THEN 'replay' ELSE 'extract' END AS source,
       CASE WHEN r.source <> 1 THEN 0
            WHEN EXISTS (SELECT 1 FROM flor_checks c
                         WHERE c.run = r.run AND c.replay = (r.line >> 42) AND c.differing > 0) THEN 1
            ELSE 0 END AS diverged
FROM flor_records r
JOIN flor_names n ON n.id = r.name_id
JOIN flor_runs u ON u.run = r.run
WHERE r.kind <= 1;

CREATE OR REPLACE VIEW replay_checks AS
SELECT u.projid, u.tstamp, u.filename, c.replay, (c.line >> 32) & 1023 AS segment, c.compared, c.differing,
       c.names AS names_compared, c.recovered AS names_recovered,
       c.first_name, c.first_at, c.first_recorded, c.first_replayed
FROM flor_checks c
JOIN flor_runs u ON u.run = c.run;
"#;

/// Upgrades a version 1 file (no divergence checks) to version 2.
const MIGRATE_1_TO_2: &str = "UPDATE flor_meta SET value = 2 WHERE key = 'schema_version';";

/// The tensor-statistics tables and view (also what [`MIGRATE_2_TO_3`]
/// adds to a version 2 file).
const TENSORS_SCHEMA: &str = r#"
CREATE TABLE flor_tensors (
    run       BIGINT NOT NULL,
    line      BIGINT NOT NULL,
    idx       BIGINT NOT NULL,
    tensor    VARCHAR NOT NULL,
    dtype     VARCHAR NOT NULL,
    shape     VARCHAR NOT NULL,
    bytes     BIGINT NOT NULL,
    l2        DOUBLE,
    mean      DOUBLE,
    std       DOUBLE,
    min       DOUBLE,
    max       DOUBLE,
    nonfinite BIGINT,
    delta_l2  DOUBLE
);
CREATE TABLE flor_tensor_queue (run BIGINT NOT NULL, line BIGINT NOT NULL);

CREATE OR REPLACE VIEW tensors AS
SELECT u.projid, u.tstamp, u.filename, c.ctx AS ctx_id, c.name AS checkpoint, t.tensor, t.dtype, t.shape, t.bytes,
       t.l2, t.mean, t.std, t.min, t.max, t.nonfinite, t.delta_l2
FROM flor_tensors t
JOIN flor_checkpoints c ON c.run = t.run AND c.source = 0 AND c.line = t.line
JOIN flor_runs u ON u.run = t.run;
"#;

/// Upgrades a version 2 file to version 3 (after [`TENSORS_SCHEMA`]):
/// every forward checkpoint stored waits for its tensors.
const MIGRATE_2_TO_3: &str = "INSERT INTO flor_tensor_queue SELECT run, line FROM flor_checkpoints WHERE source = 0; \
     UPDATE flor_meta SET value = 3 WHERE key = 'schema_version';";

/// Upgrades a version 3 file to version 4: the `logs` view again (from
/// [`CHECKS_SCHEMA`]), now naming extracted values' source.
const MIGRATE_3_TO_4: &str = "UPDATE flor_meta SET value = 4 WHERE key = 'schema_version';";

/// The `logs` and `replay_checks` views of [`CHECKS_SCHEMA`] (both
/// `CREATE OR REPLACE`), for [`MIGRATE_3_TO_4`].
fn views() -> &'static str {
    CHECKS_SCHEMA.find("CREATE OR REPLACE VIEW logs").map_or("", |at| &CHECKS_SCHEMA[at..])
}

const SCHEMA: &str = r#"
CREATE TABLE flor_meta (key VARCHAR NOT NULL, value BIGINT NOT NULL);
CREATE TABLE flor_runs (
    run         BIGINT NOT NULL,
    projid      VARCHAR NOT NULL,
    tstamp      VARCHAR NOT NULL,
    filename    VARCHAR NOT NULL,
    argv        VARCHAR NOT NULL,
    interpreter VARCHAR NOT NULL,
    host        VARCHAR NOT NULL,
    pid         BIGINT NOT NULL,
    commit_sha  VARCHAR,
    status      VARCHAR NOT NULL,
    ended       VARCHAR,
    nrecords    BIGINT NOT NULL
);
CREATE TABLE flor_names (id INTEGER NOT NULL, name VARCHAR NOT NULL);
CREATE TABLE flor_loops (
    run             BIGINT NOT NULL,
    first_ctx       BIGINT NOT NULL,
    count           BIGINT NOT NULL,
    parent          BIGINT,
    loop_id         INTEGER NOT NULL,
    first_iteration BIGINT NOT NULL,
    value           VARCHAR
);
CREATE TABLE flor_records (
    name_id INTEGER NOT NULL,
    run     BIGINT NOT NULL,
    source  TINYINT NOT NULL,
    line    BIGINT NOT NULL,
    ctx     BIGINT,
    kind    TINYINT NOT NULL,
    vtype   TINYINT NOT NULL,
    ival    BIGINT,
    fval    DOUBLE,
    tval    VARCHAR
);
CREATE TABLE flor_checkpoints (
    run    BIGINT NOT NULL,
    source TINYINT NOT NULL,
    line   BIGINT NOT NULL,
    ctx    BIGINT,
    name   VARCHAR NOT NULL,
    digest VARCHAR NOT NULL,
    bytes  BIGINT NOT NULL,
    format VARCHAR NOT NULL
);
CREATE TABLE flor_files (file VARCHAR NOT NULL, run BIGINT NOT NULL, done_bytes BIGINT NOT NULL, done_lines BIGINT NOT NULL);

CREATE VIEW runs AS
SELECT projid, tstamp, filename, status, commit_sha, host, argv, ended FROM flor_runs;

CREATE VIEW loops AS
SELECT u.projid, u.tstamp, u.filename, l.ctx_id, l.parent AS parent_ctx_id, n.name AS loop_name,
       l.first_iteration + (l.ctx_id - l.first_ctx) AS loop_iteration, l.value AS loop_value
FROM (SELECT *, unnest(range(first_ctx, first_ctx + count)) AS ctx_id FROM flor_loops) l
JOIN flor_names n ON n.id = l.loop_id
JOIN flor_runs u ON u.run = l.run;

CREATE VIEW timings AS
SELECT u.projid, u.tstamp, u.filename, r.ctx AS ctx_id, n.name AS name,
       CASE WHEN r.vtype = 1 THEN r.fval ELSE CAST(r.ival AS DOUBLE) END AS seconds
FROM flor_records r
JOIN flor_names n ON n.id = r.name_id
JOIN flor_runs u ON u.run = r.run
WHERE r.kind = 2;

CREATE VIEW outputs AS
SELECT u.projid, u.tstamp, u.filename, r.ctx AS ctx_id, n.name AS name, r.tval AS value
FROM flor_records r
JOIN flor_names n ON n.id = r.name_id
JOIN flor_runs u ON u.run = r.run
WHERE r.kind = 3;

CREATE VIEW checkpoints AS
SELECT u.projid, u.tstamp, u.filename, c.ctx AS ctx_id, c.name, c.digest, c.bytes, c.format
FROM flor_checkpoints c
JOIN flor_runs u ON u.run = c.run;
"#;

/// A flor query database in DuckDB. See the crate docs.
///
/// DuckDB lets one process at a time open a database file for writing: a
/// second process gets a clear error until the first closes it.
pub struct DuckStore {
    conn: Connection,
    /// The path (for messages), or `:memory:`.
    label: String,
    /// Interned names; this connection is the only writer, so the cache
    /// stays valid until [`Store::clear`].
    names: HashMap<Box<str>, i32>,
    /// Names by id, for scans.
    by_id: HashMap<i32, Arc<str>>,
    /// Name scans read about this many records per query.
    scan_slice: i64,
    /// Run keys by `(projid, tstamp)`, and the next key (only writer).
    runs_by_key: HashMap<(String, String), i64>,
    next_run: i64,
    /// Files with stored progress, and that progress (only writer): a
    /// known file's progress is one UPDATE, a new one's one INSERT (each
    /// DuckDB statement costs a fraction of a millisecond even prepared),
    /// and `file_progress` answers without a query (a sync asks once per
    /// run ref: a scan of `flor_files` each was quadratic in the runs).
    files: HashMap<Box<str>, FileProgress>,
    /// The open group of ingestion steps (see [`Store::begin_group`]).
    group: Option<Group>,
}

/// An open group: one DuckDB transaction over several ingestion steps, and
/// the caches as they were before it (restored when it is discarded).
struct Group {
    names: HashMap<Box<str>, i32>,
    by_id: HashMap<i32, Arc<str>>,
    runs_by_key: HashMap<(String, String), i64>,
    next_run: i64,
    files: HashMap<Box<str>, FileProgress>,
    /// A step (or appending held-back rows) failed: the transaction can
    /// only be rolled back.
    failed: Cell<bool>,
    /// Rows of runs new in this group, appended when the group ends or
    /// before anything reads them.
    pending: RefCell<Pending>,
}

/// Rows held back inside a group: a new run's records, loop spans, run row
/// and file progress go to DuckDB with one appender per table for the
/// whole group instead of several statements per step (each costs a
/// fraction of a millisecond). Reads flush them first.
#[derive(Default)]
struct Pending {
    records: Vec<RecordBatch>,
    loops: Vec<(i64, i64, Span)>,
    /// New runs' rows, and where each is.
    runs: Vec<RunRowOut>,
    run_at: HashMap<i64, usize>,
    /// New files' progress rows `(file, run, bytes, lines)`, and where.
    files: Vec<(Box<str>, i64, i64, i64)>,
    file_at: HashMap<Box<str>, usize>,
}

/// A `flor_runs` row.
struct RunRowOut {
    run: i64,
    projid: String,
    tstamp: String,
    filename: String,
    argv: String,
    interpreter: String,
    host: String,
    pid: i64,
    commit: Option<String>,
    status: &'static str,
    ended: Option<String>,
    nrecords: i64,
}

impl RunRowOut {
    fn of(run: i64, m: &flor_core::RunMeta, argv: String, nrecords: i64) -> RunRowOut {
        RunRowOut {
            run,
            projid: m.projid.clone(),
            tstamp: m.tstamp.clone(),
            filename: m.filename.clone(),
            argv,
            interpreter: m.interpreter.clone(),
            host: m.host.clone(),
            pid: i64::from(m.pid),
            commit: m.commit.clone(),
            status: m.status.as_str(),
            ended: m.ended.clone(),
            nrecords,
        }
    }

    /// The row's cells, in `flor_runs`'s column order.
    fn cells(&self) -> [&dyn duckdb::ToSql; 12] {
        [
            &self.run,
            &self.projid,
            &self.tstamp,
            &self.filename,
            &self.argv,
            &self.interpreter,
            &self.host,
            &self.pid,
            &self.commit,
            &self.status,
            &self.ended,
            &self.nrecords,
        ]
    }

    /// This row after a later step of the same run: metadata replaced,
    /// record count grown.
    fn update(&mut self, later: RunRowOut) {
        let nrecords = self.nrecords + later.nrecords;
        *self = RunRowOut { nrecords, ..later };
    }
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.loops.is_empty() && self.runs.is_empty() && self.files.is_empty()
    }

    /// Appends every held row (one appender per table), then forgets them.
    fn flush(&mut self, conn: &Connection) -> duckdb::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if !self.records.is_empty() {
            let mut app = conn.appender("flor_records")?;
            for batch in self.records.drain(..) {
                app.append_record_batch(batch)?;
            }
            app.flush()?;
        }
        if !self.loops.is_empty() {
            let mut app = conn.appender("flor_loops")?;
            for (run, first, s) in self.loops.drain(..) {
                app.append_row(params![run, first, s.count, s.parent, s.loop_id as i32, s.first_iteration, s.value])?;
            }
            app.flush()?;
        }
        if !self.runs.is_empty() {
            let mut app = conn.appender("flor_runs")?;
            for r in self.runs.drain(..) {
                app.append_row(r.cells())?;
            }
            app.flush()?;
        }
        if !self.files.is_empty() {
            let mut app = conn.appender("flor_files")?;
            for (file, run, bytes, lines) in self.files.drain(..) {
                app.append_row(params![&*file, run, bytes, lines])?;
            }
            app.flush()?;
        }
        self.run_at.clear();
        self.file_at.clear();
        Ok(())
    }
}

impl fmt::Debug for DuckStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuckStore").field("path", &self.label).finish_non_exhaustive()
    }
}

fn config() -> duckdb::Result<Config> {
    // No file access from user queries (read_csv, COPY, ATTACH) and no
    // extension downloads: the query database is the only file touched.
    // NULLs sort first ascending and last descending, as in SQLite, so
    // that `ORDER BY` answers are the same on both engines.
    Config::default()
        .enable_external_access(false)?
        .enable_autoload_extension(false)?
        .with("default_null_order", "nulls_first_on_asc_last_on_desc")
}

impl DuckStore {
    /// Opens (creating it and its parent folders if needed) the database at
    /// `path`.
    ///
    /// Fails (leaving the file untouched) with [`StoreError::Damaged`]
    /// when the file is not a DuckDB database, with [`StoreError::Unusable`]
    /// when it is not a flor query database of this version; with [`StoreError::Backend`] when another process
    /// has it open.
    pub fn open(path: &Path) -> crate::Result<DuckStore> {
        crate::create_parent(path)?;
        let label = path.display().to_string();
        // Another process with the file open holds its lock: wait for it
        // up to LOCK_TIMEOUT, as SQLite's busy timeout does.
        let started = std::time::Instant::now();
        let conn = loop {
            match config().and_then(|c| Connection::open_with_flags(path, c)) {
                Ok(conn) => break conn,
                Err(e) if is_lock_conflict(&e) && started.elapsed() < LOCK_TIMEOUT => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(open_error(&label, e).into()),
            }
        };
        Ok(DuckStore::init(conn, label)?)
    }

    /// A private, empty in-memory database (for tests and one-shot queries).
    pub fn open_in_memory() -> crate::Result<DuckStore> {
        let label = ":memory:".to_owned();
        let conn = config()
            .and_then(Connection::open_in_memory_with_flags)
            .map_err(|e| fail(&label, "open an in-memory database", e))?;
        Ok(DuckStore::init(conn, label)?)
    }

    /// The database path (`:memory:` for an in-memory store).
    pub fn path(&self) -> &str {
        &self.label
    }

    fn init(conn: Connection, label: String) -> StoreResult<DuckStore> {
        let l = label.as_str();
        let mut tables: Vec<String> = conn
            .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| fail(l, "read the schema", e))?;
        if tables.is_empty() {
            conn.execute_batch(&format!(
                "BEGIN TRANSACTION; {SCHEMA} {CHECKS_SCHEMA} {TENSORS_SCHEMA} INSERT INTO flor_meta VALUES ('schema_version', {DUCKDB_SCHEMA_VERSION}); COMMIT;"
            ))
            .map_err(|e| fail(l, "create the schema", e))?;
        } else {
            if !tables.iter().any(|t| t == "flor_meta") {
                return Err(unusable(l, "it is a DuckDB database but not a flor query database"));
            }
            let version: Option<i64> = conn
                .query_row("SELECT value FROM flor_meta WHERE key = 'schema_version'", [], |r| r.get(0))
                .optional()
                .map_err(|e| fail(l, "read the schema version", e))?;
            match version {
                Some(DUCKDB_SCHEMA_VERSION) => {}
                Some(v @ (1 | 2)) => {
                    let to_2 = if v == 1 { format!("{CHECKS_SCHEMA} {MIGRATE_1_TO_2}") } else { String::new() };
                    let views = views();
                    conn.execute_batch(&format!(
                        "BEGIN TRANSACTION; {to_2} {TENSORS_SCHEMA} {MIGRATE_2_TO_3} {views} {MIGRATE_3_TO_4} COMMIT;"
                    ))
                    .map_err(|e| fail(l, "upgrade the schema to version 4", e))?;
                    tables.extend(["flor_checks", "flor_tensors", "flor_tensor_queue"].map(String::from));
                }
                Some(3) => {
                    let views = views();
                    conn.execute_batch(&format!("BEGIN TRANSACTION; {views} {MIGRATE_3_TO_4} COMMIT;"))
                        .map_err(|e| fail(l, "upgrade the schema to version 4", e))?;
                }
                Some(v) if v > DUCKDB_SCHEMA_VERSION => {
                    return Err(unusable(
                        l,
                        &format!(
                            "it was written by a newer flor (schema version {v}; this flor reads version \
                             {DUCKDB_SCHEMA_VERSION}); upgrade flor to use it as it is"
                        ),
                    ))
                }
                Some(v) => return Err(unusable(l, &format!("it has an older layout (schema version {v})"))),
                None => return Err(unusable(l, "its schema version is missing")),
            }
            for t in DATA_TABLES {
                if !tables.iter().any(|x| x == t) {
                    return Err(unusable(l, "some of its tables are missing"));
                }
            }
        }
        let mut store = DuckStore {
            conn,
            label,
            names: HashMap::new(),
            by_id: HashMap::new(),
            scan_slice: SCAN_SLICE_RECORDS,
            runs_by_key: HashMap::new(),
            next_run: 1,
            files: HashMap::new(),
            group: None,
        };
        store.load_names()?;
        store.load_runs()?;
        Ok(store)
    }

    fn fail(&self, op: &str, e: duckdb::Error) -> StoreError {
        fail(&self.label, op, e)
    }

    /// Name scans (the pivot's main read) query about `records` value
    /// records at a time, a slice of runs each, so that DuckDB never holds
    /// a whole large scan in memory. Defaults to 1,048,576.
    pub fn set_scan_slice(&mut self, records: i64) {
        self.scan_slice = records.max(1);
    }

    fn load_runs(&mut self) -> StoreResult<()> {
        let rows: Vec<(i64, String, String)> = self
            .conn
            .prepare("SELECT run, projid, tstamp FROM flor_runs")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(|e| fail(&self.label, "read runs", e))?;
        self.runs_by_key.clear();
        self.next_run = rows.iter().map(|r| r.0).max().unwrap_or(0) + 1;
        for (run, projid, tstamp) in rows {
            self.runs_by_key.insert((projid, tstamp), run);
        }
        let files: Vec<(String, i64, i64)> = self
            .conn
            .prepare("SELECT file, done_bytes, done_lines FROM flor_files")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(|e| fail(&self.label, "read file progress", e))?;
        self.files = files
            .into_iter()
            .map(|(file, offset, lines)| {
                (file.into_boxed_str(), FileProgress { offset: offset as u64, lines: lines as u64 })
            })
            .collect();
        Ok(())
    }

    fn load_names(&mut self) -> StoreResult<()> {
        let rows: Vec<(i32, String)> = self
            .conn
            .prepare("SELECT id, name FROM flor_names")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| fail(&self.label, "read names", e))?;
        self.names.clear();
        self.by_id.clear();
        for (id, name) in rows {
            self.by_id.insert(id, name.as_str().into());
            self.names.insert(name.into(), id);
        }
        Ok(())
    }

    /// Ingests one batch, in its own transaction or the open group's, step
    /// by step: name ids, the run's key, held-back rows the batch reads, new
    /// names, loop spans, records, the run row, checkpoints, file progress;
    /// the caches learn what was stored once the transaction commits.
    fn ingest_tx(&mut self, b: &IngestBatch<'_>) -> StoreResult<RunKey> {
        let label = self.label.as_str();
        let err = |op: &'static str| move |e: duckdb::Error| fail(label, op, e);
        let m = b.run;
        let argv = crate::rows::argv_json(BACKEND, m)?;
        let names = self.batch_names(b);

        // Few statements, prepared once per connection: each DuckDB
        // statement costs about a millisecond to plan on a small machine.
        let existing = self.runs_by_key.get(&(m.projid.clone(), m.tstamp.clone())).copied();
        let run = existing.unwrap_or(self.next_run);
        let source = b.source.code() as i8;
        // Its own transaction, or the open group's.
        let own = match &self.group {
            Some(g) if g.failed.get() => {
                return Err(StoreError::Backend {
                    backend: BACKEND,
                    message: format!("{label}: an earlier step of this ingestion group failed; end the group"),
                    source: None,
                })
            }
            Some(_) => None,
            None => Some(self.conn.unchecked_transaction().map_err(err("start an ingestion transaction"))?),
        };
        let tx: &Connection = match &own {
            Some(t) => t,
            None => &self.conn,
        };
        // Inside a group, a new run's rows are held back (see `Pending`); a
        // step that reads a held-back run's rows flushes them first.
        let pending = self.group.as_ref().map(|g| &g.pending);
        let step = IngestStep {
            tx,
            label,
            run,
            source,
            stored: existing.is_some(),
            pending,
            defer: pending.filter(|_| existing.is_none()),
        };
        step.flush_held(!names.spans.is_empty() || !b.records.is_empty())?;
        step.intern(&names.new)?;
        step.loops(names.spans)?;
        let added = step.records(b.records, &names.records)?;
        // The run: metadata replaced, record count grown.
        step.run_row(RunRowOut::of(run, m, argv, added))?;
        step.checkpoints(b.checkpoints)?;
        step.checks(b.checks)?;
        let known = self.files.contains_key(b.file);
        step.progress(b, known)?;
        // (Consumed whole, so that the caches below can be updated.)
        own.map(|t| t.commit()).transpose().map_err(err("commit an ingestion transaction"))?;
        self.remember(b, run, existing.is_none(), names.new);
        Ok(run)
    }

    /// The batch's name ids: known ones from the cache, new ones numbered
    /// here and inserted in the transaction (this connection is the only
    /// writer).
    fn batch_names(&self, b: &IngestBatch<'_>) -> BatchNames {
        let mut new_names: Vec<(i32, Box<str>)> = Vec::new();
        let mut next_id = self.by_id.keys().max().map_or(1, |m| m + 1);
        let known = &self.names;
        let mut id_of = |name: &str| -> i32 {
            if let Some(&id) = known.get(name) {
                return id;
            }
            if let Some((id, _)) = new_names.iter().find(|(_, n)| **n == *name) {
                return *id;
            }
            let id = next_id;
            next_id += 1;
            new_names.push((id, name.into()));
            id
        };
        let mut record_ids: Vec<i32> = Vec::with_capacity(b.records.len());
        let mut last: Option<(*const u8, i32)> = None;
        for r in b.records {
            let ptr = r.name.as_ptr();
            let id = match last {
                Some((p, id)) if p == ptr => id,
                _ => id_of(&r.name),
            };
            last = Some((ptr, id));
            record_ids.push(id);
        }
        let spans: Vec<(i64, Span)> = LoopSpan::compress(b.loops)
            .iter()
            .map(|l| (i64::from(l.first_ctx), Span::of(l, i64::from(id_of(&l.name)))))
            .collect();
        BatchNames { records: record_ids, spans, new: new_names }
    }

    /// The caches after a committed step: the file's stored progress, a
    /// new run its key, new names their ids.
    fn remember(&mut self, b: &IngestBatch<'_>, run: i64, new_run: bool, new_names: Vec<(i32, Box<str>)>) {
        match self.files.get_mut(b.file) {
            Some(p) => *p = b.progress,
            None => {
                self.files.insert(b.file.into(), b.progress);
            }
        }
        if new_run {
            self.runs_by_key.insert((b.run.projid.clone(), b.run.tstamp.clone()), run);
            self.next_run = run + 1;
        }
        for (id, name) in new_names {
            self.by_id.insert(id, Arc::from(&*name));
            self.names.insert(name, id);
        }
    }

    /// Run key ranges `(lo, hi)` covering every run, each holding about
    /// `records` value records (at least one run).
    fn run_slices(&self, records: i64) -> StoreResult<Vec<(i64, i64)>> {
        let rows: Vec<(i64, i64)> = self
            .conn
            .prepare("SELECT run, nrecords FROM flor_runs ORDER BY run")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.fail("plan a scan", e))?;
        let mut out: Vec<(i64, i64)> = Vec::new();
        let mut acc = 0;
        for (run, n) in rows {
            match out.last_mut() {
                Some(last) if acc + n <= records || acc == 0 => {
                    last.1 = run;
                    acc += n;
                }
                _ => {
                    out.push((run, run));
                    acc = n;
                }
            }
        }
        Ok(out)
    }

    fn name_ids(&self, names: &[&str]) -> Vec<(i32, usize)> {
        let mut ids: Vec<(i32, usize)> = Vec::new();
        for (k, n) in names.iter().enumerate() {
            if let Some(&id) = self.names.get(*n) {
                if !ids.iter().any(|(i, _)| *i == id) {
                    ids.push((id, k));
                }
            }
        }
        ids
    }

    fn name_of(&self, id: i32) -> StoreResult<&Arc<str>> {
        self.by_id.get(&id).ok_or_else(|| unusable(&self.label, &format!("name id {id} is missing")))
    }

    /// Runs `sql` (with `params`) and visits the result's record batches.
    fn batches(
        &self,
        op: &str,
        sql: &str,
        params: &[&dyn duckdb::ToSql],
        visit: &mut dyn FnMut(&RecordBatch) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.fail(op, e))?;
        let arrow = st.query_arrow(params).map_err(|e| self.fail(op, e))?;
        for batch in arrow {
            visit(&batch)?;
        }
        Ok(())
    }

    fn col<'a, T: duckdb::arrow::datatypes::ArrowPrimitiveType>(
        &self,
        b: &'a RecordBatch,
        i: usize,
    ) -> StoreResult<&'a duckdb::arrow::array::PrimitiveArray<T>> {
        b.column(i).as_primitive_opt::<T>().ok_or_else(|| {
            unusable(&self.label, &format!("unexpected column type {} in a scan", b.column(i).data_type()))
        })
    }

    fn decode_at(&self, b: &RecordBatch, first: usize, row: usize) -> StoreResult<Value> {
        let vtype = self.col::<Int8Type>(b, first)?.value(row);
        let ival = self.col::<Int64Type>(b, first + 1)?;
        let fval = self.col::<Float64Type>(b, first + 2)?;
        let tval = b.column(first + 3);
        let int = || (!ival.is_null(row)).then(|| ival.value(row));
        let text = || -> Option<Arc<str>> {
            if tval.is_null(row) {
                None
            } else {
                string_at(tval, row).map(Arc::from)
            }
        };
        let v = match ValueType::from_code(i64::from(vtype)) {
            Some(ValueType::Int) => int().map(Value::Int),
            Some(ValueType::Float) => (!fval.is_null(row)).then(|| Value::Float(fval.value(row))),
            Some(ValueType::Bool) => int().map(|i| Value::Bool(i != 0)),
            Some(ValueType::Text) => text().map(Value::Text),
            Some(ValueType::Json) => text().map(Value::Json),
            None => None,
        };
        v.ok_or_else(|| unusable(&self.label, &format!("a stored value does not match its type code {vtype}")))
    }
}

/// A batch's name ids (see [`DuckStore::batch_names`]).
struct BatchNames {
    /// Per record.
    records: Vec<i32>,
    /// The batch's loop spans, compressed, by first context.
    spans: Vec<(i64, Span)>,
    /// Names not interned yet, with the ids numbered for them.
    new: Vec<(i32, Box<str>)>,
}

/// Where one ingestion step writes (its transaction, or the open group's
/// held-back rows) and the run it writes; its methods are the steps of
/// [`DuckStore::ingest_tx`], in order.
struct IngestStep<'a> {
    tx: &'a Connection,
    label: &'a str,
    run: i64,
    source: i8,
    /// The run was stored before this step (its key was known).
    stored: bool,
    /// The open group's held-back rows.
    pending: Option<&'a RefCell<Pending>>,
    /// The same where this step's rows are held back too (a new run inside
    /// a group).
    defer: Option<&'a RefCell<Pending>>,
}

impl IngestStep<'_> {
    /// Maps an engine failure during `op`.
    fn err(&self, op: &'static str) -> impl Fn(duckdb::Error) -> StoreError + '_ {
        move |e| fail(self.label, op, e)
    }

    /// Appends the group's held-back rows first when this step `reads` its
    /// run's stored rows (loop spans to merge, records to replace) and the
    /// run's rows are held back.
    fn flush_held(&self, reads: bool) -> StoreResult<()> {
        if let (Some(p), true) = (self.pending, self.stored) {
            if reads && p.borrow().run_at.contains_key(&self.run) {
                p.borrow_mut().flush(self.tx).map_err(self.err("store held-back rows"))?;
            }
        }
        Ok(())
    }

    /// Inserts the names new in this batch.
    fn intern(&self, new_names: &[(i32, Box<str>)]) -> StoreResult<()> {
        if !new_names.is_empty() {
            let mut ins =
                self.tx.prepare_cached("INSERT INTO flor_names VALUES (?, ?)").map_err(self.err("intern a name"))?;
            for (id, name) in new_names {
                ins.execute(params![id, &**name]).map_err(self.err("intern a name"))?;
            }
        }
        Ok(())
    }

    /// Stores the batch's loop spans: held back (merged among themselves)
    /// for a new run inside a group, else merged with the stored ones
    /// ([`store_loops`]).
    fn loops(&self, spans_new: Vec<(i64, Span)>) -> StoreResult<()> {
        if !spans_new.is_empty() {
            match self.defer {
                Some(p) => {
                    let merged = spans::merge(BTreeMap::new(), spans::split_long(spans_new, MAX_SPAN), MAX_SPAN);
                    let run = self.run;
                    p.borrow_mut().loops.extend(merged.into_iter().map(|(first, s)| (run, first, s)));
                }
                None => {
                    store_loops(self.tx, self.run, spans_new, self.stored).map_err(self.err("store loop iterations"))?
                }
            }
        }
        Ok(())
    }

    /// Stores the batch's records (`ids`: their name ids), lines stored
    /// already replaced, and returns how many records the run gained.
    fn records(&self, records: &[flor_core::Record], ids: &[i32]) -> StoreResult<i64> {
        let mut added = records.len() as i64;
        if !records.is_empty() {
            if self.stored {
                added -= self.delete_stored(records, ids)?;
            }
            // One Arrow batch, appended column-wise (DuckDB data chunks).
            let batch = records_batch(records, ids, self.run, self.source).map_err(|e| StoreError::Backend {
                backend: BACKEND,
                message: format!("{}: cannot store records: {e}", self.label),
                source: Some(Box::new(e)),
            })?;
            match self.defer {
                Some(p) => p.borrow_mut().records.push(batch),
                None => {
                    let mut app = self.tx.appender("flor_records").map_err(self.err("store records"))?;
                    app.append_record_batch(batch).map_err(self.err("store records"))?;
                    app.flush().map_err(self.err("store records"))?;
                }
            }
        }
        Ok(added)
    }

    /// Deletes the stored records of the lines `records` holds again and
    /// returns how many there were; a count over the batch's line range
    /// decides whether there are any.
    fn delete_stored(&self, records: &[flor_core::Record], ids: &[i32]) -> StoreResult<i64> {
        let (run, source) = (self.run, self.source);
        let lo = records.iter().map(|r| r.line).min().unwrap_or(0) as i64;
        let hi = records.iter().map(|r| r.line).max().unwrap_or(0) as i64;
        let overlap: i64 = self
            .tx
            .prepare_cached("SELECT count(*) FROM flor_records WHERE run = ? AND source = ? AND line BETWEEN ? AND ?")
            .and_then(|mut st| st.query_row(params![run, source, lo, hi], |r| r.get(0)))
            .map_err(self.err("store records"))?;
        let mut deleted = 0i64;
        if overlap > 0 {
            // Re-ingestion of stored lines (rare): replace them.
            let mut del = self
                .tx
                .prepare_cached("DELETE FROM flor_records WHERE name_id = ? AND run = ? AND source = ? AND line = ?")
                .map_err(self.err("replace records"))?;
            for (r, id) in records.iter().zip(ids) {
                let n = del.execute(params![id, run, source, r.line as i64]).map_err(self.err("replace records"))?;
                deleted += n as i64;
            }
        }
        Ok(deleted)
    }

    /// Stores the run's row: a held-back row updated in place, a new run's
    /// held back inside a group, else updated or inserted.
    fn run_row(&self, row: RunRowOut) -> StoreResult<()> {
        let held = self.pending.and_then(|p| p.borrow().run_at.get(&self.run).copied());
        if let (Some(p), Some(i)) = (self.pending, held) {
            // A run new in this group, its row held back: updated in place.
            p.borrow_mut().runs[i].update(row);
        } else if let Some(p) = self.defer {
            let mut p = p.borrow_mut();
            let i = p.runs.len();
            p.run_at.insert(self.run, i);
            p.runs.push(row);
        } else if self.stored {
            self.tx
                .prepare_cached(
                    "UPDATE flor_runs SET filename = ?, argv = ?, interpreter = ?, host = ?, pid = ?, commit_sha = ?, \
                     status = ?, ended = ?, nrecords = nrecords + ? WHERE run = ?",
                )
                .and_then(|mut st| {
                    let c = row.cells();
                    st.execute([c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[0]])
                })
                .map_err(self.err("store the run"))?;
        } else {
            self.tx
                .prepare_cached("INSERT INTO flor_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .and_then(|mut st| st.execute(row.cells()))
                .map_err(self.err("store the run"))?;
        }
        Ok(())
    }

    /// Stores the batch's checkpoints (those of a stored run's re-ingested
    /// lines replaced).
    fn checkpoints(&self, checkpoints: &[CheckpointMeta]) -> StoreResult<()> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let (run, source) = (self.run, self.source);
        let mut del = self
            .tx
            .prepare_cached("DELETE FROM flor_checkpoints WHERE run = ? AND source = ? AND line = ?")
            .map_err(self.err("store checkpoints"))?;
        let mut ins = self
            .tx
            .prepare_cached("INSERT INTO flor_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .map_err(self.err("store checkpoints"))?;
        for c in checkpoints {
            if self.stored {
                del.execute(params![run, source, c.line as i64]).map_err(self.err("store checkpoints"))?;
            }
            ins.execute(params![
                run,
                source,
                c.line as i64,
                c.ctx.map(i64::from),
                c.name,
                c.digest,
                c.bytes as i64,
                c.format
            ])
            .map_err(self.err("store checkpoints"))?;
        }
        if source == Source::Forward.code() as i8 {
            // Their tensors wait in the queue (see `Store::tensor_queue`).
            tensors::enqueue(self.tx, self.label, run, self.stored, checkpoints)?;
        }
        Ok(())
    }

    /// Stores the batch's divergence checks (a check at a stored line
    /// replaced).
    fn checks(&self, checks: &[flor_core::check::ReplayCheck]) -> StoreResult<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let op = "store replay checks";
        let mut del =
            self.tx.prepare_cached("DELETE FROM flor_checks WHERE run = ? AND line = ?").map_err(self.err(op))?;
        let sql =
            format!("INSERT INTO flor_checks ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", crate::checks::COLUMNS);
        let mut ins = self.tx.prepare_cached(&sql).map_err(self.err(op))?;
        for c in checks {
            let x = crate::checks::cells(self.label, c)?;
            del.execute(params![self.run, x.line]).map_err(self.err(op))?;
            let [a, b, cc, d] = &x.first;
            ins.execute(params![
                self.run,
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
            .map_err(self.err(op))?;
        }
        Ok(())
    }

    /// Stores the file's progress (`known`: the file has a stored row): a
    /// held-back row updated in place, a new file's held back inside a
    /// group, else updated or inserted.
    fn progress(&self, b: &IngestBatch<'_>, known: bool) -> StoreResult<()> {
        let run = self.run;
        let (offset, lines) = (b.progress.offset as i64, b.progress.lines as i64);
        let held = self.pending.and_then(|p| p.borrow().file_at.get(b.file).copied());
        let updated = if let (Some(p), Some(i)) = (self.pending, held) {
            let f = &mut p.borrow_mut().files[i];
            (f.1, f.2, f.3) = (run, offset, lines);
            1
        } else if let (Some(p), false) = (self.pending, known) {
            let mut p = p.borrow_mut();
            let i = p.files.len();
            p.file_at.insert(b.file.into(), i);
            p.files.push((b.file.into(), run, offset, lines));
            1
        } else if known {
            self.tx
                .prepare_cached("UPDATE flor_files SET run = ?, done_bytes = ?, done_lines = ? WHERE file = ?")
                .and_then(|mut st| st.execute(params![run, offset, lines, b.file]))
                .map_err(self.err("store file progress"))?
        } else {
            0
        };
        if updated == 0 {
            self.tx
                .prepare_cached("INSERT INTO flor_files VALUES (?, ?, ?, ?)")
                .and_then(|mut st| st.execute(params![b.file, run, offset, lines]))
                .map_err(self.err("store file progress"))?;
        }
        Ok(())
    }
}

/// `argv` as stored: JSON.
/// A batch's records as an Arrow batch with `flor_records`'s columns.
fn records_batch(
    records: &[flor_core::Record],
    ids: &[i32],
    run: i64,
    source: i8,
) -> Result<RecordBatch, duckdb::arrow::error::ArrowError> {
    use duckdb::arrow::array::{Float64Array, Int32Array, Int64Array, Int8Array, StringArray};
    use duckdb::arrow::datatypes::{Field, Schema};
    let n = records.len();
    fn text(v: &Value) -> Option<&str> {
        match v {
            Value::Text(s) | Value::Json(s) => Some(s),
            _ => None,
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(ids.to_vec())),
        Arc::new(Int64Array::from(vec![run; n])),
        Arc::new(Int8Array::from(vec![source; n])),
        Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.line as i64))),
        Arc::new(Int64Array::from_iter(records.iter().map(|r| r.ctx.map(i64::from)))),
        Arc::new(Int8Array::from_iter_values(records.iter().map(|r| r.kind.code() as i8))),
        Arc::new(Int8Array::from_iter_values(records.iter().map(|r| r.value.value_type().code() as i8))),
        Arc::new(Int64Array::from_iter(records.iter().map(|r| match r.value {
            Value::Int(x) => Some(x),
            Value::Bool(x) => Some(i64::from(x)),
            _ => None,
        }))),
        Arc::new(Float64Array::from_iter(records.iter().map(|r| match r.value {
            Value::Float(x) => Some(x),
            _ => None,
        }))),
        Arc::new(records.iter().map(|r| text(&r.value)).collect::<StringArray>()),
    ];
    let field = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    let schema = Schema::new(vec![
        field("name_id", DataType::Int32, false),
        field("run", DataType::Int64, false),
        field("source", DataType::Int8, false),
        field("line", DataType::Int64, false),
        field("ctx", DataType::Int64, true),
        field("kind", DataType::Int8, false),
        field("vtype", DataType::Int8, false),
        field("ival", DataType::Int64, true),
        field("fval", DataType::Float64, true),
        field("tval", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns)
}

/// The text of a string cell (any of Arrow's string layouts).
fn string_at(a: &ArrayRef, row: usize) -> Option<&str> {
    if let Some(s) = a.as_string_opt::<i32>() {
        return Some(s.value(row));
    }
    if let Some(s) = a.as_string_opt::<i64>() {
        return Some(s.value(row));
    }
    a.as_string_view_opt().map(|s| s.value(row))
}

/// Stores a batch's loop spans: the same plan as the SQLite backend (see
/// [`spans::merge`]).
fn store_loops(tx: &Connection, run: i64, new: Vec<(i64, Span)>, stored_run: bool) -> duckdb::Result<()> {
    let new = spans::split_long(new, MAX_SPAN);
    let (Some(lo), Some(hi)) = (new.iter().map(|s| s.0).min(), new.iter().map(|s| s.0 + s.1.count).max()) else {
        return Ok(());
    };
    let mut stored: BTreeMap<i64, Span> = BTreeMap::new();
    // A run stored before may have spans around these contexts.
    if stored_run {
        let mut st = tx.prepare_cached(
            "SELECT first_ctx, count, parent, loop_id, first_iteration, value FROM flor_loops \
             WHERE run = ?1 AND first_ctx <= ?3 AND first_ctx >= \
             (SELECT coalesce(max(first_ctx), ?2) FROM flor_loops WHERE run = ?1 AND first_ctx <= ?2)",
        )?;
        let mut rows = st.query(params![run, lo, hi])?;
        while let Some(r) = rows.next()? {
            let span = Span {
                count: r.get(1)?,
                parent: r.get(2)?,
                loop_id: i64::from(r.get::<_, i32>(3)?),
                first_iteration: r.get(4)?,
                value: r.get(5)?,
            };
            stored.insert(r.get(0)?, span);
        }
    }
    let from = stored.keys().next().copied();
    let merged = spans::merge(stored, new, MAX_SPAN);
    if let Some(from) = from {
        tx.execute(
            "DELETE FROM flor_loops WHERE run = ? AND first_ctx >= ? AND first_ctx <= ?",
            params![run, from, hi],
        )?;
    }
    let mut app = tx.appender("flor_loops")?;
    for (first, s) in &merged {
        app.append_row(params![run, first, s.count, s.parent, s.loop_id as i32, s.first_iteration, s.value])?;
    }
    app.flush()
}

impl Store for DuckStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn ingest(&mut self, batch: &IngestBatch<'_>) -> StoreResult<RunKey> {
        let r = self.ingest_tx(batch);
        if let (Err(_), Some(g)) = (&r, &mut self.group) {
            g.failed.set(true);
        }
        r
    }

    fn begin_group(&mut self) -> StoreResult<()> {
        if self.group.is_some() {
            return Err(self.in_group("open another ingestion group"));
        }
        self.conn.execute_batch("BEGIN TRANSACTION").map_err(|e| self.fail("open an ingestion group", e))?;
        self.group = Some(Group {
            names: self.names.clone(),
            by_id: self.by_id.clone(),
            runs_by_key: self.runs_by_key.clone(),
            next_run: self.next_run,
            files: self.files.clone(),
            failed: Cell::new(false),
            pending: RefCell::new(Pending::default()),
        });
        Ok(())
    }

    fn end_group(&mut self, commit: bool) -> StoreResult<()> {
        let Some(g) = self.group.take() else { return Ok(()) };
        if commit && !g.failed.get() {
            let flushed = g.pending.borrow_mut().flush(&self.conn);
            match flushed.and_then(|()| self.conn.execute_batch("COMMIT")) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.restore(g);
                    return Err(self.fail("commit an ingestion group", e));
                }
            }
        }
        let rolled = self.conn.execute_batch("ROLLBACK");
        let failed = g.failed.get();
        self.restore(g);
        rolled.map_err(|e| self.fail("discard an ingestion group", e))?;
        if commit && failed {
            return Err(StoreError::Backend {
                backend: BACKEND,
                message: format!("{}: a step of the ingestion group failed; the group was discarded", self.label),
                source: None,
            });
        }
        Ok(())
    }

    fn file_progress(&self, file: &str) -> StoreResult<Option<FileProgress>> {
        // The cache follows every committed step, a group's too (and is
        // restored when a group is discarded).
        Ok(self.files.get(file).copied())
    }

    fn set_status(&mut self, projid: &str, tstamp: &str, status: RunStatus, ended: Option<&str>) -> StoreResult<bool> {
        self.settle()?;
        let n = self
            .conn
            .execute(
                "UPDATE flor_runs SET status = ?, ended = ? WHERE projid = ? AND tstamp = ?",
                params![status.as_str(), ended, projid, tstamp],
            )
            .map_err(|e| self.fail("update a run's status", e))?;
        Ok(n > 0)
    }

    fn runs(&self) -> StoreResult<Vec<RunRow>> {
        self.settle()?;
        let op = "list runs";
        let mut st = self.conn.prepare(RUNS_SQL).map_err(|e| self.fail(op, e))?;
        let mut rows = st.query([]).map_err(|e| self.fail(op, e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.fail(op, e))? {
            let raw: duckdb::Result<RawRun> = raw_run!(r);
            let raw = raw.map_err(|e| self.fail(op, e))?;
            out.push(raw.decode(&self.label)?);
        }
        Ok(out)
    }

    fn names(&self) -> StoreResult<Vec<NameInfo>> {
        self.settle()?;
        let op = "list names";
        let mut st = self
            .conn
            .prepare(
                "SELECT n.name, first(r.kind ORDER BY r.run, r.source, r.line), count(*) \
                 FROM flor_records r JOIN flor_names n ON n.id = r.name_id \
                 WHERE r.kind <= 1 GROUP BY n.name ORDER BY n.name",
            )
            .map_err(|e| self.fail(op, e))?;
        let rows = st
            .query_map([], |r| {
                Ok(NameInfo {
                    name: r.get(0)?,
                    kind: RecordKind::from_code(i64::from(r.get::<_, i8>(1)?))
                        .unwrap_or(RecordKind::Log)
                        .as_str()
                        .to_owned(),
                    count: r.get::<_, i64>(2)? as u64,
                })
            })
            .and_then(|rows| rows.collect::<duckdb::Result<Vec<_>>>())
            .map_err(|e| self.fail(op, e))?;
        Ok(rows)
    }

    fn scan_values(&self, filter: ValueFilter<'_>, visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()> {
        self.settle()?;
        let op = "scan values";
        let mut emit = |b: &RecordBatch, name_of: &dyn Fn(usize) -> StoreResult<Arc<str>>| -> StoreResult<()> {
            let run = self.col::<Int64Type>(b, 0)?;
            let ctx = self.col::<Int64Type>(b, 1)?;
            let source = self.col::<Int8Type>(b, 2)?;
            let line = self.col::<Int64Type>(b, 3)?;
            let mut name: Option<Arc<str>> = None;
            for row in 0..b.num_rows() {
                let n = name_of(row)?;
                if name.as_ref().is_none_or(|x| !Arc::ptr_eq(x, &n)) {
                    name = Some(n);
                }
                let ctx = if ctx.is_null(row) {
                    None
                } else {
                    Some(u32::try_from(ctx.value(row)).map_err(|_| {
                        unusable(&self.label, &format!("a loop context id {} is out of range", ctx.value(row)))
                    })?)
                };
                let src = Source::from_code(i64::from(source.value(row))).ok_or_else(|| {
                    unusable(&self.label, &format!("a record has an unknown source code {}", source.value(row)))
                })?;
                visit(ValueRow {
                    run: run.value(row),
                    ctx,
                    source: src,
                    line: line.value(row) as u64,
                    name: name.as_deref().unwrap_or(""),
                    value: self.decode_at(b, 4, row)?,
                });
            }
            Ok(())
        };
        match filter {
            ValueFilter::Names(names) => {
                let ids = self.name_ids(names);
                if ids.is_empty() {
                    return Ok(());
                }
                // DuckDB materializes a query's whole result: read large
                // stores in slices of runs (rows are stored in run order, so
                // each slice reads only its own row groups).
                for (lo, hi) in self.run_slices(self.scan_slice)? {
                    for &(id, _) in &ids {
                        let name = Arc::clone(self.name_of(id)?);
                        self.batches(
                            op,
                            "SELECT run, ctx, source, line, vtype, ival, fval, tval FROM flor_records \
                             WHERE name_id = ? AND kind <= 1 AND run >= ? AND run <= ?",
                            &[&id, &lo, &hi],
                            &mut |b| emit(b, &|_| Ok(Arc::clone(&name))),
                        )?;
                    }
                }
            }
            ValueFilter::RunLevel => {
                self.batches(
                    op,
                    "SELECT run, ctx, source, line, vtype, ival, fval, tval, name_id FROM flor_records \
                     WHERE ctx IS NULL AND kind <= 1",
                    &[],
                    &mut |b| {
                        let ids = self.col::<Int32Type>(b, 8)?;
                        emit(b, &|row| self.name_of(ids.value(row)).cloned())
                    },
                )?;
            }
        }
        Ok(())
    }

    fn scan_loops(&self, runs: &[RunKey], visit: &mut dyn FnMut(RunKey, &LoopSpan)) -> StoreResult<()> {
        self.settle()?;
        if runs.is_empty() {
            return Ok(());
        }
        let op = "scan loop iterations";
        let wanted: HashSet<RunKey> = runs.iter().copied().collect();
        let mut l =
            LoopSpan { first_ctx: 0, count: 0, parent: None, name: Arc::from(""), first_iteration: 0, value: None };
        let mut each = |b: &RecordBatch| -> StoreResult<()> {
            let run = self.col::<Int64Type>(b, 0)?;
            let first = self.col::<Int64Type>(b, 1)?;
            let count = self.col::<Int64Type>(b, 2)?;
            let parent = self.col::<Int64Type>(b, 3)?;
            let loop_id = self.col::<Int32Type>(b, 4)?;
            let first_iteration = self.col::<Int64Type>(b, 5)?;
            let value = b.column(6);
            for row in 0..b.num_rows() {
                let key = run.value(row);
                if !wanted.contains(&key) {
                    continue;
                }
                let name = self.name_of(loop_id.value(row))?;
                if !Arc::ptr_eq(&l.name, name) {
                    l.name = Arc::clone(name);
                }
                let bad = || unusable(&self.label, "a loop span is out of range");
                l.first_ctx = u32::try_from(first.value(row)).map_err(|_| bad())?;
                l.count = u32::try_from(count.value(row))
                    .ok()
                    .filter(|&c| c >= 1 && u64::from(l.first_ctx) + u64::from(c) <= 1 << 32)
                    .ok_or_else(bad)?;
                l.parent =
                    if parent.is_null(row) { None } else { Some(u32::try_from(parent.value(row)).map_err(|_| bad())?) };
                l.first_iteration = first_iteration.value(row) as u64;
                l.value = if value.is_null(row) { None } else { string_at(value, row).map(str::to_owned) };
                visit(key, &l);
            }
            Ok(())
        };
        let cols = "SELECT run, first_ctx, count, parent, loop_id, first_iteration, value FROM flor_loops";
        if runs.len() <= 16 {
            for &run in runs {
                self.batches(op, &format!("{cols} WHERE run = ?"), &[&run], &mut each)?;
            }
        } else {
            self.batches(op, cols, &[], &mut each)?;
        }
        Ok(())
    }

    /// The pivot planned in DuckDB (see the `pivot` module); the shared one
    /// where that plan does not apply.
    fn dataframe(&self, names: &[&str]) -> StoreResult<Table> {
        self.dataframe_filtered(names, &flor_core::PivotFilter::default())
    }

    fn dataframe_filtered(&self, names: &[&str], filter: &flor_core::PivotFilter) -> StoreResult<Table> {
        if self.group.is_some() {
            return Err(self.in_group("build a dataframe"));
        }
        crate::pivot::dataframe_with(self, names, filter, || self.pivot(names, filter))
    }

    fn has_names(&self, names: &[&str]) -> StoreResult<Vec<bool>> {
        // Every name with records is interned (and cached); a name
        // interned for loops or timings only has no log or arg records.
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let found = match self.names.get(*n) {
                None => false,
                Some(&id) => {
                    let sql =
                        "SELECT count(*) FROM (SELECT 1 FROM flor_records WHERE name_id = ? AND kind <= 1 LIMIT 1)";
                    let c: i64 =
                        self.conn.query_row(sql, [id], |r| r.get(0)).map_err(|e| self.fail("look names up", e))?;
                    c > 0
                }
            };
            out.push(found);
        }
        Ok(out)
    }

    fn checkpoints(&self, run: RunKey) -> StoreResult<Vec<CheckpointMeta>> {
        self.settle()?;
        let op = "list checkpoints";
        let mut st = self.conn.prepare(CHECKPOINTS_SQL).map_err(|e| self.fail(op, e))?;
        let rows = st
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .and_then(|rows| rows.collect::<duckdb::Result<Vec<RawCheckpoint>>>())
            .map_err(|e| self.fail(op, e))?;
        rows.into_iter().map(|raw| decode_checkpoint(&self.label, raw)).collect()
    }

    fn checks(&self) -> StoreResult<Vec<flor_core::store::CheckRow>> {
        self.settle()?;
        let op = "list replay checks";
        let mut st = self
            .conn
            .prepare("SELECT run, line, body FROM flor_checks ORDER BY run, line")
            .map_err(|e| self.fail(op, e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
            .and_then(|rows| rows.collect::<duckdb::Result<Vec<_>>>())
            .map_err(|e| self.fail(op, e))?;
        rows.into_iter().map(|(run, line, body)| crate::checks::row(&self.label, run, line, &body)).collect()
    }

    fn scan_outputs(&self, filter: OutputFilter<'_>, visit: &mut dyn FnMut(OutputRow<'_>)) -> StoreResult<()> {
        self.settle()?;
        outputs::scan(&self.conn, &self.label, filter, visit)
    }

    fn tensor_queue(&self, limit: usize) -> StoreResult<Vec<QueuedCheckpoint>> {
        self.settle()?;
        tensors::queue(&self.conn, &self.label, limit)
    }

    fn requeue_tensors(&mut self) -> StoreResult<()> {
        self.write_step("queue checkpoints again", tensors::requeue)
    }

    fn ingest_tensors(&mut self, run: RunKey, line: u64, rows: &[TensorRow]) -> StoreResult<()> {
        self.write_step("store tensor statistics", |tx, label| tensors::store(tx, label, run, line, rows))
    }

    fn scan_tensors(&self, filter: TensorFilter<'_>, visit: &mut dyn FnMut(TensorVisit<'_>)) -> StoreResult<()> {
        self.settle()?;
        tensors::scan(&self.conn, &self.label, filter, visit)
    }

    fn query(&self, sql: &str) -> StoreResult<Table> {
        self.run_query(sql, None)
    }

    fn query_within(&self, sql: &str, limit: Option<std::time::Duration>) -> StoreResult<Table> {
        self.run_query(sql, limit)
    }

    fn clear(&mut self) -> StoreResult<()> {
        if self.group.is_some() {
            return Err(self.in_group("clear the database"));
        }
        let l = self.label.clone();
        let tx = self.conn.transaction().map_err(|e| fail(&l, "clear the database", e))?;
        for t in DATA_TABLES {
            // Table names from the constant list above, never user input.
            tx.execute(&format!("DELETE FROM {t}"), []).map_err(|e| fail(&l, "clear the database", e))?;
        }
        tx.commit().map_err(|e| fail(&l, "clear the database", e))?;
        self.names.clear();
        self.by_id.clear();
        self.runs_by_key.clear();
        self.files.clear();
        self.next_run = 1;
        Ok(())
    }
}

impl DuckStore {
    /// The error for `op` while an ingestion group is open.
    fn in_group(&self, op: &str) -> StoreError {
        StoreError::Backend {
            backend: BACKEND,
            message: format!("{}: cannot {op} while an ingestion group is open", self.label),
            source: None,
        }
    }

    /// Runs `write` in a transaction of its own, or in the open group's
    /// (after its held-back rows; a failure spoils the group).
    fn write_step(&mut self, op: &str, write: impl FnOnce(&Connection, &str) -> StoreResult<()>) -> StoreResult<()> {
        if let Some(g) = &self.group {
            self.settle()?;
            let result = write(&self.conn, &self.label);
            if result.is_err() {
                g.failed.set(true);
            }
            return result;
        }
        let tx = self.conn.unchecked_transaction().map_err(|e| self.fail(op, e))?;
        write(&tx, &self.label)?;
        tx.commit().map_err(|e| fail(&self.label, op, e))
    }

    /// Appends the rows an open group holds back, so that reads see them.
    fn settle(&self) -> StoreResult<()> {
        let Some(g) = &self.group else { return Ok(()) };
        if g.failed.get() {
            return Err(self.in_group("read after a failed step"));
        }
        let flushed = g.pending.borrow_mut().flush(&self.conn);
        flushed.map_err(|e| {
            // Rows may be half appended: the group can only be discarded.
            g.failed.set(true);
            self.fail("store held-back rows", e)
        })
    }

    /// The caches as they were before a discarded group.
    fn restore(&mut self, g: Group) {
        self.names = g.names;
        self.by_id = g.by_id;
        self.runs_by_key = g.runs_by_key;
        self.next_run = g.next_run;
        self.files = g.files;
    }
}

/// How long [`DuckStore::open`] waits for another process to close the file.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn is_lock_conflict(e: &duckdb::Error) -> bool {
    let text = e.to_string();
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

/// Maps a failure to open the database file.
fn open_error(label: &str, e: duckdb::Error) -> StoreError {
    let text = e.to_string();
    if is_lock_conflict(&e) {
        return StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "cannot open {label}: another process kept it open for more than {} s (DuckDB lets one \
                 process at a time use a database file; retry when it is done)",
                LOCK_TIMEOUT.as_secs()
            ),
            source: Some(Box::new(e)),
        };
    }
    if text.contains("not a valid DuckDB database") {
        return crate::rows::damaged(label, format!("the file is not a DuckDB database: {text}"));
    }
    if text.contains("database file") && !is_damage(&text) {
        return unusable(label, &format!("the file is not a DuckDB database ({text})"));
    }
    fail(label, "open the database", e)
}

/// Whether DuckDB's message says the file is damaged (a block's checksum,
/// a file shorter than its blocks).
fn is_damage(text: &str) -> bool {
    text.contains("Corrupt database file") || text.contains("Could not read enough bytes from file")
}

/// Maps an engine failure during `op` (a phrase like "store records").
fn fail(label: &str, op: &str, e: duckdb::Error) -> StoreError {
    let text = e.to_string();
    if is_damage(&text) {
        return crate::rows::damaged(label, format!("cannot {op}: {text}"));
    }
    StoreError::Backend {
        backend: BACKEND,
        message: format!("{label}: cannot {op}: {text}"),
        source: Some(Box::new(e)),
    }
}
