//! The element-type names of the interface and their sizes.

/// Every dtype name the interface defines, with its element size in bytes.
/// Names outside this list are kept as given by flor (no statistics).
pub const KNOWN: [(&str, u64); 17] = [
    ("bool", 1),
    ("u8", 1),
    ("i8", 1),
    ("u16", 2),
    ("i16", 2),
    ("u32", 4),
    ("i32", 4),
    ("u64", 8),
    ("i64", 8),
    ("f16", 2),
    ("bf16", 2),
    ("f32", 4),
    ("f64", 8),
    ("c64", 8),
    ("c128", 16),
    ("f8_e4m3", 1),
    ("f8_e5m2", 1),
];

/// The element size of a dtype the interface names; `None` for others.
pub fn element_size(dtype: &str) -> Option<u64> {
    KNOWN.iter().find(|(n, _)| *n == dtype).map(|(_, s)| *s)
}

/// The element count of `shape` (1 for a scalar); `None` on overflow.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
}

/// The byte length of a tensor of a known `dtype` and `shape`; `None` when
/// the dtype is not one of [`KNOWN`] or the length overflows.
pub fn byte_len(dtype: &str, shape: &[u64]) -> Option<u64> {
    element_count(shape)?.checked_mul(element_size(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_lengths() {
        assert_eq!(element_size("bf16"), Some(2));
        assert_eq!(element_size("c128"), Some(16));
        assert_eq!(element_size(">f4"), None);
        assert_eq!(byte_len("f32", &[]), Some(4));
        assert_eq!(byte_len("f64", &[2, 3]), Some(48));
        assert_eq!(byte_len("f64", &[0, 3]), Some(0));
        assert_eq!(byte_len("u8", &[u64::MAX, 2]), None);
    }
}
