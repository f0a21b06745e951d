//! What the working tree holds as git sees it, without writing anything.

use std::path::PathBuf;

use git2::{Status, StatusOptions};

use crate::error::{GitContext, Result};
use crate::repo::{open, workdir};

/// The files of the working tree that git does not ignore — tracked ones
/// and untracked ones alike, which is what a snapshot would hold before its
/// size limit — as paths relative to the working-tree root, sorted.
///
/// Files deleted from the working tree are left out; nested repositories
/// and submodules are not entered. Nothing is written: not the index, not
/// an object.
pub fn unignored_files(root: &std::path::Path) -> Result<Vec<PathBuf>> {
    let repo = open(root)?;
    let root = workdir(&repo)?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .include_unmodified(true)
        .exclude_submodules(true)
        .no_refresh(true);
    let statuses =
        repo.statuses(Some(&mut opts)).ctx(|| format!("could not list the working tree of `{}`", root.display()))?;
    let mut files: Vec<PathBuf> = statuses
        .iter()
        .filter(|e| !e.status().intersects(Status::WT_DELETED) && e.status() != Status::INDEX_DELETED)
        .map(|e| bytes_path(e.path_bytes()))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// A git path (bytes, `/`-separated) as a relative path.
fn bytes_path(bytes: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(bytes).replace('/', "\\"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::process::Command;

    #[test]
    fn lists_tracked_and_untracked_files_but_not_ignored_or_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(root)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        fs::write(root.join(".gitignore"), "data/\n*.log\n").unwrap();
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("src/a.py"), "a").unwrap();
        fs::write(root.join("gone.py"), "g").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "c"]);
        fs::remove_file(root.join("gone.py")).unwrap();
        fs::write(root.join("src/deep/new.py"), "n").unwrap();
        fs::write(root.join("src/run.log"), "ignored").unwrap();
        fs::write(root.join("data/train.csv"), "ignored").unwrap();
        let got = unignored_files(root).unwrap();
        let want: Vec<PathBuf> = [".gitignore", "src/a.py", "src/deep/new.py"].iter().map(PathBuf::from).collect();
        assert_eq!(got, want);
    }
}
