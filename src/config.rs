//! `.flor/config.toml`: per-project settings.
//!
//! ```toml
//! # Which engine holds the query database (a cache rebuilt from git).
//! store = "duckdb"     # or "sqlite" (the default)
//! # Seconds a user SQL query (`flor query`, `--where`) may run before it is
//! # stopped; 0: no limit. Default 60.
//! query_timeout = 30
//! # What survives a crash: "process" (the default) or "os" (fsync; see
//! # flor_core::durability).
//! durability = "os"
//! # Show the script's source checks when a run starts (once per version).
//! lint_on_run = false   # default: true
//!
//! [replay]
//! # How replay keeps old scripts' writes out of the project's files.
//! isolation = "auto" # or "overlay" or "copy"
//! # The most a run's copies may take where replay copies (mebibytes).
//! copy_limit_mb = 1024
//! # The args `flor replay --override KEY=VALUE` may change (default: device).
//! overrides = ["device", "num_workers"]
//!
//! [checkpoints]
//! # Each flor command packs checkpoints of finished runs and computes their
//! # tensor statistics, reading at most this much (mebibytes; 0: never on
//! # its own, only `flor checkpoints pack`). Default 512.
//! auto_pack_mb = 512
//! # ... and working at most this long (seconds). Default 2.
//! auto_pack_seconds = 2
//! # A file a script loads in setup (`torch.load`, `numpy.load` before its
//! # first loop) is kept with the run when at most this large (mebibytes),
//! # so a replay starts from the same bytes; above it only its digest is
//! # kept (a file some flor run saved is always kept). Default 256.
//! keep_loads_mb = 256
//!
//! [capture]
//! # Record what a script prints and logs (`flordb`'s automatic capture).
//! enabled = true      # default: true
//! # Characters kept of a captured line (1 to 1048576). Default 4096.
//! max_line = 4096
//! # Captured lines kept per run. Default 10000.
//! max_records = 10000
//! ```
//!
//! The file is optional. A small reader for `key = value` lines, `[table]`
//! headers and `#` comments (the subset of TOML flor writes and reads). The
//! file is input like any other: at most [`MAX_CONFIG_BYTES`]; an unknown
//! table or key, a key set twice or a value of the wrong type is an error
//! naming the file, the line and the key.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flor_core::Durability;
use flor_replay::{IsolationMode, IsolationSettings};
use flor_store::StoreKind;

use crate::error::{Error, Result};

/// The config file's name inside `.flor/`.
pub const CONFIG_FILE: &str = "config.toml";

/// The largest config file read (64 KiB).
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// How long a user SQL query may run when the config sets no
/// `query_timeout`.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The keys a config file may set, by table (`""`: the top).
const KEYS: &[(&str, &str)] = &[
    ("", "store"),
    ("", "query_timeout"),
    ("", "durability"),
    ("", "lint_on_run"),
    ("replay", "isolation"),
    ("replay", "copy_limit_mb"),
    ("replay", "overrides"),
    ("replay", "executor"),
    ("replay", "ray_address"),
    ("replay", "ray_python"),
    ("replay", "ray_driver_python"),
    ("checkpoints", "auto_pack_mb"),
    ("checkpoints", "auto_pack_seconds"),
    ("checkpoints", "keep_loads_mb"),
    ("capture", "enabled"),
    ("capture", "max_line"),
    ("capture", "max_records"),
];

/// The size up to which a setup load is kept when the config sets no
/// `[checkpoints] keep_loads_mb`, in mebibytes.
pub const DEFAULT_KEEP_LOADS_MB: u64 = 256;

/// The largest `[capture] max_line` (characters; a record line holds at
/// most 64 MiB).
pub const MAX_CAPTURE_LINE: u64 = 1 << 20;

/// Where `flor replay` runs segments (`--executor`, `[replay] executor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Processes on this machine.
    #[default]
    Local,
    /// Tasks on a Ray cluster ([`flor_replay::RayExecutor`]).
    Ray,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "local" => Ok(ExecutorKind::Local),
            "ray" => Ok(ExecutorKind::Ray),
            other => Err(format!("unknown executor {}: expected \"local\" or \"ray\"", shorten(other))),
        }
    }
}

