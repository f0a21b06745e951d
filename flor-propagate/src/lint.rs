//! Source checks for Python scripts
//! ([`LanguagePropagator::lint`](flor_core::propagate::LanguagePropagator::lint)):
//! code that hindsight replay cannot reproduce as written. Replay re-runs
//! the setup, restores what `flor.checkpointing` saved at the end of an
//! outer iteration and goes on from there, so anything the loop carries
//! from one iteration to the next outside those objects comes back wrong.
//!
//! - `flor::rebound-checkpoint` (warning): a name passed to
//!   `flor.checkpointing` that a flor loop inside the block rebinds
//!   (`w = w - lr * g`): the checkpoint keeps saving the object the name
//!   had when the block began.
//! - `flor::uncheckpointed-generator` (warning, only in scripts that
//!   checkpoint): a random generator object created outside the loop
//!   (`np.random.default_rng`, `np.random.RandomState`, `random.Random`,
//!   `torch.Generator`) that the loop draws from, directly or through a
//!   function or object built from it, and that is not checkpointed; a jax
//!   PRNG key the loop splits and rebinds.
//! - `flor::unseeded-randomness` (note): a generator seeded from the
//!   operating system (`np.random.default_rng()`), or draws from the global
//!   generators of `random`, numpy or torch in a script that never seeds
//!   them. flor checkpoints those global states with every checkpoint, but
//!   the first iteration of a replay starts from the setup's draws.
//!
//! Everything comes from the syntax tree, and every check prefers missing a
//! case to flagging correct code: augmented assignments (`w -= ...`) count
//! as rebinding only for names bound to immutable values, methods that
//! return their object (`model = model.to(device)`) do not count, and code
//! the syntax cannot follow (calls into other modules) is not guessed at.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use flor_core::propagate::{Finding, PropagateError, Severity};
use tree_sitter::Node;

use crate::flor_api::{flor_loops, is_reference_under, text, with_header, Api, Bindings, WHICH};
use crate::python::Python;
use crate::tree::max_nodes;

/// Code of a name passed to `flor.checkpointing` that the loop rebinds.
pub const REBOUND_CHECKPOINT: &str = "flor::rebound-checkpoint";
/// Code of a generator the loop draws from that no checkpoint captures.
pub const UNCHECKPOINTED_GENERATOR: &str = "flor::uncheckpointed-generator";
/// Code of randomness that no seed fixes.
pub const UNSEEDED_RANDOMNESS: &str = "flor::unseeded-randomness";

/// Methods that return the object they are called on (`model =
/// model.to(device)` does not rebind to another object); so does every
/// method ending in `_` (torch's in-place convention).
const SELF_RETURNING: &[&str] =
    &["to", "cuda", "cpu", "train", "eval", "float", "half", "double", "bfloat16", "requires_grad_", "share_memory"];

/// Calls whose result is immutable (`step = int(...)`).
const IMMUTABLE_CALLS: &[&str] = &["int", "float", "str", "bool", "tuple", "frozenset", "complex", "bytes"];

/// Which random generator a constructor makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generator {
    /// `numpy.random.default_rng`, `Generator`, `RandomState`.
    Numpy,
    /// `random.Random`.
    Random,
    /// `torch.Generator`.
    Torch,
    /// `jax.random.PRNGKey`, `jax.random.key`: an immutable key the loop
    /// must split and rebind to draw anew.
    JaxKey,
}

impl Generator {
    fn of(qualified: &str) -> Option<Generator> {
        match qualified {
            "numpy.random.default_rng" | "numpy.random.Generator" | "numpy.random.RandomState" => {
                Some(Generator::Numpy)
            }
            "random.Random" => Some(Generator::Random),
            "torch.Generator" => Some(Generator::Torch),
            "jax.random.PRNGKey" | "jax.random.key" => Some(Generator::JaxKey),
            _ => None,
        }
    }

    /// A generator made afresh for iteration `epoch` from `seed`.
    fn per_iteration(self) -> &'static str {
        match self {
            Generator::Numpy => "np.random.default_rng([seed, epoch])",
            Generator::Random => "random.Random(f\"{seed}-{epoch}\")",
            Generator::Torch => "torch.Generator().manual_seed(seed * 100003 + epoch)",
            Generator::JaxKey => "jax.random.fold_in(key, epoch)",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Generator::Numpy => "a numpy random generator",
            Generator::Random => "a `random.Random` generator",
            Generator::Torch => "a `torch.Generator`",
            Generator::JaxKey => "a jax PRNG key",
        }
    }
}

/// The global generators whose draws the unseeded check looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Global {
    Random,
    Numpy,
    Torch,
}

impl Global {
    fn module(self) -> &'static str {
        match self {
            Global::Random => "random",
            Global::Numpy => "numpy.random",
            Global::Torch => "torch",
        }
    }

    fn seed_call(self) -> &'static str {
        match self {
            Global::Random => "random.seed(seed)",
            Global::Numpy => "np.random.seed(seed)",
            Global::Torch => "torch.manual_seed(seed)",
        }
    }
}

/// Functions of `random` that draw from its global generator.
const RANDOM_DRAWS: &[&str] = &[
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "normalvariate",
    "lognormvariate",
    "expovariate",
    "vonmisesvariate",
    "gammavariate",
    "betavariate",
    "paretovariate",
    "weibullvariate",
    "triangular",
    "getrandbits",
    "randbytes",
    "binomialvariate",
];

