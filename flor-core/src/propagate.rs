//! The language-propagator trait and its registry.
//!
//! A [`LanguagePropagator`] knows one language's syntax: it carries log
//! statements written in the newest version of a script into an older
//! version of it ([`LanguagePropagator::propagate`]), finds a script's log
//! statements ([`LanguagePropagator::log_statements`]) and says in which of
//! flor's loops a statement runs ([`LanguagePropagator::loop_scope`]), which
//! is what hindsight replay needs to know to plan. It may also check a
//! script for code that replay cannot reproduce ([`LanguagePropagator::lint`],
//! [`Finding`]). Everything here is code in, answers out: no files, no git.
//! A [`Registry`] picks the propagator of a file by its extension.
//!
//! Implementations live in `flor-propagate` (Python via tree-sitter, and
//! `flor_propagate::registry()` with it registered).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

/// What happened to one statement.
///
/// Its [`Display`](fmt::Display) is the one-line report flor prints:
///
/// ```
/// use flor_core::propagate::{EditedAnchor, Outcome, Side};
///
/// let placed = Outcome::Placed { line: 17, renames: vec![("loss".into(), "err".into())] };
/// assert_eq!(placed.to_string(), "placed at line 17 (renamed loss -> err)");
/// let near_edit = Outcome::Approximate {
///     line: 17,
///     renames: vec![],
///     anchor: EditedAnchor {
///         side: Side::After,
///         new_line: 14,
///         new_text: "total += F.nll_loss(out, y, reduction=\"sum\").item()".into(),
///         old_line: 16,
///         old_text: "total += F.nll_loss(out, y, size_average=False).data[0]".into(),
///         similarity: 68,
///         rival: None,
///     },
/// };
/// assert_eq!(
///     near_edit.to_string(),
///     "placed at line 17 after an edited counterpart: `total += F.nll_loss(out, y, size_average=False).data[0]` \
///      (line 16, 68 % similar to `total += F.nll_loss(out, y, reduction=\"sum\").item()` at line 14 of the newest version)"
/// );
/// assert_eq!(near_edit.line(), Some(17));
/// assert!(near_edit.is_placed() && !near_edit.is_exact());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Inserted at `line` (1-based, in the output), with identifier renames
    /// applied (`new name -> old name`), next to a statement the old
    /// version has unchanged (up to renames).
    Placed {
        /// Line of the inserted statement in the output.
        line: usize,
        /// Renames applied to the statement.
        renames: Vec<(String, String)>,
    },
    /// Inserted at `line` next to a statement that was edited since: the
    /// neighbour it has in the newest version has no identical counterpart
    /// in the old one, and the most similar statement stood in for it.
    /// Right in most cases, but a judgement: `anchor` names both statements
    /// and how similar they are, so a person can check it.
    Approximate {
        /// Line of the inserted statement in the output.
        line: usize,
        /// Renames applied to the statement.
        renames: Vec<(String, String)>,
        /// The edited statement it was placed next to.
        anchor: EditedAnchor,
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

impl Outcome {
    /// The statement's line in the output, unless it failed.
    pub fn line(&self) -> Option<usize> {
        match self {
            Outcome::Placed { line, .. } | Outcome::Approximate { line, .. } | Outcome::AlreadyPresent { line } => {
                Some(*line)
            }
            Outcome::Failed { .. } => None,
        }
    }

    /// Whether the statement was inserted ([`Outcome::Placed`] or
    /// [`Outcome::Approximate`]).
    pub fn is_placed(&self) -> bool {
        matches!(self, Outcome::Placed { .. } | Outcome::Approximate { .. })
    }

    /// Whether the outcome needs no second look: placed next to an
    /// unchanged statement, or already present.
    pub fn is_exact(&self) -> bool {
        matches!(self, Outcome::Placed { .. } | Outcome::AlreadyPresent { .. })
    }

    /// The renames applied to an inserted statement (empty otherwise).
    pub fn renames(&self) -> &[(String, String)] {
        match self {
            Outcome::Placed { renames, .. } | Outcome::Approximate { renames, .. } => renames,
            _ => &[],
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Placed { line, .. } | Outcome::Approximate { line, .. } => write!(f, "placed at line {line}")?,
            Outcome::AlreadyPresent { line } => return write!(f, "already present at line {line}"),
            Outcome::Failed { reason } => return write!(f, "FAILED: {reason}"),
        }
        if let Outcome::Approximate { anchor, .. } = self {
            write!(f, " {anchor}")?;
        }
        let renames = self.renames();
        if !renames.is_empty() {
            let list: Vec<String> = renames.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
            write!(f, " (renamed {})", list.join(", "))?;
        }
        Ok(())
    }
}

/// Where a statement went relative to its anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Right after the anchor (the statement follows it in the newest
    /// version).
    After,
    /// Right before the anchor (the statement precedes it in the newest
    /// version).
    Before,
    /// Inside the anchor: a compound statement (a function, a loop) whose
    /// counterpart is uncertain.
    Within,
}

