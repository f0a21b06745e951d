//! Integration tests for flor-git: every test builds a small repository in a
//! temporary folder and checks both flor's result and that the user's
//! repository (HEAD, branch, index file, working tree) was left alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use flor_git::{
    attach_files, attach_files_expecting, delete_ref, discover, list_dir_at, list_refs, materialize, read_dir_at,
    read_file_at, snapshot_worktree, Error, SnapshotOptions,
};
use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

/// A fresh repository on branch `main` with a local identity.
fn init() -> (TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    let repo = Repository::init_opts(dir.path(), &opts).unwrap();
    let mut cfg = repo.config().unwrap();
    cfg.set_str("user.name", "Test User").unwrap();
    cfg.set_str("user.email", "test@example.com").unwrap();
    (dir, repo)
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Stages everything (as test setup, writing the index) and commits on HEAD.
fn commit_all(repo: &Repository, msg: &str) -> Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Test User", "test@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<_> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents).unwrap()
}

/// Runs the git CLI without optional locks (so `git status` never rewrites
/// the index) and without the user's global config; `None` when git is not
/// installed.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .ok()?;
    Some(format!(
        "rc={:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// All files of the working tree outside `.git`, with their bytes (or link
/// targets) and modes.
fn worktree_files(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.file_name().unwrap() == ".git" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if meta.is_dir() {
                out.insert(rel.clone(), (b"<dir>".to_vec(), mode(&meta)));
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                let bytes = target.to_string_lossy().as_bytes().to_vec();
                out.insert(rel, (bytes, 0o120000));
            } else {
                out.insert(rel, (fs::read(&path).unwrap(), mode(&meta)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[cfg(unix)]
fn mode(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode(_meta: &fs::Metadata) -> u32 {
    0
}

/// Everything about the user's repository that flor must not change.
#[derive(Debug, PartialEq)]
struct UserState {
    head_file: Vec<u8>,
    index_file: Option<Vec<u8>>,
    refs_heads: Vec<(String, String)>,
    worktree: BTreeMap<PathBuf, (Vec<u8>, u32)>,
    cli_head: Option<String>,
    cli_symbolic_ref: Option<String>,
    cli_status: Option<String>,
    cli_ls_files: Option<String>,
}

fn user_state(root: &Path) -> UserState {
    let git_dir = root.join(".git");
    let repo = Repository::open(root).unwrap();
    let mut refs_heads: Vec<(String, String)> = repo
        .references_glob("refs/heads/*")
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.name().unwrap().to_string(), r.target().unwrap().to_string())
        })
        .collect();
    refs_heads.sort();
    UserState {
        head_file: fs::read(git_dir.join("HEAD")).unwrap(),
        index_file: fs::read(git_dir.join("index")).ok(),
        refs_heads,
        worktree: worktree_files(root),
        cli_head: git(root, &["rev-parse", "HEAD"]),
        cli_symbolic_ref: git(root, &["symbolic-ref", "-q", "HEAD"]),
        cli_status: git(root, &["status", "--porcelain", "--untracked-files=all"]),
        cli_ls_files: git(root, &["ls-files", "-s"]),
    }
}

/// The paths and blob bytes of a commit's tree.
fn tree_files(repo: &Repository, commit: &str) -> BTreeMap<String, Vec<u8>> {
    let commit = repo.find_commit(Oid::from_str(commit).unwrap()).unwrap();
    let tree = commit.tree().unwrap();
    let mut out = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let blob = repo.find_blob(entry.id()).unwrap();
            out.insert(format!("{dir}{}", entry.name().unwrap()), blob.content().to_vec());
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    out
}

fn parents(repo: &Repository, commit: &str) -> Vec<String> {
    repo.find_commit(Oid::from_str(commit).unwrap()).unwrap().parent_ids().map(|p| p.to_string()).collect()
}

fn opts() -> SnapshotOptions {
    SnapshotOptions { max_file_bytes: 1024 * 1024, exclude_dirs: vec![".flor".to_string()] }
}

// ---------------------------------------------------------------- discover

#[test]
fn discover_from_nested_subfolder() {
    let (dir, repo) = init();
    write(dir.path(), "src/train.py", b"print(1)\n");
    let head = commit_all(&repo, "first");
    fs::create_dir_all(dir.path().join("src/deep/er")).unwrap();

    let info = discover(&dir.path().join("src/deep/er")).unwrap();
    let root = dir.path().canonicalize().unwrap();
    assert_eq!(info.root, root);
    assert_eq!(info.projid, root.file_name().unwrap().to_string_lossy().as_ref());
    assert_eq!(info.head, Some(head.to_string()));
    assert_eq!(info.branch.as_deref(), Some("main"));
}

#[test]
fn discover_unborn_and_detached() {
    let (dir, repo) = init();
    let info = discover(dir.path()).unwrap();
    assert_eq!(info.head, None);
    assert_eq!(info.branch.as_deref(), Some("main"));

    write(dir.path(), "a.txt", b"a");
    let head = commit_all(&repo, "first");
    repo.set_head_detached(head).unwrap();
    let info = discover(dir.path()).unwrap();
    assert_eq!(info.head, Some(head.to_string()));
    assert_eq!(info.branch, None);
}

#[test]
fn discover_outside_a_repository_says_git_init() {
    let dir = tempfile::tempdir().unwrap();
    if Repository::discover(dir.path()).is_ok() {
        eprintln!("skipped: the temp folder is itself inside a git repository");
        return;
    }
    let err = discover(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotARepository { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("git init"), "{msg}");
    assert!(msg.contains(&dir.path().canonicalize().unwrap().display().to_string()), "{msg}");
}

#[test]
fn discover_refuses_bare_repository() {
    let dir = tempfile::tempdir().unwrap();
    Repository::init_bare(dir.path()).unwrap();
    let err = discover(dir.path()).unwrap_err();
    assert!(matches!(err, Error::BareRepository { .. }), "{err:?}");
    assert!(err.to_string().contains("working tree"), "{err}");
}

// ---------------------------------------------------------------- snapshot

#[test]
fn snapshot_unborn_repository() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print('hi')\n");
    write(root, "lib/util.py", b"x = 1\n");
    write(root, ".flor/records/old.jsonl", b"{}\n");

    let before = user_state(root);
    let snap = snapshot_worktree(root, "refs/flor/runs/r1", "flor: run r1", &opts()).unwrap();
    assert_eq!(user_state(root), before);

    let files = tree_files(&repo, &snap.commit);
    let names: Vec<_> = files.keys().cloned().collect();
    assert_eq!(names, ["lib/util.py", "train.py"]);
    assert_eq!(files["train.py"], b"print('hi')\n");
    assert!(parents(&repo, &snap.commit).is_empty());
    assert!(snap.skipped.is_empty());
    let commit = repo.find_commit(Oid::from_str(&snap.commit).unwrap()).unwrap();
    assert_eq!(commit.tree_id().to_string(), snap.tree);
    assert_eq!(commit.message(), Ok("flor: run r1"));
    assert_eq!(commit.author().name(), Ok("Test User"));
    // HEAD is still unborn.
    assert!(repo.head().is_err());
    assert_eq!(list_refs(root, "refs/flor/").unwrap(), [("refs/flor/runs/r1".to_string(), snap.commit.clone())]);
}

#[test]
fn snapshot_dirty_tree_is_what_git_add_all_sees() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, ".gitignore", b"*.log\ndata/\n");
    write(root, "train.py", b"v1\n");
    write(root, "gone.py", b"to be deleted\n");
    write(root, "staged.py", b"committed\n");
    write(root, "keep/same.py", b"same\n");
    let head = commit_all(&repo, "first");

    // Modified tracked file, untracked file (nested), ignored files, a
    // tracked file deleted only from the worktree, flor's own folder.
    // (The new content has another size: with a coarse file clock, a
    // same-size rewrite can keep the old mtime, and the `git add -A` below,
    // on a copied index, would trust its stat cache and keep the old blob.)
    write(root, "train.py", b"v2, longer\n");
    write(root, "new/deep/model.py", b"untracked\n");
    write(root, "run.log", b"ignored\n");
    write(root, "data/big.csv", b"ignored dir\n");
    fs::remove_file(root.join("gone.py")).unwrap();
    write(root, ".flor/records/x.jsonl", b"{}\n");
    // A change staged in the index, then changed again in the worktree.
    write(root, "staged.py", b"staged\n");
    {
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("staged.py")).unwrap();
        index.write().unwrap();
    }
    write(root, "staged.py", b"worktree\n");

    let before = user_state(root);
    let snap = snapshot_worktree(root, "refs/flor/runs/r2", "flor: run r2", &opts()).unwrap();
    let after = user_state(root);
    assert_eq!(after, before);
    if let Some(status) = &after.cli_status {
        // The user still sees their own changes, exactly as before.
        assert!(status.contains(" D gone.py"), "{status}");
        assert!(status.contains("MM staged.py"), "{status}");
        assert!(status.contains("?? new/deep/model.py"), "{status}");
    }

    let files = tree_files(&repo, &snap.commit);
    let names: Vec<_> = files.keys().cloned().collect();
    assert_eq!(names, [".gitignore", "keep/same.py", "new/deep/model.py", "staged.py", "train.py"]);
    assert_eq!(files["train.py"], b"v2, longer\n");
    assert_eq!(files["staged.py"], b"worktree\n");
    assert_eq!(files["new/deep/model.py"], b"untracked\n");
    assert_eq!(parents(&repo, &snap.commit), [head.to_string()]);

    // The CLI agrees: `git add -A` in a throwaway copy of the index gives
    // the same tree.
    let tmp_index = tempfile::NamedTempFile::new().unwrap();
    fs::copy(root.join(".git/index"), tmp_index.path()).unwrap();
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .env("GIT_INDEX_FILE", tmp_index.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .ok()
    };
    if let Some(add) = run(&["add", "-A", "--", ".", ":!.flor"]) {
        assert!(add.status.success(), "{add:?}");
        let out = run(&["write-tree"]).unwrap();
        assert!(out.status.success(), "{out:?}");
        let tree = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(tree, snap.tree);
    }
    assert_eq!(user_state(root), before);
}

#[test]
fn snapshot_detached_head() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "a.py", b"1\n");
    let first = commit_all(&repo, "first");
    write(root, "a.py", b"2\n");
    commit_all(&repo, "second");
    repo.set_head_detached(first).unwrap();
    // Make the worktree match the detached commit, then dirty it.
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force())).unwrap();
    write(root, "a.py", b"3\n");

    let before = user_state(root);
    let snap = snapshot_worktree(root, "refs/flor/runs/d", "detached", &opts()).unwrap();
    assert_eq!(user_state(root), before);
    assert!(repo.head_detached().unwrap());
    assert_eq!(parents(&repo, &snap.commit), [first.to_string()]);
    assert_eq!(tree_files(&repo, &snap.commit)["a.py"], b"3\n");
    if let Some(sym) = &before.cli_symbolic_ref {
        // `git symbolic-ref -q HEAD` fails (rc=1) when HEAD is detached.
        assert!(sym.starts_with("rc=Some(1)"), "{sym}");
    }
}

