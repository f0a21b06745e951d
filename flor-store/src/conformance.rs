//! The conformance suite every [`Store`] backend must pass (cargo feature
//! `conformance`).
//!
//! Each check takes a factory returning a fresh, empty store, builds runs
//! with flor-core's types, and panics (like `assert!`) on the first
//! difference. Two suites:
//!
//! * **core** ([`CORE_CHECKS`]): the primitives and the pivot: ingestion and
//!   its idempotence, file progress, bit-exact values, the scan filters, loop
//!   contexts stored as spans (whatever the batch boundaries, each context
//!   once), the pivot semantics of [`flor_core::pivot`], `clear`,
//!   `set_status`, checkpoints, names, ingestion groups. Core checks never
//!   call [`Store::query`]: every backend must pass them.
//! * **sql** ([`SQL_CHECKS`]): the optional raw-SQL capability: the views
//!   documented in this crate (also after re-ingestion, `clear`,
//!   `set_status` and groups), the read-only rule and query errors of
//!   [`Store::query`]. They use only portable SQL, so that every engine can
//!   pass them; a backend without an SQL engine skips them. `tensors_view`
//!   checks the `tensors` view (both built-in engines keep tensor
//!   statistics).
//! * **tensors** ([`TENSOR_CHECKS`]): the optional tensor-statistics
//!   capability ([`Store::tensor_queue`], [`Store::ingest_tensors`],
//!   [`Store::scan_tensors`], the `tensor:` names of the pivot), without
//!   SQL; a backend without the capability skips them.
//!
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[test]`
//! per check, so a failure names the check (and, through the module it is
//! invoked in, the backend). Put each configuration in its own module:
//!
//! ```ignore
//! mod in_memory {
//!     use flor_store::SqliteStore;
//!     flor_store::conformance_tests!(core, || Box::new(SqliteStore::open_in_memory().unwrap()));
//!     flor_store::conformance_tests!(sql, || Box::new(SqliteStore::open_in_memory().unwrap()));
//! }
//! ```
//!
//! `cargo test` then lists `in_memory::runs_roundtrip`, `in_memory::query_views`,
//! ... The factory is any expression that evaluates to a `FnMut() ->
//! Box<dyn Store>`, evaluated once per test; a block can set up what the
//! stores share (`{ let dir = tempfile::tempdir().unwrap(); move || ... }`).
//!
//! [`run_core`], [`run_sql`] and [`run_all`] run a whole suite in one test
//! instead, naming each check on stderr before it starts:
//!
//! ```no_run
//! # use flor_store::{conformance, SqliteStore};
//! conformance::run_all(&mut || Box::new(SqliteStore::open_in_memory().unwrap()));
//! ```

use flor_core::check::ReplayCheck;
use flor_core::layout::replay_line_base;
use flor_core::record::{parse_lines, LineEncoder, Parsed, RecordReader};
use flor_core::store::{
    FileProgress, IngestBatch, LoopSpan, QueuedCheckpoint, RunKey, Store, StoreError, StoreResult, TensorFilter,
    TensorRow, TensorVisit, ValueFilter,
};
use flor_core::{CheckpointMeta, LoopCtx, Record, RecordKind, RunEnd, RunMeta, RunStatus, Source, Table, Value};

/// A factory of fresh, empty stores.
pub type MakeStore<'a> = dyn FnMut() -> Box<dyn Store> + 'a;

/// One conformance check.
pub type Check = fn(&mut MakeStore<'_>);

/// Expands to one `#[test]` per check of a conformance suite, for a store
/// factory: `conformance_tests!(core, FACTORY)` (the primitives and the
/// pivot: every backend), `conformance_tests!(sql, FACTORY)` (raw SQL: the
/// views, the read-only rule; backends with an SQL engine), or
/// `conformance_tests!(all, FACTORY)` (both).
///
/// `FACTORY` is an expression evaluating to a `FnMut() -> Box<dyn Store>`
/// (a closure, a function), evaluated once per test. Each test is a
/// function named after its check (`runs_roundtrip`, `query_views`, ...) in
/// the module the macro is invoked in: invoke it once per backend
/// configuration, each in its own module, so that `cargo test` names the
/// check and the backend. See the [module docs](crate::conformance).
///
/// ```ignore
/// mod on_disk {
///     flor_store::conformance_tests!(all, {
///         let dir = tempfile::tempdir().unwrap();
///         let mut n = 0;
///         move || {
///             n += 1;
///             Box::new(flor_store::SqliteStore::open(&dir.path().join(format!("{n}.db"))).unwrap())
///         }
///     });
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    // The suites' check lists (the only place they are written), handed to
    // the rest of a call.
    (@core $($then:tt)*) => {
        $crate::conformance_tests! {$($then)* [
            runs_roundtrip,
            reingest_is_idempotent,
            incremental_ingestion,
            values_roundtrip,
            scan_filters,
            scan_loops_by_run,
            loop_spans,
            dataframe_nested_loops,
            dataframe_replay,
            dataframe_extracted,
            dataframe_sibling_loops,
            dataframe_without_names,
            dataframe_selections,
            dataframe_as_arrow,
            dataframe_loop_values,
            clear_empties,
            set_status,
            checkpoints_roundtrip,
            names_listing,
            ingestion_groups,
            checks_roundtrip,
            outputs_roundtrip,
        ]}
    };
    (@sql $($then:tt)*) => {
        $crate::conformance_tests! {$($then)* [
            query_views,
            loops_view,
            query_rejects_writes,
            query_errors,
            views_after_reingest,
            views_after_clear,
            runs_view_status,
            views_after_group,
            diverged_flag,
            extracted_source,
            query_time_limit,
            tensors_view,
        ]}
    };
    (@tensors $($then:tt)*) => {
        $crate::conformance_tests! {$($then)* [
            tensors_queue,
            tensors_roundtrip,
            tensors_dataframe,
        ]}
    };
    (@tests $make:expr, [$($check:ident),* $(,)?]) => {
        $(
            #[test]
            fn $check() {
                let mut make = $crate::conformance::factory($make);
                $crate::conformance::$check(&mut make);
            }
        )*
    };
    (@table [$($check:ident),* $(,)?]) => {
        &[$((::core::stringify!($check), $crate::conformance::$check as $crate::conformance::Check)),*]
    };
    (core, $make:expr $(,)?) => {
        $crate::conformance_tests!(@core @tests $make,);
    };
    (sql, $make:expr $(,)?) => {
        $crate::conformance_tests!(@sql @tests $make,);
    };
    (tensors, $make:expr $(,)?) => {
        $crate::conformance_tests!(@tensors @tests $make,);
    };
    (all, $make:expr $(,)?) => {
        $crate::conformance_tests!(@core @tests $make,);
        $crate::conformance_tests!(@sql @tests $make,);
        $crate::conformance_tests!(@tensors @tests $make,);
    };
}

/// The core checks, by name: the primitives and the pivot, never
/// [`Store::query`]. Every backend must pass them (`outputs_roundtrip`
/// returns at once on a store without [`Store::scan_outputs`]).
pub const CORE_CHECKS: &[(&str, Check)] = crate::conformance_tests!(@core @table);

/// The SQL checks, by name: the views, the read-only rule and query errors
/// of [`Store::query`], for backends with an SQL engine.
pub const SQL_CHECKS: &[(&str, Check)] = crate::conformance_tests!(@sql @table);

/// The tensor-statistics checks, by name, for backends with the
/// capability (no SQL needed).
pub const TENSOR_CHECKS: &[(&str, Check)] = crate::conformance_tests!(@tensors @table);

/// Returns `make` unchanged: fixes a closure's signature as a store factory
/// (so `|| Box::new(MyStore::new())` returns a `Box<dyn Store>`). Used by
/// [`conformance_tests!`](crate::conformance_tests).
pub fn factory<F: FnMut() -> Box<dyn Store>>(make: F) -> F {
    make
}

/// A store whose consecutive ingestion steps go into one ingestion group
/// ([`Store::begin_group`]), ended (committed) only by the reads a group
/// refuses (`query`, `dataframe`, `clear`): the other reads run inside the
/// group. Run the suites on it to check a backend's groups:
/// `conformance_tests!(all, || Box::new(GroupedSteps::new(MyStore::new())))`.
pub struct GroupedSteps<S> {
    store: std::cell::RefCell<S>,
    open: std::cell::Cell<bool>,
}

impl<S: Store> GroupedSteps<S> {
    /// Wraps `store` (no group is open yet).
    pub fn new(store: S) -> GroupedSteps<S> {
        GroupedSteps { store: std::cell::RefCell::new(store), open: std::cell::Cell::new(false) }
    }

    fn close(&self) {
        if self.open.replace(false) {
            self.store.borrow_mut().end_group(true).expect("end the group");
        }
    }
}

impl<S: Store> Store for GroupedSteps<S> {
    fn backend(&self) -> &'static str {
        self.store.borrow().backend()
    }
    fn ingest(&mut self, batch: &IngestBatch<'_>) -> StoreResult<RunKey> {
        if !self.open.replace(true) {
            self.store.get_mut().begin_group()?;
        }
        self.store.get_mut().ingest(batch)
    }
    fn file_progress(&self, file: &str) -> StoreResult<Option<FileProgress>> {
        self.store.borrow().file_progress(file)
    }
    fn set_status(&mut self, projid: &str, tstamp: &str, status: RunStatus, ended: Option<&str>) -> StoreResult<bool> {
        self.store.get_mut().set_status(projid, tstamp, status, ended)
    }
    fn runs(&self) -> StoreResult<Vec<flor_core::store::RunRow>> {
        self.store.borrow().runs()
    }
    fn names(&self) -> StoreResult<Vec<flor_core::store::NameInfo>> {
        self.store.borrow().names()
    }
    fn scan_values(
        &self,
        filter: ValueFilter<'_>,
        visit: &mut dyn FnMut(flor_core::store::ValueRow<'_>),
    ) -> StoreResult<()> {
        self.store.borrow().scan_values(filter, visit)
    }
    fn scan_loops(&self, runs: &[RunKey], visit: &mut dyn FnMut(RunKey, &LoopSpan)) -> StoreResult<()> {
        self.store.borrow().scan_loops(runs, visit)
    }
    fn checkpoints(&self, run: RunKey) -> StoreResult<Vec<CheckpointMeta>> {
        self.store.borrow().checkpoints(run)
    }
    fn checks(&self) -> StoreResult<Vec<flor_core::store::CheckRow>> {
        self.store.borrow().checks()
    }
    fn query(&self, sql: &str) -> StoreResult<Table> {
        self.close();
        self.store.borrow().query(sql)
    }
    fn query_within(&self, sql: &str, limit: Option<std::time::Duration>) -> StoreResult<Table> {
        self.close();
        self.store.borrow().query_within(sql, limit)
    }
    fn clear(&mut self) -> StoreResult<()> {
        self.close();
        self.store.get_mut().clear()
    }
    fn dataframe(&self, names: &[&str]) -> StoreResult<Table> {
        self.close();
        self.store.borrow().dataframe(names)
    }
    fn tensor_queue(&self, limit: usize) -> StoreResult<Vec<QueuedCheckpoint>> {
        self.store.borrow().tensor_queue(limit)
    }
    fn requeue_tensors(&mut self) -> StoreResult<()> {
        self.store.get_mut().requeue_tensors()
    }
    fn ingest_tensors(&mut self, run: RunKey, line: u64, tensors: &[TensorRow]) -> StoreResult<()> {
        if !self.open.replace(true) {
            self.store.get_mut().begin_group()?;
        }
        self.store.get_mut().ingest_tensors(run, line, tensors)
    }
    fn scan_tensors(&self, filter: TensorFilter<'_>, visit: &mut dyn FnMut(TensorVisit<'_>)) -> StoreResult<()> {
        self.store.borrow().scan_tensors(filter, visit)
    }
    fn scan_outputs(
        &self,
        filter: flor_core::store::OutputFilter<'_>,
        visit: &mut dyn FnMut(flor_core::store::OutputRow<'_>),
    ) -> StoreResult<()> {
        self.store.borrow().scan_outputs(filter, visit)
    }
}

/// Runs `checks`, naming each on stderr before it starts.
fn run(checks: &[(&str, Check)], make: &mut MakeStore<'_>) {
    for (name, check) in checks {
        eprintln!("conformance check: {name}");
        check(make);
    }
}

/// Runs every core check ([`CORE_CHECKS`]).
pub fn run_core(make: &mut MakeStore<'_>) {
    run(CORE_CHECKS, make);
}

/// Runs every SQL check ([`SQL_CHECKS`]).
pub fn run_sql(make: &mut MakeStore<'_>) {
    run(SQL_CHECKS, make);
}

/// Runs every tensor-statistics check ([`TENSOR_CHECKS`]).
pub fn run_tensors(make: &mut MakeStore<'_>) {
    run(TENSOR_CHECKS, make);
}

/// Runs every check: the core suite, the SQL suite, then the tensor suite.
pub fn run_all(make: &mut MakeStore<'_>) {
    run_core(make);
    run_sql(make);
    run_tensors(make);
}

// ---------------------------------------------------------------- helpers

const PROJ: &str = "proj";
const T1: &str = "2026-01-01T00:00:00.000001";
const T2: &str = "2026-01-01T00:00:00.000002";
const T3: &str = "2026-01-01T00:00:00.000003";
const DIGEST_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DIGEST_B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

