#![cfg(unix)]
//! Replay never writes into the user's files: old scripts read the
//! project as it is now (data sets and other files git ignores, nested ones
//! in tracked folders too, and folders outside the project that top-level
//! symlinks lead to) and everything they write — new files, overwrites,
//! appends, truncations, renames, deletions — stays in the replay's own
//! folder. Each test hashes every file of the project (but `.git` and
//! `.flor`) and of the linked folder before and after `flor replay`.
//!
//! Needs a Python with the `flordb` module: `FLOR_TEST_PYTHON`
//! (`scripts/test.sh` sets it). Without it the tests are skipped with a
//! message, except under CI, where they fail.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

mod support;
use support::{flor, git, ok, python, train};

/// Every file, symlink and folder below `dir` but `.git` and `.flor`, with
/// its content (files), target (symlinks) or nothing (folders).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if rel.as_os_str().is_empty() && (name == ".git" || name == ".flor") {
                continue;
            }
            let (path, rel) = (e.path(), rel.join(&name));
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, Some(format!("-> {}", target.display()).into_bytes()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), None);
                walk(&path, &rel, out);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

/// The `(tstamp, epoch, values...)` rows of a dataframe of `names`.
fn values(repo: &Path, home: &Path, names: &[&str]) -> Vec<(String, i64, Vec<f64>)> {
    let mut args = vec!["--format", "json", "dataframe"];
    args.extend(names);
    let rows: Vec<Json> = serde_json::from_str(&ok(flor(repo, home, &args), "flor dataframe")).expect("json");
    let mut got: Vec<(String, i64, Vec<f64>)> = rows
        .iter()
        .map(|r| {
            let vals = names.iter().map(|n| r[*n].as_f64().unwrap_or_else(|| panic!("no {n} in {r}"))).collect();
            (r["tstamp"].as_str().unwrap().to_owned(), r["epoch"].as_i64().unwrap(), vals)
        })
        .collect();
    got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    got
}

/// The isolation line of a replay plan.
fn isolation_line(plan: &str) -> &str {
    plan.lines().find(|l| l.starts_with("isolation: ")).unwrap_or_else(|| panic!("no isolation line in:\n{plan}"))
}

const MODEL: &str = r#"import os
import flordb as flor

lr = flor.arg("lr", 0.1)
os.makedirs("out", exist_ok=True)
state = {"w": 1.0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(3)):
        state["w"] = state["w"] * (1 - lr)
        with open("out/model.txt", "w") as f:
            f.write(f"lr={lr} epoch={epoch} w={state['w']!r}\n")
        with open("out/history.log", "a") as f:
            f.write(f"lr={lr} epoch={epoch}\n")
        flor.log("w", state["w"])
"#;

/// Issue 14, defect 3: after two runs (lr 0.1, then 0.5) of a script that
/// writes the git-ignored `out/model.txt` every epoch, `flor replay` left
/// in it what the replay of the older run wrote.
#[test]
fn replay_leaves_the_latest_runs_ignored_outputs_as_they_were() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let dir = tempfile::Builder::new().prefix("flor-isolation").tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, home, &["init", "-q", "-b", "main"]);
    fs::write(repo.join(".gitignore"), "out/\n").unwrap();
    fs::write(repo.join("train.py"), MODEL).unwrap();
    git(repo, home, &["add", "."]);
    git(repo, home, &["commit", "-qm", "v1"]);
    train(&py, repo, home, &["lr=0.1"]);
    train(&py, repo, home, &["lr=0.5"]);
    let before = tree(repo);
    assert_eq!(before[Path::new("out/model.txt")].as_deref(), Some(&b"lr=0.5 epoch=2 w=0.125\n"[..]));
    let newest = MODEL.replace(
        "        flor.log(\"w\", state[\"w\"])\n",
        "        flor.log(\"w\", state[\"w\"])\n        flor.log(\"w2\", state[\"w\"] * 2)\n",
    );
    fs::write(repo.join("train.py"), &newest).unwrap();
    ok(flor(repo, home, &["replay", "--apply", "w2", "--yes", "--jobs", "2"]), "replay");
    let mut after = tree(repo);
    after.insert("train.py".into(), Some(MODEL.as_bytes().to_vec()));
    assert_eq!(
        String::from_utf8_lossy(after[Path::new("out/model.txt")].as_deref().unwrap()),
        "lr=0.5 epoch=2 w=0.125\n",
        "the replays wrote into the user's out/model.txt"
    );
    assert_eq!(after, before, "the replay changed the user's files");
    let mut want = Vec::new();
    for lr in [0.1f64, 0.5] {
        let mut w = 1.0f64;
        for epoch in 0..3 {
            w *= 1.0 - lr;
            want.push((epoch, vec![w * 2.0]));
        }
    }
    let got: Vec<(i64, Vec<f64>)> = values(repo, home, &["w2"]).into_iter().map(|(_, e, v)| (e, v)).collect();
    assert_eq!(got, want);
}

