//! Ingesting many finished runs at once: their record files are read and
//! parsed by worker threads ahead of one writer. What the store holds, and
//! the problems reported, must be exactly what syncing the same runs one at
//! a time gives (one pending ref is read by the writer alone).

use std::fs::{self, File};
use std::path::Path;

use flor::{Project, StoreKind, Table};

mod support;
use support::git_input as git;

/// Runs in the repository: more than enough for the workers to start.
const RUNS: usize = 20;

fn new_repo(store: StoreKind) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("flor-ingest").tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "-b", "main"], None);
    fs::write(dir.path().join("train.py"), "print('hi')\n").unwrap();
    git(dir.path(), &["add", "-A"], None);
    git(dir.path(), &["commit", "-qm", "v1"], None);
    fs::create_dir_all(dir.path().join(".flor")).unwrap();
    let name = if store == StoreKind::Duckdb { "duckdb" } else { "sqlite" };
    fs::write(dir.path().join(".flor/config.toml"), format!("store = \"{name}\"\n")).unwrap();
    dir
}

fn tstamp(k: usize) -> String {
    format!("2030-01-01T00:00:{k:02}.000001")
}

fn run_id(k: usize) -> String {
    format!("2030-01-01T00-00-{k:02}.000001")
}

fn header(k: usize, source: &str) -> String {
    serde_json::json!({"k": "run", "format": 1, "source": source, "projid": "p", "tstamp": tstamp(k),
        "filename": "train.py", "argv": ["train.py"], "interpreter": "python", "host": "h", "pid": 1,
        "status": "running"})
    .to_string()
}

