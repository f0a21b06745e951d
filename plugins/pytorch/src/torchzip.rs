//! `torch.zip`: the archives `torch.save` writes (zip serialization, the
//! default since torch 1.6). `<archive>/data.pkl` pickles the saved object
//! with each storage as a persistent id; `<archive>/data/<key>` holds that
//! storage's bytes, stored uncompressed (64-byte aligned). A tensor is a
//! view of a storage: its bytes lie at the storage entry's data offset plus
//! `storage_offset * itemsize`.
//!
//! Reported: every C-contiguous tensor, named by the dotted path of keys
//! and indices that reaches it (`fc1.weight`, `state.0.exp_avg`; `tensor`
//! for a tensor saved alone), each byte range once (tied weights: the
//! first path in pickle order; a view inside a larger tensor: the larger).
//! Metadata: every byte not in a storage entry's data (headers, the
//! pickle, the other entries, the central directory).

use std::collections::{BTreeMap, HashMap, HashSet};

use flor_plugin_sdk::{Error, Result, Source, Span, Tensor, TensorLayout};

use crate::pickle::{self, Machine, Obj, TensorRef, Value};
use crate::zip::{self, Entry};

/// The format's name.
pub const FORMAT: &str = "torch.zip";

/// The largest `data.pkl` read.
pub const MAX_PICKLE: u64 = 16 << 20;

/// The deepest nesting of containers followed from the saved object.
pub const MAX_DEPTH: usize = 64;

/// Whether the first bytes of a checkpoint are a `torch.save` archive: a
/// zip whose first entry, named whole within `head`, is `<archive>/data.pkl`.
pub fn sniff(head: &[u8]) -> bool {
    if !head.starts_with(b"PK\x03\x04") {
        return false;
    }
    let Some(n) = flor_plugin_sdk::u16_le(head, 26) else { return false };
    let name = head.get(30..30 + usize::from(n));
    name.is_some_and(|name| name.ends_with(b"/data.pkl") && name.iter().filter(|&&b| b == b'/').count() == 1)
}

/// The dtype of a storage type and its item size.
fn dtype(kind: &str) -> Option<(&'static str, u64)> {
    Some(match kind {
        "DoubleStorage" => ("f64", 8),
        "FloatStorage" => ("f32", 4),
        "HalfStorage" => ("f16", 2),
        "BFloat16Storage" => ("bf16", 2),
        "LongStorage" => ("i64", 8),
        "IntStorage" => ("i32", 4),
        "ShortStorage" => ("i16", 2),
        "CharStorage" => ("i8", 1),
        "ByteStorage" => ("u8", 1),
        "BoolStorage" => ("bool", 1),
        "ComplexFloatStorage" => ("c64", 8),
        "ComplexDoubleStorage" => ("c128", 16),
        "UInt16Storage" => ("u16", 2),
        "UInt32Storage" => ("u32", 4),
        "UInt64Storage" => ("u64", 8),
        "Float8_e4m3fnStorage" => ("f8_e4m3", 1),
        "Float8_e5m2Storage" => ("f8_e5m2", 1),
        _ => return None,
    })
}

/// The interface's name and the item size of a torch dtype that
/// `_rebuild_tensor_v3` names (those without a typed storage class); others
/// kept as `torch.<name>`, their size as torch defines it.
fn torch_dtype_name(name: &str) -> (String, u64) {
    let (known, size) = match name {
        "float8_e4m3fn" => ("f8_e4m3", 1),
        "float8_e5m2" => ("f8_e5m2", 1),
        "uint16" => ("u16", 2),
        "uint32" => ("u32", 4),
        "uint64" => ("u64", 8),
        "complex32" | "chalf" => ("", 4),
        "bits16" => ("", 2),
        _ => ("", 1), // float8_*fnuz, bits8, bits1x8, bits2x4, bits4x2
    };
    if known.is_empty() {
        (format!("torch.{name}"), size)
    } else {
        (known.to_owned(), size)
    }
}

/// A storage entry's bytes.
struct StorageEntry {
    data: u64,
    len: u64,
}

/// The archive's prefix (`archive`), from its first entry.
fn prefix(entries: &[Entry]) -> Result<String> {
    let first = entries.first().ok_or_else(|| Error::malformed(0, "an empty zip archive"))?;
    match first.name.split_once('/') {
        Some((p, _)) if !p.is_empty() => Ok(p.to_owned()),
        _ => {
            Err(Error::malformed(first.header, format!("first entry `{}` is not inside an archive folder", first.name)))
        }
    }
}

