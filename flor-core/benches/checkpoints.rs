//! Checkpoint upkeep (issue 15): tensor statistics over decompressed bytes,
//! and packing a 100 MB checkpoint stored whole.
//!
//! `cargo bench -p flor-core --bench checkpoints` (add
//! `RAYON_NUM_THREADS=1` for one core). Statistics read tensors already in
//! memory (`stats/*`) or a decompressed spool through the layout, in
//! pieces spread over threads (`stats/checkpoint_spool`, what indexing
//! does). Packing starts from the monolithic object as a store without
//! formats wrote it: `pack` (decompress to a spool and check the digest,
//! cut, hash and compress the chunks, rename the manifest) and `index`
//! (the same plus every tensor's statistics), in a folder under Cargo's
//! target directory (the machine's disk, page cache warm).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flor_core::formats::{CheckpointFormatExt, Dtype, FormatRegistry, Safetensors};
use flor_core::objects::ObjectStore;
use flor_core::stats::tensor_stats;
use flor_core::tensors;

/// Weights-like noise: small floats with random mantissas (they compress
/// about as badly as trained weights do).
fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 0.05
        })
        .collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A safetensors checkpoint of about 100 MB: 48 weight matrices of 2 MiB
/// and 48 bias vectors of 4 KiB (f32).
fn checkpoint() -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for layer in 0..48u64 {
        for (name, n) in [("weight", 512 * 1024usize), ("bias", 1024)] {
            let start = data.len();
            data.extend(bytes_of(&weights(layer * 2 + u64::from(name == "bias"), n)));
            if header.len() > 1 {
                header.push(',');
            }
            header.push_str(&format!(
                "\"layers.{layer}.{name}\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[{start},{}]}}",
                data.len()
            ));
        }
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn stats(c: &mut Criterion) {
    let n = 25 << 20; // 100 MiB of f32
    let f32s = bytes_of(&weights(7, n));
    let bf16s: Vec<u8> = f32s.chunks(4).flat_map(|c| [c[2], c[3]]).collect();
    let f64s: Vec<u8> = weights(9, n / 2).iter().flat_map(|x| f64::from(*x).to_le_bytes()).collect();
    let mut g = c.benchmark_group("stats");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (name, dtype, bytes) in
        [("f32_100MiB", Dtype::F32, &f32s), ("bf16_50MiB", Dtype::BF16, &bf16s), ("f64_100MiB", Dtype::F64, &f64s)]
    {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| b.iter(|| black_box(tensor_stats(&dtype, black_box(bytes)))));
    }
    // Through the layout, from a decompressed spool (what indexing does).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = ObjectStore::open(dir.path()).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    let ckpt = checkpoint();
    let id = store.put(&ckpt).unwrap();
    let spool = store.spool(&id.digest).unwrap();
    let layout = Safetensors.checked_layout(&spool).unwrap();
    g.throughput(Throughput::Bytes(ckpt.len() as u64));
    g.bench_function("checkpoint_spool_100MB", |b| {
        b.iter(|| black_box(tensors::tensor_stats(&spool, &layout).unwrap()))
    });
    g.finish();
}

/// A store in a fresh folder holding `file` as object `digest` (whole).
fn fresh_store(root: &Path, digest: &str, file: &[u8]) -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir_in(root).unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join(&digest[..2])).unwrap();
    std::fs::write(dir.path().join(&digest[..2]).join(&digest[2..]), file).unwrap();
    (dir, store)
}

fn pack(c: &mut Criterion) {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let whole = ObjectStore::open(scratch.path().join("whole")).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    let ckpt = checkpoint();
    let id = whole.put(&ckpt).unwrap();
    let file = std::fs::read(whole.root().join(&id.digest[..2]).join(&id.digest[2..])).unwrap();
    let native = FormatRegistry::native();
    let mut g = c.benchmark_group("pack");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(ckpt.len() as u64));
    g.bench_function("pack_100MB", |b| {
        b.iter_batched(
            || fresh_store(scratch.path(), &id.digest, &file),
            |(_dir, store)| black_box(store.pack(&id.digest, &native).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("index_100MB", |b| {
        b.iter_batched(
            || fresh_store(scratch.path(), &id.digest, &file),
            |(_dir, store)| black_box(tensors::index_object(&store, &id.digest, &native).unwrap().index),
            BatchSize::PerIteration,
        )
    });
    // A chunking write of the same checkpoint (what a run does with a
    // native format), for comparison.
    g.bench_function("put_chunked_100MB", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(scratch.path()).unwrap(),
            |dir| black_box(ObjectStore::open(dir.path()).unwrap().put(&ckpt).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, stats, pack);
criterion_main!(benches);
