//! Loop scopes from the syntax tree, one folder per case under `tests/scope`:
//! `new.py` holds `flor.log` statements, `old.py` an older version without
//! them, `spec.json` each statement's expected scope. Every statement is
//! checked twice: in `new.py`, and at the line where propagation placed it
//! in `old.py` (the same statement in the old version must run in the same
//! loops). Every failing case is reported at once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flor_propagate::{python, LanguagePropagator, LoopScope, Outcome};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[allow(dead_code)] // documents the case
    description: String,
    statements: Vec<Statement>,
}

/// One `flor.log("NAME", ...)` of `new.py` and its scope: `loops` and
/// `after_first_loop` (static), or `dynamic` (a part of the reason).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    name: String,
    loops: Option<Vec<String>>,
    after_first_loop: Option<bool>,
    dynamic: Option<String>,
}

impl Statement {
    /// Why `got` is not the expected scope.
    fn mismatch(&self, got: &LoopScope) -> Option<String> {
        match (got, &self.dynamic) {
            (LoopScope::Dynamic { reason }, Some(want)) if reason.contains(want.as_str()) => None,
            (LoopScope::Static { loops, after_first_loop }, None)
                if Some(loops) == self.loops.as_ref() && Some(*after_first_loop) == self.after_first_loop =>
            {
                None
            }
            _ => Some(format!("got {got:?}, expected {}", self.expected())),
        }
    }

    fn expected(&self) -> String {
        match &self.dynamic {
            Some(r) => format!("Dynamic with a reason containing {r:?}"),
            None => format!("Static {{ loops: {:?}, after_first_loop: {:?} }}", self.loops, self.after_first_loop),
        }
    }
}

fn cases() -> Vec<(String, PathBuf)> {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("tests")
        .join("scope");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("tests/scope exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter().map(|d| (d.file_name().unwrap().to_string_lossy().into_owned(), d)).collect()
}

/// Problems with one statement of one case.
fn check(st: &Statement, new: &str, old: &str) -> Vec<String> {
    let py = python();
    let mut problems = Vec::new();
    let lines = match py.log_statement_lines(new, &[&st.name]) {
        Ok(l) if l.len() == 1 => l,
        other => return vec![format!("expected one statement logging it in new.py, found {other:?}")],
    };
    let line = lines[0];
    match py.loop_scope(new, line) {
        Ok(got) => problems.extend(st.mismatch(&got).map(|m| format!("new.py line {line}: {m}"))),
        Err(e) => problems.push(format!("new.py line {line}: {e}")),
    }
    let p = match py.propagate(new, &lines, old) {
        Ok(p) => p,
        Err(e) => return [problems, vec![format!("propagation: {e}")]].concat(),
    };
    match &p.outcomes[..] {
        [Outcome::Placed { line: at, .. } | Outcome::Approximate { line: at, .. }] => {
            match py.loop_scope(&p.source, *at) {
                Ok(got) => problems.extend(st.mismatch(&got).map(|m| format!("old.py + statement, line {at}: {m}"))),
                Err(e) => problems.push(format!("old.py + statement, line {at}: {e}")),
            }
        }
        other => problems.push(format!("propagation into old.py: {other:?} (the case needs a placed statement)")),
    }
    problems
}

#[test]
fn loop_scopes_agree_with_the_syntax_before_and_after_propagation() {
    let mut report = String::new();
    let mut checked = 0;
    for (name, dir) in cases() {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{name}/{f}: {e}"));
        let spec: Spec = serde_json::from_str(&read("spec.json")).unwrap_or_else(|e| panic!("{name}/spec.json: {e}"));
        let (new, old) = (read("new.py"), read("old.py"));
        for st in &spec.statements {
            assert!(
                st.dynamic.is_some() != (st.loops.is_some() && st.after_first_loop.is_some()),
                "{name}/spec.json: `{}` needs `dynamic`, or `loops` and `after_first_loop`",
                st.name
            );
            checked += 1;
            for problem in check(st, &new, &old) {
                let _ = writeln!(report, "{name}: `{}`: {problem}", st.name);
            }
        }
    }
    assert!(checked >= 25, "only {checked} statements checked");
    assert!(report.is_empty(), "loop scopes differ:\n{report}");
}
