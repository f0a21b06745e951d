//! The SDK's error: what a plugin's `layout` or `split` answers when a
//! checkpoint is not what it expected. Its text (`Display`) is what flor
//! shows, so every variant names the byte where the problem lies.

/// Why a plugin could not lay out or split a checkpoint. The host receives
/// its text (`byte 120: truncated pickle`) and stores the checkpoint whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes at `offset` are not what the format requires.
    #[error("byte {offset}: {what}")]
    Malformed {
        /// First byte of the problem, from the start of the checkpoint.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
    /// A read of `len` bytes at `offset` runs past the end of the
    /// `size`-byte checkpoint (or of the slice a [`crate::Cursor`] walks).
    #[error("byte {offset}: truncated: {len} bytes needed there, the data ends at byte {size}")]
    Truncated {
        /// First byte of the read.
        offset: u64,
        /// Bytes wanted.
        len: u64,
        /// Where the data ends.
        size: u64,
    },
    /// The host refused a read (its message given).
    #[error("byte {offset}: reading {len} bytes failed: {message}")]
    Read {
        /// First byte of the read.
        offset: u64,
        /// Bytes wanted.
        len: u64,
        /// The host's reason.
        message: String,
    },
    /// Something would exceed one of the plugin's own limits (nesting,
    /// item counts, sizes), checked so hostile input cannot exhaust memory.
    #[error("byte {offset}: {what} exceeds the limit of {limit}")]
    Limit {
        /// Where it was found.
        offset: u64,
        /// What grew too large.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// `layout` or `split` was asked for a format this plugin does not
    /// handle.
    #[error("unknown format `{0}`")]
    UnknownFormat(String),
}

impl Error {
    /// A [`Error::Malformed`] at `offset`.
    pub fn malformed(offset: u64, what: impl Into<String>) -> Error {
        Error::Malformed { offset, what: what.into() }
    }

    /// A [`Error::Limit`] at `offset`.
    pub fn limit(offset: u64, what: impl Into<String>, limit: u64) -> Error {
        Error::Limit { offset, what: what.into(), limit }
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_names_its_byte() {
        let all = [
            Error::malformed(120, "truncated pickle"),
            Error::Truncated { offset: 7, len: 4, size: 9 },
            Error::Read { offset: 3, len: 2, message: "no".into() },
            Error::limit(5, "nesting", 64),
        ];
        let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(texts[0], "byte 120: truncated pickle");
        assert_eq!(texts[1], "byte 7: truncated: 4 bytes needed there, the data ends at byte 9");
        assert_eq!(texts[2], "byte 3: reading 2 bytes failed: no");
        assert_eq!(texts[3], "byte 5: nesting exceeds the limit of 64");
        assert_eq!(Error::UnknownFormat("x".into()).to_string(), "unknown format `x`");
    }
}
