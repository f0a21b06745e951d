//! Adding files to flor commits, reading them back, listing and deleting refs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, FileMode, ObjectType, Oid, Repository, Tree};

use crate::error::{Error, GitContext, Result};
use crate::refs::{locked, try_update, Attempt, Backoff};
use crate::repo::{check_writable_refname, find_ref, open, resolve_commit, signature, workdir};

/// Add files to the commit at the tip of `refname`.
///
/// Creates a new commit whose parent is the current tip and whose tree is
/// the tip's tree plus `files`, given as (path inside the tree with `/`
/// separators, e.g. `.flor/records/RUNID.jsonl`, content). Intermediate
/// folders are created; a file already at the same path is replaced (when a
/// path appears twice in `files`, the last one wins). Files are stored as
/// regular, non-executable files.
///
/// The ref is moved compare-and-swap style, checked under git's lock. When
/// another process moves the ref meanwhile, the commit is rebuilt on the new
/// tip and the move tried again, so concurrent writers never lose each
/// other's files (a path both write holds the last writer's bytes). After
/// 10 s of losing to other writers it fails with [`Error::RefMoved`], or
/// [`Error::RefLocked`] when a lock file stayed. A missing ref gives
/// [`Error::RefNotFound`]. Returns the new commit's sha. HEAD, the index and
/// the working tree are not touched.
pub fn attach_files(root: &Path, refname: &str, files: &[(&str, &[u8])], message: &str) -> Result<String> {
    check_writable_refname(refname)?;
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let new = stage_files(&repo, &root, files)?;
    let mut backoff = Backoff::new();
    loop {
        let tip = current_tip(&repo, &root, refname)?;
        let (commit, attempt) = attach_onto(&repo, &root, refname, tip, &new, message)?;
        match attempt {
            Attempt::Written => return Ok(commit.to_string()),
            _ if backoff.pause() => {}
            Attempt::Locked => return Err(locked(&repo, &root, refname)),
            Attempt::Taken => return Err(moved(&repo, &root, refname, tip)),
        }
    }
}

/// Like [`attach_files`], but only if the tip of `refname` is still the
/// commit `expected_tip` (a full sha); otherwise fails with
/// [`Error::RefMoved`] without writing anything to the ref.
///
/// Use it to update a ref read earlier without losing a concurrent update:
/// read the tip, decide what to add from what it holds, attach expecting
/// that tip, and start again on [`Error::RefMoved`]. Of simultaneous callers
/// expecting the same tip exactly one succeeds. A lock file held by another
/// writer is waited for (up to 10 s, then [`Error::RefLocked`]).
pub fn attach_files_expecting(
    root: &Path,
    refname: &str,
    expected_tip: &str,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<String> {
    check_writable_refname(refname)?;
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let expected = Oid::from_str(expected_tip).map_err(|_| Error::InvalidSha { value: expected_tip.to_string() })?;
    let new = stage_files(&repo, &root, files)?;
    let mut backoff = Backoff::new();
    loop {
        let tip = current_tip(&repo, &root, refname)?;
        if tip != expected {
            return Err(Error::RefMoved {
                refname: refname.to_string(),
                expected: expected.to_string(),
                found: Some(tip.to_string()),
            });
        }
        let (commit, attempt) = attach_onto(&repo, &root, refname, expected, &new, message)?;
        match attempt {
            Attempt::Written => return Ok(commit.to_string()),
            Attempt::Taken => return Err(moved(&repo, &root, refname, expected)),
            Attempt::Locked if backoff.pause() => {}
            Attempt::Locked => return Err(locked(&repo, &root, refname)),
        }
    }
}

/// The sha `refname` points to now (a full sha), for a later
/// [`attach_files_expecting`]. A missing ref gives [`Error::RefNotFound`].
pub fn ref_tip(root: &Path, refname: &str) -> Result<String> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    Ok(current_tip(&repo, &root, refname)?.to_string())
}

