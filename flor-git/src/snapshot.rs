//! Snapshotting the working tree into a commit under a flor ref.

use std::path::{Path, PathBuf};

use git2::{ErrorCode, IndexAddOption, Oid, Repository};

use crate::error::{Error, GitContext, Result};
use crate::refs::{locked, try_create, Attempt, Backoff};
use crate::repo::{check_writable_refname, find_ref, head_commit, open, signature, workdir};

/// Environment variable holding the size limit, in mebibytes, above which a
/// file is left out of a snapshot.
pub const MAX_FILE_MB_ENV: &str = "FLOR_SNAPSHOT_MAX_FILE_MB";

/// The size limit used when [`MAX_FILE_MB_ENV`] is not set: 100 MiB.
pub const DEFAULT_MAX_FILE_MB: u64 = 100;

/// What a snapshot leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Files larger than this many bytes are left out of the snapshot and
    /// reported in [`Snapshot::skipped`].
    pub max_file_bytes: u64,
    /// Folders, relative to the working-tree root with `/` separators (e.g.
    /// `.flor` or `data/cache`), that are always left out, tracked or not.
    pub exclude_dirs: Vec<String>,
}

impl SnapshotOptions {
    /// Options from the environment: `max_file_bytes` from
    /// `FLOR_SNAPSHOT_MAX_FILE_MB` (a whole number of mebibytes, default
    /// 100), `exclude_dirs` = `[".flor"]`.
    ///
    /// Fails with [`Error::InvalidEnv`] when the variable is set but is not a
    /// whole number.
    pub fn from_env() -> Result<Self> {
        let mb = max_file_mb(std::env::var_os(MAX_FILE_MB_ENV))?;
        Ok(Self { max_file_bytes: mb.saturating_mul(1024 * 1024), exclude_dirs: vec![".flor".to_string()] })
    }
}

/// Parses the value of [`MAX_FILE_MB_ENV`] (unset: the default).
fn max_file_mb(value: Option<std::ffi::OsString>) -> Result<u64> {
    let Some(value) = value else {
        return Ok(DEFAULT_MAX_FILE_MB);
    };
    let invalid = || Error::InvalidEnv { var: MAX_FILE_MB_ENV, value: value.to_string_lossy().into_owned() };
    value.to_str().ok_or_else(invalid)?.trim().parse::<u64>().map_err(|_| invalid())
}

impl Default for SnapshotOptions {
    /// Like [`SnapshotOptions::from_env`], but an unparsable
    /// `FLOR_SNAPSHOT_MAX_FILE_MB` falls back to 100 MiB.
    fn default() -> Self {
        Self::from_env().unwrap_or_else(|_| Self {
            max_file_bytes: DEFAULT_MAX_FILE_MB * 1024 * 1024,
            exclude_dirs: vec![".flor".to_string()],
        })
    }
}

/// The result of [`snapshot_worktree`] and [`snapshot_worktree_unique`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The ref that now points to the snapshot commit.
    pub refname: String,
    /// The sha of the snapshot commit.
    pub commit: String,
    /// The sha of the snapshot commit's tree.
    pub tree: String,
    /// Files left out because they exceed
    /// [`SnapshotOptions::max_file_bytes`], as (path relative to the
    /// working-tree root, size in bytes), sorted by path.
    pub skipped: Vec<(PathBuf, u64)>,
}

/// How many names [`snapshot_worktree_unique`] tries before it gives up.
pub const MAX_NAME_ATTEMPTS: u32 = 1000;

