//! Automatic capture of output: the lines a script prints (`print`,
//! `sys.stdout.write`, `sys.stderr`) and logs (`logging`) are recorded as
//! Output records named by their channel (`io::stdout`, `io::stderr`,
//! `io::log::<level>`), one per line, at the loop position where the line
//! ended.
//!
//! How: `flordb` sets the `write` attribute of the `sys.stdout` and
//! `sys.stderr` objects (an instance attribute, which `print` and every
//! Python-level write look up first) to a [`Hook`]: a C function that calls
//! the stream's own `write` first (the user's output never depends on
//! capture) and then hands the text to [`absorb`]. The streams stay the
//! objects they were (`sys.stdout is sys.__stdout__`, `fileno`, `isatty`,
//! tqdm and `faulthandler` unchanged). A stream that refuses the attribute
//! gets a Python proxy instead (`flordb._CaptureProxy`), which calls
//! [`capture_text`].
//!
//! The hot path stays on the training thread for about a hundred
//! nanoseconds: the text is split into lines in [`Fast`]'s partial-line
//! buffers, and each line is appended, with a [`Step::Output`], to the
//! deferred steps (see [`crate::steps`]), so that it is recorded in order
//! with the steps before it, at the loop position they leave. The worker
//! (or the next [`state()`](crate::state)) hands it to the engine
//! ([`State::record_output`]), which drops a repeat of the previous line at
//! the same position.
//!
//! flor's own lines are not captured twice: `flor.log`'s printed line goes
//! to the stream's own `write` (batched) or is written while [`Mute`] holds
//! (a thread-local flag), as are flor's progress bar and notices; a
//! `logging` record is captured from its dispatch (with its level and
//! logger name) and the streams are muted while its handlers run.

use std::cell::Cell;
use std::sync::MutexGuard;

use flor_core::Recorder;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::steps::{fast, submit, Fast, Step, Stream, Taken};
use crate::{FlorError, State};

/// The channel of lines written to `sys.stdout`.
pub(crate) const STDOUT: &str = "io::stdout";
/// The channel of lines written to `sys.stderr`.
pub(crate) const STDERR: &str = "io::stderr";
/// The prefix of `logging` channels (`io::log::warning`).
pub(crate) const LOG_PREFIX: &str = "io::log::";
/// Appended to a line cut at `max_line` characters (FlorDB's marker, so
/// that both packages store the same rows).
const TRUNCATED: &str = " ...[flor: line truncated]";
/// `max_line` by default (characters).
pub(crate) const DEFAULT_MAX_LINE: usize = 4096;
/// `max_records` by default (lines per run).
pub(crate) const DEFAULT_MAX_RECORDS: u64 = 10_000;
/// The largest `max_line` accepted (characters; a record line holds at
/// most 64 MiB).
pub(crate) const MAX_LINE_LIMIT: usize = 1 << 20;

/// Capture's settings and per-run counters (in [`Fast`](crate::steps::Fast),
/// under its lock).
pub(crate) struct Capture {
    /// The streams are hooked: this process is a script run.
    hooked: bool,
    /// `enabled` (config, `flor.set_capture`).
    enabled: bool,
    /// `max_line`: characters kept of a line.
    max_line: usize,
    /// `max_records`: lines recorded per run.
    max_records: u64,
    /// Lines recorded in this run.
    count: u64,
    /// The notice that `max_records` was reached was printed in this run.
    noticed: bool,
    /// Starting a run for a captured line failed or was declined: lines
    /// are not recorded until a run starts some other way.
    declined: bool,
    /// The unfinished line of `sys.stdout` and of `sys.stderr`.
    partial: [String; 2],
    /// Lines written while no run is active are held, not recorded (they
    /// start no run): the script read flor's records or ended a run.
    hold: bool,
    /// The held lines ([`Step::Output`]s into `held_text`), recorded when
    /// a run starts.
    held: Vec<Step>,
    /// Their text.
    held_text: String,
}