/// The old version: reads the user's data, then does to the files around
/// it what training scripts do, at the top level and in folders git
/// ignores, nested in a tracked folder and behind a symlink to a folder
/// outside the project.
const TOUCHES: &str = r#"import os, shutil
import flordb as flor

xs = [float(l) for l in open("data/train.csv")]
stats = float(open("src/cache/stats.txt").read())
extra = float(open("ext/extra.csv").read().split()[0])
for d in ("data", "."):
    with open(f"{d}/new.txt", "w") as f:
        f.write("new\n")
    with open(f"{d}/overwrite.txt", "w") as f:
        f.write("overwritten\n")
    with open(f"{d}/append.txt", "a") as f:
        f.write("appended\n")
    with open(f"{d}/trunc.txt", "r+") as f:
        f.truncate(2)
    os.rename(f"{d}/a.txt", f"{d}/b.txt")
    os.remove(f"{d}/del.txt")
    shutil.rmtree(f"{d}/tree")
    os.makedirs(f"{d}/made/deep")
    with open(f"{d}/made/deep/x.txt", "w") as f:
        f.write("x\n")
with open("src/cache/stats.txt", "w") as f:
    f.write("0\n")
with open("ext/extra.csv", "a") as f:
    f.write("1\n")
with open("ext/written.txt", "w") as f:
    f.write("w\n")
appended = len(open("data/append.txt").read())
os.makedirs("out", exist_ok=True)

state = {"w": 0.0}
with flor.checkpointing(state=state):
    for e in flor.loop("epoch", range(2)):
        for x in flor.loop("step", xs):
            state["w"] += x * (e + 1) + stats + extra
        with open("out/model.txt", "w") as f:
            f.write(repr(state["w"]))
        flor.log("w", state["w"])
"#;

/// The project's files as the user has them before each run and replay.
fn seed(repo: &Path, outside: &Path) {
    for d in [repo.join("data"), repo.to_owned()] {
        for gone in ["new.txt", "b.txt", "made"] {
            let p = d.join(gone);
            if p.is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else if p.exists() {
                fs::remove_file(&p).unwrap();
            }
        }
        fs::create_dir_all(d.join("tree/inner")).unwrap();
        fs::write(d.join("tree/inner/t.txt"), "t\n").unwrap();
        for (name, text) in
            [("overwrite.txt", "original\n"), ("append.txt", "start\n"), ("trunc.txt", "long text\n"), ("a.txt", "a\n")]
        {
            fs::write(d.join(name), text).unwrap();
        }
        fs::write(d.join("del.txt"), "delete me\n").unwrap();
    }
    fs::write(repo.join("data/train.csv"), "1.5\n2.5\n").unwrap();
    fs::create_dir_all(repo.join("src/cache")).unwrap();
    fs::write(repo.join("src/cache/stats.txt"), "10\n").unwrap();
    fs::write(outside.join("extra.csv"), "100\n").unwrap();
    let _ = fs::remove_file(outside.join("written.txt"));
}