#[test]
fn snapshot_skips_and_reports_too_large_files() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "weights_tracked.bin", &[1u8; 50]);
    write(root, "changed_tracked.bin", &[2u8; 50]);
    write(root, "small.py", b"ok\n");
    commit_all(&repo, "first");
    write(root, "changed_tracked.bin", &[3u8; 60]);
    write(root, "huge_untracked.bin", &[4u8; 100]);
    write(root, "also_small.py", b"fine\n");

    let options = SnapshotOptions { max_file_bytes: 40, exclude_dirs: vec![".flor".to_string()] };
    let before = user_state(root);
    let snap = snapshot_worktree(root, "refs/flor/runs/big", "big", &options).unwrap();
    assert_eq!(user_state(root), before);
    assert_eq!(snap.skipped, [(PathBuf::from("changed_tracked.bin"), 60), (PathBuf::from("huge_untracked.bin"), 100),]);
    let files = tree_files(&repo, &snap.commit);
    let names: Vec<_> = files.keys().cloned().collect();
    // An unchanged tracked large file costs nothing and is kept; a changed
    // one is left out rather than snapshotted with stale content.
    assert_eq!(names, ["also_small.py", "small.py", "weights_tracked.bin"]);
}

#[test]
fn snapshot_excludes_tracked_files_in_excluded_dirs() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    write(root, ".flor/tracked.txt", b"oops, committed\n");
    write(root, "cache/x.bin", b"cache\n");
    commit_all(&repo, "first");
    let options =
        SnapshotOptions { max_file_bytes: 1024, exclude_dirs: vec![".flor".to_string(), "cache/".to_string()] };
    let snap = snapshot_worktree(root, "refs/flor/runs/x", "x", &options).unwrap();
    let names: Vec<_> = tree_files(&repo, &snap.commit).into_keys().collect();
    assert_eq!(names, ["a.py"]);
}

