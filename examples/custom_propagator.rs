//! A propagator for another language, used end to end through the SDK.
//!
//! "toy" is a tiny training language (files ending in `.toy`), one
//! statement per line, blocks by indentation and `end`:
//!
//! ```text
//! arg lr 0.1          # a hyper-parameter (--kwargs lr=...)
//! set w 1.0           # set NAME ATOM [OP ATOM], OP one of + - * /
//! loop epoch 4        # loop NAME COUNT ... end; NAME holds the iteration
//!   set g w * 2
//!   set step lr * g
//!   set w w - step
//!   log loss w * w    # log NAME ATOM [OP ATOM]
//! end
//! ```
//!
//! This example is both the language's interpreter (`custom_propagator
//! train.toy --kwargs lr=0.2` records a run with the Rust `flor::Run` API,
//! and replays a segment when a replay executor starts it) and a demo that
//! runs the whole hindsight loop with it:
//!
//! 1. records runs of two versions of `train.toy` (the second renames `g`
//!    to `grad`) in a temporary git repository;
//! 2. adds `log grad_norm grad` to the newest version, in the working tree;
//! 3. plans a replay through the SDK with a propagator registry that knows
//!    toy: the statement is carried into both old versions (renamed to `g`
//!    in the first) by [`ToyPropagator`], and each statement's loop comes
//!    from [`ToyPropagator::loop_scope`];
//! 4. replays the old runs (this binary is their interpreter) and checks
//!    that the dataframe's `grad_norm` column is what a forward run of each
//!    old version with the statement would have logged.
//!
//! ```text
//! cargo run --example custom_propagator
//! ```
//!
//! The propagator is deliberately small: it anchors a new statement after
//! the old statement whose *shape* (keywords, operators and numbers, names
//! blanked) equals that of the statement before it in the newest version,
//! within a loop of the same name, and renames identifiers by aligning the
//! two anchors' tokens. A statement with no such anchor, or two, fails with
//! the reason, as a propagator must say when it cannot place something.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use flor::core::propagate::{LanguagePropagator, LogStatement, LoopScope, Outcome, PropagateError, Propagation};
use flor::replay::{CostModel, ReplayOptions};
use flor::{Project, Run, Value};

// ---------------------------------------------------------------- the language

/// One line of a toy script.
#[derive(Debug, Clone)]
struct Line {
    /// 1-based line number.
    number: usize,
    /// Leading spaces.
    indent: usize,
    /// Whitespace-separated words (comments removed).
    words: Vec<String>,
}

/// The statements of `source` (blank and comment-only lines skipped).
fn lines(source: &str) -> Vec<Line> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let code = l.split('#').next().unwrap_or("");
            let words: Vec<String> = code.split_whitespace().map(str::to_owned).collect();
            (!words.is_empty()).then(|| Line { number: i + 1, indent: code.len() - code.trim_start().len(), words })
        })
        .collect()
}

/// Checks the keywords and arities; the error names the line.
fn check(source: &str, which: &'static str) -> Result<Vec<Line>, PropagateError> {
    let ls = lines(source);
    let mut depth = 0i64;
    for l in &ls {
        let ok = match l.words[0].as_str() {
            "arg" => l.words.len() == 3,
            "set" | "log" => l.words.len() == 3 || l.words.len() == 5,
            "loop" => {
                depth += 1;
                l.words.len() == 3 && l.words[2].parse::<u64>().is_ok()
            }
            "end" => {
                depth -= 1;
                l.words.len() == 1 && depth >= 0
            }
            _ => false,
        };
        if !ok {
            return Err(PropagateError::Unparsable {
                which,
                line: l.number,
                column: l.indent + 1,
                message: format!("not a toy statement: `{}`", l.words.join(" ")),
            });
        }
    }
    if depth != 0 {
        return Err(PropagateError::Unparsable {
            which,
            line: source.lines().count().max(1),
            column: 1,
            message: "a `loop` has no `end`".into(),
        });
    }
    Ok(ls)
}

fn is_name(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

/// The shape of a statement: names blanked, the rest kept.
fn shape(l: &Line) -> Vec<String> {
    l.words.iter().enumerate().map(|(i, w)| if i > 0 && is_name(w) { "_".into() } else { w.clone() }).collect()
}

/// The names of the loops enclosing each line, outermost first.
fn enclosing(ls: &[Line]) -> Vec<Vec<String>> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(ls.len());
    for l in ls {
        if l.words[0] == "end" {
            stack.pop();
        }
        out.push(stack.clone());
        if l.words[0] == "loop" {
            stack.push(l.words[1].clone());
        }
    }
    out
}