/// Run `k`'s forward record file: an arg, 3 epochs of 4 steps of `loss`,
/// an `end` line; run 7's has an undeclared context and a line that is not
/// JSON.
fn forward(k: usize) -> Vec<String> {
    let mut lines = vec![header(k, "forward"), format!(r#"{{"k":"arg","n":"lr","vf":{}}}"#, k as f64 / 100.0)];
    let mut ctx = 0;
    for epoch in 0..3 {
        let e = ctx;
        lines.push(format!(r#"{{"k":"iter","c":{e},"l":"epoch","it":{epoch}}}"#));
        ctx += 1;
        for step in 0..4 {
            lines.push(format!(r#"{{"k":"iter","c":{ctx},"p":{e},"l":"step","it":{step}}}"#));
            lines.push(format!(r#"{{"k":"log","c":{ctx},"n":"loss","vf":{}}}"#, (k * 100 + ctx) as f64 / 7.0));
            ctx += 1;
        }
        lines.push(format!(r#"{{"k":"log","c":{e},"n":"acc","vi":{}}}"#, k + epoch));
        if k == 7 && epoch == 1 {
            lines.push(r#"{"k":"log","c":999,"n":"loss","vf":1.0}"#.into());
            lines.push("not json".into());
        }
    }
    lines.push(r#"{"k":"end","status":"finished","ended":"2030-01-02T00:00:00.000000"}"#.into());
    lines
}

/// Run `k`'s replay file (every third run): `grad` at each epoch, and one
/// line (run 3's) naming a context its forward file never declared.
fn replay(k: usize) -> Vec<String> {
    let mut lines = vec![header(k, "replay")];
    for e in [0, 5, 10] {
        lines.push(format!(r#"{{"k":"log","c":{e},"n":"grad","vf":{}}}"#, (k + e) as f64 / 4.0));
    }
    if k == 3 {
        lines.push(r#"{"k":"log","c":77,"n":"grad","vf":1.0}"#.into());
    }
    lines
}

/// Points `refs/flor/runs/<id of run k>` at a commit holding `files` as
/// `.flor/records/<name>`.
fn push_ref(dir: &Path, k: usize, files: &[(String, String)]) {
    let mut records = String::new();
    for (name, text) in files {
        let blob = git(dir, &["hash-object", "-w", "--stdin"], Some(text));
        records.push_str(&format!("100644 blob {blob}\t{name}\n"));
    }
    let records = git(dir, &["mktree"], Some(&records));
    let flor = git(dir, &["mktree"], Some(&format!("040000 tree {records}\trecords\n")));
    let root = git(dir, &["mktree"], Some(&format!("040000 tree {flor}\t.flor\n")));
    let commit = git(dir, &["commit-tree", &root, "-m", "records"], None);
    git(dir, &["update-ref", &format!("refs/flor/runs/{}", run_id(k)), &commit], None);
}

/// The files of run `k`'s ref: its forward file, a replay file for every
/// third run, and (run 5) another run's file, which is reported.
fn files_of(k: usize) -> Vec<(String, String)> {
    let id = run_id(k);
    let mut files = vec![(format!("{id}.jsonl"), forward(k).join("\n") + "\n")];
    if k.is_multiple_of(3) {
        files.push((format!("{id}.replay-000001-0.jsonl"), replay(k).join("\n") + "\n"));
    }
    if k == 5 {
        files.push(("2031-01-01T00-00-00.000001.jsonl".into(), header(99, "forward") + "\n"));
    }
    files
}

/// A project whose run 0 was recording at its first sync: half its
/// forward file was ingested from `.flor/runs/` before its ref (with the
/// whole file) appears, so its ref is read from where that sync stopped.
fn project_with_a_live_run(dir: &Path, store: StoreKind) -> (Project, Vec<String>) {
    let mut project = Project::builder(dir).store_kind(store).open().expect("open the project");
    let live = dir.join(".flor/runs").join(format!("{}.jsonl", run_id(0)));
    fs::create_dir_all(live.parent().unwrap()).unwrap();
    let half = forward(0)[..11].join("\n") + "\n";
    fs::write(&live, half).unwrap();
    let lock = File::options().read(true).write(true).open(&live).unwrap();
    lock.lock().expect("lock the live record file");
    let report = project.sync().expect("sync the live run");
    assert_eq!(report.records, 5, "the live half: 1 arg, 4 losses");
    drop(lock);
    fs::remove_file(&live).unwrap();
    let problems = report.problems.iter().map(|p| p.to_string()).collect();
    (project, problems)
}

/// Everything the views show, in a stable order.
fn contents(project: &Project) -> Vec<Table> {
    [
        "SELECT * FROM runs ORDER BY tstamp",
        "SELECT * FROM logs ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
        "SELECT * FROM loops ORDER BY 1, 2, 3, 4, 5, 6, 7, 8",
        "SELECT * FROM replay_checks ORDER BY 1, 2, 3, 4",
    ]
    .iter()
    .map(|sql| project.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}")))
    .chain([project.dataframe(&["lr", "acc", "loss", "grad"]).expect("dataframe")])
    .collect()
}

fn many_runs_at_once_match_one_at_a_time(store: StoreKind) {
    // All refs pending at one sync.
    let together = new_repo(store);
    let (mut project, mut together_problems) = project_with_a_live_run(together.path(), store);
    for k in 0..RUNS {
        push_ref(together.path(), k, &files_of(k));
    }
    let report = project.sync().expect("sync every run at once");
    together_problems.extend(report.problems.iter().map(|p| p.to_string()));
    let together_contents = contents(&project);

    // The same refs, each synced as it appears.
    let single = new_repo(store);
    let (mut one_project, mut single_problems) = project_with_a_live_run(single.path(), store);
    let mut single_records = 0;
    for k in 0..RUNS {
        push_ref(single.path(), k, &files_of(k));
        let report = one_project.sync().expect("sync one run");
        single_records += report.records;
        single_problems.extend(report.problems.iter().map(|p| p.to_string()));
    }
    assert_eq!(report.records, single_records);
    assert_eq!(together_problems, single_problems);
    assert_eq!(together_contents, contents(&one_project));

    // What was stored: every run, and the bad lines reported by file and line.
    assert_eq!(together_contents[0].row_count(), RUNS);
    // Per run: 1 arg, 12 losses, 3 accs, minus the live half already in;
    // 3 grads per replay file (7 of them), run 7's bad lines not stored.
    assert_eq!(report.records, (RUNS * 16 - 5 + 7 * 3) as u64);
    let (r3, r5, r7) = (run_id(3), run_id(5), run_id(7));
    let wanted = [
        format!("refs/flor/runs/{r3}:.flor/records/{r3}.replay-000001-0.jsonl:5: context 77 is not a loop iteration"),
        format!("refs/flor/runs/{r5}:.flor/records/2031-01-01T00-00-00.000001.jsonl: not a record file of run"),
        format!("refs/flor/runs/{r7}:.flor/records/{r7}.jsonl:23: context 999 is not declared"),
        format!("refs/flor/runs/{r7}:.flor/records/{r7}.jsonl:24: "),
    ];
    for w in &wanted {
        assert!(together_problems.iter().any(|p| p.starts_with(w.as_str())), "{w} in {together_problems:#?}");
    }
    assert_eq!(together_problems.len(), wanted.len(), "{together_problems:#?}");

    // Nothing is pending after either: a second sync reads nothing.
    let again = project.sync().expect("sync again");
    assert_eq!((again.records, again.files, again.problems.len()), (0, 0, 0));
}

#[test]
fn a_sync_of_many_runs_stores_what_syncing_each_does_on_sqlite() {
    many_runs_at_once_match_one_at_a_time(StoreKind::Sqlite);
}

#[cfg(feature = "duckdb")]
#[test]
fn a_sync_of_many_runs_stores_what_syncing_each_does_on_duckdb() {
    many_runs_at_once_match_one_at_a_time(StoreKind::Duckdb);
}
