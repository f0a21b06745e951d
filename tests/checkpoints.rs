//! Checkpoint upkeep end to end: runs recorded in real temporary git
//! repositories (in this process, with the Rust API) whose checkpoints are
//! safetensors and `.npy` files stored whole, as a store without formats
//! (a plugin format's checkpoint before packing) stores them; then the
//! `flor` binary packs them, fills the `tensors` view, verifies, collects
//! garbage and rebuilds.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use flor::core::checkpoint::{CheckpointError, CheckpointSerializer};
use flor::core::formats::FormatRegistry;
use flor::core::ObjectStore;
use flor::{Project, Run};
use serde_json::Value as Json;

mod support;
use support::npy_f64;

fn repo(config: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("flor-ckpt").tempdir().expect("tempdir");
    let ok = Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status().expect("git");
    assert!(ok.success());
    std::fs::write(dir.path().join("train.rs"), "fn main() {}\n").unwrap();
    std::fs::create_dir_all(dir.path().join(".flor")).unwrap();
    std::fs::write(dir.path().join(".flor/config.toml"), config).unwrap();
    dir
}

/// No packing on its own: the tests say when.
const MANUAL: &str = "[checkpoints]\nauto_pack_mb = 0\n";

fn flor(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flor"))
        .args(args)
        .current_dir(dir)
        .env("FLOR_PLUGIN_DIR", dir.join("no-user-plugins"))
        .output()
        .expect("run flor")
}

fn flor_ok(dir: &Path, args: &[&str]) -> (String, String) {
    let out = flor(dir, args);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "flor {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}

fn flor_json(dir: &Path, args: &[&str]) -> Vec<Json> {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let (text, _) = flor_ok(dir, &a);
    match serde_json::from_str(&text) {
        Ok(Json::Array(rows)) => rows,
        other => panic!("not a JSON array: {other:?}\n{text}"),
    }
}

/// Checkpoint bytes as they are (a safetensors or `.npy` file).
struct Raw(&'static str);

impl CheckpointSerializer<Vec<u8>> for Raw {
    fn format(&self) -> &'static str {
        self.0
    }
    fn save(&self, state: &Vec<u8>, out: &mut dyn std::io::Write) -> Result<(), CheckpointError> {
        out.write_all(state).map_err(|e| CheckpointError(e.to_string()))
    }
    fn load(&self, state: &mut Vec<u8>, input: &mut dyn std::io::Read) -> Result<(), CheckpointError> {
        state.clear();
        input.read_to_end(state).map(|_| ()).map_err(|e| CheckpointError(e.to_string()))
    }
}

/// A tensor: name, safetensors dtype, shape, bytes.
type Tensor = (&'static str, &'static str, Vec<u64>, Vec<u8>);

fn safetensors(tensors: &[Tensor]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            (*name).into(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + bytes.len()]}),
        );
        at += bytes.len();
    }
    let header = Json::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
    }
    out
}

fn f32s(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

/// The model at `epoch`: a frozen 256 KiB f32 tensor, a head that changes
/// (with a NaN and an infinity in epoch 1), a small f16 tensor.
fn model(seed: u32, epoch: u32) -> Vec<u8> {
    let frozen = f32s((0..65_536u32).map(|i| ((i % 977) as f32 - 488.0) / 100.0));
    let mut head: Vec<f32> = (0..32_768u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / 1e6) * (1.0 + (seed + epoch) as f32))
        .collect();
    if epoch == 1 {
        head[5] = f32::NAN;
        head[77] = f32::INFINITY;
    }
    let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x3555, 0x0001].iter().flat_map(|h| h.to_le_bytes()).collect();
    safetensors(&[
        ("backbone.weight", "F32", vec![256, 256], frozen),
        ("head.weight", "F32", vec![128, 256], f32s(head.into_iter())),
        ("head.scale", "F16", vec![4], halves),
    ])
}

