//! Keeping what an old script writes out of the user's files.
//!
//! A replayed segment runs the old code version against the project as it
//! is now: it must read the user's data sets and other files git ignores,
//! and whatever it writes — checkpoints, `out/model.txt`, logs — must land
//! in the replay's own folder under `.flor/replay/`, never in the user's
//! files. Two ways, decided once per replay ([`Isolation::decide`], shown
//! in the plan):
//!
//! - **overlay** (Linux 5.11+): each segment's process enters a new user
//!   and mount namespace and sees the project root as an overlay: the
//!   user's tree below, the segment's private folder on top (the old
//!   version's files, and whiteouts hiding files the old version did not
//!   have). Nothing is copied; see [`crate::overlay`].
//! - **copy**: where the kernel refuses namespaces or overlays, the old
//!   version is exported into a folder of its own and the files it lacks
//!   that the user's tree shows it (what git ignores: data, outputs) are
//!   copied next to it, when they fit [`IsolationSettings::copy_limit_bytes`];
//!   otherwise replay refuses before anything runs.
//!
//! Which files of the user's tree an old version sees is the same both
//! ways ([`TreeView`]): everything except `.git`, `.flor` and the files a
//! snapshot would hold now (git does not ignore them and they fit the
//! snapshot size limit) that the old version lacks — those are code of a
//! newer version.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

#[cfg(target_os = "linux")]
pub(crate) use crate::overlay::View;

/// Off Linux there are no overlay views: this type has no values.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub(crate) enum View {}

#[cfg(not(target_os = "linux"))]
impl View {
    pub(crate) fn apply(self: &std::sync::Arc<View>, _cmd: &mut std::process::Command) {
        match **self {}
    }
}

/// The copy limit when none is configured, in mebibytes.
pub const DEFAULT_COPY_LIMIT_MB: u64 = 1024;

/// Which way to isolate (the `[replay] isolation` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// The overlay where the kernel allows it, else copies within the
    /// limit, else refuse.
    #[default]
    Auto,
    /// The overlay or refuse.
    Overlay,
    /// Copies within the limit or refuse.
    Copy,
}

impl IsolationMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Auto => "auto",
            IsolationMode::Overlay => "overlay",
            IsolationMode::Copy => "copy",
        }
    }
}

impl FromStr for IsolationMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<IsolationMode, String> {
        match s {
            "auto" => Ok(IsolationMode::Auto),
            "overlay" => Ok(IsolationMode::Overlay),
            "copy" => Ok(IsolationMode::Copy),
            other => Err(format!("unknown isolation {other:?}; use \"auto\", \"overlay\" or \"copy\"")),
        }
    }
}

/// How replay may isolate (`[replay]` in `.flor/config.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationSettings {
    /// Which way.
    pub mode: IsolationMode,
    /// The most bytes copy mode copies for one run.
    pub copy_limit_bytes: u64,
}

impl Default for IsolationSettings {
    fn default() -> IsolationSettings {
        IsolationSettings { mode: IsolationMode::Auto, copy_limit_bytes: DEFAULT_COPY_LIMIT_MB * MIB }
    }
}

const MIB: u64 = 1024 * 1024;

/// How this replay isolates, decided before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Each segment sees the project through its own overlay.
    Overlay,
    /// Each run gets a copy of the files of the user's tree it sees.
    Copy {
        /// Bytes copied for each run (at most: the old version's own files
        /// take precedence).
        bytes: u64,
        /// The limit they fit.
        limit_bytes: u64,
        /// Why not the overlay, when the settings let replay choose.
        overlay_refused: Option<String>,
    },
}

impl Isolation {
    /// Decides how to isolate a replay of the project at `root`: tries
    /// the overlay in a throw-away process (in a folder made under
    /// `scratch`, the executor's folder, and removed), else measures what
    /// copies would take. Fails when the settings' way cannot be had —
    /// before anything runs.
    pub fn decide(root: &Path, scratch: &Path, settings: &IsolationSettings) -> Result<Isolation> {
        let tree = TreeView::scan(root)?;
        let overlay = match settings.mode {
            IsolationMode::Copy => Err(String::new()),
            IsolationMode::Auto | IsolationMode::Overlay => probe_overlay(&tree, scratch),
        };
        match (settings.mode, overlay) {
            (_, Ok(())) => Ok(Isolation::Overlay),
            (IsolationMode::Overlay, Err(why)) => Err(Error::OverlayUnavailable { why }),
            (mode, Err(why)) => {
                let bytes = copy_visible(&tree, None)?;
                let overlay_refused = (mode == IsolationMode::Auto).then_some(why);
                if bytes > settings.copy_limit_bytes {
                    return Err(Error::CopyTooLarge {
                        bytes: human(bytes),
                        limit: human(settings.copy_limit_bytes),
                        overlay_refused,
                    });
                }
                Ok(Isolation::Copy { bytes, limit_bytes: settings.copy_limit_bytes, overlay_refused })
            }
        }
    }

