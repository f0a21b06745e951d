//! Acceptance test of hindsight replay: a pure-Python training script
//! evolves through five committed versions (a renamed variable, an extracted
//! function, an added inner loop, changed hyper-parameters), six runs are
//! recorded with different `--kwargs` and RNG use inside the epoch loop, and
//! the newest version (uncommitted) gains a statement inside the inner loop
//! and one at epoch level. `flor replay --apply ... --yes --jobs 2` must
//! recover every value, bit for bit what a forward run of each old version
//! with the statements inserted by hand logs, leave git untouched, and a
//! second invocation must replay nothing.
//!
//! Needs a Python with the `flordb` module: `FLOR_TEST_PYTHON` (the README's
//! test command, `scripts/test.sh`, sets it). Without it the test is skipped
//! with a message, except under CI, where it fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;

mod support;
use support::{flor, git, ok, python, train, NEWEST, RUNS, VERSIONS};

/// Per run (in tstamp order): `(epoch, step, abs_err, b_sq)` rows.
type Values = Vec<(i64, i64, f64, f64)>;

fn replayed_values(repo: &Path, home: &Path) -> Vec<Values> {
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", "abs_err", "b_sq"]), "flor dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).expect("dataframe JSON");
    let mut by_run: BTreeMap<String, Values> = BTreeMap::new();
    for r in rows {
        let t = r["tstamp"].as_str().expect("tstamp").to_owned();
        let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("run {t}: no `{k}` in {r}"));
        let row = (r["epoch"].as_i64().expect("epoch"), r["step"].as_i64().expect("step"), num("abs_err"), num("b_sq"));
        by_run.entry(t).or_default().push(row);
    }
    by_run.into_values().collect()
}

/// The statements inserted by hand into an old version, the way a person
/// would edit it (independent of the propagator).
fn by_hand(version: &str) -> String {
    let dict = if version.contains("params[\"w\"]") { "params" } else { "state" };
    let mut out = String::new();
    for line in version.lines() {
        out.push_str(line);
        out.push('\n');
        let t = line.trim_start();
        if t.starts_with("flor.log(\"loss\"") {
            out.push_str(&format!("{}flor.log(\"abs_err\", abs(err))\n", &line[..line.len() - t.len()]));
        }
        if t.starts_with("flor.log(\"w\"") {
            out.push_str(&format!("{}flor.log(\"b_sq\", {dict}[\"b\"] ** 2)\n", &line[..line.len() - t.len()]));
        }
    }
    out
}

/// A fresh repository (`prefix` names its folder); with `script`, that
/// script committed as `train.py`.
fn new_repo(home: &Path, prefix: &str, script: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
    git(dir.path(), home, &["init", "-q", "-b", "main"]);
    if let Some(src) = script {
        fs::write(dir.path().join("train.py"), src).unwrap();
        git(dir.path(), home, &["add", "train.py"]);
        git(dir.path(), home, &["commit", "-qm", "train.py"]);
    }
    dir
}

/// A forward run of `version` edited by hand, in its own repository.
fn forward_by_hand(py: &str, home: &Path, version: &str, kwargs: &[&str]) -> tempfile::TempDir {
    let dir = new_repo(home, "flor-forward", Some(&by_hand(version)));
    train(py, dir.path(), home, kwargs);
    dir
}

