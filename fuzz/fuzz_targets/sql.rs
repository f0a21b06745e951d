//! User SQL (`flor query`, `Project::query`) against a SQLite store holding
//! two real runs. The read-only rule is the property: whatever the text,
//! a query leaves the database as it was. After each query, a second
//! connection checks that nothing was committed (SQLite's `data_version`),
//! the store's own view of its runs and names is unchanged, no temporary
//! object or attached database was created, and no file appeared next to
//! the database (`ATTACH`, `VACUUM INTO`). The process runs in the store's
//! folder, so a relative file name lands where it is seen.

#![no_main]

use std::path::PathBuf;
use std::sync::Mutex;

use flor_core::record::parse_lines;
use flor_core::store::{FileProgress, IngestBatch};
use flor_core::Store;
use flor_store::SqliteStore;
use libfuzzer_sys::fuzz_target;
use rusqlite::{Connection, OpenFlags};

const RUNS: [&[u8]; 2] =
    [include_bytes!("../seeds/records/sgd.jsonl"), include_bytes!("../seeds/records/python.jsonl")];

struct Fixture {
    dir: tempfile::TempDir,
    store: SqliteStore,
    watcher: Connection,
    version: i64,
    snapshot: String,
    files: Vec<PathBuf>,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::env::set_current_dir(dir.path()).expect("enter the temporary folder");
    let path = dir.path().join("flor.db");
    let mut store = SqliteStore::open(&path).expect("open the store");
    for (i, bytes) in RUNS.iter().enumerate() {
        let p = parse_lines(bytes, 1);
        let (run, source) = p.header.clone().expect("a seed run has a header");
        let file = format!("run{i}.jsonl");
        store
            .ingest(&IngestBatch {
                run: &run,
                source,
                file: &file,
                progress: FileProgress { offset: p.consumed as u64, lines: p.lines },
                loops: &p.loops,
                records: &p.records,
                checkpoints: &p.checkpoints,
                checks: &p.checks,
            })
            .expect("ingest a seed run");
    }
    let watcher = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("a second connection");
    let version = data_version(&watcher);
    let snapshot = snapshot(&store);
    let files = files(&dir);
    Fixture { dir, store, watcher, version, snapshot, files }
}

fn data_version(c: &Connection) -> i64 {
    c.query_row("PRAGMA data_version", [], |r| r.get(0)).expect("read data_version")
}

/// What the store shows of itself, read through its trusted paths.
fn snapshot(store: &SqliteStore) -> String {
    let runs = store.runs().expect("runs");
    let names = store.names().expect("names");
    let schema = store.query("SELECT type, name, sql FROM sqlite_schema ORDER BY name").expect("schema");
    let temp = store.query("SELECT name FROM sqlite_temp_schema").expect("temporary schema");
    let dbs = store.query("SELECT name, file FROM pragma_database_list ORDER BY seq").expect("databases");
    let version = store.query("PRAGMA user_version").expect("user_version");
    format!("{runs:?}\n{names:?}\n{:?}\n{:?}\n{:?}\n{:?}", schema.rows(), temp.rows(), dbs.rows(), version.rows())
}

fn files(dir: &tempfile::TempDir) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list the folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.to_string_lossy().ends_with("-shm") && !p.to_string_lossy().ends_with("-wal"))
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    let fx = guard.get_or_insert_with(fixture);
    let result = fx.store.query(sql);
    assert_eq!(data_version(&fx.watcher), fx.version, "{sql:?} committed a write ({result:?})");
    assert_eq!(files(&fx.dir), fx.files, "{sql:?} created a file");
    // The snapshot costs a few queries: take it after every query that
    // ran, and after a refusal one time in 16 (chosen by the input's length,
    // so that replaying one input checks what fuzzing it checked).
    if result.is_ok() || data.len().is_multiple_of(16) {
        assert_eq!(snapshot(&fx.store), fx.snapshot, "{sql:?} changed the store ({result:?})");
    }
});
