//! [`Cursor`]: a forward reader over the checkpoint (the SDK's
//! [`Source`]) for formats walked field by field (MessagePack, a zip
//! directory). Small fields come from a window read ahead; skipping a
//! tensor's bytes reads nothing; every field has a length limit, checked
//! before anything is allocated, so hostile lengths cannot exhaust memory.

use flor_plugin_sdk::{check_range, Error, Result, Source, MAX_READ};

/// How many bytes a [`Cursor`] reads ahead.
const WINDOW: u64 = 64 << 10;

/// A forward reader over a [`Source`].
pub struct Cursor<'a> {
    src: &'a dyn Source,
    size: u64,
    pos: u64,
    window: Vec<u8>,
    window_at: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor at byte `pos` of `src`.
    pub fn new(src: &'a dyn Source, pos: u64) -> Cursor<'a> {
        Cursor { src, size: src.size(), pos, window: Vec::new(), window_at: 0 }
    }

    /// The current byte offset.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The source's length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves to byte `pos` (at most the end).
    pub fn seek(&mut self, pos: u64) -> Result<()> {
        check_range(self.size, pos, 0)?;
        self.pos = pos;
        Ok(())
    }

    /// Skips `n` bytes without reading them.
    pub fn skip(&mut self, n: u64) -> Result<()> {
        check_range(self.size, self.pos, n)?;
        self.pos += n;
        Ok(())
    }

    /// The next `n` bytes: a field, not a tensor, so at most `limit`.
    pub fn bytes(&mut self, n: u64, limit: u32) -> Result<Vec<u8>> {
        let limit = limit.min(MAX_READ as u32);
        if n > u64::from(limit) {
            return Err(Error::limit(self.pos, format!("a {n}-byte field"), u64::from(limit)));
        }
        check_range(self.size, self.pos, n)?;
        let in_window = self.pos >= self.window_at && self.pos + n <= self.window_at + self.window.len() as u64;
        if !in_window {
            if n > WINDOW {
                let data = self.src.read_exact(self.pos, n)?;
                self.pos += n;
                return Ok(data);
            }
            self.window = self.src.read_exact(self.pos, WINDOW.min(self.size - self.pos))?;
            self.window_at = self.pos;
        }
        let start = (self.pos - self.window_at) as usize;
        let out = self.window[start..start + n as usize].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1, 1)?[0])
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let v = self.bytes(N as u64, N as u32)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }

    /// A big-endian unsigned integer of `n` bytes (1, 2, 4 or 8).
    pub fn be_uint(&mut self, n: usize) -> Result<u64> {
        let v = self.bytes(n as u64, 8)?;
        Ok(v.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A little-endian unsigned integer of `n` bytes (1, 2, 4 or 8).
    pub fn le_uint(&mut self, n: usize) -> Result<u64> {
        let v = self.bytes(n as u64, 8)?;
        Ok(v.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_across_windows_and_refuses_past_the_end() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = Cursor::new(&data, 0);
        c.skip(WINDOW - 2).unwrap();
        let v = c.bytes(4, 16).unwrap();
        assert_eq!(v, data[(WINDOW - 2) as usize..(WINDOW + 2) as usize]);
        c.seek(199_998).unwrap();
        assert_eq!(c.le_uint(2).unwrap(), u64::from(data[199_998]) | u64::from(data[199_999]) << 8);
        assert!(matches!(c.u8(), Err(Error::Truncated { .. })));
        assert!(matches!(c.bytes(100, 10), Err(Error::Limit { .. })));
        assert!(c.skip(3).is_err() && c.seek(200_001).is_err());
    }
}
