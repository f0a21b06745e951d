//! Time limits of user SQL (`Store::query_within`, `--where` predicates):
//! a [`Deadline`] that a SQLite connection's progress handler checks every
//! [`PROGRESS_OPS`] virtual-machine steps, and a [`Watchdog`] thread that
//! interrupts a DuckDB connection when the limit passes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
#[cfg(feature = "duckdb")]
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// SQLite virtual-machine steps between two checks of the deadline.
const PROGRESS_OPS: i32 = 1000;

/// Nanoseconds since a process-wide instant (never 0).
fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// A deadline shared with a SQLite connection's progress handler (see
/// [`Deadline::install`]): the connection's statements stop, with
/// `SQLITE_INTERRUPT`, once it has passed. Unset (no limit) between user
/// queries.
#[derive(Clone, Default)]
pub(crate) struct Deadline(Arc<AtomicU64>);

impl Deadline {
    /// Installs the progress handler checking a new deadline on `conn`.
    pub(crate) fn install(conn: &mut rusqlite::Connection) -> rusqlite::Result<Deadline> {
        let deadline = Deadline::default();
        let seen = deadline.clone();
        conn.progress_handler(PROGRESS_OPS, Some(move || seen.passed()))?;
        Ok(deadline)
    }

    /// Sets the deadline `limit` from now (`None`: none) until the guard
    /// drops.
    pub(crate) fn arm(&self, limit: Option<Duration>) -> Armed<'_> {
        let at = limit.map_or(0, |l| now_nanos().saturating_add(l.as_nanos().min(u128::from(u64::MAX / 2)) as u64));
        self.0.store(at, Ordering::SeqCst);
        Armed(self)
    }

    /// Whether a deadline is set and has passed.
    pub(crate) fn passed(&self) -> bool {
        let at = self.0.load(Ordering::Relaxed);
        at != 0 && now_nanos() >= at
    }
}

/// Clears its [`Deadline`] when dropped.
pub(crate) struct Armed<'a>(&'a Deadline);

impl Armed<'_> {
    /// Whether the deadline has passed (the statement was, or is about to
    /// be, interrupted).
    pub(crate) fn passed(&self) -> bool {
        self.0.passed()
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0 .0.store(0, Ordering::SeqCst);
    }
}

/// Interrupts a query from another thread once its limit passes: started
/// before the query, stopped after it ([`Watchdog::stop`] says whether it
/// fired). The interrupt is sent under the watchdog's lock, so none can
/// arrive after `stop` returns.
#[cfg(feature = "duckdb")]
pub(crate) struct Watchdog {
    state: Arc<(Mutex<Watch>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "duckdb")]
#[derive(PartialEq)]
enum Watch {
    Running,
    Stopped,
    Fired,
}

#[cfg(feature = "duckdb")]
impl Watchdog {
    /// Starts watching: `interrupt` is called once `limit` has passed,
    /// unless stopped before (`None`: never).
    pub(crate) fn start(limit: Option<Duration>, interrupt: impl FnOnce() + Send + 'static) -> Watchdog {
        let state = Arc::new((Mutex::new(Watch::Running), Condvar::new()));
        let thread = limit.map(|limit| {
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                let (lock, wake) = &*state;
                let Ok(guard) = lock.lock() else { return };
                let Ok((mut watch, _)) = wake.wait_timeout_while(guard, limit, |w| *w == Watch::Running) else {
                    return;
                };
                if *watch == Watch::Running {
                    interrupt();
                    *watch = Watch::Fired;
                }
            })
        });
        Watchdog { state, thread }
    }

    /// Stops watching; whether the interrupt was sent.
    pub(crate) fn stop(mut self) -> bool {
        let (lock, wake) = &*self.state;
        if let Ok(mut watch) = lock.lock() {
            if *watch == Watch::Running {
                *watch = Watch::Stopped;
            }
        }
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock.lock().map(|w| *w == Watch::Fired).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_interrupts_a_runaway_sqlite_query_and_clears() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        let deadline = Deadline::install(&mut conn).unwrap();
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let started = Instant::now();
        let armed = deadline.arm(Some(Duration::from_millis(100)));
        let e = conn.query_row(endless, [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::OperationInterrupted));
        assert!(armed.passed());
        drop(armed);
        assert!(started.elapsed() < Duration::from_secs(10));
        // Unarmed: statements run to the end.
        let n: i64 = conn
            .query_row("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) SELECT count(*) FROM c", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 200000);
    }

    #[cfg(feature = "duckdb")]
    #[test]
    fn a_watchdog_fires_only_when_the_limit_passes() {
        let (tx, rx) = std::sync::mpsc::channel();
        let dog = Watchdog::start(Some(Duration::from_millis(50)), move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(dog.stop());
        let dog = Watchdog::start(Some(Duration::from_secs(3600)), || panic!("fired early"));
        assert!(!dog.stop());
        assert!(!Watchdog::start(None, || panic!("no limit")).stop());
    }
}
