//! The sandbox every plugin call runs in: one shared engine, a fresh store
//! and instance per call, a deadline by epoch interruption, a memory cap by
//! a resource limiter, and every trap turned into an [`Error`].
//!
//! What a plugin can reach is what the linker gives it: the `source`
//! import (reads of the checkpoint under examination) and nothing else —
//! no WASI, so no filesystem, network, clock, randomness or environment.

use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::Duration;

use flor_core::formats::ByteSource;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};

use crate::bindings::{self, PluginPre};
use crate::error::Error;

/// How often the engine's epoch advances: the resolution of deadlines.
const TICK: Duration = Duration::from_millis(10);

/// The most bytes one `source.read` call returns (16 MiB).
pub const MAX_READ: u32 = 16 << 20;

/// Table elements an instance may grow to (function tables of Rust guests
/// are small; this only stops a runaway `table.grow`).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take, instantiation included (1 s).
    pub deadline: Duration,
    /// Linear memory an instance may grow to, in bytes (64 MiB).
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { deadline: Duration::from_secs(1), memory: 64 << 20 }
    }
}

impl Limits {
    /// The deadline in epoch ticks (at least one).
    fn ticks(&self) -> u64 {
        let t = self.deadline.as_nanos() / TICK.as_nanos();
        u64::try_from(t).unwrap_or(u64::MAX).max(1)
    }
}

/// The process's engine: Cranelift, component model, epoch interruption,
/// with a thread advancing the epoch every [`TICK`] (started once).
pub(crate) fn engine() -> Result<&'static Engine, Error> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Plugins are small; keep their stacks small too, so a runaway
        // recursion ends quickly as a trap.
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("flor-plugin-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                ticker.increment_epoch();
            })
            .map_err(|e| format!("cannot start the plugin deadline thread: {e}"))?;
        Ok(engine)
    });
    engine.as_ref().map_err(|e| Error::Engine(e.clone()))
}

/// The linker every plugin is instantiated with: the `source` import only.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<Ctx>, Error> {
    let mut linker = Linker::new(engine);
    bindings::Plugin::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
    Ok(linker)
}

/// A borrowed [`ByteSource`] with its lifetime erased, so it can sit in a
/// `Store` (whose data must be `'static`) for the length of one call.
struct Borrowed(NonNull<dyn ByteSource + 'static>);

// SAFETY: a `Borrowed` lives only inside the store that `call` creates and
// drops before it returns, on the calling thread (the synchronous API runs
// the guest, and so every `source` import, on the caller's thread). Send is
// needed only because wasmtime requires store data to be Send.
unsafe impl Send for Borrowed {}

/// A store's data: the checkpoint under examination, and the memory cap.
pub(crate) struct Ctx {
    source: Option<Borrowed>,
    memory: usize,
    /// Set when the guest tried to grow past `memory`.
    over_memory: bool,
}

impl Ctx {
    fn source(&self) -> Option<&dyn ByteSource> {
        // SAFETY: see `Borrowed`; the pointer came from a live reference
        // that outlives the store holding it.
        self.source.as_ref().map(|b| unsafe { b.0.as_ref() })
    }
}

impl bindings::flor::plugin::source::Host for Ctx {
    fn size(&mut self) -> u64 {
        self.source().map_or(0, |s| s.len())
    }

    fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        if len > MAX_READ {
            return Err(format!("a read of {len} bytes is over the host's limit of {MAX_READ} bytes per read"));
        }
        let Some(src) = self.source() else {
            return Err("no checkpoint is under examination in this call".into());
        };
        let total = src.len();
        if offset.checked_add(u64::from(len)).is_none_or(|end| end > total) {
            return Err(format!("{len} bytes at byte {offset} run past the end of the {total}-byte checkpoint"));
        }
        let mut buf = vec![0; len as usize];
        src.read_at(offset, &mut buf).map_err(|e| format!("cannot read {len} bytes at byte {offset}: {e}"))?;
        Ok(buf)
    }
}

impl bindings::flor::plugin::types::Host for Ctx {}

impl ResourceLimiter for Ctx {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.over_memory = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Runs one export of a fresh instance of `pre` under `limits`, with `src`
/// readable through the `source` import during the call. `plugin` and
/// `export` name the call in errors.
pub(crate) fn call<R>(
    pre: &PluginPre<Ctx>,
    limits: Limits,
    plugin: &str,
    export: &'static str,
    src: Option<&dyn ByteSource>,
    f: impl FnOnce(&bindings::Plugin, &mut Store<Ctx>) -> wasmtime::Result<R>,
) -> Result<R, Error> {
    let source = src.map(|s| {
        let ptr: NonNull<dyn ByteSource + '_> = NonNull::from(s);
        // SAFETY: only the lifetime bound changes; see `Borrowed`.
        Borrowed(unsafe { std::mem::transmute::<NonNull<dyn ByteSource + '_>, NonNull<dyn ByteSource + 'static>>(ptr) })
    });
    let mut store = Store::new(pre.engine(), Ctx { source, memory: limits.memory, over_memory: false });
    store.limiter(|c| c as &mut dyn ResourceLimiter);
    store.set_epoch_deadline(limits.ticks());
    store.epoch_deadline_trap();
    let result = pre.instantiate(&mut store).and_then(|instance| f(&instance, &mut store));
    let over_memory = store.data().over_memory;
    drop(store);
    result.map_err(|e| classify(e, over_memory, limits, plugin, export))
}

/// What went wrong in a call, in words a user can act on.
fn classify(e: wasmtime::Error, over_memory: bool, limits: Limits, plugin: &str, export: &'static str) -> Error {
    let plugin = plugin.to_owned();
    if over_memory {
        return Error::Memory { plugin, export, limit: limits.memory };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Error::Deadline { plugin, export, limit: limits.deadline },
        Some(Trap::StackOverflow) => {
            Error::Trap { plugin, export, what: "call stack exhausted (runaway recursion)".into() }
        }
        Some(Trap::UnreachableCodeReached) => Error::Trap {
            plugin,
            export,
            what: "it aborted (`unreachable` executed: a panic or an explicit trap in the plugin)".into(),
        },
        Some(trap) => Error::Trap { plugin, export, what: trap.to_string() },
        None => Error::Trap { plugin, export, what: format!("{e:#}") },
    }
}
