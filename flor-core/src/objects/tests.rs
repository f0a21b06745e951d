//! Object-store tests: monolithic and chunked objects.

use super::*;

#[test]
fn dedupes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path().join("objects")).unwrap();
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let a = store.put(&data).unwrap();
    let b = store.put(&data).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.bytes, data.len() as u64);
    assert_eq!(store.get(&a.digest).unwrap(), data);
    let files: Vec<_> = walk(dir.path());
    assert_eq!(files.len(), 1, "one blob, no temp files: {files:?}");

    // Corrupt the blob: a different valid zstd stream.
    let path = store.path_of(&a.digest).unwrap();
    fs::write(&path, zstd::encode_all(&b"evil"[..], 1).unwrap()).unwrap();
    assert!(matches!(store.get(&a.digest), Err(Error::CorruptObject { .. })));
    fs::write(&path, b"not zstd at all").unwrap();
    assert!(matches!(store.get(&a.digest), Err(Error::CorruptObject { .. })));
    assert!(matches!(store.get(&"0".repeat(64)), Err(Error::MissingObject { .. })));
    assert!(matches!(store.get("../../etc/passwd"), Err(Error::BadDigest(_))));
}

#[test]
fn streaming_writer_and_abandoned_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let mut w = store.writer().unwrap();
    for chunk in [&b"abc"[..], b"def"] {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.len(), 6);
    let id = w.finish().unwrap();
    assert_eq!(store.get(&id.digest).unwrap(), b"abcdef");
    let mut w = store.writer().unwrap();
    w.write_all(b"half").unwrap();
    drop(w);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp file left");
}

#[test]
fn empty_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let id = store.put(b"").unwrap();
    assert_eq!(store.get(&id.digest).unwrap(), b"");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

// ---- chunked objects ----

use crate::formats::safetensors::tests::file as safetensors_file;
use crate::formats::{CheckpointFormat, Layout};

