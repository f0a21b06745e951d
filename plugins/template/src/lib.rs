//! A complete, minimal flor plugin for a toy checkpoint format: the one the
//! guide (`docs/writing-a-plugin.md`) tells you to copy.
//!
//! The toy format (`toy.tensors`), all integers little-endian:
//!
//! ```text
//! "FLORTOY1"                      8-byte magic
//! u32 count                       number of tensors
//! count times:
//!   u16 name_len, name            UTF-8 name, e.g. "layer.weight"
//!   u8 dtype_len, dtype           one of the interface's dtype names, e.g. "f32"
//!   u8 ndim, ndim x u64 dims      the shape
//!   the elements                  dims' product x element size bytes, C order
//! ```
//!
//! Everything except the elements is metadata. The plugin reads the
//! records through the SDK's buffered [`SourceReader`] (a few host calls,
//! whatever the checkpoint's size) and never reads an element.

use flor_plugin_sdk::{
    dtype, Error, Finding, Info, Plugin, Result, Severity, Source, SourceReader, Span, Tensor, TensorLayout,
};

/// The format's name, as `sniff` answers and manifests record.
pub const FORMAT: &str = "toy.tensors";

/// The magic bytes every toy checkpoint starts with.
pub const MAGIC: &[u8; 8] = b"FLORTOY1";

/// At most this many tensors: a corrupt count must not make us loop long or
/// allocate much (flor also caps time and memory, but a clear error is better).
pub const MAX_TENSORS: u32 = 1 << 20;

/// The plugin. It has no state: every function is an associated function.
pub struct Toy;

impl Plugin for Toy {
    fn describe() -> Info {
        // `Info::new` fills in the interface version this SDK builds for.
        Info::new("toy", env!("CARGO_PKG_VERSION"), "The template plugin: toy checkpoints and one Python check")
            .format(FORMAT, "FLORTOY1 records, each followed by its elements")
            .language("python")
    }

    fn sniff(head: &[u8]) -> Option<String> {
        // Cheap: look at the magic only.
        head.starts_with(MAGIC).then(|| FORMAT.to_owned())
    }

    fn layout(format: &str, src: &dyn Source) -> Result<TensorLayout> {
        if format != FORMAT {
            return Err(Error::UnknownFormat(format.to_owned()));
        }
        let mut r = SourceReader::new(src, 0);
        if r.bytes(8)? != MAGIC {
            return Err(Error::malformed(0, "not a toy checkpoint (no FLORTOY1 magic)"));
        }
        let count = r.u32_le()?;
        if count > MAX_TENSORS {
            return Err(Error::limit(8, format!("a tensor count of {count}"), MAX_TENSORS.into()));
        }
        let mut out = TensorLayout::default();
        let mut record_start = 0; // the magic and count are metadata too
        for _ in 0..count {
            let tensor = record(&mut r)?;
            out.metadata.push(Span::new(record_start, tensor.offset - record_start));
            record_start = tensor.end();
            r.seek(record_start);
            out.tensors.push(tensor);
        }
        if record_start != src.size() {
            return Err(Error::malformed(record_start, "bytes after the last tensor"));
        }
        Ok(out)
    }

    // `split` is not overridden: cutting at tensor boundaries is right here.

    fn lint(language: &str, _path: &str, text: &str) -> Vec<Finding> {
        if language != "python" {
            return Vec::new();
        }
        lint_python(text)
    }
}

/// Reads one record at the reader's position; the tensor's elements follow
/// it, and are checked to lie inside the checkpoint.
fn record(r: &mut SourceReader<'_, dyn Source + '_>) -> Result<Tensor> {
    let at = r.pos();
    let name_len = r.u16_le()?;
    let name = String::from_utf8(r.bytes(name_len.into())?)
        .map_err(|_| Error::malformed(at + 2, "a tensor name that is not UTF-8"))?;
    let dtype_len = r.u8()?;
    let dtype_at = r.pos();
    let dtype = String::from_utf8(r.bytes(dtype_len.into())?)
        .map_err(|_| Error::malformed(dtype_at, "a dtype that is not UTF-8"))?;
    let ndim = r.u8()?;
    let shape = (0..ndim).map(|_| r.u64_le()).collect::<Result<Vec<u64>>>()?;
    let length = dtype::byte_len(&dtype, &shape).ok_or_else(|| {
        Error::malformed(dtype_at, format!("tensor `{name}`: unknown dtype `{dtype}` or a shape that overflows"))
    })?;
    let offset = r.pos();
    flor_plugin_sdk::check_range(r.source().size(), offset, length)?;
    Ok(Tensor { name, dtype, shape, offset, length })
}