#[test]
fn snapshot_to_existing_ref_is_refused() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    let first = snapshot_worktree(root, "refs/flor/runs/same", "one", &opts()).unwrap();
    let err = snapshot_worktree(root, "refs/flor/runs/same", "two", &opts()).unwrap_err();
    match &err {
        Error::RefExists { refname, target, .. } => {
            assert_eq!(refname, "refs/flor/runs/same");
            assert_eq!(target, &first.commit);
        }
        other => panic!("expected RefExists, got {other:?}"),
    }
    assert!(err.to_string().contains("refs/flor/runs/same"), "{err}");
    // The ref still points to the first snapshot.
    assert_eq!(list_refs(root, "refs/flor/runs/").unwrap(), [("refs/flor/runs/same".to_string(), first.commit)]);
}

#[test]
fn snapshot_refuses_bad_ref_names() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    for bad in [
        "refs/heads/main",
        "refs/heads/flor",
        "HEAD",
        "flor/runs/x",
        "refs/flor/bad..name",
        "refs/flor/runs/",
        "refs/flor/a b",
    ] {
        let err = snapshot_worktree(root, bad, "x", &opts()).unwrap_err();
        assert!(matches!(err, Error::InvalidRefName { .. }), "{bad}: {err:?}");
    }
    assert!(list_refs(root, "").unwrap().is_empty());
}

