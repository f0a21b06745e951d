//! `numpy.npz`: a zip archive of `.npy` files (`np.savez`,
//! `np.savez_compressed`). Entries are found through the central directory
//! (zip64 included: numpy writes zip64 records); each STORED (uncompressed)
//! `.npy` entry is a tensor named after the entry without `.npy`; DEFLATED
//! or encrypted entries, and entries of other files, are metadata only, as
//! are the zip records themselves.

use flor_plugin_sdk::{Error, Result, Source, Tensor, TensorLayout};

use crate::layout::finish;
use crate::npy;
use crate::source::Cursor;

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
const END64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;

/// The end record's fixed part and the longest comment after it.
const END_LEN: u64 = 22;
const MAX_COMMENT: u64 = 0xffff;
/// The most entries read.
const MAX_ENTRIES: u64 = 1 << 20;

/// Whether `head` looks like the start of an `.npz`: a zip whose first
/// entry is a `.npy` file (a PyTorch archive's entries sit in a folder).
pub fn sniff(head: &[u8]) -> bool {
    if !head.starts_with(b"PK\x03\x04") || head.len() < 30 {
        return false;
    }
    let name_len = usize::from(u16::from_le_bytes([head[26], head[27]]));
    let shown = &head[30..head.len().min(30 + name_len)];
    if shown.len() == name_len {
        shown.ends_with(b".npy")
    } else {
        !shown.contains(&b'/')
    }
}

/// One central-directory entry: what the layout needs.
struct Entry {
    name: String,
    flags: u16,
    method: u16,
    compressed: u64,
    local: u64,
}

/// Where the central directory lies and how many entries it has.
fn directory(src: &dyn Source) -> Result<(u64, u64)> {
    let size = src.size();
    if size < END_LEN {
        return Err(Error::malformed(0, "too short for a zip archive"));
    }
    let tail_len = size.min(END_LEN + MAX_COMMENT);
    let tail_at = size - tail_len;
    let tail = src.read_exact(tail_at, tail_len)?;
    let end = (0..=tail.len() - END_LEN as usize)
        .rev()
        .find(|&i| le32(&tail[i..]) == END && i + END_LEN as usize + usize::from(le16(&tail[i + 20..])) == tail.len())
        .ok_or_else(|| Error::malformed(tail_at, "no zip end-of-central-directory record"))?;
    let rec = &tail[end..];
    let (mut entries, mut dir_len, mut dir_at) =
        (u64::from(le16(&rec[10..])), u64::from(le32(&rec[12..])), u64::from(le32(&rec[16..])));
    let end_at = tail_at + end as u64;
    if end_at >= 20 {
        let loc = src.read_exact(end_at - 20, 20)?;
        if le32(&loc) == LOCATOR64 {
            let at = le64(&loc[8..]);
            let rec = src.read_exact(at, 56)?;
            if le32(&rec) != END64 {
                return Err(Error::malformed(at, "the zip64 locator points at no zip64 end record"));
            }
            (entries, dir_len, dir_at) = (le64(&rec[32..]), le64(&rec[40..]), le64(&rec[48..]));
        }
    }
    if entries > MAX_ENTRIES {
        return Err(Error::malformed(end_at, format!("{entries} entries is over the plugin's limit")));
    }
    if dir_at.checked_add(dir_len).is_none_or(|e| e > end_at) {
        return Err(Error::malformed(end_at, "the central directory lies outside the archive"));
    }
    Ok((dir_at, entries))
}

fn entry(c: &mut Cursor<'_>) -> Result<Entry> {
    let at = c.pos();
    let fixed = c.array::<46>()?;
    if le32(&fixed) != CENTRAL {
        return Err(Error::malformed(at, "expected a central directory entry"));
    }
    let (name_len, extra_len, comment_len) = (le16(&fixed[28..]), le16(&fixed[30..]), le16(&fixed[32..]));
    let name = String::from_utf8_lossy(&c.bytes(u64::from(name_len), 0xffff)?).into_owned();
    let extra = c.bytes(u64::from(extra_len), 0xffff)?;
    c.skip(u64::from(comment_len))?;
    let mut e = Entry {
        name,
        flags: le16(&fixed[8..]),
        method: le16(&fixed[10..]),
        compressed: u64::from(le32(&fixed[20..])),
        local: u64::from(le32(&fixed[42..])),
    };
    let uncompressed = le32(&fixed[24..]);
    zip64(&extra, uncompressed == u32::MAX, &mut e, at)?;
    Ok(e)
}