impl Capture {
    /// Off, with the default limits.
    pub(crate) const fn new() -> Capture {
        Capture {
            hooked: false,
            enabled: true,
            max_line: DEFAULT_MAX_LINE,
            max_records: DEFAULT_MAX_RECORDS,
            count: 0,
            noticed: false,
            declined: false,
            partial: [String::new(), String::new()],
            hold: false,
            held: Vec::new(),
            held_text: String::new(),
        }
    }

    /// Whether lines are captured now.
    fn on(&self) -> bool {
        self.hooked && self.enabled
    }

    /// In a forked child: nothing is captured (the hooks pass writes
    /// through).
    pub(crate) fn disable_in_child(&mut self) {
        self.hooked = false;
    }
}

impl crate::steps::Fast {
    /// A new run starts: capture's counters from zero, and the held lines
    /// are its first.
    pub(crate) fn new_run(&mut self) {
        let cap = &mut self.cap;
        cap.noticed = false;
        cap.declined = false;
        cap.count = cap.held.len() as u64;
        let base = self.text.len();
        self.text.push_str(&cap.held_text);
        cap.held_text.clear();
        for step in cap.held.drain(..) {
            if let Step::Output { stream, name_len, start, len } = step {
                let Ok(start) = u32::try_from(start as usize + base) else { continue };
                self.steps.push(Step::Output { stream, name_len, start, len });
            }
        }
    }
}

thread_local! {
    /// Set while flor writes its own lines (or a `logging` record is
    /// dispatched) on this thread: writes then pass through uncaptured.
    static MUTED: Cell<bool> = const { Cell::new(false) };
}

/// Mutes capture on this thread while it lives (restoring what was before).
pub(crate) struct Mute(bool);

impl Mute {
    /// Mutes capture on this thread.
    pub(crate) fn new() -> Mute {
        Mute(MUTED.replace(true))
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        MUTED.set(self.0);
    }
}

/// The last line recorded in a run, to drop a repeat at the same place.
pub(crate) struct LastOutput {
    /// Whether the fields hold a line.
    set: bool,
    /// Its channel.
    name: String,
    /// Its loop context.
    ctx: Option<u32>,
    /// Its text.
    text: String,
}

impl LastOutput {
    /// No line yet.
    pub(crate) const fn new() -> LastOutput {
        LastOutput { set: false, name: String::new(), ctx: None, text: String::new() }
    }

    /// Forgets the last line (a new run).
    pub(crate) fn clear(&mut self) {
        self.set = false;
    }
}

impl State {
    /// Records a captured `line` on channel `name` at the recorder's current
    /// position, unless it repeats the previous one there.
    pub(crate) fn record_output(&mut self, rec: &mut Recorder, name: &str, line: &str) {
        let ctx = rec.current_ctx();
        let last = &mut self.last_output;
        if last.set && last.ctx == ctx && last.name == name && last.text == line {
            return;
        }
        last.set = true;
        last.ctx = ctx;
        last.name.clear();
        last.name.push_str(name);
        last.text.clear();
        last.text.push_str(line);
        rec.output(name, line);
        if self.output_only {
            self.kept_output.push(name, line);
        }
    }
}

/// What handling a line asks of the caller once [`Fast`]'s lock is released.
#[derive(Default)]
struct After {
    /// The batch of steps is full: submit it.
    batch: Option<Taken>,
    /// `max_records` was just reached: print the notice.
    notice: Option<u64>,
}

/// The line as recorded: the last repaint after a `\r`, no line ending or
/// trailing whitespace; `None` when nothing is left.
fn clean(raw: &str) -> Option<&str> {
    let line = raw.strip_suffix('\r').unwrap_or(raw);
    let line = match line.rfind('\r') {
        Some(at) => &line[at + 1..],
        None => line,
    };
    let line = line.trim_end();
    (!line.is_empty()).then_some(line)
}