/// Lays out a `torch.save` archive.
pub fn layout(src: &dyn Source) -> Result<TensorLayout> {
    let archive = zip::read(src)?;
    let prefix = prefix(&archive.entries)?;
    let pkl_name = format!("{prefix}/data.pkl");
    let data_prefix = format!("{prefix}/data/");
    let pkl = archive
        .entries
        .iter()
        .find(|e| e.name == pkl_name)
        .ok_or_else(|| Error::malformed(archive.directory, format!("no `{pkl_name}` entry")))?;
    let mut storages = HashMap::new();
    for e in &archive.entries {
        if let Some(key) = e.name.strip_prefix(&data_prefix) {
            if e.method != 0 || e.compressed != e.size {
                return Err(Error::malformed(e.header, format!("storage entry `{}` is compressed", e.name)));
            }
            storages.insert(key.to_owned(), StorageEntry { data: e.data, len: e.size });
        }
    }
    if pkl.method != 0 || pkl.compressed != pkl.size {
        return Err(Error::malformed(pkl.header, format!("`{pkl_name}` is compressed")));
    }
    if pkl.size > MAX_PICKLE {
        return Err(Error::limit(pkl.data, format!("`{pkl_name}` of {} bytes", pkl.size), MAX_PICKLE));
    }
    let bytes = src.read_exact(pkl.data, pkl.size)?;
    let (top, machine) = pickle::load(&bytes, pkl.data)?;
    let mut found = Vec::new();
    Walk { machine: &machine, seen: HashSet::new(), out: &mut found }.value(&top, &mut Vec::new(), 0)?;
    let mut tensors = Vec::new();
    for (name, t) in found {
        if let Some(tensor) = place(&name, &t, &storages)? {
            tensors.push(tensor);
        }
    }
    let tensors = once(tensors);
    let mut storage_ranges: Vec<(u64, u64)> = storages.values().map(|s| (s.data, s.data + s.len)).collect();
    storage_ranges.sort_unstable();
    let metadata = framing(&archive.entries, &storage_ranges, &data_prefix, src.size());
    Ok(TensorLayout { tensors, metadata })
}

/// Collects the tensors reachable from the saved object, with their paths.
struct Walk<'m, 'o> {
    machine: &'m Machine,
    seen: HashSet<usize>,
    out: &'o mut Vec<(String, std::rc::Rc<TensorRef>)>,
}

impl Walk<'_, '_> {
    fn value(&mut self, v: &Value, path: &mut Vec<String>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            let at = self.out.last().map_or(0, |(_, t)| t.at);
            return Err(Error::limit(at, "the nesting of the saved object", MAX_DEPTH as u64));
        }
        match v {
            Value::Tensor(t) => {
                let name = if path.is_empty() { "tensor".to_owned() } else { path.join(".") };
                self.out.push((name, t.clone()));
            }
            Value::Tuple(items) => self.items(items.iter(), path, depth)?,
            Value::Obj(i) if self.seen.insert(*i) => match self.machine.objs.get(*i) {
                Some(Obj::List(items)) => self.items(items.iter(), path, depth)?,
                Some(Obj::Dict(items)) => {
                    for (k, v) in items {
                        let Some(key) = key_text(k) else { continue };
                        path.push(key);
                        self.value(v, path, depth + 1)?;
                        path.pop();
                    }
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn items<'v>(
        &mut self,
        items: impl Iterator<Item = &'v Value>,
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        for (i, v) in items.enumerate() {
            path.push(i.to_string());
            self.value(v, path, depth + 1)?;
            path.pop();
        }
        Ok(())
    }
}

/// A dict key as a path segment; keys that are not strings, numbers or
/// booleans are not followed.
fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        Value::None => Some("None".to_owned()),
        _ => None,
    }
}

/// The tensor's bytes, or `None` when it is not C-contiguous.
fn place(name: &str, t: &TensorRef, storages: &HashMap<String, StorageEntry>) -> Result<Option<Tensor>> {
    let at = t.at;
    let s = &t.storage;
    let entry = storages
        .get(&s.key)
        .ok_or_else(|| Error::malformed(at, format!("tensor `{name}`: no archive entry for storage `{}`", s.key)))?;
    let storage_itemsize = match dtype(&s.kind) {
        Some((_, size)) => size,
        None if s.kind == "UntypedStorage" => 1,
        // An unknown storage type: its item size from the entry.
        None if s.numel > 0 && entry.len.is_multiple_of(s.numel) => entry.len / s.numel,
        None => return Err(Error::malformed(at, format!("tensor `{name}`: unknown storage type `{}`", s.kind))),
    };
    if s.numel.checked_mul(storage_itemsize) != Some(entry.len) {
        return Err(Error::malformed(
            at,
            format!("storage `{}`: {} elements of {} but its entry holds {} bytes", s.key, s.numel, s.kind, entry.len),
        ));
    }
    let (dtype, itemsize) = match (&t.dtype, dtype(&s.kind)) {
        (Some(torch_dtype), _) => torch_dtype_name(torch_dtype),
        (None, Some((d, size))) => (d.to_owned(), size),
        (None, None) => (format!("torch.{}", s.kind), storage_itemsize),
    };
    let mut expect = 1u64;
    let mut contiguous = true;
    for (&d, &st) in t.shape.iter().zip(&t.stride).rev() {
        contiguous &= d <= 1 || st == expect;
        expect = expect.saturating_mul(d);
    }
    let numel = flor_plugin_sdk::dtype::element_count(&t.shape)
        .ok_or_else(|| Error::malformed(at, format!("tensor `{name}`: its shape overflows")))?;
    if !contiguous {
        return Ok(None);
    }
    let start = t.offset.checked_mul(itemsize);
    let length = numel.checked_mul(itemsize);
    let inside = match (start, length) {
        (Some(a), Some(l)) => a.checked_add(l).is_some_and(|end| end <= entry.len) || l == 0,
        _ => false,
    };
    if !inside {
        return Err(Error::malformed(
            at,
            format!(
                "tensor `{name}`: {numel} elements of {dtype} from element {} run past its {}-byte storage",
                t.offset, entry.len
            ),
        ));
    }
    Ok(Some(Tensor {
        name: name.to_owned(),
        dtype,
        shape: t.shape.clone(),
        offset: entry.data + start.unwrap_or(0).min(entry.len),
        length: length.unwrap_or(0),
    }))
}

