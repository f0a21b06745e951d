//! flor's PyTorch plugin: `torch.save` archives (`torch.zip`) and
//! `safetensors` files laid out tensor by tensor, and PyTorch idioms that
//! break hindsight replay (`lint`). Built for `wasm32-unknown-unknown` and
//! embedded in flor; the format logic is plain Rust, tested natively.

pub mod lint;
pub mod pickle;
pub mod safetensors;
pub mod torchzip;
pub mod zip;

use flor_plugin_sdk::{Error, Finding, Info, Plugin, Result, Source, TensorLayout};

/// The plugin.
pub struct PyTorch;

impl Plugin for PyTorch {
    fn describe() -> Info {
        Info::new(
            "pytorch",
            env!("CARGO_PKG_VERSION"),
            "PyTorch checkpoints (torch.save, safetensors) and PyTorch lint",
        )
        .format(torchzip::FORMAT, "torch.save zip archives: data.pkl plus one stored entry per storage")
        .format(safetensors::FORMAT, "safetensors: a JSON header, then the tensors' bytes")
        .language("python")
    }

    fn sniff(head: &[u8]) -> Option<String> {
        if torchzip::sniff(head) {
            Some(torchzip::FORMAT.to_owned())
        } else if safetensors::sniff(head) {
            Some(safetensors::FORMAT.to_owned())
        } else {
            None
        }
    }

    fn layout(format: &str, source: &dyn Source) -> Result<TensorLayout> {
        match format {
            torchzip::FORMAT => torchzip::layout(source),
            safetensors::FORMAT => safetensors::layout(source),
            other => Err(Error::UnknownFormat(other.to_owned())),
        }
    }

    fn split(format: &str, _source: &dyn Source) -> Result<Vec<u64>> {
        match format {
            // At tensor boundaries: the host cuts there.
            torchzip::FORMAT | safetensors::FORMAT => Ok(Vec::new()),
            other => Err(Error::UnknownFormat(other.to_owned())),
        }
    }

    fn lint(language: &str, _path: &str, text: &str) -> Vec<Finding> {
        match language {
            "python" => lint::lint_python(text),
            _ => Vec::new(),
        }
    }
}

flor_plugin_sdk::export!(PyTorch);
