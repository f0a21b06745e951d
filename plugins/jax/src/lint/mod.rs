//! JAX idioms that make a hindsight replay wrong, found in a Python script.
//!
//! A replay re-runs the setup, restores what `flor.checkpointing` saved at
//! the end of an outer iteration and goes on from there. JAX keeps no
//! hidden state: whatever an iteration hands to the next (the PRNG key,
//! the parameters, the optimizer state) is a value the script rebinds, so
//! it must live in a checkpointed container that the loop updates. Codes:
//!
//! - `jax::prng-key-not-checkpointed` (warning): a PRNG key split or folded
//!   (`jax.random.split`, `jax.random.fold_in`) inside a flor loop and
//!   carried to the next iteration, that no `flor.checkpointing` holds: a
//!   plain name not passed there, a name only copied into a container
//!   passed there (`flor.checkpointing(state={"key": key})`, then `key, sub
//!   = jax.random.split(key)`: the container keeps the first key), or a
//!   container (`state["key"]`) not passed there.
//! - `jax::train-state-not-checkpointed` (warning): flax/optax training
//!   state — made in the setup by `.init(...)` or `.create(...)` (`params =
//!   model.init(key, x)`, `opt_state = tx.init(params)`, `TrainState.create`)
//!   or updated by `optax.apply_updates`, `.apply_gradients` or an optax
//!   `update` — that a flor loop updates and carries, outside every
//!   checkpointed container.
//!
//! Names passed directly to `flor.checkpointing` and rebound in the loop
//! are flor's own `flor::rebound-checkpoint`, not repeated here. Scripts
//! that checkpoint nothing are not checked (their replays run from the
//! start). Like flor's own checks, these prefer missing a case to flagging
//! correct code: they follow names within the file only.

mod checks;
mod scan;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;

use flor_plugin_sdk::Finding;
use scan::{statements, Kind, Stmt, Tok};

/// The code of a key carried outside the checkpoints.
pub const PRNG_KEY: &str = "jax::prng-key-not-checkpointed";
/// The code of training state carried outside the checkpoints.
pub const TRAIN_STATE: &str = "jax::train-state-not-checkpointed";

/// The findings for `text` in `language` (only `python` is checked);
/// `path` is for messages.
pub fn check(language: &str, _path: &str, text: &str) -> Vec<Finding> {
    if language != "python" {
        return Vec::new();
    }
    let script = Script::new(text);
    let mut out = Vec::new();
    for c in script.checkpointings() {
        for l in script.flor_loops(&c.scope) {
            let mut seen = HashSet::new();
            out.extend(script.key_findings(&c, &l, &mut seen));
            out.extend(script.state_findings(&c, &l, &mut seen));
        }
    }
    out.sort_by_key(|f| (f.line, f.column));
    out.dedup_by(|a, b| a.line == b.line && a.code == b.code && a.message == b.message);
    out
}

/// A call in a statement: its resolved dotted name and its arguments.
struct Call {
    /// `jax.random.split`, `state.apply_gradients`, `….init` (after a call).
    name: String,
    /// Index of the callee's last name token.
    at: usize,
    /// Each argument's token range, and its keyword if it has one.
    args: Vec<(Option<String>, Range<usize>)>,
}

/// An assignment's targets.
#[derive(Default)]
struct Targets {
    /// Plain names rebound.
    bound: Vec<String>,
    /// Roots of subscript/attribute targets (`state` of `state["key"]`).
    mutated: Vec<String>,
    /// Where the value starts (tokens after the last `=`), if an assignment.
    value: Option<usize>,
}

/// A `flor.checkpointing(...)` call and the statements it covers.
struct Checkpointing {
    line: u32,
    /// Names (and dotted names) passed as a whole.
    roots: HashSet<String>,
    /// Names read inside the other arguments (copied into a container).
    captured: HashSet<String>,
    scope: Range<usize>,
}

/// A flor loop: its header statement and body.
struct Loop {
    header: usize,
    body: Range<usize>,
    describe: String,
}

struct Script {
    stmts: Vec<Stmt>,
    aliases: HashMap<String, String>,
}

impl Script {
    fn new(text: &str) -> Script {
        let stmts = statements(text);
        let mut aliases = HashMap::new();
        for s in &stmts {
            imports(s, &mut aliases);
        }
        Script { stmts, aliases }
    }

    /// The statements of the block that `header` opens.
    fn body(&self, header: usize) -> Range<usize> {
        let indent = self.stmts[header].indent;
        let end = (header + 1..self.stmts.len()).find(|&j| self.stmts[j].indent <= indent).unwrap_or(self.stmts.len());
        header + 1..end
    }

