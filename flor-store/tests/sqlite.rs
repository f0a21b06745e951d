//! The SQLite backend: the conformance suites (in memory, on disk, with split
//! scans; one `#[test]` per check) and SQLite-specific behaviour (files,
//! versions, concurrent writers).

use std::path::Path;
use std::sync::Arc;

use flor_core::store::{FileProgress, IngestBatch, LoopSpan, Store, StoreError, ValueFilter};
use flor_core::table::ColumnData;
use flor_core::{LoopCtx, Record, RecordKind, RunMeta, Source, Value};
use flor_store::{conformance, SqliteStore, SCHEMA_VERSION};

/// The conformance suites, one `#[test]` per check
/// (`conformance_in_memory::runs_roundtrip`, ...).
mod conformance_in_memory {
    use flor_store::SqliteStore;

    flor_store::conformance_tests!(all, || Box::new(SqliteStore::open_in_memory().unwrap()));
}

/// The suites on disk: each test's stores in its own temporary folder.
mod conformance_on_disk {
    use flor_store::SqliteStore;

    flor_store::conformance_tests!(all, {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        move || {
            n += 1;
            Box::new(SqliteStore::open(&dir.path().join(format!("db{n}/flor.db"))).unwrap())
        }
    });
}

/// The suites again with every name scan split over two threads.
mod conformance_on_disk_with_split_scans {
    use flor_store::SqliteStore;

    flor_store::conformance_tests!(all, {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        move || {
            n += 1;
            let mut store = SqliteStore::open(&dir.path().join(format!("db{n}/flor.db"))).unwrap();
            store.set_split_scan_threshold(0);
            Box::new(store)
        }
    });
}

/// The suites with ingestion steps grouped (one transaction, a savepoint
/// per step; reads inside groups), in memory and on disk.
mod conformance_with_ingestion_groups {
    use flor_store::conformance::GroupedSteps;
    use flor_store::SqliteStore;

    flor_store::conformance_tests!(all, || Box::new(GroupedSteps::new(SqliteStore::open_in_memory().unwrap())));
}

mod conformance_on_disk_with_ingestion_groups {
    use flor_store::conformance::GroupedSteps;
    use flor_store::SqliteStore;

    flor_store::conformance_tests!(all, {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        move || {
            n += 1;
            Box::new(GroupedSteps::new(SqliteStore::open(&dir.path().join(format!("db{n}/flor.db"))).unwrap()))
        }
    });
}

/// `run_all` runs both suites in one test (for callers that want that).
#[test]
fn conformance_run_all() {
    conformance::run_all(&mut || Box::new(SqliteStore::open_in_memory().unwrap()));
}

/// A split scan visits exactly the values a single-threaded scan does.
#[test]
fn split_scan_matches_single_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut split = SqliteStore::open(&dir.path().join("flor.db")).unwrap();
    for run in 0..7 {
        ingest_synthetic(&mut split, run, 3, 5);
    }
    split.set_split_scan_threshold(0);
    let mut single = SqliteStore::open(&dir.path().join("flor.db")).unwrap();
    single.set_split_scan_threshold(i64::MAX);
    let collect = |s: &SqliteStore| {
        let mut rows = Vec::new();
        s.scan_values(ValueFilter::Names(&["loss", "acc"]), &mut |r| {
            rows.push((r.run, r.ctx, r.line, r.name.to_owned(), r.value.to_string()))
        })
        .unwrap();
        rows.sort_by(|a, b| (a.0, a.2, &a.3).cmp(&(b.0, b.2, &b.3)));
        rows
    };
    let a = collect(&split);
    assert!(!a.is_empty());
    assert_eq!(a, collect(&single));
    assert_eq!(split.dataframe(&["loss", "acc"]).unwrap(), single.dataframe(&["loss", "acc"]).unwrap());
}

fn meta(tstamp: &str) -> RunMeta {
    RunMeta::new("p", tstamp, "train.py")
}

