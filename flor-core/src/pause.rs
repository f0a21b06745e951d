//! Pause points: named places in flor's crash-sensitive paths (publishing a
//! run, ingesting a group of runs, attaching a replay) where a test can hold
//! a process, to kill it exactly there or to release many processes at the
//! same instant. The fault tests (`tests/faults.rs`) use them; nothing else
//! should.
//!
//! With [`PAUSE_ENV`] naming a point, a process that reaches that point
//! prints `flor: paused at <point>` on stderr and waits until the file that
//! [`RELEASE_ENV`] names exists (forever when it names none), then goes on.
//! Without [`PAUSE_ENV`] a pause point costs one check of a value read once
//! per process.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming the point to pause at.
pub const PAUSE_ENV: &str = "FLOR_TEST_PAUSE";

/// The environment variable naming the file whose existence releases a
/// paused process.
pub const RELEASE_ENV: &str = "FLOR_TEST_RELEASE";

/// A finishing run: its record file complete and synced, not yet attached
/// to its git ref.
pub const PUBLISH_BEFORE_ATTACH: &str = "publish-before-attach";

/// A finishing run: its record file attached to its git ref, the local copy
/// not yet removed.
pub const PUBLISH_AFTER_ATTACH: &str = "publish-after-attach";

/// A query command's sync: about to ingest the run refs not ingested yet.
pub const SYNC_BEFORE_REFS: &str = "sync-before-refs";

/// A query command's sync: one more run ref ingested (committed, with
/// SQLite; inside the open ingestion group, with DuckDB).
pub const SYNC_AFTER_RUN: &str = "sync-after-run";

/// `flor replay`: a run's replay attached to its git ref, its segments'
/// files not yet removed.
pub const REPLAY_AFTER_ATTACH: &str = "replay-after-attach";

fn wanted() -> Option<&'static (String, Option<PathBuf>)> {
    static WANTED: OnceLock<Option<(String, Option<PathBuf>)>> = OnceLock::new();
    WANTED
        .get_or_init(|| {
            let point = std::env::var(PAUSE_ENV).ok().filter(|p| !p.is_empty())?;
            Some((point, std::env::var_os(RELEASE_ENV).map(PathBuf::from)))
        })
        .as_ref()
}

/// Pauses here when [`PAUSE_ENV`] names `point` (see the module docs).
pub fn point(point: &str) {
    let Some((name, release)) = wanted() else { return };
    if name != point {
        return;
    }
    eprintln!("flor: paused at {point}");
    loop {
        if release.as_ref().is_some_and(|r| r.exists()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
