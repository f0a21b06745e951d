//! The scale soak (issue 14): many finished runs in one repository,
//! generated through the public `flor::Run` API, and many live runs
//! recording at once while `flor` queries them. `scripts/bench_soak.sh`
//! drives it and times the `flor` commands; `tests/soak.rs` is the CI
//! version (fewer runs, no timings).
//!
//! ```text
//! soak generate --repo DIR [--runs 10000] [--epochs 10] [--steps 100] [--threads 2]
//! soak verify --csv FILE --runs N [--epochs 10] [--steps 100]
//! soak live --repo DIR --flor BIN [--runs 100] [--epochs 10] [--steps 100] [--pace-ms 500] [--store sqlite|duckdb]
//! ```
//!
//! `generate` creates the repository (a fresh git repository with a small
//! training project) and records the runs; `verify` checks the CSV of
//! `flor dataframe seed loss --format csv` cell by cell; `live` starts
//! `--runs` processes that each record one run (`--pace-ms` of sleep after
//! every epoch), waits until every one has started, lets them go, queries
//! with `flor runs` and `flor dataframe seed loss` while they record
//! (timed; each answer checked: every value right, each run a prefix of its
//! steps), and checks that every record arrived once they finished.

mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use workload::Shape;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("generate") => Opts::parse(&args[1..]).and_then(|o| generate(&o)),
        Some("verify") => Opts::parse(&args[1..]).and_then(|o| verify(&o)),
        Some("live") => Opts::parse(&args[1..]).and_then(|o| live(&o)),
        Some("record-one") => Opts::parse(&args[1..]).and_then(|o| record_one(&o)),
        _ => Err("usage: soak generate|verify|live [--option value]... (see examples/soak/main.rs)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` options, with the defaults of the module docs.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a.strip_prefix("--").ok_or_else(|| format!("expected --option, found {a:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Opts(map))
    }

    fn text(&self, name: &str) -> Result<&str, String> {
        self.0.get(name).map(String::as_str).ok_or_else(|| format!("--{name} is required"))
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.0.get(name) {
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number: {v:?}")),
            None => Ok(default),
        }
    }

    fn shape(&self) -> Result<Shape, String> {
        Ok(Shape { epochs: self.num("epochs", 10)?, steps: self.num("steps", 100)? })
    }
}

fn generate(o: &Opts) -> Result<(), String> {
    let repo = PathBuf::from(o.text("repo")?);
    let runs: u64 = o.num("runs", 10_000)?;
    let shape = o.shape()?;
    let threads: usize = o.num("threads", 2)?;
    if repo.exists() {
        return Err(format!("{} exists; generate makes a fresh repository", repo.display()));
    }
    workload::init_repo(&repo)?;
    let t0 = Instant::now();
    let every = (runs / 20).max(1);
    let progress = |done: u64| {
        if done.is_multiple_of(every) {
            eprintln!("soak: {done}/{runs} runs recorded ({:.1} s)", t0.elapsed().as_secs_f64());
        }
    };
    workload::generate(&repo, runs, shape, threads, &progress).map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "generated {runs} runs ({} epochs x {} steps, {} loss values each) on {threads} threads in {secs:.1} s ({:.1} ms per run)",
        shape.epochs,
        shape.steps,
        shape.losses(),
        secs * 1000.0 / runs as f64
    );
    Ok(())
}

fn verify(o: &Opts) -> Result<(), String> {
    let path = o.text("csv")?;
    let runs: u64 = o.num("runs", 10_000)?;
    let base: u64 = o.num("seed-base", 0)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    let seeds: Vec<u64> = (base..base + runs).collect();
    let f = workload::check_rows(workload::csv_rows(&text), o.shape()?, &seeds, |_| true);
    report(&f, "verify")?;
    println!("verified {} rows of {} runs: every loss present once, bit for bit", f.rows, f.runs);
    Ok(())
}

fn report(f: &workload::Findings, what: &str) -> Result<(), String> {
    if f.ok() {
        return Ok(());
    }
    for p in &f.problems {
        eprintln!("soak: {what}: {p}");
    }
    Err(format!("{what}: {} problems in {} rows", f.count, f.rows))
}

