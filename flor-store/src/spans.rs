//! Loop spans as both backends store them: the pure part of ingesting a
//! batch's iterations (split long spans, lay the batch over the stored spans
//! around it, merge spans that continue each other). Each backend reads the
//! stored neighbours and writes the result in its own SQL.

use std::collections::BTreeMap;

use flor_core::store::LoopSpan;

/// A stored loop span, keyed by its first context (kept beside it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub count: i64,
    pub parent: Option<i64>,
    pub loop_id: i64,
    pub first_iteration: i64,
    pub value: Option<String>,
}

impl Span {
    /// A batch's span with its loop name interned as `loop_id`.
    pub(crate) fn of(l: &LoopSpan, loop_id: i64) -> Span {
        Span {
            count: i64::from(l.count),
            parent: l.parent.map(i64::from),
            loop_id,
            first_iteration: l.first_iteration as i64,
            value: l.value.clone(),
        }
    }

    /// The part of the span that starts `skip` iterations in.
    pub(crate) fn tail(&self, skip: i64) -> Span {
        Span { count: self.count - skip, first_iteration: self.first_iteration + skip, ..self.clone() }
    }

    /// Whether `next`, starting at `next_first`, continues this span (at
    /// `first`): the next iterations of the same loop.
    fn continued_by(&self, first: i64, next_first: i64, next: &Span) -> bool {
        self.value.is_none()
            && next.value.is_none()
            && self.parent == next.parent
            && self.loop_id == next.loop_id
            && first + self.count == next_first
            && self.first_iteration + self.count == next.first_iteration
    }
}

/// Cuts spans longer than `max` iterations into pieces of at most `max`.
pub(crate) fn split_long(spans: Vec<(i64, Span)>, max: i64) -> Vec<(i64, Span)> {
    let mut out = Vec::with_capacity(spans.len());
    for (mut first, mut span) in spans {
        while span.count > max {
            let rest = span.tail(max);
            out.push((first, Span { count: max, ..span }));
            first += max;
            span = rest;
        }
        out.push((first, span));
    }
    out
}

/// Removes contexts `a .. b` from a set of non-overlapping spans, trimming
/// or splitting the spans that cover part of them.
fn carve(spans: &mut BTreeMap<i64, Span>, a: i64, b: i64) {
    if let Some((&k, s)) = spans.range(..a).next_back() {
        if k + s.count > a {
            let s = s.clone();
            if k + s.count > b {
                spans.insert(b, s.tail(b - k));
            }
            if let Some(head) = spans.get_mut(&k) {
                head.count = a - k;
            }
        }
    }
    let inside: Vec<i64> = spans.range(a..b).map(|(&k, _)| k).collect();
    for k in inside {
        if let Some(s) = spans.remove(&k) {
            if k + s.count > b {
                spans.insert(b, s.tail(b - k));
            }
        }
    }
}

/// Lays the batch's spans `new` over the `stored` spans around them
/// (iterations of the same contexts are replaced), then merges spans that
/// continue each other, each up to `max` iterations. The result replaces
/// every stored span from the first of `stored` on.
pub(crate) fn merge(mut spans: BTreeMap<i64, Span>, new: Vec<(i64, Span)>, max: i64) -> Vec<(i64, Span)> {
    for (first, span) in new {
        carve(&mut spans, first, first + span.count);
        spans.insert(first, span);
    }
    let mut merged: Vec<(i64, Span)> = Vec::with_capacity(spans.len());
    for (mut first, mut span) in spans {
        if let Some((f, last)) = merged.last_mut() {
            if last.continued_by(*f, first, &span) && last.count < max {
                let take = span.count.min(max - last.count);
                last.count += take;
                if take == span.count {
                    continue;
                }
                span = span.tail(take);
                first += take;
            }
        }
        merged.push((first, span));
    }
    merged
}
