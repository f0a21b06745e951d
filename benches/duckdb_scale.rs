//! The DuckDB store at scale, side by side with SQLite (feature `duckdb`):
//! 10,010,000 log rows (1,000 runs × 10 epochs × 1,000 steps: `loss` per
//! step, `acc` per epoch). For each engine the parent builds the database
//! (timing the ingestion), then re-runs this program on it, so that each
//! measurement starts in a fresh process: cold open + first query (`SELECT
//! count(*) FROM logs`), then `dataframe(["loss", "acc"])` (10,000,000 rows),
//! with the process's peak resident memory (VmHWM). On the DuckDB file it
//! also measures the shared pivot (`flor_core::pivot`, what DuckDB used
//! before its own plan) as `duckdb-shared`.
//!
//! `cargo bench --features duckdb --bench duckdb_scale` (about 5 minutes and
//! 1 GB of temporary disk; `FLOR_SCALE_RUNS=100` for a tenth of it).
//! `FLOR_SCALE_DIR=DIR` keeps the databases in `DIR` and reuses them on the
//! next call (no ingestion then); `FLOR_SCALE_ENGINES=duckdb` measures one
//! engine only.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use flor_core::Store;
use flor_store::{DuckStore, SqliteStore};

const CHILD_ENV: &str = "FLOR_SCALE_CHILD";

fn open(engine: &str, path: &Path) -> Box<dyn Store> {
    match engine {
        "sqlite" => Box::new(SqliteStore::open(path).expect("open")),
        _ => Box::new(DuckStore::open(path).expect("open")),
    }
}

fn main() {
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let (engine, path) = arg.split_once(':').expect("engine:path");
        let t = Instant::now();
        let store = open(engine, Path::new(path));
        let first = store.query("SELECT count(*) AS n FROM logs").expect("query");
        let cold = t.elapsed().as_secs_f64();
        let rss_open = common::peak_rss_mib();
        let t = Instant::now();
        let table = if engine == "duckdb-shared" {
            flor_core::pivot::dataframe(store.as_ref(), &["loss", "acc"])
        } else {
            store.dataframe(&["loss", "acc"])
        }
        .expect("dataframe");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{engine}: cold open + first query {:.3} s ({:?} log rows); dataframe(loss, acc) {} rows in {secs:.3} s; \
             peak RSS {:.0} MiB (after open + query {rss_open:.0} MiB)",
            cold,
            first.cell(0, 0),
            table.row_count(),
            common::peak_rss_mib()
        );
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let runs: usize = std::env::var("FLOR_SCALE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let tmp;
    let dir = match std::env::var_os("FLOR_SCALE_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).expect("create FLOR_SCALE_DIR");
            std::path::PathBuf::from(d)
        }
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    let only = std::env::var("FLOR_SCALE_ENGINES").unwrap_or_default();
    for (engine, file) in [("duckdb", "flor.duckdb"), ("sqlite", "flor.db")] {
        if !only.is_empty() && !only.split(',').any(|e| e == engine) {
            continue;
        }
        let path = dir.join(file);
        if path.exists() {
            println!("{engine}: reusing {}", path.display());
        } else {
            build(engine, &path, runs, &dir, file);
        }
        let modes: &[&str] = if engine == "duckdb" { &["duckdb", "duckdb-shared"] } else { &[engine] };
        for _ in 0..2 {
            for mode in modes {
                let exe = std::env::current_exe().expect("own path");
                let st =
                    Command::new(exe).env(CHILD_ENV, format!("{mode}:{}", path.display())).status().expect("run child");
                assert!(st.success());
            }
        }
    }
}

/// Builds the database at `path`, timing parsing and ingestion.
fn build(engine: &str, path: &Path, runs: usize, dir: &Path, file: &str) {
    // Built under another name, so that an interrupted build is not reused.
    let partial = dir.join(format!("{file}.partial"));
    let _ = std::fs::remove_file(&partial);
    {
        let mut store = open(engine, &partial);
        let mut rows = 0;
        let (mut parse, mut all) = (0.0, 0.0);
        // In ingestion groups of 64 runs, as `flor`'s sync ingests.
        store.begin_group().expect("begin a group");
        for r in 0..runs {
            if r > 0 && r % 64 == 0 {
                let t = Instant::now();
                store.end_group(true).expect("end a group");
                store.begin_group().expect("begin a group");
                all += t.elapsed().as_secs_f64();
            }
            let (_, bytes) = common::record_file(r, 10, 1000);
            // Parsing timed apart (common::ingest parses again, then ingests).
            let t = Instant::now();
            rows += flor_core::record::parse_lines(&bytes, 1).records.len();
            parse += t.elapsed().as_secs_f64();
            let t = Instant::now();
            common::ingest(store.as_mut(), &format!("{r}.jsonl"), &bytes);
            all += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        store.end_group(true).expect("end a group");
        all += t.elapsed().as_secs_f64();
        drop(store);
        let size: u64 = std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(file))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "{engine}: parsed + ingested {rows} log rows in {all:.1} s (of which parsing {parse:.1} s): \
             ingestion alone {:.0} rows/s; database {:.0} MiB",
            rows as f64 / (all - parse).max(1e-9),
            size as f64 / (1 << 20) as f64
        );
    }
    std::fs::rename(&partial, path).expect("rename the built database");
}
