//! `/api/curves`: logged values per run along a loop, downsampled on the
//! server so that a thousand runs of ten thousand steps stay a small
//! answer.
//!
//! x is an integer position: `x=global` (the default) counts the
//! iterations of the value's own loop across the run (step 0, 1, ... over
//! every epoch), `x=LOOP` is the iteration index of the enclosing loop
//! named LOOP. Every series of a name shares one x grid (what the chart
//! draws): the exact positions when there are at most `budget` of them,
//! else `budget / 2` equal buckets, each holding the smallest and the
//! largest value of the series in it, in the order they were logged
//! (min/max per bucket: spikes survive).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use flor::core::store::{LoopSpan, RunKey, RunRow, TensorFilter, TensorName, ValueFilter};
use flor::core::Source;
use serde_json::json;

use super::api::{ApiError, ApiResult, Body, Params};
use super::versions::{version_labels, VersionLabel};
use super::{data_version, Shared};
use flor::Project;

/// The parameters `/api/curves` takes.
pub(crate) const PARAMS: &[&str] = &["name", "x", "run", "width", "max_points"];

/// At most this many names per request.
const MAX_NAMES: usize = 16;

/// A value on the way to a series: its position, its value, whether a
/// replay recovered it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub(crate) x: u32,
    pub(crate) y: f32,
    pub(crate) replay: bool,
}

/// One run's loop iterations, for placing its values.
pub(crate) struct RunLoops {
    /// Sorted by `first_ctx`.
    spans: Vec<LoopSpan>,
    /// Per span: the iterations of the same loop in earlier spans.
    before: Vec<u64>,
}

impl RunLoops {
    /// Indexes `spans` (any order).
    pub(crate) fn new(mut spans: Vec<LoopSpan>) -> RunLoops {
        spans.sort_by_key(|s| s.first_ctx);
        let mut seen: HashMap<Arc<str>, u64> = HashMap::new();
        let before = spans
            .iter()
            .map(|s| {
                let n = seen.entry(s.name.clone()).or_default();
                let b = *n;
                *n += u64::from(s.count);
                b
            })
            .collect();
        RunLoops { spans, before }
    }

    fn span_of(&self, ctx: u32) -> Option<usize> {
        let i = self.spans.partition_point(|s| s.first_ctx <= ctx).checked_sub(1)?;
        let s = &self.spans[i];
        (u64::from(ctx) < u64::from(s.first_ctx) + u64::from(s.count)).then_some(i)
    }

    /// The position of context `ctx` along `x` (`None`: global).
    pub(crate) fn position(&self, ctx: u32, x: Option<&str>) -> Option<u64> {
        let i = self.span_of(ctx)?;
        let s = &self.spans[i];
        let Some(name) = x else {
            return Some(self.before[i] + u64::from(ctx - s.first_ctx));
        };
        let (mut i, mut ctx) = (i, ctx);
        // Up the enclosing loops (a bounded walk: parents come first).
        for _ in 0..=self.spans.len() {
            let s = &self.spans[i];
            if &*s.name == name {
                return Some(s.first_iteration + u64::from(ctx - s.first_ctx));
            }
            ctx = s.parent?;
            i = self.span_of(ctx)?;
        }
        None
    }
}

/// A name's series on a shared grid.
#[derive(Debug, PartialEq)]
pub(crate) struct Grid {
    /// The x positions.
    pub(crate) x: Vec<f64>,
    /// Per series, a value (or none) per position.
    pub(crate) y: Vec<Vec<Option<f32>>>,
    /// Per series, the positions holding a replayed value.
    pub(crate) replay: Vec<Vec<usize>>,
    /// Whether values were bucketed.
    pub(crate) downsampled: bool,
}