#[test]
fn replay_recovers_every_value_of_every_version_bit_for_bit() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let dir = new_repo(home, "flor-replay", None);
    let repo = dir.path();

    // Record: each version committed, then its runs.
    let mut k = 0;
    for (v, src) in VERSIONS.iter().enumerate() {
        fs::write(repo.join("train.py"), src).unwrap();
        git(repo, home, &["add", "train.py"]);
        git(repo, home, &["commit", "-qm", &format!("version {}", v + 1)]);
        while k < RUNS.len() && RUNS[k].0 == v {
            train(&py, repo, home, RUNS[k].1);
            k += 1;
        }
    }
    // The newest version gains the two statements (not committed).
    fs::write(repo.join("train.py"), NEWEST).unwrap();
    let head = git(repo, home, &["rev-parse", "HEAD"]);
    let branch = git(repo, home, &["symbolic-ref", "HEAD"]);
    let status = git(repo, home, &["status", "--porcelain"]);

    // The plan alone changes nothing.
    let plan = ok(flor(repo, home, &["replay", "--apply", "abs_err,b_sq", "--dry-run"]), "flor replay --dry-run");
    assert!(plan.contains("6 runs to replay"), "{plan}");
    assert!(plan.contains("renamed state -> params"), "{plan}");
    assert!(plan.contains("Dry run"), "{plan}");
    // Without a terminal and without --yes: stops with a message.
    let refused = flor(repo, home, &["replay", "--apply", "abs_err,b_sq"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let out = ok(flor(repo, home, &["replay", "--apply", "abs_err,b_sq", "--yes", "--jobs", "2"]), "flor replay");
    assert!(out.contains("Replay summary"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    // Divergence check: the old `loss` and `w` statements re-ran along with
    // the new ones and recomputed exactly what each run recorded.
    assert!(!out.contains("DIVERGED"), "{out}");
    assert_eq!(out.matches("match the recorded ones bit for bit").count(), RUNS.len(), "{out}");
    assert!(out.contains("of loss, w match"), "{out}");

    // Git untouched.
    assert_eq!(git(repo, home, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(repo, home, &["symbolic-ref", "HEAD"]), branch);
    assert_eq!(git(repo, home, &["status", "--porcelain"]), status);

    // Every value, bit for bit what the hand-edited old version logs.
    let got = replayed_values(repo, home);
    assert_eq!(got.len(), RUNS.len(), "every run has replayed values");
    for (i, (v, kwargs)) in RUNS.iter().enumerate() {
        let scratch = forward_by_hand(&py, home, VERSIONS[*v], kwargs);
        let want = replayed_values(scratch.path(), home);
        assert_eq!(want.len(), 1);
        assert!(!want[0].is_empty());
        assert_eq!(
            got[i],
            want[0],
            "run {i} (version {}, --kwargs {kwargs:?}): replayed values differ from a forward run",
            v + 1
        );
    }

    let flagged = ok(
        flor(repo, home, &["--format", "csv", "query", "SELECT count(*) AS n FROM logs WHERE diverged = 1"]),
        "query diverged",
    );
    assert_eq!(flagged.trim(), "n\n0", "no value is flagged diverged");

    // Again: nothing to do.
    let again = ok(flor(repo, home, &["replay", "--apply", "abs_err,b_sq", "--yes", "--jobs", "2"]), "second replay");
    assert!(again.contains("Nothing to replay"), "{again}");
    assert_eq!(git(repo, home, &["status", "--porcelain"]), status);
}

/// `(epoch, step or -1, value)` of one name, for the only run.
fn one_name(repo: &Path, home: &Path, name: &str) -> Vec<(i64, i64, f64)> {
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", name]), "flor dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).expect("dataframe JSON");
    rows.iter()
        .map(|r| {
            (
                r["epoch"].as_i64().expect("epoch"),
                r.get("step").and_then(Json::as_i64).unwrap_or(-1),
                r[name].as_f64().unwrap_or_else(|| panic!("no `{name}` in {r}")),
            )
        })
        .collect()
}

#[test]
fn skipped_inner_loops_and_parallel_segments_reproduce_forward_values() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let dir = new_repo(home, "flor-replay", Some(VERSIONS[3]));
    let repo = dir.path();
    let kwargs = ["epochs=6", "seed=5"];
    train(&py, repo, home, &kwargs);
    fs::write(repo.join("train.py"), NEWEST).unwrap();

    // The expected values: the old version edited by hand, run forward.
    let scratch = forward_by_hand(&py, home, VERSIONS[3], &kwargs);
    let s = scratch.path();

    // An epoch-level statement: every epoch runs with its nested loops
    // replaced by the checkpoint taken at its end (objects and RNG states).
    let plan = ok(flor(repo, home, &["replay", "--apply", "b_sq", "--dry-run"]), "plan");
    assert!(plan.contains("nested loops skipped by checkpoint restore"), "{plan}");
    ok(flor(repo, home, &["replay", "--apply", "b_sq", "--yes", "--jobs", "1"]), "replay b_sq");
    let want = one_name(s, home, "b_sq");
    assert_eq!(want.len(), 6);
    assert_eq!(one_name(repo, home, "b_sq"), want);

    // A statement in the inner loop, over three workers: three segments,
    // each starting from the checkpoint before it.
    let plan = ok(flor(repo, home, &["replay", "--apply", "abs_err", "--jobs", "3", "--dry-run"]), "plan");
    // Three segments on an idle machine; the planner joins segments when it
    // measures a slow interpreter start (a loaded machine), never below two.
    assert!(plan.contains("in 3 segments") || plan.contains("in 2 segments"), "{plan}");
    ok(flor(repo, home, &["replay", "--apply", "abs_err", "--yes", "--jobs", "3"]), "replay abs_err");
    let want = one_name(s, home, "abs_err");
    assert_eq!(want.len(), 6 * 6);
    assert_eq!(one_name(repo, home, "abs_err"), want);
}

/// A script whose momentum state is not checkpointed: a replay that skips
/// the inner loop by restoring the checkpoint cannot recompute the recorded
/// `speed`, and says so.
#[test]
fn a_replay_that_recomputes_a_recorded_value_differently_is_flagged_diverged() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let script = include_str!("replay/diverge.py");
    let dir = new_repo(home, "flor-replay", Some(script));
    let repo = dir.path();
    train(&py, repo, home, &[]);
    let newest = script.replace(
        "        flor.log(\"speed\", velocity[\"w\"])\n",
        "        flor.log(\"speed\", velocity[\"w\"])\n        flor.log(\"b_abs\", abs(params[\"b\"]))\n",
    );
    assert_ne!(newest, script);
    fs::write(repo.join("train.py"), newest).unwrap();

    let plan = ok(flor(repo, home, &["replay", "--apply", "b_abs", "--dry-run"]), "plan");
    assert!(plan.contains("divergence check: recomputed values of loss, speed are compared"), "{plan}");

    // --strict: a divergence fails the run and nothing is attached.
    let strict = flor(repo, home, &["replay", "--apply", "b_abs", "--yes", "--strict"]);
    let out = String::from_utf8_lossy(&strict.stdout);
    assert_eq!(strict.status.code(), Some(5), "{out}");
    assert!(out.contains("FAILED: its replay diverged"), "{out}");
    let none = flor(repo, home, &["dataframe", "b_abs"]);
    assert!(!none.status.success(), "no b_abs value was stored: {none:?}");

    // By default the values are kept, flagged, and the first difference named.
    let out = ok(flor(repo, home, &["replay", "--apply", "b_abs", "--yes"]), "replay");
    assert!(out.contains("check: DIVERGED: 3 of 3 recomputed values of speed differ"), "{out}");
    assert!(out.contains("first: speed at epoch 0: recorded "), "{out}");
    assert!(out.contains("replayed 0.0"), "the momentum never moved in replay:\n{out}");
    assert!(out.contains("not checkpointed") || out.contains("does not hold"), "the usual causes:\n{out}");
    let rows = ok(
        flor(
            repo,
            home,
            &["--format", "csv", "query", "SELECT value_name, source, diverged FROM logs WHERE value_name IN ('b_abs', 'speed') ORDER BY value_name, ctx_id"],
        ),
        "query logs",
    );
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[0], "value_name,source,diverged");
    assert_eq!(lines[1..4], ["b_abs,replay,1", "b_abs,replay,1", "b_abs,replay,1"], "{rows}");
    assert_eq!(lines[4..], ["speed,forward,0", "speed,forward,0", "speed,forward,0"], "{rows}");
    let checks = ok(
        flor(
            repo,
            home,
            &[
                "--format",
                "csv",
                "query",
                "SELECT replay, sum(compared), sum(differing), min(first_at) FROM replay_checks GROUP BY replay",
            ],
        ),
        "query replay_checks",
    );
    assert_eq!(checks.lines().nth(1), Some("1,3,3,epoch 0"), "one row per segment, summed:\n{checks}");
    let df = ok(flor(repo, home, &["--format", "json", "dataframe", "--diverged", "b_abs"]), "dataframe --diverged");
    let rows: Vec<Json> = serde_json::from_str(&df).expect("json");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["diverged"] == Json::Bool(true)), "{df}");

    // Leaving `speed` out of the check: nothing else is recomputed (the
    // inner loops are skipped), and the summary says nothing could be checked.
    let out =
        ok(flor(repo, home, &["replay", "--apply", "b_abs", "--yes", "--force", "--no-check", "speed"]), "replay");
    assert!(out.contains("nothing could be checked"), "{out}");
    assert!(!out.contains("DIVERGED"), "{out}");
}