/// Snapshot the working tree as `git add -A` would see it, into a new commit
/// that the new ref `refname` points to.
///
/// The snapshot respects `.gitignore`, includes untracked files, drops files
/// deleted from the working tree, and leaves out `opts.exclude_dirs` and files
/// over `opts.max_file_bytes` (those are reported in [`Snapshot::skipped`];
/// an over-size file is left out even when an older version of it is
/// tracked, so the snapshot never holds stale content; an over-size file
/// that is unchanged since it was staged is kept, as it costs nothing).
///
/// The user's repository is not disturbed: HEAD, the current branch, the
/// index file and the working tree are left exactly as they were. The
/// repository's index is loaded and changed in memory only (it is never
/// written back); only new objects and the ref `refname` are written.
///
/// The commit's author and committer come from the repository's
/// `user.name`/`user.email`, or are `flor <flor@localhost>` when those are
/// not set. Its parent is HEAD's commit, or none when HEAD is unborn.
///
/// The ref is created only if it does not exist, checked under git's lock:
/// of several processes snapshotting to the same new name at the same
/// instant exactly one succeeds and the others get [`Error::RefExists`].
///
/// Fails with [`Error::RefExists`] when `refname` already exists, with
/// [`Error::RefLocked`] when another writer's lock file on it outlasts the
/// wait, and with [`Error::InvalidRefName`] unless `refname` is a valid ref
/// below `refs/` and outside `refs/heads/`.
pub fn snapshot_worktree(root: &Path, refname: &str, message: &str, opts: &SnapshotOptions) -> Result<Snapshot> {
    check_writable_refname(refname)?;
    let repo = open(root)?;
    let root = workdir(&repo)?;
    if let Some(existing) = find_ref(&repo, &root, refname)? {
        return Err(ref_exists(&repo, &root, refname, Some(existing)));
    }
    let (tree, skipped) = snapshot_tree(&repo, &root, opts)?;
    let commit = snapshot_commit(&repo, &root, tree, message)?;
    let mut backoff = Backoff::new();
    loop {
        match try_create(&repo, &root, refname, commit, message)? {
            Attempt::Written => break,
            Attempt::Taken => return Err(ref_exists(&repo, &root, refname, None)),
            // Another writer is creating it (or a crash left its lock):
            // wait for the lock to go, then the ref exists or is free.
            Attempt::Locked if backoff.pause() => {}
            Attempt::Locked => return Err(locked(&repo, &root, refname)),
        }
    }
    Ok(Snapshot { refname: refname.to_string(), commit: commit.to_string(), tree: tree.to_string(), skipped })
}

/// Like [`snapshot_worktree`], for a ref whose name only has to be new (a
/// run id): `candidate(attempt)` gives the ref name and commit message to
/// try for attempt 0, 1, 2, …; a name that exists, or that another process
/// is creating at the same instant, moves on to the next candidate. The
/// working tree is scanned once, whatever the number of attempts.
///
/// Returns the snapshot; [`Snapshot::refname`] is the name that was
/// claimed, so what the caller records and the ref always agree. Fails with
/// [`Error::RefExists`] (for the last name tried) after
/// [`MAX_NAME_ATTEMPTS`] taken names, and with [`Error::InvalidRefName`] for
/// a candidate that is not a valid flor ref.
pub fn snapshot_worktree_unique(
    root: &Path,
    opts: &SnapshotOptions,
    mut candidate: impl FnMut(u32) -> (String, String),
) -> Result<Snapshot> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let (tree, skipped) = snapshot_tree(&repo, &root, opts)?;
    let mut last = String::new();
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let (refname, message) = candidate(attempt);
        check_writable_refname(&refname)?;
        if find_ref(&repo, &root, &refname)?.is_none() {
            let commit = snapshot_commit(&repo, &root, tree, &message)?;
            if try_create(&repo, &root, &refname, commit, &message)? == Attempt::Written {
                return Ok(Snapshot { refname, commit: commit.to_string(), tree: tree.to_string(), skipped });
            }
        }
        last = refname;
    }
    Err(ref_exists(&repo, &root, &last, None))
}

/// Writes the snapshot commit of `tree` (parent: HEAD's commit, if any).
fn snapshot_commit(repo: &Repository, root: &Path, tree: Oid, message: &str) -> Result<Oid> {
    let tree =
        repo.find_tree(tree).ctx(|| format!("could not read back snapshot tree {tree} in `{}`", root.display()))?;
    let parent = head_commit(repo, root)?;
    let sig = signature(repo)?;
    let parents: Vec<_> = parent.iter().collect();
    repo.commit(None, &sig, &sig, message, &tree, &parents)
        .ctx(|| format!("could not create the snapshot commit in `{}`", root.display()))
}

/// Builds [`Error::RefExists`], looking up the ref's target if needed.
fn ref_exists(repo: &Repository, root: &Path, refname: &str, existing: Option<git2::Reference<'_>>) -> Error {
    let existing = existing.or_else(|| repo.find_reference(refname).ok());
    let target = existing
        .and_then(|r| r.resolve().ok())
        .and_then(|r| r.target())
        .map_or_else(|| "an unknown commit".to_string(), |oid| oid.to_string());
    Error::RefExists { refname: refname.to_string(), target, root: root.to_path_buf() }
}

