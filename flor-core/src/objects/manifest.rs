//! The manifest of a chunked object: which chunks, in which order, join into
//! the object's bytes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::Provenance;

/// The first line of every manifest file. A monolithic object's file starts
/// with a zstd frame (`28 b5 2f fd`), never with this.
pub(crate) const MAGIC: &[u8] = b"flor-chunks 1\n";

/// The longest manifest read (about 2.5 million chunks).
pub(crate) const MAX_LEN: u64 = 256 << 20;

/// How a chunked object is stored: its chunks, each itself an object of the
/// store, whose bytes joined in order are the object's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The [`CheckpointFormat`](crate::formats::CheckpointFormat) that cut
    /// the object (informational: reading needs no format).
    pub format: String,
    /// The object's length in bytes.
    pub bytes: u64,
    /// The BLAKE3 digest of the whole object (its name in the store).
    pub digest: String,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
    /// The plugin behind `format`, when it is not compiled into flor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Provenance>,
}

/// One chunk of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// The chunk's BLAKE3 digest (its name in the store).
    pub digest: String,
    /// Its length in bytes.
    pub bytes: u64,
}

impl Manifest {
    /// The manifest file's bytes: [`MAGIC`], then one line of JSON.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // A derived Serialize of strings and integers cannot fail.
        serde_json::to_writer(&mut out, self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses the JSON after [`MAGIC`] and checks it describes `digest`:
    /// same name, valid chunk names, chunk lengths adding up.
    pub(crate) fn decode(json: &[u8], digest: &str, path: &Path) -> Result<Manifest> {
        let corrupt = |what: String| Error::CorruptManifest { digest: digest.to_owned(), path: path.to_owned(), what };
        let m: Manifest = serde_json::from_slice(json).map_err(|e| corrupt(format!("not a manifest: {e}")))?;
        if m.digest != digest {
            return Err(corrupt(format!("it describes object {}", m.digest)));
        }
        let mut total = 0u64;
        for (i, c) in m.chunks.iter().enumerate() {
            if !super::is_digest(&c.digest) {
                return Err(corrupt(format!("chunk {i} is named {:?}, not a BLAKE3 digest", c.digest)));
            }
            total = total.checked_add(c.bytes).ok_or_else(|| corrupt("chunk lengths overflow".into()))?;
        }
        if total != m.bytes {
            return Err(corrupt(format!("its chunks hold {total} bytes, the object {}", m.bytes)));
        }
        Ok(m)
    }
}