/// Puts `series` (each sorted by x) on one grid of at most about `budget`
/// positions (see the module docs).
pub(crate) fn grid(series: &[&[Point]], budget: usize) -> Grid {
    let budget = budget.max(4);
    let lo = series.iter().filter_map(|s| s.first()).map(|p| u64::from(p.x)).min();
    let hi = series.iter().filter_map(|s| s.last()).map(|p| u64::from(p.x)).max();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Grid {
            x: Vec::new(),
            y: vec![Vec::new(); series.len()],
            replay: vec![Vec::new(); series.len()],
            downsampled: false,
        };
    };
    let span = hi - lo + 1;
    if span <= budget as u64 {
        let n = span as usize;
        let mut ys = Vec::with_capacity(series.len());
        let mut replays = Vec::with_capacity(series.len());
        for s in series {
            let (mut sum, mut count) = (vec![0f64; n], vec![0u32; n]);
            let mut replay = vec![false; n];
            for p in s.iter() {
                let i = (u64::from(p.x) - lo) as usize;
                sum[i] += f64::from(p.y);
                count[i] += 1;
                replay[i] |= p.replay;
            }
            ys.push(sum.iter().zip(&count).map(|(s, c)| (*c > 0).then(|| (s / f64::from(*c)) as f32)).collect());
            replays.push((0..n).filter(|i| replay[*i]).collect());
        }
        let x = (0..n).map(|i| (lo + i as u64) as f64).collect();
        return Grid { x, y: ys, replay: replays, downsampled: false };
    }
    let buckets = (budget / 2) as u64;
    let width = span as f64 / buckets as f64;
    let bucket_of = |x: u32| (((u64::from(x) - lo) as f64 / width) as u64).min(buckets - 1) as usize;
    let nb = buckets as usize;
    let x = (0..nb)
        .flat_map(|b| {
            let start = lo as f64 + b as f64 * width;
            [start + width * 0.25, start + width * 0.75]
        })
        .collect();
    let mut ys = Vec::with_capacity(series.len());
    let mut replays = Vec::with_capacity(series.len());
    for s in series {
        let mut y = vec![None; 2 * nb];
        let mut replay = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let b = bucket_of(s[i].x);
            let mut j = i;
            let (mut min, mut max) = ((i, s[i].y), (i, s[i].y));
            let mut any_replay = false;
            while j < s.len() && bucket_of(s[j].x) == b {
                let p = s[j];
                if p.y < min.1 || min.1.is_nan() {
                    min = (j, p.y);
                }
                if p.y > max.1 || max.1.is_nan() {
                    max = (j, p.y);
                }
                any_replay |= p.replay;
                j += 1;
            }
            let (first, second) = if min.0 <= max.0 { (min.1, max.1) } else { (max.1, min.1) };
            y[2 * b] = Some(first);
            y[2 * b + 1] = Some(second);
            if any_replay {
                replay.extend([2 * b, 2 * b + 1]);
            }
            i = j;
        }
        ys.push(y);
        replays.push(replay);
    }
    Grid { x, y: ys, replay: replays, downsampled: true }
}

/// `y` as the f64 with the shortest decimal form that reads back as `y`
/// (the answer stays short: `0.1`, not `0.10000000149011612`).
fn short(y: f32) -> f64 {
    y.to_string().parse().unwrap_or(f64::from(y))
}

/// The selected runs: all, or those `run=` names.
fn selected_runs<'a>(rows: &'a [RunRow], wanted: &[String]) -> ApiResult<Vec<&'a RunRow>> {
    if wanted.is_empty() {
        return Ok(rows.iter().collect());
    }
    let mut out = Vec::with_capacity(wanted.len());
    for t in wanted {
        match rows.iter().find(|r| &r.meta.tstamp == t) {
            Some(r) => out.push(r),
            None => return Err(ApiError::param("run", format!("no run started at {t:?} (see /api/runs)"))),
        }
    }
    Ok(out)
}

/// Every run's values of one name along one x, each run's sorted by x
/// (logging order within a position).
pub(crate) type NamePoints = HashMap<RunKey, Vec<Point>>;

/// At most this many points are kept between requests (12 bytes each).
const MAX_CACHED_POINTS: usize = 20_000_000;

/// The points of names already read, by name, x and data version: reading
/// a name means reading every record of it (the store scans names, not
/// runs), so it is done once per change of the records, and any selection
/// of runs, width or budget is then drawn from memory.
#[derive(Default)]
pub(crate) struct PointCache {
    entries: Vec<(String, Arc<NamePoints>, usize)>,
}

impl PointCache {
    fn get(&self, key: &str) -> Option<Arc<NamePoints>> {
        self.entries.iter().find(|e| e.0 == key).map(|e| e.1.clone())
    }

    fn put(&mut self, key: String, points: Arc<NamePoints>) {
        let n: usize = points.values().map(Vec::len).sum();
        if n > MAX_CACHED_POINTS {
            return;
        }
        self.entries.retain(|e| e.0 != key);
        while self.entries.iter().map(|e| e.2).sum::<usize>() + n > MAX_CACHED_POINTS {
            self.entries.remove(0);
        }
        self.entries.push((key, points, n));
    }
}

