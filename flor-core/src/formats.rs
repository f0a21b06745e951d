//! Checkpoint formats at the byte level: what flor knows about the bytes of a
//! checkpoint without ever encoding or decoding its state.
//!
//! A [`CheckpointFormat`] names a format (the string recorded with each
//! checkpoint), recognizes its objects from their first bytes
//! ([`CheckpointFormat::sniff`]), describes where each tensor and each piece
//! of metadata lies ([`CheckpointFormat::layout`]), and says where an object
//! may be cut into chunks ([`CheckpointFormat::chunk_boundaries`], the tensor
//! boundaries by default). The object store uses that to store identical
//! tensors of successive checkpoints once; see [`crate::objects`].
//!
//! Checkpoints can be gigabytes, so a format reads through a [`ByteSource`]
//! (`len` + `read_at`), never a whole slice: the WebAssembly host of
//! `flor-plugins` serves those reads as a host import. The host does the
//! heavy, generic work (hashing, compression, reassembly); a format only
//! describes layout, and the host checks what it says ([`Layout::validate`],
//! [`CheckpointFormatExt::chunks`]) before trusting it.
//!
//! [`FormatRegistry`] finds formats by name or by sniffing; [`Safetensors`]
//! and [`Npy`] are the native implementations. The typed
//! [`CheckpointSerializer`](crate::checkpoint::CheckpointSerializer) stays the
//! way Rust state becomes bytes.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

pub mod npy;
pub mod safetensors;

pub use npy::Npy;
pub use safetensors::Safetensors;

/// How many leading bytes of an object [`CheckpointFormat::sniff`] is shown
/// (fewer when the object is shorter).
pub const SNIFF_LEN: usize = 64;

/// Why a format could not describe an object. Every variant names the format
/// and, where it has one, the byte offset in the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes are not a well-formed object of this format.
    #[error("{format}: malformed object at byte {offset}: {what}")]
    Malformed {
        /// Format name.
        format: String,
        /// Byte offset in the object where the problem is.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The byte source failed.
    #[error("{format}: cannot read {len} bytes at byte {offset}: {source}")]
    Read {
        /// Format name.
        format: String,
        /// Offset of the read.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// The source's error.
        #[source]
        source: io::Error,
    },
    /// The format's answer breaks the rules every layout must follow (ranges
    /// inside the object, no overlap, sizes that match dtype and shape,
    /// increasing chunk boundaries): a bug in the format, not in the object.
    #[error("{format}: invalid layout at byte {offset}: {what}")]
    InvalidLayout {
        /// Format name.
        format: String,
        /// Byte offset the offending range or boundary starts at.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// No format of this name is registered.
    #[error("no checkpoint format named `{0}` is registered")]
    Unknown(String),
    /// The plugin behind a format failed: it trapped, ran past its deadline
    /// or memory cap, or answered outside its interface.
    #[error("{format}: plugin failed: {what}")]
    Plugin {
        /// Format name.
        format: String,
        /// What happened, naming the plugin.
        what: String,
    },
}

impl FormatError {
    /// A [`FormatError::Malformed`].
    pub fn malformed(format: &str, offset: u64, what: impl Into<String>) -> FormatError {
        FormatError::Malformed { format: format.to_owned(), offset, what: what.into() }
    }

    /// A [`FormatError::InvalidLayout`].
    pub fn invalid_layout(format: &str, offset: u64, what: impl Into<String>) -> FormatError {
        FormatError::InvalidLayout { format: format.to_owned(), offset, what: what.into() }
    }

    /// The byte offset the error is about, when it has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            FormatError::Malformed { offset, .. }
            | FormatError::Read { offset, .. }
            | FormatError::InvalidLayout { offset, .. } => Some(*offset),
            FormatError::Unknown(_) | FormatError::Plugin { .. } => None,
        }
    }
}