    /// Resolves a dotted name through the imports (`jr.split` →
    /// `jax.random.split`; `flor` means flordb).
    fn resolve(&self, dotted: &str) -> String {
        let (first, rest) = dotted.split_once('.').map_or((dotted, ""), |(a, b)| (a, b));
        let base = self.aliases.get(first).map_or(first, String::as_str);
        let base = if base == "flor" { "flordb" } else { base };
        if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}.{rest}")
        }
    }

    /// Every call in `toks`, nested ones included.
    fn calls(&self, toks: &[Tok]) -> Vec<Call> {
        let mut out = Vec::new();
        for i in 0..toks.len() {
            if toks[i].kind != Kind::Name || !toks.get(i + 1).is_some_and(|t| t.is("(")) {
                continue;
            }
            if i > 0 && (toks[i - 1].is("def") || toks[i - 1].is("class")) {
                continue;
            }
            let mut start = i;
            while start >= 2 && toks[start - 1].is(".") && toks[start - 2].kind == Kind::Name {
                start -= 2;
            }
            let mut dotted: String = toks[start..=i].iter().map(|t| t.text.as_str()).collect();
            if start >= 1 && toks[start - 1].is(".") {
                dotted = format!("….{dotted}");
            } else {
                dotted = self.resolve(&dotted);
            }
            out.push(Call { name: dotted, at: i, args: arguments(toks, i + 1) });
        }
        out
    }

    /// Every `flor.checkpointing(...)`, with the statements it covers: a
    /// `with` block, else the rest of the file.
    fn checkpointings(&self) -> Vec<Checkpointing> {
        let mut out = Vec::new();
        for (i, s) in self.stmts.iter().enumerate() {
            for call in self.calls(&s.toks).into_iter().filter(|c| c.name == "flordb.checkpointing") {
                let (mut roots, mut captured) = (HashSet::new(), HashSet::new());
                for (_, r) in &call.args {
                    let arg = &s.toks[r.clone()];
                    match dotted_name(arg) {
                        Some(name) => {
                            roots.insert(name);
                        }
                        None => captured.extend(reads(arg)),
                    }
                }
                let scope = if s.starts("with") && s.is_header() { self.body(i) } else { i + 1..self.stmts.len() };
                out.push(Checkpointing { line: s.toks[call.at].line, roots, captured, scope });
            }
        }
        out
    }

    /// The outermost flor loops in `scope`: `for ... in flor.loop(...)`,
    /// and loops whose body opens `with flor.iteration(...)`.
    fn flor_loops(&self, scope: &Range<usize>) -> Vec<Loop> {
        let mut out: Vec<Loop> = Vec::new();
        for i in scope.clone() {
            let s = &self.stmts[i];
            if !(s.starts("for") || s.starts("while")) || !s.is_header() || out.iter().any(|l| l.body.contains(&i)) {
                continue;
            }
            let header_calls = self.calls(&s.toks);
            let via_loop = header_calls.iter().find(|c| c.name == "flordb.loop");
            let body = self.body(i);
            let via_iteration = body.clone().find_map(|j| {
                let t = &self.stmts[j];
                let calls = if t.starts("with") { self.calls(&t.toks) } else { Vec::new() };
                calls.into_iter().find(|c| c.name == "flordb.iteration").map(|c| (j, c))
            });
            let describe = match (via_loop, &via_iteration) {
                (Some(c), _) => loop_name(&s.toks, c),
                (None, Some((j, c))) => loop_name(&self.stmts[*j].toks, c),
                (None, None) => continue,
            };
            let line = s.toks[0].line;
            out.push(Loop { header: i, body, describe: format!("{describe} (line {line})") });
        }
        out
    }

    /// The statements of `body` outside nested functions and classes.
    fn own(&self, body: &Range<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        let mut skip_until = 0;
        for i in body.clone() {
            if i < skip_until {
                continue;
            }
            let s = &self.stmts[i];
            if (s.starts("def")
                || s.starts("class")
                || (s.starts("async") && s.toks.get(1).is_some_and(|t| t.is("def"))))
                && s.is_header()
            {
                skip_until = self.body(i).end;
                continue;
            }
            out.push(i);
        }
        out
    }

    /// Whether the loop carries `name` from one iteration to the next: the
    /// loop body reads it before an unconditional assignment that does not
    /// read it (`key = jax.random.fold_in(base, epoch)` makes it afresh).
    fn carried(&self, l: &Loop, name: &str) -> bool {
        let top = self.stmts.get(l.body.start).map_or(0, |s| s.indent);
        for i in self.own(&l.body) {
            let s = &self.stmts[i];
            let t = targets(s);
            match t.value {
                Some(v) if s.indent == top && t.bound.iter().any(|b| b == name) => {
                    return reads(&s.toks[v..]).contains(name);
                }
                _ if reads(&s.toks).contains(name) => return true,
                _ => {}
            }
        }
        false
    }

    /// Names the loop's own statements rebind, and container roots they change.
    fn changed(&self, l: &Loop) -> (HashSet<String>, HashSet<String>) {
        let (mut bound, mut mutated) = (HashSet::new(), HashSet::new());
        for i in self.own(&l.body) {
            let t = targets(&self.stmts[i]);
            bound.extend(t.bound);
            mutated.extend(t.mutated);
        }
        (bound, mutated)
    }
}