/// Reads the zip64 extra field (id 1): the 8-byte values of the fields
/// whose 4-byte ones are all ones, in order.
fn zip64(extra: &[u8], uncompressed: bool, e: &mut Entry, at: u64) -> Result<()> {
    let wants = [uncompressed, e.compressed == u64::from(u32::MAX), e.local == u64::from(u32::MAX)];
    if !wants.iter().any(|&w| w) {
        return Ok(());
    }
    let mut i = 0;
    while i + 4 <= extra.len() {
        let (id, len) = (le16(&extra[i..]), usize::from(le16(&extra[i + 2..])));
        let body = extra.get(i + 4..i + 4 + len).unwrap_or_default();
        if id == 1 {
            let mut values = body.chunks_exact(8).map(le64);
            for (k, want) in wants.iter().enumerate() {
                if *want {
                    let v = values.next().ok_or_else(|| Error::malformed(at, "short zip64 extra field"))?;
                    match k {
                        1 => e.compressed = v,
                        2 => e.local = v,
                        _ => {}
                    }
                }
            }
            return Ok(());
        }
        i += 4 + len;
    }
    Err(Error::malformed(at, format!("entry `{}` needs a zip64 extra field it does not have", e.name)))
}

/// The tensor of a STORED `.npy` entry, if it is one.
fn tensor(src: &dyn Source, e: &Entry) -> Result<Option<Tensor>> {
    let local = src.read_exact(e.local, 30)?;
    if le32(&local) != LOCAL {
        return Err(Error::malformed(e.local, format!("entry `{}`: no local file header here", e.name)));
    }
    let start = e.local + 30 + u64::from(le16(&local[26..])) + u64::from(le16(&local[28..]));
    if start.checked_add(e.compressed).is_none_or(|end| end > src.size()) {
        return Err(Error::malformed(e.local, format!("entry `{}` runs past the end of the archive", e.name)));
    }
    let Some(stem) = e.name.strip_suffix(".npy") else { return Ok(None) };
    if e.method != 0 || e.flags & 1 != 0 {
        return Ok(None); // compressed or encrypted: its bytes are not the elements
    }
    let header = npy::header(src, start, e.compressed)?;
    header.tensor(stem, start, e.compressed)
}

/// The layout of an `.npz` archive.
pub fn layout(src: &dyn Source) -> Result<TensorLayout> {
    let (dir_at, entries) = directory(src)?;
    let mut c = Cursor::new(src, dir_at);
    let mut tensors = Vec::new();
    for _ in 0..entries {
        let e = entry(&mut c)?;
        tensors.extend(tensor(src, &e)?);
    }
    finish(tensors, src.size())
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_npz_from_torch_archives() {
        let mut head = b"PK\x03\x04".to_vec();
        head.resize(26, 0);
        head.extend(9u16.to_le_bytes());
        head.extend(0u16.to_le_bytes());
        let mut npz = head.clone();
        npz.extend(b"arr_0.npy");
        assert!(sniff(&npz));
        let mut torch = head.clone();
        torch[26] = 16;
        torch.extend(b"archive/data.pkl");
        assert!(!sniff(&torch));
        assert!(!sniff(b"PK\x03\x04"));
    }

    #[test]
    fn hostile_archives_are_errors_not_panics() {
        assert!(layout(&b"PK\x05\x06".to_vec()).is_err());
        let mut end = vec![0u8; 22];
        end[..4].copy_from_slice(&END.to_le_bytes());
        end[10] = 3; // three entries ...
        end[16] = 0; // ... in a directory at byte 0 that is not one
        end[12] = 0xff;
        assert!(layout(&end).is_err());
        end[12] = 0;
        assert!(layout(&end).is_err());
    }
}
