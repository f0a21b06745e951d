//! The guest SDK for flor framework plugins.
//!
//! A framework plugin teaches flor one ML framework: how its checkpoints are
//! laid out (tensor names, dtypes, shapes and byte ranges, so flor stores
//! unchanged tensors once and computes tensor statistics natively) and
//! which source idioms make a hindsight replay wrong (lint findings). It is
//! a WebAssembly component exporting the `plugin` world of the interface
//! `flor:plugin@0.1.0` (`flor-plugins/wit/plugin.wit`); flor runs it in a
//! sandbox whose only import is read access to the checkpoint examined.
//!
//! This crate hides the raw bindings: implement [`Plugin`] with plain Rust
//! types and call [`export!`] once:
//!
//! ```
//! use flor_plugin_sdk::{Error, Info, Plugin, Result, Source, Span, Tensor, TensorLayout};
//!
//! /// `TOY` + u32 element count + that many little-endian f32.
//! struct Toy;
//!
//! impl Plugin for Toy {
//!     fn describe() -> Info {
//!         Info::new("toy", "0.1.0", "toy checkpoints").format("toy", "TOY header + f32 elements")
//!     }
//!     fn sniff(head: &[u8]) -> Option<String> {
//!         head.starts_with(b"TOY").then(|| "toy".to_owned())
//!     }
//!     fn layout(format: &str, src: &dyn Source) -> Result<TensorLayout> {
//!         if format != "toy" {
//!             return Err(Error::UnknownFormat(format.to_owned()));
//!         }
//!         let n = u64::from(src.u32_le_at(3)?);
//!         let length = n.checked_mul(4).ok_or_else(|| Error::malformed(3, "count overflows"))?;
//!         flor_plugin_sdk::check_range(src.size(), 7, length)?;
//!         let tensor = Tensor { name: "x".into(), dtype: "f32".into(), shape: vec![n], offset: 7, length };
//!         Ok(TensorLayout { tensors: vec![tensor], metadata: vec![Span::new(0, 7)] })
//!     }
//! }
//!
//! flor_plugin_sdk::export!(Toy);
//!
//! // Natively, any byte slice is a `Source`: format logic is unit-testable.
//! let file: &[u8] = &[b'T', b'O', b'Y', 1, 0, 0, 0, 0, 0, 128, 63];
//! let layout = Toy::layout("toy", &file).unwrap();
//! assert_eq!(layout.tensors[0].offset, 7);
//! layout.check(file.len() as u64).unwrap();
//! ```
//!
//! Build the plugin with `cargo build --release --target
//! wasm32-unknown-unknown` (a `cdylib`); flor turns the core module into a
//! component. `docs/writing-a-plugin.md` is the guide.

// The generated bindings name this crate by its path (so the code that
// `export!` expands inside a plugin crate finds it); inside this crate too.
extern crate self as flor_plugin_sdk;

mod bytes;
pub mod dtype;
mod error;
pub mod python;
mod source;
mod types;

pub use bytes::{array_at, u16_le, u32_le, u64_le, Cursor};
pub use error::{Error, Result};
pub use source::{check_range, Source, SourceReader, MAX_READ};
pub use types::{Finding, Format, Info, LayoutViolation, Severity, Span, Tensor, TensorLayout};

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
pub use guest::HostSource;

/// The version of the interface (`flor:plugin`) this SDK builds plugins
/// for; [`Info::new`] puts it in `describe`'s answer. flor refuses a plugin
/// whose interface version differs from its own, naming both.
pub const INTERFACE_VERSION: &str = "0.1.0";

/// A framework plugin, as plain Rust. Every method is an associated
/// function (a plugin has no state between calls: flor may call each
/// function on a fresh instance).
///
/// Errors and panics never harm flor: an `Err` is shown with the
/// checkpoint's name and the checkpoint stored whole; a panic traps and is
/// reported the same way. Still, prefer `Err` with the offset of the problem.
pub trait Plugin {
    /// Who the plugin is: name, version, formats, languages. Use
    /// [`Info::new`], which fills in [`INTERFACE_VERSION`].
    fn describe() -> Info;

    /// Whether a checkpoint is one of this plugin's formats, from its first
    /// bytes (up to 64; fewer when shorter): the format's name, or `None`.
    /// Must be cheap; no [`Source`] is readable during this call.
    fn sniff(head: &[u8]) -> Option<String>;

    /// Where the tensors and metadata of the checkpoint in `source` lie.
    /// `format` is what [`Plugin::sniff`] answered. Read only what you need:
    /// checkpoints can be gigabytes and the plugin's memory is capped.
    fn layout(format: &str, source: &dyn Source) -> Result<TensorLayout>;

    /// Where the checkpoint may be cut into chunks: increasing offsets
    /// strictly inside it. The default, no offsets, means "at the tensor
    /// boundaries of `layout`", right for most formats.
    fn split(format: &str, source: &dyn Source) -> Result<Vec<u64>> {
        let _ = (format, source);
        Ok(Vec::new())
    }

    /// Framework-specific findings in a script written in `language` (one
    /// of `describe`'s languages); `path` is for messages only. The default
    /// finds nothing.
    fn lint(language: &str, path: &str, text: &str) -> Vec<Finding> {
        let _ = (language, path, text);
        Vec::new()
    }
}

/// Exports a [`Plugin`] as the component's `plugin` world. Call it once, at
/// the top level of the plugin crate, with the type implementing
/// [`Plugin`]:
///
/// ```ignore
/// flor_plugin_sdk::export!(MyPlugin);
/// ```
///
/// On `wasm32` targets this emits the interface's exports (`describe`,
/// `sniff`, `layout`, `split`, `lint`); on other targets (native tests) it
/// only checks that the type implements [`Plugin`].
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        const _: fn() = || {
            fn implements_plugin<P: $crate::Plugin>() {}
            implements_plugin::<$plugin>();
        };
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_raw!($plugin with_types_in $crate::bindings);
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use guest::bindings;

/// What the generated bindings reach for; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
