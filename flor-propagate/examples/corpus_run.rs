//! Runs every case of a propagation corpus in-process and prints one JSON
//! object per case: outcomes, output and the median time of `--repeat`
//! runs. Used by `scripts/propagate_vs_flordb.py`.
//!
//! `cargo run --release -p flor-propagate --example corpus_run -- [CORPUS_DIR] [--repeat N]`

use std::path::PathBuf;
use std::time::Instant;

use flor_propagate::{python, LanguagePropagator, Outcome};
use serde_json::{json, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus"));
    let mut repeat = 20usize;
    while let Some(a) = args.next() {
        if a == "--repeat" {
            repeat = args.next().ok_or("--repeat needs a number")?.parse()?;
        } else {
            dir = PathBuf::from(a);
        }
    }
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    cases.sort();
    let propagator = python();
    for case in cases {
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(case.join("spec.json"))?)?;
        let new = std::fs::read_to_string(case.join("new.py"))?;
        let old = std::fs::read_to_string(case.join("old.py"))?;
        let mut lines: Vec<usize> = spec["lines"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as usize).collect())
            .unwrap_or_default();
        if let Some(names) = spec["names"].as_array() {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            lines = propagator.log_statement_lines(&new, &names)?;
        }
        let mut times = Vec::with_capacity(repeat);
        let mut result = None;
        for _ in 0..repeat.max(1) {
            let start = Instant::now();
            let r = propagator.propagate(&new, &lines, &old);
            times.push(start.elapsed().as_secs_f64() * 1e6);
            result = Some(r);
        }
        times.sort_by(f64::total_cmp);
        let median_us = times[times.len() / 2];
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = match result {
            Some(Ok(p)) => {
                let outcomes: Vec<Value> = p
                    .outcomes
                    .iter()
                    .map(|o| match o {
                        Outcome::Placed { line, renames } => {
                            json!({"outcome": "placed", "line": line, "renames": renames})
                        }
                        Outcome::Approximate { line, renames, anchor } => json!({
                            "outcome": "approximate", "line": line, "renames": renames,
                            "similarity": anchor.similarity, "anchor_old_line": anchor.old_line,
                            "anchor_old": anchor.old_text, "anchor_new": anchor.new_text,
                        }),
                        Outcome::AlreadyPresent { line } => json!({"outcome": "already_present", "line": line}),
                        Outcome::Failed { reason } => json!({"outcome": "failed", "reason": reason}),
                    })
                    .collect();
                json!({"case": name, "lines": lines, "outcomes": outcomes, "output": p.source, "median_us": median_us})
            }
            Some(Err(e)) => json!({"case": name, "lines": lines, "error": e.to_string(), "median_us": median_us}),
            None => continue,
        };
        println!("{line}");
    }
    Ok(())
}
