//! The SQLite backend: [`SqliteStore`].
//!
//! `mod.rs` holds the store (opening, ingestion, scans, listings);
//! `schema.rs` the tables, views and version checks; `query.rs` user
//! queries under the read-only rule.
#![doc = include_str!("SCHEMA.md")]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use flor_core::record::{CheckpointMeta, LoopCtx, Record, RecordKind, RunMeta, RunStatus, Source};
use flor_core::store::{
    FileProgress, IngestBatch, LoopSpan, NameInfo, OutputFilter, OutputRow, QueuedCheckpoint, RunKey, RunRow, Store,
    StoreError, StoreResult, TensorFilter, TensorRow, TensorVisit, ValueFilter, ValueRow,
};
use flor_core::table::Table;
use flor_core::value::{Value, ValueType};
use rusqlite::hooks::AuthContext;
use rusqlite::types::{Null, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::limit::Deadline;
use crate::rows::{
    ctx_of, damaged, decode_checkpoint, raw_run, unusable, RawCheckpoint, RawRun, CHECKPOINTS_SQL, RUNS_SQL,
};
use crate::spans::{self, Span};

mod checks;
mod outputs;
mod packed;
mod pivot;
mod query;
mod schema;
mod tensors;

use query::{authorize, hex};
use schema::{check_layout, layout, SCHEMA};
pub use schema::{schema_version_of, SCHEMA_VERSION};

const BACKEND: &str = "sqlite";

/// How long a writer waits for another process's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The tables holding data (emptied by [`Store::clear`]).
const DATA_TABLES: &[&str] = &[
    "flor_runs",
    "flor_names",
    "flor_loops",
    "flor_records",
    "flor_packed",
    "flor_checkpoints",
    "flor_checks",
    "flor_tensors",
    "flor_tensor_queue",
    "flor_files",
];

/// Every internal table: the data tables and the two helpers of the `loops`
/// view.
const INTERNAL_TABLES: &[&str] = &[
    "flor_runs",
    "flor_names",
    "flor_loops",
    "flor_records",
    "flor_packed",
    "flor_checkpoints",
    "flor_checks",
    "flor_tensors",
    "flor_tensor_queue",
    "flor_files",
    "flor_seq",
    "flor_meta",
];

/// The most iterations one stored span holds; longer runs of iterations are
/// stored as several spans. The `loops` view finds the span of a context
/// among the spans starting at most this far before it, so a small bound
/// keeps lookups by `ctx_id` cheap even next to very long loops.
const MAX_SPAN: u32 = 1 << 12;

/// `flor_seq` grows in steps of this many rows.
const SEQ_STEP: i64 = 1 << 12;

const UPSERT_RUN: &str = "INSERT INTO flor_runs \
    (projid, tstamp, filename, argv, interpreter, host, pid, commit_sha, status, ended) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
    ON CONFLICT (projid, tstamp) DO UPDATE SET filename = excluded.filename, argv = excluded.argv, \
    interpreter = excluded.interpreter, host = excluded.host, pid = excluded.pid, \
    commit_sha = excluded.commit_sha, status = excluded.status, ended = excluded.ended \
    RETURNING run";
const INSERT_SPAN: &str = "INSERT OR REPLACE INTO flor_loops \
    (run, first_ctx, count, parent, loop_id, first_iteration, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// The stored spans that may overlap or adjoin contexts `?2 ..= ?3`: the last
/// one starting at or before `?2`, and every one starting up to `?3`.
const NEAR_SPANS: &str = "SELECT first_ctx, count, parent, loop_id, first_iteration, value FROM flor_loops \
    WHERE run = ?1 AND first_ctx <= ?3 AND first_ctx >= \
    (SELECT coalesce(max(first_ctx), ?2) FROM flor_loops WHERE run = ?1 AND first_ctx <= ?2)";
const DELETE_SPANS: &str = "DELETE FROM flor_loops WHERE run = ?1 AND first_ctx >= ?2 AND first_ctx <= ?3";
// Parameters 1..=8 in the same order for both statements, so one binding
// serves the rare replacement too.
const INSERT_RECORD: &str = "INSERT OR IGNORE INTO flor_records \
    (name_id, run, source, line, ctx, kind, vtype, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const REPLACE_RECORD: &str = "UPDATE flor_records SET ctx = ?5, kind = ?6, vtype = ?7, value = ?8 \
    WHERE name_id = ?1 AND run = ?2 AND source = ?3 AND line = ?4";
const INSERT_CHECKPOINT: &str = "INSERT OR REPLACE INTO flor_checkpoints \
    (run, source, line, ctx, name, digest, bytes, format) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const UPSERT_FILE: &str = "INSERT INTO flor_files (file, run, offset, lines) VALUES (?1, ?2, ?3, ?4) \
    ON CONFLICT (file) DO UPDATE SET run = excluded.run, offset = excluded.offset, lines = excluded.lines";

/// A flor query database in SQLite. See the crate docs for the schema, the
/// views, and the concurrency model.
///
/// One `SqliteStore` is one connection: several may be open on the same file
/// at once, in one process or many.
pub struct SqliteStore {
    conn: Connection,
    /// The path (for messages), or `:memory:`.
    label: String,
    /// Interned name ids, valid while `data_version` is unchanged.
    names: HashMap<Box<str>, i64>,
    data_version: Option<i64>,
    /// While set, the authorizer admits only reads (see [`SqliteStore::query`]).
    restricted: Arc<AtomicBool>,
    /// A user query's time limit, checked by the progress handler.
    deadline: Deadline,
    /// Name scans over at least this many records use two threads.
    split_scan_min: i64,
    /// The open ingestion group (see [`Store::begin_group`]), if any.
    group: Option<Group>,
    /// Records per slice of the pivot's scans at most.
    pivot_slice: i64,
}

/// An open ingestion group: one write transaction (`BEGIN IMMEDIATE`) over
/// many steps, each step in a savepoint of its own.
#[derive(Debug, Default)]
struct Group {
    /// A step failed (its savepoint was rolled back): the group can only be
    /// discarded.
    failed: bool,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.label).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent folders if needed) the database at
    /// `path`.
    ///
    /// Fails with [`StoreError::Damaged`] when the file is not a SQLite
    /// database or is corrupt, and with [`StoreError::Unusable`] when it was
    /// written by a newer flor or has an older or foreign layout; either
    /// way the file is left untouched.
    pub fn open(path: &Path) -> crate::Result<SqliteStore> {
        crate::create_parent(path)?;
        let label = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(&label, "open the database", e))?;
        Ok(SqliteStore::init(conn, label, true)?)
    }

    /// A private, empty in-memory database (for tests and one-shot queries).
    pub fn open_in_memory() -> crate::Result<SqliteStore> {
        let label = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|e| fail(&label, "open an in-memory database", e))?;
        Ok(SqliteStore::init(conn, label, false)?)
    }

    /// The database path (`:memory:` for an in-memory store).
    pub fn path(&self) -> &str {
        &self.label
    }

    fn init(mut conn: Connection, label: String, file: bool) -> StoreResult<SqliteStore> {
        let l = label.as_str();
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| fail(l, "set the busy timeout", e))?;
        // Nothing is written before the file is known to be ours.
        let (version, objects) = layout(&conn, l)?;
        check_layout(l, version, objects)?;
        if file {
            // WAL: readers and the writer do not block each other. (A file
            // system without shared memory keeps the old mode; still correct.)
            // Switching modes does not wait on the busy handler (SQLite
            // avoids a deadlock that way), so two processes creating the
            // database at once retry here for up to the busy timeout.
            let started = std::time::Instant::now();
            loop {
                match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
                    Ok(_) => break,
                    Err(e)
                        if matches!(
                            e.sqlite_error_code(),
                            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                        ) && started.elapsed() < BUSY_TIMEOUT =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => return Err(fail(l, "switch to WAL mode", e)),
                }
            }
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; \
             PRAGMA cache_size = -32768;",
        )
        .map_err(|e| fail(l, "configure the connection", e))?;
        if version == 0 {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| fail(l, "create the schema", e))?;
            // Another process may have created it meanwhile.
            let (version, objects) = layout(&tx, l)?;
            check_layout(l, version, objects)?;
            if version == 0 {
                tx.execute_batch(SCHEMA).map_err(|e| fail(l, "create the schema", e))?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| fail(l, "create the schema", e))?;
            }
            tx.commit().map_err(|e| fail(l, "create the schema", e))?;
        } else {
            let list = INTERNAL_TABLES.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
            let found: i64 = conn
                .query_row(
                    &format!("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ({list})"),
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| fail(l, "read the schema", e))?;
            if found != INTERNAL_TABLES.len() as i64 {
                return Err(unusable(l, "some of its tables are missing"));
            }
        }
        conn.set_prepared_statement_cache_capacity(64);
        let restricted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&restricted);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(&flag, ctx)))
            .map_err(|e| fail(l, "install the query authorizer", e))?;
        let deadline = Deadline::install(&mut conn).map_err(|e| fail(l, "install the query time limit", e))?;
        Ok(SqliteStore {
            conn,
            label,
            names: HashMap::new(),
            data_version: None,
            restricted,
            deadline,
            split_scan_min: SPLIT_SCAN_MIN_RECORDS,
            pivot_slice: pivot::PIVOT_SLICE,
            group: None,
        })
    }

    fn fail(&self, op: &str, e: rusqlite::Error) -> StoreError {
        fail(&self.label, op, e)
    }

    /// Ingests one batch atomically: in a transaction of its own, or in a
    /// savepoint of the open group's transaction.
    fn ingest_tx(&mut self, b: &IngestBatch<'_>) -> StoreResult<RunKey> {
        let label = self.label.as_str();
        let err = |op: &'static str| move |e: rusqlite::Error| fail(label, op, e);
        let (names, data_version) = (&mut self.names, &mut self.data_version);
        if let Some(g) = &self.group {
            if g.failed {
                return Err(in_group(label, "ingest after a failed step"));
            }
            let sp = self.conn.savepoint().map_err(err("start an ingestion step"))?;
            let run = store_batch(&sp, label, names, data_version, b)?;
            sp.commit().map_err(err("end an ingestion step"))?;
            return Ok(run);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("start an ingestion transaction"))?;
        let run = store_batch(&tx, label, names, data_version, b)?;
        tx.commit().map_err(err("commit an ingestion transaction"))?;
        Ok(run)
    }

    /// Runs `write` in a transaction of its own, or in a savepoint of the
    /// open group's transaction (a failure spoils the group).
    fn write_step(&mut self, op: &str, write: impl FnOnce(&Connection, &str) -> StoreResult<()>) -> StoreResult<()> {
        let label = self.label.as_str();
        let result = match &self.group {
            Some(g) if g.failed => return Err(in_group(label, &format!("{op} after a failed step"))),
            Some(_) => self.conn.savepoint().map_err(|e| fail(label, op, e)).and_then(|sp| {
                write(&sp, label)?;
                sp.commit().map_err(|e| fail(label, op, e))
            }),
            None => self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| fail(label, op, e))
                .and_then(|tx| {
                    write(&tx, label)?;
                    tx.commit().map_err(|e| fail(label, op, e))
                }),
        };
        if result.is_err() {
            if let Some(g) = &mut self.group {
                g.failed = true;
            }
        }
        result
    }

    /// Forgets cached name ids (after a rollback: names interned in it are
    /// gone).
    fn forget_names(&mut self) {
        self.names.clear();
        self.data_version = None;
    }

    /// Fails when an ingestion group is open (for the reads a group refuses).
    fn outside_group(&self, op: &str) -> StoreResult<()> {
        match self.group {
            Some(_) => Err(in_group(&self.label, op)),
            None => Ok(()),
        }
    }
}