fn optimizer(epoch: u32) -> Vec<u8> {
    npy_f64(&(0..20_000).map(|i| f64::from(i) * 1e-3 + f64::from(epoch)).collect::<Vec<_>>())
}

/// Records a run of `epochs` epochs checkpointing `model` and `opt`, their
/// objects stored whole first (as a store without formats would).
fn record(dir: &Path, seed: u32, epochs: u32) -> String {
    let whole = ObjectStore::open(dir.join(".flor/objects")).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    let run = Run::builder()
        .dir(dir)
        .filename("train.rs")
        .argv(["train".to_owned()])
        .interpreter("rustc")
        .start()
        .expect("start");
    for epoch in run.loop_over("epoch", 0..epochs) {
        let (m, o) = (model(seed, epoch), optimizer(epoch));
        whole.put(&m).unwrap();
        whole.put(&o).unwrap();
        run.log("loss", 1.0 / f64::from(epoch + 1));
        run.checkpoint_with("model", &m, &Raw("safetensors")).unwrap();
        run.checkpoint_with("opt", &o, &Raw("npy")).unwrap();
    }
    let tstamp = run.tstamp();
    run.finish().unwrap();
    tstamp
}

/// Statistics computed here, plainly: (l2, mean, std, min, max, nonfinite).
fn plain_stats(values: &[f64]) -> (f64, f64, f64, f64, f64, u64) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let l2 = finite.iter().map(|v| v * v).sum::<f64>().sqrt();
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (l2, mean, var.sqrt(), min, max, (values.len() - finite.len()) as u64)
}