/// A small random-access view of an object's bytes.
///
/// Formats read only what they need (a header, a few fields), so a
/// multi-gigabyte checkpoint is never held in memory.
pub trait ByteSource {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`; reading
    /// past [`ByteSource::len`] is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Whether the object is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn past_end(offset: u64, want: usize, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{want} bytes at offset {offset} run past the end of the {len}-byte object"),
    )
}

impl ByteSource for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = <[u8]>::len(self);
        let start = usize::try_from(offset).ok().filter(|&s| s <= len);
        match start.and_then(|s| s.checked_add(buf.len()).filter(|&e| e <= len).map(|e| (s, e))) {
            Some((s, e)) => {
                buf.copy_from_slice(&self[s..e]);
                Ok(())
            }
            None => Err(past_end(offset, buf.len(), len as u64)),
        }
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A file as a [`ByteSource`] (positioned reads; its length taken once).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// Wraps an open file, reading its length now.
    pub fn new(file: File) -> io::Result<FileSource> {
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(past_end(offset, buf.len(), self.len));
        }
        read_exact_at(&self.file, offset, buf)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// Reads `len` bytes at `offset` of `src` for `format`: a range past the end
/// is [`FormatError::Malformed`] ("truncated"), a failing source
/// [`FormatError::Read`]. A helper for format implementations.
pub fn read_range(src: &dyn ByteSource, format: &str, offset: u64, len: u64) -> Result<Vec<u8>, FormatError> {
    let total = src.len();
    if offset.checked_add(len).is_none_or(|end| end > total) {
        return Err(FormatError::malformed(
            format,
            offset.min(total),
            format!("truncated: {len} bytes needed at byte {offset}, the object has {total}"),
        ));
    }
    let n = usize::try_from(len).map_err(|_| {
        FormatError::malformed(format, offset, format!("{len} bytes do not fit in this machine's memory"))
    })?;
    let mut buf = vec![0; n];
    src.read_at(offset, &mut buf).map_err(|source| FormatError::Read {
        format: format.to_owned(),
        offset,
        len,
        source,
    })?;
    Ok(buf)
}

/// An element type. The named variants are little-endian (or single-byte);
/// anything else is [`Dtype::Other`] with the format's own spelling (a
/// big-endian NumPy `>f4`, a safetensors `F8_E8M0`), whose element size flor
/// does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// One byte, 0 or 1.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Complex of two `f32`.
    C64,
    /// Complex of two `f64`.
    C128,
    /// 8-bit float, 4 exponent and 3 mantissa bits.
    F8E4M3,
    /// 8-bit float, 5 exponent and 2 mantissa bits.
    F8E5M2,
    /// Any other element type, spelled as its format spells it.
    Other(String),
}

const DTYPE_NAMES: [(Dtype, &str, u64); 17] = [
    (Dtype::Bool, "bool", 1),
    (Dtype::U8, "u8", 1),
    (Dtype::I8, "i8", 1),
    (Dtype::U16, "u16", 2),
    (Dtype::I16, "i16", 2),
    (Dtype::U32, "u32", 4),
    (Dtype::I32, "i32", 4),
    (Dtype::U64, "u64", 8),
    (Dtype::I64, "i64", 8),
    (Dtype::F16, "f16", 2),
    (Dtype::BF16, "bf16", 2),
    (Dtype::F32, "f32", 4),
    (Dtype::F64, "f64", 8),
    (Dtype::C64, "c64", 8),
    (Dtype::C128, "c128", 16),
    (Dtype::F8E4M3, "f8_e4m3", 1),
    (Dtype::F8E5M2, "f8_e5m2", 1),
];

impl Dtype {
    /// The canonical name (`f32`, `bf16`, `f8_e4m3`, ...; [`Dtype::Other`]:
    /// its own text). [`Dtype::parse`] reads it back.
    pub fn as_str(&self) -> &str {
        match self {
            Dtype::Other(s) => s,
            known => DTYPE_NAMES.iter().find(|(d, _, _)| d == known).map_or("", |(_, n, _)| n),
        }
    }

    /// The dtype of a canonical name; any other text is [`Dtype::Other`].
    pub fn parse(name: &str) -> Dtype {
        DTYPE_NAMES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map_or_else(|| Dtype::Other(name.to_owned()), |(d, _, _)| d.clone())
    }

    /// Bytes per element, when flor knows it.
    pub fn item_size(&self) -> Option<u64> {
        DTYPE_NAMES.iter().find(|(d, _, _)| d == self).map(|(_, _, s)| *s)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tensor of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name in the object (`.npy` holds one unnamed array: empty).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Logical shape (an empty shape is a scalar).
    pub shape: Vec<u64>,
    /// Where its bytes lie in the object.
    pub range: Range<u64>,
}

impl TensorInfo {
    /// Number of elements (the product of the shape), `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }
}

/// Where the tensors and the metadata of an object lie.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// The tensors, in the order of their byte ranges.
    pub tensors: Vec<TensorInfo>,
    /// Byte ranges that are metadata (headers, indexes), not tensor data.
    pub metadata: Vec<Range<u64>>,
}