fn meta(tstamp: &str) -> RunMeta {
    RunMeta {
        projid: PROJ.into(),
        tstamp: tstamp.into(),
        filename: "train.py".into(),
        argv: vec!["train.py".into(), "--kwargs".into(), "lr=0.1".into()],
        interpreter: "python3".into(),
        host: "host-1".into(),
        pid: 4242,
        commit: None,
        status: RunStatus::Running,
        ended: None,
    }
}

/// The records of one run, with lines numbered as in a record file (the
/// header is line 1) and contexts assigned in execution order.
#[derive(Clone)]
struct Run {
    meta: RunMeta,
    loops: Vec<LoopCtx>,
    records: Vec<Record>,
    checkpoints: Vec<CheckpointMeta>,
    checks: Vec<ReplayCheck>,
    line: u64,
    next_ctx: u32,
}

impl Run {
    fn new(tstamp: &str) -> Run {
        Run::with_meta(meta(tstamp))
    }

    fn with_meta(meta: RunMeta) -> Run {
        Run {
            meta,
            loops: Vec::new(),
            records: Vec::new(),
            checkpoints: Vec::new(),
            checks: Vec::new(),
            line: 1,
            next_ctx: 0,
        }
    }

    /// Replay `n`'s file of `forward` (lines numbered in its range, as
    /// ingestion numbers them), its records `(ctx, name, value)` ended by a
    /// check that found `differing` differences.
    fn replay_n(forward: &Run, n: u64, records: &[(Option<u32>, &str, f64)], differing: u64) -> Run {
        let mut r = Run { line: replay_line_base(n, 0) + 1, ..Run::with_meta(forward.meta.clone()) };
        for (ctx, name, v) in records {
            r.log(*ctx, name, *v);
        }
        r.line += 1;
        r.checks.push(ReplayCheck {
            line: r.line,
            compared: 3,
            differing,
            names: vec!["loss".into()],
            recovered: records.iter().map(|(_, n, _)| n.to_string()).collect(),
            ..ReplayCheck::default()
        });
        r
    }

    /// A replay file of `forward`: the same loop contexts, new records.
    fn replay_of(forward: &Run) -> Run {
        Run { loops: forward.loops.clone(), next_ctx: forward.next_ctx, ..Run::with_meta(forward.meta.clone()) }
    }

    fn iter(&mut self, parent: Option<u32>, name: &str, iteration: u64) -> u32 {
        self.iter_value(parent, name, iteration, None)
    }

    fn iter_value(&mut self, parent: Option<u32>, name: &str, iteration: u64, value: Option<&str>) -> u32 {
        self.line += 1;
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        self.loops.push(LoopCtx { ctx, parent, name: name.into(), iteration, value: value.map(str::to_owned) });
        ctx
    }

    fn rec(&mut self, kind: RecordKind, ctx: Option<u32>, name: &str, value: impl Into<Value>) -> u64 {
        self.line += 1;
        self.records.push(Record { line: self.line, ctx, kind, name: name.into(), value: value.into() });
        self.line
    }

    fn log(&mut self, ctx: Option<u32>, name: &str, value: impl Into<Value>) -> u64 {
        self.rec(RecordKind::Log, ctx, name, value)
    }

    fn arg(&mut self, name: &str, value: impl Into<Value>) -> u64 {
        self.rec(RecordKind::Arg, None, name, value)
    }

    fn ckpt(&mut self, ctx: Option<u32>, name: &str, digest: &str, bytes: u64) {
        self.line += 1;
        self.checkpoints.push(CheckpointMeta {
            line: self.line,
            ctx,
            name: name.into(),
            digest: digest.into(),
            bytes,
            format: "bincode".into(),
        });
    }

    fn batch<'a>(&'a self, source: Source, file: &'a str) -> IngestBatch<'a> {
        IngestBatch {
            run: &self.meta,
            source,
            file,
            progress: FileProgress { offset: self.line * 10, lines: self.line },
            loops: &self.loops,
            records: &self.records,
            checkpoints: &self.checkpoints,
            checks: &self.checks,
        }
    }

    fn ingest(&self, store: &mut dyn Store) -> RunKey {
        let file = format!("{}.forward", self.meta.tstamp);
        ok(store.ingest(&self.batch(Source::Forward, &file)), "ingest")
    }

    fn ingest_replay(&self, store: &mut dyn Store) -> RunKey {
        let file = format!("{}.replay", self.meta.tstamp);
        ok(store.ingest(&self.batch(Source::Replay, &file)), "ingest a replay")
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

fn same_cell(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn show(rows: &[Vec<Option<Value>>]) -> String {
    rows.iter()
        .map(|r| {
            r.iter().map(|c| c.as_ref().map_or("NULL".to_owned(), |v| format!("{v:?}"))).collect::<Vec<_>>().join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_table(tb: &Table, columns: &[&str], rows: &[Vec<Option<Value>>], what: &str) {
    assert_eq!(tb.column_names(), columns, "{what}: columns");
    let actual = tb.rows();
    let equal = actual.len() == rows.len()
        && actual.iter().zip(rows).all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_cell(x, y)));
    assert!(equal, "{what}: rows differ\nexpected:\n{}\nactual:\n{}", show(rows), show(&actual));
}

fn assert_tables_equal(a: &Table, b: &Table, what: &str) {
    let names: Vec<&str> = b.column_names();
    assert_table(a, &names, &b.rows(), what);
}

fn i(x: i64) -> Option<Value> {
    Some(Value::Int(x))
}

fn f(x: f64) -> Option<Value> {
    Some(Value::Float(x))
}

fn t(s: &str) -> Option<Value> {
    Some(Value::Text(s.into()))
}

const N: Option<Value> = None;

/// `projid, tstamp, filename` of a run, then `rest`.
fn row(run: &Run, rest: Vec<Option<Value>>) -> Vec<Option<Value>> {
    let mut r = vec![t(&run.meta.projid), t(&run.meta.tstamp), t(&run.meta.filename)];
    r.extend(rest);
    r
}

/// The iterations `scan_loops` reports for `runs`, expanded from its spans
/// and sorted by run and context. Panics on a malformed span.
fn scanned_iterations(store: &dyn Store, runs: &[RunKey]) -> Vec<(RunKey, LoopCtx)> {
    let mut got = Vec::new();
    ok(
        store.scan_loops(runs, &mut |run, span| {
            assert!(span.count >= 1, "an empty span: {span:?}");
            assert!(span.value.is_none() || span.count == 1, "a span with a value has one iteration: {span:?}");
            got.extend(span.expand().map(|l| (run, l)));
        }),
        "scan_loops",
    );
    got.sort_by_key(|(run, l)| (*run, l.ctx));
    got
}

/// Compares iteration lists, reporting the first difference only.
fn assert_iterations(got: &[(RunKey, LoopCtx)], want: &[(RunKey, LoopCtx)], what: &str) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: scan_loops gives {} iterations, {} expected; first difference at #{at}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        got.get(at),
        want.get(at)
    );
}

fn count_spans(store: &dyn Store, runs: &[RunKey]) -> usize {
    let mut n = 0;
    ok(store.scan_loops(runs, &mut |_, _| n += 1), "scan_loops");
    n
}

/// A batch of `run`'s file with only the given loop iterations.
fn loops_batch<'a>(run: &'a Run, source: Source, file: &'a str, loops: &'a [LoopCtx]) -> IngestBatch<'a> {
    IngestBatch { loops, records: &[], checkpoints: &[], ..run.batch(source, file) }
}

fn count_values(store: &dyn Store, filter: ValueFilter<'_>) -> usize {
    let mut n = 0;
    ok(store.scan_values(filter, &mut |_| n += 1), "scan_values");
    n
}

/// Run A: `lr` arg; epoch(2) × step(2) logging `loss` per step (twice at
/// one step) and `acc` per epoch.
fn run_a() -> Run {
    let mut a = Run::new(T1);
    a.arg("lr", 0.1);
    for e in 0..2u64 {
        let ec = a.iter(None, "epoch", e);
        for s in 0..2u64 {
            let sc = a.iter(Some(ec), "step", s);
            a.log(Some(sc), "loss", (e * 10 + s) as f64);
            if e == 0 && s == 1 {
                a.log(Some(sc), "loss", 1.5);
            }
        }
        a.log(Some(ec), "acc", 0.5 + 0.25 * e as f64);
    }
    a
}

/// Run B: only run-level values.
fn run_b() -> Run {
    let mut b = Run::new(T2);
    b.arg("lr", 0.2);
    b.log(None, "loss", 5.0);
    b
}

/// Run C: a run-level `seed` and a looped `other`, none of A's names.
fn run_c() -> Run {
    let mut c = Run::new(T3);
    c.arg("seed", 7);
    let e = c.iter(None, "epoch", 0);
    c.log(Some(e), "other", 1);
    c
}

// ------------------------------------------------------------ core checks

/// Ingest and list runs: metadata, status, argv, record counts, ordering by
/// `tstamp`, identity by `(projid, tstamp)`, metadata replaced on re-ingest.
pub fn runs_roundtrip(make: &mut MakeStore<'_>) {
    let mut store = make();
    assert!(!store.backend().is_empty());
    assert!(ok(store.runs(), "runs").is_empty(), "a new store has no runs");

    let mut late = Run::new(T2);
    late.meta.argv = vec!["train.py".into(), "--name".into(), "with space \"q\" ✓".into(), String::new()];
    late.meta.commit = Some("a".repeat(40));
    late.meta.status = RunStatus::Finished;
    late.meta.ended = Some("2026-01-01T01:00:00.000000".into());
    late.log(None, "x", 1);
    late.rec(RecordKind::Timing, None, "setup", 0.5);
    late.rec(RecordKind::Output, None, "stdout", "hi\n");
    let mut early = Run::new(T1);
    early.meta.filename = "sub/dir/other.py".into();
    early.arg("lr", 0.1);
    let k_late = late.ingest(&mut *store);
    let k_early = early.ingest(&mut *store);
    assert_ne!(k_late, k_early);

    let runs = ok(store.runs(), "runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].key, k_early, "runs are ordered by tstamp");
    assert_eq!(runs[0].meta, early.meta);
    assert_eq!(runs[0].records, 1);
    assert_eq!(runs[1].key, k_late);
    assert_eq!(runs[1].meta, late.meta);
    assert_eq!(runs[1].records, 3, "records counts every kind");

    // Same identity: metadata and status are replaced, the key kept.
    let mut update = Run::with_meta(early.meta.clone());
    update.meta.status = RunStatus::Failed;
    update.meta.ended = Some("2026-01-02T00:00:00.000000".into());
    update.meta.pid = 7;
    update.line = early.line;
    assert_eq!(update.ingest(&mut *store), k_early);
    let runs = ok(store.runs(), "runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].meta, update.meta);
    assert_eq!(runs[0].records, 1, "an empty span adds no records");

    // Another project with the same tstamp is another run.
    let mut other = Run::new(T1);
    other.meta.projid = "other-proj".into();
    let k_other = other.ingest(&mut *store);
    assert!(k_other != k_early && k_other != k_late);
    assert_eq!(ok(store.runs(), "runs").len(), 3);
}

/// Ingesting the same span twice changes nothing.
pub fn reingest_is_idempotent(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = run_a();
    a.rec(RecordKind::Timing, Some(0), "iteration", 0.25);
    a.ckpt(Some(0), "model", DIGEST_A, 100);
    let k1 = a.ingest(&mut *store);
    let snapshot = |s: &dyn Store| {
        (
            ok(s.runs(), "runs"),
            ok(s.dataframe(&["loss", "acc", "lr"]), "dataframe"),
            count_values(s, ValueFilter::Names(&["loss", "acc", "lr"])),
            ok(s.checkpoints(k1), "checkpoints"),
            ok(s.names(), "names"),
        )
    };
    let before = snapshot(&*store);
    let k2 = a.ingest(&mut *store);
    assert_eq!(k1, k2);
    let after = snapshot(&*store);
    assert_eq!(before.0, after.0, "runs after re-ingest");
    assert_tables_equal(&after.1, &before.1, "dataframe after re-ingest");
    assert_eq!(before.2, after.2, "scanned values after re-ingest");
    assert_eq!(before.3, after.3, "checkpoints after re-ingest");
    assert_eq!(before.4, after.4, "names after re-ingest");
    assert_eq!(after.0[0].records, a.records.len() as u64);
}

/// A record file ingested span by span (as it grows) equals the same file
/// ingested at once; `file_progress` follows each span.
pub fn incremental_ingestion(make: &mut MakeStore<'_>) {
    let m = meta(T1);
    let mut e = LineEncoder::new();
    e.header(&m, Source::Forward);
    e.record(RecordKind::Arg, None, "lr", &Value::Float(0.01));
    let mut cuts = Vec::new();
    for ep in 0..3u32 {
        let ec = ep * 4;
        e.iter(ec, None, "epoch", ep as u64, None);
        for s in 0..3u32 {
            e.iter(ec + 1 + s, Some(ec), "step", s as u64, None);
            e.record(RecordKind::Log, Some(ec + 1 + s), "loss", &Value::Float(ep as f64 + s as f64 / 10.0));
        }
        e.record(RecordKind::Log, Some(ec), "acc", &Value::Float(ep as f64 / 3.0));
        e.checkpoint(Some(ec), "model", DIGEST_A, 10 + ep as u64, "bincode");
        cuts.push(e.buf.len());
    }
    e.end(&RunEnd { status: RunStatus::Finished, ended: "2026-01-01T02:00:00.000000".into() });
    let bytes = e.buf.clone();
    // Cut the first span in the middle of a line: only whole lines count.
    let cut_points = [cuts[0] - 5, cuts[1], bytes.len()];

    let file = "proj/runs/2026-01-01T00-00-00.000001.jsonl";
    let ingest_span = |store: &mut dyn Store, header: &mut Option<RunMeta>, p: &Parsed, progress: FileProgress| {
        if let Some((h, _)) = &p.header {
            *header = Some(h.clone());
        }
        let mut run = header.clone().expect("the first span holds the header");
        if let Some(end) = &p.end {
            run.status = end.status;
            run.ended = Some(end.ended.clone());
        }
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let batch = IngestBatch {
            run: &run,
            source: Source::Forward,
            file,
            progress,
            loops: &p.loops,
            records: &p.records,
            checkpoints: &p.checkpoints,
            checks: &[],
        };
        ok(store.ingest(&batch), "ingest a span");
        if p.end.is_some() {
            *header = Some(run);
        }
    };

    let mut whole = make();
    let p = parse_lines(&bytes, 1);
    let mut h = None;
    ingest_span(&mut *whole, &mut h, &p, FileProgress { offset: p.consumed as u64, lines: p.lines });

    let mut spans = make();
    assert_eq!(ok(spans.file_progress(file), "file_progress"), None);
    let mut h = None;
    let mut done = FileProgress::default();
    // One reader for the whole file: later spans use contexts declared in
    // earlier ones.
    let mut reader = RecordReader::new();
    for cut in cut_points {
        let p = reader.read(&bytes[done.offset as usize..cut]);
        done = FileProgress { offset: done.offset + p.consumed as u64, lines: done.lines + p.lines };
        ingest_span(&mut *spans, &mut h, &p, done);
        assert_eq!(ok(spans.file_progress(file), "file_progress"), Some(done));
    }
    assert_eq!(done.offset, bytes.len() as u64);
    assert_eq!(ok(spans.file_progress("some/other/file"), "file_progress"), None);

    let names = ["loss", "acc", "lr"];
    let df = ok(whole.dataframe(&names), "dataframe");
    assert_eq!(df.row_count(), 9);
    assert_tables_equal(&ok(spans.dataframe(&names), "dataframe"), &df, "span-wise vs whole");
    let (rw, rs) = (ok(whole.runs(), "runs"), ok(spans.runs(), "runs"));
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].meta, rw[0].meta);
    assert_eq!(rs[0].meta.status, RunStatus::Finished);
    assert_eq!(rs[0].records, rw[0].records);
    assert_eq!(ok(spans.names(), "names"), ok(whole.names(), "names"));
    assert_eq!(ok(spans.checkpoints(rs[0].key), "checkpoints"), ok(whole.checkpoints(rw[0].key), "checkpoints"));
    assert_eq!(ok(spans.checkpoints(rs[0].key), "checkpoints").len(), 3);
}

