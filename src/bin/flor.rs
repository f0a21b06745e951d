//! The `flor` command line: list runs, pivot logged values, run SQL,
//! rebuild the query database from git, carry statements between script
//! versions, replay, and check scripts.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flor::{Project, StoreKind, SyncReport, Table, Value};

#[path = "flor/checkpoints.rs"]
mod checkpoints;
#[path = "flor/serve/mod.rs"]
mod serve;

/// Multiversion hindsight logging for machine-learning training.
///
/// Run inside a git repository where training scripts record with flor.
#[derive(Parser, Debug)]
#[command(name = "flor", version, about, long_about = None)]
struct Cli {
    /// Run as if started in DIR (any folder inside the repository).
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Output format (`parquet` and `arrow` are binary: to `--output FILE`
    /// or a pipe, never a terminal).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Write the output to FILE instead of standard output.
    #[arg(short = 'o', long, global = true, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Query database engine, overriding `store` in .flor/config.toml.
    /// Switching engines rebuilds the new one's database from git.
    #[arg(long, global = true, value_name = "ENGINE", value_parser = parse_store)]
    store: Option<StoreKind>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// An Apache Parquet file (Snappy-compressed).
    Parquet,
    /// An Arrow IPC stream (for pyarrow, polars, DuckDB, ...).
    Arrow,
}

impl Format {
    /// The streamed writer's format (`None`: the aligned text table).
    fn export(self) -> Option<flor::export::Format> {
        match self {
            Format::Table => None,
            Format::Csv => Some(flor::export::Format::Csv),
            Format::Json => Some(flor::export::Format::Json),
            Format::Parquet => Some(flor::export::Format::Parquet),
            Format::Arrow => Some(flor::export::Format::Arrow),
        }
    }
}

/// Refuses binary output (Parquet, Arrow) to a terminal, before any work.
fn check_binary_output(format: Format, output: Option<&Path>) -> flor::Result<()> {
    match format.export() {
        Some(f) if f.is_binary() && output.is_none() && io::stdout().is_terminal() => Err(flor::Error::Config {
            path: "the command line".into(),
            line: 0,
            key: format!("--format {}", f.name()),
            message: format!(
                "{} is a binary format and standard output is a terminal: add `--output FILE`, or pipe the output into a program",
                if f == flor::export::Format::Parquet { "Parquet" } else { "an Arrow IPC stream" }
            ),
        }),
        _ => Ok(()),
    }
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    s.parse::<StoreKind>().map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the recorded runs, oldest first (`flor stat`, FlorDB's spelling, too).
    #[command(alias = "stat")]
    Runs,
    /// Pivot logged values: one row per run and loop position, one column per NAME.
    ///
    /// Without names: one row per run with its run-level values (args and
    /// logs outside loops).
    Dataframe {
        /// Names given to `log`/`arg`.
        names: Vec<String>,
        /// Add a `diverged` column: true where a value was recovered by a
        /// replay that recomputed a recorded value differently.
        #[arg(long)]
        diverged: bool,
        /// Only runs whose run-level columns (projid, tstamp, filename, args) satisfy this SQL predicate, e.g. "lr > 0.05".
        #[arg(long = "where", value_name = "PREDICATE")]
        where_clause: Option<String>,
        /// Only these iterations of a loop: LOOP=SPEC, SPEC one of all, last, none, or indices such as 0,3,5-7 (repeatable).
        #[arg(long = "iter", value_name = "LOOP=SPEC")]
        iters: Vec<flor::IterSelect>,
        /// Print on stderr what the selection reads: runs and records selected, before the pivot.
        #[arg(long)]
        explain: bool,
    },
    /// Run a read-only SQL query over the views runs, logs, loops, timings, outputs, checkpoints, replay_checks.
    Query {
        /// The SQL text (one statement).
        sql: String,
        /// Stop the query after SECS seconds (0: no limit; default: `query_timeout` in .flor/config.toml, else 60).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// List the names of logged values and args.
    Names,
    /// Drop the query database and rebuild it from the run records in git (`flor unpack`, FlorDB's spelling, too).
    #[command(alias = "unpack")]
    Rebuild,
    /// Carry log statements from the newest version of a script into an old one.
    ///
    /// Prints the old version with the statements inserted (to stdout, or to
    /// FILE with --out) and one line per statement on stderr: where it was
    /// placed and which identifiers were renamed, that it is already there,
    /// or why it could not be placed. Needs no repository. Exit status 4
    /// when any statement could not be placed.
    #[command(
        after_help = "Example:\n  flor propagate --from train.py --name grad_norm --to old/train.py --out old/train.py"
    )]
    Propagate {
        /// The newest version of the script, holding the statements.
        #[arg(long = "from", value_name = "NEW.py")]
        from: PathBuf,
        /// Line (1-based) of a statement of NEW to carry; repeatable.
        #[arg(long = "line", value_name = "N")]
        lines: Vec<usize>,
        /// Carry the `flor.log("NAME", ...)` statements of NEW; repeatable.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// The old version to carry them into.
        #[arg(long = "to", value_name = "OLD.py")]
        to: PathBuf,
        /// Write the result here instead of to stdout (may be OLD itself).
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Fill in values for past runs: replay them with `flor.log` statements of the newest script.
    ///
    /// The statements are the `flor.log("NAME", ...)` calls of the working
    /// tree's version of the script. Every recorded run of that script that
    /// lacks a NAME (--force: every run) is replayed from its checkpoints, in
    /// its own materialized copy of its code version with the statements
    /// carried in; your checkout is never touched. A plan with the
    /// propagation per code version and a cost estimate comes first.
    /// Interrupted replays resume: the same command does only what is missing.
    /// Exit status 5 when some run could not be replayed.
    #[command(
        after_help = "Examples:\n  flor replay --apply grad_norm --dry-run\n  flor replay --apply grad_norm,acc --where 'lr > 0.01 AND epochs >= 5' --jobs 4 --yes\n  flor replay --apply @42 --iter epoch=last --override device=cpu"
    )]
    Replay {
        /// Names whose `flor.log` statements to replay (comma-separated),
        /// or `@LINE`: the statement at that line of the newest script.
        #[arg(long = "apply", value_name = "NAME|@LINE[,...]", value_delimiter = ',')]
        names: Vec<String>,
        /// FlorDB's older spelling, `flor replay NAMES [WHERE]`: the same
        /// as `--apply NAMES --where WHERE`.
        #[arg(value_name = "NAMES", num_args = 0..=2, hide = true)]
        positional: Vec<String>,
        /// Record values only in these iterations of loop LOOP (SPEC: all,
        /// last, none, or indices such as 0,3,5-7); repeatable. The outer
        /// loop's selection decides which iterations execute (and the
        /// estimate): `--iter epoch=last` replays each run's last epoch only.
        #[arg(long = "iter", value_name = "LOOP=SPEC")]
        iters: Vec<flor::IterSelect>,
        /// Replace the recorded value of an environment-shaped arg in the
        /// replay (`flor.arg(KEY, ...)` returns VALUE), e.g. device=cpu to
        /// replay a GPU run on a CPU machine; repeatable. Allowed keys:
        /// `[replay] overrides` in .flor/config.toml (default: device).
        #[arg(long = "override", value_name = "KEY=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, String)>,
        /// A SQL predicate over the run-level columns of `flor dataframe` (tstamp, filename, args).
        #[arg(long = "where", value_name = "PREDICATE")]
        where_clause: Option<String>,
        /// Worker processes (default: the number of cores).
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Show the plan and stop.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Replay runs that already have the names too.
        #[arg(long)]
        force: bool,
        /// Only this script (path relative to the repository root).
        #[arg(long, value_name = "SCRIPT")]
        script: Option<String>,
        /// Fail a run's replay when a recomputed recorded value differs from
        /// the recorded one (default: keep its values, flagged `diverged`).
        #[arg(long)]
        strict: bool,
        /// Leave NAME out of the divergence check (values that cannot
        /// repeat, such as times); repeatable or comma-separated.
        #[arg(long = "no-check", value_name = "NAME", value_delimiter = ',')]
        no_check: Vec<String>,
        /// Where segments run: `local` (processes here, the default) or
        /// `ray` (tasks on a Ray cluster; default from `[replay] executor`
        /// in .flor/config.toml).
        #[arg(long, value_name = "local|ray", value_parser = parse_executor)]
        executor: Option<flor::ExecutorKind>,
        /// The Ray cluster, as `ray.init` takes it (HOST:PORT; default
        /// `[replay] ray_address`, else `auto`).
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
    /// Show captured print and logging lines, with the loop position each was written at.
    ///
    /// One row per line: projid, tstamp, filename, one column per loop
    /// (the iteration index), channel (`io::stdout`, `io::stderr`,
    /// `io::log::<level>`), line. Runs oldest first, lines in the order
    /// they were written.
    #[command(
        after_help = "Examples:\n  flor io\n  flor io --channel io::log          # every logging level\n  flor io --channel stderr --limit 20\n  flor io --where \"lr > 0.05\" --format csv"
    )]
    Io {
        /// Only this channel: exact or a `::` prefix (`io::log` is every level); `stdout` means `io::stdout`.
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<String>,
        /// Only runs whose run-level columns (projid, tstamp, filename, args) satisfy this SQL predicate, e.g. "lr > 0.05".
        #[arg(long = "where", value_name = "PREDICATE")]
        where_clause: Option<String>,
        /// Only these iterations of a loop: LOOP=SPEC (as `flor dataframe --iter`; lines outside the loop stay).
        #[arg(long = "iter", value_name = "LOOP=SPEC")]
        iters: Vec<flor::IterSelect>,
        /// Show at most N lines (the first N).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Find `name: value` / `name=value` metrics in captured lines (see `flor io`).
    ///
    /// --preview shows every value --extract would add, with the line it
    /// was read from, and writes nothing; without a flag, the captured
    /// lines themselves (as `flor io`). The rules are conservative: a
    /// name then `:` or `=` then a number; nothing from URLs, times,
    /// dates, versions, units or percentages (`acc: 90%`); a leading
    /// `epoch 3 |`, `Epoch 1/10` or `step: 12` (epoch, step, iteration,
    /// iter, batch) is the line's loop index, not a value; at most 8 values
    /// a line.
    #[command(
        after_help = "Examples:\n  flor capture --preview\n  flor capture --preview --limit 10 --format csv\n  flor capture --extract && flor dataframe loss"
    )]
    Capture {
        /// Show what would be extracted, and from which line; write nothing.
        #[arg(long)]
        preview: bool,
        /// Add the values to the metric table: written per run to its ref (a
        /// rebuild or a clone keeps them), shown by `dataframe` beside logged
        /// values (a `flor.log` of the same name and position wins); running it
        /// again replaces the earlier extraction.
        #[arg(long, conflicts_with = "preview")]
        extract: bool,
        /// Show at most N values (the first N).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show which engine holds the query database, and where.
    Store,
    /// Check scripts for code that replay cannot reproduce as written.
    ///
    /// Prints each finding as `SCRIPT:LINE:COLUMN: SEVERITY[CODE]: message`
    /// with a hint: warnings (`flor::rebound-checkpoint`: a name passed to
    /// `flor.checkpointing` that the loop rebinds; `flor::uncheckpointed-generator`:
    /// a random generator the loop draws from that no checkpoint holds) and
    /// notes (`flor::unseeded-randomness`). `--format json` or `csv` gives
    /// one row per finding. Needs no repository. Exit status 6 when some
    /// script has a warning.
    #[command(after_help = "Examples:\n  flor lint train.py\n  flor lint --format json src/*.py")]
    Lint {
        /// The scripts to check.
        #[arg(value_name = "SCRIPT", required = true)]
        scripts: Vec<PathBuf>,
    },
    /// Framework plugins: list, inspect and install them.
    ///
    /// A plugin teaches flor one ML framework (its checkpoint formats, its
    /// source idioms) as a sandboxed WebAssembly component. flor loads the
    /// plugins built into it (pytorch, jax), then the per-user folder's
    /// (`$FLOR_PLUGIN_DIR`, default `~/.local/share/flor/plugins`), then
    /// the project's `.flor/plugins/`; a later plugin replaces an earlier
    /// one of the same name.
    #[command(
        after_help = "Examples:\n  flor plugins list\n  flor plugins inspect pytorch\n  flor plugins install target/wasm32-unknown-unknown/release/my_plugin.wasm"
    )]
    Plugins {
        #[command(subcommand)]
        action: PluginsCommand,
    },
    /// Checkpoint objects: pack, list, inspect, verify, garbage-collect.
    ///
    /// flor stores each checkpoint as an object named by its BLAKE3
    /// digest in .flor/objects. An object a checkpoint format describes
    /// (safetensors, .npy, and the formats of the plugins: PyTorch, JAX,
    /// ...) is packed into chunks, one per tensor, so tensors that do not
    /// change between checkpoints are stored once, and its tensors'
    /// statistics go to the `tensors` view (`flor query`) and to
    /// `tensor:<checkpoint>.<tensor>:<stat>` names (`flor dataframe`).
    /// Every flor command packs some of the checkpoints of finished runs
    /// on its own (`[checkpoints] auto_pack_mb`, `auto_pack_seconds` in
    /// .flor/config.toml); packed and whole objects read the same.
    #[command(
        after_help = "Examples:\n  flor checkpoints pack\n  flor checkpoints ls 2026-03-01T10:00\n  flor checkpoints inspect 2026-03-01T10:00:00.123456 model 4\n  flor checkpoints verify\n  flor checkpoints gc --dry-run"
    )]
    Checkpoints {
        #[command(subcommand)]
        action: checkpoints::CheckpointsCommand,
    },
    /// Serve a local web page of runs, curves across code versions and replay plans.
    ///
    /// Read-only: it writes no record, ref or working-tree file (it keeps
    /// the query database in sync) and holds no store lock between
    /// requests, so training runs and other flor commands go on meanwhile.
    /// Binds 127.0.0.1; any other address needs --token. The page and its
    /// JSON API (/api) ship inside this binary.
    #[command(
        after_help = "Examples:\n  flor serve --open\n  flor serve --port 0\n  flor serve --host 0.0.0.0 --token \"$(openssl rand -hex 16)\""
    )]
    Serve(serve::ServeArgs),
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// List the plugins flor loads here, and plugin files that failed to load.
    List,
    /// Show a plugin: formats, languages, origin, digest, interface, limits.
    Inspect {
        /// A loaded plugin's name, or the path of a plugin file (`.wasm`).
        #[arg(value_name = "NAME|PATH")]
        plugin: String,
    },
    /// Check a plugin file and install it into the project's `.flor/plugins/`.
    ///
    /// The file is loaded first (interface version, imports, exports,
    /// `describe`); a plugin that fails is not installed. It is copied as
    /// `<name>.wasm`, replacing an installed plugin of the same name.
    Install {
        /// The plugin: a component, or a core module built with flor-plugin-sdk
        /// for wasm32-unknown-unknown.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Install into the per-user folder instead (every project of this user).
        #[arg(long)]
        user: bool,
    },
}

