//! Data-driven tests over `tests/fixtures/jax/` (repository root): files
//! real flax, optax, NumPy and flordb wrote (`generate.py` there), each laid
//! out and compared with what the writer's side knows (`expected.json`:
//! names, dtypes, shapes, byte ranges); and lint cases, Python scripts whose
//! expected findings are marked `# expect: CODE` on their lines.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use flor_plugin_jax::Jax;
use flor_plugin_sdk::{Plugin, Severity, TensorLayout};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("../../tests/fixtures/jax")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("expected.json is JSON") {
        Value::Object(m) => m,
        other => panic!("expected.json is not an object: {other}"),
    }
}

/// `(name, dtype, shape, offset, length)` of every tensor.
fn rows(l: &TensorLayout) -> Vec<(String, String, Vec<u64>, u64, u64)> {
    l.tensors.iter().map(|t| (t.name.clone(), t.dtype.clone(), t.shape.clone(), t.offset, t.length)).collect()
}

fn expected_rows(case: &Value) -> Vec<(String, String, Vec<u64>, u64, u64)> {
    let tensors = case["tensors"].as_array().expect("tensors");
    tensors
        .iter()
        .map(|t| {
            let shape = t["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim")).collect();
            let s = |k: &str| t[k].as_str().expect(k).to_owned();
            let n = |k: &str| t[k].as_u64().expect(k);
            (s("name"), s("dtype"), shape, n("offset"), n("length"))
        })
        .collect()
}

#[test]
fn every_fixture_is_sniffed_and_laid_out_as_its_writer_wrote_it() {
    let cases = expected();
    assert!(cases.len() >= 10, "generate.py writes a dozen fixtures");
    for (file, case) in &cases {
        let data = fs::read(fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(data.len() as u64, case["size"].as_u64().unwrap(), "{file}: size");
        let format = case["format"].as_str().unwrap();
        assert_eq!(Jax::sniff(&data[..data.len().min(64)]).as_deref(), Some(format), "{file}: sniff");
        let l = Jax::layout(format, &data).unwrap_or_else(|e| panic!("{file}: {e}"));
        l.check(data.len() as u64).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(rows(&l), expected_rows(case), "{file}: tensors");
        // Tensors and metadata cover every byte exactly once.
        let mut spans: Vec<(u64, u64)> = l.tensors.iter().map(|t| (t.offset, t.length)).collect();
        spans.extend(l.metadata.iter().map(|m| (m.offset, m.length)));
        spans.retain(|s| s.1 > 0);
        spans.sort();
        let mut at = 0;
        for (offset, length) in spans {
            assert_eq!(offset, at, "{file}: gap or overlap at byte {at}");
            at += length;
        }
        assert_eq!(at, data.len() as u64, "{file}: coverage");
    }
}

#[test]
fn fixtures_the_writers_made_hold_the_tensors_a_user_expects() {
    let cases = expected();
    let names = |file: &str| -> BTreeSet<String> {
        expected_rows(&cases[file]).into_iter().map(|r| format!("{} {}", r.0, r.1)).collect()
    };
    // flax: parameters and optimizer state by path; bf16 and f8 by flor's names.
    let flax = names("flax_state.msgpack");
    for want in [
        "params/Dense_0/kernel f32",
        "opt_state/0/mu/Dense_1/bias f32",
        "opt_state/0/count i32",
        "emb bf16",
        "f8 f8_e4m3",
        "lr f32",
        "mask bool",
    ] {
        assert!(flax.contains(want), "flax_state.msgpack lacks {want}: {flax:?}");
    }
    // flor.pytree: the key as its data, Python scalars, a big int kept as `pyint`.
    let tree = names("state.flor-pytree");
    for want in
        ["key u32", "legacy_key u32", "epoch i64", "loss f64", "done bool", "huge pyint", "big_endian f32", "emb bf16"]
    {
        assert!(tree.contains(want), "state.flor-pytree lacks {want}: {tree:?}");
    }
    // npz: a big-endian entry keeps numpy's spelling; compressed entries are no tensors.
    assert!(names("arrays.npz").contains("big_endian >f8"));
    assert!(names("compressed.npz").is_empty());
    assert!(names("structured.npy").is_empty());
}

#[test]
fn truncated_or_corrupted_fixtures_are_errors_never_panics() {
    for (file, case) in &expected() {
        let data = fs::read(fixtures().join(file)).unwrap();
        let format = case["format"].as_str().unwrap();
        // Cutting into a tensor (or a header: the first 64 bytes) is an error.
        let must_fail = expected_rows(case).iter().map(|r| r.3 + r.4).max().unwrap_or(0).max(64);
        for cut in 0..data.len() {
            let answer = Jax::layout(format, &data[..cut].to_vec());
            assert!(answer.is_err() || cut as u64 >= must_fail, "{file} cut at {cut} was accepted");
        }
        for at in 0..data.len() {
            for flip in [0x00, 0xff, 0x80] {
                let mut bad = data.clone();
                bad[at] = flip;
                let _ = Jax::layout(format, &bad); // any answer but a panic
                let _ = Jax::sniff(&bad[..bad.len().min(64)]);
            }
        }
    }
}

/// `(line, code)` of each `# expect: CODE` mark.
fn marks(text: &str) -> BTreeSet<(u32, String)> {
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((_, code)) = line.split_once("# expect: ") {
            out.insert((i as u32 + 1, code.trim().to_owned()));
        }
    }
    out
}

#[test]
fn lint_cases_find_what_their_marks_say() {
    let dir = fixtures().join("lint");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.retain(|p| p.extension().is_some_and(|e| e == "py"));
    cases.sort();
    assert!(cases.len() >= 8, "lint cases in {}", dir.display());
    for path in cases {
        let text = fs::read_to_string(&path).unwrap();
        let findings = Jax::lint("python", &path.display().to_string(), &text);
        let got: BTreeSet<(u32, String)> = findings.iter().map(|f| (f.line, f.code.clone())).collect();
        assert_eq!(got, marks(&text), "{}: {findings:#?}", path.display());
        for f in &findings {
            let line = text.lines().nth(f.line as usize - 1).unwrap();
            let indent = line.chars().take_while(|c| c.is_whitespace()).count() as u32;
            assert_eq!(f.column, indent + 1, "{}: a finding points at its statement", path.display());
            assert!(f.message.len() > 40 && f.hint.contains("flor.checkpointing"), "{f:?}");
            assert_eq!(f.severity, Severity::Warning);
        }
        assert!(Jax::lint("rust", "x.rs", &text).is_empty());
    }
}

#[test]
fn lint_takes_any_text_without_panicking() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("../..");
    let mut texts: Vec<String> = Vec::new();
    for dir in ["tests/fixtures/jax/lint", "tests/replay", "examples/python", "examples"] {
        for e in fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "py") {
                texts.push(fs::read_to_string(&p).unwrap());
            }
        }
    }
    texts.extend(
        ["(a)[0] = 1", "((a, b), [c]) = f()", "for in x:", "with a as (b, c), d as e: pass", "x = (", "from import"]
            .map(String::from),
    );
    for text in &texts {
        let _ = Jax::lint("python", "x.py", text);
        // Every prefix, cut at character boundaries: unfinished code too.
        for (i, _) in text.char_indices().step_by(7) {
            let _ = Jax::lint("python", "x.py", &text[..i]);
        }
    }
}