/// Functions of `numpy.random` that draw from its global generator.
const NUMPY_DRAWS: &[&str] = &[
    "rand",
    "randn",
    "randint",
    "random",
    "random_sample",
    "ranf",
    "sample",
    "choice",
    "shuffle",
    "permutation",
    "normal",
    "uniform",
    "standard_normal",
    "binomial",
    "poisson",
    "beta",
    "gamma",
    "exponential",
    "multivariate_normal",
    "multinomial",
    "dirichlet",
    "laplace",
    "logistic",
    "lognormal",
    "geometric",
    "bytes",
    "random_integers",
    "standard_cauchy",
    "standard_exponential",
    "standard_gamma",
    "standard_t",
    "triangular",
    "vonmises",
    "wald",
    "weibull",
    "zipf",
    "chisquare",
    "hypergeometric",
    "negative_binomial",
    "pareto",
    "power",
    "rayleigh",
];

/// Functions of `torch` that draw from its global generator (unless given
/// `generator=`).
const TORCH_DRAWS: &[&str] = &[
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "normal",
    "bernoulli",
    "multinomial",
    "poisson",
];

/// `torch.nn` classes whose construction or use draws from torch's global
/// generator (random initial weights, dropout), by name prefix.
const TORCH_NN_DRAWS: &[&str] = &[
    "Linear",
    "Bilinear",
    "Conv",
    "LazyConv",
    "LazyLinear",
    "Embedding",
    "RNN",
    "LSTM",
    "GRU",
    "MultiheadAttention",
    "Transformer",
    "Dropout",
    "AlphaDropout",
    "FeatureAlphaDropout",
];

/// Every node of a syntax tree in preorder, with its parent (tree-sitter's
/// `Node::parent` walks down from the root each time it is asked).
struct Tree<'t> {
    nodes: Vec<Node<'t>>,
    /// Index of each node's parent in `nodes` (`usize::MAX`: the root).
    parents: Vec<usize>,
    /// Node id → index in `nodes`.
    at: HashMap<usize, usize>,
}

impl<'t> Tree<'t> {
    fn new(root: Node<'t>) -> Tree<'t> {
        let (mut nodes, mut parents, mut stack) = (Vec::new(), Vec::new(), Vec::new());
        let mut cursor = root.walk();
        'walk: loop {
            let index = nodes.len();
            nodes.push(cursor.node());
            parents.push(stack.last().copied().unwrap_or(usize::MAX));
            if cursor.goto_first_child() {
                stack.push(index);
                continue;
            }
            while !cursor.goto_next_sibling() {
                if !cursor.goto_parent() {
                    break 'walk;
                }
                stack.pop();
            }
        }
        let at = nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
        Tree { nodes, parents, at }
    }

    fn parent(&self, node: Node) -> Option<Node<'t>> {
        let &i = self.at.get(&node.id())?;
        self.nodes.get(self.parents[i]).copied()
    }

    /// The scope `node` binds names in: the nearest enclosing function,
    /// lambda or class (not `node` itself), else the module.
    fn scope_of(&self, node: Node<'t>) -> Node<'t> {
        let mut n = node;
        while let Some(p) = self.parent(n) {
            if matches!(p.kind(), "function_definition" | "lambda" | "class_definition") {
                return p;
            }
            n = p;
        }
        n
    }

    /// Whether identifier `node` refers to a variable (not an attribute's
    /// name, a keyword, a definition's name or a parameter).
    fn is_reference(&self, node: Node) -> bool {
        is_reference_under(node, self.parent(node))
    }
}

/// The script as the checks see it.
struct Script<'t, 's> {
    src: &'s [u8],
    source: &'s str,
    tree: Tree<'t>,
    imports: Imports,
    /// The flor loops, in source order.
    loops: Vec<Loop<'t>>,
    /// Calls that seed a named object again inside a flor loop ([`reseeding`]).
    reseeding: HashMap<String, Vec<Node<'t>>>,
    /// What carries whatever a name holds ([`carrier_index`]).
    carrying: HashMap<String, Vec<(Node<'t>, String)>>,
    /// Every `flor.checkpointing(...)` call.
    checkpoints: Vec<Checkpointing<'t>>,
    /// Sets of names per subtree, computed once: the checks ask about the
    /// same loops and functions for every generator.
    memo: RefCell<HashMap<(Names, usize), NameSet>>,
    /// The names some assignment binds to a generator constructor.
    generator_names: OnceCell<HashSet<String>>,
}

/// A set of names, shared between the memo and its users.
type NameSet = Rc<HashSet<String>>;

/// Which names of a subtree [`Script::names`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Names {
    /// The identifiers it refers to.
    Referenced,
    /// The names and attributes it binds, in any scope.
    Bound,
    /// A function's own variables: its parameters and what it binds in its
    /// own scope.
    Locals,
}

impl Script<'_, '_> {
    /// The `which` names of the subtree at `root`.
    fn names(&self, which: Names, root: Node) -> NameSet {
        if let Some(found) = self.memo.borrow().get(&(which, root.id())) {
            return found.clone();
        }
        let names: HashSet<String> = match which {
            Names::Referenced => under(&self.tree.nodes, root)
                .filter(|n| n.kind() == "identifier" && self.tree.is_reference(*n))
                .map(|n| text(n, self.src).to_string())
                .collect(),
            Names::Bound => bindings_in(&self.tree.nodes, root).iter().map(|(t, _)| squeeze(*t, self.src)).collect(),
            Names::Locals => {
                let mut own: HashSet<String> = bindings_in(&self.tree.nodes, root)
                    .iter()
                    .filter(|(t, _)| self.tree.scope_of(*t) == root)
                    .map(|(t, _)| squeeze(*t, self.src))
                    .collect();
                if let Some(params) = root.child_by_field_name("parameters") {
                    let mut c = params.walk();
                    for p in params.named_children(&mut c) {
                        let id = if p.kind() == "identifier" { Some(p) } else { p.child_by_field_name("name") };
                        own.extend(id.map(|id| text(id, self.src).to_string()));
                    }
                }
                own
            }
        };
        let names = Rc::new(names);
        self.memo.borrow_mut().insert((which, root.id()), names.clone());
        names
    }
}