/// Whether the workdir-relative `path` lies in one of the `dirs`.
fn in_excluded_dir(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

/// Writes the tree `git add -A` would produce, using an in-memory copy of the
/// index (never written back). Returns the tree id and the skipped files.
fn snapshot_tree(repo: &Repository, root: &Path, opts: &SnapshotOptions) -> Result<(Oid, Vec<(PathBuf, u64)>)> {
    let excluded: Vec<PathBuf> =
        opts.exclude_dirs.iter().map(|d| d.trim_matches('/')).filter(|d| !d.is_empty()).map(PathBuf::from).collect();

    // `repo.index()` loads `.git/index` into memory; everything below changes
    // only that in-memory copy. NEVER call `index.write()` here.
    let mut index = repo.index().ctx(|| format!("could not read the git index of `{}`", root.display()))?;

    let mut skipped: Vec<(PathBuf, u64)> = Vec::new();
    let mut nested: Vec<PathBuf> = Vec::new();
    {
        let max = opts.max_file_bytes;
        let mut filter = |path: &Path, _matched: &[u8]| -> i32 {
            if in_excluded_dir(path, &excluded) {
                return 1;
            }
            // Missing files (deleted from the worktree) get 0: the index
            // entry is then removed, as `git add -A` does.
            match std::fs::symlink_metadata(root.join(path)) {
                Ok(meta) if meta.is_file() && meta.len() > max => {
                    skipped.push((path.to_path_buf(), meta.len()));
                    1
                }
                // An untracked nested repository comes as `dir/`, which
                // `add_all` rejects ("invalid path"); handled below.
                Ok(meta) if meta.is_dir() => {
                    nested.push(path.components().collect());
                    1
                }
                _ => 0,
            }
        };
        // `add_all` diffs the index against the working tree and applies
        // every delta: modified and untracked (not ignored) files are added,
        // files missing from the working tree are removed. That is all of
        // `git add -A`; `update_all` would only re-hash every tracked file.
        index
            .add_all(["*"], IndexAddOption::DEFAULT, Some(&mut filter))
            .ctx(|| format!("could not scan the working tree of `{}` for the snapshot", root.display()))?;
    }

    // Nested repositories are recorded as git does, as a link to the commit
    // they have checked out; one without a commit has nothing to link to and
    // is left out (where `git add -A` would fail).
    for dir in &nested {
        if let Err(e) = index.add_path(dir) {
            if !matches!(e.code(), ErrorCode::NotFound | ErrorCode::UnbornBranch)
                && e.class() != git2::ErrorClass::Submodule
            {
                return Err(e).ctx(|| {
                    format!(
                        "could not add the nested repository `{}` of `{}` to the snapshot",
                        dir.display(),
                        root.display()
                    )
                });
            }
        }
    }

    // Tracked files in excluded folders, and stale staged versions of
    // over-size files, must not end up in the snapshot either.
    for dir in &excluded {
        index.remove_dir(dir, 0).ctx(|| format!("could not leave `{}` out of the snapshot", dir.display()))?;
    }
    for (path, _) in &skipped {
        match index.remove_path(path) {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::NotFound => {}
            Err(e) => {
                return Err(e).ctx(|| format!("could not leave `{}` out of the snapshot", path.display()));
            }
        }
    }
    skipped.sort();

    let tree = match index.write_tree() {
        Ok(tree) => tree,
        Err(e) if e.code() == ErrorCode::Unmerged => {
            return Err(Error::Conflicts { root: root.to_path_buf(), source: e });
        }
        Err(e) => {
            return Err(e).ctx(|| format!("could not write the snapshot tree of `{}`", root.display()));
        }
    };
    Ok((tree, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_file_mb_parses_the_environment_value() {
        assert_eq!(max_file_mb(None).ok(), Some(DEFAULT_MAX_FILE_MB));
        assert_eq!(max_file_mb(Some(" 7 ".into())).ok(), Some(7));
        assert_eq!(max_file_mb(Some("0".into())).ok(), Some(0));
        for bad in ["", "1GB", "-3", "1.5"] {
            match max_file_mb(Some(bad.into())) {
                Err(e @ Error::InvalidEnv { .. }) => {
                    assert!(e.to_string().contains(MAX_FILE_MB_ENV), "{e}");
                }
                other => panic!("{bad:?}: expected InvalidEnv, got {other:?}"),
            }
        }
    }

    #[test]
    fn excluded_dirs_match_whole_components() {
        let dirs = [PathBuf::from(".flor"), PathBuf::from("data/cache")];
        assert!(in_excluded_dir(Path::new(".flor/records/x"), &dirs));
        assert!(in_excluded_dir(Path::new("data/cache/a.bin"), &dirs));
        assert!(!in_excluded_dir(Path::new(".florence/x"), &dirs));
        assert!(!in_excluded_dir(Path::new("data/cached"), &dirs));
        assert!(!in_excluded_dir(Path::new("src/.flor/x"), &dirs));
    }
}
