//! The Rust recording API (`flor::Run`) and the query side (`flor::Project`),
//! in-process, in temporary git repositories.

use std::path::Path;
use std::process::Command;

use flor::{NoDatabaseReason, Project, Run, RunStatus, StoreKind, Value};
use serde::{Deserialize, Serialize};

mod support;
use support::rust_repo as repo;

fn start(dir: &Path, kwargs: &[&str]) -> Run {
    let mut argv = vec!["train".to_owned()];
    if !kwargs.is_empty() {
        argv.push("--kwargs".into());
        argv.extend(kwargs.iter().map(|s| s.to_string()));
    }
    Run::builder().dir(dir).filename("train.rs").argv(argv).interpreter("rustc").start().expect("start")
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    weights: Vec<f64>,
    step: u64,
}

#[test]
fn loops_values_checkpoints_roundtrip() {
    let dir = repo();
    let run = start(dir.path(), &["lr=0.5", "name=big"]);
    let tstamp = run.tstamp();
    assert_eq!(run.arg("lr", 0.1).unwrap(), 0.5);
    assert_eq!(run.arg("name", String::from("small")).unwrap(), "big");
    assert!(run.arg("epochs", 3u32).unwrap() == 3);
    let mut state = State::default();
    run.checkpointed_loop("epoch", 0..3, "state", &mut state, |s, e| {
        for split in run.loop_with_values("split", ["train", "valid"]) {
            run.log("acc", if split == "train" { 0.9 } else { 0.8 } - e as f64 * 0.01);
        }
        s.weights.push(e as f64);
        s.step += 1;
        Ok(())
    })
    .unwrap();
    run.log("final", true);
    run.log_json("config", &serde_json::json!({"layers": [64, 32]})).unwrap();
    let summary = run.finish().unwrap();
    assert_eq!(summary.meta.status, RunStatus::Finished);
    assert!(summary.report.problems.is_empty());

    let mut project = Project::open(dir.path()).unwrap();
    project.sync().unwrap();
    let df = project.dataframe(&["acc", "final"]).unwrap();
    assert_eq!(
        df.column_names(),
        vec!["projid", "tstamp", "filename", "epoch", "split", "split_value", "acc", "final"]
    );
    assert_eq!(df.row_count(), 6);
    assert_eq!(df.column("split_value").unwrap().get(1), Some(Value::from("valid")), "the loop's values");
    assert_eq!(df.column("final").unwrap().get(5), Some(Value::Bool(true)));
    let values = project.query("SELECT loop_value FROM loops WHERE loop_name = 'split' ORDER BY ctx_id").unwrap();
    assert_eq!(values.cell(1, 0), Some(Value::from("valid")));
    let config = project.query("SELECT value, value_type FROM logs WHERE value_name = 'config'").unwrap();
    assert_eq!(config.cell(0, 1), Some(Value::from("json")));

    // The last checkpoint comes back; every epoch stored one.
    let restored: State = project.load_checkpoint(&tstamp, "state").unwrap();
    assert_eq!(restored, State { weights: vec![0.0, 1.0, 2.0], step: 3 });
    assert_eq!(project.checkpoints(&tstamp).unwrap().len(), 3);
    let err = project.load_checkpoint::<State>(&tstamp, "nope").unwrap_err().to_string();
    assert!(err.contains("no checkpoint named `nope`") && err.contains("state"), "{err}");
    let err = project.load_checkpoint::<State>("1999-01-01T00:00:00.000000", "state").unwrap_err().to_string();
    assert!(err.contains("no run with tstamp"), "{err}");
}

#[test]
fn timings_are_recorded_for_replay_estimates() {
    let dir = repo();
    let run = start(dir.path(), &[]);
    for _ in run.loop_over("epoch", 0..2) {
        for _ in run.loop_over("step", 0..3) {
            run.log("x", 1);
        }
    }
    run.finish().unwrap();
    let mut project = Project::open(dir.path()).unwrap();
    project.sync().unwrap();
    let t = project.query("SELECT name, COUNT(*) AS n FROM timings GROUP BY name ORDER BY name").unwrap();
    let rows: Vec<(String, i64)> = t
        .rows()
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Some(Value::Text(n)), Some(Value::Int(c))) => (n.to_string(), *c),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("iteration".into(), 2),
            ("loop:epoch".into(), 1),
            ("loop:step".into(), 2),
            ("setup".into(), 1),
            ("teardown".into(), 1)
        ]
    );
}