/// Incompressible test data: a xorshift stream.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A model checkpoint: four 256 KiB f32 tensors, two small ones.
fn checkpoint(changed_seed: u64) -> Vec<u8> {
    let big = 256 << 10;
    let (w1, w2, w3, emb) = (noise(1, big), noise(2, big), noise(changed_seed, big), noise(4, big));
    let (b1, steps) = (noise(5, 64 * 4), 7i64.to_le_bytes());
    safetensors_file(
        &[
            ("embed.weight", "F32", &[256, 256], &emb),
            ("l1.weight", "F32", &[256, 256], &w1),
            ("l1.bias", "F32", &[64], &b1),
            ("l2.weight", "F32", &[256, 256], &w2),
            ("l3.weight", "F32", &[256, 256], &w3),
            ("steps", "I64", &[], &steps),
        ],
        Some(r#"{"format":"pt"}"#),
    )
}

/// Objects' files (not temporary ones) and their total size on disk.
fn stored(store: &ObjectStore) -> (usize, u64) {
    let files: Vec<_> = walk(store.root()).into_iter().filter(|p| !p.starts_with(store.root().join("tmp"))).collect();
    let bytes = files.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    (files.len(), bytes)
}

fn tmp_files(store: &ObjectStore) -> usize {
    fs::read_dir(store.root().join("tmp")).unwrap().count()
}

/// Streams `bytes` into a writer in uneven pieces.
fn put_streamed(store: &ObjectStore, bytes: &[u8]) -> ObjectId {
    let mut w = store.writer().unwrap();
    for piece in bytes.chunks(7_001) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn a_safetensors_checkpoint_is_stored_in_chunks_and_reads_back_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let ckpt = checkpoint(3);
    let id = put_streamed(&store, &ckpt);
    assert_eq!(id.digest, blake3::hash(&ckpt).to_hex().as_str(), "the name is the whole bytes' digest");
    assert_eq!(id.bytes, ckpt.len() as u64);
    assert!(store.contains(&id.digest));
    assert_eq!(store.get(&id.digest).unwrap(), ckpt);
    // A partial read still verifies (the rest is drained).
    let head = store
        .get_with(&id.digest, |r| {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            Ok(b)
        })
        .unwrap();
    assert_eq!(head, ckpt[..8]);

    let m = store.manifest(&id.digest).unwrap().expect("stored chunked");
    assert_eq!(m.format, "safetensors");
    assert_eq!((m.digest.as_str(), m.bytes), (id.digest.as_str(), id.bytes));
    // The header, then each tensor (the small ones lie between big ones,
    // so nothing is joined).
    let sizes: Vec<u64> = m.chunks.iter().map(|c| c.bytes).collect();
    let header = sizes[0];
    assert_eq!(sizes, vec![header, 256 << 10, 256 << 10, 256, 256 << 10, 256 << 10, 8]);
    for c in &m.chunks {
        assert!(store.contains(&c.digest));
        assert_eq!(store.manifest(&c.digest).unwrap(), None, "chunks are plain objects");
    }
    assert_eq!(stored(&store).0, 8, "seven chunks and the manifest");
    assert_eq!(tmp_files(&store), 0);
    // The same bytes again: nothing new.
    let before = stored(&store);
    assert_eq!(store.put(&ckpt).unwrap(), id);
    assert_eq!(stored(&store), before);
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn checkpoints_differing_in_one_tensor_share_the_other_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path().join("chunked")).unwrap();
    let whole = ObjectStore::open(dir.path().join("whole")).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    let (a, b) = (checkpoint(3), checkpoint(33));
    assert_eq!(a.len(), b.len());

    let ida = store.put(&a).unwrap();
    let after_a = stored(&store);
    let idb = store.put(&b).unwrap();
    let after_b = stored(&store);
    assert_ne!(ida, idb);
    assert_eq!(store.get(&idb.digest).unwrap(), b);
    assert_eq!(store.get(&ida.digest).unwrap(), a);

    whole.put(&a).unwrap();
    let whole_a = stored(&whole);
    whole.put(&b).unwrap();
    let whole_b = stored(&whole);

    let added = after_b.1 - after_a.1;
    eprintln!(
        "checkpoint: {} bytes; chunked store: first {} files / {} bytes, second adds {} files / {added} bytes; \
         monolithic store: first {} bytes, second adds {} bytes",
        a.len(),
        after_a.0,
        after_a.1,
        after_b.0 - after_a.0,
        whole_a.1,
        whole_b.1 - whole_a.1
    );
    // The second checkpoint adds its changed tensor and its manifest only.
    assert_eq!(after_b.0 - after_a.0, 2);
    let (ma, mb) = (store.manifest(&ida.digest).unwrap().unwrap(), store.manifest(&idb.digest).unwrap().unwrap());
    let shared = ma.chunks.iter().filter(|c| mb.chunks.contains(c)).count();
    assert_eq!(shared, ma.chunks.len() - 1);
    let tensor = 256u64 << 10;
    assert!(added < tensor + 2048, "{added}");
    assert!(added * 3 < whole_b.1 - whole_a.1, "{added}");
}

#[test]
fn a_corrupt_or_missing_chunk_is_an_error_naming_object_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let ckpt = checkpoint(3);
    let id = store.put(&ckpt).unwrap();
    let m = store.manifest(&id.digest).unwrap().unwrap();
    let victim = &m.chunks[2];
    let path = store.path_of(&victim.digest).unwrap();
    let good = fs::read(&path).unwrap();

    // Other bytes, still valid zstd.
    fs::write(&path, zstd::encode_all(&noise(9, victim.bytes as usize)[..], 1).unwrap()).unwrap();
    let e = store.get(&id.digest).unwrap_err();
    match &e {
        Error::CorruptChunk { object, chunk, index, .. } => {
            assert_eq!((object, chunk, *index), (&id.digest, &victim.digest, 2));
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&id.digest) && msg.contains(&victim.digest) && msg.contains("chunk 2"), "{msg}");
    // Not zstd at all.
    fs::write(&path, b"garbage").unwrap();
    assert!(matches!(store.get(&id.digest), Err(Error::CorruptChunk { index: 2, .. })));
    // (A manifest that lies about a chunk's length: `a_corrupt_manifest_is_an_error`.)

    fs::remove_file(&path).unwrap();
    let e = store.get(&id.digest).unwrap_err();
    match &e {
        Error::MissingChunk { object, chunk, index, count, .. } => {
            assert_eq!((object, chunk, *index, *count), (&id.digest, &victim.digest, 2, m.chunks.len()));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("is not in the object store"), "{e}");

    // A reader stops at the bad chunk with InvalidData.
    let err = store.get_with(&id.digest, |r| io::copy(r, &mut io::sink())).unwrap_err();
    assert!(matches!(err, Error::MissingChunk { .. }), "{err}");

    // Putting the chunk's file back heals the object.
    fs::write(&path, good).unwrap();
    assert_eq!(store.get(&id.digest).unwrap(), ckpt);
}