#[test]
fn a_crashing_run_is_reported_and_the_next_replay_does_only_what_is_missing() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    // Version 4, which crashes in replay when CRASH_SEED names its seed.
    let crashing = VERSIONS[3].replace(
        "        total = 0.0\n",
        "        import os\n        if os.environ.get(\"CRASH_SEED\") == str(seed) and epoch == 1:\n            raise RuntimeError(\"the data loader broke\")\n        total = 0.0\n",
    );
    assert_ne!(crashing, VERSIONS[3]);
    let dir = new_repo(home, "flor-replay", Some(&crashing));
    let repo = dir.path();
    for seed in ["seed=1", "seed=2", "seed=3"] {
        train(&py, repo, home, &[seed]);
    }
    fs::write(repo.join("train.py"), NEWEST).unwrap();

    // --where narrows the runs with a predicate over the run-level columns.
    let plan = ok(flor(repo, home, &["replay", "--apply", "abs_err", "--where", "seed >= 2", "--dry-run"]), "plan");
    assert!(plan.contains("2 runs to replay"), "{plan}");
    let bad = flor(repo, home, &["replay", "--apply", "abs_err", "--where", "seed >", "--dry-run"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("predicate `seed >`"), "{bad:?}");
    let unknown = flor(repo, home, &["replay", "--apply", "nope", "--dry-run"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("flor.log(\"nope\""), "{unknown:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(["replay", "--apply", "abs_err", "--yes", "--jobs", "2"])
        .current_dir(repo)
        .env("HOME", home)
        .env("CRASH_SEED", "2")
        .output()
        .expect("run flor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "exit status 5 when a run failed:\n{stdout}");
    assert!(stdout.contains("FAILED: the script crashed"), "{stdout}");
    assert!(stdout.contains("the data loader broke"), "the last lines of stderr:\n{stdout}");
    assert_eq!(stdout.matches("values recovered").count(), 2, "{stdout}");

    // The same command again replays only the run that failed.
    let plan = ok(flor(repo, home, &["replay", "--apply", "abs_err", "--dry-run"]), "plan");
    assert!(plan.contains("1 run to replay"), "{plan}");

    // While another process replays a run (it holds the run's lock), a second
    // `flor replay` leaves that run alone and says why.
    let held: Vec<fs::File> = fs::read_dir(repo.join(".flor/locks"))
        .expect("replay lock files")
        .map(|e| {
            let f = fs::OpenOptions::new().write(true).open(e.expect("lock entry").path()).expect("open lock");
            f.lock().expect("take lock");
            f
        })
        .collect();
    assert_eq!(held.len(), 3, "one lock file per replayed run");
    let busy = flor(repo, home, &["replay", "--apply", "abs_err", "--yes", "--jobs", "2"]);
    let busy_out = String::from_utf8_lossy(&busy.stdout);
    assert_eq!(busy.status.code(), Some(5), "{busy_out}");
    assert!(busy_out.contains("another `flor replay` is replaying run"), "{busy_out}");
    drop(held);
    let plan = ok(flor(repo, home, &["replay", "--apply", "abs_err", "--dry-run"]), "plan");
    assert!(plan.contains("1 run to replay"), "the busy run was left alone:\n{plan}");
    let again = ok(flor(repo, home, &["replay", "--apply", "abs_err", "--yes", "--jobs", "2"]), "second replay");
    assert_eq!(again.matches("values recovered").count(), 1, "{again}");
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", "abs_err"]), "dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).expect("json");
    assert_eq!(rows.len(), 3 * 3 * 6, "3 runs x 3 epochs x 6 steps");
    assert!(rows.iter().all(|r| r["abs_err"].as_f64().is_some()));
    assert!(!repo.join(".flor/replay").exists(), "nothing left behind once every run is published");
}

#[test]
fn a_version_that_cannot_take_the_statements_is_listed_and_skipped() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    // An early version that computes no `err`: `abs(err)` cannot go there.
    let dir = new_repo(home, "flor-replay", Some(include_str!("replay/unrelated.py")));
    let repo = dir.path();
    train(&py, repo, home, &[]);
    fs::write(repo.join("train.py"), VERSIONS[3]).unwrap();
    git(repo, home, &["commit", "-qam", "v4"]);
    train(&py, repo, home, &[]);
    fs::write(repo.join("train.py"), NEWEST).unwrap();

    let out = flor(repo, home, &["replay", "--apply", "abs_err", "--yes", "--jobs", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("FAILED: unbound name: `err`"), "the reason, per statement:\n{stdout}");
    assert!(stdout.contains("skipped: propagation failed"), "{stdout}");
    assert_eq!(stdout.matches("values recovered").count(), 1, "the other version proceeds:\n{stdout}");
}

/// A project on the DuckDB store: the Python module (built without DuckDB)
/// records, `flor replay` (built with it) replays, answers come from DuckDB.
#[cfg(feature = "duckdb")]
#[test]
fn recording_and_replay_work_in_a_duckdb_project() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let dir = new_repo(home, "flor-replay", Some(VERSIONS[3]));
    let repo = dir.path();
    fs::create_dir_all(repo.join(".flor")).unwrap();
    fs::write(repo.join(".flor/config.toml"), "store = \"duckdb\"\n").unwrap();
    train(&py, repo, home, &["epochs=2"]);
    train(&py, repo, home, &["epochs=2", "seed=4"]);
    fs::write(repo.join("train.py"), NEWEST).unwrap();
    ok(flor(repo, home, &["replay", "--apply", "abs_err,b_sq", "--yes", "--jobs", "2"]), "replay on duckdb");
    assert!(ok(flor(repo, home, &["store"]), "flor store").contains("duckdb"));
    let got = replayed_values(repo, home);
    assert_eq!(got.len(), 2);
    let want = replayed_values(forward_by_hand(&py, home, VERSIONS[3], &["epochs=2"]).path(), home);
    assert_eq!(got[0], want[0]);
}

#[test]
fn replayed_scripts_see_the_data_git_ignores() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let script = "import flordb as flor\n\
                  xs = [float(l) for l in open(\"data/xs.txt\")]\n\
                  total = 0.0\n\
                  with flor.checkpointing(xs=xs):\n\
                  \x20   for e in flor.loop(\"epoch\", range(2)):\n\
                  \x20       for x in flor.loop(\"step\", xs):\n\
                  \x20           total += x * (e + 1)\n\
                  \x20       flor.log(\"total\", total)\n";
    let dir = new_repo(home, "flor-replay", None);
    let repo = dir.path();
    fs::write(repo.join(".gitignore"), "data/\n").unwrap();
    fs::create_dir(repo.join("data")).unwrap();
    fs::write(repo.join("data/xs.txt"), "1.5\n2.5\n").unwrap();
    fs::write(repo.join("train.py"), script).unwrap();
    git(repo, home, &["add", "."]);
    git(repo, home, &["commit", "-qm", "v1"]);
    train(&py, repo, home, &[]);
    // A run of a file no propagator handles (no `.py`) is left out of the replay.
    fs::write(repo.join("job"), "import flordb as flor\nflor.log(\"y\", 0)\n").unwrap();
    let out = Command::new(&py).arg("job").current_dir(repo).env("HOME", home).output().expect("python");
    ok(out, "job");
    let newest = script.replace(
        "            total += x * (e + 1)\n",
        "            total += x * (e + 1)\n            flor.log(\"x2\", x * 2)\n",
    );
    assert_ne!(newest, script);
    fs::write(repo.join("train.py"), newest).unwrap();
    ok(flor(repo, home, &["replay", "--apply", "x2", "--yes", "--jobs", "1"]), "replay");
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", "x2"]), "dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).expect("json");
    let got: Vec<f64> =
        rows.iter().filter(|r| r["filename"] == "train.py").map(|r| r["x2"].as_f64().expect("x2")).collect();
    assert_eq!(got, [3.0, 5.0, 3.0, 5.0]);
}

