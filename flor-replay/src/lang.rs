//! What replay asks of a script's language: its log statements, carrying
//! them into an old version, and where a statement runs.

use std::path::Path;

use flor_core::propagate::{PropagateError, Propagation};

use crate::segments::Level;

/// A log statement of the newest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) line: usize,
    pub(crate) name: String,
}

/// Whether a propagator handles `path`.
pub(crate) fn handles(path: &str) -> bool {
    flor_propagate::for_path(Path::new(path)).is_some()
}

/// The log statements of `names` in `source`.
pub(crate) fn log_statements(path: &str, source: &str, names: &[&str]) -> Result<Vec<Found>, PropagateError> {
    let lines = flor_propagate::find_log_statements(source, names)?;
    let _ = path;
    Ok(lines
        .into_iter()
        .filter_map(|l| {
            let text = source.lines().nth(l - 1)?;
            let name = names.iter().find(|n| text.contains(&format!("\"{n}\"")) || text.contains(&format!("'{n}'")))?;
            Some(Found { line: l, name: (*name).to_owned() })
        })
        .collect())
}

/// Carries the statements at `lines` of `new` into `old`.
pub(crate) fn propagate(path: &str, new: &str, lines: &[usize], old: &str) -> Result<Propagation, PropagateError> {
    match flor_propagate::for_path(Path::new(path)) {
        Some(p) => p.propagate(new, lines, old),
        None => Err(PropagateError::NoStatement(0)),
    }
}

/// Where the statement at `line` of `source` runs, for a run whose outer
/// loop is `outer`, and why when the answer is the safe default.
pub(crate) fn level(path: &str, source: &str, line: usize, outer: Option<&str>) -> (Level, Option<String>) {
    let _ = path;
    (statement_level(source, line, outer), None)
}

/// Interpreter arguments that start a process and load flor's front end.
pub(crate) fn startup_probe(path: &str) -> Option<Vec<String>> {
    flor_propagate::for_path(Path::new(path)).map(|_| vec!["-c".to_owned(), "import flordb".to_owned()])
}

fn statement_level(source: &str, line: usize, outer: Option<&str>) -> Level {
    let lines: Vec<&str> = source.lines().collect();
    let Some(target) = line.checked_sub(1).and_then(|i| lines.get(i)) else { return Level::Inner };
    let indent = |s: &str| s.len() - s.trim_start().len();
    let mut cur = indent(target);
    let mut innermost_loop: Option<String> = None;
    let mut in_function = false;
    for l in lines[..line - 1].iter().rev() {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent(l);
        if ind >= cur {
            continue;
        }
        cur = ind;
        if innermost_loop.is_none() {
            if let Some(name) = loop_name(t) {
                innermost_loop = Some(name);
            }
        }
        if t.starts_with("def ") || t.starts_with("async def ") {
            in_function = true;
        }
        if cur == 0 {
            break;
        }
    }
    match (innermost_loop, outer) {
        (Some(name), Some(o)) if name == o && !in_function => Level::Outer,
        (Some(_), _) => Level::Inner,
        (None, _) if in_function => Level::Inner,
        (None, _) => {
            let first_loop = lines.iter().position(|l| loop_name(l.trim_start()).is_some());
            match first_loop {
                Some(p) if p < line - 1 => Level::Teardown,
                _ => Level::Setup,
            }
        }
    }
}

fn loop_name(header: &str) -> Option<String> {
    let rest = if header.starts_with("for ") {
        header.split_once("flor.loop(")?.1
    } else if header.starts_with("with ") {
        header.split_once("flor.iteration(")?.1
    } else {
        return None;
    };
    let rest = rest.trim_start();
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &rest[1..];
    body.find(q).map(|end| body[..end].to_owned())
}
