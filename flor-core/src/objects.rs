//! A content-addressed object store for checkpoint bytes.
//!
//! Each blob is named by the BLAKE3 digest of its uncompressed content and
//! stored zstd-compressed at `<root>/<first 2 hex>/<remaining 62 hex>`.
//! Identical blobs are stored once. Writes stream (hash and compress as the
//! bytes arrive, then an atomic rename), so peak memory does not grow with the
//! state's size; every read verifies the digest.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// zstd level: fast, still a good ratio on float arrays.
const LEVEL: i32 = 3;

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
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ObjectStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ObjectStore> {
        let root = root.into();
        fs::create_dir_all(root.join("tmp")).map_err(|e| Error::io("create", &root, e))?;
        Ok(ObjectStore { root })
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores the bytes that `write` produces, streaming. Returns the id.
    pub fn put_with(&self, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<ObjectId> {
        let mut w = self.writer()?;
        if let Err(e) = write(&mut w) {
            let tmp = w.tmp.clone();
            drop(w);
            return Err(Error::io("write object", tmp, e));
        }
        w.finish()
    }

    /// A streaming writer for one object: write its bytes, then
    /// [`ObjectWriter::finish`]. Dropping it unfinished stores nothing.
    pub fn writer(&self) -> Result<ObjectWriter> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!("{}-{}.part", std::process::id(), n));
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let enc =
            zstd::stream::write::Encoder::new(BufWriter::new(file), LEVEL).map_err(|e| Error::io("create", &tmp, e))?;
        Ok(ObjectWriter {
            sink: Some(HashingWriter { hasher: blake3::Hasher::new(), inner: enc, bytes: 0 }),
            tmp,
            store: self.clone(),
        })
    }

    /// Stores a byte slice.
    pub fn put(&self, bytes: &[u8]) -> Result<ObjectId> {
        self.put_with(|w| w.write_all(bytes))
    }

    /// Whether a blob with this digest is stored.
    pub fn contains(&self, digest: &str) -> bool {
        self.path_of(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Streams a blob's bytes into `read`, verifying the digest once all bytes
    /// were read: a corrupt blob yields [`Error::CorruptObject`] (the reader
    /// sees an `InvalidData` error at its end).
    pub fn get_with<T>(&self, digest: &str, read: impl FnOnce(&mut dyn Read) -> io::Result<T>) -> Result<T> {
        let path = self.path_of(digest)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingObject { digest: digest.to_owned(), dir: self.root.clone() })
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let corrupt = || Error::CorruptObject { digest: digest.to_owned(), path: path.clone() };
        let dec = zstd::stream::read::Decoder::new(BufReader::new(file)).map_err(|_| corrupt())?;
        let mut src =
            VerifyingReader { inner: dec, hasher: blake3::Hasher::new(), expected: digest.to_owned(), done: false };
        let out = read(&mut src).map_err(|_| corrupt())?;
        // Drain whatever the caller did not read so the digest covers it all.
        io::copy(&mut src, &mut io::sink()).map_err(|_| corrupt())?;
        if !src.done {
            return Err(corrupt());
        }
        Ok(out)
    }

    /// Reads a whole blob, verified.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>> {
        self.get_with(digest, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
    }

    fn path_of(&self, digest: &str) -> Result<PathBuf> {
        if digest.len() != 64 || !digest.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(Error::BadDigest(digest.to_owned()));
        }
        Ok(self.root.join(&digest[..2]).join(&digest[2..]))
    }
}

/// Streams one object into an [`ObjectStore`]; see [`ObjectStore::writer`].
pub struct ObjectWriter {
    sink: Option<HashingWriter<zstd::stream::write::Encoder<'static, BufWriter<File>>>>,
    tmp: PathBuf,
    store: ObjectStore,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter").field("tmp", &self.tmp).finish()
    }
}

impl ObjectWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.sink.as_ref().map_or(0, |s| s.bytes)
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes the object: compresses the tail, names it by its digest
    /// (an identical object already stored is kept, this copy dropped).
    pub fn finish(mut self) -> Result<ObjectId> {
        let Some(HashingWriter { hasher, inner, bytes }) = self.sink.take() else {
            return Err(Error::io("finish", &self.tmp, io::Error::other("object writer already finished")));
        };
        let done = inner.finish().and_then(|mut buf| buf.flush());
        if let Err(e) = done {
            let _ = fs::remove_file(&self.tmp);
            return Err(Error::io("write object", &self.tmp, e));
        }
        let id = ObjectId { digest: hasher.finalize().to_hex().to_string(), bytes };
        let dest = self.store.path_of(&id.digest)?;
        if dest.exists() {
            let _ = fs::remove_file(&self.tmp);
        } else {
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            }
            fs::rename(&self.tmp, &dest).map_err(|e| Error::io("store object", &dest, e))?;
        }
        Ok(id)
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Some(s) => s.write(buf),
            None => Err(io::Error::other("object writer already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

struct HashingWriter<W> {
    hasher: blake3::Hasher,
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct VerifyingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    expected: String,
    done: bool,
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            if self.hasher.finalize().to_hex().as_str() != self.expected {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "digest mismatch"));
            }
            self.done = true;
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path().join("objects")).unwrap();
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let a = store.put(&data).unwrap();
        let b = store.put(&data).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.bytes, data.len() as u64);
        assert_eq!(store.get(&a.digest).unwrap(), data);
        let files: Vec<_> = walk(dir.path());
        assert_eq!(files.len(), 1, "one blob, no temp files: {files:?}");

        // Corrupt the blob: a different valid zstd stream.
        let path = store.path_of(&a.digest).unwrap();
        fs::write(&path, zstd::encode_all(&b"evil"[..], 1).unwrap()).unwrap();
        assert!(matches!(store.get(&a.digest), Err(Error::CorruptObject { .. })));
        fs::write(&path, b"not zstd at all").unwrap();
        assert!(matches!(store.get(&a.digest), Err(Error::CorruptObject { .. })));
        assert!(matches!(store.get(&"0".repeat(64)), Err(Error::MissingObject { .. })));
        assert!(matches!(store.get("../../etc/passwd"), Err(Error::BadDigest(_))));
    }

    #[test]
    fn streaming_writer_and_abandoned_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        for chunk in [&b"abc"[..], b"def"] {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.len(), 6);
        let id = w.finish().unwrap();
        assert_eq!(store.get(&id.digest).unwrap(), b"abcdef");
        let mut w = store.writer().unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp file left");
    }

    #[test]
    fn empty_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let id = store.put(b"").unwrap();
        assert_eq!(store.get(&id.digest).unwrap(), b"");
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.extend(walk(&e));
            } else {
                out.push(e);
            }
        }
        out
    }
}
