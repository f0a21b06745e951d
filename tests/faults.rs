//! Faults: a disk that fills up while a run records, a read-only `.flor/`,
//! a damaged query database, missing or corrupt checkpoint objects during
//! replay, processes killed (SIGKILL) while publishing a run, ingesting or
//! replaying, and runs finishing or commands ingesting at the same instant.
//! Real processes (the `sgd` example, the `flor` binary, Python for replay)
//! in real temporary git repositories.
//!
//! A process is killed at an exact place through a pause point
//! (`flor::core::pause`): it stops there, says so on stderr, and the test
//! kills it (or releases several at once).
//!
//! The disk-full and read-only tests mount a small tmpfs or a read-only bind
//! mount where they may (as root, which CI is); elsewhere they fall back to
//! `RLIMIT_FSIZE` and permission bits, and skip with the reason only when
//! neither works. The replay tests need a Python with `flordb`
//! (`FLOR_TEST_PYTHON`, as in `tests/replay.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use flor::core::pause;
use serde_json::Value as Json;

mod support;
use support::sgd_bin;

// ------------------------------------------------------------------ helpers

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git is installed");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh repository with `files` committed.
fn repo_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("flor-faults").tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "v1"]);
    dir
}

fn sgd_repo() -> tempfile::TempDir {
    repo_with(&[("sgd.rs", include_str!("../examples/sgd.rs"))])
}

fn sgd(dir: &Path, kwargs: &[&str]) -> Command {
    let mut c = Command::new(sgd_bin());
    c.arg("--kwargs").args(kwargs).current_dir(dir).stdin(Stdio::null());
    c
}

fn record(dir: &Path, kwargs: &[&str]) {
    let out = sgd(dir, kwargs).output().expect("run sgd");
    assert!(out.status.success(), "sgd failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn flor_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flor"));
    c.args(args).current_dir(dir).stdin(Stdio::null());
    c
}

fn flor(dir: &Path, args: &[&str]) -> Output {
    flor_cmd(dir, args).output().expect("run flor")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn flor_ok(dir: &Path, args: &[&str]) -> String {
    let out = flor(dir, args);
    assert!(out.status.success(), "flor {args:?} failed: {}", stderr_of(&out));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn flor_json(dir: &Path, args: &[&str]) -> Vec<Json> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let text = flor_ok(dir, &a);
    match serde_json::from_str(&text) {
        Ok(Json::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}\n{text}"),
    }
}

/// One number from a query.
fn count(dir: &Path, sql: &str) -> u64 {
    flor_json(dir, &["query", sql])[0]["n"].as_u64().unwrap_or_else(|| panic!("no count from {sql}"))
}

/// Logged values of `name` that share a position with another of the same
/// source (a duplicate), over all runs.
fn duplicates(dir: &Path, name: &str) -> u64 {
    count(
        dir,
        &format!(
            "SELECT count(*) AS n FROM (SELECT tstamp, ctx_id, source FROM logs WHERE value_name = '{name}' \
             GROUP BY tstamp, ctx_id, source HAVING count(*) > 1)"
        ),
    )
}

/// The answers the project gives to a few queries (to compare before and
/// after a fault).
fn answers(dir: &Path) -> Vec<String> {
    [
        vec!["runs", "--format", "json"],
        vec!["dataframe", "loss", "--format", "json"],
        vec!["dataframe", "lr", "epoch_loss", "w", "--format", "json"],
        vec!["query", "SELECT * FROM logs ORDER BY tstamp, ctx_id, value_name, source", "--format", "csv"],
        vec!["query", "SELECT * FROM checkpoints ORDER BY tstamp, ctx_id", "--format", "csv"],
    ]
    .iter()
    .map(|q| flor_ok(dir, q))
    .collect()
}

fn count_in(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path).map(|s| s.matches(needle).count()).unwrap_or(0)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Every file under `dir` with its bytes (to show that nothing changed).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in files_in(dir) {
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.insert(p.clone(), fs::read(&p).unwrap_or_default());
        }
    }
    out
}

