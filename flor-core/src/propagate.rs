//! The language-propagator trait: carry log statements written in the newest
//! version of a script into an older version of it. Implementations live in
//! `flor-propagate` (Python via tree-sitter).

use std::path::Path;

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