/// A flor loop.
struct Loop<'t> {
    /// Its header statement (`for` or `with`).
    header: Node<'t>,
    /// Its name, when the syntax shows it.
    name: Option<String>,
    /// The statements it repeats.
    body: Node<'t>,
    /// The scope it runs in.
    scope: Node<'t>,
}

impl Loop<'_> {
    /// `loop `epoch` (line 12)`, or `the flor loop at line 12`.
    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("loop `{n}` (line {})", line(self.header)),
            None => format!("the flor loop at line {}", line(self.header)),
        }
    }
}

/// One `flor.checkpointing(name=value, ...)` call.
struct Checkpointing<'t> {
    /// The `with` statement it heads, if it does.
    with: Option<Node<'t>>,
    /// The keyword arguments' values.
    values: Vec<Node<'t>>,
}

/// See [`LanguagePropagator::lint`](flor_core::propagate::LanguagePropagator::lint).
pub(crate) fn lint(py: &Python, source: &str) -> Result<Vec<Finding>, PropagateError> {
    let parsed = py.parse(source, WHICH)?;
    let src = source.as_bytes();
    let tree = Tree::new(parsed.root_node());
    let limit = max_nodes();
    if tree.nodes.len() > limit {
        return Err(PropagateError::TooLarge(format!(
            "the {WHICH} source has more than {limit} syntax nodes (limit set by {})",
            crate::tree::MAX_NODES_ENV
        )));
    }
    let bindings = Bindings::of(&tree.nodes, src);
    let imports = Imports::of(&tree.nodes, src);
    let loops: Vec<Loop> = flor_loops(py, &tree.nodes, src, &bindings)
        .into_iter()
        .map(|(header, name)| Loop { header, name, body: body(header), scope: tree.scope_of(header) })
        .collect();
    let checkpoints = checkpointing_calls(&tree.nodes, src, &bindings);
    let carrying = carrier_index(&tree, &loops, src);
    let reseeding = reseeding(&tree, &loops, src);
    let memo = RefCell::new(HashMap::new());
    let generator_names = OnceCell::new();
    let script = Script { src, source, tree, imports, loops, reseeding, carrying, checkpoints, memo, generator_names };
    let mut out = rebound_checkpoints(&script);
    out.extend(uncheckpointed_generators(&script));
    out.extend(unseeded_randomness(&script));
    out.sort_by(|a, b| (a.line, a.column, &a.code).cmp(&(b.line, b.column, &b.code)));
    out.dedup();
    Ok(out)
}

// ------------------------------------------------------------------ helpers

/// `node`'s text without whitespace (`self . model` = `self.model`).
fn squeeze(node: Node, src: &[u8]) -> String {
    text(node, src).split_whitespace().collect()
}

/// The nodes within `root` (and it), found by the start bytes, which
/// preorder keeps in order: the cost is the subtree's, not the file's.
fn under<'a, 't>(nodes: &'a [Node<'t>], root: Node<'t>) -> impl Iterator<Item = Node<'t>> + 'a {
    let from = nodes.partition_point(|n| n.start_byte() < root.start_byte());
    let to = nodes.partition_point(|n| n.start_byte() < root.end_byte().max(root.start_byte() + 1));
    nodes[from..to.max(from)].iter().copied().filter(move |n| within(*n, root))
}

/// Whether `inner` lies within `outer` (or is it).
fn within(inner: Node, outer: Node) -> bool {
    outer.start_byte() <= inner.start_byte() && inner.end_byte() <= outer.end_byte()
}

/// A finding at `node`: 1-based line and column (in characters).
fn at(script: &Script, node: Node, code: &str, severity: Severity, message: String) -> Finding {
    let p = node.start_position();
    let line_start = node.start_byte() - p.column;
    let column = script.source.get(line_start..node.start_byte()).map_or(p.column, |s| s.chars().count()) + 1;
    Finding::new(p.row + 1, column, code, severity, message)
}

/// The 1-based line of `node`.
fn line(node: Node) -> usize {
    node.start_position().row + 1
}

/// The body of a flor loop header.
fn body(header: Node) -> Node {
    header.child_by_field_name("body").unwrap_or(header)
}

/// The innermost flor loop whose body holds `node`.
fn enclosing_loop<'a, 't>(script: &'a Script<'t, '_>, node: Node) -> Option<&'a Loop<'t>> {
    script.loops.iter().filter(|l| within(node, l.body)).max_by_key(|l| l.header.start_byte())
}

/// The names and attributes an assignment-like node binds: the leaves of
/// its target patterns (`a`, `self.w`, `x[0]`).
fn targets<'t>(target: Node<'t>, out: &mut Vec<Node<'t>>) {
    match target.kind() {
        "pattern_list"
        | "tuple_pattern"
        | "list_pattern"
        | "expression_list"
        | "tuple"
        | "list"
        | "parenthesized_expression"
        | "list_splat_pattern"
        | "as_pattern_target" => {
            let mut c = target.walk();
            for child in target.named_children(&mut c) {
                targets(child, out);
            }
        }
        "comment" => {}
        _ => out.push(target),
    }
}

