//! Packing objects after the fact, reading parts of objects, and listing
//! the store's files (for upkeep: garbage collection, verification).
//!
//! [`ObjectStore::pack`] turns an object stored whole (monolithic) into
//! chunks plus a manifest, as a write would have had a format claimed it
//! then: the object is decompressed into a temporary spool (its digest
//! checked), cut at the format's chunk boundaries, the chunks stored (hashed
//! and compressed in parallel; a chunk stored already is not written
//! again), and the manifest renamed over the monolithic file. The rename is
//! atomic: a reader that opened the old file reads it to its end, a reader
//! that opens the name afterwards reads the chunks, and both get the same
//! bytes. An object no format claims, one its format fails to describe, or
//! one that would make a single chunk stays as it is, and the outcome says
//! why.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rayon::prelude::*;

use super::{coalesce, copy_range, manifest, CopyError, ObjectId, ObjectStore, TempFile, MIN_CHUNK};
use crate::error::{Error, Result};
use crate::formats::{
    ByteSource, CheckpointFormat, CheckpointFormatExt, FileSource, FormatError, FormatRegistry, Layout, SNIFF_LEN,
};
use crate::objects::{ChunkRef, Manifest};

/// What [`ObjectStore::pack`] did with an object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackOutcome {
    /// It was stored whole; now it is chunks plus a manifest.
    Packed {
        /// The format that cut it.
        format: String,
        /// How many chunks it has.
        chunks: usize,
        /// How many of them were not stored before (the others are shared
        /// with objects stored earlier).
        new_chunks: usize,
        /// Bytes of the monolithic file it replaced.
        stored_before: u64,
        /// Bytes written: the new chunks' files and the manifest.
        new_bytes: u64,
    },
    /// It is stored as chunks already.
    AlreadyPacked {
        /// The format its manifest names.
        format: String,
    },
    /// No registered format claims it (its first bytes): stored whole.
    NotClaimed,
    /// A format claims it, but it stays whole.
    KeptWhole {
        /// The format that claimed it.
        format: String,
        /// Why (the format's error, or a single chunk).
        reason: String,
    },
}

/// An object decompressed into a temporary file, its digest checked,
/// readable at any offset ([`ByteSource`]); the file is removed on drop.
/// See [`ObjectStore::spool`].
pub struct Spool {
    id: ObjectId,
    src: FileSource,
    tmp: TempFile,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("id", &self.id).field("path", &self.tmp.path).finish()
    }
}

impl Spool {
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// The temporary file (for error messages).
    pub fn path(&self) -> &Path {
        &self.tmp.path
    }

    /// Reads `range` of the object into a new buffer.
    pub fn read_range(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| Error::io("read", &self.tmp.path, io::Error::other("range too large for memory")))?;
        let mut buf = vec![0u8; len];
        self.src.read_at(range.start, &mut buf).map_err(|e| Error::io("read", &self.tmp.path, e))?;
        Ok(buf)
    }
}

impl ByteSource for Spool {
    fn len(&self) -> u64 {
        self.src.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.src.read_at(offset, buf)
    }
}

/// One file of the store: an object or a chunk, monolithic or a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Its digest (name).
    pub digest: String,
    /// Its size on disk.
    pub stored_bytes: u64,
    /// When it was last modified (`None` where the OS does not say).
    pub modified: Option<SystemTime>,
}

impl ObjectStore {
    /// The first bytes of an object (up to [`SNIFF_LEN`]), to sniff its
    /// format: read without checking the digest (which needs the whole
    /// object), so use them only to decide what to do with it.
    pub fn head(&self, digest: &str) -> Result<Vec<u8>> {
        let mut reader = self.open_object(digest, 0, None)?;
        let mut head = Vec::with_capacity(SNIFF_LEN);
        let read = (&mut reader).take(SNIFF_LEN as u64).read_to_end(&mut head);
        if let Some(e) = reader.failure.take() {
            return Err(e);
        }
        read.map_err(|e| Error::io("read", &reader.path, e))?;
        Ok(head)
    }

