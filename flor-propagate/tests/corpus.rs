//! The propagation corpus (one folder per case under `tests/corpus`: `new.py`,
//! `old.py`, `expected.py`, `spec.json`) and properties checked over it.
//! Every failing case is reported at once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flor_propagate::{python, LanguagePropagator, Outcome, PropagateError, Propagation};
use serde::Deserialize;

#[derive(Deserialize)]
struct Spec {
    description: String,
    #[serde(default)]
    lines: Vec<usize>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    expect: Vec<Expect>,
    /// The whole propagation must fail with an error containing this.
    error: Option<String>,
}

#[derive(Deserialize)]
struct Expect {
    outcome: String,
    reason: Option<String>,
    renames: Option<Vec<(String, String)>>,
    /// For `approximate`: text the edited counterpart it was placed by
    /// must contain.
    anchor: Option<String>,
}

struct Case {
    name: String,
    dir: PathBuf,
    spec: Spec,
    new: String,
    old: String,
    expected: Option<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("tests")
        .join("corpus")
}

fn load() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let read = |f: &str| std::fs::read_to_string(dir.join(f));
            let spec: Spec = serde_json::from_str(&read("spec.json").expect("spec.json"))
                .unwrap_or_else(|e| panic!("{}: bad spec.json: {e}", dir.display()));
            Case {
                name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                spec,
                new: read("new.py").expect("new.py"),
                old: read("old.py").expect("old.py"),
                expected: read("expected.py").ok(),
                dir,
            }
        })
        .collect()
}

fn parses(source: &str) -> bool {
    let mut parser = tree_sitter::Parser::new();
    parser.set_language(&tree_sitter_python::LANGUAGE.into()).expect("grammar loads");
    parser.parse(source, None).is_some_and(|t| !t.root_node().has_error())
}

fn kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Placed { .. } => "placed",
        Outcome::Approximate { .. } => "approximate",
        Outcome::AlreadyPresent { .. } => "already_present",
        Outcome::Failed { .. } => "failed",
    }
}

/// Problems with one case, empty when it passes.
fn check(case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &case.spec;
    let lines = if spec.names.is_empty() {
        spec.lines.clone()
    } else {
        let names: Vec<&str> = spec.names.iter().map(String::as_str).collect();
        match python().log_statement_lines(&case.new, &names) {
            Ok(l) => l,
            Err(e) => return vec![format!("log_statements: {e}")],
        }
    };
    let result = python().propagate(&case.new, &lines, &case.old);
    let p: Propagation = match (result, &spec.error) {
        (Err(e), Some(want)) => {
            if !e.to_string().contains(want.as_str()) {
                problems.push(format!("error `{e}` does not contain `{want}`"));
            }
            return problems;
        }
        (Ok(_), Some(want)) => return vec![format!("expected an error containing `{want}`, got a result")],
        (Err(e), None) => return vec![format!("unexpected error: {e}")],
        (Ok(p), None) => p,
    };
    if p.outcomes.len() != spec.expect.len() {
        problems.push(format!(
            "{} outcomes for {} expectations: {:?}",
            p.outcomes.len(),
            spec.expect.len(),
            p.outcomes
        ));
    }
    for (k, (got, want)) in p.outcomes.iter().zip(&spec.expect).enumerate() {
        if kind(got) != want.outcome {
            problems.push(format!("statement {} (line {}): expected {}, got {got:?}", k + 1, lines[k], want.outcome));
            continue;
        }
        match got {
            Outcome::Failed { reason } => {
                if let Some(r) = &want.reason {
                    if !reason.contains(r.as_str()) {
                        problems.push(format!("statement {}: reason `{reason}` lacks `{r}`", k + 1));
                    }
                }
            }
            Outcome::Placed { line, renames } | Outcome::Approximate { line, renames, .. } => {
                if let (Outcome::Approximate { anchor, .. }, Some(want)) = (got, &want.anchor) {
                    if !anchor.old_text.contains(want.as_str()) {
                        problems.push(format!(
                            "statement {}: placed by `{}`, expected by `{want}`",
                            k + 1,
                            anchor.old_text
                        ));
                    }
                }
                if let Some(r) = &want.renames {
                    if r != renames {
                        problems.push(format!("statement {}: renames {renames:?}, expected {r:?}", k + 1));
                    }
                }
                let first = case.new.lines().nth(lines[k] - 1).unwrap_or("").trim();
                let word: String = first.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let at = p.source.lines().nth(line.saturating_sub(1)).unwrap_or("").trim();
                if word.is_empty()
                    || !(at.starts_with(&word) || renames.iter().any(|(_, to)| at.starts_with(to.as_str())))
                {
                    problems.push(format!("statement {}: reported line {line} holds `{at}`", k + 1));
                }
            }
            Outcome::AlreadyPresent { line } => {
                let at = case.old.lines().nth(line.saturating_sub(1)).unwrap_or("");
                if at.trim().is_empty() {
                    problems.push(format!("statement {}: already present at blank line {line}", k + 1));
                }
            }
        }
    }
    let expected = case.expected.as_deref().unwrap_or(&case.old);
    if p.source != expected {
        let mut diff = String::new();
        for (i, (a, b)) in p.source.lines().zip(expected.lines()).enumerate() {
            if a != b {
                let _ = write!(
                    diff,
                    "\n      first difference at line {}:\n        got:      {a:?}\n        expected: {b:?}",
                    i + 1
                );
                break;
            }
        }
        if diff.is_empty() {
            let _ = write!(diff, " ({} vs {} lines)", p.source.lines().count(), expected.lines().count());
        }
        problems.push(format!("output differs from expected.py{diff}"));
    }
    if !parses(&p.source) {
        problems.push("output does not parse".into());
    }
    problems
}

