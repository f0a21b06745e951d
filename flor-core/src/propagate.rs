//! The language-propagator trait and its registry: carry log statements
//! written in the newest version of a script into an older version of it,
//! code in, code out (no files, no git). A [`Registry`] picks the propagator
//! of a file by its extension.
//!
//! Implementations live in `flor-propagate` (Python via tree-sitter, and
//! `flor_propagate::registry()` with it registered).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What happened to one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Inserted at `line` (1-based, in the output), with identifier renames
    /// applied (`new name -> old name`).
    Placed {
        /// Line of the inserted statement in the output.
        line: usize,
        /// Renames applied to the statement.
        renames: Vec<(String, String)>,
    },
    /// The old version already has this statement; nothing added.
    AlreadyPresent {
        /// Line where it is in the output (its line in the old version,
        /// moved down by the statements placed before it).
        line: usize,
    },
    /// Not placed; `reason` says why (no mapped context, ambiguous, ...).
    Failed {
        /// Why.
        reason: String,
    },
}

/// The result of propagating statements into one old version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation {
    /// The old source with the placed statements inserted.
    pub source: String,
    /// One outcome per requested statement, in request order.
    pub outcomes: Vec<Outcome>,
}

/// Errors that stop a whole propagation (per-statement failures are
/// [`Outcome::Failed`] instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropagateError {
    /// A source does not parse.
    #[error("{which} source does not parse at line {line}, column {column}: {message}")]
    Unparsable {
        /// `new` or `old`.
        which: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser found.
        message: String,
    },
    /// A requested line holds no statement.
    #[error("line {0} of the new source holds no statement")]
    NoStatement(usize),
    /// An input exceeds the matcher's limits.
    #[error("input too large to match: {0}")]
    TooLarge(String),
}

/// A propagator for one language.
pub trait LanguagePropagator: Send + Sync {
    /// Language name (`python`).
    fn language(&self) -> &'static str;

    /// File extensions handled, without the dot (`["py"]`).
    fn extensions(&self) -> &'static [&'static str];

    /// Inserts the statements found at `lines` (1-based) of `new_source`
    /// into `old_source`.
    fn propagate(&self, new_source: &str, lines: &[usize], old_source: &str) -> Result<Propagation, PropagateError>;

    /// Whether this propagator handles `path` (by extension).
    fn handles(&self, path: &Path) -> bool {
        path.extension().and_then(|e| e.to_str()).is_some_and(|e| self.extensions().contains(&e))
    }
}

/// The propagators flor knows, picked by file.
///
/// Start empty ([`Registry::new`]) or from `flor_propagate::registry()`
/// (Python registered) and [`register`](Registry::register) your own: a
/// later registration wins for a file both handle, and replaces an earlier
/// propagator of the same [`language`](LanguagePropagator::language)
/// outright.
///
/// ```
/// use std::path::Path;
/// use std::sync::Arc;
/// # use flor_core::propagate::{LanguagePropagator, PropagateError, Propagation};
/// use flor_core::propagate::Registry;
///
/// # struct Julia;
/// # impl LanguagePropagator for Julia {
/// #     fn language(&self) -> &'static str { "julia" }
/// #     fn extensions(&self) -> &'static [&'static str] { &["jl"] }
/// #     fn propagate(&self, _: &str, _: &[usize], old: &str) -> Result<Propagation, PropagateError> {
/// #         Ok(Propagation { source: old.into(), outcomes: vec![] })
/// #     }
/// # }
/// let mut registry = Registry::new();
/// registry.register(Arc::new(Julia));
/// assert_eq!(registry.for_path(Path::new("src/train.jl")).map(|p| p.language()), Some("julia"));
/// assert!(registry.for_path(Path::new("train.py")).is_none());
/// assert_eq!(registry.extensions(), ["jl"]);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    /// In registration order; searched from the end.
    propagators: Vec<Arc<dyn LanguagePropagator>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds `propagator`. It wins over earlier ones for the files both
    /// handle, and replaces an earlier propagator of the same language.
    pub fn register(&mut self, propagator: Arc<dyn LanguagePropagator>) -> &mut Self {
        self.propagators.retain(|p| p.language() != propagator.language());
        self.propagators.push(propagator);
        self
    }

    /// [`register`](Registry::register), by value: `Registry::new().with(a).with(b)`.
    pub fn with(mut self, propagator: Arc<dyn LanguagePropagator>) -> Self {
        self.register(propagator);
        self
    }

    /// The propagator for `path` (the latest registered one that
    /// [`handles`](LanguagePropagator::handles) it), if any.
    pub fn for_path(&self, path: &Path) -> Option<&dyn LanguagePropagator> {
        self.propagators.iter().rev().find(|p| p.handles(path)).map(|p| &**p)
    }

    /// The propagator registered for `language` (`python`), if any.
    pub fn for_language(&self, language: &str) -> Option<&dyn LanguagePropagator> {
        self.propagators.iter().find(|p| p.language() == language).map(|p| &**p)
    }

    /// The registered propagators, in registration order.
    pub fn languages(&self) -> impl Iterator<Item = &dyn LanguagePropagator> + '_ {
        self.propagators.iter().map(|p| &**p)
    }

    /// Every extension some propagator handles, without the dot, in
    /// registration order, each once (for messages such as "supported:
    /// .py, .pyw").
    pub fn extensions(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for e in self.propagators.iter().flat_map(|p| p.extensions().iter().copied()) {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }

    /// Whether no propagator is registered.
    pub fn is_empty(&self) -> bool {
        self.propagators.is_empty()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.propagators.iter().map(|p| (p.language(), p.extensions()))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(&'static str, &'static [&'static str]);

    impl LanguagePropagator for Fake {
        fn language(&self) -> &'static str {
            self.0
        }
        fn extensions(&self) -> &'static [&'static str] {
            self.1
        }
        fn propagate(&self, _: &str, _: &[usize], old: &str) -> Result<Propagation, PropagateError> {
            Ok(Propagation { source: old.into(), outcomes: vec![] })
        }
    }

    #[test]
    fn a_later_registration_wins_and_replaces_its_language() {
        let mut r = Registry::new();
        assert!(r.is_empty() && r.for_path(Path::new("a.py")).is_none());
        r.register(Arc::new(Fake("python", &["py", "pyw"])));
        r.register(Arc::new(Fake("mypy", &["py", "pyi"])));
        assert_eq!(r.for_path(Path::new("a/b.py")).map(|p| p.language()), Some("mypy"));
        assert_eq!(r.for_path(Path::new("b.pyw")).map(|p| p.language()), Some("python"));
        assert!(r.for_path(Path::new("b.rs")).is_none() && r.for_path(Path::new("py")).is_none());
        assert_eq!(r.extensions(), ["py", "pyw", "pyi"]);
        // The same language again replaces the first.
        r.register(Arc::new(Fake("python", &["py"])));
        let langs: Vec<&str> = r.languages().map(|p| p.language()).collect();
        assert_eq!(langs, ["mypy", "python"]);
        assert_eq!(r.for_path(Path::new("a.py")).map(|p| p.language()), Some("python"));
        assert!(r.for_path(Path::new("b.pyw")).is_none());
        assert_eq!(r.for_language("mypy").map(|p| p.extensions()), Some(&["py", "pyi"][..]));
        assert_eq!(format!("{r:?}"), r#"[("mypy", ["py", "pyi"]), ("python", ["py"])]"#);
    }
}
