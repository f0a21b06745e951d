//! Parsing helpers every format needs: little-endian integers at an
//! offset, and a bounded [`Cursor`] over a slice whose errors name the byte
//! of the checkpoint (not of the slice) where they happen.

use crate::error::{Error, Result};

/// `N` bytes of `data` at `at`, or `None` when they run past its end.
pub fn array_at<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The little-endian `u16` at `at` of `data`.
pub fn u16_le(data: &[u8], at: usize) -> Option<u16> {
    array_at(data, at).map(u16::from_le_bytes)
}

/// The little-endian `u32` at `at` of `data`.
pub fn u32_le(data: &[u8], at: usize) -> Option<u32> {
    array_at(data, at).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `at` of `data`.
pub fn u64_le(data: &[u8], at: usize) -> Option<u64> {
    array_at(data, at).map(u64::from_le_bytes)
}

/// A reading position in a slice that came from byte `base` of the
/// checkpoint. Every read is bounds-checked; a short read is an
/// [`Error::Truncated`] naming the checkpoint offset.
///
/// ```
/// use flor_plugin_sdk::Cursor;
/// let mut c = Cursor::new(&[1, 0, 2, 0, 0, 0, 9], 100);
/// assert_eq!(c.u16_le().unwrap(), 1);
/// assert_eq!(c.u32_le().unwrap(), 2);
/// assert_eq!(c.offset(), 106);
/// assert_eq!(c.u16_le().unwrap_err().to_string(),
///            "byte 106: truncated: 2 bytes needed there, the data ends at byte 107");
/// ```
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`, which begins at checkpoint byte `base`.
    pub fn new(data: &'a [u8], base: u64) -> Cursor<'a> {
        Cursor { data, pos: 0, base }
    }

    /// The position in the slice.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The checkpoint offset of the position.
    pub fn offset(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    /// Bytes left after the position.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Whether the position is at the end.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Moves to slice position `pos` (at most the slice's length).
    pub fn seek(&mut self, pos: usize) -> Result<()> {
        if pos > self.data.len() {
            return Err(self.truncated_at(pos, 0));
        }
        self.pos = pos;
        Ok(())
    }

    fn truncated_at(&self, pos: usize, len: usize) -> Error {
        Error::Truncated {
            offset: self.base.saturating_add(pos as u64),
            len: len as u64,
            size: self.base.saturating_add(self.data.len() as u64),
        }
    }

    /// The next `n` bytes, moving past them.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        match self.pos.checked_add(n).and_then(|end| data.get(self.pos..end)) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => Err(self.truncated_at(self.pos, n)),
        }
    }

    /// Moves past `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.bytes(N)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// The next little-endian `u16`.
    pub fn u16_le(&mut self) -> Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// The next little-endian `u32`.
    pub fn u32_le(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// The next little-endian `i32`.
    pub fn i32_le(&mut self) -> Result<i32> {
        self.array().map(i32::from_le_bytes)
    }

    /// The next little-endian `u64`.
    pub fn u64_le(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next little-endian `i64`.
    pub fn i64_le(&mut self) -> Result<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// The next big-endian `f64` (pickle's `BINFLOAT`, for one).
    pub fn f64_be(&mut self) -> Result<f64> {
        self.array().map(f64::from_be_bytes)
    }

    /// The bytes up to (not including) the next `delim`, moving past it.
    pub fn until(&mut self, delim: u8) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        match rest.iter().position(|&b| b == delim) {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(Error::malformed(self.offset(), format!("no {delim:#04x} byte before the end"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_functions_check_bounds() {
        let d = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_le(&d, 0), Some(0x0201));
        assert_eq!(u32_le(&d, 5), Some(0x0908_0706));
        assert_eq!(u32_le(&d, 6), None);
        assert_eq!(u64_le(&d, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u64_le(&d, usize::MAX), None);
    }

    #[test]
    fn cursor_reads_in_order_and_names_checkpoint_offsets() {
        let d = [7u8, 0xff, 0xff, 0xff, 0xff, b'a', b'\n', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0];
        let mut c = Cursor::new(&d, 1000);
        assert_eq!(c.u8().unwrap(), 7);
        assert_eq!(c.i32_le().unwrap(), -1);
        assert_eq!(c.until(b'\n').unwrap(), b"a");
        assert_eq!(c.f64_be().unwrap(), 1.0);
        assert!(c.is_empty());
        assert_eq!(c.offset(), 1015);
        assert_eq!(c.u8().unwrap_err(), Error::Truncated { offset: 1015, len: 1, size: 1015 });
        c.seek(1).unwrap();
        assert_eq!(c.until(b'z').unwrap_err().to_string(), "byte 1001: no 0x7a byte before the end");
        assert!(c.seek(16).is_err());
        assert!(c.bytes(usize::MAX).is_err());
        assert_eq!(c.pos(), 1);
    }
}
