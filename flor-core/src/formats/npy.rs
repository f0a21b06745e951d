//! NumPy's `.npy` format, read natively: the magic `\x93NUMPY`, a major and
//! minor version byte, the header length (2 bytes little-endian in version
//! 1, 4 bytes in versions 2 and 3), then a Python dict literal
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, padded
//! with spaces, ended by a newline), then the array's bytes, exactly
//! `elements × item size` of them.
//!
//! Plain dtypes only: a structured dtype (a list `descr`) or an object array
//! (`|O`, pickled Python objects) has no fixed layout here and is an error.
//! A Fortran-ordered array reports its logical shape.

use std::ops::Range;

use super::{read_range, ByteSource, CheckpointFormat, Dtype, FormatError, Layout, TensorInfo};

/// The file's first six bytes.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The largest header accepted (NumPy's writer never comes near; version 1
/// cannot exceed 65,535 bytes).
pub const MAX_HEADER_LEN: u64 = 1 << 20;

/// NumPy's `.npy` format (`npy`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Npy;

impl Npy {
    /// The format's name.
    pub const NAME: &'static str = "npy";
}

/// A header value: the subset of Python literals a `.npy` header uses.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
    List,
}

/// A cursor over the header text; errors carry the absolute file offset.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    base: u64,
}

impl Parser<'_> {
    fn err(&self, what: impl Into<String>) -> FormatError {
        FormatError::malformed(Npy::NAME, self.base + self.pos as u64, what)
    }

    fn skip_ws(&mut self) {
        while self.text.get(self.pos).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), FormatError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected `{}` in the header", c as char)))
        }
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let Some(quote @ (b'\'' | b'"')) = self.peek() else {
            return Err(self.err("expected a quoted string in the header"));
        };
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.text.get(self.pos) {
                None => return Err(self.err("unterminated string in the header")),
                Some(&c) if c == quote => break,
                Some(&c) if c == b'\\' || !(0x20..0x7f).contains(&c) => {
                    return Err(self.err("unsupported character in a header string"))
                }
                Some(_) => self.pos += 1,
            }
        }
        let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        self.pos += 1;
        Ok(s)
    }

    fn int(&mut self) -> Result<u64, FormatError> {
        self.skip_ws();
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a non-negative integer in the shape"));
        }
        let digits = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default();
        let n = digits.parse::<u64>().map_err(|_| {
            FormatError::malformed(
                Npy::NAME,
                self.base + start as u64,
                format!("shape dimension {digits} is too large"),
            )
        })?;
        // Python 2 wrote long integers with an `L` suffix.
        if self.text.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        Ok(n)
    }

    fn value(&mut self) -> Result<Lit, FormatError> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    dims.push(self.int()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => return Err(self.err("expected `,` or `)` in the shape")),
                    }
                }
                Ok(Lit::Tuple(dims))
            }
            Some(b'[') => {
                self.skip_list()?;
                Ok(Lit::List)
            }
            _ => {
                for (word, b) in [("True", true), ("False", false)] {
                    if self.text[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(Lit::Bool(b));
                    }
                }
                Err(self.err("expected a string, a tuple, True or False in the header"))
            }
        }
    }

    /// Skips a (nested) list literal, with its strings and tuples.
    fn skip_list(&mut self) -> Result<(), FormatError> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated list in the header")),
                Some(b'\'' | b'"') => {
                    self.string()?;
                    continue;
                }
                Some(b'[' | b'(') => depth += 1,
                Some(b']' | b')') => depth = depth.saturating_sub(1),
                Some(_) => {}
            }
            self.pos += 1;
            if depth == 0 {
                return Ok(());
            }
        }
    }

    /// The header dict: exactly the keys `descr`, `fortran_order`, `shape`.
    fn dict(&mut self) -> Result<(String, Vec<u64>), FormatError> {
        self.expect(b'{')?;
        let (mut descr, mut order, mut shape) = (None, None, None);
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                break;
            }
            self.skip_ws();
            let key_at = self.pos;
            let key = self.string()?;
            if !matches!(key.as_str(), "descr" | "fortran_order" | "shape") {
                self.pos = key_at;
                return Err(self.err(format!("unexpected header key `{key}`")));
            }
            self.expect(b':')?;
            self.skip_ws();
            let value_at = self.base + self.pos as u64;
            let value = self.value()?;
            let slot = match key.as_str() {
                "descr" => &mut descr,
                "fortran_order" => &mut order,
                _ => &mut shape,
            };
            if slot.replace((value, value_at)).is_some() {
                self.pos = key_at;
                return Err(self.err(format!("the header key `{key}` appears twice")));
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected `,` or `}` in the header")),
            }
        }
        if self.peek().is_some() {
            return Err(self.err("unexpected text after the header dict"));
        }
        let missing = |k: &str| FormatError::malformed(Npy::NAME, self.base, format!("the header has no `{k}`"));
        let (descr, descr_at) = descr.ok_or_else(|| missing("descr"))?;
        let (order, order_at) = order.ok_or_else(|| missing("fortran_order"))?;
        let (shape, shape_at) = shape.ok_or_else(|| missing("shape"))?;
        let wrong = |at: u64, what: &str| FormatError::malformed(Npy::NAME, at, what.to_owned());
        let descr = match descr {
            Lit::Str(s) => s,
            Lit::List => return Err(wrong(descr_at, "structured dtypes (a list `descr`) are not supported")),
            _ => return Err(wrong(descr_at, "`descr` is not a string")),
        };
        if !matches!(order, Lit::Bool(_)) {
            return Err(wrong(order_at, "`fortran_order` is not True or False"));
        }
        let Lit::Tuple(shape) = shape else { return Err(wrong(shape_at, "`shape` is not a tuple")) };
        Ok((descr, shape))
    }
}

