//! What a plugin call costs: the same safetensors checkpoint laid out by
//! flor's native format and by the pytorch plugin (a fresh sandboxed
//! instance per call), a sniff, and loading a plugin (compiled vs cached).
//!
//! `cargo bench -p flor-plugins --bench plugin_calls`

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use flor_core::formats::{CheckpointFormat, Safetensors};
use flor_plugins::{Limits, Origin, Plugin, PluginFormat};

const PYTORCH: &str = env!("FLOR_TEST_PLUGIN_PYTORCH");

/// A safetensors file of `n` f32 tensors of 256 elements each.
fn safetensors(n: usize) -> Vec<u8> {
    let mut header = String::from("{");
    let mut offset = 0usize;
    for i in 0..n {
        let len = 256 * 4;
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"layer{i}.weight\":{{\"dtype\":\"F32\",\"shape\":[16,16],\"data_offsets\":[{offset},{}]}}",
            offset + len
        ));
        offset += len;
    }
    header.push('}');
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + offset, 1);
    out
}

fn bench(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(PYTORCH).unwrap();
    let plugin = std::sync::Arc::new(
        Plugin::load(&bytes, Origin::File(PYTORCH.into()), Limits::default(), Some(cache.path())).unwrap(),
    );
    let format = PluginFormat::new(plugin.clone(), "safetensors");
    for n in [1usize, 100] {
        let file = safetensors(n);
        let mut g = c.benchmark_group(format!("layout/{n}-tensors"));
        g.bench_function("native", |b| b.iter(|| black_box(Safetensors.layout(&file.as_slice()).unwrap())));
        g.bench_function("plugin", |b| b.iter(|| black_box(format.layout(&file.as_slice()).unwrap())));
        g.finish();
    }
    let head = safetensors(1)[..64].to_vec();
    c.bench_function("sniff/plugin (uncached head)", |b| {
        let mut flip = 0u8;
        b.iter(|| {
            // A different head each time, so the one-entry cache never answers.
            let mut h = head.clone();
            flip = flip.wrapping_add(1);
            h[63] = flip;
            black_box(plugin.sniff(&h).unwrap())
        })
    });
    let mut g = c.benchmark_group("load");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("cached", |b| {
        b.iter(|| Plugin::load(&bytes, Origin::File(PYTORCH.into()), Limits::default(), Some(cache.path())).unwrap())
    });
    g.bench_function("compile", |b| {
        b.iter(|| Plugin::load(&bytes, Origin::File(PYTORCH.into()), Limits::default(), None::<&Path>).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
