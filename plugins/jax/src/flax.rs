//! `flax.msgpack`: what `flax.serialization.to_bytes` writes. A MessagePack
//! value (normally a map of maps: the state dict) whose arrays are
//! extension values:
//!
//! - type 1 (ndarray) and 3 (numpy scalar): a nested MessagePack array
//!   `[shape, dtype name, buffer]` — the shape an array of integers, the
//!   dtype NumPy's name (`float32`, `bfloat16`), the buffer a `bin` of the
//!   elements, C order, in the writer's byte order (little-endian on every
//!   machine flax runs on). The buffer is the tensor.
//! - type 2 (a Python complex): `[real, imag]` as big-endian doubles:
//!   metadata, as are MessagePack's own numbers (big-endian) and strings.
//!
//! A tensor's name is its map keys `/`-joined (`params/Dense_0/kernel`;
//! array elements by index); arrays over 1 GiB, which flax splits into
//! `chunks`, are one tensor per chunk (`emb/chunks/0`). Everything is read
//! with limits (nesting, field sizes, entry counts against the bytes left),
//! and anything malformed is an error naming the byte.

use flor_plugin_sdk::{dtype, Error, Result, Source, Tensor, TensorLayout};

use crate::layout::{finish, from_numpy_name};
use crate::source::Cursor;

/// The deepest nesting read.
const MAX_DEPTH: usize = 256;
/// The longest map key or dtype name read.
const MAX_TEXT: u32 = 1 << 16;
/// The most dimensions of an array.
const MAX_DIMS: u64 = 64;
/// The most tensors reported.
const MAX_TENSORS: usize = 1 << 20;

/// Whether `head` (a checkpoint's first bytes) looks like flax's
/// MessagePack: a top-level map with a string first key (or a lone array),
/// well-formed as far as the head goes.
pub fn sniff(head: &[u8]) -> bool {
    let starts = match head.first() {
        Some(0x81..=0x8f) => head.get(1),
        Some(0xde) => head.get(3).filter(|_| head[1..3] != [0, 0]),
        Some(0xdf) => head.get(5).filter(|_| head[1..5] != [0, 0, 0, 0]),
        Some(0xc7) => return head.get(2) == Some(&1),
        Some(0xc8) => return head.get(3) == Some(&1),
        Some(0xc9) => return head.get(5) == Some(&1),
        _ => return false,
    };
    if !starts.is_some_and(|&b| matches!(b, 0xa0..=0xbf | 0xd9..=0xdb)) {
        return false;
    }
    let mut w = Walker { c: Cursor::new(&head, 0), path: Vec::new(), tensors: Vec::new() };
    match w.value(0) {
        Ok(()) => w.c.pos() == head.len() as u64,
        Err(e) => matches!(e, Error::Truncated { .. }),
    }
}

/// The layout of a flax MessagePack checkpoint.
pub fn layout(src: &dyn Source) -> Result<TensorLayout> {
    let mut w = Walker { c: Cursor::new(src, 0), path: Vec::new(), tensors: Vec::new() };
    w.value(0)?;
    if w.c.pos() != src.size() {
        return Err(Error::malformed(w.c.pos(), "bytes after the MessagePack value"));
    }
    finish(w.tensors, src.size())
}

/// What a MessagePack type byte starts.
enum Head {
    /// A value of this many more bytes (numbers, nil, booleans).
    Fixed(u64),
    /// A string or binary of this many bytes.
    Bytes(u64),
    /// An array of this many values.
    Array(u64),
    /// A map of this many key/value pairs.
    Map(u64),
    /// An extension value: its type and length.
    Ext(i8, u64),
}

struct Walker<'a> {
    c: Cursor<'a>,
    path: Vec<String>,
    tensors: Vec<Tensor>,
}

