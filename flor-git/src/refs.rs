//! Writing refs when other processes write the same refs at the same time.
//!
//! libgit2 checks whether a ref exists *before* it takes the ref's lock file,
//! so two simultaneous plain creations of one ref can both succeed, the
//! second silently replacing the first. Every ref flor writes therefore goes
//! through a compare-and-swap that git evaluates *under* the lock: creation
//! expects the zero id (the ref must not exist), an update expects the tip
//! the new commit was built on. The loser of a race is told so
//! ([`Attempt::Taken`]); a writer that finds the lock file held
//! ([`Attempt::Locked`]) waits with [`Backoff`] and tries again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{ErrorCode, Oid, Repository};

use crate::error::{Error, GitContext, Result};

/// How long, in all, a writer keeps retrying a ref that other writers hold
/// (their lock file, or updates that keep winning the compare-and-swap).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The first pause between two attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(200);

/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// What one attempt to write a ref came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The ref now points to the new commit.
    Written,
    /// Another writer got there first: the ref to create exists, or the ref
    /// to update no longer points to the expected tip (or is gone).
    Taken,
    /// Another writer holds the ref's lock file right now.
    Locked,
}

/// Creates `refname` at `target` if, under git's lock, it does not exist.
///
/// Of simultaneous creators of one name exactly one gets
/// [`Attempt::Written`]; the others get [`Attempt::Taken`] (the ref exists)
/// or [`Attempt::Locked`] (the winner is writing it).
pub(crate) fn try_create(repo: &Repository, root: &Path, refname: &str, target: Oid, message: &str) -> Result<Attempt> {
    // `force` only skips libgit2's unlocked existence check; the zero id as
    // the expected value is checked under the lock and refuses an existing
    // ref (loose or packed) with `Modified`.
    match repo.reference_matching(refname, target, true, Oid::ZERO_SHA1, message) {
        Ok(_) => Ok(Attempt::Written),
        Err(e) if matches!(e.code(), ErrorCode::Exists | ErrorCode::Modified) => Ok(Attempt::Taken),
        Err(e) if e.code() == ErrorCode::Locked => Ok(Attempt::Locked),
        Err(e) => Err(e).ctx(|| format!("could not create ref `{refname}` in `{}`", root.display())),
    }
}

/// Moves `refname` from `expected` to `target` if, under git's lock, it
/// still points to `expected`.
pub(crate) fn try_update(
    repo: &Repository,
    root: &Path,
    refname: &str,
    target: Oid,
    expected: Oid,
    message: &str,
) -> Result<Attempt> {
    match repo.reference_matching(refname, target, true, expected, message) {
        Ok(_) => Ok(Attempt::Written),
        Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::NotFound) => Ok(Attempt::Taken),
        Err(e) if e.code() == ErrorCode::Locked => Ok(Attempt::Locked),
        Err(e) => Err(e).ctx(|| format!("could not update ref `{refname}` in `{}`", root.display())),
    }
}

/// The lock file git holds while it writes `refname`.
pub(crate) fn lock_path(repo: &Repository, refname: &str) -> PathBuf {
    repo.commondir().join(format!("{refname}.lock"))
}

/// The error for a ref whose lock stayed held for all of [`LOCK_WAIT`].
pub(crate) fn locked(repo: &Repository, root: &Path, refname: &str) -> Error {
    Error::RefLocked { refname: refname.to_string(), lock: lock_path(repo, refname), root: root.to_path_buf() }
}

/// Pauses between attempts at a contended ref: short at first, doubling,
/// jittered so that writers released together spread out, and bounded in
/// total by [`LOCK_WAIT`].
pub(crate) struct Backoff {
    started: Instant,
    pause: Duration,
}

impl Backoff {
    /// A backoff whose time starts now.
    pub(crate) fn new() -> Self {
        Self { started: Instant::now(), pause: FIRST_PAUSE }
    }

    /// Sleeps before the next attempt; `false` (without sleeping) once the
    /// total wait is spent.
    pub(crate) fn pause(&mut self) -> bool {
        if self.started.elapsed() >= LOCK_WAIT {
            return false;
        }
        // Jitter from the clock's low bits and the process id: no shared
        // random state, different in every writer.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 17);
        let max = self.pause.as_micros().max(1) as u64;
        std::thread::sleep(self.pause / 2 + Duration::from_micros(seed % max));
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        true
    }
}
