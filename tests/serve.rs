//! `flor serve`: every endpoint of its JSON API against a real server
//! (the `flor` binary on an ephemeral port), bad parameters answered with
//! a 4xx JSON error, the token and host checks, and the read-only
//! guarantee (refs, working tree, record files and objects unchanged after
//! every endpoint was asked). Runs are recorded with the Rust API; the
//! demo's Python project (replayed values, propagated statements, the
//! replay plan's text) needs `FLOR_TEST_PYTHON`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flor::Run;
use serde_json::Value as Json;

mod support;
use support::{npy_f64, rust_repo as repo};

/// A `flor serve` process, stopped when dropped.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The printed URL.
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flor serve --port 0 EXTRA...` in `dir` and waits for its URL.
fn serve(dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(["serve", "--port", "0"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run flor serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the URL line");
    let url =
        line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no URL in {line:?}"));
    let addr = url.trim_start_matches("http://").split('/').next().expect("host:port").to_owned();
    Server { child, addr, url: url.to_owned() }
}

/// A response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request (`Connection: close`), with `host` as the Host
/// header.
fn request(addr: &str, method: &str, path: &str, host: &str, extra_headers: &str) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra_headers}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).expect("chunk size");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

fn get(server: &Server, path: &str) -> Response {
    request(&server.addr, "GET", path, &server.addr, "")
}

/// GET `path`, which must answer 200 with JSON.
fn ok(server: &Server, path: &str) -> Json {
    let r = get(server, path);
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"), "{path}");
    r.json()
}

/// GET `path`, which must answer `status` with a JSON error naming `param`
/// (when given) and saying `needle`.
fn bad(server: &Server, path: &str, status: u16, param: Option<&str>, needle: &str) {
    let r = get(server, path);
    assert_eq!(r.status, status, "{path}: {}", String::from_utf8_lossy(&r.body));
    let e = &r.json()["error"];
    assert_eq!(e["status"], status, "{path}");
    let message = e["message"].as_str().expect("a message");
    assert!(message.contains(needle), "{path}: {message:?} lacks {needle:?}");
    assert!(!message.contains("panicked") && !message.contains("RUST_BACKTRACE"), "{path}: {message}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{path}");
    }
}

/// Records a run of `train.rs` with `epochs` × `steps`: `loss` per step
/// (`lr * (step + 1)`), `epoch_loss` per epoch; args lr and epochs.
fn record(dir: &Path, lr: &str, epochs: u64, steps: u64) -> String {
    let argv = ["train".to_owned(), "--kwargs".into(), format!("lr={lr}"), format!("epochs={epochs}")];
    let run = Run::builder().dir(dir).filename("train.rs").argv(argv).interpreter("rustc").start().expect("start");
    let lr = run.arg("lr", 0.0).unwrap();
    let epochs = run.arg("epochs", 0i64).unwrap() as u64;
    for e in run.loop_over("epoch", 0..epochs) {
        for s in run.loop_over("step", 0..steps) {
            run.log("loss", lr * (e * steps + s + 1) as f64);
        }
        run.log("epoch_loss", lr * e as f64);
    }
    let t = run.tstamp();
    run.finish().unwrap();
    t
}

/// What `flor serve` must leave alone: every ref, every file of the
/// working tree, the record files and checkpoint objects under `.flor/`.
fn fingerprint(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let refs = Command::new("git")
        .args(["for-each-ref", "--format=%(refname) %(objectname)"])
        .current_dir(dir)
        .output()
        .unwrap();
    out.insert("refs".to_owned(), refs.stdout);
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(dir).output().unwrap();
    out.insert("HEAD".to_owned(), head.stdout);
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            // The query cache may change; git's own files are checked as refs.
            if rel == ".git"
                || rel.starts_with(".flor/flor.db")
                || rel.starts_with(".flor/flor.duckdb")
                || rel == ".flor/store"
            {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Fails naming what changed between two fingerprints.
fn assert_unchanged(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let changed: Vec<&&String> = keys.iter().filter(|k| before.get(**k) != after.get(**k)).collect();
    assert!(changed.is_empty(), "flor serve changed a ref, a working-tree file or a record: {changed:?}");
}

/// Three runs of two versions of train.rs; the third has 10,000 steps.
fn project() -> (tempfile::TempDir, Vec<String>) {
    let dir = repo();
    let a = record(dir.path(), "0.1", 2, 3);
    let b = record(dir.path(), "0.2", 2, 3);
    std::fs::write(dir.path().join("train.rs"), "fn main() {\n    train();\n}\n").unwrap();
    let c = record(dir.path(), "0.1", 1, 10_000);
    (dir, vec![a, b, c])
}

#[test]
fn every_endpoint_answers_and_nothing_changes() {
    every_endpoint(&[]);
}

/// The same on the DuckDB store (requests take turns with its one open
/// database; none is held between requests).
#[cfg(feature = "duckdb")]
#[test]
fn every_endpoint_answers_on_duckdb() {
    every_endpoint(&["--store", "duckdb"]);
}

fn every_endpoint(store: &[&str]) {
    let (dir, t) = project();
    let before = fingerprint(dir.path());
    let server = serve(dir.path(), store);
    assert!(server.url.starts_with("http://127.0.0.1:"), "{}", server.url);

    let page = get(&server, "/");
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<script src=\"app.js\">"));
    assert_eq!(
        get(&server, "/app.js").headers.get("content-type").map(String::as_str),
        Some("text/javascript; charset=utf-8")
    );
    assert!(ok(&server, "/api")["endpoints"]["/api/curves"].is_string());

    let p = ok(&server, "/api/project");
    assert_eq!(p["runs"], 3);
    assert_eq!(p["scripts"], serde_json::json!(["train.rs"]));

    let runs = ok(&server, "/api/runs");
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["tstamp"].as_str().unwrap()).collect::<Vec<_>>(), t);
    assert_eq!(runs.iter().map(|r| r["version"].as_str().unwrap()).collect::<Vec<_>>(), ["v1", "v1", "v2"]);
    assert_eq!(runs[1]["args"], serde_json::json!({"lr": 0.2, "epochs": 2}));
    assert_eq!(runs[0]["status"], "finished");
    assert_eq!(runs[0]["script"], "train.rs");
    assert!(runs[0]["duration_s"].as_f64().unwrap() >= 0.0);
    assert!(runs[0]["records"].as_u64().unwrap() >= 6 + 2);
    assert_eq!(runs[0]["replayed"], serde_json::json!([]));
    assert!(runs[0]["commit"].is_string());

    let names = ok(&server, "/api/names");
    assert_eq!(names["loops"], serde_json::json!(["epoch", "step"]));
    let loss = names["names"].as_array().unwrap().iter().find(|n| n["name"] == "loss").unwrap();
    assert_eq!((loss["kind"].as_str(), loss["count"].as_u64()), (Some("log"), Some(6 + 6 + 10_000)));

    // Small runs: every step, x counting steps across epochs.
    let path = format!("/api/curves?name=loss&run={}&run={}", t[0], t[1]);
    let c = &ok(&server, &path)["charts"][0];
    assert_eq!(c["downsampled"], false);
    assert_eq!(c["x"], serde_json::json!([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(c["series"].as_array().unwrap().len(), 2, "one series per selected run");
    assert_eq!(c["series"][0]["run"], t[0]);
    assert_eq!(c["series"][1]["y"], serde_json::json!([0.2, 0.4, 0.6, 0.8, 1.0, 1.2]));
    assert_eq!(c["series"][1]["replayed"], "none");
    // By epoch: one value per epoch.
    let c = &ok(&server, &format!("/api/curves?name=epoch_loss&x=epoch&run={}", t[1]))["charts"][0];
    assert_eq!(
        (c["x"].clone(), c["series"][0]["y"].clone()),
        (serde_json::json!([0.0, 1.0]), serde_json::json!([0.0, 0.2]))
    );
    // 10,000 steps into 50 buckets of min and max: the largest value stays.
    let c = &ok(&server, &format!("/api/curves?name=loss&run={}&width=100", t[2]))["charts"][0];
    assert_eq!(c["downsampled"], true);
    assert_eq!(c["x"].as_array().unwrap().len(), 100);
    let ys: Vec<f64> = c["series"][0]["y"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(ys.len(), 100);
    assert!((ys.iter().cloned().fold(0.0, f64::max) - 1000.0).abs() < 1e-3, "{ys:?}");
    assert_eq!(c["series"][0]["points"], 10_000);

    let v = ok(&server, "/api/versions");
    let s = &v["scripts"][0];
    assert_eq!(s["script"], "train.rs");
    let versions = s["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["runs"], serde_json::json!([t[0], t[1]]));
    let diff = versions[1]["diff"].as_str().unwrap();
    assert!(diff.contains("-fn main() {}\n+fn main() {\n+    train();\n+}\n"), "{diff}");
    assert_eq!(s["args"], serde_json::json!(["epochs", "lr"]));
    assert_eq!(s["runs"][1]["changed"], serde_json::json!(["lr"]));
    assert_eq!(s["runs"][2]["changed"], serde_json::json!(["epochs", "lr"]));

    assert_eq!(ok(&server, "/api/replays"), serde_json::json!({"replays": [], "workers_busy": 0}));

    bad_parameters(&server, &t);
    drop(server);
    assert_unchanged(&before, &fingerprint(dir.path()));
}

fn bad_parameters(server: &Server, t: &[String]) {
    bad(server, "/api/curves", 400, Some("name"), "required");
    bad(server, "/api/curves?name=nope", 400, None, "nope");
    bad(server, "/api/curves?name=loss&x=batch", 400, Some("x"), "epoch, step");
    bad(server, "/api/curves?name=loss&width=abc", 400, Some("width"), "whole number");
    bad(server, "/api/curves?name=loss&width=0", 400, Some("width"), "out of range");
    bad(server, "/api/curves?name=loss&x=epoch&x=step", 400, Some("x"), "more than once");
    bad(server, "/api/curves?name=loss&run=1999-01-01T00:00:00.000000", 400, Some("run"), "no run");
    bad(server, "/api/runs?colour=red", 400, Some("colour"), "unknown parameter");
    bad(server, "/api/runs?script=other.py", 400, Some("script"), "train.rs");
    bad(server, "/api/versions?script=other.py", 400, Some("script"), "no run");
    bad(server, "/api/plan", 400, Some("apply"), "required");
    bad(server, "/api/plan?apply=loss&iter=epoch", 400, Some("iter"), "epoch");
    bad(server, "/api/plan?apply=loss&force=maybe", 400, Some("force"), "maybe");
    bad(server, "/api/plan?apply=loss&where=lr%20%3E", 400, None, "predicate");
    bad(server, "/api/nothing", 404, None, "no such");
    bad(server, "/api/curves?name=%ZZ", 400, None, "");
    let r = request(&server.addr, "POST", "/api/runs", &server.addr, "");
    assert_eq!((r.status, r.headers.get("allow").map(String::as_str)), (405, Some("GET, HEAD")));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("read-only"));
    let r = request(&server.addr, "DELETE", &format!("/api/curves?name=loss&run={}", t[0]), &server.addr, "");
    assert_eq!(r.status, 405);
}

#[test]
fn other_hosts_need_the_token() {
    let dir = repo();
    record(dir.path(), "0.1", 1, 1);
    let out = Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"), "{}", String::from_utf8_lossy(&out.stderr));

    let server = serve(dir.path(), &["--host", "127.0.0.1", "--token", "s3cret&x"]);
    assert!(server.url.ends_with("/?token=s3cret%26x"), "{}", server.url);
    assert_eq!(get(&server, "/api/runs").status, 401);
    assert_eq!(get(&server, "/api/runs?token=wrong").status, 401);
    assert_eq!(get(&server, "/api/runs?token=s3cret%26x").status, 200);
    assert_eq!(get(&server, "/?token=s3cret%26x").status, 200);
    // The page's shell and script carry no data: the browser loads them
    // before the page passes its token on to the API.
    assert_eq!(get(&server, "/app.js").status, 200);
    assert_eq!(get(&server, "/api").status, 401);
    let r = request(&server.addr, "GET", "/api/runs", "anywhere.example", "Authorization: Bearer s3cret&x\r\n");
    assert_eq!(r.status, 200, "a bearer token, any host name");
    drop(server);

    // Without a token, a loopback server answers for its own names only
    // (a page elsewhere rebinding its name to 127.0.0.1 is refused).
    let server = serve(dir.path(), &[]);
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    assert_eq!(request(&server.addr, "GET", "/api/runs", &format!("localhost:{port}"), "").status, 200);
    let r = request(&server.addr, "GET", "/api/runs", &format!("evil.example:{port}"), "");
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("evil.example"));
}

/// Checkpoint bytes as they are (here a `.npy` file).
struct Raw;

impl flor::core::checkpoint::CheckpointSerializer<Vec<u8>> for Raw {
    fn format(&self) -> &'static str {
        "npy"
    }
    fn save(&self, state: &Vec<u8>, out: &mut dyn Write) -> Result<(), flor::core::checkpoint::CheckpointError> {
        out.write_all(state).map_err(|e| flor::core::checkpoint::CheckpointError(e.to_string()))
    }
    fn load(&self, state: &mut Vec<u8>, input: &mut dyn Read) -> Result<(), flor::core::checkpoint::CheckpointError> {
        state.clear();
        input.read_to_end(state).map(|_| ()).map_err(|e| flor::core::checkpoint::CheckpointError(e.to_string()))
    }
}

#[test]
fn tensor_statistics_draw_along_the_loop_of_their_checkpoints() {
    let dir = repo();
    let run = Run::builder().dir(dir.path()).filename("train.rs").argv(["train".to_owned()]).start().expect("start");
    for epoch in run.loop_over("epoch", 0..3u32) {
        // mean = epoch + 1.5
        let weights = npy_f64(&[f64::from(epoch) + 1.0, f64::from(epoch) + 2.0]);
        run.log("loss", 1.0 / f64::from(epoch + 1));
        run.checkpoint_with("w", &weights, &Raw).unwrap();
    }
    run.finish().unwrap();
    // Statistics are computed when checkpoints are packed (by any other
    // flor command; flor serve packs nothing).
    support::ok(support::flor(dir.path(), dir.path(), &["checkpoints", "pack"]), "flor checkpoints pack");
    let before = fingerprint(dir.path());
    let server = serve(dir.path(), &[]);
    let names = ok(&server, "/api/names");
    assert_eq!(names["tensors"], serde_json::json!(["w"]));
    assert!(names["tensor_stats"].as_array().unwrap().contains(&serde_json::json!("delta_l2")));
    let c = &ok(&server, "/api/curves?name=tensor:w:mean&name=loss&x=epoch")["charts"];
    assert_eq!(c[0]["name"], "tensor:w:mean");
    assert_eq!(c[0]["x"], serde_json::json!([0.0, 1.0, 2.0]));
    assert_eq!(c[0]["series"][0]["y"], serde_json::json!([1.5, 2.5, 3.5]));
    assert_eq!(c[0]["series"][0]["replayed"], "none");
    assert_eq!(c[1]["name"], "loss");
    bad(&server, "/api/curves?name=tensor:nothing:l2", 400, None, "tensor:w:l2");
    drop(server);
    assert_unchanged(&before, &fingerprint(dir.path()));
}

/// `text` with every decimal number (`0.06`) replaced by `#`.
fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let digits = |mut k: usize| {
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            k
        };
        let end = digits(i);
        if end > i && end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
            out.push('#');
            i = digits(end + 1);
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The demo's project (scripts/demo.sh's first half): three versions of
/// train.py, four runs, grad_norm replayed into all of them.
fn demo(py: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/tests/demo_project.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_flor"))
        .arg(py)
        .env("HOME", dir.path())
        .output()
        .expect("bash");
    support::ok(out, "demo_project.sh");
    dir
}