/// Reads every run's values of `names` in one scan, placed along `x`.
fn read_points(
    store: &dyn flor::core::Store,
    names: &[&str],
    x: Option<&str>,
    loops: &HashMap<RunKey, RunLoops>,
) -> flor::Result<Vec<NamePoints>> {
    let mut points: Vec<NamePoints> = vec![HashMap::new(); names.len()];
    let slot: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // Values come run by run: look the run up once per run, not per value,
    // and gather its points per name before handing them to the map.
    let mut current: Option<(RunKey, Option<&RunLoops>)> = None;
    let mut gathered: Vec<Vec<Point>> = vec![Vec::new(); names.len()];
    let flush = |points: &mut Vec<NamePoints>, gathered: &mut Vec<Vec<Point>>, run: RunKey| {
        for (n, g) in gathered.iter_mut().enumerate().filter(|(_, g)| !g.is_empty()) {
            points[n].entry(run).or_default().append(g);
        }
    };
    store.scan_values(ValueFilter::Names(names), &mut |row| {
        let here = match current {
            Some((key, here)) if key == row.run => here,
            previous => {
                if let Some((key, _)) = previous {
                    flush(&mut points, &mut gathered, key);
                }
                let here = loops.get(&row.run);
                current = Some((row.run, here));
                here
            }
        };
        let (Some(ctx), Some(l), Some(y)) = (row.ctx, here, row.value.as_f64()) else { return };
        let n = if names.len() == 1 {
            0
        } else if let Some(&n) = slot.get(row.name) {
            n
        } else {
            return;
        };
        if let Some(px) = l.position(ctx, x) {
            let x = u32::try_from(px).unwrap_or(u32::MAX);
            gathered[n].push(Point { x, y: y as f32, replay: row.source == Source::Replay });
        }
    })?;
    if let Some((key, _)) = current {
        flush(&mut points, &mut gathered, key);
    }
    for per_run in &mut points {
        for s in per_run.values_mut() {
            s.sort_by_key(|p| p.x); // stable
        }
    }
    Ok(points)
}

/// Reads every run's values of the tensor statistic `name`
/// (`tensor:<checkpoint>.<tensor>:<stat>`), each at its checkpoint's loop
/// position; `None` when no stored tensor is what it names.
fn read_tensor_points(
    store: &dyn flor::core::Store,
    name: &TensorName<'_>,
    x: Option<&str>,
    loops: &HashMap<RunKey, RunLoops>,
) -> flor::Result<Option<NamePoints>> {
    let splits: Vec<(&str, &str)> = name.splits().collect();
    let mut points: NamePoints = HashMap::new();
    let mut seen = false;
    store.scan_tensors(TensorFilter::Named(&splits), &mut |v| {
        if !name.matches(v.checkpoint, &v.row.tensor) {
            return;
        }
        seen = true;
        let (Some(ctx), Some(l)) = (v.ctx, loops.get(&v.run)) else { return };
        let (Some(y), Some(px)) = (name.stat.of(v.row).and_then(|y| y.as_f64()), l.position(ctx, x)) else { return };
        let x = u32::try_from(px).unwrap_or(u32::MAX);
        points.entry(v.run).or_default().push(Point { x, y: y as f32, replay: false });
    })?;
    for s in points.values_mut() {
        s.sort_by_key(|p| p.x);
    }
    Ok(seen.then_some(points))
}

