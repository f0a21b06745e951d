//! End-to-end tests: the `sgd` example records real runs in real temporary
//! git repositories; the `flor` binary queries them.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

mod support;
use support::sgd_bin;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .expect("git is installed");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh repository holding the training script, committed once.
fn new_repo() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("flor-e2e").tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    fs::copy(
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
            .join("examples/sgd.rs"),
        dir.path().join("sgd.rs"),
    )
    .unwrap();
    fs::write(dir.path().join(".gitignore"), "data/\n").unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "v1"]);
    dir
}

fn record(repo: &Path, kwargs: &[&str]) -> Output {
    let mut cmd = Command::new(sgd_bin());
    if !kwargs.is_empty() {
        cmd.arg("--kwargs").args(kwargs);
    }
    let out = cmd.current_dir(repo).output().expect("run sgd");
    assert!(out.status.success(), "sgd failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn flor(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flor")).args(args).current_dir(repo).output().expect("run flor")
}

fn flor_ok(repo: &Path, args: &[&str]) -> String {
    let out = flor(repo, args);
    assert!(out.status.success(), "flor {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn flor_json(repo: &Path, args: &[&str]) -> Vec<Json> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let text = flor_ok(repo, &a);
    match serde_json::from_str(&text) {
        Ok(Json::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}\n{text}"),
    }
}

#[test]
fn records_runs_and_pivots_them() {
    let repo = new_repo();
    record(repo.path(), &["lr=0.1", "epochs=2", "samples=128", "batch_size=32"]);
    record(repo.path(), &["lr=0.02", "epochs=3", "samples=64", "batch_size=32"]);

    let runs = flor_json(repo.path(), &["runs"]);
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r["status"], "finished");
        assert_eq!(r["filename"], "sgd.rs");
    }

    // Step level: 2 epochs × 4 steps + 3 epochs × 2 steps.
    let loss = flor_json(repo.path(), &["dataframe", "loss"]);
    assert_eq!(loss.len(), 8 + 6);
    let keys: Vec<&String> = loss[0].as_object().unwrap().keys().collect();
    for k in ["projid", "tstamp", "filename", "epoch", "step", "loss"] {
        assert!(keys.iter().any(|c| *c == k), "missing column {k}: {keys:?}");
    }
    assert_eq!(loss[0]["epoch"], 0);
    assert_eq!(loss[0]["step"], 0);
    assert_eq!(loss[7]["epoch"], 1);
    assert_eq!(loss[7]["step"], 3);
    assert!(loss.iter().all(|r| r["loss"].is_f64()));

    // Epoch level with an arg: lr repeated on every row of its run.
    let epochs = flor_json(repo.path(), &["dataframe", "lr", "epoch_loss"]);
    assert_eq!(epochs.len(), 5);
    assert!(epochs[..2].iter().all(|r| r["lr"] == 0.1));
    assert!(epochs[2..].iter().all(|r| r["lr"] == 0.02));
    assert!(epochs.iter().all(|r| r.get("step").is_none()));

    // Run level: one row per run with every arg.
    let args = flor_json(repo.path(), &["dataframe"]);
    assert_eq!(args.len(), 2);
    assert_eq!(args[1]["epochs"], 3);
    assert_eq!(args[1]["samples"], 64);

    let q = flor_json(repo.path(), &["query", "SELECT COUNT(*) AS n FROM logs WHERE value_name = 'loss'"]);
    assert_eq!(q[0]["n"], 14);

    // CSV and aligned output.
    let csv = flor_ok(repo.path(), &["dataframe", "epoch_loss", "--format", "csv"]);
    assert!(csv.starts_with("projid,tstamp,filename,epoch,epoch_loss\n"), "{csv}");
    assert_eq!(csv.lines().count(), 6);
    let table = flor_ok(repo.path(), &["runs"]);
    assert!(table.lines().next().unwrap().starts_with("tstamp"), "{table}");

    // Works from a subfolder.
    fs::create_dir(repo.path().join("sub")).unwrap();
    assert_eq!(flor_json(&repo.path().join("sub"), &["runs"]).len(), 2);
}

struct RepoState {
    head: String,
    branch: String,
    status: String,
    ls_files: String,
    index: Vec<u8>,
}