#[test]
fn a_corrupt_manifest_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let id = store.put(&checkpoint(3)).unwrap();
    let path = store.path_of(&id.digest).unwrap();
    let m = store.manifest(&id.digest).unwrap().unwrap();
    let write = |m: &Manifest| fs::write(&path, m.encode()).unwrap();
    let expect = |what: &str| {
        let e = store.get(&id.digest).unwrap_err();
        assert!(matches!(e, Error::CorruptManifest { .. }), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    };

    // Two chunks of equal length swapped: each is fine, the whole is not.
    let mut swapped = m.clone();
    swapped.chunks.swap(1, 2);
    assert_eq!(swapped.chunks[1].bytes, swapped.chunks[2].bytes);
    write(&swapped);
    expect("join into other bytes");

    let mut other = m.clone();
    other.digest = "a".repeat(64);
    write(&other);
    expect("describes object");

    let mut short = m.clone();
    short.bytes -= 1;
    write(&short);
    expect("chunks hold");

    let mut lying = m.clone();
    lying.chunks[1].bytes -= 1;
    lying.chunks[2].bytes += 1;
    write(&lying);
    let e = store.get(&id.digest).unwrap_err();
    assert!(matches!(e, Error::CorruptChunk { index: 1, .. }), "{e}");

    let mut bad_name = m.clone();
    bad_name.chunks[0].digest = "../../etc/passwd".into();
    write(&bad_name);
    expect("not a BLAKE3 digest");

    fs::write(&path, b"flor-chunks 1\n{not json").unwrap();
    expect("not a manifest");
    assert!(store.manifest(&id.digest).is_err());

    // A manifest naming itself as a chunk: bounded, an error.
    let mut selfish = m.clone();
    selfish.chunks = vec![ChunkRef { digest: id.digest.clone(), bytes: id.bytes }];
    write(&selfish);
    let e = store.get(&id.digest).unwrap_err();
    assert!(matches!(e, Error::CorruptChunk { .. }), "{e}");
    assert!(e.to_string().contains("nested"), "{e}");
}

#[test]
fn monolithic_objects_still_read_and_chunked_ones_read_without_formats() {
    let dir = tempfile::tempdir().unwrap();
    let plain = ObjectStore::open(dir.path()).unwrap().with_formats(Arc::new(FormatRegistry::new()));
    assert!(plain.formats().is_empty());
    let ckpt = checkpoint(3);
    let id = plain.put(&ckpt).unwrap();
    assert_eq!(plain.manifest(&id.digest).unwrap(), None);
    assert_eq!(stored(&plain).0, 1);

    // The same folder with the native formats reads the monolithic object...
    let native = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(native.get(&id.digest).unwrap(), ckpt);
    // ... and keeps it when the same bytes come again.
    assert_eq!(native.put(&ckpt).unwrap(), id);
    assert_eq!(native.manifest(&id.digest).unwrap(), None);

    // A chunked object reads through a store that knows no format.
    let other = checkpoint(44);
    let id2 = native.put(&other).unwrap();
    assert!(native.manifest(&id2.digest).unwrap().is_some());
    assert_eq!(plain.get(&id2.digest).unwrap(), other);
}