// ---------------------------------------------------------------- attach & read

#[test]
fn attach_then_read_roundtrip() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "train.py", b"code\n");
    commit_all(&repo, "first");
    write(root, "train.py", b"dirty code\n");
    let refname = "refs/flor/runs/run1";
    let snap = snapshot_worktree(root, refname, "snapshot", &opts()).unwrap();

    let before = user_state(root);
    let c1 = attach_files(
        root,
        refname,
        &[
            (".flor/records/run1.jsonl", b"{\"a\":1}\n"),
            (".flor/records/sub/more.bin", &[0, 159, 146, 150]),
            (".flor/meta.json", b"{}"),
        ],
        "records",
    )
    .unwrap();
    assert_eq!(user_state(root), before);
    assert_eq!(parents(&repo, &c1), std::slice::from_ref(&snap.commit));
    assert_eq!(list_refs(root, refname).unwrap(), [(refname.to_string(), c1.clone())]);

    let records = read_dir_at(root, refname, ".flor/records").unwrap();
    assert_eq!(
        records,
        [
            (".flor/records/run1.jsonl".to_string(), b"{\"a\":1}\n".to_vec()),
            (".flor/records/sub/more.bin".to_string(), vec![0, 159, 146, 150]),
        ]
    );
    // By sha too, with a trailing slash; names alone without reading them.
    assert_eq!(read_dir_at(root, &c1, ".flor/records/").unwrap(), records);
    assert_eq!(
        list_dir_at(root, refname, ".flor/records").unwrap(),
        records.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
    );
    assert!(list_dir_at(root, refname, "no/such/folder").unwrap().is_empty());
    assert_eq!(read_file_at(root, refname, "train.py").unwrap(), b"dirty code\n");
    assert_eq!(read_file_at(root, &c1, ".flor/meta.json").unwrap(), b"{}");

    // Replace one file, keep the others and the code.
    let c2 = attach_files(root, refname, &[(".flor/records/run1.jsonl", b"{\"a\":2}\n")], "more records").unwrap();
    assert_eq!(parents(&repo, &c2), std::slice::from_ref(&c1));
    assert_eq!(read_file_at(root, refname, ".flor/records/run1.jsonl").unwrap(), b"{\"a\":2}\n");
    assert_eq!(read_file_at(root, &c1, ".flor/records/run1.jsonl").unwrap(), b"{\"a\":1}\n");
    assert_eq!(read_dir_at(root, refname, ".flor/records").unwrap().len(), 2);
    let names: Vec<_> = read_dir_at(root, refname, "").unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(names, [".flor/meta.json", ".flor/records/run1.jsonl", ".flor/records/sub/more.bin", "train.py"]);

    // Missing things.
    assert!(read_dir_at(root, refname, "nope").unwrap().is_empty());
    assert!(read_dir_at(root, &snap.commit, ".flor/records").unwrap().is_empty());
    let err = read_file_at(root, refname, ".flor/records/missing.jsonl").unwrap_err();
    match &err {
        Error::PathNotFound { rev, path } => {
            assert_eq!(rev, refname);
            assert_eq!(path, ".flor/records/missing.jsonl");
        }
        other => panic!("expected PathNotFound, got {other:?}"),
    }
    assert!(matches!(read_file_at(root, refname, ".flor/records").unwrap_err(), Error::NotAFile { .. }));
    assert!(matches!(read_dir_at(root, refname, "train.py").unwrap_err(), Error::NotADirectory { .. }));
    assert!(matches!(read_file_at(root, "refs/flor/runs/nope", "train.py").unwrap_err(), Error::RevNotFound { .. }));
    assert_eq!(user_state(root), before);
}

#[test]
fn attach_detects_a_moved_ref() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    let refname = "refs/flor/runs/race";
    let snap = snapshot_worktree(root, refname, "s", &opts()).unwrap();
    let c1 = attach_files_expecting(root, refname, &snap.commit, &[("r/1", b"1")], "one").unwrap();
    // A writer still holding the old tip loses, and changes nothing.
    let err = attach_files_expecting(root, refname, &snap.commit, &[("r/2", b"2")], "two").unwrap_err();
    match &err {
        Error::RefMoved { refname: name, expected, found } => {
            assert_eq!(name, refname);
            assert_eq!(expected, &snap.commit);
            assert_eq!(found.as_deref(), Some(c1.as_str()));
        }
        other => panic!("expected RefMoved, got {other:?}"),
    }
    assert_eq!(list_refs(root, refname).unwrap(), [(refname.to_string(), c1.clone())]);
    assert!(matches!(
        attach_files_expecting(root, refname, "not-a-sha", &[("r/2", b"2")], "x").unwrap_err(),
        Error::InvalidSha { .. }
    ));
}

