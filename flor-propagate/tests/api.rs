//! The library API: propagation, log statements, the registry, limits, errors.

use std::path::Path;
use std::sync::Arc;

use flor_propagate::{find_log_statements, python, registry, LanguagePropagator, Outcome, PropagateError, Propagation};

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
    let lines = find_log_statements(NEW, &["loss"]).unwrap();
    assert_eq!(lines, [8]);
    let p = python().propagate(NEW, &lines, OLD).unwrap();
    assert_eq!(p.outcomes, [Outcome::Placed { line: 8, renames: vec![] }]);
    assert_eq!(p.source, NEW.replace("    flor.log(\"epoch\", epoch)\n", ""));
}

#[test]
fn finds_log_statements_by_name() {
    assert_eq!(find_log_statements(NEW, &[]).unwrap(), [8, 10]);
    assert_eq!(find_log_statements(NEW, &["epoch"]).unwrap(), [10]);
    assert!(find_log_statements(NEW, &["other"]).unwrap().is_empty());
    assert!(matches!(find_log_statements("for x in :\n", &[]), Err(PropagateError::Unparsable { .. })));
}

#[test]
fn registry_by_extension() {
    let registry = registry();
    assert_eq!(registry.for_path(Path::new("a/train.py")).map(|p| p.language()), Some("python"));
    assert_eq!(registry.for_path(Path::new("gui.pyw")).map(|p| p.language()), Some("python"));
    assert!(registry.for_path(Path::new("train.rs")).is_none());
    assert!(python().handles(Path::new("x.py")));
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
    }
    let mut registry = registry();
    registry.register(Arc::new(Stub));
    let lang = |p: &str| registry.for_path(Path::new(p)).map(|p| p.language());
    assert_eq!((lang("a.py"), lang("a.pyw"), lang("a.stub")), (Some("python"), Some("stub"), Some("stub")));
    assert_eq!(registry.languages().map(|p| p.language()).collect::<Vec<_>>(), ["python", "stub"]);
}

#[test]
fn bad_requests_are_errors() {
    assert_eq!(python().propagate(NEW, &[2], OLD), Err(PropagateError::NoStatement(2)));
    assert_eq!(python().propagate(NEW, &[0], OLD), Err(PropagateError::NoStatement(0)));
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
        let at = find_log_statements(&new, &["out"]).unwrap();
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
