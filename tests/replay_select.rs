//! Acceptance test of replay selection and overrides (FlorDB 4's
//! `--iter`, `--apply @LINENO` and `--override`): `flor replay --iter
//! epoch=last --iter step=0,2` executes only the last epoch of each run
//! (the plan and its estimate say so) and records exactly the selected
//! values, bit for bit what a forward run of the old version with the
//! statement inserted by hand logs; `--apply @LINE` names a statement by
//! its line in the newest script; `--override device=cpu` changes what
//! `flor.arg("device", ...)` returns in the replay, and other keys are
//! refused with the reason.
//!
//! Needs a Python with the `flordb` module: `FLOR_TEST_PYTHON` (the README's
//! test command sets it). Without it the test is skipped with a message,
//! except under CI, where it fails.

use std::fs;
use std::path::Path;

use serde_json::Value as Json;

mod support;
use support::{flor, git, ok, python, train};

/// The recorded version: an epoch loop with an inner step loop, RNG use
/// inside the epoch, state checkpointed at the end of every epoch.
const OLD: &str = include_str!("replay/v4.py");
/// The newest version: the same with `abs_err` (inner loop) and `b_sq`
/// (epoch level) logged.
const NEWEST: &str = include_str!("replay/newest.py");

fn new_repo(home: &Path, script: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("flor-select").tempdir().expect("tempdir");
    git(dir.path(), home, &["init", "-q", "-b", "main"]);
    fs::write(dir.path().join("train.py"), script).unwrap();
    git(dir.path(), home, &["add", "train.py"]);
    git(dir.path(), home, &["commit", "-qm", "train.py"]);
    dir
}

/// `(tstamp, epoch, step, value)` rows of `name` (step -1 at epoch level).
fn rows(repo: &Path, home: &Path, name: &str) -> Vec<(String, i64, i64, f64)> {
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", name]), "flor dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).expect("dataframe JSON");
    rows.iter()
        .filter(|r| !r[name].is_null())
        .map(|r| {
            (
                r["tstamp"].as_str().expect("tstamp").to_owned(),
                r["epoch"].as_i64().expect("epoch"),
                r.get("step").and_then(Json::as_i64).unwrap_or(-1),
                r[name].as_f64().unwrap_or_else(|| panic!("no `{name}` in {r}")),
            )
        })
        .collect()
}

/// The same rows without the run (one run per repository here).
fn values(rows: Vec<(String, i64, i64, f64)>) -> Vec<(i64, i64, f64)> {
    rows.into_iter().map(|(_, e, s, v)| (e, s, v)).collect()
}

/// The old version with the newest statements inserted by hand.
fn by_hand(version: &str) -> String {
    let mut out = String::new();
    for line in version.lines() {
        out.push_str(line);
        out.push('\n');
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if t.starts_with("flor.log(\"loss\"") {
            out.push_str(&format!("{indent}flor.log(\"abs_err\", abs(err))\n"));
        }
        if t.starts_with("flor.log(\"w\"") {
            out.push_str(&format!("{indent}flor.log(\"b_sq\", state[\"b\"] ** 2)\n"));
        }
    }
    out
}

#[test]
fn a_selection_replays_only_what_it_names_bit_for_bit() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    assert!(OLD.contains("flor.log(\"w\"") && !OLD.contains("abs_err"), "the fixture changed");
    let dir = new_repo(home, OLD);
    let repo = dir.path();
    let kwargs = ["epochs=6", "seed=5"];
    train(&py, repo, home, &kwargs);
    fs::write(repo.join("train.py"), NEWEST).unwrap();
    let scratch = new_repo(home, &by_hand(OLD));
    train(&py, scratch.path(), home, &kwargs);
    let want_abs = values(rows(scratch.path(), home, "abs_err"));
    let want_bsq = values(rows(scratch.path(), home, "b_sq"));
    assert_eq!(want_abs.len(), 6 * 6);

    // The last epoch, steps 0 and 2: one outer iteration executes, restored
    // from the checkpoint after epoch 4; the plan and estimate follow.
    let args = ["replay", "--apply", "abs_err", "--iter", "epoch=last", "--iter", "step=0,2"];
    let plan = ok(flor(repo, home, &[&args[..], &["--dry-run"]].concat()), "plan");
    assert!(plan.contains("iterations: --iter epoch=last --iter step=0,2"), "{plan}");
    assert!(plan.contains("1 outer iteration to execute"), "{plan}");
    let full = ok(flor(repo, home, &["replay", "--apply", "abs_err", "--dry-run"]), "plan");
    assert!(full.contains("6 outer iterations to execute"), "{full}");
    assert!(estimate(&plan) < estimate(&full), "a selection costs less:\n{plan}\n{full}");
    ok(flor(repo, home, &[&args[..], &["--yes"]].concat()), "replay --iter");
    let want: Vec<_> = want_abs.iter().copied().filter(|&(e, s, _)| e == 5 && (s == 0 || s == 2)).collect();
    assert_eq!(want.len(), 2);
    assert_eq!(values(rows(repo, home, "abs_err")), want);

    // `--apply @LINE`: the statement at that line of the newest script;
    // epochs 1 and 3 only (without checkpoints in between they would be
    // rebuilt silently; here each restores the one before it).
    let line = NEWEST.lines().position(|l| l.contains("flor.log(\"b_sq\"")).expect("b_sq line") + 1;
    let at = format!("@{line}");
    let plan = ok(flor(repo, home, &["replay", "--apply", &at, "--iter", "epoch=1,3", "--dry-run"]), "plan @LINE");
    assert!(plan.starts_with("Replay plan for b_sq"), "{plan}");
    assert!(plan.contains("2 outer iterations to execute"), "{plan}");
    ok(flor(repo, home, &["replay", "--apply", &at, "--iter", "epoch=1,3", "--yes"]), "replay @LINE");
    let want: Vec<_> = want_bsq.iter().copied().filter(|&(e, _, _)| e == 1 || e == 3).collect();
    assert_eq!(values(rows(repo, home, "b_sq")), want);

    // The rest of the selections, then everything: the same values as the
    // forward run, each once.
    ok(flor(repo, home, &["replay", "--apply", "b_sq", "--force", "--yes"]), "replay b_sq");
    assert_eq!(values(rows(repo, home, "b_sq")), want_bsq);

    // Bad requests are refused before anything runs, naming what is wrong.
    let err = fails(flor(repo, home, &["replay", "--apply", "b_sq", "--force", "--iter", "batch=last", "--dry-run"]));
    assert!(err.contains("no replayed run has a loop named `batch`") && err.contains("epoch"), "{err}");
    let err = fails(flor(repo, home, &["replay", "--apply", "@1", "--dry-run"]));
    assert!(err.contains("line 1 of train.py is not a flor.log statement") && err.contains(&line.to_string()), "{err}");
    let err = fails(flor(repo, home, &["replay", "--apply", "@x", "--dry-run"]));
    assert!(err.contains("@LINE with a line number"), "{err}");
    let plan =
        ok(flor(repo, home, &["replay", "--apply", "abs_err", "--force", "--iter", "epoch=none", "--dry-run"]), "none");
    assert!(plan.contains("skipped: the --iter selection keeps none of its 6 outer iterations"), "{plan}");
}