impl crate::steps::Fast {
    /// Takes one complete line of channel `stream` (`name` for a named
    /// one): cleaned, cut at `max_line`, counted against `max_records`, and
    /// appended to the steps.
    fn line(&mut self, stream: Stream, name: &str, raw: &str, after: &mut After) {
        let Some(line) = clean(raw) else { return };
        let held = !self.live;
        let cap = &mut self.cap;
        if cap.count >= cap.max_records {
            if !cap.noticed {
                cap.noticed = true;
                after.notice = Some(cap.max_records);
            }
            return;
        }
        cap.count += 1;
        let (kept, cut) = if line.len() > cap.max_line {
            match line.char_indices().nth(cap.max_line) {
                Some((at, _)) => (&line[..at], true),
                None => (line, false),
            }
        } else {
            (line, false)
        };
        let (steps, text) = if held { (&mut cap.held, &mut cap.held_text) } else { (&mut self.steps, &mut self.text) };
        let start = text.len();
        text.push_str(name);
        text.push_str(kept);
        if cut {
            text.push_str(TRUNCATED);
        }
        let (Ok(start), Ok(len), Ok(name_len)) =
            (u32::try_from(start), u32::try_from(text.len() - start), u16::try_from(name.len()))
        else {
            text.truncate(start);
            return;
        };
        steps.push(Step::Output { stream, name_len, start, len });
        if !held && self.full() && after.batch.is_none() {
            after.batch = Some(self.take());
        }
    }

    /// Splits `text`, written to `stream` (stdout or stderr), into lines;
    /// the unfinished end waits in the stream's partial line.
    fn split(&mut self, stream: Stream, text: &str, after: &mut After) {
        let slot = usize::from(stream == Stream::Stderr);
        let mut rest = text;
        while let Some(at) = rest.find('\n') {
            let piece = &rest[..at];
            rest = &rest[at + 1..];
            if self.cap.partial[slot].is_empty() {
                self.line(stream, "", piece, after);
            } else {
                let mut whole = std::mem::take(&mut self.cap.partial[slot]);
                whole.push_str(piece);
                self.line(stream, "", &whole, after);
                whole.clear();
                self.cap.partial[slot] = whole;
            }
        }
        if !rest.is_empty() {
            let max_line = self.cap.max_line;
            let partial = &mut self.cap.partial[slot];
            partial.push_str(rest);
            clamp(partial, max_line);
        }
    }
}

/// Keeps an unfinished line bounded: only the last repaint after a `\r`
/// (a progress bar that never ends its line), at most `max_line`
/// characters and one more (so that the cut still shows).
fn clamp(partial: &mut String, max_line: usize) {
    let body = partial.strip_suffix('\r').unwrap_or(partial);
    if let Some(at) = body.rfind('\r') {
        partial.drain(..=at);
    }
    if partial.len() > max_line.saturating_add(1) {
        if let Some((at, _)) = partial.char_indices().nth(max_line.saturating_add(1)) {
            partial.truncate(at);
        }
    }
}

/// Whether `text` holds something a line would keep before its last
/// newline (a line worth starting a run for).
fn has_line(partial: &str, text: &str) -> bool {
    match text.rfind('\n') {
        Some(at) => !partial.trim().is_empty() || !text[..at].trim().is_empty(),
        None => false,
    }
}