/// The edited statement an [`Outcome::Approximate`] statement was placed
/// next to: its text in the newest version, its counterpart's in the old
/// one, and how similar the two are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EditedAnchor {
    /// Whether the statement went after or before the counterpart.
    pub side: Side,
    /// 1-based line of the neighbour in the newest version.
    pub new_line: usize,
    /// Its first line, trimmed.
    pub new_text: String,
    /// 1-based line of the counterpart in the output.
    pub old_line: usize,
    /// Its first line, trimmed.
    pub old_text: String,
    /// Similarity of the two, in percent (0-100); how it is computed is the
    /// propagator's (Python: assignment targets and operator, called names,
    /// arguments).
    pub similarity: u8,
    /// Another old statement about as similar, which has no counterpart of
    /// its own (a new function that replaced two old ones): its line in
    /// the output and its first line. The statement could as well belong
    /// there.
    pub rival: Option<(usize, String)>,
}

impl fmt::Display for EditedAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::After => "after",
            Side::Before => "before",
            Side::Within => "within",
        };
        write!(
            f,
            "{side} an edited counterpart: `{}` (line {}, {} % similar to `{}` at line {} of the newest version",
            self.old_text, self.old_line, self.similarity, self.new_text, self.new_line
        )?;
        if let Some((line, text)) = &self.rival {
            write!(f, "; `{text}` at line {line} is about as similar")?;
        }
        f.write_str(")")
    }
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
        /// `new` or `old` (the two sources of [`LanguagePropagator::propagate`]),
        /// `input` (the one source of the other methods).
        which: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser found.
        message: String,
    },
    /// A requested line holds no statement.
    #[error("line {line} of the {which} source holds no statement")]
    NoStatement {
        /// `new` (a line given to [`LanguagePropagator::propagate`]) or
        /// `input` (a line given to [`LanguagePropagator::loop_scope`]).
        which: &'static str,
        /// The 1-based line.
        line: usize,
    },
    /// An input exceeds the matcher's limits.
    #[error("input too large to match: {0}")]
    TooLarge(String),
}

/// A log statement of a script: a statement that logs a value under a
/// name known from the syntax (for Python, `flor.log("loss", loss.item())`).
///
/// ```
/// use flor_core::propagate::LogStatement;
///
/// let s = LogStatement { line: 12, name: "loss".into() };
/// assert_eq!(s.to_string(), "line 12 logs `loss`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogStatement {
    /// The 1-based first line of the statement (a multi-line call: the line
    /// it starts on). This is the line to give
    /// [`LanguagePropagator::propagate`].
    pub line: usize,
    /// The logged name.
    pub name: String,
}

impl fmt::Display for LogStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} logs `{}`", self.line, self.name)
    }
}

/// Where a statement runs relative to flor's loops, as far as the syntax
/// tree shows ([`LanguagePropagator::loop_scope`]).
///
/// Hindsight replay plans with it: a statement inside the outer loop only
/// needs the outer iterations, one outside every loop only the setup (or
/// the teardown), one inside a nested loop every iteration in full.
///
/// **Callers must treat [`LoopScope::Dynamic`] as "runs anywhere": replay
/// every iteration in full.** It is what a propagator answers whenever the
/// syntax alone cannot tell where the statement runs.
///
/// ```
/// use flor_core::propagate::LoopScope;
///
/// // `flor.log("loss", l)` inside `for s in flor.loop("step", ...)` inside
/// // `for e in flor.loop("epoch", ...)`:
/// let inner = LoopScope::Static { loops: vec!["epoch".into(), "step".into()], after_first_loop: true };
/// assert_eq!(inner.loops(), Some(&["epoch".to_string(), "step".to_string()][..]));
/// assert_eq!(inner.innermost(), Some("step"));
///
/// // A statement in a helper function: it runs wherever the helper is called.
/// let helper = LoopScope::Dynamic { reason: "inside function `helper`, which may be called from any loop".into() };
/// assert!(helper.is_dynamic());
/// assert_eq!(helper.loops(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LoopScope {
    /// The syntax shows where the statement runs.
    Static {
        /// The flor loops enclosing the statement, outermost first (empty:
        /// outside every loop). For a statement inside a function that
        /// itself contains the enclosing loops, only the loops inside the
        /// function: flor's outer loop is the outermost one, so a function
        /// holding it is not called from inside another flor loop.
        loops: Vec<String>,
        /// Whether a flor loop header starts before the statement. With
        /// `loops` empty, `false` means setup (before the first loop),
        /// `true` teardown (after it). Always `true` when `loops` is not
        /// empty.
        after_first_loop: bool,
    },
    /// Where the statement runs depends on what happens at run time (it is
    /// in a function that may be called from any loop, a loop's name is not
    /// a literal, a loop is built in a way the syntax does not show, it is
    /// in a plain loop that also runs a flor loop): replay every iteration
    /// in full.
    Dynamic {
        /// Why, for the user (`inside function `helper`, which may be
        /// called from any loop`).
        reason: String,
    },
}