#[test]
fn a_run_dropped_without_finish_is_failed_and_keeps_its_records() {
    let dir = repo();
    {
        let run = start(dir.path(), &[]);
        for e in run.loop_over("epoch", 0..5) {
            run.log("loss", e as f64);
            if e == 2 {
                break;
            }
        }
    }
    let mut project = Project::open(dir.path()).unwrap();
    project.sync().unwrap();
    let runs = project.runs().unwrap();
    assert_eq!(runs[0].meta.status, RunStatus::Failed);
    assert_eq!(project.dataframe(&["loss"]).unwrap().row_count(), 3);
}

#[test]
fn bad_kwargs_are_errors_naming_the_argument() {
    let dir = repo();
    let run = start(dir.path(), &["epochs=ten"]);
    let err = run.arg("epochs", 10i64).unwrap_err().to_string();
    assert!(err.contains("epochs=ten") && err.contains("integer"), "{err}");
    let err = Run::builder().dir(dir.path()).argv(["train", "--kwargs", "oops"]).start().unwrap_err().to_string();
    assert!(err.contains("oops") && err.contains("="), "{err}");
}

#[test]
fn outside_a_repository_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Run::builder().dir(dir.path()).argv(["t"]).start().unwrap_err().to_string();
    assert!(err.contains("git init"), "{err}");
}

#[test]
fn a_discarded_run_leaves_nothing() {
    let dir = repo();
    let run = start(dir.path(), &[]);
    for e in run.loop_over("epoch", 0..3) {
        run.log("loss", e);
    }
    run.discard().unwrap();
    let mut project = Project::open(dir.path()).unwrap();
    project.sync().unwrap();
    assert!(project.runs().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(project.runs_dir()).unwrap().count(), 0);
    let refs = Command::new("git").args(["for-each-ref", "refs/flor/"]).current_dir(dir.path()).output().unwrap();
    assert!(refs.stdout.is_empty());
}

#[test]
fn with_recorder_batches_steps_into_the_same_records() {
    // What a front end that buffers steps does (the Python binding): many
    // engine calls under one lock, the same records as the calls one by one.
    let dir = repo();
    let run = start(dir.path(), &[]);
    assert!(!run.is_replay());
    run.loop_begin("epoch").unwrap();
    run.iteration_begin(None).unwrap();
    run.loop_begin("step").unwrap();
    run.with_recorder(|rec| -> flor::core::Result<()> {
        for s in 0..5u64 {
            if s == 0 {
                rec.iteration_begin(Some(&s.to_string()))?;
            } else {
                rec.iteration_end()?;
                rec.iteration_begin_at(None, Some(&s.to_string()))?;
            }
            rec.log("loss", &Value::Float(s as f64 / 2.0));
        }
        Ok(())
    })
    .unwrap();
    run.loop_end().unwrap();
    run.loop_end().unwrap();
    run.finish().unwrap();

    let mut project = Project::open(dir.path()).unwrap();
    project.sync().unwrap();
    let df = project.dataframe(&["loss"]).unwrap();
    assert_eq!(df.row_count(), 5);
    let loss: Vec<_> = (0..5).map(|i| df.column("loss").unwrap().get(i)).collect();
    assert_eq!(loss, (0..5).map(|s| Some(Value::Float(s as f64 / 2.0))).collect::<Vec<_>>());
    let values = project.query("SELECT loop_value FROM loops WHERE loop_name = 'step' ORDER BY ctx_id").unwrap();
    assert_eq!(values.cell(4, 0), Some(Value::from("4")));
}