/// Captures `text` written to `stream` (stdout or stderr) by this thread,
/// unless muted. Never fails: capture must not break the user's output.
pub(crate) fn absorb(py: Python<'_>, stream: Stream, text: &Bound<'_, PyAny>) {
    if MUTED.get() {
        return;
    }
    // `print`'s line end is CPython's one-character string "\n" (a
    // singleton): no conversion for it.
    let newline = NEWLINE.get_or_init(py, || PyString::new(py, "\n").unbind());
    if text.is(newline.bind(py)) {
        absorb_str(py, stream, "\n");
        return;
    }
    let Ok(text) = text.cast::<PyString>() else { return };
    #[cfg(not(windows))]
    {
        let mut len: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: `text` is a live `str`; the result is null (with an
        // exception set) or points to its UTF-8 bytes, `len` of them, which
        // live as long as the object.
        let data = unsafe { PyUnicode_AsUTF8AndSize(text.as_ptr(), &mut len) };
        match usize::try_from(len) {
            Ok(len) if !data.is_null() => {
                // SAFETY: see above: `len` valid UTF-8 bytes at `data`.
                let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
                if let Ok(s) = std::str::from_utf8(bytes) {
                    absorb_str(py, stream, s);
                }
            }
            _ => drop(PyErr::take(py)), // a lone surrogate: not captured
        }
    }
    #[cfg(windows)]
    if let Ok(text) = text.to_cow() {
        absorb_str(py, stream, &text);
    }
}

#[cfg(not(windows))]
extern "C" {
    /// CPython's UTF-8 view of a `str`, cached in the object (no copy for
    /// ASCII text). Part of the stable ABI from 3.10 and exported by every
    /// CPython 3 (the module's abi3-py39 declarations leave it out): the
    /// loader resolves it against the running interpreter, except on
    /// Windows, where the module links `python3.dll` (there `to_cow`).
    fn PyUnicode_AsUTF8AndSize(
        unicode: *mut pyo3::ffi::PyObject,
        size: *mut pyo3::ffi::Py_ssize_t,
    ) -> *const std::ffi::c_char;
}

/// The string `"\n"` (see [`absorb`]).
static NEWLINE: pyo3::sync::PyOnceLock<Py<PyString>> = pyo3::sync::PyOnceLock::new();

/// Starts the run a first captured line belongs to ([`begin_run`], the
/// state's lock released meanwhile); the state again when the run is live
/// and captures (`None`: the line is not kept).
fn start_run(py: Python<'_>, f: MutexGuard<'static, Fast>) -> Option<MutexGuard<'static, Fast>> {
    drop(f);
    begin_run(py);
    let f = fast();
    (f.live && f.cap.on()).then_some(f)
}

/// [`absorb`] of text.
fn absorb_str(py: Python<'_>, stream: Stream, text: &str) {
    let mut f = fast();
    if !f.cap.on() {
        return;
    }
    if !f.live && !f.cap.hold {
        let slot = usize::from(stream == Stream::Stderr);
        if f.cap.declined || !has_line(&f.cap.partial[slot], text) {
            if !f.cap.declined {
                let max_line = f.cap.max_line;
                f.cap.partial[slot].push_str(text);
                clamp(&mut f.cap.partial[slot], max_line);
            }
            return;
        }
        let Some(started) = start_run(py, f) else { return };
        f = started;
    }
    let mut after = After::default();
    f.split(stream, text, &mut after);
    drop(f);
    finish(py, after);
}

/// Submits a full batch and prints the `max_records` notice (both outside
/// [`Fast`]'s lock).
fn finish(py: Python<'_>, after: After) {
    if let Some(batch) = after.batch {
        // An error of applying steps is kept for the run's next call.
        let _ = submit(py, batch);
    }
    if let Some(max) = after.notice {
        let _mute = Mute::new();
        let text = format!(
            "flor: this run has captured {max} lines of output, the most it keeps; later lines are shown but not \
             recorded (raise the limit with flor.set_capture(max_records=...) or `max_records` under [capture] in \
             .flor/config.toml; turn capture off with flor.set_capture(False))\n"
        );
        let _ = py.import("sys").and_then(|sys| sys.getattr("stderr")?.call_method1("write", (text,)).map(drop));
    }
}

/// Starts the run a captured line belongs to (`flordb._capture_begin`,
/// which declines where no run should start); a failure is reported there,
/// and declines too.
fn begin_run(py: Python<'_>) {
    let _mute = Mute::new();
    let started = py
        .import("flordb")
        .and_then(|m| m.getattr("_capture_begin")?.call0())
        .and_then(|r| r.is_truthy())
        .unwrap_or(false);
    if started {
        crate::state().output_only = true;
    } else {
        fast().cap.declined = true;
    }
}

/// The lines a run recorded while it held nothing but captured output
/// (channel and text of each, in one buffer).
#[derive(Default)]
pub(crate) struct Kept {
    /// Channel and line, one after the other, for every line.
    text: String,
    /// Where each line's channel and line end in `text`.
    ends: Vec<(u32, u32)>,
}

impl Kept {
    /// None.
    pub(crate) const fn new() -> Kept {
        Kept { text: String::new(), ends: Vec::new() }
    }

