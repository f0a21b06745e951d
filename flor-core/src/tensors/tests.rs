use std::sync::Arc;

use super::*;
use crate::formats::safetensors::tests::file as safetensors_file;
use crate::formats::{CheckpointFormat, FormatError};
use crate::stats::tensor_stats as stats_of;

fn f32s(seed: u32, n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| ((i as f32 * 0.37 + seed as f32).sin() * seed as f32).to_le_bytes()).collect()
}

/// A checkpoint: two 256 KiB f32 tensors (the second from `seed`), a small
/// bf16 one, an empty one and a complex one (no statistics).
type Tensors = Vec<(&'static str, &'static str, Vec<u8>)>;

fn checkpoint(seed: u32) -> (Vec<u8>, Tensors) {
    let tensors = vec![
        ("frozen.weight", "F32", f32s(1, 65536)),
        ("head.weight", "F32", f32s(seed, 65536)),
        ("head.scale", "BF16", vec![0x80, 0x3f, 0xa0, 0xc0]),
        ("empty", "F32", Vec::new()),
        ("z", "C64", vec![0; 16]),
    ];
    let shapes: [&[u64]; 5] = [&[256, 256], &[256, 256], &[2], &[0], &[2]];
    let spec: Vec<(&str, &str, &[u64], &[u8])> =
        tensors.iter().zip(shapes).map(|((n, d, b), s)| (*n, *d, s, b.as_slice())).collect();
    (safetensors_file(&spec, None), tensors)
}

fn whole_store(dir: &Path) -> ObjectStore {
    ObjectStore::open(dir).unwrap().with_formats(Arc::new(FormatRegistry::new()))
}

#[test]
fn indexing_packs_a_whole_object_and_computes_each_tensors_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let store = whole_store(dir.path());
    let (bytes, tensors) = checkpoint(2);
    let id = store.put(&bytes).unwrap();
    let native = FormatRegistry::native();
    let indexed = index_object(&store, &id.digest, &native).unwrap();
    assert!(matches!(indexed.pack, Some(PackOutcome::Packed { .. })), "{:?}", indexed.pack);
    assert_eq!(indexed.read_bytes, bytes.len() as u64);
    assert_eq!(store.get(&id.digest).unwrap(), bytes, "packed, bit for bit");
    let index = indexed.index;
    assert_eq!(
        (index.status.clone(), index.format.as_deref(), index.bytes),
        (IndexStatus::Indexed, Some("safetensors"), id.bytes)
    );
    assert_eq!(index.formats_seen, ["safetensors", "npy"]);
    let names: Vec<&str> = index.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["frozen.weight", "head.weight", "head.scale", "empty", "z"]);
    for (t, (_, dtype, data)) in index.tensors.iter().zip(&tensors) {
        assert_eq!(&bytes[t.range().start as usize..t.range().end as usize], data.as_slice(), "{}", t.name);
        let want = stats_of(&Dtype::parse(&t.dtype), data);
        assert_eq!(t.stats, want, "{} ({dtype})", t.name);
    }
    assert_eq!(index.tensors[2].stats.unwrap().mean, Some(-2.0));
    assert_eq!(index.tensors[3].stats.unwrap().elements, 0);
    assert_eq!(index.tensors[4].stats, None, "complex: no statistics");
    // The big tensors are chunks of their own.
    let chunks = store.manifest(&id.digest).unwrap().unwrap().chunks;
    for t in &index.tensors[..2] {
        let c = t.chunk.as_deref().expect("its own chunk");
        assert!(chunks.iter().any(|k| k.digest == c && k.bytes == t.bytes));
    }
    assert_eq!(index.tensors[2].chunk, None, "small tensors share a chunk");

    // Saved and loaded back; current for the same formats.
    let indexes = TensorIndexes::new(&store);
    indexes.save(&index).unwrap();
    assert_eq!(indexes.load(&id.digest).as_ref(), Some(&index));
    assert!(index.is_current(&native));
    let files = indexes.files().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].digest.as_str(), files[0].prev.as_deref()), (id.digest.as_str(), None));
    // An unreadable index is no index.
    fs::write(&files[0].path, b"{not json").unwrap();
    assert_eq!(indexes.load(&id.digest), None);
}

#[test]
fn an_object_chunked_when_written_is_indexed_alike() {
    let dir = tempfile::tempdir().unwrap();
    let chunking = ObjectStore::open(dir.path().join("a")).unwrap();
    let whole = whole_store(&dir.path().join("b"));
    let (bytes, _) = checkpoint(5);
    let id = chunking.put(&bytes).unwrap();
    whole.put(&bytes).unwrap();
    let native = FormatRegistry::native();
    let a = index_object(&chunking, &id.digest, &native).unwrap();
    assert_eq!(a.pack, Some(PackOutcome::AlreadyPacked { format: "safetensors".into() }));
    let b = index_object(&whole, &id.digest, &native).unwrap();
    assert_eq!(a.index, b.index);

    // Without its format, the index says so.
    let none = index_object(&chunking, &id.digest, &FormatRegistry::new()).unwrap();
    assert_eq!(none.index.status, IndexStatus::Failed);
    assert!(none.index.note.as_deref().unwrap().contains("`safetensors` is not registered"), "{:?}", none.index.note);
    assert!(!none.index.is_current(&native), "redone once the format is there");
}

