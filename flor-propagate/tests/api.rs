//! The library API: propagation, log statements, the registry, limits, errors.

use std::path::Path;
use std::sync::Arc;

use flor_propagate::{
    python, registry, LanguagePropagator, LogStatement, LoopScope, Outcome, PropagateError, Propagation,
};

const NEW: &str = "\
import flordb as flor

for epoch in flor.loop(\"epoch\", range(10)):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        flor.log(\"loss\", loss.item())
        optimizer.step()
    flor.log(\"epoch\", epoch)
";

const OLD: &str = "\
import flordb as flor

for epoch in flor.loop(\"epoch\", range(10)):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
";

#[test]
fn propagation_is_code_in_code_out() {
    let lines = python().log_statement_lines(NEW, &["loss"]).unwrap();
    assert_eq!(lines, [8]);
    let p = python().propagate(NEW, &lines, OLD).unwrap();
    assert_eq!(p.outcomes, [Outcome::Placed { line: 8, renames: vec![] }]);
    assert_eq!(p.source, NEW.replace("    flor.log(\"epoch\", epoch)\n", ""));
}

#[test]
fn finds_log_statements_by_name() {
    let s = |line: usize, name: &str| LogStatement { line, name: name.into() };
    assert_eq!(python().log_statements(NEW, &[]).unwrap(), [s(8, "loss"), s(10, "epoch")]);
    assert_eq!(python().log_statements(NEW, &["epoch"]).unwrap(), [s(10, "epoch")]);
    assert_eq!(python().log_statement_lines(NEW, &["epoch", "loss"]).unwrap(), [8, 10]);
    assert!(python().log_statements(NEW, &["other"]).unwrap().is_empty());
    let e = python().log_statements("for x in :\n", &[]).unwrap_err();
    assert!(matches!(e, PropagateError::Unparsable { which: "input", line: 1, .. }), "{e}");
}

#[test]
fn registry_by_extension() {
    let registry = registry();
    assert_eq!(registry.for_path(Path::new("a/train.py")).map(|p| p.language()), Some("python"));
    assert_eq!(registry.for_path(Path::new("gui.pyw")).map(|p| p.language()), Some("python"));
    assert!(registry.for_path(Path::new("train.rs")).is_none());
    assert!(python().handles(Path::new("x.py")));
    assert_eq!(python().startup_probe(), Some(vec!["-c".to_string(), "import flordb".to_string()]));
}

/// An SDK user's propagator: registered later, it wins for the extensions
/// it shares with Python and adds its own.
#[test]
fn a_registered_propagator_extends_and_overrides() {
    struct Stub;
    impl LanguagePropagator for Stub {
        fn language(&self) -> &'static str {
            "stub"
        }
        fn extensions(&self) -> &'static [&'static str] {
            &["pyw", "stub"]
        }
        fn propagate(&self, _: &str, _: &[usize], old: &str) -> Result<Propagation, PropagateError> {
            Ok(Propagation { source: old.to_string(), outcomes: vec![] })
        }
        fn log_statements(&self, _: &str, _: &[&str]) -> Result<Vec<LogStatement>, PropagateError> {
            Ok(vec![])
        }
        fn loop_scope(&self, _: &str, _: usize) -> Result<LoopScope, PropagateError> {
            Ok(LoopScope::Dynamic { reason: "stub".into() })
        }
    }
    let mut registry = registry();
    registry.register(Arc::new(Stub));
    let lang = |p: &str| registry.for_path(Path::new(p)).map(|p| p.language());
    assert_eq!((lang("a.py"), lang("a.pyw"), lang("a.stub")), (Some("python"), Some("stub"), Some("stub")));
    assert_eq!(registry.languages().map(|p| p.language()).collect::<Vec<_>>(), ["python", "stub"]);
}

#[test]
fn bad_requests_are_errors() {
    assert_eq!(python().propagate(NEW, &[2], OLD), Err(PropagateError::NoStatement { which: "new", line: 2 }));
    assert_eq!(python().propagate(NEW, &[0], OLD), Err(PropagateError::NoStatement { which: "new", line: 0 }));
    let e = python().propagate(NEW, &[8], "def f(:\n    pass\n").unwrap_err();
    assert!(matches!(e, PropagateError::Unparsable { which: "old", line: 1, .. }), "{e}");
}

#[test]
fn huge_inputs_are_refused_with_a_clear_error() {
    let e = python().with_max_nodes(50).propagate(NEW, &[8], OLD).unwrap_err();
    match e {
        PropagateError::TooLarge(msg) => assert!(msg.contains("more than 50 syntax nodes"), "{msg}"),
        other => panic!("{other}"),
    }
}

#[test]
fn statements_requested_out_of_order_keep_their_source_order() {
    let new = NEW.replace(
        "        flor.log(\"loss\", loss.item())\n",
        "        flor.log(\"loss\", loss.item())\n        flor.log(\"x\", x.mean())\n",
    );
    let p = python().propagate(&new, &[9, 8], OLD).unwrap();
    assert!(
        p.source
            .contains("loss.backward()\n        flor.log(\"loss\", loss.item())\n        flor.log(\"x\", x.mean())\n"),
        "{}",
        p.source
    );
    assert_eq!(
        p.outcomes,
        [Outcome::Placed { line: 9, renames: vec![] }, Outcome::Placed { line: 8, renames: vec![] }]
    );
}

/// Many near-identical loops where the old version renamed the optimizer in
/// every third one only: a loop of one stage can then be isomorphic to the
/// loop of another stage. Whatever the matcher guesses, a statement is
/// either placed in the right stage or reported, never put elsewhere.
#[test]
fn repetitive_code_is_placed_right_or_reported() {
    let script = |stages: usize, new: bool| {
        let mut s = String::from("import flordb as flor\n");
        for i in 0..stages {
            let opt = if !new && i % 3 == 0 { "opt" } else { "optimizer" };
            s += &format!(
                "\ndef stage_{i}(model, loader, {opt}):\n    total = 0.0\n    for epoch in flor.loop(\"epoch_{i}\", range(3)):\n        for x, y in loader:\n            {opt}.zero_grad()\n            out = model(x) * {}\n            loss = criterion(out, y)\n            loss.backward()\n",
                1 + i % 11
            );
            if new && i == stages / 2 {
                s += "            flor.log(\"out\", out.mean().item())\n";
            }
            s += &format!(
                "            {opt}.step()\n            total += loss.item()\n        flor.log(\"total_{i}\", total)\n"
            );
        }
        s
    };
    let (mut placed, mut reported) = (0, 0);
    for stages in [20, 50, 100, 135, 140] {
        let (new, old) = (script(stages, true), script(stages, false));
        let at = python().log_statement_lines(&new, &["out"]).unwrap();
        let p = python().propagate(&new, &at, &old).unwrap();
        match &p.outcomes[0] {
            Outcome::Placed { line, .. } => {
                let lines: Vec<&str> = p.source.lines().collect();
                let def = lines[..*line].iter().rev().find(|l| l.starts_with("def ")).unwrap();
                assert!(def.starts_with(&format!("def stage_{}(", stages / 2)), "{stages} stages: placed in {def}");
                assert_eq!(lines[line - 2].trim(), "loss.backward()");
                placed += 1;
            }
            Outcome::Failed { reason } => {
                assert!(reason.starts_with("ambiguous"), "{reason}");
                reported += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    eprintln!("repetitive code: {placed} placed, {reported} reported ambiguous");
    assert!(placed >= 1, "placed {placed}, reported {reported}");
}

/// `log_statements` reads the syntax tree: what looks like a log call in a
/// comment or a string is none, a call over several lines is one statement
/// at its first line, the module is known by whatever name it is imported as.
#[test]
fn log_statements_from_the_syntax_tree() {
    let names = |source: &str| -> Vec<(usize, String)> {
        python().log_statements(source, &[]).unwrap().into_iter().map(|s| (s.line, s.name)).collect()
    };
    let at =
        |pairs: &[(usize, &str)]| -> Vec<(usize, String)> { pairs.iter().map(|&(l, n)| (l, n.to_string())).collect() };
    let script = r#"import flordb as flor
# flor.log("in_comment", 1)
s = 'flor.log("in_string", 1)'
"""
flor.log("in_docstring", 1)
"""
flor.log(
    "multi",  # a comment inside the call
    value,
)
flor.log('single', 1)
flor.log("""triple""", 1)
flor.log(name="keyword", value=1)
flor.log(value=1, name="keyword_last")
y = flor.log("assigned", f(x))
flor.log("outer", flor.log("inner", 1))
flor.log(f"dynamic_{i}", 1)
flor.log(key, 1)
cb = lambda v: flor.log("in_lambda", v)
if flor.log("in_if_header", 1):
    pass
flor . log ( "spaced" , 1 )
other.log("not_flor", 1)
log("bare_without_import", 1)
"#;
    assert_eq!(
        names(script),
        at(&[
            (7, "multi"),
            (11, "single"),
            (12, "triple"),
            (13, "keyword"),
            (14, "keyword_last"),
            (15, "assigned"),
            (16, "outer"),
            (16, "inner"),
            (22, "spaced"),
        ])
    );
    assert_eq!(python().log_statement_lines(script, &["outer", "inner"]).unwrap(), [16]);

    // Aliases: `import flordb as X`, `import flordb`, `from flordb import ...`;
    // `flor` is only assumed when the script imports no flordb.
    assert_eq!(names("import flordb as fl\nfl.log('a', 1)\nflor.log('b', 1)\n"), at(&[(2, "a")]));
    assert_eq!(names("import flordb\nflordb.log('a', 1)\nflor.log('b', 1)\n"), at(&[(2, "a")]));
    assert_eq!(names("import os, flordb as F\nif x:\n    F.log('a', 1)\n"), at(&[(3, "a")]));
    assert_eq!(names("from flordb import log\nlog('a', 1)\n"), at(&[(2, "a")]));
    assert_eq!(names("from flordb import log as L\nL('a', 1)\nlog('b', 1)\n"), at(&[(2, "a")]));
    assert_eq!(names("from flordb import *\nlog('a', 1)\n"), at(&[(2, "a")]));
    assert_eq!(names("from utils import flor\nflor.log('a', 1)\n"), at(&[(2, "a")]));
    // Tabs and nesting do not matter.
    assert_eq!(names("import flordb as flor\ndef f():\n\tfor x in y:\n\t\tflor.log('a', x)\n"), at(&[(4, "a")]));
}

#[test]
fn loop_scope_errors_name_the_line() {
    let script = "import flordb as flor\n\nfor e in flor.loop('epoch', range(3)):\n    flor.log('x', e)\n";
    assert_eq!(python().loop_scope(script, 2), Err(PropagateError::NoStatement { which: "input", line: 2 }));
    assert_eq!(python().loop_scope(script, 0), Err(PropagateError::NoStatement { which: "input", line: 0 }));
    assert_eq!(python().loop_scope(script, 9), Err(PropagateError::NoStatement { which: "input", line: 9 }));
    let e = python().loop_scope("for x in :\n    pass\n", 1).unwrap_err();
    assert!(matches!(e, PropagateError::Unparsable { which: "input", line: 1, .. }), "{e}");
    assert_eq!(e.to_string().split(" at ").next(), Some("input source does not parse"));
}

/// Scopes the data-driven cases (`tests/scope`) do not cover.
#[test]
fn loop_scope_corner_cases() {
    let scope = |source: &str, line: usize| python().loop_scope(source, line).unwrap();
    let fixed = |loops: &[&str], after: bool| LoopScope::Static {
        loops: loops.iter().map(|l| l.to_string()).collect(),
        after_first_loop: after,
    };
    let reason = |source: &str, line: usize| match scope(source, line) {
        LoopScope::Dynamic { reason } => reason,
        other => panic!("{other:?}"),
    };
    // `name=` keyword, `async for`, a header statement itself, `else` of a loop.
    let s = "import flordb as flor\nasync def main():\n    async for e in flor.loop(name='epoch', iterable=xs):\n        flor.log('a', e)\n";
    assert_eq!(scope(s, 4), fixed(&["epoch"], true));
    let s = "import flordb as flor\nfor e in flor.loop('epoch', r):\n    pass\nelse:\n    flor.log('after', 1)\n";
    assert_eq!(scope(s, 2), fixed(&[], false));
    assert_eq!(scope(s, 5), fixed(&[], true));
    // A class body runs where the class statement is; its methods do not.
    let s = "import flordb as flor\nfor e in flor.loop('epoch', r):\n    class C:\n        flor.log('c', 1)\n        def m(self):\n            flor.log('m', 1)\n";
    assert_eq!(scope(s, 4), fixed(&["epoch"], true));
    assert!(reason(s, 6).starts_with("inside function `m`"));
    // Two loops in one header, a loop consumed at once, a loop passed around.
    let s = "import flordb as flor\nfor a, b in zip(flor.loop('x', r), flor.loop('y', r)):\n    flor.log('v', a)\n";
    assert!(reason(s, 3).contains("more than once"), "{}", reason(s, 3));
    let s = "import flordb as flor\nfor e in list(flor.loop('epoch', r)):\n    flor.log('v', e)\n";
    assert!(reason(s, 3).contains("consumed at once"), "{}", reason(s, 3));
    let s = "import flordb as flor\nfor e in [x for x in flor.loop('epoch', r)]:\n    flor.log('v', e)\n";
    assert!(reason(s, 3).contains("comprehension"), "{}", reason(s, 3));
    let s = "import flordb as flor\nL = flor.loop\nfor e in L('epoch', r):\n    flor.log('v', e)\n";
    assert!(reason(s, 4).contains("`flor.loop` at line 2 is used other than called"), "{}", reason(s, 4));
    // flor.iteration outside a `with` header.
    let s = "import flordb as flor\nit = flor.iteration('epoch', 0)\nflor.log('v', 1)\n";
    assert!(reason(s, 3).contains("not the context manager of a `with` statement"), "{}", reason(s, 3));
    // A loop with no name at all.
    let s = "import flordb as flor\nfor e in flor.loop():\n    flor.log('v', e)\n";
    assert!(reason(s, 3).contains("has no name"), "{}", reason(s, 3));
    // Something else's `loop` is no flor loop.
    let s = "import flordb as flor\nfor e in asyncio.loop('epoch', r):\n    flor.log('v', e)\n";
    assert_eq!(scope(s, 3), fixed(&[], false));
    // A plain loop around a flor loop repeats it: statements of the plain
    // loop outside it run between its iterations, those inside are static.
    let s = "import flordb as flor\nfor run in runs:\n    flor.log('run', run)\n    for e in flor.loop('epoch', r):\n        flor.log('v', e)\n";
    assert!(reason(s, 3).contains("`for` loop at line 2, which also runs a flor loop"), "{}", reason(s, 3));
    assert_eq!(scope(s, 5), fixed(&["epoch"], true));
    // A function holding the loop, nested in another function.
    let s = "import flordb as flor\ndef outer():\n    def train():\n        for e in flor.loop('epoch', r):\n            flor.log('v', e)\n    train()\n";
    assert_eq!(scope(s, 5), fixed(&["epoch"], true));
}

/// Every outcome's line is a line of the output, also for a statement that
/// was already there when others are inserted before it.
#[test]
fn lines_of_present_statements_are_lines_of_the_output() {
    let new = "for e in xs:\n    a = f(e)\n    flor.log('a', a)\n    b = g(a)\n    flor.log('b', b)\n";
    let old = "for e in xs:\n    a = f(e)\n    b = g(a)\n    flor.log('b', b)\n";
    let p = python().propagate(new, &[3, 5], old).unwrap();
    assert_eq!(p.outcomes, [Outcome::Placed { line: 3, renames: vec![] }, Outcome::AlreadyPresent { line: 5 }]);
    assert_eq!(p.source, new);
    for o in &p.outcomes {
        let (Outcome::Placed { line, .. } | Outcome::AlreadyPresent { line }) = o else { panic!("{o:?}") };
        assert!(p.source.lines().nth(line - 1).is_some_and(|l| l.trim_start().starts_with("flor.log(")));
    }
}

/// The examples in the trait's documentation (flor-core cannot run Python
/// there) hold for the Python propagator.
#[test]
fn the_trait_documentation_examples_hold() {
    let logs = "import flordb as flor\n# flor.log(\"loss\", 0)\nflor.log(\n    \"loss\", l)\nprint('flor.log(\"loss\", 1)')\nflor.log(\"acc\", a)\n";
    assert_eq!(python().log_statements(logs, &["loss"]).unwrap(), [LogStatement { line: 3, name: "loss".into() }]);
    let script = r#"import flordb as flor
flor.log("lr", lr)
def helper(x):
    flor.log("x", x)
for e in flor.loop("epoch", range(3)):
    for i, b in enumerate(flor.loop("step", data)):
        flor.log("loss", f(b))
    flor.log("acc", acc)
flor.log("final", acc)
"#;
    let fixed = |loops: &[&str], after_first_loop: bool| LoopScope::Static {
        loops: loops.iter().map(|l| l.to_string()).collect(),
        after_first_loop,
    };
    let scope = |line: usize| python().loop_scope(script, line).unwrap();
    assert_eq!(scope(2), fixed(&[], false));
    assert!(matches!(scope(4), LoopScope::Dynamic { reason } if reason.starts_with("inside function `helper`")));
    assert_eq!(scope(7), fixed(&["epoch", "step"], true));
    assert_eq!(scope(8), fixed(&["epoch"], true));
    assert_eq!(scope(9), fixed(&[], true));
}

/// A log after an edited statement is placed after its old counterpart and
/// reported as approximate, naming both statements; one inside a function
/// that replaced two old ones names the other as a rival.
#[test]
fn placements_next_to_edited_code_say_so() {
    use flor_propagate::Side;
    let new = "for x, y in loader:\n    out = model(x)\n    total += F.nll_loss(out, y, reduction='sum').item()\n    flor.log('t', total)\n    n += 1\n";
    let old = "for x, y in loader:\n    out = model(x)\n    total += F.nll_loss(out, y, size_average=False).data[0]\n    n += 1\n";
    let p = python().propagate(new, &[4], old).unwrap();
    let Outcome::Approximate { line: 4, anchor, .. } = &p.outcomes[0] else { panic!("{:?}", p.outcomes) };
    assert_eq!((anchor.side, anchor.new_line, anchor.old_line), (Side::After, 3, 3));
    assert_eq!(anchor.old_text, "total += F.nll_loss(out, y, size_average=False).data[0]");
    assert!((50..100).contains(&anchor.similarity), "{anchor:?}");
    assert!(anchor.rival.is_none());
    assert!(p.outcomes[0].to_string().starts_with("placed at line 4 after an edited counterpart: `total += "));

    let dir = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/corpus/edited-anchor-merged-functions");
    let new = std::fs::read_to_string(dir.join("new.py")).unwrap();
    let old = std::fs::read_to_string(dir.join("old.py")).unwrap();
    let p = python().propagate(&new, &[18], &old).unwrap();
    let Outcome::Approximate { anchor, .. } = &p.outcomes[0] else { panic!("{:?}", p.outcomes) };
    assert_eq!(anchor.side, Side::Within);
    assert_eq!(anchor.new_text, "def write_tensors(tensors, layers, file, dtype):");
    let (line, text) = anchor.rival.as_ref().expect("a rival");
    assert_eq!((*line, text.as_str()), (13, "def write_tensors_fp32(tensors, layers, file):"));
    assert!(p.outcomes[0].to_string().contains("is about as similar"), "{}", p.outcomes[0]);
}