/// Whether `name` is held by the checkpointing (itself, or a prefix of it:
/// `self.state` holds `self.state["key"]`).
fn held(c: &Checkpointing, root: &str, full: &str) -> bool {
    c.roots.contains(root)
        || c.roots.iter().any(|r| full.starts_with(r.as_str()) && full[r.len()..].starts_with(['[', '.']))
}

/// Records the bindings an import statement makes (`import jax.random
/// as jr`: `jr` → `jax.random`; `from jax import random`: `random` →
/// `jax.random`; `import jax`: `jax` → `jax`).
fn imports(s: &Stmt, aliases: &mut HashMap<String, String>) {
    let toks: Vec<&Tok> = s.toks.iter().filter(|t| !t.is("(") && !t.is(")")).collect();
    let text = |part: &[&Tok]| part.iter().map(|t| t.text.as_str()).collect::<String>();
    let parts = |from: usize| -> Vec<(String, Option<String>)> {
        toks.get(from..)
            .unwrap_or_default()
            .split(|t| t.is(","))
            .filter(|p| !p.is_empty())
            .map(|p| match p.iter().position(|t| t.is("as")) {
                Some(a) => (text(&p[..a]), p.get(a + 1).map(|t| t.text.clone())),
                None => (text(p), None),
            })
            .collect()
    };
    if s.starts("import") {
        for (module, alias) in parts(1) {
            match alias {
                Some(a) => aliases.insert(a, module),
                None => {
                    let first = module.split('.').next().unwrap_or_default().to_owned();
                    aliases.insert(first.clone(), first)
                }
            };
        }
    } else if s.starts("from") {
        let Some(at) = toks.iter().position(|t| t.is("import")) else { return };
        let module = text(&toks[1..at]);
        for (name, alias) in parts(at + 1) {
            aliases.insert(alias.unwrap_or_else(|| name.clone()), format!("{module}.{name}"));
        }
    }
}

/// The arguments of the call whose `(` is at `open`: each one's keyword
/// (if any) and token range.
fn arguments(toks: &[Tok], open: usize) -> Vec<(Option<String>, Range<usize>)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    for (j, t) in toks.iter().enumerate().skip(open) {
        if t.kind != Kind::Op {
            continue;
        }
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    push_arg(toks, start..j, &mut out);
                    return out;
                }
            }
            "," if depth == 1 => {
                push_arg(toks, start..j, &mut out);
                start = j + 1;
            }
            _ => {}
        }
    }
    out
}

fn push_arg(toks: &[Tok], r: Range<usize>, out: &mut Vec<(Option<String>, Range<usize>)>) {
    if r.is_empty() {
        return;
    }
    let is_kw = r.len() > 2 && toks[r.start].kind == Kind::Name && toks[r.start + 1].is("=");
    if is_kw {
        out.push((Some(toks[r.start].text.clone()), r.start + 2..r.end));
    } else {
        out.push((None, r));
    }
}

/// The dotted name `toks` is exactly (`state`, `self.state`), if it is one.
fn dotted_name(toks: &[Tok]) -> Option<String> {
    let ok = !toks.is_empty()
        && toks.len() % 2 == 1
        && toks.iter().enumerate().all(|(k, t)| if k % 2 == 0 { t.kind == Kind::Name } else { t.is(".") });
    ok.then(|| toks.iter().map(|t| t.text.as_str()).collect())
}

/// The names `toks` reads: names not after a `.`, not a keyword argument's
/// keyword, not a keyword of the language.
fn reads(toks: &[Tok]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, t) in toks.iter().enumerate() {
        if t.kind != Kind::Name || KEYWORDS.contains(&t.text.as_str()) {
            continue;
        }
        let after_dot = k > 0 && toks[k - 1].is(".");
        let keyword_arg =
            toks.get(k + 1).is_some_and(|n| n.is("=")) && k > 0 && (toks[k - 1].is("(") || toks[k - 1].is(","));
        if !after_dot && !keyword_arg {
            out.insert(t.text.clone());
        }
    }
    out
}