#[test]
fn attach_to_missing_ref_fails() {
    let (dir, _repo) = init();
    let err = attach_files(dir.path(), "refs/flor/runs/none", &[("a", b"a")], "x").unwrap_err();
    assert!(matches!(err, Error::RefNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("refs/flor/runs/none"), "{err}");
}

#[test]
fn attach_rejects_bad_paths() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "code.py", b"a\n");
    write(root, "pkg/mod.py", b"b\n");
    let refname = "refs/flor/runs/paths";
    let snap = snapshot_worktree(root, refname, "s", &opts()).unwrap();
    let cases: &[&[(&str, &[u8])]] = &[
        &[("", b"x")],
        &[("../escape", b"x")],
        &[("a//b", b"x")],
        &[("/abs", b"x")],
        &[("a/./b", b"x")],
        &[(".git/config", b"x")],
        &[("a\\b", b"x")],
        // File where the commit has a folder, folder where it has a file.
        &[("pkg", b"x")],
        &[("code.py/inner", b"x")],
        // Clash inside one call.
        &[("d/e", b"x"), ("d", b"y")],
        &[("d", b"y"), ("d/e", b"x")],
    ];
    for files in cases {
        let err = attach_files(root, refname, files, "bad").unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{files:?}: {err:?}");
    }
    // Nothing was attached.
    assert_eq!(list_refs(root, refname).unwrap(), [(refname.to_string(), snap.commit)]);
    // The last of two writes to one path wins.
    attach_files(root, refname, &[("dup", b"1"), ("dup", b"2")], "dup").unwrap();
    assert_eq!(read_file_at(root, refname, "dup").unwrap(), b"2");
}

// ---------------------------------------------------------------- refs

#[test]
fn list_refs_is_sorted_and_prefix_filtered() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    let head = commit_all(&repo, "first");
    for name in [
        "refs/flor/runs/b",
        "refs/flor/runs/a",
        "refs/flor/runs/c/nested",
        "refs/flor/runs2/z",
        "refs/flor/other/y",
        "refs/tags/v1",
    ] {
        repo.reference(name, head, false, "test").unwrap();
    }
    let h = head.to_string();
    let runs = list_refs(root, "refs/flor/runs/").unwrap();
    assert_eq!(
        runs,
        [
            ("refs/flor/runs/a".to_string(), h.clone()),
            ("refs/flor/runs/b".to_string(), h.clone()),
            ("refs/flor/runs/c/nested".to_string(), h.clone()),
        ]
    );
    let all_flor: Vec<_> = list_refs(root, "refs/flor/").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        all_flor,
        ["refs/flor/other/y", "refs/flor/runs/a", "refs/flor/runs/b", "refs/flor/runs/c/nested", "refs/flor/runs2/z"]
    );
    assert!(list_refs(root, "refs/nothing/").unwrap().is_empty());
}

#[test]
fn delete_ref_reports_whether_it_existed() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    snapshot_worktree(root, "refs/flor/runs/del", "s", &opts()).unwrap();
    let before = user_state(root);
    assert!(delete_ref(root, "refs/flor/runs/del").unwrap());
    assert!(!delete_ref(root, "refs/flor/runs/del").unwrap());
    assert!(list_refs(root, "refs/flor/").unwrap().is_empty());
    assert_eq!(user_state(root), before);
    assert!(matches!(delete_ref(root, "refs/heads/main").unwrap_err(), Error::InvalidRefName { .. }));
}

// ---------------------------------------------------------------- materialize