/// The error for `op` while an ingestion group is open.
fn in_group(label: &str, op: &str) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: format!("{label}: cannot {op} while an ingestion group is open"),
        source: None,
    }
}

/// Stores one batch through `tx` (a transaction or a savepoint): the run's
/// row, its loop spans, records, record count, checkpoints and the file's
/// progress.
fn store_batch(
    tx: &Connection,
    label: &str,
    names: &mut HashMap<Box<str>, i64>,
    data_version: &mut Option<i64>,
    b: &IngestBatch<'_>,
) -> StoreResult<RunKey> {
    let err = |op: &'static str| move |e: rusqlite::Error| fail(label, op, e);
    // Name ids only change when another connection clears the store; any
    // commit by another connection changes `data_version`.
    let dv: i64 = tx
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(err("read the data version"))?;
    if *data_version != Some(dv) {
        names.clear();
        *data_version = Some(dv);
    }
    let argv = crate::rows::argv_json(BACKEND, b.run)?;
    let run = upsert_run(tx, b.run, &argv).map_err(err("store the run"))?;
    let source = b.source.code();

    if !b.loops.is_empty() {
        store_loops(tx, names, run, b.loops).map_err(err("store loop iterations"))?;
    }

    let added = store_records(tx, label, names, run, source, b.records)?;
    if added > 0 {
        tx.prepare_cached("UPDATE flor_runs SET nrecords = nrecords + ?1 WHERE run = ?2")
            .and_then(|mut s| s.execute([added, run]))
            .map_err(err("count records"))?;
    }

    store_checkpoints(tx, run, source, b.checkpoints).map_err(err("store checkpoints"))?;
    checks::store(tx, label, run, b.checks)?;

    tx.prepare_cached(UPSERT_FILE)
        .and_then(|mut s| s.execute(rusqlite::params![b.file, run, b.progress.offset as i64, b.progress.lines as i64]))
        .map_err(err("store file progress"))?;
    Ok(run)
}