#[test]
fn many_runs_starting_at_the_same_instant_all_record_publish_and_query() {
    // Twenty runs released by one barrier choose their run ids at the same
    // microsecond: each must still start, keep its own id in its records and
    // its ref, publish, and be queryable (a loser of the ref race used to die
    // on git's lock file). Repeated, since a race does not show every time.
    const RUNS: usize = 20;
    const ROUNDS: usize = 5;
    let dir = repo();
    let root = dir.path();
    for round in 0..ROUNDS {
        let barrier = std::sync::Barrier::new(RUNS);
        let tstamps: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..RUNS)
                .map(|i| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let tag = format!("tag={round}-{i}");
                        let argv = vec!["train".to_owned(), "--kwargs".into(), tag];
                        let builder = Run::builder().dir(root).filename("train.rs").argv(argv).interpreter("rustc");
                        barrier.wait();
                        let run = builder.start().unwrap_or_else(|e| panic!("run {round}-{i} did not start: {e}"));
                        let tag = run.arg("tag", String::new()).unwrap();
                        for e in run.loop_over("epoch", 0..2) {
                            run.log("loss", (round * 1000 + i * 10 + e) as i64);
                        }
                        let tstamp = run.tstamp();
                        run.finish().unwrap_or_else(|e| panic!("run {tag} did not finish: {e}"));
                        tstamp
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a run thread panicked")).collect()
        });
        let distinct: std::collections::BTreeSet<_> = tstamps.iter().collect();
        assert_eq!(distinct.len(), RUNS, "round {round}: run ids collided: {tstamps:?}");
    }

    let mut project = Project::open(root).unwrap();
    let report = project.sync().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let runs = project.runs().unwrap();
    assert_eq!(runs.len(), RUNS * ROUNDS);
    assert!(runs.iter().all(|r| r.meta.status == RunStatus::Finished));
    // Every run's records carry the id of the ref they were published under.
    let refs = Command::new("git")
        .args(["for-each-ref", "--format=%(refname)", "refs/flor/runs/"])
        .current_dir(root)
        .output()
        .unwrap();
    let refs = String::from_utf8(refs.stdout).unwrap();
    let mut from_refs: Vec<String> = refs.lines().map(|l| l.trim_start_matches("refs/flor/runs/").to_owned()).collect();
    let mut from_records: Vec<String> = runs.iter().map(|r| r.meta.run_id()).collect();
    from_refs.sort();
    from_records.sort();
    assert_eq!(from_refs, from_records);
    let df = project.dataframe(&["tag", "loss"]).unwrap();
    assert_eq!(df.row_count(), RUNS * ROUNDS * 2);
    let mut seen: Vec<(String, i64)> = (0..df.row_count())
        .map(|r| {
            let tag = match df.column("tag").unwrap().get(r) {
                Some(Value::Text(t)) => t.to_string(),
                other => panic!("tag: {other:?}"),
            };
            let loss = match df.column("loss").unwrap().get(r) {
                Some(Value::Int(v)) => v,
                other => panic!("loss: {other:?}"),
            };
            (tag, loss)
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, i64)> = (0..ROUNDS)
        .flat_map(|round| {
            (0..RUNS)
                .flat_map(move |i| (0..2).map(move |e| (format!("{round}-{i}"), (round * 1000 + i * 10 + e) as i64)))
        })
        .collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(std::fs::read_dir(project.runs_dir()).unwrap().count(), 0, "unpublished record files left");
}

/// Raw bytes that already are a safetensors file, checkpointed as they are.
struct SafetensorsBytes;

impl flor::core::checkpoint::CheckpointSerializer<Vec<u8>> for SafetensorsBytes {
    fn format(&self) -> &'static str {
        "safetensors"
    }
    fn save(
        &self,
        state: &Vec<u8>,
        out: &mut dyn std::io::Write,
    ) -> Result<(), flor::core::checkpoint::CheckpointError> {
        out.write_all(state).map_err(|e| flor::core::checkpoint::CheckpointError(e.to_string()))
    }
    fn load(
        &self,
        state: &mut Vec<u8>,
        input: &mut dyn std::io::Read,
    ) -> Result<(), flor::core::checkpoint::CheckpointError> {
        state.clear();
        input.read_to_end(state).map(|_| ()).map_err(|e| flor::core::checkpoint::CheckpointError(e.to_string()))
    }
}

/// A safetensors file of two 128 KiB f32 tensors: `frozen` (the same every
/// epoch) and `head` (a function of `epoch`).
fn safetensors_model(epoch: u32) -> Vec<u8> {
    let tensor =
        |seed: u32| -> Vec<u8> { (0..32_768u32).flat_map(|i| (i.wrapping_mul(seed) as f32).to_le_bytes()).collect() };
    let (frozen, head) = (tensor(7), tensor(100 + epoch));
    let n = frozen.len();
    let header = serde_json::json!({
        "frozen": {"dtype": "F32", "shape": [256, 128], "data_offsets": [0, n]},
        "head": {"dtype": "F32", "shape": [256, 128], "data_offsets": [n, 2 * n]},
    })
    .to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(frozen);
    out.extend(head);
    out
}