#[test]
fn materialize_reproduces_the_snapshot() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print('train')\n");
    write(root, "pkg/deep/mod.py", b"x = 1\n");
    write(root, "run.sh", b"#!/bin/sh\necho hi\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("pkg/deep/mod.py", root.join("link.py")).unwrap();
    }
    commit_all(&repo, "first");
    write(root, "train.py", b"print('dirty')\n");
    let refname = "refs/flor/runs/m";
    snapshot_worktree(root, refname, "s", &opts()).unwrap();
    attach_files(root, refname, &[(".flor/records/m.jsonl", b"{}\n")], "r").unwrap();

    let before = user_state(root);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("replay/m");
    materialize(root, refname, &target).unwrap();
    assert_eq!(user_state(root), before);

    let got = worktree_files(&target);
    assert!(!target.join(".git").exists());
    assert_eq!(got[Path::new("train.py")].0, b"print('dirty')\n");
    assert_eq!(got[Path::new("pkg/deep/mod.py")].0, b"x = 1\n");
    assert_eq!(got[Path::new(".flor/records/m.jsonl")].0, b"{}\n");
    #[cfg(unix)]
    {
        assert_eq!(got[Path::new("run.sh")].1 & 0o111, 0o111);
        assert_eq!(got[Path::new("train.py")].1 & 0o111, 0);
        assert_eq!(got[Path::new("link.py")], (b"pkg/deep/mod.py".to_vec(), 0o120000));
    }
    // Everything in the working tree made it (the dirty one as it is now).
    let mut expected: Vec<_> = before.worktree.keys().cloned().collect();
    expected.push(PathBuf::from(".flor"));
    expected.push(PathBuf::from(".flor/records"));
    expected.push(PathBuf::from(".flor/records/m.jsonl"));
    expected.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), expected);

    // A non-empty target is refused; an empty existing one is fine.
    let err = materialize(root, refname, &target).unwrap_err();
    assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err:?}");
    let empty = out.path().join("empty");
    fs::create_dir(&empty).unwrap();
    materialize(root, refname, &empty).unwrap();
    assert_eq!(worktree_files(&empty), got);
    assert_eq!(user_state(root), before);
}

// ---------------------------------------------------------------- edge cases

#[test]
fn snapshot_with_untracked_nested_repository() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "a.py", b"a\n");
    // A nested repository with a commit, and an empty one.
    let inner = {
        let path = root.join("vendor/lib");
        fs::create_dir_all(&path).unwrap();
        let inner = Repository::init(&path).unwrap();
        write(&path, "x.py", b"x\n");
        inner
    };
    commit_all(&inner, "inner");
    Repository::init(root.join("vendor/empty")).unwrap();
    let before = user_state(root);
    let snap = snapshot_worktree(root, "refs/flor/runs/nested", "n", &opts()).unwrap();
    assert_eq!(user_state(root), before);
    let tree = repo.find_commit(Oid::from_str(&snap.commit).unwrap()).unwrap().tree().unwrap();
    let mut entries = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        entries.push((format!("{dir}{}", e.name().unwrap()), e.filemode(), e.id()));
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    // The nested clone is recorded as git records it, as a link to its
    // checked-out commit; the one without a commit is left out.
    let inner_head = inner.head().unwrap().target().unwrap();
    assert_eq!(
        entries,
        [
            ("a.py".to_string(), 0o100644, repo.blob(b"a\n").unwrap()),
            ("vendor".to_string(), 0o040000, entries[1].2),
            ("vendor/lib".to_string(), 0o160000, inner_head),
        ]
    );
}

#[test]
fn snapshot_with_merge_conflict() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "a.py", b"base\n");
    let base = commit_all(&repo, "base");
    write(root, "a.py", b"ours\n");
    commit_all(&repo, "ours");
    let sig = Signature::now("T", "t@e").unwrap();
    let theirs_tree = {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("a.py", repo.blob(b"theirs\n").unwrap(), 0o100644).unwrap();
        repo.find_tree(b.write().unwrap()).unwrap()
    };
    let base_commit = repo.find_commit(base).unwrap();
    let theirs = repo.commit(None, &sig, &sig, "theirs", &theirs_tree, &[&base_commit]).unwrap();
    let annotated = repo.find_annotated_commit(theirs).unwrap();
    repo.merge(&[&annotated], None, None).unwrap();
    assert!(repo.index().unwrap().has_conflicts());
    let before = user_state(root);
    let snap = snapshot_worktree(root, "refs/flor/runs/conflict", "c", &opts()).unwrap();
    assert_eq!(user_state(root), before);
    assert!(repo.index().unwrap().has_conflicts());
    // Like `git add -A`, the snapshot takes the file as it is on disk,
    // conflict markers included.
    let content = String::from_utf8(tree_files(&repo, &snap.commit)["a.py"].clone()).unwrap();
    assert!(content.contains("<<<<<<<") && content.contains("theirs"), "{content}");
}

#[test]
fn materialize_refuses_tree_entries_that_escape_the_target() {
    let (dir, repo) = init();
    let root = dir.path();
    let blob = repo.blob(b"evil\n").unwrap();
    for name in ["..", ".git", "."] {
        // Hand-written tree objects: git's tree builder would refuse these.
        let mut raw = format!("100644 {name}\0").into_bytes();
        raw.extend_from_slice(blob.as_bytes());
        let tree_id = repo.odb().unwrap().write(git2::ObjectType::Tree, &raw).unwrap();
        let Ok(tree) = repo.find_tree(tree_id) else {
            continue; // libgit2 refused to parse it: just as safe
        };
        let sig = Signature::now("t", "t@example.com").unwrap();
        let commit = repo.commit(None, &sig, &sig, "evil", &tree, &[]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("t");
        let err = materialize(root, &commit.to_string(), &target).unwrap_err();
        assert!(matches!(err, Error::UnsafeTreeEntry { .. }), "{name}: {err:?}");
        assert!(!out.path().join("evil").exists());
    }
}

// ------------------------------------------------------ concurrent writers

/// Threads released together by one barrier, each running `f(i)`.
fn race<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("racing thread panicked")).collect()
    })
}