fn repo_state(dir: &Path) -> RepoState {
    RepoState {
        head: git(dir, &["rev-parse", "HEAD"]),
        branch: git(dir, &["symbolic-ref", "HEAD"]),
        status: git(dir, &["status", "--porcelain", "--untracked-files=all"]),
        ls_files: git(dir, &["ls-files", "-s"]),
        index: fs::read(dir.join(".git/index")).unwrap(),
    }
}

#[test]
fn recording_never_touches_the_repository() {
    let repo = new_repo();
    let dir = repo.path();
    // A dirty tree: modified tracked file, untracked file, ignored file.
    fs::write(dir.join("sgd.rs"), fs::read_to_string(dir.join("sgd.rs")).unwrap() + "\n// edited\n").unwrap();
    fs::write(dir.join("notes.txt"), "untracked\n").unwrap();
    fs::create_dir(dir.join("data")).unwrap();
    fs::write(dir.join("data/big.bin"), "ignored\n").unwrap();
    let before = repo_state(dir);
    record(dir, &["epochs=1"]);
    let after = repo_state(dir);
    assert_eq!(before.head, after.head);
    assert_eq!(before.branch, after.branch);
    assert_eq!(before.status, after.status);
    assert_eq!(before.ls_files, after.ls_files);
    assert!(before.index == after.index, "the index file changed");

    // The run's ref: code snapshot (parent HEAD) + records on top.
    let refs = git(dir, &["for-each-ref", "--format=%(refname)", "refs/flor/runs/"]);
    let refname = refs.lines().next().expect("a run ref").to_owned();
    let tip_files = git(dir, &["ls-tree", "-r", "--name-only", &refname]);
    assert!(tip_files.contains("notes.txt"), "untracked file snapshotted: {tip_files}");
    assert!(!tip_files.contains("data/big.bin"), "ignored file not snapshotted");
    assert!(tip_files.contains(".flor/records/"), "records attached: {tip_files}");
    let code_commit = format!("{refname}^");
    assert_eq!(git(dir, &["rev-parse", &format!("{code_commit}^")]), before.head);
    let code = git(dir, &["show", &format!("{code_commit}:sgd.rs")]);
    assert!(code.contains("// edited"), "the snapshot has the working-tree version");
    // `.flor/` is ignored by git.
    assert!(!after.status.contains(".flor"));
}

#[test]
fn works_in_a_repository_without_commits() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    fs::copy(
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
            .join("examples/sgd.rs"),
        dir.path().join("sgd.rs"),
    )
    .unwrap();
    let status = git(dir.path(), &["status", "--porcelain"]);
    record(dir.path(), &["epochs=1"]);
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), status);
    assert_eq!(flor_json(dir.path(), &["runs"]).len(), 1);
}

fn count_in(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path).map(|s| s.matches(needle).count()).unwrap_or(0)
}

