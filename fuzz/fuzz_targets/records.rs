//! A record file from anywhere (a crashed process, a teammate's pushed run,
//! a damaged disk): the input is the whole file. Checks what the parser
//! promises (whole lines only, every line accounted for, what it reads
//! re-encodes to itself), then ingests the file as a live run of a real
//! project (`Project::sync` into SQLite) and reads it back through the
//! store's views and the pivot.

#![no_main]

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Mutex;

use flor::core::record::{parse_lines, LineEncoder, Parsed, Source};
use flor::Project;
use flor_store::SqliteStore;
use libfuzzer_sys::fuzz_target;

/// A git repository with a flor project, made once per process.
struct Fixture {
    _dir: tempfile::TempDir,
    project: Project,
    file: PathBuf,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let ok = std::process::Command::new("git").arg("init").arg("-q").arg(dir.path()).status();
    assert!(ok.is_ok_and(|s| s.success()), "git init failed");
    let store = SqliteStore::open_in_memory().expect("an in-memory SQLite store");
    let project = Project::builder(dir.path()).store(Box::new(store)).open().expect("the project opens");
    let file = project.runs_dir().join("2026-01-02T03-04-05.000006.jsonl");
    Fixture { _dir: dir, project, file }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_lines(data, 1);
    check_parse(data, &parsed);
    check_reencode(&parsed);

    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    let fx = guard.get_or_insert_with(fixture);
    ingest(fx, data, &parsed);
});

/// Whole lines only; every line counted; errors and records on real lines.
fn check_parse(data: &[u8], p: &Parsed) {
    assert!(p.consumed <= data.len());
    assert!(p.consumed == 0 || data[p.consumed - 1] == b'\n', "stopped inside a line");
    assert!(!data[p.consumed..].contains(&b'\n'), "a whole line was left unread");
    let lines = data[..p.consumed].iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(p.lines, lines);
    for e in &p.errors {
        assert!((1..=lines).contains(&e.line), "error on line {} of {lines}", e.line);
    }
    for r in &p.records {
        assert!((1..=lines).contains(&r.line), "record on line {} of {lines}", r.line);
    }
}

/// What the parser read, written again by the encoder, reads back the same
/// (for a file read without errors: a refused line shifts the lines below
/// it, and a context id must fit the lines above its declaration).
fn check_reencode(p: &Parsed) {
    // (The encoder writes the iterations first: that keeps every id within
    // the lines above it only when the ids are 0, 1, 2, ... without gaps.)
    if !p.errors.is_empty() || p.loops.iter().enumerate().any(|(i, l)| l.ctx as usize != i) {
        return;
    }
    let mut e = LineEncoder::new();
    if let Some((meta, source)) = &p.header {
        e.header(meta, *source);
    }
    for l in &p.loops {
        e.iter(l.ctx, l.parent, &l.name, l.iteration, l.value.as_deref());
    }
    for r in &p.records {
        e.record(r.kind, r.ctx, &r.name, &r.value);
    }
    for c in &p.checkpoints {
        e.checkpoint(c.ctx, &c.name, &c.digest, c.bytes, &c.format);
    }
    if let Some(end) = &p.end {
        e.end(end);
    }
    let again = parse_lines(&e.buf, 1);
    assert!(again.errors.is_empty(), "re-encoded lines do not parse: {:?}", again.errors);
    assert_eq!(again.consumed, e.buf.len());
    assert_eq!(again.header, p.header);
    assert_eq!(again.loops, p.loops);
    assert_eq!(again.end, p.end);
    assert_eq!(again.records.len(), p.records.len());
    for (a, b) in again.records.iter().zip(&p.records) {
        // Debug text: NaN equals NaN, and floats print exactly.
        assert_eq!(
            format!("{:?}", (a.ctx, a.kind, &a.name, &a.value)),
            format!("{:?}", (b.ctx, b.kind, &b.name, &b.value))
        );
    }
    assert_eq!(again.checkpoints.len(), p.checkpoints.len());
    for (a, b) in again.checkpoints.iter().zip(&p.checkpoints) {
        assert_eq!((a.ctx, &a.name, &a.digest, a.bytes, &a.format), (b.ctx, &b.name, &b.digest, b.bytes, &b.format));
    }
}

/// The file as a live run's record file (its lock held, as a recording
/// process holds it): one sync ingests it; bad lines are reported, never
/// fatal; the store answers every read afterwards.
fn ingest(fx: &mut Fixture, data: &[u8], parsed: &Parsed) {
    // Named after the run its header names: a file named for another run is
    // set aside whole (reported, not ingested).
    let file = match &parsed.header {
        Some((meta, _)) => fx.file.with_file_name(format!("{}.jsonl", meta.run_id())),
        None => fx.file.clone(),
    };
    fs::write(&file, data).expect("write the record file");
    let lock = File::open(&file).expect("open the record file");
    lock.lock().expect("lock the record file");
    let report = fx.project.sync().expect("a record file's content never fails a sync");
    let runs = fx.project.runs().expect("runs");
    let names = fx.project.names().expect("names");
    fx.project.dataframe(&[]).expect("the pivot of every name");
    if let Some(n) = names.first() {
        fx.project.dataframe(&[n.name.as_str()]).expect("the pivot of one name");
    }
    let first = parse_lines(data.split_inclusive(|&b| b == b'\n').next().unwrap_or(&[]), 1).header;
    let header_first = first.as_ref().is_some_and(|(_, source)| *source == Source::Forward);
    if first.as_ref().is_some_and(|(_, source)| *source == Source::Replay) {
        // A replay file's header in a live run's file: set aside, reported.
        assert!(runs.is_empty(), "a replay header in a run's file makes no run");
        assert!(!report.problems.is_empty(), "a replay header in a run's file is reported");
    } else if header_first {
        assert_eq!(runs.len(), 1, "one header, one run");
        assert_eq!(report.records, parsed.records.len() as u64, "every readable record is ingested");
        assert_eq!(runs[0].records, parsed.records.len() as u64);
    } else {
        assert!(runs.is_empty(), "a file without a header makes no run");
        if data.contains(&b'\n') {
            assert!(!report.problems.is_empty(), "a file without a header is reported");
        }
    }
    drop(lock);
    fs::remove_file(&file).expect("remove the record file");
    fx.project.store_mut().expect("the store").clear().expect("clear the store");
}