/// Exit status when the command worked but some records could not be read.
const EXIT_BAD_RECORDS: u8 = 3;

/// Exit status of `flor propagate` when some statement could not be placed
/// (the others were, and the output was written).
const EXIT_NOT_PROPAGATED: u8 = 4;

/// Exit status of `flor replay` when some run could not be replayed (the
/// others were, and their values are stored).
const EXIT_REPLAY_INCOMPLETE: u8 = 5;

/// Exit status of `flor lint` when some script has a finding of warning
/// severity (and no script failed to be checked).
const EXIT_LINT_WARNINGS: u8 = 6;

/// Points a FlorDB user at flor's name when the command was given by its
/// FlorDB spelling (`unpack`, `stat`: accepted as aliases).
fn note_flordb_spelling(command: &Command) {
    let said = |word: &str| std::env::args().skip(1).any(|a| a == word);
    match command {
        Command::Rebuild if said("unpack") => {
            eprintln!("flor: `flor unpack` is FlorDB's name for `flor rebuild` (the query database, rebuilt from git)")
        }
        Command::Runs if said("stat") => {
            eprintln!(
                "flor: `flor stat` is FlorDB's name; `flor runs` lists the runs (and `flor store` the query database)"
            )
        }
        _ => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    note_flordb_spelling(&cli.command);
    if let Command::Propagate { from, lines, names, to, out } = &cli.command {
        return propagate(from, lines, names, to, out.as_deref()).unwrap_or_else(|e| {
            eprintln!("flor: error: {e}");
            ExitCode::FAILURE
        });
    }
    if let Command::Lint { scripts } = &cli.command {
        let scripts: Vec<PathBuf> =
            scripts.iter().map(|s| cli.dir.as_deref().unwrap_or(Path::new("")).join(s)).collect();
        return lint(&scripts, cli.format, cli.output.as_deref());
    }
    if let Command::Serve(args) = &cli.command {
        let start = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        return match serve::serve(start, cli.store, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flor: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Plugins { action } = &cli.command {
        let start = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
        return plugins_command(action, &start, cli.format, cli.output.as_deref()).unwrap_or_else(|e| {
            eprintln!("flor: error: {e}");
            ExitCode::FAILURE
        });
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flor: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !e.to_string().contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> flor::Result<ExitCode> {
    let start = match &cli.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(|e| flor::Error::Io {
            action: "read",
            path: "the current directory".into(),
            source: e,
        })?,
    };
    check_binary_output(cli.format, cli.output.as_deref())?;
    let mut project = Project::builder(&start)
        .store_kind(cli.store)
        .fresh_database(matches!(cli.command, Command::Rebuild))
        .formats_with(checkpoints::formats_of(start.clone()))
        .open()?;
    let mut progress = progress_printer();
    let report = match cli.command {
        Command::Rebuild => {
            let report = project.rebuild_with_progress(&mut progress)?;
            let runs = project.runs()?;
            eprintln!(
                "flor: rebuilt the query database from git: {} runs, {} records from {} record files",
                runs.len(),
                report.records,
                report.files
            );
            report
        }
        _ => project.sync_with_progress(&mut progress)?,
    };
    match &cli.command {
        Command::Checkpoints { action } => {
            let code = checkpoints::run(&mut project, action, cli.format, cli.output.as_deref())?;
            let problems = report_problems(&report);
            return Ok(if problems == ExitCode::SUCCESS { code } else { problems });
        }
        // After a rebuild, every checkpoint whose tensor index is there
        // comes back at once; a clone without the objects says so.
        Command::Rebuild => checkpoints::after_rebuild(&mut project),
        _ => checkpoints::automatically(&mut project),
    }
    if let Command::Replay {
        names,
        positional,
        iters,
        overrides,
        where_clause,
        jobs,
        yes,
        dry_run,
        force,
        script,
        strict,
        no_check,
        executor,
        address,
    } = &cli.command
    {
        let (names, where_clause) = replay_names(names, positional, where_clause).unwrap_or_else(|message| {
            <Cli as clap::CommandFactory>::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit()
        });
        let opts = flor::replay::ReplayOptions {
            names,
            where_clause,
            iters: iters.clone(),
            overrides: overrides.iter().cloned().collect(),
            jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            force: *force,
            script: script.clone(),
            propagators: Some(replay_propagators(project.root())),
            no_check: no_check.clone(),
            strict: *strict,
            executor: *executor,
            ray_address: address.clone(),
        };
        return replay(&mut project, &opts, *yes, *dry_run);
    }
    if let Command::Capture { extract: true, .. } = &cli.command {
        let extracted = project.extract()?;
        capture_extract_summary(&extracted);
        let mut problems = report.clone();
        problems.problems.extend(extracted.sync.problems.iter().cloned());
        problems.notes.extend(extracted.sync.notes.iter().cloned());
        return Ok(report_problems(&problems));
    }
    if let Command::Query { timeout: Some(secs), .. } = &cli.command {
        project.set_query_limit((*secs > 0).then(|| std::time::Duration::from_secs(*secs)));
    }
    let table = match command_table(&project, &cli.command) {
        // Damage the sync did not touch: the database is a cache, rebuild it
        // from git and answer from the new one.
        Err(flor::Error::Query(flor::core::StoreError::Damaged { path, message })) => {
            eprintln!("flor: note: the query database {path} is damaged ({message}); rebuilding it from the run records in git");
            project.rebuild_with_progress(&mut progress)?;
            command_table(&project, &cli.command)?
        }
        other => other?,
    };
    if !table.columns.is_empty() {
        emit_table(table, cli.format, cli.output.as_deref())?;
    }
    Ok(report_problems(&report))
}

/// Creates the `--output` file.
fn create_output(path: &Path) -> flor::Result<std::fs::File> {
    std::fs::File::create(path).map_err(|e| flor::Error::Io { action: "create", path: path.to_owned(), source: e })
}

/// Writes `table` to `output` (a file) or standard output, in `format`:
/// the aligned table, or streamed by [`flor::export`] (binary formats never
/// to a terminal). A reader that goes away early (`| head`) is no error.
fn emit_table(table: Table, format: Format, output: Option<&Path>) -> flor::Result<()> {
    let Some(export) = format.export() else {
        return match output {
            Some(path) => {
                let file = create_output(path)?;
                write_aligned(&table, file, false).map_err(|e| flor::Error::Io {
                    action: "write",
                    path: path.to_owned(),
                    source: e,
                })
            }
            None => print_table(&table),
        };
    };
    check_binary_output(format, output)?;
    let written = match output {
        Some(path) => flor::export::write(table, export, create_output(path)?),
        None => flor::export::write(table, export, io::stdout()),
    };
    match written {
        Err(e) if output.is_none() && e.is_broken_pipe() => Ok(()),
        other => Ok(other?),
    }
}

/// `flor dataframe --explain`: what the selection leaves the pivot to read.
fn explain_selection(project: &Project, selection: &flor::Selection) -> flor::Result<()> {
    let runs = project.runs()?;
    let filter = project.resolve(selection)?;
    let records = |rs: &mut dyn Iterator<Item = &flor::core::store::RunRow>| rs.map(|r| r.records).sum::<u64>();
    let total = records(&mut runs.iter());
    let (n, read) = match &filter.runs {
        None => (runs.len(), total),
        Some(keys) => (keys.len(), records(&mut runs.iter().filter(|r| keys.contains(&r.key)))),
    };
    let mut err = io::stderr().lock();
    let by = selection.where_clause.as_deref().map_or(String::new(), |w| format!(" (--where {w})"));
    let _ = writeln!(
        err,
        "selection: {n} of {} runs{by}; the pivot reads their records only: at most {read} of {total}",
        runs.len()
    );
    for i in &filter.iters {
        let _ = writeln!(
            err,
            "selection: --iter {i}: records in other iterations of `{}` are dropped as they are read, before the pivot",
            i.loop_name
        );
    }
    Ok(())
}

/// The answer of a query command (empty for the others).
fn command_table(project: &Project, command: &Command) -> flor::Result<Table> {
    Ok(match command {
        Command::Runs => runs_table(project)?,
        Command::Dataframe { names, diverged, where_clause, iters, explain } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let selection = flor::Selection { where_clause: where_clause.clone(), iters: iters.clone() };
            if *explain {
                explain_selection(project, &selection)?;
            }
            if *diverged {
                project.dataframe_diverged_where(&names, &selection)?
            } else {
                project.dataframe_where(&names, &selection)?
            }
        }
        Command::Query { sql, .. } => project.query(sql)?,
        Command::Names => {
            let mut t = Table::with_columns(["name", "kind", "count"]);
            for n in project.names()? {
                t.push_row(vec![Some(Value::from(n.name)), Some(Value::from(n.kind)), Some(Value::from(n.count))]);
            }
            t
        }
        Command::Io { channel, where_clause, iters, limit } => {
            let selection = flor::Selection { where_clause: where_clause.clone(), iters: iters.clone() };
            first_rows(project.io(channel.as_deref(), &selection)?, *limit)
        }
        Command::Capture { preview: true, limit, .. } => capture_preview(project, *limit)?,
        Command::Capture { limit, .. } => first_rows(project.io(None, &flor::Selection::default())?, *limit),
        Command::Rebuild
        | Command::Propagate { .. }
        | Command::Replay { .. }
        | Command::Lint { .. }
        | Command::Plugins { .. }
        | Command::Checkpoints { .. }
        | Command::Serve(_) => Table::default(),
        Command::Store => {
            let mut t = Table::with_columns(["store", "path"]);
            // The command line always opens a built-in engine.
            if let Some(kind) = project.store_kind() {
                let path = kind.database_path(project.flor_dir());
                t.push_row(vec![Some(Value::from(kind.as_str())), Some(Value::from(path.display().to_string()))]);
            }
            t
        }
    })
}

/// `--executor local|ray`.
fn parse_executor(s: &str) -> Result<flor::ExecutorKind, String> {
    s.parse()
}

/// `--override KEY=VALUE`.
fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, such as device=cpu; got {s:?}")),
    }
}

/// The names and predicate of `flor replay`: `--apply`/`--where`, or
/// FlorDB's older positional `NAMES [WHERE]` (not both).
fn replay_names(
    names: &[String],
    positional: &[String],
    where_clause: &Option<String>,
) -> Result<(Vec<String>, Option<String>), String> {
    let usage = |message: String| message;
    match (names.is_empty(), positional) {
        (false, []) => Ok((names.to_vec(), where_clause.clone())),
        (false, _) => Err(usage(format!(
            "flor replay: --apply was given, so the positional {:?} is not accepted; pass a filter as --where",
            positional.join(" ")
        ))),
        (true, []) => Err(usage("flor replay: nothing to apply; name the statements, e.g. --apply loss,acc".into())),
        (true, [vars, rest @ ..]) => {
            if !rest.is_empty() && where_clause.is_some() {
                return Err(usage("flor replay: the predicate is given twice (positional and --where)".into()));
            }
            let names = vars.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
            Ok((names, rest.first().cloned().or_else(|| where_clause.clone())))
        }
    }
}

/// The first `limit` rows of `table` (all without a limit).
fn first_rows(table: Table, limit: Option<usize>) -> Table {
    match limit {
        Some(n) if n < table.row_count() => {
            let mut t = Table::with_columns(table.column_names());
            for row in table.rows().into_iter().take(n) {
                t.push_row(row);
            }
            t
        }
        _ => table,
    }
}

/// `flor capture --preview`: the values extraction would add (a table on
/// stdout) and a summary on stderr.
fn capture_preview(project: &Project, limit: Option<usize>) -> flor::Result<Table> {
    let found = project.extractions()?;
    let mut err = io::stderr().lock();
    if found.values.row_count() == 0 {
        let _ =
            writeln!(err, "flor: nothing extractable from {} captured line(s); no values would be added", found.lines);
        return Ok(Table::default());
    }
    let _ = writeln!(
        err,
        "flor: would extract {} value(s) of {} metric(s) from {} captured line(s): {}{}",
        found.values.row_count(),
        found.names.len(),
        found.lines,
        found.names.join(", "),
        if found.indexes.is_empty() { String::new() } else { format!("; indexed by {}", found.indexes.join(", ")) }
    );
    let _ = writeln!(err, "flor: preview only: nothing was written");
    Ok(first_rows(found.values, limit))
}

/// What `flor capture --extract` did, on standard error.
fn capture_extract_summary(r: &flor::extract::ExtractReport) {
    let mut err = io::stderr().lock();
    if r.runs == 0 && r.written == 0 {
        let _ = writeln!(err, "flor: nothing extractable in the runs' captured output; nothing was written");
    } else {
        let _ = writeln!(
            err,
            "flor: extracted {} value(s) of {} metric(s) from the captured output of {} run(s): {}{}",
            r.values,
            r.names.len(),
            r.runs,
            r.names.join(", "),
            if r.iterations > 0 {
                format!("; {} loop iteration(s) from printed indexes", r.iterations)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            err,
            "flor: {} run(s) written to their refs, {} already up to date{}",
            r.written,
            r.unchanged,
            if r.rebuilt { "; an earlier extraction changed, so the query database was rebuilt from git" } else { "" }
        );
        if !r.names.is_empty() {
            let _ = writeln!(err, "flor: see them with `flor dataframe {}`", r.names.join(" "));
        }
    }
    if !r.running.is_empty() {
        let _ = writeln!(
            err,
            "flor: {} run(s) still recording were left out ({}); run `flor capture --extract` again when they end",
            r.running.len(),
            r.running.join(", ")
        );
    }
}

fn replay(
    project: &mut Project,
    opts: &flor::replay::ReplayOptions,
    yes: bool,
    dry_run: bool,
) -> flor::Result<ExitCode> {
    let plan = flor::replay::plan(project, opts, &flor::replay::CostModel::default())?;
    print!("{}", plan.render());
    if plan.is_empty() {
        println!("Nothing to replay.");
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        println!("Dry run: nothing was executed.");
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        if !io::stdin().is_terminal() {
            eprintln!(
                "flor: not replaying: no terminal to confirm on; pass --yes to proceed (or --dry-run to only plan)"
            );
            return Ok(ExitCode::FAILURE);
        }
        print!("Proceed? [y/N] ");
        let _ = io::stdout().flush();
        let mut answer = String::new();
        io::stdin().read_line(&mut answer).map_err(|e| flor::Error::Io {
            action: "read",
            path: "stdin".into(),
            source: e,
        })?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            println!("Not replaying.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let bars = io::stderr().is_terminal();
    let summary = flor::replay::execute_with(project, opts, &plan, bars, &mut |line| eprintln!("flor: {line}"))?;
    print!("{}", summary.render(&plan));
    let failed = summary.runs.iter().filter(|r| r.failure.is_some()).count() + plan.skipped.len();
    Ok(if failed > 0 { ExitCode::from(EXIT_REPLAY_INCOMPLETE) } else { ExitCode::SUCCESS })
}

/// Shows `ingesting runs from git: done/total (values/s)` on a terminal's
/// stderr once a sync has taken more than a second, at most ten times a
/// second; nothing on anything else (tests, pipes, logs).
fn progress_printer() -> impl FnMut(&flor::ingest::SyncProgress) {
    use std::time::{Duration, Instant};
    let terminal = io::stderr().is_terminal();
    let (mut started, mut shown) = (None::<Instant>, None::<Instant>);
    move |p| {
        let begun = *started.get_or_insert_with(Instant::now);
        let finished = p.done >= p.total;
        if !terminal || begun.elapsed() < Duration::from_secs(1) && shown.is_none() {
            return;
        }
        if shown.is_none() && finished || !finished && shown.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        shown = Some(Instant::now());
        let secs = begun.elapsed().as_secs_f64();
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\rflor: ingesting runs from git: {}/{} ({:.1}M values/s, {secs:.1} s) ",
            p.done,
            p.total,
            p.records as f64 / secs / 1e6
        );
        if finished {
            let _ = writeln!(err);
            (started, shown) = (None, None);
        }
    }
}

fn runs_table(project: &Project) -> flor::Result<Table> {
    let mut t = Table::with_columns(["tstamp", "filename", "status", "records", "commit", "host", "ended", "argv"]);
    for r in project.runs()? {
        let m = r.meta;
        let commit = m.commit.as_deref().map(|c| c.chars().take(10).collect::<String>());
        t.push_row(vec![
            Some(Value::from(m.tstamp)),
            Some(Value::from(m.filename)),
            Some(Value::from(m.status.as_str())),
            Some(Value::from(r.records)),
            commit.map(Value::from),
            Some(Value::from(m.host)),
            m.ended.map(Value::from),
            Some(Value::from(m.argv.join(" "))),
        ]);
    }
    Ok(t)
}

/// Writes `table` as aligned text (`terminal`: clip wide cells).
fn write_aligned(table: &Table, out: impl Write, terminal: bool) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    table.write_aligned(&mut out, if terminal { 40 } else { usize::MAX })?;
    out.flush()
}

/// Writes `table` as aligned text to standard output.
fn print_table(table: &Table) -> flor::Result<()> {
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    let result = write_aligned(table, stdout.lock(), terminal);
    match result {
        Ok(()) => Ok(()),
        // `flor dataframe loss | head` closes the pipe early: not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(flor::Error::Io { action: "write", path: "standard output".into(), source: e }),
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `flor propagate`: no repository involved.
fn propagate(
    from: &Path,
    lines: &[usize],
    names: &[String],
    to: &Path,
    out: Option<&Path>,
) -> Result<ExitCode, String> {
    use flor_propagate::Outcome;
    let usage = |msg: String| msg;
    let registry = flor_propagate::registry();
    let propagator = registry.for_path(to).or_else(|| registry.for_path(from)).ok_or_else(|| {
        let supported: Vec<String> = registry.extensions().iter().map(|e| format!(".{e}")).collect();
        usage(format!("no propagator for `{}` (supported: {})", to.display(), supported.join(", ")))
    })?;
    let new = read_text(from)?;
    let old = read_text(to)?;
    let mut wanted: Vec<usize> = lines.to_vec();
    if !names.is_empty() {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let found =
            propagator.log_statement_lines(&new, &names).map_err(|e| usage(format!("`{}`: {e}", from.display())))?;
        if found.is_empty() {
            return Err(usage(format!("`{}` has no flor.log statement named {}", from.display(), names.join(", "))));
        }
        wanted.extend(found);
    }
    if wanted.is_empty() {
        return Err(usage("say which statements to carry: --line N or --name NAME".into()));
    }
    wanted.sort_unstable();
    wanted.dedup();
    let result = propagator
        .propagate(&new, &wanted, &old)
        .map_err(|e| usage(format!("cannot propagate from `{}` to `{}`: {e}", from.display(), to.display())))?;
    let mut failed = 0;
    for (line, outcome) in wanted.iter().zip(&result.outcomes) {
        if matches!(outcome, Outcome::Failed { .. }) {
            failed += 1;
        }
        eprintln!("line {line} -> {outcome}");
    }
    match out {
        Some(path) => {
            std::fs::write(path, &result.source).map_err(|e| format!("cannot write {}: {e}", path.display()))?
        }
        None => write_stdout(result.source.as_bytes())?,
    }
    if failed > 0 {
        eprintln!(
            "flor: {failed} of {} statement(s) could not be placed (exit status {EXIT_NOT_PROPAGATED})",
            wanted.len()
        );
        Ok(ExitCode::from(EXIT_NOT_PROPAGATED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// `flor lint`: no repository involved. Scripts that cannot be checked are
/// reported and the others checked; the exit status is a failure then.
fn lint(scripts: &[PathBuf], format: Format, output: Option<&Path>) -> ExitCode {
    // The plugins of the first script's project (or of the current folder's).
    let start = scripts.first().and_then(|p| p.parent()).filter(|p| !p.as_os_str().is_empty());
    let registry = match flor::plugins::load(start.unwrap_or(Path::new(".")), &flor::plugins::Options::default()) {
        Ok(plugins) => {
            report_plugin_failures(&plugins);
            flor::plugins::propagators(&plugins)
        }
        Err(e) => {
            eprintln!("flor: warning: framework plugins not loaded, so their checks are missing: {e}");
            flor_propagate::registry()
        }
    };
    let mut text = String::new();
    let mut table = Table::with_columns(["script", "line", "column", "severity", "code", "message", "hint"]);
    let (mut warnings, mut failed) = (0, 0);
    for path in scripts {
        let shown = path.display().to_string();
        let findings = match flor::lint::lint_file_with_failures(path, &registry) {
            Ok(Some((f, failures))) => {
                for (checker, why) in failures {
                    eprintln!(
                        "flor: warning: {shown}: {checker} could not check it, so its findings are missing: {why}"
                    );
                }
                f
            }
            Ok(None) => {
                let supported: Vec<String> = registry.extensions().iter().map(|e| format!(".{e}")).collect();
                eprintln!("flor: error: no source checks for `{shown}` (supported: {})", supported.join(", "));
                failed += 1;
                continue;
            }
            Err(e) => {
                eprintln!("flor: error: {e}");
                failed += 1;
                continue;
            }
        };
        warnings += findings.iter().filter(|f| f.severity == flor::core::propagate::Severity::Warning).count();
        if findings.is_empty() {
            text.push_str(&format!("{shown}: no findings\n"));
        } else {
            text.push_str(&flor::lint::render(&shown, &findings, false));
        }
        for f in findings {
            table.push_row(vec![
                Some(Value::from(shown.clone())),
                Some(Value::from(f.line)),
                Some(Value::from(f.column)),
                Some(Value::from(f.severity.as_str())),
                Some(Value::from(f.code)),
                Some(Value::from(f.message)),
                f.hint.map(Value::from),
            ]);
        }
    }
    let written = match (format, output) {
        (Format::Table, None) => write_stdout(text.as_bytes()),
        (Format::Table, Some(path)) => {
            std::fs::write(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        (_, output) => emit_table(table, format, output).map_err(|e| e.to_string()),
    };
    if let Err(e) = written {
        eprintln!("flor: error: {e}");
        return ExitCode::FAILURE;
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else if warnings > 0 {
        ExitCode::from(EXIT_LINT_WARNINGS)
    } else {
        ExitCode::SUCCESS
    }
}

/// The propagators replay plans with: flor's, with the plugins' source
/// checks (a plugin set that fails to load is a warning; replay goes on
/// without their findings).
fn replay_propagators(root: &Path) -> flor_core::propagate::Registry {
    match flor::plugins::load(root, &flor::plugins::Options::default()) {
        Ok(plugins) => {
            report_plugin_failures(&plugins);
            flor::plugins::propagators(&plugins)
        }
        Err(e) => {
            eprintln!("flor: warning: framework plugins not loaded, so the plan lacks their checks: {e}");
            flor_propagate::registry()
        }
    }
}

pub(crate) fn report_plugin_failures(plugins: &flor::plugins::Plugins) {
    for f in plugins.failures() {
        eprintln!("flor: warning: plugin file {} not loaded: {}", f.path.display(), f.error);
    }
}

/// `flor plugins list | inspect | install`.
fn plugins_command(
    action: &PluginsCommand,
    start: &Path,
    format: Format,
    output: Option<&Path>,
) -> Result<ExitCode, String> {
    use flor::plugins::host;
    let options = flor::plugins::Options::default();
    match action {
        PluginsCommand::List => {
            let plugins = flor::plugins::load(start, &options).map_err(|e| e.to_string())?;
            let mut t =
                Table::with_columns(["name", "version", "interface", "formats", "languages", "origin", "digest"]);
            for p in plugins.plugins() {
                let info = p.info();
                let formats: Vec<&str> = info.formats.iter().map(|f| f.name.as_str()).collect();
                t.push_row(vec![
                    Some(Value::from(info.name.clone())),
                    Some(Value::from(info.version.clone())),
                    Some(Value::from(info.interface_version.clone())),
                    Some(Value::from(formats.join(", "))),
                    Some(Value::from(info.languages.join(", "))),
                    Some(Value::from(p.origin().to_string())),
                    Some(Value::from(p.digest()[..16].to_owned())),
                ]);
            }
            emit(t, format, output)?;
            for r in plugins.replaced() {
                eprintln!(
                    "flor: note: {} {} ({}) is replaced by a later plugin of the same name",
                    r.name, r.version, r.origin
                );
            }
            report_plugin_failures(&plugins);
            Ok(if plugins.failures().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PluginsCommand::Inspect { plugin } => {
            let path = Path::new(plugin);
            let p: std::sync::Arc<host::Plugin> = if plugin.ends_with(".wasm") || path.is_file() {
                let cache = options.cache_dir.as_deref();
                let origin = host::Origin::File(path.to_owned());
                std::sync::Arc::new(
                    host::Plugin::load_file(path, origin, options.limits, cache).map_err(|e| e.to_string())?,
                )
            } else {
                let plugins = flor::plugins::load(start, &options).map_err(|e| e.to_string())?;
                plugins.get(plugin).map_err(|e| e.to_string())?.clone()
            };
            write_stdout(inspect_text(&p).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Install { path, user } => {
            let dir = if *user {
                host::user_dir().ok_or("no per-user plugin folder: set FLOR_PLUGIN_DIR or HOME")?
            } else {
                let repo =
                    flor_git::discover(start).map_err(|e| format!("{e} (install with --user outside a repository)"))?;
                repo.root.join(flor::FLOR_DIR).join(host::PROJECT_DIR)
            };
            let (p, previous) = host::install(path, &dir, &options).map_err(|e| e.to_string())?;
            let info = p.info();
            let replaced = previous.map(|v| format!(" (replacing version {v})")).unwrap_or_default();
            eprintln!("flor: installed plugin {} {} into {}{replaced}", info.name, info.version, p.origin());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn inspect_text(p: &flor::plugins::host::Plugin) -> String {
    let info = p.info();
    let mut s = format!(
        "{} {}
  {}
",
        info.name, info.version, info.summary
    );
    s.push_str(&format!(
        "  origin:     {} ({})
",
        p.origin(),
        p.origin().kind()
    ));
    s.push_str(&format!(
        "  digest:     blake3:{} ({} bytes)
",
        p.digest(),
        p.size()
    ));
    s.push_str(&format!(
        "  interface:  {}@{} (this flor speaks {})
",
        flor::plugins::host::INTERFACE_PACKAGE,
        info.interface_version,
        flor::plugins::host::INTERFACE_VERSION
    ));
    let imports = if p.imports().is_empty() { "none".to_owned() } else { p.imports().join(", ") };
    s.push_str(&format!(
        "  imports:    {imports}
"
    ));
    let limits = p.limits();
    s.push_str(&format!(
        "  limits:     {:?} per call, {} MiB of memory
",
        limits.deadline,
        limits.memory >> 20
    ));
    s.push_str(
        "  formats:
",
    );
    for f in &info.formats {
        s.push_str(&format!(
            "    {:<18} {}
",
            f.name, f.summary
        ));
    }
    if info.formats.is_empty() {
        s.push_str(
            "    (none)
",
        );
    }
    let langs = if info.languages.is_empty() { "none".to_owned() } else { info.languages.join(", ") };
    s.push_str(&format!(
        "  lint:       {langs}
"
    ));
    s
}

/// Writes a table to FILE or standard output in `format`.
fn emit(table: Table, format: Format, output: Option<&Path>) -> Result<(), String> {
    emit_table(table, format, output).map_err(|e| e.to_string())
}

/// Writes `bytes` to standard output; a closed pipe is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("cannot write standard output: {e}")),
        _ => Ok(()),
    }
}

fn report_problems(report: &SyncReport) -> ExitCode {
    for tstamp in &report.marked_failed {
        eprintln!("flor: run {tstamp} stopped without finishing (its process is gone); marked failed");
    }
    for note in &report.notes {
        eprintln!("flor: note: {note}");
    }
    for p in &report.problems {
        eprintln!("flor: warning: unreadable record skipped: {p}");
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "flor: {} record(s) could not be read; every other record was ingested (exit status {EXIT_BAD_RECORDS})",
            report.problems.len()
        );
        ExitCode::from(EXIT_BAD_RECORDS)
    }
}