#[test]
fn simultaneous_snapshots_to_one_ref_one_wins_the_others_are_told_it_exists() {
    // The loser of a simultaneous creation finds git's lock file rather than
    // the ref; it must still be told "exists", the one error a caller
    // retries on with another name.
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print(1)\n");
    for round in 0..8 {
        let refname = format!("refs/flor/runs/same-{round}");
        let results = race(12, |_| snapshot_worktree(root, &refname, "race", &opts()));
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {won} snapshots claimed the ref");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(matches!(r, Err(Error::RefExists { .. })), "round {round}: {r:?}");
        }
    }
}

#[test]
fn simultaneous_attaches_to_one_ref_keep_every_file() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print(1)\n");
    let refname = "refs/flor/runs/shared";
    snapshot_worktree(root, refname, "base", &opts()).unwrap();
    for round in 0..4 {
        let results = race(10, |i| {
            let path = format!("r{round}/f{i}.txt");
            attach_files(root, refname, &[(path.as_str(), format!("{round}-{i}").as_bytes())], "attach")
        });
        for r in &results {
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
        let files = list_dir_at(root, refname, &format!("r{round}")).unwrap();
        assert_eq!(files.len(), 10, "round {round}: {files:?}");
        for i in 0..10 {
            let got = read_file_at(root, refname, &format!("r{round}/f{i}.txt")).unwrap();
            assert_eq!(got, format!("{round}-{i}").into_bytes());
        }
    }
}

#[test]
fn simultaneous_expecting_attaches_exactly_one_wins_the_others_see_a_moved_ref() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print(1)\n");
    let refname = "refs/flor/runs/cas";
    snapshot_worktree(root, refname, "base", &opts()).unwrap();
    for round in 0..6 {
        let tip = repo.refname_to_id(refname).unwrap().to_string();
        let results = race(8, |i| {
            let path = format!("c{round}.txt");
            attach_files_expecting(root, refname, &tip, &[(path.as_str(), format!("{i}").as_bytes())], "cas")
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(matches!(r, Err(Error::RefMoved { .. })), "round {round}: {r:?}");
        }
    }
}

#[test]
fn a_lock_file_left_by_a_crash_is_skipped_by_unique_names_and_named_by_updates() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print(1)\n");
    let lock = repo.path().join("refs/flor/runs/a.lock");
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    fs::write(&lock, b"").unwrap();
    let snap = flor_git::snapshot_worktree_unique(root, &opts(), |i| {
        (format!("refs/flor/runs/{}", ["a", "b", "c"][i as usize]), format!("try {i}"))
    })
    .unwrap();
    assert_eq!(snap.refname, "refs/flor/runs/b");
    assert_eq!(list_refs(root, "refs/flor/").unwrap().len(), 1);

    // An update waits for the lock (10 s), then names the file to delete.
    fs::rename(&lock, repo.path().join("refs/flor/runs/b.lock")).unwrap();
    let err = attach_files(root, "refs/flor/runs/b", &[("x.txt", b"x")], "m").unwrap_err();
    assert!(matches!(err, Error::RefLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("refs/flor/runs/b.lock"), "{err}");
    assert_eq!(read_file_at(root, "refs/flor/runs/b", "train.py").unwrap(), b"print(1)\n");
}

#[test]
fn unique_snapshots_from_many_threads_each_claim_their_own_name() {
    let (dir, _repo) = init();
    let root = dir.path();
    write(root, "train.py", b"print(1)\n");
    // Every thread tries the same names in the same order.
    let snaps = race(12, |_| {
        flor_git::snapshot_worktree_unique(root, &opts(), |i| (format!("refs/flor/runs/n{i:04}"), format!("n{i}")))
    });
    let mut names: Vec<String> = snaps.into_iter().map(|s| s.unwrap().refname).collect();
    names.sort();
    assert_eq!(names, (0..12).map(|i| format!("refs/flor/runs/n{i:04}")).collect::<Vec<_>>());
}