    /// Keeps one line.
    fn push(&mut self, name: &str, line: &str) {
        self.text.push_str(name);
        let Ok(name_end) = u32::try_from(self.text.len()) else { return };
        self.text.push_str(line);
        let Ok(end) = u32::try_from(self.text.len()) else { return };
        self.ends.push((name_end, end));
    }

    /// Forgets every line.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// The lines, (channel, text).
    fn lines(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.ends.iter().filter_map(move |&(n, e)| {
            let (n, e) = (n as usize, e as usize);
            let out = self.text.get(start..n).zip(self.text.get(n..e));
            start = e;
            out
        })
    }
}

/// Holds `kept` again: the lines of a run discarded by
/// [`capture_release`], recorded in the next run if one starts.
pub(crate) fn hold_again(kept: Kept) {
    let mut f = fast();
    f.cap.hold = true;
    let cap = &mut f.cap;
    for (name, line) in kept.lines() {
        let stream = match name {
            STDOUT => Stream::Stdout,
            STDERR => Stream::Stderr,
            _ => Stream::Named,
        };
        let name = if stream == Stream::Named { name } else { "" };
        let start = cap.held_text.len();
        cap.held_text.push_str(name);
        cap.held_text.push_str(line);
        let (Ok(start), Ok(len), Ok(name_len)) =
            (u32::try_from(start), u32::try_from(cap.held_text.len() - start), u16::try_from(name.len()))
        else {
            cap.held_text.truncate(start);
            continue;
        };
        cap.held.push(Step::Output { stream, name_len, start, len });
    }
}

/// From now on, lines written while no run is active are held instead of
/// starting one (the script read flor's records, or ended a run).
#[pyfunction]
pub(crate) fn capture_hold() {
    fast().cap.hold = true;
}

/// The script reads flor's records: a run that captured output started and
/// that has recorded nothing else ends here, discarded (it would show in
/// what the script reads), its lines held for a run that starts later.
/// Returns whether it did.
#[pyfunction]
pub(crate) fn capture_release(py: Python<'_>) -> PyResult<bool> {
    capture_hold();
    let only = {
        let st = crate::state();
        st.run.is_some() && st.output_only
    };
    if !only {
        return Ok(false);
    }
    crate::run::end_run(py, false, true)?;
    Ok(true)
}

/// Records the unfinished lines as lines (the run is ending).
pub(crate) fn drain(py: Python<'_>) {
    let mut f = fast();
    if !f.live || !f.cap.on() {
        return;
    }
    let mut after = After::default();
    for (slot, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
        let partial = std::mem::take(&mut f.cap.partial[slot]);
        if !partial.is_empty() {
            f.line(stream, "", &partial, &mut after);
        }
    }
    drop(f);
    finish(py, after);
}

/// A hooked stream's `write`: [`Hook::write`], then [`absorb`].
#[pyclass(module = "flordb._flor", frozen)]
pub(crate) struct Hook {
    /// Which channel the stream is.
    stream: Stream,
    /// The stream.
    target: Py<PyAny>,
    /// Its own `write`.
    write: Py<PyAny>,
    /// The `write` instance attribute the stream had before (restored when
    /// capture ends), if any.
    prior: Option<Py<PyAny>>,
}

/// The hooked streams (at most one per channel), with the function set as
/// their `write`.
static HOOKS: std::sync::Mutex<Vec<(Py<Hook>, Py<PyAny>)>> = std::sync::Mutex::new(Vec::new());

/// Locks [`HOOKS`].
fn hooks() -> std::sync::MutexGuard<'static, Vec<(Py<Hook>, Py<PyAny>)>> {
    HOOKS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The hook's C function: `METH_O`, its `self` the [`Hook`].
static mut HOOK_DEF: pyo3::ffi::PyMethodDef = pyo3::ffi::PyMethodDef {
    ml_name: c"write".as_ptr(),
    ml_meth: pyo3::ffi::PyMethodDefPointer { PyCFunction: hook_write },
    ml_flags: pyo3::ffi::METH_O,
    ml_doc: c"write(text)\n--\n\nWrites `text` to the stream, then lets flor capture its lines.".as_ptr(),
};

