//! Conversion between Python objects and flor values, and Python's text of
//! them: `str()` of logged values and loop items, `repr` of floats.

use flor::Value;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

/// Python value -> flor value. Numbers, bools and text map directly; other
/// objects go through `flordb._coerce` (numpy/torch scalars, JSON, repr).
pub(crate) fn to_value(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract::<bool>()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(v.extract::<f64>()?));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(match v.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Text(v.str()?.to_cow()?.as_ref().into()),
        });
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Text(s.to_cow()?.as_ref().into()));
    }
    // (kind, payload): ("json", text) or a plain Python scalar to retry.
    let coerced = py.import("flordb")?.getattr("_coerce")?.call1((v,))?;
    let (kind, payload): (String, Bound<'_, PyAny>) = coerced.extract()?;
    match kind.as_str() {
        "json" => Ok(Value::Json(payload.extract::<String>()?.into())),
        "scalar" if !payload.is(v) => to_value(py, &payload),
        _ => Ok(Value::Text(payload.str()?.to_cow()?.as_ref().into())),
    }
}

/// flor value -> Python value.
pub(crate) fn to_py(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Text(s) => PyString::new(py, s).into_any().unbind(),
        Value::Json(s) => py.import("json")?.getattr("loads")?.call1((&**s,))?.unbind(),
    })
}

/// Python's `repr` of a float (`0.1`, `1e-05`, `1e+16`, `inf`), which is
/// what FlorDB prints. Both are the shortest text that reads back as the same
/// float; they differ only in layout, so the digits come from `ryu`.
pub(crate) fn push_py_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    let mut buf = ryu::Buffer::new();
    push_py_float_from_ryu(out, f, buf.format_finite(f));
}

/// [`push_py_float`] of a finite `f` from `ryu`'s text of it.
pub(crate) fn push_py_float_from_ryu(out: &mut String, f: f64, ryu_text: &str) {
    if prints_as_python(ryu_text) {
        out.push_str(ryu_text);
        return;
    }
    let s = ryu_text.strip_prefix('-').unwrap_or(ryu_text);
    // ryu writes `123.45`, `0.0001`, `1e-7` or `1.5e20`: split into the
    // significant digits and the position of the decimal point.
    let (mantissa, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    let mut decpt = exp + int_part.len() as i32;
    for &c in int_part.as_bytes().iter().chain(frac.as_bytes()) {
        if n == 0 && c == b'0' {
            decpt -= 1; // a leading zero
            continue;
        }
        if n < digits.len() {
            digits[n] = c;
            n += 1;
        }
    }
    while n > 0 && digits[n - 1] == b'0' {
        n -= 1;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    if n == 0 {
        out.push_str("0.0");
        return;
    }
    let digits = std::str::from_utf8(&digits[..n]).unwrap_or("0");
    let n = n as i32;
    // Python's rule (`float_repr_style` short): positional when the point
    // falls in -4 < decpt <= 16, else exponent notation.
    if decpt > -4 && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            (0..-decpt).for_each(|_| out.push('0'));
            out.push_str(digits);
        } else if decpt >= n {
            out.push_str(digits);
            (0..decpt - n).for_each(|_| out.push('0'));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        out.push_str(if e < 0 { "e-" } else { "e+" });
        if e.abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(e.abs()));
    }
}

/// Whether `ryu`'s text of a finite float is also Python's: positional
/// (`123.45`, `0.00123`, `100.0`) with the decimal point where Python keeps
/// positional notation (at most 16 digits before it, at most 3 zeros after
/// `0.`). Most logged values are; the others are rewritten.
fn prints_as_python(ryu_text: &str) -> bool {
    let b = ryu_text.strip_prefix('-').unwrap_or(ryu_text).as_bytes();
    if b.contains(&b'e') {
        return false;
    }
    match b.iter().position(|&c| c == b'.') {
        Some(1) if b[0] == b'0' => {
            let frac = &b[2..];
            let zeros = frac.iter().take_while(|&&c| c == b'0').count();
            zeros <= 3 || zeros == frac.len()
        }
        Some(point) => point <= 16,
        None => false,
    }
}

/// How a value prints (`str(value)` in Python).
pub(crate) fn push_value_text(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::Float(f) => push_py_float(out, *f),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Text(s) => out.push_str(s),
        Value::Json(s) => out.push_str(s),
    }
}

/// A loop item's printed value, written into `out`: numbers, bools and
/// text print as themselves; other items print as their index (`false`).
pub(crate) fn item_text(item: &Bound<'_, PyAny>, out: &mut String) -> bool {
    out.clear();
    if item.is_instance_of::<PyBool>() {
        out.push_str(if item.is_truthy().unwrap_or(false) { "True" } else { "False" });
    } else if item.is_instance_of::<PyFloat>() {
        let Ok(f) = item.extract::<f64>() else { return false };
        push_py_float(out, f);
    } else if item.is_instance_of::<PyInt>() {
        match item.extract::<i64>() {
            Ok(i) => out.push_str(itoa::Buffer::new().format(i)),
            Err(_) => match item.str() {
                Ok(t) => out.push_str(&t.to_cow().unwrap_or_default()),
                Err(_) => return false,
            },
        }
    } else if let Ok(t) = item.cast::<PyString>() {
        let Ok(t) = t.to_cow() else { return false };
        out.push_str(&t);
    } else {
        return false;
    }
    true
}

/// A logged value and, for values that do not print as themselves, its
/// `str()`.
pub(crate) fn to_logged(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<(Value, Option<String>)> {
    if v.is_instance_of::<PyFloat>() {
        return Ok((Value::Float(v.extract::<f64>()?), None));
    }
    if v.is_instance_of::<PyBool>() || v.is_instance_of::<PyInt>() || v.is_instance_of::<PyString>() {
        return Ok((to_value(py, v)?, None));
    }
    let shown = v.str()?.to_cow()?.into_owned();
    Ok((to_value(py, v)?, Some(shown)))
}

/// Python's `repr` of a float as flor prints it (exposed for tests).
#[pyfunction]
pub(crate) fn py_float_repr(f: f64) -> String {
    let mut s = String::new();
    push_py_float(&mut s, f);
    s
}
