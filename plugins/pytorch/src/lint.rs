//! PyTorch idioms that make a hindsight replay wrong, found by scanning
//! tokens (the SDK's [`flor_plugin_sdk::python`] scanner: strings and
//! comments never match).
//!
//! | code | severity | found |
//! |------|----------|-------|
//! | `pytorch::cudnn-benchmark` | warning | `….cudnn.benchmark = True` |
//! | `pytorch::cudnn-nondeterministic` | warning | `….cudnn.deterministic = False` |
//! | `pytorch::nondeterministic-algorithms` | warning | `torch.use_deterministic_algorithms(False)` |
//! | `pytorch::dataloader-shuffle` | warning | `DataLoader(..., shuffle=True)` with no `generator=` |
//! | `pytorch::dataloader-worker-seed` | note | `DataLoader(..., num_workers=N)` with neither `generator=` nor `worker_init_fn=` |
//! | `pytorch::stepped-not-checkpointed` | warning | `x.step()` in a loop, `x` not among `flor.checkpointing(...)`'s arguments |
//! | `pytorch::trained-not-checkpointed` | warning | a model whose parameters a stepped optimizer holds (or `model.train()` in a loop), not checkpointed |
//!
//! The last two apply to flor scripts only (ones that call `flor.loop` or
//! `flor.checkpointing`).

use std::collections::{BTreeMap, HashSet};

use flor_plugin_sdk::python::{call_args, dotted, logical_lines, starts_dotted, Kind, Line, Token};
use flor_plugin_sdk::{Finding, Severity};

fn finding(t: &Token<'_>, code: &str, severity: Severity, message: String, hint: &str) -> Finding {
    Finding {
        line: t.line,
        column: t.column,
        code: format!("pytorch::{code}"),
        severity,
        message,
        hint: hint.to_owned(),
    }
}

/// Every finding in a Python script, in source order.
pub fn lint_python(text: &str) -> Vec<Finding> {
    let lines = logical_lines(text);
    let mut out = Vec::new();
    for line in &lines {
        settings(line, &mut out);
        dataloaders(line, &mut out);
    }
    unchecked_state(&lines, &mut out);
    out.sort_by_key(|f| (f.line, f.column));
    out
}

/// `cudnn.benchmark = True`, `cudnn.deterministic = False`,
/// `use_deterministic_algorithms(False)`.
fn settings(line: &Line<'_>, out: &mut Vec<Finding>) {
    let t = &line.tokens;
    if let Some((name, after)) = dotted(t, 0) {
        let value = (t.get(after).is_some_and(|x| x.is_op("=")) && after + 2 == t.len()).then(|| t[after + 1].text);
        if (name == "cudnn.benchmark" || name.ends_with(".cudnn.benchmark")) && value == Some("True") {
            out.push(finding(
                &t[0],
                "cudnn-benchmark",
                Severity::Warning,
                "cuDNN benchmark mode picks convolution algorithms by timing them, so a replay may run other kernels and compute other values".into(),
                "set torch.backends.cudnn.benchmark = False in scripts you mean to replay",
            ));
        }
        if (name == "cudnn.deterministic" || name.ends_with(".cudnn.deterministic")) && value == Some("False") {
            out.push(finding(
                &t[0],
                "cudnn-nondeterministic",
                Severity::Warning,
                "nondeterministic cuDNN kernels give slightly different values on every run, so replayed values differ"
                    .into(),
                "set torch.backends.cudnn.deterministic = True",
            ));
        }
    }
    for i in (0..t.len()).filter(|&i| starts_dotted(t, i)) {
        let Some((name, open)) = dotted(t, i) else { continue };
        let last = name.rsplit('.').next().unwrap_or("");
        if !matches!(last, "use_deterministic_algorithms" | "set_deterministic")
            || !t.get(open).is_some_and(|x| x.is_op("("))
        {
            continue;
        }
        let Some(args) = call_args(t, open) else { continue };
        let off = args.iter().any(|a| {
            matches!(a.keyword, None | Some("mode" | "d")) && a.value.len() == 1 && a.value[0].is_name("False")
        });
        if off {
            out.push(finding(
                &t[i],
                "nondeterministic-algorithms",
                Severity::Warning,
                "nondeterministic algorithms are allowed, so replayed values may differ from the recorded ones".into(),
                "call torch.use_deterministic_algorithms(True) (and set CUBLAS_WORKSPACE_CONFIG on GPUs)",
            ));
        }
    }
}

