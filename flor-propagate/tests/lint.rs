//! Source checks, one script per case under `tests/lint`. A line where a
//! finding is expected ends with `# expect: CODE[, CODE...]` (one code per
//! finding on that line); every line without it must have none, so each
//! script is its own set of negatives. Every failing case is reported at
//! once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flor_propagate::{python, Finding, LanguagePropagator};

fn cases() -> Vec<(String, PathBuf)> {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("tests")
        .join("lint");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("tests/lint exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    files.sort();
    files.into_iter().map(|f| (f.file_name().unwrap().to_string_lossy().into_owned(), f)).collect()
}

/// (line, code) → how many findings, from the `# expect:` comments.
fn expected(source: &str) -> BTreeMap<(usize, String), usize> {
    let mut out = BTreeMap::new();
    for (i, line) in source.lines().enumerate() {
        let Some((_, codes)) = line.split_once("# expect:") else { continue };
        for code in codes.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            *out.entry((i + 1, code.to_string())).or_insert(0) += 1;
        }
    }
    out
}

/// Problems with a finding's shape: it points at code on its line, says
/// what and how to fix it.
fn malformed(f: &Finding, source: &str) -> Option<String> {
    let line = source.lines().nth(f.line.checked_sub(1)?)?;
    let at = line.chars().nth(f.column.checked_sub(1)?)?;
    if at.is_whitespace() || f.message.is_empty() || f.hint.as_deref().is_none_or(str::is_empty) {
        return Some(format!("{f} (hint {:?}) does not point at code with a message and a hint", f.hint));
    }
    None
}

#[test]
fn findings_are_exactly_the_expected_ones() {
    let mut report = String::new();
    let (mut expected_total, mut clean_lines) = (0, 0);
    for (name, path) in cases() {
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = expected(&source);
        expected_total += want.values().sum::<usize>();
        clean_lines += source.lines().filter(|l| !l.contains("# expect:") && !l.trim().is_empty()).count();
        let found = match python().lint(&source) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(report, "{name}: {e}");
                continue;
            }
        };
        let mut got: BTreeMap<(usize, String), usize> = BTreeMap::new();
        for f in &found {
            *got.entry((f.line, f.code.clone())).or_insert(0) += 1;
            if let Some(problem) = malformed(f, &source) {
                let _ = writeln!(report, "{name}: {problem}");
            }
        }
        for ((line, code), n) in &want {
            let g = got.get(&(*line, code.clone())).copied().unwrap_or(0);
            if g != *n {
                let _ = writeln!(report, "{name}:{line}: expected {n} × {code}, found {g}");
            }
        }
        for f in found.iter().filter(|f| !want.contains_key(&(f.line, f.code.clone()))) {
            let _ = writeln!(report, "{name}: unexpected {f}");
        }
    }
    assert!(expected_total >= 20, "only {expected_total} expected findings");
    assert!(clean_lines >= 200, "only {clean_lines} lines that must stay clean");
    assert!(report.is_empty(), "source checks differ:\n{report}");
}

#[test]
fn messages_name_the_checkpoint_the_loop_and_the_fix() {
    let script = "import flordb as flor\nw = [0.0]\nwith flor.checkpointing(w=w):\n    for e in \
                  flor.loop('epoch', range(3)):\n        w = [x + 1 for x in w]\n";
    let [f] = &python().lint(script).unwrap()[..] else { panic!("one finding expected") };
    assert_eq!((f.line, f.column), (5, 9));
    assert!(f.message.contains("line 3") && f.message.contains("loop `epoch` (line 4)"), "{}", f.message);
    assert!(f.hint.as_deref().unwrap().contains("in place"), "{f:?}");
}

#[test]
fn columns_count_characters_and_bad_input_is_an_error() {
    let script = "import flordb as flor\nw = [0.0]\nwith flor.checkpointing(w=w):\n    for e in \
                  flor.loop('epoch', range(3)):\n        é = 1; w = [1]\n";
    let found = python().lint(script).unwrap();
    assert_eq!(found.iter().map(|f| (f.line, f.column)).collect::<Vec<_>>(), [(5, 16)]);
    assert!(python().lint("def (:\n").is_err());
    assert_eq!(python().lint("").unwrap(), []);
}

#[test]
fn every_script_of_the_other_suites_is_checked_without_error() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("tests");
    let mut checked = 0;
    for suite in ["corpus", "scope"] {
        for case in std::fs::read_dir(root.join(suite)).unwrap().filter_map(Result::ok) {
            for file in ["new.py", "old.py", "expected.py"] {
                let Ok(source) = std::fs::read_to_string(case.path().join(file)) else { continue };
                if let Err(e) = python().lint(&source) {
                    // Only sources that do not parse may fail, as propagation does.
                    assert!(python().log_statements(&source, &[]).is_err(), "{}/{file}: {e}", case.path().display());
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 100, "only {checked} scripts");
}