/// The values every type must round-trip bit-exactly.
fn sample_values() -> Vec<Value> {
    let mut v = vec![
        Value::Int(0),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Float(0.0),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NEG_INFINITY),
        Value::Float(0.1 + 0.2),
        Value::Float(5e-324),
        Value::Float(f64::MIN_POSITIVE),
        Value::Float(f64::MAX),
        Value::Float(-1.0 / 3.0),
        Value::Float(1e16),
        Value::Bool(true),
        Value::Bool(false),
        Value::Text("".into()),
        Value::Text("plain".into()),
        Value::Text("héllo ✓ 日本語 🦀".into()),
        Value::Text("tab\tnewline\n quote\" backslash\\ nul\u{0} end".into()),
        Value::Text("123".into()),
        Value::Text("1.5".into()),
    ];
    for j in ["{\"a\":[1,2.5,null],\"b\":\"x\"}", "[]", "\"s\"", "3", "true", "null"] {
        v.push(Value::json(j).expect("valid JSON"));
    }
    v
}

/// Every value type round-trips bit-exactly (NaN, ±inf, -0.0, extreme
/// integers, unicode, JSON), at run level and inside loops, through
/// `scan_values` and `dataframe`.
pub fn values_roundtrip(make: &mut MakeStore<'_>) {
    let mut store = make();
    let values = sample_values();
    let names: Vec<String> = (0..values.len()).map(|k| format!("v{k}")).collect();
    let mut r = Run::new(T1);
    for (n, v) in names.iter().zip(&values) {
        r.log(None, n, v.clone());
    }
    let ec = r.iter(None, "epoch", 0);
    for (n, v) in names.iter().zip(&values) {
        r.log(Some(ec), n, v.clone());
    }
    r.ingest(&mut *store);

    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut seen: Vec<(Option<u32>, String, Value)> = Vec::new();
    ok(
        store.scan_values(ValueFilter::Names(&refs), &mut |row| {
            seen.push((row.ctx, row.name.to_owned(), row.value));
        }),
        "scan_values",
    );
    assert_eq!(seen.len(), 2 * values.len());
    for (k, (n, v)) in names.iter().zip(&values).enumerate() {
        for ctx in [None, Some(ec)] {
            let hit = seen.iter().find(|(c, name, _)| *c == ctx && name == n);
            let Some((_, _, got)) = hit else { panic!("value {n} at {ctx:?} not scanned") };
            assert!(same(got, v), "value {k} at {ctx:?}: stored {v:?}, read {got:?}");
            assert_eq!(got.value_type(), v.value_type(), "value {k}: type");
        }
    }

    let mut run_level: Vec<(String, Value)> = Vec::new();
    ok(store.scan_values(ValueFilter::RunLevel, &mut |row| run_level.push((row.name.to_owned(), row.value))), "scan");
    assert_eq!(run_level.len(), values.len());
    for (n, v) in names.iter().zip(&values) {
        let got = run_level.iter().find(|(name, _)| name == n).map(|(_, v)| v);
        assert!(got.is_some_and(|g| same(g, v) && g.value_type() == v.value_type()), "{n}: {v:?} vs {got:?}");
    }

    let df = ok(store.dataframe(&refs), "dataframe");
    assert_eq!(df.row_count(), 1);
    for (n, v) in names.iter().zip(&values) {
        let cell = df.column(n).and_then(|c| c.get(0));
        assert!(
            cell.as_ref().is_some_and(|c| same(c, v) && c.value_type() == v.value_type()),
            "{n}: {v:?} vs {cell:?}"
        );
    }
}

/// `scan_values`: `Names` visits log/arg records with those names at any
/// depth (never timings or outputs); `RunLevel` visits log/arg records
/// outside loops. Row fields (run, ctx, source, line) are exact.
pub fn scan_filters(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = Run::new(T1);
    let l_lr = a.arg("lr", 0.1);
    let l_loss0 = a.log(None, "loss", 9.0);
    a.rec(RecordKind::Timing, None, "setup", 1.0);
    a.rec(RecordKind::Output, None, "stdout", "hello");
    let ec = a.iter(None, "epoch", 0);
    let l_loss1 = a.log(Some(ec), "loss", 1.0);
    a.rec(RecordKind::Timing, Some(ec), "loss", 2.0);
    a.rec(RecordKind::Output, Some(ec), "acc", "not a log");
    let ka = a.ingest(&mut *store);
    let mut replay = Run::replay_of(&a);
    let l_grad = replay.log(Some(ec), "grad", 0.5);
    replay.ingest_replay(&mut *store);
    let mut b = Run::new(T2);
    b.log(None, "unrelated", 1);
    b.ingest(&mut *store);

    let mut got: Vec<(RunKey, Option<u32>, Source, u64, String, Value)> = Vec::new();
    ok(
        store.scan_values(ValueFilter::Names(&["loss", "acc", "grad", "missing"]), &mut |r| {
            got.push((r.run, r.ctx, r.source, r.line, r.name.to_owned(), r.value));
        }),
        "scan_values",
    );
    got.sort_by_key(|r| (r.2 as u8, r.3));
    let want = vec![
        (ka, None, Source::Forward, l_loss0, "loss".to_owned(), Value::Float(9.0)),
        (ka, Some(ec), Source::Forward, l_loss1, "loss".to_owned(), Value::Float(1.0)),
        (ka, Some(ec), Source::Replay, l_grad, "grad".to_owned(), Value::Float(0.5)),
    ];
    assert_eq!(got, want, "Names filter");

    let mut got: Vec<(RunKey, u64, String)> = Vec::new();
    ok(
        store.scan_values(ValueFilter::RunLevel, &mut |r| {
            assert_eq!(r.ctx, None);
            got.push((r.run, r.line, r.name.to_owned()));
        }),
        "scan_values",
    );
    got.sort();
    let mut want = vec![(ka, l_lr, "lr".to_owned()), (ka, l_loss0, "loss".to_owned())];
    want.push((ok(store.runs(), "runs")[1].key, 2, "unrelated".to_owned()));
    want.sort();
    assert_eq!(got, want, "RunLevel filter");
    assert_eq!(count_values(&*store, ValueFilter::Names(&[])), 0);
}

/// `scan_loops` visits exactly the loop contexts of the given runs, as spans
/// that expand to the ingested iterations.
pub fn scan_loops_by_run(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = Run::new(T1);
    let e = a.iter_value(None, "epoch", 0, Some("a \"quoted\" ✓ value"));
    a.iter(Some(e), "step", 0);
    a.iter_value(Some(e), "step", 1, Some(""));
    a.iter(None, "epoch", 1);
    let ka = a.ingest(&mut *store);
    let c = run_c();
    let kc = c.ingest(&mut *store);

    let want: Vec<(RunKey, LoopCtx)> = a.loops.iter().map(|l| (ka, l.clone())).collect();
    assert_iterations(&scanned_iterations(&*store, &[ka]), &want, "scan_loops");

    let mut want_both = want.clone();
    want_both.extend(c.loops.iter().map(|l| (kc, l.clone())));
    want_both.sort_by_key(|(run, l)| (*run, l.ctx));
    assert_iterations(&scanned_iterations(&*store, &[ka, kc]), &want_both, "scan_loops");
    assert_iterations(&scanned_iterations(&*store, &[kc]), &[(kc, c.loops[0].clone())], "scan_loops");
    ok(store.scan_loops(&[], &mut |_, _| panic!("no runs asked")), "scan_loops");
}

/// Run D: epoch(3) × step(5) with a `loss` per step (one step iterates a
/// value), an `eval` loop over named splits per epoch, then a flat `batch`
/// loop of 300 iterations.
fn run_d() -> Run {
    let mut d = Run::new(T1);
    for e in 0..3u64 {
        let ec = d.iter(None, "epoch", e);
        for s in 0..5u64 {
            let value = (e == 1 && s == 2).then_some("special step");
            let sc = d.iter_value(Some(ec), "step", s, value);
            d.log(Some(sc), "loss", (e * 5 + s) as f64);
        }
        for (k, split) in ["train", "valid"].into_iter().enumerate() {
            let vc = d.iter_value(Some(ec), "eval", k as u64, Some(split));
            d.log(Some(vc), "acc", e as f64 + k as f64 / 2.0);
        }
    }
    for b in 0..300u64 {
        d.iter(None, "batch", b);
    }
    d
}

/// Loop contexts are stored as spans: `scan_loops` visits spans (no more
/// than [`LoopSpan::compress`] makes of a batch) that expand to exactly the
/// ingested iterations, each once — iterations with a value text are spans
/// of their own — however the iterations were split into batches,
/// re-ingested, or ingested again by a replay with other boundaries.
pub fn loop_spans(make: &mut MakeStore<'_>) {
    let d = run_d();
    let want = |key: RunKey| -> Vec<(RunKey, LoopCtx)> { d.loops.iter().map(|l| (key, l.clone())).collect() };

    // One batch.
    let mut whole = make();
    let kw = d.ingest(&mut *whole);
    assert_iterations(&scanned_iterations(&*whole, &[kw]), &want(kw), "one batch");
    let spans = count_spans(&*whole, &[kw]);
    let compressed = LoopSpan::compress(&d.loops).len();
    assert!(spans <= compressed, "one batch: {spans} spans for what compresses to {compressed}");
    assert!(spans < d.loops.len() / 10, "iterations are stored as spans ({spans} for {})", d.loops.len());

    // Several batches cut inside spans (the file as it grows), each
    // ingested once, then one again, then overlapping replay batches.
    let mut pieces = make();
    let file = format!("{T1}.forward");
    let cuts = [0, 3, 4, 9, 10, 17, 40, 200, 201, d.loops.len()];
    let mut kp = None;
    for w in cuts.windows(2) {
        let key = ok(pieces.ingest(&loops_batch(&d, Source::Forward, &file, &d.loops[w[0]..w[1]])), "ingest a span");
        assert!(kp.is_none_or(|k| k == key));
        kp = Some(key);
        let done: Vec<(RunKey, LoopCtx)> = d.loops[..w[1]].iter().map(|l| (key, l.clone())).collect();
        assert_iterations(
            &scanned_iterations(&*pieces, &[key]),
            &done,
            &format!("after the batch ending at iteration {}", w[1]),
        );
    }
    let kp = kp.expect("batches were ingested");
    ok(pieces.ingest(&loops_batch(&d, Source::Forward, &file, &d.loops[4..9])), "re-ingest a span");
    assert_iterations(&scanned_iterations(&*pieces, &[kp]), &want(kp), "after re-ingesting a batch");
    let replay = format!("{T1}.replay");
    for (from, to) in [(2, 12), (100, 250), (0, d.loops.len()), (30, 31)] {
        ok(pieces.ingest(&loops_batch(&d, Source::Replay, &replay, &d.loops[from..to])), "ingest a replay span");
        assert_iterations(
            &scanned_iterations(&*pieces, &[kp]),
            &want(kp),
            &format!("after a replay of iterations {from}..{to}"),
        );
    }

    // The pivot sees the same loops either way.
    ok(pieces.ingest(&IngestBatch { loops: &[], ..d.batch(Source::Forward, &file) }), "ingest the records");
    let df = ok(whole.dataframe(&["loss", "acc"]), "dataframe");
    assert_eq!(df.row_count(), 21);
    assert_tables_equal(&ok(pieces.dataframe(&["loss", "acc"]), "dataframe"), &df, "pivot after batches");

    // Other runs' loops stay apart.
    let c = run_c();
    let kc = c.ingest(&mut *pieces);
    assert_iterations(&scanned_iterations(&*pieces, &[kp]), &want(kp), "with another run");
    assert_iterations(&scanned_iterations(&*pieces, &[kc]), &[(kc, c.loops[0].clone())], "scan_loops");
}