/// `runs` runs of `epochs` × `steps` logging `loss` per step: the
/// benchmark shape.
fn synthetic(run: usize, epochs: u32, steps: u32) -> (RunMeta, Vec<LoopCtx>, Vec<Record>) {
    let m = meta(&format!("2026-01-01T00:00:{:02}.{:06}", run / 1_000_000, run % 1_000_000));
    let (epoch, step, loss): (Arc<str>, Arc<str>, Arc<str>) = ("epoch".into(), "step".into(), "loss".into());
    let mut loops = Vec::new();
    let mut records = Vec::new();
    let mut line = 1;
    let mut ctx = 0;
    for e in 0..epochs {
        let ec = ctx;
        ctx += 1;
        line += 1;
        loops.push(LoopCtx { ctx: ec, parent: None, name: epoch.clone(), iteration: e as u64, value: None });
        for s in 0..steps {
            let sc = ctx;
            ctx += 1;
            line += 1;
            loops.push(LoopCtx { ctx: sc, parent: Some(ec), name: step.clone(), iteration: s as u64, value: None });
            line += 1;
            records.push(Record {
                line,
                ctx: Some(sc),
                kind: RecordKind::Log,
                name: loss.clone(),
                value: Value::Float((run * 1000 + (e * steps + s) as usize) as f64 / 7.0),
            });
        }
    }
    (m, loops, records)
}

fn ingest_synthetic(store: &mut dyn Store, run: usize, epochs: u32, steps: u32) {
    let (m, loops, records) = synthetic(run, epochs, steps);
    let file = format!("run{run}");
    store
        .ingest(&IngestBatch {
            run: &m,
            source: Source::Forward,
            file: &file,
            progress: FileProgress { offset: 1, lines: 1 },
            loops: &loops,
            records: &records,
            checkpoints: &[],
            checks: &[],
        })
        .unwrap();
}

#[test]
fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dirs/flor.db");
    {
        let mut s = SqliteStore::open(&path).unwrap();
        ingest_synthetic(&mut s, 1, 2, 3);
        assert_eq!(s.path(), path.display().to_string());
    }
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.runs().unwrap().len(), 1);
    assert_eq!(s.dataframe(&["loss"]).unwrap().row_count(), 6);
    // A second connection interns further names consistently.
    ingest_synthetic(&mut s, 2, 1, 1);
    let mut other = SqliteStore::open(&path).unwrap();
    ingest_synthetic(&mut other, 3, 1, 1);
    assert_eq!(s.dataframe(&["loss"]).unwrap().row_count(), 8);
    let mode = s.query("PRAGMA journal_mode").map(|t| t.rows());
    // `journal_mode` is not an informational pragma for user queries.
    assert!(matches!(mode, Err(StoreError::NotReadOnly { .. })), "{mode:?}");
}

fn assert_unusable(path: &Path, what: &str) {
    match SqliteStore::open(path) {
        Err(flor_store::Error::Store(StoreError::Unusable { path: p, message })) => {
            assert_eq!(p, path.display().to_string());
            assert!(!message.is_empty());
            let shown = StoreError::Unusable { path: p, message }.to_string();
            assert!(shown.contains("flor rebuild"), "{shown}");
        }
        other => panic!("{what}: expected Unusable, got {other:?}"),
    }
}

