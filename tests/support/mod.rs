//! Helpers shared by the end-to-end tests (`tests/replay.rs`,
//! `tests/replay_isolation.rs`, `tests/e2e.rs`, `tests/faults.rs`,
//! `tests/untrusted.rs`, `tests/ingest.rs`, `tests/api.rs`, `tests/io.rs`): the
//! Python under test, git isolated from the user's configuration, real
//! `python train.py`, `flor` and `sgd` example processes.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Python with `flordb` (`FLOR_TEST_PYTHON`); `None` skips the test
/// with a message, except under CI, where it fails.
pub(crate) fn python() -> Option<String> {
    match std::env::var("FLOR_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "FLOR_TEST_PYTHON must name a Python with flordb installed (scripts/test.sh sets it)"
            );
            eprintln!("SKIPPED: set FLOR_TEST_PYTHON to a Python with flordb installed (scripts/test.sh does)");
            None
        }
    }
}

/// Git isolated from the user's configuration.
pub(crate) fn git_cmd(dir: &Path, home: &Path) -> Command {
    let mut c = Command::new("git");
    c.args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    c
}

/// Git in `dir` with the test identity, `input` on its standard input;
/// its standard output, trimmed (the test fails if git does).
pub(crate) fn git_input(dir: &Path, args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git is installed");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        std::io::Write::write_all(&mut stdin, text.as_bytes()).expect("write to git");
    }
    let out = child.wait_with_output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir, home).args(args).output().expect("git is installed");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn train(py: &str, repo: &Path, home: &Path, kwargs: &[&str]) {
    let mut c = Command::new(py);
    c.arg("train.py").current_dir(repo).env("HOME", home).env("GIT_CONFIG_NOSYSTEM", "1");
    if !kwargs.is_empty() {
        c.arg("--kwargs").args(kwargs);
    }
    ok(c.output().expect("run python"), &format!("train.py {kwargs:?}"));
}

pub(crate) fn flor(repo: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(args)
        .current_dir(repo)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run flor")
}

/// The profile folder of the running test executable
/// (`target/<profile>/deps/<test>-<hash>` → `target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target profile folder").to_owned()
}

/// The `sgd` example, built (or brought up to date) once per test process:
/// `cargo test --test NAME` alone does not build examples.
pub(crate) fn sgd_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--example", "sgd"])
            .current_dir(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()));
        if profile_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if cfg!(feature = "duckdb") {
            cmd.args(["--features", "duckdb"]);
        }
        assert!(cmd.status().expect("run cargo build --example sgd").success(), "building the sgd example failed");
    });
    profile_dir().join("examples").join(format!("sgd{}", std::env::consts::EXE_SUFFIX))
}

/// A fresh git repository holding a `train.rs`, for runs recorded through
/// the Rust API.
pub(crate) fn rust_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status().expect("git");
    assert!(ok.success());
    std::fs::write(dir.path().join("train.rs"), "fn main() {}\n").unwrap();
    dir
}

/// `flor ARGS` in `repo` with the caller's environment (runs recorded
/// through the Rust API: no Python, no isolated HOME needed).
pub(crate) fn cli(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flor")).args(args).current_dir(repo).output().expect("run flor")
}

/// [`cli`] that must succeed: its stdout and stderr.
pub(crate) fn cli_ok(repo: &Path, args: &[&str]) -> (String, String) {
    let out = cli(repo, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "flor {args:?} failed: {err}");
    (String::from_utf8(out.stdout).expect("utf-8 output"), err)
}

/// [`cli_ok`] with `--format json`: the rows.
pub(crate) fn cli_json(repo: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    match serde_json::from_str(&cli_ok(repo, &a).0) {
        Ok(serde_json::Value::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}"),
    }
}

/// The five committed versions of the acceptance scenario's script
/// (`tests/replay/v*.py`), the newest one with the statements to replay,
/// and the six runs recorded: (version index, `--kwargs`).
pub(crate) const VERSIONS: [&str; 5] = [
    include_str!("../replay/v1.py"),
    include_str!("../replay/v2.py"),
    include_str!("../replay/v3.py"),
    include_str!("../replay/v4.py"),
    include_str!("../replay/v5.py"),
];
/// See [`VERSIONS`].
pub(crate) const NEWEST: &str = include_str!("../replay/newest.py");
/// See [`VERSIONS`].
pub(crate) const RUNS: [(usize, &[&str]); 6] =
    [(0, &[]), (0, &["seed=1", "lr=0.2"]), (1, &["seed=2"]), (2, &["epochs=4"]), (3, &["seed=3"]), (4, &[])];

/// A `.npy` file (version 1) of float64 `values`.
pub(crate) fn npy_f64(values: &[f64]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}", values.len()).into_bytes();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}