/// `DataLoader(...)` calls whose order or worker seeds a replay cannot reproduce.
fn dataloaders(line: &Line<'_>, out: &mut Vec<Finding>) {
    let t = &line.tokens;
    for i in (0..t.len()).filter(|&i| starts_dotted(t, i)) {
        let Some((name, open)) = dotted(t, i) else { continue };
        if !(name == "DataLoader" || name.ends_with(".DataLoader")) || !t.get(open).is_some_and(|x| x.is_op("(")) {
            continue;
        }
        let Some(args) = call_args(t, open) else { continue };
        let kw = |k: &str| args.iter().find(|a| a.keyword == Some(k));
        let is_off =
            |v: &[Token<'_>]| v.len() == 1 && (v[0].is_name("False") || v[0].is_name("None") || v[0].text == "0");
        let has_generator = kw("generator").is_some_and(|a| !is_off(a.value));
        if kw("shuffle").is_some_and(|a| !is_off(a.value)) && !has_generator {
            out.push(finding(
                &t[i],
                "dataloader-shuffle",
                Severity::Warning,
                "the shuffle order is drawn from torch's global random state, which a replay resuming from a checkpoint does not restore, so replayed epochs see other batches".into(),
                "pass generator=torch.Generator().manual_seed(seed + epoch), re-created each epoch, or checkpoint the generator",
            ));
        }
        if kw("num_workers").is_some_and(|a| !is_off(a.value)) && !has_generator && kw("worker_init_fn").is_none() {
            out.push(finding(
                &t[i],
                "dataloader-worker-seed",
                Severity::Note,
                "worker seeds come from torch's global random state each epoch, so random augmentations in workers differ in a replay that resumes from a checkpoint".into(),
                "pass a seeded generator= (or a worker_init_fn that seeds from the epoch and worker id)",
            ));
        }
    }
}

/// Whether `name` or an object containing it (`trainer` for
/// `trainer.opt`), or one it contains, is checkpointed.
fn covered(name: &str, checkpointed: &HashSet<String>) -> bool {
    checkpointed.iter().any(|c| {
        c == name
            || name.strip_prefix(c.as_str()).is_some_and(|r| r.starts_with('.'))
            || c.strip_prefix(name).is_some_and(|r| r.starts_with('.'))
    })
}

/// What the script checkpoints and steps; `None` for a script that does not use flor.
struct Usage<'a> {
    checkpointed: HashSet<String>,
    /// Objects stepped in a loop, with the token of their first step.
    stepped: BTreeMap<String, Token<'a>>,
    /// Models trained in a loop, with the token where that shows.
    trained: BTreeMap<String, (Token<'a>, Option<String>)>,
}

fn usage<'a>(lines: &[Line<'a>]) -> Option<Usage<'a>> {
    let imported: HashSet<&str> = lines
        .iter()
        .filter(|l| {
            l.tokens.len() > 3
                && l.tokens[0].is_name("from")
                && l.tokens[1].is_name("flor")
                && l.tokens[2].is_name("import")
        })
        .flat_map(|l| l.tokens[3..].iter().filter(|t| t.kind == Kind::Name).map(|t| t.text))
        .collect();
    let is_flor = |name: &str, what: &str| name == format!("flor.{what}") || (name == what && imported.contains(what));
    let mut uses_flor = false;
    let mut u = Usage { checkpointed: HashSet::new(), stepped: BTreeMap::new(), trained: BTreeMap::new() };
    let mut optimizers: BTreeMap<String, Vec<String>> = BTreeMap::new(); // optimizer -> models
    let mut blocks: Vec<(u32, bool)> = Vec::new();
    for line in lines {
        while blocks.last().is_some_and(|&(indent, _)| indent >= line.indent) {
            blocks.pop();
        }
        let is_loop = line.starts_with("for") || line.starts_with("while");
        let in_loop = is_loop || blocks.iter().any(|&(_, l)| l);
        if line.tokens.last().is_some_and(|t| t.is_op(":")) {
            blocks.push((line.indent, is_loop));
        }
        let t = &line.tokens;
        // `opt = torch.optim.SGD(model.parameters(), ...)`
        if let (Some((target, after)), true) = (dotted(t, 0), true) {
            if t.get(after).is_some_and(|x| x.is_op("=")) {
                let models = parameter_owners(&t[after + 1..]);
                if !models.is_empty() {
                    optimizers.insert(target, models);
                }
            }
        }
        for i in (0..t.len()).filter(|&i| starts_dotted(t, i)) {
            let Some((name, open)) = dotted(t, i) else { continue };
            let call = t.get(open).is_some_and(|x| x.is_op("("));
            if call && (is_flor(&name, "checkpointing") || is_flor(&name, "loop")) {
                uses_flor = true;
            }
            if call && is_flor(&name, "checkpointing") {
                let Some(args) = call_args(t, open) else { continue };
                for a in args {
                    for j in (0..a.value.len()).filter(|&j| starts_dotted(a.value, j)) {
                        if let Some((n, _)) = dotted(a.value, j) {
                            u.checkpointed.insert(n);
                        }
                    }
                }
            }
            if !call || !in_loop {
                continue;
            }
            stepped_or_trained(&name, t, i, open, &mut u);
        }
    }
    for (opt, first) in u.stepped.clone() {
        for model in optimizers.get(&opt).into_iter().flatten() {
            u.trained.entry(model.clone()).or_insert((first, Some(opt.clone())));
        }
    }
    uses_flor.then_some(u)
}

