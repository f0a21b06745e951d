//! Reading the checkpoint a call examines. On WebAssembly the bytes come
//! from the host through the `source` import ([`crate::HostSource`]); in
//! native tests any `&[u8]` or `Vec<u8>` is a [`Source`] too, so format
//! code is the same in both.

use crate::error::{Error, Result};

/// The most bytes one host read returns (the interface's per-read limit);
/// [`Source::read_at`] splits longer reads.
pub const MAX_READ: usize = 16 << 20;

/// Random access to a checkpoint's bytes.
///
/// Implement [`Source::size`] and [`Source::read_chunk`]; the provided
/// methods check bounds (before allocating anything) and split long reads.
pub trait Source {
    /// The checkpoint's length in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset`. Callers guarantee the range
    /// lies inside the checkpoint and `buf` is at most [`MAX_READ`] long;
    /// use [`Source::read_at`], which does.
    fn read_chunk(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Fills `buf` with the bytes at `offset`, or fails with
    /// [`Error::Truncated`] (naming `offset`) when they run past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        let mut at = offset;
        for chunk in buf.chunks_mut(MAX_READ) {
            self.read_chunk(at, chunk)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// The `len` bytes at `offset`; the range is checked before the buffer
    /// is allocated, so a corrupt length cannot exhaust memory.
    fn read_exact(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_range(self.size(), offset, len)?;
        let n = usize::try_from(len)
            .map_err(|_| Error::limit(offset, format!("a read of {len} bytes"), usize::MAX as u64))?;
        let mut buf = vec![0; n];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// At most `len` bytes at `offset` (fewer at the end; none past it).
    fn read_upto(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let size = self.size();
        let len = len.min(size.saturating_sub(offset));
        self.read_exact(offset.min(size), len)
    }

    /// The little-endian `u16` at `offset`.
    fn u16_le_at(&self, offset: u64) -> Result<u16> {
        let mut b = [0; 2];
        self.read_at(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// The little-endian `u32` at `offset`.
    fn u32_le_at(&self, offset: u64) -> Result<u32> {
        let mut b = [0; 4];
        self.read_at(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The little-endian `u64` at `offset`.
    fn u64_le_at(&self, offset: u64) -> Result<u64> {
        let mut b = [0; 8];
        self.read_at(offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// `Ok` when `len` bytes at `offset` lie inside `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::Truncated { offset, len, size }),
    }
}

fn copy_from(data: &[u8], offset: u64, buf: &mut [u8]) -> Result<()> {
    let len = buf.len() as u64;
    let src = usize::try_from(offset)
        .ok()
        .and_then(|at| data.get(at..at.checked_add(buf.len())?))
        .ok_or(Error::Truncated { offset, len, size: data.len() as u64 })?;
    buf.copy_from_slice(src);
    Ok(())
}

impl Source for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_chunk(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        copy_from(self, offset, buf)
    }
}

impl Source for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_chunk(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        copy_from(self, offset, buf)
    }
}

/// A buffered, forward-reading cursor over a [`Source`]: small reads
/// (headers, records) are served from a window refilled a few KiB at a time,
/// so walking a zip directory costs few host calls.
pub struct SourceReader<'s, S: Source + ?Sized> {
    src: &'s S,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
    capacity: usize,
}

impl<'s, S: Source + ?Sized> SourceReader<'s, S> {
    /// The default window: 64 KiB.
    pub const DEFAULT_CAPACITY: usize = 64 << 10;

    /// A reader at `pos` with the default window.
    pub fn new(src: &'s S, pos: u64) -> Self {
        Self::with_capacity(src, pos, Self::DEFAULT_CAPACITY)
    }

    /// A reader at `pos` whose window holds `capacity` bytes (at least 1).
    pub fn with_capacity(src: &'s S, pos: u64, capacity: usize) -> Self {
        SourceReader { src, pos, window: Vec::new(), window_start: 0, capacity: capacity.max(1) }
    }

    /// The source it reads.
    pub fn source(&self) -> &'s S {
        self.src
    }

    /// The checkpoint offset of the next byte.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Moves to `pos` (the window is kept if it covers it).
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Moves past `n` bytes (checked when they are read).
    pub fn skip(&mut self, n: u64) {
        self.pos = self.pos.saturating_add(n);
    }

    /// Fills `buf` from the position, moving past it.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        check_range(self.src.size(), self.pos, len)?;
        if buf.len() >= self.capacity {
            self.src.read_at(self.pos, buf)?;
        } else {
            let in_window =
                self.pos >= self.window_start && self.pos + len <= self.window_start + self.window.len() as u64;
            if !in_window {
                self.window = self.src.read_upto(self.pos, self.capacity as u64)?;
                self.window_start = self.pos;
            }
            let at = (self.pos - self.window_start) as usize;
            buf.copy_from_slice(&self.window[at..at + buf.len()]);
        }
        self.pos += len;
        Ok(())
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        check_range(self.src.size(), self.pos, n)?;
        let n = usize::try_from(n).map_err(|_| Error::limit(self.pos, "a read", usize::MAX as u64))?;
        let mut buf = vec![0; n];
        self.read(&mut buf)?;
        Ok(buf)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0; N];
        self.read(&mut b)?;
        Ok(b)
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

    /// The next little-endian `u64`.
    pub fn u64_le(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Counts the reads that reach the underlying bytes.
    struct Counting<'a>(&'a [u8], Cell<usize>);

    impl Source for Counting<'_> {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_chunk(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.1.set(self.1.get() + 1);
            self.0.read_chunk(offset, buf)
        }
    }

    #[test]
    fn slices_and_vectors_read_with_bounds_checks() {
        let v: Vec<u8> = (0..10).collect();
        let s: &[u8] = &v;
        assert_eq!(s.read_exact(2, 3).unwrap(), [2, 3, 4]);
        assert_eq!(v.u32_le_at(6).unwrap(), u32::from_le_bytes([6, 7, 8, 9]));
        assert_eq!(v.read_exact(8, 3).unwrap_err(), Error::Truncated { offset: 8, len: 3, size: 10 });
        assert_eq!(v.read_exact(u64::MAX, 2).unwrap_err(), Error::Truncated { offset: u64::MAX, len: 2, size: 10 });
        // A huge length is refused before anything is allocated.
        assert!(v.read_exact(0, u64::MAX).is_err());
        assert_eq!(v.read_upto(7, 100).unwrap(), [7, 8, 9]);
        assert_eq!(v.read_upto(70, 100).unwrap(), Vec::<u8>::new());
        let dynamic: &dyn Source = &s;
        assert_eq!(dynamic.u16_le_at(0).unwrap(), 0x0100);
    }

    #[test]
    fn reader_serves_small_reads_from_its_window() {
        let v: Vec<u8> = (0..=255).collect();
        let src = Counting(&v, Cell::new(0));
        let mut r = SourceReader::with_capacity(&src, 10, 16);
        assert_eq!(r.u8().unwrap(), 10);
        assert_eq!(r.u16_le().unwrap(), u16::from_le_bytes([11, 12]));
        assert_eq!(r.u32_le().unwrap(), u32::from_le_bytes([13, 14, 15, 16]));
        assert_eq!(src.1.get(), 1, "one window read for three small reads");
        assert_eq!(r.bytes(20).unwrap(), (17..37).collect::<Vec<u8>>());
        r.seek(250);
        assert_eq!(r.bytes(6).unwrap(), [250, 251, 252, 253, 254, 255]);
        assert_eq!(r.u8().unwrap_err(), Error::Truncated { offset: 256, len: 1, size: 256 });
        r.seek(0);
        r.skip(5);
        assert_eq!(r.u64_le().unwrap(), u64::from_le_bytes([5, 6, 7, 8, 9, 10, 11, 12]));
        assert_eq!(r.pos(), 13);
    }
}
