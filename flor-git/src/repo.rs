//! Finding and opening the user's repository, and shared look-ups.

use std::path::{Path, PathBuf};

use git2::{Commit, ErrorCode, Oid, Reference, ReferenceFormat, Repository};

use crate::error::{Error, GitContext, IoContext, Result};

/// What flor needs to know about the repository a run is recorded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The working tree's root folder, canonicalized.
    pub root: PathBuf,
    /// The project id: the name of the working tree's root folder.
    pub projid: String,
    /// The sha of the commit HEAD points to; `None` when HEAD is unborn
    /// (no commit yet).
    pub head: Option<String>,
    /// The short name of the current branch (e.g. `main`), also for an
    /// unborn branch; `None` when HEAD is detached.
    pub branch: Option<String>,
}

/// Makes the git writes of this process that follow durable (`true`):
/// libgit2 then fsyncs every object, ref and packed-refs file it writes, and
/// their folders, before the rename that publishes them. A setting of the
/// whole process (libgit2 has no per-repository switch that leaves the
/// user's config alone); off by default, as in libgit2. flor turns it on
/// for a project whose `durability` is `os`, so that a run's records,
/// published to git just before the local file is removed, survive a power
/// loss.
pub fn set_fsync(enabled: bool) {
    libgit2_sys::init();
    // SAFETY: libgit2 is initialized (above); GIT_OPT_ENABLE_FSYNC_GITDIR
    // takes exactly one `int` argument and only sets a global flag.
    unsafe {
        libgit2_sys::git_libgit2_opts(
            libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int,
            std::ffi::c_int::from(enabled),
        );
    }
}

/// Find the repository containing `start` (any folder inside it).
///
/// Bare repositories are refused ([`Error::BareRepository`]): flor needs a
/// working tree to snapshot. A folder outside any repository gives
/// [`Error::NotARepository`].
pub fn discover(start: &Path) -> Result<RepoInfo> {
    let repo = open(start)?;
    let root = workdir(&repo)?;
    let projid = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| root.to_string_lossy().into_owned());
    let head = head_commit(&repo, &root)?.map(|c| c.id().to_string());
    let branch = current_branch(&repo, &root)?;
    Ok(RepoInfo { root, projid, head, branch })
}

/// Opens the repository containing `path`, refusing bare ones.
pub(crate) fn open(path: &Path) -> Result<Repository> {
    let start = path.canonicalize().io("open folder", path)?;
    let repo = match Repository::discover(&start) {
        Ok(repo) => repo,
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Err(Error::NotARepository { path: start });
        }
        Err(e) => {
            return Err(e).ctx(|| format!("could not open the git repository at `{}`", start.display()));
        }
    };
    if repo.is_bare() || repo.workdir().is_none() {
        return Err(Error::BareRepository { path: repo.path().to_path_buf() });
    }
    Ok(repo)
}

/// The canonical working-tree root of a non-bare repository.
pub(crate) fn workdir(repo: &Repository) -> Result<PathBuf> {
    let dir = repo.workdir().ok_or_else(|| Error::BareRepository { path: repo.path().to_path_buf() })?;
    dir.canonicalize().io("open working tree", dir)
}

/// The commit HEAD points to, `None` when HEAD is unborn.
pub(crate) fn head_commit<'r>(repo: &'r Repository, root: &Path) -> Result<Option<Commit<'r>>> {
    let head = match repo.head() {
        Ok(head) => head,
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            return Ok(None);
        }
        Err(e) => return Err(e).ctx(|| format!("could not read HEAD of `{}`", root.display())),
    };
    head.peel_to_commit().map(Some).ctx(|| format!("HEAD of `{}` does not point to a commit", root.display()))
}

/// The short name of the branch HEAD is on (born or unborn), `None` when
/// HEAD is detached.
fn current_branch(repo: &Repository, root: &Path) -> Result<Option<String>> {
    let head = repo.find_reference("HEAD").ctx(|| format!("could not read HEAD of `{}`", root.display()))?;
    let Some(target) = head.symbolic_target_bytes() else {
        return Ok(None);
    };
    let target = String::from_utf8_lossy(target);
    Ok(Some(target.strip_prefix("refs/heads/").unwrap_or(&target).to_string()))
}

/// Checks that `refname` is a well-formed name flor may write to.
///
/// flor writes only below `refs/` and never below `refs/heads/` (moving a
/// branch would change what the user's HEAD means).
pub(crate) fn check_writable_refname(refname: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidRefName { refname: refname.to_string(), reason: reason.to_string() };
    match Reference::normalize_name(refname, ReferenceFormat::NORMAL) {
        Ok(normal) if normal == refname => {}
        _ => {
            return Err(invalid(
                "it is not a valid git ref name (see `git check-ref-format --help`); \
                 use something like `refs/flor/runs/<run id>`",
            ));
        }
    }
    if !refname.starts_with("refs/") {
        return Err(invalid("flor only writes refs below `refs/`; use something like `refs/flor/runs/<run id>`"));
    }
    if refname.starts_with("refs/heads/") {
        return Err(invalid(
            "flor never moves branches; use a ref outside `refs/heads/`, such as \
             `refs/flor/runs/<run id>`",
        ));
    }
    Ok(())
}

/// Resolves a commit-ish (sha, ref name, any revparse spec) to a commit.
pub(crate) fn resolve_commit<'r>(repo: &'r Repository, root: &Path, rev: &str) -> Result<Commit<'r>> {
    let not_found = |source| Error::RevNotFound { rev: rev.to_string(), root: root.to_path_buf(), source };
    // A full sha (what flor passes most: a ref's target) is looked up
    // directly, without the rev-parser.
    let object = match Oid::from_str(rev) {
        Ok(oid) if rev.len() == 40 => repo.find_object(oid, None),
        _ => repo.revparse_single(rev),
    };
    object.map_err(not_found)?.peel_to_commit().map_err(not_found)
}

/// Looks up a reference, `None` when it does not exist.
pub(crate) fn find_ref<'r>(repo: &'r Repository, root: &Path, refname: &str) -> Result<Option<Reference<'r>>> {
    match repo.find_reference(refname) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("could not read ref `{refname}` in `{}`", root.display())),
    }
}

/// The signature from the repository's config, or `flor <flor@localhost>`.
pub(crate) fn signature(repo: &Repository) -> Result<git2::Signature<'static>> {
    match repo.signature() {
        Ok(sig) => Ok(sig),
        Err(_) => git2::Signature::now("flor", "flor@localhost")
            .ctx(|| "could not build the fallback signature `flor <flor@localhost>`".to_string()),
    }
}