/// Records `x.step()`, `scaler.step(opt)` and `model.train()` calls.
fn stepped_or_trained<'a>(name: &str, t: &[Token<'a>], i: usize, open: usize, u: &mut Usage<'a>) {
    let Some((object, method)) = name.rsplit_once('.') else { return };
    if object == "self" {
        return;
    }
    let args = call_args(t, open).unwrap_or_default();
    match method {
        "step" if args.is_empty() || args.iter().any(|a| a.keyword == Some("closure")) => {
            u.stepped.entry(object.to_owned()).or_insert(t[i]);
        }
        // `scaler.step(optimizer)`: the scaler and the optimizer both step.
        "step" if object.to_ascii_lowercase().contains("scaler") && args.len() == 1 => {
            u.stepped.entry(object.to_owned()).or_insert(t[i]);
            if let Some((opt, _)) = dotted(args[0].value, 0).filter(|(_, end)| *end == args[0].value.len()) {
                u.stepped.entry(opt).or_insert(args[0].value[0]);
            }
        }
        "train" if args.is_empty() || (args.len() == 1 && args[0].value.first().is_some_and(|v| v.is_name("True"))) => {
            u.trained.entry(object.to_owned()).or_insert((t[i], None));
        }
        _ => {}
    }
}

/// The `m` of every `m.parameters()` / `m.named_parameters()` in tokens.
fn parameter_owners(t: &[Token<'_>]) -> Vec<String> {
    (0..t.len())
        .filter(|&i| starts_dotted(t, i))
        .filter_map(|i| dotted(t, i))
        .filter_map(|(name, after)| {
            let (owner, m) = name.rsplit_once('.')?;
            (matches!(m, "parameters" | "named_parameters") && t.get(after).is_some_and(|x| x.is_op("(")))
                .then(|| owner.to_owned())
        })
        .collect()
}

/// Optimizers, schedulers and models changed in the loop but not checkpointed.
fn unchecked_state(lines: &[Line<'_>], out: &mut Vec<Finding>) {
    let Some(u) = usage(lines) else { return };
    let hint = |name: &str| {
        let key = name.rsplit('.').next().unwrap_or(name);
        format!("pass it to flor.checkpointing, e.g. `with flor.checkpointing(..., {key}={name}):`")
    };
    for (name, tok) in &u.stepped {
        if !covered(name, &u.checkpointed) {
            out.push(finding(
                tok,
                "stepped-not-checkpointed",
                Severity::Warning,
                format!("`{name}` is stepped in the loop but is not among flor.checkpointing's arguments, so a replay resuming from a checkpoint restarts it from its initial state"),
                &hint(name),
            ));
        }
    }
    for (name, (tok, via)) in &u.trained {
        if !covered(name, &u.checkpointed) {
            let how = via.as_ref().map_or(String::new(), |o| format!(" (its parameters are in `{o}`)"));
            out.push(finding(
                tok,
                "trained-not-checkpointed",
                Severity::Warning,
                format!("`{name}` is trained in the loop{how} but is not among flor.checkpointing's arguments, so a replay resuming from a checkpoint starts from its initial weights"),
                &hint(name),
            ));
        }
    }
}