#[test]
fn a_safetensors_checkpoint_round_trips_through_a_run_stored_in_shared_chunks() {
    let dir = repo();
    let run = start(dir.path(), &[]);
    let tstamp = run.tstamp();
    for epoch in run.loop_over("epoch", 0..3u32) {
        run.checkpoint_with("model", &safetensors_model(epoch), &SafetensorsBytes).unwrap();
    }
    run.finish().unwrap();

    let mut project = Project::open(dir.path()).unwrap();
    project.sync().unwrap();
    let ckpts = project.checkpoints(&tstamp).unwrap();
    assert_eq!(ckpts.len(), 3);
    assert!(ckpts.iter().all(|c| c.format == "safetensors"));
    let mut restored = Vec::new();
    let meta = project.load_checkpoint_with(&tstamp, "model", &mut restored, &SafetensorsBytes).unwrap();
    assert_eq!(restored, safetensors_model(2), "bit-identical");
    assert_eq!(meta.bytes, restored.len() as u64);

    // Stored as chunks; the unchanged tensor once for all three checkpoints.
    let manifests: Vec<_> =
        ckpts.iter().map(|c| project.objects().manifest(&c.digest).unwrap().expect("chunked")).collect();
    assert!(manifests.iter().all(|m| m.format == "safetensors" && m.chunks.len() == 3));
    let frozen = &manifests[0].chunks[1];
    assert!(manifests.iter().all(|m| &m.chunks[1] == frozen));
    let heads: std::collections::HashSet<_> = manifests.iter().map(|m| &m.chunks[2].digest).collect();
    assert_eq!(heads.len(), 3);
}

/// The builder: a store handed in gets the runs at `sync`; a project
/// without its database says why on every store use; `fresh_database`
/// starts from an empty database; release and reacquire.
#[test]
fn builder_takes_any_store_and_says_when_there_is_none() {
    let dir = repo();
    let run = start(dir.path(), &[]);
    for e in run.loop_over("epoch", 0..2) {
        run.log("loss", 1.0 / (e + 1) as f64);
    }
    run.finish().unwrap();

    let mine = flor_store::SqliteStore::open_in_memory().unwrap();
    let mut given = Project::builder(dir.path()).store(Box::new(mine)).open().unwrap();
    assert_eq!(given.store_kind(), None);
    given.sync().unwrap();
    assert_eq!(given.dataframe(&["loss"]).unwrap().row_count(), 2);
    assert_eq!(given.store().unwrap().backend(), "sqlite");
    given.release_store(); // a store handed in stays
    assert_eq!(given.runs().unwrap().len(), 1);
    assert!(!dir.path().join(".flor/flor.db").exists(), "a store handed in writes no database file");

    let mut recording = Project::open_for_recording(dir.path()).unwrap();
    assert_eq!(recording.store_kind(), Some(StoreKind::Sqlite));
    for e in [recording.runs().unwrap_err(), recording.sync().unwrap_err(), recording.store().err().unwrap()] {
        assert!(matches!(e, flor::Error::NoDatabase { reason: NoDatabaseReason::Recording }), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains("opened without its query database") && shown.contains("Project::open"), "{shown}");
    }
    recording.reacquire_store().unwrap();
    recording.sync().unwrap();
    assert_eq!(recording.runs().unwrap().len(), 1);

    let mut fresh = Project::builder(dir.path()).store_kind(StoreKind::Sqlite).fresh_database(true).open().unwrap();
    assert!(fresh.runs().unwrap().is_empty(), "a fresh database starts empty");
    fresh.sync().unwrap();
    assert_eq!(fresh.runs().unwrap().len(), 1);
    let reopened = Project::builder(dir.path()).store_kind(None).open().unwrap();
    assert_eq!(reopened.runs().unwrap().len(), 1, "the configured engine's database is kept");

    let e = flor::Error::NoDatabase { reason: NoDatabaseReason::Released }.to_string();
    assert!(e.contains("released") && e.contains("reacquire_store"), "{e}");
}

