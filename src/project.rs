//! A flor project: the git repository a training script runs in, its
//! `.flor/` folder (query database, checkpoint objects, live record files),
//! and the operations the CLI and the SDK offer on it.

use std::fs;
use std::path::{Path, PathBuf};

use flor_core::checkpoint::{Bincode, CheckpointSerializer};
use flor_core::store::{
    FileProgress, IngestBatch, LoopSpan, NameInfo, RunKey, RunRow, StoreError, StoreResult, ValueFilter, ValueRow,
};
use flor_core::RunStatus;
use flor_core::{CheckpointMeta, ObjectStore, Store, Table};
use flor_store::StoreKind;

use crate::config::{Config, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::ingest::{self, SyncReport};

/// The folder flor keeps in the repository root (ignored by git).
pub const FLOR_DIR: &str = ".flor";

/// Inside `.flor/`: the engine of the last query database opened, so that
/// switching engines rebuilds the new one from git.
const LAST_STORE_FILE: &str = "store";

/// An open project. See the module docs.
pub struct Project {
    store_kind: StoreKind,
    root: PathBuf,
    projid: String,
    flor_dir: PathBuf,
    store: Box<dyn Store>,
    objects: ObjectStore,
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project").field("root", &self.root).field("projid", &self.projid).finish()
    }
}

/// The repository containing `start`, and its `.flor/` folder (created,
/// with the `.gitignore` that keeps it out of git).
fn prepare(start: &Path) -> Result<(flor_git::RepoInfo, PathBuf)> {
    let info = flor_git::discover(start)?;
    let flor_dir = info.root.join(FLOR_DIR);
    fs::create_dir_all(flor_dir.join("runs")).map_err(|e| Error::io("create", &flor_dir, e))?;
    let ignore = flor_dir.join(".gitignore");
    if !ignore.exists() {
        fs::write(&ignore, "# flor's local data: query cache, checkpoints, live record files.\n*\n")
            .map_err(|e| Error::io("write", &ignore, e))?;
    }
    Ok((info, flor_dir))
}

/// The stand-in for a released store (see [`Project::release_store`]).
struct Released;

impl Released {
    const NAME: &'static str = "released";

    fn err<T>(&self) -> StoreResult<T> {
        Err(StoreError::Backend {
            backend: Self::NAME,
            message: "this project was opened without its query database (for recording, or released: see Project::reacquire_store)".into(),
            source: None,
        })
    }
}

impl Store for Released {
    fn backend(&self) -> &'static str {
        Self::NAME
    }
    fn ingest(&mut self, _: &IngestBatch<'_>) -> StoreResult<RunKey> {
        self.err()
    }
    fn file_progress(&self, _: &str) -> StoreResult<Option<FileProgress>> {
        self.err()
    }
    fn set_status(&mut self, _: &str, _: &str, _: RunStatus, _: Option<&str>) -> StoreResult<bool> {
        self.err()
    }
    fn runs(&self) -> StoreResult<Vec<RunRow>> {
        self.err()
    }
    fn names(&self) -> StoreResult<Vec<NameInfo>> {
        self.err()
    }
    fn scan_values(&self, _: ValueFilter<'_>, _: &mut dyn FnMut(ValueRow<'_>)) -> StoreResult<()> {
        self.err()
    }
    fn scan_loops(&self, _: &[RunKey], _: &mut dyn FnMut(RunKey, &LoopSpan)) -> StoreResult<()> {
        self.err()
    }
    fn checkpoints(&self, _: RunKey) -> StoreResult<Vec<CheckpointMeta>> {
        self.err()
    }
    fn query(&self, _: &str) -> StoreResult<Table> {
        self.err()
    }
    fn clear(&mut self) -> StoreResult<()> {
        self.err()
    }
}

/// Writes `table` as a Parquet file at `path` (through an in-memory DuckDB;
/// needs the `duckdb` feature, whatever the project's store: else
/// [`flor_store::Error::DuckdbNotBuilt`]).
pub fn write_parquet(table: &Table, path: &Path) -> Result<()> {
    Ok(flor_store::write_parquet(table, path)?)
}

impl Project {
    /// Opens the project of the git repository containing `start` (any
    /// folder inside it), creating `.flor/` on first use. The query
    /// database's engine is the one `.flor/config.toml` names (`store =
    /// "sqlite" | "duckdb"`), SQLite by default.
    pub fn open(start: &Path) -> Result<Project> {
        Project::open_with(start, None)
    }

