//! Peak memory of `dataframe(["loss"])` over 1,000,000 logged values
//! (1,000 runs × 1,000 steps), measured in a fresh process so that building
//! the store does not count: the parent builds a database, then re-runs this
//! program on it, which opens the store, pivots, and reports its peak
//! resident memory (VmHWM) and time.
//!
//! `cargo bench --bench pivot_memory`

mod common;

use std::process::Command;
use std::time::Instant;

use flor_core::Store;
use flor_store::SqliteStore;

const CHILD_ENV: &str = "FLOR_PIVOT_MEMORY_DB";

fn main() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        let before = common::peak_rss_mib();
        let store = SqliteStore::open(std::path::Path::new(&db)).expect("open store");
        let t = Instant::now();
        let table = store.dataframe(&["loss"]).expect("dataframe");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(table.row_count(), 1_000_000);
        println!(
            "dataframe(loss) over 1,000,000 rows: {secs:.3} s, peak RSS {:.1} MiB (process baseline {before:.1} MiB)",
            common::peak_rss_mib()
        );
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / criterion-style probes: nothing to do
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("flor.db");
    let mut store = SqliteStore::open(&db).expect("open");
    for r in 0..1000 {
        let (_, bytes) = common::record_file(r, 10, 100);
        common::ingest(&mut store, &format!("{r}.jsonl"), &bytes);
    }
    drop(store);
    for _ in 0..3 {
        let exe = std::env::current_exe().expect("own path");
        let st = Command::new(exe).env(CHILD_ENV, &db).status().expect("run child");
        assert!(st.success());
    }
}
