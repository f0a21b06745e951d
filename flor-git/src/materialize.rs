//! Exporting a commit's tree into a plain folder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository, Tree};

use crate::error::{Error, GitContext, IoContext, Result};
use crate::repo::{open, resolve_commit, workdir};

/// Git's file mode for executable files.
const MODE_EXECUTABLE: i32 = 0o100755;
/// Git's file mode for symlinks.
const MODE_LINK: i32 = 0o120000;

/// Export the whole tree of the commit-ish `rev` into `target`, an empty or
/// non-existent folder (created with its parents if needed).
///
/// Files are written byte for byte as stored (no `.gitattributes` filters:
/// no end-of-line conversion, no LFS smudging); executable files get their
/// executable bit, symlinks become symlinks on unix (files holding the link
/// target elsewhere), submodules become empty folders. No `.git` or other
/// worktree metadata is written, and the user's checkout, index and HEAD are
/// not touched. A non-empty `target` gives [`Error::TargetNotEmpty`]; a
/// tree entry whose name could escape `target` gives
/// [`Error::UnsafeTreeEntry`].
pub fn materialize(root: &Path, rev: &str, target: &Path) -> Result<()> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let commit = resolve_commit(&repo, &root, rev)?;
    let tree = commit.tree().ctx(|| format!("could not read the tree of `{rev}` in `{}`", root.display()))?;

    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty { target: target.to_path_buf() });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(target).io("create folder", target)?;
        }
        Err(e) => return Err(e).io("read folder", target),
    }
    write_tree(&repo, &tree, target, rev)
}

/// Writes the entries of `tree` into the existing, empty folder `dir`.
fn write_tree(repo: &Repository, tree: &Tree<'_>, dir: &Path, rev: &str) -> Result<()> {
    for entry in tree.iter() {
        let path = dir.join(safe_name(entry.name_bytes(), rev)?);
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let sub = repo
                    .find_tree(entry.id())
                    .ctx(|| format!("could not read folder `{}` of `{rev}`", path.display()))?;
                // `create_dir` (not `_all`) fails on anything already there,
                // so a malformed tree cannot redirect writes through a link.
                fs::create_dir(&path).io("create folder", &path)?;
                write_tree(repo, &sub, &path, rev)?;
            }
            Some(ObjectType::Blob) => {
                let blob =
                    repo.find_blob(entry.id()).ctx(|| format!("could not read `{}` of `{rev}`", path.display()))?;
                let mode = entry.filemode();
                if mode == MODE_LINK {
                    write_link(&path, blob.content())?;
                } else {
                    write_file(&path, blob.content(), mode == MODE_EXECUTABLE)?;
                }
            }
            Some(ObjectType::Commit) => {
                fs::create_dir(&path).io("create folder", &path)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that a tree entry name is a single, harmless path component.
fn safe_name(name: &[u8], rev: &str) -> Result<PathBuf> {
    let unsafe_entry =
        || Error::UnsafeTreeEntry { rev: rev.to_string(), name: String::from_utf8_lossy(name).into_owned() };
    if name.is_empty()
        || name == b"."
        || name == b".."
        || name.eq_ignore_ascii_case(b".git")
        || name.iter().any(|&b| b == b'/' || b == b'\\' || b == 0)
    {
        return Err(unsafe_entry());
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(name)))
    }
    #[cfg(not(unix))]
    {
        match std::str::from_utf8(name) {
            Ok(s) if !s.contains(':') => Ok(PathBuf::from(s)),
            _ => Err(unsafe_entry()),
        }
    }
}

/// Creates a new file (never following or replacing an existing path).
fn write_file(path: &Path, content: &[u8], executable: bool) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if executable { 0o777 } else { 0o666 });
    }
    #[cfg(not(unix))]
    let _ = executable;
    let mut file = options.open(path).io("create file", path)?;
    file.write_all(content).io("write file", path)?;
    Ok(())
}

/// Creates a symlink to `target` (a file holding it where links are not
/// available).
fn write_link(path: &Path, target: &[u8]) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path).io("create symlink", path)
    }
    #[cfg(not(unix))]
    {
        write_file(path, target, false)
    }
}
