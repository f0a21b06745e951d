//! flor-propagate: carry log statements written in the newest version of a
//! script into old versions of it that were edited, refactored and renamed
//! since.
//!
//! Propagation is code in, code out: no files, no git (a caller reads the
//! old version from wherever it keeps it). The [`LanguagePropagator`] trait,
//! its result types and the [`Registry`] live in `flor-core` and are
//! re-exported here; [`registry()`] is one with every propagator of this
//! crate registered. [`python()`] is the Python implementation:
//!
//! 1. both sources are parsed with tree-sitter-python and converted once
//!    into arena trees with cached subtree shape, height and size (`tree`);
//! 2. GumTree matches the new tree against the old one: top-down isomorphic
//!    subtrees, bottom-up containers by Dice similarity, recovery in small
//!    containers (`gumtree`);
//! 3. each statement is placed after its nearest mapped preceding sibling
//!    (else before its nearest mapped following one, else first in its
//!    mapped block), its identifiers renamed by majority vote over the
//!    mapping, and inserted as text into the old source, which must still
//!    parse (`place`).
//!
//! ```
//! use flor_propagate::{python, LanguagePropagator, Outcome};
//!
//! let new = "\
//! for epoch in range(epochs):
//!     for x, y in loader:
//!         optimizer.zero_grad()
//!         loss = criterion(model(x), y)
//!         loss.backward()
//!         flor.log(\"loss\", loss.item())
//!         optimizer.step()
//! ";
//! let old = "\
//! for epoch in range(epochs):
//!     for x, y in loader:
//!         opt.zero_grad()
//!         ## forward
//!         err = criterion(model(x), y)
//!         err.backward()
//!         opt.step()
//! ";
//! let p = python().propagate(new, &[6], old).unwrap();
//! assert!(p.source.contains("err.backward()\n        flor.log(\"loss\", err.item())\n        opt.step()"), "{}", p.source);
//! assert_eq!(p.outcomes[0], Outcome::Placed { line: 7, renames: vec![("loss".into(), "err".into())] });
//! ```
//!
//! Besides propagating, it answers what replay asks of a script from the
//! syntax tree: its log statements ([`LanguagePropagator::log_statements`])
//! and the flor loops a statement runs in ([`LanguagePropagator::loop_scope`]):
//!
//! ```
//! use flor_propagate::{python, LanguagePropagator, LogStatement, LoopScope};
//!
//! let script = "\
//! import flordb as flor
//! for epoch in flor.loop(\"epoch\", range(3)):
//!     for i, batch in enumerate(flor.loop(\"step\", loader)):
//!         flor.log(\"loss\",
//!                  train(batch))
//! ";
//! let logs = python().log_statements(script, &["loss"]).unwrap();
//! assert_eq!(logs, [LogStatement { line: 4, name: "loss".into() }]);
//! assert_eq!(
//!     python().loop_scope(script, 4).unwrap(),
//!     LoopScope::Static { loops: vec!["epoch".into(), "step".into()], after_first_loop: true }
//! );
//! ```
//!
//! Inputs are bounded: a tree with more than [`DEFAULT_MAX_NODES`] nodes (or
//! the value of the [`MAX_NODES_ENV`] environment variable) is refused with
//! [`PropagateError::TooLarge`].

#![warn(missing_docs)]

mod flor_api;
mod gumtree;
pub mod lint;
mod place;
mod python;
mod similar;
mod tree;

use std::sync::Arc;

pub use flor_core::propagate::{
    EditedAnchor, Finding, LanguagePropagator, LogStatement, LoopScope, Outcome, PropagateError, Propagation, Registry,
    Severity, Side,
};
pub use gumtree::Params;
pub use tree::{max_nodes, DEFAULT_MAX_NODES, MAX_NODES_ENV};

/// The Python propagator (tree-sitter-python, GumTree).
///
/// Besides [`propagate`](LanguagePropagator::propagate), it reads flor's
/// Python API from the syntax tree: `flor.log`, `flor.loop` and
/// `flor.iteration` called through the name the script imports flordb as
/// (`import flordb as flor`, any other alias, `import flordb`, or `from
/// flordb import log, loop`; `flor` when the script imports no flordb).
#[derive(Clone, Debug)]
pub struct PythonPropagator {
    params: Params,
    max_nodes: usize,
}

impl Default for PythonPropagator {
    /// FlorDB's matcher parameters and the node limit from [`max_nodes`].
    fn default() -> Self {
        PythonPropagator { params: Params::default(), max_nodes: max_nodes() }
    }
}

impl PythonPropagator {
    /// With matcher parameters other than FlorDB's defaults.
    pub fn with_params(self, params: Params) -> Self {
        PythonPropagator { params, ..self }
    }

    /// With another limit on the syntax nodes of each source.
    pub fn with_max_nodes(self, max_nodes: usize) -> Self {
        PythonPropagator { max_nodes, ..self }
    }

    /// The matcher parameters in use.
    pub fn params(&self) -> Params {
        self.params
    }
}

