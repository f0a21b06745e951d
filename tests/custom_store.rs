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
