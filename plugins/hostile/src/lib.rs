//! A hostile plugin, for the host's sandbox tests. It claims every
//! checkpoint whose first bytes are `HOSTILE ` (format `hostile`) and then
//! misbehaves as the next word of the checkpoint, read through `source` in
//! `layout` and `split`, says:
//!
//! | word | `layout` | `split` |
//! |------|----------|---------|
//! | `loop` | never returns | never returns |
//! | `alloc` | allocates until memory runs out | the same |
//! | `trap` | executes `unreachable` | the same |
//! | `panic` | a Rust panic (a trap on wasm32) | the same |
//! | `ranges` | a tensor running 6 bytes past the end | `[]` |
//! | `overlap` | two tensors sharing 4 bytes | `[]` |
//! | `cuts` | the `ok` layout | cuts that decrease and run past the end |
//! | `ok` | a valid layout (below) | `[]` |
//! | other | an error naming byte 8 | the same |
//!
//! A valid (`ok`) checkpoint: 16 bytes of header (`HOSTILE ok` padded with
//! spaces or anything), then `8 * n` bytes: tensor `a` (f32, `[n]`) is the
//! first half, `b` (f32, `[n]`) the second; the header (and any bytes after
//! the tensors) are metadata. The `ranges`, `overlap` and `cuts` answers
//! also need a checkpoint of at least 32 bytes.
//!
//! Also: `sniff` of a head starting `HOSTILE sniffloop` never returns;
//! `lint` of a text containing `HOSTILE loop` never returns (other texts:
//! no findings). With the cargo feature `lie-version`, `describe` claims
//! interface version `0.9.0`.

use flor_plugin_sdk::{Error, Finding, Info, Plugin, Result, Source, Span, Tensor, TensorLayout};

/// The format it claims.
pub const FORMAT: &str = "hostile";

/// The interface version `describe` reports.
pub const CLAIMED_INTERFACE: &str =
    if cfg!(feature = "lie-version") { "0.9.0" } else { flor_plugin_sdk::INTERFACE_VERSION };

/// The plugin.
pub struct Hostile;

/// What the checkpoint asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Never return.
    Loop,
    /// Allocate until memory runs out.
    Alloc,
    /// Execute `unreachable`.
    Trap,
    /// Panic.
    Panic,
    /// A tensor past the end.
    Ranges,
    /// Overlapping tensors.
    Overlap,
    /// Bad split offsets.
    Cuts,
    /// Behave.
    Ok,
}

/// The behaviour the checkpoint in `src` names (the word after `HOSTILE `).
pub fn behaviour(src: &dyn Source) -> Result<Behaviour> {
    let head = src.read_upto(0, 32)?;
    let word = head
        .strip_prefix(b"HOSTILE ")
        .ok_or_else(|| Error::malformed(0, "not a hostile checkpoint"))?
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    Ok(match word {
        b"loop" => Behaviour::Loop,
        b"alloc" => Behaviour::Alloc,
        b"trap" => Behaviour::Trap,
        b"panic" => Behaviour::Panic,
        b"ranges" => Behaviour::Ranges,
        b"overlap" => Behaviour::Overlap,
        b"cuts" => Behaviour::Cuts,
        b"ok" => Behaviour::Ok,
        other => {
            return Err(Error::malformed(8, format!("unknown hostile behaviour `{}`", String::from_utf8_lossy(other))))
        }
    })
}