/// The pivot over nested loops: epoch values repeated on step rows, run-level
/// args on every row, last-wins duplicates, run-level-only runs as one row,
/// runs without the names absent, loop columns by depth.
pub fn dataframe_nested_loops(make: &mut MakeStore<'_>) {
    let mut store = make();
    let (a, b, c) = three_runs(&mut *store);

    let df = ok(store.dataframe(&["loss", "acc", "lr"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "step", "loss", "acc", "lr"],
        &[
            row(&a, vec![i(0), i(0), f(0.0), f(0.5), f(0.1)]),
            row(&a, vec![i(0), i(1), f(1.5), f(0.5), f(0.1)]),
            row(&a, vec![i(1), i(0), f(10.0), f(0.75), f(0.1)]),
            row(&a, vec![i(1), i(1), f(11.0), f(0.75), f(0.1)]),
            row(&b, vec![N, N, f(5.0), N, f(0.2)]),
        ],
        "dataframe(loss, acc, lr)",
    );

    let df = ok(store.dataframe(&["acc"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "acc"],
        &[row(&a, vec![i(0), f(0.5)]), row(&a, vec![i(1), f(0.75)])],
        "dataframe(acc): epoch-level rows",
    );

    let df = ok(store.dataframe(&["lr"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "lr"],
        &[row(&a, vec![f(0.1)]), row(&b, vec![f(0.2)])],
        "dataframe(lr): one row per run",
    );

    let df = ok(store.dataframe(&["seed", "other"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "seed", "other"],
        &[row(&c, vec![i(0), i(7), i(1)])],
        "dataframe(seed, other)",
    );

    let df = ok(store.dataframe(&["missing"]), "dataframe");
    assert_table(&df, &["projid", "tstamp", "filename", "missing"], &[], "dataframe(missing)");

    let df = ok(store.dataframe(&["lr", "lr"]), "dataframe");
    assert_eq!(df.column_names(), ["projid", "tstamp", "filename", "lr"], "repeated names give one column");
}

/// A captured line as [`Store::scan_outputs`] visits it: `(run, ctx,
/// line, channel, text)`.
type OutLine = (RunKey, Option<u32>, u64, String, String);

/// The lines `filter` selects, sorted by run and line.
fn scanned_outputs(store: &dyn Store, filter: flor_core::store::OutputFilter<'_>) -> StoreResult<Vec<OutLine>> {
    let mut got = Vec::new();
    store.scan_outputs(filter, &mut |o| {
        assert_eq!(o.source, Source::Forward, "captured output is forward");
        got.push((o.run, o.ctx, o.line, o.channel.to_owned(), o.text.to_owned()));
    })?;
    got.sort_by_key(|o| (o.0, o.2));
    Ok(got)
}

/// Captured output ([`Store::scan_outputs`], an optional capability: a
/// store without it answers [`StoreError::Unsupported`] and the check
/// ends): every output record once (also after re-ingestion), with its
/// context, line, channel and text exactly (empty, long, non-ASCII, with
/// tabs); channels selected exactly or by `::` prefix; runs selected by
/// key; output records are neither values nor names; `clear` removes them.
pub fn outputs_roundtrip(make: &mut MakeStore<'_>) {
    use flor_core::store::OutputFilter;
    let mut store = make();
    let mut a = Run::new(T1);
    a.arg("lr", 0.1);
    let long = "x".repeat(5000);
    let mut want: Vec<(Option<u32>, u64, &str, String)> = Vec::new();
    want.push((None, a.rec(RecordKind::Output, None, "io::stdout", "starting"), "io::stdout", "starting".into()));
    for e in 0..2u64 {
        let ctx = a.iter(None, "epoch", e);
        let text = format!("epoch {e} | loss: 0.{e}5\tnaïve ✓");
        want.push((Some(ctx), a.rec(RecordKind::Output, Some(ctx), "io::stdout", text.as_str()), "io::stdout", text));
        a.log(Some(ctx), "loss", e as f64);
        want.push((
            Some(ctx),
            a.rec(RecordKind::Output, Some(ctx), "io::log::warning", ""),
            "io::log::warning",
            "".into(),
        ));
    }
    want.push((None, a.rec(RecordKind::Output, None, "io::log::error", long.as_str()), "io::log::error", long.clone()));
    want.push((None, a.rec(RecordKind::Output, None, "io::stderr", "done"), "io::stderr", "done".into()));
    let mut b = Run::new(T2);
    let b_line = b.rec(RecordKind::Output, None, "io::stdout", "other run");
    let ka = a.ingest(&mut *store);
    let kb = b.ingest(&mut *store);
    a.ingest(&mut *store); // idempotent

    let all = match scanned_outputs(&*store, OutputFilter::default()) {
        Err(StoreError::Unsupported { .. }) => return,
        r => ok(r, "scan_outputs"),
    };
    let mut expected: Vec<OutLine> =
        want.iter().map(|(ctx, line, ch, text)| (ka, *ctx, *line, ch.to_string(), text.clone())).collect();
    expected.push((kb, None, b_line, "io::stdout".into(), "other run".into()));
    expected.sort_by_key(|o| (o.0, o.2));
    assert_eq!(all, expected, "every captured line once, exactly");

    let channel = |c: &'static str| {
        let got = ok(scanned_outputs(&*store, OutputFilter { runs: None, channel: Some(c) }), "scan_outputs");
        got.into_iter().map(|o| o.3).collect::<Vec<_>>()
    };
    assert_eq!(channel("io::log"), ["io::log::warning", "io::log::warning", "io::log::error"], "io::log: every level");
    assert_eq!(channel("io::log::error"), ["io::log::error"], "one level");
    assert_eq!(channel("io::stdout").len(), 4, "stdout of both runs");
    assert_eq!(channel("stderr"), ["io::stderr"], "`stderr` is short for io::stderr");
    assert!(channel("io::std").is_empty() && channel("loss").is_empty(), "no partial names, no values");

    let only_b = [kb];
    let got = ok(scanned_outputs(&*store, OutputFilter { runs: Some(&only_b), channel: None }), "scan_outputs");
    assert_eq!(got, vec![(kb, None, b_line, "io::stdout".into(), "other run".into())], "runs: b only");

    let names: Vec<String> = ok(store.names(), "names").into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["loss", "lr"], "captured channels are not value names");
    assert_eq!(count_values(&*store, ValueFilter::RunLevel), 1, "outputs are not run-level values");

    ok(store.clear(), "clear");
    assert!(ok(scanned_outputs(&*store, OutputFilter::default()), "scan_outputs").is_empty(), "clear removes them");
}

/// Runs A, B and C ingested into `store` in the order C, B, A (which
/// differs from their tstamp order on purpose).
fn three_runs(store: &mut dyn Store) -> (Run, Run, Run) {
    let (a, b, c) = (run_a(), run_b(), run_c());
    c.ingest(store);
    b.ingest(store);
    a.ingest(store);
    (a, b, c)
}

/// Selections applied before the pivot ([`Store::dataframe_filtered`]):
/// runs by key, loop iterations (`epoch=last`, indices, `none`), both; a
/// run whose loop values are all left out has no rows, rows outside the
/// selected loop stay.
pub fn dataframe_selections(make: &mut MakeStore<'_>) {
    use flor_core::select::{IterSelect, PivotFilter};
    let mut store = make();
    let (a, b, _) = three_runs(&mut *store);
    let key_of = |r: &Run| {
        let runs = ok(store.runs(), "runs");
        runs.iter().find(|x| x.meta.tstamp == r.meta.tstamp).map(|x| x.key).expect("the run is stored")
    };
    let iters = |s: &[&str]| s.iter().map(|x| x.parse::<IterSelect>().expect("a selection")).collect::<Vec<_>>();
    let cols = ["projid", "tstamp", "filename", "epoch", "step", "loss", "acc", "lr"];
    let names = ["loss", "acc", "lr"];

    let only_b = PivotFilter { runs: Some(vec![key_of(&b)]), iters: Vec::new() };
    let df = ok(store.dataframe_filtered(&names, &only_b), "dataframe_filtered");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "loss", "acc", "lr"],
        &[row(&b, vec![f(5.0), N, f(0.2)])],
        "runs: b only",
    );

    let last = PivotFilter { runs: None, iters: iters(&["epoch=last"]) };
    let df = ok(store.dataframe_filtered(&names, &last), "dataframe_filtered");
    assert_table(
        &df,
        &cols,
        &[
            row(&a, vec![i(1), i(0), f(10.0), f(0.75), f(0.1)]),
            row(&a, vec![i(1), i(1), f(11.0), f(0.75), f(0.1)]),
            row(&b, vec![N, N, f(5.0), N, f(0.2)]),
        ],
        "epoch=last (run b has no loop: its run-level row stays)",
    );

    let first_step = PivotFilter { runs: Some(vec![key_of(&a)]), iters: iters(&["step=0", "epoch=0-1"]) };
    let df = ok(store.dataframe_filtered(&names, &first_step), "dataframe_filtered");
    assert_table(
        &df,
        &cols,
        &[row(&a, vec![i(0), i(0), f(0.0), f(0.5), f(0.1)]), row(&a, vec![i(1), i(0), f(10.0), f(0.75), f(0.1)])],
        "run a, step=0",
    );

    let none = PivotFilter { runs: None, iters: iters(&["epoch=none"]) };
    let df = ok(store.dataframe_filtered(&["loss"], &none), "dataframe_filtered");
    assert_table(&df, &["projid", "tstamp", "filename", "loss"], &[row(&b, vec![f(5.0)])], "epoch=none: no epoch rows");

    let everything = ok(store.dataframe(&names), "dataframe");
    let unfiltered = ok(store.dataframe_filtered(&names, &PivotFilter::default()), "dataframe_filtered");
    assert_eq!(everything, unfiltered, "an empty selection is the whole pivot");
}

/// A pivot's columns as Arrow ([`crate::arrow::into_record_batch`]): the
/// same cells, NULLs and NaN included, the run columns dictionary-encoded.
pub fn dataframe_as_arrow(make: &mut MakeStore<'_>) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    use arrow_array::Array;
    let mut store = make();
    three_runs(&mut *store);
    let df = ok(store.dataframe(&["loss", "acc", "lr"]), "dataframe");
    let batch = crate::arrow::into_record_batch(df.clone()).expect("a pivot converts to Arrow");
    assert_eq!(batch.num_rows(), df.row_count(), "rows");
    for (k, col) in df.columns.iter().enumerate() {
        let array = batch.column(k);
        assert_eq!(batch.schema().field(k).name(), &col.name, "column {k}");
        for r in 0..df.row_count() {
            let want = df.cell(r, k);
            let got = if array.is_null(r) {
                None
            } else {
                match array.data_type() {
                    arrow_schema::DataType::Int64 => Some(Value::Int(array.as_primitive::<Int64Type>().value(r))),
                    arrow_schema::DataType::Float64 => Some(Value::Float(array.as_primitive::<Float64Type>().value(r))),
                    arrow_schema::DataType::Dictionary(_, _) => {
                        let d = array.as_dictionary::<Int32Type>();
                        let key = d.keys().value(r) as usize;
                        Some(Value::from(d.values().as_string::<i32>().value(key)))
                    }
                    other => panic!("column {} has Arrow type {other}", col.name),
                }
            };
            let same = match (&want, &got) {
                (Some(Value::Float(x)), Some(Value::Float(y))) => x.to_bits() == y.to_bits(),
                _ => want == got,
            };
            assert!(same, "column {} row {r}: {want:?} vs {got:?}", col.name);
        }
    }
    assert!(
        matches!(batch.schema().field(1).data_type(), arrow_schema::DataType::Dictionary(_, _)),
        "tstamp is dictionary-encoded"
    );
}