    /// [`Project::open`] with the engine chosen by the caller (`None`: the
    /// project's configuration). When the engine differs from the one used
    /// last in this project, the new engine's database is emptied, so that
    /// the next [`Project::sync`] rebuilds it from the run records in git.
    pub fn open_with(start: &Path, store: Option<StoreKind>) -> Result<Project> {
        let (info, flor_dir) = prepare(start)?;
        let kind = match store {
            Some(k) => k,
            None => Config::load(&flor_dir.join(CONFIG_FILE))?.store.unwrap_or_default(),
        };
        let mut store = kind.open(&flor_dir)?;
        // Switching engines: the other engine's cache may be stale; start
        // this one afresh (sync then ingests every run ref again).
        let marker = flor_dir.join(LAST_STORE_FILE);
        let last = match fs::read_to_string(&marker) {
            Ok(s) => s.trim().parse::<StoreKind>().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", marker, e)),
        };
        if last.unwrap_or_default() != kind {
            store.clear()?;
        }
        if last != Some(kind) {
            fs::write(&marker, format!("{kind}\n")).map_err(|e| Error::io("write", &marker, e))?;
        }
        let objects = ObjectStore::open(flor_dir.join("objects"))?;
        Ok(Project { store_kind: kind, root: info.root, projid: info.projid, flor_dir, store, objects })
    }

    /// Opens the project for recording: git, `.flor/`, the object store,
    /// but not the query database (a run only writes its record file; the
    /// next query ingests it). Works whatever engine the project chose and
    /// whichever features this build has, and holds no database open.
    pub fn open_for_recording(start: &Path) -> Result<Project> {
        let (info, flor_dir) = prepare(start)?;
        let kind = Config::load(&flor_dir.join(CONFIG_FILE))?.store.unwrap_or_default();
        let objects = ObjectStore::open(flor_dir.join("objects"))?;
        Ok(Project {
            store_kind: kind,
            root: info.root,
            projid: info.projid,
            flor_dir,
            store: Box::new(Released),
            objects,
        })
    }

    /// Opens the project with an empty query database, deleting the old
    /// database file first (even one too damaged to open). Used by
    /// `flor rebuild`; the records themselves live in git and are untouched.
    pub fn open_with_fresh_database(start: &Path) -> Result<Project> {
        Project::open_fresh_with(start, None)
    }

    /// [`Project::open_with_fresh_database`] with the engine chosen by the
    /// caller (`None`: the project's configuration).
    pub fn open_fresh_with(start: &Path, store: Option<StoreKind>) -> Result<Project> {
        let info = flor_git::discover(start)?;
        let flor_dir = info.root.join(FLOR_DIR);
        let kind = match store {
            Some(k) => k,
            None => Config::load(&flor_dir.join(CONFIG_FILE))?.store.unwrap_or_default(),
        };
        kind.remove_database(&flor_dir)?;
        Project::open_with(start, Some(kind))
    }

    /// The engine of the query database.
    pub fn store_kind(&self) -> StoreKind {
        self.store_kind
    }

    /// Closes a DuckDB query database until [`Project::reacquire_store`]
    /// (a no-op for SQLite, which many processes share). DuckDB lets one
    /// process at a time open a database file: `flor replay` releases it
    /// while its workers run, so that they and other commands can use it.
    /// Store calls in between fail with a message saying so.
    pub fn release_store(&mut self) {
        if self.store_kind == StoreKind::Duckdb {
            self.store = Box::new(Released);
        }
    }

    /// Reopens a database closed by [`Project::release_store`] (waiting a
    /// while for another process that has it open).
    pub fn reacquire_store(&mut self) -> Result<()> {
        if self.store.backend() == Released::NAME {
            self.store = self.store_kind.open(&self.flor_dir)?;
        }
        Ok(())
    }

