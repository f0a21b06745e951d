//! `flor.pytree`: how flor's Python front stores JAX and flax state (the
//! crate documentation has the format). The header lists every leaf with
//! its path, dtype, shape and byte range, so the layout is the header read
//! back and checked.

use serde::Deserialize;

use flor_plugin_sdk::{Error, Result, Source, Tensor, TensorLayout, MAX_READ};

use crate::layout::finish;
use crate::source::Cursor;

/// The first eight bytes.
pub const MAGIC: &[u8; 8] = b"FLORTREE";

/// The header version this plugin reads.
pub const VERSION: u64 = 1;

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u64,
    structure: Range,
    leaves: Vec<Leaf>,
}

#[derive(Deserialize)]
struct Range {
    offset: u64,
    length: u64,
}

#[derive(Deserialize)]
struct Leaf {
    path: String,
    dtype: String,
    shape: Vec<u64>,
    offset: u64,
    length: u64,
}

/// The layout of a `flor.pytree` object.
pub fn layout(src: &dyn Source) -> Result<TensorLayout> {
    let mut c = Cursor::new(src, 0);
    if &c.array::<8>()? != MAGIC {
        return Err(Error::malformed(0, "not a flor.pytree object (no FLORTREE magic)"));
    }
    let len = c.le_uint(8)?;
    let text = c.bytes(len, MAX_READ as u32)?;
    let header: Header = serde_json::from_slice(&text)
        .map_err(|e| Error::malformed(16 + e.column() as u64, format!("the header is not valid: {e}")))?;
    if header.format != "flor.pytree" {
        return Err(Error::malformed(16, format!("the header names format `{}`", header.format)));
    }
    if header.version != VERSION {
        return Err(Error::malformed(
            16,
            format!("flor.pytree version {} (this plugin reads version {VERSION})", header.version),
        ));
    }
    let end = 16 + len;
    let s = &header.structure;
    if s.offset < end || s.offset.checked_add(s.length).is_none_or(|e| e > src.size()) {
        return Err(Error::malformed(16, "the structure's range is not after the header, inside the object"));
    }
    let mut tensors = Vec::with_capacity(header.leaves.len());
    for leaf in header.leaves {
        if leaf.offset < s.offset + s.length {
            return Err(Error::malformed(
                leaf.offset,
                format!("leaf `{}` starts before the end of the structure", leaf.path),
            ));
        }
        let t =
            Tensor { name: leaf.path, dtype: leaf.dtype, shape: leaf.shape, offset: leaf.offset, length: leaf.length };
        tensors.push(t);
    }
    finish(tensors, src.size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(header: &str, size: usize) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend((header.len() as u64).to_le_bytes());
        out.extend(header.as_bytes());
        out.resize(size, 0);
        out
    }

    #[test]
    fn a_header_is_read_back_and_checked() {
        let h = r#"{"format":"flor.pytree","version":1,"structure":{"offset":256,"length":10},
            "leaves":[{"path":"w","kind":"numpy","dtype":"f32","numpy":"<f4","shape":[2],"offset":320,"length":8}]}"#;
        let l = layout(&object(h, 330)).unwrap();
        assert_eq!(l.tensors.len(), 1);
        assert_eq!((l.tensors[0].offset, l.tensors[0].length), (320, 8));
        assert_eq!(l.metadata.len(), 2);
        // Eight bytes claimed where only six remain; a wrong size; a newer version.
        assert!(layout(&object(h, 326)).is_err());
        let bad = h.replace(r#""length":8"#, r#""length":4"#);
        assert!(layout(&object(&bad, 330)).is_err());
        let newer = h.replace(r#""version":1"#, r#""version":2"#);
        assert!(layout(&object(&newer, 330)).unwrap_err().to_string().contains("version 2"));
        let early = h.replace(r#""offset":320"#, r#""offset":260"#);
        assert!(layout(&object(&early, 330)).is_err());
        assert!(layout(&object("{", 64)).is_err());
        assert!(layout(&b"FLORTREE\xff\xff\xff\xff\xff\xff\xff\xff".to_vec()).is_err());
    }
}