/// Values scanned by the second thread of a split scan.
struct ScannedValue {
    run: RunKey,
    ctx: Option<u32>,
    source: Source,
    line: u64,
    name: usize,
    value: Value,
}

/// Scans with fewer value records than this stay on one thread (see
/// [`SqliteStore::set_split_scan_threshold`]).
pub const SPLIT_SCAN_MIN_RECORDS: i64 = 200_000;

impl SqliteStore {
    /// Name scans (the pivot's main read) of a database file holding at
    /// least `records` value records are split by run over two read
    /// connections on two threads; below it, one thread reads. Defaults to
    /// [`SPLIT_SCAN_MIN_RECORDS`]. The split may see a write committed
    /// between its two reads in one half only, as any two queries may.
    pub fn set_split_scan_threshold(&mut self, records: i64) {
        self.split_scan_min = records;
    }

    /// The pivot reads at most `records` records per slice of runs (each
    /// slice one unit of work for a scan thread; default about 262,144).
    /// Small slices exercise the scan threads in tests.
    pub fn set_pivot_slice(&mut self, records: i64) {
        self.pivot_slice = records.max(1);
    }

    /// The run key splitting a large name scan in two halves, or `None`
    /// for small scans and in-memory databases.
    fn split_point(&self, ids: &[(i64, &str)]) -> rusqlite::Result<Option<i64>> {
        // (Inside a group, only this connection sees the group's steps.)
        if self.label == ":memory:" || ids.is_empty() || self.group.is_some() {
            return Ok(None);
        }
        let (runs, records): (i64, i64) =
            self.conn.query_row("SELECT count(*), COALESCE(sum(nrecords), 0) FROM flor_runs", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if runs < 2 || records < self.split_scan_min {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT run FROM flor_runs ORDER BY run LIMIT 1 OFFSET ?1", [runs / 2], |r| r.get(0))
            .optional()
    }
}

/// Visits the log/arg values named `ids` of the runs in `lo..hi`, read
/// through `conn` (`label` names the database in errors).
fn scan_names_range(
    label: &str,
    conn: &Connection,
    ids: &[(i64, &str)],
    lo: i64,
    hi: i64,
    visit: &mut dyn FnMut(ValueRow<'_>),
) -> StoreResult<()> {
    let op = "scan values";
    let mut st = conn
        .prepare_cached(
            "SELECT run, ctx, source, line, vtype, value FROM flor_records \
                 WHERE name_id = ?1 AND run >= ?2 AND run < ?3 AND kind <= 1",
        )
        .map_err(|e| fail(label, op, e))?;
    for &(id, name) in ids {
        let mut rows = st.query(rusqlite::params![id, lo, hi]).map_err(|e| fail(label, op, e))?;
        while let Some(r) = rows.next().map_err(|e| fail(label, op, e))? {
            let (run, ctx, source, line, vtype) = (|| -> rusqlite::Result<_> {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })()
            .map_err(|e| fail(label, op, e))?;
            let value = r.get_ref(5).map_err(|e| fail(label, op, e))?;
            let value = decode(label, vtype, value)?;
            visit(ValueRow {
                run,
                ctx: ctx_of(label, ctx)?,
                source: source_of(label, source)?,
                line: line as u64,
                name,
                value,
            });
        }
    }
    Ok(())
}

impl SqliteStore {
    /// [`Store::scan_values`] of `names`: their ids, then one scan, or two
    /// halves on two threads for a large database file.
    fn scan_names(&self, names: &[&str], visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()> {
        let op = "scan values";
        let ids = self.name_ids(names)?;
        // A large scan of a database file is split in two by run: a
        // second read connection scans the upper runs on another
        // thread while this one scans and visits the lower runs.
        let split = self.split_point(&ids).map_err(|e| self.fail(op, e))?;
        let Some(mid) = split else {
            return scan_names_range(&self.label, &self.conn, &ids, i64::MIN, i64::MAX, visit);
        };
        let path = self.label.as_str();
        std::thread::scope(|scope| {
            let upper = scope.spawn(|| scan_upper(path, &ids, mid));
            scan_names_range(&self.label, &self.conn, &ids, i64::MIN, mid, visit)?;
            let rows = match upper.join() {
                Ok(r) => r?,
                Err(_) => {
                    return Err(StoreError::Backend {
                        backend: "sqlite",
                        message: format!("{}: the second scan thread panicked", self.label),
                        source: None,
                    })
                }
            };
            for r in rows {
                visit(ValueRow {
                    run: r.run,
                    ctx: r.ctx,
                    source: r.source,
                    line: r.line,
                    name: ids[r.name].1,
                    value: r.value,
                });
            }
            Ok(())
        })
    }

    /// The ids of the stored names among `names` (each id once), with the
    /// name.
    fn name_ids<'n>(&self, names: &[&'n str]) -> StoreResult<Vec<(i64, &'n str)>> {
        let op = "scan values";
        let mut lookup =
            self.conn.prepare_cached("SELECT id FROM flor_names WHERE name = ?1").map_err(|e| self.fail(op, e))?;
        let mut ids: Vec<(i64, &str)> = Vec::with_capacity(names.len());
        for &name in names {
            let id: Option<i64> = lookup.query_row([name], |r| r.get(0)).optional().map_err(|e| self.fail(op, e))?;
            if let Some(id) = id.filter(|id| !ids.iter().any(|(i, _)| i == id)) {
                ids.push((id, name));
            }
        }
        Ok(ids)
    }

    /// [`Store::scan_values`] of the run-level values.
    fn scan_run_level(&self, visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()> {
        let op = "scan values";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT run, source, line, name_id, vtype, value FROM flor_records \
                 INDEXED BY flor_records_run_level WHERE ctx IS NULL AND kind <= 1",
            )
            .map_err(|e| self.fail(op, e))?;
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut rows = st.query([]).map_err(|e| self.fail(op, e))?;
        while let Some(r) = rows.next().map_err(|e| self.fail(op, e))? {
            let (run, source, line, name_id, vtype) = (|| -> rusqlite::Result<_> {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })()
            .map_err(|e| self.fail(op, e))?;
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(name_id) {
                slot.insert(self.name_of(name_id)?);
            }
            let value = r.get_ref(5).map_err(|e| self.fail(op, e))?;
            let value = decode(&self.label, vtype, value)?;
            visit(ValueRow {
                run,
                ctx: None,
                source: source_of(&self.label, source)?,
                line: line as u64,
                name: names.get(&name_id).map_or("", String::as_str),
                value,
            });
        }
        Ok(())
    }
}

/// The upper half of a split name scan (runs from `mid` on), read on a
/// second read connection (`path`: the database file).
fn scan_upper(path: &str, ids: &[(i64, &str)], mid: i64) -> StoreResult<Vec<ScannedValue>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| fail(path, "open a second read connection", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| fail(path, "set the busy timeout", e))?;
    let mut out = Vec::new();
    scan_names_range(path, &conn, ids, mid, i64::MAX, &mut |row| {
        out.push(ScannedValue {
            run: row.run,
            ctx: row.ctx,
            source: row.source,
            line: row.line,
            name: ids.iter().position(|(_, n)| *n == row.name).unwrap_or(0),
            value: row.value,
        })
    })?;
    Ok(out)
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn ingest(&mut self, batch: &IngestBatch<'_>) -> StoreResult<RunKey> {
        let result = self.ingest_tx(batch);
        if result.is_err() {
            // The transaction (or the step's savepoint) rolled back: names
            // interned in it are gone, and an open group is spoilt.
            self.forget_names();
            if let Some(g) = &mut self.group {
                g.failed = true;
            }
        }
        result
    }

    /// One `BEGIN IMMEDIATE` transaction for the group: a commit per step
    /// (and the WAL frames and checkpoints it brings) is most of the cost
    /// of ingesting a small run.
    fn begin_group(&mut self) -> StoreResult<()> {
        self.outside_group("open another ingestion group")?;
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| self.fail("open an ingestion group", e))?;
        self.group = Some(Group::default());
        Ok(())
    }