impl Layout {
    /// Checks the rules every layout follows, whatever the format: every
    /// range inside `0..len`, no two non-empty ranges overlapping, and each
    /// tensor of a known dtype exactly `elements × item size` bytes long.
    /// Violations are [`FormatError::InvalidLayout`].
    pub fn validate(&self, format: &str, len: u64) -> Result<(), FormatError> {
        let bad = |offset, what: String| FormatError::invalid_layout(format, offset, what);
        let mut ranges: Vec<(&Range<u64>, &str)> = Vec::with_capacity(self.tensors.len() + self.metadata.len());
        for t in &self.tensors {
            let elements = t
                .elements()
                .ok_or_else(|| bad(t.range.start, format!("tensor `{}`: shape {:?} overflows", t.name, t.shape)))?;
            if let Some(size) = t.dtype.item_size() {
                let want = elements
                    .checked_mul(size)
                    .ok_or_else(|| bad(t.range.start, format!("tensor `{}`: byte size overflows", t.name)))?;
                let have = t.range.end.saturating_sub(t.range.start);
                if want != have {
                    return Err(bad(
                        t.range.start,
                        format!(
                            "tensor `{}`: {} × {:?} needs {want} bytes, its range has {have}",
                            t.name, t.dtype, t.shape
                        ),
                    ));
                }
            }
            ranges.push((&t.range, t.name.as_str()));
        }
        ranges.extend(self.metadata.iter().map(|r| (r, "metadata")));
        for (r, what) in &ranges {
            if r.start > r.end || r.end > len {
                return Err(bad(
                    r.start,
                    format!("{what} range {}..{} is not inside the {len}-byte object", r.start, r.end),
                ));
            }
        }
        ranges.retain(|(r, _)| r.start < r.end);
        ranges.sort_by_key(|(r, _)| (r.start, r.end));
        for pair in ranges.windows(2) {
            let ((a, an), (b, bn)) = (pair[0], pair[1]);
            if b.start < a.end {
                return Err(bad(
                    b.start,
                    format!("{bn} range {}..{} overlaps {an} range {}..{}", b.start, b.end, a.start, a.end),
                ));
            }
        }
        Ok(())
    }

    /// The default chunk boundaries: where every non-empty tensor or
    /// metadata range starts and ends, sorted, strictly inside `0..len`.
    pub fn boundaries(&self, len: u64) -> Vec<u64> {
        let ranges = self.tensors.iter().map(|t| &t.range).chain(&self.metadata).filter(|r| r.start < r.end);
        let mut cuts: Vec<u64> = ranges.flat_map(|r| [r.start, r.end]).filter(|&b| b > 0 && b < len).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }
}

/// Which plugin implements a format: recorded in the manifest of every
/// object the format cut, so a chunked object says what produced it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The plugin's name (`pytorch`).
    pub plugin: String,
    /// The plugin's version (`0.1.0`).
    pub version: String,
    /// The BLAKE3 digest of the plugin's WebAssembly component.
    pub digest: String,
}

