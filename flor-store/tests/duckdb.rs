//! The DuckDB backend (feature `duckdb`): the conformance suites (one
//! `#[test]` per check, in memory, on disk, grouped, sliced), and parity
//! with SQLite: the same records ingested into both engines give the same
//! answer to every `dataframe` and `query`.

use std::sync::Arc;

use flor_core::store::{FileProgress, IngestBatch, Store, StoreError, TensorRow};
use flor_core::{CheckpointMeta, LoopCtx, Record, RecordKind, RunMeta, RunStatus, Source, Table, Value};
use flor_store::{DuckStore, SqliteStore};

/// The conformance suites, one `#[test]` per check
/// (`conformance_in_memory::runs_roundtrip`, ...).
mod conformance_in_memory {
    use flor_store::DuckStore;

    flor_store::conformance_tests!(all, || Box::new(DuckStore::open_in_memory().unwrap()));
}

/// The suites on disk: each test's stores in its own temporary folder.
mod conformance_on_disk {
    use flor_store::DuckStore;

    flor_store::conformance_tests!(all, {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        move || {
            n += 1;
            Box::new(DuckStore::open(&dir.path().join(format!("db{n}/flor.duckdb"))).unwrap())
        }
    });
}

/// The suites with ingestion steps grouped (held-back rows, reads inside
/// groups).
mod conformance_with_ingestion_groups {
    use flor_store::conformance::GroupedSteps;
    use flor_store::DuckStore;

    flor_store::conformance_tests!(all, || Box::new(GroupedSteps::new(DuckStore::open_in_memory().unwrap())));
}

/// The suites again with every name scan cut into one query per run.
mod conformance_with_sliced_scans {
    use flor_store::DuckStore;

    flor_store::conformance_tests!(all, || {
        let mut store = DuckStore::open_in_memory().unwrap();
        store.set_scan_slice(1);
        Box::new(store)
    });
}