// ---------------------------------------------------------------- the propagator

/// Carries `log` statements between versions of a toy script.
#[derive(Debug, Default)]
struct ToyPropagator;

impl LanguagePropagator for ToyPropagator {
    fn language(&self) -> &'static str {
        "toy"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["toy"]
    }

    fn log_statements(&self, source: &str, names: &[&str]) -> Result<Vec<LogStatement>, PropagateError> {
        Ok(check(source, "new")?
            .into_iter()
            .filter(|l| l.words[0] == "log" && (names.is_empty() || names.contains(&l.words[1].as_str())))
            .map(|l| LogStatement { line: l.number, name: l.words[1].clone() })
            .collect())
    }

    fn loop_scope(&self, source: &str, line: usize) -> Result<LoopScope, PropagateError> {
        let ls = check(source, "new")?;
        let at =
            ls.iter().position(|l| l.number == line).ok_or(PropagateError::NoStatement { which: "input", line })?;
        let scopes = enclosing(&ls);
        let after_first_loop = ls[..at].iter().any(|l| l.words[0] == "loop");
        Ok(LoopScope::Static { loops: scopes[at].clone(), after_first_loop })
    }

    fn propagate(&self, new_source: &str, lines_: &[usize], old_source: &str) -> Result<Propagation, PropagateError> {
        let new = check(new_source, "new")?;
        let old = check(old_source, "old")?;
        let (new_scopes, old_scopes) = (enclosing(&new), enclosing(&old));
        let mut inserts: Vec<(usize, String)> = Vec::new(); // (after old line, text)
        let mut outcomes = Vec::new();
        for &line in lines_ {
            let at =
                new.iter().position(|l| l.number == line).ok_or(PropagateError::NoStatement { which: "new", line })?;
            outcomes.push(match place(&new, &new_scopes, at, &old, &old_scopes) {
                Ok((anchor, text, renames)) => {
                    if old.iter().any(|l| l.words.join(" ") == text && old_scopes[anchor] == new_scopes[at]) {
                        Outcome::AlreadyPresent {
                            line: old.iter().find(|l| l.words.join(" ") == text).map_or(0, |l| l.number),
                        }
                    } else {
                        let indent = " ".repeat(if old[anchor].words[0] == "loop" {
                            old[anchor].indent + 2
                        } else {
                            old[anchor].indent
                        });
                        inserts.push((old[anchor].number, format!("{indent}{text}")));
                        Outcome::Placed { line: 0, renames }
                    }
                }
                Err(reason) => Outcome::Failed { reason },
            });
        }
        // Insert bottom-up so line numbers above stay valid, then number the
        // placed statements in the output.
        let mut out: Vec<String> = old_source.lines().map(str::to_owned).collect();
        let mut order: Vec<usize> = (0..inserts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inserts[i].0));
        for &i in &order {
            out.insert(inserts[i].0, inserts[i].1.clone());
        }
        let mut placed = inserts.iter();
        for o in &mut outcomes {
            if let Outcome::Placed { line, .. } = o {
                if let Some((_, text)) = placed.next() {
                    *line = out.iter().position(|l| l == text).map_or(0, |p| p + 1);
                }
            }
        }
        let mut source = out.join("\n");
        source.push('\n');
        Ok(Propagation { source, outcomes })
    }
}

/// Where statement `at` of the new version goes in the old one: the old
/// line to insert after, the statement's text with names renamed, and the
/// renames. `Err`: why it cannot be placed.
type Placement = (usize, String, Vec<(String, String)>);

