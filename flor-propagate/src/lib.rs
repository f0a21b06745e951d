//! flor-propagate: language propagators that carry log statements from the
//! newest version of a script into old versions. The trait and result types
//! are defined in `flor-core` and re-exported here; the tree-sitter Python
//! propagator is not implemented yet (it is the subject of its own issue).

pub use flor_core::propagate::{LanguagePropagator, Outcome, PropagateError, Propagation};
