//! The scale soak's CI version (issue 14): the benchmark's generator
//! (`examples/soak/workload.rs`, the public `Run` API) records a few hundred
//! finished runs in one repository, then a hundred live runs at once; the
//! query side must list every run and give back every value. No timings
//! here: `scripts/bench_soak.sh` measures the 10,000-run version
//! (BENCHMARKS.md, "Scale soak").

#[path = "../examples/soak/workload.rs"]
mod workload;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flor::{Project, RunStatus, StoreKind, Value};
use workload::Shape;

/// The engines this build has: every check runs on each.
fn kinds() -> Vec<StoreKind> {
    StoreKind::ALL.iter().copied().filter(|k| k.available()).collect()
}

fn open(repo: &std::path::Path, kind: StoreKind) -> Project {
    Project::builder(repo).store_kind(kind).fresh_database(true).open().expect("open the project")
}

fn assert_clean(f: &workload::Findings, what: &str) {
    assert!(f.ok(), "{what}: {} problems, first: {:#?}", f.count, f.problems);
}

#[test]
fn soak_finished_runs_are_all_listed_with_every_value() {
    const RUNS: u64 = 300;
    let shape = Shape { epochs: 4, steps: 25 };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    workload::init_repo(&repo).expect("a repository");
    let tstamps = workload::generate(&repo, RUNS, shape, 4, &|_| {}).expect("generate the runs");
    let recorded: BTreeSet<&str> = tstamps.iter().map(String::as_str).collect();
    assert_eq!(recorded.len(), RUNS as usize, "every run got its own tstamp");
    let seeds: Vec<u64> = (0..RUNS).collect();

    for kind in kinds() {
        let mut project = open(&repo, kind);
        let report = project.sync().expect("ingest");
        assert!(report.problems.is_empty(), "{kind}: {:?}", report.problems);
        // Per run: 4 args, the losses, an acc per epoch, and the timings
        // (setup, each epoch, each epoch's step loop, the epoch loop,
        // teardown). Loop iterations and checkpoints are no value records.
        let epochs = u64::from(shape.epochs);
        let per_run = 4 + shape.losses() + epochs + (1 + 2 * epochs + 1 + 1);
        assert_eq!(report.records, RUNS * per_run, "{kind}");

        let runs = project.runs().expect("runs");
        let listed: BTreeSet<&str> = runs.iter().map(|r| r.meta.tstamp.as_str()).collect();
        assert_eq!(listed, recorded, "{kind}: `runs` lists exactly the recorded runs");
        for r in &runs {
            assert_eq!(r.meta.status, RunStatus::Finished, "{kind}: run {}", r.meta.tstamp);
            assert_eq!(r.meta.filename, workload::FILENAME);
            assert_eq!(r.records, per_run, "{kind}: run {}", r.meta.tstamp);
        }

        let df = project.dataframe(&["seed", "loss"]).expect("dataframe seed loss");
        assert_eq!(df.row_count() as u64, RUNS * shape.losses(), "{kind}");
        assert_clean(&workload::check_rows(workload::table_rows(&df), shape, &seeds, |_| true), "dataframe");

        // Run-level args beside epoch-level values: every (seed, epoch) once
        // with the lr the run read and the acc it logged.
        let df = project.dataframe(&["seed", "lr", "acc"]).expect("dataframe seed lr acc");
        assert_eq!(df.row_count() as u64, RUNS * u64::from(shape.epochs), "{kind}");
        let [seed, lr, epoch, acc] = ["seed", "lr", "epoch", "acc"].map(|c| df.column(c).expect(c));
        let mut seen = BTreeSet::new();
        for row in 0..df.row_count() {
            let (Some(Value::Int(s)), Some(Value::Int(e))) = (seed.get(row), epoch.get(row)) else {
                panic!("{kind}: row {row} has no seed or epoch");
            };
            let (s, e) = (s as u64, e as u32);
            assert!(seen.insert((s, e)), "{kind}: seed {s} epoch {e} twice");
            assert_eq!(lr.get(row), Some(Value::Float(workload::lr(s))), "{kind}: lr of seed {s}");
            assert_eq!(acc.get(row), Some(Value::Float(workload::acc(s, shape, e))), "{kind}: seed {s}");
        }

        // Everything was ingested once: the next sync finds nothing new.
        let again = project.sync().expect("sync again");
        assert_eq!((again.records, again.files), (0, 0), "{kind}");
    }
}

#[test]
fn soak_hundred_live_runs_recording_at_once_all_arrive() {
    const LIVE: u64 = 100;
    let shape = Shape { epochs: 5, steps: 20 };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    workload::init_repo(&repo).expect("a repository");
    let seeds: Vec<u64> = (0..LIVE).collect();
    let kinds = kinds();
    let started = AtomicUsize::new(0);
    let go = AtomicBool::new(false);
    let pace = Some(Duration::from_millis(30));

    std::thread::scope(|s| {
        let runs: Vec<_> = seeds
            .iter()
            .map(|&i| {
                let (repo, started, go) = (&repo, &started, &go);
                s.spawn(move || {
                    workload::record(repo, i, shape, pace, |_| {
                        started.fetch_add(1, Ordering::SeqCst);
                        while !go.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    })
                })
            })
            .collect();
        // Every run has started (its record file is live) before any records.
        let t0 = Instant::now();
        while started.load(Ordering::SeqCst) < LIVE as usize {
            assert!(!runs.iter().any(|r| r.is_finished()), "a live run ended before recording");
            assert!(t0.elapsed() < Duration::from_secs(120), "the live runs did not all start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut projects: Vec<Project> = kinds.iter().map(|&k| open(&repo, k)).collect();
        for p in &mut projects {
            p.sync().expect("sync while all are live");
            let running = p.runs().expect("runs").iter().filter(|r| r.meta.status == RunStatus::Running).count();
            assert_eq!(running, LIVE as usize, "every live run is listed as running");
        }
        go.store(true, Ordering::SeqCst);
        // While they record, every answer holds a prefix of each run's steps.
        while runs.iter().any(|r| !r.is_finished()) {
            for p in &mut projects {
                let report = p.sync().expect("sync while recording");
                assert!(report.problems.is_empty(), "{:?}", report.problems);
                let df = match p.dataframe(&["seed", "loss"]) {
                    Ok(df) => df,
                    // Nothing logged yet: no epoch has ended in any run.
                    Err(flor::Error::UnknownNames { known, .. }) if !known.iter().any(|n| n == "loss") => continue,
                    Err(e) => panic!("dataframe while recording: {e}"),
                };
                assert_clean(&workload::check_rows(workload::table_rows(&df), shape, &seeds, |_| false), "live");
            }
        }
        for r in runs {
            r.join().expect("a live run panicked").expect("a live run failed");
        }
        for p in &mut projects {
            p.sync().expect("sync after");
            let runs = p.runs().expect("runs");
            assert_eq!(runs.len(), LIVE as usize);
            assert!(runs.iter().all(|r| r.meta.status == RunStatus::Finished), "every live run finished");
            let df = p.dataframe(&["seed", "loss"]).expect("dataframe after");
            assert_eq!(df.row_count() as u64, LIVE * shape.losses());
            assert_clean(&workload::check_rows(workload::table_rows(&df), shape, &seeds, |_| true), "after");
        }
    });
}