#[test]
fn sigkill_keeps_completed_epochs_and_marks_the_run_failed() {
    let repo = new_repo();
    let dir = repo.path();
    let mut child = Command::new(sgd_bin())
        .args(["--kwargs", "epochs=1000", "samples=128", "batch_size=32", "pause_ms=15"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sgd");
    let runs_dir = dir.join(".flor/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let file = loop {
        let found = fs::read_dir(&runs_dir).ok().and_then(|rd| rd.flatten().map(|e| e.path()).next());
        if let Some(f) = found {
            if count_in(&f, "\"n\":\"epoch_loss\"") >= 3 {
                break f;
            }
        }
        assert!(Instant::now() < deadline, "the run never completed 3 epochs");
        std::thread::sleep(Duration::from_millis(10));
    };
    // While it runs, queries see it as running.
    let runs = flor_json(dir, &["runs"]);
    assert_eq!(runs[0]["status"], "running");
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let completed = count_in(&file, "\"n\":\"epoch_loss\"");
    assert!(completed >= 3);

    let out = flor(dir, &["runs", "--format", "json"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("marked failed"), "{stderr}");
    let runs: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    assert!(!file.exists(), "the record file was published to git");

    // Every step of every completed epoch is there.
    let loss = flor_json(dir, &["dataframe", "loss"]);
    for e in 0..completed {
        let n = loss.iter().filter(|r| r["epoch"] == e as u64 && r["loss"].is_f64()).count();
        assert_eq!(n, 4, "epoch {e} has all its steps");
    }
    let epochs = flor_json(dir, &["dataframe", "epoch_loss"]);
    assert!(epochs.len() >= completed);
    // Checkpoints of completed epochs are recorded.
    let ck = flor_json(dir, &["query", "SELECT COUNT(*) AS n FROM checkpoints"]);
    assert!(ck[0]["n"].as_u64().unwrap() >= completed as u64);
}

#[test]
fn flordb_spellings_unpack_and_stat_run_rebuild_and_runs() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=1"]);
    let runs = flor_ok(dir, &["runs"]);
    let stat = flor(dir, &["stat"]);
    assert!(stat.status.success(), "{}", String::from_utf8_lossy(&stat.stderr));
    assert_eq!(String::from_utf8_lossy(&stat.stdout), runs);
    assert!(String::from_utf8_lossy(&stat.stderr).contains("`flor runs` lists the runs"));
    let before = flor_ok(dir, &["dataframe", "loss"]);
    let unpack = flor(dir, &["unpack"]);
    assert!(unpack.status.success(), "{}", String::from_utf8_lossy(&unpack.stderr));
    assert!(String::from_utf8_lossy(&unpack.stderr).contains("FlorDB's name for `flor rebuild`"));
    assert_eq!(flor_ok(dir, &["dataframe", "loss"]), before);
}

#[test]
fn rebuild_gives_identical_answers() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=2", "samples=64"]);
    record(dir, &["epochs=1", "lr=0.3"]);
    let queries: Vec<Vec<&str>> = vec![
        vec!["dataframe", "loss"],
        vec!["dataframe", "lr", "epoch_loss", "w"],
        vec!["dataframe"],
        vec!["runs"],
        vec!["query", "SELECT * FROM logs ORDER BY tstamp, ctx_id, value_name"],
        vec!["query", "SELECT * FROM loops ORDER BY tstamp, ctx_id"],
    ];
    let before = answers(dir, &queries);
    let out = flor(dir, &["rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 runs"));
    assert_eq!(before, answers(dir, &queries));
    // Even without the database file at all.
    for f in ["flor.db", "flor.db-wal", "flor.db-shm"] {
        let _ = fs::remove_file(dir.join(".flor").join(f));
    }
    assert_eq!(before, answers(dir, &queries));
}

#[test]
fn a_corrupt_database_is_rebuilt_automatically() {
    // More kinds of damage in tests/faults.rs.
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=1"]);
    let before = flor_ok(dir, &["dataframe", "epoch_loss", "--format", "json"]);
    fs::write(dir.join(".flor/flor.db"), b"this is not a database, just junk bytes......................").unwrap();
    for f in ["flor.db-wal", "flor.db-shm"] {
        let _ = fs::remove_file(dir.join(".flor").join(f));
    }
    let out = flor(dir, &["dataframe", "epoch_loss", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilding it from the run records in git"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), before);
}

#[test]
fn a_database_from_an_older_flor_is_rebuilt_automatically() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=2"]);
    let before = flor_ok(dir, &["dataframe", "epoch_loss", "--format", "json"]);
    {
        let c = rusqlite::Connection::open(dir.join(".flor/flor.db")).unwrap();
        c.execute_batch("PRAGMA user_version = 1;").unwrap();
    }
    let out = flor(dir, &["dataframe", "epoch_loss", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("older flor"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), before);
}

#[test]
fn malformed_records_are_reported_and_the_rest_ingested() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=1"]);
    // A record file left by a dead process, with one garbage line.
    let tstamp = "2030-01-01T00:00:00.000001";
    let id = "2030-01-01T00-00-00.000001";
    git(dir, &["update-ref", &format!("refs/flor/runs/{id}"), "HEAD"]);
    let header = serde_json::json!({"k": "run", "format": 1, "source": "forward", "projid": "p", "tstamp": tstamp,
        "filename": "sgd.rs", "argv": ["sgd"], "interpreter": "sgd", "host": "h", "pid": 1, "status": "running"});
    let body = format!(
        "{header}\n{{\"k\":\"arg\",\"n\":\"lr\",\"vf\":0.5}}\n{{\"k\":\"log\",\"n\":\"epoch_loss\",\"vf\":1.5}}\nGARBAGE{{\n{{\"k\":\"log\",\"n\":\"epoch_loss\"}}\n{{\"k\":\"log\",\"n\":\"w\",\"vf\":2.5}}\n"
    );
    fs::write(dir.join(format!(".flor/runs/{id}.jsonl")), body).unwrap();
    let out = flor(dir, &["dataframe", "lr", "w", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "exit status 3 for unreadable records");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{id}.jsonl:4: not a record")), "{stderr}");
    assert!(stderr.contains(&format!("{id}.jsonl:5: record has no value")), "{stderr}");
    let rows: Json = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["tstamp"] == tstamp).expect("the bad file's run");
    assert_eq!(row["lr"], 0.5);
    assert_eq!(row["w"], 2.5);
    // Reported once; later commands succeed and keep everything.
    let again = flor_json(dir, &["dataframe", "lr", "w"]);
    assert_eq!(again, *rows.as_array().unwrap());
    let runs = flor_json(dir, &["runs"]);
    assert_eq!(runs.iter().find(|r| r["tstamp"] == tstamp).unwrap()["status"], "failed");
}

#[test]
fn errors_are_clear() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=1"]);
    let check = |args: &[&str], needle: &str| {
        let out = flor(dir, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    check(&["query", "SELEC 1"], "syntax error");
    check(&["query", "DELETE FROM logs"], "read-only");
    check(&["query", "SELECT * FROM nosuch"], "no such table");
    check(&["dataframe", "nosuch"], "known names");

    let outside = tempfile::tempdir().unwrap();
    let out = flor(outside.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("git init"));

    // A --kwargs value that does not fit the default's type.
    let out = Command::new(sgd_bin()).args(["--kwargs", "epochs=many"]).current_dir(dir).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("epochs=many") && stderr.contains("integer"), "{stderr}");
    let runs = flor_json(dir, &["runs"]);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["status"], "failed");
}

#[test]
fn concurrent_runs_keep_all_their_records() {
    concurrent_runs(None);
}

/// The same with the DuckDB store, which one process at a time may open:
/// runs release it while they train, and open it again (waiting their turn)
/// to ingest their records.
#[cfg(feature = "duckdb")]
#[test]
fn concurrent_runs_share_a_duckdb_store() {
    concurrent_runs(Some("duckdb"));
}

fn concurrent_runs(store: Option<&str>) {
    let repo = new_repo();
    let dir = repo.path();
    if let Some(store) = store {
        fs::create_dir_all(dir.join(".flor")).unwrap();
        fs::write(dir.join(".flor/config.toml"), format!("store = \"{store}\"\n")).unwrap();
    }
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(sgd_bin())
                .args(["--kwargs", "epochs=3", "samples=256", &format!("seed={}", i + 1)])
                .current_dir(dir)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let runs = flor_json(dir, &["runs"]);
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["status"] == "finished"));
    assert_eq!(flor_json(dir, &["dataframe", "loss"]).len(), 2 * 3 * 8);
}

