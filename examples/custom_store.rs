//! A query store of your own: a guide for tool builders.
//!
//! flor keeps every run's records in git; the query database is a cache
//! that [`Project::sync`] fills through the [`Store`] trait (re-exported
//! from `flor_core` as `flor::core::store::Store`). flor ships SQLite and
//! DuckDB stores; this example is a third, [`MemoryStore`], that keeps its
//! data in ordinary maps: no SQL engine, no files.
//!
//! What a backend implements:
//!
//! * **The primitives** (required): `backend`, `ingest` (one span of one
//!   record file, applied atomically, together with that file's progress),
//!   `file_progress`, `set_status`, `runs`, `names`, `scan_values`,
//!   `scan_loops`, `checkpoints`, `checks` (replays' divergence checks,
//!   which flag values `diverged`), `clear`.
//! * **The pivot** (`dataframe`) comes for free: the trait's default builds
//!   it from `scan_values` and `scan_loops` (a backend may replace it with
//!   its own plan if the answers stay identical).
//! * **Optional capabilities** keep their defaults here: `query` (raw SQL)
//!   answers `StoreError::Unsupported`, which `flor query` and
//!   `Project::query` show as a clear message; `begin_group` / `end_group`
//!   (several steps made durable together) do nothing. One is implemented:
//!   `scan_outputs` (captured print/logging lines, what `flor io` reads),
//!   a short pass over the `output` records.
//!
//! Check a backend with the conformance suite: with `flor-store` as a
//! dev-dependency with the feature `conformance`,
//! `flor_store::conformance_tests!(core, || Box::new(MemoryStore::new()))`
//! expands to one `#[test]` per check (`tests/custom_store.rs` does exactly
//! that for this file). Hand the store to a project with
//! `Project::builder(dir).store(Box::new(MemoryStore::new())).open()`.
//!
//! `main` goes end to end: a temporary git repository, a run recorded with
//! [`flor::Run`], the project opened with this store, `sync`, a
//! `dataframe`, and the answer to raw SQL. Run it (git must be on the
//! `PATH`):
//!
//! ```text
//! cargo run --example custom_store
//! ```

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use flor::core::check::ReplayCheck;
use flor::core::layout::replay_of_line;
use flor::core::store::{
    CheckRow, FileProgress, IngestBatch, LoopSpan, NameInfo, OutputFilter, OutputRow, RunKey, RunRow, Store,
    StoreError, StoreResult, ValueFilter, ValueRow,
};
use flor::core::{CheckpointMeta, LoopCtx, Record, RecordKind, RunMeta, RunStatus, Source, Value};
use flor::{Project, Run};

/// Where a record or checkpoint sits in its run: extraction file before
/// forward file before replay files, then the line. A line holds one record, so keying by
/// position makes re-ingesting a span replace what it stored (ingestion
/// must be idempotent: a crash between a batch and its progress is retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    /// [`Source::rank`]: extracted, forward, replay.
    rank: u8,
    line: u64,
}

impl Pos {
    fn new(source: Source, line: u64) -> Pos {
        Pos { rank: source.rank(), line }
    }

    fn source(self) -> Source {
        match self.rank {
            0 => Source::Extract,
            1 => Source::Forward,
            _ => Source::Replay,
        }
    }
}

/// Everything stored for one run.
#[derive(Debug, Clone)]
struct StoredRun {
    /// Identity, metadata and status (replaced by every batch).
    meta: RunMeta,
    /// Value records of every kind (log, arg, timing, output).
    records: BTreeMap<Pos, Record>,
    /// Loop iterations by context id: each context once, whatever the
    /// batches or replays that brought it. (A store for long runs keeps
    /// spans instead: `LoopSpan::compress` makes them.)
    loops: BTreeMap<u32, LoopCtx>,
    /// Checkpoints, in file order.
    checkpoints: BTreeMap<Pos, CheckpointMeta>,
    /// Replays' divergence checks, by line.
    checks: BTreeMap<u64, ReplayCheck>,
}