/// Every binding under `root` (or at it): (the bound target, the statement
/// or expression that binds it).
fn bindings_in<'t>(nodes: &[Node<'t>], root: Node<'t>) -> Vec<(Node<'t>, Node<'t>)> {
    let mut out = Vec::new();
    for n in under(nodes, root) {
        let target = match n.kind() {
            "assignment" if n.child_by_field_name("right").is_some() => n.child_by_field_name("left"),
            "augmented_assignment" | "for_statement" => n.child_by_field_name("left"),
            "named_expression" => n.child_by_field_name("name"),
            "as_pattern" if n.parent().is_some_and(|p| p.kind() == "with_item") => n.child_by_field_name("alias"),
            _ => None,
        };
        let mut leaves = Vec::new();
        if let Some(t) = target {
            targets(t, &mut leaves);
        }
        out.extend(leaves.into_iter().map(|t| (t, n)));
    }
    out
}

/// Identifiers named `name` under `root` that refer to a variable (not an
/// attribute's name, a keyword, a definition's name or a parameter).
fn references<'a, 't>(
    tree: &'a Tree<'t>,
    root: Node<'t>,
    name: &'a str,
    src: &'a [u8],
) -> impl Iterator<Item = Node<'t>> + 'a {
    under(&tree.nodes, root).filter(move |n| n.kind() == "identifier" && text(*n, src) == name && tree.is_reference(*n))
}

/// The keyword arguments' values of every `flor.checkpointing(...)` call,
/// with the `with` statement each heads.
fn checkpointing_calls<'t>(nodes: &[Node<'t>], src: &[u8], bindings: &Bindings) -> Vec<Checkpointing<'t>> {
    let mut out = Vec::new();
    for &call in nodes {
        if bindings.called(call, src) != Some(Api::Checkpointing) {
            continue;
        }
        let mut values = Vec::new();
        if let Some(args) = call.child_by_field_name("arguments") {
            let mut c = args.walk();
            for arg in args.named_children(&mut c).filter(|a| a.kind() == "keyword_argument") {
                values.extend(arg.child_by_field_name("value"));
            }
        }
        out.push(Checkpointing { with: with_header(call).ok(), values });
    }
    out
}

/// What a script's imports bind: local name → dotted module path (`np` →
/// `numpy`, `default_rng` → `numpy.random.default_rng`).
struct Imports(HashMap<String, String>);

impl Imports {
    fn of(nodes: &[Node], src: &[u8]) -> Imports {
        let mut map = HashMap::new();
        for &node in nodes {
            let module = match node.kind() {
                "import_statement" => None,
                "import_from_statement" => match node.child_by_field_name("module_name") {
                    Some(m) if m.kind() == "dotted_name" => Some(squeeze(m, src)),
                    _ => continue, // relative imports
                },
                _ => continue,
            };
            let mut c = node.walk();
            for name in node.children_by_field_name("name", &mut c) {
                let (path, local) = match name.kind() {
                    "dotted_name" => {
                        let path = squeeze(name, src);
                        match &module {
                            // `import numpy.random` binds `numpy`.
                            None => {
                                let first = path.split('.').next().unwrap_or_default().to_string();
                                (first.clone(), first)
                            }
                            Some(_) => (path.clone(), path),
                        }
                    }
                    "aliased_import" => match (name.child_by_field_name("name"), name.child_by_field_name("alias")) {
                        (Some(n), Some(a)) => (squeeze(n, src), text(a, src).to_string()),
                        _ => continue,
                    },
                    _ => continue,
                };
                let full = match &module {
                    Some(m) => format!("{m}.{path}"),
                    None => path,
                };
                map.insert(local, full);
            }
        }
        Imports(map)
    }

    /// The dotted path `expr` names through the imports (`np.random.rand`
    /// → `numpy.random.rand`), when it starts from an imported name.
    fn qualify(&self, expr: Node, src: &[u8]) -> Option<String> {
        match expr.kind() {
            "identifier" => self.0.get(text(expr, src)).cloned(),
            "attribute" => {
                let object = self.qualify(expr.child_by_field_name("object")?, src)?;
                Some(format!("{object}.{}", text(expr.child_by_field_name("attribute")?, src)))
            }
            _ => None,
        }
    }
}

/// The called function's dotted path, for a call.
fn callee(script: &Script, call: Node) -> Option<String> {
    (call.kind() == "call").then_some(())?;
    script.imports.qualify(call.child_by_field_name("function")?, script.src)
}

/// A keyword argument `name=` of `call`.
fn keyword<'t>(call: Node<'t>, name: &str, src: &[u8]) -> Option<Node<'t>> {
    let args = call.child_by_field_name("arguments")?;
    let mut c = args.walk();
    let found = args.named_children(&mut c).find(|a| {
        a.kind() == "keyword_argument" && a.child_by_field_name("name").is_some_and(|n| text(n, src) == name)
    });
    found.and_then(|a| a.child_by_field_name("value"))
}

/// The arguments of `call` that are not comments.
fn arguments<'t>(call: Node<'t>) -> Vec<Node<'t>> {
    let Some(args) = call.child_by_field_name("arguments") else { return Vec::new() };
    let mut c = args.walk();
    args.named_children(&mut c).filter(|a| a.kind() != "comment").collect()
}

// --------------------------------------------------------- rebound checkpoint

