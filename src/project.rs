//! A flor project: the git repository a training script runs in, its
//! `.flor/` folder (query database, checkpoint objects, live record files),
//! and the operations the CLI and the SDK offer on it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flor_core::checkpoint::{Bincode, CheckpointSerializer};
use flor_core::formats::FormatRegistry;
use flor_core::select::{PivotFilter, Selection};
use flor_core::store::{NameInfo, RunKey, RunRow, TensorFilter, TensorName};
use flor_core::{CheckpointMeta, Durability, ObjectStore, Store, StoreError, Table, Value};
use flor_store::StoreKind;

use crate::config::{Config, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::ingest::{self, SyncReport};

/// The folder flor keeps in the repository root (ignored by git).
pub const FLOR_DIR: &str = ".flor";

/// Inside `.flor/`: the engine of the last query database opened, so that
/// switching engines rebuilds the new one from git.
const LAST_STORE_FILE: &str = "store";

/// The environment variable that overrides `durability` of
/// `.flor/config.toml` (`process` or `os`).
pub const DURABILITY_ENV: &str = "FLOR_DURABILITY";

/// An open project. See the module docs.
///
/// Open one with [`Project::open`] (the store `.flor/config.toml` names) or
/// [`Project::builder`] (a store kind, a store of your own, a fresh
/// database, or none for recording).
pub struct Project {
    root: PathBuf,
    projid: String,
    flor_dir: PathBuf,
    /// The built-in engine behind `db` (`None`: a store handed in by the
    /// caller). Projects opened without a database keep the configured one.
    kind: Option<StoreKind>,
    db: Database,
    objects: ObjectStore,
    durability: Durability,
    /// The time limit of user SQL (`None`: none).
    query_limit: Option<Duration>,
    /// The checkpoint formats packing and tensor statistics use.
    pub(crate) formats: Arc<Formats>,
    /// The `[checkpoints]` settings.
    pub(crate) upkeep: crate::checkpoints::UpkeepSettings,
}

/// Where a project's checkpoint formats come from: given, or made the
/// first time they are needed (loading plugins costs time every command
/// would otherwise pay).
pub(crate) struct Formats {
    ready: std::sync::OnceLock<Arc<FormatRegistry>>,
    make: std::sync::Mutex<Option<MakeFormats>>,
}

/// Makes a project's formats ([`ProjectBuilder::formats_with`]).
type MakeFormats = Box<dyn FnOnce() -> Arc<FormatRegistry> + Send>;

impl Formats {
    fn new(make: MakeFormats) -> Formats {
        Formats { ready: std::sync::OnceLock::new(), make: std::sync::Mutex::new(Some(make)) }
    }

    /// The formats (made now if they were not yet).
    pub(crate) fn get(&self) -> Arc<FormatRegistry> {
        self.ready
            .get_or_init(|| {
                let make = self.make.lock().ok().and_then(|mut m| m.take());
                make.map_or_else(FormatRegistry::shared_native, |f| f())
            })
            .clone()
    }
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project").field("root", &self.root).field("projid", &self.projid).finish()
    }
}

/// Why a [`Project`] holds no query database (see [`Error::NoDatabase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoDatabaseReason {
    /// Opened for recording ([`Project::open_for_recording`],
    /// [`ProjectBuilder::without_database`]).
    Recording,
    /// Released while replay workers run ([`Project::release_store`]).
    Released,
}

/// The project's query database, or why there is none. Every use goes
/// through [`Database::get`] / [`Database::get_mut`], which say why.
enum Database {
    Open(Box<dyn Store>),
    Missing(NoDatabaseReason),
}

impl Database {
    fn get(&self) -> Result<&dyn Store> {
        match self {
            Database::Open(store) => Ok(store.as_ref()),
            Database::Missing(reason) => Err(Error::NoDatabase { reason: *reason }),
        }
    }

    fn get_mut(&mut self) -> Result<&mut dyn Store> {
        match self {
            Database::Open(store) => Ok(store.as_mut()),
            Database::Missing(reason) => Err(Error::NoDatabase { reason: *reason }),
        }
    }
}