/// The estimate of a plan's only run.
fn estimate(plan: &str) -> f64 {
    let at = plan.find("; estimated ").expect("an estimate") + "; estimated ".len();
    plan[at..].split(' ').next().and_then(|s| s.parse().ok()).expect("seconds")
}

/// The stderr of a command that must fail.
fn fails(out: std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure; stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const DEVICE: &str = r#"import flordb as flor

device = flor.arg("device", "cuda")
lr = flor.arg("lr", 0.5)
w = [0.0]
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        w[0] += lr
        flor.log("w", w[0])
"#;

#[test]
fn an_override_changes_an_allowed_arg_and_other_keys_are_refused() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let dir = new_repo(home, DEVICE);
    let repo = dir.path();
    train(&py, repo, home, &["lr=0.25"]);
    let newest = DEVICE.replace(
        "        flor.log(\"w\", w[0])\n",
        "        flor.log(\"w\", w[0])\n        flor.log(\"dev\", device)\n",
    );
    fs::write(repo.join("train.py"), newest).unwrap();

    let plan = ok(flor(repo, home, &["replay", "--apply", "dev", "--override", "device=cpu", "--dry-run"]), "plan");
    assert!(plan.contains("overrides: device=cpu"), "{plan}");
    ok(flor(repo, home, &["replay", "--apply", "dev", "--override", "device=cpu", "--yes"]), "replay");
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", "w", "dev"]), "dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).unwrap();
    let got: Vec<(f64, &str)> = rows.iter().map(|r| (r["w"].as_f64().unwrap(), r["dev"].as_str().unwrap())).collect();
    // The recorded lr (0.25) is kept; only the device differs.
    assert_eq!(got, vec![(0.25, "cpu"), (0.5, "cpu"), (0.75, "cpu")]);

    // A recorded hyper-parameter is refused, and so is a key not allowed.
    let err = fails(flor(repo, home, &["replay", "--apply", "dev", "--force", "--override", "lr=1", "--dry-run"]));
    assert!(
        err.contains("--override lr=...") && err.contains("recorded hyper-parameter") && err.contains("device"),
        "{err}"
    );
    let err = fails(flor(repo, home, &["replay", "--apply", "dev", "--force", "--override", "batch=8", "--dry-run"]));
    assert!(err.contains("not in the list") && err.contains("[replay]"), "{err}");
    let err = fails(flor(repo, home, &["replay", "--apply", "dev", "--force", "--override", "device", "--dry-run"]));
    assert!(err.contains("KEY=VALUE"), "{err}");
    // The list is the project's to set: here nothing may be overridden.
    fs::write(repo.join(".flor/config.toml"), "[replay]\noverrides = []\n").unwrap();
    let err =
        fails(flor(repo, home, &["replay", "--apply", "dev", "--force", "--override", "device=cpu", "--dry-run"]));
    assert!(err.contains("recorded hyper-parameter") && err.contains("overridden: none"), "{err}");

    // FlorDB's positional spelling still works; mixing both is refused.
    fs::remove_file(repo.join(".flor/config.toml")).unwrap();
    let plan = ok(flor(repo, home, &["replay", "dev", "lr > 0", "--force", "--dry-run"]), "positional");
    assert!(plan.starts_with("Replay plan for dev"), "{plan}");
    let err = fails(flor(repo, home, &["replay", "--apply", "dev", "w", "--dry-run"]));
    assert!(err.contains("--where"), "{err}");
}