#[test]
fn corpus() {
    let cases = load();
    assert!(cases.len() >= 40, "the corpus has only {} cases", cases.len());
    let mut report = String::new();
    let mut failed = 0;
    for case in &cases {
        let problems = check(case);
        if !problems.is_empty() {
            failed += 1;
            let _ = writeln!(report, "\n{} ({}): {}", case.name, case.dir.display(), case.spec.description);
            for p in problems {
                let _ = writeln!(report, "  - {p}");
            }
        }
    }
    eprintln!("corpus: {} cases, {} passed, {failed} failed", cases.len(), cases.len() - failed);
    assert!(failed == 0, "{failed} of {} corpus cases failed:{report}", cases.len());
}

/// `source` without the lines of the statement starting at `line`.
fn without_statement(source: &str, line: usize) -> Option<String> {
    // The statement ends where the next line at the same or a smaller
    // indentation starts (good enough for the corpus' flor.log calls).
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let start = line - 1;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let own = indent(lines.get(start)?);
    let mut end = start + 1;
    while end < lines.len() && !lines[end].trim().is_empty() && indent(lines[end]) > own {
        end += 1;
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i < start || i >= end {
            out.push_str(l);
        }
    }
    Some(out)
}

/// Property: taking a `flor.log` statement out of a file and propagating it
/// back from the file puts it back at the same spot, and propagating it
/// into the file that still has it finds it already present.
#[test]
fn identical_file_same_spot() {
    let mut report = String::new();
    let mut checked = 0;
    for case in load() {
        let Ok(logs) = python().log_statement_lines(&case.new, &[]) else { continue };
        for line in logs {
            let Some(old) = without_statement(&case.new, line) else { continue };
            if !parses(&old) {
                continue; // the statement was its block's only one
            }
            match python().propagate(&case.new, &[line], &old) {
                // Taking it out left an empty block (tree-sitter accepts one
                // at the end of a file, Python does not).
                Err(PropagateError::Unparsable { which: "old", .. }) => continue,
                Ok(p) => {
                    checked += 1;
                    if p.outcomes != [Outcome::Placed { line, renames: vec![] }] || p.source != case.new {
                        let _ = writeln!(report, "{} line {line}: {:?}", case.name, p.outcomes);
                    }
                }
                Err(e) => {
                    let _ = writeln!(report, "{} line {line}: {e}", case.name);
                }
            }
            match python().propagate(&case.new, &[line], &case.new) {
                Ok(p) if p.outcomes == [Outcome::AlreadyPresent { line }] && p.source == case.new => {}
                other => {
                    let _ = writeln!(report, "{} line {line} into itself: {other:?}", case.name);
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} statements checked");
    assert!(report.is_empty(), "not put back where they were:\n{report}");
}

/// Property: whatever is propagated where, the output parses (here: every
/// `flor.log` of every case into the old versions of the next cases).
#[test]
fn output_always_parses() {
    let cases = load();
    let mut report = String::new();
    for (i, case) in cases.iter().enumerate() {
        let Ok(logs) = python().log_statement_lines(&case.new, &[]) else { continue };
        if logs.is_empty() {
            continue;
        }
        for other in cases.iter().cycle().skip(i).take(6) {
            match python().propagate(&case.new, &logs, &other.old) {
                Ok(p) => {
                    if !parses(&p.source) {
                        let _ = writeln!(report, "{} into {}: output does not parse", case.name, other.name);
                    }
                    if p.outcomes.len() != logs.len() {
                        let _ = writeln!(report, "{} into {}: outcome count", case.name, other.name);
                    }
                }
                Err(e) => {
                    if !e.to_string().contains("does not parse") {
                        let _ = writeln!(report, "{} into {}: {e}", case.name, other.name);
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}