/// Record files that broke the parser or ingestion: the inputs `fuzz/`
/// found (target `records`) or that a report named, one file each in
/// tests/fuzz/records/. Each is checked as the fuzz target checks it, with a
/// time limit per file (a hang fails instead of stalling the suite).
#[test]
fn record_files_found_by_fuzzing_parse_and_ingest() {
    let folder = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("tests/fuzz/records");
    let mut files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", folder.display());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| parse_and_ingest(&data));
            let _ = tx.send(outcome);
        });
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("{}: parsing and ingesting took over 30 s", path.display()),
        }
    }
}

/// What the parser reads re-encodes to itself; the file, as a live run's
/// record file, syncs without error, every readable record ingested, and
/// the store answers the pivot afterwards.
fn parse_and_ingest(data: &[u8]) {
    use flor::core::record::{parse_lines, LineEncoder};
    let p = parse_lines(data, 1);
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
    let again = parse_lines(&e.buf, 1);
    // (A refused line shifts the lines below it, which a context id must
    // fit: only a file read without errors re-encodes line for line.)
    if p.errors.is_empty() && p.loops.iter().enumerate().all(|(i, l)| l.ctx as usize == i) {
        assert!(again.errors.is_empty(), "what the parser read does not re-encode: {:?}", again.errors);
        assert_eq!(again.loops, p.loops);
    }

    let dir = repo();
    let mut project = Project::open(dir.path()).unwrap();
    // Named after the run its header names (a file named for another run is
    // set aside whole, as the README says).
    let id = p.header.as_ref().map_or_else(|| "2026-01-02T03-04-05.000006".to_owned(), |(m, _)| m.run_id());
    let file = project.runs_dir().join(format!("{id}.jsonl"));
    std::fs::write(&file, data).unwrap();
    let lock = std::fs::File::open(&file).unwrap();
    lock.lock().unwrap(); // a live run's file, as its recording process holds it
    let report = project.sync().expect("a record file's content never fails a sync");
    let runs = project.runs().unwrap();
    if p.header.as_ref().is_some_and(|(_, source)| *source == flor::core::Source::Replay) {
        // A replay file's header in a run's file: set aside and reported.
        assert!(runs.is_empty() && !report.problems.is_empty(), "{report:?}");
        return;
    }
    assert_eq!(runs.len(), usize::from(p.header.is_some()));
    assert_eq!(report.records, p.records.len() as u64, "every readable record is ingested");
    project.dataframe(&[]).unwrap();
}

/// A run ref that names no commit (pushed by someone else, say) is left
/// alone by every sync; a ref naming a run's commit through an annotated
/// tag adds no run (its files are another run's: reported once).
#[test]
fn run_refs_naming_no_commit_are_left_alone() {
    let dir = repo();
    let run = start(dir.path(), &[]);
    let tstamp = run.tstamp();
    run.log("x", 1);
    run.finish().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let blob = git(&["hash-object", "-w", "train.rs"]);
    git(&["update-ref", "refs/flor/runs/2030-01-01T00-00-00.000000", &blob]);
    let id = tstamp.replace(':', "-");
    git(&["tag", "-a", "-m", "a tag", "runtag", &format!("refs/flor/runs/{id}")]);
    let tag = git(&["rev-parse", "refs/tags/runtag"]);
    git(&["update-ref", "refs/flor/runs/2030-01-01T00-00-00.000001", &tag]);

    let mut project = Project::open(dir.path()).unwrap();
    let report = project.sync().unwrap();
    // The tag's ref is named for another run than the records it holds:
    // those are reported as not its run's (untrusted input), never ingested
    // as a second run.
    assert!(
        report.problems.iter().all(|p| p.message.contains("not a record file of run 2030-01-01T00-00-00.000001")),
        "{:?}",
        report.problems
    );
    let runs = project.runs().unwrap();
    assert_eq!(runs.iter().map(|r| r.meta.tstamp.as_str()).collect::<Vec<_>>(), [tstamp.as_str()]);
    let again = project.sync().unwrap();
    assert_eq!((again.files, again.records), (0, 0), "nothing is ingested twice");
    assert!(again.problems.is_empty(), "a commit already ingested is not read again: {:?}", again.problems);
    assert_eq!(project.dataframe(&["x"]).unwrap().row_count(), 1);
}