/// The commit `refname` points to.
fn current_tip(repo: &Repository, root: &Path, refname: &str) -> Result<Oid> {
    let reference = find_ref(repo, root, refname)?
        .ok_or_else(|| Error::RefNotFound { refname: refname.to_string(), root: root.to_path_buf() })?;
    reference
        .peel_to_commit()
        .map(|c| c.id())
        .ctx(|| format!("ref `{refname}` in `{}` does not point to a commit", root.display()))
}

/// [`Error::RefMoved`] for a ref that no longer points to `expected`.
fn moved(repo: &Repository, root: &Path, refname: &str, expected: Oid) -> Error {
    let found = find_ref(repo, root, refname).ok().flatten().and_then(|r| r.target()).map(|o| o.to_string());
    Error::RefMoved { refname: refname.to_string(), expected: expected.to_string(), found }
}

/// Stores the files' blobs and groups them into a tree of folders, so each
/// tree is rewritten once however many files land in it (and the blobs are
/// written once however many attempts the ref update takes).
fn stage_files(repo: &Repository, root: &Path, files: &[(&str, &[u8])]) -> Result<Dir> {
    let mut new = Dir::default();
    for (path, content) in files {
        let parts = split_tree_path(path)?;
        let blob = repo.blob(content).ctx(|| format!("could not store `{path}` in `{}`", root.display()))?;
        new.insert(path, &parts, blob)?;
    }
    Ok(new)
}

/// Builds the commit of `new` on `tip` and tries to move the ref from `tip`
/// to it; returns the commit and what the attempt came to.
fn attach_onto(
    repo: &Repository,
    root: &Path,
    refname: &str,
    tip: Oid,
    new: &Dir,
    message: &str,
) -> Result<(Oid, Attempt)> {
    let parent = repo.find_commit(tip).ctx(|| format!("could not read commit {tip} in `{}`", root.display()))?;
    let base = parent.tree().ctx(|| format!("could not read the tree of commit {tip} in `{}`", root.display()))?;
    let tree_id = write_dir(repo, Some(&base), new, "")?;
    let tree = repo.find_tree(tree_id).ctx(|| format!("could not read back tree {tree_id} in `{}`", root.display()))?;
    let sig = signature(repo)?;
    let commit = repo
        .commit(None, &sig, &sig, message, &tree, &[&parent])
        .ctx(|| format!("could not create a commit on `{refname}` in `{}`", root.display()))?;
    Ok((commit, try_update(repo, root, refname, commit, tip, message)?))
}

/// Files to add, as a tree of folders.
#[derive(Default)]
struct Dir {
    files: BTreeMap<String, Oid>,
    dirs: BTreeMap<String, Dir>,
}

impl Dir {
    fn insert(&mut self, full: &str, parts: &[&str], blob: Oid) -> Result<()> {
        let clash = || Error::InvalidPath {
            path: full.to_string(),
            reason: "another file in the same call uses part of this path as a folder, or \
                     this path as a folder; give each file its own path"
                .to_string(),
        };
        match parts {
            [] => Err(clash()),
            [name] => {
                if self.dirs.contains_key(*name) {
                    return Err(clash());
                }
                self.files.insert((*name).to_string(), blob);
                Ok(())
            }
            [name, rest @ ..] => {
                if self.files.contains_key(*name) {
                    return Err(clash());
                }
                self.dirs.entry((*name).to_string()).or_default().insert(full, rest, blob)
            }
        }
    }
}