impl Walker<'_> {
    fn head(&mut self) -> Result<Head> {
        let at = self.c.pos();
        let b = self.c.u8()?;
        Ok(match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Head::Fixed(0),
            0x80..=0x8f => Head::Map(u64::from(b & 0x0f)),
            0x90..=0x9f => Head::Array(u64::from(b & 0x0f)),
            0xa0..=0xbf => Head::Bytes(u64::from(b & 0x1f)),
            0xc4 | 0xd9 => Head::Bytes(self.c.be_uint(1)?),
            0xc5 | 0xda => Head::Bytes(self.c.be_uint(2)?),
            0xc6 | 0xdb => Head::Bytes(self.c.be_uint(4)?),
            0xc7..=0xc9 => {
                let len = self.c.be_uint(1 << (b - 0xc7))?;
                Head::Ext(self.c.u8()? as i8, len)
            }
            0xca | 0xd2 | 0xce => Head::Fixed(4),
            0xcb | 0xd3 | 0xcf => Head::Fixed(8),
            0xcc | 0xd0 => Head::Fixed(1),
            0xcd | 0xd1 => Head::Fixed(2),
            0xd4..=0xd8 => Head::Ext(self.c.u8()? as i8, 1 << (b - 0xd4)),
            0xdc => Head::Array(self.c.be_uint(2)?),
            0xdd => Head::Array(self.c.be_uint(4)?),
            0xde => Head::Map(self.c.be_uint(2)?),
            0xdf => Head::Map(self.c.be_uint(4)?),
            0xc1 => return Err(Error::malformed(at, "0xc1 is not a MessagePack type")),
        })
    }

    /// Refuses a count of values that cannot fit in the bytes left (each
    /// takes at least one byte): no loop runs longer than the input.
    fn check_count(&self, n: u64, per: u64, at: u64) -> Result<()> {
        let left = self.c.size() - self.c.pos();
        if n.checked_mul(per).is_none_or(|need| need > left) {
            return Err(Error::Truncated { offset: at, len: n.saturating_mul(per), size: self.c.size() });
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<()> {
        let at = self.c.pos();
        if depth > MAX_DEPTH {
            return Err(Error::malformed(at, format!("nested deeper than {MAX_DEPTH}")));
        }
        match self.head()? {
            Head::Fixed(n) | Head::Bytes(n) => self.c.skip(n),
            Head::Array(n) => {
                self.check_count(n, 1, at)?;
                for i in 0..n {
                    self.path.push(i.to_string());
                    self.value(depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            Head::Map(n) => {
                self.check_count(n, 2, at)?;
                for _ in 0..n {
                    let key = self.key()?;
                    self.path.push(key);
                    self.value(depth + 1)?;
                    self.path.pop();
                }
                Ok(())
            }
            Head::Ext(kind, len) => {
                let body = self.c.pos();
                let end = body.checked_add(len).filter(|&e| e <= self.c.size()).ok_or(Error::Truncated {
                    offset: body,
                    len,
                    size: self.c.size(),
                })?;
                if kind == 1 || kind == 3 {
                    self.array(at, end)?;
                }
                self.c.seek(end)
            }
        }
    }

    /// A map key as text: a string, an integer, `None`/`True`/`False`.
    fn key(&mut self) -> Result<String> {
        let at = self.c.pos();
        let b = self.c.u8()?;
        let int = |w: &mut Self, n: usize, signed: bool| -> Result<String> {
            let v = w.c.be_uint(n)?;
            Ok(if signed { (((v << (64 - 8 * n)) as i64) >> (64 - 8 * n)).to_string() } else { v.to_string() })
        };
        match b {
            0x00..=0x7f => Ok(b.to_string()),
            0xe0..=0xff => Ok((b as i8).to_string()),
            0xc0 => Ok("None".into()),
            0xc2 => Ok("False".into()),
            0xc3 => Ok("True".into()),
            0xcc..=0xcf => int(self, 1 << (b - 0xcc), false),
            0xd0..=0xd3 => int(self, 1 << (b - 0xd0), true),
            _ => {
                self.c.seek(at)?;
                match self.head()? {
                    Head::Bytes(n) => Ok(String::from_utf8_lossy(&self.c.bytes(n, MAX_TEXT)?).into_owned()),
                    _ => Err(Error::malformed(at, "a map key that is not a string, a number or a constant")),
                }
            }
        }
    }

    /// An ndarray extension's body (`[shape, dtype, buffer]`) ending at `end`.
    fn array(&mut self, at: u64, end: u64) -> Result<()> {
        let name = self.path.join("/");
        let bad = |what: &str| Error::malformed(at, format!("array `{name}`: {what}"));
        let Head::Array(3) = self.head()? else { return Err(bad("not [shape, dtype, buffer]")) };
        let Head::Array(dims) = self.head()? else { return Err(bad("its shape is not an array")) };
        if dims > MAX_DIMS {
            return Err(bad("more than 64 dimensions"));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            let b = self.c.u8()?;
            shape.push(match b {
                0x00..=0x7f => u64::from(b),
                0xcc..=0xcf => self.c.be_uint(1 << (b - 0xcc))?,
                0xd0..=0xd3 => {
                    let n = 1usize << (b - 0xd0);
                    let v = self.c.be_uint(n)?;
                    if v >> (8 * n - 1) & 1 == 1 {
                        return Err(bad("a negative dimension"));
                    }
                    v
                }
                _ => return Err(bad("a dimension that is not an integer")),
            });
        }
        let Head::Bytes(n) = self.head()? else { return Err(bad("its dtype is not a string")) };
        let dtype_name = String::from_utf8_lossy(&self.c.bytes(n, MAX_TEXT)?).into_owned();
        let Head::Bytes(length) = self.head()? else { return Err(bad("its buffer is not bytes")) };
        let offset = self.c.pos();
        if offset.checked_add(length) != Some(end) {
            return Err(bad("its buffer does not end where the extension does"));
        }
        let dtype = from_numpy_name(&dtype_name);
        if dtype::element_size(&dtype).is_some() && dtype::byte_len(&dtype, &shape) != Some(length) {
            return Err(bad(&format!("{dtype_name} × {shape:?} is not {length} bytes")));
        }
        if self.tensors.len() >= MAX_TENSORS {
            return Err(bad("more arrays than the plugin reports"));
        }
        self.tensors.push(Tensor { name, dtype, shape, offset, length });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"w": ndarray float32 [2]}` as flax writes it.
    fn sample() -> Vec<u8> {
        let mut inner = vec![0x93, 0x91, 0x02, 0xa7];
        inner.extend(b"float32");
        inner.extend([0xc4, 8]);
        inner.extend(1.0f32.to_le_bytes());
        inner.extend(2.0f32.to_le_bytes());
        let mut out = vec![0x81, 0xa1, b'w', 0xc7, inner.len() as u8, 1];
        out.extend(inner);
        out
    }

    #[test]
    fn an_array_extension_is_a_tensor_named_by_its_keys() {
        let data = sample();
        let l = layout(&data).unwrap();
        assert_eq!(l.tensors.len(), 1);
        let t = &l.tensors[0];
        assert_eq!((t.name.as_str(), t.dtype.as_str(), t.shape.as_slice()), ("w", "f32", &[2u64][..]));
        assert_eq!(&data[t.offset as usize..(t.offset + t.length) as usize], &data[data.len() - 8..]);
        assert!(sniff(&data));
        assert!(sniff(&data[..10]));
    }

    #[test]
    fn hostile_msgpack_is_an_error_not_a_panic() {
        let data = sample();
        for cut in 0..data.len() {
            assert!(layout(&data[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        // A map claiming 4 billion entries; nesting past the limit; 0xc1.
        assert!(layout(&b"\xdf\xff\xff\xff\xff\xa1a\x01".to_vec()).is_err());
        assert!(layout(&vec![0x91; 10_000]).unwrap_err().to_string().contains("nested"));
        assert!(layout(&b"\x81\xa1a\xc1".to_vec()).is_err());
        let mut wrong = data.clone();
        wrong[9] = 0x03; // shape [3]: 12 bytes needed, 8 given
        assert!(layout(&wrong).is_err());
        // Pickles and other formats are not flax's.
        assert!(!sniff(b"\x80\x05\x95\x10\x00"));
        assert!(!sniff(b"\x93NUMPY\x01\x00"));
        assert!(!sniff(b"FLORTREE"));
    }
}
