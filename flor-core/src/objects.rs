//! A content-addressed object store for checkpoint bytes.
//!
//! Each object is named by the BLAKE3 digest of its whole, uncompressed
//! bytes, and that name never depends on how it is stored. Writes stream
//! (hash as the bytes arrive, then an atomic rename), so peak memory does not
//! grow with the state's size; every read verifies the digest.
//!
//! # Monolithic and chunked objects
//!
//! An object whose first bytes a registered
//! [`CheckpointFormat`] recognizes (the
//! store's [`FormatRegistry`], [`FormatRegistry::native`] by default) is cut
//! at the format's chunk boundaries (its tensors, by default) and stored as
//! chunks plus a [`Manifest`]; each chunk is itself an object of the store,
//! so a tensor that did not change since the last checkpoint is stored once.
//! Runs of pieces shorter than [`MIN_CHUNK`] are kept together in one chunk
//! (a large tensor always stands alone), so small tensors do not become
//! thousands of tiny files. Any other object, one the format fails to
//! describe, or one that would make a single chunk, is stored whole as
//! before. Reading joins the chunks and checks the whole digest, so callers
//! never see the difference.
//!
//! # On-disk layout
//!
//! ```text
//! <root>/<first 2 hex of digest>/<remaining 62 hex>   one file per object, either
//!     monolithic: one zstd stream (level 3) of the object's bytes, or
//!     chunked:    "flor-chunks 1\n" + one line of JSON:
//!                 {"format":"safetensors","bytes":N,"digest":"<64 hex>",
//!                  "chunks":[{"digest":"<64 hex>","bytes":n},...]}
//!                 (each chunk digest names a file of this same layout)
//! <root>/tmp/<pid>-<n>.part                            writes in progress
//! ```
//!
//! # Crashes and concurrent writers
//!
//! Every file appears by an atomic rename of a complete temporary file, and
//! a chunked object's chunks are all in place before its manifest is renamed
//! to the object's name: a writer killed at any point leaves either no
//! object or a complete one (plus, at worst, orphan chunks and temporary
//! files, which are never read). With [`Durability::Process`] (the default)
//! nothing is fsynced: after a power loss a damaged file is reported as
//! corrupt by the digest checks, never read as valid. With
//! [`Durability::Os`] ([`ObjectStore::with_durability`]) every file is
//! fsynced before its rename and its folder after it (and the store's root
//! when the folder is new), so an object whose id was returned survives a
//! power loss, and so do the chunks of a chunked object before its manifest
//! is written. Writers of the same object or chunk each write their own
//! temporary file; the contents are identical, so whichever rename lands
//! last is as good as the first.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Cursor, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::durability::{sync_dir, Durability};
use crate::error::{Error, Result};
use crate::formats::{
    ByteSource, CheckpointFormat, CheckpointFormatExt, FileSource, FormatError, FormatRegistry, SNIFF_LEN,
};

mod manifest;
mod pack;
#[cfg(test)]
mod tests;

pub use manifest::{ChunkRef, Manifest};
pub use pack::{PackOutcome, Spool, StoredFile};

/// zstd level: fast, still a good ratio on float arrays.
const LEVEL: i32 = 3;

/// Consecutive chunk pieces shorter than this are stored together in one
/// chunk (64 KiB).
pub const MIN_CHUNK: u64 = 64 << 10;

/// How deep chunks may themselves be chunked objects (a chunk whose bytes
/// happen to be a whole chunked object).
const MAX_DEPTH: u8 = 4;

/// Buffer size when copying ranges of a spooled object.
const COPY_BUF: usize = 1 << 20;

/// A stored object: its digest (hex) and uncompressed size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// BLAKE3 digest of the uncompressed bytes, 64 lowercase hex characters.
    pub digest: String,
    /// Uncompressed size in bytes.
    pub bytes: u64,
}

