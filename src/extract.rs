//! Reading metrics out of captured text: the rules `flor capture --preview`
//! and `--extract` apply to each captured line (FlorDB 4's, written anew).
//!
//! A line yields at most one loop **index** and up to
//! [`MAX_PAIRS_PER_LINE`] **measures**:
//!
//! * a measure is `name: number` or `name=number` (`loss: 0.25`,
//!   `lr=1e-3`, `acc : 0.9`), the name a letter or `_` then letters,
//!   digits, `_`, `.`, `-`. The rules are conservative because a false
//!   positive invents a column: the name must not follow a word character
//!   or one of `. / : @ -` (so `http://host:80`, `12:30:05`,
//!   `2026-08-13T11:27:06` and `a/b=3` give nothing), and the number must
//!   not run into a word character or one of `. / : % -` (so `acc: 90%`,
//!   `size=3MB`, `v=1.2.3` give nothing). A name is read once per line
//!   (its first value).
//! * the index is a leading `epoch 3 |`, `Epoch 1/10`, `step: 1200`
//!   (the words of [`STEP_NAMES`], any case, at the start of the line;
//!   a `/total` is ignored), or else a pair whose name is one of those
//!   words and whose value is a whole number ≥ 0. Other step-word pairs of
//!   the same line are measures.

use flor_core::{Table, Value};

mod apply;
pub use apply::ExtractReport;

/// Words read as a loop index rather than a measure (fixed on purpose: an
/// open rule would read `Loading 5 files` as a loop named `Loading`).
pub const STEP_NAMES: [&str; 5] = ["epoch", "step", "iteration", "iter", "batch"];

/// At most this many measures per line (a printed dictionary does not
/// become dozens of columns).
pub const MAX_PAIRS_PER_LINE: usize = 8;

/// What one line yields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields {
    /// The loop index: a lowercase [`STEP_NAMES`] word and its iteration.
    pub index: Option<(String, u64)>,
    /// `(name, value)` measures, in line order.
    pub measures: Vec<(String, f64)>,
}

impl Fields {
    /// Whether the line yields nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_none() && self.measures.is_empty()
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_key_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn skip_space(s: &str, at: usize) -> usize {
    at + s[at..].len() - s[at..].trim_start().len()
}

fn digits(s: &str, at: usize) -> usize {
    at + s[at..].bytes().take_while(u8::is_ascii_digit).count()
}

/// The end of a number starting at `at` (`[+-]?(digits[.digits] | .digits)
/// [e[+-]digits]`), if there is one.
fn number_end(s: &str, at: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = at;
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_end = digits(s, i);
    let end = if int_end > i {
        if b.get(int_end) == Some(&b'.') {
            digits(s, int_end + 1)
        } else {
            int_end
        }
    } else if b.get(i) == Some(&b'.') && digits(s, i + 1) > i + 1 {
        digits(s, i + 1)
    } else {
        return None;
    };
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut j = end + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_end = digits(s, j);
        if exp_end > j {
            return Some(exp_end);
        }
    }
    Some(end)
}

