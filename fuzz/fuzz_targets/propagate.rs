//! Propagation between two arbitrary Python sources. The input is two
//! selector bytes, then the new source, a NUL byte, and the old source; the
//! selectors pick the new source's line(s) to carry over. Checks that the
//! result is the old source with lines inserted (nothing of it lost or
//! reordered), that it still parses, and that every outcome points into it.

#![no_main]

use flor_propagate::{python, LanguagePropagator, Outcome, PropagateError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let (new, old) = text.split_once('\0').unwrap_or((text, ""));
    let count = new.split('\n').count();
    let mut lines = vec![usize::from(*a) % count + 1];
    let second = usize::from(b & 0x7f) % count + 1;
    if b & 0x80 != 0 && second != lines[0] {
        lines.push(second);
    }
    let p = match python().propagate(new, &lines, old) {
        Ok(p) => p,
        Err(PropagateError::Unparsable { line, column, .. }) => {
            assert!(line >= 1 && column >= 1, "positions are 1-based");
            return;
        }
        Err(PropagateError::NoStatement { line, .. }) => {
            assert!(lines.contains(&line), "names a line that was not asked for");
            return;
        }
        Err(e) => panic!("unexpected error: {e}"),
    };
    assert_eq!(p.outcomes.len(), lines.len(), "one outcome per statement");
    let out: Vec<&str> = p.source.split('\n').collect();
    let mut placed = 0;
    for o in &p.outcomes {
        match o {
            Outcome::Placed { line, .. } | Outcome::Approximate { line, .. } => {
                placed += 1;
                assert!((1..=out.len()).contains(line), "placed at line {line} of {}", out.len());
            }
            Outcome::AlreadyPresent { line } => {
                assert!((1..=out.len()).contains(line), "present at line {line} of {}", out.len());
            }
            Outcome::Failed { reason } => assert!(!reason.is_empty(), "a failure says why"),
        }
    }
    if placed == 0 {
        assert_eq!(p.source, old, "nothing placed, nothing changed");
        return;
    }
    // Insertion only: the old lines are, in order, a subsequence of the
    // output (a last line without one may gain a line ending: `\r\n` when the
    // file uses it).
    let mut rest = out.iter().map(|l| l.strip_suffix('\r').unwrap_or(l));
    for line in old.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        assert!(rest.any(|l| l == line), "old line {line:?} lost or reordered in:\n{}", p.source);
    }
    assert!(out.len() > old.split('\n').count(), "placed but nothing inserted");
    if let Err(e) = python().log_statements(&p.source, &[]) {
        panic!("the result does not parse ({e}):\n{}", p.source);
    }
});
