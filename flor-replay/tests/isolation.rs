//! The local executor keeps what a segment writes out of the user's files,
//! both ways (`/bin/sh` stands in for the interpreter): in the overlay view,
//! where even absolute paths into the project are private, and in a copy;
//! and `Isolation::decide` measures what copies would take against the
//! limit before anything runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flor_core::layout::ref_for;
use flor_core::RunMeta;
use flor_replay::{
    CodeRef, ContextSpan, Error, Event, Executor, Finished, Isolation, IsolationMode, IsolationSettings, LocalExecutor,
    LocalOptions, Segment, SegmentSpec, SegmentTask, Step, TaskId, SPEC_VERSION,
};

/// A project whose run snapshot holds `train.sh` and `.gitignore` (data/
/// is ignored); since then the user added `data/` files and `newer.sh`.
fn project() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert!(Command::new("git").args(["init", "-q"]).current_dir(root).status().unwrap().success());
    fs::write(root.join(".gitignore"), "data/\n").unwrap();
    fs::write(root.join("train.sh"), "echo old\n").unwrap();
    let opts = flor_git::SnapshotOptions::from_env().unwrap();
    let snap = flor_git::snapshot_worktree(root, &ref_for("2026-01-01T00-00-00.000001"), "code", &opts).unwrap();
    fs::create_dir_all(root.join("data/tree")).unwrap();
    for (name, text) in [("d.txt", "d\n"), ("t.txt", "truncate me\n"), ("a.txt", "a\n"), ("gone.txt", "g\n")] {
        fs::write(root.join("data").join(name), text).unwrap();
    }
    fs::write(root.join("data/tree/x.txt"), "x\n").unwrap();
    fs::write(root.join("newer.sh"), "echo newer\n").unwrap();
    fs::create_dir_all(root.join(".flor/objects")).unwrap();
    (dir, snap.commit)
}

/// The segment: checks what it sees, writes everywhere (with `absolute`,
/// also through an absolute path into the project), records a line.
fn script(root: &Path, absolute: bool) -> String {
    format!(
        r#"set -e
test "$(cat data/d.txt)" = d || exit 3
test ! -e newer.sh || exit 4
echo new > out.txt
echo more >> data/d.txt
: > data/t.txt
mv data/a.txt data/b.txt
rm data/gone.txt
rm -r data/tree
mkdir -p data/made && echo m > data/made/m.txt
cp data/d.txt seen.txt
if {absolute}; then echo abs > "{root}/abs.txt"; echo f > .flor/private.txt; fi
echo "$(cat seen.txt | tr '\n' ' ')" > "$FLOR_REPLAY_OUTPUT"
"#,
        root = root.canonicalize().unwrap().display()
    )
}

fn spec(commit: &str, source: String) -> Arc<SegmentSpec> {
    let mut run = RunMeta::new("proj", "2026-01-01T00:00:00.000001", "train.sh");
    run.interpreter = "/bin/sh".into();
    run.argv = vec!["train.sh".into()];
    run.commit = Some(commit.to_owned());
    let step = Step { iteration: 0, restore: None, record: true, skip_nested: false };
    Arc::new(SegmentSpec {
        version: SPEC_VERSION,
        run,
        code: CodeRef { commit: commit.to_owned(), script: "train.sh".into(), source },
        names: vec!["x".into()],
        outer_loop: Some("epoch".into()),
        segment: Segment {
            index: 0,
            steps: vec![step],
            record_setup: true,
            teardown: false,
            final_restore: None,
            estimate_secs: 0.1,
        },
        checkpoints: BTreeMap::new(),
        contexts: vec![ContextSpan { first_ctx: 0, count: 1, parent: None, name: "epoch".into(), first_iteration: 0 }],
        check: vec![],
        iters: vec![],
        overrides: BTreeMap::new(),
    })
}

/// Every path below `dir` but `.git` and `.flor/replay`, with its content.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            if rel == Path::new(".git") || rel == Path::new(".flor/replay") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.insert(rel.clone(), b"/".to_vec());
                walk(&e.path(), &rel, out);
            } else {
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

/// Runs the segment with `isolation` and returns what it recorded.
fn run_segment(root: &Path, commit: &str, isolation: Isolation, absolute: bool) -> Finished {
    let mut ex = LocalExecutor::new(LocalOptions {
        root: root.to_owned(),
        work_dir: root.join(".flor/replay"),
        objects: root.join(".flor/objects"),
        jobs: 1,
        isolation: Some(isolation),
    });
    let task = SegmentTask { id: TaskId { run: 0, segment: 0 }, spec: spec(commit, script(root, absolute)) };
    ex.submit(task).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the segment did not finish");
        if let Some(Event::Finished(f)) = ex.next_event(Duration::from_millis(100)).unwrap() {
            return f;
        }
    }
}