/// Writes `base` (if any) with `new` merged in; returns the new tree's id.
fn write_dir(repo: &Repository, base: Option<&Tree<'_>>, new: &Dir, prefix: &str) -> Result<Oid> {
    let mut builder = repo.treebuilder(base).ctx(|| format!("could not start a tree for `{prefix}`"))?;
    for (name, blob) in &new.files {
        let path = format!("{prefix}{name}");
        if let Some(existing) = base.and_then(|b| b.get_name(name)) {
            if existing.kind() != Some(ObjectType::Blob) {
                return Err(Error::InvalidPath {
                    path,
                    reason: "a folder (or submodule) already exists at this path in the \
                             commit; choose another path"
                        .to_string(),
                });
            }
        }
        builder.insert(name, *blob, FileMode::Blob.into()).ctx(|| format!("could not add `{path}` to the tree"))?;
    }
    for (name, sub) in &new.dirs {
        let path = format!("{prefix}{name}/");
        let existing = match base.and_then(|b| b.get_name(name)) {
            None => None,
            Some(entry) if entry.kind() == Some(ObjectType::Tree) => Some(
                entry
                    .to_object(repo)
                    .and_then(|o| o.peel_to_tree())
                    .ctx(|| format!("could not read folder `{path}` of the commit"))?,
            ),
            Some(_) => {
                return Err(Error::InvalidPath {
                    path: path.trim_end_matches('/').to_string(),
                    reason: "a file already exists at this path in the commit, so it cannot \
                             be a folder; choose another path"
                        .to_string(),
                });
            }
        };
        let id = write_dir(repo, existing.as_ref(), sub, &path)?;
        builder.insert(name, id, FileMode::Tree.into()).ctx(|| format!("could not add folder `{path}` to the tree"))?;
    }
    builder.write().ctx(|| format!("could not write the tree for `{prefix}`"))
}