/// One run of the parity data: nested and sibling loops, every value type,
/// args, timings, outputs, checkpoints, a replay, a failed status.
fn ingest_run(store: &mut dyn Store, run: usize) {
    let mut meta = RunMeta::new("parity", format!("2026-02-01T00:00:00.{run:06}"), "train.py");
    meta.argv = vec!["train.py".into(), "--kwargs".into(), format!("lr={run}")];
    meta.status = if run % 3 == 2 { RunStatus::Failed } else { RunStatus::Finished };
    meta.ended = Some("2026-02-01T01:00:00.000000".into());
    meta.commit = run.is_multiple_of(2).then(|| "ab".repeat(20));
    let (epoch, step, eval): (Arc<str>, Arc<str>, Arc<str>) = ("epoch".into(), "step".into(), "eval".into());
    let mut loops = Vec::new();
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    let mut line = 1u64;
    let mut ctx = 0u32;
    let rec = |records: &mut Vec<Record>, line: &mut u64, ctx: Option<u32>, kind, name: &str, value: Value| {
        *line += 1;
        records.push(Record { line: *line, ctx, kind, name: name.into(), value });
    };
    rec(&mut records, &mut line, None, RecordKind::Arg, "lr", Value::Float(0.01 * run as f64));
    rec(
        &mut records,
        &mut line,
        None,
        RecordKind::Arg,
        "opt",
        Value::from(if run.is_multiple_of(2) { "adam" } else { "sgd" }),
    );
    rec(&mut records, &mut line, None, RecordKind::Arg, "batch", Value::Int(32 << (run % 3)));
    for e in 0..3u32 {
        let ec = ctx;
        ctx += 1;
        line += 1;
        loops.push(LoopCtx { ctx: ec, parent: None, name: epoch.clone(), iteration: e.into(), value: None });
        for s in 0..4u32 {
            let sc = ctx;
            ctx += 1;
            line += 1;
            loops.push(LoopCtx { ctx: sc, parent: Some(ec), name: step.clone(), iteration: s.into(), value: None });
            let loss = if run == 1 && e == 1 && s == 2 { f64::NAN } else { 1.0 / f64::from(1 + e * 4 + s) };
            rec(&mut records, &mut line, Some(sc), RecordKind::Log, "loss", Value::Float(loss));
            if s % 2 == 0 {
                rec(&mut records, &mut line, Some(sc), RecordKind::Log, "seen", Value::Bool(s == 0));
            }
            rec(&mut records, &mut line, Some(sc), RecordKind::Timing, "iteration", Value::Float(0.125));
        }
        let vc = ctx;
        ctx += 1;
        line += 1;
        loops.push(LoopCtx { ctx: vc, parent: Some(ec), name: eval.clone(), iteration: 0, value: Some("val".into()) });
        rec(&mut records, &mut line, Some(vc), RecordKind::Log, "val_loss", Value::Float(0.5 / f64::from(e + 1)));
        rec(&mut records, &mut line, Some(ec), RecordKind::Log, "acc", Value::Int(i64::from(e) * 10 + run as i64));
        rec(&mut records, &mut line, Some(ec), RecordKind::Log, "note", Value::json("{\"e\":[1,2]}").unwrap());
        line += 1;
        checkpoints.push(CheckpointMeta {
            line,
            ctx: Some(ec),
            name: "model".into(),
            digest: format!("{:064x}", run * 10 + e as usize),
            bytes: 1000 + u64::from(e),
            format: "bincode".into(),
        });
    }
    rec(&mut records, &mut line, None, RecordKind::Output, "stdout", Value::from("done\n"));
    rec(&mut records, &mut line, None, RecordKind::Log, "final", Value::from("ok ✓"));
    let file = format!("{run}.jsonl");
    store
        .ingest(&IngestBatch {
            run: &meta,
            source: Source::Forward,
            file: &file,
            progress: FileProgress { offset: line * 10, lines: line },
            loops: &loops,
            records: &records,
            checkpoints: &checkpoints,
            checks: &[],
        })
        .unwrap();
    if run % 2 == 1 {
        // A replay adds `grad` per epoch and overrides one loss.
        let replay = vec![
            Record { line: 2, ctx: Some(0), kind: RecordKind::Log, name: "grad".into(), value: Value::Float(0.25) },
            Record { line: 3, ctx: Some(2), kind: RecordKind::Log, name: "loss".into(), value: Value::Float(-1.0) },
        ];
        let file = format!("{run}.replay.jsonl");
        store
            .ingest(&IngestBatch {
                run: &meta,
                source: Source::Replay,
                file: &file,
                progress: FileProgress { offset: 30, lines: 3 },
                loops: &loops[..2],
                records: &replay,
                checkpoints: &[],
                checks: &[],
            })
            .unwrap();
    }
}

/// Panics with the first difference between two answers.
fn assert_same(a: &Table, b: &Table, what: &str) {
    let eq = |x: &Option<Value>, y: &Option<Value>| match (x, y) {
        (Some(Value::Float(p)), Some(Value::Float(q))) => p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
        _ => x == y,
    };
    assert_eq!(a.column_names(), b.column_names(), "{what}: columns");
    assert_eq!(a.row_count(), b.row_count(), "{what}: rows");
    for (i, (r, s)) in a.rows().iter().zip(b.rows()).enumerate() {
        assert!(r.iter().zip(&s).all(|(x, y)| eq(x, y)), "{what}: row {i} differs:\nsqlite: {r:?}\nduckdb: {s:?}");
    }
}

/// Tensor statistics for every queued checkpoint (two tensors each, one
/// of them with a delta and a statistic missing).
fn ingest_tensors(store: &mut dyn Store) {
    let queue = store.tensor_queue(usize::MAX).unwrap();
    assert!(!queue.is_empty());
    for q in queue {
        let k = q.checkpoint.line as f64;
        let rows: Vec<TensorRow> = ["fc.weight", "fc.bias"]
            .iter()
            .enumerate()
            .map(|(i, name)| TensorRow {
                tensor: (*name).into(),
                dtype: "f32".into(),
                shape: vec![4, i as u64 + 1],
                bytes: 16 * (i as u64 + 1),
                l2: Some(k / 3.0),
                mean: (i == 0).then_some(-k / 7.0),
                std: Some(k.sqrt()),
                min: Some(-k),
                max: Some(k * 1e300),
                nonfinite: Some(i as u64),
                delta_l2: (q.checkpoint.ctx != Some(0)).then_some(0.125 * k),
            })
            .collect();
        store.ingest_tensors(q.run, q.checkpoint.line, &rows).unwrap();
    }
}