/// `flor::rebound-checkpoint`: per name passed to a `with
/// flor.checkpointing(...)`, the first rebinding inside a flor loop of its
/// block, in the block's scope.
fn rebound_checkpoints(script: &Script) -> Vec<Finding> {
    let mut out = Vec::new();
    for cp in &script.checkpoints {
        let Some(with) = cp.with else { continue };
        let block = body(with);
        let scope = script.tree.scope_of(with);
        let loops: Vec<Node> =
            script.loops.iter().filter(|l| within(l.body, block) && l.scope == scope).map(|l| l.body).collect();
        if loops.is_empty() {
            continue;
        }
        let bound = bindings_in(&script.tree.nodes, block);
        for &value in &cp.values {
            if !matches!(value.kind(), "identifier" | "attribute") {
                continue; // a call, a literal, a subscript: no name to rebind
            }
            let name = squeeze(value, script.src);
            // Looked up once, at the first augmented assignment.
            let immutable = OnceCell::new();
            let first = bound.iter().find(|(t, stmt)| {
                squeeze(*t, script.src) == name
                    && script.tree.scope_of(*t) == scope
                    && loops.iter().any(|l| within(*t, *l))
                    && rebinds(script, &name, *stmt, || {
                        *immutable
                            .get_or_init(|| value.kind() == "identifier" && bound_to_immutable(script, &name, with))
                    })
            });
            if let Some(&(target, stmt)) = first {
                out.push(rebound(script, &name, value, target, stmt));
            }
        }
    }
    out
}

/// Whether the binding statement `stmt` of `name` gives it another object;
/// `immutable` says whether the name holds an immutable value.
fn rebinds(script: &Script, name: &str, stmt: Node, immutable: impl FnOnce() -> bool) -> bool {
    match stmt.kind() {
        // `w -= x` changes a mutable object in place; only immutable ones
        // are rebound.
        "augmented_assignment" => immutable(),
        "assignment" => !returns_itself(script, name, stmt.child_by_field_name("right")),
        _ => true,
    }
}

/// `name = name.to(device)`, `name = name.add_(x)`: the same object back.
fn returns_itself(script: &Script, name: &str, right: Option<Node>) -> bool {
    let Some(call) = right.filter(|r| r.kind() == "call") else { return false };
    let Some(f) = call.child_by_field_name("function").filter(|f| f.kind() == "attribute") else { return false };
    let (Some(object), Some(method)) = (f.child_by_field_name("object"), f.child_by_field_name("attribute")) else {
        return false;
    };
    let method = text(method, script.src);
    squeeze(object, script.src) == name
        && (SELF_RETURNING.contains(&method) || (method.ends_with('_') && !method.ends_with("__")))
}

/// Whether the last assignment to `name` before `with`, in its scope, binds
/// an immutable value (a number, string, tuple, `None`, a jax array).
fn bound_to_immutable(script: &Script, name: &str, with: Node) -> bool {
    let scope = script.tree.scope_of(with);
    let last = under(&script.tree.nodes, scope)
        .filter(|n| n.kind() == "assignment" && n.end_byte() <= with.start_byte())
        .filter(|n| n.child_by_field_name("left").is_some_and(|l| squeeze(l, script.src) == name))
        .filter(|n| script.tree.scope_of(*n) == scope)
        .last();
    last.and_then(|a| a.child_by_field_name("right")).is_some_and(|r| immutable(script, r))
}

fn immutable(script: &Script, value: Node) -> bool {
    match value.kind() {
        "integer" | "float" | "string" | "concatenated_string" | "true" | "false" | "none" | "tuple" => true,
        "unary_operator" | "parenthesized_expression" => {
            let mut c = value.walk();
            let inner: Vec<Node> = value.named_children(&mut c).collect();
            matches!(inner[..], [only] if immutable(script, only))
        }
        "call" => {
            let f = value.child_by_field_name("function");
            f.is_some_and(|f| IMMUTABLE_CALLS.contains(&text(f, script.src)))
                || callee(script, value).is_some_and(|q| q.starts_with("jax."))
        }
        _ => false,
    }
}

fn rebound(script: &Script, name: &str, value: Node, target: Node, stmt: Node) -> Finding {
    let how = match stmt.kind() {
        "augmented_assignment" => {
            "rebinds it (it holds an immutable value, so the augmented assignment makes a new one)"
        }
        "for_statement" => "rebinds it as a loop variable",
        _ => "rebinds it",
    };
    let where_ = enclosing_loop(script, target).map(Loop::describe).unwrap_or_else(|| "the loop".into());
    at(
        script,
        target,
        REBOUND_CHECKPOINT,
        Severity::Warning,
        format!(
            "`{name}` is passed to flor.checkpointing at line {}, but {where_} {how}: every checkpoint saves the \
             object `{name}` held when the block began, so replay restores stale state",
            line(value)
        ),
    )
    .with_hint(rebound_hint(name, stmt.kind() == "augmented_assignment"))
}

/// How to keep a checkpointed name's object: change it in place, or hold
/// the value in a checkpointed container (the only way for an immutable
/// one).
fn rebound_hint(name: &str, immutable: bool) -> String {
    let key = name.rsplit('.').next().unwrap_or(name);
    if immutable {
        format!(
            "keep the value in a checkpointed container and update that: `state = {{\"{key}\": {name}}}` in \
             flor.checkpointing, then `state[\"{key}\"] += ...` in the loop"
        )
    } else {
        format!(
            "keep the object and change it in place (`{name}[...] = ...`, `{name} -= ...` on an array, \
             `.load_state_dict(...)`), or keep it in a checkpointed container the loop updates (`state = \
             {{\"{key}\": {name}}}`, then `state[\"{key}\"] = ...`)"
        )
    }
}