#[test]
fn not_a_database_is_damaged_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.db");
    let junk = b"this is not a database, and it must stay exactly like this.\n".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    match SqliteStore::open(&path) {
        Err(flor_store::Error::Store(e @ StoreError::Damaged { .. })) => {
            let shown = e.to_string();
            assert!(shown.contains("not a SQLite database") && shown.contains("flor rebuild"), "{shown}");
        }
        other => panic!("a text file: expected Damaged, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), junk);
    assert!(!dir.path().join("flor.db-wal").exists());
}

#[test]
fn newer_older_and_foreign_layouts_are_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer).unwrap());
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    }
    assert_unusable(&newer, "a newer schema");
    match SqliteStore::open(&newer) {
        Err(flor_store::Error::Store(StoreError::Unusable { message, .. })) => {
            assert!(message.contains("newer"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    let foreign = dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE precious (x); INSERT INTO precious VALUES (1);").unwrap();
    }
    assert_unusable(&foreign, "another application's database");
    let c = rusqlite::Connection::open(&foreign).unwrap();
    let n: i64 = c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "nothing was added to a foreign database");

    let missing = dir.path().join("missing.db");
    drop(SqliteStore::open(&missing).unwrap());
    {
        let c = rusqlite::Connection::open(&missing).unwrap();
        c.execute_batch("DROP TABLE flor_files").unwrap();
    }
    assert_unusable(&missing, "a damaged layout");
}

/// The version-1 layout (one `flor_loops` row per context) is refused with
/// the advice to rebuild, and left as it is.
#[test]
fn version_1_database_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP VIEW loops; DROP TABLE flor_loops; DROP TABLE flor_seq; \
             CREATE TABLE flor_loops (run INTEGER NOT NULL, ctx INTEGER NOT NULL, parent INTEGER, \
                 loop_id INTEGER NOT NULL, iteration INTEGER NOT NULL, value TEXT, PRIMARY KEY (run, ctx)) WITHOUT ROWID; \
             INSERT INTO flor_loops VALUES (1, 0, NULL, 1, 0, NULL); \
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    assert_unusable(&path, "a version-1 database");
    assert_eq!(flor_store::schema_version_of(&path), Some(1));
    assert_eq!(flor_store::schema_version_of(&dir.path().join("missing.db")), None);
    match SqliteStore::open(&path) {
        Err(flor_store::Error::Store(e @ StoreError::Unusable { .. })) => {
            let shown = e.to_string();
            assert!(shown.contains("older layout (schema version 1)"), "{shown}");
            assert!(shown.contains("flor rebuild"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1, "the old database is left untouched");
    let n: i64 = c.query_row("SELECT count(*) FROM flor_loops", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

/// Spans continued by a later batch are merged with it, so a file ingested
/// piece by piece stores what it stores in one batch; loops longer than a
/// stored span are split, and the `loops` view still lists each context.
#[test]
fn spans_merge_across_batches_and_split_long_loops() {
    let (m, loops, _) = synthetic(1, 3, 50);
    let spans_of = |s: &SqliteStore| -> Vec<Vec<Option<Value>>> {
        s.query("SELECT first_ctx, count, parent, first_iteration FROM flor_loops ORDER BY first_ctx").unwrap().rows()
    };
    let mut whole = SqliteStore::open_in_memory().unwrap();
    let mut pieces = SqliteStore::open_in_memory().unwrap();
    let ingest = |s: &mut SqliteStore, loops: &[LoopCtx]| {
        s.ingest(&IngestBatch {
            run: &m,
            source: Source::Forward,
            file: "f",
            progress: FileProgress::default(),
            loops,
            records: &[],
            checkpoints: &[],
            checks: &[],
        })
        .unwrap();
    };
    ingest(&mut whole, &loops);
    for chunk in loops.chunks(7) {
        ingest(&mut pieces, chunk);
    }
    assert_eq!(spans_of(&whole).len(), 6);
    assert_eq!(spans_of(&pieces), spans_of(&whole));

    // One flat loop of 200,000 iterations, in uneven batches.
    let n = 200_000u32;
    let flat: Vec<LoopCtx> = (0..n)
        .map(|k| LoopCtx { ctx: k, parent: None, name: "batch".into(), iteration: k as u64, value: None })
        .collect();
    let mut s = SqliteStore::open_in_memory().unwrap();
    for chunk in flat.chunks(30_001) {
        ingest(&mut s, chunk);
    }
    let spans = spans_of(&s);
    assert_eq!(spans.len(), n.div_ceil(4096) as usize, "{spans:?}");
    assert!(spans.iter().all(|s| matches!(s[1], Some(Value::Int(c)) if c <= 4096)), "{spans:?}");
    let mut got: Vec<LoopCtx> = Vec::new();
    let key = s.runs().unwrap()[0].key;
    s.scan_loops(&[key], &mut |_, span: &LoopSpan| got.extend(span.expand())).unwrap();
    got.sort_by_key(|l| l.ctx);
    assert_eq!(got, flat);
    let t = s
        .query(
            "SELECT count(*), count(DISTINCT ctx_id), min(ctx_id), max(ctx_id), sum(loop_iteration = ctx_id) \
             FROM loops",
        )
        .unwrap();
    let n = Some(Value::Int(i64::from(n)));
    assert_eq!(t.rows(), vec![vec![n.clone(), n.clone(), Some(Value::Int(0)), Some(Value::Int(199_999)), n]]);
    let helpers =
        s.query("SELECT (SELECT count(*) FROM flor_seq), value FROM flor_meta WHERE key = 'max_span'").unwrap();
    assert_eq!(helpers.rows(), vec![vec![Some(Value::Int(200_704)), Some(Value::Int(4096))]]);
}

/// The `loops` view reads `flor_loops` by run or in full and expands each
/// span, whatever the filter: never all of `flor_seq` with a probe into
/// `flor_loops` per row (seconds at scale).
#[test]
fn loops_view_plans_expand_spans() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    for run in 0..3 {
        ingest_synthetic(&mut s, run, 4, 30);
    }
    let t = "'2026-01-01T00:00:00.000001'";
    for sql in [
        "SELECT * FROM loops".to_owned(),
        format!("SELECT * FROM loops WHERE tstamp = {t}"),
        "SELECT * FROM loops WHERE loop_name = 'epoch'".to_owned(),
        "SELECT * FROM loops WHERE parent_ctx_id = 0".to_owned(),
        "SELECT * FROM loops WHERE loop_value = 'x'".to_owned(),
        "SELECT * FROM loops WHERE loop_iteration = 3 AND loop_name = 'step'".to_owned(),
        format!("SELECT * FROM loops WHERE tstamp > {t} AND loop_name = 'step'"),
    ] {
        let plan: Vec<String> = s
            .query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .column("detail")
            .unwrap()
            .cells()
            .map(|c| c.map(|v| v.to_string()).unwrap_or_default())
            .collect();
        assert!(!plan.iter().any(|p| p.starts_with("SCAN k") || p.contains("AUTOMATIC")), "{sql}: {plan:?}");
    }
    // Lookups by context search flor_seq by rowid.
    let plan = s
        .query("EXPLAIN QUERY PLAN SELECT g.value, l.loop_iteration FROM logs g JOIN loops l ON l.tstamp = g.tstamp AND l.ctx_id = g.ctx_id")
        .unwrap()
        .rows();
    assert!(plan.iter().any(|r| r[3] == Some(Value::from("SEARCH k USING INTEGER PRIMARY KEY (rowid=?)"))), "{plan:?}");
    // The filters keep their affinity.
    let n = s.query(&format!("SELECT count(*) FROM loops WHERE tstamp = {t} AND parent_ctx_id = '0'")).unwrap();
    assert_eq!(n.rows(), vec![vec![Some(Value::Int(30))]]);
}

/// Query results come back in compact columns where the cells allow it,
/// and every cell reads back as SQLite returned it.
#[test]
fn query_columns_are_typed_by_their_cells() {
    let s = SqliteStore::open_in_memory().unwrap();
    let t = s
        .query(
            "SELECT column1 AS i, column2 AS f, column3 AS t, column4 AS mixed, column5 AS nulls FROM (VALUES \
             (NULL, 1.5, 'a', 1, NULL), (2, NULL, 'b', 'x', NULL), (3, 2.5, 'a', 2.5, NULL), (4, 0.0, NULL, NULL, NULL))",
        )
        .unwrap();
    let data = |name: &str| &t.column(name).unwrap().data;
    assert_eq!(data("i"), &ColumnData::Int(vec![None, Some(2), Some(3), Some(4)].into()));
    assert_eq!(data("f"), &ColumnData::Float(vec![Some(1.5), None, Some(2.5), Some(0.0)].into()));
    assert!(matches!(data("t"), ColumnData::Dict { dict, .. } if dict.len() == 2));
    let cells = |name: &str| t.column(name).unwrap().cells().collect::<Vec<_>>();
    assert_eq!(cells("t"), vec![Some(Value::from("a")), Some(Value::from("b")), Some(Value::from("a")), None]);
    assert_eq!(cells("mixed"), vec![Some(Value::Int(1)), Some(Value::from("x")), Some(Value::Float(2.5)), None]);
    assert!(matches!(data("mixed"), ColumnData::Values(_)));
    assert_eq!(cells("nulls"), vec![None; 4]);
    let t = s.query("SELECT x'00ff' AS b UNION ALL SELECT 'z'").unwrap();
    assert_eq!(t.rows(), vec![vec![Some(Value::from("00FF"))], vec![Some(Value::from("z"))]]);
}

#[test]
fn open_reports_io_errors_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file.join("sub/flor.db")).unwrap_err();
    assert!(matches!(err, flor_store::Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");
    let as_store: StoreError = err.into();
    assert!(matches!(as_store, StoreError::Backend { .. }));
}

#[test]
fn internal_tables_are_read_only_too() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    ingest_synthetic(&mut s, 1, 1, 2);
    for sql in [
        "DELETE FROM flor_records",
        "WITH x AS (SELECT 1) DELETE FROM flor_runs",
        "WITH x AS (SELECT 1) INSERT INTO flor_names (name) VALUES ('x')",
        "EXPLAIN DELETE FROM flor_records",
        "PRAGMA user_version = 99",
        "PRAGMA query_only = 0",
        "SELECT * FROM pragma_writable_schema",
    ] {
        match s.query(sql) {
            Err(StoreError::NotReadOnly { .. }) => {}
            other => panic!("{sql}: expected NotReadOnly, got {other:?}"),
        }
    }
    // A write hidden behind a first statement is refused without running.
    assert!(s.query("SELECT 1; PRAGMA writable_schema = 1").is_err());
    assert!(s.query("SELECT 1; DELETE FROM flor_records").is_err());
    let t = s.query("SELECT count(*) FROM flor_records").unwrap();
    assert_eq!(t.rows(), vec![vec![Some(Value::Int(2))]]);
    // Informational pragmas work, including their table-valued forms.
    let t = s.query("PRAGMA table_info(logs)").unwrap();
    assert!(t.row_count() >= 9);
    let t = s.query("SELECT name FROM pragma_table_info('runs') ORDER BY cid").unwrap();
    assert_eq!(t.row_count(), 8);
    let t = s.query("PRAGMA user_version").unwrap();
    assert_eq!(t.rows(), vec![vec![Some(Value::Int(SCHEMA_VERSION))]]);
    // Blobs come back as hex text.
    let t = s.query("SELECT x'00ff10' AS b").unwrap();
    assert_eq!(t.rows(), vec![vec![Some(Value::Text("00FF10".into()))]]);
    // Internal writes still work after refused queries.
    ingest_synthetic(&mut s, 2, 1, 2);
    assert_eq!(s.runs().unwrap().len(), 2);
}

#[test]
fn syntax_errors_carry_the_engine_message() {
    let s = SqliteStore::open_in_memory().unwrap();
    match s.query("SELECT FROM WHERE") {
        Err(StoreError::Query { backend, message }) => {
            assert_eq!(backend, "sqlite");
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_writers_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.db");
    drop(SqliteStore::open(&path).unwrap());
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = SqliteStore::open(&path).unwrap();
                for k in 0..20 {
                    let run = w * 100 + k;
                    let (m, loops, mut records) = synthetic(run, 2, 5);
                    // Names new to the database, interned by racing writers.
                    records.push(Record {
                        line: 1000,
                        ctx: None,
                        kind: RecordKind::Arg,
                        name: format!("shared{}", k % 4).into(),
                        value: Value::Int(run as i64),
                    });
                    let file = format!("run{run}");
                    s.ingest(&IngestBatch {
                        run: &m,
                        source: Source::Forward,
                        file: &file,
                        progress: FileProgress { offset: 10, lines: 2 },
                        loops: &loops,
                        records: &records,
                        checkpoints: &[],
                        checks: &[],
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let s = SqliteStore::open(&path).unwrap();
            for _ in 0..20 {
                s.dataframe(&["loss"]).unwrap();
                s.query("SELECT count(*) FROM logs").unwrap();
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    let s = SqliteStore::open(&path).unwrap();
    let runs = s.runs().unwrap();
    assert_eq!(runs.len(), 60);
    assert!(runs.iter().all(|r| r.records == 11));
    assert_eq!(s.dataframe(&["loss"]).unwrap().row_count(), 600);
    let mut shared = 0;
    s.scan_values(ValueFilter::RunLevel, &mut |r| {
        assert!(r.name.starts_with("shared"));
        shared += 1;
    })
    .unwrap();
    assert_eq!(shared, 60);
    let names = s.names().unwrap();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn nan_is_stored_as_null() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let m = meta("2026-01-01T00:00:00.000001");
    let records =
        vec![Record { line: 2, ctx: None, kind: RecordKind::Log, name: "x".into(), value: Value::Float(f64::NAN) }];
    s.ingest(&IngestBatch {
        run: &m,
        source: Source::Forward,
        file: "f",
        progress: FileProgress::default(),
        loops: &[],
        records: &records,
        checkpoints: &[],
        checks: &[],
    })
    .unwrap();
    let t = s.query("SELECT value, value_type FROM logs").unwrap();
    assert_eq!(t.rows(), vec![vec![None, Some(Value::Text("float".into()))]]);
}

/// An ingestion group is one transaction: another connection sees its
/// steps only at its end; inside it, queries, dataframes, `clear` and a
/// second group are refused; a failed step is rolled back alone but spoils
/// the group, which `end_group(true)` then discards whole.
#[test]
fn ingestion_group_is_one_transaction_discarded_whole_after_a_failed_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let other = SqliteStore::open(&path).unwrap();
    store.begin_group().unwrap();
    ingest_synthetic(&mut store, 0, 2, 3);
    ingest_synthetic(&mut store, 1, 2, 3);
    assert_eq!(store.runs().unwrap().len(), 2, "the group's steps are seen inside it");
    assert_eq!(store.file_progress("run1").unwrap(), Some(FileProgress { offset: 1, lines: 1 }));
    assert_eq!(other.runs().unwrap().len(), 0, "another connection sees nothing before the end");
    for (what, e) in [
        ("query", store.query("SELECT 1").err()),
        ("dataframe", store.dataframe(&["loss"]).err()),
        ("second group", store.begin_group().err()),
        ("clear", store.clear().err()),
    ] {
        let e = e.unwrap_or_else(|| panic!("{what} was allowed inside a group"));
        assert!(e.to_string().contains("while an ingestion group is open"), "{what}: {e}");
    }
    store.end_group(true).unwrap();
    assert_eq!(other.runs().unwrap().len(), 2, "all of it after the end");

    // A trigger refuses one record, so that one step fails.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON flor_records WHEN NEW.value = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let (m, _, _) = synthetic(3, 0, 0);
    let refused = [Record { line: 2, ctx: None, kind: RecordKind::Log, name: "note".into(), value: "refused".into() }];
    let bad = IngestBatch {
        run: &m,
        source: Source::Forward,
        file: "run3",
        progress: FileProgress { offset: 1, lines: 1 },
        loops: &[],
        records: &refused,
        checkpoints: &[],
        checks: &[],
    };
    store.begin_group().unwrap();
    ingest_synthetic(&mut store, 2, 2, 3);
    assert!(store.ingest(&bad).is_err(), "the trigger refuses the step");
    assert_eq!(store.runs().unwrap().len(), 3, "the failed step alone is rolled back at once");
    let (m4, loops, records) = synthetic(4, 1, 1);
    let next = IngestBatch { run: &m4, file: "run4", loops: &loops, records: &records, ..bad };
    let e = store.ingest(&next).unwrap_err().to_string();
    assert!(e.contains("after a failed step"), "{e}");
    let e = store.end_group(true).unwrap_err().to_string();
    assert!(e.contains("the group was discarded"), "{e}");
    assert_eq!(store.runs().unwrap().len(), 2, "nothing of the spoilt group stays");
    assert_eq!(store.file_progress("run2").unwrap(), None);
    assert_eq!(other.runs().unwrap().len(), 2);
    // The store goes on.
    ingest_synthetic(&mut store, 2, 2, 3);
    assert_eq!(other.runs().unwrap().len(), 3);
}
