//! Captured output read back: `Project::io`, `flor io`, `flor capture
//! --preview`, and FlorDB's old command names (`flor unpack`, `flor stat`).
//! Runs are recorded with the Rust API (`Run::output` writes the same
//! `output` records the Python module's capture does).

use std::path::Path;

use flor::{Project, Run, Selection, Value};
use serde_json::Value as Json;

mod support;
use support::{cli as flor, cli_json as flor_json, cli_ok as flor_ok, rust_repo as repo};

fn start(dir: &Path, lr: &str) -> Run {
    let argv = ["train".to_owned(), "--kwargs".into(), format!("lr={lr}")];
    Run::builder().dir(dir).filename("train.rs").argv(argv).interpreter("rustc").start().expect("start")
}

/// Two runs (lr 0.1, then 0.2): a line before the loop, per epoch a
/// stdout line with metrics and a warning, per step a debug line in run 1,
/// an error after the loop.
fn record_two(dir: &Path) -> Vec<String> {
    let mut tstamps = Vec::new();
    for lr in ["0.1", "0.2"] {
        let run = start(dir, lr);
        tstamps.push(run.tstamp().to_owned());
        run.arg("lr", 0.0).unwrap();
        run.output("io::stdout", &format!("starting lr={lr}x"));
        for e in run.loop_over("epoch", 0..2u64) {
            if lr == "0.1" {
                for s in run.loop_over("step", 0..2u64) {
                    run.output("io::log::debug", &format!("step {s}"));
                }
            }
            run.output("io::stdout", &format!("epoch {e} | loss: 0.{e}5, acc=9{e}%, lr={lr}"));
            run.log("loss", e as f64);
            run.output("io::log::warning", "slow");
        }
        run.output("io::log::error", "done with http://host:80");
        run.finish().unwrap();
    }
    tstamps
}