/// The points of `names` along `x` (read now, or kept from before).
fn points_of(
    shared: &Shared,
    project: &Project,
    names: &[String],
    x: Option<&str>,
    version: &str,
) -> ApiResult<Vec<Arc<NamePoints>>> {
    let key = |name: &str| format!("{name}|{x:?}|{version}");
    // One reader at a time: a second request for the same names waits
    // and then finds them.
    let mut cache = shared.point_cache.lock().unwrap_or_else(|p| p.into_inner());
    let missing: Vec<&str> = names.iter().map(String::as_str).filter(|n| cache.get(&key(n)).is_none()).collect();
    if !missing.is_empty() {
        let store = project.store()?;
        let keys: Vec<RunKey> = store.runs()?.iter().map(|r| r.key).collect();
        let mut spans: HashMap<RunKey, Vec<LoopSpan>> = HashMap::new();
        store.scan_loops(&keys, &mut |run, span| spans.entry(run).or_default().push(span.clone()))?;
        if let Some(x) = x {
            let loops: BTreeSet<&str> = spans.values().flatten().map(|s| &*s.name).collect();
            if !loops.contains(x) {
                let known: Vec<&str> = loops.into_iter().collect();
                return Err(ApiError::param(
                    "x",
                    format!("no run has a loop named {x:?}; use global or one of: {}", known.join(", ")),
                ));
            }
        }
        let loops: HashMap<RunKey, RunLoops> = spans.into_iter().map(|(k, v)| (k, RunLoops::new(v))).collect();
        let (tensors, plain): (Vec<&str>, Vec<&str>) = missing.iter().partition(|n| TensorName::parse(n).is_some());
        for (name, points) in plain.iter().zip(read_points(store, &plain, x, &loops)?) {
            cache.put(key(name), Arc::new(points));
        }
        for name in tensors {
            let Some(parsed) = TensorName::parse(name) else { continue };
            match read_tensor_points(store, &parsed, x, &loops)? {
                Some(points) => cache.put(key(name), Arc::new(points)),
                None => {
                    let known = super::api::tensor_paths(store)?;
                    let known = known.iter().take(20).map(|p| format!("tensor:{p}:{}", parsed.stat.as_str()));
                    return Err(
                        flor::Error::UnknownNames { names: vec![name.to_owned()], known: known.collect() }.into()
                    );
                }
            }
        }
    }
    // Kept unless larger than the cache: then read again for this answer.
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        match cache.get(&key(n)) {
            Some(p) => out.push(p),
            None => {
                return Err(ApiError::param(
                    "name",
                    format!("{n}: too many values to draw at once (more than {MAX_CACHED_POINTS})"),
                ))
            }
        }
    }
    Ok(out)
}

/// Reads the points of the page's first curves ahead of its first
/// request (run once, in the background, when the server starts).
pub(crate) fn warm(shared: &Shared) -> ApiResult<()> {
    let project = shared.open()?;
    let rows = project.runs()?;
    version_labels(shared, project.root(), &rows);
    let names = super::api::default_curves(shared, &project)?;
    points_of(shared, &project, &names, None, &data_version(&rows))?;
    Ok(())
}

/// One chart: the series of `runs` on one grid.
fn chart_json(
    name: &str,
    x: Option<&str>,
    runs: &[&RunRow],
    points: &NamePoints,
    labels: &HashMap<RunKey, VersionLabel>,
    budget: usize,
) -> serde_json::Value {
    let empty = Vec::new();
    let per_run: Vec<&[Point]> = runs.iter().map(|r| points.get(&r.key).unwrap_or(&empty).as_slice()).collect();
    let g = grid(&per_run, budget);
    let series: Vec<_> = runs
        .iter()
        .zip(g.y.iter().zip(&g.replay))
        .zip(&per_run)
        .filter(|(_, raw)| !raw.is_empty())
        .map(|((r, (y, replay)), raw)| {
            let v = labels.get(&r.key);
            let replayed = match (replay.is_empty(), raw.iter().all(|p| p.replay)) {
                (true, _) => "none",
                (false, true) => "all",
                (false, false) => "some",
            };
            json!({
                "run": r.meta.tstamp,
                "script": r.meta.filename,
                "version": v.map(|v| v.label.clone()),
                "version_index": v.map(|v| v.index),
                "points": raw.len(),
                "y": y.iter().map(|v| v.map(short)).collect::<Vec<_>>(),
                "replay": replay,
                "replayed": replayed,
            })
        })
        .collect();
    json!({
        "name": name,
        "x_label": x.unwrap_or("global step"),
        "x": g.x,
        "downsampled": g.downsampled,
        "series": series,
    })
}

