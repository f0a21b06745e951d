//! The syntax-tree questions replay asks of a script, on arbitrary Python:
//! its log statements and the flor loops a line runs in. The input is two
//! selector bytes (the line to ask about), then the source. Checks that every
//! log statement found is a statement `loop_scope` answers for, and that
//! asking for one name returns exactly that name's statements.

#![no_main]

use flor_propagate::{python, LanguagePropagator, LoopScope, PropagateError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else { return };
    let Ok(source) = std::str::from_utf8(rest) else { return };
    let count = source.split('\n').count();
    let line = usize::from(u16::from_le_bytes([*a, *b])) % count + 1;
    match python().loop_scope(source, line) {
        Ok(scope) => check_scope(&scope),
        Err(PropagateError::Unparsable { .. }) => {
            assert!(python().log_statements(source, &[]).is_err(), "one parser, one answer");
            return;
        }
        Err(PropagateError::NoStatement { line: l, .. }) => assert_eq!(l, line),
        Err(e) => panic!("unexpected error: {e}"),
    }
    let all = python().log_statements(source, &[]).expect("the source parsed for loop_scope");
    for s in &all {
        assert!((1..=count).contains(&s.line), "log statement on line {} of {count}", s.line);
        let scope = python().loop_scope(source, s.line).expect("a log statement is a statement");
        check_scope(&scope);
    }
    if let Some(first) = all.first() {
        let one = python().log_statements(source, &[first.name.as_str()]).expect("parsed before");
        let expected: Vec<_> = all.iter().filter(|s| s.name == first.name).cloned().collect();
        assert_eq!(one, expected);
    }
});

fn check_scope(scope: &LoopScope) {
    match scope {
        LoopScope::Static { loops, after_first_loop } => {
            assert!(loops.is_empty() || *after_first_loop, "inside a loop is after its start");
        }
        LoopScope::Dynamic { reason } => assert!(!reason.is_empty(), "dynamic says why"),
    }
}