/// The template's one check: `random.seed(time.time())` (or any seed taken
/// from the clock) makes every replay draw different numbers.
fn lint_python(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // Skip the comment part of the line (a real plugin must also skip
        // strings; see the pytorch plugin's scanner).
        let code = line.split('#').next().unwrap_or("");
        if let Some(col) = code.find("seed(time.time()") {
            out.push(Finding {
                line: i as u32 + 1,
                column: code[..col].chars().count() as u32 + 1,
                code: "toy::clock-seed".into(),
                severity: Severity::Warning,
                message: "a seed taken from the clock differs in every replay, so replayed values differ".into(),
                hint: "seed with a constant or a value flor checkpoints".into(),
            });
        }
    }
    out
}

// The one line that makes this crate a plugin: on wasm32 it exports the
// interface's functions; natively it only checks `Toy: Plugin`.
flor_plugin_sdk::export!(Toy);

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy checkpoint of `(name, dtype, shape, elements)`.
    fn toy(tensors: &[(&str, &str, &[u64], &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend((tensors.len() as u32).to_le_bytes());
        for (name, dtype, shape, data) in tensors {
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(name.as_bytes());
            out.push(dtype.len() as u8);
            out.extend(dtype.as_bytes());
            out.push(shape.len() as u8);
            shape.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(*data);
        }
        out
    }

    #[test]
    fn lays_out_each_tensor_after_its_record() {
        let file = toy(&[("w", "f32", &[2], &[0; 8]), ("b", "u8", &[], &[7])]);
        assert_eq!(Toy::sniff(&file[..16]).as_deref(), Some(FORMAT));
        let l = Toy::layout(FORMAT, &file).unwrap();
        // magic 8 + count 4 + name 2+1 + dtype 1+3 + ndim 1 + dim 8 = 28
        assert_eq!(
            l.tensors[0],
            Tensor { name: "w".into(), dtype: "f32".into(), shape: vec![2], offset: 28, length: 8 }
        );
        // record of b: 36 + 2+1 + 1+2 + 1 = 43
        assert_eq!(l.tensors[1], Tensor { name: "b".into(), dtype: "u8".into(), shape: vec![], offset: 43, length: 1 });
        assert_eq!(l.metadata, vec![Span::new(0, 28), Span::new(36, 7)]);
        l.check(file.len() as u64).unwrap();
    }

    #[test]
    fn a_broken_checkpoint_is_an_error_naming_its_byte() {
        let file = toy(&[("w", "f32", &[4], &[0; 16])]);
        let cut = &file[..file.len() - 1];
        assert_eq!(
            Toy::layout(FORMAT, &cut).unwrap_err().to_string(),
            "byte 28: truncated: 16 bytes needed there, the data ends at byte 43"
        );
        let odd = toy(&[("w", "f33", &[1], &[0])]);
        assert!(Toy::layout(FORMAT, &odd)
            .unwrap_err()
            .to_string()
            .starts_with("byte 16: tensor `w`: unknown dtype `f33`"));
        assert!(Toy::sniff(b"FLORTOY2").is_none());
        assert_eq!(Toy::layout("other", &file).unwrap_err(), Error::UnknownFormat("other".into()));
    }

    #[test]
    fn lint_finds_a_clock_seed_outside_comments() {
        let text = "import random, time\n# random.seed(time.time())\nx = 1; random.seed(time.time())\n";
        let found = Toy::lint("python", "train.py", text);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].column, found[0].code.as_str()), (3, 15, "toy::clock-seed"));
        assert!(Toy::lint("julia", "train.jl", text).is_empty());
    }
}
