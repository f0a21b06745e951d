//! Typed values: what a `log` or `arg` records, and what a table cell holds.

use std::fmt;
use std::sync::Arc;

/// A logged or recorded value.
///
/// Text and JSON share their buffer (`Arc<str>`) so that tables repeating a
/// value on many rows (a run's `tstamp`, an `arg`) hold one copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float; NaN and infinities are kept as such.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// UTF-8 text.
    Text(Arc<str>),
    /// A JSON document, kept as its (valid) serialized text.
    Json(Arc<str>),
}

/// The type of a [`Value`], as stored in record files and the query database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// [`Value::Int`]
    Int,
    /// [`Value::Float`]
    Float,
    /// [`Value::Bool`]
    Bool,
    /// [`Value::Text`]
    Text,
    /// [`Value::Json`]
    Json,
}

impl ValueType {
    /// The stable name used in the database and in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::Text => "text",
            ValueType::Json => "json",
        }
    }

    /// Parses a name written by [`ValueType::as_str`].
    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "text" => ValueType::Text,
            "json" => ValueType::Json,
            _ => return None,
        })
    }

    /// A small stable integer code (used as a compact column in stores).
    pub fn code(self) -> i64 {
        match self {
            ValueType::Int => 0,
            ValueType::Float => 1,
            ValueType::Bool => 2,
            ValueType::Text => 3,
            ValueType::Json => 4,
        }
    }

    /// Inverse of [`ValueType::code`].
    pub fn from_code(code: i64) -> Option<ValueType> {
        Some(match code {
            0 => ValueType::Int,
            1 => ValueType::Float,
            2 => ValueType::Bool,
            3 => ValueType::Text,
            4 => ValueType::Json,
            _ => return None,
        })
    }
}

impl Value {
    /// This value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::Text(_) => ValueType::Text,
            Value::Json(_) => ValueType::Json,
        }
    }

    /// A JSON value, validated. Errors name what is wrong with the text.
    pub fn json(text: &str) -> Result<Value, serde_json::Error> {
        let parsed: serde_json::Value = serde_json::from_str(text)?;
        Ok(Value::Json(parsed.to_string().into()))
    }

    /// A JSON value from anything serde can serialize.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(v: &T) -> Result<Value, serde_json::Error> {
        Ok(Value::Json(serde_json::to_string(v)?.into()))
    }

    /// Float view of numeric values (ints and bools widen), `None` otherwise.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    /// The value as a `serde_json::Value` (non-finite floats become strings
    /// `"NaN"`, `"inf"`, `"-inf"`, since JSON has no numbers for them).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => (*i).into(),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => serde_json::Value::Number(n),
                None => serde_json::Value::String(nonfinite_name(*f).to_owned()),
            },
            Value::Bool(b) => (*b).into(),
            Value::Text(s) => serde_json::Value::String(s.to_string()),
            Value::Json(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_string())),
        }
    }
}

/// The text written for a non-finite float (`NaN`, `inf`, `-inf`).
pub fn nonfinite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => {
                if x.is_finite() {
                    let mut b = ryu::Buffer::new();
                    let s = b.format_finite(*x);
                    f.write_str(s.strip_suffix(".0").unwrap_or(s))
                } else {
                    f.write_str(nonfinite_name(*x))
                }
            }
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::Text(s) | Value::Json(s) => f.write_str(s),
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::Int(v as i64) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, isize);

impl From<u64> for Value {
    /// Values above `i64::MAX` become floats rather than wrapping.
    fn from(v: u64) -> Value {
        i64::try_from(v).map(Value::Int).unwrap_or(Value::Float(v as f64))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::from(v as u64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(v as f64)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v.into())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.as_str().into())
    }
}
impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Value {
        Value::Text(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip() {
        for t in [ValueType::Int, ValueType::Float, ValueType::Bool, ValueType::Text, ValueType::Json] {
            assert_eq!(ValueType::from_code(t.code()), Some(t));
            assert_eq!(ValueType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn display_is_compact() {
        assert_eq!(Value::Float(2.0).to_string(), "2");
        assert_eq!(Value::Float(0.1).to_string(), "0.1");
        assert_eq!(Value::Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Value::from(u64::MAX), Value::Float(u64::MAX as f64));
    }

    #[test]
    fn json_is_validated() {
        assert!(Value::json("{\"a\": 1}").is_ok());
        assert!(Value::json("{oops").is_err());
    }
}
