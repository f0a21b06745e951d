//! DuckDB store benches, side by side with SQLite (feature `duckdb`):
//! ingestion rows/s (parsed batches, and parse + ingest) by batch size,
//! the cost of closing a store after 1M rows, and the 1M-row `dataframe`. The 10M-row figures (time, peak memory, cold open) are in
//! `benches/duckdb_scale.rs`.
//!
//! `cargo bench --features duckdb --bench duckdb`

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flor_core::record::{parse_lines, Parsed};
use flor_core::Store;
use flor_store::{DuckStore, SqliteStore};

type Open = fn(&std::path::Path) -> Box<dyn Store>;

fn engines() -> [(&'static str, Open); 2] {
    [
        ("sqlite", |dir| Box::new(SqliteStore::open(&dir.join("flor.db")).expect("open"))),
        ("duckdb", |dir| Box::new(DuckStore::open(&dir.join("flor.duckdb")).expect("open"))),
    ]
}

/// A fresh store in a fresh folder (created outside the timed region).
fn fresh(open: Open) -> (Box<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (open(dir.path()), dir)
}

fn bench_ingest(c: &mut Criterion) {
    // Ingestion into an open store, each batch its own committed (durable)
    // transaction; opening the store and closing it (DuckDB checkpoints
    // its log into the file then) are outside the timed region and timed
    // by `close_1M_rows` below. Batches of 1,000, 10,000 and 100,000
    // records: 100 runs × (10 epochs × 100 steps) = 100,000 loss rows (+
    // 1,000 acc, 100 args, 101,000 loop iterations) as in benches/store.rs;
    // 100 runs of 10 × 1,000 steps; 10 runs of 10 × 10,000 steps.
    for (label, runs, steps) in
        [("100k_rows_100_runs", 100, 100), ("1M_rows_100_runs", 100, 1_000), ("1M_rows_10_runs", 10, 10_000)]
    {
        let files: Vec<Vec<u8>> = (0..runs).map(|r| common::record_file(r, 10, steps).1).collect();
        let parsed: Vec<Parsed> = files.iter().map(|f| parse_lines(f, 1)).collect();
        let rows: usize = parsed.iter().map(|p| p.records.len()).sum();
        let mut g = c.benchmark_group(format!("ingest_{label}"));
        g.throughput(Throughput::Elements(rows as u64));
        g.sample_size(10).measurement_time(Duration::from_secs(if rows > 500_000 { 30 } else { 15 }));
        for (engine, open) in engines() {
            // Each batch its own transaction; then the same batches in one
            // ingestion group (as a sync ingests runs: one transaction per
            // group on DuckDB, a no-op on SQLite).
            for (variant, grouped) in [("parsed", false), ("parsed_grouped", true)] {
                g.bench_function(format!("{engine}/{variant}"), |b| {
                    b.iter_batched(
                        || fresh(open),
                        |(mut store, dir)| {
                            common::ingest_files(store.as_mut(), &parsed, grouped);
                            (store, dir)
                        },
                        BatchSize::PerIteration,
                    )
                });
            }
            g.bench_function(format!("{engine}/parse_and_ingest"), |b| {
                b.iter_batched(
                    || fresh(open),
                    |(mut store, dir)| {
                        for (i, f) in files.iter().enumerate() {
                            common::ingest(store.as_mut(), &format!("{i}.jsonl"), f);
                        }
                        (store, dir)
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
    // Closing a store that has just taken 1M rows (DuckDB writes its log
    // into the database file: the deferred part of ingestion).
    let parsed: Vec<Parsed> = (0..100).map(|r| parse_lines(&common::record_file(r, 10, 1_000).1, 1)).collect();
    let mut g = c.benchmark_group("close_1M_rows");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (engine, open) in engines() {
        g.bench_function(engine, |b| {
            b.iter_batched(
                || {
                    let (mut store, dir) = fresh(open);
                    common::ingest_files(store.as_mut(), &parsed, false);
                    (store, dir)
                },
                |(store, dir)| {
                    drop(store);
                    dir
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn bench_pivot(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataframe_1M");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (engine, open) in engines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(dir.path());
        for r in 0..1000 {
            let (_, bytes) = common::record_file(r, 10, 100);
            common::ingest(store.as_mut(), &format!("{r}.jsonl"), &bytes);
        }
        g.bench_function(format!("{engine}/loss"), |b| {
            b.iter(|| {
                let t = store.dataframe(&["loss"]).expect("dataframe");
                assert_eq!(t.row_count(), 1_000_000);
                t
            })
        });
        // (`logs.value` holds every value type: a UNION in DuckDB, so an
        // average there is `avg(value.f)`; counting is the same on both.)
        g.bench_function(format!("{engine}/query_count_loss_per_run"), |b| {
            b.iter(|| {
                let t = store
                    .query(
                        "SELECT tstamp, count(*) AS n, max(ctx_id) AS last FROM logs WHERE value_name = 'loss' \
                         GROUP BY tstamp",
                    )
                    .expect("query");
                assert_eq!(t.row_count(), 1000);
                t
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_ingest, bench_pivot);
criterion_main!(benches);
