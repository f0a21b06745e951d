//! `flor serve`: a local web page of runs, curves across code versions and
//! replay plans, over a JSON API, from the `flor` binary.
//!
//! Read-only: every request opens the project (no store lock is held
//! between requests, so other `flor` commands and training runs go on),
//! brings the query cache up to date (at most once per [`SYNC_EVERY`]), and
//! answers from it; nothing writes a record, a ref or a working-tree file.
//! Binds 127.0.0.1 by default; any other address needs a token, which every
//! API request then carries (`?token=` or `Authorization: Bearer`).
//!
//! The page (TypeScript, uPlot; `web/`) is built into `web/dist/` and
//! embedded here, so running it needs no node or npm.

mod api;
mod curves;
mod diff;
mod versions;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flor::{Project, StoreKind};

/// How often at most a request syncs the query cache with the run records
/// (other requests in that window answer from the cache as it is).
const SYNC_EVERY: Duration = Duration::from_millis(500);

/// The page, its script and its styles, built from `web/` (see
/// `web/build.sh`; CI checks that they match their sources).
const INDEX_HTML: &str = include_str!("../../../../web/index.html");
const APP_JS: &str = include_str!("../../../../web/dist/app.js");
const APP_CSS: &str = include_str!("../../../../web/dist/app.css");

/// `flor serve`'s options.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Port to listen on (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 7777)]
    port: u16,
    /// Address to bind. Anything but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Open the page in the default browser (xdg-open / open).
    #[arg(long)]
    open: bool,
    /// A secret every API request must carry (`?token=T`, or the header
    /// `Authorization: Bearer T`); the printed URL carries it.
    #[arg(long, value_name = "T")]
    token: Option<String>,
}

/// Why `flor serve` could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// A non-loopback address without a token.
    #[error(
        "--host {0} is reachable from other machines: pass --token SECRET too (every request must then carry it), \
         or serve on 127.0.0.1"
    )]
    NeedsToken(IpAddr),
    /// An empty token.
    #[error("--token must not be empty")]
    EmptyToken,
    /// The project could not be opened.
    #[error(transparent)]
    Project(#[from] flor::Error),
    /// The socket or the runtime.
    #[error("cannot {action}: {source}")]
    Io {
        /// What failed.
        action: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A project opened for one request (and, for DuckDB, the turn to use it).
pub(crate) struct Opened<'a> {
    project: Project,
    _gate: Option<MutexGuard<'a, ()>>,
}

impl std::ops::Deref for Opened<'_> {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.project
    }
}

impl std::ops::DerefMut for Opened<'_> {
    fn deref_mut(&mut self) -> &mut Project {
        &mut self.project
    }
}

/// What every request shares.
pub(crate) struct Shared {
    /// A folder inside the project.
    start: PathBuf,
    /// The engine `--store` asked for (`None`: the configured one).
    store: Option<StoreKind>,
    /// The secret requests must carry.
    token: Option<String>,
    /// Host header values accepted without a token (DNS rebinding).
    local_hosts: Vec<String>,
    /// Whether requests take turns with the store (DuckDB).
    one_at_a_time: bool,
    /// The turn.
    gate: Mutex<()>,
    /// When the query cache was last synced.
    synced: Mutex<Option<Instant>>,
    /// The propagators replay plans use (the plugins' too), loaded once.
    propagators: OnceLock<flor_core::propagate::Registry>,
    /// Answers of `/api/curves`, by request and data version.
    pub(crate) curve_cache: Mutex<Lru>,
    /// The points of names read, for any selection of runs.
    pub(crate) point_cache: Mutex<curves::PointCache>,
    /// The store's names (counting them reads every record), by data
    /// version.
    names_cache: Mutex<Option<(String, Arc<Vec<flor::core::store::NameInfo>>)>>,
    /// Per snapshot commit and script: a digest of the script's text
    /// (commits never change).
    script_digests: Mutex<HashMap<(String, String), Option<String>>>,
}

impl Shared {
    /// Opens the project for one request (the store is closed when it is
    /// dropped), synced at most once per [`SYNC_EVERY`]. A DuckDB database
    /// is opened by one request at a time (DuckDB allows one open instance
    /// of a file).
    pub(crate) fn open(&self) -> flor::Result<Opened<'_>> {
        let gate = self.one_at_a_time.then(|| self.gate.lock().unwrap_or_else(|p| p.into_inner()));
        let mut project = Project::builder(&self.start).store_kind(self.store).open()?;
        let mut last = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
            project.sync()?;
            *last = Some(Instant::now());
        }
        Ok(Opened { project, _gate: gate })
    }

    /// The store's names, counted again only when the records changed.
    pub(crate) fn names(&self, project: &Project) -> flor::Result<Arc<Vec<flor::core::store::NameInfo>>> {
        let version = data_version(&project.runs()?);
        if let Some((v, names)) = &*self.names_cache.lock().unwrap_or_else(|p| p.into_inner()) {
            if *v == version {
                return Ok(names.clone());
            }
        }
        let names = Arc::new(project.names()?);
        *self.names_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, names.clone()));
        Ok(names)
    }

    /// The propagators of replay plans: Python, and the plugins'.
    pub(crate) fn propagators(&self, project: &Project) -> flor_core::propagate::Registry {
        self.propagators.get_or_init(|| super::replay_propagators(project.root())).clone()
    }
}

/// A key that changes whenever the runs' records do: run count, records,
/// runs still recording.
pub(crate) fn data_version(rows: &[flor::core::store::RunRow]) -> String {
    let records: u64 = rows.iter().map(|r| r.records).sum();
    let running = rows.iter().filter(|r| r.meta.status.as_str() == "running").count();
    format!("{}:{records}:{running}", rows.len())
}

