//! Untrusted input, bounded: record files from crashed processes and other
//! people's refs, `.flor/config.toml`, `--where` predicates and user SQL,
//! each through the real `flor` binary with a deadline (a command that
//! runs past it is killed and the test fails).

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// Longest any command here may take.
const DEADLINE: Duration = Duration::from_secs(60);

mod support;
use support::git_input as git_in;

fn git(dir: &Path, args: &[&str]) -> String {
    git_in(dir, args, None)
}

/// A repository with one commit.
fn new_repo() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("flor-untrusted").tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    fs::write(dir.path().join("train.py"), "print('hi')\n").unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "v1"]);
    dir
}

/// Runs `flor args` in `dir`, killed (and the test failed) after
/// [`DEADLINE`].
fn flor(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flor");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        out.read_to_end(&mut o).ok();
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        err.read_to_end(&mut e).ok();
        e
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for flor") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            child.kill().ok();
            child.wait().ok();
            panic!("flor {args:?} ran for more than {DEADLINE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

fn json_rows(out: &Output) -> Vec<Json> {
    match serde_json::from_slice(&out.stdout) {
        Ok(Json::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}\n{}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn header(tstamp: &str, source: &str) -> String {
    serde_json::json!({"k": "run", "format": 1, "source": source, "projid": "p", "tstamp": tstamp,
        "filename": "train.py", "argv": ["train.py"], "interpreter": "python", "host": "h", "pid": 1,
        "status": "running"})
    .to_string()
}

/// The measured defect: a crashed run's record file with a line claiming
/// context 4,000,000,000 made `flor dataframe` run for minutes (ingestion
/// and the pivot sized tables by the id). Now the line is reported with its
/// file and line number, and every other value is queryable.
#[test]
fn a_huge_context_id_in_a_crashed_runs_file_is_reported_not_followed() {
    let repo = new_repo();
    let dir = repo.path();
    let (tstamp, id) = ("2030-01-01T00:00:00.000001", "2030-01-01T00-00-00.000001");
    git(dir, &["update-ref", &format!("refs/flor/runs/{id}"), "HEAD"]);
    fs::create_dir_all(dir.join(".flor/runs")).unwrap();
    let body = [
        header(tstamp, "forward"),
        r#"{"k":"arg","n":"lr","vf":0.5}"#.into(),
        r#"{"k":"iter","c":0,"l":"epoch","it":0}"#.into(),
        r#"{"k":"log","c":0,"n":"loss","vf":1.5}"#.into(),
        r#"{"k":"iter","c":4000000000,"l":"epoch","it":7}"#.into(),
        r#"{"k":"log","c":4000000000,"n":"loss","vf":9.5}"#.into(),
        r#"{"k":"iter","c":1,"l":"epoch","it":1}"#.into(),
        r#"{"k":"log","c":1,"n":"loss","vf":2.5}"#.into(),
    ];
    fs::write(dir.join(format!(".flor/runs/{id}.jsonl")), body.join("\n") + "\n").unwrap();

    let out = flor(dir, &["dataframe", "lr", "loss", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "exit status 3 for unreadable records");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = format!("refs/flor/runs/{id}:.flor/records/{id}.jsonl");
    assert!(stderr.contains(&format!("{file}:5: context id 4000000000 does not fit the file")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:6: context 4000000000 is not declared")), "{stderr}");
    let rows = json_rows(&out);
    let got: Vec<(u64, f64, f64)> = rows
        .iter()
        .map(|r| (r["epoch"].as_u64().unwrap(), r["lr"].as_f64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect();
    assert_eq!(got, vec![(0, 0.5, 1.5), (1, 0.5, 2.5)]);

    // SQL sees the same contexts.
    let out = flor(dir, &["query", "SELECT max(ctx_id) AS m, count(*) AS n FROM loops", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_rows(&out)[0], serde_json::json!({"m": 1, "n": 2}));
}

/// Writes `files` (name, text) as `.flor/records/<name>` of a commit
/// outside any branch and points `refs/flor/runs/<id>` at it: a ref as
/// someone else might push it.
fn pushed_ref(dir: &Path, id: &str, files: &[(String, String)]) {
    let mut records = String::new();
    for (name, text) in files {
        let path = dir.join(".git").join("tmp-blob");
        fs::write(&path, text).unwrap();
        let blob = git(dir, &["hash-object", "-w", path.to_str().unwrap()]);
        fs::remove_file(&path).unwrap();
        records.push_str(&format!("100644 blob {blob}\t{name}\n"));
    }
    let records = git_in(dir, &["mktree"], Some(&records));
    let flor = git_in(dir, &["mktree"], Some(&format!("040000 tree {records}\trecords\n")));
    let root = git_in(dir, &["mktree"], Some(&format!("040000 tree {flor}\t.flor\n")));
    let commit = git(dir, &["commit-tree", &root, "-m", "pushed"]);
    git(dir, &["update-ref", &format!("refs/flor/runs/{id}"), &commit]);
}

/// A pushed ref: its replay file's lines are checked against the forward
/// file's contexts, and a file claiming another run's identity is skipped.
#[test]
fn a_pushed_refs_replay_and_stray_files_are_checked() {
    let repo = new_repo();
    let dir = repo.path();
    let (tstamp, id) = ("2030-01-02T00:00:00.000001", "2030-01-02T00-00-00.000001");
    let forward = [
        header(tstamp, "forward"),
        r#"{"k":"iter","c":0,"l":"epoch","it":0}"#.into(),
        r#"{"k":"log","c":0,"n":"loss","vf":1.5}"#.into(),
        r#"{"k":"end","status":"finished","ended":"2030-01-02T00:00:01.000000"}"#.into(),
    ];
    let replay = [
        header(tstamp, "replay"),
        r#"{"k":"log","c":0,"n":"grad","vf":0.25}"#.into(),
        r#"{"k":"log","c":3000000000,"n":"grad","vf":7.0}"#.into(),
        r#"{"k":"iter","c":1,"l":"epoch","it":1}"#.into(),
    ];
    let other = [header("2030-01-03T00:00:00.000001", "forward"), r#"{"k":"log","n":"grad","vf":1.0}"#.into()];
    pushed_ref(
        dir,
        id,
        &[
            (format!("{id}.jsonl"), forward.join("\n") + "\n"),
            (format!("{id}.replay-000001-0.jsonl"), replay.join("\n") + "\n"),
            ("2030-01-03T00-00-00.000001.jsonl".into(), other.join("\n") + "\n"),
        ],
    );
    let out = flor(dir, &["dataframe", "loss", "grad", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let replay_file = format!("refs/flor/runs/{id}:.flor/records/{id}.replay-000001-0.jsonl");
    assert!(
        stderr.contains(&format!(
            "{replay_file}:3: context 3000000000 is not a loop iteration of the run's forward record file"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{replay_file}:4: a replay record file declares no loop iterations")), "{stderr}");
    assert!(stderr.contains("2030-01-03T00-00-00.000001.jsonl: not a record file of run"), "{stderr}");
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["epoch"].as_u64(), rows[0]["loss"].as_f64(), rows[0]["grad"].as_f64()),
        (Some(0), Some(1.5), Some(0.25))
    );
    let runs = json_rows(&flor(dir, &["runs", "--format", "json"]));
    assert_eq!(runs.len(), 1, "the stray file's run is not ingested: {runs:?}");
}

/// A runaway user query stops at its time limit: `--timeout SECS`, else
/// `query_timeout` in `.flor/config.toml`; `--timeout 0` lifts it.
#[test]
fn user_sql_stops_at_its_time_limit() {
    let repo = new_repo();
    let dir = repo.path();
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let started = Instant::now();
    let out = flor(dir, &["query", endless, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("time limit (1 s)") && stderr.contains("--timeout"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));

    fs::write(dir.join(".flor/config.toml"), "query_timeout = 1\n").unwrap();
    let out = flor(dir, &["query", endless]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("time limit (1 s)"), "{out:?}");
    let finite =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT count(*) AS n FROM c";
    let out = flor(dir, &["query", finite, "--timeout", "0", "--format", "json"]);
    assert_eq!(json_rows(&out), vec![serde_json::json!({"n": 1000})]);
}

/// `.flor/config.toml` is input too: an unknown key, a wrong type or an
/// oversized file is an error naming the file, the line and the key.
#[test]
fn a_bad_config_names_file_line_and_key() {
    let repo = new_repo();
    let dir = repo.path();
    fs::create_dir_all(dir.join(".flor")).unwrap();
    let config = dir.join(".flor/config.toml");
    for (text, wants) in [
        (
            "store = \"sqlite\"\nquery_timout = 5\n",
            &["line 2", "query_timout", "unknown setting", "`query_timeout`"][..],
        ),
        ("query_timeout = \"soon\"\n", &["line 1", "query_timeout", "whole number of seconds"][..]),
        ("store = \"sqlite\"\nstore = \"duckdb\"\n", &["line 2", "store", "set twice"][..]),
    ] {
        fs::write(&config, text).unwrap();
        let out = flor(dir, &["runs"]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(".flor/config.toml"), "{stderr}");
        for w in wants {
            assert!(stderr.contains(w), "{text}: wants {w:?} in {stderr}");
        }
    }
    fs::write(&config, "# x\n".repeat(20_000)).unwrap();
    let stderr = String::from_utf8_lossy(&flor(dir, &["runs"]).stderr).into_owned();
    assert!(stderr.contains("larger than 65536 bytes"), "{stderr}");
}

/// A ref whose records cannot be read (here folders nested past flor's
/// limit under `.flor/records`) is reported; the other runs still sync.
#[test]
fn an_unreadable_ref_does_not_stop_the_others() {
    let repo = new_repo();
    let dir = repo.path();
    let (tstamp, id) = ("2030-01-04T00:00:00.000001", "2030-01-04T00-00-00.000001");
    let forward = [header(tstamp, "forward"), r#"{"k":"arg","n":"lr","vf":0.5}"#.into()];
    pushed_ref(dir, id, &[(format!("{id}.jsonl"), forward.join("\n") + "\n")]);
    let blob = git_in(dir, &["hash-object", "-w", "--stdin"], Some("x\n"));
    let mut tree = git_in(dir, &["mktree"], Some(&format!("100644 blob {blob}\tdeep.jsonl\n")));
    for _ in 0..260 {
        tree = git_in(dir, &["mktree"], Some(&format!("040000 tree {tree}\td\n")));
    }
    let flor_tree = git_in(dir, &["mktree"], Some(&format!("040000 tree {tree}\trecords\n")));
    let root = git_in(dir, &["mktree"], Some(&format!("040000 tree {flor_tree}\t.flor\n")));
    let commit = git(dir, &["commit-tree", &root, "-m", "deep"]);
    git(dir, &["update-ref", "refs/flor/runs/2030-01-05T00-00-00.000001", &commit]);
    let out = flor(dir, &["runs", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refs/flor/runs/2030-01-05T00-00-00.000001") && stderr.contains("more than 256 deep"),
        "{stderr}"
    );
    let runs = json_rows(&out);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["tstamp"], tstamp);
}

/// A dead run's file whose header names another run is not published
/// into that run's ref: it is moved to `.flor/broken/` and reported.
#[test]
fn a_dead_file_naming_another_run_is_set_aside() {
    let repo = new_repo();
    let dir = repo.path();
    fs::create_dir_all(dir.join(".flor/runs")).unwrap();
    let id = "2030-01-06T00-00-00.000001";
    let body = [header("2030-01-07T00:00:00.000001", "forward"), r#"{"k":"arg","n":"lr","vf":0.5}"#.into()];
    fs::write(dir.join(format!(".flor/runs/{id}.jsonl")), body.join("\n") + "\n").unwrap();
    let out = flor(dir, &["runs", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not this file's") && stderr.contains(".flor/broken"), "{stderr}");
    assert!(dir.join(format!(".flor/broken/{id}.jsonl")).exists());
    assert!(json_rows(&out).is_empty());
    assert_eq!(git(dir, &["for-each-ref", "refs/flor/"]), "", "nothing published");
}
