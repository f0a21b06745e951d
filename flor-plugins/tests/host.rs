//! The plugin host against real plugins: the shipped ones, the template,
//! and hostile fixtures (`plugins/hostile`, `plugins/hostile-version`)
//! built for wasm32 by this crate's build script.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flor_core::formats::{CheckpointFormatExt, FormatError, FormatRegistry};
use flor_core::objects::ObjectStore;
use flor_plugins::{Error, Limits, Options, Origin, Plugin, PluginFormat, Plugins, INTERFACE_VERSION};

const HOSTILE: &str = env!("FLOR_TEST_PLUGIN_HOSTILE");
const HOSTILE_LIAR: &str = env!("FLOR_TEST_PLUGIN_HOSTILE_LIAR");
const HOSTILE_VERSION: &str = env!("FLOR_TEST_PLUGIN_HOSTILE_VERSION");
const TEMPLATE: &str = env!("FLOR_TEST_PLUGIN_TEMPLATE");

/// Short deadlines keep the suite fast; one test checks the default.
fn limits() -> Limits {
    Limits { deadline: Duration::from_millis(300), memory: 32 << 20 }
}

fn cache() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn hostile(cache: &Path) -> Arc<Plugin> {
    Arc::new(Plugin::load_file(Path::new(HOSTILE), Origin::File(HOSTILE.into()), limits(), Some(cache)).unwrap())
}

/// A checkpoint the hostile plugin claims, acting as `mode` says; long
/// enough to make several chunks when its layout is honest.
fn checkpoint(mode: &str) -> Vec<u8> {
    let mut bytes = format!("HOSTILE {mode} ").into_bytes();
    bytes.resize(256 << 10, 7);
    bytes
}

fn options(cache: &Path, user: Option<&Path>) -> Options {
    Options { limits: limits(), cache_dir: Some(cache.to_owned()), user_dir: user.map(Path::to_owned), builtin: true }
}

#[test]
fn the_shipped_plugins_load_and_describe_themselves() {
    let cache = cache();
    let plugins = Plugins::discover(None, &options(cache.path(), None)).unwrap();
    let names: Vec<&str> = plugins.plugins().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["pytorch", "jax"]);
    for p in plugins.plugins() {
        assert_eq!(p.info().interface_version, INTERFACE_VERSION);
        assert_eq!(p.origin(), &Origin::Builtin);
        assert!(!p.info().formats.is_empty(), "{} lists no formats", p.name());
        assert_eq!(p.info().languages, ["python"]);
        assert_eq!(p.digest().len(), 64);
    }
    let torch = plugins.get("pytorch").unwrap();
    assert!(torch.info().formats.iter().any(|f| f.name == "torch.zip"));
    let jax = plugins.get("jax").unwrap();
    assert!(jax.info().formats.iter().any(|f| f.name == "flax.msgpack"));
    // Compiled once, then loaded from the cache.
    let cached = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(cached, 2, "one compiled file per plugin");
    let again = Plugins::discover(None, &options(cache.path(), None)).unwrap();
    assert_eq!(again.plugins().len(), 2);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