/// [`HOOK_DEF`]'s function: the stream's own `write(text)` (its result or
/// error is the call's), then [`absorb`]; a Rust panic is raised as
/// Python's `PanicException`.
unsafe extern "C" fn hook_write(
    slf: *mut pyo3::ffi::PyObject,
    text: *mut pyo3::ffi::PyObject,
) -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls C functions with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `slf` is the `Hook` the function was made with (see
        // `hook`); `text` is a borrowed reference.
        let hook = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<Hook>() };
        let text = unsafe { Bound::from_borrowed_ptr(py, text) };
        let hook = hook.get();
        let written = crate::stdout::call_write(py, &hook.write, &text)?;
        absorb(py, hook.stream, &text);
        Ok(written.into_ptr())
    }));
    let e = match outcome {
        Ok(Ok(result)) => return result,
        Ok(Err(e)) => e,
        Err(_) => pyo3::panic::PanicException::new_err("flor's output capture panicked"),
    };
    e.restore(py);
    std::ptr::null_mut()
}

/// `stream` as a channel number (0: stdout, 1: stderr).
fn stream_of(which: u8) -> PyResult<Stream> {
    match which {
        0 => Ok(Stream::Stdout),
        1 => Ok(Stream::Stderr),
        _ => Err(FlorError::new_err(format!("capture: no stream {which} (0: stdout, 1: stderr)"))),
    }
}

/// Sets `target.write` to a hook capturing channel `which` (0: stdout, 1:
/// stderr) and turns capture on. Returns whether the stream took the
/// attribute (if not, the caller puts a proxy in its place).
#[pyfunction]
pub(crate) fn capture_hook(py: Python<'_>, target: &Bound<'_, PyAny>, which: u8) -> PyResult<bool> {
    let stream = stream_of(which)?;
    let write = target.getattr("write")?;
    let prior = match target.getattr("__dict__") {
        Ok(d) => d.get_item("write").ok(),
        Err(_) => return Ok(false),
    };
    let hook = Bound::new(
        py,
        Hook { stream, target: target.clone().unbind(), write: write.unbind(), prior: prior.map(Bound::unbind) },
    )?;
    // SAFETY: `HOOK_DEF` lives for the process and CPython only reads it;
    // `hook` is a live object the function keeps a reference to; the result
    // is a new reference or null.
    let func = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyCFunction_NewEx(&raw mut HOOK_DEF, hook.as_ptr(), std::ptr::null_mut()),
        )
    }?;
    if target.setattr("write", &func).is_err() {
        return Ok(false);
    }
    hooks().push((hook.unbind(), func.unbind()));
    fast().cap.hooked = true;
    Ok(true)
}

/// Turns capture on for streams flor could not hook (a proxy calls
/// [`capture_text`]).
#[pyfunction]
pub(crate) fn capture_on() {
    fast().cap.hooked = true;
}

/// Ends capture: the hooked streams get their own `write` back; lines are
/// no longer captured in this process.
#[pyfunction]
pub(crate) fn capture_off(py: Python<'_>) {
    let taken = std::mem::take(&mut *hooks());
    {
        let mut f = fast();
        f.cap.hooked = false;
        f.cap.partial = [String::new(), String::new()];
    }
    for (hook, func) in taken {
        let hook = hook.get();
        let target = hook.target.bind(py);
        // Only a stream whose `write` is still ours (not set again since).
        let ours = target.getattr("write").is_ok_and(|w| w.is(func.bind(py)));
        if !ours {
            continue;
        }
        let _ = match &hook.prior {
            Some(p) => target.setattr("write", p.bind(py)),
            None => target.delattr("write"),
        };
    }
}

/// The own `write` of hooked stream `target` (`None`: not hooked).
pub(crate) fn own_write(py: Python<'_>, target: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    hooks().iter().find(|(h, _)| h.get().target.is(target)).map(|(h, _)| h.get().write.clone_ref(py))
}