/// A commit from elsewhere may nest folders without end: reading it stops
/// at `MAX_TREE_DEPTH` with an error instead of recursing on.
#[test]
fn read_dir_at_stops_at_the_depth_limit() {
    let (dir, repo) = init();
    let blob = repo.blob(b"x").unwrap();
    let mut tree = {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("leaf.jsonl", blob, 0o100644).unwrap();
        b.write().unwrap()
    };
    for _ in 0..flor_git::MAX_TREE_DEPTH + 5 {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("d", tree, 0o040000).unwrap();
        tree = b.write().unwrap();
    }
    let sig = Signature::now("Test User", "test@example.com").unwrap();
    let commit = repo.commit(None, &sig, &sig, "deep", &repo.find_tree(tree).unwrap(), &[]).unwrap().to_string();
    match read_dir_at(dir.path(), &commit, "") {
        Err(e @ flor_git::Error::TooDeep { .. }) => assert!(e.to_string().contains("more than 256 deep"), "{e}"),
        other => panic!("expected TooDeep, got {other:?}"),
    }
    assert!(matches!(list_dir_at(dir.path(), &commit, "d/d"), Err(flor_git::Error::TooDeep { .. })));
}

/// One `RepoReader` reads the files of many commits as `read_dir_at` does,
/// by sha (an annotated tag's sha is peeled to its commit), by ref or by
/// revision; a sha of no commit is `RevNotFound`. It lists refs with their
/// targets unread, and says which commit a target names.
#[test]
fn repo_reader_reads_many_commits_like_read_dir_at() {
    let (dir, repo) = init();
    let root = dir.path();
    write(root, "train.py", b"code\n");
    commit_all(&repo, "v1");
    let mut shas = Vec::new();
    for i in 0..3 {
        let refname = format!("refs/flor/runs/r{i}");
        snapshot_worktree(root, &refname, "snapshot", &opts()).unwrap();
        let text = format!("{{\"run\":{i}}}\n");
        shas.push(attach_files(root, &refname, &[(".flor/records/r.jsonl", text.as_bytes())], "records").unwrap());
    }
    let reader = flor_git::RepoReader::open(root).unwrap();
    for (i, sha) in shas.iter().enumerate() {
        let files = reader.read_dir_at(sha, ".flor/records").unwrap();
        assert_eq!(files, read_dir_at(root, sha, ".flor/records").unwrap());
        assert_eq!(files, [(".flor/records/r.jsonl".to_string(), format!("{{\"run\":{i}}}\n").into_bytes())]);
    }
    assert_eq!(reader.read_dir_at("refs/flor/runs/r1", ".flor/records").unwrap()[0].1, b"{\"run\":1}\n");
    assert_eq!(reader.read_dir_at("HEAD", "").unwrap(), [("train.py".to_string(), b"code\n".to_vec())]);

    let sig = Signature::now("Test User", "test@example.com").unwrap();
    let target = repo.find_object(Oid::from_str(&shas[2]).unwrap(), None).unwrap();
    let tag = repo.tag("v2", &target, &sig, "a tag", false).unwrap();
    assert_eq!(reader.read_dir_at(&tag.to_string(), ".flor/records").unwrap()[0].1, b"{\"run\":2}\n");

    let blob = repo.blob(b"not a commit").unwrap().to_string();
    for rev in [blob.as_str(), "0123456789abcdef0123456789abcdef01234567", "refs/flor/runs/none"] {
        assert!(matches!(reader.read_dir_at(rev, "").unwrap_err(), Error::RevNotFound { .. }), "{rev}");
        assert_eq!(reader.commit_of(rev), None, "{rev}");
    }

    // Ref targets without reading the objects: a ref to a blob is listed
    // (list_refs leaves it out), a symbolic ref is resolved, a tag's sha is
    // the tag's; commit_of says what each names.
    repo.reference("refs/flor/runs/blob", Oid::from_str(&blob).unwrap(), false, "test").unwrap();
    repo.reference_symbolic("refs/flor/runs/sym", "refs/flor/runs/r0", false, "test").unwrap();
    repo.reference("refs/flor/runs/tagged", tag, false, "test").unwrap();
    let targets = reader.ref_targets("refs/flor/runs/").unwrap();
    let name = |n: &str| format!("refs/flor/runs/{n}");
    assert_eq!(
        targets,
        [
            (name("blob"), blob.clone()),
            (name("r0"), shas[0].clone()),
            (name("r1"), shas[1].clone()),
            (name("r2"), shas[2].clone()),
            (name("sym"), shas[0].clone()),
            (name("tagged"), tag.to_string()),
        ]
    );
    assert_eq!(reader.commit_of(&tag.to_string()), Some(shas[2].clone()));
    assert_eq!(reader.commit_of(&shas[1]), Some(shas[1].clone()));
    let listed: Vec<String> = list_refs(root, "refs/flor/runs/").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, [name("r0"), name("r1"), name("r2"), name("sym"), name("tagged")]);
}