/// The one folder below `.flor/replay/<run>/` (the request's tag).
fn tag_dir(root: &Path) -> PathBuf {
    let run = root.join(".flor/replay/2026-01-01T00-00-00.000001");
    fs::read_dir(&run).unwrap().next().unwrap().unwrap().path()
}

#[test]
fn in_the_overlay_view_every_write_stays_in_the_segments_folder() {
    let (dir, commit) = project();
    let root = dir.path();
    let overlay = IsolationSettings { mode: IsolationMode::Overlay, ..IsolationSettings::default() };
    match Isolation::decide(root, &root.join(".flor/replay"), &overlay) {
        Ok(i) => assert_eq!(i, Isolation::Overlay),
        Err(Error::OverlayUnavailable { why }) if std::env::var("CI").is_err() => {
            eprintln!("SKIPPED: no overlay view on this machine: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    }
    let before = files(root);
    let done = run_segment(root, &commit, Isolation::Overlay, true);
    assert_eq!(String::from_utf8(done.result.clone().unwrap()).unwrap(), "d more \n", "{done:?}");
    assert_eq!(files(root), before, "the segment wrote into the user's files");
    let upper = tag_dir(root).join("seg-0/upper");
    assert_eq!(fs::read_to_string(upper.join("out.txt")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(upper.join("abs.txt")).unwrap(), "abs\n", "absolute paths are private too");
    assert_eq!(fs::read_to_string(upper.join("data/d.txt")).unwrap(), "d\nmore\n");
    assert_eq!(fs::read_to_string(upper.join("data/b.txt")).unwrap(), "a\n");
    assert_eq!(fs::read_to_string(upper.join(".flor/private.txt")).unwrap(), "f\n");
    assert_eq!(fs::read_to_string(upper.join("train.sh")).unwrap(), script(root, true), "the propagated script");
}

#[test]
fn in_a_copy_every_write_stays_in_the_runs_folder() {
    let (dir, commit) = project();
    let root = dir.path();
    let copy = IsolationSettings { mode: IsolationMode::Copy, ..IsolationSettings::default() };
    let isolation = Isolation::decide(root, &root.join(".flor/replay"), &copy).unwrap();
    let before = files(root);
    let done = run_segment(root, &commit, isolation, false);
    assert_eq!(String::from_utf8(done.result.clone().unwrap()).unwrap(), "d more \n", "{done:?}");
    assert_eq!(files(root), before, "the segment wrote into the user's files");
    let code = tag_dir(root).join("code");
    assert_eq!(fs::read_to_string(code.join("out.txt")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(code.join("data/made/m.txt")).unwrap(), "m\n");
    assert!(!code.join("data/tree").exists() && !code.join("newer.sh").exists());
}

#[test]
fn copies_are_measured_against_the_limit_before_anything_runs() {
    let (dir, _) = project();
    let root = dir.path();
    // What a copy holds: data/ (ignored); not the files a snapshot would
    // hold (the old version's own, and newer.sh: code of a newer version),
    // not .git or .flor.
    let data: u64 = ["d\n", "truncate me\n", "a\n", "g\n", "x\n"].iter().map(|t| t.len() as u64).sum();
    let settings = |limit| IsolationSettings { mode: IsolationMode::Copy, copy_limit_bytes: limit };
    let work = root.join(".flor/replay");
    let fits = Isolation::decide(root, &work, &settings(data)).unwrap();
    assert_eq!(fits, Isolation::Copy { bytes: data, limit_bytes: data, overlay_refused: None });
    assert!(fits.describe().starts_with("copy: the old code and 20 bytes"), "{}", fits.describe());
    let e = Isolation::decide(root, &work, &settings(data - 1)).unwrap_err();
    assert!(matches!(e, Error::CopyTooLarge { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("20 bytes") && text.contains("copy_limit_mb") && text.contains("[replay]"), "{text}");
    assert!(!work.exists(), "deciding leaves nothing behind");
}