#[test]
fn objects_a_format_sniffs_but_cannot_describe_are_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let ckpt = checkpoint(3);
    for bad in [&ckpt[..ckpt.len() - 1], &ckpt[..100]] {
        let id = put_streamed(&store, bad);
        assert_eq!(store.manifest(&id.digest).unwrap(), None);
        assert_eq!(store.get(&id.digest).unwrap(), bad);
    }
    // Small well-formed ones make one chunk: whole as well.
    let small = safetensors_file(&[("a", "U8", &[3], &[1, 2, 3])], None);
    let id = store.put(&small).unwrap();
    assert_eq!(store.manifest(&id.digest).unwrap(), None);
    assert_eq!(store.get(&id.digest).unwrap(), small);
    assert_eq!(tmp_files(&store), 0);

    // A format whose answer breaks the rules (a plugin's bug) is not trusted.
    struct Liar;
    impl CheckpointFormat for Liar {
        fn name(&self) -> &str {
            "liar"
        }
        fn sniff(&self, head: &[u8]) -> bool {
            head.starts_with(b"LIAR")
        }
        fn layout(&self, src: &dyn ByteSource) -> std::result::Result<Layout, FormatError> {
            let end = src.len() + 10;
            Ok(Layout { tensors: vec![], metadata: vec![Range { start: 0, end }] })
        }
    }
    let mut formats = FormatRegistry::native();
    formats.register(Arc::new(Liar));
    let store = store.with_formats(Arc::new(formats));
    let mut lie = b"LIAR".to_vec();
    lie.extend(noise(1, 300_000));
    let id = store.put(&lie).unwrap();
    assert_eq!(store.manifest(&id.digest).unwrap(), None);
    assert_eq!(store.get(&id.digest).unwrap(), lie);
}

#[test]
fn a_large_npy_array_is_chunked_apart_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let data = noise(7, 512 << 10);
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (131072,), }".to_vec();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header);
    npy.extend(&data);
    let id = put_streamed(&store, &npy);
    let m = store.manifest(&id.digest).unwrap().unwrap();
    assert_eq!(m.format, "npy");
    assert_eq!(m.chunks.iter().map(|c| c.bytes).collect::<Vec<_>>(), vec![128, 512 << 10]);
    assert_eq!(store.get(&id.digest).unwrap(), npy);
}

#[test]
fn concurrent_writers_of_the_same_object_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = Arc::new(checkpoint(3));
    let ids: Vec<ObjectId> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let ckpt = ckpt.clone();
                // Separate handles on one folder, as separate processes would have.
                let store = ObjectStore::open(dir.path()).unwrap();
                s.spawn(move || if i % 2 == 0 { put_streamed(&store, &ckpt) } else { store.put(&ckpt).unwrap() })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let store = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&ids[0].digest).unwrap(), *ckpt);
    let m = store.manifest(&ids[0].digest).unwrap().unwrap();
    assert_eq!(stored(&store).0, m.chunks.len() + 1, "each chunk once, one manifest");
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn an_abandoned_chunking_writer_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let ckpt = checkpoint(3);
    let mut w = store.writer().unwrap();
    w.write_all(&ckpt[..ckpt.len() / 2]).unwrap();
    assert_eq!(w.len(), ckpt.len() as u64 / 2);
    drop(w);
    assert_eq!(stored(&store).0, 0);
    assert_eq!(tmp_files(&store), 0);

    // A write that fails part-way stores nothing either.
    let e = store
        .put_with(|w| {
            w.write_all(&ckpt[..1000])?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    assert_eq!((stored(&store).0, tmp_files(&store)), (0, 0));
}

#[test]
fn a_readers_own_error_on_intact_bytes_is_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    for bytes in [checkpoint(3), b"plain".to_vec()] {
        let id = store.put(&bytes).unwrap();
        let e = store.get_with(&id.digest, |_| Err::<(), _>(io::Error::other("cannot decode"))).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("cannot decode"), "{e}");
    }
}

#[test]
fn small_pieces_are_joined_big_ones_stand_alone() {
    let r = |a: u64, b: u64| a..b;
    assert_eq!(
        coalesce(vec![r(0, 10), r(10, 20), r(20, 100), r(100, 110)], 50),
        vec![r(0, 20), r(20, 100), r(100, 110)]
    );
    assert_eq!(coalesce(vec![r(0, 30), r(30, 60), r(60, 70)], 50), vec![r(0, 60), r(60, 70)]);
    assert_eq!(coalesce(vec![r(0, 60)], 50), vec![r(0, 60)]);
    assert_eq!(coalesce(vec![], 50), Vec::<Range<u64>>::new());
}