// ---------------------------------------------------- uncheckpointed generator

/// A generator object bound to a name outside every flor loop.
struct GeneratorDef<'t> {
    name: String,
    kind: Generator,
    /// The assignment.
    stmt: Node<'t>,
    scope: Node<'t>,
}

/// `flor::uncheckpointed-generator`, in scripts that checkpoint something
/// (without checkpoints, replay runs every iteration from the start and a
/// seeded generator draws the same numbers again).
fn uncheckpointed_generators(script: &Script) -> Vec<Finding> {
    if script.checkpoints.is_empty() || script.loops.is_empty() {
        return Vec::new();
    }
    let checkpointed: Vec<String> =
        script.checkpoints.iter().flat_map(|c| c.values.iter().map(|v| squeeze(*v, script.src))).collect();
    let mut out = Vec::new();
    for def in generator_defs(script) {
        if checkpointed.contains(&def.name) {
            continue;
        }
        let found = if def.kind == Generator::JaxKey { carried_key(script, &def) } else { drawn_in_loop(script, &def) };
        out.extend(found);
    }
    out
}

/// `NAME = <generator constructor>(...)` outside every flor loop.
fn generator_defs<'t>(script: &Script<'t, '_>) -> Vec<GeneratorDef<'t>> {
    let mut out = Vec::new();
    for &n in &script.tree.nodes {
        if n.kind() != "assignment" || enclosing_loop(script, n).is_some() {
            continue;
        }
        let (Some(left), Some(right)) = (n.child_by_field_name("left"), n.child_by_field_name("right")) else {
            continue;
        };
        if left.kind() != "identifier" {
            continue;
        }
        let Some(kind) = callee(script, right).and_then(|q| Generator::of(&q)) else { continue };
        out.push(GeneratorDef {
            name: text(left, script.src).to_string(),
            kind,
            stmt: n,
            scope: script.tree.scope_of(n),
        });
    }
    out
}

/// The flor loops that can see `def`'s binding: in its scope (or any
/// scope, for a module-level one, unless that scope binds the name
/// itself), not around the definition.
fn loops_seeing<'a, 't>(script: &'a Script<'t, '_>, def: &GeneratorDef<'t>) -> Vec<&'a Loop<'t>> {
    let module = def.scope.parent().is_none();
    script
        .loops
        .iter()
        .filter(|l| !within(def.stmt, l.header))
        .filter(|l| {
            l.scope == def.scope
                || (module && within(l.header, def.scope) && !script.names(Names::Locals, l.scope).contains(&def.name))
        })
        .collect()
}

/// A numpy / `random` / torch generator: the first use inside a loop that
/// can see it, directly or through a carrier, unless that loop makes its
/// own.
fn drawn_in_loop(script: &Script, def: &GeneratorDef) -> Option<Finding> {
    let loops = loops_seeing(script, def);
    let mut reseeded = script.reseeding.get(&def.name).into_iter().flatten();
    if reseeded.any(|call| loops.iter().any(|l| within(*call, l.body))) {
        return None; // seeded again every iteration: a restart draws the same
    }
    let carriers = carriers(script, def);
    for l in loops {
        let b = l.body;
        if script.names(Names::Bound, b).contains(&def.name) {
            continue; // a new generator every iteration
        }
        let referenced = script.names(Names::Referenced, b);
        for (carrier, through) in carriers.iter().filter(|(c, _)| referenced.contains(*c)) {
            let Some(usage) = references(&script.tree, b, carrier, script.src).next() else { continue };
            let via = through.as_ref().map(|t| format!(" (through `{t}`)")).unwrap_or_default();
            let message = format!(
                "`{}` ({} created at line {}) is drawn from in {} at line {}{via} but is not passed to \
                 flor.checkpointing: a replay that starts from a checkpoint creates it afresh, so its draws differ \
                 from the recorded run's",
                def.name,
                def.kind.describe(),
                line(def.stmt),
                l.describe(),
                line(usage),
            );
            let hint = format!(
                "checkpoint it with the rest (`with flor.checkpointing(..., {0}={0})`), or create it in each \
                 iteration from the seed and the iteration (`{1}`)",
                def.name,
                def.kind.per_iteration()
            );
            return Some(at(script, def.stmt, UNCHECKPOINTED_GENERATOR, Severity::Warning, message).with_hint(hint));
        }
    }
    None
}

/// Name → the calls that seed the object it names again inside a flor loop
/// (`g.manual_seed(s)`, `r.seed(s)`).
fn reseeding<'t>(tree: &Tree<'t>, loops: &[Loop<'t>], src: &[u8]) -> HashMap<String, Vec<Node<'t>>> {
    let mut out: HashMap<String, Vec<Node<'t>>> = HashMap::new();
    for &call in tree.nodes.iter().filter(|n| n.kind() == "call") {
        let Some(f) = call.child_by_field_name("function").filter(|f| f.kind() == "attribute") else { continue };
        let method = f.child_by_field_name("attribute").map(|a| text(a, src));
        let object = f.child_by_field_name("object").filter(|o| o.kind() == "identifier");
        if let (Some("seed" | "manual_seed"), Some(object)) = (method, object) {
            if loops.iter().any(|l| within(call, l.body)) {
                out.entry(text(object, src).to_string()).or_default().push(call);
            }
        }
    }
    out
}

/// The names that carry `def`'s generator into a loop: itself, then
/// (outside every flor loop, in its scope) functions and classes whose body
/// uses a carrier and objects built from one (see [`carrier_index`]), to a
/// fixed point. `None`: the generator itself; `Some(name)`: the carrier.
fn carriers(script: &Script, def: &GeneratorDef) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::from([(def.name.clone(), None)]);
    let mut queue = vec![def.name.clone()];
    while let Some(name) = queue.pop() {
        for (node, carrier) in script.carrying.get(&name).into_iter().flatten() {
            if within(*node, def.scope) && !out.contains_key(carrier) {
                out.insert(carrier.clone(), Some(carrier.clone()));
                queue.push(carrier.clone());
            }
        }
    }
    out
}

