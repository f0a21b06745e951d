//! The safetensors format, read natively: an 8-byte little-endian header
//! length `n`, `n` bytes of JSON (`{"name": {"dtype", "shape",
//! "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}`, offsets
//! relative to the data section), then the data section, which the tensors
//! tile exactly (no gap, no overlap, nothing after the last one), as the
//! reference implementation requires.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{read_range, ByteSource, CheckpointFormat, Dtype, FormatError, Layout, TensorInfo};

/// The largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The safetensors format (`safetensors`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Safetensors;

impl Safetensors {
    /// The format's name.
    pub const NAME: &'static str = "safetensors";
}

/// The safetensors spelling of a dtype.
fn dtype(s: &str) -> Dtype {
    match s {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::U8,
        "I8" => Dtype::I8,
        "U16" => Dtype::U16,
        "I16" => Dtype::I16,
        "U32" => Dtype::U32,
        "I32" => Dtype::I32,
        "U64" => Dtype::U64,
        "I64" => Dtype::I64,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        "C64" => Dtype::C64,
        "F8_E4M3" => Dtype::F8E4M3,
        "F8_E5M2" => Dtype::F8E5M2,
        other => Dtype::Other(other.to_owned()),
    }
}

/// One header entry of a tensor (unknown fields are ignored).
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header object's entries in file order; a repeated key is an error
/// (a plain map would keep one silently).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
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

/// The byte offset in `text` of serde_json's 1-based line and column.
fn json_offset(text: &[u8], line: usize, column: usize) -> u64 {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    (start + column.saturating_sub(1)).min(text.len()) as u64
}