/// The repository containing `start`, and its `.flor/` folder (created,
/// with the `.gitignore` that keeps it out of git).
fn prepare(start: &Path) -> Result<(flor_git::RepoInfo, PathBuf)> {
    let info = flor_git::discover(start)?;
    let flor_dir = info.root.join(FLOR_DIR);
    fs::create_dir_all(flor_dir.join("runs")).map_err(|e| writable_or(&flor_dir, Error::io("create", &flor_dir, e)))?;
    let ignore = flor_dir.join(".gitignore");
    if !ignore.exists() {
        fs::write(&ignore, "# flor's local data: query cache, checkpoints, live record files.\n*\n")
            .map_err(|e| writable_or(&flor_dir, Error::io("write", &ignore, e)))?;
    }
    Ok((info, flor_dir))
}

/// Whether flor can create files in `dir`: `Err` with what the OS said when
/// it tried (a file created and removed at once).
pub(crate) fn check_writable(dir: &Path) -> Result<()> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-check-{}-{n}", std::process::id()));
    match fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()), // a missing folder is another error
        Err(source) => Err(Error::NotWritable { path: dir.to_owned(), source }),
    }
}

/// `err`, or [`Error::NotWritable`] when `dir` cannot be written (which
/// then explains it better).
pub(crate) fn writable_or(dir: &Path, err: Error) -> Error {
    check_writable(dir).err().unwrap_or(err)
}

/// The durability the environment asks for ([`DURABILITY_ENV`]), else the
/// config's, else the default.
fn durability_of(config: &Config) -> Result<Durability> {
    match std::env::var(DURABILITY_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: flor_core::durability::UnknownDurability| Error::Config {
                path: PathBuf::from(format!("the environment variable {DURABILITY_ENV}")),
                line: 0,
                key: String::new(),
                message: e.to_string(),
            })
        }
        _ => Ok(config.durability.unwrap_or_default()),
    }
}

/// Opens the query database of `kind` in `flor_dir` (deleted first when
/// `fresh`). When the engine differs from the one used last in this
/// project, its database is emptied, so that the next sync rebuilds it from
/// the run records in git.
fn open_kind(flor_dir: &Path, kind: StoreKind, fresh: bool) -> Result<Box<dyn Store>> {
    if fresh {
        kind.remove_database(flor_dir).map_err(|e| writable_or(flor_dir, e.into()))?;
    }
    let mut store = match kind.open(flor_dir) {
        Ok(store) => store,
        Err(flor_store::Error::Store(StoreError::Damaged { path, message })) => {
            note_rebuild(&path, &message);
            kind.remove_database(flor_dir).map_err(|e| writable_or(flor_dir, e.into()))?;
            kind.open(flor_dir)?
        }
        Err(e) => return Err(writable_or(flor_dir, e.into())),
    };
    // Switching engines: the other engine's cache may be stale; start this
    // one afresh (sync then ingests every run ref again).
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
    Ok(store)
}

/// The `<checkpoint>.<tensor>` paths of the stored tensors `filter`
/// selects, sorted.
fn stored_tensor_paths(store: &dyn Store, filter: TensorFilter<'_>) -> Result<std::collections::BTreeSet<String>> {
    let mut paths = std::collections::BTreeSet::new();
    store.scan_tensors(filter, &mut |v| {
        paths.insert(TensorName::path_of(v.checkpoint, &v.row.tensor));
    })?;
    Ok(paths)
}

/// Says on stderr that a damaged query database is being rebuilt.
fn note_rebuild(path: &str, why: &str) {
    eprintln!("flor: note: the query database {path} is damaged ({why}); rebuilding it from the run records in git");
}

/// Writes `table` as a Parquet file at `path` (Snappy-compressed, streamed
/// batch by batch: [`crate::export`]; every build with the `export`
/// feature). Consumes the table: its typed columns move into the writer's
/// Arrow buffers without a copy.
#[cfg(feature = "export")]
pub fn write_parquet(table: Table, path: &Path) -> Result<()> {
    let file =
        std::fs::File::create(path).map_err(|source| Error::Io { action: "create", path: path.to_owned(), source })?;
    crate::export::write(table, crate::export::Format::Parquet, file)?;
    Ok(())
}

/// Which query database a [`ProjectBuilder`] opens.
enum StoreChoice {
    /// The kind `.flor/config.toml` names.
    Configured,
    /// A built-in kind.
    Kind(StoreKind),
    /// A store handed in by the caller.
    Given(Box<dyn Store>),
    /// None (recording).
    Without,
}

