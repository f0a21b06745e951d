//! The soak workload: what each generated run records through the public
//! [`flor::Run`] API, and what the query side must give back for it.
//!
//! Shared by the soak benchmark (`examples/soak/main.rs`,
//! `scripts/bench_soak.sh`) and its CI version (`tests/soak.rs`), so both
//! generate the same kind of repository and check it the same way.
//!
//! Run `i` (its `seed` arg) records four args (`lr`, `batch`, `optimizer`,
//! `seed`), an outer `epoch` loop with a nested `step` loop logging `loss`
//! at every step, `acc` once per epoch, and a checkpoint of a small model
//! state at the end of every epoch. Every value is a pure function of the
//! run's index and position, so a query's answer can be checked cell by cell.

// Each user of this module (the example, the test) uses a different part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flor::{Run, Table, Value};

/// The script name every generated run records.
pub(crate) const FILENAME: &str = "train.rs";

/// How much each run records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Outer-loop iterations (`epoch`).
    pub(crate) epochs: u32,
    /// Inner-loop iterations per epoch (`step`), one `loss` each.
    pub(crate) steps: u32,
}

impl Shape {
    /// `loss` values (dataframe rows of `seed, loss`) per run.
    pub(crate) fn losses(&self) -> u64 {
        u64::from(self.epochs) * u64::from(self.steps)
    }
}

const LRS: [&str; 7] = ["0.001", "0.003", "0.01", "0.03", "0.1", "0.3", "1e-4"];
const OPTIMIZERS: [&str; 3] = ["sgd", "adam", "adamw"];

/// The command line of run `index` (its `--kwargs`).
pub(crate) fn argv(index: u64) -> Vec<String> {
    vec![
        FILENAME.to_owned(),
        "--kwargs".to_owned(),
        format!("lr={}", LRS[(index % LRS.len() as u64) as usize]),
        format!("batch={}", 16u64 << (index % 4)),
        format!("optimizer={}", OPTIMIZERS[(index % OPTIMIZERS.len() as u64) as usize]),
        format!("seed={index}"),
    ]
}

/// The learning rate run `index` reads from its command line.
pub(crate) fn lr(index: u64) -> f64 {
    LRS[(index % LRS.len() as u64) as usize].parse().unwrap_or(0.0)
}

/// The `loss` run `index` logs at (`epoch`, `step`).
pub(crate) fn loss(index: u64, shape: Shape, epoch: u32, step: u32) -> f64 {
    let t = f64::from(epoch) * f64::from(shape.steps) + f64::from(step) + 1.0;
    (1.0 + (index % 97) as f64 * 0.01) / (1.0 + lr(index) * t) + (index % 13) as f64 * 1e-3
}

/// The `acc` run `index` logs at the end of `epoch`.
pub(crate) fn acc(index: u64, shape: Shape, epoch: u32) -> f64 {
    1.0 - loss(index, shape, epoch, shape.steps.saturating_sub(1)) / 4.0
}

/// The model state checkpointed at the end of every epoch.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Model {
    /// Sixteen weights.
    pub(crate) weights: Vec<f64>,
    /// Epochs trained.
    pub(crate) epochs: u32,
}

