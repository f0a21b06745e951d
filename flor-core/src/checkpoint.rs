//! Checkpoint serializers: how a front end turns typed training state into
//! bytes and back. The Rust API uses [`Bincode`] for `serde` types; the Python
//! front brings its own (pickle, `state_dict`). What those bytes look like
//! (tensor layout, chunk boundaries), for the object store and for plugins,
//! is a [`CheckpointFormat`](crate::formats::CheckpointFormat)'s business.

use std::io::{Read, Write};

/// Why a checkpoint could not be saved or restored.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckpointError(pub String);

/// Saves and restores state of type `T`.
///
/// `load` restores *in place* (`&mut T`), so references a program holds stay
/// valid after a restore.
///
/// ```
/// use flor_core::checkpoint::{Bincode, CheckpointSerializer};
/// let weights = vec![1.0f64, 2.0];
/// let mut bytes = Vec::new();
/// Bincode.save(&weights, &mut bytes).unwrap();
/// let mut restored: Vec<f64> = Vec::new();
/// Bincode.load(&mut restored, &mut bytes.as_slice()).unwrap();
/// assert_eq!(restored, weights);
/// ```
pub trait CheckpointSerializer<T: ?Sized> {
    /// Format name recorded with each checkpoint (`bincode`, `pickle`, ...);
    /// bytes of a [`CheckpointFormat`](crate::formats::CheckpointFormat)
    /// should carry its name (`safetensors`).
    fn format(&self) -> &'static str;
    /// Writes `state` to `out`.
    fn save(&self, state: &T, out: &mut dyn Write) -> Result<(), CheckpointError>;
    /// Replaces `state` with what `input` holds.
    fn load(&self, state: &mut T, input: &mut dyn Read) -> Result<(), CheckpointError>;
}

/// bincode (standard configuration) for any `serde` type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl<T: serde::Serialize + serde::de::DeserializeOwned> CheckpointSerializer<T> for Bincode {
    fn format(&self) -> &'static str {
        "bincode"
    }

    fn save(&self, state: &T, mut out: &mut dyn Write) -> Result<(), CheckpointError> {
        bincode::serde::encode_into_std_write(state, &mut out, bincode::config::standard())
            .map(|_| ())
            .map_err(|e| CheckpointError(format!("bincode encoding failed: {e}")))
    }

    fn load(&self, state: &mut T, mut input: &mut dyn Read) -> Result<(), CheckpointError> {
        *state = bincode::serde::decode_from_std_read(&mut input, bincode::config::standard())
            .map_err(|e| CheckpointError(format!("bincode decoding failed: {e}")))?;
        Ok(())
    }
}
