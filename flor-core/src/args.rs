//! Hyper-parameters: `--kwargs name=value ...` on the command line, coerced
//! to the type of the default the program gives to `arg(name, default)`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::value::Value;

/// The `name=value` pairs given after `--kwargs` on a command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kwargs {
    values: BTreeMap<String, String>,
    used: std::collections::BTreeSet<String>,
}

impl Kwargs {
    /// Reads `--kwargs a=1 b=2` (also `--kwargs=a=1`) from a command line:
    /// every token after `--kwargs` up to the next token starting with `--`.
    /// A later value for the same name wins.
    pub fn from_argv(argv: &[String]) -> Result<Kwargs> {
        let mut values = BTreeMap::new();
        let mut in_kwargs = false;
        for tok in argv.iter().skip(1) {
            let item = if let Some(rest) = tok.strip_prefix("--kwargs=") {
                in_kwargs = true;
                rest
            } else if tok == "--kwargs" {
                in_kwargs = true;
                continue;
            } else if tok.starts_with("--") {
                in_kwargs = false;
                continue;
            } else if in_kwargs {
                tok.as_str()
            } else {
                continue;
            };
            let Some((k, v)) = item.split_once('=') else {
                return Err(Error::BadKwargs(format!("`{item}` after --kwargs has no `=`")));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(Error::BadKwargs(format!("`{item}` after --kwargs has an empty name")));
            }
            values.insert(k.to_owned(), v.to_owned());
        }
        Ok(Kwargs { values, used: Default::default() })
    }

    /// Kwargs from explicit pairs (tests, embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Kwargs {
        Kwargs { values: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), used: Default::default() }
    }

    /// The value for `name` coerced to the type of `default`, or `default`
    /// when the command line does not name it.
    pub fn resolve(&mut self, name: &str, default: Value) -> Result<Value> {
        let Some(text) = self.values.get(name) else {
            return Ok(default);
        };
        self.used.insert(name.to_owned());
        coerce_like(text, &default).map_err(|reason| Error::BadArg {
            name: name.to_owned(),
            value: text.clone(),
            reason,
        })
    }

    /// Sets `name` to the text `value`, replacing what the command line gave
    /// (a replay's `--override KEY=VALUE`): `resolve` coerces it like any
    /// command-line value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// Names given on the command line that no `arg` asked for (likely typos).
    pub fn unused(&self) -> Vec<&str> {
        self.values.keys().filter(|k| !self.used.contains(*k)).map(String::as_str).collect()
    }

    /// Whether no kwargs were given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Parses `text` as a value of the same type as `like`.
pub fn coerce_like(text: &str, like: &Value) -> std::result::Result<Value, String> {
    let t = text.trim();
    match like {
        Value::Int(_) => t
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("expected an integer (the default is {like}), found {text:?}")),
        Value::Float(_) => match t.to_ascii_lowercase().as_str() {
            "nan" => Ok(Value::Float(f64::NAN)),
            "inf" | "+inf" | "infinity" => Ok(Value::Float(f64::INFINITY)),
            "-inf" | "-infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
            _ => t
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| format!("expected a number (the default is {like}), found {text:?}")),
        },
        Value::Bool(_) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, found {text:?}")),
        },
        Value::Text(_) => Ok(Value::Text(text.into())),
        Value::Json(_) => Value::json(text).map_err(|e| format!("expected JSON: {e}")),
    }
}

/// Rust types usable as `arg` defaults.
pub trait ArgValue: Sized {
    /// The default as a [`Value`] (decides the coercion).
    fn to_value(&self) -> Value;
    /// Back from the coerced value; `None` if it does not fit (e.g. overflow).
    fn from_value(v: &Value) -> Option<Self>;
}

macro_rules! arg_int {
    ($($t:ty),*) => {$(
        impl ArgValue for $t {
            fn to_value(&self) -> Value { Value::Int(*self as i64) }
            fn from_value(v: &Value) -> Option<Self> {
                match v { Value::Int(i) => <$t>::try_from(*i).ok(), _ => None }
            }
        }
    )*};
}
arg_int!(i8, i16, i32, i64, u8, u16, u32, isize, usize, u64);

impl ArgValue for f64 {
    fn to_value(&self) -> Value {
        Value::Float(*self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}
impl ArgValue for f32 {
    fn to_value(&self) -> Value {
        Value::Float(*self as f64)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Float(f) => Some(*f as f32),
            _ => None,
        }
    }
}
impl ArgValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}
impl ArgValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().into())
    }
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_and_coerces() {
        let mut k =
            Kwargs::from_argv(&argv("prog --other x --kwargs lr=0.5 epochs=3 flag=yes name=a=b --verbose")).unwrap();
        assert_eq!(k.resolve("lr", Value::Float(0.1)).unwrap(), Value::Float(0.5));
        assert_eq!(k.resolve("epochs", Value::Int(1)).unwrap(), Value::Int(3));
        assert_eq!(k.resolve("flag", Value::Bool(false)).unwrap(), Value::Bool(true));
        assert_eq!(k.resolve("name", Value::from("x")).unwrap(), Value::from("a=b"));
        assert_eq!(k.resolve("missing", Value::Int(9)).unwrap(), Value::Int(9));
        assert!(k.unused().is_empty());
        // An integer given for a float default is fine; the reverse is not.
        let mut k = Kwargs::from_pairs([("lr", "1"), ("epochs", "2.5")]);
        assert_eq!(k.resolve("lr", Value::Float(0.1)).unwrap(), Value::Float(1.0));
        let err = k.resolve("epochs", Value::Int(1)).unwrap_err().to_string();
        assert!(err.contains("epochs=2.5") && err.contains("integer"), "{err}");
    }

    #[test]
    fn malformed() {
        assert!(Kwargs::from_argv(&argv("p --kwargs lr")).is_err());
        assert!(Kwargs::from_argv(&argv("p --kwargs =3")).is_err());
        let k = Kwargs::from_argv(&argv("p --kwargs=lr=2 typo=1")).unwrap();
        assert_eq!(k.unused(), vec!["lr", "typo"]);
    }
}