#[test]
fn same_answers_as_sqlite() {
    let mut lite = SqliteStore::open_in_memory().unwrap();
    let mut duck = DuckStore::open_in_memory().unwrap();
    duck.set_scan_slice(60); // a few runs per scan query
    for run in [3, 0, 4, 1, 2] {
        ingest_run(&mut lite, run);
        ingest_run(&mut duck, run);
    }
    ingest_tensors(&mut lite);
    ingest_tensors(&mut duck);
    let name_sets: &[&[&str]] = &[
        &[],
        &["loss"],
        &["loss", "acc"],
        &["acc", "lr"],
        &["val_loss", "loss", "seen"],
        &["grad"],
        &["grad", "loss", "opt", "note", "final", "batch"],
        &["final"],
        &["missing", "lr"],
        &["tensor:model.fc.weight:l2", "loss", "tensor:model.fc.bias:delta_l2"],
        &["tensor:model.fc.weight:mean", "tensor:model.fc.bias:nonfinite", "acc"],
    ];
    for names in name_sets {
        let (a, b) = (lite.dataframe(names).unwrap(), duck.dataframe(names).unwrap());
        assert_same(&a, &b, &format!("dataframe({names:?})"));
        assert!(a.row_count() > 0 || names.contains(&"missing"));
    }
    assert_eq!(
        lite.runs().unwrap().iter().map(|r| &r.meta).collect::<Vec<_>>(),
        duck.runs().unwrap().iter().map(|r| &r.meta).collect::<Vec<_>>()
    );
    assert_eq!(lite.names().unwrap(), duck.names().unwrap());
    let queries = [
        "SELECT * FROM runs ORDER BY tstamp",
        "SELECT * FROM logs ORDER BY tstamp, source, ctx_id, value_name, value_type",
        "SELECT * FROM loops ORDER BY tstamp, ctx_id",
        "SELECT * FROM timings ORDER BY tstamp, ctx_id",
        "SELECT * FROM outputs ORDER BY tstamp",
        "SELECT * FROM checkpoints ORDER BY tstamp, ctx_id",
        "SELECT tstamp, count(*) AS n FROM logs GROUP BY tstamp ORDER BY tstamp",
        "SELECT value_name, count(*) AS n, min(ctx_id) AS first FROM logs WHERE kind = 'log' GROUP BY value_name ORDER BY value_name",
        "SELECT l.tstamp, p.loop_iteration AS epoch, l.loop_iteration AS step FROM loops l \
         JOIN loops p ON p.tstamp = l.tstamp AND p.ctx_id = l.parent_ctx_id WHERE l.loop_name = 'step' \
         ORDER BY l.tstamp, l.ctx_id",
        "SELECT g.tstamp, g.ctx_id, g.value_type, g.source FROM logs g WHERE g.value_name = 'grad' ORDER BY g.tstamp",
        "SELECT count(*) AS n FROM logs WHERE value IS NULL",
        "SELECT 1 AS a, 'x' AS b, NULL AS c, 2.5 AS d",
        "SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY status",
        "SELECT * FROM tensors ORDER BY tstamp, ctx_id, tensor",
        "SELECT checkpoint, tensor, count(*) AS n, max(l2) AS l2, sum(nonfinite) AS nf FROM tensors \
         GROUP BY checkpoint, tensor ORDER BY tensor",
    ];
    for sql in queries {
        let (a, b) = (lite.query(sql).unwrap(), duck.query(sql).unwrap());
        assert_same(&a, &b, sql);
        assert!(a.row_count() > 0, "{sql}: no rows");
    }
}

