//! `flor capture --extract`: metrics read out of captured output become
//! values of their runs (an extraction file on each run's ref), columns of
//! `flor dataframe` that a rebuild keeps, below logged values, replaced
//! when extracted again. Runs are recorded with the Rust API
//! (`Run::output` writes the records the Python module's capture does).

use std::path::Path;
use std::process::Command;

use flor::core::layout::{extract_path, ref_for};
use flor::{Project, Run};
use serde_json::Value as Json;

mod support;
use support::{cli_json as flor_json, cli_ok as flor_ok, rust_repo as repo};

fn start(dir: &Path) -> Run {
    Run::builder().dir(dir).filename("train.rs").argv(["train".to_owned()]).interpreter("rustc").start().expect("start")
}

/// A run that prints `epoch E | loss: L lr=0.01` inside its `epoch` loop
/// and also logs `loss` there (the logged value must win), prints
/// `step S | val_loss: V` inside the loop (a `step` iteration of its own),
/// and `final accuracy: 0.93` after it (run level).
fn record(dir: &Path) -> String {
    let run = start(dir);
    let tstamp = run.tstamp();
    run.output("io::stdout", "starting");
    for e in run.loop_over("epoch", 0..2u64) {
        run.output("io::stdout", &format!("epoch {e} | loss: 0.{e}5 lr=0.01"));
        run.log("loss", e as f64);
        for s in 0..2u64 {
            run.output("io::stdout", &format!("step {s} | val_loss: {}", 10 * e + s));
        }
    }
    run.output("io::stdout", "final accuracy: 0.93");
    run.finish().unwrap();
    tstamp
}

/// `(epoch, step, name)` of each row, the named column's value.
fn cells(rows: &[Json], name: &str) -> Vec<(Json, Json, Json)> {
    rows.iter().map(|r| (r["epoch"].clone(), r["step"].clone(), r[name].clone())).collect()
}

fn run_refs(repo: &Path) -> String {
    let out = Command::new("git").args(["for-each-ref", "refs/flor/runs"]).current_dir(repo).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn extracted_metrics_are_columns_below_logged_values_and_survive_a_rebuild() {
    let dir = repo();
    record(dir.path());
    let (_, err) = flor_ok(dir.path(), &["capture", "--extract"]);
    assert!(err.contains("extracted 9 value(s) of 4 metric(s) from the captured output of 1 run(s)"), "{err}");
    assert!(err.contains("4 loop iteration(s) from printed indexes"), "{err}");
    assert!(err.contains("1 run(s) written to their refs"), "{err}");

    let check = |when: &str| {
        let rows = flor_json(dir.path(), &["dataframe", "loss", "val_loss", "lr", "accuracy"]);
        // The logged loss (0, 1) wins over the printed one (0.05, 0.15);
        // an epoch's values show on its step rows too.
        let loss: Vec<_> = cells(&rows, "loss").into_iter().map(|c| (c.0, c.2)).collect();
        assert!(loss.iter().all(|(e, l)| e.as_f64() == l.as_f64()), "{when}: {loss:?}");
        assert_eq!(loss.len(), 4, "{when}: a row per (epoch, printed step)");
        let val: Vec<_> = cells(&rows, "val_loss").into_iter().filter(|c| !c.2.is_null()).collect();
        assert_eq!(
            val,
            vec![
                (0.into(), 0.into(), 0.0.into()),
                (0.into(), 1.into(), 1.0.into()),
                (1.into(), 0.into(), 10.0.into()),
                (1.into(), 1.into(), 11.0.into()),
            ],
            "{when}: printed `step S` nests in the epoch"
        );
        assert!(rows.iter().all(|r| r["accuracy"] == 0.93), "{when}: run level");
        assert!(rows.iter().all(|r| r["lr"] == 0.01), "{when}");
        let by_source = flor_json(
            dir.path(),
            &[
                "query",
                "SELECT source, count(*) AS n FROM logs WHERE value_name = 'loss' GROUP BY source ORDER BY source",
            ],
        );
        assert_eq!(
            by_source,
            vec![serde_json::json!({"source": "extract", "n": 2}), serde_json::json!({"source": "forward", "n": 2})],
            "{when}"
        );
    };
    check("after --extract");
    flor_ok(dir.path(), &["rebuild"]);
    check("after a rebuild");

    // Again: the same reading, nothing written.
    let refs = run_refs(dir.path());
    let (_, err) = flor_ok(dir.path(), &["capture", "--extract"]);
    assert!(err.contains("0 run(s) written to their refs, 1 already up to date"), "{err}");
    assert_eq!(run_refs(dir.path()), refs, "no new commit");
    check("after extracting again");
}

#[test]
fn extracting_again_replaces_an_earlier_extraction() {
    let dir = repo();
    let tstamp = record(dir.path());
    // An extraction by other rules (an older flor): a name the rules do
    // not give now, ingested.
    let mut p = Project::open(dir.path()).unwrap();
    p.sync().unwrap();
    let run_id = p.runs().unwrap()[0].meta.run_id();
    assert_eq!(p.runs().unwrap()[0].meta.tstamp, tstamp);
    let mut enc = flor::core::record::LineEncoder::new();
    enc.header(&p.runs().unwrap()[0].meta, flor::core::Source::Extract);
    enc.record(flor::core::RecordKind::Log, None, "stale", &flor::Value::Float(1.0));
    let path = extract_path(&run_id);
    flor_git::attach_files(dir.path(), &ref_for(&run_id), &[(path.as_str(), enc.buf.as_slice())], "older").unwrap();
    p.sync().unwrap();
    assert_eq!(p.dataframe(&["stale"]).unwrap().row_count(), 1);
    drop(p);

    let (_, err) = flor_ok(dir.path(), &["capture", "--extract"]);
    assert!(err.contains("1 run(s) written to their refs"), "{err}");
    assert!(err.contains("the query database was rebuilt from git"), "{err}");
    let stale = flor_json(dir.path(), &["query", "SELECT count(*) AS n FROM logs WHERE value_name = 'stale'"]);
    assert_eq!(stale, vec![serde_json::json!({"n": 0})], "the earlier reading is gone");
    let val = flor_json(dir.path(), &["dataframe", "val_loss"]);
    assert_eq!(val.len(), 4, "{val:?}");
}

#[test]
fn a_run_still_recording_is_left_out_until_it_ends() {
    let dir = repo();
    let run = start(dir.path());
    let tstamp = run.tstamp();
    for e in run.loop_over("epoch", 0..2u64) {
        run.output("io::stdout", &format!("loss: 0.{e}"));
    }
    let mut p = Project::open(dir.path()).unwrap();
    let report = p.extract().unwrap();
    assert_eq!(report.running, vec![tstamp.clone()]);
    assert_eq!((report.runs, report.written), (0, 0));
    assert!(p.names().unwrap().is_empty());
    run.finish().unwrap();
    let report = p.extract().unwrap();
    assert!(report.running.is_empty());
    assert_eq!((report.runs, report.written, report.values), (1, 1, 2));
    assert_eq!(p.dataframe(&["loss"]).unwrap().row_count(), 2);
}

#[test]
fn nothing_to_extract_writes_nothing() {
    let dir = repo();
    let run = start(dir.path());
    run.output("io::stdout", "hello");
    run.log("x", 1.0);
    run.finish().unwrap();
    let refs = run_refs(dir.path());
    let (_, err) = flor_ok(dir.path(), &["capture", "--extract"]);
    assert!(err.contains("nothing extractable"), "{err}");
    assert_eq!(run_refs(dir.path()), refs);
}