/// `/api/curves`.
pub(crate) fn curves(shared: &Shared, params: &Params) -> ApiResult<Body> {
    let names = params.list("name");
    if names.is_empty() {
        return Err(ApiError::param("name", "required: the logged names to draw (name=loss&name=acc, see /api/names)"));
    }
    if names.len() > MAX_NAMES {
        return Err(ApiError::param("name", format!("at most {MAX_NAMES} names at once, got {}", names.len())));
    }
    let x = params.one("x")?.filter(|x| x != "global");
    let width = params.number("width", 1000, 4..=100_000)?;
    let max_points = params.number("max_points", 200_000, 1_000..=10_000_000)?;
    let wanted = params.list("run");
    let project = shared.open()?;
    let rows = project.runs()?;
    let version = data_version(&rows);
    let key = format!("{names:?}|{x:?}|{width}|{max_points}|{wanted:?}|{version}");
    if let Some(hit) = shared.curve_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Body::Bytes(hit));
    }
    // Tensor statistics are checked as they are read.
    let name_refs: Vec<&str> = names.iter().map(String::as_str).filter(|n| TensorName::parse(n).is_none()).collect();
    let found = project.store()?.has_names(&name_refs)?;
    let unknown: Vec<String> =
        name_refs.iter().zip(&found).filter(|(_, f)| !**f).map(|(n, _)| (*n).to_owned()).collect();
    if !unknown.is_empty() {
        let known = shared.names(&project)?.iter().map(|n| n.name.clone()).collect();
        return Err(flor::Error::UnknownNames { names: unknown, known }.into());
    }
    let runs = selected_runs(&rows, &wanted)?;
    let points = points_of(shared, &project, &names, x.as_deref(), &version)?;
    let labels = version_labels(shared, project.root(), &rows);
    let budget = (max_points / runs.len().max(1)).clamp(4, width);
    let charts: Vec<_> =
        names.iter().zip(&points).map(|(n, p)| chart_json(n, x.as_deref(), &runs, p, &labels, budget)).collect();
    let bytes = Arc::new(json!({ "charts": charts }).to_string().into_bytes());
    shared.curve_cache.lock().unwrap_or_else(|p| p.into_inner()).put(key, bytes.clone());
    Ok(Body::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first_ctx: u32, count: u32, parent: Option<u32>, name: &str, first_iteration: u64) -> LoopSpan {
        LoopSpan { first_ctx, count, parent, name: name.into(), first_iteration, value: None }
    }

    /// Two epochs (ctx 0 and 4) of three steps each (ctx 1-3, 5-7).
    fn nested() -> RunLoops {
        RunLoops::new(vec![
            span(0, 1, None, "epoch", 0),
            span(1, 3, Some(0), "step", 0),
            span(4, 1, None, "epoch", 1),
            span(5, 3, Some(4), "step", 0),
        ])
    }

    #[test]
    fn global_steps_count_across_epochs() {
        let l = nested();
        let xs: Vec<_> = [1, 2, 3, 5, 6, 7].iter().map(|c| l.position(*c, None)).collect();
        assert_eq!(xs, [0, 1, 2, 3, 4, 5].map(Some));
        assert_eq!(l.position(4, None), Some(1), "an epoch-level value: the epoch count");
        assert_eq!(l.position(9, None), None, "an unknown context");
    }

    #[test]
    fn a_named_loop_gives_the_enclosing_iteration() {
        let l = nested();
        assert_eq!(l.position(6, Some("epoch")), Some(1));
        assert_eq!(l.position(6, Some("step")), Some(1));
        assert_eq!(l.position(4, Some("step")), None, "an epoch value has no step");
    }

    fn pts(ys: &[(u32, f32, bool)]) -> Vec<Point> {
        ys.iter().map(|&(x, y, replay)| Point { x, y, replay }).collect()
    }

    #[test]
    fn small_series_keep_every_position() {
        let a = pts(&[(0, 1.0, false), (1, 2.0, false), (2, 3.0, true)]);
        let b = pts(&[(1, 5.0, false)]);
        let g = grid(&[&a, &b], 100);
        assert!(!g.downsampled);
        assert_eq!(g.x, [0.0, 1.0, 2.0]);
        assert_eq!(g.y[0], [Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(g.y[1], [None, Some(5.0), None]);
        assert_eq!(g.replay[0], [2]);
        assert!(g.replay[1].is_empty());
    }

    #[test]
    fn buckets_keep_min_and_max_in_logging_order() {
        // 10,000 steps into 50 buckets: a spike at step 4,321 survives.
        let mut s: Vec<Point> = (0..10_000).map(|i| Point { x: i, y: 1.0, replay: false }).collect();
        s[4321].y = 99.0;
        s[7000].y = -5.0;
        let g = grid(&[&s], 100);
        assert!(g.downsampled);
        assert_eq!(g.x.len(), 100);
        let ys: Vec<f32> = g.y[0].iter().map(|v| v.expect("every bucket has values")).collect();
        assert_eq!(ys.iter().cloned().fold(f32::MIN, f32::max), 99.0);
        assert_eq!(ys.iter().cloned().fold(f32::MAX, f32::min), -5.0);
        let b = (4321 * 50 / 10_000) as usize;
        assert_eq!((ys[2 * b], ys[2 * b + 1]), (1.0, 99.0), "the smaller came first");
    }

    #[test]
    fn buckets_mark_replayed_values() {
        let s: Vec<Point> = (0..1000).map(|i| Point { x: i, y: i as f32, replay: i >= 500 }).collect();
        let g = grid(&[&s], 20);
        assert!(g.downsampled);
        assert_eq!(g.replay[0], (10..20).collect::<Vec<_>>());
    }
}