/// The epoch loop every entry-point script shares (indented for inside a
/// `with flor.checkpointing(...)` block): it traces what runs to `$TRACE`.
const ENTRY_LOOP: &str = r#"    for epoch in LOOP("epoch", range(4)):
        trace(f"epoch {epoch}")
        for step in LOOP("step", range(3)):
            trace(f"step {epoch} {step}")
            state["w"] = state["w"] * 0.9 + step * scale
            LOG("loss", state["w"])
        LOG("acc", state["w"] * 2)
"#;

const ENTRY_PRELUDE: &str = r#"import os, subprocess, sys
# A child that imports flordb (a data-loader worker) is not the segment.
subprocess.run([sys.executable, "-c", "import flordb"], check=True)
state = {"w": 1.0}
def trace(what):
    with open(os.environ["TRACE"], "a") as f:
        f.write(what + "\n")
"#;

/// A script whose first flor call is `entry`.
fn entry_script(entry: &str) -> String {
    let flor_loop = ENTRY_LOOP.replace("LOOP", "flor.loop").replace("LOG", "flor.log");
    let body = match entry {
        "arg" => format!(
            "import flordb as flor\n{ENTRY_PRELUDE}scale = flor.arg(\"scale\", 1.0)\nwith flor.checkpointing(state=state):\n{flor_loop}"
        ),
        "checkpointing" => format!(
            "import flordb as flor\n{ENTRY_PRELUDE}scale = 1.0\nwith flor.checkpointing(state=state):\n{flor_loop}"
        ),
        "log" => format!(
            "import flordb as flor\n{ENTRY_PRELUDE}scale = 1.0\nflor.log(\"scale\", scale)\nwith flor.checkpointing(state=state):\n{flor_loop}"
        ),
        "import" => format!(
            "from flordb import checkpointing, log, loop\n{ENTRY_PRELUDE}scale = 1.0\nwith checkpointing(state=state):\n{}",
            ENTRY_LOOP.replace("LOOP", "loop").replace("LOG", "log")
        ),
        // No checkpoints: a replay runs every iteration, once.
        "loop" => format!(
            "import flordb as flor\n{ENTRY_PRELUDE}scale = 1.0\nif True:\n{flor_loop}"
        ),
        "iteration" => format!(
            "import flordb as flor\n{ENTRY_PRELUDE}scale = 1.0\nif True:\n{}",
            ENTRY_LOOP
                .replacen("for epoch in LOOP(\"epoch\", range(4)):", "for epoch in range(4):\n      with flor.iteration(\"epoch\", epoch, None):", 1)
                .replace("LOOP", "flor.loop")
                .replace("LOG", "flor.log")
                .replace("\n        ", "\n          ")
        ),
        other => panic!("no entry {other}"),
    };
    body
}