/// A checkpoint format at the byte level: its name, how to recognize its
/// objects, and where their tensors lie. Nothing here encodes or decodes
/// state; the host hashes, compresses and reassembles.
///
/// Implemented natively ([`Safetensors`], [`Npy`]) and, through the
/// WebAssembly host of `flor-plugins`, by plugins. Required: [`name`],
/// [`sniff`], [`layout`]; [`chunk_boundaries`] defaults to the tensor
/// boundaries. [`CheckpointFormatExt`] adds checked conveniences.
///
/// One format value serves every writer of a store, hence `Send + Sync`: a
/// stateful implementation (a WebAssembly instance) keeps its state behind a
/// lock. The host never trusts an answer blindly: layouts and boundaries are
/// checked, and an object a format fails to describe is simply stored whole.
///
/// [`name`]: CheckpointFormat::name
/// [`sniff`]: CheckpointFormat::sniff
/// [`layout`]: CheckpointFormat::layout
/// [`chunk_boundaries`]: CheckpointFormat::chunk_boundaries
///
/// ```
/// use flor_core::formats::{
///     read_range, ByteSource, CheckpointFormat, CheckpointFormatExt, Dtype, FormatError, Layout, TensorInfo,
/// };
///
/// /// `F32V`, a u32 count (little-endian), then that many f32 values.
/// struct F32Vector;
///
/// impl CheckpointFormat for F32Vector {
///     fn name(&self) -> &str {
///         "f32-vector"
///     }
///     fn sniff(&self, head: &[u8]) -> bool {
///         head.starts_with(b"F32V")
///     }
///     fn layout(&self, src: &dyn ByteSource) -> Result<Layout, FormatError> {
///         let header = read_range(src, self.name(), 0, 8)?;
///         let count = u64::from(u32::from_le_bytes(header[4..8].try_into().unwrap()));
///         if 8 + 4 * count != src.len() {
///             return Err(FormatError::malformed(self.name(), 4, format!("{count} values do not fill the object")));
///         }
///         Ok(Layout {
///             tensors: vec![TensorInfo { name: "v".into(), dtype: Dtype::F32, shape: vec![count], range: 8..src.len() }],
///             metadata: vec![0..8],
///         })
///     }
/// }
///
/// let mut object = b"F32V".to_vec();
/// object.extend(2u32.to_le_bytes());
/// object.extend([1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()));
/// assert!(F32Vector.sniff(&object));
/// let layout = F32Vector.layout_of(&object).unwrap();
/// assert_eq!(layout.tensors[0].range, 8..16);
/// assert_eq!(F32Vector.chunks(&object.as_slice()).unwrap(), vec![0..8, 8..16]);
/// assert!(F32Vector.layout_of(&object[..12]).is_err());
/// ```
pub trait CheckpointFormat: Send + Sync {
    /// The format's name: the string recorded with each checkpoint
    /// (`safetensors`, `npy`, `torch.state_dict`).
    fn name(&self) -> &str;

    /// Whether an object starting with `head` is of this format. `head` is
    /// the object's first [`SNIFF_LEN`] bytes (all of it when shorter). A
    /// cheap guess: a wrong "yes" costs a failed [`CheckpointFormat::layout`];
    /// a format that cannot answer (a trapped plugin) says no.
    fn sniff(&self, head: &[u8]) -> bool;

    /// Where the tensors and metadata of the object in `src` lie. Every
    /// malformed input is an error, never a panic.
    fn layout(&self, src: &dyn ByteSource) -> Result<Layout, FormatError>;

    /// Offsets where the object may be cut into separately stored chunks,
    /// increasing, inside `0..src.len()`. Default: the tensor and metadata
    /// boundaries of `layout` ([`Layout::boundaries`]), so identical tensors
    /// of successive checkpoints are stored once.
    fn chunk_boundaries(&self, src: &dyn ByteSource, layout: &Layout) -> Result<Vec<u64>, FormatError> {
        Ok(layout.boundaries(src.len()))
    }

    /// The plugin that implements this format, recorded in the manifests
    /// of the objects it cut; `None` (the default) for a format compiled
    /// into flor.
    fn provenance(&self) -> Option<Provenance> {
        None
    }
}

/// Checked conveniences over any [`CheckpointFormat`] (a blanket impl).
pub trait CheckpointFormatExt: CheckpointFormat {
    /// [`CheckpointFormat::layout`], then [`Layout::validate`].
    fn checked_layout(&self, src: &dyn ByteSource) -> Result<Layout, FormatError> {
        let layout = self.layout(src)?;
        layout.validate(self.name(), src.len())?;
        Ok(layout)
    }

    /// The checked layout of an object held in memory.
    fn layout_of(&self, bytes: &[u8]) -> Result<Layout, FormatError> {
        self.checked_layout(&bytes)
    }

    /// Reads the object's first bytes and sniffs them.
    fn sniff_source(&self, src: &dyn ByteSource) -> Result<bool, FormatError> {
        let head = read_range(src, self.name(), 0, src.len().min(SNIFF_LEN as u64))?;
        Ok(self.sniff(&head))
    }

    /// The object cut at its chunk boundaries: consecutive ranges covering
    /// `0..src.len()` (none for an empty object). The layout is validated;
    /// boundaries must increase strictly and lie inside the object (`0` and
    /// the length itself are ignored), else [`FormatError::InvalidLayout`].
    fn chunks(&self, src: &dyn ByteSource) -> Result<Vec<Range<u64>>, FormatError> {
        Ok(self.layout_and_chunks(src)?.1)
    }