/// The dtype and item size of a plain `descr` (`<f4`, `|b1`, `<U8`, `<M8[ns]`).
fn dtype(descr: &str) -> Option<(Dtype, u64)> {
    let b = descr.as_bytes();
    let (order, rest) = match b.first()? {
        o @ (b'<' | b'>' | b'|' | b'=') => (*o, &b[1..]),
        _ => (b'|', b),
    };
    let (&kind, rest) = rest.split_first()?;
    let digits_end = rest.iter().position(|c| !c.is_ascii_digit()).unwrap_or(rest.len());
    let n: u64 = std::str::from_utf8(&rest[..digits_end]).ok()?.parse().ok()?;
    let tail = &rest[digits_end..];
    if !(tail.is_empty() || (matches!(kind, b'm' | b'M') && tail.starts_with(b"[") && tail.ends_with(b"]"))) {
        return None;
    }
    let size = match kind {
        b'b' | b'i' | b'u' | b'f' | b'c' | b'S' | b'V' | b'm' | b'M' => n,
        b'U' => n.checked_mul(4)?,
        _ => return None,
    };
    // Byte order matters only for multi-byte elements; `=` (native) is
    // ambiguous in a file, so it stays `Other`.
    let little = order == b'<' || n == 1;
    let known = match (kind, n) {
        (b'b', 1) => Some(Dtype::Bool),
        (b'u', 1) => Some(Dtype::U8),
        (b'i', 1) => Some(Dtype::I8),
        (b'u', 2) => Some(Dtype::U16),
        (b'i', 2) => Some(Dtype::I16),
        (b'u', 4) => Some(Dtype::U32),
        (b'i', 4) => Some(Dtype::I32),
        (b'u', 8) => Some(Dtype::U64),
        (b'i', 8) => Some(Dtype::I64),
        (b'f', 2) => Some(Dtype::F16),
        (b'f', 4) => Some(Dtype::F32),
        (b'f', 8) => Some(Dtype::F64),
        (b'c', 8) => Some(Dtype::C64),
        (b'c', 16) => Some(Dtype::C128),
        _ => None,
    };
    let dt = match known {
        Some(d) if little => d,
        _ => Dtype::Other(descr.to_owned()),
    };
    Some((dt, size))
}

impl CheckpointFormat for Npy {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn sniff(&self, head: &[u8]) -> bool {
        head.starts_with(MAGIC) && head.get(6).is_some_and(|v| (1..=3).contains(v))
    }