impl LanguagePropagator for PythonPropagator {
    fn language(&self) -> &'static str {
        "python"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["py", "pyw"]
    }

    fn propagate(&self, new_source: &str, lines: &[usize], old_source: &str) -> Result<Propagation, PropagateError> {
        place::propagate(&python::Python::new(), self.params, self.max_nodes, new_source, lines, old_source)
    }

    /// `flor.log("NAME", value)` calls (also `flor.log(name="NAME",
    /// value=...)`, single or triple quotes, over several lines) that are
    /// part of a simple statement (`flor.log(...)`, `x = flor.log(...)`);
    /// not those inside a lambda (they run when it is called) or in the
    /// header of an `if`/`for`/`while`/`with`.
    ///
    /// ```
    /// use flor_propagate::{python, LanguagePropagator, LogStatement};
    ///
    /// let script = "import flordb as fl\n# fl.log('loss', 0)\nfl.log(\n    'loss', 1)\ny = fl.log(name='acc', value=2)\n";
    /// let found = python().log_statements(script, &[]).unwrap();
    /// assert_eq!(found, [LogStatement { line: 3, name: "loss".into() }, LogStatement { line: 5, name: "acc".into() }]);
    /// ```
    fn log_statements(&self, source: &str, names: &[&str]) -> Result<Vec<LogStatement>, PropagateError> {
        flor_api::log_statements(&python::Python::new(), source, names)
    }

    /// Enclosing flor loops are the `for` statements whose iterable calls
    /// `flor.loop` (also inside `enumerate(...)`, `zip(...)`) and the `with
    /// flor.iteration(...)` statements, named by their first positional
    /// argument or `name=`, which must be a string literal. A statement in a
    /// function (`def`, `async def`, `lambda`) is static only when the
    /// function itself holds the enclosing loop; a class body runs where
    /// the class statement does. `Dynamic` when the syntax cannot tell: a
    /// statement in a function outside any loop of it, a loop named by a
    /// non-literal, two loops in one header, or a `flor.loop` /
    /// `flor.iteration` used anywhere other than a loop header (passed
    /// around, consumed by `list(...)` or a comprehension).
    ///
    /// ```
    /// use flor_propagate::{python, LanguagePropagator, LoopScope};
    ///
    /// let script = "import flordb as flor\ndef helper(x):\n    flor.log('x', x)\nfor e in flor.loop('epoch', range(3)):\n    helper(e)\n";
    /// let LoopScope::Dynamic { reason } = python().loop_scope(script, 3).unwrap() else { panic!() };
    /// assert!(reason.starts_with("inside function `helper`"), "{reason}");
    /// assert_eq!(
    ///     python().loop_scope(script, 5).unwrap(),
    ///     LoopScope::Static { loops: vec!["epoch".into()], after_first_loop: true }
    /// );
    /// ```
    fn loop_scope(&self, source: &str, line: usize) -> Result<LoopScope, PropagateError> {
        flor_api::loop_scope(&python::Python::new(), source, line)
    }

    /// flor's source checks for Python (see [`lint`] for each
    /// code): a name passed to `flor.checkpointing` that a flor loop of the
    /// block rebinds, a random generator created outside the loop that the
    /// loop draws from and no checkpoint holds, and randomness no seed
    /// fixes.
    ///
    /// ```
    /// use flor_propagate::{python, LanguagePropagator, Severity};
    ///
    /// let script = "\
    /// import flordb as flor
    /// w = [0.0]
    /// with flor.checkpointing(w=w):
    ///     for epoch in flor.loop(\"epoch\", range(3)):
    ///         w = [x - 0.1 for x in w]
    /// ";
    /// let found = python().lint(script).unwrap();
    /// assert_eq!(found.len(), 1);
    /// assert_eq!((found[0].line, found[0].column), (5, 9));
    /// assert_eq!(found[0].code, "flor::rebound-checkpoint");
    /// assert_eq!(found[0].severity, Severity::Warning);
    /// // In place is fine.
    /// assert!(python().lint(&script.replace("w = [x - 0.1 for x in w]", "w[0] -= 0.1")).unwrap().is_empty());
    /// ```
    fn lint(&self, source: &str) -> Result<Vec<Finding>, PropagateError> {
        lint::lint(&python::Python::new(), source)
    }

    /// `python -c "import flordb"`.
    fn startup_probe(&self) -> Option<Vec<String>> {
        Some(vec!["-c".into(), "import flordb".into()])
    }
}

/// The Python propagator with default parameters.
pub fn python() -> PythonPropagator {
    PythonPropagator::default()
}

/// A registry with every propagator of this crate registered (today: Python,
/// for `.py` and `.pyw`). Register your own on it to extend or override.
///
/// ```
/// use std::path::Path;
///
/// let registry = flor_propagate::registry();
/// assert_eq!(registry.for_path(Path::new("src/train.py")).map(|p| p.language()), Some("python"));
/// assert!(registry.for_path(Path::new("train.rs")).is_none());
/// assert_eq!(registry.extensions(), ["py", "pyw"]);
/// ```
pub fn registry() -> Registry {
    Registry::new().with(Arc::new(python()))
}