impl LoopScope {
    /// The enclosing loops, outermost first, when the syntax shows them
    /// (`Some(&[])`: outside every loop); `None` when [`LoopScope::Dynamic`].
    pub fn loops(&self) -> Option<&[String]> {
        match self {
            LoopScope::Static { loops, .. } => Some(loops),
            LoopScope::Dynamic { .. } => None,
        }
    }

    /// The innermost enclosing loop's name, when static and inside one.
    pub fn innermost(&self) -> Option<&str> {
        self.loops().and_then(|l| l.last()).map(String::as_str)
    }

    /// Whether the statement may run anywhere ([`LoopScope::Dynamic`]).
    pub fn is_dynamic(&self) -> bool {
        matches!(self, LoopScope::Dynamic { .. })
    }
}

/// How much a [`Finding`] matters, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing: replayed values may differ from the recorded ones in
    /// some runs (unseeded randomness).
    Note,
    /// Replay cannot reproduce the recorded run as written (state it does
    /// not restore); `flor lint` exits with a non-zero status.
    Warning,
}

impl Severity {
    /// `note` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One source check's finding: code at a position of a script that replay
/// cannot reproduce, or may not ([`LanguagePropagator::lint`]).
///
/// Codes are namespaced by who checks: `flor::...` for flor's own checks
/// (`flor::rebound-checkpoint`, `flor::uncheckpointed-generator`,
/// `flor::unseeded-randomness`); a framework plugin uses its own prefix.
/// The struct is `#[non_exhaustive]` (fields may be added): build one with
/// [`Finding::new`].
///
/// ```
/// use flor_core::propagate::{Finding, Severity};
///
/// let f = Finding::new(12, 9, "flor::rebound-checkpoint", Severity::Warning, "`w` is rebound")
///     .with_hint("update it in place");
/// assert_eq!(f.to_string(), "12:9: warning[flor::rebound-checkpoint]: `w` is rebound");
/// assert_eq!(
///     f.render("train.py"),
///     "train.py:12:9: warning[flor::rebound-checkpoint]: `w` is rebound\n    hint: update it in place\n"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was found, namespaced (`flor::rebound-checkpoint`).
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong and what it does to a replay, in one sentence.
    pub message: String,
    /// How to fix it, when there is a usual way.
    pub hint: Option<String>,
}

impl Finding {
    /// A finding without a hint.
    pub fn new(
        line: usize,
        column: usize,
        code: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Finding {
        Finding { line, column, code: code.into(), severity, message: message.into(), hint: None }
    }

    /// The same finding with `hint`.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Finding {
        self.hint = Some(hint.into());
        self
    }

    /// `path:line:column: severity[code]: message`, then the hint on an
    /// indented line; ends with a newline.
    pub fn render(&self, path: &str) -> String {
        let mut s = format!("{path}:{self}\n");
        if let Some(h) = &self.hint {
            s.push_str("    hint: ");
            s.push_str(h);
            s.push('\n');
        }
        s
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}[{}]: {}", self.line, self.column, self.severity, self.code, self.message)
    }
}

