//! The values a plugin answers with, as plain Rust types. They mirror the
//! records of the WIT interface (`flor:plugin/types`) one to one; the
//! export glue converts them, so plugin code never sees the raw bindings.

use std::fmt;

use crate::dtype;

/// A checkpoint format a plugin understands (WIT `format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// Its name, recorded in the manifests of the checkpoints it cut
    /// (`torch.zip`). Unique across the plugins a project uses.
    pub name: String,
    /// One line saying what it is.
    pub summary: String,
}

impl Format {
    /// A format named `name`, described by `summary`.
    pub fn new(name: impl Into<String>, summary: impl Into<String>) -> Format {
        Format { name: name.into(), summary: summary.into() }
    }
}

/// Who a plugin is and what it offers (WIT `info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The plugin's name: lower case, digits and `-`.
    pub name: String,
    /// Its own version (semver).
    pub version: String,
    /// The interface version it was built for: [`crate::INTERFACE_VERSION`].
    pub interface_version: String,
    /// One line saying what it is for.
    pub summary: String,
    /// The formats `sniff`, `layout` and `split` handle.
    pub formats: Vec<Format>,
    /// The languages `lint` checks (`python`).
    pub languages: Vec<String>,
}

impl Info {
    /// An `Info` for this interface version ([`crate::INTERFACE_VERSION`]),
    /// with no formats and no languages yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>, summary: impl Into<String>) -> Info {
        Info {
            name: name.into(),
            version: version.into(),
            interface_version: crate::INTERFACE_VERSION.to_owned(),
            summary: summary.into(),
            formats: Vec::new(),
            languages: Vec::new(),
        }
    }

    /// Adds a format.
    pub fn format(mut self, name: impl Into<String>, summary: impl Into<String>) -> Info {
        self.formats.push(Format::new(name, summary));
        self
    }

    /// Adds a language `lint` checks.
    pub fn language(mut self, language: impl Into<String>) -> Info {
        self.languages.push(language.into());
        self
    }
}

/// Where one tensor's elements lie (WIT `tensor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Its path in the saved state (`model.fc1.weight`).
    pub name: String,
    /// Element type, one of [`dtype::KNOWN`] or the format's own spelling.
    pub dtype: String,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// First byte of its elements.
    pub offset: u64,
    /// Length of its elements in bytes.
    pub length: u64,
}

impl Tensor {
    /// One past its last byte (saturating).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// A byte range (WIT `span`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl Span {
    /// The `length` bytes from `offset`.
    pub fn new(offset: u64, length: u64) -> Span {
        Span { offset, length }
    }

    /// One past its last byte (saturating).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// What a checkpoint holds and where (WIT `tensor-layout`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorLayout {
    /// The tensors, in any order.
    pub tensors: Vec<Tensor>,
    /// Framing and metadata spans.
    pub metadata: Vec<Span>,
}

/// A broken layout rule, found by [`TensorLayout::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutViolation(pub String);

impl fmt::Display for LayoutViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayoutViolation {}

impl TensorLayout {
    /// Checks the rules flor checks on every answer, so a plugin's tests can
    /// check them too: every range inside the `size`-byte checkpoint, no two
    /// ranges (tensors and metadata) overlapping, and each tensor of a
    /// known dtype exactly as long as its shape says.
    pub fn check(&self, size: u64) -> Result<(), LayoutViolation> {
        let bad = |s: String| Err(LayoutViolation(s));
        let mut ranges: Vec<(u64, u64, String)> = Vec::new();
        for t in &self.tensors {
            if t.offset.checked_add(t.length).is_none_or(|end| end > size) {
                return bad(format!(
                    "tensor `{}` ({} bytes at {}) runs past the end ({size})",
                    t.name, t.length, t.offset
                ));
            }
            if let Some(want) = dtype::byte_len(&t.dtype, &t.shape) {
                if want != t.length {
                    return bad(format!(
                        "tensor `{}`: {} {:?} takes {want} bytes, not {}",
                        t.name, t.dtype, t.shape, t.length
                    ));
                }
            }
            ranges.push((t.offset, t.end(), format!("tensor `{}`", t.name)));
        }
        for s in &self.metadata {
            if s.offset.checked_add(s.length).is_none_or(|end| end > size) {
                return bad(format!("metadata span ({} bytes at {}) runs past the end ({size})", s.length, s.offset));
            }
            ranges.push((s.offset, s.end(), format!("metadata at {}", s.offset)));
        }
        ranges.retain(|(a, b, _)| a < b);
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].0 < w[0].1 {
                return bad(format!("{} overlaps {} (bytes {}..{})", w[1].2, w[0].2, w[1].0, w[0].1));
            }
        }
        Ok(())
    }
}

/// How much a finding matters (WIT `severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; replay is still exact.
    Note,
    /// Replay will likely be wrong or impossible.
    Warning,
}

/// One source check's result (WIT `finding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What was found, namespaced by the plugin (`pytorch::cudnn-benchmark`).
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong and what it does to a replay, in one sentence.
    pub message: String,
    /// How to fix it (empty when there is no usual way).
    pub hint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dtype: &str, shape: &[u64], offset: u64, length: u64) -> Tensor {
        Tensor { name: name.into(), dtype: dtype.into(), shape: shape.into(), offset, length }
    }

    #[test]
    fn check_accepts_a_tiling_and_names_each_broken_rule() {
        let ok = TensorLayout {
            tensors: vec![t("a", "f32", &[2, 2], 8, 16), t("b", "weird", &[3], 24, 5)],
            metadata: vec![Span::new(0, 8), Span::new(29, 3)],
        };
        assert_eq!(ok.check(32), Ok(()));
        let past = ok.check(31).unwrap_err().0;
        assert!(past.contains("metadata span (3 bytes at 29) runs past the end (31)"), "{past}");
        let wrong_len = TensorLayout { tensors: vec![t("a", "f32", &[2], 0, 7)], metadata: vec![] };
        assert!(wrong_len.check(8).unwrap_err().0.contains("takes 8 bytes, not 7"));
        let overlap =
            TensorLayout { tensors: vec![t("a", "u8", &[4], 0, 4), t("b", "u8", &[4], 3, 4)], metadata: vec![] };
        assert!(overlap.check(8).unwrap_err().0.contains("tensor `b` overlaps tensor `a`"));
        let huge = TensorLayout { tensors: vec![t("a", "u8", &[1], u64::MAX, 1)], metadata: vec![] };
        assert!(huge.check(8).is_err());
    }

    #[test]
    fn info_builder_carries_the_interface_version() {
        let i = Info::new("toy", "1.2.3", "a toy").format("toy.bin", "toy files").language("python");
        assert_eq!(i.interface_version, "0.1.0");
        assert_eq!(i.formats, vec![Format::new("toy.bin", "toy files")]);
        assert_eq!(i.languages, vec!["python".to_owned()]);
    }
}