#[test]
fn an_os_durable_store_writes_the_same_objects() {
    // Same names, same layout, same bytes back: `os` only adds fsyncs.
    let dir = tempfile::tempdir().unwrap();
    let plain = ObjectStore::open(dir.path().join("a")).unwrap();
    let synced = ObjectStore::open(dir.path().join("b")).unwrap().with_durability(Durability::Os);
    assert_eq!(synced.durability(), Durability::Os);
    let ckpt = checkpoint(5);
    let small = b"a small object".to_vec();
    for bytes in [&ckpt, &small] {
        let a = put_streamed(&plain, bytes);
        let b = put_streamed(&synced, bytes);
        assert_eq!(a, b);
        assert_eq!(synced.get(&b.digest).unwrap(), *bytes);
        // Stored already: synced again, still one copy.
        assert_eq!(synced.put(bytes).unwrap(), b);
    }
    assert_eq!(stored(&plain), stored(&synced));
    assert_eq!(tmp_files(&synced), 0);
}

/// A read with the size a record gives stops as soon as the stored bytes
/// run past it: a small file that decompresses to far more than recorded
/// (a damaged or hostile object) costs no more than the record's size.
#[test]
fn a_read_of_known_size_stops_at_that_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let id = store.put(b"small state").unwrap();
    assert_eq!(store.get_sized(&id.digest, id.bytes).unwrap(), b"small state");
    // The object's file replaced by 256 MiB of zeros, compressed to a few KiB.
    let path = store.path_of(&id.digest).unwrap();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    fs::write(&path, enc.finish().unwrap()).unwrap();
    assert!(fs::metadata(&path).unwrap().len() < 1 << 20);
    let mut seen = 0usize;
    let e = store
        .get_with_size(&id.digest, id.bytes, |r| {
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf)? {
                    0 => return Ok(()),
                    n => seen += n,
                }
            }
        })
        .unwrap_err();
    assert!(matches!(e, Error::WrongSize { expected: 11, .. }), "{e}");
    assert!(e.to_string().contains("more than 11 bytes"), "{e}");
    assert!(seen <= 11, "stopped at the recorded size, read {seen}");
    // Shorter than recorded.
    let other = store.put(b"four").unwrap();
    let e = store.get_sized(&other.digest, 10).unwrap_err();
    assert!(e.to_string().contains("it holds 4 bytes"), "{e}");
}

/// A chunked object whose chunk is a chunked object claiming another
/// length is refused when that chunk is opened, before its bytes are read;
/// so is a manifest that disagrees with the size a record gives.
#[test]
fn nested_manifests_must_agree_on_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let a = store.put(&[1u8; 100]).unwrap();
    let b = store.put(&[2u8; 50]).unwrap();
    let whole: Vec<u8> = [vec![1u8; 100], vec![2u8; 50]].concat();
    let digest = blake3::hash(&whole).to_hex().to_string();
    let inner = Manifest {
        format: "test".into(),
        bytes: 150,
        digest: digest.clone(),
        chunks: vec![
            ChunkRef { digest: a.digest.clone(), bytes: 100 },
            ChunkRef { digest: b.digest.clone(), bytes: 50 },
        ],
        plugin: None,
    };
    let path = store.path_of(&digest).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, inner.encode()).unwrap();
    assert_eq!(store.get_sized(&digest, 150).unwrap(), whole);
    assert!(matches!(store.get_sized(&digest, 149), Err(Error::WrongSize { .. })));

    // An outer object naming it as a 10-byte chunk, twice.
    let outer_bytes = 20u64;
    let outer_digest = blake3::hash(b"whatever the outer object is").to_hex().to_string();
    let outer = Manifest {
        format: "test".into(),
        bytes: outer_bytes,
        digest: outer_digest.clone(),
        chunks: vec![ChunkRef { digest: digest.clone(), bytes: 10 }, ChunkRef { digest, bytes: 10 }],
        plugin: None,
    };
    let path = store.path_of(&outer_digest).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, outer.encode()).unwrap();
    let e = store.get(&outer_digest).unwrap_err();
    assert!(matches!(e, Error::CorruptChunk { index: 0, .. }), "{e}");
    assert!(e.to_string().contains("manifest says 150 bytes"), "{e}");
}