    /// One paragraph for the plan.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Overlay => "overlay: each segment sees the project as it is now with the old code on top; \
                                   what the scripts write stays under .flor/replay/ (kept for a failed run, \
                                   removed once a run's values are attached), never in the project's files"
                .to_owned(),
            Isolation::Copy { bytes, limit_bytes, overlay_refused } => format!(
                "copy{}: the old code and {} of files git does not track are copied for each run \
                 (limit {}: copy_limit_mb under [replay] in .flor/config.toml); what the scripts write \
                 stays under .flor/replay/; paths outside the project are not isolated",
                overlay_refused.as_ref().map(|w| format!(" (no overlay here: {w})")).unwrap_or_default(),
                human(*bytes),
                human(*limit_bytes)
            ),
        }
    }
}

/// `n` bytes for people.
pub(crate) fn human(n: u64) -> String {
    match n {
        n if n >= 1024 * MIB => format!("{:.1} GiB", n as f64 / (1024 * MIB) as f64),
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// What of the user's tree replays see, scanned once per replay.
#[derive(Debug, Clone)]
pub(crate) struct TreeView {
    /// The project root (canonical).
    pub(crate) root: PathBuf,
    /// Files a snapshot would hold now (relative): an old version that
    /// lacks one does not see it.
    pub(crate) versioned: HashSet<PathBuf>,
    /// Folders outside the project (canonical) that top-level symlinks
    /// lead to, none inside another.
    pub(crate) linked: Vec<PathBuf>,
}

impl TreeView {
    /// Scans the project at `root`.
    pub(crate) fn scan(root: &Path) -> Result<TreeView> {
        let root = root.canonicalize().map_err(|e| Error::io("open", root, e))?;
        let limit = flor_git::SnapshotOptions::default().max_file_bytes;
        let versioned = flor_git::unignored_files(&root)?
            .into_iter()
            .filter(|p| !matches!(p.components().next(), Some(Component::Normal(n)) if n == ".flor" || n == ".git"))
            .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| !m.is_dir() && m.len() <= limit))
            .collect();
        let mut linked: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&root).map_err(|e| Error::io("list", &root, e))? {
            let entry = entry.map_err(|e| Error::io("list", &root, e))?;
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                if let Ok(target) = entry.path().canonicalize() {
                    if target.is_dir() && !target.starts_with(&root) && !root.starts_with(&target) {
                        linked.push(target);
                    }
                }
            }
        }
        linked.sort();
        linked.dedup();
        let mut outermost: Vec<PathBuf> = Vec::new();
        for t in linked {
            if !outermost.iter().any(|o| t.starts_with(o)) {
                outermost.push(t);
            }
        }
        Ok(TreeView { root, versioned, linked: outermost })
    }

    /// The files a snapshot would hold now that the old version in `base`
    /// lacks (nothing at that path, no file in place of a folder above it).
    pub(crate) fn newer_than(&self, base: &Path) -> Vec<PathBuf> {
        let mut hidden: Vec<PathBuf> =
            self.versioned.iter().filter(|p| lookup(base, p) == Lookup::Missing).cloned().collect();
        hidden.sort();
        hidden
    }
}

/// What is at a relative path below a folder, following no symlink.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Nothing, and every folder above it is a folder or missing.
    Missing,
    /// Something.
    Present,
    /// A file or symlink stands where a folder above it would be.
    Blocked,
}

/// Looks `rel` up below `base` without following symlinks.
pub(crate) fn lookup(base: &Path, rel: &Path) -> Lookup {
    let mut cur = base.to_path_buf();
    let parts: Vec<Component<'_>> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(name) = c else { return Lookup::Blocked };
        cur.push(name);
        match fs::symlink_metadata(&cur) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Lookup::Missing,
            Err(_) => return Lookup::Present,
            Ok(_) if i + 1 == parts.len() => return Lookup::Present,
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Lookup::Blocked,
        }
    }
    Lookup::Present
}