/// The settings of `.flor/config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `store`: the query database's engine (`None`: not set).
    /// [`StoreKind`] lives in `flor-store`, re-exported as
    /// `flor::StoreKind`.
    pub store: Option<StoreKind>,
    /// `query_timeout`: how long a user SQL query may run (`None`: not
    /// set, [`DEFAULT_QUERY_TIMEOUT`] applies; zero: no limit).
    pub query_timeout: Option<Duration>,
    /// `durability`: what of a run survives a crash (`None`: not set,
    /// [`Durability::Process`]).
    pub durability: Option<Durability>,
    /// `lint_on_run`: whether a starting run shows its script's source
    /// checks (`None`: not set, which means yes).
    pub lint_on_run: Option<bool>,
    /// `[replay] isolation`: how replay keeps old scripts' writes out of
    /// the project's files (`None`: not set, `auto`).
    pub replay_isolation: Option<IsolationMode>,
    /// `[replay] copy_limit_mb`: the most one run's copies may take where
    /// replay copies (`None`: not set, 1024).
    pub replay_copy_limit_mb: Option<u64>,
    /// `[replay] overrides`: the args `flor replay --override` may change
    /// (`None`: not set, [`crate::replay::DEFAULT_OVERRIDES`]).
    pub replay_overrides: Option<Vec<String>>,
    /// `[replay] executor`: where segments run, `local` (the default) or
    /// `ray` (`--executor` overrides it).
    pub replay_executor: Option<ExecutorKind>,
    /// `[replay] ray_address`: the Ray cluster, as `ray.init` takes it
    /// (`--address` overrides it; `None`: `auto`).
    pub ray_address: Option<String>,
    /// `[replay] ray_python`: the interpreter segments run with on the
    /// cluster's nodes (`None`: the Python each node runs Ray with).
    pub ray_python: Option<String>,
    /// `[replay] ray_driver_python`: the Python (with `ray` and `flordb`)
    /// that runs flor's Ray driver on this machine (`None`: the interpreter
    /// the runs were recorded with).
    pub ray_driver_python: Option<String>,
    /// `[checkpoints] auto_pack_mb`: how much each command may read packing
    /// checkpoints on its own (`None`: not set, 512; 0: never).
    pub auto_pack_mb: Option<u64>,
    /// `[checkpoints] auto_pack_seconds`: how long each command may spend
    /// packing checkpoints on its own (`None`: not set, 2).
    pub auto_pack_seconds: Option<u64>,
    /// `[checkpoints] keep_loads_mb`: the largest setup load kept with the
    /// run (`None`: not set, [`DEFAULT_KEEP_LOADS_MB`]).
    pub keep_loads_mb: Option<u64>,
    /// `[capture]`: automatic capture of a script's output.
    pub capture: CaptureConfig,
}

/// `[capture]` of `.flor/config.toml`: automatic capture of what a
/// `flordb` script prints and logs (each `None` when not set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// `enabled`: whether output is captured (default: yes).
    pub enabled: Option<bool>,
    /// `max_line`: characters kept of a captured line (default 4096).
    pub max_line: Option<u64>,
    /// `max_records`: captured lines kept per run (default 10000).
    pub max_records: Option<u64>,
}

/// The `[capture]` settings of the project containing `start` (the
/// defaults outside a git repository). Reads only the config file: no
/// `.flor/` folder is created.
pub fn capture_config(start: &Path) -> Result<CaptureConfig> {
    let root = match flor_git::discover(start) {
        Ok(info) => info.root,
        Err(flor_git::Error::NotARepository { .. }) => return Ok(CaptureConfig::default()),
        Err(e) => return Err(e.into()),
    };
    Ok(Config::load(&root.join(crate::FLOR_DIR).join(CONFIG_FILE))?.capture)
}

