//! Linux: a replay segment's private view of the project.
//!
//! The worker process enters a new user and mount namespace (no privilege
//! needed on Linux 5.11 and later) and mounts, over the project root, an
//! overlay whose only lower layer is the user's tree and whose upper layer
//! is the segment's own folder under `.flor/replay/`, pre-filled with the
//! old code version and with whiteouts that hide files the old version did
//! not have. Reads fall through to the user's files; every write — new
//! files, overwrites, appends, truncations, renames, deletions — lands in
//! the upper layer. The executor's own folder and the checkpoint store are
//! bound back over the view so the worker's records reach the real files;
//! folders outside the project that top-level symlinks lead to get an
//! overlay of their own. Everything is prepared before `fork`: entering the
//! view ([`View::enter`]) only makes system calls, as code between `fork`
//! and `exec` must.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The kernel's page-sized limit on mount options, with a margin.
const MAX_OPTIONS: usize = 4000;

/// One overlay: a lower layer, the private upper layer and its work folder,
/// mounted at `target`.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// What is read.
    pub(crate) lower: PathBuf,
    /// Where writes land.
    pub(crate) upper: PathBuf,
    /// Overlayfs' scratch folder (same filesystem as `upper`).
    pub(crate) work: PathBuf,
    /// Where the view appears.
    pub(crate) target: PathBuf,
}

/// What a view is made of (paths; [`View::build`] turns it into calls).
#[derive(Debug, Clone)]
pub(crate) struct ViewSpec {
    /// The project root (canonical): the view is mounted over it.
    pub(crate) root: PathBuf,
    /// The overlay of the project, mounted at a staging folder first.
    pub(crate) main: Layer,
    /// Real folders inside the project bound over the view (the
    /// executor's folder, the checkpoint store), so the worker's records
    /// reach them.
    pub(crate) real: Vec<PathBuf>,
    /// Overlays over folders outside the project that top-level symlinks
    /// lead to (mounted at their own place).
    pub(crate) outside: Vec<Layer>,
    /// The working folder of the process, inside the view.
    pub(crate) cwd: PathBuf,
}

/// One mount call, prepared.
#[derive(Debug)]
enum Mount {
    Overlay { target: CString, options: CString },
    Bind { source: CString, target: CString, recursive: bool },
}

/// A view prepared for a process to enter between `fork` and `exec`.
#[derive(Debug)]
pub(crate) struct View {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    mounts: Vec<Mount>,
    cwd: CString,
    /// What each step does, for messages (steps: 0 unshare, 1-3 id maps,
    /// 4 private mounts, then the mounts, then the working folder).
    steps: Vec<String>,
}

/// The step that failed and its `errno`.
#[derive(Debug, Clone, Copy)]
struct Failure {
    step: usize,
    errno: i32,
}

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{} holds a NUL byte", path.display()))
}

