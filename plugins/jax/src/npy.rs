//! `numpy.npy`: NumPy's array file. The magic `\x93NUMPY`, a major and minor
//! version byte, the header's length (2 bytes little-endian in version 1,
//! 4 in versions 2 and 3), the header (a Python dict literal:
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`), then the
//! elements.
//!
//! A little-endian (or single-byte) number type is a tensor of flor's
//! dtype (`<f4` → `f32`); any other plain type (`>f4`, `<V2` as numpy
//! writes bfloat16, `<M8[ns]`) a tensor with the descr as its dtype; a
//! structured or object array (`|O`: pickled objects) is metadata only. A
//! Fortran-ordered array reports its logical shape.

use flor_plugin_sdk::{dtype::element_count, Error, Result, Source, Tensor};

use crate::source::Cursor;

/// The first six bytes.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header read (numpy's own stay far below).
const MAX_HEADER: u32 = 1 << 20;

/// An `.npy` header: where the elements start and what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The descr text (`<f4`), or `None` for a structured dtype.
    pub descr: Option<String>,
    /// Logical dimensions.
    pub shape: Vec<u64>,
    /// First byte of the elements, from the start of the `.npy` bytes.
    pub data_offset: u64,
}

impl Header {
    /// The tensor these elements make, named `name`, whose `.npy` bytes
    /// start at `base` and may span `avail` bytes: `None` for structured
    /// and object arrays (their bytes are metadata).
    pub fn tensor(&self, name: &str, base: u64, avail: u64) -> Result<Option<Tensor>> {
        let Some(descr) = &self.descr else { return Ok(None) };
        let Some((dtype, item)) = dtype(descr) else { return Ok(None) };
        let at = base + self.data_offset;
        let length = element_count(&self.shape)
            .and_then(|n| n.checked_mul(item))
            .ok_or_else(|| Error::malformed(at, format!("shape {:?} overflows", self.shape)))?;
        if self.data_offset.checked_add(length).is_none_or(|end| end > avail) {
            return Err(Error::Truncated { offset: at, len: length, size: base + avail });
        }
        Ok(Some(Tensor { name: name.to_owned(), dtype, shape: self.shape.clone(), offset: at, length }))
    }
}

/// The header of the `.npy` bytes at `base` (of at most `avail` bytes).
pub fn header(src: &dyn Source, base: u64, avail: u64) -> Result<Header> {
    let mut c = Cursor::new(src, base);
    let fixed = c.array::<8>()?;
    if &fixed[..6] != MAGIC {
        return Err(Error::malformed(base, "not a .npy array (no \\x93NUMPY magic)"));
    }
    let (len, at) = match fixed[6] {
        1 => (c.le_uint(2)?, 10),
        2 | 3 => (c.le_uint(4)?, 12),
        v => return Err(Error::malformed(base + 6, format!("unknown .npy version {v}.{}", fixed[7]))),
    };
    if at + len > avail {
        return Err(Error::Truncated { offset: base + at, len, size: base + avail });
    }
    let text = c.bytes(len, MAX_HEADER)?;
    let (descr, shape) = Parser { text: &text, pos: 0, base: base + at }.dict()?;
    Ok(Header { descr, shape, data_offset: at + len })
}

/// flor's dtype and the item size of a plain descr; `None` for objects
/// (`|O`) and anything unreadable.
pub fn dtype(descr: &str) -> Option<(String, u64)> {
    let b = descr.as_bytes();
    let (order, rest) = match b.first()? {
        o @ (b'<' | b'>' | b'|' | b'=') => (*o, &b[1..]),
        _ => (b'|', b),
    };
    let (&kind, rest) = rest.split_first()?;
    let digits = rest.iter().position(|c| !c.is_ascii_digit()).unwrap_or(rest.len());
    let n: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let tail = &rest[digits..];
    if !(tail.is_empty() || (matches!(kind, b'm' | b'M') && tail.starts_with(b"[") && tail.ends_with(b"]"))) {
        return None;
    }
    let size = match kind {
        b'b' | b'i' | b'u' | b'f' | b'c' | b'S' | b'V' | b'm' | b'M' => n,
        b'U' => n.checked_mul(4)?,
        _ => return None,
    };
    let little = order == b'<' || order == b'|' || size == 1;
    let known = match (kind, size) {
        (b'b', 1) => Some("bool"),
        (b'u', 1) => Some("u8"),
        (b'i', 1) => Some("i8"),
        (b'u', 2) => Some("u16"),
        (b'i', 2) => Some("i16"),
        (b'u', 4) => Some("u32"),
        (b'i', 4) => Some("i32"),
        (b'u', 8) => Some("u64"),
        (b'i', 8) => Some("i64"),
        (b'f', 2) => Some("f16"),
        (b'f', 4) => Some("f32"),
        (b'f', 8) => Some("f64"),
        (b'c', 8) => Some("c64"),
        (b'c', 16) => Some("c128"),
        _ => None,
    };
    match known {
        Some(name) if little && order != b'=' => Some((name.to_owned(), size)),
        _ => Some((descr.to_owned(), size)),
    }
}

/// A header value: the Python literals a header uses.
enum Lit {
    Str(String),
    Bool,
    Tuple(Vec<u64>),
    List,
}

/// A cursor over the header text; errors carry the absolute offset.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    base: u64,
}

impl Parser<'_> {
    fn err(&self, what: impl Into<String>) -> Error {
        Error::malformed(self.base + self.pos as u64, what)
    }

    fn peek(&mut self) -> Option<u8> {
        while self.text.get(self.pos).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected `{}` in the .npy header", c as char)))
        }
    }

    fn string(&mut self) -> Result<String> {
        let Some(quote @ (b'\'' | b'"')) = self.peek() else {
            return Err(self.err("expected a quoted string in the .npy header"));
        };
        self.pos += 1;
        let start = self.pos;
        while let Some(&c) = self.text.get(self.pos) {
            if c == quote {
                let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
                self.pos += 1;
                return Ok(s);
            }
            if c == b'\\' || !(0x20..0x7f).contains(&c) {
                return Err(self.err("unsupported character in a .npy header string"));
            }
            self.pos += 1;
        }
        Err(self.err("unterminated string in the .npy header"))
    }

    fn int(&mut self) -> Result<u64> {
        self.peek();
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default();
        let n = digits.parse::<u64>().map_err(|_| self.err("expected a dimension (a non-negative integer)"))?;
        if self.text.get(self.pos) == Some(&b'L') {
            self.pos += 1; // Python 2's long suffix
        }
        Ok(n)
    }

    fn value(&mut self) -> Result<Lit> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                while self.peek() != Some(b')') {
                    if dims.len() >= 64 {
                        return Err(self.err("more than 64 dimensions"));
                    }
                    dims.push(self.int()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => return Err(self.err("expected `,` or `)` in the shape")),
                    }
                }
                self.pos += 1;
                Ok(Lit::Tuple(dims))
            }
            Some(b'[') => self.skip_list().map(|()| Lit::List),
            _ => {
                for word in ["True", "False"] {
                    if self.text[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(Lit::Bool);
                    }
                }
                Err(self.err("expected a string, a tuple, a list, True or False"))
            }
        }
    }

    /// Skips a (nested) list literal: a structured dtype's fields.
    fn skip_list(&mut self) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated list in the .npy header")),
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

    /// The header dict: `descr` (`None` when structured) and `shape`.
    fn dict(&mut self) -> Result<(Option<String>, Vec<u64>)> {
        self.expect(b'{')?;
        let (mut descr, mut order, mut shape) = (None, false, None);
        while self.peek() != Some(b'}') {
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            match (key.as_str(), value) {
                ("descr", Lit::Str(s)) => descr = Some(Some(s)),
                ("descr", Lit::List) => descr = Some(None),
                ("fortran_order", Lit::Bool) => order = true,
                ("shape", Lit::Tuple(t)) => shape = Some(t),
                (k, _) => return Err(self.err(format!("unexpected or mistyped header key `{k}`"))),
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected `,` or `}` in the .npy header")),
            }
        }
        let missing = |k: &str| Error::malformed(self.base, format!("the .npy header has no `{k}`"));
        let descr = descr.ok_or_else(|| missing("descr"))?;
        let shape = shape.ok_or_else(|| missing("shape"))?;
        if !order {
            return Err(missing("fortran_order"));
        }
        Ok((descr, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn dtypes_known_and_kept_as_given() {
        assert_eq!(dtype("<f4"), Some(("f32".into(), 4)));
        assert_eq!(dtype("|b1"), Some(("bool".into(), 1)));
        assert_eq!(dtype("|u1"), Some(("u8".into(), 1)));
        assert_eq!(dtype(">f4"), Some((">f4".into(), 4)));
        assert_eq!(dtype("<V2"), Some(("<V2".into(), 2)));
        assert_eq!(dtype("<M8[ns]"), Some(("<M8[ns]".into(), 8)));
        assert_eq!(dtype("|O"), None);
    }

    #[test]
    fn malformed_headers_name_the_byte() {
        let bad = npy("{'descr': '<f4', 'shape': (2,), }\n", &[0; 8]);
        let e = header(&bad, 0, bad.len() as u64).unwrap_err();
        assert!(e.to_string().contains("fortran_order"), "{e}");
        let bad = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,x), }", &[0; 8]);
        assert!(matches!(header(&bad, 0, bad.len() as u64), Err(Error::Malformed { offset, .. }) if offset > 10));
        let short = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", &[0; 8]);
        let h = header(&short, 0, short.len() as u64).unwrap();
        assert!(matches!(h.tensor("", 0, short.len() as u64), Err(Error::Truncated { .. })));
        let huge = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", &[]);
        assert!(header(&huge, 0, huge.len() as u64).is_err());
        assert!(header(&b"\x93NUMPY\x07\x00".to_vec(), 0, 8).is_err());
    }
}
