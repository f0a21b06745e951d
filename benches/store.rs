//! Store benches: record-file ingestion into SQLite (rows/s) and the
//! `dataframe` pivot over 1,000,000 logged values (1,000 runs × 1,000 steps).

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flor_core::record::{parse_lines, RecordReader};
use flor_core::Store;
use flor_store::SqliteStore;

fn bench_ingest(c: &mut Criterion) {
    // 100 runs × (10 epochs × 100 steps): 100,000 loss rows (+ loops, args).
    let files: Vec<Vec<u8>> = (0..100).map(|r| common::record_file(r, 10, 100).1).collect();
    let rows: usize = files.iter().map(|f| parse_lines(f, 1).records.len()).sum();
    let mut g = c.benchmark_group("sqlite_ingest");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("parse_and_ingest_100k_rows", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(&dir.path().join("flor.db")).expect("open");
                (dir, store)
            },
            |(dir, mut store)| {
                for (i, f) in files.iter().enumerate() {
                    common::ingest(&mut store, &format!("{i}.jsonl"), f);
                }
                drop(store);
                drop(dir);
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("parse_only_100k_rows", |b| {
        b.iter(|| files.iter().map(|f| parse_lines(f, 1).records.len()).sum::<usize>())
    });
    // What a sync pays to resume a file ingested before: its declarations
    // learned again, the other lines only looked at.
    g.bench_function("skip_100k_rows", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|f| {
                    let mut r = RecordReader::new();
                    r.skip(f);
                    r.contexts().len()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

fn bench_pivot(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("flor.db")).expect("open");
    for r in 0..1000 {
        let (_, bytes) = common::record_file(r, 10, 100);
        common::ingest(&mut store, &format!("{r}.jsonl"), &bytes);
    }
    let mut g = c.benchmark_group("dataframe");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("loss_1M_rows", |b| {
        b.iter(|| {
            let t = store.dataframe(&["loss"]).expect("dataframe");
            assert_eq!(t.row_count(), 1_000_000);
            t
        })
    });
    g.bench_function("acc_and_lr_10k_rows", |b| {
        b.iter(|| {
            let t = store.dataframe(&["lr", "acc"]).expect("dataframe");
            assert_eq!(t.row_count(), 10_000);
            t
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ingest, bench_pivot);
criterion_main!(benches);