/// Creates the folders of `rel` below `base`, following no symlink;
/// `false` when a non-folder stands in the way.
pub(crate) fn make_dirs(base: &Path, rel: &Path) -> std::io::Result<bool> {
    let mut cur = base.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else { return Ok(false) };
        cur.push(name);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => fs::create_dir(&cur)?,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Tries the overlay view in a throw-away process.
#[cfg(target_os = "linux")]
fn probe_overlay(tree: &TreeView, scratch: &Path) -> std::result::Result<(), String> {
    let inside = crate::overlay::mounts_inside(&tree.root);
    if !inside.is_empty() {
        let shown: Vec<String> = inside.iter().take(3).map(|p| p.display().to_string()).collect();
        return Err(format!(
            "the project holds mount points ({}{}), and the kernel does not let an unprivileged overlay \
             cover a folder that holds them",
            shown.join(", "),
            if inside.len() > 3 { ", ..." } else { "" }
        ));
    }
    let created = !scratch.exists();
    fs::create_dir_all(scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let dir = scratch.join(format!("probe-{}", std::process::id()));
    let result = match overlay_view(tree, None, &[], &dir, &[scratch.to_path_buf()], Path::new("")) {
        Ok(view) => view.probe(),
        Err(Error::OverlayUnavailable { why }) => Err(why),
        Err(e) => Err(e.to_string()),
    };
    let _ = remove_tree(&dir);
    if created {
        let _ = fs::remove_dir(scratch);
    }
    result
}

#[cfg(not(target_os = "linux"))]
fn probe_overlay(_tree: &TreeView, _scratch: &Path) -> std::result::Result<(), String> {
    Err("overlay mounts in a user namespace need Linux".to_owned())
}

/// Prepares segment folder `seg` (emptied first) for an overlay view of
/// `tree`: its upper layer starts as a copy of `base` (the old version;
/// `None`: empty) with a whiteout for each of `hide`; `real` folders stay
/// the real ones in the view; the process starts in `cwd` (relative to
/// the root).
#[cfg(target_os = "linux")]
pub(crate) fn overlay_view(
    tree: &TreeView,
    base: Option<&Path>,
    hide: &[PathBuf],
    seg: &Path,
    real: &[PathBuf],
    cwd: &Path,
) -> Result<View> {
    use crate::overlay::{whiteout, Layer, ViewSpec};
    remove_tree(seg).map_err(|e| Error::io("remove", seg, e))?;
    let upper = seg.join("upper");
    match base {
        Some(base) => copy_tree(base, &upper)?,
        None => fs::create_dir_all(&upper).map_err(|e| Error::io("create", &upper, e))?,
    }
    for rel in hide {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if make_dirs(&upper, parent).map_err(|e| Error::io("create", upper.join(parent), e))? {
            let path = upper.join(rel);
            whiteout(&path).map_err(|e| Error::io("create a whiteout at", path, e))?;
        }
    }
    let layer = |lower: &Path, dir: PathBuf, target: PathBuf| -> Result<Layer> {
        for d in [dir.join("upper"), dir.join("work")] {
            fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        }
        Ok(Layer { lower: lower.to_owned(), upper: dir.join("upper"), work: dir.join("work"), target })
    };
    let view = seg.join("view");
    fs::create_dir_all(&view).map_err(|e| Error::io("create", &view, e))?;
    let mut main = layer(&tree.root, seg.to_owned(), view)?;
    main.upper = upper;
    let outside = tree
        .linked
        .iter()
        .enumerate()
        .map(|(i, t)| layer(t, seg.join("outside").join(i.to_string()), t.clone()))
        .collect::<Result<Vec<Layer>>>()?;
    let real = real.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let spec = ViewSpec { root: tree.root.clone(), main, real, outside, cwd: tree.root.join(cwd) };
    View::build(&spec).map_err(|why| Error::OverlayUnavailable { why })
}

/// Copies into `code` (holding the old version) the files of the user's
/// tree the old version sees and lacks; `None`: only measures them.
/// Returns their bytes. Top-level symlinks to folders or files outside the
/// project are copied as what they lead to, ones into the project point
/// into `code`; other symlinks are copied as they are.
pub(crate) fn copy_visible(tree: &TreeView, code: Option<&Path>) -> Result<u64> {
    let mut bytes = 0;
    walk(tree, &tree.root, Path::new(""), code, &mut bytes)?;
    Ok(bytes)
}

fn walk(tree: &TreeView, src: &Path, rel: &Path, dest: Option<&Path>, bytes: &mut u64) -> Result<()> {
    let top = rel.as_os_str().is_empty();
    for entry in fs::read_dir(src).map_err(|e| Error::io("list", src, e))? {
        let entry = entry.map_err(|e| Error::io("list", src, e))?;
        let name = entry.file_name();
        if top && (name == ".git" || name == ".flor") {
            continue;
        }
        let (from, rel) = (entry.path(), rel.join(&name));
        let meta = fs::symlink_metadata(&from).map_err(|e| Error::io("inspect", &from, e))?;
        if !meta.is_dir() && tree.versioned.contains(&rel) {
            continue;
        }
        let to = dest.map(|d| d.join(&name));
        if meta.is_dir() {
            if let (Some(d), Some(to)) = (dest, &to) {
                if !make_dirs(d, Path::new(&name)).map_err(|e| Error::io("create", to, e))? {
                    continue; // the old version has a file there
                }
            }
            walk(tree, &from, &rel, to.as_deref(), bytes)?;
            continue;
        }
        if to.as_ref().is_some_and(|t| fs::symlink_metadata(t).is_ok()) {
            continue; // the old version's own file
        }
        if top && meta.file_type().is_symlink() {
            copy_top_link(tree, &from, &rel, to.as_deref(), bytes)?;
        } else {
            copy_one(&from, &meta, to.as_deref(), bytes)?;
        }
    }
    Ok(())
}

fn copy_top_link(tree: &TreeView, from: &Path, rel: &Path, to: Option<&Path>, bytes: &mut u64) -> Result<()> {
    let Ok(target) = from.canonicalize() else {
        return copy_one(from, &fs::symlink_metadata(from).map_err(|e| Error::io("inspect", from, e))?, to, bytes);
    };
    if tree.root.starts_with(&target) {
        return Ok(()); // a link to the project or above: nothing to copy
    }
    if let Ok(inside) = target.strip_prefix(&tree.root) {
        if let (Some(to), Some(code)) = (to, to.and_then(Path::parent)) {
            symlink(&code.join(inside), to)?;
        }
        return Ok(());
    }
    let meta = fs::metadata(&target).map_err(|e| Error::io("inspect", &target, e))?;
    if meta.is_dir() {
        if let Some(to) = to {
            fs::create_dir(to).map_err(|e| Error::io("create", to, e))?;
        }
        return walk(tree, &target, rel, to, bytes);
    }
    copy_one(&target, &meta, to, bytes)
}

fn copy_one(from: &Path, meta: &fs::Metadata, to: Option<&Path>, bytes: &mut u64) -> Result<()> {
    if meta.file_type().is_symlink() {
        if let Some(to) = to {
            let target = fs::read_link(from).map_err(|e| Error::io("read", from, e))?;
            symlink(&target, to)?;
        }
    } else if meta.is_file() {
        *bytes += meta.len();
        if let Some(to) = to {
            fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
        }
    }
    Ok(())
}

fn symlink(target: &Path, at: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, at).map_err(|e| Error::io("link", at, e))
    }
    #[cfg(not(unix))]
    {
        let _ = (target, at);
        Ok(())
    }
}