#[test]
fn engine_errors_name_the_engine() {
    let duck = DuckStore::open_in_memory().unwrap();
    match duck.query("SELEC 1") {
        Err(e @ StoreError::Query { backend: "duckdb", .. }) => {
            let text = e.to_string();
            assert!(text.contains("duckdb") && text.contains("syntax error"), "{text}");
        }
        other => panic!("expected a DuckDB syntax error, got {other:?}"),
    }
    // DuckDB-only statements that write or reach outside are refused.
    for sql in [
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SET threads = 1",
        "INSTALL httpfs",
        "CHECKPOINT",
        "PRAGMA enable_profiling",
    ] {
        assert!(matches!(duck.query(sql), Err(StoreError::NotReadOnly { .. })), "{sql}");
    }
    // No file access from queries.
    assert!(matches!(duck.query("SELECT * FROM read_csv('/etc/passwd')"), Err(StoreError::Query { .. })));
    assert!(duck.query("PRAGMA table_info('logs')").unwrap().row_count() > 0);
}

/// `logs.value` is a union in DuckDB: its members aggregate (the README's
/// example).
#[test]
fn union_values_aggregate_by_member() {
    let mut duck = DuckStore::open_in_memory().unwrap();
    ingest_run(&mut duck, 0);
    let t = duck
        .query("SELECT avg(value.f) AS loss, sum(value.i) AS acc FROM logs WHERE value_name IN ('loss', 'acc')")
        .unwrap();
    let loss: f64 = (1..=12).map(|k| 1.0 / f64::from(k)).sum::<f64>() / 12.0;
    assert!(matches!(t.cell(0, 0), Some(Value::Float(x)) if (x - loss).abs() < 1e-12), "{:?}", t.rows());
    assert_eq!(t.cell(0, 1), Some(Value::Int(30)));
}

#[test]
fn not_a_duckdb_file_is_damaged_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.duckdb");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    match DuckStore::open(&path) {
        Err(flor_store::Error::Store(StoreError::Damaged { .. })) => {}
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 8192]);
}

