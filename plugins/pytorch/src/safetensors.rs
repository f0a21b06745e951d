//! `safetensors`: an 8-byte little-endian header length `n`, `n` bytes of
//! JSON (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
//! "__metadata__": {...}}`, offsets relative to the data section), then the
//! data section, which the tensors tile exactly, as the reference
//! implementation requires. Only the header is read.

use std::fmt;

use flor_plugin_sdk::{dtype, Error, Result, Source, Span, Tensor, TensorLayout};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The format's name.
pub const FORMAT: &str = "safetensors";

/// The largest header read (the plugin's memory is capped; the reference
/// implementation allows 100 MB).
pub const MAX_HEADER: u64 = 16 << 20;

/// Whether the first bytes are a safetensors header: a plausible length,
/// then `{` and a key or the end of an empty object.
pub fn sniff(head: &[u8]) -> bool {
    let Some(n) = flor_plugin_sdk::u64_le(head, 0) else { return false };
    if !(2..=100_000_000).contains(&n) || head.get(8) != Some(&b'{') {
        return false;
    }
    match head[9..].iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b) => *b == b'"' || *b == b'}',
        None => true,
    }
}

/// The interface's name of a safetensors dtype; others kept as spelled.
fn dtype_name(s: &str) -> String {
    match s {
        "BOOL" => "bool",
        "U8" => "u8",
        "I8" => "i8",
        "U16" => "u16",
        "I16" => "i16",
        "U32" => "u32",
        "I32" => "i32",
        "U64" => "u64",
        "I64" => "i64",
        "F16" => "f16",
        "BF16" => "bf16",
        "F32" => "f32",
        "F64" => "f64",
        "C64" => "c64",
        "F8_E4M3" => "f8_e4m3",
        "F8_E5M2" => "f8_e5m2",
        other => other,
    }
    .to_owned()
}

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header's entries in file order; a repeated key is an error.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut out: Vec<(String, serde_json::Value)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(de::Error::custom(format!("the key `{k}` appears twice")));
                    }
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Lays out a safetensors file.
pub fn layout(src: &dyn Source) -> Result<TensorLayout> {
    let size = src.size();
    let n = src.u64_le_at(0)?;
    if n > MAX_HEADER {
        return Err(Error::limit(0, format!("a header of {n} bytes"), MAX_HEADER));
    }
    let header = src.read_exact(8, n)?;
    let entries: Entries = serde_json::from_slice(&header).map_err(|e| {
        Error::malformed(8, format!("header is not valid JSON (line {}, column {}): {e}", e.line(), e.column()))
    })?;
    let data_start = 8 + n;
    let data_len = size - data_start;
    let mut tensors = Vec::with_capacity(entries.0.len());
    for (key, value) in entries.0 {
        if key == "__metadata__" {
            continue;
        }
        let e = Entry::deserialize(value).map_err(|e| Error::malformed(8, format!("tensor `{key}`: {e}")))?;
        let [begin, end] = e.data_offsets;
        if begin > end || end > data_len {
            return Err(Error::malformed(
                8,
                format!("tensor `{key}`: data offsets {begin}..{end} outside the {data_len}-byte data section"),
            ));
        }
        let dtype = dtype_name(&e.dtype);
        if let Some(want) = dtype::byte_len(&dtype, &e.shape) {
            if want != end - begin {
                return Err(Error::malformed(
                    8,
                    format!("tensor `{key}`: {dtype} {:?} takes {want} bytes, its offsets {}", e.shape, end - begin),
                ));
            }
        }
        tensors.push(Tensor { name: key, dtype, shape: e.shape, offset: data_start + begin, length: end - begin });
    }
    let mut sorted: Vec<&Tensor> = tensors.iter().collect();
    sorted.sort_by_key(|t| (t.offset, t.length));
    let mut at = data_start;
    for t in sorted {
        if t.offset != at {
            let what = if t.offset < at { "overlaps the tensor before it" } else { "leaves a gap before it" };
            return Err(Error::malformed(8, format!("tensor `{}` {what} in the data section", t.name)));
        }
        at = t.end();
    }
    if at != size {
        return Err(Error::malformed(at, "bytes after the last tensor"));
    }
    Ok(TensorLayout { tensors, metadata: vec![Span::new(0, data_start)] })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file of `(name, dtype, shape, data)`.
    pub(crate) fn file(tensors: &[(&str, &str, &[u64], &[u8])]) -> Vec<u8> {
        let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
        let mut data: Vec<u8> = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend(*bytes);
            header += &format!(
                ",\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}",
                data.len()
            );
        }
        header.push('}');
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn lays_out_tensors_in_header_order() {
        let f = file(&[("b", "F32", &[2], &[0; 8]), ("a", "BF16", &[], &[1, 2]), ("x", "F8_E8M0", &[3], &[1, 2, 3])]);
        assert!(sniff(&f[..64]));
        let l = layout(&f).unwrap();
        let start = f.len() as u64 - 13;
        assert_eq!(l.metadata, vec![Span::new(0, start)]);
        let got: Vec<(&str, &str, u64, u64)> =
            l.tensors.iter().map(|t| (t.name.as_str(), t.dtype.as_str(), t.offset, t.length)).collect();
        assert_eq!(got, [("b", "f32", start, 8), ("a", "bf16", start + 8, 2), ("x", "F8_E8M0", start + 10, 3)]);
        l.check(f.len() as u64).unwrap();
    }

    #[test]
    fn broken_headers_are_errors() {
        let f = file(&[("a", "F32", &[2], &[0; 8])]);
        let mut short = f.clone();
        short.pop();
        assert!(layout(&short).unwrap_err().to_string().contains("outside the 7-byte data section"));
        let wrong = file(&[("a", "F32", &[3], &[0; 8])]);
        assert!(layout(&wrong).unwrap_err().to_string().contains("takes 12 bytes"));
        let mut long = f.clone();
        long.push(0);
        assert!(layout(&long).unwrap_err().to_string().contains("bytes after the last tensor"));
        let mut huge = f;
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(layout(&huge).unwrap_err().to_string().contains("exceeds the limit"));
        let header = br#"{"a":{},"a":{}}"#;
        let mut dup = (header.len() as u64).to_le_bytes().to_vec();
        dup.extend(header);
        assert!(layout(&dup).unwrap_err().to_string().contains("appears twice"));
    }
}