/// Copies the folder `from` to `to` (created), symlinks as symlinks.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| Error::io("create", to, e))?;
    for entry in fs::read_dir(from).map_err(|e| Error::io("list", from, e))? {
        let entry = entry.map_err(|e| Error::io("list", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).map_err(|e| Error::io("inspect", &src, e))?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            copy_one(&src, &meta, Some(&dst), &mut 0)?;
        }
    }
    Ok(())
}

/// Removes a folder and everything in it, also the folders overlayfs
/// leaves without permissions (its work folders); a missing one is fine.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            open_up(path);
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

/// Gives the owner back the work folders overlayfs left in segment folder
/// `seg` without permissions, so `rm -r` (and [`remove_tree`]) can remove
/// them once the segment ended.
pub(crate) fn unlock_work_dirs(seg: &Path) {
    open_up(&seg.join("work"));
    if let Ok(outside) = fs::read_dir(seg.join("outside")) {
        for layer in outside.flatten() {
            open_up(&layer.path().join("work"));
        }
    }
}

/// Gives the owner access to every folder below `dir` (no symlink followed).
fn open_up(dir: &Path) {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            open_up(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::create_dir_all(base.join("src")).unwrap();
        fs::write(base.join("src/a.py"), "").unwrap();
        fs::write(base.join("file"), "").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(base.join("src"), base.join("link")).unwrap();
        assert_eq!(lookup(base, Path::new("src/a.py")), Lookup::Present);
        assert_eq!(lookup(base, Path::new("src/b.py")), Lookup::Missing);
        assert_eq!(lookup(base, Path::new("new/b.py")), Lookup::Missing);
        assert_eq!(lookup(base, Path::new("file/b.py")), Lookup::Blocked);
        #[cfg(unix)]
        {
            assert_eq!(lookup(base, Path::new("link/a.py")), Lookup::Blocked);
            assert!(!make_dirs(base, Path::new("link/x")).unwrap());
            assert!(!base.join("src/x").exists());
        }
        assert!(make_dirs(base, Path::new("new/deep")).unwrap());
        assert!(base.join("new/deep").is_dir());
    }

    #[test]
    fn modes_parse_and_sizes_read() {
        assert_eq!("copy".parse::<IsolationMode>(), Ok(IsolationMode::Copy));
        assert!("cow".parse::<IsolationMode>().unwrap_err().contains("\"overlay\""));
        assert_eq!(human(3 * MIB / 2), "1.5 MiB");
        assert_eq!(human(12), "12 bytes");
    }
}