/// Runs the behaviours that never answer (loop, alloc, trap, panic).
fn misbehave(b: Behaviour) {
    match b {
        Behaviour::Loop => spin(),
        Behaviour::Alloc => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![0x5a; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Behaviour::Trap => trap(),
        Behaviour::Panic => panic!("the hostile plugin panics on purpose"),
        _ => {}
    }
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}

fn f32s(name: &str, offset: u64, n: u64) -> Tensor {
    Tensor { name: name.into(), dtype: "f32".into(), shape: vec![n], offset, length: 4 * n }
}

/// The valid layout of an `ok` checkpoint of `size` bytes.
pub fn ok_layout(size: u64) -> Result<TensorLayout> {
    let n = size.saturating_sub(16) / 8;
    if n == 0 {
        return Err(Error::malformed(16, "no room for two f32 tensors after the 16-byte header"));
    }
    let end = 16 + 8 * n;
    let mut metadata = vec![Span::new(0, 16)];
    if end < size {
        metadata.push(Span::new(end, size - end));
    }
    Ok(TensorLayout { tensors: vec![f32s("a", 16, n), f32s("b", 16 + 4 * n, n)], metadata })
}

impl Plugin for Hostile {
    fn describe() -> Info {
        let mut info = Info::new("hostile", env!("CARGO_PKG_VERSION"), "Misbehaves on purpose, for sandbox tests")
            .format(FORMAT, "HOSTILE <behaviour> checkpoints")
            .language("python");
        info.interface_version = CLAIMED_INTERFACE.to_owned();
        info
    }

    fn sniff(head: &[u8]) -> Option<String> {
        if head.starts_with(b"HOSTILE sniffloop") {
            spin();
        }
        head.starts_with(b"HOSTILE ").then(|| FORMAT.to_owned())
    }

    fn layout(_format: &str, src: &dyn Source) -> Result<TensorLayout> {
        let b = behaviour(src)?;
        misbehave(b);
        let size = src.size();
        match b {
            Behaviour::Ranges => {
                Ok(TensorLayout { tensors: vec![f32s("past_end", size.saturating_sub(2), 2)], metadata: vec![] })
            }
            Behaviour::Overlap => {
                Ok(TensorLayout { tensors: vec![f32s("a", 16, 2), f32s("b", 20, 2)], metadata: vec![] })
            }
            _ => ok_layout(size),
        }
    }

    fn split(_format: &str, src: &dyn Source) -> Result<Vec<u64>> {
        let b = behaviour(src)?;
        misbehave(b);
        Ok(match b {
            Behaviour::Cuts => vec![20, 10, src.size() + 100],
            _ => Vec::new(),
        })
    }

    fn lint(_language: &str, _path: &str, text: &str) -> Vec<Finding> {
        if text.contains("HOSTILE loop") {
            spin();
        }
        Vec::new()
    }
}

flor_plugin_sdk::export!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;

    fn file(word: &str, len: usize) -> Vec<u8> {
        let mut f = format!("HOSTILE {word}").into_bytes();
        f.resize(len, b' ');
        f
    }

    #[test]
    fn the_word_picks_the_behaviour() {
        assert_eq!(behaviour(&file("loop", 32)).unwrap(), Behaviour::Loop);
        assert_eq!(behaviour(&file("cuts\nrest", 40)).unwrap(), Behaviour::Cuts);
        assert_eq!(behaviour(&file("nope", 32)).unwrap_err().to_string(), "byte 8: unknown hostile behaviour `nope`");
        assert!(behaviour(&b"HOSTILE".to_vec()).is_err());
        assert_eq!(Hostile::sniff(b"HOSTILE ok").as_deref(), Some("hostile"));
        assert_eq!(Hostile::sniff(b"HOSTILEok"), None);
    }

    #[test]
    fn the_answering_behaviours_break_exactly_their_rule() {
        let ok = file("ok", 16 + 8 * 3 + 5);
        let l = Hostile::layout(FORMAT, &ok).unwrap();
        assert_eq!(l.tensors, vec![f32s("a", 16, 3), f32s("b", 28, 3)]);
        l.check(ok.len() as u64).unwrap();
        let past = Hostile::layout(FORMAT, &file("ranges", 32)).unwrap();
        assert!(past.check(32).unwrap_err().0.contains("runs past the end"));
        let overlap = Hostile::layout(FORMAT, &file("overlap", 32)).unwrap();
        assert!(overlap.check(32).unwrap_err().0.contains("overlaps"));
        let cuts = file("cuts", 32);
        Hostile::layout(FORMAT, &cuts).unwrap().check(32).unwrap();
        assert_eq!(Hostile::split(FORMAT, &cuts).unwrap(), vec![20, 10, 132]);
        assert_eq!(Hostile::split(FORMAT, &ok).unwrap(), Vec::<u64>::new());
        assert!(Hostile::lint("python", "t.py", "x = 1").is_empty());
    }

    #[test]
    fn describe_claims_the_configured_interface_version() {
        let want = if cfg!(feature = "lie-version") { "0.9.0" } else { "0.1.0" };
        assert_eq!(Hostile::describe().interface_version, want);
    }
}
