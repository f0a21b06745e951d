//! The plugin's layouts of the `torch.save` archives in
//! `tests/fixtures/torch/` (written by `tests/fixtures/torchsave.py`, which
//! lays them out as torch does) equal what the writer put there: names,
//! dtypes, shapes and byte ranges from each `.json` sidecar.

use std::cell::RefCell;
use std::path::PathBuf;

use flor_plugin_pytorch::PyTorch;
use flor_plugin_sdk::{Plugin, Result, Source, Tensor};
use serde_json::Value;

const FIXTURES: [&str; 6] =
    ["mlp_state_dict", "adam_optimizer", "mixed_dtypes", "checkpoint", "plain_tensor", "new_dtypes"];

fn dir() -> PathBuf {
    PathBuf::from(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("../../tests/fixtures/torch")
}

fn fixture(name: &str) -> (Vec<u8>, Value) {
    let bytes = std::fs::read(dir().join(format!("{name}.pt"))).unwrap();
    let sidecar = std::fs::read_to_string(dir().join(format!("{name}.json"))).unwrap();
    (bytes, serde_json::from_str(&sidecar).unwrap())
}

fn expected(sidecar: &Value) -> Vec<Tensor> {
    sidecar["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Tensor {
            name: t["name"].as_str().unwrap().to_owned(),
            dtype: t["dtype"].as_str().unwrap().to_owned(),
            shape: t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect(),
            offset: t["offset"].as_u64().unwrap(),
            length: t["length"].as_u64().unwrap(),
        })
        .collect()
}

#[test]
fn every_fixture_is_laid_out_as_the_writer_wrote_it() {
    for name in FIXTURES {
        let (bytes, sidecar) = fixture(name);
        assert_eq!(sidecar["size"].as_u64(), Some(bytes.len() as u64), "{name}");
        assert_eq!(PyTorch::sniff(&bytes[..64]).as_deref(), Some("torch.zip"), "{name}");
        let layout = PyTorch::layout("torch.zip", &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(layout.tensors, expected(&sidecar), "{name}");
        layout.check(bytes.len() as u64).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Metadata plus tensors cover every byte outside the storages' data
        // (the fixtures' storages are all reported whole, but for the views).
        let covered: u64 = layout.metadata.iter().map(|s| s.length).sum::<u64>();
        assert!(covered > 0 && covered < bytes.len() as u64, "{name}");
        assert_eq!(PyTorch::split("torch.zip", &bytes).unwrap(), Vec::<u64>::new());
    }
}

#[test]
fn names_follow_the_saved_objects_keys() {
    let names = |f: &str| expected(&fixture(f).1).into_iter().map(|t| t.name).collect::<Vec<_>>();
    // The tied `head.weight` shares embed.weight's storage: reported once.
    assert_eq!(
        names("mlp_state_dict"),
        ["embed.weight", "fc1.weight", "fc1.bias", "bn.running_mean", "bn.num_batches_tracked"]
    );
    assert_eq!(
        names("adam_optimizer"),
        [
            "state.0.step",
            "state.0.exp_avg",
            "state.0.exp_avg_sq",
            "state.1.step",
            "state.1.exp_avg",
            "state.1.exp_avg_sq"
        ]
    );
    assert_eq!(
        names("checkpoint"),
        ["model.fc.weight", "model.fc.bias", "optimizer.state.0.momentum_buffer", "optimizer.state.1.momentum_buffer"]
    );
    assert_eq!(names("plain_tensor"), ["tensor"]);
    // Views of one storage: a larger or earlier view wins the shared bytes.
    assert_eq!(names("views"), ["first8", "tail"]);
    // The transposed view `square_t` is not C-contiguous: not reported.
    assert!(!names("mixed_dtypes").contains(&"square_t".to_owned()));
}

/// A source that remembers the ranges read.
struct Recording<'a>(&'a [u8], RefCell<Vec<(u64, u64)>>);

impl Source for Recording<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_chunk(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.1.borrow_mut().push((offset, offset + buf.len() as u64));
        (&self.0).read_chunk(offset, buf)
    }
}

#[test]
fn no_tensor_byte_is_read() {
    for name in FIXTURES {
        let (bytes, sidecar) = fixture(name);
        let src = Recording(&bytes, RefCell::new(Vec::new()));
        PyTorch::layout("torch.zip", &src).unwrap();
        let reads = src.1.borrow();
        // The tail read (last 64 KiB) covers these small files whole; every
        // other read must avoid the tensors.
        for t in expected(&sidecar) {
            for &(a, b) in reads.iter().skip(1) {
                assert!(b <= t.offset || a >= t.offset + t.length, "{name}: read {a}..{b} touches {}", t.name);
            }
        }
        assert!(reads.len() < 32, "{name}: {} reads", reads.len());
    }
}

#[test]
fn damaged_archives_fail_cleanly_or_stay_valid() {
    for name in FIXTURES {
        let (bytes, _) = fixture(name);
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            if let Ok(l) = PyTorch::layout("torch.zip", &short) {
                l.check(cut as u64).unwrap_or_else(|e| panic!("{name} cut at {cut}: {e}"));
            }
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0xa5;
            match PyTorch::layout("torch.zip", &bad) {
                Ok(l) => l.check(bad.len() as u64).unwrap_or_else(|e| panic!("{name} flipped at {at}: {e}")),
                Err(e) => assert!(e.to_string().starts_with("byte "), "{name} flipped at {at}: {e}"),
            }
        }
    }
}