/// Name → the bindings outside every flor loop that carry whatever that
/// name holds (node, the name it binds): functions (not methods: they are
/// reached through their class) and classes whose body refers to it, and
/// assignments of a call of it (an instance of a class that uses it) or of
/// a class-like name (capitalized: an object that keeps its arguments,
/// `DataLoader(ds, generator=g)`) with it among the arguments.
fn carrier_index<'t>(tree: &Tree<'t>, loops: &[Loop<'t>], src: &[u8]) -> HashMap<String, Vec<(Node<'t>, String)>> {
    let mut index: HashMap<String, Vec<(Node<'t>, String)>> = HashMap::new();
    for &n in &tree.nodes {
        let (name, uses): (Option<Node>, Vec<String>) = match n.kind() {
            "function_definition" if tree.scope_of(n).kind() == "class_definition" => continue,
            "function_definition" | "class_definition" if body(n) != n => {
                let uses = under(&tree.nodes, body(n))
                    .filter(|i| i.kind() == "identifier" && tree.is_reference(*i))
                    .map(|i| text(i, src).to_string())
                    .collect::<HashSet<String>>();
                (n.child_by_field_name("name"), uses.into_iter().collect())
            }
            "assignment" => {
                let left = n.child_by_field_name("left").filter(|l| l.kind() == "identifier");
                (left, n.child_by_field_name("right").map(|r| built_from(r, src)).unwrap_or_default())
            }
            _ => continue,
        };
        let Some(name) = name else { continue };
        if uses.is_empty() || loops.iter().any(|l| within(n, l.body)) {
            continue;
        }
        let name = text(name, src).to_string();
        for u in uses {
            index.entry(u).or_default().push((n, name.clone()));
        }
    }
    index
}

/// The names whose objects a value built by `value` keeps: the class
/// called by name, and for a class-like (capitalized) callee the
/// identifiers among its arguments.
fn built_from(value: Node, src: &[u8]) -> Vec<String> {
    let Some(f) = value.child_by_field_name("function").filter(|_| value.kind() == "call") else { return Vec::new() };
    let last = match f.kind() {
        "attribute" => f.child_by_field_name("attribute"),
        "identifier" => Some(f),
        _ => None,
    };
    let Some(last) = last.map(|l| text(l, src)) else { return Vec::new() };
    let mut out = Vec::new();
    if f.kind() == "identifier" {
        out.push(last.to_string());
    }
    if last.starts_with(|c: char| c.is_ascii_uppercase()) {
        for a in arguments(value) {
            let v = if a.kind() == "keyword_argument" { a.child_by_field_name("value") } else { Some(a) };
            out.extend(v.filter(|v| v.kind() == "identifier").map(|v| text(v, src).to_string()));
        }
    }
    out
}

/// A jax key: the first rebinding inside a loop that can see it whose value
/// derives from the key itself (`key, sub = jax.random.split(key)`).
fn carried_key(script: &Script, def: &GeneratorDef) -> Option<Finding> {
    for l in loops_seeing(script, def) {
        if !script.names(Names::Bound, l.body).contains(&def.name) {
            continue;
        }
        let found = bindings_in(&script.tree.nodes, l.body).into_iter().find(|(t, stmt)| {
            squeeze(*t, script.src) == def.name
                && script.tree.scope_of(*t) == l.scope
                && stmt
                    .child_by_field_name("right")
                    .is_some_and(|r| references(&script.tree, r, &def.name, script.src).next().is_some())
        });
        let Some((target, _)) = found else { continue };
        let message = format!(
            "`{}` ({} created at line {}) is split and rebound in {}: a replay that starts from a checkpoint starts \
             again from the first key, so its draws differ from the recorded run's",
            def.name,
            def.kind.describe(),
            line(def.stmt),
            l.describe(),
        );
        let index = l.name.as_deref().unwrap_or("i");
        let hint = format!(
            "derive each iteration's key from the loop position instead of carrying it: `{0} = \
             jax.random.fold_in(base_key, {index})`",
            def.name
        );
        return Some(at(script, target, UNCHECKPOINTED_GENERATOR, Severity::Warning, message).with_hint(hint));
    }
    None
}

// ---------------------------------------------------------- unseeded randomness

/// `flor::unseeded-randomness`: generators seeded from the operating
/// system, and the first draw from each global generator the script never
/// seeds.
fn unseeded_randomness(script: &Script) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut first_draw: BTreeMap<Global, Node> = BTreeMap::new();
    let mut seeded: Vec<Global> = Vec::new();
    let mut seeds_all = false;
    for &call in script.tree.nodes.iter().filter(|n| n.kind() == "call") {
        let qualified = callee(script, call);
        if let Some(f) = unseeded_generator(script, call, qualified.as_deref()) {
            out.push(f);
        }
        match seed_of(script, call, qualified.as_deref()) {
            Some(Some(g)) => seeded.push(g),
            Some(None) => seeds_all = true,
            None => {}
        }
        if let Some(g) = qualified.as_deref().and_then(|q| global_draw(script, call, q)) {
            first_draw.entry(g).or_insert(call);
        }
    }
    if seeds_all {
        return out;
    }
    for (g, call) in first_draw.into_iter().filter(|(g, _)| !seeded.contains(g)) {
        let message = format!(
            "the script draws from the global `{}` generator here but never seeds it: every run draws differently, \
             so replayed values can differ from the recorded ones (checkpoints restore the generator's state, but \
             not before the first iteration)",
            g.module()
        );
        let hint = format!("seed it once at the start: `{}` (with `seed = flor.arg(\"seed\", 0)`)", g.seed_call());
        out.push(at(script, call, UNSEEDED_RANDOMNESS, Severity::Note, message).with_hint(hint));
    }
    out
}

