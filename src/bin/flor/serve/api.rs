//! The JSON API of `flor serve`: `/api/runs`, `/api/names`, `/api/curves`,
//! `/api/versions`, `/api/plan`, `/api/replays`. Every answer is JSON;
//! a bad parameter is a 4xx answer `{"error": {"status", "message",
//! "param"}}` naming it, and the work runs on the blocking pool, one
//! project opened per request.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flor::core::store::{RunKey, TensorFilter, TensorName, TensorStat, ValueFilter};
use flor::{Project, Value};
use serde_json::{json, Map};

use super::{curves, versions, Shared};

/// What an API request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A missing, unknown or malformed query parameter.
    #[error("parameter `{param}`: {message}")]
    BadParam {
        /// The parameter.
        param: String,
        /// What is wrong with it.
        message: String,
    },
    /// No such endpoint or object.
    #[error("{0}")]
    NotFound(String),
    /// Not GET or HEAD.
    #[error("method {0} is not allowed: this server is read-only (GET and HEAD)")]
    Method(String),
    /// No or a wrong token.
    #[error("this server needs its token: add ?token=... (as printed by `flor serve`) or `Authorization: Bearer ...`")]
    Unauthorized,
    /// A request for another host name.
    #[error("{0}")]
    Forbidden(String),
    /// What the project said.
    #[error(transparent)]
    Flor(#[from] flor::Error),
    /// The blocking task failed.
    #[error("the request's worker stopped: {0}")]
    Worker(String),
}