fn flor_refs(dir: &Path) -> String {
    git(dir, &["for-each-ref", "refs/flor"])
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh(script: &str) -> bool {
    Command::new("sh").arg("-c").arg(script).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A mount the test made; unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` (e.g. `64k`) at `at`, when this process may mount.
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        sh(&format!("mount -t tmpfs -o size={size} flor-test {}", quoted(at))).then(|| Mount(at.to_owned()))
    }

    /// `at` bound read-only onto itself, when this process may mount.
    fn read_only(at: &Path) -> Option<Mount> {
        let p = quoted(at);
        if !sh(&format!("mount --bind {p} {p}")) {
            return None;
        }
        let m = Mount(at.to_owned());
        sh(&format!("mount -o remount,bind,ro {p}")).then_some(m)
    }

    fn resize(&self, size: &str) {
        assert!(sh(&format!("mount -o remount,size={size} {}", quoted(&self.0))), "remount {}", self.0.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh(&format!("umount {} || umount -l {}", quoted(&self.0), quoted(&self.0)));
    }
}

/// A process whose stderr is watched for pause points.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    stderr: Vec<String>,
    stdout: std::thread::JoinHandle<Vec<u8>>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        Watched { child, lines, stderr: Vec::new(), stdout }
    }

    /// Waits until the process pauses at `point` (`true`) or ends its
    /// stderr without pausing (`false`).
    fn paused_at(&mut self, point: &str) -> bool {
        let wanted = format!("flor: paused at {point}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line == wanted;
                    self.stderr.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("no pause at {point} within 120 s; stderr so far:\n{}", self.stderr.join("\n"));
                }
            }
        }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for the end: status, stdout, stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let status = self.child.wait().expect("wait");
        self.stderr.extend(self.lines.iter());
        let stdout = self.stdout.join().unwrap_or_default();
        (status, String::from_utf8_lossy(&stdout).into_owned(), self.stderr.join("\n"))
    }
}

fn paused(mut cmd: Command, point: &str) -> Command {
    cmd.env(pause::PAUSE_ENV, point);
    cmd
}

// ------------------------------------------------------------- disk full

/// The disk holding the record file fills up mid-run: the run stops with an
/// error naming the file and the cause, the file ends with a whole line, and
/// once there is space again the next command marks the run failed and
/// ingests every record written up to the last completed epoch, once.
#[test]
fn a_full_disk_fails_the_run_clearly_and_keeps_every_flushed_record() {
    let repo = sgd_repo();
    let dir = repo.path();
    let runs = dir.join(".flor/runs");
    fs::create_dir_all(&runs).unwrap();
    let kwargs = ["epochs=100000", "samples=512", "batch_size=8"]; // 64 steps an epoch, ~7 KB of records
    let mount = if is_root() { Mount::tmpfs(&runs, "64k") } else { None };
    let (out, cause) = match &mount {
        Some(_) => (sgd(dir, &kwargs).stdout(Stdio::null()).output().expect("run sgd"), "No space left on device"),
        None => {
            if !sh("ulimit -f 128") {
                eprintln!("SKIPPED: neither a tmpfs mount nor RLIMIT_FSIZE (`ulimit -f`) is available here");
                return;
            }
            eprintln!("note: cannot mount a tmpfs here; limiting the record file with RLIMIT_FSIZE instead");
            // SIGXFSZ ignored, so that the write fails with EFBIG instead.
            let out = Command::new("sh")
                .args(["-c", "trap '' XFSZ; ulimit -f 128 && exec \"$0\" --kwargs \"$@\""])
                .arg(sgd_bin())
                .args(kwargs)
                .current_dir(dir)
                .stdout(Stdio::null())
                .output()
                .expect("run sgd under ulimit");
            (out, "File too large")
        }
    };
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "the run must fail: {stderr}");
    let files = files_in(&runs);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(stderr.contains(cause) && stderr.contains(&file.display().to_string()), "{stderr}");
    let bytes = fs::read(file).unwrap();
    assert!(bytes.ends_with(b"\n"), "a failed write is cut back to the last whole line");
    let flushed = count_in(file, "\"n\":\"loss\"");
    assert!(flushed >= 64 && flushed.is_multiple_of(64), "whole epochs only: {flushed} losses");

    if let Some(m) = &mount {
        m.resize("16m"); // the user frees space
    }
    let out = flor(dir, &["runs", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("marked failed"), "{}", stderr_of(&out));
    let listed: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["status"], "failed");
    assert!(files_in(&runs).is_empty(), "published to git");
    assert_eq!(count(dir, "SELECT count(*) AS n FROM logs WHERE value_name = 'loss'"), flushed as u64);
    assert_eq!(duplicates(dir, "loss"), 0);
    let epochs = flor_json(dir, &["dataframe", "epoch_loss"]);
    assert_eq!(epochs.len(), flushed / 64, "every flushed epoch, with its epoch-level values");
    let loss = flor_json(dir, &["dataframe", "loss"]);
    for e in 0..flushed / 64 {
        assert_eq!(loss.iter().filter(|r| r["epoch"] == e as u64 && r["loss"].is_f64()).count(), 64);
    }
}

// ------------------------------------------------------------- read-only

/// How `.flor/` was made read-only (undone when dropped).
enum ReadOnly {
    Mount(#[allow(dead_code)] Mount),
    Permissions(PathBuf),
}

impl ReadOnly {
    fn make(dir: &Path) -> Option<ReadOnly> {
        if is_root() {
            // Root ignores permission bits: only a read-only mount stops it.
            return Mount::read_only(dir).map(ReadOnly::Mount);
        }
        sh(&format!("chmod -R a-w {}", quoted(dir))).then(|| ReadOnly::Permissions(dir.to_owned()))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Permissions(dir) = self {
            let _ = sh(&format!("chmod -R u+w {}", quoted(dir)));
        }
    }
}

/// With `.flor/` read-only, a run and a query each stop with an error that
/// says so, and nothing changes: no snapshot ref, no file.
#[test]
fn a_read_only_flor_folder_is_a_clear_error_and_changes_nothing() {
    let repo = sgd_repo();
    let dir = repo.path();
    record(dir, &["epochs=1"]);
    let before_answers = answers(dir);
    let flor_dir = dir.join(".flor");
    let (refs, files) = (flor_refs(dir), tree(&flor_dir));
    let Some(guard) = ReadOnly::make(&flor_dir) else {
        eprintln!("SKIPPED: cannot make .flor read-only here (no read-only bind mount, no chmod)");
        return;
    };
    let out = sgd(dir, &["epochs=1"]).output().expect("run sgd");
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{} is not writable", flor_dir.join("runs").display())), "{stderr}");
    for args in [&["runs"][..], &["dataframe", "loss"]] {
        let out = flor(dir, args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is not writable") && stderr.contains(".flor"), "{args:?}: {stderr}");
    }
    assert_eq!(flor_refs(dir), refs, "no snapshot ref was left behind");
    assert_eq!(tree(&flor_dir), files, "nothing in .flor changed");
    drop(guard);
    assert_eq!(answers(dir), before_answers);
    record(dir, &["epochs=1"]);
    assert_eq!(flor_json(dir, &["runs"]).len(), 2);
}

// --------------------------------------------------- damaged query database

/// Overwrites the page that holds the root of `table`'s b-tree.
fn damage_root_page(db: &Path, table: &str) {
    let (page, size): (i64, i64) = {
        let c = rusqlite::Connection::open(db).unwrap();
        let page = c.query_row("SELECT rootpage FROM sqlite_schema WHERE name = ?1", [table], |r| r.get(0)).unwrap();
        let size = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (page, size)
    };
    let mut bytes = fs::read(db).unwrap();
    let at = ((page - 1) * size) as usize;
    bytes[at..at + size as usize].fill(0xA5);
    fs::write(db, bytes).unwrap();
}

/// A query database that is not a database, truncated, or has a corrupt
/// page (found on opening, by the sync, or by the query itself) is rebuilt
/// from git with a note, and the command answers as before.
#[test]
fn a_damaged_query_database_is_rebuilt_from_git() {
    let repo = sgd_repo();
    let dir = repo.path();
    record(dir, &["epochs=3", "samples=2048"]);
    record(dir, &["epochs=2", "lr=0.3"]);
    let before = answers(dir);
    let db = dir.join(".flor/flor.db");
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("junk", |db| fs::write(db, vec![b'x'; 65536]).unwrap()),
        ("truncated", |db| {
            let len = fs::metadata(db).unwrap().len();
            fs::OpenOptions::new().write(true).open(db).unwrap().set_len(len / 3).unwrap();
        }),
        ("a corrupt page the sync reads", |db| damage_root_page(db, "flor_files")),
        ("a corrupt page only the query reads", |db| damage_root_page(db, "flor_records")),
    ];
    for (what, damage) in damages {
        // No process has the database open now; its WAL is checkpointed.
        for side in ["flor.db-wal", "flor.db-shm"] {
            let _ = fs::remove_file(dir.join(".flor").join(side));
        }
        damage(&db);
        let out = flor(dir, &["dataframe", "loss", "--format", "json"]);
        let stderr = stderr_of(&out);
        assert!(out.status.success(), "{what}: {stderr}");
        assert!(
            stderr.contains("is damaged") && stderr.contains("rebuilding it from the run records in git"),
            "{what}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), before[1], "{what}");
        assert_eq!(answers(dir), before, "{what}");
    }
}

/// The same for DuckDB: a file that is not a DuckDB database, one cut
/// short, one with a block that fails its checksum.
#[cfg(feature = "duckdb")]
#[test]
fn a_damaged_duckdb_database_is_rebuilt_from_git() {
    let repo = sgd_repo();
    let dir = repo.path();
    fs::create_dir_all(dir.join(".flor")).unwrap();
    fs::write(dir.join(".flor/config.toml"), "store = \"duckdb\"\n").unwrap();
    record(dir, &["epochs=3", "samples=2048"]);
    record(dir, &["epochs=2", "lr=0.3"]);
    let before = answers(dir);
    let db = dir.join(".flor/flor.duckdb");
    let good = fs::read(&db).unwrap();
    type Damage = fn(&Path, &[u8]);
    let damages: [(&str, Damage); 3] = [
        ("junk", |db, _| fs::write(db, vec![b'x'; 65536]).unwrap()),
        ("truncated", |db, good| fs::write(db, &good[..good.len() / 2]).unwrap()),
        ("a block that fails its checksum", |db, good| {
            let mut bytes = good.to_vec();
            let at = 3 * 4096; // past the headers: the first data block
            bytes[at..at + 4096].fill(0xA5);
            fs::write(db, bytes).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let _ = fs::remove_file(dir.join(".flor/flor.duckdb.wal"));
        damage(&db, &good);
        let out = flor(dir, &["dataframe", "loss", "--format", "json"]);
        let stderr = stderr_of(&out);
        assert!(out.status.success(), "{what}: {stderr}");
        assert!(stderr.contains("is damaged") && stderr.contains("rebuilding it"), "{what}: {stderr}");
        assert_eq!(answers(dir), before, "{what}");
    }
}

// ------------------------------------------------------- killed processes

/// A run killed while publishing (before its records reach git, or after,
/// before the local file is removed) is published by the next command,
/// once, with every record, as the finished run it was.
#[test]
fn a_run_killed_while_publishing_is_published_once_and_whole() {
    for point in [pause::PUBLISH_BEFORE_ATTACH, pause::PUBLISH_AFTER_ATTACH] {
        let repo = sgd_repo();
        let dir = repo.path();
        let mut w = Watched::spawn(paused(sgd(dir, &["epochs=3", "samples=64"]), point));
        assert!(w.paused_at(point), "{point}");
        w.kill();
        let local = files_in(&dir.join(".flor/runs"));
        assert_eq!(local.len(), 1, "{point}: the local file is still there");
        let runs = flor_json(dir, &["runs"]);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["status"], "finished", "{point}: training had ended");
        assert!(files_in(&dir.join(".flor/runs")).is_empty(), "{point}");
        assert_eq!(count(dir, "SELECT count(*) AS n FROM logs WHERE value_name = 'loss'"), 3 * 2, "{point}");
        assert_eq!(count(dir, "SELECT count(*) AS n FROM checkpoints"), 3, "{point}");
        assert_eq!(duplicates(dir, "loss"), 0, "{point}");
        let refname = git(dir, &["for-each-ref", "--format=%(refname)", "refs/flor/runs"]);
        let log = git(dir, &["log", "--format=%s", refname.trim()]);
        assert_eq!(log.matches("flor: records of run").count(), 1, "{point}: attached once:\n{log}");
        let settled = answers(dir);
        assert_eq!(answers(dir), settled, "{point}: the next command changes nothing");
    }
}

/// `flor` commands killed while ingesting, inside an ingestion group (a run
/// went in, the group not yet committed: one transaction for up to 64 runs):
/// the group is discarded whole, and the next command ingests everything,
/// with nothing lost or duplicated — the result is what a rebuild from git
/// gives.
#[test]
fn commands_killed_while_ingesting_resume_without_losing_or_duplicating() {
    let repo = sgd_repo();
    let dir = repo.path();
    let runs = 4;
    for seed in 1..=runs {
        record(dir, &["epochs=2", "samples=128", &format!("seed={seed}")]);
    }
    let expected = answers(dir);
    for f in ["flor.db", "flor.db-wal", "flor.db-shm"] {
        let _ = fs::remove_file(dir.join(".flor").join(f));
    }
    for _ in 0..2 {
        let mut w = Watched::spawn(paused(flor_cmd(dir, &["dataframe", "loss"]), pause::SYNC_AFTER_RUN));
        assert!(w.paused_at(pause::SYNC_AFTER_RUN), "the sync reaches its first run");
        w.kill();
    }
    let (status, _, stderr) = Watched::spawn(flor_cmd(dir, &["dataframe", "loss"])).finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(answers(dir), expected);
    assert_eq!(duplicates(dir, "loss"), 0);
    flor_ok(dir, &["rebuild"]);
    assert_eq!(answers(dir), expected);
}

// ------------------------------------------------------------ concurrency

/// Runs that finish at the same instant (released together just before
/// publishing) are all published, each once, with all their records.
#[test]
fn runs_finishing_at_the_same_instant_all_publish() {
    let repo = sgd_repo();
    let dir = repo.path();
    let release = dir.join(".release");
    let n = 6;
    let mut procs: Vec<Watched> = (1..=n)
        .map(|seed| {
            let mut c =
                paused(sgd(dir, &["epochs=2", "samples=64", &format!("seed={seed}")]), pause::PUBLISH_BEFORE_ATTACH);
            c.env(pause::RELEASE_ENV, &release);
            Watched::spawn(c)
        })
        .collect();
    for p in &mut procs {
        assert!(p.paused_at(pause::PUBLISH_BEFORE_ATTACH));
    }
    fs::write(&release, b"").unwrap();
    for p in procs {
        let (status, _, stderr) = p.finish();
        assert!(status.success(), "{stderr}");
    }
    assert!(files_in(&dir.join(".flor/runs")).is_empty(), "every run published itself");
    let listed = flor_json(dir, &["runs"]);
    assert_eq!(listed.len(), n);
    assert!(listed.iter().all(|r| r["status"] == "finished"), "{listed:?}");
    assert_eq!(count(dir, "SELECT count(*) AS n FROM logs WHERE value_name = 'loss'"), (n * 2 * 2) as u64);
    assert_eq!(duplicates(dir, "loss"), 0);
    for refname in git(dir, &["for-each-ref", "--format=%(refname)", "refs/flor/runs"]).lines() {
        let log = git(dir, &["log", "--format=%s", refname]);
        assert_eq!(log.matches("flor: records of run").count(), 1, "{refname}:\n{log}");
    }
}

/// Two commands that ingest the same runs at the same instant both answer
/// in full, alike, and the database holds each record once.
#[test]
fn two_commands_ingesting_at_once_agree() {
    let repo = sgd_repo();
    let dir = repo.path();
    for seed in 1..=5 {
        record(dir, &["epochs=3", "samples=256", &format!("seed={seed}")]);
    }
    let expected = flor_ok(dir, &["dataframe", "loss", "--format", "json"]);
    for f in ["flor.db", "flor.db-wal", "flor.db-shm"] {
        let _ = fs::remove_file(dir.join(".flor").join(f));
    }
    let release = dir.join(".release");
    let mut procs: Vec<Watched> = (0..2)
        .map(|_| {
            let mut c = paused(flor_cmd(dir, &["dataframe", "loss", "--format", "json"]), pause::SYNC_BEFORE_REFS);
            c.env(pause::RELEASE_ENV, &release);
            Watched::spawn(c)
        })
        .collect();
    for p in &mut procs {
        assert!(p.paused_at(pause::SYNC_BEFORE_REFS));
    }
    fs::write(&release, b"").unwrap();
    for p in procs {
        let (status, stdout, stderr) = p.finish();
        assert!(status.success(), "{stderr}");
        assert_eq!(stdout, expected);
    }
    assert_eq!(count(dir, "SELECT count(*) AS n FROM logs WHERE value_name = 'loss'"), 5 * 3 * 8);
    assert_eq!(duplicates(dir, "loss"), 0);
    assert_eq!(count(dir, "SELECT count(*) AS n FROM runs"), 5);
}

// ------------------------------------------------------------------ replay

/// A Python with `flordb`, or `None` (skipped, except under CI).
fn python() -> Option<String> {
    match std::env::var("FLOR_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(std::env::var("CI").is_err(), "FLOR_TEST_PYTHON must name a Python with flordb installed");
            eprintln!("SKIPPED: set FLOR_TEST_PYTHON to a Python with flordb installed (scripts/test.sh does)");
            None
        }
    }
}

/// A training script whose state and RNG are checkpointed every epoch, so
/// replaying an epoch-level statement restores a checkpoint per epoch.
const TRAIN: &str = r#"import random
import flordb as flor

seed = flor.arg("seed", 1)
random.seed(seed)
state = {"w": 0.0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(4)):
            state["w"] += random.random()
            flor.log("loss", state["w"])
        flor.log("w", state["w"])
"#;

/// A repository with [`TRAIN`] committed and recorded once per seed, then
/// edited to log `w2` at epoch level (not committed).
fn python_runs(py: &str, seeds: &[u32]) -> tempfile::TempDir {
    let repo = repo_with(&[("train.py", TRAIN)]);
    let dir = repo.path();
    for seed in seeds {
        let out = Command::new(py)
            .args(["train.py", "--kwargs", &format!("seed={seed}")])
            .current_dir(dir)
            .output()
            .expect("run python");
        assert!(out.status.success(), "train.py: {}", stderr_of(&out));
    }
    let newest = TRAIN.replace(
        "        flor.log(\"w\", state[\"w\"])\n",
        "        flor.log(\"w\", state[\"w\"])\n        flor.log(\"w2\", state[\"w\"] * 2)\n",
    );
    assert_ne!(newest, TRAIN);
    fs::write(dir.join("train.py"), newest).unwrap();
    repo
}

/// The checkpoint digests of each run, by tstamp.
fn digests(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in flor_json(dir, &["query", "SELECT tstamp, digest FROM checkpoints ORDER BY tstamp, ctx_id"]) {
        out.entry(r["tstamp"].as_str().unwrap().to_owned()).or_default().push(r["digest"].as_str().unwrap().to_owned());
    }
    out
}

fn object_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join(".flor/objects").join(&digest[..2]).join(&digest[2..])
}

/// One run's checkpoint objects missing, another's corrupt: replay fails
/// those two runs, each with the reason, and replays the third.
#[test]
fn a_missing_or_corrupt_checkpoint_fails_only_its_run() {
    let Some(py) = python() else { return };
    let repo = python_runs(&py, &[1, 2, 3]);
    let dir = repo.path();
    let by_run = digests(dir);
    let tstamps: Vec<&String> = by_run.keys().collect();
    assert_eq!(tstamps.len(), 3);
    for d in &by_run[tstamps[0]] {
        fs::remove_file(object_path(dir, d)).unwrap();
    }
    for d in &by_run[tstamps[1]] {
        fs::write(object_path(dir, d), b"not what was stored").unwrap();
    }
    let out = flor(dir, &["replay", "--apply", "w2", "--yes", "--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}\n{}", stderr_of(&out));
    assert!(stdout.contains("is not in the object store"), "the missing object is named:\n{stdout}");
    assert!(stdout.contains("is corrupt"), "the corrupt object is named:\n{stdout}");
    assert_eq!(stdout.matches("values recovered").count(), 1, "{stdout}");
    let rows = flor_json(dir, &["dataframe", "w2"]);
    assert_eq!(rows.len(), 3, "the intact run's three epochs");
    assert!(rows.iter().all(|r| r["tstamp"] == tstamps[2].as_str() && r["w2"].is_f64()), "{rows:?}");
}

/// `flor replay` killed after attaching one run's replay (before its work
/// files are removed; other segments may be running): the next `flor
/// replay` does what is left, and every run ends with its values once.
#[test]
fn a_replay_killed_midway_resumes_without_duplicates() {
    let Some(py) = python() else { return };
    let repo = python_runs(&py, &[1, 2, 3]);
    let dir = repo.path();
    let cmd = paused(flor_cmd(dir, &["replay", "--apply", "w2", "--yes", "--jobs", "1"]), pause::REPLAY_AFTER_ATTACH);
    let mut w = Watched::spawn(cmd);
    assert!(w.paused_at(pause::REPLAY_AFTER_ATTACH));
    w.kill();
    let out = flor(dir, &["replay", "--apply", "w2", "--yes", "--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr_of(&out));
    assert_eq!(stdout.matches("values recovered").count(), 2, "only the two runs left:\n{stdout}");
    let rows = flor_json(dir, &["dataframe", "w", "w2"]);
    assert_eq!(rows.len(), 3 * 3);
    for r in &rows {
        let (w, w2) = (r["w"].as_f64().unwrap(), r["w2"].as_f64().unwrap());
        assert_eq!(w2, w * 2.0, "replayed from the right checkpoint: {r}");
    }
    assert_eq!(duplicates(dir, "w2"), 0);
    for refname in git(dir, &["for-each-ref", "--format=%(refname)", "refs/flor/runs"]).lines() {
        let files = git(dir, &["ls-tree", "--name-only", &format!("{refname}:.flor/records")]);
        let replays: Vec<&str> = files.lines().filter(|f| f.contains(".replay-")).collect();
        assert!(!replays.is_empty(), "{refname}: replayed:\n{files}");
        assert!(replays.iter().all(|f| f.contains(".replay-000001-")), "{refname}: one replay:\n{files}");
    }
    let plan = flor_ok(dir, &["replay", "--apply", "w2", "--dry-run"]);
    assert!(plan.contains("Nothing to replay"), "{plan}");
    let left: Vec<PathBuf> = files_in(&dir.join(".flor/replay"));
    assert!(left.is_empty(), "work files of published replays are gone: {left:?}");
}
