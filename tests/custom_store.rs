//! The example backend of `examples/custom_store.rs` (memory maps, no SQL
//! engine) against the core conformance suite, through the public API only
//! (one `#[test]` per check: `memory_store::runs_roundtrip`, ...), plus the
//! example's own end-to-end `main` and its answer to raw SQL.

// The example's items are its public API as a program; here they sit in a
// private module of the test crate.
#[allow(unreachable_pub)]
#[path = "../examples/custom_store.rs"]
mod custom_store;

use custom_store::MemoryStore;
use flor::core::{Store, StoreError};

mod memory_store {
    use super::MemoryStore;

    flor_store::conformance_tests!(core, || Box::new(MemoryStore::new()));
}

/// Raw SQL is the trait's default: `Unsupported`, naming the backend and
/// what to use instead.
#[test]
fn query_is_unsupported() {
    match MemoryStore::new().query("SELECT 1") {
        Err(e @ StoreError::Unsupported { backend: "memory", .. }) => {
            let shown = e.to_string();
            assert!(shown.contains("memory store does not support raw SQL"), "{shown}");
            assert!(shown.contains("dataframe"), "{shown}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// The example end to end: a run recorded in a temporary git repository,
/// synced into a `MemoryStore` through `Project::builder`, pivoted.
#[test]
fn example_main_runs() {
    custom_store::main().expect("the example runs");
}

/// The shared pivot's memory follows what the store holds, not the size of
/// a context id: an SDK caller's run whose iterations are numbered 0 and
/// 3,000,000,000 pivots to its two rows (a table indexed by context id
/// would need 3 billion entries).
#[test]
fn the_shared_pivot_is_not_sized_by_context_ids() {
    use flor::core::record::{LoopCtx, Record, RecordKind, RunMeta};
    use flor::core::store::{FileProgress, IngestBatch};
    use flor::core::{Source, Value};

    let run = RunMeta::new("p", "2026-01-01T00:00:00.000001", "train.py");
    let far = 3_000_000_000u32;
    let epoch = |ctx, iteration| LoopCtx { ctx, parent: None, name: "epoch".into(), iteration, value: None };
    let loops = [epoch(0, 0), epoch(far, 1)];
    let loss = |line, ctx, v| Record {
        line,
        ctx: Some(ctx),
        kind: RecordKind::Log,
        name: "loss".into(),
        value: Value::Float(v),
    };
    let records = [loss(3, 0, 1.5), loss(5, far, 2.5)];
    let mut store = MemoryStore::new();
    store
        .ingest(&IngestBatch {
            run: &run,
            source: Source::Forward,
            file: "r.jsonl",
            progress: FileProgress { offset: 1, lines: 5 },
            loops: &loops,
            records: &records,
            checkpoints: &[],
            checks: &[],
        })
        .expect("ingest");
    let df = store.dataframe(&["loss"]).expect("pivot");
    assert_eq!(df.row_count(), 2);
    let col = |name: &str| df.columns.iter().position(|c| c.name == name).expect(name);
    assert_eq!(df.cell(0, col("epoch")), Some(Value::Int(0)));
    assert_eq!(df.cell(1, col("epoch")), Some(Value::Int(1)));
    assert_eq!(df.cell(1, col("loss")), Some(Value::Float(2.5)));
}
