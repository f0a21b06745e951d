//! The zip container of `torch.save`: its central directory, read through
//! the [`Source`] (the tail, the directory, one local header per entry),
//! never the whole file. Zip64 records are followed, as torch writes them
//! for archives or entries over 4 GiB.

use flor_plugin_sdk::{u16_le, u32_le, u64_le, Cursor, Error, Result, Source};

/// The most central-directory bytes read (about 200 000 entries).
pub const MAX_DIRECTORY: u64 = 16 << 20;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name (`archive/data/0`).
    pub name: String,
    /// Compression method (0: stored).
    pub method: u16,
    /// Stored length in bytes.
    pub compressed: u64,
    /// Original length in bytes.
    pub size: u64,
    /// Where its local header starts.
    pub header: u64,
    /// Where its data starts (after the local header, name and extra field).
    pub data: u64,
}

impl Entry {
    /// One past its stored data.
    pub fn data_end(&self) -> u64 {
        self.data.saturating_add(self.compressed)
    }
}

/// The archive's directory.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The entries, in central-directory order.
    pub entries: Vec<Entry>,
    /// Where the central directory starts.
    pub directory: u64,
}

/// The end-of-central-directory facts: entry count, directory size and offset.
struct End {
    count: u64,
    size: u64,
    offset: u64,
}

fn find_end(src: &dyn Source) -> Result<End> {
    let size = src.size();
    let tail_len = size.min(22 + 0xffff);
    let tail_start = size - tail_len;
    let tail = src.read_exact(tail_start, tail_len)?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| {
            u32_le(&tail, i) == Some(EOCD_SIG)
                && u16_le(&tail, i + 20).is_some_and(|c| i + 22 + usize::from(c) == tail.len())
        })
        .ok_or_else(|| Error::malformed(tail_start, "no zip end-of-central-directory record in the last 64 KiB"))?;
    let field16 = |o| u64::from(u16_le(&tail, at + o).unwrap_or(0));
    let field32 = |o| u64::from(u32_le(&tail, at + o).unwrap_or(0));
    let mut end = End { count: field16(10), size: field32(12), offset: field32(16) };
    let eocd = tail_start + at as u64;
    if end.count == 0xffff || end.size == 0xffff_ffff || end.offset == 0xffff_ffff {
        let locator_at = eocd
            .checked_sub(20)
            .ok_or_else(|| Error::malformed(eocd, "zip64 sizes but no room for a zip64 locator"))?;
        let locator = src.read_exact(locator_at, 20)?;
        if u32_le(&locator, 0) != Some(LOCATOR_SIG) {
            return Err(Error::malformed(locator_at, "zip64 sizes but no zip64 end-of-directory locator"));
        }
        let record_at = u64_le(&locator, 8).unwrap_or(u64::MAX);
        let record = src.read_exact(record_at, 56)?;
        if u32_le(&record, 0) != Some(EOCD64_SIG) {
            return Err(Error::malformed(
                record_at,
                "no zip64 end-of-central-directory record where its locator points",
            ));
        }
        let field64 = |o| u64_le(&record, o).unwrap_or(0);
        end = End { count: field64(32), size: field64(40), offset: field64(48) };
    }
    if end.offset.checked_add(end.size).is_none_or(|e| e > eocd) {
        return Err(Error::malformed(
            eocd,
            format!("central directory ({} bytes at {}) runs past its end record", end.size, end.offset),
        ));
    }
    Ok(end)
}

/// Replaces the 0xffffffff fields of a central entry by their zip64 extra
/// values (in the order the zip spec gives: size, compressed, header).
fn zip64_fields(extra: &[u8], at: u64, size: &mut u64, compressed: &mut u64, header: &mut u64) -> Result<()> {
    let mut c = Cursor::new(extra, at);
    while c.remaining() >= 4 {
        let id = c.u16_le()?;
        let len = usize::from(c.u16_le()?);
        let body = c.bytes(len)?;
        if id != 1 {
            continue;
        }
        let mut f = Cursor::new(body, at);
        for field in [size, compressed, header] {
            if *field == 0xffff_ffff {
                *field = f.u64_le()?;
            }
        }
        return Ok(());
    }
    Ok(())
}