/// The hook function set as hooked stream `target`'s `write` (`None`: not
/// hooked).
pub(crate) fn hook_of(py: Python<'_>, target: &Bound<'_, PyAny>) -> Option<(Stream, Py<PyAny>)> {
    hooks().iter().find(|(h, _)| h.get().target.is(target)).map(|(h, f)| (h.get().stream, f.clone_ref(py)))
}

/// `stream`'s own `write`, bypassing capture (flor's progress bar writes
/// through it); `None` when the stream is not hooked.
#[pyfunction]
pub(crate) fn capture_own_write(py: Python<'_>, stream: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    own_write(py, stream)
}

/// Captures `text` written to channel `which` (0: stdout, 1: stderr), for
/// a proxy stream (see the module comment).
#[pyfunction]
pub(crate) fn capture_text(py: Python<'_>, which: u8, text: &Bound<'_, PyAny>) -> PyResult<()> {
    absorb(py, stream_of(which)?, text);
    Ok(())
}

/// Captures the lines of a `logging` record on channel
/// `io::log::<level>` (the message already split into lines).
#[pyfunction]
pub(crate) fn capture_log(py: Python<'_>, level: &str, lines: Vec<String>) {
    let name = format!("{LOG_PREFIX}{}", level.to_lowercase());
    let mut f = fast();
    if !f.cap.on() {
        return;
    }
    if !f.live && !f.cap.hold {
        if f.cap.declined || lines.iter().all(|l| l.trim().is_empty()) {
            return;
        }
        let Some(started) = start_run(py, f) else { return };
        f = started;
    }
    let mut after = After::default();
    for line in &lines {
        f.line(Stream::Named, &name, line, &mut after);
    }
    drop(f);
    finish(py, after);
}

/// Mutes (`True`) or unmutes capture on this thread; returns whether it
/// was muted.
#[pyfunction]
pub(crate) fn capture_mute(on: bool) -> bool {
    MUTED.replace(on)
}

/// Sets capture's settings (`None`: unchanged): `enabled`, `max_line`
/// (characters kept of a line, 1 to 1 Mi) and `max_records` (lines per run).
#[pyfunction]
#[pyo3(signature = (enabled=None, max_line=None, max_records=None))]
pub(crate) fn capture_set(enabled: Option<bool>, max_line: Option<i64>, max_records: Option<i64>) -> PyResult<()> {
    let max_line = max_line
        .map(|n| {
            usize::try_from(n).ok().filter(|n| (1..=MAX_LINE_LIMIT).contains(n)).ok_or_else(|| {
                FlorError::new_err(format!(
                    "capture: max_line must be a whole number from 1 to {MAX_LINE_LIMIT}, got {n}"
                ))
            })
        })
        .transpose()?;
    let max_records = max_records
        .map(|n| {
            u64::try_from(n).map_err(|_| FlorError::new_err(format!("capture: max_records must be 0 or more, got {n}")))
        })
        .transpose()?;
    let mut f = fast();
    if let Some(e) = enabled {
        f.cap.enabled = e;
    }
    if let Some(n) = max_line {
        f.cap.max_line = n;
    }
    if let Some(n) = max_records {
        f.cap.max_records = n;
    }
    Ok(())
}

/// Capture's settings: `(active, enabled, max_line, max_records)`
/// (`active`: the streams are hooked).
#[pyfunction]
pub(crate) fn capture_settings() -> (bool, bool, usize, u64) {
    let f = fast();
    (f.cap.hooked, f.cap.enabled, f.cap.max_line, f.cap.max_records)
}

/// `[capture]` of the project containing `cwd`: `(enabled, max_line,
/// max_records)`, each `None` when not set (or `cwd` is in no project).
#[pyfunction]
pub(crate) fn capture_config(py: Python<'_>, cwd: String) -> PyResult<(Option<bool>, Option<u64>, Option<u64>)> {
    let config = py.detach(|| flor::capture_config(std::path::Path::new(&cwd))).map_err(crate::err)?;
    Ok((config.enabled, config.max_line, config.max_records))
}