/// One live run (a child of `live`): starts, says so, waits for the go,
/// records with a pause after every epoch, finishes.
fn record_one(o: &Opts) -> Result<(), String> {
    let repo = PathBuf::from(o.text("repo")?);
    let ready = PathBuf::from(o.text("ready")?);
    let index: u64 = o.num("index", 0)?;
    let pace = Duration::from_millis(o.num("pace-ms", 500)?);
    let started = |run: &flor::Run| {
        let _ = std::fs::write(ready.join(format!("ready.{index}")), run.tstamp());
        while !ready.join("go").exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    workload::record(&repo, index, o.shape()?, Some(pace), started).map_err(|e| e.to_string())?;
    Ok(())
}

/// A `flor` command's wall time and peak resident memory (through
/// `/usr/bin/time` where it exists).
struct Timed {
    secs: f64,
    max_rss_kib: Option<u64>,
    stdout: String,
}

fn flor(bin: &Path, repo: &Path, store: &str, args: &[&str]) -> Result<Timed, String> {
    let gnu_time = Path::new("/usr/bin/time");
    let rss_file = repo.join(".flor").join("soak-time.txt");
    let mut cmd = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(["-C"]).arg(repo).args(["--store", store]).args(args);
    let t0 = Instant::now();
    let out = cmd.output().map_err(|e| format!("run {}: {e}", bin.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("flor {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let max_rss_kib = std::fs::read_to_string(&rss_file).ok().and_then(|s| s.trim().parse().ok());
    Ok(Timed { secs, max_rss_kib, stdout: String::from_utf8_lossy(&out.stdout).into_owned() })
}

/// Statuses counted in `flor runs --format csv` output.
fn statuses(runs_csv: &str) -> HashMap<String, u64> {
    let mut lines = runs_csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let at = header.iter().position(|h| *h == "status").unwrap_or(2);
    let mut counts = HashMap::new();
    for line in lines {
        *counts.entry(line.split(',').nth(at).unwrap_or("").to_owned()).or_insert(0) += 1;
    }
    counts
}

fn live(o: &Opts) -> Result<(), String> {
    let repo = PathBuf::from(o.text("repo")?);
    let bin = PathBuf::from(o.text("flor")?);
    let store = o.0.get("store").map_or("sqlite", String::as_str);
    let runs: u64 = o.num("runs", 100)?;
    let shape = o.shape()?;
    let pace_ms: u64 = o.num("pace-ms", 500)?;
    if repo.exists() {
        return Err(format!("{} exists; live makes a fresh repository", repo.display()));
    }
    workload::init_repo(&repo)?;
    let ready = repo.join(".soak-ready");
    let logs = repo.join(".soak-logs");
    for d in [&ready, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
    let t0 = Instant::now();
    let mut children = Children { all: Vec::new(), logs: logs.clone() };
    for i in 0..runs {
        let log = std::fs::File::create(logs.join(format!("{i}.stderr"))).map_err(|e| format!("create a log: {e}"))?;
        let child = Command::new(&exe)
            .arg("record-one")
            .args(["--repo", &repo.display().to_string(), "--ready", &ready.display().to_string()])
            .args(["--index", &i.to_string(), "--pace-ms", &pace_ms.to_string()])
            .args(["--epochs", &shape.epochs.to_string(), "--steps", &shape.steps.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start a live run: {e}"))?;
        children.all.push(child);
    }
    wait_ready(&ready, runs, &mut children)?;
    println!("live: {runs} runs started and waiting in {:.1} s", t0.elapsed().as_secs_f64());
    std::fs::write(ready.join("go"), b"").map_err(|e| format!("write go: {e}"))?;
    let seeds: Vec<u64> = (0..runs).collect();
    let mut samples = Samples::default();
    let mut max_running = 0;
    while children.all.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
        let r = flor(&bin, &repo, store, &["--format", "csv", "runs"])?;
        let counts = statuses(&r.stdout);
        let running = counts.get("running").copied().unwrap_or(0);
        max_running = max_running.max(running);
        samples.runs.push((r.secs, r.max_rss_kib, running));
        let d = match flor(&bin, &repo, store, &["--format", "csv", "dataframe", "seed", "loss"]) {
            Ok(d) => d,
            // Before the first epoch's records reach a file, nothing is
            // logged yet: `flor dataframe` names the missing names.
            Err(e) if samples.dataframe.is_empty() && e.contains("no values are recorded yet") => continue,
            Err(e) => return Err(e),
        };
        let f = workload::check_rows(workload::csv_rows(&d.stdout), shape, &seeds, |_| false);
        report(&f, "dataframe while recording")?;
        samples.dataframe.push((d.secs, d.max_rss_kib, f.rows));
    }
    let recording = t0.elapsed().as_secs_f64();
    for i in 0..children.all.len() {
        let st = children.all[i].wait().map_err(|e| format!("wait for live run {i}: {e}"))?;
        if !st.success() {
            return Err(children.failed(i, st));
        }
    }
    let r = flor(&bin, &repo, store, &["--format", "csv", "runs"])?;
    let counts = statuses(&r.stdout);
    if counts.get("finished") != Some(&runs) || counts.len() != 1 {
        return Err(format!("after the live runs, `flor runs` shows {counts:?}; expected {runs} finished"));
    }
    let d = flor(&bin, &repo, store, &["--format", "csv", "dataframe", "seed", "loss"])?;
    let f = workload::check_rows(workload::csv_rows(&d.stdout), shape, &seeds, |_| true);
    report(&f, "dataframe after the live runs")?;
    samples.print(store, runs, max_running, recording);
    println!(
        "live[{store}]: after: every record arrived ({} loss rows of {} runs, all finished); flor runs {:.3} s, dataframe {:.3} s",
        f.rows, f.runs, r.secs, d.secs
    );
    Ok(())
}

/// Waits until every live run has started (its `ready.<i>` file), failing
/// early when one of them exits.
fn wait_ready(ready: &Path, runs: u64, children: &mut Children) -> Result<(), String> {
    loop {
        let n = std::fs::read_dir(ready).map(|d| d.count() as u64).unwrap_or(0);
        if n >= runs {
            return Ok(());
        }
        for i in 0..children.all.len() {
            if let Ok(Some(st)) = children.all[i].try_wait() {
                return Err(format!("before recording: {}", children.failed(i, st)));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The live runs' processes (killed if the driver stops early) and the
/// folder of their stderr logs.
struct Children {
    all: Vec<Child>,
    logs: PathBuf,
}

impl Children {
    /// What run `i`, ended with `status`, says on stderr.
    fn failed(&self, i: usize, status: std::process::ExitStatus) -> String {
        let log = std::fs::read_to_string(self.logs.join(format!("{i}.stderr"))).unwrap_or_default();
        format!("live run {i} failed ({status}): {}", log.trim())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.all {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Timings of the queries made while the live runs recorded.
#[derive(Default)]
struct Samples {
    /// `flor runs`: seconds, peak KiB, runs shown as running.
    runs: Vec<(f64, Option<u64>, u64)>,
    /// `flor dataframe seed loss`: seconds, peak KiB, rows.
    dataframe: Vec<(f64, Option<u64>, u64)>,
}

impl Samples {
    fn print(&self, store: &str, runs: u64, max_running: u64, recording: f64) {
        let spread = |v: &[(f64, Option<u64>, u64)]| {
            let mut s: Vec<f64> = v.iter().map(|x| x.0).collect();
            s.sort_by(f64::total_cmp);
            let rss = v.iter().filter_map(|x| x.1).max().map_or("-".into(), |k| format!("{} MiB", k / 1024));
            match (s.first(), s.get(s.len() / 2), s.last()) {
                (Some(a), Some(m), Some(b)) => {
                    format!("n={} min {a:.3} median {m:.3} max {b:.3} s, peak {rss}", s.len())
                }
                _ => "no samples".into(),
            }
        };
        println!("live[{store}]: {runs} runs recorded for {recording:.1} s; up to {max_running} shown running at once");
        println!("live[{store}]: while recording: flor runs {}", spread(&self.runs));
        let rows = self.dataframe.iter().map(|x| x.2).max().unwrap_or(0);
        println!(
            "live[{store}]: while recording: flor dataframe seed loss {} (up to {rows} rows)",
            spread(&self.dataframe)
        );
    }
}
