//! The `flor` command line: list runs, pivot logged values, run SQL, and
//! rebuild the query database from git.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flor::{Project, StoreKind, SyncReport, Table, Value};

/// Multiversion hindsight logging for machine-learning training.
///
/// Run inside a git repository where training scripts record with flor.
#[derive(Parser, Debug)]
#[command(name = "flor", version, about, long_about = None)]
struct Cli {
    /// Run as if started in DIR (any folder inside the repository).
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Output format (`parquet` needs `--output` and a build with DuckDB).
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
enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// An Apache Parquet file (with `--output FILE`; written by DuckDB).
    Parquet,
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the recorded runs, oldest first.
    Runs,
    /// Pivot logged values: one row per run and loop position, one column per NAME.
    ///
    /// Without names: one row per run with its run-level values (args and
    /// logs outside loops).
    Dataframe {
        /// Names given to `log`/`arg`.
        names: Vec<String>,
    },
    /// Run a read-only SQL query over the views runs, logs, loops, timings, outputs, checkpoints.
    Query {
        /// The SQL text (one statement).
        sql: String,
    },
    /// List the names of logged values and args.
    Names,
    /// Drop the query database and rebuild it from the run records in git.
    Rebuild,
    /// Show which engine holds the query database, and where.
    Store,
}

/// Exit status when the command worked but some records could not be read.
const EXIT_BAD_RECORDS: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    if cli.format == Format::Parquet && cli.output.is_none() {
        return Err(flor::Error::Config {
            path: "the command line".into(),
            line: 0,
            key: "--format parquet".into(),
            message: "Parquet is a binary file format: add `--output FILE`".into(),
        });
    }
    let mut project = match cli.command {
        Command::Rebuild => Project::open_fresh_with(&start, cli.store)?,
        _ => Project::open_with(&start, cli.store)?,
    };
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
    let table = match &cli.command {
        Command::Runs => runs_table(&project)?,
        Command::Dataframe { names } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            project.dataframe(&names)?
        }
        Command::Query { sql } => project.query(sql)?,
        Command::Names => {
            let mut t = Table::with_columns(["name", "kind", "count"]);
            for n in project.names()? {
                t.push_row(vec![Some(Value::from(n.name)), Some(Value::from(n.kind)), Some(Value::from(n.count))]);
            }
            t
        }
        Command::Rebuild => Table::default(),
        Command::Store => {
            let mut t = Table::with_columns(["store", "path"]);
            let kind = project.store_kind();
            let path = project.flor_dir().join(kind.file_name());
            t.push_row(vec![Some(Value::from(kind.as_str())), Some(Value::from(path.display().to_string()))]);
            t
        }
    };
    if !table.columns.is_empty() {
        match &cli.output {
            Some(path) if cli.format == Format::Parquet => flor::write_parquet(&table, path)?,
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|e| flor::Error::Io {
                    action: "create",
                    path: path.clone(),
                    source: e,
                })?;
                write_table(&table, cli.format, file, false).map_err(|e| flor::Error::Io {
                    action: "write",
                    path: path.clone(),
                    source: e,
                })?;
            }
            None => print_table(&table, cli.format)?,
        }
    }
    Ok(report_problems(&report))
}

/// Shows `ingesting runs from git: done/total` on a terminal's stderr when
/// there are enough runs to wait for.
fn progress_printer() -> impl FnMut(usize, usize) {
    let terminal = io::stderr().is_terminal();
    let started = std::time::Instant::now();
    move |done, total| {
        if !terminal || total < 10 {
            return;
        }
        if done < total && (done % 10 != 0) {
            return;
        }
        let mut err = io::stderr().lock();
        let _ =
            write!(err, "\rflor: ingesting runs from git: {done}/{total} ({:.1} s)", started.elapsed().as_secs_f64());
        if done == total {
            let _ = writeln!(err);
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

/// Writes `table` in a text `format` (`terminal`: clip wide cells).
fn write_table(table: &Table, format: Format, out: impl Write, terminal: bool) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    match format {
        Format::Table => table.write_aligned(&mut out, if terminal { 40 } else { usize::MAX }),
        Format::Csv => table.write_csv(&mut out),
        Format::Json => table.write_json(&mut out),
        Format::Parquet => Err(io::Error::other("Parquet goes to a file (`--output FILE`)")),
    }?;
    out.flush()
}

fn print_table(table: &Table, format: Format) -> flor::Result<()> {
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    let result = write_table(table, format, stdout.lock(), terminal);
    match result {
        Ok(()) => Ok(()),
        // `flor dataframe loss | head` closes the pipe early: not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(flor::Error::Io { action: "write", path: "standard output".into(), source: e }),
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