/// The `name: number` / `name=number` pairs of `line` (see the module
/// docs), each name once, at most [`MAX_PAIRS_PER_LINE`].
pub fn extract_pairs(line: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut prev: Option<char> = None;
    let mut i = 0;
    while i < line.len() && out.len() < MAX_PAIRS_PER_LINE {
        let Some(c) = line[i..].chars().next() else { break };
        let starts = is_key_start(c) && !prev.is_some_and(|p| is_word(p) || matches!(p, '.' | '/' | ':' | '@' | '-'));
        if starts {
            if let Some((end, key, value)) = pair_at(line, i) {
                if !out.iter().any(|(k, _)| k == key) {
                    out.push((key.to_owned(), value));
                }
                prev = line[..end].chars().next_back();
                i = end;
                continue;
            }
        }
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

/// A pair starting at `at`: its end, name and value.
fn pair_at(line: &str, at: usize) -> Option<(usize, &str, f64)> {
    let key_end = at + line[at..].chars().take_while(|&c| is_key_char(c)).map(char::len_utf8).sum::<usize>();
    let sep = skip_space(line, key_end);
    if !matches!(line.as_bytes().get(sep), Some(b':' | b'=')) {
        return None;
    }
    let num = skip_space(line, sep + 1);
    let end = number_end(line, num)?;
    if line[end..].chars().next().is_some_and(|c| is_word(c) || matches!(c, '.' | '/' | ':' | '%' | '-')) {
        return None;
    }
    let value: f64 = line[num..end].parse().ok()?;
    Some((end, &line[at..key_end], value))
}

/// A leading `epoch 3`, `Epoch 1/10`, `step: 1200`: the lowercase word
/// and the index.
fn leading_index(line: &str) -> Option<(String, u64)> {
    let start = skip_space(line, 0);
    let rest = &line[start..];
    for word in STEP_NAMES {
        let Some(head) = rest.get(..word.len()) else { continue };
        if !head.eq_ignore_ascii_case(word) {
            continue;
        }
        let after = start + word.len();
        let spaced = skip_space(line, after);
        let num = if matches!(line.as_bytes().get(spaced), Some(b':' | b'=')) {
            skip_space(line, spaced + 1)
        } else if spaced > after {
            spaced
        } else {
            continue;
        };
        let end = digits(line, num);
        if end == num {
            continue;
        }
        let free = |at: usize| !line[at..].chars().next().is_some_and(|c| is_word(c) || c == '.');
        // `1/10`: the total is context, not data.
        let slash = skip_space(line, end);
        let with_total = (line.as_bytes().get(slash) == Some(&b'/'))
            .then(|| {
                let t = skip_space(line, slash + 1);
                let t_end = digits(line, t);
                (t_end > t && free(t_end)).then_some(())
            })
            .flatten()
            .is_some();
        if with_total || free(end) {
            return line[num..end].parse().ok().map(|n| (word.to_owned(), n));
        }
    }
    None
}

/// What `line` yields: its index and measures (see the module docs).
pub fn extract_fields(line: &str) -> Fields {
    let mut fields = Fields { index: leading_index(line), measures: Vec::new() };
    for (key, value) in extract_pairs(line) {
        let lower = key.to_ascii_lowercase();
        let step =
            STEP_NAMES.contains(&lower.as_str()) && value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53);
        if step {
            match &fields.index {
                None => {
                    fields.index = Some((lower, value as u64));
                    continue;
                }
                Some((name, _)) if *name == lower => continue,
                Some(_) => {}
            }
        }
        fields.measures.push((key, value));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(line: &str) -> Vec<(String, f64)> {
        extract_pairs(line)
    }

    fn p(k: &str, v: f64) -> (String, f64) {
        (k.to_owned(), v)
    }

    #[test]
    fn pairs_in_ordinary_log_lines() {
        assert_eq!(pairs("loss: 0.25 acc=0.9"), [p("loss", 0.25), p("acc", 0.9)]);
        assert_eq!(pairs("train_loss : 1e-3, val.loss=-2.5E+2"), [p("train_loss", 1e-3), p("val.loss", -250.0)]);
        assert_eq!(pairs("lr=.5 n=3."), [p("lr", 0.5), p("n", 3.0)]);
        assert_eq!(pairs("loss: 1 loss: 2"), [p("loss", 1.0)], "first value of a name");
        let many: String = (0..12).map(|k| format!("m{k}={k} ")).collect();
        assert_eq!(pairs(&many).len(), MAX_PAIRS_PER_LINE);
    }

    #[test]
    fn no_pairs_in_urls_times_units_versions() {
        for line in [
            "http://host:80/x",
            "at 12:30:05",
            "2026-08-13T11:27:06 started",
            "acc: 90%",
            "size=3MB",
            "version=1.2.3",
            "path a/b=3",
            "user@host:22",
            "ratio=1/2",
            "name: abc",
            "loss: nan",
            "naïve=3",
        ] {
            assert_eq!(pairs(line), [], "{line}");
        }
    }

    #[test]
    fn leading_step_words_are_the_index() {
        let f = extract_fields("epoch 3 | loss: 0.5000");
        assert_eq!(f, Fields { index: Some(("epoch".into(), 3)), measures: vec![p("loss", 0.5)] });
        let f = extract_fields("Epoch 1/10 - loss=2");
        assert_eq!(f, Fields { index: Some(("epoch".into(), 1)), measures: vec![p("loss", 2.0)] });
        let f = extract_fields("  step: 1200 loss=0.1");
        assert_eq!(f, Fields { index: Some(("step".into(), 1200)), measures: vec![p("loss", 0.1)] });
        let f = extract_fields("loss=0.1 iter=7");
        assert_eq!(f.index, Some(("iter".into(), 7)), "a step-word pair with a whole number");
        let f = extract_fields("epoch 2 step=5 loss=1");
        assert_eq!(f.index, Some(("epoch".into(), 2)));
        assert_eq!(f.measures, [p("step", 5.0), p("loss", 1.0)], "a second index word is a measure");
        assert_eq!(extract_fields("epoch: 4").index, Some(("epoch".into(), 4)));
        assert_eq!(extract_fields("epoch: 4").measures, []);
        assert_eq!(extract_fields("epochs 3 done").index, None);
        assert_eq!(extract_fields("epoch 3.5 x").index, None);
        assert_eq!(extract_fields("step=1.5").index, None);
        assert_eq!(extract_fields("step=1.5").measures, [p("step", 1.5)]);
        assert!(extract_fields("Loading 5 files").is_empty());
        assert!(extract_fields("").is_empty());
    }
}

/// What `flor capture --preview` shows ([`crate::Project::extractions`]).
#[derive(Debug, Clone)]
pub struct Extractions {
    /// One row per extracted value: the line's `projid`, `tstamp`,
    /// `filename` and loop columns (as [`crate::Project::io`]), then
    /// `index` (`epoch=3`: the loop index the line names, if any), `name`,
    /// `value` and `line` (the captured text it was read from).
    pub values: Table,
    /// The extracted names, sorted.
    pub names: Vec<String>,
    /// The loop index words found, sorted.
    pub indexes: Vec<String>,
    /// Captured lines read.
    pub lines: usize,
}

impl crate::Project {
    /// The values [the rules](self) read out of every captured line, with
    /// the line each came from (see [`Extractions`]). Reads only.
    pub fn extractions(&self) -> crate::Result<Extractions> {
        let io = self.io(None, &flor_core::Selection::default())?;
        let names = io.column_names();
        let (Some(line_col), Some(channel_col)) =
            (names.iter().position(|c| *c == "line"), names.iter().position(|c| *c == "channel"))
        else {
            return Ok(Extractions { values: Table::default(), names: Vec::new(), indexes: Vec::new(), lines: 0 });
        };
        let leading: Vec<&str> = names[..channel_col].to_vec();
        let mut columns = leading.clone();
        columns.extend(["index", "name", "value", "line"]);
        let mut values = Table::with_columns(columns);
        let (mut found, mut indexes) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        for row in io.rows() {
            let Some(Value::Text(text)) = &row[line_col] else { continue };
            let fields = extract_fields(text);
            if let Some((word, _)) = &fields.index {
                indexes.insert(word.clone());
            }
            let index = fields.index.as_ref().map(|(w, i)| Value::from(format!("{w}={i}")));
            for (name, value) in fields.measures {
                let mut out: Vec<Option<Value>> = row[..leading.len()].to_vec();
                out.push(index.clone());
                out.push(Some(Value::from(name.as_str())));
                out.push(Some(Value::Float(value)));
                out.push(Some(Value::Text(text.clone())));
                values.push_row(out);
                found.insert(name);
            }
        }
        Ok(Extractions {
            values,
            names: found.into_iter().collect(),
            indexes: indexes.into_iter().collect(),
            lines: io.row_count(),
        })
    }
}