    fn layout(&self, src: &dyn ByteSource) -> Result<Layout, FormatError> {
        let name = Self::NAME;
        let len = src.len();
        let magic = read_range(src, name, 0, 8.min(len))?;
        if !magic.starts_with(MAGIC) {
            return Err(FormatError::malformed(name, 0, "no `\\x93NUMPY` magic"));
        }
        if magic.len() < 8 {
            return Err(FormatError::malformed(name, len, format!("truncated: {len} bytes, the preamble takes 8")));
        }
        let (major, minor) = (magic[6], magic[7]);
        let width = match major {
            1 => 2,
            2 | 3 => 4,
            _ => {
                return Err(FormatError::malformed(name, 6, format!("unsupported format version {major}.{minor}")));
            }
        };
        let field = read_range(src, name, 8, width)?;
        let n = field.iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b));
        if n > MAX_HEADER_LEN {
            return Err(FormatError::malformed(
                name,
                8,
                format!("header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes"),
            ));
        }
        let header_at = 8 + width;
        let header = read_range(src, name, header_at, n)?;
        let mut p = Parser { text: &header, pos: 0, base: header_at };
        let (descr, shape) = p.dict()?;
        let descr_err = || FormatError::malformed(name, header_at, format!("unsupported dtype `{descr}`"));
        if descr.trim_start_matches(['<', '>', '|', '=']).starts_with('O') {
            return Err(FormatError::malformed(
                name,
                header_at,
                "object arrays (`|O`, pickled Python objects) have no fixed layout",
            ));
        }
        let (dtype, size) = dtype(&descr).ok_or_else(descr_err)?;
        let data_at = header_at + n;
        let t = TensorInfo { name: String::new(), dtype, shape, range: data_at..data_at };
        let bytes = t.elements().and_then(|e| e.checked_mul(size)).ok_or_else(|| {
            FormatError::malformed(name, header_at, format!("shape {:?} of `{descr}` overflows", t.shape))
        })?;
        let have = len - data_at;
        if bytes != have {
            let what = if bytes > have { "truncated: the array needs" } else { "trailing bytes: the array needs" };
            return Err(FormatError::malformed(
                name,
                data_at,
                format!("{what} {bytes} bytes after the header, the object has {have}"),
            ));
        }
        Ok(Layout {
            tensors: vec![TensorInfo { range: data_at..len, ..t }],
            metadata: vec![Range { start: 0, end: data_at }],
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

    use super::super::CheckpointFormatExt;
    use super::*;

    /// An `.npy` file as NumPy writes it: header padded so that the data
    /// starts at a multiple of 64.
    fn npy(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let pre = if version == 1 { 10 } else { 12 };
        let mut header = dict.as_bytes().to_vec();
        while !(pre + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = MAGIC.to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend((header.len() as u16).to_le_bytes());
        } else {
            out.extend((header.len() as u32).to_le_bytes());
        }
        out.extend(header);
        out.extend(data);
        out
    }

    /// `np.save` of `np.arange(6, dtype='<f4').reshape(2, 3)`, byte for byte
    /// as NumPy lays it out (version 1.0, the header dict as NumPy prints it,
    /// padded with spaces and a newline so the data starts at byte 128).
    const NUMPY_ARANGE_F4: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                                                          \n\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00@\x00\x00@@\x00\x00\x80@\x00\x00\xa0@";

    #[test]
    fn layout_of_numpy_written_files() {
        assert!(Npy.sniff(NUMPY_ARANGE_F4));
        let l = Npy.layout_of(NUMPY_ARANGE_F4).unwrap();
        assert_eq!(l.metadata, vec![0..128]);
        assert_eq!(
            l.tensors,
            vec![TensorInfo { name: String::new(), dtype: Dtype::F32, shape: vec![2, 3], range: 128..152 }]
        );
        assert_eq!(Npy.chunks(&NUMPY_ARANGE_F4).unwrap(), vec![0..128, 128..152]);

        type Case<'a> = (u8, &'a str, &'a [u8], Dtype, Vec<u64>);
        let cases: [Case; 8] = [
            (
                1,
                "{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
                &[7, 0, 0, 0, 0, 0, 0, 0],
                Dtype::I64,
                vec![],
            ),
            (1, "{'descr': '|b1', 'fortran_order': True, 'shape': (2, 1), }", &[1, 0], Dtype::Bool, vec![2, 1]),
            (2, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", &[1, 2, 3], Dtype::U8, vec![3]),
            (3, "{\"shape\": (2L,), \"descr\": \"<f2\", \"fortran_order\": False}", &[0; 4], Dtype::F16, vec![2]),
            (
                1,
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
                Dtype::Other(">f4".into()),
                vec![1],
            ),
            (
                1,
                "{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }",
                &[0; 12],
                Dtype::Other("<U3".into()),
                vec![1],
            ),
            (
                1,
                "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
                Dtype::Other("<M8[ns]".into()),
                vec![1],
            ),
            (1, "{'descr': '<c16', 'fortran_order': False, 'shape': (0, 5), }", &[], Dtype::C128, vec![0, 5]),
        ];
        for (version, dict, data, dtype, shape) in cases {
            let bytes = npy(version, dict, data);
            assert!(Npy.sniff(&bytes), "{dict}");
            let l = Npy.layout_of(&bytes).unwrap_or_else(|e| panic!("{dict}: {e}"));
            let start = bytes.len() as u64 - data.len() as u64;
            assert_eq!(start % 64, 0);
            assert_eq!(
                l.tensors,
                vec![TensorInfo { name: String::new(), dtype, shape, range: start..bytes.len() as u64 }]
            );
        }
    }

    #[test]
    fn malformed_files_are_positioned_errors() {
        let ok = |dict: &str, data: &[u8]| npy(1, dict, data);
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let mut huge = npy(2, dict, &[0; 8]);
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut past = ok(dict, &[0; 8]);
        past[8..10].copy_from_slice(&1000u16.to_le_bytes());
        let mut v9 = ok(dict, &[0; 8]);
        v9[6] = 9;
        let cases: Vec<(Vec<u8>, u64, &str)> = vec![
            (vec![], 0, "no `\\x93NUMPY` magic"),
            (b"\x93NUMPX\x01\x00".to_vec(), 0, "magic"),
            (b"PK\x03\x04 a zip, say an .npz".to_vec(), 0, "magic"),
            (b"\x93NUMPY\x01".to_vec(), 7, "truncated"),
            (b"\x93NUMPY\x01\x00\x10".to_vec(), 8, "truncated"),
            (v9, 6, "unsupported format version 9.0"),
            (huge, 8, "exceeds the limit"),
            (past, 10, "truncated"),
            (ok(dict, &[0; 7]), 128, "truncated: the array needs 8 bytes"),
            (ok(dict, &[0; 9]), 128, "trailing bytes"),
            (ok("{'descr': '<f4', 'fortran_order': False}", &[]), 10, "no `shape`"),
            (
                ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", &[0; 4]),
                66,
                "unexpected header key `x`",
            ),
            (
                ok("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", &[0; 4]),
                27,
                "appears twice",
            ),
            (ok("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", &[0; 4]), 44, "expected a string, a tuple"),
            (ok("{'descr': '<f4', 'fortran_order': 'no', 'shape': (1,)}", &[0; 4]), 44, "not True or False"),
            (ok("{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", &[0; 4]), 60, "not a tuple"),
            (ok("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", &[0; 4]), 61, "non-negative integer"),
            (ok("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", &[]), 61, "too large"),
            (ok("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", &[]), 10, "overflows"),
            (ok("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", &[0; 8]), 10, "object arrays"),
            (ok("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", &[0; 4]), 20, "structured dtypes"),
            (ok("{'descr': '<q9', 'fortran_order': False, 'shape': (1,)}", &[0; 4]), 10, "unsupported dtype `<q9`"),
            (ok("{'descr': '<f4x', 'fortran_order': False, 'shape': (1,)}", &[0; 4]), 10, "unsupported dtype"),
            (ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", &[0; 4]), 128, "expected `,` or `}`"),
            (ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", &[0; 4]), 66, "after the header dict"),
            (ok("{'descr': '<f\\4'}", &[]), 23, "unsupported character"),
            (ok("{'descr: '<f4'}", &[]), 11, "unexpected header key `descr: `"),
            (ok("{'descr' '<f4'}", &[]), 19, "expected `:`"),
            (ok("['descr']", &[]), 10, "expected `{`"),
        ];
        for (i, (bytes, offset, what)) in cases.into_iter().enumerate() {
            let e = Npy.layout_of(&bytes).expect_err(&format!("case {i} should fail"));
            assert!(matches!(&e, FormatError::Malformed { format, .. } if format == "npy"), "case {i}: {e}");
            assert!(e.to_string().contains(what), "case {i}: {e}");
            assert_eq!(e.offset(), Some(offset), "case {i}: {e}");
        }
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_a_valid_layout() {
        let good = NUMPY_ARANGE_F4;
        for cut in 0..good.len() {
            assert!(Npy.layout_of(&good[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = good.to_vec();
                b[i] ^= flip;
                if let Ok(l) = Npy.layout_of(&b) {
                    l.validate("npy", b.len() as u64).unwrap();
                }
            }
        }
        assert!(!Npy.sniff(b"\x93NUMPY\x04\x00"));
        assert!(!Npy.sniff(b"\x93NUM"));
    }
}