fn text(v: Option<Value>) -> String {
    match v {
        Some(Value::Text(t)) => t.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

#[test]
fn project_io_lays_out_lines_with_their_loop_position() {
    let dir = repo();
    let tstamps = record_two(dir.path());
    let mut p = Project::open(dir.path()).unwrap();
    p.sync().unwrap();
    let all = p.io(None, &Selection::default()).unwrap();
    assert_eq!(all.column_names(), ["projid", "tstamp", "filename", "epoch", "step", "channel", "line"]);
    // Run 1: 1 + 2 * (2 + 2) + 1 lines; run 2: 1 + 2 * 2 + 1.
    assert_eq!(all.row_count(), 10 + 6);
    let rows = all.rows();
    let cell = |r: usize, c: usize| rows[r][c].clone();
    assert_eq!(text(cell(0, 1)), tstamps[0], "oldest run first");
    assert_eq!((cell(0, 3), cell(0, 4), text(cell(0, 5))), (None, None, "io::stdout".into()));
    assert_eq!(text(cell(0, 6)), "starting lr=0.1x");
    assert_eq!((cell(1, 3), cell(1, 4)), (Some(Value::Int(0)), Some(Value::Int(0))), "step 0 of epoch 0");
    assert_eq!((text(cell(1, 5)), text(cell(1, 6))), ("io::log::debug".into(), "step 0".into()));
    assert_eq!((cell(3, 3), cell(3, 4)), (Some(Value::Int(0)), None), "the epoch line is outside the step loop");
    assert_eq!(text(cell(3, 6)), "epoch 0 | loss: 0.05, acc=90%, lr=0.1");
    assert_eq!(text(cell(9, 5)), "io::log::error");
    assert_eq!(text(cell(10, 1)), tstamps[1]);

    let logs = p.io(Some("io::log"), &Selection::default()).unwrap();
    let channels: Vec<String> = logs.rows().into_iter().map(|r| text(r[r.len() - 2].clone())).collect();
    assert_eq!(channels.len(), 4 + 2 + 1 + 2 + 1);
    assert!(channels.iter().all(|c| c.starts_with("io::log::")));
    let warnings = p.io(Some("io::log::warning"), &Selection::default()).unwrap();
    assert_eq!(warnings.row_count(), 4);
    let stdout = p.io(Some("stdout"), &Selection::default()).unwrap();
    assert_eq!(stdout.row_count(), 6, "`stdout` is short for io::stdout");

    let sel = Selection { where_clause: Some("lr > 0.15".into()), iters: vec!["epoch=last".parse().unwrap()] };
    let late = p.io(Some("io::stdout"), &sel).unwrap();
    assert_eq!(late.column_names(), ["projid", "tstamp", "filename", "epoch", "channel", "line"]);
    let lines: Vec<String> = late.rows().into_iter().map(|r| text(r[5].clone())).collect();
    assert_eq!(lines, ["starting lr=0.2x", "epoch 1 | loss: 0.15, acc=91%, lr=0.2"], "run 2, last epoch");
}

#[test]
fn flor_io_filters_limits_and_formats() {
    let dir = repo();
    let tstamps = record_two(dir.path());
    let rows = flor_json(dir.path(), &["io", "--channel", "io::log::error"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["tstamp"], Json::from(tstamps[0].as_str()));
    assert_eq!(rows[1]["line"], Json::from("done with http://host:80"));
    assert_eq!(rows[1]["channel"], Json::from("io::log::error"));

    let rows = flor_json(dir.path(), &["io", "--limit", "3"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["step"], Json::from(1));

    let rows = flor_json(dir.path(), &["io", "--where", "lr < 0.15", "--channel", "stdout"]);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["tstamp"] == tstamps[0].as_str()));

    let (table, _) = flor_ok(dir.path(), &["io", "--channel", "io::stdout"]);
    let header = table.lines().next().unwrap_or("");
    for col in ["tstamp", "epoch", "channel", "line"] {
        assert!(header.contains(col), "{col} in the header: {header}");
    }
    assert!(table.contains("epoch 1 | loss: 0.15, acc=91%, lr=0.2"), "{table}");

    let (csv, _) = flor_ok(dir.path(), &["io", "--channel", "io::log::warning", "--format", "csv"]);
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");

    let out = flor(dir.path(), &["io", "--where", "nosuch > 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}

#[test]
fn capture_preview_shows_values_and_their_lines_and_writes_nothing() {
    let dir = repo();
    record_two(dir.path());
    let before = flor_ok(dir.path(), &["names"]).0;
    let rows = flor_json(dir.path(), &["capture", "--preview"]);
    // Per epoch line: loss and lr (acc=9x% is a percentage); "starting
    // lr=0.1x" has a unit-like suffix, the URL nothing.
    assert_eq!(rows.len(), 2 * 2 * 2);
    let first = &rows[0];
    assert_eq!(first["epoch"], Json::from(0));
    assert_eq!(first["index"], Json::from("epoch=0"));
    assert_eq!(first["name"], Json::from("loss"));
    assert_eq!(first["value"], Json::from(0.05));
    assert_eq!(first["line"], Json::from("epoch 0 | loss: 0.05, acc=90%, lr=0.1"));
    assert_eq!(rows[1]["name"], Json::from("lr"));
    let names: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r["name"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["loss", "lr"]);

    let (_, err) = flor_ok(dir.path(), &["capture", "--preview", "--limit", "1"]);
    assert!(err.contains("would extract 8 value(s) of 2 metric(s) from 16 captured line(s): loss, lr"), "{err}");
    assert!(err.contains("indexed by epoch") && err.contains("nothing was written"), "{err}");
    assert_eq!(flor_json(dir.path(), &["capture", "--preview", "--limit", "1"]).len(), 1);
    assert_eq!(flor_ok(dir.path(), &["names"]).0, before, "a preview adds no names");
    assert_eq!(flor_json(dir.path(), &["capture"]), flor_json(dir.path(), &["io"]), "no flag: the lines");
    // What --extract then adds is what the preview showed (the logged
    // loss wins in the table; the extracted values are in the logs view).
    let (_, err) = flor_ok(dir.path(), &["capture", "--extract"]);
    assert!(
        err.contains("extracted 8 value(s) of 2 metric(s) from the captured output of 2 run(s): loss, lr"),
        "{err}"
    );
    let extracted = flor_json(
        dir.path(),
        &[
            "query",
            "SELECT value_name, count(*) AS n FROM logs WHERE source = 'extract' GROUP BY value_name ORDER BY 1",
        ],
    );
    assert_eq!(
        extracted,
        [serde_json::json!({"value_name": "loss", "n": 4}), serde_json::json!({"value_name": "lr", "n": 4})]
    );
}

#[test]
fn flordb_command_names_point_to_ours() {
    let dir = repo();
    let tstamps = record_two(dir.path());
    let (out, err) = flor_ok(dir.path(), &["stat"]);
    assert!(err.contains("`flor stat`") && err.contains("`flor runs`"), "{err}");
    assert_eq!(out, flor_ok(dir.path(), &["runs"]).0);
    assert!(out.contains(&tstamps[1]));
    let (_, err) = flor_ok(dir.path(), &["unpack"]);
    assert!(err.contains("`flor unpack`") && err.contains("`flor rebuild`"), "{err}");
    assert!(err.contains("rebuilt the query database from git: 2 runs"), "{err}");
    let help = String::from_utf8_lossy(&flor(dir.path(), &["--help"]).stdout).into_owned();
    assert!(help.contains(" io ") && help.contains(" capture "), "{help}");
    assert!(help.contains("`flor unpack`, FlorDB's spelling"), "the help names the old spelling: {help}");
}

/// The same answers from DuckDB as from SQLite (`flor io`, `flor capture
/// --preview`), the engine picked with `--store`.
#[cfg(feature = "duckdb")]
#[test]
fn duckdb_answers_like_sqlite() {
    let dir = repo();
    record_two(dir.path());
    for args in [&["io"][..], &["io", "--channel", "io::log", "--iter", "epoch=last"], &["capture", "--preview"]] {
        let sqlite = flor_json(dir.path(), &[&["--store", "sqlite"], args].concat());
        let duckdb = flor_json(dir.path(), &[&["--store", "duckdb"], args].concat());
        assert!(!sqlite.is_empty(), "{args:?}");
        assert_eq!(duckdb, sqlite, "{args:?}");
    }
}