/// A query store in memory maps. See the module docs.
///
/// Everything is lost when it is dropped, which is fine for a cache: a
/// fresh `MemoryStore` handed to a project gets every run again at the
/// next [`Project::sync`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Runs by key (keys are handed out in ingestion order).
    runs: BTreeMap<RunKey, StoredRun>,
    /// `(projid, tstamp)` → key.
    keys: HashMap<(String, String), RunKey>,
    /// How far each record file has been ingested.
    files: HashMap<String, FileProgress>,
    /// The last key handed out.
    last_key: RunKey,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The key of the run `(projid, tstamp)`, if stored.
    fn key_of(&self, projid: &str, tstamp: &str) -> Option<RunKey> {
        self.keys.get(&(projid.to_owned(), tstamp.to_owned())).copied()
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    /// Upserts the run, stores the batch's records, iterations and
    /// checkpoints by position, and the file's progress. Nothing in it can
    /// fail halfway; a backend that can must apply all of it or nothing
    /// (a transaction), so that stored rows and stored progress agree.
    fn ingest(&mut self, batch: &IngestBatch<'_>) -> StoreResult<RunKey> {
        let key = match self.key_of(&batch.run.projid, &batch.run.tstamp) {
            Some(key) => key,
            None => {
                self.last_key += 1;
                self.keys.insert((batch.run.projid.clone(), batch.run.tstamp.clone()), self.last_key);
                self.last_key
            }
        };
        let run = self.runs.entry(key).or_insert_with(|| StoredRun {
            meta: batch.run.clone(),
            records: BTreeMap::new(),
            loops: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            checks: BTreeMap::new(),
        });
        run.meta = batch.run.clone();
        for r in batch.records {
            run.records.insert(Pos::new(batch.source, r.line), r.clone());
        }
        for l in batch.loops {
            run.loops.insert(l.ctx, l.clone());
        }
        for c in batch.checkpoints {
            run.checkpoints.insert(Pos::new(batch.source, c.line), c.clone());
        }
        for c in batch.checks {
            run.checks.insert(c.line, c.clone());
        }
        self.files.insert(batch.file.to_owned(), batch.progress);
        Ok(key)
    }

    fn file_progress(&self, file: &str) -> StoreResult<Option<FileProgress>> {
        Ok(self.files.get(file).copied())
    }

    fn set_status(&mut self, projid: &str, tstamp: &str, status: RunStatus, ended: Option<&str>) -> StoreResult<bool> {
        let Some(run) = self.key_of(projid, tstamp).and_then(|key| self.runs.get_mut(&key)) else {
            return Ok(false);
        };
        run.meta.status = status;
        run.meta.ended = ended.map(str::to_owned);
        Ok(true)
    }

    fn runs(&self) -> StoreResult<Vec<RunRow>> {
        let mut rows: Vec<RunRow> = self
            .runs
            .iter()
            .map(|(&key, run)| RunRow { key, meta: run.meta.clone(), records: run.records.len() as u64 })
            .collect();
        rows.sort_by(|a, b| (&a.meta.tstamp, &a.meta.projid).cmp(&(&b.meta.tstamp, &b.meta.projid)));
        Ok(rows)
    }

    /// `log`/`arg` names, sorted, each with the kind of its first record
    /// (by run key, then position) and its count.
    fn names(&self) -> StoreResult<Vec<NameInfo>> {
        let mut names: BTreeMap<&str, (RecordKind, u64)> = BTreeMap::new();
        for run in self.runs.values() {
            for r in run.records.values().filter(|r| is_value(r.kind)) {
                names.entry(&r.name).or_insert((r.kind, 0)).1 += 1;
            }
        }
        Ok(names
            .into_iter()
            .map(|(name, (kind, count))| NameInfo { name: name.to_owned(), kind: kind.as_str().to_owned(), count })
            .collect())
    }

    /// A full pass over the records (a store for many runs would index
    /// them by name, as the SQLite store clusters them).
    fn scan_values(&self, filter: ValueFilter<'_>, visit: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()> {
        for (&key, run) in &self.runs {
            for (pos, r) in &run.records {
                let wanted = is_value(r.kind)
                    && match filter {
                        ValueFilter::Names(names) => names.contains(&&*r.name),
                        ValueFilter::RunLevel => r.ctx.is_none(),
                    };
                if wanted {
                    visit(ValueRow {
                        run: key,
                        ctx: r.ctx,
                        source: pos.source(),
                        line: pos.line,
                        name: &r.name,
                        value: r.value.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn scan_loops(&self, runs: &[RunKey], visit: &mut dyn FnMut(RunKey, &LoopSpan)) -> StoreResult<()> {
        for key in runs {
            let Some(run) = self.runs.get(key) else { continue };
            let iterations: Vec<LoopCtx> = run.loops.values().cloned().collect();
            for span in LoopSpan::compress(&iterations) {
                visit(*key, &span);
            }
        }
        Ok(())
    }

    /// Captured output (an optional capability, what `flor io` reads):
    /// the `output` records of the selected runs and channels.
    fn scan_outputs(&self, filter: OutputFilter<'_>, visit: &mut dyn FnMut(OutputRow<'_>)) -> StoreResult<()> {
        for (&key, run) in self.runs.iter().filter(|(k, _)| filter.keeps_run(**k)) {
            for (pos, r) in &run.records {
                if r.kind != RecordKind::Output || !filter.keeps_channel(&r.name) {
                    continue;
                }
                let text = match &r.value {
                    Value::Text(t) => t.to_string(),
                    other => other.to_string(),
                };
                visit(OutputRow {
                    run: key,
                    ctx: r.ctx,
                    source: pos.source(),
                    line: pos.line,
                    channel: &r.name,
                    text: &text,
                });
            }
        }
        Ok(())
    }

    fn checkpoints(&self, run: RunKey) -> StoreResult<Vec<CheckpointMeta>> {
        Ok(self.runs.get(&run).map(|r| r.checkpoints.values().cloned().collect()).unwrap_or_default())
    }

    fn checks(&self) -> StoreResult<Vec<CheckRow>> {
        let mut out = Vec::new();
        for (key, run) in &self.runs {
            for c in run.checks.values() {
                out.push(CheckRow { run: *key, replay: replay_of_line(c.line), check: c.clone() });
            }
        }
        Ok(out)
    }

    fn clear(&mut self) -> StoreResult<()> {
        *self = MemoryStore::default();
        Ok(())
    }

    // `dataframe`, `query`, `begin_group` and `end_group` keep the trait's
    // defaults: the shared pivot, "unsupported", no groups.
}

/// `log` and `arg` records are the values the scans and names visit
/// (timings and outputs are stored and counted, not scanned).
fn is_value(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::Log | RecordKind::Arg)
}

/// Records a small training run in a temporary git repository, queries it
/// through a project opened with a [`MemoryStore`], and shows that raw SQL
/// is unsupported.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A repository to record in (flor keeps the run's code and records in
    // git objects under its own refs; the working tree is left as it is).
    let dir = tempfile::tempdir()?;
    let status = Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status()?;
    if !status.success() {
        return Err("`git init` failed".into());
    }
    std::fs::write(dir.path().join("train.rs"), "// the training program\n")?;

    // A run recorded with the Rust API.
    let run = Run::builder()
        .dir(dir.path())
        .filename("train.rs")
        .argv(["train", "--kwargs", "lr=0.05"])
        .interpreter("rustc")
        .start()?;
    let lr = run.arg("lr", 0.1)?;
    let mut w = 0.0_f64;
    for epoch in run.loop_over("epoch", 0..3) {
        for step in run.loop_over("step", 0..2) {
            w += lr * (1.0 - w);
            run.log("loss", (1.0 - w).powi(2) + (epoch * 2 + step) as f64 * 1e-3);
        }
        run.log("w", w);
    }
    run.finish()?;

    // The project, with this store as its query database.
    let mut project = Project::builder(dir.path()).store(Box::new(MemoryStore::new())).open()?;
    let report = project.sync()?;
    let backend = project.store()?.backend();
    println!("synced {} records of {} run(s) into the {backend} store", report.records, project.runs()?.len());
    let table = project.dataframe(&["lr", "w", "loss"])?;
    table.write_aligned(&mut std::io::stdout(), 40)?;
    assert_eq!(table.row_count(), 6, "one row per step");

    // Raw SQL is an optional capability this store does not have.
    match project.query("SELECT count(*) FROM logs") {
        Err(flor::Error::Query(e @ StoreError::Unsupported { .. })) => println!("query: {e}"),
        other => return Err(format!("expected `unsupported`, got {other:?}").into()),
    }
    Ok(())
}