    fn end_group(&mut self, commit: bool) -> StoreResult<()> {
        let Some(g) = self.group.take() else { return Ok(()) };
        if commit && !g.failed {
            match self.conn.execute_batch("COMMIT") {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if !self.conn.is_autocommit() {
                        let _ = self.conn.execute_batch("ROLLBACK");
                    }
                    self.forget_names();
                    return Err(self.fail("commit an ingestion group", e));
                }
            }
        }
        // SQLite may have rolled the transaction back itself after an error.
        let rolled = if self.conn.is_autocommit() { Ok(()) } else { self.conn.execute_batch("ROLLBACK") };
        self.forget_names();
        rolled.map_err(|e| self.fail("discard an ingestion group", e))?;
        if commit {
            return Err(StoreError::Backend {
                backend: BACKEND,
                message: format!("{}: a step of the ingestion group failed; the group was discarded", self.label),
                source: None,
            });
        }
        Ok(())
    }

    fn file_progress(&self, file: &str) -> StoreResult<Option<FileProgress>> {
        self.conn
            .prepare_cached("SELECT offset, lines FROM flor_files WHERE file = ?1")
            .and_then(|mut s| {
                s.query_row([file], |r| {
                    Ok(FileProgress { offset: r.get::<_, i64>(0)? as u64, lines: r.get::<_, i64>(1)? as u64 })
                })
                .optional()
            })
            .map_err(|e| self.fail("read file progress", e))
    }

    fn set_status(&mut self, projid: &str, tstamp: &str, status: RunStatus, ended: Option<&str>) -> StoreResult<bool> {
        let n = self
            .conn
            .prepare_cached("UPDATE flor_runs SET status = ?1, ended = ?2 WHERE projid = ?3 AND tstamp = ?4")
            .and_then(|mut s| s.execute(rusqlite::params![status.as_str(), ended, projid, tstamp]))
            .map_err(|e| self.fail("update a run's status", e))?;
        Ok(n > 0)
    }

    fn runs(&self) -> StoreResult<Vec<RunRow>> {
        let op = "list runs";
        let mut st = self.conn.prepare_cached(RUNS_SQL).map_err(|e| self.fail(op, e))?;
        let mut rows = st.query([]).map_err(|e| self.fail(op, e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.fail(op, e))? {
            let raw: rusqlite::Result<RawRun> = raw_run!(r);
            let raw = raw.map_err(|e| self.fail(op, e))?;
            out.push(raw.decode(&self.label)?);
        }
        Ok(out)
    }

    fn names(&self) -> StoreResult<Vec<NameInfo>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT n.name, \
                   (SELECT f.kind FROM flor_records f WHERE f.name_id = g.name_id AND f.kind <= 1 \
                    ORDER BY f.run, f.source, f.line LIMIT 1), \
                   g.cnt \
                 FROM (SELECT name_id, count(*) AS cnt FROM flor_records WHERE kind <= 1 GROUP BY name_id) g \
                 JOIN flor_names n ON n.id = g.name_id \
                 ORDER BY n.name",
            )
            .map_err(|e| self.fail("list names", e))?;
        let rows = st
            .query_map([], |r| {
                Ok(NameInfo {
                    name: r.get(0)?,
                    kind: RecordKind::from_code(r.get(1)?).unwrap_or(RecordKind::Log).as_str().to_owned(),
                    count: r.get::<_, i64>(2)? as u64,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.fail("list names", e))?;
        Ok(rows)
    }

    fn scan_values(&self, filter: ValueFilter<'_>, visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()> {
        match filter {
            ValueFilter::Names(names) => self.scan_names(names, visit),
            ValueFilter::RunLevel => self.scan_run_level(visit),
        }
    }

    fn scan_loops(&self, runs: &[RunKey], visit: &mut dyn FnMut(RunKey, &LoopSpan)) -> StoreResult<()> {
        let op = "scan loop iterations";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT first_ctx, count, parent, loop_id, first_iteration, value FROM flor_loops WHERE run = ?1",
            )
            .map_err(|e| self.fail(op, e))?;
        let mut names: HashMap<i64, Arc<str>> = HashMap::new();
        let mut last_id = i64::MIN;
        // One LoopSpan reused for every row: no allocation per span unless
        // it carries a value.
        let mut l =
            LoopSpan { first_ctx: 0, count: 0, parent: None, name: Arc::from(""), first_iteration: 0, value: None };
        for &run in runs {
            let mut rows = st.query([run]).map_err(|e| self.fail(op, e))?;
            while let Some(r) = rows.next().map_err(|e| self.fail(op, e))? {
                let (first_ctx, count, parent, loop_id, first_iteration) = (|| -> rusqlite::Result<_> {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })()
                .map_err(|e| self.fail(op, e))?;
                if loop_id != last_id {
                    if let Some(n) = names.get(&loop_id) {
                        l.name = Arc::clone(n);
                    } else {
                        let n: Arc<str> = self.name_of(loop_id)?.into();
                        names.insert(loop_id, Arc::clone(&n));
                        l.name = n;
                    }
                    last_id = loop_id;
                }
                l.first_ctx = ctx_of(&self.label, Some(first_ctx))?.unwrap_or(0);
                l.count = u32::try_from(count)
                    .ok()
                    .filter(|&c| c >= 1 && u64::from(l.first_ctx) + u64::from(c) <= 1 << 32)
                    .ok_or_else(|| unusable(&self.label, &format!("a loop span has an invalid length {count}")))?;
                l.parent = ctx_of(&self.label, parent)?;
                l.first_iteration = first_iteration as u64;
                match r.get_ref(5).map_err(|e| self.fail(op, e))? {
                    ValueRef::Null => l.value = None,
                    v => {
                        let text = as_text(v);
                        match &mut l.value {
                            Some(s) => {
                                s.clear();
                                s.push_str(&text);
                            }
                            None => l.value = Some(text.into_owned()),
                        }
                    }
                }
                visit(run, &l);
            }
        }
        Ok(())
    }

    fn checkpoints(&self, run: RunKey) -> StoreResult<Vec<CheckpointMeta>> {
        let op = "list checkpoints";
        let mut st = self.conn.prepare_cached(CHECKPOINTS_SQL).map_err(|e| self.fail(op, e))?;
        let rows = st
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<RawCheckpoint>>>())
            .map_err(|e| self.fail(op, e))?;
        rows.into_iter().map(|raw| decode_checkpoint(&self.label, raw)).collect()
    }

    fn checks(&self) -> StoreResult<Vec<flor_core::store::CheckRow>> {
        checks::list(&self.conn, &self.label)
    }

    fn tensor_queue(&self, limit: usize) -> StoreResult<Vec<QueuedCheckpoint>> {
        tensors::queue(&self.conn, &self.label, limit)
    }

    fn requeue_tensors(&mut self) -> StoreResult<()> {
        self.write_step("queue checkpoints again", tensors::requeue)
    }

    fn ingest_tensors(&mut self, run: RunKey, line: u64, rows: &[TensorRow]) -> StoreResult<()> {
        self.write_step("store tensor statistics", |tx, label| tensors::store(tx, label, run, line, rows))
    }

    fn scan_tensors(&self, filter: TensorFilter<'_>, visit: &mut dyn FnMut(TensorVisit<'_>)) -> StoreResult<()> {
        tensors::scan(&self.conn, &self.label, filter, visit)
    }

    fn scan_outputs(&self, filter: OutputFilter<'_>, visit: &mut dyn FnMut(OutputRow<'_>)) -> StoreResult<()> {
        outputs::scan(&self.conn, &self.label, filter, visit)
    }

    fn query(&self, sql: &str) -> StoreResult<Table> {
        self.outside_group("run a query")?;
        self.run_query(sql, None)
    }

    fn query_within(&self, sql: &str, limit: Option<Duration>) -> StoreResult<Table> {
        self.outside_group("run a query")?;
        self.run_query(sql, limit)
    }

    fn dataframe(&self, names: &[&str]) -> StoreResult<Table> {
        self.dataframe_filtered(names, &flor_core::PivotFilter::default())
    }

    fn dataframe_filtered(&self, names: &[&str], filter: &flor_core::PivotFilter) -> StoreResult<Table> {
        self.outside_group("build a dataframe")?;
        crate::pivot::dataframe_with(self, names, filter, || self.pivot(names, filter))
    }

    fn has_names(&self, names: &[&str]) -> StoreResult<Vec<bool>> {
        let op = "look names up";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM flor_records r JOIN flor_names n ON r.name_id = n.id \
                 WHERE n.name = ?1 AND r.kind <= 1)",
            )
            .map_err(|e| self.fail(op, e))?;
        names.iter().map(|n| st.query_row([n], |r| r.get::<_, bool>(0)).map_err(|e| self.fail(op, e))).collect()
    }

    fn clear(&mut self) -> StoreResult<()> {
        self.outside_group("clear the database")?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail(&self.label, "clear the database", e))?;
        for t in DATA_TABLES {
            tx.execute(&format!("DELETE FROM {t}"), []).map_err(|e| fail(&self.label, "clear the database", e))?;
        }
        // (`flor_seq` stays: it only ever needs to be long enough.)
        tx.execute("UPDATE flor_meta SET value = 1 WHERE key = 'max_span'", [])
            .map_err(|e| fail(&self.label, "clear the database", e))?;
        tx.commit().map_err(|e| fail(&self.label, "clear the database", e))?;
        self.names.clear();
        self.data_version = None;
        Ok(())
    }
}