#[test]
fn the_demo_shows_replayed_values_and_propagated_statements() {
    let Some(py) = support::python() else { return };
    let dir = demo(&py);
    // The command line's plan first (a flor command may pack checkpoints).
    let cli = support::flor(dir.path(), dir.path(), &["replay", "--apply", "grad_norm", "--force", "--dry-run"]);
    let cli = support::ok(cli, "flor replay --dry-run");
    let before = fingerprint(dir.path());
    let server = serve(dir.path(), &[]);

    let runs = ok(&server, "/api/runs");
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["replayed"] == serde_json::json!(["grad_norm"])), "{runs:?}");
    assert_eq!(runs.iter().map(|r| r["version"].as_str().unwrap()).collect::<Vec<_>>(), ["v1", "v1", "v2", "v3"]);

    let c = &ok(&server, "/api/curves?name=grad_norm&name=loss")["charts"];
    let grad = c[0]["series"].as_array().unwrap();
    assert_eq!(grad.len(), 4);
    assert!(grad.iter().all(|s| s["replayed"] == "all" && !s["replay"].as_array().unwrap().is_empty()));
    assert!(c[1]["series"].as_array().unwrap().iter().all(|s| s["replayed"] == "none"));

    let v = ok(&server, "/api/versions");
    let s = &v["scripts"][0];
    assert_eq!(s["names"], serde_json::json!(["grad_norm"]));
    let versions = s["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    for v in versions {
        let st = &v["statements"][0];
        assert!(matches!(st["outcome"].as_str(), Some("placed" | "approximate")), "{v}");
        assert!(st["text"].as_str().unwrap().starts_with("flor.log(\"grad_norm\""), "{st}");
    }
    // Version 2 renamed weights to params: the statement carried into v1 says weights.
    assert!(versions[1]["diff"].as_str().unwrap().contains("params"));
    assert!(s["working_tree"]["diff"].as_str().unwrap().contains("+") && s["working_tree"]["added"].as_u64() > Some(0));

    // The plan: the same text as `flor replay --dry-run`.
    let plan = ok(&server, "/api/plan?apply=grad_norm&force=1");
    // (The estimates come from timings taken as the plan is made.)
    assert_eq!(mask_numbers(plan["text"].as_str().unwrap()), mask_numbers(&cli));
    assert_eq!(plan["runs"].as_array().unwrap().len(), 4);
    let none = ok(&server, "/api/plan?apply=grad_norm");
    assert_eq!(none["empty"], true);
    assert!(none["text"].as_str().unwrap().ends_with("Nothing to replay.\n"));
    bad(&server, "/api/plan?apply=no_such_name", 400, None, "no_such_name");

    drop(server);
    assert_unchanged(&before, &fingerprint(dir.path()));
}