/// A path as an overlay option value (`,` `:` `\` escaped).
fn escaped(path: &Path) -> Result<String, String> {
    let text = path.to_str().ok_or_else(|| format!("{} is not UTF-8, which overlay options need", path.display()))?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

/// An overlay mount of `layer`: extended attributes in the `user.`
/// namespace (the only ones a user namespace may write) and `volatile` (no
/// sync of the upper layer's filesystem when the namespace goes: what a
/// replay writes is scratch, and syncing a busy disk would delay the end
/// of every segment).
fn overlay(layer: &Layer) -> Result<(Mount, String), String> {
    let options = format!(
        "userxattr,volatile,lowerdir={},upperdir={},workdir={}",
        escaped(&layer.lower)?,
        escaped(&layer.upper)?,
        escaped(&layer.work)?
    );
    if options.len() > MAX_OPTIONS {
        return Err(format!("the overlay options for {} are too long for the kernel", layer.target.display()));
    }
    let what = format!("mount an overlay of {} on {}", layer.lower.display(), layer.target.display());
    let options = CString::new(options).map_err(|_| "a path holds a NUL byte".to_owned())?;
    Ok((Mount::Overlay { target: c_path(&layer.target)?, options }, what))
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(Mount, String), String> {
    let what = format!("bind {} onto {}", source.display(), target.display());
    Ok((Mount::Bind { source: c_path(source)?, target: c_path(target)?, recursive }, what))
}

impl View {
    /// Prepares `spec`'s calls. `Err`: why these paths cannot make a view.
    pub(crate) fn build(spec: &ViewSpec) -> Result<View, String> {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut steps = vec![
            "create a user and mount namespace".to_owned(),
            "deny setgroups in it".to_owned(),
            "map the user id into it".to_owned(),
            "map the group id into it".to_owned(),
            "make its mounts private".to_owned(),
        ];
        let staging = &spec.main.target;
        let mut planned = vec![overlay(&spec.main)?];
        let mut real: Vec<&PathBuf> = spec.real.iter().filter(|p| p.starts_with(&spec.root) && p.is_dir()).collect();
        real.sort_by_key(|p| p.components().count());
        for p in real {
            let rel = p.strip_prefix(&spec.root).map_err(|_| format!("{} is outside the project", p.display()))?;
            planned.push(bind(p, &staging.join(rel), false)?);
        }
        for layer in &spec.outside {
            planned.push(overlay(layer)?);
        }
        planned.push(bind(staging, &spec.root, true)?);
        let mut mounts = Vec::with_capacity(planned.len());
        for (m, what) in planned {
            mounts.push(m);
            steps.push(what);
        }
        steps.push(format!("enter {}", spec.cwd.display()));
        Ok(View {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            mounts,
            cwd: c_path(&spec.cwd)?,
            steps,
        })
    }

    /// Enters the view: system calls only, no allocation (this runs in a
    /// forked child of a threaded process).
    fn enter(&self) -> Result<(), Failure> {
        let fail = |step: usize| Failure { step, errno: errno() };
        // SAFETY: plain system calls on NUL-terminated strings this view
        // owns; nothing here allocates or takes a lock.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(fail(0));
            }
            if !write_file(c"/proc/self/setgroups", b"deny") {
                return Err(fail(1));
            }
            if !write_file(c"/proc/self/uid_map", &self.uid_map) {
                return Err(fail(2));
            }
            if !write_file(c"/proc/self/gid_map", &self.gid_map) {
                return Err(fail(3));
            }
            let none = std::ptr::null();
            if libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(fail(4));
            }
            for (i, m) in self.mounts.iter().enumerate() {
                let rc = match m {
                    Mount::Overlay { target, options } => libc::mount(
                        c"overlay".as_ptr(),
                        target.as_ptr(),
                        c"overlay".as_ptr(),
                        0,
                        options.as_ptr().cast(),
                    ),
                    Mount::Bind { source, target, recursive } => {
                        let flags = libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 };
                        libc::mount(source.as_ptr(), target.as_ptr(), none, flags, std::ptr::null())
                    }
                };
                if rc != 0 {
                    return Err(fail(5 + i));
                }
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                return Err(fail(5 + self.mounts.len()));
            }
        }
        Ok(())
    }

    /// Makes `cmd`'s process enter the view before it executes (its
    /// working folder is the view's; `Command::current_dir` would apply
    /// before the mounts).
    pub(crate) fn apply(self: &Arc<View>, cmd: &mut Command) {
        let view = Arc::clone(self);
        // SAFETY: the closure only makes system calls on memory the view
        // already owns (see `enter`).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                view.enter().map_err(|f| std::io::Error::from_raw_os_error(f.errno))
            });
        }
    }

    /// Enters the view in a throw-away child process: `Err` says which
    /// step the kernel refused and why.
    pub(crate) fn probe(&self) -> Result<(), String> {
        let mut fds = [0i32; 2];
        // SAFETY: fork's child only calls `enter` (system calls) and
        // `_exit`; the pipe carries its failure back.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(format!("cannot create a pipe: {}", std::io::Error::last_os_error()));
            }
            let pid = libc::fork();
            if pid == 0 {
                libc::close(fds[0]);
                let code = match self.enter() {
                    Ok(()) => 0,
                    Err(f) => {
                        let mut buf = [0u8; 16];
                        buf[..8].copy_from_slice(&(f.step as u64).to_le_bytes());
                        buf[8..12].copy_from_slice(&f.errno.to_le_bytes());
                        libc::write(fds[1], buf.as_ptr().cast(), buf.len());
                        1
                    }
                };
                libc::_exit(code);
            }
            libc::close(fds[1]);
            if pid < 0 {
                libc::close(fds[0]);
                return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
            }
            let mut buf = [0u8; 16];
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            libc::close(fds[0]);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0 && errno() == libc::EINTR {}
            if n == 16 {
                let step = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default()) as usize;
                let errno = i32::from_le_bytes(buf[8..12].try_into().unwrap_or_default());
                let what = self.steps.get(step).map_or("set up the view", String::as_str);
                return Err(format!("cannot {what}: {}", std::io::Error::from_raw_os_error(errno)));
            }
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                return Err(format!("the probe process ended with status {status}"));
            }
        }
        Ok(())
    }
}

fn errno() -> i32 {
    // SAFETY: errno is thread-local and always readable.
    unsafe { *libc::__errno_location() }
}

/// Writes `bytes` to `path` with system calls only.
unsafe fn write_file(path: &CStr, bytes: &[u8]) -> bool {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    libc::close(fd);
    n == bytes.len() as isize
}

/// Creates an overlay whiteout (a 0/0 character device) at `path`: the
/// lower layer's file of that name is hidden.
pub(crate) fn whiteout(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: mknod on a NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The mount points strictly inside `root` (from `/proc/self/mountinfo`):
/// an unprivileged overlay cannot take a folder holding them as its lower
/// layer (the kernel will not reveal what they cover).
pub(crate) fn mounts_inside(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read("/proc/self/mountinfo") else { return Vec::new() };
    let mut found: Vec<PathBuf> = text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(field))))
        .filter(|p| p != root && p.starts_with(root))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal =
            field.get(i + 1..i + 4).filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = u16::from(d[0] - b'0') * 64 + u16::from(d[1] - b'0') * 8 + u16::from(d[2] - b'0');
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_escape_the_separators() {
        assert_eq!(escaped(Path::new("/a,b:c\\d")).unwrap(), "/a\\,b\\:c\\\\d");
        assert_eq!(unescape_octal(b"/mnt/my\\040data\\134x"), b"/mnt/my data\\x");
    }
}