/// A content-addressed blob store rooted at a folder (usually `.flor/objects`).
#[derive(Debug, Clone)]
pub struct ObjectStore {
    root: PathBuf,
    formats: Arc<FormatRegistry>,
    durability: Durability,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl ObjectStore {
    /// Opens (creating if needed) the store at `root`, with the native
    /// checkpoint formats ([`FormatRegistry::native`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<ObjectStore> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp")).map_err(|e| Error::io("create", &root, e))?;
        Ok(ObjectStore { root, formats: FormatRegistry::shared_native(), durability: Durability::Process })
    }

    /// The same store, making each object it writes durable as
    /// `durability` says (see the module docs).
    pub fn with_durability(self, durability: Durability) -> ObjectStore {
        ObjectStore { durability, ..self }
    }

    /// How far written objects are made durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The same store, recognizing `formats` when writing (an empty registry:
    /// every object is stored whole). Reading needs no format.
    pub fn with_formats(self, formats: Arc<FormatRegistry>) -> ObjectStore {
        ObjectStore { formats, ..self }
    }

    /// The formats this store recognizes when writing.
    pub fn formats(&self) -> &FormatRegistry {
        &self.formats
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores the bytes that `write` produces, streaming. Returns the id.
    pub fn put_with(&self, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<ObjectId> {
        let mut w = self.writer()?;
        if let Err(e) = write(&mut w) {
            let tmp = w.tmp.path.clone();
            drop(w);
            return Err(Error::io("write object", tmp, e));
        }
        w.finish()
    }

    /// A streaming writer for one object: write its bytes, then
    /// [`ObjectWriter::finish`]. Dropping it unfinished stores nothing.
    pub fn writer(&self) -> Result<ObjectWriter> {
        let tmp = self.temp()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp.path)
            .map_err(|e| Error::io("create", &tmp.path, e))?;
        let sink = if self.formats.is_empty() {
            Sink::Compress(encoder(file).map_err(|e| Error::io("create", &tmp.path, e))?)
        } else {
            Sink::Head { file, head: Vec::with_capacity(SNIFF_LEN) }
        };
        Ok(ObjectWriter {
            state: Some(WriterState { hasher: blake3::Hasher::new(), bytes: 0, sink }),
            tmp,
            store: self.clone(),
        })
    }

    /// Stores a byte slice.
    pub fn put(&self, bytes: &[u8]) -> Result<ObjectId> {
        self.put_with(|w| w.write_all(bytes))
    }

    /// Whether an object with this digest is stored (monolithic, or the
    /// manifest of a chunked one).
    pub fn contains(&self, digest: &str) -> bool {
        self.path_of(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Streams an object's bytes into `read` (a chunked object's chunks
    /// joined in order), verifying the digest once all bytes were read: a
    /// corrupt object yields [`Error::CorruptObject`], a missing or corrupt
    /// chunk [`Error::MissingChunk`] or [`Error::CorruptChunk`] (the reader
    /// sees an `InvalidData` error at that point). An error of `read`'s own
    /// on intact bytes is [`Error::Io`].
    pub fn get_with<T>(&self, digest: &str, read: impl FnOnce(&mut dyn Read) -> io::Result<T>) -> Result<T> {
        self.read_object(digest, None, read)
    }

    /// [`ObjectStore::get_with`] of an object whose size is known (a
    /// checkpoint record's `bytes`): reading stops with
    /// [`Error::WrongSize`] as soon as the stored bytes run past it (a
    /// damaged or hostile file cannot make a read take more time or memory
    /// than the record says), or when they end short of it.
    pub fn get_with_size<T>(
        &self,
        digest: &str,
        bytes: u64,
        read: impl FnOnce(&mut dyn Read) -> io::Result<T>,
    ) -> Result<T> {
        self.read_object(digest, Some(bytes), read)
    }

    /// Reads a whole object whose size is known, verified (see
    /// [`ObjectStore::get_with_size`]).
    pub fn get_sized(&self, digest: &str, bytes: u64) -> Result<Vec<u8>> {
        self.get_with_size(digest, bytes, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
    }

    fn read_object<T>(
        &self,
        digest: &str,
        expected: Option<u64>,
        read: impl FnOnce(&mut dyn Read) -> io::Result<T>,
    ) -> Result<T> {
        let mut src = self.open_object(digest, 0, expected)?;
        let out = read(&mut src);
        // Drain whatever the caller did not read so the digest covers it all.
        let _ = io::copy(&mut src, &mut io::sink());
        if let Some(e) = src.failure.take() {
            return Err(e);
        }
        if !src.verified {
            return Err(src.corrupt("the object ended early"));
        }
        out.map_err(|e| Error::io("read object", &src.path, e))
    }

    /// Reads a whole object, verified.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>> {
        self.get_with(digest, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
    }

    /// The manifest of a chunked object; `None` for a monolithic one.
    pub fn manifest(&self, digest: &str) -> Result<Option<Manifest>> {
        let (path, file, head) = self.open_file(digest)?;
        if head != manifest::MAGIC {
            return Ok(None);
        }
        read_manifest(file, digest, &path).map(Some)
    }

    fn path_of(&self, digest: &str) -> Result<PathBuf> {
        if !is_digest(digest) {
            return Err(Error::BadDigest(digest.to_owned()));
        }
        Ok(self.root.join(&digest[..2]).join(&digest[2..]))
    }

    /// A fresh temporary file name, removed when the guard drops.
    fn temp(&self) -> Result<TempFile> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(TempFile { path: dir.join(format!("{}-{}.part", std::process::id(), n)), keep: false })
    }

    /// Moves a complete temporary file to the name `digest`, unless an
    /// object of that name is stored already (then the temporary file goes).
    fn install(&self, mut tmp: TempFile, digest: &str) -> Result<()> {
        let dest = self.path_of(digest)?;
        let sync = self.durability.syncs();
        if dest.exists() {
            // Stored already, perhaps by a writer that did not sync it.
            touch(&dest);
            return if sync { self.sync_installed(&dest, false) } else { Ok(()) };
        }
        let mut new_dir = false;
        if let Some(dir) = dest.parent() {
            new_dir = !dir.is_dir();
            fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        if sync {
            File::open(&tmp.path).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", &tmp.path, e))?;
        }
        match fs::rename(&tmp.path, &dest) {
            Ok(()) => tmp.keep = true,
            // Another writer installed the same bytes first (where a rename
            // does not replace an existing file).
            Err(_) if dest.exists() => {}
            Err(e) => return Err(Error::io("store object", &dest, e)),
        }
        if sync {
            self.sync_installed(&dest, new_dir)?;
        }
        Ok(())
    }

    /// Makes an installed object durable: the file, its folder's entry and,
    /// when the folder is new, the root's entry for it.
    fn sync_installed(&self, dest: &Path, new_dir: bool) -> Result<()> {
        File::open(dest).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", dest, e))?;
        if let Some(dir) = dest.parent() {
            sync_dir(dir).map_err(|e| Error::io("sync", dir, e))?;
        }
        if new_dir {
            sync_dir(&self.root).map_err(|e| Error::io("sync", &self.root, e))?;
        }
        Ok(())
    }

    /// Opens an object's file and reads its first bytes (enough to tell a
    /// manifest from a zstd stream).
    fn open_file(&self, digest: &str) -> Result<(PathBuf, File, Vec<u8>)> {
        let path = self.path_of(digest)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingObject { digest: digest.to_owned(), dir: self.root.clone() })
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let mut head = Vec::with_capacity(manifest::MAGIC.len());
        (&mut file)
            .take(manifest::MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("read", &path, e))?;
        Ok((path, file, head))
    }

    /// Opens object `digest` for reading; `expected`: its length when
    /// known (a chunked object's manifest must say the same).
    fn open_object(&self, digest: &str, depth: u8, expected: Option<u64>) -> Result<ObjectReader> {
        let (path, file, head) = self.open_file(digest)?;
        let kind = if head == manifest::MAGIC {
            if depth >= MAX_DEPTH {
                return Err(Error::CorruptManifest {
                    digest: digest.to_owned(),
                    path,
                    what: format!("chunks nested more than {MAX_DEPTH} deep"),
                });
            }
            let manifest = read_manifest(file, digest, &path)?;
            if let Some(want) = expected.filter(|&want| want != manifest.bytes) {
                return Err(Error::WrongSize {
                    digest: digest.to_owned(),
                    path,
                    expected: want,
                    found: format!("its manifest says {} bytes", manifest.bytes),
                });
            }
            Kind::Chunked(Box::new(Chunked {
                store: self.clone(),
                manifest,
                next: 0,
                current: None,
                in_chunk: 0,
                total: 0,
                depth,
            }))
        } else {
            let src = BufReader::new(Cursor::new(head).chain(file));
            match zstd::stream::read::Decoder::with_buffer(src) {
                Ok(dec) => Kind::Blob(dec),
                Err(_) => return Err(Error::CorruptObject { digest: digest.to_owned(), path }),
            }
        };
        Ok(ObjectReader {
            digest: digest.to_owned(),
            path,
            kind,
            hasher: blake3::Hasher::new(),
            failure: None,
            verified: false,
            expected,
            produced: 0,
        })
    }

    /// Stores a spooled object that `format` sniffed: chunked when the
    /// format describes it and it makes at least two chunks, else whole.
    fn store_spooled(
        &self,
        src: &FileSource,
        spool: &Path,
        format: &dyn CheckpointFormat,
        id: &ObjectId,
    ) -> Result<()> {
        let pieces = match format.chunks(src) {
            Ok(pieces) => pieces,
            Err(FormatError::Read { source, .. }) => return Err(Error::io("read", spool, source)),
            // Not what the format expects after all: stored whole.
            Err(_) => Vec::new(),
        };
        let plan = coalesce(pieces, MIN_CHUNK);
        if plan.len() < 2 {
            let tmp = self.temp()?;
            self.compress_range(src, spool, 0..id.bytes, &tmp)?;
            return self.install(tmp, &id.digest);
        }
        let chunks = self.put_chunks(src, spool, &plan)?.into_iter().map(|(c, _)| c).collect();
        // Chunks first, the manifest last: its rename publishes the object.
        let manifest = Manifest {
            format: format.name().to_owned(),
            bytes: id.bytes,
            digest: id.digest.clone(),
            chunks,
            plugin: format.provenance(),
        };
        let tmp = self.temp()?;
        fs::write(&tmp.path, manifest.encode()).map_err(|e| Error::io("write", &tmp.path, e))?;
        self.install(tmp, &id.digest)
    }

    /// Compresses `range` of `src` into the file `tmp` (the caller hashed
    /// it already).
    fn compress_range(&self, src: &FileSource, spool: &Path, range: Range<u64>, tmp: &TempFile) -> Result<()> {
        let file = File::create(&tmp.path).map_err(|e| Error::io("create", &tmp.path, e))?;
        let mut enc = encoder(file).map_err(|e| Error::io("create", &tmp.path, e))?;
        // Knowing the size lets zstd size its window and tables for it.
        enc.set_pledged_src_size(Some(range.end - range.start)).map_err(|e| Error::io("create", &tmp.path, e))?;
        copy_range(src, range, |b| enc.write_all(b)).map_err(|e| match e {
            CopyError::Read(e) => Error::io("read", spool, e),
            CopyError::Write(e) => Error::io("write object", &tmp.path, e),
        })?;
        enc.finish().and_then(|mut w| w.flush()).map_err(|e| Error::io("write object", &tmp.path, e))?;
        Ok(())
    }
}

/// Hashes `bytes` into `hasher`, large inputs on several threads.
fn hash(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() >= 1 << 17 {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
}

/// Marks a stored file as just used (its modification time: now), so that
/// garbage collection, which spares recently modified files, does not
/// delete an object a writer found stored and is about to name in a record.
/// Best effort: a failure only loses that protection.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = OpenOptions::new().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn encoder(file: File) -> io::Result<zstd::stream::write::Encoder<'static, BufWriter<File>>> {
    zstd::stream::write::Encoder::new(BufWriter::new(file), LEVEL)
}

/// Which side of [`copy_range`] failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Reads `range` of `src` in pieces and hands each to `f`.
fn copy_range(
    src: &FileSource,
    range: Range<u64>,
    mut f: impl FnMut(&[u8]) -> io::Result<()>,
) -> std::result::Result<(), CopyError> {
    let len = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; COPY_BUF.min(len)];
    let mut at = range.start;
    while at < range.end {
        let n = usize::try_from(range.end - at).map_or(buf.len(), |left| left.min(buf.len()));
        src.read_at(at, &mut buf[..n]).map_err(CopyError::Read)?;
        f(&buf[..n]).map_err(CopyError::Write)?;
        at += n as u64;
    }
    Ok(())
}

/// Chunk ranges from the format's pieces: a piece of at least `min` bytes is
/// a chunk of its own; runs of shorter pieces are joined until they reach
/// `min`. A large tensor's chunk thus never depends on its neighbours.
fn coalesce(pieces: Vec<Range<u64>>, min: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(pieces.len());
    let mut small: Option<Range<u64>> = None;
    for p in pieces {
        if p.end - p.start >= min {
            out.extend(small.take());
            out.push(p);
        } else {
            let group = match small.take() {
                Some(g) => g.start..p.end,
                None => p,
            };
            if group.end - group.start >= min {
                out.push(group);
            } else {
                small = Some(group);
            }
        }
    }
    out.extend(small);
    out
}

fn read_manifest(file: File, digest: &str, path: &Path) -> Result<Manifest> {
    let mut json = Vec::new();
    file.take(manifest::MAX_LEN + 1).read_to_end(&mut json).map_err(|e| Error::io("read", path, e))?;
    if json.len() as u64 > manifest::MAX_LEN {
        return Err(Error::CorruptManifest {
            digest: digest.to_owned(),
            path: path.to_owned(),
            what: format!("longer than {} bytes", manifest::MAX_LEN),
        });
    }
    Manifest::decode(&json, digest, path)
}

/// A temporary file in `<root>/tmp`, removed on drop unless installed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Streams one object into an [`ObjectStore`]; see [`ObjectStore::writer`].
///
/// The first [`SNIFF_LEN`] bytes are held until the store's formats have
/// seen them. An object no format claims is compressed as it arrives; one a
/// format claims is spooled uncompressed to its temporary file and cut into
/// chunks by [`ObjectWriter::finish`] (so it takes its raw size in temporary
/// disk space meanwhile).
pub struct ObjectWriter {
    // Dropped before `tmp`: the file is closed before it is removed.
    state: Option<WriterState>,
    tmp: TempFile,
    store: ObjectStore,
}

struct WriterState {
    hasher: blake3::Hasher,
    bytes: u64,
    sink: Sink,
}

enum Sink {
    /// Fewer than [`SNIFF_LEN`] bytes so far, held in memory.
    Head { file: File, head: Vec<u8> },
    /// No format claims the object: compressed as it arrives.
    Compress(zstd::stream::write::Encoder<'static, BufWriter<File>>),
    /// A format claims it: raw bytes, cut into chunks at the end.
    Spool { file: BufWriter<File>, format: Arc<dyn CheckpointFormat> },
    /// An earlier step failed.
    Failed,
}

impl WriterState {
    /// Picks the sink once the head is complete, and writes the head to it.
    fn decide(&mut self, formats: &FormatRegistry) -> io::Result<()> {
        let Sink::Head { file, head } = std::mem::replace(&mut self.sink, Sink::Failed) else {
            return Ok(());
        };
        self.sink = match formats.sniff(&head) {
            Some(format) => {
                let mut file = BufWriter::new(file);
                file.write_all(&head)?;
                Sink::Spool { file, format: format.clone() }
            }
            None => {
                let mut enc = encoder(file)?;
                enc.write_all(&head)?;
                Sink::Compress(enc)
            }
        };
        Ok(())
    }
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter").field("tmp", &self.tmp.path).finish()
    }
}

impl ObjectWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.bytes)
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes the object and names it by its digest (an identical object
    /// already stored is kept, this copy dropped). A spooled object is cut
    /// into chunks here.
    pub fn finish(mut self) -> Result<ObjectId> {
        let tmp = &self.tmp.path;
        let Some(WriterState { hasher, bytes, sink }) = self.state.take() else {
            return Err(Error::io("finish", tmp, io::Error::other("object writer already finished")));
        };
        let id = ObjectId { digest: hasher.finalize().to_hex().to_string(), bytes };
        let write_err = |e| Error::io("write object", tmp, e);
        match sink {
            Sink::Head { file, head } => {
                // Shorter than a sniff: never worth chunking.
                let mut enc = encoder(file).map_err(write_err)?;
                enc.write_all(&head).map_err(write_err)?;
                enc.finish().and_then(|mut w| w.flush()).map_err(write_err)?;
            }
            Sink::Compress(enc) => {
                enc.finish().and_then(|mut w| w.flush()).map_err(write_err)?;
            }
            Sink::Spool { file, format } => {
                let file = file.into_inner().map_err(|e| write_err(e.into_error()))?;
                let dest = self.store.path_of(&id.digest)?;
                if dest.is_file() {
                    touch(&dest);
                } else {
                    let src = FileSource::new(file).map_err(|e| Error::io("read", tmp, e))?;
                    self.store.store_spooled(&src, tmp, &*format, &id)?;
                }
                // The spool itself is removed when `self.tmp` drops.
                return Ok(id);
            }
            Sink::Failed => {
                return Err(Error::io("finish", tmp, io::Error::other("an earlier write to this object failed")));
            }
        }
        let tmp = std::mem::replace(&mut self.tmp, TempFile { path: PathBuf::new(), keep: true });
        self.store.install(tmp, &id.digest)?;
        Ok(id)
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(st) = &mut self.state else {
            return Err(io::Error::other("object writer already finished"));
        };
        let n = match &mut st.sink {
            Sink::Head { head, .. } => {
                let n = buf.len().min(SNIFF_LEN - head.len());
                head.extend_from_slice(&buf[..n]);
                if head.len() == SNIFF_LEN {
                    st.decide(&self.store.formats)?;
                }
                n
            }
            Sink::Compress(enc) => enc.write(buf)?,
            Sink::Spool { file, .. } => file.write(buf)?,
            Sink::Failed => return Err(io::Error::other("an earlier write to this object failed")),
        };
        st.hasher.update(&buf[..n]);
        st.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.state.as_mut().map(|s| &mut s.sink) {
            Some(Sink::Compress(enc)) => enc.flush(),
            Some(Sink::Spool { file, .. }) => file.flush(),
            _ => Ok(()),
        }
    }
}

/// Reads one object, monolithic or chunked, and checks its digest at the end.
/// Errors are kept in `failure` (the `Read` side sees `InvalidData`).
struct ObjectReader {
    digest: String,
    path: PathBuf,
    kind: Kind,
    /// Hashes the bytes handed out (the whole object's, chunks joined).
    hasher: blake3::Hasher,
    failure: Option<Error>,
    verified: bool,
    /// The length the object must have, when known.
    expected: Option<u64>,
    /// Bytes handed out so far.
    produced: u64,
}

type BlobDecoder = zstd::stream::read::Decoder<'static, BufReader<io::Chain<Cursor<Vec<u8>>, File>>>;

enum Kind {
    Blob(BlobDecoder),
    Chunked(Box<Chunked>),
}

struct Chunked {
    store: ObjectStore,
    manifest: Manifest,
    /// Index of the chunk being read (or next to open).
    next: usize,
    current: Option<ObjectReader>,
    /// Bytes read from the current chunk.
    in_chunk: u64,
    /// Bytes read from all chunks.
    total: u64,
    depth: u8,
}

impl ObjectReader {
    fn corrupt(&self, what: &str) -> Error {
        match &self.kind {
            Kind::Blob(_) => Error::CorruptObject { digest: self.digest.clone(), path: self.path.clone() },
            Kind::Chunked(_) => {
                Error::CorruptManifest { digest: self.digest.clone(), path: self.path.clone(), what: what.to_owned() }
            }
        }
    }