// ---------------------------------------------------------------- propagate

const PROPAGATE_NEW: &str = "import flordb as flor\nfor epoch in flor.loop(\"epoch\", range(3)):\n    for x, y in loader:\n        optimizer.zero_grad()\n        loss = criterion(model(x), y)\n        loss.backward()\n        flor.log(\"loss\", loss.item())\n        optimizer.step()\n";
const PROPAGATE_OLD: &str = "import flordb as flor\nfor epoch in flor.loop(\"epoch\", range(3)):\n    for x, y in loader:\n        opt.zero_grad()\n        err = criterion(model(x), y)  # the loss\n        err.backward()\n        opt.step()\n";

#[test]
fn propagate_needs_no_repository_and_reports_each_statement() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("new.py"), PROPAGATE_NEW).unwrap();
    fs::write(dir.path().join("old.py"), PROPAGATE_OLD).unwrap();
    let out = flor(dir.path(), &["propagate", "--from", "new.py", "--name", "loss", "--to", "old.py"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        PROPAGATE_OLD
            .replace("        err.backward()\n", "        err.backward()\n        flor.log(\"loss\", err.item())\n")
    );
    assert!(stderr.contains("line 7 -> placed at line 7 (renamed loss -> err)"), "{stderr}");

    // --out writes the file; running again finds the statement there.
    let out = flor(dir.path(), &["propagate", "--from", "new.py", "--line", "7", "--to", "old.py", "--out", "old.py"]);
    assert!(out.status.success());
    let out = flor(dir.path(), &["propagate", "--from", "new.py", "--line", "7", "--to", "old.py"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already present at line 7"));
}

#[test]
fn propagate_exits_4_when_a_statement_cannot_be_placed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("new.py"), PROPAGATE_NEW).unwrap();
    fs::write(dir.path().join("old.py"), "import json\nprint(json.dumps({}))\n").unwrap();
    let out = flor(dir.path(), &["propagate", "--from", "new.py", "--line", "7", "--to", "old.py"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED: no mapped context"));
    // Bad requests are errors (exit 1) with a message.
    let out = flor(dir.path(), &["propagate", "--from", "new.py", "--line", "3000", "--to", "old.py"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no statement"));
    let out = flor(dir.path(), &["propagate", "--from", "new.py", "--name", "nope", "--to", "old.py"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no flor.log statement named nope"));
}

// --------------------------------------------------------------------- lint

const LINT_REBOUND: &str = "import numpy as np\nimport flordb as flor\nnp.random.seed(0)\nw = np.zeros(3)\n\
with flor.checkpointing(w=w):\n    for epoch in flor.loop(\"epoch\", range(3)):\n        w = w - 0.1 * \
np.random.rand(3)\n        flor.log(\"w0\", float(w[0]))\n";

#[test]
fn lint_prints_findings_and_exits_6_on_warnings() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("train.py"), LINT_REBOUND).unwrap();
    fs::write(dir.path().join("fixed.py"), LINT_REBOUND.replace("w = w - 0.1", "w -= 0.1")).unwrap();
    let noted = "import random\nimport flordb as flor\nfor e in flor.loop('epoch', range(2)):\n    flor.log('x', random.random())\n";
    fs::write(dir.path().join("noted.py"), noted).unwrap();

    // Needs no repository; a warning sets the exit status.
    let out = flor(dir.path(), &["lint", "train.py", "fixed.py"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{stdout}");
    assert!(
        stdout
            .contains("train.py:7:9: warning[flor::rebound-checkpoint]: `w` is passed to flor.checkpointing at line 5"),
        "{stdout}"
    );
    assert!(stdout.contains("    hint: ") && stdout.contains("fixed.py: no findings"), "{stdout}");
    // Notes alone do not.
    let out = flor(dir.path(), &["lint", "noted.py"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("noted.py:4:19: note[flor::unseeded-randomness]"));

    // One JSON row per finding; -C resolves the scripts.
    let out = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(["-C"])
        .arg(dir.path())
        .args(["lint", "--format", "json", "train.py", "noted.py"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let rows: Vec<Json> = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<(String, i64, String, String)> = rows
        .iter()
        .map(|r| {
            let script = Path::new(r["script"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (
                script,
                r["line"].as_i64().unwrap(),
                r["severity"].as_str().unwrap().into(),
                r["code"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("train.py".to_string(), 7, "warning".to_string(), "flor::rebound-checkpoint".to_string()),
            ("noted.py".to_string(), 4, "note".to_string(), "flor::unseeded-randomness".to_string()),
        ]
    );
    assert!(rows.iter().all(|r| r["hint"].as_str().is_some_and(|h| !h.is_empty())));

    // Scripts that cannot be checked are errors; the others are still checked.
    fs::write(dir.path().join("broken.py"), "def (:\n").unwrap();
    let out = flor(dir.path(), &["lint", "broken.py", "missing.py", "train.rs", "train.py"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot check broken.py: input source does not parse at line 1"), "{stderr}");
    assert!(
        stderr.contains("cannot read missing.py") && stderr.contains("no source checks for `train.rs`"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("train.py:7:9: warning"));
}

/// Every answer of `queries`, as JSON text.
fn answers(dir: &Path, queries: &[Vec<&str>]) -> Vec<String> {
    queries.iter().map(|q| flor_ok(dir, &[q.as_slice(), &["--format", "json"]].concat())).collect()
}

#[cfg(feature = "duckdb")]
#[test]
fn duckdb_store_gives_the_same_answers_as_sqlite() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["epochs=2", "samples=64"]);
    record(dir, &["epochs=1", "lr=0.3"]);
    let queries: Vec<Vec<&str>> = vec![
        vec!["dataframe", "loss"],
        vec!["dataframe", "lr", "epoch_loss", "w"],
        vec!["dataframe"],
        vec!["runs"],
        vec!["names"],
        vec!["query", "SELECT * FROM logs ORDER BY tstamp, source, ctx_id, value_name"],
        vec!["query", "SELECT * FROM loops ORDER BY tstamp, ctx_id"],
        vec!["query", "SELECT tstamp, name, count(*) AS n FROM timings GROUP BY tstamp, name ORDER BY tstamp, name"],
        vec!["query", "SELECT * FROM checkpoints ORDER BY tstamp, ctx_id, name"],
    ];
    let sqlite = answers(dir, &queries);
    // Switching by configuration rebuilds the DuckDB cache from git.
    fs::write(dir.join(".flor/config.toml"), "# engine of the query cache\nstore = \"duckdb\"\n").unwrap();
    assert!(flor_ok(dir, &["store"]).contains("duckdb"));
    assert_eq!(answers(dir, &queries), sqlite, "duckdb vs sqlite on the same records");
    assert!(dir.join(".flor/flor.duckdb").is_file());
    // A run recorded while DuckDB is the store; then back to SQLite (by
    // flag), which is rebuilt and agrees again.
    record(dir, &["epochs=1", "lr=0.05"]);
    let duck = answers(dir, &queries);
    assert_ne!(duck, sqlite, "the new run is visible");
    let back: Vec<String> = queries
        .iter()
        .map(|q| flor_ok(dir, &[&["--store", "sqlite"], q.as_slice(), &["--format", "json"]].concat()))
        .collect();
    assert_eq!(back, duck, "sqlite (rebuilt after the switch) vs duckdb");
    // Rebuild on DuckDB keeps the answers.
    let out = flor(dir, &["rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(answers(dir, &queries), duck);

    // Parquet output, and the binary finds libduckdb without LD_LIBRARY_PATH.
    let file = dir.join("loss.parquet");
    let out = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(["dataframe", "loss", "lr", "--format", "parquet", "--output"])
        .arg(&file)
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run flor");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "a Parquet file");
    // To a pipe (standard output is not a terminal here): the same bytes.
    let out = flor(dir, &["dataframe", "loss", "lr", "--format", "parquet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, bytes, "the same Parquet file on standard output");

    // Engine-specific errors name the engine.
    let out = flor(dir, &["query", "SELECT * FROM logs QUALIFY"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("duckdb"), "{err}");
    let out = flor(dir, &["--store", "sqlite", "query", "SELECT list_value(1, 2)"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("sqlite") && err.contains("list_value"), "{err}");
    assert!(flor_ok(dir, &["query", "SELECT list_value(1, 2) AS l"]).contains("[1, 2]"));
}

#[test]
fn a_bad_store_setting_is_a_clear_error() {
    let repo = new_repo();
    let dir = repo.path();
    fs::create_dir_all(dir.join(".flor")).unwrap();
    fs::write(dir.join(".flor/config.toml"), "store = \"postgres\"\n").unwrap();
    let out = flor(dir, &["runs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(".flor/config.toml") && err.contains("line 1") && err.contains("store"), "{err}");
    assert!(err.contains("postgres") && err.contains("sqlite") && err.contains("duckdb"), "{err}");
    let out = flor(dir, &["--store", "mysql", "runs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysql"));
    fs::write(dir.join(".flor/config.toml"), "store = \"duckdb\"\n").unwrap();
    let out = flor(dir, &["runs"]);
    if cfg!(feature = "duckdb") {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("built without") && err.contains("--features duckdb"), "{err}");
        // Parquet output needs no DuckDB.
        let out = flor(dir, &["--store", "sqlite", "dataframe", "--format", "parquet", "--output", "x.parquet"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let bytes = fs::read(dir.join("x.parquet")).unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "a Parquet file");
    }
}

/// An Arrow cell as the JSON output writes it (numbers compared as floats,
/// dictionary cells as their entry, NULL as null).
fn arrow_cell(array: &dyn arrow_array::Array, row: usize) -> Json {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    use arrow_schema::DataType;
    if array.is_null(row) || array.data_type() == &DataType::Null {
        return Json::Null;
    }
    match array.data_type() {
        DataType::Int64 => Json::from(array.as_primitive::<Int64Type>().value(row) as f64),
        DataType::Float64 => {
            let f = array.as_primitive::<Float64Type>().value(row);
            serde_json::Number::from_f64(f).map_or_else(|| Json::from(format!("{f}")), Json::Number)
        }
        DataType::Boolean => Json::from(array.as_boolean().value(row)),
        DataType::Utf8 => Json::from(array.as_string::<i32>().value(row)),
        DataType::Dictionary(..) => {
            let d = array.as_dictionary::<Int32Type>();
            arrow_cell(d.values().as_ref(), d.keys().value(row) as usize)
        }
        other => panic!("unexpected Arrow type {other}"),
    }
}

/// JSON output's cell, numbers as floats (Arrow's Int64 and JSON's integers
/// compare equal).
fn json_cell(v: &Json) -> Json {
    match v {
        Json::Number(n) => Json::from(n.as_f64().unwrap()),
        other => other.clone(),
    }
}

/// Every cell of `batches` against the rows of `--format json`.
fn same_cells(what: &str, batches: &[arrow_array::RecordBatch], rows: &[Json]) -> (usize, usize) {
    let mut row = 0;
    let (mut dicts, mut nulls) = (0, 0);
    for batch in batches {
        for r in 0..batch.num_rows() {
            let object = rows[row].as_object().expect("row object");
            assert_eq!(object.len(), batch.num_columns(), "{what}: row {row} width");
            for (c, field) in batch.schema().fields().iter().enumerate() {
                let got = arrow_cell(batch.column(c).as_ref(), r);
                nulls += usize::from(got.is_null());
                assert_eq!(got, json_cell(&object[field.name()]), "{what}: row {row}, column {}", field.name());
            }
            row += 1;
        }
        dicts +=
            batch.columns().iter().filter(|c| matches!(c.data_type(), arrow_schema::DataType::Dictionary(..))).count();
    }
    assert_eq!(row, rows.len(), "{what}: row count");
    (dicts, nulls)
}

#[test]
fn parquet_and_arrow_output_hold_the_json_cells() {
    let repo = new_repo();
    let dir = repo.path();
    record(dir, &["lr=0.1", "epochs=2", "samples=128", "batch_size=32"]);
    record(dir, &["lr=0.02", "epochs=3", "samples=64", "batch_size=32"]);
    let questions: [&[&str]; 3] = [
        &["dataframe", "lr", "loss"],
        &["dataframe", "loss", "epoch_loss", "w"],
        &["query", "SELECT tstamp, value_name, CASE WHEN value > 0.5 THEN value END AS big FROM logs ORDER BY 1, 2"],
    ];
    let (mut dicts, mut nulls) = (0, 0);
    for q in questions {
        let rows = flor_json(dir, q);
        assert!(!rows.is_empty(), "{q:?}");

        let file = dir.join("out.parquet");
        let out = Command::new(env!("CARGO_BIN_EXE_flor"))
            .args(q)
            .args(["--format", "parquet", "-o"])
            .arg(&file)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&file).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let (d, n) = same_cells(&format!("parquet {q:?}"), &batches, &rows);
        (dicts, nulls) = (dicts + d, nulls + n);

        // Arrow IPC to a pipe (standard output is not a terminal here).
        let out = Command::new(env!("CARGO_BIN_EXE_flor"))
            .args(q)
            .args(["--format", "arrow"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(out.stdout), None).unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let (d, n) = same_cells(&format!("arrow {q:?}"), &batches, &rows);
        (dicts, nulls) = (dicts + d, nulls + n);
    }
    assert!(dicts > 0, "dictionary columns come back as dictionaries");
    assert!(nulls > 0, "NULL cells come back as nulls");
}