impl SqliteStore {
    fn name_of(&self, id: i64) -> StoreResult<String> {
        let name: Option<String> = self
            .conn
            .prepare_cached("SELECT name FROM flor_names WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| self.fail("look up a name", e))?;
        name.ok_or_else(|| unusable(&self.label, &format!("name id {id} is missing")))
    }
}

/// Maps an engine failure during `op` (a phrase like "store records").
fn fail(label: &str, op: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => damaged(label, "the file is not a SQLite database".into()),
        Some(ErrorCode::DatabaseCorrupt) => damaged(label, format!("the database is corrupt: {e}")),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "cannot {op}: another process held the database locked for more than {} s ({e})",
                BUSY_TIMEOUT.as_secs()
            ),
            source: Some(Box::new(e)),
        },
        _ => StoreError::Backend { backend: BACKEND, message: format!("cannot {op}: {e}"), source: Some(Box::new(e)) },
    }
}

fn intern(conn: &Connection, cache: &mut HashMap<Box<str>, i64>, name: &str) -> rusqlite::Result<i64> {
    if let Some(&id) = cache.get(name) {
        return Ok(id);
    }
    let found: Option<i64> =
        conn.prepare_cached("SELECT id FROM flor_names WHERE name = ?1")?.query_row([name], |r| r.get(0)).optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            conn.prepare_cached("INSERT INTO flor_names (name) VALUES (?1)")?.execute([name])?;
            conn.last_insert_rowid()
        }
    };
    cache.insert(name.into(), id);
    Ok(id)
}