/// Runs for [`dataframe_loop_values`]: V iterates `opt` over named values
/// (each with an `epoch` loop whose values are its indices, as `range()`
/// records them) logging `score` per opt and `loss` per epoch; W has the
/// same loops without values (a run that recorded none); X a `round` loop
/// whose values are not its indices (`flor.iteration("round", i, i * 10)`).
fn valued_runs() -> (Run, Run, Run) {
    let mut v = Run::new(T1);
    for (k, opt) in ["sgd", "adam"].into_iter().enumerate() {
        let oc = v.iter_value(None, "opt", k as u64, Some(opt));
        for e in 0..2u64 {
            let ec = v.iter_value(Some(oc), "epoch", e, Some(&e.to_string()));
            v.log(Some(ec), "loss", (k * 10) as f64 + e as f64);
        }
        v.log(Some(oc), "score", k as i64);
    }
    let mut w = Run::new(T2);
    let oc = w.iter(None, "opt", 0);
    let ec = w.iter(Some(oc), "epoch", 0);
    w.log(Some(ec), "loss", 7.0);
    w.log(Some(oc), "score", 5);
    let mut x = Run::new(T3);
    for r in 0..3u64 {
        let rc = x.iter_value(None, "round", r, Some(&(r * 10).to_string()));
        x.log(Some(rc), "x", (r * r) as i64);
    }
    (v, w, x)
}

/// Loop values in the pivot: a loop whose iterations carry values that are
/// not their indices gets a `<loop>_value` column of text right after its
/// index column (NULL where an iteration has none, as in a run that
/// recorded no values); a loop whose values are its indices (`range()`)
/// gets none; a requested name takes precedence over the column's name;
/// selections keep the values of the rows they keep; Arrow carries the
/// column as dictionary-encoded text.
pub fn dataframe_loop_values(make: &mut MakeStore<'_>) {
    use flor_core::select::{IterSelect, PivotFilter};
    let mut store = make();
    let (v, w, x) = valued_runs();
    x.ingest(&mut *store);
    w.ingest(&mut *store);
    v.ingest(&mut *store);

    let cols = ["projid", "tstamp", "filename", "opt", "opt_value", "epoch", "loss"];
    let whole = [
        row(&v, vec![i(0), t("sgd"), i(0), f(0.0)]),
        row(&v, vec![i(0), t("sgd"), i(1), f(1.0)]),
        row(&v, vec![i(1), t("adam"), i(0), f(10.0)]),
        row(&v, vec![i(1), t("adam"), i(1), f(11.0)]),
        row(&w, vec![i(0), N, i(0), f(7.0)]),
    ];
    let df = ok(store.dataframe(&["loss"]), "dataframe");
    assert_table(&df, &cols, &whole, "dataframe(loss): opt_value, no epoch_value (its values are its indices)");

    let df = ok(store.dataframe(&["score"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "opt", "opt_value", "score"],
        &[row(&v, vec![i(0), t("sgd"), i(0)]), row(&v, vec![i(1), t("adam"), i(1)]), row(&w, vec![i(0), N, i(5)])],
        "dataframe(score)",
    );

    let df = ok(store.dataframe(&["x"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "round", "round_value", "x"],
        &[row(&x, vec![i(0), t("0"), i(0)]), row(&x, vec![i(1), t("10"), i(1)]), row(&x, vec![i(2), t("20"), i(4)])],
        "dataframe(x): a value equal to its index on some rows only is still shown",
    );

    let df = ok(store.dataframe(&["score", "opt_value"]), "dataframe");
    assert_eq!(
        df.column_names(),
        ["projid", "tstamp", "filename", "opt", "score", "opt_value"],
        "a requested name wins over a loop's value column"
    );

    let iters = |s: &[&str]| s.iter().map(|x| x.parse::<IterSelect>().expect("a selection")).collect::<Vec<_>>();
    let adam = PivotFilter { runs: None, iters: iters(&["opt=1"]) };
    let df = ok(store.dataframe_filtered(&["loss"], &adam), "dataframe_filtered");
    assert_table(&df, &cols, &whole[2..4], "opt=1: the kept rows' values");
    let last = PivotFilter { runs: None, iters: iters(&["epoch=last"]) };
    let df = ok(store.dataframe_filtered(&["loss"], &last), "dataframe_filtered");
    assert_table(&df, &cols, &[whole[1].clone(), whole[3].clone(), whole[4].clone()], "epoch=last");
    let first = PivotFilter { runs: None, iters: iters(&["round=0"]) };
    let df = ok(store.dataframe_filtered(&["x"], &first), "dataframe_filtered");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "round", "x"],
        &[row(&x, vec![i(0), i(0)])],
        "round=0: no row's value differs from its index, so no column",
    );

    let df = ok(store.dataframe(&["loss"]), "dataframe");
    let batch = crate::arrow::into_record_batch(df).expect("a pivot converts to Arrow");
    let field = batch.schema().field(4).clone();
    assert_eq!(field.name(), "opt_value", "Arrow column");
    assert!(
        matches!(field.data_type(), arrow_schema::DataType::Dictionary(_, v) if **v == arrow_schema::DataType::Utf8),
        "opt_value is dictionary-encoded text, not {}",
        field.data_type()
    );
    assert_eq!(batch.column(4).null_count(), 1, "run W's row has no value");
}