    /// [`CheckpointFormatExt::chunks`] together with the checked layout it
    /// was cut by (one call of the format's `layout`, which a plugin pays
    /// for).
    fn layout_and_chunks(&self, src: &dyn ByteSource) -> Result<(Layout, Vec<Range<u64>>), FormatError> {
        let layout = self.checked_layout(src)?;
        let len = src.len();
        let mut out = Vec::new();
        let mut start = 0;
        for b in self.chunk_boundaries(src, &layout)? {
            if b == 0 || b == len {
                continue;
            }
            if b > len || b <= start {
                return Err(FormatError::invalid_layout(
                    self.name(),
                    b,
                    format!("chunk boundary {b} is not after {start} and inside the {len}-byte object"),
                ));
            }
            out.push(start..b);
            start = b;
        }
        if len > 0 {
            out.push(start..len);
        }
        Ok((layout, out))
    }
}

impl<F: CheckpointFormat + ?Sized> CheckpointFormatExt for F {}

/// Checkpoint formats by name. A later registration of a name replaces the
/// earlier one, and sniffing asks the most recently registered format first,
/// so an embedder's or a plugin's format wins over a native one.
///
/// ```
/// use std::sync::Arc;
/// use flor_core::formats::{FormatRegistry, Npy, Safetensors};
///
/// let mut formats = FormatRegistry::new();
/// formats.register(Arc::new(Safetensors));
/// formats.register(Arc::new(Npy));
/// assert_eq!(formats.names().collect::<Vec<_>>(), ["safetensors", "npy"]);
/// assert_eq!(formats.sniff(b"\x93NUMPY\x01\x00").map(|f| f.name()), Some("npy"));
/// assert!(formats.get("pickle").is_err());
/// ```
#[derive(Clone, Default)]
pub struct FormatRegistry {
    /// In registration order; names are unique.
    formats: Vec<Arc<dyn CheckpointFormat>>,
}

impl FormatRegistry {
    /// An empty registry (an object store with it never chunks).
    pub fn new() -> FormatRegistry {
        FormatRegistry::default()
    }

    /// The native formats: [`Safetensors`] and [`Npy`].
    pub fn native() -> FormatRegistry {
        let mut r = FormatRegistry::new();
        r.register(Arc::new(Safetensors));
        r.register(Arc::new(Npy));
        r
    }

    /// A shared [`FormatRegistry::native`], built once per process.
    pub fn shared_native() -> Arc<FormatRegistry> {
        static NATIVE: OnceLock<Arc<FormatRegistry>> = OnceLock::new();
        NATIVE.get_or_init(|| Arc::new(FormatRegistry::native())).clone()
    }

    /// Registers `format` under its name; returns the format it replaces.
    pub fn register(&mut self, format: Arc<dyn CheckpointFormat>) -> Option<Arc<dyn CheckpointFormat>> {
        let old = self.formats.iter().position(|f| f.name() == format.name()).map(|i| self.formats.remove(i));
        self.formats.push(format);
        old
    }

    /// The format registered as `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn CheckpointFormat>, FormatError> {
        self.formats.iter().find(|f| f.name() == name).ok_or_else(|| FormatError::Unknown(name.to_owned()))
    }

    /// The most recently registered format that claims an object starting
    /// with `head`.
    pub fn sniff(&self, head: &[u8]) -> Option<&Arc<dyn CheckpointFormat>> {
        let head = &head[..head.len().min(SNIFF_LEN)];
        self.formats.iter().rev().find(|f| f.sniff(head))
    }

    /// Registered names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.formats.iter().map(|f| f.name())
    }

    /// Number of registered formats.
    pub fn len(&self) -> usize {
        self.formats.len()
    }

    /// Whether no format is registered.
    pub fn is_empty(&self) -> bool {
        self.formats.is_empty()
    }
}