/// Splits a `/`-separated path inside a tree, rejecting malformed ones.
fn split_tree_path(path: &str) -> Result<Vec<&str>> {
    let invalid = |reason: &str| Error::InvalidPath { path: path.to_string(), reason: reason.to_string() };
    if path.is_empty() {
        return Err(invalid("the path is empty; pass e.g. `.flor/records/<run id>.jsonl`"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(invalid("it contains a NUL byte or a backslash; use `/` between folder names"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(invalid(
                "it must be relative, without empty, `.` or `..` parts, e.g. \
                 `.flor/records/<run id>.jsonl`",
            ));
        }
        if part.eq_ignore_ascii_case(".git") {
            return Err(invalid("git does not allow `.git` inside a tree; choose another name"));
        }
    }
    Ok(parts)
}

/// All refs whose names start with `prefix` (e.g. `refs/flor/runs/`), sorted
/// by name, as (full ref name, sha of the commit it points to).
///
/// Symbolic refs are resolved and annotated tags peeled. Refs whose names
/// are not UTF-8, or that point to no commit, are left out.
pub fn list_refs(root: &Path, prefix: &str) -> Result<Vec<(String, String)>> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let refs = repo.references().ctx(|| format!("could not list the refs of `{}`", root.display()))?;
    let mut out = Vec::new();
    for reference in refs {
        let reference = reference.ctx(|| format!("could not list the refs of `{}`", root.display()))?;
        let Ok(name) = reference.name() else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        if let Ok(commit) = reference.peel_to_commit() {
            out.push((name.to_string(), commit.id().to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// The files under the folder `dir` (e.g. `.flor/records`) in the tree of the
/// commit-ish `rev` (a sha or a ref name), recursively, as (path relative to
/// the tree root with `/` separators, bytes), sorted by path.
///
/// `dir` may be `""` for the whole tree. A missing folder gives an empty vec;
/// a file at `dir` gives [`Error::NotADirectory`]. Submodule entries are left
/// out; a symlink's bytes are its target.
pub fn read_dir_at(root: &Path, rev: &str, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
    RepoReader::open(root)?.read_dir_at(rev, dir)
}

/// One open repository for many reads: the refs and the files of many
/// commits, without opening the repository for each read (opening reads
/// the config files and probes the folders; ingesting thousands of run
/// refs did it once per ref). Not `Sync`: one per thread.
pub struct RepoReader {
    repo: Repository,
    root: PathBuf,
}

impl std::fmt::Debug for RepoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoReader").field("root", &self.root).finish_non_exhaustive()
    }
}

impl RepoReader {
    /// Opens the repository containing `root` (errors as [`discover`](crate::discover)'s).
    pub fn open(root: &Path) -> Result<RepoReader> {
        let repo = open(root)?;
        let root = workdir(&repo)?;
        Ok(RepoReader { repo, root })
    }

    /// [`read_dir_at`] in this repository.
    pub fn read_dir_at(&self, rev: &str, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let files = walk_dir_in(&self.repo, &self.root, rev, dir, true)?;
        Ok(files.into_iter().map(|(p, b)| (p, b.unwrap_or_default())).collect())
    }

    /// The refs whose names start with `prefix`, sorted by name, as (full
    /// ref name, sha of the object it names), symbolic refs resolved. Unlike
    /// [`list_refs`] the objects are not read (one file read per ref
    /// saved), so a sha may name something other than a commit: see
    /// [`RepoReader::commit_of`]. Refs whose names are not UTF-8, and
    /// symbolic refs that name no ref, are left out.
    pub fn ref_targets(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let context = || format!("could not list the refs of `{}`", self.root.display());
        let mut out = Vec::new();
        for reference in self.repo.references().ctx(context)? {
            let reference = reference.ctx(context)?;
            let Ok(name) = reference.name() else { continue };
            if !name.starts_with(prefix) {
                continue;
            }
            let target = match reference.target() {
                Some(oid) => oid,
                None => match reference.resolve().ok().and_then(|r| r.target()) {
                    Some(oid) => oid,
                    None => continue,
                },
            };
            out.push((name.to_string(), target.to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// The sha of the commit `rev` names (annotated tags peeled), `None`
    /// when it names no commit.
    pub fn commit_of(&self, rev: &str) -> Option<String> {
        resolve_commit(&self.repo, &self.root, rev).ok().map(|c| c.id().to_string())
    }
}

/// The paths of the files [`read_dir_at`] would return, without reading
/// their contents.
pub fn list_dir_at(root: &Path, rev: &str, dir: &str) -> Result<Vec<String>> {
    Ok(walk_dir(root, rev, dir, false)?.into_iter().map(|(p, _)| p).collect())
}

/// The files under `dir` at `rev`, with their bytes when `contents`.
fn walk_dir(root: &Path, rev: &str, dir: &str, contents: bool) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    walk_dir_in(&repo, &root, rev, dir, contents)
}

/// [`walk_dir`] in the open `repo` (working tree `root`, for messages).
fn walk_dir_in(
    repo: &Repository,
    root: &Path,
    rev: &str,
    dir: &str,
    contents: bool,
) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    let commit = resolve_commit(repo, root, rev)?;
    let tree = commit.tree().ctx(|| format!("could not read the tree of `{rev}` in `{}`", root.display()))?;
    let dir = dir.trim_matches('/');
    let start = if dir.is_empty() || dir == "." {
        tree
    } else {
        match tree.get_path(Path::new(dir)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
                repo.find_tree(entry.id()).ctx(|| format!("could not read folder `{dir}` of `{rev}`"))?
            }
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => {
                return Err(Error::NotADirectory { rev: rev.to_string(), path: dir.to_string() });
            }
            Ok(_) => return Ok(Vec::new()),
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx(|| format!("could not look up `{dir}` in `{rev}`")),
        }
    };
    let prefix = if dir.is_empty() || dir == "." { String::new() } else { format!("{dir}/") };
    let mut out = Vec::new();
    collect_blobs(repo, &start, &prefix, rev, contents, MAX_TREE_DEPTH, &mut out)?;
    out.sort();
    Ok(out)
}

/// How many folders deep [`read_dir_at`] and [`list_dir_at`] descend: a
/// commit from elsewhere (a pushed ref) may nest trees without end, and
/// each level is a frame of recursion.
pub const MAX_TREE_DEPTH: usize = 256;

/// Appends every blob under `tree` to `out`, paths prefixed with `prefix`
/// (with the blob's bytes when `contents`), descending at most `levels`
/// more folders.
fn collect_blobs(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    rev: &str,
    contents: bool,
    levels: usize,
    out: &mut Vec<(String, Option<Vec<u8>>)>,
) -> Result<()> {
    if levels == 0 {
        return Err(Error::TooDeep { rev: rev.to_string(), path: prefix.to_string(), max: MAX_TREE_DEPTH });
    }
    for entry in tree.iter() {
        let path = format!("{prefix}{}", String::from_utf8_lossy(entry.name_bytes()));
        match entry.kind() {
            Some(ObjectType::Blob) if contents => {
                let blob = repo.find_blob(entry.id()).ctx(|| format!("could not read `{path}` of `{rev}`"))?;
                out.push((path, Some(blob.content().to_vec())));
            }
            Some(ObjectType::Blob) => out.push((path, None)),
            Some(ObjectType::Tree) => {
                let sub = repo.find_tree(entry.id()).ctx(|| format!("could not read folder `{path}` of `{rev}`"))?;
                collect_blobs(repo, &sub, &format!("{path}/"), rev, contents, levels - 1, out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One file's bytes at the commit-ish `rev` (a sha or a ref name); `path` is
/// relative to the tree root with `/` separators.
///
/// A missing path gives [`Error::PathNotFound`]; a folder or submodule gives
/// [`Error::NotAFile`].
pub fn read_file_at(root: &Path, rev: &str, path: &str) -> Result<Vec<u8>> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let commit = resolve_commit(&repo, &root, rev)?;
    let tree = commit.tree().ctx(|| format!("could not read the tree of `{rev}` in `{}`", root.display()))?;
    let not_found = || Error::PathNotFound { rev: rev.to_string(), path: path.to_string() };
    let clean = path.trim_start_matches('/');
    if clean.is_empty() {
        return Err(not_found());
    }
    let entry = match tree.get_path(Path::new(clean)) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return Err(not_found()),
        Err(e) => return Err(e).ctx(|| format!("could not look up `{path}` in `{rev}`")),
    };
    if entry.kind() != Some(ObjectType::Blob) {
        return Err(Error::NotAFile { rev: rev.to_string(), path: path.to_string() });
    }
    let blob = repo.find_blob(entry.id()).ctx(|| format!("could not read `{path}` of `{rev}`"))?;
    Ok(blob.content().to_vec())
}

/// Delete the ref `refname`. Returns `Ok(false)` when it did not exist.
///
/// Like every write, only refs below `refs/` and outside `refs/heads/` are
/// accepted ([`Error::InvalidRefName`]). A ref that another process is
/// writing at the same moment is waited for (up to 10 s, then
/// [`Error::RefLocked`]) and deleted whatever it then points to.
pub fn delete_ref(root: &Path, refname: &str) -> Result<bool> {
    check_writable_refname(refname)?;
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let mut backoff = Backoff::new();
    loop {
        let Some(mut reference) = find_ref(&repo, &root, refname)? else {
            return Ok(false);
        };
        match reference.delete() {
            Ok(()) => return Ok(true),
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(false),
            // Moved or locked by another writer: look again.
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked) && backoff.pause() => {}
            Err(e) if e.code() == ErrorCode::Locked => return Err(locked(&repo, &root, refname)),
            Err(e) => return Err(e).ctx(|| format!("could not delete ref `{refname}` in `{}`", root.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compare-and-swap in git itself (not only the pre-check in
    /// `attach_files_expecting`) refuses to move a ref that moved after its
    /// tip was read.
    #[test]
    fn ref_update_is_compare_and_swap() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            action: "create temp folder",
            path: std::env::temp_dir(),
            source: e,
        })?;
        let repo = Repository::init(dir.path())?;
        let root = workdir(&repo)?;
        let sig = git2::Signature::now("t", "t@example.com")?;
        let empty = repo.find_tree(repo.treebuilder(None)?.write()?)?;
        let base = repo.commit(None, &sig, &sig, "base", &empty, &[])?;
        let refname = "refs/flor/runs/cas";
        repo.reference(refname, base, false, "test")?;

        // Writer A reads the tip; writer B moves the ref first.
        let stale = current_tip(&repo, &root, refname)?;
        let b = stage_files(&repo, &root, &[("b", b"b")])?;
        let (moved, attempt) = attach_onto(&repo, &root, refname, stale, &b, "B")?;
        assert_eq!(attempt, Attempt::Written);
        let a = stage_files(&repo, &root, &[("a", b"a")])?;
        let (_, attempt) = attach_onto(&repo, &root, refname, stale, &a, "A")?;
        assert_eq!(attempt, Attempt::Taken);
        assert_eq!(current_tip(&repo, &root, refname)?, moved);
        Ok(())
    }
}