fn place(
    new: &[Line],
    new_scopes: &[Vec<String>],
    at: usize,
    old: &[Line],
    old_scopes: &[Vec<String>],
) -> Result<Placement, String> {
    let prev = at.checked_sub(1).ok_or("the statement is the first of the script: nothing to anchor it to")?;
    let anchor_shape = shape(&new[prev]);
    let candidates: Vec<usize> =
        (0..old.len()).filter(|&i| shape(&old[i]) == anchor_shape && old_scopes[i] == new_scopes[prev]).collect();
    let anchor = match candidates.as_slice() {
        [one] => *one,
        [] => return Err(format!("no statement like `{}` in the old version", anchor_shape.join(" "))),
        many => {
            return Err(format!(
                "ambiguous: {} statements like `{}` in the old version",
                many.len(),
                anchor_shape.join(" ")
            ))
        }
    };
    let mut renames: HashMap<&str, &str> = HashMap::new();
    for (n, o) in new[prev].words.iter().zip(&old[anchor].words) {
        if is_name(n) && n != o {
            renames.insert(n, o);
        }
    }
    let words: Vec<String> = new[at]
        .words
        .iter()
        .enumerate()
        .map(|(i, w)| if i > 1 { renames.get(w.as_str()).map_or(w.clone(), |o| (*o).to_owned()) } else { w.clone() })
        .collect();
    let mut applied: Vec<(String, String)> = new[at]
        .words
        .iter()
        .skip(2)
        .filter_map(|w| renames.get(w.as_str()).map(|o| (w.clone(), (*o).to_owned())))
        .collect();
    applied.dedup();
    Ok((anchor, words.join(" "), applied))
}

// ---------------------------------------------------------------- the interpreter

/// The value of an atom.
fn atom(vars: &HashMap<String, f64>, w: &str) -> Result<f64, String> {
    w.parse::<f64>().or_else(|_| vars.get(w).copied().ok_or_else(|| format!("`{w}` is not set")))
}

/// The value of `ATOM [OP ATOM]`.
fn expr(vars: &HashMap<String, f64>, ws: &[String]) -> Result<f64, String> {
    let a = atom(vars, &ws[0])?;
    if ws.len() == 1 {
        return Ok(a);
    }
    let b = atom(vars, &ws[2])?;
    match ws[1].as_str() {
        "+" => Ok(a + b),
        "-" => Ok(a - b),
        "*" => Ok(a * b),
        "/" => Ok(a / b),
        op => Err(format!("unknown operator `{op}`")),
    }
}