/// Replayed values win over forward ones at the same position (whatever
/// their line numbers); replay-only names pivot like any other.
pub fn dataframe_replay(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    a.ingest(&mut *store);
    let mut r = Run::replay_of(&a);
    // Contexts of run A: epoch 0 = 0 (steps 1, 2), epoch 1 = 3 (steps 4, 5).
    r.log(Some(4), "loss", 99.0);
    r.log(Some(0), "wnorm", 0.1);
    r.log(Some(3), "wnorm", 0.2);
    assert!(r.records[0].line < a.records.last().map_or(0, |x| x.line));
    r.ingest_replay(&mut *store);

    let df = ok(store.dataframe(&["loss"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "step", "loss"],
        &[
            row(&a, vec![i(0), i(0), f(0.0)]),
            row(&a, vec![i(0), i(1), f(1.5)]),
            row(&a, vec![i(1), i(0), f(99.0)]),
            row(&a, vec![i(1), i(1), f(11.0)]),
        ],
        "replayed loss",
    );
    let df = ok(store.dataframe(&["wnorm"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "wnorm"],
        &[row(&a, vec![i(0), f(0.1)]), row(&a, vec![i(1), f(0.2)])],
        "replay-only name",
    );
    let df = ok(store.dataframe(&["loss", "wnorm"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "step", "loss", "wnorm"],
        &[
            row(&a, vec![i(0), i(0), f(0.0), f(0.1)]),
            row(&a, vec![i(0), i(1), f(1.5), f(0.1)]),
            row(&a, vec![i(1), i(0), f(99.0), f(0.2)]),
            row(&a, vec![i(1), i(1), f(11.0), f(0.2)]),
        ],
        "forward and replay names together",
    );
}

/// Run A's extraction file (`flor capture --extract`): `loss` where the
/// forward run logged one (ctx 1), `val` at epoch 0 (ctx 0) and at an
/// iteration of its own (`epoch 5`, printed outside the loop, declared
/// after the forward contexts), and a run-level `final`.
fn extraction_of(a: &Run) -> Run {
    let mut e = Run { next_ctx: a.next_ctx, ..Run::with_meta(a.meta.clone()) };
    let printed = e.iter(None, "epoch", 5);
    e.log(Some(1), "loss", 7.0);
    e.log(Some(0), "val", 0.5);
    e.log(Some(printed), "val", 0.75);
    e.log(None, "final", 9.0);
    e
}

/// Extracted values are columns like logged ones, at their positions and
/// at the iterations their file declares, and rank below both forward and
/// replayed values at the same position and name ([`Source::rank`]).
pub fn dataframe_extracted(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    a.ingest(&mut *store);
    let e = extraction_of(&a);
    ok(store.ingest(&e.batch(Source::Extract, "A.extract")), "ingest an extraction");
    let df = ok(store.dataframe(&["loss", "val"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "step", "loss", "val"],
        &[
            row(&a, vec![i(0), i(0), f(0.0), f(0.5)]),
            row(&a, vec![i(0), i(1), f(1.5), f(0.5)]),
            row(&a, vec![i(1), i(0), f(10.0), None]),
            row(&a, vec![i(1), i(1), f(11.0), None]),
            row(&a, vec![i(5), None, None, f(0.75)]),
        ],
        "a logged loss wins over the extracted one; val at epoch 0 and at the printed epoch 5",
    );
    let df = ok(store.dataframe(&["final"]), "dataframe");
    assert_table(&df, &["projid", "tstamp", "filename", "final"], &[row(&a, vec![f(9.0)])], "run-level extraction");
    // A replay of `val` at epoch 0 wins over the extracted value.
    let mut r = Run::replay_of(&a);
    r.log(Some(0), "val", 0.25);
    r.ingest_replay(&mut *store);
    let df = ok(store.dataframe(&["val"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "val"],
        &[row(&a, vec![i(0), f(0.25)]), row(&a, vec![i(5), f(0.75)])],
        "a replayed val wins over the extracted one",
    );
    // Ingesting the extraction again changes nothing.
    ok(store.ingest(&e.batch(Source::Extract, "A.extract")), "ingest an extraction again");
    assert_eq!(ok(store.dataframe(&["val"]), "dataframe").row_count(), 2, "no duplicates");
}

/// Sibling loops (`train` and `eval` inside `epoch`) give separate rows, with
/// NULL in the other loop's columns.
pub fn dataframe_sibling_loops(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut d = Run::new(T1);
    for e in 0..2u64 {
        let ec = d.iter(None, "epoch", e);
        for s in 0..2u64 {
            let tc = d.iter(Some(ec), "train", s);
            d.log(Some(tc), "loss", (e * 2 + s + 1) as f64);
        }
        let vc = d.iter(Some(ec), "eval", 0);
        d.log(Some(vc), "val_loss", 0.5 / (e + 1) as f64);
    }
    d.ingest(&mut *store);
    let df = ok(store.dataframe(&["loss", "val_loss"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "epoch", "train", "eval", "loss", "val_loss"],
        &[
            row(&d, vec![i(0), i(0), N, f(1.0), N]),
            row(&d, vec![i(0), i(1), N, f(2.0), N]),
            row(&d, vec![i(0), N, i(0), N, f(0.5)]),
            row(&d, vec![i(1), i(0), N, f(3.0), N]),
            row(&d, vec![i(1), i(1), N, f(4.0), N]),
            row(&d, vec![i(1), N, i(0), N, f(0.25)]),
        ],
        "sibling loops",
    );
}

/// With no names: one row per run (in `tstamp` order) with its run-level
/// values, columns by first appearance in the record file.
pub fn dataframe_without_names(make: &mut MakeStore<'_>) {
    let mut store = make();
    let (a, b, c) = (run_a(), run_b(), run_c());
    c.ingest(&mut *store);
    a.ingest(&mut *store);
    b.ingest(&mut *store);
    let empty = Run::new("2026-01-01T00:00:00.000004");
    empty.ingest(&mut *store);
    let df = ok(store.dataframe(&[]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "lr", "seed", "loss"],
        &[
            row(&a, vec![f(0.1), N, N]),
            row(&b, vec![f(0.2), N, f(5.0)]),
            row(&c, vec![N, i(7), N]),
            row(&empty, vec![N, N, N]),
        ],
        "dataframe()",
    );
}

/// `clear` removes every run and record; the store stays usable.
pub fn clear_empties(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    a.ingest(&mut *store);
    run_c().ingest(&mut *store);
    let file = format!("{T1}.forward");
    assert!(ok(store.file_progress(&file), "file_progress").is_some());
    ok(store.clear(), "clear");
    assert!(ok(store.runs(), "runs").is_empty());
    assert!(ok(store.names(), "names").is_empty());
    assert_eq!(ok(store.file_progress(&file), "file_progress"), None);
    assert_eq!(count_values(&*store, ValueFilter::RunLevel), 0);
    assert_eq!(count_values(&*store, ValueFilter::Names(&["loss"])), 0);
    assert_eq!(ok(store.dataframe(&[]), "dataframe").row_count(), 0);
    // Names are interned afresh: new names and old ones mix correctly.
    let mut b = run_b();
    b.log(None, "brand_new", 3);
    b.ingest(&mut *store);
    a.ingest(&mut *store);
    let df = ok(store.dataframe(&["brand_new", "lr"]), "dataframe");
    assert_table(
        &df,
        &["projid", "tstamp", "filename", "brand_new", "lr"],
        &[row(&a, vec![N, f(0.1)]), row(&b, vec![i(3), f(0.2)])],
        "after clear",
    );
    assert_eq!(ok(store.dataframe(&["loss"]), "dataframe").row_count(), 5);
}

/// `set_status` changes only status and end time; unknown runs report false.
pub fn set_status(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    a.ingest(&mut *store);
    let ended = "2026-01-01T03:00:00.000000";
    assert!(ok(store.set_status(PROJ, T1, RunStatus::Failed, Some(ended)), "set_status"));
    let runs = ok(store.runs(), "runs");
    let mut want = a.meta.clone();
    want.status = RunStatus::Failed;
    want.ended = Some(ended.into());
    assert_eq!(runs[0].meta, want);
    assert_eq!(runs[0].records, a.records.len() as u64);
    assert!(ok(store.set_status(PROJ, T1, RunStatus::Running, None), "set_status"));
    assert_eq!(ok(store.runs(), "runs")[0].meta, a.meta);
    assert!(!ok(store.set_status(PROJ, T2, RunStatus::Finished, Some(ended)), "set_status"));
    assert!(!ok(store.set_status("nope", T1, RunStatus::Finished, None), "set_status"));
}

/// Checkpoints come back per run, in file order.
pub fn checkpoints_roundtrip(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = Run::new(T1);
    let e0 = a.iter(None, "epoch", 0);
    a.ckpt(Some(e0), "model", DIGEST_A, 1 << 40);
    a.ckpt(Some(e0), "optimizer", DIGEST_B, 0);
    let e1 = a.iter(None, "epoch", 1);
    a.ckpt(Some(e1), "model", DIGEST_B, 77);
    a.ckpt(None, "final", DIGEST_A, 5);
    let ka = a.ingest(&mut *store);
    let kc = run_c().ingest(&mut *store);
    assert_eq!(ok(store.checkpoints(ka), "checkpoints"), a.checkpoints);
    assert!(ok(store.checkpoints(kc), "checkpoints").is_empty());
    a.ingest(&mut *store);
    assert_eq!(ok(store.checkpoints(ka), "checkpoints"), a.checkpoints, "no duplicates on re-ingest");
}

/// Replays' divergence checks come back from `checks` with their run and
/// replay number, once each however often they are ingested; `clear`
/// empties them.
pub fn checks_roundtrip(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    let ka = a.ingest(&mut *store);
    let r1 = Run::replay_n(&a, 1, &[(Some(0), "grad", 1.0)], 0);
    let r2 = Run::replay_n(&a, 2, &[(Some(0), "gnorm", 2.0)], 2);
    for r in [&r1, &r2, &r1] {
        ok(store.ingest(&r.batch(Source::Replay, &format!("replay-{}", r.checks[0].line))), "ingest a replay");
    }
    let got = ok(store.checks(), "checks");
    let want: Vec<(RunKey, u64, ReplayCheck)> = vec![(ka, 1, r1.checks[0].clone()), (ka, 2, r2.checks[0].clone())];
    let got: Vec<(RunKey, u64, ReplayCheck)> = got.into_iter().map(|c| (c.run, c.replay, c.check)).collect();
    assert_eq!(got, want);
    ok(store.clear(), "clear");
    assert!(ok(store.checks(), "checks").is_empty(), "clear empties the checks");
}

/// `names` lists log/arg names, sorted, with their kind and count.
pub fn names_listing(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = run_a();
    a.rec(RecordKind::Timing, Some(0), "iteration", 0.1);
    a.rec(RecordKind::Output, None, "stdout", "x");
    a.log(None, "lr", 0.2); // an arg name also logged: its first kind wins
    a.ingest(&mut *store);
    run_b().ingest(&mut *store);
    let names = ok(store.names(), "names");
    let got: Vec<(&str, &str, u64)> = names.iter().map(|n| (n.name.as_str(), n.kind.as_str(), n.count)).collect();
    assert_eq!(got, vec![("acc", "log", 2), ("loss", "log", 6), ("lr", "arg", 3)]);
}

/// The ingestion steps the group checks share: run A, a replay of it, run B.
struct GroupFixture {
    a: Run,
    replay: Run,
    b: Run,
    files: [String; 3],
}

impl GroupFixture {
    fn new() -> GroupFixture {
        let (a, b) = (run_a(), run_b());
        let mut replay = Run::replay_of(&a);
        replay.log(Some(0), "loss", 0.125);
        let files = [
            format!("{}.forward", a.meta.tstamp),
            format!("{}.replay", a.meta.tstamp),
            format!("{}.forward", b.meta.tstamp),
        ];
        GroupFixture { a, replay, b, files }
    }

    fn steps(&self) -> [IngestBatch<'_>; 3] {
        [
            self.a.batch(Source::Forward, &self.files[0]),
            self.replay.batch(Source::Replay, &self.files[1]),
            self.b.batch(Source::Forward, &self.files[2]),
        ]
    }
}

/// Two fresh stores: one that ingested `steps` one by one, one that
/// ingested them in one committed group (file progress checked inside it).
fn ingest_alone_and_grouped(make: &mut MakeStore<'_>, steps: &[IngestBatch<'_>]) -> (Box<dyn Store>, Box<dyn Store>) {
    let mut one = make();
    for s in steps {
        ok(one.ingest(s), "ingest");
    }
    let mut grouped = make();
    ok(grouped.begin_group(), "begin a group");
    for s in steps {
        ok(grouped.ingest(s), "ingest in a group");
        assert_eq!(ok(grouped.file_progress(s.file), "progress in a group"), Some(s.progress), "{}", s.file);
    }
    ok(grouped.end_group(true), "commit a group");
    (one, grouped)
}

/// Steps ingested in a group give the same store as the same steps one by
/// one; inside a group, file progress follows the steps; a discarded group
/// leaves each file either fully stored with its progress or absent with
/// none (backends without groups store every step at once).
pub fn ingestion_groups(make: &mut MakeStore<'_>) {
    let c = run_c();
    let fx = GroupFixture::new();
    let steps = fx.steps();
    let (one, mut grouped) = ingest_alone_and_grouped(make, &steps);
    assert_eq!(ok(grouped.runs(), "runs"), ok(one.runs(), "runs"), "runs after a group");
    assert_eq!(ok(grouped.names(), "names"), ok(one.names(), "names"), "names after a group");
    let names = ["loss", "acc", "lr"];
    assert_tables_equal(
        &ok(grouped.dataframe(&names), "dataframe"),
        &ok(one.dataframe(&names), "dataframe"),
        "dataframe after a group",
    );
    for s in &steps {
        assert_eq!(ok(grouped.file_progress(s.file), "progress"), Some(s.progress), "{}", s.file);
    }

    // A discarded group: all or nothing per file, and the store goes on.
    let fc = format!("{}.forward", c.meta.tstamp);
    ok(grouped.begin_group(), "begin a group");
    ok(grouped.ingest(&c.batch(Source::Forward, &fc)), "ingest in a group");
    ok(grouped.end_group(false), "discard a group");
    let stored = ok(grouped.runs(), "runs").iter().any(|r| r.meta.tstamp == c.meta.tstamp);
    assert_eq!(ok(grouped.file_progress(&fc), "progress").is_some(), stored, "progress and records agree");
    ok(grouped.ingest(&c.batch(Source::Forward, &fc)), "ingest after a discarded group");
    assert_eq!(ok(grouped.runs(), "runs").len(), 3);
    assert_eq!(ok(grouped.end_group(true), "end without a group"), ());
}

// ------------------------------------------------------------- SQL checks

/// The `loops` view lists every loop context once, with its parent,
/// iteration and value, whatever the batches; filters on `tstamp` and
/// joins with `logs` work as on any table.
pub fn loops_view(make: &mut MakeStore<'_>) {
    let mut store = make();
    let d = run_d();
    let file = format!("{T1}.forward");
    for w in [0, 7, 8, 150, d.loops.len()].windows(2) {
        ok(store.ingest(&loops_batch(&d, Source::Forward, &file, &d.loops[w[0]..w[1]])), "ingest a span");
    }
    ok(store.ingest(&IngestBatch { loops: &[], ..d.batch(Source::Forward, &file) }), "ingest the records");
    ok(store.ingest(&loops_batch(&d, Source::Replay, &format!("{T1}.replay"), &d.loops[5..20])), "ingest a replay");
    let a = Run { meta: meta(T2), ..run_a() };
    a.ingest(&mut *store);

    let expected = |run: &Run| -> Vec<Vec<Option<Value>>> {
        run.loops
            .iter()
            .map(|l| {
                vec![
                    t(&run.meta.tstamp),
                    i(i64::from(l.ctx)),
                    l.parent.map_or(N, |p| i(i64::from(p))),
                    t(&l.name),
                    i(l.iteration as i64),
                    l.value.as_deref().map_or(N, t),
                ]
            })
            .collect()
    };
    let cols = ["tstamp", "ctx_id", "parent_ctx_id", "loop_name", "loop_iteration", "loop_value"];
    let select = "SELECT tstamp, ctx_id, parent_ctx_id, loop_name, loop_iteration, loop_value FROM loops";
    let mut all = expected(&d);
    all.extend(expected(&a));
    let tb = ok(store.query(&format!("{select} ORDER BY tstamp, ctx_id")), "query");
    assert_table(&tb, &cols, &all, "loops view");
    let tb = ok(store.query(&format!("{select} WHERE tstamp = '{T2}' ORDER BY ctx_id")), "query");
    assert_table(&tb, &cols, &expected(&a), "loops view of one run");
    let tb = ok(store.query(&format!("{select} WHERE tstamp = '{T1}' AND ctx_id = 11")), "query");
    assert_table(&tb, &cols, &expected(&d)[11..12], "one context");
    let tb = ok(store.query("SELECT count(*) AS n FROM loops"), "query");
    assert_table(&tb, &["n"], &[vec![i(all.len() as i64)]], "count(*) FROM loops");
    let tb = ok(store.query(&format!("{select} WHERE parent_ctx_id = 8 AND tstamp = '{T1}' ORDER BY ctx_id")), "query");
    assert_table(&tb, &cols, &expected(&d)[9..16], "children of one context");
    let tb = ok(store.query(&format!("{select} WHERE loop_value = 'valid' ORDER BY tstamp, ctx_id")), "query");
    let valid: Vec<_> = expected(&d).into_iter().filter(|r| r[5] == t("valid")).collect();
    assert_eq!(valid.len(), 3);
    assert_table(&tb, &cols, &valid, "contexts by value");
    let tb = ok(
        store.query("SELECT tstamp, ctx_id, count(*) AS n FROM loops GROUP BY tstamp, ctx_id HAVING count(*) > 1"),
        "query",
    );
    assert_table(&tb, &["tstamp", "ctx_id", "n"], &[], "no context listed twice");
    let tb = ok(
        store.query(&format!(
            "SELECT l.loop_iteration AS it, p.loop_iteration AS epoch, g.value FROM logs g \
             JOIN loops l ON l.tstamp = g.tstamp AND l.ctx_id = g.ctx_id \
             JOIN loops p ON p.tstamp = l.tstamp AND p.ctx_id = l.parent_ctx_id \
             WHERE g.value_name = 'loss' AND g.tstamp = '{T1}' AND l.loop_name = 'step' \
             AND p.loop_iteration = 2 ORDER BY l.loop_iteration"
        )),
        "query",
    );
    assert_table(
        &tb,
        &["it", "epoch", "value"],
        &(0..5).map(|s| vec![i(s), i(2), f((10 + s) as f64)]).collect::<Vec<_>>(),
        "logs joined with loops",
    );
}

/// The SQL views: their columns, and their rows for a known run.
pub fn query_views(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = Run::new(T1);
    a.meta.commit = Some("c".repeat(40));
    a.arg("lr", 0.1);
    a.arg("optimizer", "adam");
    a.arg("epochs", 10);
    let ec = a.iter_value(None, "epoch", 0, Some("first"));
    let sc = a.iter(Some(ec), "step", 1);
    a.log(Some(sc), "loss", 0.75);
    a.rec(RecordKind::Timing, Some(sc), "iteration", 0.25);
    a.rec(RecordKind::Output, None, "stdout", "hello\n");
    a.ckpt(Some(ec), "model", DIGEST_A, 123);
    a.ingest(&mut *store);
    let mut r = Run::replay_of(&a);
    r.log(Some(ec), "grad", 2.0);
    r.ingest_replay(&mut *store);

    let q = |sql: &str| ok(store.query(sql), sql);
    let views: [(&str, &[&str]); 6] = [
        ("runs", &["projid", "tstamp", "filename", "status", "commit_sha", "host", "argv", "ended"]),
        (
            "logs",
            &[
                "projid",
                "tstamp",
                "filename",
                "ctx_id",
                "value_name",
                "value",
                "value_type",
                "kind",
                "source",
                "diverged",
            ],
        ),
        (
            "loops",
            &["projid", "tstamp", "filename", "ctx_id", "parent_ctx_id", "loop_name", "loop_iteration", "loop_value"],
        ),
        ("timings", &["projid", "tstamp", "filename", "ctx_id", "name", "seconds"]),
        ("outputs", &["projid", "tstamp", "filename", "ctx_id", "name", "value"]),
        ("checkpoints", &["projid", "tstamp", "filename", "ctx_id", "name", "digest", "bytes", "format"]),
    ];
    for (view, cols) in views {
        let tb = q(&format!("SELECT * FROM {view}"));
        assert_eq!(tb.column_names(), cols, "columns of view {view}");
        assert!(tb.row_count() > 0, "view {view} has rows");
    }

    let tb = q("SELECT projid, tstamp, filename, status, commit_sha, host, argv, ended FROM runs");
    assert_eq!(tb.row_count(), 1);
    let cells = &tb.rows()[0];
    assert_eq!(&cells[..6], &row(&a, vec![t("running"), t(&"c".repeat(40)), t("host-1")])[..]);
    let argv = match &cells[6] {
        Some(Value::Text(s)) => serde_json::from_str::<Vec<String>>(s).expect("argv is a JSON array of strings"),
        other => panic!("argv: {other:?}"),
    };
    assert_eq!(argv, a.meta.argv);
    assert_eq!(cells[7], None);

    let tb = q("SELECT value_name, value, value_type, kind, source, ctx_id FROM logs ORDER BY value_name");
    assert_table(
        &tb,
        &["value_name", "value", "value_type", "kind", "source", "ctx_id"],
        &[
            vec![t("epochs"), i(10), t("int"), t("arg"), t("forward"), N],
            vec![t("grad"), f(2.0), t("float"), t("log"), t("replay"), i(ec as i64)],
            vec![t("loss"), f(0.75), t("float"), t("log"), t("forward"), i(sc as i64)],
            vec![t("lr"), f(0.1), t("float"), t("arg"), t("forward"), N],
            vec![t("optimizer"), t("adam"), t("text"), t("arg"), t("forward"), N],
        ],
        "logs view",
    );

    let tb = q("SELECT ctx_id, parent_ctx_id, loop_name, loop_iteration, loop_value FROM loops ORDER BY ctx_id");
    assert_table(
        &tb,
        &["ctx_id", "parent_ctx_id", "loop_name", "loop_iteration", "loop_value"],
        &[vec![i(0), N, t("epoch"), i(0), t("first")], vec![i(1), i(0), t("step"), i(1), N]],
        "loops view",
    );

    let tb = q("SELECT ctx_id, name, seconds FROM timings");
    assert_table(&tb, &["ctx_id", "name", "seconds"], &[vec![i(sc as i64), t("iteration"), f(0.25)]], "timings view");

    let tb = q("SELECT ctx_id, name, value FROM outputs");
    assert_table(&tb, &["ctx_id", "name", "value"], &[vec![N, t("stdout"), t("hello\n")]], "outputs view");

    let tb = q("SELECT projid, tstamp, filename, ctx_id, name, digest, bytes, format FROM checkpoints");
    assert_table(
        &tb,
        &["projid", "tstamp", "filename", "ctx_id", "name", "digest", "bytes", "format"],
        &[row(&a, vec![i(0), t("model"), t(DIGEST_A), i(123), t("bincode")])],
        "checkpoints view",
    );

    let tb = q("SELECT 1 AS a, 'x' AS b, NULL AS c, 2.5 AS d");
    assert_table(&tb, &["a", "b", "c", "d"], &[vec![i(1), t("x"), N, f(2.5)]], "constant query");
    let tb = q("WITH s AS (SELECT value_name FROM logs WHERE kind = 'arg') SELECT count(*) AS n FROM s");
    assert_table(&tb, &["n"], &[vec![i(3)]], "WITH query");
    let tb = q("SELECT value_name FROM logs WHERE value_name = 'nothing'");
    assert_table(&tb, &["value_name"], &[], "empty result keeps its columns");
    // A trailing semicolon and comments are fine.
    let tb = q("-- count\nSELECT count(*) AS n FROM loops; /* done */");
    assert_table(&tb, &["n"], &[vec![i(2)]], "trailing semicolon");
}

/// Writes of any kind are refused with `NotReadOnly`, and change nothing.
pub fn query_rejects_writes(make: &mut MakeStore<'_>) {
    let mut store = make();
    run_a().ingest(&mut *store);
    let writes = [
        "DELETE FROM runs",
        "  /* sneaky */ delete from logs",
        "INSERT INTO runs (projid, tstamp) VALUES ('x', 'y')",
        "UPDATE runs SET status = 'failed'",
        "DROP VIEW logs",
        "DROP TABLE runs",
        "CREATE TABLE t (x INTEGER)",
        "CREATE VIEW v AS SELECT 1",
        "ALTER TABLE runs RENAME TO r",
        "ATTACH DATABASE ':memory:' AS other",
        "DETACH DATABASE other",
        "PRAGMA writable_schema = 1",
        "BEGIN",
        "VACUUM",
    ];
    for sql in writes {
        match store.query(sql) {
            Err(StoreError::NotReadOnly { sql: s }) => assert_eq!(s, sql),
            other => panic!("{sql:?}: expected NotReadOnly, got {other:?}"),
        }
    }
    assert_eq!(ok(store.runs(), "runs").len(), 1);
    assert_eq!(ok(store.query("SELECT count(*) AS n FROM logs"), "query").rows(), vec![vec![i(8)]]);
    assert_eq!(ok(store.dataframe(&["loss"]), "dataframe").row_count(), 4);
}

/// Engine errors are `Query` errors with the engine's message; a second
/// statement is refused.
pub fn query_errors(make: &mut MakeStore<'_>) {
    let mut store = make();
    run_a().ingest(&mut *store);
    for sql in ["SELEC 1", "SELECT * FROM no_such_table", "SELECT no_such_column FROM runs", ""] {
        match store.query(sql) {
            Err(StoreError::Query { message, .. }) => assert!(!message.is_empty(), "{sql:?}: empty message"),
            other => panic!("{sql:?}: expected a Query error, got {other:?}"),
        }
    }
    match store.query("SELECT * FROM no_such_table") {
        Err(StoreError::Query { message, .. }) => {
            assert!(message.contains("no_such_table"), "the engine's message names the table: {message}")
        }
        other => panic!("expected a Query error, got {other:?}"),
    }
    for sql in ["SELECT 1; SELECT 2", "SELECT 1; DELETE FROM runs"] {
        match store.query(sql) {
            Err(StoreError::Query { .. } | StoreError::NotReadOnly { .. }) => {}
            other => panic!("{sql:?}: expected a refusal, got {other:?}"),
        }
    }
    assert!(matches!(store.query("SELECT 1; SELECT 2"), Err(StoreError::Query { .. })));
    assert_eq!(ok(store.runs(), "runs").len(), 1);
}

/// A user query that runs past its time limit is stopped with
/// `TimedOut`, and the store answers the next queries (with or without a
/// limit) as before. (A store that forwards `query` to another must
/// forward `query_within` too: the trait's default has no limit.)
pub fn query_time_limit(make: &mut MakeStore<'_>) {
    let mut store = make();
    run_a().ingest(&mut *store);
    let limit = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    // Endless, then long but finite (8e9 rows: seconds to minutes; a store
    // that ignored the limit fails here instead of hanging).
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c";
    let long = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) \
                SELECT sum(a.x * b.x + d.x) AS n FROM c a, c b, c d";
    match store.query_within(long, Some(limit)) {
        Err(StoreError::TimedOut { limit: l, .. }) => assert_eq!(l, limit),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    match store.query_within(endless, Some(limit)) {
        Err(StoreError::TimedOut { limit: l, .. }) => assert_eq!(l, limit),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(20), "stopped after {took:?}");
    let count = "SELECT count(*) AS n FROM logs";
    let want = ok(store.query(count), "query after a time-out");
    assert_eq!(want.rows(), vec![vec![i(8)]]);
    let within = ok(store.query_within(count, Some(std::time::Duration::from_secs(60))), "query_within");
    assert_eq!(within.rows(), want.rows());
    assert_eq!(ok(store.query_within(count, None), "query_within, no limit").rows(), want.rows());
    assert_eq!(ok(store.runs(), "runs").len(), 1);
}

// The parts of the core checks that read through the views.

/// Row counts of every view, in `VIEWS` order.
fn view_counts(store: &dyn Store) -> Vec<Vec<Option<Value>>> {
    VIEWS.iter().map(|v| ok(store.query(&format!("SELECT count(*) AS n FROM {v}")), "query").rows().remove(0)).collect()
}

/// The views every SQL backend provides.
const VIEWS: [&str; 7] = ["runs", "logs", "loops", "timings", "outputs", "checkpoints", "replay_checks"];

/// The `logs` view's `diverged` column: 1 on the values of a replay whose
/// check found a difference, 0 on forward values and on the values of a
/// replay that checked out; `replay_checks` lists the checks.
pub fn diverged_flag(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    a.ingest(&mut *store);
    let r1 = Run::replay_n(&a, 1, &[(Some(0), "grad", 1.0), (Some(1), "grad", 1.5)], 0);
    let r2 = Run::replay_n(&a, 2, &[(Some(0), "gnorm", 2.0)], 2);
    ok(store.ingest(&r1.batch(Source::Replay, "r1")), "ingest replay 1");
    ok(store.ingest(&r2.batch(Source::Replay, "r2")), "ingest replay 2");
    let tb = ok(
        store.query(
            "SELECT value_name, source, diverged, count(*) AS n FROM logs \
             GROUP BY value_name, source, diverged ORDER BY value_name, source",
        ),
        "query",
    );
    let loss_rows = run_a().records.iter().filter(|r| &*r.name == "loss").count() as i64;
    assert_table(
        &tb,
        &["value_name", "source", "diverged", "n"],
        &[
            vec![t("acc"), t("forward"), i(0), i(2)],
            vec![t("gnorm"), t("replay"), i(1), i(1)],
            vec![t("grad"), t("replay"), i(0), i(2)],
            vec![t("loss"), t("forward"), i(0), i(loss_rows)],
            vec![t("lr"), t("forward"), i(0), i(1)],
        ],
        "logs.diverged",
    );
    let tb = ok(store.query("SELECT tstamp, replay, compared, differing FROM replay_checks ORDER BY replay"), "query");
    assert_table(
        &tb,
        &["tstamp", "replay", "compared", "differing"],
        &[vec![t(T1), i(1), i(3), i(0)], vec![t(T1), i(2), i(3), i(2)]],
        "replay_checks",
    );
}

/// The `logs` view names extracted values' source `extract`, and never
/// flags them diverged.
pub fn extracted_source(make: &mut MakeStore<'_>) {
    let mut store = make();
    let a = run_a();
    a.ingest(&mut *store);
    ok(store.ingest(&extraction_of(&a).batch(Source::Extract, "A.extract")), "ingest an extraction");
    let tb = ok(
        store.query(
            "SELECT value_name, source, diverged, count(*) AS n FROM logs WHERE source <> 'forward' \
             GROUP BY value_name, source, diverged ORDER BY value_name",
        ),
        "query",
    );
    assert_table(
        &tb,
        &["value_name", "source", "diverged", "n"],
        &[
            vec![t("final"), t("extract"), i(0), i(1)],
            vec![t("loss"), t("extract"), i(0), i(1)],
            vec![t("val"), t("extract"), i(0), i(2)],
        ],
        "logs.source",
    );
    let tb = ok(store.query("SELECT loop_name, loop_iteration FROM loops WHERE loop_iteration = 5"), "query");
    assert_table(&tb, &["loop_name", "loop_iteration"], &[vec![t("epoch"), i(5)]], "the declared iteration");
}

/// Ingesting the same span twice adds no row to any view.
pub fn views_after_reingest(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = run_a();
    a.rec(RecordKind::Timing, Some(0), "iteration", 0.25);
    a.rec(RecordKind::Output, None, "stdout", "hi\n");
    a.ckpt(Some(0), "model", DIGEST_A, 100);
    a.ingest(&mut *store);
    let before = view_counts(&*store);
    assert_eq!(before, [1, 8, 6, 1, 1, 1, 0].map(|n| vec![i(n)]), "rows per view ({VIEWS:?})");
    a.ingest(&mut *store);
    assert_eq!(view_counts(&*store), before, "rows per view after re-ingest ({VIEWS:?})");
}

/// `clear` empties every view; the views work on what is ingested next.
pub fn views_after_clear(make: &mut MakeStore<'_>) {
    let mut store = make();
    let mut a = run_a();
    a.rec(RecordKind::Timing, Some(0), "iteration", 0.25);
    a.ckpt(Some(0), "model", DIGEST_A, 100);
    a.ingest(&mut *store);
    run_c().ingest(&mut *store);
    ok(store.clear(), "clear");
    for (view, n) in VIEWS.iter().zip(view_counts(&*store)) {
        assert_eq!(n, vec![i(0)], "{view} after clear");
    }
    run_b().ingest(&mut *store);
    let tb = ok(store.query("SELECT value_name, value FROM logs ORDER BY value_name"), "query");
    assert_table(&tb, &["value_name", "value"], &[vec![t("loss"), f(5.0)], vec![t("lr"), f(0.2)]], "after clear");
}

/// The `runs` view shows what `set_status` stored.
pub fn runs_view_status(make: &mut MakeStore<'_>) {
    let mut store = make();
    run_a().ingest(&mut *store);
    let q = "SELECT status, ended FROM runs";
    assert_table(&ok(store.query(q), q), &["status", "ended"], &[vec![t("running"), N]], "before");
    let ended = "2026-01-01T03:00:00.000000";
    ok(store.set_status(PROJ, T1, RunStatus::Failed, Some(ended)), "set_status");
    assert_table(&ok(store.query(q), q), &["status", "ended"], &[vec![t("failed"), t(ended)]], "failed");
    ok(store.set_status(PROJ, T1, RunStatus::Finished, Some(ended)), "set_status");
    assert_table(&ok(store.query(q), q), &["status", "ended"], &[vec![t("finished"), t(ended)]], "finished");
}

/// Steps ingested in a group give the same views as the same steps one by
/// one.
pub fn views_after_group(make: &mut MakeStore<'_>) {
    let fx = GroupFixture::new();
    let (one, grouped) = ingest_alone_and_grouped(make, &fx.steps());
    assert_eq!(view_counts(&*grouped), view_counts(&*one), "rows per view ({VIEWS:?})");
    let q = "SELECT tstamp, ctx_id, value_name, value, source FROM logs ORDER BY tstamp, source, ctx_id, value_name";
    assert_tables_equal(&ok(grouped.query(q), q), &ok(one.query(q), q), "logs after a group");
}

// --------------------------------------------------------- tensor checks

/// A tensor row with distinct, bit-exact statistics (`k` varies them).
fn tensor_row(name: &str, k: f64, delta: Option<f64>) -> TensorRow {
    TensorRow {
        tensor: name.into(),
        dtype: "f32".into(),
        shape: vec![3, 4],
        bytes: 48,
        l2: Some(1.25 * k),
        mean: Some(-0.1 * k),
        std: Some(std::f64::consts::PI * k),
        min: Some(-1e-300),
        max: Some(f64::MAX / k),
        nonfinite: Some(k as u64),
        delta_l2: delta,
    }
}

/// A run (A: finished) checkpointing `model` at the end of two epochs and
/// `opt` at the end of the first, logging `loss` per step and `acc` per
/// epoch; its checkpoints' lines.
fn tensor_run() -> (Run, Vec<u64>) {
    let mut a = Run::new(T1);
    a.meta.status = RunStatus::Finished;
    a.arg("lr", 0.1);
    let mut lines = Vec::new();
    for e in 0..2u64 {
        let ec = a.iter(None, "epoch", e);
        for s in 0..2u64 {
            let sc = a.iter(Some(ec), "step", s);
            a.log(Some(sc), "loss", (e * 10 + s) as f64);
        }
        a.log(Some(ec), "acc", 0.5 + e as f64);
        a.ckpt(Some(ec), "model", if e == 0 { DIGEST_A } else { DIGEST_B }, 100);
        lines.push(a.line);
        if e == 0 {
            a.ckpt(Some(ec), "opt", DIGEST_B, 10);
            lines.push(a.line);
        }
    }
    (a, lines)
}

fn queued(store: &dyn Store, limit: usize) -> Vec<(RunKey, String, u64, String)> {
    ok(store.tensor_queue(limit), "tensor_queue")
        .into_iter()
        .map(|q| (q.run, q.tstamp, q.checkpoint.line, q.checkpoint.name))
        .collect()
}

fn scanned(store: &dyn Store, filter: TensorFilter<'_>) -> Vec<(RunKey, Option<u32>, u64, String, TensorRow)> {
    let mut out = Vec::new();
    ok(
        store.scan_tensors(filter, &mut |v| {
            out.push((v.run, v.ctx, v.line, v.checkpoint.to_owned(), v.row.clone()));
        }),
        "scan_tensors",
    );
    out.sort_by(|a, b| (a.0, a.2, &a.4.tensor).cmp(&(b.0, b.2, &b.4.tensor)));
    out
}

fn same_tensor(a: &TensorRow, b: &TensorRow) -> bool {
    let bits = |x: &Option<f64>| x.map(f64::to_bits);
    a.tensor == b.tensor
        && a.dtype == b.dtype
        && a.shape == b.shape
        && a.bytes == b.bytes
        && [a.l2, a.mean, a.std, a.min, a.max, a.delta_l2].iter().map(bits).eq([
            b.l2, b.mean, b.std, b.min, b.max, b.delta_l2,
        ]
        .iter()
        .map(bits))
        && a.nonfinite == b.nonfinite
}

/// The queue of checkpoints waiting for their tensors: forward checkpoints
/// of runs no longer recording, by run and line, up to a limit; once each
/// however often they are ingested; off the queue once their tensors are
/// stored (none is fine); all back on it after `requeue_tensors`; emptied
/// by `clear`.
pub fn tensors_queue(make: &mut MakeStore<'_>) {
    let mut store = make();
    let (a, lines) = tensor_run();
    let ka = a.ingest(&mut *store);
    a.ingest(&mut *store);
    let mut b = Run::new(T2);
    let eb = b.iter(None, "epoch", 0);
    b.ckpt(Some(eb), "model", DIGEST_A, 100);
    let kb = b.ingest(&mut *store);
    // A replay's checkpoints are never queued.
    let mut r = Run::replay_of(&a);
    r.ckpt(Some(0), "model", DIGEST_A, 100);
    r.ingest_replay(&mut *store);

    let want_a: Vec<_> =
        lines.iter().zip(["model", "opt", "model"]).map(|(l, n)| (ka, T1.to_owned(), *l, n.to_owned())).collect();
    assert_eq!(queued(&*store, 100), want_a, "a running run's checkpoints wait; once each");
    assert_eq!(queued(&*store, 2), want_a[..2], "at most the limit");
    ok(store.ingest_tensors(ka, lines[0], &[tensor_row("w", 1.0, None)]), "ingest_tensors");
    ok(store.ingest_tensors(ka, lines[1], &[]), "ingest_tensors (none)");
    assert_eq!(queued(&*store, 100), want_a[2..], "stored: off the queue");

    assert!(ok(store.set_status(PROJ, T2, RunStatus::Finished, Some("end")), "set_status"));
    let mut want = want_a[2..].to_vec();
    want.push((kb, T2.to_owned(), b.checkpoints[0].line, "model".to_owned()));
    assert_eq!(queued(&*store, 100), want, "finished: its checkpoints come");

    ok(store.requeue_tensors(), "requeue_tensors");
    let mut all = want_a.clone();
    all.push(want[1].clone());
    assert_eq!(queued(&*store, 100), all, "every forward checkpoint again");
    assert_eq!(scanned(&*store, TensorFilter::All).len(), 1, "stored tensors stay");

    ok(store.clear(), "clear");
    assert!(queued(&*store, 100).is_empty());
    assert!(scanned(&*store, TensorFilter::All).is_empty());
}

/// Tensor rows come back bit for bit with their run, the checkpoint's loop
/// context, line and name; storing a checkpoint's tensors again replaces
/// them; a filter selects by checkpoint and tensor name.
pub fn tensors_roundtrip(make: &mut MakeStore<'_>) {
    let mut store = make();
    let (a, lines) = tensor_run();
    let ka = a.ingest(&mut *store);
    let first = [tensor_row("fc.weight", 1.0, None), tensor_row("fc.bias", 2.0, None)];
    let opt = [TensorRow { shape: vec![], dtype: "i64".into(), bytes: 8, ..TensorRow::default() }];
    let second = [tensor_row("fc.weight", 3.0, Some(0.5)), tensor_row("fc.bias", 4.0, Some(0.0))];
    ok(store.ingest_tensors(ka, lines[0], &[tensor_row("stale", 9.0, None)]), "ingest_tensors");
    ok(store.ingest_tensors(ka, lines[0], &first), "ingest_tensors again");
    ok(store.ingest_tensors(ka, lines[1], &opt), "ingest_tensors");
    ok(store.ingest_tensors(ka, lines[2], &second), "ingest_tensors");

    let got = scanned(&*store, TensorFilter::All);
    let mut want: Vec<(RunKey, Option<u32>, u64, &str, &TensorRow)> = Vec::new();
    let ctx = |line: u64| a.checkpoints.iter().find(|c| c.line == line).and_then(|c| c.ctx);
    for (line, name, rows) in [(lines[0], "model", &first[..]), (lines[1], "opt", &opt), (lines[2], "model", &second)] {
        for r in rows {
            want.push((ka, ctx(line), line, name, r));
        }
    }
    want.sort_by(|x, y| (x.2, &x.4.tensor).cmp(&(y.2, &y.4.tensor)));
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1, g.2, g.3.as_str()), (w.0, w.1, w.2, w.3), "{g:?}");
        assert!(same_tensor(&g.4, w.4), "{:?} vs {:?}", g.4, w.4);
    }
    let only = scanned(&*store, TensorFilter::Named(&[("model", "fc.bias"), ("opt", "nothing")]));
    assert_eq!(
        only.iter().map(|g| (g.2, g.4.tensor.as_str())).collect::<Vec<_>>(),
        [(lines[0], "fc.bias"), (lines[2], "fc.bias")]
    );
    assert!(scanned(&*store, TensorFilter::Named(&[])).is_empty());
}

/// `tensor:<checkpoint>.<tensor>:<stat>` names in the pivot: each
/// statistic at its checkpoint's loop position (so repeated on the inner
/// loop's rows like a value logged per epoch), next to ordinary names;
/// `nonfinite` as an integer; a statistic that is `None` is no value.
pub fn tensors_dataframe(make: &mut MakeStore<'_>) {
    let mut store = make();
    let (a, lines) = tensor_run();
    let ka = a.ingest(&mut *store);
    run_c().ingest(&mut *store);
    ok(store.ingest_tensors(ka, lines[0], &[tensor_row("fc.weight", 1.0, None)]), "ingest_tensors");
    ok(store.ingest_tensors(ka, lines[1], &[tensor_row("fc.weight", 7.0, None)]), "ingest_tensors");
    ok(store.ingest_tensors(ka, lines[2], &[tensor_row("fc.weight", 2.0, Some(0.25))]), "ingest_tensors");

    let names =
        ["tensor:model.fc.weight:l2", "acc", "tensor:model.fc.weight:delta_l2", "tensor:model.fc.weight:nonfinite"];
    let tb = ok(store.dataframe(&names), "dataframe");
    let mut cols = vec!["projid", "tstamp", "filename", "epoch"];
    cols.extend(names);
    let rows = vec![row(&a, vec![i(0), f(1.25), f(0.5), N, i(1)]), row(&a, vec![i(1), f(2.5), f(1.5), f(0.25), i(2)])];
    assert_table(&tb, &cols, &rows, "tensor statistics per epoch");

    let tb = ok(store.dataframe(&["loss", "tensor:model.fc.weight:mean"]), "dataframe");
    let rows = vec![
        row(&a, vec![i(0), i(0), f(0.0), f(-0.1)]),
        row(&a, vec![i(0), i(1), f(1.0), f(-0.1)]),
        row(&a, vec![i(1), i(0), f(10.0), f(-0.2)]),
        row(&a, vec![i(1), i(1), f(11.0), f(-0.2)]),
    ];
    assert_table(
        &tb,
        &["projid", "tstamp", "filename", "epoch", "step", "loss", "tensor:model.fc.weight:mean"],
        &rows,
        "repeated on every step",
    );
    let tb = ok(store.dataframe(&["tensor:opt.fc.weight:l2", "tensor:model.nothing:l2"]), "dataframe");
    let rows = vec![row(&a, vec![i(0), f(8.75), N])];
    assert_table(
        &tb,
        &["projid", "tstamp", "filename", "epoch", "tensor:opt.fc.weight:l2", "tensor:model.nothing:l2"],
        &rows,
        "another checkpoint; an unknown tensor",
    );
}

/// The `tensors` view: one row per stored tensor with its run's identity,
/// the checkpoint's context and name, and every statistic (NULL where
/// there is none).
pub fn tensors_view(make: &mut MakeStore<'_>) {
    let mut store = make();
    let (a, lines) = tensor_run();
    let ka = a.ingest(&mut *store);
    ok(store.ingest_tensors(ka, lines[0], &[tensor_row("fc.weight", 1.0, None)]), "ingest_tensors");
    let mut odd = tensor_row("fc.weight", 2.0, Some(0.5));
    odd.mean = None;
    ok(store.ingest_tensors(ka, lines[2], &[odd]), "ingest_tensors");
    let sql = "SELECT projid, tstamp, filename, ctx_id, checkpoint, tensor, dtype, shape, bytes, l2, mean, std, \
               min, max, nonfinite, delta_l2 FROM tensors ORDER BY ctx_id";
    let tb = ok(store.query(sql), sql);
    let cols = [
        "projid",
        "tstamp",
        "filename",
        "ctx_id",
        "checkpoint",
        "tensor",
        "dtype",
        "shape",
        "bytes",
        "l2",
        "mean",
        "std",
        "min",
        "max",
        "nonfinite",
        "delta_l2",
    ];
    let cell = |r: &TensorRow| {
        vec![
            t(&r.tensor),
            t(&r.dtype),
            t("[3,4]"),
            i(48),
            r.l2.and_then(f),
            r.mean.and_then(f),
            r.std.and_then(f),
            r.min.and_then(f),
            r.max.and_then(f),
            r.nonfinite.map(|n| Value::Int(n as i64)),
            r.delta_l2.and_then(f),
        ]
    };
    let ctx = |k: usize| a.checkpoints.iter().find(|c| c.line == lines[k]).and_then(|c| c.ctx).map(i64::from);
    let mut r0 = vec![ctx(0).and_then(i), t("model")];
    r0.extend(cell(&tensor_row("fc.weight", 1.0, None)));
    let mut r1 = vec![ctx(2).and_then(i), t("model")];
    let mut odd = tensor_row("fc.weight", 2.0, Some(0.5));
    odd.mean = None;
    r1.extend(cell(&odd));
    assert_table(&tb, &cols, &[row(&a, r0), row(&a, r1)], "the tensors view");
}