#[test]
fn a_replay_does_what_its_plan_says_whatever_the_scripts_first_flor_call() {
    // A replay worker must know it replays before the script's first flor
    // call, whichever it is: the plan's segments, restores and skipped
    // nested loops then happen, and nothing runs twice.
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    for entry in ["arg", "checkpointing", "log", "import", "loop", "iteration"] {
        let script = entry_script(entry);
        let dir = new_repo(home, "flor-entry", Some(&script));
        let repo = dir.path();
        let forward_trace = home.join(format!("{entry}-forward.trace"));
        let out = Command::new(&py)
            .arg("train.py")
            .current_dir(repo)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("TRACE", &forward_trace)
            .output()
            .expect("run python");
        ok(out, &format!("{entry}: forward run"));
        // The newest version logs the weight at the end of every epoch.
        let newest = script.replacen("\"acc\", state[\"w\"] * 2)\n", "\"acc\", state[\"w\"] * 2)\n        LOGW\n", 1);
        let indent = if entry == "iteration" { "          " } else { "        " };
        let log = if entry == "import" { "log" } else { "flor.log" };
        let newest = newest.replace("        LOGW", &format!("{indent}{log}(\"w_epoch\", state[\"w\"])"));
        assert_ne!(newest, script, "{entry}: the statement was added");
        fs::write(repo.join("train.py"), &newest).unwrap();

        let checkpointed = !matches!(entry, "loop" | "iteration");
        let plan = ok(flor(repo, home, &["replay", "--apply", "w_epoch", "--jobs", "2", "--dry-run"]), "plan");
        let segments = if checkpointed { "in 2 segments" } else { "in 1 segment" };
        assert!(plan.contains(segments), "{entry}: {plan}");
        let trace = home.join(format!("{entry}-replay.trace"));
        let out = Command::new(env!("CARGO_BIN_EXE_flor"))
            .args(["replay", "--apply", "w_epoch", "--yes", "--jobs", "2"])
            .current_dir(repo)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("TRACE", &trace)
            .output()
            .expect("run flor");
        let summary = ok(out, &format!("{entry}: flor replay"));
        assert!(summary.contains("4 values recovered"), "{entry}: {summary}");

        // What ran: each epoch once; nested loops only without checkpoints.
        let ran = fs::read_to_string(&trace).unwrap_or_default();
        let mut epochs: Vec<&str> = ran.lines().filter(|l| l.starts_with("epoch")).collect();
        epochs.sort();
        assert_eq!(epochs, ["epoch 0", "epoch 1", "epoch 2", "epoch 3"], "{entry}: {ran}");
        let steps = ran.lines().filter(|l| l.starts_with("step")).count();
        assert_eq!(steps, if checkpointed { 0 } else { 12 }, "{entry}: nested steps run\n{ran}");

        // The values: w_epoch is acc / 2 at every epoch, bit for bit.
        let text = ok(flor(repo, home, &["--format", "json", "dataframe", "acc", "w_epoch"]), "dataframe");
        let rows: Vec<Json> = serde_json::from_str(&text).expect("json");
        assert_eq!(rows.len(), 4, "{entry}: {text}");
        for r in &rows {
            let (acc, w) = (r["acc"].as_f64(), r["w_epoch"].as_f64());
            assert!(acc.is_some() && w.map(|w| w * 2.0) == acc, "{entry}: {r}");
        }
    }
}

