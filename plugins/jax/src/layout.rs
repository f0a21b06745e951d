//! Finishing a layout answer ([`finish`]: sorted, checked, every other byte
//! metadata) and NumPy's dtype names in flor's (the WIT's) spelling.

use flor_plugin_sdk::{dtype, Error, Result, Span, Tensor, TensorLayout};

/// The layout of a `size`-byte checkpoint holding `tensors`: sorted by
/// offset, checked (inside the checkpoint, no overlap, a known dtype's
/// length matching its shape), every byte no tensor covers reported as
/// metadata in maximal spans.
pub fn finish(mut tensors: Vec<Tensor>, size: u64) -> Result<TensorLayout> {
    tensors.sort_by_key(|t| (t.offset, t.length));
    let mut metadata = Vec::new();
    let mut at = 0u64;
    for t in &tensors {
        let end = t.offset.checked_add(t.length).filter(|&e| e <= size).ok_or_else(|| {
            Error::malformed(
                t.offset,
                format!("tensor `{}`: {} bytes run past the end of the {size}-byte checkpoint", t.name, t.length),
            )
        })?;
        if dtype::element_size(&t.dtype).is_some() && dtype::byte_len(&t.dtype, &t.shape) != Some(t.length) {
            return Err(Error::malformed(
                t.offset,
                format!("tensor `{}`: {} × {:?} is not {} bytes", t.name, t.dtype, t.shape, t.length),
            ));
        }
        if t.offset < at {
            return Err(Error::malformed(t.offset, format!("tensor `{}` overlaps the one before it", t.name)));
        }
        if t.offset > at {
            metadata.push(Span::new(at, t.offset - at));
        }
        at = end;
    }
    if at < size {
        metadata.push(Span::new(at, size - at));
    }
    Ok(TensorLayout { tensors, metadata })
}

/// NumPy's dtype names (`dtype.name`, as flax writes them) and flor's.
const NUMPY_NAMES: [(&str, &str); 17] = [
    ("bool", "bool"),
    ("uint8", "u8"),
    ("int8", "i8"),
    ("uint16", "u16"),
    ("int16", "i16"),
    ("uint32", "u32"),
    ("int32", "i32"),
    ("uint64", "u64"),
    ("int64", "i64"),
    ("float16", "f16"),
    ("bfloat16", "bf16"),
    ("float32", "f32"),
    ("float64", "f64"),
    ("complex64", "c64"),
    ("complex128", "c128"),
    ("float8_e4m3fn", "f8_e4m3"),
    ("float8_e5m2", "f8_e5m2"),
];

/// flor's name for a NumPy dtype name (`float32` → `f32`); any other name
/// (`int4`, `float8_e4m3fnuz`) is kept as given.
pub fn from_numpy_name(name: &str) -> String {
    NUMPY_NAMES.iter().find(|(n, _)| *n == name).map_or_else(|| name.to_owned(), |(_, f)| (*f).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dtype: &str, shape: &[u64], offset: u64, length: u64) -> Tensor {
        Tensor { name: name.into(), dtype: dtype.into(), shape: shape.to_vec(), offset, length }
    }

    #[test]
    fn metadata_is_every_byte_no_tensor_covers() {
        let l = finish(vec![t("b", "f32", &[2], 20, 8), t("a", "u8", &[3], 4, 3)], 40).unwrap();
        assert_eq!(l.tensors[0].name, "a");
        let spans: Vec<(u64, u64)> = l.metadata.iter().map(|s| (s.offset, s.length)).collect();
        assert_eq!(spans, [(0, 4), (7, 13), (28, 12)]);
        l.check(40).unwrap();
    }

    #[test]
    fn overlapping_outside_or_mis_sized_tensors_are_errors() {
        assert!(finish(vec![t("a", "u8", &[4], 0, 4), t("b", "u8", &[4], 2, 4)], 10).is_err());
        assert!(finish(vec![t("a", "u8", &[4], 8, 4)], 10).is_err());
        assert!(finish(vec![t("a", "f32", &[4], 0, 8)], 10).is_err());
        assert!(finish(vec![t("a", "f32", &[u64::MAX, 2], 0, 8)], 10).is_err());
        // An unknown dtype's length is the format's word.
        assert!(finish(vec![t("a", ">f4", &[4], 0, 3)], 10).is_ok());
        assert_eq!(from_numpy_name("bfloat16"), "bf16");
        assert_eq!(from_numpy_name("int4"), "int4");
    }
}