impl Config {
    /// Reads `path`; a missing file is the default configuration.
    pub fn load(path: &Path) -> Result<Config> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Config {
            path: path.to_owned(),
            line: 0,
            key: String::new(),
            message: "the file is not UTF-8 text".into(),
        })?;
        Config::parse(&text, path)
    }

    /// Parses the text of `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let bad = |line: usize, key: &str, message: String| Error::Config {
            path: PathBuf::from(path),
            line,
            key: key.to_owned(),
            message,
        };
        if text.len() > MAX_CONFIG_BYTES {
            return Err(bad(
                0,
                "",
                format!("the file is larger than {MAX_CONFIG_BYTES} bytes; flor's config is a few lines"),
            ));
        }
        let mut config = Config::default();
        let mut table = "";
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = match name.trim() {
                    "replay" => "replay",
                    "checkpoints" => "checkpoints",
                    "capture" => "capture",
                    other => {
                        return Err(bad(
                            i + 1,
                            "",
                            format!(
                                "unknown table [{}]; flor's config has settings at the top and the tables \
                                 [replay], [checkpoints] and [capture]",
                                shorten(other)
                            ),
                        ))
                    }
                };
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad(i + 1, "", format!("expected `key = value`, found {}", shorten(raw.trim()))));
            };
            let (key, value) = (key.trim(), value.trim());
            let Some(&known) = KEYS.iter().find(|(t, k)| *t == table && *k == key) else {
                let here: Vec<String> =
                    KEYS.iter().filter(|(t, _)| *t == table).map(|(_, k)| format!("`{k}`")).collect();
                let place = if table.is_empty() { "at the top".to_owned() } else { format!("in [{table}]") };
                return Err(bad(
                    i + 1,
                    &shorten(key),
                    format!("unknown setting (flor reads {} {place})", here.join(", ")),
                ));
            };
            if seen.contains(&known) {
                return Err(bad(i + 1, known.1, "set twice".into()));
            }
            seen.push(known);
            config.set(known, value).map_err(|m| bad(i + 1, known.1, m))?;
        }
        Ok(config)
    }

    /// Sets `key` (a known one) from its value text.
    fn set(&mut self, key: (&str, &str), value: &str) -> std::result::Result<(), String> {
        let quoted = |example: &str| {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("expected a quoted string such as \"{example}\", found {}", shorten(value)))
        };
        match key {
            ("", "store") => {
                self.store = Some(quoted("duckdb")?.parse().map_err(|e: flor_store::UnknownStoreKind| e.to_string())?);
            }
            ("", "durability") => {
                let d = quoted("os")?.parse();
                self.durability = Some(d.map_err(|e: flor_core::durability::UnknownDurability| e.to_string())?);
            }
            ("", "lint_on_run") => self.lint_on_run = Some(boolean(value)?),
            ("capture", "enabled") => self.capture.enabled = Some(boolean(value)?),
            ("capture", "max_line") => {
                let n = value.replace('_', "").parse::<u64>().ok().filter(|n| (1..=MAX_CAPTURE_LINE).contains(n));
                self.capture.max_line = Some(n.ok_or_else(|| {
                    format!(
                        "expected a whole number of characters from 1 to {MAX_CAPTURE_LINE}, found {}",
                        shorten(value)
                    )
                })?);
            }
            ("capture", "max_records") => {
                let n = value.replace('_', "").parse::<u64>().map_err(|_| {
                    format!("expected a whole number of lines per run such as 10000, found {}", shorten(value))
                })?;
                self.capture.max_records = Some(n);
            }
            ("replay", "isolation") => self.replay_isolation = Some(quoted("auto")?.parse()?),
            ("replay", "copy_limit_mb") => {
                let mb = value.parse::<u64>().ok().filter(|mb| mb.checked_mul(1024 * 1024).is_some());
                self.replay_copy_limit_mb =
                    Some(mb.ok_or_else(|| format!("expected a whole number of mebibytes, found {}", shorten(value)))?);
            }
            ("replay", "overrides") => self.replay_overrides = Some(string_list(value)?),
            ("replay", "executor") => self.replay_executor = Some(quoted("ray")?.parse()?),
            ("replay", "ray_address") => self.ray_address = Some(quoted("127.0.0.1:6379")?.to_owned()),
            ("replay", "ray_python") => self.ray_python = Some(quoted("/opt/venv/bin/python")?.to_owned()),
            ("replay", "ray_driver_python") => {
                self.ray_driver_python = Some(quoted("/opt/venv/bin/python")?.to_owned());
            }
            ("checkpoints", "auto_pack_mb") => {
                let mb = value.replace('_', "").parse::<u64>().ok().filter(|mb| mb.checked_mul(1 << 20).is_some());
                self.auto_pack_mb = Some(mb.ok_or_else(|| {
                    format!("expected a whole number of mebibytes (0: no packing on its own), found {}", shorten(value))
                })?);
            }
            ("checkpoints", "keep_loads_mb") => {
                let mb = value.replace('_', "").parse::<u64>().ok().filter(|mb| mb.checked_mul(1 << 20).is_some());
                self.keep_loads_mb = Some(mb.ok_or_else(|| {
                    format!("expected a whole number of mebibytes (0: keep only digests), found {}", shorten(value))
                })?);
            }
            ("checkpoints", "auto_pack_seconds") => {
                let secs = value
                    .replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| format!("expected a whole number of seconds such as 2, found {}", shorten(value)))?;
                self.auto_pack_seconds = Some(secs);
            }
            _ => {
                let secs: u64 = value.replace('_', "").parse().map_err(|_| {
                    format!("expected a whole number of seconds such as 60 (0: no limit), found {}", shorten(value))
                })?;
                self.query_timeout = Some(Duration::from_secs(secs));
            }
        }
        Ok(())
    }

    /// The time limit of user SQL queries: `query_timeout`, else
    /// [`DEFAULT_QUERY_TIMEOUT`]; `None`: no limit (`query_timeout = 0`).
    pub fn query_limit(&self) -> Option<Duration> {
        match self.query_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_QUERY_TIMEOUT),
        }
    }

    /// The args `flor replay --override` may change: `[replay] overrides`,
    /// else [`crate::replay::DEFAULT_OVERRIDES`].
    pub fn replay_overrides(&self) -> Vec<String> {
        match &self.replay_overrides {
            Some(list) => list.clone(),
            None => crate::replay::DEFAULT_OVERRIDES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The largest setup load kept with a run, in bytes
    /// (`keep_loads_mb`, else [`DEFAULT_KEEP_LOADS_MB`]).
    pub fn keep_loads_bytes(&self) -> u64 {
        self.keep_loads_mb.unwrap_or(DEFAULT_KEEP_LOADS_MB) << 20
    }

    /// The replay isolation settings (defaults for what is not set).
    pub fn isolation(&self) -> IsolationSettings {
        let default = IsolationSettings::default();
        IsolationSettings {
            mode: self.replay_isolation.unwrap_or(default.mode),
            copy_limit_bytes: self.replay_copy_limit_mb.map_or(default.copy_limit_bytes, |mb| mb * 1024 * 1024),
        }
    }
}

/// A list of quoted strings, `["a", "b"]` (possibly empty), each a plain
/// name (letters, digits, `_`, `-`, `.`).
fn string_list(value: &str) -> std::result::Result<Vec<String>, String> {
    let expected = || format!("expected a list of quoted names such as [\"device\"], found {}", shorten(value));
    let inner = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')).ok_or_else(expected)?;
    let mut out = Vec::new();
    for item in inner.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let name = item.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or_else(expected)?;
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(format!("{} is not an arg name", shorten(name)));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// A `true`/`false` value.
fn boolean(value: &str) -> std::result::Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, found {}", shorten(value))),
    }
}