fn source_of(label: &str, code: i64) -> StoreResult<Source> {
    Source::from_code(code).ok_or_else(|| unusable(label, &format!("a record has an unknown source code {code}")))
}

/// `argv` as stored: JSON.
/// Inserts the run's row, or replaces its metadata; returns its key.
fn upsert_run(tx: &Connection, m: &RunMeta, argv: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached(UPSERT_RUN).and_then(|mut s| {
        s.query_row(
            rusqlite::params![
                m.projid,
                m.tstamp,
                m.filename,
                argv,
                m.interpreter,
                m.host,
                i64::from(m.pid),
                m.commit,
                m.status.as_str(),
                m.ended
            ],
            |r| r.get(0),
        )
    })
}

/// Stores a batch's records (names interned through `names`), a stored
/// line replaced; returns how many records are new.
fn store_records(
    tx: &Connection,
    label: &str,
    names: &mut HashMap<Box<str>, i64>,
    run: i64,
    source: i64,
    records: &[Record],
) -> StoreResult<i64> {
    let err = |op: &'static str| move |e: rusqlite::Error| fail(label, op, e);
    let mut added = 0i64;
    if records.is_empty() {
        return Ok(added);
    }
    let mut ins = tx.prepare_cached(INSERT_RECORD).map_err(err("store records"))?;
    ins.raw_bind_parameter(2, run).map_err(err("store records"))?;
    ins.raw_bind_parameter(3, source).map_err(err("store records"))?;
    let mut ids = Vec::with_capacity(records.len());
    for r in records {
        let id = intern(tx, names, &r.name).map_err(err("intern a value name"))?;
        ids.push(id);
        let inserted = (|| {
            bind_record(&mut ins, id, r)?;
            ins.raw_execute()
        })()
        .map_err(err("store records"))?;
        if inserted > 0 {
            added += 1;
        } else {
            // Re-ingestion of a stored line: replace it (rare).
            (|| {
                let mut up = tx.prepare_cached(REPLACE_RECORD)?;
                up.raw_bind_parameter(2, run)?;
                up.raw_bind_parameter(3, source)?;
                bind_record(&mut up, id, r)?;
                up.raw_execute()
            })()
            .map_err(err("replace records"))?;
        }
    }
    packed::store(tx, label, run, source, records, &ids)?;
    Ok(added)
}

