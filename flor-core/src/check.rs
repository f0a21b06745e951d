//! Divergence checks of a hindsight replay: what a replayed segment
//! recomputed of the values its forward run had recorded, and whether they
//! came out the same, bit for bit.
//!
//! A replay re-executes old `flor.log` statements along with the new ones;
//! each recomputed value is compared with the recorded one at the same
//! position. The outcome of one segment is a [`ReplayCheck`], written as
//! the last line (`"k":"check"`) of the segment's replay record file, so it
//! travels with the values it vouches for: stores keep it
//! ([`IngestBatch::checks`](crate::store::IngestBatch::checks)) and flag the
//! replay's values `diverged` when it found a difference.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// The first recomputed value that differed from the recorded one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The value's name.
    pub name: String,
    /// Its loop context (`None`: run level).
    pub ctx: Option<u32>,
    /// Its position, readable: `epoch 3, step 10` (`run level` outside
    /// loops).
    pub at: String,
    /// The recorded value, as text (`(none)` when the forward run recorded
    /// fewer values of this name there).
    pub recorded: String,
    /// The recomputed value, as text.
    pub replayed: String,
}

/// What one replay segment's check found. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayCheck {
    /// Line number of the `check` line in its record file (set by the
    /// parser; not part of the line).
    #[serde(skip)]
    pub line: u64,
    /// Values compared.
    pub compared: u64,
    /// Values that differed.
    pub differing: u64,
    /// The names compared (sorted).
    pub names: Vec<String>,
    /// The names the replay recovered (what the segment's records hold).
    #[serde(default)]
    pub recovered: Vec<String>,
    /// Names left out of the comparison on request (`--no-check`).
    #[serde(default)]
    pub excluded: Vec<String>,
    /// The first difference, if any.
    #[serde(default)]
    pub first: Option<Difference>,
    /// BLAKE3 digest (hex) of the segment's file as its worker wrote it,
    /// before the check: how a replay's leftover work files are recognized
    /// as already attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl ReplayCheck {
    /// Whether a recomputed value differed from the recorded one.
    pub fn diverged(&self) -> bool {
        self.differing > 0
    }

    /// Folds another segment's check of the same replay into this one
    /// (counts add up, names merge, the earlier first difference stays).
    pub fn merge(&mut self, other: &ReplayCheck) {
        self.compared += other.compared;
        self.differing += other.differing;
        for (mine, theirs) in [
            (&mut self.names, &other.names),
            (&mut self.recovered, &other.recovered),
            (&mut self.excluded, &other.excluded),
        ] {
            mine.extend(theirs.iter().cloned());
            mine.sort();
            mine.dedup();
        }
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }
}

/// Whether a recomputed value is the recorded one, bit for bit (a NaN
/// equals a NaN: the record format keeps no NaN payload).
pub fn same_value(recorded: &Value, replayed: &Value) -> bool {
    match (recorded, replayed) {
        (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_bit_for_bit() {
        assert!(same_value(&Value::Float(0.1 + 0.2), &Value::Float(0.1 + 0.2)));
        assert!(!same_value(&Value::Float(0.1 + 0.2), &Value::Float(0.3)));
        assert!(!same_value(&Value::Float(0.0), &Value::Float(-0.0)), "signed zeros differ in their bits");
        assert!(same_value(&Value::Float(f64::NAN), &Value::Float(-f64::NAN)));
        assert!(!same_value(&Value::Int(1), &Value::Float(1.0)), "an int is not a float");
        assert!(same_value(&Value::Text("a".into()), &Value::Text("a".into())));
    }

    #[test]
    fn checks_of_segments_merge() {
        let diff = Difference {
            name: "loss".into(),
            ctx: Some(3),
            at: "epoch 1".into(),
            recorded: "0.5".into(),
            replayed: "0.25".into(),
        };
        let mut a = ReplayCheck { compared: 2, names: vec!["loss".into()], ..ReplayCheck::default() };
        let b = ReplayCheck {
            compared: 3,
            differing: 1,
            names: vec!["acc".into(), "loss".into()],
            first: Some(diff.clone()),
            ..ReplayCheck::default()
        };
        a.merge(&b);
        assert_eq!((a.compared, a.differing), (5, 1));
        assert_eq!(a.names, ["acc", "loss"]);
        assert_eq!(a.first, Some(diff));
        assert!(a.diverged());
    }
}
