//! One loaded plugin: its description, its compiled component, and the
//! calls into it, each in a fresh sandboxed instance.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flor_core::formats::{ByteSource, Dtype, Layout, Provenance, TensorInfo};
use flor_core::propagate::{Finding, Severity};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::bindings::{self, PluginPre};
use crate::cache;
use crate::error::{Error, Result};
use crate::sandbox::{self, Ctx, Limits};

/// The version of `wit/plugin.wit` (the `flor:plugin` package) this host
/// speaks; a plugin built for another is refused.
pub const INTERFACE_VERSION: &str = "0.1.0";

/// The interface's package name.
pub const INTERFACE_PACKAGE: &str = "flor:plugin";

/// The WIT text of the interface, for tools and `flor plugins inspect`.
pub const INTERFACE_WIT: &str = include_str!("../wit/plugin.wit");

/// Where a plugin was loaded from; later origins override earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Shipped inside the `flor` binary.
    Builtin,
    /// The per-user folder ([`crate::user_dir`]).
    User(PathBuf),
    /// The project's `.flor/plugins/`.
    Project(PathBuf),
    /// A file named directly (`flor plugins inspect PATH`).
    File(PathBuf),
}

impl Origin {
    /// The file, unless the plugin is built in.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Origin::Builtin => None,
            Origin::User(p) | Origin::Project(p) | Origin::File(p) => Some(p),
        }
    }

    /// `builtin`, `user`, `project` or `file`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Builtin => "builtin",
            Origin::User(_) => "user",
            Origin::Project(_) => "project",
            Origin::File(_) => "file",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            None => f.write_str("builtin"),
            Some(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A checkpoint format a plugin handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatInfo {
    /// Its name, recorded in manifests.
    pub name: String,
    /// One line saying what it is.
    pub summary: String,
}

/// What a plugin says about itself (`describe`), checked on loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The interface version it was built for (= [`INTERFACE_VERSION`]).
    pub interface_version: String,
    /// One line saying what it is for.
    pub summary: String,
    /// The checkpoint formats it lays out.
    pub formats: Vec<FormatInfo>,
    /// The languages its `lint` checks.
    pub languages: Vec<String>,
}

/// A loaded, checked plugin. Cheap to share (`Arc<Plugin>`); every call
/// runs in a fresh instance, so one failed call leaves nothing behind.
pub struct Plugin {
    info: Info,
    digest: String,
    bytes: u64,
    origin: Origin,
    imports: Vec<String>,
    pre: PluginPre<Ctx>,
    limits: Limits,
    /// The last `sniff`: one object is sniffed once per format.
    last_sniff: Mutex<Option<(Vec<u8>, Option<String>)>>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("origin", &self.origin)
            .field("digest", &self.digest)
            .finish()
    }
}