    /// Opens the project containing the current directory.
    pub fn open_cwd() -> Result<Project> {
        let cwd = std::env::current_dir().map_err(|e| Error::io("read", "the current directory", e))?;
        Project::open(&cwd)
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The project id (repository folder name).
    pub fn projid(&self) -> &str {
        &self.projid
    }

    /// The `.flor/` folder.
    pub fn flor_dir(&self) -> &Path {
        &self.flor_dir
    }

    /// Folder of the live (unpublished) record files.
    pub fn runs_dir(&self) -> PathBuf {
        self.flor_dir.join("runs")
    }

    /// The checkpoint object store.
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// The query database.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The query database, mutably.
    pub fn store_mut(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// Brings the query database up to date: ingests new records of running
    /// runs, marks runs whose process died as `failed` (publishing their
    /// records to git), and ingests runs found in git refs (e.g. fetched
    /// from a teammate) that the database does not have yet.
    pub fn sync(&mut self) -> Result<SyncReport> {
        self.sync_with_progress(&mut |_, _| {})
    }

    /// [`Project::sync`], calling `progress(done, total)` as run refs are
    /// ingested (for a progress display on long rebuilds).
    pub fn sync_with_progress(&mut self, progress: ingest::Progress<'_>) -> Result<SyncReport> {
        let runs_dir = self.runs_dir();
        ingest::sync(&self.root, &runs_dir, self.store.as_mut(), progress)
    }

    /// Finalizes the record files of runs whose process died (marked
    /// `failed`, published to their git refs) without ingesting anything:
    /// the cheap part of [`Project::sync`], done when a run starts.
    pub fn finalize_dead_runs(&self) -> Result<SyncReport> {
        ingest::finalize_dead_runs(&self.root, &self.runs_dir())
    }

    /// Drops the query database's content and rebuilds it from the run
    /// records stored in git (plus the files of runs still recording).
    pub fn rebuild(&mut self) -> Result<SyncReport> {
        self.rebuild_with_progress(&mut |_, _| {})
    }

    /// [`Project::rebuild`] with a progress callback (see
    /// [`Project::sync_with_progress`]).
    pub fn rebuild_with_progress(&mut self, progress: ingest::Progress<'_>) -> Result<SyncReport> {
        self.store.clear()?;
        self.sync_with_progress(progress)
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRow>> {
        Ok(self.store.runs()?)
    }

    /// Names of logged values and args.
    pub fn names(&self) -> Result<Vec<NameInfo>> {
        Ok(self.store.names()?)
    }

    /// The pivot view (see `flor_core::pivot`). Names no run logged are an
    /// error that lists the known names.
    pub fn dataframe(&self, names: &[&str]) -> Result<Table> {
        if !names.is_empty() {
            let known = self.store.names()?;
            let unknown: Vec<String> =
                names.iter().filter(|n| !known.iter().any(|k| k.name == **n)).map(|n| n.to_string()).collect();
            if !unknown.is_empty() {
                return Err(Error::UnknownNames { names: unknown, known: known.into_iter().map(|k| k.name).collect() });
            }
        }
        Ok(self.store.dataframe(names)?)
    }

    /// A read-only SQL query over the views `runs`, `logs`, `loops`,
    /// `timings`, `outputs`, `checkpoints`.
    pub fn query(&self, sql: &str) -> Result<Table> {
        Ok(self.store.query(sql)?)
    }

    /// The checkpoints of the run started at `tstamp`, in order.
    pub fn checkpoints(&self, tstamp: &str) -> Result<Vec<CheckpointMeta>> {
        let runs = self.store.runs()?;
        let Some(run) = runs.iter().find(|r| r.meta.tstamp == tstamp) else {
            return Err(Error::UnknownRun { projid: self.projid.clone(), tstamp: tstamp.to_owned() });
        };
        Ok(self.store.checkpoints(run.key)?)
    }

    /// Restores into `state` the last checkpoint named `name` of the run
    /// started at `tstamp`, with `serializer`.
    pub fn load_checkpoint_with<T, S: CheckpointSerializer<T>>(
        &self,
        tstamp: &str,
        name: &str,
        state: &mut T,
        serializer: &S,
    ) -> Result<CheckpointMeta> {
        let all = self.checkpoints(tstamp)?;
        let Some(meta) = all.iter().rev().find(|c| c.name == name).cloned() else {
            let mut available: Vec<String> = all.into_iter().map(|c| c.name).collect();
            available.dedup();
            return Err(Error::NoCheckpoint { tstamp: tstamp.to_owned(), name: name.to_owned(), available });
        };
        let bytes = self.objects.get(&meta.digest)?;
        serializer
            .load(state, &mut bytes.as_slice())
            .map_err(|e| flor_core::Error::Checkpoint { name: name.to_owned(), message: e.0 })?;
        Ok(meta)
    }

    /// Loads the last checkpoint named `name` of the run at `tstamp`, saved
    /// by the Rust API (bincode).
    pub fn load_checkpoint<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
        &self,
        tstamp: &str,
        name: &str,
    ) -> Result<T> {
        let mut state = T::default();
        self.load_checkpoint_with(tstamp, name, &mut state, &Bincode)?;
        Ok(state)
    }
}