    /// Decompresses an object into a temporary file of the store (its
    /// digest checked on the way), for reading at any offset. Takes the
    /// object's raw size in temporary disk space until dropped.
    pub fn spool(&self, digest: &str) -> Result<Spool> {
        let tmp = self.temp()?;
        let file = File::create(&tmp.path).map_err(|e| Error::io("create", &tmp.path, e))?;
        let mut out = file;
        // Large reads: the digest is hashed (and the file written) in big
        // pieces.
        let bytes = self.get_with(digest, |r| {
            let mut buf = vec![0u8; super::COPY_BUF];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                out.write_all(&buf[..n])?;
                total += n as u64;
            }
        })?;
        drop(out);
        let file = File::open(&tmp.path).map_err(|e| Error::io("open", &tmp.path, e))?;
        let src = FileSource::new(file).map_err(|e| Error::io("read", &tmp.path, e))?;
        Ok(Spool { id: ObjectId { digest: digest.to_owned(), bytes }, src, tmp })
    }

    /// Packs object `digest` if a format of `formats` claims it (see the
    /// module docs): decompressed to a spool, cut, chunks stored, manifest
    /// renamed over the monolithic file. Durable as the store's writes are.
    pub fn pack(&self, digest: &str, formats: &FormatRegistry) -> Result<PackOutcome> {
        if let Some(m) = self.manifest(digest)? {
            return Ok(PackOutcome::AlreadyPacked { format: m.format });
        }
        let head = self.head(digest)?;
        let Some(format) = formats.sniff(&head) else { return Ok(PackOutcome::NotClaimed) };
        let spool = self.spool(digest)?;
        Ok(self.pack_spooled(&spool, format.as_ref())?.0)
    }

    /// Packs the spooled object with `format` (which claimed it). Returns
    /// the outcome and, when the format described the object, its checked
    /// layout (also when the object stays whole as a single chunk).
    pub fn pack_spooled(&self, spool: &Spool, format: &dyn CheckpointFormat) -> Result<(PackOutcome, Option<Layout>)> {
        let digest = &spool.id.digest;
        if let Some(m) = self.manifest(digest)? {
            return Ok((PackOutcome::AlreadyPacked { format: m.format }, None));
        }
        let name = format.name().to_owned();
        let (layout, pieces) = match format.layout_and_chunks(spool) {
            Ok(x) => x,
            Err(FormatError::Read { source, .. }) => return Err(Error::io("read", &spool.tmp.path, source)),
            Err(e) => return Ok((PackOutcome::KeptWhole { format: name, reason: e.to_string() }, None)),
        };
        let plan = coalesce(pieces, MIN_CHUNK);
        if plan.len() < 2 {
            let reason = format!("it makes a single chunk (pieces under {} KiB are stored together)", MIN_CHUNK >> 10);
            return Ok((PackOutcome::KeptWhole { format: name, reason }, Some(layout)));
        }
        let path = self.path_of(digest)?;
        let stored_before = fs::metadata(&path).map_err(|e| Error::io("read", &path, e))?.len();
        let written = self.put_chunks(&spool.src, &spool.tmp.path, &plan)?;
        let new_chunks = written.iter().filter(|(_, n)| n.is_some()).count();
        let mut new_bytes: u64 = written.iter().filter_map(|(_, n)| *n).sum();
        let manifest = Manifest {
            format: name.clone(),
            bytes: spool.id.bytes,
            digest: digest.clone(),
            chunks: written.into_iter().map(|(c, _)| c).collect(),
            plugin: format.provenance(),
        };
        let encoded = manifest.encode();
        new_bytes += encoded.len() as u64;
        let tmp = self.temp()?;
        fs::write(&tmp.path, encoded).map_err(|e| Error::io("write", &tmp.path, e))?;
        self.replace(tmp, digest)?;
        let outcome = PackOutcome::Packed { format: name, chunks: plan.len(), new_chunks, stored_before, new_bytes };
        Ok((outcome, Some(layout)))
    }

    /// Stores each range of `plan` as a chunk, in parallel. Returns the
    /// chunks in order, each with the size of its file when this call
    /// wrote it (`None`: stored already).
    pub(super) fn put_chunks(
        &self,
        src: &FileSource,
        spool: &Path,
        plan: &[Range<u64>],
    ) -> Result<Vec<(ChunkRef, Option<u64>)>> {
        plan.par_iter().map(|range| self.put_range(src, spool, range.clone())).collect()
    }

    /// Stores `range` of a spooled object as a chunk (hashed first, so a
    /// chunk stored already is not compressed again); returns it and the
    /// size of the file written, if one was.
    fn put_range(&self, src: &FileSource, spool: &Path, range: Range<u64>) -> Result<(ChunkRef, Option<u64>)> {
        let bytes = range.end - range.start;
        let mut hasher = blake3::Hasher::new();
        copy_range(src, range.clone(), |b| {
            super::hash(&mut hasher, b);
            Ok(())
        })
        .map_err(|e| match e {
            CopyError::Read(e) | CopyError::Write(e) => Error::io("read", spool, e),
        })?;
        let digest = hasher.finalize().to_hex().to_string();
        let mut written = None;
        let path = self.path_of(&digest)?;
        if path.is_file() {
            super::touch(&path);
        } else {
            let tmp = self.temp()?;
            self.compress_range(src, spool, range, &tmp)?;
            written = Some(fs::metadata(&tmp.path).map_err(|e| Error::io("read", &tmp.path, e))?.len());
            self.install(tmp, &digest)?;
        }
        Ok((ChunkRef { digest, bytes }, written))
    }

    /// Renames a complete temporary file over the object `digest` (which
    /// may exist: this is how a manifest replaces a monolithic file).
    fn replace(&self, mut tmp: TempFile, digest: &str) -> Result<()> {
        let dest = self.path_of(digest)?;
        let sync = self.durability.syncs();
        if sync {
            File::open(&tmp.path).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", &tmp.path, e))?;
        }
        fs::rename(&tmp.path, &dest).map_err(|e| Error::io("store object", &dest, e))?;
        tmp.keep = true;
        if sync {
            self.sync_installed(&dest, false)?;
        }
        Ok(())
    }

    /// Reads the given byte ranges of object `digest`, calling
    /// `visit(i, bytes)` with range `i`'s bytes, in order of position.
    /// Ranges must not overlap. A chunked object reads only the chunks the
    /// ranges touch (each checked against its digest, each read once); a
    /// monolithic one is read to its end (so its digest is checked) in one
    /// pass.
    pub fn read_ranges(
        &self,
        digest: &str,
        ranges: &[Range<u64>],
        visit: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
        if let Some(w) = order.windows(2).find(|w| ranges[w[1]].start < ranges[w[0]].end) {
            let (a, b) = (&ranges[w[0]], &ranges[w[1]]);
            return Err(Error::io(
                "read",
                self.root.clone(),
                io::Error::other(format!("ranges {a:?} and {b:?} of object {digest} overlap")),
            ));
        }
        match self.manifest(digest)? {
            Some(m) => self.read_chunk_ranges(&m, ranges, &order, visit),
            None => self.read_blob_ranges(digest, ranges, &order, visit),
        }
    }

    fn read_chunk_ranges(
        &self,
        m: &Manifest,
        ranges: &[Range<u64>],
        order: &[usize],
        visit: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let starts: Vec<u64> = m
            .chunks
            .iter()
            .scan(0u64, |at, c| {
                let s = *at;
                *at += c.bytes;
                Some(s)
            })
            .collect();
        let end_of = |k: usize| starts[k] + m.chunks[k].bytes;
        let mut cached: Option<(usize, Vec<u8>)> = None;
        for &i in order {
            let r = ranges[i].clone();
            if r.end > m.bytes || r.start > r.end {
                return Err(Error::CorruptManifest {
                    digest: m.digest.clone(),
                    path: self.path_of(&m.digest)?,
                    what: format!("range {r:?} is past the object's {} bytes", m.bytes),
                });
            }
            if r.start == r.end {
                visit(i, &[])?;
                continue;
            }
            // The chunk holding the range's first byte (`starts[0]` is 0).
            let first = starts.partition_point(|&s| s <= r.start) - 1;
            if r.end <= end_of(first) {
                let cs = starts[first];
                let bytes = self.cached_chunk(m, &mut cached, first)?;
                visit(i, &bytes[(r.start - cs) as usize..(r.end - cs) as usize])?;
                continue;
            }
            let mut out = Vec::with_capacity((r.end - r.start) as usize);
            let mut k = first;
            while k < m.chunks.len() && starts[k] < r.end {
                let (cs, ce) = (starts[k], end_of(k));
                let bytes = self.cached_chunk(m, &mut cached, k)?;
                out.extend_from_slice(&bytes[(r.start.max(cs) - cs) as usize..(r.end.min(ce) - cs) as usize]);
                k += 1;
            }
            visit(i, &out)?;
        }
        Ok(())
    }

    /// Chunk `k` of `m`, from `cache` when it holds it (else read into it).
    fn cached_chunk<'a>(&self, m: &Manifest, cache: &'a mut Option<(usize, Vec<u8>)>, k: usize) -> Result<&'a [u8]> {
        if cache.as_ref().is_none_or(|(j, _)| *j != k) {
            *cache = Some((k, self.chunk_bytes(m, k)?));
        }
        Ok(cache.as_ref().map_or(&[][..], |(_, b)| b.as_slice()))
    }

    /// The bytes of chunk `k` of `m`, checked.
    fn chunk_bytes(&self, m: &Manifest, k: usize) -> Result<Vec<u8>> {
        let c = &m.chunks[k];
        self.get_sized(&c.digest, c.bytes).map_err(|e| match e {
            Error::MissingObject { dir, .. } => Error::MissingChunk {
                object: m.digest.clone(),
                chunk: c.digest.clone(),
                index: k,
                count: m.chunks.len(),
                dir,
            },
            other => Error::CorruptChunk {
                object: m.digest.clone(),
                chunk: c.digest.clone(),
                index: k,
                path: self.path_of(&c.digest).unwrap_or_default(),
                what: other.to_string(),
            },
        })
    }

    fn read_blob_ranges(
        &self,
        digest: &str,
        ranges: &[Range<u64>],
        order: &[usize],
        visit: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut failed: Option<Error> = None;
        let mut buf = Vec::new();
        self.get_with(digest, |r| {
            let mut at = 0u64;
            for &i in order {
                let range = &ranges[i];
                io::copy(&mut r.take(range.start - at), &mut io::sink())?;
                buf.clear();
                r.take(range.end - range.start).read_to_end(&mut buf)?;
                if buf.len() as u64 != range.end - range.start {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("range {range:?} is past the object's end"),
                    ));
                }
                at = range.end;
                if let Err(e) = visit(i, &buf) {
                    failed = Some(e);
                    return Err(io::Error::other("stopped"));
                }
            }
            Ok(())
        })
        .map_err(|e| failed.take().unwrap_or(e))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every object and chunk file in the store (not temporary files, nor
    /// anything else kept under its root), in no particular order.
    pub fn stored_files(&self) -> Result<Vec<StoredFile>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))?;
        for dir in entries {
            let dir = dir.map_err(|e| Error::io("list", &self.root, e))?;
            let prefix = dir.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !super::is_digest(&format!("{prefix}{}", "0".repeat(62))) {
                continue;
            }
            let path = dir.path();
            let files = match fs::read_dir(&path) {
                Ok(files) => files,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(Error::io("list", &path, e)),
            };
            for f in files {
                let f = f.map_err(|e| Error::io("list", &path, e))?;
                let digest = format!("{prefix}{}", f.file_name().to_string_lossy());
                if !super::is_digest(&digest) {
                    continue;
                }
                let meta = match f.metadata() {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("read", f.path(), e)),
                };
                out.push(StoredFile { digest, stored_bytes: meta.len(), modified: meta.modified().ok() });
            }
        }
        Ok(out)
    }

    /// Object `digest`'s own file as [`ObjectStore::stored_files`] lists
    /// it; `None` when it is not stored.
    pub fn stored_file(&self, digest: &str) -> Result<Option<StoredFile>> {
        let path = self.path_of(digest)?;
        match fs::metadata(&path) {
            Ok(m) => {
                Ok(Some(StoredFile { digest: digest.to_owned(), stored_bytes: m.len(), modified: m.modified().ok() }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// The size on disk of object `digest`'s own file (a manifest's, not
    /// its chunks'); `None` when it is not stored.
    pub fn stored_size(&self, digest: &str) -> Result<Option<u64>> {
        let path = self.path_of(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Whether object `digest`'s file is a manifest (a chunked object);
    /// reads only its first bytes.
    pub fn is_chunked(&self, digest: &str) -> Result<bool> {
        let (_, _, head) = self.open_file(digest)?;
        Ok(head == manifest::MAGIC)
    }

    /// Deletes object `digest`'s file (a manifest leaves its chunks);
    /// returns its size, `None` when it was not there. Chunks are shared:
    /// only garbage collection that follows every manifest may call this.
    pub fn remove_file(&self, digest: &str) -> Result<Option<u64>> {
        let path = self.path_of(digest)?;
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(Some(size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    /// The store's temporary files (`<root>/tmp`): writes in progress, or
    /// left by killed processes.
    pub fn temp_files(&self) -> Result<Vec<(PathBuf, u64, Option<SystemTime>)>> {
        let dir = self.root.join("tmp");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| Error::io("list", &dir, e))?;
            if let Ok(m) = e.metadata() {
                if m.is_file() {
                    out.push((e.path(), m.len(), m.modified().ok()));
                }
            }
        }
        Ok(out)
    }
}