/// A project with one recorded run of [`TOUCHES`], its files seeded
/// again, a newer module committed since and the statements `seen` and
/// `newer_visible` added to the working tree's script; `config` goes to
/// `.flor/config.toml`. Returns the project and the linked folder.
fn touched_project(py: &str, home: &Path, config: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("flor-isolation").tempdir().expect("tempdir");
    let outside = tempfile::Builder::new().prefix("flor-linked").tempdir().expect("tempdir");
    let repo = dir.path();
    git(repo, home, &["init", "-q", "-b", "main"]);
    fs::write(repo.join(".gitignore"), "data/\nout/\nsrc/cache/\next\n/*.txt\n/tree/\n/made/\n").unwrap();
    fs::create_dir_all(repo.join("data")).unwrap();
    fs::create_dir_all(repo.join("src")).unwrap();
    fs::write(repo.join("src/model.py"), "SIZE = 1\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.join("ext")).unwrap();
    fs::write(repo.join("train.py"), TOUCHES).unwrap();
    seed(repo, outside.path());
    git(repo, home, &["add", "."]);
    git(repo, home, &["commit", "-qm", "v1"]);
    train(py, repo, home, &[]);
    seed(repo, outside.path());
    fs::write(repo.join("helper.py"), "NEWER = True\n").unwrap();
    git(repo, home, &["add", "helper.py"]);
    git(repo, home, &["commit", "-qm", "a newer module"]);
    let newest = TOUCHES.replace(
        "        flor.log(\"w\", state[\"w\"])\n",
        "        flor.log(\"w\", state[\"w\"])\n        flor.log(\"seen\", state[\"w\"] + appended)\n        \
         flor.log(\"newer_visible\", int(os.path.exists(\"helper.py\")))\n",
    );
    fs::write(repo.join("train.py"), newest).unwrap();
    fs::create_dir_all(repo.join(".flor")).unwrap();
    fs::write(repo.join(".flor/config.toml"), config).unwrap();
    (dir, outside)
}

/// Replays `seen,newer_visible` in a [`touched_project`] and checks the
/// values and that no file of the project or the linked folder changed;
/// returns the plan's isolation line.
fn replay_touched_project(py: &str, config: &str, jobs: &str) -> String {
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let (dir, outside) = touched_project(py, home, config);
    let (repo, outside) = (dir.path(), outside.path());
    let plan = ok(flor(repo, home, &["replay", "--apply", "seen,newer_visible", "--dry-run"]), "plan");
    let isolation = isolation_line(&plan).to_owned();
    let before = (tree(repo), tree(outside));
    ok(flor(repo, home, &["replay", "--apply", "seen,newer_visible", "--yes", "--jobs", jobs]), "replay");
    let after = (tree(repo), tree(outside));
    assert_eq!(after.1, before.1, "the replay wrote into the folder the project links to");
    for (path, content) in &before.0 {
        assert_eq!(after.0.get(path), Some(content), "{} changed ({isolation})", path.display());
    }
    assert_eq!(after.0.len(), before.0.len(), "the replay created files in the project ({isolation})");
    // Two epochs over xs = [1.5, 2.5] with stats 10 and extra 100 read
    // before the script overwrote them; "start\n" + "appended\n" is 15
    // characters; helper.py is newer than the replayed version.
    let got: Vec<(i64, Vec<f64>)> =
        values(repo, home, &["seen", "newer_visible"]).into_iter().map(|(_, e, v)| (e, v)).collect();
    assert_eq!(got, [(0, vec![224.0 + 15.0, 0.0]), (1, vec![452.0 + 15.0, 0.0])], "{isolation}");
    isolation
}

#[test]
fn old_scripts_read_the_users_files_and_write_only_into_the_replays_folder() {
    let Some(py) = python() else { return };
    let isolation = replay_touched_project(&py, "", "2");
    if !isolation.starts_with("isolation: overlay") {
        eprintln!("NOTE: no overlay on this machine; the replay copied instead: {isolation}");
        assert!(isolation.starts_with("isolation: copy (no overlay here: "), "{isolation}");
    }
}

#[test]
fn where_copies_are_forced_old_scripts_write_only_into_their_copy() {
    let Some(py) = python() else { return };
    let isolation = replay_touched_project(&py, "[replay]\nisolation = \"copy\"\n", "1");
    assert!(isolation.starts_with("isolation: copy: the old code and "), "{isolation}");
    assert!(isolation.contains("copy_limit_mb under [replay]"), "{isolation}");
}

#[test]
fn copies_over_the_limit_are_refused_before_anything_runs() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let config = "[replay]\nisolation = \"copy\"\ncopy_limit_mb = 0\n";
    let (dir, outside) = touched_project(&py, home, config);
    let (repo, outside) = (dir.path(), outside.path());
    let before = (tree(repo), tree(outside));
    for extra in ["--dry-run", "--yes"] {
        let out = flor(repo, home, &["replay", "--apply", "seen,newer_visible", extra]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: {stderr}");
        assert!(stderr.contains("refused before running anything"), "{stderr}");
        assert!(stderr.contains("exceeds the copy limit of 0 bytes"), "{stderr}");
        assert!(stderr.contains("`copy_limit_mb = ...` under [replay] in .flor/config.toml"), "{stderr}");
    }
    assert_eq!((tree(repo), tree(outside)), before);
    assert!(!repo.join(".flor/replay").exists(), "nothing was prepared");
    let names = ok(flor(repo, home, &["names"]), "names");
    assert!(!names.contains("seen"), "{names}");
}
