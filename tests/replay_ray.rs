//! Replay on a Ray cluster (`flor replay --executor ray`), on a real local
//! cluster: a head and a second worker node on 127.0.0.1, one CPU each,
//! no dashboard, a small object store, usage stats off. The second node
//! runs in its own mount namespace where the folder holding the test's
//! repositories is an empty tmpfs, so a segment that depended on a path
//! shared with the orchestrator would fail there; the acceptance scenario
//! runs all its segments on that node and must give exactly what the
//! local executor gives. Then: a segment whose worker dies once is retried,
//! its values exact and not duplicated; a `flor replay` killed after
//! attaching one run resumes with the rest; an unreachable cluster and a node
//! Python without `flordb` are refused before anything runs. The cluster
//! is stopped at the end whatever happens (`ray stop --force`: this stops
//! every Ray process of the machine).
//!
//! Needs `FLOR_TEST_PYTHON` with `flordb` and `ray` (scripts/test.sh
//! installs both); skipped with a message otherwise, except under CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

mod support;
use support::{git, ok, python, train, NEWEST, RUNS, VERSIONS};

/// A slow script (a pause per epoch, so a worker can die mid-segment).
const SLOW: &str = r#"import random
import time

import flordb as flor

seed = flor.arg("seed", 0)
state = {"w": 1.0}
with flor.checkpointing(state=state):
    for epoch in flor.loop("epoch", range(4)):
        rng = random.Random(f"{seed}-{epoch}")
        for step in flor.loop("step", range(3)):
            state["w"] -= 0.1 * rng.random()
        time.sleep(0.3)
        flor.log("w", state["w"])
"#;

/// The local Ray cluster; stopped when dropped.
struct Cluster {
    ray: PathBuf,
    address: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.ray).args(["stop", "--force"]).output();
    }
}

fn ray_cmd(ray: &Path) -> Command {
    let mut c = Command::new(ray);
    c.env("RAY_USAGE_STATS_ENABLED", "0");
    c
}