impl ApiError {
    /// A bad parameter.
    pub(crate) fn param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadParam { param: param.to_owned(), message: message.into() }
    }

    fn status(&self) -> StatusCode {
        use flor::Error as E;
        match self {
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Flor(E::UnknownRun { .. }) => StatusCode::NOT_FOUND,
            ApiError::Flor(
                E::UnknownNames { .. }
                | E::UnknownLoops { .. }
                | E::BadSelection(_)
                | E::OverrideRefused { .. }
                | E::Replay(_)
                | E::Query(flor::core::StoreError::Query { .. } | flor::core::StoreError::TimedOut { .. }),
            ) => StatusCode::BAD_REQUEST,
            ApiError::Flor(_) | ApiError::Worker(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<flor::core::StoreError> for ApiError {
    fn from(e: flor::core::StoreError) -> ApiError {
        ApiError::Flor(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = json!({ "status": status.as_u16(), "message": self.to_string() });
        if let ApiError::BadParam { param, .. } = &self {
            error["param"] = json!(param);
        }
        (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": error }).to_string()).into_response()
    }
}

/// An API answer.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A request's query parameters, checked against what the endpoint takes.
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `query`, refusing parameters not in `known` (`token` is
    /// always allowed).
    fn parse(query: Option<&str>, known: &[&str]) -> ApiResult<Params> {
        let pairs = match query {
            None | Some("") => Vec::new(),
            Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map_err(|e| ApiError::param("query string", format!("not a valid query string: {e}")))?,
        };
        for (k, _) in &pairs {
            if k != "token" && !known.contains(&k.as_str()) {
                let takes = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                return Err(ApiError::param(k, format!("unknown parameter; this endpoint takes: {takes}")));
            }
        }
        Ok(Params { pairs })
    }

    /// Every value of `key`, comma-separated lists split, empty parts
    /// dropped.
    pub(crate) fn list(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Every value of `key` as given (not split).
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    /// The value of `key`, when given (given twice is an error).
    pub(crate) fn one(&self, key: &str) -> ApiResult<Option<String>> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        let first = values.next().cloned();
        if values.next().is_some() {
            return Err(ApiError::param(key, "given more than once"));
        }
        Ok(first)
    }

    /// The whole number `key`, `default` when absent, within `range`.
    pub(crate) fn number(&self, key: &str, default: usize, range: std::ops::RangeInclusive<usize>) -> ApiResult<usize> {
        let Some(text) = self.one(key)? else { return Ok(default) };
        let n: usize =
            text.trim().parse().map_err(|_| ApiError::param(key, format!("expected a whole number, got {text:?}")))?;
        if !range.contains(&n) {
            return Err(ApiError::param(key, format!("{n} is out of range {}..={}", range.start(), range.end())));
        }
        Ok(n)
    }

    /// The flag `key`: absent, `0`/`false` or `1`/`true`.
    pub(crate) fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.one(key)?.as_deref() {
            None | Some("0" | "false") => Ok(false),
            Some("" | "1" | "true") => Ok(true),
            Some(other) => Err(ApiError::param(key, format!("expected 1, true, 0 or false, got {other:?}"))),
        }
    }
}

/// The API's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api", get(index))
        .route("/api/", get(index))
        .route("/api/project", get(|s, q| answer(s, q, &[], project)))
        .route("/api/runs", get(|s, q| answer(s, q, &["script"], runs)))
        .route("/api/names", get(|s, q| answer(s, q, &[], names)))
        .route("/api/curves", get(|s, q| answer(s, q, curves::PARAMS, curves::curves)))
        .route("/api/versions", get(|s, q| answer(s, q, versions::PARAMS, versions::versions)))
        .route("/api/plan", get(|s, q| answer(s, q, versions::PLAN_PARAMS, versions::plan)))
        .route("/api/replays", get(|s, q| answer(s, q, &[], versions::replays)))
}

/// `/api`: the endpoints and their parameters.
async fn index() -> Response {
    let body = json!({
        "endpoints": {
            "/api/project": "the project: id, root, store engine, run count, scripts, data_version (changes whenever records do)",
            "/api/runs": "runs, oldest first: status, script, code version, args, start, duration, records, replayed names (script=S: one script)",
            "/api/names": "logged names (name, kind, count), loop names, the names drawn first, tensor paths and statistics (curves of tensor:PATH:STAT)",
            "/api/curves": "name=N (repeatable, required), x=global|LOOP, run=TSTAMP (repeatable), width=W (buckets per series), max_points=P (all series together)",
            "/api/versions": "per script: code versions runs used, the diff between them, the statements of apply=NAMES as carried into each, args diff",
            "/api/plan": "apply=NAMES (required), where=PRED, script=S, iter=LOOP=SPEC (repeatable), force=1: the text of `flor replay --dry-run`",
            "/api/replays": "progress of running and finished replays (segments, workers, values recovered)",
        }
    });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Runs `work` on the blocking pool with the request's parameters and
/// answers its JSON.
async fn answer<F>(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    known: &'static [&'static str],
    work: F,
) -> Response
where
    F: FnOnce(&Shared, &Params) -> ApiResult<Body> + Send + 'static,
{
    let params = match Params::parse(query.as_deref(), known) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let done = tokio::task::spawn_blocking(move || work(&shared, &params)).await;
    match done {
        Ok(Ok(Body::Json(value))) => ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response(),
        Ok(Ok(Body::Bytes(bytes))) => {
            // Shared with the cache, not copied.
            let body = axum::body::Bytes::from_owner(ArcBytes(bytes));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::Worker(e.to_string()).into_response(),
    }
}

/// A cached answer's bytes, as a response body's owner.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// An answer's body: a JSON value, or JSON already serialized (cached).
pub(crate) enum Body {
    /// To serialize.
    Json(serde_json::Value),
    /// Serialized.
    Bytes(Arc<Vec<u8>>),
}

/// `/api/project`.
fn project(shared: &Shared, _: &Params) -> ApiResult<Body> {
    let project = shared.open()?;
    let runs = project.runs()?;
    let scripts: BTreeSet<&str> = runs.iter().map(|r| r.meta.filename.as_str()).collect();
    Ok(Body::Json(json!({
        "projid": project.projid(),
        "root": project.root().display().to_string(),
        "store": project.store_kind().map(|k| k.as_str()),
        "runs": runs.len(),
        "scripts": scripts,
        "data_version": super::data_version(&runs),
    })))
}

/// `/api/names`.
fn names(shared: &Shared, _: &Params) -> ApiResult<Body> {
    let project = shared.open()?;
    let store = project.store()?;
    let names: Vec<_> =
        shared.names(&project)?.iter().map(|n| json!({ "name": n.name, "kind": n.kind, "count": n.count })).collect();
    let keys: Vec<RunKey> = store.runs()?.iter().map(|r| r.key).collect();
    let mut loops = BTreeSet::new();
    store.scan_loops(&keys, &mut |_, span| {
        if !loops.contains(&*span.name) {
            loops.insert(span.name.to_string());
        }
    })?;
    let default = default_curves(shared, &project)?;
    let tensors = tensor_paths(store)?;
    let stats: Vec<&str> = TensorStat::ALL.iter().map(|s| s.as_str()).collect();
    Ok(Body::Json(json!({
        "names": names,
        "loops": loops,
        "default": default,
        "tensors": tensors,
        "tensor_stats": stats,
    })))
}

/// The `<checkpoint>.<tensor>` paths with statistics in the `tensors` view
/// (none when the store lacks the capability), sorted.
pub(crate) fn tensor_paths(store: &dyn flor::core::Store) -> flor::Result<Vec<String>> {
    let mut paths = BTreeSet::new();
    match store.scan_tensors(TensorFilter::All, &mut |v| {
        if !paths.contains(&TensorName::path_of(v.checkpoint, &v.row.tensor)) {
            paths.insert(TensorName::path_of(v.checkpoint, &v.row.tensor));
        }
    }) {
        Ok(()) | Err(flor::core::StoreError::Unsupported { .. }) => Ok(paths.into_iter().collect()),
        Err(e) => Err(e.into()),
    }
}

/// The names the page draws first: those replays recovered (two at most),
/// then the loss-like logged name with the most values (per step rather
/// than per epoch), else the most logged name.
pub(crate) fn default_curves(shared: &Shared, project: &Project) -> flor::Result<Vec<String>> {
    let names = shared.names(project)?;
    let mut chosen: Vec<String> =
        replayed_names(project)?.into_values().flatten().collect::<BTreeSet<_>>().into_iter().take(2).collect();
    let logs = names.iter().filter(|n| n.kind == "log" && !chosen.contains(&n.name));
    let loss = logs.clone().filter(|n| n.name.to_lowercase().contains("loss")).max_by_key(|n| n.count);
    if chosen.len() < 2 {
        chosen.extend(loss.or_else(|| logs.max_by_key(|n| n.count)).map(|n| n.name.clone()));
    }
    Ok(chosen)
}

/// Per run key, the names its replays recovered.
pub(crate) fn replayed_names(project: &Project) -> flor::Result<HashMap<RunKey, BTreeSet<String>>> {
    let mut out: HashMap<RunKey, BTreeSet<String>> = HashMap::new();
    for c in project.store()?.checks()? {
        out.entry(c.run).or_default().extend(c.check.recovered);
    }
    Ok(out)
}

/// A JSON object's fields.
pub(crate) type JsonMap = Map<String, serde_json::Value>;

/// Per run key, its run-level values: args (`flor.arg`) and the others.
pub(crate) fn run_level(shared: &Shared, project: &Project) -> flor::Result<HashMap<RunKey, (JsonMap, JsonMap)>> {
    let names = shared.names(project)?;
    let kinds: HashMap<&str, &str> = names.iter().map(|n| (n.name.as_str(), n.kind.as_str())).collect();
    let mut out: HashMap<RunKey, (Map<_, _>, Map<_, _>)> = HashMap::new();
    project.store()?.scan_values(ValueFilter::RunLevel, &mut |row| {
        let entry = out.entry(row.run).or_default();
        let side = if kinds.get(row.name).is_some_and(|k| *k == "arg") { &mut entry.0 } else { &mut entry.1 };
        side.insert(row.name.to_owned(), value_json(&row.value));
    })?;
    Ok(out)
}

/// A value as JSON (non-finite floats as their names, text as text).
pub(crate) fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Float(f) if !f.is_finite() => json!(f.to_string()),
        v => v.to_json(),
    }
}

/// Seconds between two timestamps, when both parse.
fn seconds_between(start: &str, end: Option<&str>) -> Option<f64> {
    let (a, b) = (flor::core::time::micros_from_iso(start)?, flor::core::time::micros_from_iso(end?)?);
    Some((b - a) as f64 / 1e6)
}

/// `/api/runs`.
fn runs(shared: &Shared, params: &Params) -> ApiResult<Body> {
    let script = params.one("script")?;
    let project = shared.open()?;
    let rows = project.runs()?;
    if let Some(s) = &script {
        if !rows.iter().any(|r| &r.meta.filename == s) {
            let known: BTreeSet<&str> = rows.iter().map(|r| r.meta.filename.as_str()).collect();
            return Err(ApiError::param(
                "script",
                format!("no run of {s:?}; scripts: {}", known.into_iter().collect::<Vec<_>>().join(", ")),
            ));
        }
    }
    let replayed = replayed_names(&project)?;
    let mut level = run_level(shared, &project)?;
    let labels = versions::version_labels(shared, project.root(), &rows);
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if script.as_ref().is_some_and(|s| s != &r.meta.filename) {
            continue;
        }
        let m = &r.meta;
        let (args, values) = level.remove(&r.key).unwrap_or_default();
        let version = labels.get(&r.key);
        out.push(json!({
            "tstamp": m.tstamp,
            "script": m.filename,
            "status": m.status.as_str(),
            "commit": m.commit,
            "version": version.map(|v| v.label.clone()),
            "version_index": version.map(|v| v.index),
            "code": version.and_then(|v| v.digest.clone()),
            "args": args,
            "values": values,
            "argv": m.argv,
            "host": m.host,
            "start": m.tstamp,
            "ended": m.ended,
            "duration_s": seconds_between(&m.tstamp, m.ended.as_deref()),
            "records": r.records,
            "replayed": replayed.get(&r.key).cloned().unwrap_or_default(),
        }));
    }
    Ok(Body::Json(json!({ "runs": out })))
}

/// The project's root, for the replay work folders.
pub(crate) fn replay_dir(root: &Path) -> std::path::PathBuf {
    root.join(flor::FLOR_DIR).join("replay")
}