/// A fresh git repository at `dir` holding a small training project,
/// committed once (what the runs snapshot).
pub(crate) fn init_repo(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let files = [
        ("README.md", "# soak\n\nA training project whose runs the flor soak benchmark generates.\n".to_owned()),
        (".gitignore", "data/\ntarget/\n".to_owned()),
        ("src/train.rs", format!("// {FILENAME}: the generated runs' script\n{}", "fn step() {}\n".repeat(200))),
        ("src/model.rs", "pub struct Model { pub weights: Vec<f64> }\n".repeat(50)),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).map_err(|e| format!("write {name}: {e}"))?;
    }
    for args in [&["init", "-q", "-b", "main"][..], &["add", "-A"], &["commit", "-qm", "the training project"]] {
        let out = Command::new("git")
            .args(["-c", "user.name=Soak", "-c", "user.email=soak@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("git {args:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

/// Records run `index` in the repository at `repo` through the public
/// `Run` API and finishes it. `pace` is slept after every epoch (live
/// runs); `started` is called once the run has started (its record file is
/// live), before its first loop. Returns the run's tstamp.
pub(crate) fn record(
    repo: &Path,
    index: u64,
    shape: Shape,
    pace: Option<Duration>,
    started: impl FnOnce(&Run),
) -> flor::Result<String> {
    let run = Run::builder().dir(repo).filename(FILENAME).argv(argv(index)).interpreter("rustc").start()?;
    let tstamp = run.tstamp();
    let lr: f64 = run.arg("lr", 0.01)?;
    let _batch: i64 = run.arg("batch", 32)?;
    let _optimizer: String = run.arg("optimizer", String::from("sgd"))?;
    let seed: i64 = run.arg("seed", 0)?;
    debug_assert_eq!(seed as u64, index);
    started(&run);
    let mut model = Model { weights: vec![0.0; 16], epochs: 0 };
    run.checkpointed_loop("epoch", 0..shape.epochs, "model", &mut model, |m, epoch| {
        for step in run.loop_over("step", 0..shape.steps) {
            let l = run.log("loss", loss(index, shape, epoch, step));
            m.weights[(step % 16) as usize] -= lr * l;
        }
        run.log("acc", acc(index, shape, epoch));
        m.epochs = epoch + 1;
        if let Some(p) = pace {
            std::thread::sleep(p);
        }
        Ok(())
    })?;
    run.finish()?;
    Ok(tstamp)
}

/// Records runs `0..runs` on `threads` threads; `progress(done)` after each.
/// Returns the tstamps by index.
pub(crate) fn generate(
    repo: &Path,
    runs: u64,
    shape: Shape,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> flor::Result<Vec<String>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let mut tstamps = vec![String::new(); runs as usize];
    let results: Vec<flor::Result<Vec<(usize, String)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= runs as usize {
                            return Ok(mine);
                        }
                        mine.push((i, record(repo, i as u64, shape, None, |_| {})?));
                        progress(done.fetch_add(1, Ordering::Relaxed) as u64 + 1);
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for r in results {
        for (i, t) in r? {
            tstamps[i] = t;
        }
    }
    Ok(tstamps)
}

/// What a check of a query's answer found wrong (empty: all is well).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Rows checked.
    pub(crate) rows: u64,
    /// Distinct runs (seeds) seen.
    pub(crate) runs: u64,
    /// The first problems found (at most 20 kept), and how many in all.
    pub(crate) problems: Vec<String>,
    /// Problems in all.
    pub(crate) count: u64,
}

impl Findings {
    fn problem(&mut self, p: String) {
        self.count += 1;
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    /// Whether nothing was wrong.
    pub(crate) fn ok(&self) -> bool {
        self.count == 0
    }
}

/// Checks the rows of `dataframe seed loss` (as `(seed, epoch, step,
/// loss)`) against the workload: every loss bit for bit, no position twice,
/// no run that `seeds` (sorted) does not name. A run whose seed is
/// `complete` has all its positions; any other run's positions are a prefix
/// of its steps in execution order (what a live run has flushed so far).
pub(crate) fn check_rows(
    rows: impl Iterator<Item = Result<(u64, u32, u32, f64), String>>,
    shape: Shape,
    seeds: &[u64],
    complete: impl Fn(u64) -> bool,
) -> Findings {
    let mut f = Findings::default();
    // Per run, which of its positions (epoch * steps + step) were seen.
    let mut seen: BTreeMap<u64, Vec<bool>> = BTreeMap::new();
    for row in rows {
        f.rows += 1;
        let (seed, epoch, step, l) = match row {
            Ok(r) => r,
            Err(e) => {
                f.problem(e);
                continue;
            }
        };
        if epoch >= shape.epochs || step >= shape.steps {
            f.problem(format!("seed {seed}: position epoch {epoch} step {step} outside the workload"));
            continue;
        }
        let at = (u64::from(epoch) * u64::from(shape.steps) + u64::from(step)) as usize;
        let positions = seen.entry(seed).or_insert_with(|| vec![false; shape.losses() as usize]);
        if std::mem::replace(&mut positions[at], true) {
            f.problem(format!("seed {seed}: epoch {epoch} step {step} twice"));
        }
        if l.to_bits() != loss(seed, shape, epoch, step).to_bits() {
            f.problem(format!(
                "seed {seed}: loss at epoch {epoch} step {step} is {l}, recorded {}",
                loss(seed, shape, epoch, step)
            ));
        }
    }
    f.runs = seen.len() as u64;
    for &seed in seeds {
        let n = seen.get(&seed).map_or(0, |p| p.iter().filter(|&&b| b).count() as u64);
        if complete(seed) && n != shape.losses() {
            f.problem(format!("seed {seed}: {n} loss rows, recorded {}", shape.losses()));
        } else if let Some(p) = seen.get(&seed) {
            if p.iter().skip(n as usize).any(|&b| b) {
                f.problem(format!("seed {seed}: its {n} loss rows are not the first {n} steps"));
            }
        }
    }
    for seed in seen.keys() {
        if seeds.binary_search(seed).is_err() {
            f.problem(format!("seed {seed}: a run that was not recorded"));
        }
    }
    f
}

/// The `(seed, epoch, step, loss)` rows of a `dataframe(["seed", "loss"])`.
pub(crate) fn table_rows(t: &Table) -> impl Iterator<Item = Result<(u64, u32, u32, f64), String>> + '_ {
    let cols = ["seed", "epoch", "step", "loss"].map(|c| t.column(c));
    (0..t.row_count()).map(move |r| {
        let cell = |i: usize| cols[i].and_then(|c| c.get(r));
        match (cell(0), cell(1), cell(2), cell(3)) {
            (Some(Value::Int(s)), Some(Value::Int(e)), Some(Value::Int(st)), Some(Value::Float(l))) => {
                Ok((s as u64, e as u32, st as u32, l))
            }
            other => Err(format!("row {r}: unexpected cells {other:?}")),
        }
    })
}

/// The same rows from `flor dataframe seed loss --format csv` output.
pub(crate) fn csv_rows(text: &str) -> impl Iterator<Item = Result<(u64, u32, u32, f64), String>> + '_ {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let at = ["seed", "epoch", "step", "loss"].map(|c| header.iter().position(|h| *h == c));
    lines.enumerate().map(move |(n, line)| {
        let cells: Vec<&str> = line.split(',').collect();
        let get = |i: usize| at[i].and_then(|p| cells.get(p).copied()).unwrap_or("");
        let bad = |what: &str| format!("csv line {}: bad {what} in {line:?}", n + 2);
        Ok((
            get(0).parse().map_err(|_| bad("seed"))?,
            get(1).parse().map_err(|_| bad("epoch"))?,
            get(2).parse().map_err(|_| bad("step"))?,
            get(3).parse().map_err(|_| bad("loss"))?,
        ))
    })
}