/// `s` for an error message: at most 60 characters.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// The line without a `#` comment (outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_and_query_timeout() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::parse("", p).unwrap(), Config::default());
        let c = Config::parse("# engine\nstore = \"duckdb\"  # fast\nquery_timeout = 30\n", p).unwrap();
        assert_eq!(c.store, Some(StoreKind::Duckdb));
        assert_eq!(c.query_limit(), Some(Duration::from_secs(30)));
        assert_eq!(Config::parse("store=\"sqlite\"", p).unwrap().store, Some(StoreKind::Sqlite));
        assert_eq!(Config::default().query_limit(), Some(DEFAULT_QUERY_TIMEOUT));
        assert_eq!(Config::parse("query_timeout = 0", p).unwrap().query_limit(), None);
        assert_eq!(Config::parse("query_timeout = 1_200", p).unwrap().query_limit(), Some(Duration::from_secs(1200)));
    }

    #[test]
    fn replay_overrides_are_a_list_of_names_defaulting_to_device() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::default().replay_overrides(), ["device"]);
        let c = Config::parse("[replay]\noverrides = [\"device\", \"num_workers\"]  # env-shaped\n", p).unwrap();
        assert_eq!(c.replay_overrides(), ["device", "num_workers"]);
        assert!(Config::parse("[replay]\noverrides = []", p).unwrap().replay_overrides().is_empty());
        for bad in ["overrides = device", "overrides = [device]", "overrides = [\"a b\"]", "overrides = \"device\""] {
            let e = Config::parse(&format!("[replay]\n{bad}"), p).unwrap_err().to_string();
            assert!(e.contains("line 2") && e.contains("overrides"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let p = Path::new("/repo/.flor/config.toml");
        let e = Config::parse("\nstore = \"postgres\"\n", p).unwrap_err().to_string();
        assert!(e.contains("/repo/.flor/config.toml") && e.contains("line 2") && e.contains("store"), "{e}");
        assert!(e.contains("postgres") && e.contains("duckdb"), "{e}");
        let e = Config::parse("store = duckdb", p).unwrap_err().to_string();
        assert!(e.contains("quoted"), "{e}");
        assert!(Config::parse("store", p).is_err());
        assert!(Config::parse("[store]", p).is_err());
    }

    #[test]
    fn unknown_keys_wrong_types_and_repeats_are_refused() {
        let p = Path::new("/repo/.flor/config.toml");
        let e = Config::parse("store = \"sqlite\"\nstroe = \"duckdb\"\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("stroe") && e.contains("unknown setting"), "{e}");
        assert!(e.contains("`store`") && e.contains("`query_timeout`"), "{e}");
        for bad in ["query_timeout = \"60\"", "query_timeout = -1", "query_timeout = 1.5", "query_timeout ="] {
            let e = Config::parse(bad, p).unwrap_err().to_string();
            assert!(e.contains("query_timeout") && e.contains("whole number of seconds"), "{bad}: {e}");
        }
        let e = Config::parse("query_timeout = 5\nquery_timeout = 6", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("set twice"), "{e}");
    }

    #[test]
    fn a_large_or_binary_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "# padding\n".repeat(MAX_CONFIG_BYTES / 5)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("larger than"), "{e}");
        std::fs::write(&path, b"store = \"\xff\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        assert_eq!(Config::load(&dir.path().join("missing.toml")).unwrap(), Config::default());
    }

    #[test]
    fn parses_durability() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::parse("store = \"sqlite\"", p).unwrap().durability, None);
        let c = Config::parse("durability = \"os\" # fsync\nstore = \"sqlite\"\n", p).unwrap();
        assert_eq!((c.durability, c.store), (Some(Durability::Os), Some(StoreKind::Sqlite)));
        assert_eq!(Config::parse("durability=\"process\"", p).unwrap().durability, Some(Durability::Process));
        let e = Config::parse("\n\ndurability = \"always\"", p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("durability") && e.contains("always"), "{e}");
        assert!(e.contains("\"process\"") && e.contains("\"os\""), "{e}");
        let e = Config::parse("durability = os", p).unwrap_err().to_string();
        assert!(e.contains("quoted") && e.contains("\"os\""), "{e}");
    }

    #[test]
    fn parses_lint_on_run() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::parse("", p).unwrap().lint_on_run, None);
        assert_eq!(Config::parse("lint_on_run = false # quiet\n", p).unwrap().lint_on_run, Some(false));
        assert_eq!(Config::parse("lint_on_run=true", p).unwrap().lint_on_run, Some(true));
        let e = Config::parse("lint_on_run = \"no\"", p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("lint_on_run") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn parses_the_checkpoints_table() {
        let p = Path::new(".flor/config.toml");
        let c = Config::parse("[checkpoints]\nauto_pack_mb = 0\nauto_pack_seconds = 5\n", p).unwrap();
        assert_eq!((c.auto_pack_mb, c.auto_pack_seconds), (Some(0), Some(5)));
        let u = crate::checkpoints::UpkeepSettings::of(&c);
        assert_eq!(u.budget.bytes, 0, "0: only what is indexed already");
        let d = crate::checkpoints::UpkeepSettings::of(&Config::default());
        assert_eq!(d.budget, crate::checkpoints::PackBudget::DEFAULT);
        let e = Config::parse("[checkpoints]\nauto_pack_mb = lots\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("auto_pack_mb") && e.contains("mebibytes"), "{e}");
        let e = Config::parse("[checkpoint]\n", p).unwrap_err().to_string();
        assert!(e.contains("[checkpoints]"), "{e}");
    }

    #[test]
    fn parses_the_capture_table() {
        let p = Path::new("/repo/.flor/config.toml");
        assert_eq!(Config::parse("", p).unwrap().capture, CaptureConfig::default());
        let c = Config::parse("[capture]\nenabled = false\nmax_line = 200\nmax_records = 1_000_000\n", p).unwrap();
        assert_eq!(
            c.capture,
            CaptureConfig { enabled: Some(false), max_line: Some(200), max_records: Some(1_000_000) }
        );
        let e = Config::parse("[capture]\nenabled = 0\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("enabled") && e.contains("true or false"), "{e}");
        for bad in ["max_line = 0", "max_line = -5", "max_line = 2000000", "max_line = \"80\""] {
            let e = Config::parse(&format!("[capture]\n{bad}\n"), p).unwrap_err().to_string();
            assert!(e.contains("max_line") && e.contains("from 1 to 1048576"), "{bad}: {e}");
        }
        let e = Config::parse("[capture]\nmax_records = lots\n", p).unwrap_err().to_string();
        assert!(e.contains("/repo/.flor/config.toml") && e.contains("max_records"), "{e}");
        let e = Config::parse("[capture]\nmax_lines = 5\n", p).unwrap_err().to_string();
        assert!(e.contains("unknown setting") && e.contains("`max_line`"), "{e}");
        // `enabled` belongs to [capture], not the top.
        assert!(Config::parse("enabled = true", p).is_err());
    }

    #[test]
    fn capture_config_reads_the_projects_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(capture_config(dir.path()).unwrap(), CaptureConfig::default(), "outside a repository");
        let init = std::process::Command::new("git").args(["init", "-q"]).current_dir(dir.path()).status().unwrap();
        assert!(init.success());
        let sub = dir.path().join("src");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(capture_config(&sub).unwrap(), CaptureConfig::default());
        assert!(!dir.path().join(crate::FLOR_DIR).exists(), "reading creates nothing");
        std::fs::create_dir_all(dir.path().join(crate::FLOR_DIR)).unwrap();
        std::fs::write(dir.path().join(crate::FLOR_DIR).join(CONFIG_FILE), "[capture]\nmax_records = 3\n").unwrap();
        assert_eq!(capture_config(&sub).unwrap().max_records, Some(3));
    }

    #[test]
    fn parses_the_replay_table() {
        let p = Path::new(".flor/config.toml");
        let c = Config::parse("store = \"sqlite\"\n[replay]\nisolation = \"copy\" # forced\ncopy_limit_mb = 5\n", p)
            .unwrap();
        assert_eq!(c.store, Some(StoreKind::Sqlite));
        assert_eq!(c.isolation(), IsolationSettings { mode: IsolationMode::Copy, copy_limit_bytes: 5 * 1024 * 1024 });
        assert_eq!(Config::parse("", p).unwrap().isolation(), IsolationSettings::default());
        // `store` inside [replay] is not a setting.
        let e = Config::parse("[replay]\nstore = \"duckdb\"\n", p).unwrap_err().to_string();
        assert!(e.contains("unknown setting") && e.contains("in [replay]"), "{e}");
        let e = Config::parse("[replaay]\n", p).unwrap_err().to_string();
        assert!(e.contains("unknown table"), "{e}");
        let e = Config::parse("[replay]\nisolation = \"cow\"\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("isolation") && e.contains("\"overlay\""), "{e}");
        let e = Config::parse("[replay]\ncopy_limit_mb = \"big\"\n", p).unwrap_err().to_string();
        assert!(e.contains("copy_limit_mb") && e.contains("mebibytes"), "{e}");
        assert!(Config::parse("[replay]\ncopy_limit_mb = 99999999999999999\n", p).is_err());
    }
}

#[cfg(test)]
mod keep_loads_tests {
    use super::*;

    #[test]
    fn keep_loads_mb_defaults_parses_and_refuses_other_values() {
        let p = Path::new(".flor/config.toml");
        assert_eq!(Config::default().keep_loads_bytes(), DEFAULT_KEEP_LOADS_MB << 20);
        let c = Config::parse("[checkpoints]\nkeep_loads_mb = 0\n", p).unwrap();
        assert_eq!(c.keep_loads_bytes(), 0);
        assert_eq!(Config::parse("[checkpoints]\nkeep_loads_mb = 1_024", p).unwrap().keep_loads_bytes(), 1 << 30);
        let e = Config::parse("[checkpoints]\nkeep_loads_mb = \"big\"", p).unwrap_err().to_string();
        assert!(e.contains("keep_loads_mb") && e.contains("mebibytes"), "{e}");
    }
}