/// Options for opening a [`Project`]; see [`Project::builder`].
///
/// ```no_run
/// # fn main() -> flor::Result<()> {
/// use flor::{Project, StoreKind};
/// // The engine .flor/config.toml names (what `Project::open` does):
/// let p = Project::builder(".").open()?;
/// // DuckDB, with its database emptied first (what `flor rebuild` does):
/// let p = Project::builder(".").store_kind(StoreKind::Duckdb).fresh_database(true).open()?;
/// // A store of your own (any `flor_core::Store`):
/// let mine: Box<dyn flor::core::Store> = Box::new(flor_store::SqliteStore::open_in_memory()?);
/// let p = Project::builder(".").store(mine).open()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `open`"]
pub struct ProjectBuilder {
    start: PathBuf,
    choice: StoreChoice,
    fresh: bool,
    formats: MakeFormats,
}

impl std::fmt::Debug for ProjectBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let choice = match &self.choice {
            StoreChoice::Configured => "configured".to_owned(),
            StoreChoice::Kind(k) => k.to_string(),
            StoreChoice::Given(s) => format!("given ({})", s.backend()),
            StoreChoice::Without => "none".to_owned(),
        };
        f.debug_struct("ProjectBuilder")
            .field("start", &self.start)
            .field("store", &choice)
            .field("fresh", &self.fresh)
            .finish()
    }
}

impl ProjectBuilder {
    /// Uses `store` as the project's query database: any implementation of
    /// [`flor_core::Store`] (the primitives are enough; raw SQL is an
    /// optional capability). [`Project::sync`] ingests the run records into
    /// it; nothing is written under `.flor/` for it, and
    /// [`Project::release_store`] leaves it alone.
    pub fn store(mut self, store: Box<dyn Store>) -> ProjectBuilder {
        self.choice = StoreChoice::Given(store);
        self
    }

    /// Uses the built-in engine `kind` (its database file in `.flor/`);
    /// `None` (the default): the engine `.flor/config.toml` names, SQLite
    /// when it names none. When the engine differs from the one used last
    /// in this project, its database is emptied, so that the next
    /// [`Project::sync`] rebuilds it from the run records in git.
    pub fn store_kind(mut self, kind: impl Into<Option<StoreKind>>) -> ProjectBuilder {
        self.choice = match kind.into() {
            Some(k) => StoreChoice::Kind(k),
            None => StoreChoice::Configured,
        };
        self
    }

    /// With `true`, starts from an empty query database: a built-in
    /// engine's database files are deleted before opening (even a file too
    /// damaged to open), a store handed in is cleared. The run records live
    /// in git and are untouched; `flor rebuild` opens this way. Ignored
    /// without a database.
    pub fn fresh_database(mut self, fresh: bool) -> ProjectBuilder {
        self.fresh = fresh;
        self
    }

    /// Opens no query database: git, `.flor/` and the checkpoint object
    /// store only. A run writes only its record file (the next query
    /// ingests it), so recording works whatever engine the project chose
    /// and whichever features this build has, and holds no database open
    /// (DuckDB allows one process per file). Store calls on such a project
    /// fail with [`Error::NoDatabase`] until [`Project::reacquire_store`].
    pub fn without_database(mut self) -> ProjectBuilder {
        self.choice = StoreChoice::Without;
        self
    }

    /// The checkpoint formats packing and tensor statistics use
    /// ([`Project::pack_checkpoints`]): by default
    /// [`FormatRegistry::shared_native`] (safetensors, `.npy`); the `flor`
    /// command passes the native formats plus its plugins'. Recording is
    /// not affected: runs store checkpoints with the native formats only,
    /// and reading needs no format.
    pub fn formats(mut self, formats: Arc<FormatRegistry>) -> ProjectBuilder {
        self.formats = Box::new(move || formats);
        self
    }

    /// Like [`ProjectBuilder::formats`], made by `make` the first time a
    /// format is needed (so a command with nothing to pack never loads
    /// plugins).
    pub fn formats_with(mut self, make: impl FnOnce() -> Arc<FormatRegistry> + Send + 'static) -> ProjectBuilder {
        self.formats = Box::new(make);
        self
    }