// ---- packing after the fact ----

/// A store that stores everything whole (no formats), in `dir`.
fn whole_store(dir: &Path) -> ObjectStore {
    ObjectStore::open(dir).unwrap().with_formats(Arc::new(FormatRegistry::new()))
}

#[test]
fn packing_a_monolithic_checkpoint_chunks_it_and_reads_back_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let plain = whole_store(dir.path());
    let (a, b) = (checkpoint(3), checkpoint(33));
    let (ida, idb) = (plain.put(&a).unwrap(), plain.put(&b).unwrap());
    assert!(!plain.is_chunked(&ida.digest).unwrap());
    let before = plain.stored_size(&ida.digest).unwrap().unwrap();

    let native = FormatRegistry::native();
    let out = plain.pack(&ida.digest, &native).unwrap();
    let PackOutcome::Packed { format, chunks, new_chunks, stored_before, new_bytes } = out else { panic!("{out:?}") };
    assert_eq!((format.as_str(), chunks, new_chunks, stored_before), ("safetensors", 7, 7, before));
    assert!(new_bytes > before, "incompressible chunks plus a manifest: {new_bytes} vs {before}");
    assert!(plain.is_chunked(&ida.digest).unwrap());
    // The same manifest as a chunking write of the same bytes makes.
    let native_dir = tempfile::tempdir().unwrap();
    let native_store = ObjectStore::open(native_dir.path()).unwrap();
    native_store.put(&a).unwrap();
    assert_eq!(plain.manifest(&ida.digest).unwrap(), native_store.manifest(&ida.digest).unwrap());
    assert_eq!(plain.get(&ida.digest).unwrap(), a);
    assert_eq!(plain.get_sized(&ida.digest, ida.bytes).unwrap(), a);
    assert_eq!(tmp_files(&plain), 0, "the spool is gone");

    // The second checkpoint differs in one tensor: one new chunk.
    let out = plain.pack(&idb.digest, &native).unwrap();
    let PackOutcome::Packed { chunks, new_chunks, .. } = out else { panic!("{out:?}") };
    assert_eq!((chunks, new_chunks), (7, 1));
    assert_eq!(plain.get(&idb.digest).unwrap(), b);
    assert_eq!(plain.manifest(&idb.digest).unwrap().unwrap().plugin, None);

    // Once packed, packing again changes nothing.
    assert_eq!(plain.pack(&ida.digest, &native).unwrap(), PackOutcome::AlreadyPacked { format: "safetensors".into() });
}

#[test]
fn packing_leaves_unclaimed_and_undescribable_objects_whole_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let plain = whole_store(dir.path());
    let native = FormatRegistry::native();
    let blob = plain.put(&noise(5, 200_000)).unwrap();
    assert_eq!(plain.pack(&blob.digest, &native).unwrap(), PackOutcome::NotClaimed);
    let ckpt = checkpoint(3);
    let truncated = plain.put(&ckpt[..ckpt.len() - 1]).unwrap();
    let small = plain.put(&safetensors_file(&[("a", "U8", &[3], &[1, 2, 3])], None)).unwrap();
    for (id, why) in [(&truncated, "malformed"), (&small, "single chunk")] {
        let file = fs::read(plain.path_of(&id.digest).unwrap()).unwrap();
        match plain.pack(&id.digest, &native).unwrap() {
            PackOutcome::KeptWhole { format, reason } => {
                assert_eq!(format, "safetensors");
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(plain.path_of(&id.digest).unwrap()).unwrap(), file, "untouched");
    }
    assert_eq!(tmp_files(&plain), 0);
    // A missing object is an error, not an outcome.
    assert!(matches!(plain.pack(&"a".repeat(64), &native), Err(Error::MissingObject { .. })));
}