/// Runs statements `ls[from..to]` (a block).
fn exec(run: &Run, ls: &[Line], vars: &mut HashMap<String, f64>) -> Result<(), String> {
    let mut i = 0;
    while i < ls.len() {
        let l = &ls[i];
        let w = &l.words;
        match w[0].as_str() {
            "arg" => {
                let v = run.arg(&w[1], atom(vars, &w[2])?).map_err(|e| e.to_string())?;
                vars.insert(w[1].clone(), v);
            }
            "set" => {
                let v = expr(vars, &w[2..])?;
                vars.insert(w[1].clone(), v);
            }
            "log" => {
                run.log(&w[1], expr(vars, &w[2..])?);
            }
            "loop" => {
                // The body: up to the matching `end`.
                let mut depth = 0;
                let end = (i + 1..ls.len())
                    .find(|&j| {
                        match ls[j].words[0].as_str() {
                            "loop" => depth += 1,
                            "end" if depth == 0 => return true,
                            "end" => depth -= 1,
                            _ => {}
                        }
                        false
                    })
                    .ok_or("a `loop` has no `end`")?;
                let count: u64 = w[2].parse().map_err(|_| format!("line {}: bad count", l.number))?;
                for it in run.loop_over(&w[1], 0..count) {
                    vars.insert(w[1].clone(), it as f64);
                    exec(run, &ls[i + 1..end], vars)?;
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Interprets `script`, recording a run (or, started by a replay executor,
/// one replay segment: this interpreter does not checkpoint, so a replay
/// plan gives it one segment of every iteration, which it runs in full).
fn interpret(script: &Path, argv: Vec<String>) -> Result<(), String> {
    let source = std::fs::read_to_string(script).map_err(|e| format!("{}: {e}", script.display()))?;
    let ls = check(&source, "new").map_err(|e| format!("{}: {e}", script.display()))?;
    let run = if flor_replay::worker::Binding::is_worker() {
        let binding = flor_replay::worker::Binding::from_env().map_err(|e| e.to_string())?;
        Run::start_replay(&binding.spec, &argv).map_err(|e| e.to_string())?
    } else {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = script.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let filename = script.file_name().map_or("train.toy".into(), |f| f.to_string_lossy().into_owned());
        Run::builder()
            .dir(dir)
            .filename(filename)
            .argv(argv)
            .interpreter(exe.display().to_string())
            .start()
            .map_err(|e| e.to_string())?
    };
    exec(&run, &ls, &mut HashMap::new())?;
    run.finish().map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------- the demo

const V1: &str = "\
arg lr 0.1
set w 1.0
loop epoch 4
  set g w * 2
  set step lr * g
  set w w - step
  log loss w * w
end
";

/// Version 2 renames `g` to `grad`.
const V2: &str = "\
arg lr 0.1
set w 1.0
loop epoch 4
  set grad w * 2
  set step lr * grad
  set w w - step
  log loss w * w
end
";

/// The newest version logs the gradient too.
const NEWEST: &str = "\
arg lr 0.1
set w 1.0
loop epoch 4
  set grad w * 2
  log grad_norm grad
  set step lr * grad
  set w w - step
  log loss w * w
end
";

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .args(["-c", "user.name=toy", "-c", "user.email=toy@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Records a run of `train.toy` in `dir` as a user would: this binary as
/// the interpreter, in a fresh process.
fn record(dir: &Path, kwargs: &[&str]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("train.toy")
        .arg("--kwargs")
        .args(kwargs)
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What a forward run of the newest script logs as `grad_norm` with `lr`.
fn expected_grad_norms(lr: f64) -> Vec<f64> {
    let mut w = 1.0f64;
    (0..4)
        .map(|_| {
            let g = w * 2.0;
            w -= lr * g;
            g
        })
        .collect()
}

fn demo() -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir: PathBuf = tmp.path().join("toy-project");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join("train.toy"), V1).map_err(|e| e.to_string())?;
    git(&dir, &["add", "train.toy"])?;
    git(&dir, &["commit", "-qm", "v1"])?;
    record(&dir, &["lr=0.1"])?;
    std::fs::write(dir.join("train.toy"), V2).map_err(|e| e.to_string())?;
    git(&dir, &["commit", "-qam", "v2: rename g to grad"])?;
    record(&dir, &["lr=0.25"])?;
    std::fs::write(dir.join("train.toy"), NEWEST).map_err(|e| e.to_string())?;
    println!("==> two runs of two versions recorded; the newest train.toy logs grad_norm");

    // The SDK: flor's registry (Python) plus toy.
    let mut registry = flor_propagate::registry();
    registry.register(Arc::new(ToyPropagator));
    let mut project = Project::open(&dir).map_err(|e| e.to_string())?;
    let opts =
        ReplayOptions { names: vec!["grad_norm".into()], jobs: 2, propagators: Some(registry), ..Default::default() };
    let plan = flor::replay::plan(&mut project, &opts, &CostModel::default()).map_err(|e| e.to_string())?;
    print!("{}", plan.render());
    if plan.runs.len() != 2 || plan.versions.iter().any(|v| v.failure.is_some()) {
        return Err("expected both runs to be replayable".into());
    }
    let summary =
        flor::replay::execute(&mut project, &plan, false, &mut |l| println!("  {l}")).map_err(|e| e.to_string())?;
    print!("{}", summary.render(&plan));
    if let Some(r) = summary.runs.iter().find(|r| r.failure.is_some()) {
        return Err(format!("run {} failed: {:?}", r.tstamp, r.failure));
    }

    let df = project.dataframe(&["lr", "loss", "grad_norm"]).map_err(|e| e.to_string())?;
    df.write_aligned(&mut std::io::stdout(), 30).map_err(|e| e.to_string())?;
    let col = |name: &str, r: usize| match df.column(name).and_then(|c| c.get(r)) {
        Some(Value::Float(f)) => Ok(f),
        other => Err(format!("row {r}: {name} is {other:?}")),
    };
    let mut rows: HashMap<String, Vec<f64>> = HashMap::new();
    for r in 0..df.row_count() {
        rows.entry(format!("{}", col("lr", r)?)).or_default().push(col("grad_norm", r)?);
    }
    for lr in [0.1, 0.25] {
        let got = rows.get(&format!("{lr}")).cloned().unwrap_or_default();
        if got != expected_grad_norms(lr) {
            return Err(format!("lr={lr}: grad_norm {got:?}, a forward run logs {:?}", expected_grad_norms(lr)));
        }
    }
    println!("==> grad_norm recovered for both old runs, bit for bit what the newest version logs");
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first() {
        // Started as the interpreter: `custom_propagator train.toy --kwargs ...`.
        Some(script) if script.ends_with(".toy") => interpret(Path::new(script), argv.clone()),
        _ => demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_propagator: {e}");
            ExitCode::FAILURE
        }
    }
}