    /// Opens the project of the git repository containing the start folder,
    /// creating `.flor/` on first use, with the chosen query database.
    pub fn open(self) -> Result<Project> {
        let (info, flor_dir) = prepare(&self.start)?;
        let config = Config::load(&flor_dir.join(CONFIG_FILE))?;
        let durability = durability_of(&config)?;
        if durability.syncs() {
            // Publishing (this process's run, or a dead run's) writes git.
            flor_git::set_fsync(true);
        }
        let configured_kind = config.store.unwrap_or_default();
        let (kind, db) = match self.choice {
            StoreChoice::Configured => {
                (Some(configured_kind), Database::Open(open_kind(&flor_dir, configured_kind, self.fresh)?))
            }
            StoreChoice::Kind(kind) => (Some(kind), Database::Open(open_kind(&flor_dir, kind, self.fresh)?)),
            StoreChoice::Given(mut store) => {
                if self.fresh {
                    store.clear()?;
                }
                (None, Database::Open(store))
            }
            StoreChoice::Without => (Some(configured_kind), Database::Missing(NoDatabaseReason::Recording)),
        };
        let objects_dir = flor_dir.join("objects");
        let objects =
            ObjectStore::open(&objects_dir).map_err(|e| writable_or(&flor_dir, e.into()))?.with_durability(durability);
        let query_limit = config.query_limit();
        let upkeep = crate::checkpoints::UpkeepSettings::of(&config);
        Ok(Project {
            root: info.root,
            projid: info.projid,
            flor_dir,
            kind,
            db,
            objects,
            durability,
            query_limit,
            formats: Arc::new(Formats::new(self.formats)),
            upkeep,
        })
    }
}

impl Project {
    /// Options for opening the project of the git repository containing
    /// `start` (any folder inside it): which query database (the configured
    /// engine by default), whether to start it afresh. See
    /// [`ProjectBuilder`].
    pub fn builder(start: impl AsRef<Path>) -> ProjectBuilder {
        ProjectBuilder {
            start: start.as_ref().to_path_buf(),
            choice: StoreChoice::Configured,
            fresh: false,
            formats: Box::new(FormatRegistry::shared_native),
        }
    }

    /// Opens the project of the git repository containing `start` (any
    /// folder inside it), creating `.flor/` on first use. The query
    /// database's engine is the one `.flor/config.toml` names (`store =
    /// "sqlite" | "duckdb"`), SQLite by default. Same as
    /// `Project::builder(start).open()`.
    pub fn open(start: &Path) -> Result<Project> {
        Project::builder(start).open()
    }

    /// Opens the project for recording: git, `.flor/`, the object store,
    /// but not the query database. Same as
    /// `Project::builder(start).without_database().open()`; see
    /// [`ProjectBuilder::without_database`].
    pub fn open_for_recording(start: &Path) -> Result<Project> {
        Project::builder(start).without_database().open()
    }

    /// The built-in engine of the query database: `None` for a store handed
    /// in with [`ProjectBuilder::store`]. A project opened without its
    /// database reports the configured engine.
    pub fn store_kind(&self) -> Option<StoreKind> {
        self.kind
    }

    /// Closes a DuckDB query database until [`Project::reacquire_store`]
    /// (a no-op for SQLite, which many processes share, and for a store
    /// handed in). DuckDB lets one process at a time open a database file:
    /// `flor replay` releases it while its workers run, so that they and
    /// other commands can use it. Store calls in between fail with
    /// [`Error::NoDatabase`], saying so.
    pub fn release_store(&mut self) {
        if self.kind == Some(StoreKind::Duckdb) && matches!(self.db, Database::Open(_)) {
            self.db = Database::Missing(NoDatabaseReason::Released);
        }
    }