impl fmt::Debug for FormatRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

    use super::*;

    fn tensor(name: &str, dtype: Dtype, shape: &[u64], range: Range<u64>) -> TensorInfo {
        TensorInfo { name: name.into(), dtype, shape: shape.to_vec(), range }
    }

    #[test]
    fn dtype_names_round_trip() {
        for (d, name, size) in DTYPE_NAMES {
            assert_eq!(d.as_str(), name);
            assert_eq!(Dtype::parse(name), d);
            assert_eq!(d.item_size(), Some(size));
        }
        assert_eq!(Dtype::parse(">f4"), Dtype::Other(">f4".into()));
        assert_eq!(Dtype::Other(">f4".into()).item_size(), None);
    }

    #[test]
    fn layout_rules() {
        let ok = Layout {
            tensors: vec![tensor("a", Dtype::F32, &[2], 8..16), tensor("e", Dtype::F32, &[0], 16..16)],
            metadata: vec![0..8],
        };
        ok.validate("t", 16).unwrap();
        assert_eq!(ok.boundaries(16), vec![8]);

        let cases = [
            (Layout { tensors: vec![tensor("a", Dtype::F32, &[2], 8..17)], metadata: vec![] }, 8, "needs 8 bytes"),
            (Layout { tensors: vec![tensor("a", Dtype::U8, &[9], 8..17)], metadata: vec![] }, 8, "not inside"),
            (
                Layout { tensors: vec![tensor("a", Dtype::U8, &[4], 4..8)], metadata: vec![0..5] },
                4,
                "overlaps metadata",
            ),
            (Layout { tensors: vec![tensor("a", Dtype::U8, &[u64::MAX, 2], 0..1)], metadata: vec![] }, 0, "overflows"),
            (Layout { tensors: vec![tensor("a", Dtype::U64, &[u64::MAX], 0..1)], metadata: vec![] }, 0, "overflows"),
            (
                Layout { tensors: vec![tensor("a", Dtype::Other("x".into()), &[1], 9..3)], metadata: vec![] },
                9,
                "not inside",
            ),
        ];
        for (layout, offset, what) in cases {
            let e = layout.validate("t", 16).unwrap_err();
            assert!(matches!(e, FormatError::InvalidLayout { .. }), "{e}");
            assert_eq!(e.offset(), Some(offset), "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    struct Fixed(&'static str, Vec<u64>);
    impl CheckpointFormat for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn sniff(&self, head: &[u8]) -> bool {
            head.starts_with(self.0.as_bytes())
        }
        fn layout(&self, _: &dyn ByteSource) -> Result<Layout, FormatError> {
            Ok(Layout::default())
        }
        fn chunk_boundaries(&self, _: &dyn ByteSource, _: &Layout) -> Result<Vec<u64>, FormatError> {
            Ok(self.1.clone())
        }
    }

    #[test]
    fn chunks_check_the_boundaries() {
        let src = vec![0u8; 10];
        assert_eq!(Fixed("x", vec![0, 4, 10]).chunks(&src).unwrap(), vec![0..4, 4..10]);
        assert_eq!(Fixed("x", vec![]).chunks(&src).unwrap(), vec![0..10]);
        assert_eq!(Fixed("x", vec![]).chunks(&Vec::new()).unwrap(), Vec::<Range<u64>>::new());
        for bad in [vec![4, 4], vec![6, 3], vec![11]] {
            let e = Fixed("x", bad.clone()).chunks(&src).unwrap_err();
            assert!(matches!(e, FormatError::InvalidLayout { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn registry_later_registration_wins() {
        let mut r = FormatRegistry::native();
        assert_eq!(r.len(), 2);
        assert!(r.register(Arc::new(Fixed("npy", vec![]))).is_some());
        assert_eq!(r.names().collect::<Vec<_>>(), ["safetensors", "npy"]);
        // The replacement sniffs by its own rule.
        assert_eq!(r.sniff(b"npy...").map(|f| f.name()), Some("npy"));
        assert!(r.sniff(b"\x93NUMPY\x01\x00").is_none());
        // The most recent registration is asked first.
        r.register(Arc::new(Fixed("safe", vec![])));
        assert_eq!(r.sniff(b"safe").map(|f| f.name()), Some("safe"));
        assert!(matches!(r.get("nope"), Err(FormatError::Unknown(n)) if n == "nope"));
        assert_eq!(format!("{r:?}"), r#"["safetensors", "npy", "safe"]"#);
    }

    #[test]
    fn byte_sources_refuse_reads_past_the_end() {
        let v = vec![1u8, 2, 3];
        let mut buf = [0u8; 2];
        v.read_at(1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3]);
        assert!(v.read_at(2, &mut buf).is_err());
        assert!(v.read_at(u64::MAX, &mut buf).is_err());
        let e = read_range(&v, "t", 2, u64::MAX).unwrap_err();
        assert!(matches!(e, FormatError::Malformed { offset: 2, .. }), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [5u8, 6, 7, 8]).unwrap();
        let f = FileSource::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(f.len(), 4);
        f.read_at(2, &mut buf).unwrap();
        assert_eq!(buf, [7, 8]);
        assert!(f.read_at(3, &mut buf).is_err());
        assert!(f.read_at(u64::MAX - 1, &mut buf).is_err());
    }
}