/// Binds record `r` (name id `id`) to parameters 1 and 4..=8 of
/// [`INSERT_RECORD`] or [`REPLACE_RECORD`] (2 and 3, run and source, are
/// the batch's).
#[inline]
fn bind_record(st: &mut CachedStatement<'_>, id: i64, r: &Record) -> rusqlite::Result<()> {
    st.raw_bind_parameter(1, id)?;
    st.raw_bind_parameter(4, r.line as i64)?;
    st.raw_bind_parameter(5, r.ctx.map(i64::from))?;
    st.raw_bind_parameter(6, r.kind.code())?;
    st.raw_bind_parameter(7, r.value.value_type().code())?;
    bind_value(st, 8, &r.value)
}

/// Stores a batch's checkpoints (a stored line's replaced).
fn store_checkpoints(tx: &Connection, run: i64, source: i64, checkpoints: &[CheckpointMeta]) -> rusqlite::Result<()> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut st = tx.prepare_cached(INSERT_CHECKPOINT)?;
    for c in checkpoints {
        st.execute(rusqlite::params![
            run,
            source,
            c.line as i64,
            c.ctx.map(i64::from),
            c.name,
            c.digest,
            c.bytes as i64,
            c.format
        ])?;
    }
    if source == Source::Forward.code() {
        // Their tensors wait in the queue (see `Store::tensor_queue`).
        let mut queue = tx.prepare_cached("INSERT OR IGNORE INTO flor_tensor_queue (run, line) VALUES (?1, ?2)")?;
        for c in checkpoints {
            queue.execute(rusqlite::params![run, c.line as i64])?;
        }
    }
    Ok(())
}