const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// The targets of an assignment (`=`, augmented, annotated, `:=`), a
/// `for` header or a `with ... as` header.
fn targets(s: &Stmt) -> Targets {
    let toks = &s.toks;
    let mut t = Targets::default();
    let top = top_level(toks);
    for (k, tok) in toks.iter().enumerate() {
        if tok.is(":=") {
            if let Some(n) = k.checked_sub(1).map(|p| &toks[p]).filter(|n| n.kind == Kind::Name) {
                t.bound.push(n.text.clone());
            }
        }
    }
    let first = usize::from(s.starts("async"));
    if toks.get(first).is_some_and(|f| f.is("for")) {
        if let Some(&in_at) = top.iter().find(|&&k| toks[k].is("in")) {
            add_targets(&toks[first + 1..in_at], &mut t);
        }
        return t;
    }
    if toks.get(first).is_some_and(|f| f.is("with")) {
        for &a in top.iter().filter(|&&k| toks[k].is("as")) {
            let end =
                top.iter().copied().find(|&k| k > a && (toks[k].is(",") || toks[k].is(":"))).unwrap_or(toks.len());
            add_targets(&toks[a + 1..end], &mut t);
        }
        return t;
    }
    if s.is_header() {
        return t;
    }
    let cuts: Vec<usize> =
        top.iter().copied().filter(|&k| toks[k].kind == Kind::Op && ASSIGN.contains(&toks[k].text.as_str())).collect();
    let mut from = 0;
    for &cut in &cuts {
        let mut target = &toks[from..cut];
        if let Some(colon) = target.iter().position(|x| x.is(":")) {
            target = &target[..colon]; // `x: int = ...`
        }
        add_targets(target, &mut t);
        from = cut + 1;
    }
    if !cuts.is_empty() {
        t.value = Some(from);
    }
    t
}

const ASSIGN: [&str; 14] = ["=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", ">>=", "<<="];

/// The indices of the tokens outside every bracket.
fn top_level(toks: &[Tok]) -> Vec<usize> {
    let mut depth = 0usize;
    let mut out = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        let opens = t.kind == Kind::Op && matches!(t.text.as_str(), "(" | "[" | "{");
        let closes = t.kind == Kind::Op && matches!(t.text.as_str(), ")" | "]" | "}");
        if closes {
            depth = depth.saturating_sub(1);
        }
        if depth == 0 && !opens && !closes {
            out.push(k);
        }
        if opens {
            depth += 1;
        }
    }
    out
}

/// Splits a target list at top-level commas (brackets around it dropped).
fn add_targets(mut toks: &[Tok], t: &mut Targets) {
    while toks.len() >= 2 && (toks[0].is("(") || toks[0].is("[")) && closes_at_end(toks) {
        toks = &toks[1..toks.len() - 1];
    }
    let mut depth = 0usize;
    let mut start = 0;
    for k in 0..=toks.len() {
        let at_end = k == toks.len();
        if !at_end && toks[k].kind == Kind::Op {
            match toks[k].text.as_str() {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if at_end || (depth == 0 && toks[k].is(",")) {
            let mut one = &toks[start..k];
            if one.first().is_some_and(|x| x.is("*")) {
                one = &one[1..];
            }
            match one {
                [n] if n.kind == Kind::Name => t.bound.push(n.text.clone()),
                [n, next, ..] if n.kind == Kind::Name && (next.is("[") || next.is(".")) => {
                    t.mutated.push(n.text.clone())
                }
                [open, ..] if open.is("(") || open.is("[") => add_targets(one, t),
                _ => {}
            }
            start = k + 1;
        }
    }
}

/// Whether the bracket opening `toks` closes at its last token.
fn closes_at_end(toks: &[Tok]) -> bool {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate() {
        if t.kind != Kind::Op {
            continue;
        }
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k == toks.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

/// `loop "epoch"` from `flor.loop("epoch", ...)`, else `the flor loop`.
fn loop_name(toks: &[Tok], call: &Call) -> String {
    let first = call.args.first().map(|(_, r)| &toks[r.clone()]);
    match first {
        Some([s]) if s.kind == Kind::Str => {
            let name = s.text.trim_start_matches(|c: char| c.is_ascii_alphabetic()).trim_matches(['"', '\'']);
            format!("loop `{name}`")
        }
        _ => "the flor loop".to_owned(),
    }
}
