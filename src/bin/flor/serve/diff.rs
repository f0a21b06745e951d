//! A line diff of two script versions, as unified-diff hunks: the common
//! head and tail are trimmed, the middle aligned by its longest common
//! subsequence (scripts are small; a middle too large to align is shown
//! as replaced whole).

use std::fmt::Write as _;

/// Cells of the alignment table beyond which the middle is not aligned.
const MAX_CELLS: usize = 16_000_000;

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same(usize, usize),
    Removed(usize),
    Added(usize),
}

/// The edit script from `old` to `new`.
fn ops(old: &[&str], new: &[&str]) -> Vec<Op> {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail = old[head..].iter().rev().zip(new[head..].iter().rev()).take_while(|(a, b)| a == b).count();
    let (a, b) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);
    let mut out: Vec<Op> = (0..head).map(|i| Op::Same(i, i)).collect();
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        out.extend((0..a.len()).map(|i| Op::Removed(head + i)));
        out.extend((0..b.len()).map(|j| Op::Added(head + j)));
    } else {
        // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
        let w = b.len() + 1;
        let mut lcs = vec![0u32; (a.len() + 1) * w];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                lcs[i * w + j] = if a[i] == b[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if i < a.len() && j < b.len() && a[i] == b[j] {
                out.push(Op::Same(head + i, head + j));
                (i, j) = (i + 1, j + 1);
            } else if i < a.len() && (j == b.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                out.push(Op::Removed(head + i));
                i += 1;
            } else {
                out.push(Op::Added(head + j));
                j += 1;
            }
        }
    }
    let (o, n) = (old.len() - tail, new.len() - tail);
    out.extend((0..tail).map(|k| Op::Same(o + k, n + k)));
    out
}

/// What changed from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Unified-diff hunks (`@@ -a,b +c,d @@` headers), empty when equal.
    pub(crate) text: String,
    /// Lines added.
    pub(crate) added: usize,
    /// Lines removed.
    pub(crate) removed: usize,
}

/// The unified diff of `old` and `new` with `context` lines around each
/// change.
pub(crate) fn unified(old: &str, new: &str, context: usize) -> Diff {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let ops = ops(&a, &b);
    let changed: Vec<usize> =
        ops.iter().enumerate().filter(|(_, o)| !matches!(o, Op::Same(..))).map(|(i, _)| i).collect();
    let added = ops.iter().filter(|o| matches!(o, Op::Added(_))).count();
    let removed = ops.iter().filter(|o| matches!(o, Op::Removed(_))).count();
    let mut text = String::new();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(context);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * context + 1 {
            end = changed[k];
            k += 1;
        }
        let end = (end + context + 1).min(ops.len());
        let hunk = &ops[start..end];
        let old_start = hunk.iter().find_map(|o| match o {
            Op::Same(i, _) | Op::Removed(i) => Some(*i),
            Op::Added(_) => None,
        });
        let new_start = hunk.iter().find_map(|o| match o {
            Op::Same(_, j) | Op::Added(j) => Some(*j),
            Op::Removed(_) => None,
        });
        let old_len = hunk.iter().filter(|o| !matches!(o, Op::Added(_))).count();
        let new_len = hunk.iter().filter(|o| !matches!(o, Op::Removed(_))).count();
        let _ = writeln!(
            text,
            "@@ -{},{old_len} +{},{new_len} @@",
            old_start.map_or(0, |i| i + 1),
            new_start.map_or(0, |j| j + 1)
        );
        for o in hunk {
            let _ = match *o {
                Op::Same(i, _) => writeln!(text, " {}", a[i]),
                Op::Removed(i) => writeln!(text, "-{}", a[i]),
                Op::Added(j) => writeln!(text, "+{}", b[j]),
            };
        }
    }
    Diff { text, added, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_hunks() {
        assert_eq!(unified("a\nb\n", "a\nb\n", 3), Diff { text: String::new(), added: 0, removed: 0 });
    }

    #[test]
    fn a_rename_and_an_insertion() {
        let old = "import flor\nw = 0\nfor e in range(3):\n    w = w - 1\nprint(w)\n";
        let new = "import flor\np = 0\nfor e in range(3):\n    p = p - 1\n    flor.log('p', p)\nprint(p)\n";
        let d = unified(old, new, 1);
        assert_eq!((d.added, d.removed), (4, 3));
        assert_eq!(
            d.text,
            "@@ -1,5 +1,6 @@\n import flor\n-w = 0\n+p = 0\n for e in range(3):\n-    w = w - 1\n-print(w)\n+    p = p - 1\n+    flor.log('p', p)\n+print(p)\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let old: String = (0..20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l2\n", "two\n").replace("l17\n", "seventeen\n");
        let d = unified(&old, &new, 2);
        assert_eq!(d.text.matches("@@ -").count(), 2, "{}", d.text);
        assert!(d.text.starts_with("@@ -1,5 +1,5 @@\n l0\n l1\n-l2\n+two\n l3\n l4\n"), "{}", d.text);
    }
}