/// The elements of each tensor of a checkpoint, widened.
fn tensors_of(name: &str, bytes: &[u8]) -> HashMap<String, Vec<f64>> {
    let mut out = HashMap::new();
    if name == "opt" {
        let data = &bytes[bytes.len() - 20_000 * 8..];
        out.insert(String::new(), data.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect());
        return out;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Json = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for (t, info) in header.as_object().unwrap() {
        let offs = &info["data_offsets"];
        let data = &bytes[8 + n + offs[0].as_u64().unwrap() as usize..8 + n + offs[1].as_u64().unwrap() as usize];
        let v: Vec<f64> = match info["dtype"].as_str().unwrap() {
            "F32" => data.chunks(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
            "F16" => data.chunks(2).map(|c| f16(u16::from_le_bytes(c.try_into().unwrap()))).collect(),
            other => panic!("{other}"),
        };
        out.insert(t.clone(), v);
    }
    out
}

/// Half precision, decoded here independently (via the definition).
fn f16(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let (exp, man) = (i32::from((h >> 10) & 0x1f), f64::from(h & 0x3ff));
    match exp {
        0 => sign * man * 2f64.powi(-24),
        31 if man == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + man / 1024.0) * 2f64.powi(e - 15),
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn num(v: &Json) -> Option<f64> {
    v.as_f64()
}

/// Checks every row of the `tensors` view against statistics computed
/// here from the checkpoints' bytes.
fn check_tensors_view(dir: &Path, runs: &[(String, u32, u32)]) {
    let rows = flor_json(
        dir,
        &[
            "query",
            "SELECT tstamp, ctx_id, checkpoint, tensor, dtype, shape, bytes, l2, mean, std, min, max, \
                   nonfinite, delta_l2 FROM tensors ORDER BY tstamp, ctx_id, checkpoint, tensor",
        ],
    );
    let mut want = 0;
    for (tstamp, seed, epochs) in runs {
        let mut prev: HashMap<(String, String), Vec<f64>> = HashMap::new();
        for epoch in 0..*epochs {
            for (name, bytes) in [("model", model(*seed, epoch)), ("opt", optimizer(epoch))] {
                for (tensor, values) in tensors_of(name, &bytes) {
                    want += 1;
                    // One epoch loop: the context of epoch e is e.
                    let row = rows
                        .iter()
                        .find(|r| {
                            r["tstamp"] == tstamp.as_str()
                                && r["checkpoint"] == name
                                && r["tensor"] == tensor.as_str()
                                && r["ctx_id"].as_u64() == Some(u64::from(epoch))
                        })
                        .unwrap_or_else(|| panic!("no row for {tstamp} {name}.{tensor} epoch {epoch}"));
                    let (l2, mean, std, min, max, nonfinite) = plain_stats(&values);
                    let what = format!("{tstamp} {name}.{tensor} epoch {epoch}: {row}");
                    assert!(close(num(&row["l2"]).unwrap(), l2), "l2 {what}");
                    assert!(close(num(&row["mean"]).unwrap(), mean), "mean {what}");
                    assert!(close(num(&row["std"]).unwrap(), std), "std {what}");
                    assert_eq!(num(&row["min"]).unwrap(), min, "min, to the last bit: {what}");
                    assert_eq!(num(&row["max"]).unwrap(), max, "max, to the last bit: {what}");
                    assert_eq!(row["nonfinite"].as_u64().unwrap(), nonfinite, "{what}");
                    let item = match (name, tensor.as_str()) {
                        ("opt", _) => 8,
                        (_, "head.scale") => 2,
                        _ => 4,
                    };
                    assert_eq!(row["bytes"].as_u64(), Some((values.len() * item) as u64), "{what}");
                    match prev.insert((name.to_owned(), tensor.clone()), values.clone()) {
                        None => assert!(row["delta_l2"].is_null(), "no earlier checkpoint: {what}"),
                        Some(old) => {
                            let d: f64 = values
                                .iter()
                                .zip(&old)
                                .filter(|(a, b)| a.is_finite() && b.is_finite())
                                .map(|(a, b)| (a - b) * (a - b))
                                .sum::<f64>()
                                .sqrt();
                            assert!(close(num(&row["delta_l2"]).unwrap(), d), "delta_l2 {what}: want {d}");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(rows.len(), want, "one row per tensor of every checkpoint");
}

#[test]
fn packing_reads_back_bit_for_bit_and_fills_the_tensors_view() {
    let repo = repo(MANUAL);
    let dir = repo.path();
    let a = record(dir, 1, 3);
    let b = record(dir, 2, 2);

    // Stored whole: nothing packed until asked.
    let listed = flor_json(dir, &["checkpoints", "ls"]);
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|c| c["stored"] == "whole"), "{listed:?}");
    assert!(flor_json(dir, &["query", "SELECT * FROM tensors"]).is_empty());

    let (out, _) = flor_ok(dir, &["checkpoints", "pack"]);
    assert!(out.contains("7 packed") || out.contains("packed ("), "{out}");
    assert!(out.contains("stored the tensors of 10 checkpoint(s)"), "{out}");
    let listed = flor_json(dir, &["checkpoints", "ls", &a]);
    assert_eq!(listed.len(), 6);
    for c in &listed {
        assert_eq!(c["stored"], "packed", "{c}");
        assert!(c["tensors"].as_u64().unwrap() >= 1, "{c}");
    }

    // Every reader reads them as before, with no format.
    let project = Project::open(dir).unwrap();
    let bare = ObjectStore::open(dir.join(".flor/objects")).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    for (tstamp, seed, epochs) in [(&a, 1, 3), (&b, 2, 2)] {
        let ckpts = project.checkpoints(tstamp).unwrap();
        for (k, c) in ckpts.iter().enumerate() {
            let epoch = (k / 2) as u32;
            let want = if c.name == "model" { model(seed, epoch) } else { optimizer(epoch) };
            assert!(project.objects().manifest(&c.digest).unwrap().is_some(), "{} packed", c.name);
            assert_eq!(bare.get_sized(&c.digest, c.bytes).unwrap(), want, "{tstamp} {} epoch {epoch}", c.name);
        }
        let mut last = Vec::new();
        project.load_checkpoint_with(tstamp, "model", &mut last, &Raw("safetensors")).unwrap();
        assert_eq!(last, model(seed, epochs - 1));
    }
    // The frozen tensor is one chunk for all five model checkpoints.
    let frozen: std::collections::HashSet<String> = project
        .checkpoints(&a)
        .unwrap()
        .iter()
        .chain(project.checkpoints(&b).unwrap().iter())
        .filter(|c| c.name == "model")
        .map(|c| project.objects().manifest(&c.digest).unwrap().unwrap().chunks[1].digest.clone())
        .collect();
    assert_eq!(frozen.len(), 1);
    drop(project);

    check_tensors_view(dir, &[(a.clone(), 1, 3), (b.clone(), 2, 2)]);

    // Tensor statistics as dataframe names, next to logged values.
    let df =
        flor_json(dir, &["dataframe", "loss", "tensor:model.head.weight:l2", "tensor:model.backbone.weight:delta_l2"]);
    assert_eq!(df.len(), 5);
    for r in &df {
        assert!(r["tensor:model.head.weight:l2"].as_f64().unwrap() > 0.0, "{r}");
        match r["epoch"].as_u64().unwrap() {
            0 => assert!(r["tensor:model.backbone.weight:delta_l2"].is_null(), "{r}"),
            _ => assert_eq!(r["tensor:model.backbone.weight:delta_l2"].as_f64(), Some(0.0), "frozen: {r}"),
        }
    }
    // The `.npy` array has no name: its checkpoint's name stands for it.
    let df = flor_json(dir, &["dataframe", "tensor:opt:mean"]);
    let means: Vec<f64> = df.iter().map(|r| r["tensor:opt:mean"].as_f64().unwrap()).collect();
    let want: Vec<f64> = [(0, 3), (1, 2)]
        .iter()
        .flat_map(|&(_, epochs)| (0..epochs).map(|e| plain_stats(&tensors_of("opt", &optimizer(e))[""]).1))
        .collect();
    assert_eq!(means.len(), want.len());
    assert!(means.iter().zip(&want).all(|(a, b)| close(*a, *b)), "{means:?} vs {want:?}");
    let err = flor(dir, &["dataframe", "tensor:model.nothing:l2"]);
    assert!(!err.status.success());
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(text.contains("tensor:model.nothing:l2") && text.contains("tensor:model.head.weight:l2"), "{text}");

    // Inspect by run, name and iteration: manifest, tensors, statistics.
    let (text, _) = flor_ok(dir, &["checkpoints", "inspect", &a, "model", "1"]);
    assert!(text.contains("packed by safetensors") && text.contains("head.weight"), "{text}");
    assert!(text.contains("used by  run"), "{text}");
    let tensors = flor_json(dir, &["checkpoints", "inspect", &a, "opt"]);
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0]["dtype"], "f64");

    let (out, _) = flor_ok(dir, &["checkpoints", "verify"]);
    assert!(out.contains("0 damaged, 0 missing"), "{out}");
    // Packing again changes nothing.
    let (out, _) = flor_ok(dir, &["checkpoints", "pack"]);
    assert!(out.contains("looked at 0 object(s)"), "{out}");
}

#[test]
fn every_command_packs_a_bounded_part_until_all_are_packed() {
    // One mebibyte per command: about one checkpoint each.
    let repo = repo("[checkpoints]\nauto_pack_mb = 1\n");
    let dir = repo.path();
    let a = record(dir, 3, 3);
    let mut commands = 0;
    loop {
        let (_, err) = flor_ok(dir, &["runs"]);
        commands += 1;
        let listed = flor_json(dir, &["checkpoints", "ls"]);
        commands += 1;
        let whole = listed.iter().filter(|c| c["stored"] == "whole").count();
        if whole == 0 {
            break;
        }
        assert!(commands < 20, "still {whole} whole after {commands} commands: {err}");
    }
    assert!(commands > 2, "the budget spreads the work over several commands");
    check_tensors_view(dir, &[(a, 3, 3)]);
}

#[test]
fn gc_keeps_what_runs_name_and_deletes_the_rest() {
    let repo = repo(MANUAL);
    let dir = repo.path();
    let a = record(dir, 1, 2);
    flor_ok(dir, &["checkpoints", "pack"]);
    let objects = ObjectStore::open(dir.join(".flor/objects")).unwrap();
    // Objects no run names: one chunked (sharing the frozen tensor's chunk
    // with the runs' checkpoints), one whole, and its tensor index.
    let stray = objects.put(&model(9, 7)).unwrap();
    let stray_whole = objects.put(b"nobody names me").unwrap();
    flor_ok(dir, &["checkpoints", "inspect", &stray.digest]);
    let index = dir.join(".flor/objects/tensors").join(&stray.digest[..2]).join(format!("{}.json", &stray.digest[2..]));
    assert!(index.is_file());
    // An object only a record file outside git names (a run not yet
    // published, a broken file) is kept too.
    let unpublished = objects.put(b"a run that has not been published names me").unwrap();
    std::fs::create_dir_all(dir.join(".flor/broken")).unwrap();
    std::fs::write(
        dir.join(".flor/broken/x.jsonl"),
        format!("{{\"k\":\"ckpt\",\"n\":\"state\",\"digest\":\"{}\",\"bytes\":42}}\n", unpublished.digest),
    )
    .unwrap();
    let files_before = objects.stored_files().unwrap().len();

    // Recent files are kept; a dry run deletes nothing.
    let (out, _) = flor_ok(dir, &["checkpoints", "gc"]);
    assert!(out.contains("deleted 0 object"), "{out}");
    let (out, _) = flor_ok(dir, &["checkpoints", "gc", "--dry-run", "--grace", "0"]);
    assert!(
        out.contains("would delete 3 object and chunk file(s)"),
        "the manifest, its own head chunk, the whole one: {out}"
    );
    assert_eq!(objects.stored_files().unwrap().len(), files_before);

    let (out, _) = flor_ok(dir, &["checkpoints", "gc", "--grace", "0"]);
    assert!(out.contains("deleted 3 object and chunk file(s)") && out.contains("1 tensor index file(s)"), "{out}");
    assert!(!objects.contains(&stray.digest) && !objects.contains(&stray_whole.digest));
    assert!(objects.contains(&unpublished.digest));
    assert!(!index.exists());
    // Everything the run names still reads, chunks shared with the stray
    // object included.
    let project = Project::open(dir).unwrap();
    for (k, c) in project.checkpoints(&a).unwrap().iter().enumerate() {
        let epoch = (k / 2) as u32;
        let want = if c.name == "model" { model(1, epoch) } else { optimizer(epoch) };
        assert_eq!(objects.get(&c.digest).unwrap(), want);
    }
    let (out, _) = flor_ok(dir, &["checkpoints", "verify"]);
    assert!(out.contains("0 damaged, 0 missing"), "{out}");
}

#[test]
fn verify_names_a_corrupted_chunk_and_a_missing_object() {
    let repo = repo(MANUAL);
    let dir = repo.path();
    let a = record(dir, 1, 2);
    flor_ok(dir, &["checkpoints", "pack"]);
    let project = Project::open(dir).unwrap();
    let ckpts = project.checkpoints(&a).unwrap();
    let model0 = &ckpts[0];
    let manifest = project.objects().manifest(&model0.digest).unwrap().unwrap();
    let head = &manifest.chunks[2];
    let chunk_path = dir.join(".flor/objects").join(&head.digest[..2]).join(&head.digest[2..]);
    std::fs::write(&chunk_path, zstd_of(&vec![0u8; head.bytes as usize])).unwrap();
    let opt1 = &ckpts[3];
    std::fs::remove_file(dir.join(".flor/objects").join(&opt1.digest[..2]).join(&opt1.digest[2..])).unwrap();

    let out = flor(dir, &["checkpoints", "verify"]);
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("damaged  {}", model0.digest)) && text.contains(&head.digest), "{text}");
    assert!(text.contains(&format!("missing  {}", opt1.digest)) && text.contains("checkpoint `opt`"), "{text}");
    assert!(text.contains("1 damaged, 1 missing"), "{text}");
}

/// A zstd frame of `bytes` (a well-formed file with the wrong content).
fn zstd_of(bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let w = ObjectStore::open(dir.path()).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    let id = w.put(bytes).unwrap();
    std::fs::read(w.root().join(&id.digest[..2]).join(&id.digest[2..])).unwrap()
}

#[test]
fn rebuild_restores_the_tensors_view_and_a_clone_without_objects_says_so() {
    let repo = repo(MANUAL);
    let dir = repo.path();
    let a = record(dir, 1, 2);
    flor_ok(dir, &["checkpoints", "pack"]);
    let sql = "SELECT * FROM tensors ORDER BY tstamp, ctx_id, checkpoint, tensor";
    let before = flor_json(dir, &["query", sql]);
    assert_eq!(before.len(), 8);
    // With packing off, the view comes back from the tensor indexes alone.
    let (_, err) = flor_ok(dir, &["rebuild"]);
    assert!(err.contains("tensors of 4 checkpoint(s) restored"), "{err}");
    assert_eq!(flor_json(dir, &["query", sql]), before);
    check_tensors_view(dir, &[(a, 1, 2)]);

    // A clone has the run refs but not .flor/objects.
    let clone = tempfile::tempdir().unwrap();
    let ok = Command::new("git")
        .args(["clone", "-q", &dir.display().to_string(), "."])
        .current_dir(clone.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("git")
        .args(["fetch", "-q", "origin", "refs/flor/*:refs/flor/*"])
        .current_dir(clone.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let (_, err) = flor_ok(clone.path(), &["rebuild"]);
    assert!(err.contains("4 checkpoint(s) of 1 run(s) have no object in .flor/objects"), "{err}");
    assert!(flor_json(clone.path(), &["query", "SELECT * FROM tensors"]).is_empty());
    let listed = flor_json(clone.path(), &["checkpoints", "ls"]);
    assert!(listed.iter().all(|c| c["stored"] == "missing"), "{listed:?}");
    assert_eq!(flor(clone.path(), &["checkpoints", "verify"]).status.code(), Some(7));
}

/// The same with the DuckDB store: the tensors view, tensor names in the
/// dataframe (the shared pivot), rebuild from the indexes.
#[cfg(feature = "duckdb")]
#[test]
fn the_duckdb_store_keeps_the_same_tensors() {
    let repo = repo("store = \"duckdb\"\n[checkpoints]\nauto_pack_mb = 0\n");
    let dir = repo.path();
    let a = record(dir, 1, 2);
    flor_ok(dir, &["checkpoints", "pack"]);
    check_tensors_view(dir, &[(a.clone(), 1, 2)]);
    let df = flor_json(dir, &["dataframe", "loss", "tensor:model.backbone.weight:delta_l2"]);
    assert_eq!(df.len(), 2);
    assert_eq!(df[1]["tensor:model.backbone.weight:delta_l2"].as_f64(), Some(0.0));
    let (_, err) = flor_ok(dir, &["rebuild"]);
    assert!(err.contains("tensors of 4 checkpoint(s) restored"), "{err}");
    check_tensors_view(dir, &[(a, 1, 2)]);
}

/// Widens one element of `dtype` (the plugins' dtype names), here,
/// independently of flor-core; `None` for dtypes without statistics.
fn widen(dtype: &str, b: &[u8]) -> Option<f64> {
    Some(match dtype {
        "f64" => f64::from_le_bytes(b.try_into().ok()?),
        "f32" => f64::from(f32::from_le_bytes(b.try_into().ok()?)),
        "f16" => f16(u16::from_le_bytes(b.try_into().ok()?)),
        "bf16" => f64::from(f32::from_bits(u32::from(u16::from_le_bytes(b.try_into().ok()?)) << 16)),
        "i64" => i64::from_le_bytes(b.try_into().ok()?) as f64,
        "i32" => f64::from(i32::from_le_bytes(b.try_into().ok()?)),
        "i16" => f64::from(i16::from_le_bytes(b.try_into().ok()?)),
        "i8" => f64::from(b[0] as i8),
        "u8" => f64::from(b[0]),
        "bool" => f64::from(u8::from(b[0] != 0)),
        _ => return None,
    })
}

/// A PyTorch `torch.save` archive (a fixture the pytorch plugin's tests
/// use too) is described by the built-in plugin: every tensor of the
/// fixture's sidecar in the `tensors` view, statistics computed natively
/// from the plugin's layout, the plugin named by `inspect`.
#[test]
fn a_plugin_format_is_described_through_the_plugin() {
    let fixtures =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
            .join("tests/fixtures/torch");
    let archive = std::fs::read(fixtures.join("mixed_dtypes.pt")).unwrap();
    let sidecar: Json = serde_json::from_slice(&std::fs::read(fixtures.join("mixed_dtypes.json")).unwrap()).unwrap();
    let repo = repo(MANUAL);
    let dir = repo.path();
    let run = Run::builder().dir(dir).filename("train.rs").argv(["train"]).start().unwrap();
    for _ in run.loop_over("epoch", 0..1) {
        run.checkpoint_with("model", &archive, &Raw("torch")).unwrap();
    }
    let tstamp = run.tstamp();
    run.finish().unwrap();

    let (out, _) = flor_ok(dir, &["checkpoints", "pack"]);
    assert!(out.contains("1 kept whole") && out.contains("single chunk"), "a small archive: {out}");
    let rows =
        flor_json(dir, &["query", "SELECT tensor, dtype, shape, bytes, l2, mean, min, max, nonfinite FROM tensors"]);
    let tensors = sidecar["tensors"].as_array().unwrap();
    assert_eq!(rows.len(), tensors.len(), "{rows:?}");
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let row = rows.iter().find(|r| r["tensor"] == name).unwrap_or_else(|| panic!("no row for {name}: {rows:?}"));
        let dtype = t["dtype"].as_str().unwrap();
        assert_eq!(row["dtype"], dtype, "{name}");
        assert_eq!(row["shape"].as_str().unwrap(), serde_json::to_string(&t["shape"]).unwrap(), "{name}");
        let (at, len) = (t["offset"].as_u64().unwrap() as usize, t["length"].as_u64().unwrap() as usize);
        assert_eq!(row["bytes"].as_u64(), Some(len as u64), "{name}");
        let size = match dtype {
            "f64" | "i64" | "c64" => 8,
            "f32" | "i32" => 4,
            "f16" | "bf16" | "i16" => 2,
            "c128" => 16,
            _ => 1,
        };
        let values: Option<Vec<f64>> = archive[at..at + len].chunks(size).map(|b| widen(dtype, b)).collect();
        let Some(values) = values else {
            assert!(row["l2"].is_null() && row["nonfinite"].is_null(), "{name}: no statistics for {dtype}");
            continue;
        };
        if values.is_empty() {
            assert_eq!((row["l2"].as_f64(), row["mean"].is_null()), (Some(0.0), true), "{name}");
            continue;
        }
        let (l2, mean, _, min, max, nonfinite) = plain_stats(&values);
        assert!(close(row["l2"].as_f64().unwrap(), l2), "{name}: {row}");
        assert!(close(row["mean"].as_f64().unwrap(), mean), "{name}: {row}");
        assert_eq!((row["min"].as_f64(), row["max"].as_f64()), (Some(min), Some(max)), "{name}");
        assert_eq!(row["nonfinite"].as_u64(), Some(nonfinite), "{name}");
    }
    let (text, _) = flor_ok(dir, &["checkpoints", "inspect", &tstamp, "model"]);
    assert!(text.contains("format   torch.zip") && text.contains("plugin   pytorch"), "{text}");
}

/// `torch.save` archives of three epochs (the fixture writer, no torch): a
/// frozen 256 KiB f32 tensor and a head that changes.
fn torch_archives(python: &str, dir: &Path) -> Vec<Vec<u8>> {
    let fixtures =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
            .join("tests/fixtures");
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
import torchsave as ts
frozen = ts.ramp("f32", [256, 256], 0.5)
for epoch in range(3):
    head = ts.ramp("f32", [64, 256], float(epoch))
    data, _ = ts.save(ts.state_dict([("backbone.weight", frozen), ("head.weight", head)]))
    open("%s/epoch%d.pt" % (sys.argv[2], epoch), "wb").write(data)
"#;
    let out = Command::new(python).arg("-c").arg(script).arg(&fixtures).arg(dir).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (0..3).map(|e| std::fs::read(dir.join(format!("epoch{e}.pt"))).unwrap()).collect()
}

/// Checkpoints in a plugin's format (PyTorch's `torch.save`), which a run
/// stores whole (runs know only the native formats), are packed by the
/// built-in plugin: chunks per tensor, the frozen one shared by every
/// epoch, the plugin recorded in the manifest, bit-identical reads, and
/// delta_l2 0 for the frozen tensor.
#[test]
fn checkpoints_in_a_plugin_format_are_packed_by_the_plugin() {
    let Some(python) = support::python() else { return };
    let repo = repo(MANUAL);
    let dir = repo.path();
    let scratch = tempfile::tempdir().unwrap();
    let archives = torch_archives(&python, scratch.path());
    let run = Run::builder().dir(dir).filename("train.rs").argv(["train"]).start().unwrap();
    for epoch in run.loop_over("epoch", 0..3usize) {
        run.checkpoint_with("model", &archives[epoch], &Raw("torch")).unwrap();
    }
    let tstamp = run.tstamp();
    run.finish().unwrap();
    let listed = flor_json(dir, &["checkpoints", "ls"]);
    assert!(listed.iter().all(|c| c["stored"] == "whole"), "a run stores them whole: {listed:?}");

    flor_ok(dir, &["checkpoints", "pack"]);
    let project = Project::open(dir).unwrap();
    let ckpts = project.checkpoints(&tstamp).unwrap();
    let manifests: Vec<_> =
        ckpts.iter().map(|c| project.objects().manifest(&c.digest).unwrap().expect("packed")).collect();
    for (m, (c, bytes)) in manifests.iter().zip(ckpts.iter().zip(&archives)) {
        assert_eq!(m.format, "torch.zip");
        assert_eq!(m.plugin.as_ref().map(|p| p.plugin.as_str()), Some("pytorch"), "the plugin is recorded");
        assert_eq!(&project.objects().get_sized(&c.digest, c.bytes).unwrap(), bytes, "bit for bit");
    }
    let chunk_sets: Vec<std::collections::HashSet<&str>> =
        manifests.iter().map(|m| m.chunks.iter().map(|c| c.digest.as_str()).collect()).collect();
    let shared: Vec<&&str> =
        chunk_sets[0].iter().filter(|d| chunk_sets[1].contains(**d) && chunk_sets[2].contains(**d)).collect();
    assert!(!shared.is_empty(), "the frozen tensor's chunk is stored once");
    let df = flor_json(
        dir,
        &[
            "dataframe",
            "tensor:model.head.weight:l2",
            "tensor:model.backbone.weight:delta_l2",
            "tensor:model.head.weight:delta_l2",
        ],
    );
    assert_eq!(df.len(), 3);
    assert!(df[0]["tensor:model.head.weight:delta_l2"].is_null(), "no earlier checkpoint");
    for r in &df[1..] {
        assert_eq!(r["tensor:model.backbone.weight:delta_l2"].as_f64(), Some(0.0), "{r}");
        // The head moves by 1.0 in each of its 16,384 elements.
        assert!(close(r["tensor:model.head.weight:delta_l2"].as_f64().unwrap(), 128.0), "{r}");
    }
}