    fn read_checked(&mut self, buf: &mut [u8]) -> Result<usize> {
        let corrupt_blob = || Error::CorruptObject { digest: self.digest.clone(), path: self.path.clone() };
        match &mut self.kind {
            Kind::Blob(dec) => {
                let n = dec.read(buf).map_err(|_| corrupt_blob())?;
                if n == 0 {
                    if self.hasher.finalize().to_hex().as_str() != self.digest {
                        return Err(corrupt_blob());
                    }
                    self.verified = true;
                }
                hash(&mut self.hasher, &buf[..n]);
                Ok(n)
            }
            Kind::Chunked(c) => loop {
                let count = c.manifest.chunks.len();
                if let Some(cur) = &mut c.current {
                    let chunk = &c.manifest.chunks[c.next];
                    let bad = |cur: &ObjectReader, what: String| Error::CorruptChunk {
                        object: self.digest.clone(),
                        chunk: chunk.digest.clone(),
                        index: c.next,
                        path: cur.path.clone(),
                        what,
                    };
                    match cur.read(buf) {
                        Ok(0) => {
                            if c.in_chunk != chunk.bytes {
                                return Err(bad(
                                    cur,
                                    format!("{} bytes, the manifest says {}", c.in_chunk, chunk.bytes),
                                ));
                            }
                            c.current = None;
                            c.next += 1;
                        }
                        Ok(n) => {
                            c.in_chunk += n as u64;
                            if c.in_chunk > chunk.bytes {
                                return Err(bad(
                                    cur,
                                    format!("longer than the {} bytes the manifest says", chunk.bytes),
                                ));
                            }
                            hash(&mut self.hasher, &buf[..n]);
                            c.total += n as u64;
                            return Ok(n);
                        }
                        Err(_) => {
                            let inner = cur.failure.take();
                            return Err(match inner {
                                Some(Error::CorruptObject { .. }) | None => {
                                    bad(cur, "its content does not match its digest".into())
                                }
                                Some(e) => bad(cur, e.to_string()),
                            });
                        }
                    }
                    continue;
                }
                if c.next == count {
                    if c.total != c.manifest.bytes || self.hasher.finalize().to_hex().as_str() != self.digest {
                        return Err(Error::CorruptManifest {
                            digest: self.digest.clone(),
                            path: self.path.clone(),
                            what: "its chunks join into other bytes than the object's".into(),
                        });
                    }
                    self.verified = true;
                    return Ok(0);
                }
                let chunk = &c.manifest.chunks[c.next];
                // A chunk that is itself chunked must say the length this
                // manifest gives it: no nesting makes a read longer.
                let reader =
                    c.store.open_object(&chunk.digest, c.depth + 1, Some(chunk.bytes)).map_err(|e| match e {
                        Error::MissingObject { dir, .. } => Error::MissingChunk {
                            object: self.digest.clone(),
                            chunk: chunk.digest.clone(),
                            index: c.next,
                            count,
                            dir,
                        },
                        other => Error::CorruptChunk {
                            object: self.digest.clone(),
                            chunk: chunk.digest.clone(),
                            index: c.next,
                            path: c.store.path_of(&chunk.digest).unwrap_or_default(),
                            what: other.to_string(),
                        },
                    })?;
                c.current = Some(reader);
                c.in_chunk = 0;
            },
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        let read = self.read_checked(buf).and_then(|n| {
            self.produced += n as u64;
            match self.expected {
                Some(want) if self.produced > want || (n == 0 && self.produced != want) => {
                    self.verified = false;
                    Err(Error::WrongSize {
                        digest: self.digest.clone(),
                        path: self.path.clone(),
                        expected: want,
                        found: if n == 0 {
                            format!("it holds {} bytes", self.produced)
                        } else {
                            format!("it holds more than {want} bytes")
                        },
                    })
                }
                _ => Ok(n),
            }
        });
        read.map_err(|e| {
            let io = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
            self.failure = Some(e);
            io
        })
    }
}