impl Plugin {
    /// Loads a plugin from the bytes of a component, or of a core module
    /// built with the plugin SDK (made into a component here), compiling
    /// it once (cached under `cache_dir` when given), and checks it: the
    /// interface version of its imports and of `describe`, no import
    /// beyond `source`, every export present, a well-formed description.
    pub fn load(bytes: &[u8], origin: Origin, limits: Limits, cache_dir: Option<&Path>) -> Result<Plugin> {
        let who = origin_label(&origin, None);
        let invalid = |what: String| Error::Invalid { origin: who.clone(), what };
        let digest = blake3::hash(bytes).to_hex().to_string();
        let component_bytes = to_component(bytes).map_err(invalid)?;
        let engine = sandbox::engine()?;
        let component = cache::compile(engine, &component_bytes, cache_dir).map_err(invalid)?;
        let imports = check_imports(engine, &component, &who)?;
        let linker = sandbox::linker(engine)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| invalid(format!("{e:#}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| invalid(format!("{e:#}")))?;
        let raw = sandbox::call(&pre, limits, &who, "describe", None, |p, s| p.call_describe(s))?;
        let info = check_info(raw, &who)?;
        Ok(Plugin {
            info,
            digest,
            bytes: bytes.len() as u64,
            origin,
            imports,
            pre,
            limits,
            last_sniff: Mutex::new(None),
        })
    }

    /// Reads and loads the plugin file at `path`.
    pub fn load_file(path: &Path, origin: Origin, limits: Limits, cache_dir: Option<&Path>) -> Result<Plugin> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        Plugin::load(&bytes, origin, limits, cache_dir)
    }

    /// The same plugin, said to come from `origin`.
    pub(crate) fn with_origin(mut self, origin: Origin) -> Plugin {
        self.origin = origin;
        self
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The BLAKE3 digest of the bytes it was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The size of the bytes it was loaded from.
    pub fn size(&self) -> u64 {
        self.bytes
    }

    /// Where it was loaded from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The limits its calls run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Its component's imports (`flor:plugin/source@0.1.0`, or none).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Name, version and digest, as recorded in the manifests of the
    /// checkpoints it cut.
    pub fn provenance(&self) -> Provenance {
        Provenance { plugin: self.info.name.clone(), version: self.info.version.clone(), digest: self.digest.clone() }
    }

    fn label(&self) -> String {
        format!("{} {}", self.info.name, self.info.version)
    }

    /// Which of its formats the checkpoint starting with `head` is, if any
    /// (at most [`flor_core::formats::SNIFF_LEN`] bytes are passed).
    pub fn sniff(&self, head: &[u8]) -> Result<Option<String>> {
        let head = &head[..head.len().min(flor_core::formats::SNIFF_LEN)];
        if let Ok(last) = self.last_sniff.lock() {
            if let Some((h, answer)) = last.as_ref().filter(|(h, _)| h == head) {
                debug_assert_eq!(h, head);
                return Ok(answer.clone());
            }
        }
        let answer = sandbox::call(&self.pre, self.limits, &self.label(), "sniff", None, |p, s| p.call_sniff(s, head))?;
        if let Some(name) = answer.as_deref() {
            if !self.info.formats.iter().any(|f| f.name == name) {
                return Err(self.answer("sniff", format!("format `{name}` is not among the formats it describes")));
            }
        }
        if let Ok(mut last) = self.last_sniff.lock() {
            *last = Some((head.to_vec(), answer.clone()));
        }
        Ok(answer)
    }

    /// The layout of the checkpoint in `src`, as the plugin says (not yet
    /// checked against the layout rules: [`Layout::validate`]).
    pub fn layout(&self, format: &str, src: &dyn ByteSource) -> Result<Result<Layout, String>> {
        let raw =
            sandbox::call(&self.pre, self.limits, &self.label(), "layout", Some(src), |p, s| p.call_layout(s, format))?;
        let Ok(raw) = raw else { return Ok(Err(raw.err().unwrap_or_default())) };
        let mut tensors = Vec::with_capacity(raw.tensors.len());
        for t in raw.tensors {
            let end = t.offset.checked_add(t.length).ok_or_else(|| {
                self.answer("layout", format!("tensor `{}`: {} bytes at byte {} overflow", t.name, t.length, t.offset))
            })?;
            tensors.push(TensorInfo {
                name: t.name,
                dtype: Dtype::parse(&t.dtype),
                shape: t.shape,
                range: t.offset..end,
            });
        }
        let mut metadata = Vec::with_capacity(raw.metadata.len());
        for m in raw.metadata {
            let end = m.offset.checked_add(m.length).ok_or_else(|| {
                self.answer("layout", format!("metadata span: {} bytes at byte {} overflow", m.length, m.offset))
            })?;
            metadata.push(m.offset..end);
        }
        Ok(Ok(Layout { tensors, metadata }))
    }

    /// The chunk boundaries of the checkpoint in `src` (empty: the tensor
    /// boundaries), as the plugin says (checked by the caller).
    pub fn split(&self, format: &str, src: &dyn ByteSource) -> Result<Result<Vec<u64>, String>> {
        sandbox::call(&self.pre, self.limits, &self.label(), "split", Some(src), |p, s| p.call_split(s, format))
    }

    /// The plugin's source checks of a script in `language`; none when it
    /// does not check that language (it is not asked).
    pub fn lint(&self, language: &str, path: &str, text: &str) -> Result<Vec<Finding>> {
        if !self.info.languages.iter().any(|l| l == language) {
            return Ok(Vec::new());
        }
        let raw = sandbox::call(&self.pre, self.limits, &self.label(), "lint", None, |p, s| {
            p.call_lint(s, language, path, text)
        })?;
        let mut out = Vec::with_capacity(raw.len());
        for f in raw {
            if f.line == 0 || f.column == 0 || f.code.is_empty() || f.message.is_empty() {
                return Err(self.answer(
                    "lint",
                    format!(
                        "finding {:?} at {}:{}: lines and columns start at 1, code and message are required",
                        f.code, f.line, f.column
                    ),
                ));
            }
            let severity = match f.severity {
                bindings::flor::plugin::types::Severity::Note => Severity::Note,
                bindings::flor::plugin::types::Severity::Warning => Severity::Warning,
            };
            let mut finding = Finding::new(f.line as usize, f.column as usize, f.code, severity, f.message);
            if !f.hint.is_empty() {
                finding = finding.with_hint(f.hint);
            }
            out.push(finding);
        }
        Ok(out)
    }

    fn answer(&self, export: &'static str, what: String) -> Error {
        Error::Answer { plugin: self.label(), export, what }
    }
}

/// `plugin NAME (ORIGIN)` or the origin alone before the name is known.
fn origin_label(origin: &Origin, name: Option<&str>) -> String {
    match (name, origin) {
        (Some(n), Origin::Builtin) => format!("builtin plugin {n}"),
        (Some(n), o) => format!("plugin {n} ({o})"),
        (None, Origin::Builtin) => "builtin plugin".into(),
        (None, o) => format!("plugin file {o}"),
    }
}

/// A component's bytes: `bytes` itself, or the component made from a core
/// module that carries the plugin SDK's component-type section.
fn to_component(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE: [u8; 4] = [1, 0, 0, 0];
    const COMPONENT: [u8; 4] = [0x0d, 0, 1, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("the file is not WebAssembly (no `\\0asm` header)".into());
    }
    let version: [u8; 4] = [bytes[4], bytes[5], bytes[6], bytes[7]];
    if version == COMPONENT {
        return Ok(bytes.to_vec());
    }
    if version != CORE {
        return Err(format!("unknown WebAssembly version/layer {version:02x?}"));
    }
    wit_component::ComponentEncoder::default().module(bytes).and_then(|e| e.validate(true).encode()).map_err(|e| {
        format!("a core module that cannot be made a plugin component (was it built with flor-plugin-sdk?): {e:#}")
    })
}

/// The component's imports, checked: only `flor:plugin/*` at
/// [`INTERFACE_VERSION`].
fn check_imports(engine: &Engine, component: &Component, who: &str) -> Result<Vec<String>> {
    let ty = component.component_type();
    let mut names = Vec::new();
    for (name, _) in ty.imports(engine) {
        match name.strip_prefix(INTERFACE_PACKAGE).and_then(|rest| rest.strip_prefix('/')) {
            Some(rest) => {
                let version = rest.split_once('@').map_or("", |(_, v)| v);
                if version != INTERFACE_VERSION {
                    let found = if version.is_empty() { "(unversioned)" } else { version };
                    return Err(Error::Incompatible {
                        origin: who.to_owned(),
                        found: found.to_owned(),
                        expected: INTERFACE_VERSION,
                    });
                }
            }
            None => return Err(Error::Forbidden { origin: who.to_owned(), import: name.to_owned() }),
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Checks `describe`'s answer.
fn check_info(raw: bindings::flor::plugin::types::Info, who: &str) -> Result<Info> {
    let bad = |what: String| Error::Answer { plugin: who.to_owned(), export: "describe", what };
    if raw.interface_version != INTERFACE_VERSION {
        return Err(Error::Incompatible {
            origin: origin_named(who, &raw.name),
            found: raw.interface_version,
            expected: INTERFACE_VERSION,
        });
    }
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 64
        && raw.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(bad(format!("name {:?}: use 1 to 64 lower-case letters, digits and `-`", raw.name)));
    }
    if raw.version.is_empty() || raw.version.len() > 64 || raw.version.chars().any(char::is_whitespace) {
        return Err(bad(format!("version {:?} is not a version", raw.version)));
    }
    let mut formats: Vec<FormatInfo> = Vec::with_capacity(raw.formats.len());
    for f in raw.formats {
        if f.name.is_empty() || f.name.len() > 128 || f.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("format name {:?}: 1 to 128 characters, no spaces", f.name)));
        }
        if formats.iter().any(|g| g.name == f.name) {
            return Err(bad(format!("format `{}` is listed twice", f.name)));
        }
        formats.push(FormatInfo { name: f.name, summary: f.summary });
    }
    Ok(Info {
        name: raw.name,
        version: raw.version,
        interface_version: raw.interface_version,
        summary: raw.summary,
        formats,
        languages: raw.languages,
    })
}

fn origin_named(who: &str, name: &str) -> String {
    if name.is_empty() {
        who.to_owned()
    } else {
        format!("{who} `{name}`")
    }
}