/// A generator constructor given no seed (`np.random.default_rng()`,
/// `random.Random(None)`): seeded from the operating system.
fn unseeded_generator(script: &Script, call: Node, qualified: Option<&str>) -> Option<Finding> {
    let kind = Generator::of(qualified?)?;
    if !matches!(kind, Generator::Numpy | Generator::Random) || qualified == Some("numpy.random.Generator") {
        return None; // torch.Generator() has a fixed default seed; jax keys need one
    }
    let args = arguments(call);
    let unseeded = match &args[..] {
        [] => true,
        [only] => {
            let v = if only.kind() == "keyword_argument" { only.child_by_field_name("value") } else { Some(*only) };
            v.is_some_and(|v| v.kind() == "none")
        }
        _ => false,
    };
    if !unseeded {
        return None;
    }
    let shown = squeeze(call.child_by_field_name("function")?, script.src);
    let message = format!(
        "`{shown}()` without a seed takes one from the operating system: every run, and every replay, draws \
         different numbers, so replayed values can differ from the recorded ones"
    );
    let hint = format!("give it a seed: `{shown}(seed)` (with `seed = flor.arg(\"seed\", 0)`)");
    Some(at(script, call, UNSEEDED_RANDOMNESS, Severity::Note, message).with_hint(hint))
}

/// Whether `call` seeds global generators: `Some(Some(g))` one of them
/// (`np.random.seed`), `Some(None)` presumably all (any other function with
/// `seed` in its name: `set_seed`, `seed_everything`), `None` not a seed.
fn seed_of(script: &Script, call: Node, qualified: Option<&str>) -> Option<Option<Global>> {
    match qualified {
        Some("random.seed") => return Some(Some(Global::Random)),
        Some("numpy.random.seed") => return Some(Some(Global::Numpy)),
        Some(
            "torch.manual_seed" | "torch.random.manual_seed" | "torch.cuda.manual_seed" | "torch.cuda.manual_seed_all",
        ) => return Some(Some(Global::Torch)),
        Some(q) if ["random.", "numpy.", "torch.", "jax."].iter().any(|m| q.starts_with(m)) => return None,
        _ => {}
    }
    let f = call.child_by_field_name("function")?;
    let last = match f.kind() {
        "attribute" => f.child_by_field_name("attribute")?,
        "identifier" => f,
        _ => return None,
    };
    if !text(last, script.src).to_ascii_lowercase().contains("seed") {
        return None;
    }
    // A generator object's own seed (`g.manual_seed(0)`) seeds no global one.
    let own = f.kind() == "attribute" && f.child_by_field_name("object").is_some_and(|o| generator_object(script, o));
    (!own).then_some(None)
}

/// Whether `object` names a generator object: a name some assignment binds
/// to a generator constructor, or such a call itself
/// (`torch.Generator().manual_seed(0)`).
fn generator_object(script: &Script, object: Node) -> bool {
    if callee(script, object).is_some_and(|q| Generator::of(&q).is_some()) {
        return true;
    }
    let names = script.generator_names.get_or_init(|| {
        let generator = |r: Node| callee(script, r).is_some_and(|q| Generator::of(&q).is_some());
        let assigned = script.tree.nodes.iter().filter(|n| n.kind() == "assignment");
        assigned
            .filter(|n| n.child_by_field_name("right").is_some_and(generator))
            .filter_map(|n| n.child_by_field_name("left").filter(|l| l.kind() == "identifier"))
            .map(|l| text(l, script.src).to_string())
            .collect()
    });
    object.kind() == "identifier" && names.contains(text(object, script.src))
}

/// Which global generator `call` (of `qualified`) draws from, if any.
fn global_draw(script: &Script, call: Node, qualified: &str) -> Option<Global> {
    if let Some(f) = qualified.strip_prefix("random.") {
        return RANDOM_DRAWS.contains(&f).then_some(Global::Random);
    }
    if let Some(f) = qualified.strip_prefix("numpy.random.") {
        return NUMPY_DRAWS.contains(&f).then_some(Global::Numpy);
    }
    let torch = qualified.strip_prefix("torch.")?;
    if keyword(call, "generator", script.src).is_some() {
        return None;
    }
    let draws = TORCH_DRAWS.contains(&torch)
        || torch.starts_with("nn.init.")
        || torch.strip_prefix("nn.").is_some_and(|c| TORCH_NN_DRAWS.iter().any(|p| c.starts_with(p)))
        || torch.strip_prefix("nn.functional.").is_some_and(|f| f.contains("dropout"))
        || (torch == "utils.data.DataLoader"
            && keyword(call, "shuffle", script.src).is_some_and(|v| v.kind() == "true"))
        || torch == "utils.data.random_split";
    draws.then_some(Global::Torch)
}