/// The `ray` command beside `py`, when that Python has Ray.
fn ray_of(py: &str) -> Option<PathBuf> {
    let ray = Path::new(py).parent()?.join("ray");
    let has = Command::new(py).args(["-c", "import ray"]).output().is_ok_and(|o| o.status.success());
    if has && ray.exists() {
        return Some(ray);
    }
    assert!(std::env::var("CI").is_err(), "{py} has no `ray` (scripts/test.sh installs it)");
    eprintln!("SKIPPED: {py} has no `ray` (pip install ray)");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Starts the head, then the second node with `hidden` covered by an empty
/// tmpfs (and a `hidden` resource, so segments can be sent there).
fn start_cluster(ray: &Path, hidden: &Path) -> Cluster {
    let port = free_port();
    let cluster = Cluster { ray: ray.to_owned(), address: format!("127.0.0.1:{port}") };
    let common = ["--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", "100000000"];
    let head = ray_cmd(ray)
        .args(["start", "--head", "--port", &port.to_string(), "--include-dashboard", "false"])
        .args(common)
        .output()
        .expect("ray start");
    ok(head, "ray start --head");
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ns = if root.unwrap_or(false) { "-m" } else { "-rm" };
    let node = format!(
        "mount -t tmpfs tmpfs '{}' && exec '{}' start --address {} {} --resources '{{\"hidden\": 1}}'",
        hidden.display(),
        ray.display(),
        cluster.address,
        common.join(" ")
    );
    let out = Command::new("unshare").args([ns, "sh", "-c", &node]).env("RAY_USAGE_STATS_ENABLED", "0").output();
    ok(out.expect("unshare"), "ray start (the second node, repositories hidden)");
    cluster
}

fn flor_env(repo: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flor"));
    c.args(args).current_dir(repo).env("HOME", home).env("GIT_CONFIG_NOSYSTEM", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run flor")
}

fn new_repo(parent: &Path, home: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir_all(&dir).unwrap();
    git(&dir, home, &["init", "-q", "-b", "main"]);
    dir
}

fn commit(repo: &Path, home: &Path, src: &str, msg: &str) {
    fs::write(repo.join("train.py"), src).unwrap();
    git(repo, home, &["add", "train.py"]);
    git(repo, home, &["commit", "-qm", msg]);
}

/// A copy of `repo` (runs, refs, working tree): the local executor's twin.
fn twin(repo: &Path, name: &str) -> PathBuf {
    let to = repo.with_file_name(name);
    let out = Command::new("cp").arg("-a").arg(repo).arg(&to).output().expect("cp");
    ok(out, "cp -a");
    to
}

/// Runs `flor ARGS` with `FLOR_TEST_PAUSE=point` and kills it (SIGKILL)
/// once it says it paused there.
fn kill_when_paused(repo: &Path, home: &Path, args: &[&str], point: &str) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(args)
        .current_dir(repo)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("FLOR_TEST_PAUSE", point)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run flor");
    let err = child.stderr.take().expect("piped stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wanted = format!("flor: paused at {point}");
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(std::time::Duration::from_secs(180)) {
            Ok(line) if line == wanted => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("flor {args:?} never paused at {point}:\n{}", seen.join("\n"));
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn dataframe(repo: &Path, home: &Path, names: &[&str]) -> Vec<Json> {
    let mut args = vec!["--format", "json", "dataframe"];
    args.extend(names);
    serde_json::from_str(&ok(flor_env(repo, home, &args, &[]), "flor dataframe")).expect("JSON")
}

/// How many values named `name` the project holds.
fn count(repo: &Path, home: &Path, name: &str) -> usize {
    let sql = format!("SELECT count(*) AS n FROM logs WHERE value_name = '{name}'");
    let text = ok(flor_env(repo, home, &["--format", "csv", "query", &sql], &[]), "count");
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("a count")
}

fn refs(repo: &Path, home: &Path) -> String {
    git(repo, home, &["for-each-ref", "refs/flor"])
}

#[test]
fn replay_on_a_ray_cluster_matches_the_local_executor_and_survives_a_dying_worker() {
    let Some(py) = python() else { return };
    let Some(ray) = ray_of(&py) else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let projects = tempfile::Builder::new().prefix("flor-ray-projects").tempdir().expect("tempdir");
    let cluster = start_cluster(&ray, projects.path());
    let address = cluster.address.as_str();

    // The acceptance scenario: five versions, six runs, two statements.
    let repo = new_repo(projects.path(), home, "accept");
    let mut k = 0;
    for (v, src) in VERSIONS.iter().enumerate() {
        commit(&repo, home, src, &format!("version {}", v + 1));
        while k < RUNS.len() && RUNS[k].0 == v {
            train(&py, &repo, home, RUNS[k].1);
            k += 1;
        }
    }
    fs::write(repo.join("train.py"), NEWEST).unwrap();
    let local = twin(&repo, "accept-local");
    let apply = ["replay", "--apply", "abs_err,b_sq", "--yes", "--executor", "ray", "--address", address];
    // Every segment on the node that cannot see the repositories.
    let out = flor_env(&repo, home, &apply, &[("FLOR_RAY_TEST_RESOURCES", r#"{"hidden": 1}"#)]);
    let text = ok(out, "flor replay --executor ray");
    assert!(text.contains("executor: Ray cluster at 127.0.0.1:"), "{text}");
    assert!(text.contains("2 CPUs on 2 nodes"), "{text}");
    assert_eq!(text.matches("match the recorded ones bit for bit").count(), RUNS.len(), "{text}");
    assert!(!text.contains("FAILED") && !text.contains("DIVERGED"), "{text}");
    ok(flor_env(&local, home, &["replay", "--apply", "abs_err,b_sq", "--yes", "--jobs", "2"], &[]), "local replay");
    let (got, want) = (dataframe(&repo, home, &["abs_err", "b_sq"]), dataframe(&local, home, &["abs_err", "b_sq"]));
    assert!(!got.is_empty());
    assert_eq!(got, want, "Ray and the local executor recover the same values, bit for bit");

    // A worker that dies mid-segment: retried, values exact, none twice.
    let repo = new_repo(projects.path(), home, "faults");
    commit(&repo, home, SLOW, "slow");
    for seed in ["seed=1", "seed=2"] {
        train(&py, &repo, home, &[seed]);
    }
    let newest = SLOW.replace(
        "        flor.log(\"w\", state[\"w\"])\n",
        "        flor.log(\"w\", state[\"w\"])\n        flor.log(\"w2\", state[\"w\"] ** 2)\n",
    );
    fs::write(repo.join("train.py"), &newest).unwrap();
    let local = twin(&repo, "faults-local");
    let apply = ["replay", "--apply", "w2", "--yes", "--executor", "ray", "--address", address];
    let out = flor_env(&repo, home, &apply, &[("FLOR_RAY_TEST_FAIL_ONCE", "1")]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = ok(out, "flor replay --executor ray, a worker dying once");
    let segments = err.matches("segments to run").count();
    assert_eq!(segments, 1, "{err}");
    let started = err.matches(" started (estimated").count();
    let finished = err.matches(" values in ").count();
    assert_eq!(started, finished + 1, "one segment started twice (its retry):\n{err}");
    assert_eq!(text.matches("match the recorded ones bit for bit").count(), 2, "{text}");
    ok(flor_env(&local, home, &["replay", "--apply", "w2", "--yes"], &[]), "local replay");
    assert_eq!(dataframe(&repo, home, &["w", "w2"]), dataframe(&local, home, &["w", "w2"]));
    assert_eq!(count(&repo, home, "w2"), 8, "2 runs × 4 epochs, nothing recorded twice");

    // `flor replay` killed once a run is attached: run again, it does only
    // the other run, and no value is there twice.
    let half = "        flor.log(\"w2\", state[\"w\"] ** 2)\n        flor.log(\"half\", state[\"w\"] / 2)\n";
    fs::write(repo.join("train.py"), newest.replace("        flor.log(\"w2\", state[\"w\"] ** 2)\n", half)).unwrap();
    let apply = ["replay", "--apply", "half", "--yes", "--executor", "ray", "--address", address];
    kill_when_paused(&repo, home, &apply, "replay-after-attach");
    let text = ok(flor_env(&repo, home, &apply, &[]), "flor replay after a kill");
    assert_eq!(text.matches("values recovered").count(), 1, "only the run left:\n{text}");
    assert_eq!(count(&repo, home, "half"), 8, "every value of both runs, once");

    // Refused before anything runs: an unreachable cluster...
    fs::write(
        repo.join("train.py"),
        SLOW.replace("state[\"w\"])\n", "state[\"w\"])\n        flor.log(\"w3\", -state[\"w\"])\n"),
    )
    .unwrap();
    let before = refs(&repo, home);
    let nowhere = format!("127.0.0.1:{}", free_port());
    let out =
        flor_env(&repo, home, &["replay", "--apply", "w3", "--yes", "--executor", "ray", "--address", &nowhere], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the Ray cluster at 127.0.0.1:"), "{err}");
    // ...and nodes whose Python lacks flordb.
    fs::create_dir_all(repo.join(".flor")).unwrap();
    fs::write(repo.join(".flor/config.toml"), "[replay]\nexecutor = \"ray\"\nray_python = \"/usr/bin/python3\"\n")
        .unwrap();
    let out = flor_env(&repo, home, &["replay", "--apply", "w3", "--yes", "--address", address], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lacks flordb") && err.contains("/usr/bin/python3"), "{err}");
    assert_eq!(refs(&repo, home), before, "nothing was attached");
    drop(cluster);
}