impl CheckpointFormat for Safetensors {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn sniff(&self, head: &[u8]) -> bool {
        let Some(n) = head.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())) else {
            return false;
        };
        if !(2..=MAX_HEADER_LEN).contains(&n) || head.get(8) != Some(&b'{') {
            return false;
        }
        // `{` then (after optional whitespace) a key or the end of an empty header.
        match head[9..].iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b) => *b == b'"' || *b == b'}',
            None => true,
        }
    }

    fn layout(&self, src: &dyn ByteSource) -> Result<Layout, FormatError> {
        let name = Self::NAME;
        let bad = |offset: u64, what: String| FormatError::malformed(name, offset, what);
        let len = src.len();
        if len < 8 {
            return Err(bad(0, format!("truncated: {len} bytes, the header length alone takes 8")));
        }
        let n = u64::from_le_bytes(read_range(src, name, 0, 8)?.try_into().unwrap_or_default());
        if n > MAX_HEADER_LEN {
            return Err(bad(0, format!("header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes")));
        }
        if n > len - 8 {
            return Err(bad(0, format!("header length {n} runs past the end of the {len}-byte object")));
        }
        let header = read_range(src, name, 8, n)?;
        if header.first() != Some(&b'{') {
            return Err(bad(8, "the header does not start with `{`".into()));
        }
        let entries: Entries = serde_json::from_slice(&header).map_err(|e| {
            let at = 8 + json_offset(&header, e.line(), e.column());
            bad(at, format!("header is not valid JSON: {e}"))
        })?;
        let data_start = 8 + n;
        let data_len = len - data_start;
        let mut tensors = Vec::with_capacity(entries.0.len());
        for (key, value) in entries.0 {
            if key == "__metadata__" {
                if !value.as_object().is_some_and(|m| m.values().all(|v| v.is_string())) {
                    return Err(bad(8, "`__metadata__` is not an object of strings".into()));
                }
                continue;
            }
            let e = Entry::deserialize(value).map_err(|e| bad(8, format!("tensor `{key}`: {e}")))?;
            let [begin, end] = e.data_offsets;
            if begin > end || end > data_len {
                return Err(bad(
                    8,
                    format!(
                        "tensor `{key}`: data_offsets [{begin}, {end}] are not inside the {data_len}-byte data section"
                    ),
                ));
            }
            let t = TensorInfo { name: key, dtype: dtype(&e.dtype), shape: e.shape, range: begin..end };
            let elements =
                t.elements().ok_or_else(|| bad(8, format!("tensor `{}`: shape {:?} overflows", t.name, t.shape)))?;
            if let Some(size) = t.dtype.item_size() {
                let want = elements.checked_mul(size);
                if want != Some(end - begin) {
                    return Err(bad(
                        8,
                        format!(
                            "tensor `{}`: {} × {:?} does not take the {} bytes of data_offsets [{begin}, {end}]",
                            t.name,
                            e.dtype,
                            t.shape,
                            end - begin
                        ),
                    ));
                }
            }
            tensors.push(t);
        }
        tensors.sort_by_key(|t| (t.range.start, t.range.end));
        let mut covered = 0;
        let mut last = "";
        for t in &tensors {
            if t.range.start < covered {
                return Err(bad(
                    data_start + t.range.start,
                    format!("tensor `{}` overlaps tensor `{last}` (data offset {} < {covered})", t.name, t.range.start),
                ));
            }
            if t.range.start > covered {
                return Err(bad(
                    data_start + covered,
                    format!("data bytes {covered}..{} before tensor `{}` belong to no tensor", t.range.start, t.name),
                ));
            }
            covered = t.range.end;
            last = &t.name;
        }
        if covered != data_len {
            return Err(bad(
                data_start + covered,
                format!("{} bytes after the last tensor belong to no tensor", data_len - covered),
            ));
        }
        for t in &mut tensors {
            t.range = data_start + t.range.start..data_start + t.range.end;
        }
        Ok(Layout { tensors, metadata: vec![Range { start: 0, end: data_start }] })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

    use super::super::CheckpointFormatExt;
    use super::*;

    /// A safetensors file as the reference writer lays it out: tensors in
    /// the given order, header padded with spaces to a multiple of 8.
    pub(crate) fn file(tensors: &[(&str, &str, &[u64], &[u8])], metadata: Option<&str>) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if let Some(m) = metadata {
            header.insert("__metadata__".into(), serde_json::from_str(m).unwrap());
        }
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                (*name).into(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
            );
        }
        raw(serde_json::to_string(&header).unwrap().as_bytes(), &data)
    }

    fn raw(header: &[u8], data: &[u8]) -> Vec<u8> {
        let mut h = header.to_vec();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn layout_of_a_real_shaped_file() {
        let w = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32s(&[0.5, 0.25]);
        let steps = 7i64.to_le_bytes();
        let bytes = file(
            &[("layer.weight", "F32", &[2, 3], &w), ("layer.bias", "F32", &[2], &b), ("steps", "I64", &[], &steps)],
            Some(r#"{"format": "pt"}"#),
        );
        assert!(Safetensors.sniff(&bytes[..64]));
        let layout = Safetensors.layout_of(&bytes).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let d = 8 + n;
        assert_eq!(layout.metadata, vec![0..d]);
        let got: Vec<_> = layout
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dtype.clone(), t.shape.clone(), t.range.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("layer.weight", Dtype::F32, vec![2, 3], d..d + 24),
                ("layer.bias", Dtype::F32, vec![2], d + 24..d + 32),
                ("steps", Dtype::I64, vec![], d + 32..d + 40),
            ]
        );
        assert_eq!(&bytes[layout.tensors[1].range.start as usize..][..8], &b[..]);
        assert_eq!(Safetensors.chunks(&bytes).unwrap(), vec![0..d, d..d + 24, d + 24..d + 32, d + 32..d + 40]);

        // Empty and zero-sized tensors are fine.
        let empty = file(&[], None);
        assert_eq!(Safetensors.layout_of(&empty).unwrap().tensors, vec![]);
        assert!(Safetensors.sniff(&empty));
        let zero = file(&[("z", "F32", &[0, 3], &[]), ("a", "U8", &[2], &[1, 2])], None);
        assert_eq!(Safetensors.layout_of(&zero).unwrap().tensors.len(), 2);
        // Unknown dtypes are kept by name, their size unchecked.
        let odd = file(&[("q", "F4", &[4], &[0, 0])], None);
        assert_eq!(Safetensors.layout_of(&odd).unwrap().tensors[0].dtype, Dtype::Other("F4".into()));
    }

    #[test]
    fn sniff_is_picky() {
        assert!(!Safetensors.sniff(b""));
        assert!(!Safetensors.sniff(b"\x10\0\0\0\0\0\0\0"));
        assert!(!Safetensors.sniff(b"\x10\0\0\0\0\0\0\0[\"a\"]"));
        assert!(!Safetensors.sniff(b"\xff\xff\xff\xff\xff\xff\xff\xff{\"a\""));
        assert!(!Safetensors.sniff(b"\x10\0\0\0\0\0\0\0{x"));
        assert!(Safetensors.sniff(b"\x10\0\0\0\0\0\0\0{ \"a\""));
        assert!(!Safetensors.sniff(b"\x93NUMPY\x01\x00v\x00{'descr'"));
    }

    /// `(input, offset, text in the message)`.
    fn malformed_cases() -> Vec<(Vec<u8>, u64, &'static str)> {
        let good = file(&[("a", "F32", &[2], &f32s(&[1.0, 2.0])), ("b", "U8", &[4], &[1, 2, 3, 4])], None);
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
        let mut past = good.clone();
        past[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
        let mut max = good.clone();
        max[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let t = |json: &str, data: &[u8]| raw(json.as_bytes(), data);
        vec![
            (vec![], 0, "truncated"),
            (good[..5].to_vec(), 0, "truncated"),
            (good[..20].to_vec(), 0, "runs past the end"),
            (huge, 0, "exceeds the limit"),
            (past, 0, "runs past the end"),
            (max, 0, "exceeds the limit"),
            (t("[1, 2]", &[]), 8, "does not start with `{`"),
            (t("{\"a\": ", &[]), 15, "not valid JSON"),
            (t("{\"a\": {\"dtype\": \"U8\"}}", &[]), 8, "missing field `shape`"),
            (t("{\"a\": 3}", &[]), 8, "tensor `a`"),
            (t("{\"a\": {\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", &[0]), 8, "tensor `a`"),
            (t("{\"a\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", &[0]), 8, "tensor `a`"),
            (t("{\"a\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,2]}}", &[0]), 8, "not inside"),
            (t("{\"a\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", &[0]), 8, "not inside"),
            (
                t(&format!("{{\"a\": {{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[{},{}]}}}}", u64::MAX, u64::MAX), &[0]),
                8,
                "not inside",
            ),
            (t("{\"a\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", &[0; 4]), 8, "does not take"),
            (
                t(&format!("{{\"a\": {{\"dtype\":\"U8\",\"shape\":[{},{}],\"data_offsets\":[0,1]}}}}", u64::MAX, 3), &[0]),
                8,
                "overflows",
            ),
            (
                t(&format!("{{\"a\": {{\"dtype\":\"F64\",\"shape\":[{}],\"data_offsets\":[0,8]}}}}", u64::MAX / 4), &[0; 8]),
                8,
                "does not take",
            ),
            (
                t(
                    "{\"a\": {\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"b\": {\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
                    &[0; 4],
                ),
                0,
                "overlaps tensor `a`",
            ),
            (t("{\"a\": {\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", &[0; 4]), 0, "belong to no tensor"),
            (t("{\"a\": {\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", &[0; 4]), 0, "after the last tensor"),
            (
                t(
                    "{\"a\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\": {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                    &[0; 2],
                ),
                0,
                "appears twice",
            ),
            (t("{\"__metadata__\": {\"k\": 1}}", &[]), 8, "__metadata__"),
            (t("{\"a\": \u{7f}}", &[]), 0, "not valid JSON"),
            (vec![2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe], 8, "does not start"),
        ]
    }

    #[test]
    fn malformed_headers_are_positioned_errors() {
        for (i, (bytes, offset, what)) in malformed_cases().into_iter().enumerate() {
            let e = Safetensors.layout_of(&bytes).expect_err(&format!("case {i} should fail"));
            let FormatError::Malformed { format, offset: at, .. } = &e else { panic!("case {i}: {e}") };
            assert_eq!(format, "safetensors");
            assert!(e.to_string().contains(what), "case {i}: {e}");
            // Offsets 0 in the table: data-section errors, at a position past the header.
            if offset != 0 {
                assert_eq!(*at, offset, "case {i}: {e}");
            }
        }
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_a_valid_layout() {
        let good =
            file(&[("a", "F32", &[2], &f32s(&[1.0, 2.0])), ("b", "U8", &[4], &[1, 2, 3, 4])], Some("{\"x\":\"y\"}"));
        for cut in 0..good.len() {
            assert!(Safetensors.layout_of(&good[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= flip;
                if let Ok(l) = Safetensors.layout_of(&b) {
                    l.validate("safetensors", b.len() as u64).unwrap();
                }
            }
        }
    }
}