/// Stores a batch's loop iterations as spans. Iterations already stored for
/// these contexts are replaced (so re-ingesting a batch, or overlapping
/// batches, never duplicates a context), and a span continuing a stored one
/// (a record file ingested piece by piece) is merged with it.
fn store_loops(
    tx: &Connection,
    names: &mut HashMap<Box<str>, i64>,
    run: i64,
    loops: &[LoopCtx],
) -> rusqlite::Result<()> {
    let mut new: Vec<(i64, Span)> = Vec::new();
    for l in LoopSpan::compress(loops) {
        let loop_id = intern(tx, names, &l.name)?;
        new.push((i64::from(l.first_ctx), Span::of(&l, loop_id)));
    }
    let new = spans::split_long(new, i64::from(MAX_SPAN));
    let (Some(lo), Some(hi)) = (new.iter().map(|s| s.0).min(), new.iter().map(|s| s.0 + s.1.count).max()) else {
        return Ok(());
    };
    // The stored spans around the batch's contexts, then the batch on top.
    let mut spans: BTreeMap<i64, Span> = BTreeMap::new();
    {
        let mut st = tx.prepare_cached(NEAR_SPANS)?;
        let mut rows = st.query([run, lo, hi])?;
        while let Some(r) = rows.next()? {
            let span = Span {
                count: r.get(1)?,
                parent: r.get(2)?,
                loop_id: r.get(3)?,
                first_iteration: r.get(4)?,
                value: r.get(5)?,
            };
            spans.insert(r.get(0)?, span);
        }
    }
    let stored = spans.keys().next().copied();
    let merged = spans::merge(spans, new, i64::from(MAX_SPAN));
    if let Some(from) = stored {
        tx.prepare_cached(DELETE_SPANS)?.execute([run, from, hi])?;
    }
    let mut st = tx.prepare_cached(INSERT_SPAN)?;
    st.raw_bind_parameter(1, run)?;
    for (first, s) in &merged {
        st.raw_bind_parameter(2, first)?;
        st.raw_bind_parameter(3, s.count)?;
        st.raw_bind_parameter(4, s.parent)?;
        st.raw_bind_parameter(5, s.loop_id)?;
        st.raw_bind_parameter(6, s.first_iteration)?;
        st.raw_bind_parameter(7, s.value.as_deref())?;
        st.raw_execute()?;
    }
    // For the `loops` view: `flor_seq` counts past the last context, and
    // `max_span` bounds every span's length.
    let longest = merged.iter().map(|s| s.1.count).max().unwrap_or(1);
    tx.prepare_cached("UPDATE flor_meta SET value = ?1 WHERE key = 'max_span' AND value < ?1")?.execute([longest])?;
    let end = merged.iter().map(|s| s.0 + s.1.count).max().unwrap_or(0);
    let have: i64 = tx.prepare_cached("SELECT coalesce(max(i) + 1, 0) FROM flor_seq")?.query_row([], |r| r.get(0))?;
    if end > have {
        let want = (end as u64).next_multiple_of(SEQ_STEP as u64) as i64;
        tx.prepare_cached(
            "INSERT INTO flor_seq (i) WITH RECURSIVE k(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?2) \
             SELECT i FROM k",
        )?
        .execute([have, want])?;
    }
    Ok(())
}

fn bind_value(st: &mut CachedStatement<'_>, i: usize, v: &Value) -> rusqlite::Result<()> {
    match v {
        Value::Int(x) => st.raw_bind_parameter(i, *x),
        // SQLite turns NaN into NULL; `vtype` float + NULL reads back as NaN.
        Value::Float(x) if x.is_nan() => st.raw_bind_parameter(i, Null),
        Value::Float(x) => st.raw_bind_parameter(i, *x),
        Value::Bool(x) => st.raw_bind_parameter(i, i64::from(*x)),
        Value::Text(s) | Value::Json(s) => st.raw_bind_parameter(i, &**s),
    }
}

fn as_text(v: ValueRef<'_>) -> Cow<'_, str> {
    match v {
        ValueRef::Text(t) => String::from_utf8_lossy(t),
        ValueRef::Integer(i) => Cow::Owned(i.to_string()),
        ValueRef::Real(f) => Cow::Owned(Value::Float(f).to_string()),
        ValueRef::Blob(b) => Cow::Owned(hex(b)),
        ValueRef::Null => Cow::Borrowed(""),
    }
}

/// A stored value back as a [`Value`], from its `vtype` code and cell.
fn decode(label: &str, vtype: i64, v: ValueRef<'_>) -> StoreResult<Value> {
    Ok(match (ValueType::from_code(vtype), v) {
        (Some(ValueType::Int), ValueRef::Integer(i)) => Value::Int(i),
        (Some(ValueType::Float), ValueRef::Real(f)) => Value::Float(f),
        (Some(ValueType::Float), ValueRef::Null) => Value::Float(f64::NAN),
        (Some(ValueType::Float), ValueRef::Integer(i)) => Value::Float(i as f64),
        (Some(ValueType::Bool), ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Some(ValueType::Text), ValueRef::Text(t)) => Value::Text(String::from_utf8_lossy(t).into()),
        (Some(ValueType::Json), ValueRef::Text(t)) => Value::Json(String::from_utf8_lossy(t).into()),
        (t, v) => {
            return Err(unusable(
                label,
                &format!(
                    "a stored value has type {:?} but the record says {}",
                    v.data_type(),
                    t.map_or("unknown", |t| t.as_str())
                ),
            ))
        }
    })
}