    /// Reopens a database closed by [`Project::release_store`] (waiting a
    /// while for another process that has it open); on a project opened
    /// without its database, opens the configured engine's. Does nothing
    /// when the database is open.
    pub fn reacquire_store(&mut self) -> Result<()> {
        if let (Database::Missing(_), Some(kind)) = (&self.db, self.kind) {
            self.db = Database::Open(kind.open(&self.flor_dir)?);
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

    /// The checkpoint formats packing and tensor statistics use (see
    /// [`ProjectBuilder::formats`]; made now when they were given lazily).
    pub fn formats(&self) -> Arc<FormatRegistry> {
        self.formats.get()
    }

    /// What of a run survives a crash: `durability` of
    /// `.flor/config.toml`, overridden by [`DURABILITY_ENV`]; runs started
    /// in this project record with it unless
    /// [`RunBuilder::durability`](crate::RunBuilder::durability) says
    /// otherwise. See [`flor_core::durability`].
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The query database; [`Error::NoDatabase`] (saying why) when the
    /// project holds none.
    pub fn store(&self) -> Result<&dyn Store> {
        self.db.get()
    }

    /// The query database, mutably; [`Error::NoDatabase`] when the project
    /// holds none.
    pub fn store_mut(&mut self) -> Result<&mut dyn Store> {
        self.db.get_mut()
    }

    /// Brings the query database up to date: ingests new records of running
    /// runs, marks runs whose process died as `failed` (publishing their
    /// records to git), and ingests runs found in git refs (e.g. fetched
    /// from a teammate) that the database does not have yet.
    pub fn sync(&mut self) -> Result<SyncReport> {
        self.sync_with_progress(&mut |_| {})
    }

    /// [`Project::sync`], calling `progress` before each run ref is
    /// ingested and once at the end (runs done of total, values ingested:
    /// for a progress display on long syncs and rebuilds; see
    /// [`ingest::SyncProgress`]).
    ///
    /// A built-in engine's database found damaged on the way
    /// ([`StoreError::Damaged`]) is rebuilt from git at once, with a note on
    /// stderr (it is a cache).
    pub fn sync_with_progress(&mut self, progress: ingest::Progress<'_>) -> Result<SyncReport> {
        let runs_dir = self.runs_dir();
        match ingest::sync(&self.root, &runs_dir, self.db.get_mut()?, progress) {
            Err(Error::Query(StoreError::Damaged { path, message })) if self.kind.is_some() => {
                note_rebuild(&path, &message);
                self.reopen_fresh()?;
                ingest::sync(&self.root, &runs_dir, self.db.get_mut()?, progress)
            }
            other => other,
        }
    }

    /// Closes the built-in engine's database, deletes its files and opens
    /// it empty.
    fn reopen_fresh(&mut self) -> Result<()> {
        let Some(kind) = self.kind else { return Ok(()) };
        self.db = Database::Missing(NoDatabaseReason::Released);
        kind.remove_database(&self.flor_dir).map_err(|e| writable_or(&self.flor_dir, e.into()))?;
        self.db = Database::Open(kind.open(&self.flor_dir)?);
        Ok(())
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
        self.rebuild_with_progress(&mut |_| {})
    }

    /// [`Project::rebuild`] with a progress callback (see
    /// [`Project::sync_with_progress`]).
    ///
    /// A built-in engine's database files are deleted and created afresh
    /// (so a damaged file is no obstacle); a store handed in is cleared.
    pub fn rebuild_with_progress(&mut self, progress: ingest::Progress<'_>) -> Result<SyncReport> {
        self.db.get()?; // none held: say why
        match self.kind {
            Some(_) => self.reopen_fresh()?,
            None => self.db.get_mut()?.clear()?,
        }
        self.sync_with_progress(progress)
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRow>> {
        Ok(self.store()?.runs()?)
    }

    /// Names of logged values and args.
    pub fn names(&self) -> Result<Vec<NameInfo>> {
        Ok(self.store()?.names()?)
    }

    /// The pivot view (see `flor_core::pivot`). Names no run logged are an
    /// error that lists the known names. A name
    /// `tensor:<checkpoint>.<tensor>:<stat>` is a statistic of a
    /// checkpoint's tensor (`tensor:model.fc1.weight:l2`; `stat` one of
    /// `l2`, `mean`, `std`, `min`, `max`, `nonfinite`, `delta_l2`), found at
    /// each checkpoint's loop position (see [`Project::pack_checkpoints`]).
    pub fn dataframe(&self, names: &[&str]) -> Result<Table> {
        self.dataframe_where(names, &Selection::default())
    }

    /// [`Project::dataframe`] of the runs and loop iterations `selection`
    /// picks (see [`flor_core::select`]): its `where` predicate is
    /// evaluated over the runs' run-level columns first, then the store
    /// pivots the selected runs only, leaving out the iterations `iters`
    /// does not keep.
    pub fn dataframe_where(&self, names: &[&str], selection: &Selection) -> Result<Table> {
        self.check_names(names)?;
        let filter = self.resolve(selection)?;
        Ok(self.store()?.dataframe_filtered(names, &filter)?)
    }

    /// A selection resolved for the store: the `where` predicate to the
    /// keys of the runs it selects (over the run-level table, one row per
    /// run: `projid`, `tstamp`, `filename` and the values recorded outside
    /// loops), the loops of `iters` checked to exist.
    pub fn resolve(&self, selection: &Selection) -> Result<PivotFilter> {
        let store = self.store()?;
        let runs = match &selection.where_clause {
            None => None,
            Some(pred) => {
                let table = store.dataframe(&[])?;
                let keep = flor_store::filter_rows_within(&table, pred, self.query_limit).map_err(|e| match e {
                    // Name the columns a predicate can use, and where loop
                    // positions are selected.
                    StoreError::Query { backend, message } if message.contains("no such column") => StoreError::Query {
                        backend,
                        message: format!(
                            "{message} (the predicate sees the run-level columns: {}; select loop iterations with --iter LOOP=SPEC)",
                            table.column_names().join(", ")
                        ),
                    },
                    e => e,
                })?;
                let all = store.runs()?;
                let by_tstamp: HashMap<&str, RunKey> = all.iter().map(|r| (r.meta.tstamp.as_str(), r.key)).collect();
                let tcol = table.column_names().iter().position(|c| *c == "tstamp");
                let mut keys = Vec::new();
                for (row, kept) in keep.iter().enumerate() {
                    if let (true, Some(Value::Text(t))) = (*kept, tcol.and_then(|c| table.cell(row, c))) {
                        keys.extend(by_tstamp.get(&*t).copied());
                    }
                }
                Some(keys)
            }
        };
        if !selection.iters.is_empty() {
            let keys: Vec<RunKey> = store.runs()?.iter().map(|r| r.key).collect();
            let mut loops: BTreeSet<String> = BTreeSet::new();
            store.scan_loops(&keys, &mut |_, span| {
                if !loops.contains(&*span.name) {
                    loops.insert(span.name.to_string());
                }
            })?;
            let unknown: Vec<String> =
                selection.iters.iter().filter(|i| !loops.contains(&i.loop_name)).map(|i| i.loop_name.clone()).collect();
            if !unknown.is_empty() {
                return Err(Error::UnknownLoops { names: unknown, known: loops.into_iter().collect() });
            }
        }
        Ok(PivotFilter { runs, iters: selection.iters.clone() })
    }

    /// Names no run logged are [`Error::UnknownNames`], listing the known
    /// ones.
    fn check_names(&self, names: &[&str]) -> Result<()> {
        let store = self.store()?;
        let plain: Vec<&str> = names.iter().copied().filter(|n| TensorName::parse(n).is_none()).collect();
        let found = store.has_names(&plain)?;
        let mut unknown: Vec<String> =
            plain.iter().zip(found).filter(|(_, f)| !f).map(|(n, _)| n.to_string()).collect();
        let tensor_names: Vec<TensorName<'_>> = names.iter().filter_map(|n| TensorName::parse(n)).collect();
        let mut tensors_missing = false;
        if !tensor_names.is_empty() {
            let pairs: Vec<(&str, &str)> = tensor_names.iter().flat_map(|t| t.splits()).collect();
            let found = stored_tensor_paths(store, TensorFilter::Named(&pairs))?;
            let before = unknown.len();
            unknown.extend(
                tensor_names
                    .iter()
                    .filter(|t| !found.contains(t.path))
                    .map(|t| format!("{}{}:{}", TensorName::PREFIX, t.path, t.stat.as_str())),
            );
            tensors_missing = unknown.len() > before;
        }
        if unknown.is_empty() {
            return Ok(());
        }
        // Only now every name (counting them reads every record).
        let mut known: Vec<String> = store.names()?.into_iter().map(|k| k.name).collect();
        if tensors_missing {
            let all = stored_tensor_paths(store, TensorFilter::All)?;
            known.extend(all.iter().take(20).map(|p| format!("{}{p}:l2", TensorName::PREFIX)));
        }
        Err(Error::UnknownNames { names: unknown, known })
    }

    /// [`Project::dataframe`] with one more column, `diverged`: whether a
    /// value of the row was recovered by a replay whose divergence check
    /// found a difference (its recomputation of a recorded value differed;
    /// see [`flor_core::check`]). Rows of values the forward run logged, or
    /// a replay recovered without a difference, say `false`.
    pub fn dataframe_diverged(&self, names: &[&str]) -> Result<Table> {
        self.dataframe_diverged_where(names, &Selection::default())
    }

    /// [`Project::dataframe_diverged`] of what `selection` picks (see
    /// [`Project::dataframe_where`]).
    pub fn dataframe_diverged_where(&self, names: &[&str], selection: &Selection) -> Result<Table> {
        let mut table = self.dataframe_where(names, selection)?;
        let store = self.store()?;
        let runs: HashMap<i64, String> = store.runs()?.into_iter().map(|r| (r.key, r.meta.tstamp)).collect();
        // Per run, the names its diverged replays recovered.
        let mut by_replay: HashMap<(i64, u64), flor_core::check::ReplayCheck> = HashMap::new();
        for c in store.checks()? {
            by_replay.entry((c.run, c.replay)).or_default().merge(&c.check);
        }
        let mut flagged: HashMap<&str, HashSet<String>> = HashMap::new();
        for ((run, _), check) in &by_replay {
            if let (true, Some(t)) = (check.diverged(), runs.get(run)) {
                flagged.entry(t.as_str()).or_default().extend(check.recovered.iter().cloned());
            }
        }
        let tcol = table.column_names().iter().position(|c| *c == "tstamp");
        let name_cols: Vec<(usize, &str)> = table
            .column_names()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| names.iter().find(|n| **n == *c).map(|n| (i, *n)))
            .collect();
        let mut cells = Vec::with_capacity(table.row_count());
        for row in 0..table.row_count() {
            let tstamp = match tcol.and_then(|c| table.cell(row, c)) {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            };
            let names_flagged = tstamp.as_deref().and_then(|t| flagged.get(t));
            let diverged = names_flagged
                .is_some_and(|set| name_cols.iter().any(|(c, n)| set.contains(*n) && table.cell(row, *c).is_some()));
            cells.push(Some(Value::Bool(diverged)));
        }
        table.columns.push(flor_core::table::Column::new("diverged", cells));
        Ok(table)
    }

    /// A read-only SQL query over the views `runs`, `logs`, `loops`,
    /// `timings`, `outputs`, `checkpoints`, stopped after the project's
    /// time limit ([`Project::query_limit`]) with
    /// [`flor_core::StoreError::TimedOut`]. Raw SQL is an optional
    /// capability of a store: one without an SQL engine answers
    /// [`flor_core::StoreError::Unsupported`] (use [`Project::dataframe`]).
    pub fn query(&self, sql: &str) -> Result<Table> {
        Ok(self.store()?.query_within(sql, self.query_limit)?)
    }

    /// How long a user SQL query ([`Project::query`], a `--where`
    /// predicate) may run: `query_timeout` of `.flor/config.toml`, else
    /// [`crate::DEFAULT_QUERY_TIMEOUT`]; `None`: no limit.
    pub fn query_limit(&self) -> Option<Duration> {
        self.query_limit
    }

    /// Sets the time limit of user SQL queries (`None`: no limit), such as
    /// `flor query --timeout`.
    pub fn set_query_limit(&mut self, limit: Option<Duration>) {
        self.query_limit = limit;
    }

    /// The checkpoints of the run started at `tstamp`, in order.
    pub fn checkpoints(&self, tstamp: &str) -> Result<Vec<CheckpointMeta>> {
        let store = self.store()?;
        let runs = store.runs()?;
        let Some(run) = runs.iter().find(|r| r.meta.tstamp == tstamp) else {
            return Err(Error::UnknownRun { projid: self.projid.clone(), tstamp: tstamp.to_owned() });
        };
        Ok(store.checkpoints(run.key)?)
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
        let bytes = self.objects.get_sized(&meta.digest, meta.bytes)?;
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