/// One central-directory entry at the cursor (its local header not read yet).
fn central_entry(c: &mut Cursor<'_>) -> Result<Entry> {
    let at = c.offset();
    if c.u32_le()? != CENTRAL_SIG {
        return Err(Error::malformed(at, "not a central directory entry"));
    }
    c.skip(6)?; // versions, flags
    let method = c.u16_le()?;
    c.skip(8)?; // time, date, crc
    let mut compressed = u64::from(c.u32_le()?);
    let mut size = u64::from(c.u32_le()?);
    let name_len = usize::from(c.u16_le()?);
    let extra_len = usize::from(c.u16_le()?);
    let comment_len = usize::from(c.u16_le()?);
    c.skip(8)?; // disk, attributes
    let mut header = u64::from(c.u32_le()?);
    let name_at = c.offset();
    let name = std::str::from_utf8(c.bytes(name_len)?)
        .map_err(|_| Error::malformed(name_at, "a zip entry name that is not UTF-8"))?
        .to_owned();
    let extra_at = c.offset();
    zip64_fields(c.bytes(extra_len)?, extra_at, &mut size, &mut compressed, &mut header)?;
    c.skip(comment_len)?;
    Ok(Entry { name, method, compressed, size, header, data: 0 })
}

/// Reads the archive's directory and every entry's local header.
pub fn read(src: &dyn Source) -> Result<Archive> {
    let end = find_end(src)?;
    if end.size > MAX_DIRECTORY {
        return Err(Error::limit(end.offset, "the zip central directory", MAX_DIRECTORY));
    }
    let directory = src.read_exact(end.offset, end.size)?;
    let mut c = Cursor::new(&directory, end.offset);
    // Every entry takes at least 46 bytes, which bounds the count by the directory read.
    if end.count > end.size / 46 {
        return Err(Error::malformed(
            end.offset,
            format!("{} entries cannot fit in {} directory bytes", end.count, end.size),
        ));
    }
    let mut entries = Vec::with_capacity(end.count as usize);
    for _ in 0..end.count {
        let mut e = central_entry(&mut c)?;
        let local = src.read_exact(e.header, 30)?;
        if u32_le(&local, 0) != Some(LOCAL_SIG) {
            return Err(Error::malformed(
                e.header,
                format!("entry `{}`: no local header where the directory points", e.name),
            ));
        }
        let name_len = u64::from(u16_le(&local, 26).unwrap_or(0));
        let extra_len = u64::from(u16_le(&local, 28).unwrap_or(0));
        e.data = e.header + 30 + name_len + extra_len;
        if e.data.checked_add(e.compressed).is_none_or(|end_| end_ > end.offset) {
            return Err(Error::malformed(
                e.header,
                format!("entry `{}`: its {} bytes run into the central directory", e.name, e.compressed),
            ));
        }
        entries.push(e);
    }
    let mut spans: Vec<(u64, u64, &str)> = entries.iter().map(|e| (e.header, e.data_end(), e.name.as_str())).collect();
    spans.sort_unstable();
    if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
        return Err(Error::malformed(w[1].0, format!("entry `{}` overlaps entry `{}`", w[1].2, w[0].2)));
    }
    Ok(Archive { entries, directory: end.offset })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal stored zip of `(name, data)` (no padding, no descriptors).
    pub(crate) fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let at = out.len() as u32;
            out.extend(LOCAL_SIG.to_le_bytes());
            out.extend([0u8; 14]);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(*data);
            central.extend(CENTRAL_SIG.to_le_bytes());
            central.extend([0u8; 16]);
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(at.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd = out.len() as u32;
        out.extend(&central);
        out.extend(EOCD_SIG.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd.to_le_bytes());
        out.extend([0u8; 2]);
        out
    }

    #[test]
    fn reads_entries_and_their_data_offsets() {
        let z = zip(&[("a/x", b"hello"), ("a/yy", b"")]);
        let a = read(&z).unwrap();
        assert_eq!(a.entries.len(), 2);
        assert_eq!((a.entries[0].name.as_str(), a.entries[0].data, a.entries[0].size), ("a/x", 33, 5));
        assert_eq!((a.entries[1].header, a.entries[1].data), (38, 72));
        assert_eq!(a.directory, 72);
    }

    #[test]
    fn damaged_archives_are_errors_naming_the_byte() {
        let z = zip(&[("a/x", b"hello")]);
        let mut no_end = z.clone();
        let n = no_end.len();
        no_end[n - 22] = 0;
        assert!(read(&no_end).unwrap_err().to_string().contains("no zip end-of-central-directory record"));
        let mut bad_local = z.clone();
        bad_local[0] = b'Q';
        assert_eq!(
            read(&bad_local).unwrap_err().to_string(),
            "byte 0: entry `a/x`: no local header where the directory points"
        );
        let mut huge = z.clone();
        // the entry's compressed size in the directory: 20 bytes into it (at 38)
        huge[58..62].copy_from_slice(&1000u32.to_le_bytes());
        assert!(read(&huge).unwrap_err().to_string().contains("run into the central directory"));
        let mut many = z;
        let n = many.len();
        many[n - 12..n - 10].copy_from_slice(&5000u16.to_le_bytes());
        assert!(read(&many).unwrap_err().to_string().contains("5000 entries cannot fit"));
        assert!(read(&b"PK"[..].to_vec()).is_err());
    }
}
