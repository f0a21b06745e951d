//! Source checks at record time: when a run starts, the findings of its
//! script's propagator ([`flor_core::propagate::LanguagePropagator::lint`])
//! are shown once per version of the script (the same bytes never warn
//! twice), never failing the run. `flor lint SCRIPT` shows them on demand.
//!
//! Which versions were shown is remembered by the content hash of the
//! script under `.flor/lint-shown/` (an empty file per version; the name is
//! taken with an exclusive create, so two runs starting at once show it
//! once). [`LINT_ON_RUN_ENV`] or `lint_on_run = false` in
//! `.flor/config.toml` silences it.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

use flor_core::propagate::{Finding, Registry};

use crate::config::{Config, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::project::FLOR_DIR;

/// Environment variable: `0`, `false`, `off` or `no` silences the source
/// checks shown when a run starts (`flor lint` still shows them).
pub const LINT_ON_RUN_ENV: &str = "FLOR_LINT_ON_RUN";

/// The folder under `.flor/` that remembers which script versions were
/// checked at a run's start.
pub const SHOWN_DIR: &str = "lint-shown";

/// Part of the remembered key: a flor with other checks shows a version
/// again.
const CHECKS_VERSION: &str = concat!("flor ", env!("CARGO_PKG_VERSION"), " checks 1");

/// Whether the run-start checks are switched off by [`LINT_ON_RUN_ENV`].
fn silenced_by_env() -> bool {
    std::env::var(LINT_ON_RUN_ENV)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no"))
}

/// The text to show when a run of `script` (a path relative to the
/// repository `root`, as recorded) starts: its findings with a header line,
/// or `None` when there are none, this version of the script was checked
/// at an earlier run's start, no propagator of `registry` handles it, it
/// cannot be read or parsed, or the checks are switched off
/// ([`LINT_ON_RUN_ENV`], `lint_on_run = false`). A version is remembered
/// even when it has no findings, so later runs read only its bytes.
pub fn findings_at_run_start(root: &Path, script: &str, registry: &Registry) -> Result<Option<String>> {
    let flor_dir = root.join(FLOR_DIR);
    if silenced_by_env() || Config::load(&flor_dir.join(CONFIG_FILE))?.lint_on_run == Some(false) {
        return Ok(None);
    }
    let Some(propagator) = registry.for_path(Path::new(script)) else { return Ok(None) };
    let Ok(source) = std::fs::read_to_string(root.join(script)) else { return Ok(None) };
    let mut key = blake3::Hasher::new();
    key.update(CHECKS_VERSION.as_bytes()).update(b"\0").update(propagator.language().as_bytes()).update(b"\0");
    key.update(source.as_bytes());
    let dir = flor_dir.join(SHOWN_DIR);
    let marker = dir.join(key.finalize().to_hex().as_str());
    if marker.exists() {
        return Ok(None);
    }
    let findings = propagator.lint(&source).unwrap_or_default();
    let _ = std::fs::create_dir_all(&dir);
    match OpenOptions::new().write(true).create_new(true).open(&marker) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None), // another run shows it
        // Cannot remember (a read-only .flor): show it anyway.
        _ => {}
    }
    if findings.is_empty() {
        return Ok(None);
    }
    Ok(Some(render(script, &findings, true)))
}

/// Findings of one script as text: a header naming the script and the
/// number of warnings and notes, then one [`Finding::render`] each. With
/// `at_run_start`, the header says how often it is shown and how to
/// silence it.
pub fn render(script: &str, findings: &[Finding], at_run_start: bool) -> String {
    let warnings = findings.iter().filter(|f| f.severity == flor_core::propagate::Severity::Warning).count();
    let notes = findings.len() - warnings;
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut s = format!(
        "flor: source checks of {script}: {}, {} (replayed values may differ from the recorded ones)",
        count(warnings, "warning"),
        count(notes, "note")
    );
    if at_run_start {
        s.push_str(&format!(
            "; shown once per version of the script, silence with {LINT_ON_RUN_ENV}=0 or `lint_on_run = false` in \
             .flor/config.toml"
        ));
    }
    s.push('\n');
    for f in findings {
        s.push_str(&f.render(script));
    }
    s
}

/// The findings of the script file at `path` (read here), from the
/// propagator of `registry` for its file type; `Ok(None)` when none
/// handles it.
pub fn lint_file(path: &Path, registry: &Registry) -> Result<Option<Vec<Finding>>> {
    Ok(lint_file_with_failures(path, registry)?.map(|(findings, _)| findings))
}

/// [`lint_file`], plus the source checkers (framework plugins) that failed
/// on the script, as `(checker, why)`: their findings are missing, the
/// others' are there.
pub fn lint_file_with_failures(path: &Path, registry: &Registry) -> Result<Option<CheckedFile>> {
    if registry.for_path(path).is_none() {
        return Ok(None);
    }
    let source = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let checked =
        registry.lint_with_failures(path, &source).map_err(|e| Error::Lint { path: path.to_owned(), source: e })?;
    Ok(Some(checked))
}

/// A script's findings and the checkers that failed on it (`(checker, why)`).
pub type CheckedFile = flor_core::propagate::Linted;

#[cfg(test)]
mod tests {
    use super::*;

    const REBOUND: &str = "import flordb as flor\nw = [0.0]\nwith flor.checkpointing(w=w):\n    for e in \
                           flor.loop('epoch', range(3)):\n        w = [1.0]\n";

    fn project(script: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(FLOR_DIR)).unwrap();
        std::fs::write(dir.path().join("train.py"), script).unwrap();
        dir
    }

    #[test]
    fn each_version_of_a_script_is_shown_once() {
        let dir = project(REBOUND);
        let registry = flor_propagate::registry();
        let first = findings_at_run_start(dir.path(), "train.py", &registry).unwrap().unwrap();
        assert!(first.starts_with("flor: source checks of train.py: 1 warning, 0 notes"), "{first}");
        assert!(first.contains("train.py:5:9: warning[flor::rebound-checkpoint]") && first.contains("hint:"));
        assert_eq!(findings_at_run_start(dir.path(), "train.py", &registry).unwrap(), None);
        // Another version is shown again; a clean one never.
        std::fs::write(dir.path().join("train.py"), format!("{REBOUND}# changed\n")).unwrap();
        assert!(findings_at_run_start(dir.path(), "train.py", &registry).unwrap().is_some());
        std::fs::write(dir.path().join("train.py"), "import flordb as flor\n").unwrap();
        assert_eq!(findings_at_run_start(dir.path(), "train.py", &registry).unwrap(), None);
        // Files no propagator handles, and missing ones, show nothing.
        assert_eq!(findings_at_run_start(dir.path(), "train.rs", &registry).unwrap(), None);
        assert_eq!(findings_at_run_start(dir.path(), "gone.py", &registry).unwrap(), None);
    }

    #[test]
    fn the_config_switches_it_off() {
        let dir = project(REBOUND);
        std::fs::write(dir.path().join(FLOR_DIR).join(CONFIG_FILE), "lint_on_run = false\n").unwrap();
        assert_eq!(findings_at_run_start(dir.path(), "train.py", &flor_propagate::registry()).unwrap(), None);
        assert!(!dir.path().join(FLOR_DIR).join(SHOWN_DIR).exists(), "nothing remembered while off");
    }
}