/// A propagator for one language: carries statements between versions of a
/// script and answers the questions replay asks about a script's syntax.
///
/// All methods are pure: source text in, answers out. Register an
/// implementation in a [`Registry`] to have flor use it for files with its
/// [`extensions`](LanguagePropagator::extensions).
///
/// A minimal propagator for a toy language whose statements are lines and
/// whose log statements read `log NAME` (a real one matches syntax trees):
///
/// ```
/// use flor_core::propagate::{LanguagePropagator, LogStatement, LoopScope, Outcome, PropagateError, Propagation};
///
/// struct Toy;
///
/// impl LanguagePropagator for Toy {
///     fn language(&self) -> &'static str { "toy" }
///     fn extensions(&self) -> &'static [&'static str] { &["toy"] }
///
///     fn propagate(&self, new: &str, lines: &[usize], old: &str) -> Result<Propagation, PropagateError> {
///         // Appends each statement at the end of the old version.
///         let mut source = old.to_string();
///         let mut outcomes = Vec::new();
///         for &line in lines {
///             let text = new.lines().nth(line.wrapping_sub(1))
///                 .ok_or(PropagateError::NoStatement { which: "new", line })?;
///             source.push_str(text);
///             source.push('\n');
///             outcomes.push(Outcome::Placed { line: source.lines().count(), renames: vec![] });
///         }
///         Ok(Propagation { source, outcomes })
///     }
///
///     fn log_statements(&self, source: &str, names: &[&str]) -> Result<Vec<LogStatement>, PropagateError> {
///         Ok(source.lines().enumerate()
///             .filter_map(|(i, l)| l.strip_prefix("log ").map(|n| LogStatement { line: i + 1, name: n.trim().into() }))
///             .filter(|s| names.is_empty() || names.contains(&s.name.as_str()))
///             .collect())
///     }
///
///     fn loop_scope(&self, _source: &str, _line: usize) -> Result<LoopScope, PropagateError> {
///         Ok(LoopScope::Dynamic { reason: "toy scripts have no loop syntax".into() })
///     }
/// }
///
/// let p = Toy.propagate("a\nlog x\n", &[2], "a\n").unwrap();
/// assert_eq!(p.source, "a\nlog x\n");
/// assert_eq!(Toy.log_statements("a\nlog x\n", &[]).unwrap(), [LogStatement { line: 2, name: "x".into() }]);
/// assert!(Toy.handles(std::path::Path::new("train.toy")));
/// ```
pub trait LanguagePropagator: Send + Sync {
    /// Language name (`python`).
    fn language(&self) -> &'static str;