#[test]
fn parquet_export_reads_back() {
    let mut lite = SqliteStore::open_in_memory().unwrap();
    for run in 0..3 {
        ingest_run(&mut lite, run);
    }
    let df = lite.dataframe(&["loss", "acc", "opt", "seen", "note"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("it's a \"frame\".parquet");
    flor_store::write_parquet(&df, &path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    // Read it back with DuckDB itself (external access on: a plain connection).
    let conn = flor_store::duckdb_crate::Connection::open_in_memory().unwrap();
    let sql = format!(
        "SELECT count(*), sum(acc), count(loss), max(opt) FROM read_parquet('{}')",
        path.display().to_string().replace('\'', "''")
    );
    let (n, acc, losses, opt): (i64, i64, i64, String) =
        conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap();
    assert_eq!(n as usize, df.row_count());
    assert_eq!(losses as usize, df.row_count());
    assert_eq!(opt, "sgd");
    assert!(acc > 0);
}

/// While an ingestion group is open, reads that need a settled database are
/// refused with a message, and so is a second group; ending the group
/// makes its steps durable: they are there after reopening the file.
#[test]
fn ingestion_group_refuses_queries_and_is_durable_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.duckdb");
    let mut store = DuckStore::open(&path).unwrap();
    store.begin_group().unwrap();
    ingest_run(&mut store, 0);
    ingest_run(&mut store, 1);
    for (what, e) in [
        ("query", store.query("SELECT 1").err()),
        ("dataframe", store.dataframe(&["loss"]).err()),
        ("second group", store.begin_group().err()),
    ] {
        let e = e.unwrap_or_else(|| panic!("{what} was allowed inside a group"));
        assert!(e.to_string().contains("while an ingestion group is open"), "{what}: {e}");
    }
    assert!(store.clear().unwrap_err().to_string().contains("ingestion group"));
    assert_eq!(store.runs().unwrap().len(), 2, "the group's runs are visible inside it");
    store.end_group(true).unwrap();
    drop(store);
    let store = DuckStore::open(&path).unwrap();
    assert_eq!(store.runs().unwrap().len(), 2);
    assert!(store.dataframe(&["loss"]).unwrap().row_count() > 0);
}

/// A database written before divergence checks existed (schema version 1:
/// no `flor_checks`, a `logs` view without `diverged`) is upgraded in place
/// when opened, its rows kept.
#[test]
fn a_version_1_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.duckdb");
    {
        let mut store = DuckStore::open(&path).unwrap();
        ingest_run(&mut store, 0);
    }
    {
        // Back to version 1's layout.
        let conn = flor_store::duckdb_crate::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP VIEW replay_checks; DROP TABLE flor_checks; \
             DROP VIEW tensors; DROP TABLE flor_tensors; DROP TABLE flor_tensor_queue; \
             CREATE OR REPLACE VIEW logs AS SELECT 1 AS value_name; \
             UPDATE flor_meta SET value = 1 WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let store = DuckStore::open(&path).unwrap();
    let tb = store.query("SELECT count(*) AS n, sum(diverged) AS d FROM logs").unwrap();
    let n = match tb.cell(0, 0) {
        Some(Value::Int(n)) => n,
        other => panic!("count: {other:?}"),
    };
    assert!(n > 0, "the rows are kept");
    assert_eq!(tb.cell(0, 1), Some(Value::Int(0)), "nothing is flagged diverged");
    assert!(store.checks().unwrap().is_empty());
    let v = store.query("SELECT value FROM flor_meta WHERE key = 'schema_version'");
    assert!(v.is_err() || v.unwrap().cell(0, 0) == Some(Value::Int(flor_store::DUCKDB_SCHEMA_VERSION)));
}

/// A database written before tensor statistics (schema version 2) is
/// upgraded in place: the tables and the `tensors` view are added and every
/// stored forward checkpoint waits for its tensors.
#[test]
fn a_version_2_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.duckdb");
    {
        let mut store = DuckStore::open(&path).unwrap();
        ingest_run(&mut store, 0);
        ingest_tensors(&mut store);
    }
    {
        let conn = flor_store::duckdb_crate::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP VIEW tensors; DROP TABLE flor_tensors; DROP TABLE flor_tensor_queue; \
             UPDATE flor_meta SET value = 2 WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let mut store = DuckStore::open(&path).unwrap();
    assert_eq!(store.query("SELECT count(*) AS n FROM tensors").unwrap().cell(0, 0), Some(Value::Int(0)));
    assert_eq!(store.tensor_queue(100).unwrap().len(), 3, "the run's three checkpoints");
    ingest_tensors(&mut store);
    assert_eq!(store.query("SELECT count(*) AS n FROM tensors").unwrap().cell(0, 0), Some(Value::Int(6)));
    drop(store);
    let store = DuckStore::open(&path).unwrap();
    assert!(store.tensor_queue(100).unwrap().is_empty());
}

/// File progress is kept in memory beside the table (a sync asks for it
/// once per run ref): it follows each step, is read back from the file
/// after reopening, and forgets the steps of a discarded group.
#[test]
fn file_progress_follows_steps_reopening_and_discarded_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flor.duckdb");
    let mut store = DuckStore::open(&path).unwrap();
    ingest_run(&mut store, 0);
    ingest_run(&mut store, 1);
    let forward = store.file_progress("1.jsonl").unwrap().expect("the forward file's progress");
    let replay = Some(FileProgress { offset: 30, lines: 3 });
    assert_eq!(store.file_progress("1.replay.jsonl").unwrap(), replay);
    store.begin_group().unwrap();
    ingest_run(&mut store, 2);
    assert!(store.file_progress("2.jsonl").unwrap().is_some(), "a group's step is seen inside it");
    store.end_group(false).unwrap();
    assert_eq!(store.file_progress("2.jsonl").unwrap(), None, "a discarded group's step");
    drop(store);
    let store = DuckStore::open(&path).unwrap();
    assert_eq!(store.file_progress("1.jsonl").unwrap(), Some(forward));
    assert_eq!(store.file_progress("1.replay.jsonl").unwrap(), replay);
    assert_eq!(store.file_progress("2.jsonl").unwrap(), None);
}