#[test]
fn unclaimed_objects_are_not_read_and_redone_when_a_new_format_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let store = whole_store(dir.path());
    let mut blob = b"MINE".to_vec();
    blob.extend(f32s(3, 100_000));
    let id = store.put(&blob).unwrap();
    let native = FormatRegistry::native();
    let indexed = index_object(&store, &id.digest, &native).unwrap();
    assert_eq!((indexed.index.status.clone(), indexed.read_bytes, indexed.pack), (IndexStatus::NotClaimed, 0, None));
    assert!(indexed.index.tensors.is_empty());
    assert!(indexed.index.is_current(&native));

    // A plugin format that claims it, registered later.
    struct Mine;
    impl CheckpointFormat for Mine {
        fn name(&self) -> &str {
            "mine"
        }
        fn sniff(&self, head: &[u8]) -> bool {
            head.starts_with(b"MINE")
        }
        fn layout(&self, src: &dyn ByteSource) -> std::result::Result<Layout, FormatError> {
            let n = (src.len() - 4) / 4;
            Ok(Layout {
                tensors: vec![crate::formats::TensorInfo {
                    name: "v".into(),
                    dtype: Dtype::F32,
                    shape: vec![n],
                    range: 4..src.len(),
                }],
                metadata: vec![Range { start: 0, end: 4 }],
            })
        }
        fn provenance(&self) -> Option<Provenance> {
            Some(Provenance { plugin: "mine-plugin".into(), version: "0.2.0".into(), digest: "ab".repeat(32) })
        }
    }
    let mut more = FormatRegistry::native();
    more.register(Arc::new(Mine));
    assert!(!indexed.index.is_current(&more));
    let again = index_object(&store, &id.digest, &more).unwrap();
    assert_eq!(again.index.status, IndexStatus::Indexed);
    assert_eq!(again.index.formats_seen.last().map(String::as_str), Some("mine (mine-plugin 0.2.0)"));
    assert_eq!(again.index.plugin.as_ref().map(|p| p.version.as_str()), Some("0.2.0"));
    assert_eq!(
        store.manifest(&id.digest).unwrap().unwrap().plugin,
        again.index.plugin,
        "the manifest names the plugin"
    );
    assert_eq!(again.index.tensors[0].stats, stats_of(&Dtype::F32, &blob[4..]));
}

#[test]
fn a_format_that_fails_leaves_the_object_whole_and_the_index_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = whole_store(dir.path());
    let (bytes, _) = checkpoint(2);
    let id = store.put(&bytes[..bytes.len() - 3]).unwrap();
    let indexed = index_object(&store, &id.digest, &FormatRegistry::native()).unwrap();
    assert_eq!(indexed.index.status, IndexStatus::Failed);
    assert!(indexed.index.note.as_deref().unwrap().contains("safetensors"), "{:?}", indexed.index.note);
    assert!(matches!(indexed.pack, Some(PackOutcome::KeptWhole { .. })));
    assert!(!store.is_chunked(&id.digest).unwrap());
}

#[test]
fn deltas_read_only_the_tensors_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = whole_store(dir.path());
    let (a, ta) = checkpoint(2);
    let (b, tb) = checkpoint(3);
    let (ida, idb) = (store.put(&a).unwrap(), store.put(&b).unwrap());
    let native = FormatRegistry::native();
    let ia = index_object(&store, &ida.digest, &native).unwrap().index;
    let ib = index_object(&store, &idb.digest, &native).unwrap();
    let (d, read) = delta(&store, &ib.index, &ia, ib.spool.as_ref()).unwrap();
    let want = stats::delta_l2(&Dtype::F32, &tb[1].2, &ta[1].2).unwrap();
    assert!(want > 0.0);
    // frozen: same chunk; head: changed; the small ones compared by reading.
    assert_eq!(d.deltas, vec![Some(0.0), Some(want), Some(0.0), Some(0.0), None]);
    assert!(read < 2 * (256 << 10) + 1024, "the frozen tensor was not read: {read}");
    // The same without the spool, from the stored chunks.
    assert_eq!(delta(&store, &ib.index, &ia, None).unwrap().0, d);

    // A tensor missing from the earlier object, or of another shape: none.
    let mut other = ia.clone();
    other.tensors[1].shape = vec![65536];
    other.tensors.remove(0);
    let (d2, _) = delta(&store, &ib.index, &other, None).unwrap();
    assert_eq!(d2.deltas[..2], [None, None]);

    let indexes = TensorIndexes::new(&store);
    indexes.save_delta(&d).unwrap();
    assert_eq!(indexes.load_delta(&idb.digest, &ida.digest), Some(d));
    assert_eq!(indexes.load_delta(&ida.digest, &idb.digest), None);
    let files = indexes.files().unwrap();
    assert_eq!(files[0].prev.as_deref(), Some(ida.digest.as_str()));
}