    /// File extensions handled, without the dot (`["py"]`).
    fn extensions(&self) -> &'static [&'static str];

    /// Inserts the statements found at `lines` (1-based) of `new_source`
    /// into `old_source`.
    fn propagate(&self, new_source: &str, lines: &[usize], old_source: &str) -> Result<Propagation, PropagateError>;

    /// The log statements of `source` whose logged name is one of `names`
    /// (empty `names`: all of them), in source order, found from the syntax
    /// tree: a call in a comment or a string is not one, a call over several
    /// lines is one statement at its first line. Statements whose name is
    /// only known at run time (not a literal) are not listed. A statement
    /// logging several names is listed once per name.
    ///
    /// For Python (`flor_propagate::python()`), with `names` = `["loss"]`:
    ///
    /// ```text
    /// 1  import flordb as flor
    /// 2  # flor.log("loss", 0)              not a statement: a comment
    /// 3  flor.log(
    /// 4      "loss", l)                     -> LogStatement { line: 3, name: "loss" }
    /// 5  print('flor.log("loss", 1)')       not a statement: a string
    /// 6  flor.log("acc", a)                 another name
    /// ```
    ///
    /// A source that does not parse is [`PropagateError::Unparsable`] (with
    /// `which` = `input`).
    fn log_statements(&self, source: &str, names: &[&str]) -> Result<Vec<LogStatement>, PropagateError>;

    /// The distinct lines of [`log_statements`](LanguagePropagator::log_statements),
    /// ascending: the `lines` to give [`propagate`](LanguagePropagator::propagate)
    /// to carry the statements logging `names`. Derived; not meant to be
    /// overridden.
    fn log_statement_lines(&self, source: &str, names: &[&str]) -> Result<Vec<usize>, PropagateError> {
        let mut lines: Vec<usize> = self.log_statements(source, names)?.into_iter().map(|s| s.line).collect();
        lines.sort_unstable();
        lines.dedup();
        Ok(lines)
    }

    /// Where the statement starting at `line` (1-based) of `source` runs
    /// relative to flor's loops, as far as the syntax tree shows. Callers
    /// must treat [`LoopScope::Dynamic`] as "runs anywhere: replay every
    /// iteration in full".
    ///
    /// For Python (`flor_propagate::python()`):
    ///
    /// ```text
    /// 1  import flordb as flor
    /// 2  flor.log("lr", lr)                    Static { loops: [], after_first_loop: false }    (setup)
    /// 3  def helper(x):
    /// 4      flor.log("x", x)                  Dynamic { reason: "inside function `helper`, ..." }
    /// 5  for e in flor.loop("epoch", range(3)):
    /// 6      for i, b in enumerate(flor.loop("step", data)):
    /// 7          flor.log("loss", f(b))        Static { loops: ["epoch", "step"], after_first_loop: true }
    /// 8      flor.log("acc", acc)              Static { loops: ["epoch"], after_first_loop: true }
    /// 9  flor.log("final", acc)                Static { loops: [], after_first_loop: true }     (teardown)
    /// ```
    ///
    /// A line where no statement starts is [`PropagateError::NoStatement`]
    /// (`which` = `input`); a source that does not parse is
    /// [`PropagateError::Unparsable`].
    fn loop_scope(&self, source: &str, line: usize) -> Result<LoopScope, PropagateError>;

    /// Source checks: code in `source` that replay cannot reproduce as
    /// written (state a checkpoint does not capture, randomness a restore
    /// does not rewind), in source order. Default: no checks.
    ///
    /// For Python (`flor_propagate::python()`), among others:
    ///
    /// ```text
    /// 1  with flor.checkpointing(w=w):
    /// 2      for epoch in flor.loop("epoch", range(5)):
    /// 3          w = w - lr * grad(w)         warning[flor::rebound-checkpoint]: the checkpoint keeps the first `w`
    /// ```
    ///
    /// A source that does not parse is [`PropagateError::Unparsable`].
    fn lint(&self, source: &str) -> Result<Vec<Finding>, PropagateError> {
        let _ = source;
        Ok(Vec::new())
    }

    /// Interpreter arguments that start a process and load flor's front end
    /// for this language and nothing else, to measure the fixed cost of a
    /// replay process (Python: `["-c", "import flordb"]`, run as
    /// `python -c "import flordb"`). Default: `None`, no probe (the cost
    /// model's default is used).
    fn startup_probe(&self) -> Option<Vec<String>> {
        None
    }

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
/// # use flor_core::propagate::{LanguagePropagator, LogStatement, LoopScope, PropagateError, Propagation};
/// use flor_core::propagate::Registry;
///
/// # struct Julia;
/// # impl LanguagePropagator for Julia {
/// #     fn language(&self) -> &'static str { "julia" }
/// #     fn extensions(&self) -> &'static [&'static str] { &["jl"] }
/// #     fn propagate(&self, _: &str, _: &[usize], old: &str) -> Result<Propagation, PropagateError> {
/// #         Ok(Propagation { source: old.into(), outcomes: vec![] })
/// #     }
/// #     fn log_statements(&self, _: &str, _: &[&str]) -> Result<Vec<LogStatement>, PropagateError> { Ok(vec![]) }
/// #     fn loop_scope(&self, _: &str, _: usize) -> Result<LoopScope, PropagateError> {
/// #         Ok(LoopScope::Dynamic { reason: "unknown".into() })
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
    /// Extra source checks (framework plugins), asked after the propagator.
    checkers: Vec<Arc<dyn SourceChecker>>,
}

/// A script's findings, and the [`SourceChecker`]s that failed on it as
/// `(checker name, why)`.
pub type Linted = (Vec<Finding>, Vec<(String, String)>);

/// Source checks beyond a language propagator's own: what a framework
/// plugin knows about its framework's idioms (a PRNG key split in the loop
/// but not checkpointed, nondeterministic kernels switched on).
/// [`Registry::add_checker`] adds one; [`Registry::lint`] asks every
/// checker after the file's propagator.
pub trait SourceChecker: Send + Sync {
    /// Who checks, for messages (`plugin pytorch 0.1.0`).
    fn name(&self) -> String;

    /// The findings for a script in `language` (a propagator's
    /// [`language`](LanguagePropagator::language)); `path` is for messages.
    /// A checker that cannot answer (a plugin that trapped) says why in
    /// the error, which names the checker; callers show it and go on.
    fn check(&self, language: &str, path: &Path, source: &str) -> Result<Vec<Finding>, String>;
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

    /// Adds a source checker (a framework plugin's lint), asked by
    /// [`Registry::lint`] after the file's propagator.
    pub fn add_checker(&mut self, checker: Arc<dyn SourceChecker>) -> &mut Self {
        self.checkers.push(checker);
        self
    }