/// A few serialized answers, the least recently used dropped first.
#[derive(Default)]
pub(crate) struct Lru {
    entries: Vec<(String, Arc<Vec<u8>>, u64)>,
    clock: u64,
}

impl Lru {
    /// Answers kept.
    const CAPACITY: usize = 32;

    /// The answer for `key`, if kept.
    pub(crate) fn get(&mut self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.iter_mut().find(|e| e.0 == key).map(|e| {
            e.2 = clock;
            e.1.clone()
        })
    }

    /// Keeps `value` for `key`.
    pub(crate) fn put(&mut self, key: String, value: Arc<Vec<u8>>) {
        self.clock += 1;
        if self.entries.len() >= Self::CAPACITY {
            if let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.2).map(|(i, _)| i) {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.retain(|e| e.0 != key);
        self.entries.push((key, value, self.clock));
    }
}

/// Runs `flor serve` until interrupted.
pub(crate) fn serve(start: PathBuf, store: Option<StoreKind>, args: &ServeArgs) -> Result<(), ServeError> {
    let token = match &args.token {
        Some(t) if t.is_empty() => return Err(ServeError::EmptyToken),
        t => t.clone(),
    };
    if !args.host.is_loopback() && token.is_none() {
        return Err(ServeError::NeedsToken(args.host));
    }
    // Fail now, not at the first request, when there is no project.
    let project = Project::builder(&start).store_kind(store).open()?;
    let root = project.root().to_owned();
    let one_at_a_time = project.store_kind() == Some(StoreKind::Duckdb);
    drop(project);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .map_err(|source| ServeError::Io { action: "start the server's runtime".into(), source })?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io { action: format!("listen on {addr}"), source })?;
        let bound =
            listener.local_addr().map_err(|source| ServeError::Io { action: "read the address".into(), source })?;
        let shared = Arc::new(Shared {
            start,
            store,
            local_hosts: local_hosts(bound),
            one_at_a_time,
            gate: Mutex::new(()),
            token: token.clone(),
            synced: Mutex::new(None),
            propagators: OnceLock::new(),
            curve_cache: Mutex::new(Lru::default()),
            point_cache: Mutex::new(curves::PointCache::default()),
            names_cache: Mutex::new(None),
            script_digests: Mutex::new(HashMap::new()),
        });
        let url = page_url(bound, token.as_deref());
        println!("flor: serving {} at {url} (Ctrl-C to stop)", root.display());
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if args.open {
            open_browser(&url);
        }
        let warming = shared.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = curves::warm(&warming) {
                eprintln!("flor: note: could not read the first curves ahead: {e}");
            }
        });
        axum::serve(listener, router(shared))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|source| ServeError::Io { action: "serve".into(), source })
    })
}

/// The printed URL: the bound address (`localhost` names for loopback) and
/// the token.
fn page_url(bound: SocketAddr, token: Option<&str>) -> String {
    let host = match bound.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    match token {
        Some(t) => format!("http://{host}:{}/?token={}", bound.port(), percent_encode(t)),
        None => format!("http://{host}:{}/", bound.port()),
    }
}

/// `text` with everything but unreserved URL characters percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Host header values of a loopback server.
fn local_hosts(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
    hosts.push(match bound.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        ip => format!("{ip}:{port}"),
    });
    hosts
}

/// Opens `url` in the desktop's browser; says so when it cannot.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let spawned = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("flor: could not open a browser ({opener}: {e}); open {url} yourself");
    }
}

/// The routes: the page, its assets, the API.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .merge(api::routes())
        .fallback(|| async { api::ApiError::NotFound("no such page or endpoint (see /api)".into()).into_response() })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// An embedded file.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Refuses API requests without the token (when there is one) and, on a
/// loopback server, requests for another host name (a web page elsewhere
/// rebinding its name to 127.0.0.1). Only GET and HEAD are served.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method();
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        let mut r = api::ApiError::Method(method.to_string()).into_response();
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // The page's shell and scripts hold no project data; they load before
    // the page can pass its token on (to the API).
    let public = matches!(request.uri().path(), "/" | "/app.js" | "/app.css");
    match &shared.token {
        Some(token) => {
            if !public && !carries_token(&request, token) {
                return api::ApiError::Unauthorized.into_response();
            }
        }
        None => {
            let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            if !shared.local_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return api::ApiError::Forbidden(format!(
                    "this server answers requests for {} only (Host: {host:?})",
                    shared.local_hosts.join(", ")
                ))
                .into_response();
            }
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// Whether the request carries `token` (query `token=` or a bearer header),
/// compared in constant time.
fn carries_token(request: &Request, token: &str) -> bool {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned);
    let query =
        request.uri().query().and_then(|q| form_pairs(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    [bearer, query].into_iter().flatten().any(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Constant-time equality (the length leaks, not the content).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `key=value` pairs of a query string, percent-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_the_token_encoded() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(page_url(addr, Some("a b&c")), "http://0.0.0.0:8080/?token=a%20b%26c");
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(page_url(addr, None), "http://127.0.0.1:9/");
    }

    #[test]
    fn the_least_recently_used_answer_goes_first() {
        let mut lru = Lru::default();
        for i in 0..Lru::CAPACITY {
            lru.put(format!("k{i}"), Arc::new(vec![i as u8]));
        }
        assert!(lru.get("k0").is_some()); // k1 is now the oldest
        lru.put("new".into(), Arc::new(vec![]));
        assert!(lru.get("k1").is_none());
        assert!(lru.get("k0").is_some() && lru.get("new").is_some() && lru.get("k2").is_some());
        assert_eq!(lru.entries.len(), Lru::CAPACITY);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