#[test]
fn a_plugin_that_loops_forever_is_stopped_at_its_deadline() {
    let cache = cache();
    let p = hostile(cache.path());
    let src = checkpoint("loop");
    let t = Instant::now();
    let e = p.layout("hostile", &src.as_slice()).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    assert!(e.to_string().contains("ran past its deadline"), "{e}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "took {took:?}");
    // The host is unaffected: the same plugin answers the next call.
    assert!(p.layout("hostile", &checkpoint("ok").as_slice()).unwrap().is_ok());
}

#[test]
fn the_default_deadline_is_one_second() {
    assert_eq!(Limits::default(), Limits { deadline: Duration::from_secs(1), memory: 64 << 20 });
    let cache = cache();
    let p = Plugin::load_file(Path::new(HOSTILE), Origin::File(HOSTILE.into()), Limits::default(), Some(cache.path()))
        .unwrap();
    let t = Instant::now();
    let e = p.split("hostile", &checkpoint("loop").as_slice()).unwrap_err();
    assert!(matches!(e, Error::Deadline { limit, .. } if limit == Duration::from_secs(1)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(4), "took {:?}", t.elapsed());
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let cache = cache();
    let p = hostile(cache.path());
    let e = p.layout("hostile", &checkpoint("alloc").as_slice()).unwrap_err();
    assert!(matches!(e, Error::Memory { limit, .. } if limit == 32 << 20), "{e}");
    assert!(e.to_string().contains("memory cap of 32 MiB"), "{e}");
}

#[test]
fn traps_and_panics_are_errors_naming_plugin_and_export() {
    let cache = cache();
    let p = hostile(cache.path());
    for mode in ["trap", "panic"] {
        let e = p.layout("hostile", &checkpoint(mode).as_slice()).unwrap_err();
        assert!(matches!(e, Error::Trap { export: "layout", .. }), "{mode}: {e}");
        assert!(e.to_string().starts_with("plugin hostile "), "{mode}: {e}");
    }
}

#[test]
fn answers_that_break_the_layout_rules_are_refused() {
    let cache = cache();
    let format = PluginFormat::new(hostile(cache.path()), "hostile");
    for (mode, want) in [("ranges", "is not inside"), ("overlap", "overlaps")] {
        let e = format.checked_layout(&checkpoint(mode).as_slice()).unwrap_err();
        assert!(matches!(e, FormatError::InvalidLayout { .. }), "{mode}: {e}");
        assert!(e.to_string().contains(want), "{mode}: {e}");
    }
    let e = format.chunks(&checkpoint("cuts").as_slice()).unwrap_err();
    assert!(matches!(e, FormatError::InvalidLayout { .. }), "{e}");
    assert!(format.chunks(&checkpoint("ok").as_slice()).unwrap().len() >= 2);
}

/// Whatever a plugin does, the checkpoint is stored, whole when the plugin
/// failed, and reads back bit for bit.
#[test]
fn a_failing_plugin_leaves_the_checkpoint_whole_and_readable() {
    let cache = cache();
    let plugin = hostile(cache.path());
    let mut registry = FormatRegistry::native();
    registry.register(Arc::new(PluginFormat::new(plugin.clone(), "hostile")));
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap().with_formats(Arc::new(registry));
    for mode in ["loop", "alloc", "trap", "panic", "ranges", "overlap", "cuts"] {
        let bytes = checkpoint(mode);
        let id = store.put(&bytes).unwrap();
        assert!(store.manifest(&id.digest).unwrap().is_none(), "{mode}: stored chunked");
        assert_eq!(store.get(&id.digest).unwrap(), bytes, "{mode}");
    }
    // An honest answer is chunked, and the manifest names the plugin.
    let bytes = checkpoint("ok");
    let id = store.put(&bytes).unwrap();
    let manifest = store.manifest(&id.digest).unwrap().expect("chunked");
    let provenance = manifest.plugin.expect("the plugin is recorded");
    assert_eq!((provenance.plugin.as_str(), provenance.digest.as_str()), ("hostile", plugin.digest()));
    assert_eq!(provenance.version, plugin.info().version);
    assert_eq!(store.get(&id.digest).unwrap(), bytes);
}

#[test]
fn a_sniff_that_loops_is_a_no() {
    let cache = cache();
    let p = hostile(cache.path());
    let format = PluginFormat::new(p.clone(), "hostile");
    let head = checkpoint("sniffloop");
    let t = Instant::now();
    assert!(!flor_core::formats::CheckpointFormat::sniff(&format, &head[..64]));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(matches!(p.sniff(&head[..64]), Err(Error::Deadline { export: "sniff", .. })));
    assert_eq!(p.sniff(&checkpoint("ok")[..64]).unwrap().as_deref(), Some("hostile"));
    assert_eq!(p.sniff(b"PK\x03\x04 not mine").unwrap(), None);
}

#[test]
fn a_lint_that_loops_is_reported_and_the_others_still_answer() {
    let cache = cache();
    let p = hostile(cache.path());
    let mut registry = flor_propagate::registry();
    registry.add_checker(Arc::new(flor_plugins::PluginChecker(p)));
    let (findings, failed) =
        registry.lint_with_failures(Path::new("train.py"), "import flordb as flor\n# HOSTILE loop\n").unwrap();
    assert!(findings.is_empty());
    assert_eq!(failed.len(), 1);
    assert!(failed[0].0.starts_with("plugin hostile"), "{failed:?}");
    assert!(failed[0].1.contains("deadline"), "{failed:?}");
}

#[test]
fn an_incompatible_interface_version_is_refused_naming_both() {
    let cache = cache();
    for path in [HOSTILE_VERSION, HOSTILE_LIAR] {
        let e =
            Plugin::load_file(Path::new(path), Origin::File(path.into()), limits(), Some(cache.path())).unwrap_err();
        assert!(matches!(e, Error::Incompatible { ref found, .. } if found == "0.9.0"), "{path}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("flor:plugin@0.9.0") && msg.contains("flor:plugin@0.1.0"), "{msg}");
    }
}

#[test]
fn files_that_are_not_plugins_are_refused() {
    let cache = cache();
    for (bytes, want) in
        [(b"PK\x03\x04 a zip".to_vec(), "not WebAssembly"), (b"\0asm\x01\0\0\0".to_vec(), "no export `describe`")]
    {
        let e = Plugin::load(&bytes, Origin::File("x.wasm".into()), limits(), Some(cache.path())).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn project_and_user_plugins_are_discovered_later_ones_replace_earlier_and_broken_files_are_reported() {
    let cache = cache();
    let user = tempfile::tempdir().unwrap();
    let flor_dir = tempfile::tempdir().unwrap();
    let project = flor_dir.path().join(flor_plugins::PROJECT_DIR);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::copy(TEMPLATE, user.path().join("toy.wasm")).unwrap();
    std::fs::copy(HOSTILE, project.join("hostile.wasm")).unwrap();
    std::fs::copy(TEMPLATE, project.join("template-again.wasm")).unwrap();
    std::fs::write(project.join("broken.wasm"), b"not a plugin").unwrap();
    let plugins = Plugins::discover(Some(flor_dir.path()), &options(cache.path(), Some(user.path()))).unwrap();
    let names: Vec<(&str, &str)> = plugins.plugins().iter().map(|p| (p.name(), p.origin().kind())).collect();
    assert_eq!(names, [("pytorch", "builtin"), ("jax", "builtin"), ("hostile", "project"), ("toy", "project")]);
    assert_eq!(plugins.replaced().len(), 1);
    assert_eq!(plugins.replaced()[0].origin.kind(), "user");
    assert_eq!(plugins.failures().len(), 1);
    assert!(plugins.failures()[0].path.ends_with("broken.wasm"));
    // Every plugin format is in the registry built from them.
    let registry = plugins.format_registry(FormatRegistry::native());
    assert!(registry.get("hostile").is_ok() && registry.get("torch.zip").is_ok());
}

#[test]
fn install_checks_the_plugin_and_copies_it_under_its_name() {
    let cache = cache();
    let flor_dir = tempfile::tempdir().unwrap();
    let dir = flor_dir.path().join(".flor").join(flor_plugins::PROJECT_DIR);
    let opts = options(cache.path(), None);
    let (p, previous) = flor_plugins::install(Path::new(TEMPLATE), &dir, &opts).unwrap();
    assert_eq!(previous, None);
    let dest = dir.join(format!("{}.wasm", p.name()));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(TEMPLATE).unwrap());
    assert_eq!(p.origin(), &Origin::Project(dest.clone()));
    let (_, previous) = flor_plugins::install(Path::new(TEMPLATE), &dir, &opts).unwrap();
    assert_eq!(previous.as_deref(), Some(p.info().version.as_str()));
    // A plugin that does not load is not installed.
    let e = flor_plugins::install(Path::new(HOSTILE_VERSION), &dir, &opts).unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}