    /// The source checkers, in the order they were added.
    pub fn checkers(&self) -> impl Iterator<Item = &dyn SourceChecker> + '_ {
        self.checkers.iter().map(|c| &**c)
    }

    /// The source checks of the script at `path`: the findings of its
    /// propagator's [`lint`](LanguagePropagator::lint), then each
    /// [`SourceChecker`]'s for the propagator's language, sorted by line
    /// and column; empty when no propagator handles the file. A checker
    /// that fails is skipped; [`Registry::lint_with_failures`] says which.
    pub fn lint(&self, path: &Path, source: &str) -> Result<Vec<Finding>, PropagateError> {
        self.lint_with_failures(path, source).map(|(findings, _)| findings)
    }

    /// [`Registry::lint`], plus the checkers that failed, as
    /// `(checker name, why)`.
    pub fn lint_with_failures(&self, path: &Path, source: &str) -> Result<Linted, PropagateError> {
        let Some(p) = self.for_path(path) else { return Ok((Vec::new(), Vec::new())) };
        let mut findings = p.lint(source)?;
        let mut failures = Vec::new();
        for c in &self.checkers {
            match c.check(p.language(), path, source) {
                Ok(f) => findings.extend(f),
                Err(why) => failures.push((c.name(), why)),
            }
        }
        findings.sort_by_key(|f| (f.line, f.column));
        Ok((findings, failures))
    }

    /// Whether no propagator is registered.
    pub fn is_empty(&self) -> bool {
        self.propagators.is_empty()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("propagators", &self.propagators.iter().map(|p| (p.language(), p.extensions())).collect::<Vec<_>>())
            .field("checkers", &self.checkers.iter().map(|c| c.name()).collect::<Vec<_>>())
            .finish()
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
        fn log_statements(&self, _: &str, _: &[&str]) -> Result<Vec<LogStatement>, PropagateError> {
            Ok(vec![])
        }
        fn loop_scope(&self, _: &str, _: usize) -> Result<LoopScope, PropagateError> {
            Ok(LoopScope::Static { loops: vec![], after_first_loop: false })
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
        assert_eq!(
            format!("{r:?}"),
            r#"Registry { propagators: [("mypy", ["py", "pyi"]), ("python", ["py"])], checkers: [] }"#
        );
    }

    #[test]
    fn startup_probe_defaults_to_none() {
        assert_eq!(Fake("x", &[]).startup_probe(), None);
    }

    struct Checker(Result<Vec<Finding>, String>);

    impl SourceChecker for Checker {
        fn name(&self) -> String {
            "checker".into()
        }
        fn check(&self, language: &str, _: &Path, _: &str) -> Result<Vec<Finding>, String> {
            assert_eq!(language, "x");
            self.0.clone()
        }
    }

    #[test]
    fn checkers_join_the_propagators_findings_sorted_and_failures_are_reported() {
        let mut r = Registry::new().with(Arc::new(Fake("x", &["x"])));
        r.add_checker(Arc::new(Checker(Ok(vec![
            Finding::new(9, 1, "fw::late", Severity::Warning, "m"),
            Finding::new(2, 4, "fw::early", Severity::Note, "m"),
        ]))));
        r.add_checker(Arc::new(Checker(Err("trapped".into()))));
        let (found, failed) = r.lint_with_failures(Path::new("a.x"), "s").unwrap();
        assert_eq!(found.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(), ["fw::early", "fw::late"]);
        assert_eq!(failed, [("checker".to_owned(), "trapped".to_owned())]);
        assert_eq!(r.lint(Path::new("a.x"), "s").unwrap().len(), 2);
        // No propagator for the file: no checker is asked either.
        assert_eq!(r.lint(Path::new("a.y"), "s"), Ok(vec![]));
    }

    #[test]
    fn lint_defaults_to_no_findings_and_the_registry_asks_the_files_propagator() {
        assert_eq!(Fake("x", &["x"]).lint("anything"), Ok(vec![]));
        let r = Registry::new().with(Arc::new(Fake("x", &["x"])));
        assert_eq!(r.lint(Path::new("a.x"), "s"), Ok(vec![]));
        assert_eq!(r.lint(Path::new("a.unknown"), "s"), Ok(vec![]));
        assert!(Severity::Note < Severity::Warning);
        let f = Finding::new(3, 1, "flor::x", Severity::Note, "m");
        assert_eq!(f.render("a.py"), "a.py:3:1: note[flor::x]: m\n");
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"line": 3, "column": 1, "code": "flor::x", "severity": "note", "message": "m", "hint": null})
        );
    }
}