/// Each byte range once: larger tensors first (then pickle order), a
/// tensor dropped when it shares a byte with one already kept (an empty
/// tensor: when it lies strictly inside one). Pickle order is kept.
fn once(tensors: Vec<Tensor>) -> Vec<Tensor> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tensors[i].length));
    let mut kept: BTreeMap<u64, u64> = BTreeMap::new(); // start -> end of kept non-empty ranges
    let mut keep = vec![false; tensors.len()];
    for i in order {
        let (s, e) = (tensors[i].offset, tensors[i].end());
        let before = kept.range(..=s).next_back().map(|(&a, &b)| (a, b));
        let after = kept.range(s..).next().map(|(&a, &b)| (a, b));
        let clash = if s == e {
            before.is_some_and(|(a, b)| a < s && s < b)
        } else {
            before.is_some_and(|(_, b)| b > s) || after.is_some_and(|(a, _)| a < e)
        };
        if !clash {
            keep[i] = true;
            if s < e {
                kept.insert(s, e);
            }
        }
    }
    tensors.into_iter().zip(keep).filter_map(|(t, k)| k.then_some(t)).collect()
}

/// Metadata spans: each entry's local header, each non-storage entry's
/// data, and the gaps between (descriptors, the central directory, end
/// records), covering every byte outside the storages' data (`storages`
/// sorted by start).
fn framing(entries: &[Entry], storages: &[(u64, u64)], data_prefix: &str, size: u64) -> Vec<Span> {
    let mut cuts: Vec<u64> = vec![0, size];
    for e in entries {
        cuts.extend([e.header, e.data]);
        if !e.name.starts_with(data_prefix) {
            cuts.push(e.data_end());
        }
    }
    for &(a, b) in storages {
        cuts.extend([a, b]);
    }
    cuts.retain(|&c| c <= size);
    cuts.sort_unstable();
    cuts.dedup();
    // The storages' union, so a piece is inside one merged range or outside all.
    let mut union: Vec<(u64, u64)> = Vec::new();
    for &(a, b) in storages {
        match union.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => union.push((a, b)),
        }
    }
    cuts.windows(2)
        .map(|w| Span::new(w[0], w[1] - w[0]))
        .filter(|s| {
            let i = union.partition_point(|&(a, _)| a <= s.offset);
            !(i > 0 && s.end() <= union[i - 1].1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, offset: u64, length: u64) -> Tensor {
        Tensor { name: name.into(), dtype: "u8".into(), shape: vec![length], offset, length }
    }

    #[test]
    fn shared_bytes_are_reported_once() {
        let kept = once(vec![
            t("view", 4, 4),
            t("whole", 0, 16),
            t("tied", 0, 16),
            t("empty_in", 8, 0),
            t("empty_at", 16, 0),
            t("next", 16, 4),
        ]);
        let names: Vec<&str> = kept.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["whole", "empty_at", "next"]);
    }

    #[test]
    fn framing_covers_everything_outside_storage_data() {
        let e = |name: &str, header: u64, data: u64, len: u64| Entry {
            name: name.into(),
            method: 0,
            compressed: len,
            size: len,
            header,
            data,
        };
        let entries = [e("a/data.pkl", 0, 40, 10), e("a/data/0", 60, 128, 16), e("a/version", 150, 192, 2)];
        let spans = framing(&entries, &[(128, 144)], "a/data/", 260);
        let got: Vec<(u64, u64)> = spans.iter().map(|s| (s.offset, s.end())).collect();
        assert_eq!(got, [(0, 40), (40, 50), (50, 60), (60, 128), (144, 150), (150, 192), (192, 194), (194, 260)]);
    }

    #[test]
    fn sniff_wants_a_whole_data_pkl_name() {
        let mut head = b"PK\x03\x04".to_vec();
        head.extend([0; 22]);
        head.extend(16u16.to_le_bytes());
        head.extend(0u16.to_le_bytes());
        head.extend(b"archive/data.pkl");
        assert!(sniff(&head));
        assert!(!sniff(&head[..40]));
        head[30..37].copy_from_slice(b"weights");
        assert!(sniff(&head));
        let mut npz = head.clone();
        npz[26] = 5;
        assert!(!sniff(&npz[..35]));
    }
}