#[test]
fn a_reader_that_opened_the_whole_file_is_unaffected_by_packing() {
    let dir = tempfile::tempdir().unwrap();
    let plain = whole_store(dir.path());
    let ckpt = checkpoint(3);
    let id = plain.put(&ckpt).unwrap();
    let read = plain
        .get_with(&id.digest, |r| {
            let mut first = vec![0u8; 1000];
            r.read_exact(&mut first)?;
            // Packed while this reader is half-way through the old file.
            let out = plain.pack(&id.digest, &FormatRegistry::native()).map_err(io::Error::other)?;
            assert!(matches!(out, PackOutcome::Packed { .. }), "{out:?}");
            r.read_to_end(&mut first)?;
            Ok(first)
        })
        .unwrap();
    assert_eq!(read, ckpt);
    assert!(plain.is_chunked(&id.digest).unwrap());
    assert_eq!(plain.get(&id.digest).unwrap(), ckpt);
}

#[test]
fn packing_in_an_os_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let plain = whole_store(dir.path()).with_durability(Durability::Os);
    let ckpt = checkpoint(9);
    let id = plain.put(&ckpt).unwrap();
    assert!(matches!(plain.pack(&id.digest, &FormatRegistry::native()).unwrap(), PackOutcome::Packed { .. }));
    assert_eq!(plain.get(&id.digest).unwrap(), ckpt);
}

#[test]
#[allow(clippy::single_range_in_vec_init)]
fn ranges_read_from_chunked_and_monolithic_objects() {
    let dir = tempfile::tempdir().unwrap();
    let plain = whole_store(dir.path());
    let ckpt = checkpoint(3);
    let id = plain.put(&ckpt).unwrap();
    let len = ckpt.len() as u64;
    // Inside one chunk, across chunks, empty, the last byte; out of order.
    let ranges = vec![len - 1..len, 10..20, 5000..300_000, 40..40, 300_000..(600 << 10)];
    let check = |store: &ObjectStore| {
        let mut seen = vec![None; ranges.len()];
        let mut last_start = 0;
        store
            .read_ranges(&id.digest, &ranges, &mut |i, bytes| {
                assert!(ranges[i].start >= last_start, "in order of position");
                last_start = ranges[i].start;
                seen[i] = Some(bytes.to_vec());
                Ok(())
            })
            .unwrap();
        for (r, got) in ranges.iter().zip(seen) {
            assert_eq!(got.as_deref(), Some(&ckpt[r.start as usize..r.end as usize]), "{r:?}");
        }
    };
    check(&plain);
    plain.pack(&id.digest, &FormatRegistry::native()).unwrap();
    check(&plain);
    let e = plain.read_ranges(&id.digest, &[0..len + 1], &mut |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("past"), "{e}");
    let e = plain.read_ranges(&id.digest, &[0..10, 5..20], &mut |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
    // The visitor's own error comes back as it is.
    let e = plain.read_ranges(&id.digest, &[0..10], &mut |_, _| Err(Error::BadDigest("mine".into()))).unwrap_err();
    assert!(matches!(e, Error::BadDigest(ref s) if s == "mine"), "{e}");
}

#[test]
fn listing_and_removing_stored_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let id = store.put(&checkpoint(3)).unwrap();
    let small = store.put(b"hello").unwrap();
    fs::create_dir_all(dir.path().join("tensors/ab")).unwrap();
    fs::write(dir.path().join("tensors/ab/cd.json"), "{}").unwrap();
    let files = store.stored_files().unwrap();
    let chunks = store.manifest(&id.digest).unwrap().unwrap().chunks;
    assert_eq!(files.len(), 2 + chunks.len(), "{files:?}");
    assert!(files.iter().any(|f| f.digest == small.digest && f.modified.is_some()));
    let size = store.stored_size(&small.digest).unwrap().unwrap();
    assert_eq!(store.remove_file(&small.digest).unwrap(), Some(size));
    assert_eq!(store.remove_file(&small.digest).unwrap(), None);
    assert!(!store.contains(&small.digest));
    assert_eq!(store.head(&id.digest).unwrap(), checkpoint(3)[..SNIFF_LEN]);
    let spool = store.spool(&id.digest).unwrap();
    assert_eq!(spool.read_range(0..spool.len()).unwrap(), checkpoint(3));
}