/// The plan shows each replayed version's source checks: here a
/// checkpointed name the loop rebinds, so replay would restore stale state.
#[test]
fn the_plan_shows_what_the_source_checks_find_in_each_version() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let script = "import flordb as flor\n\nw = [0.0, 0.0]\nwith flor.checkpointing(w=w):\n    for epoch in \
                  flor.loop(\"epoch\", range(3)):\n        w = [x + 0.5 for x in w]\n        flor.log(\"w0\", w[0])\n";
    let dir = new_repo(home, "flor-replay-lint", Some(script));
    let repo = dir.path();
    train(&py, repo, home, &[]);
    let newest = script.replace(
        "        flor.log(\"w0\", w[0])\n",
        "        flor.log(\"w0\", w[0])\n        flor.log(\"w1\", w[1])\n",
    );
    fs::write(repo.join("train.py"), newest).unwrap();

    let stdout = ok(flor(repo, home, &["replay", "--apply", "w1", "--dry-run"]), "flor replay --dry-run");
    assert!(
        stdout.contains(
            "  source checks (replayed values may differ from the recorded ones):\n    line 6: \
             warning[flor::rebound-checkpoint]: `w` is passed to flor.checkpointing at line 4"
        ),
        "{stdout}"
    );
}

/// A statement whose neighbour was edited since the run: the plan says it
/// was placed next to an edited counterpart, names both statements, and
/// the replay recovers the values the old code computes there.
#[test]
fn a_statement_after_an_edited_line_is_placed_approximately_and_replayed() {
    let Some(py) = python() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let old = "import flordb as flor\n\nw = 0.0\nfor epoch in flor.loop(\"epoch\", range(3)):\n    \
               grad = 2 * (w - 3.0)\n    w = w - 0.1 * grad\n    flor.log(\"w\", w)\n";
    let dir = new_repo(home, "flor-replay-edited", Some(old));
    let repo = dir.path();
    train(&py, repo, home, &[]);
    let newest = "import flordb as flor\n\nw = 0.0\nlr = flor.arg(\"lr\", 0.1)\nfor epoch in flor.loop(\"epoch\", \
                  range(3)):\n    grad = 2.0 * (w - 3.0) * 1.0\n    flor.log(\"grad\", grad)\n    w = w - lr * grad\n    \
                  flor.log(\"w\", w)\n";
    fs::write(repo.join("train.py"), newest).unwrap();

    let plan = ok(flor(repo, home, &["replay", "--apply", "grad", "--dry-run"]), "flor replay --dry-run");
    assert!(
        plan.contains(
            "line 7 of the newest version: placed at line 6 after an edited counterpart: `grad = 2 * (w - 3.0)` \
             (line 5, "
        ),
        "{plan}"
    );
    assert!(plan.contains("similar to `grad = 2.0 * (w - 3.0) * 1.0` at line 6 of the newest version)"), "{plan}");
    assert!(plan.contains("1 statement placed next to code edited since"), "{plan}");
    let out = ok(flor(repo, home, &["replay", "--apply", "grad", "--yes"]), "flor replay");
    assert!(!out.contains("FAILED") && !out.contains("DIVERGED"), "{out}");
    let text = ok(flor(repo, home, &["--format", "json", "dataframe", "grad"]), "flor dataframe");
    let rows: Vec<Json> = serde_json::from_str(&text).expect("dataframe JSON");
    let grads: Vec<f64> = rows.iter().map(|r| r["grad"].as_f64().expect("grad")).collect();
    // The old code's gradient: w = 0, 0.6, 1.08.
    assert_eq!(grads, [-6.0, 2.0 * (0.6 - 3.0), 2.0 * (0.6 + 0.48 - 3.0)], "{text}");
}
