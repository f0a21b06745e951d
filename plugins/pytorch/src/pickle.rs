//! A small pickle reader: enough of protocols 2 to 5 (and the protocol 0/1
//! opcodes they still allow) for what `torch.save` writes — dicts,
//! `OrderedDict`s, lists, tuples, numbers, strings, persistent storage ids
//! and `torch._utils._rebuild_*` calls (v2 and v3) — into a value tree. It never runs
//! anything: a call to an unknown global becomes an opaque object.
//!
//! Hostile input is bounded: the pickle's length (by the caller), the
//! number of values created, the memo, the stack; every error names the
//! pickle byte where it happened, counted from the checkpoint's start.

use std::rc::Rc;

use flor_plugin_sdk::{Cursor, Error, Result};

/// The most values (stack pushes) one pickle may create.
pub const MAX_VALUES: u64 = 2_000_000;
/// The most memo entries.
pub const MAX_MEMO: u64 = 1_000_000;

/// A persistent id of a storage: `('storage', storage_type, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The storage type's global name (`FloatStorage`, `UntypedStorage`).
    pub kind: String,
    /// Its key: the archive entry `data/<key>` holds its bytes.
    pub key: String,
    /// Its element count.
    pub numel: u64,
}

/// A tensor rebuilt by `torch._utils._rebuild_tensor_v2` (or `_rebuild_tensor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Its storage.
    pub storage: Rc<StorageRef>,
    /// Offset into the storage, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
    /// Its dtype's torch name (`float8_e4m3fn`) when the call gave one
    /// (`_rebuild_tensor_v3`, for dtypes without a typed storage class);
    /// otherwise the storage type says.
    pub dtype: Option<String>,
    /// The pickle byte of the call that built it.
    pub at: u64,
}

/// A pickled value. Containers that pickle mutates after creating them
/// (dicts, lists, objects) live in the [`Machine`]'s arena and are
/// referred to by index, so memoized references see later items.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer that does not.
    BigInt,
    /// A float.
    Float(f64),
    /// A string (`str`, or a protocol-0 `bytes` string).
    Str(Rc<str>),
    /// Bytes (their length).
    Bytes(usize),
    /// A tuple.
    Tuple(Rc<[Value]>),
    /// A global (`module`, `name`).
    Global(Rc<(String, String)>),
    /// A persistent storage id.
    Storage(Rc<StorageRef>),
    /// A rebuilt tensor.
    Tensor(Rc<TensorRef>),
    /// A container in the arena.
    Obj(usize),
}

/// An arena container.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    /// A `dict`, `OrderedDict` or `defaultdict`: items in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A `list` (or a set: its items).
    List(Vec<Value>),
    /// Anything else: its class, not looked into.
    Other(String),
}

/// The pickle machine's state after `STOP`.
#[derive(Debug)]
pub struct Machine {
    /// The arena.
    pub objs: Vec<Obj>,
}

struct Run<'a> {
    c: Cursor<'a>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
    objs: Vec<Obj>,
    created: u64,
}

/// Reads the pickle in `data`, which starts at checkpoint byte `base`:
/// the top value and the arena it refers to.
pub fn load(data: &[u8], base: u64) -> Result<(Value, Machine)> {
    let mut run = Run {
        c: Cursor::new(data, base),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        objs: Vec::new(),
        created: 0,
    };
    loop {
        let at = run.c.offset();
        let op = run.c.u8().map_err(|_| Error::malformed(at, "truncated pickle: no STOP opcode"))?;
        if op == b'.' {
            let top = run.pop(at)?;
            return Ok((top, Machine { objs: run.objs }));
        }
        run.step(op, at)?;
    }
}

fn text(b: &[u8], at: u64) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| Error::malformed(at, "a string that is not UTF-8"))
}

impl Run<'_> {
    fn push(&mut self, v: Value, at: u64) -> Result<()> {
        self.created += 1;
        if self.created > MAX_VALUES {
            return Err(Error::limit(at, "the number of pickled values", MAX_VALUES));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, at: u64) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(Error::malformed(at, "pickle stack underflow"));
        }
        self.stack.pop().ok_or_else(|| Error::malformed(at, "pickle stack underflow"))
    }

    fn pop_mark(&mut self, at: u64) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| Error::malformed(at, "pickle opcode needs a MARK and there is none"))?;
        Ok(self.stack.split_off(m))
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn put(&mut self, idx: u64, at: u64) -> Result<()> {
        if idx >= MAX_MEMO {
            return Err(Error::limit(at, format!("memo index {idx}"), MAX_MEMO));
        }
        let top = self.stack.last().cloned().ok_or_else(|| Error::malformed(at, "memo put with an empty stack"))?;
        let i = idx as usize;
        if self.memo.len() <= i {
            self.memo.resize(i + 1, None);
        }
        self.memo[i] = Some(top);
        Ok(())
    }

    fn get(&mut self, idx: u64, at: u64) -> Result<()> {
        let v = usize::try_from(idx)
            .ok()
            .and_then(|i| self.memo.get(i).cloned().flatten())
            .ok_or_else(|| Error::malformed(at, format!("memo index {idx} was never stored")))?;
        self.push(v, at)
    }

    fn len_prefixed(&mut self, width: usize, at: u64) -> Result<&[u8]> {
        let n = match width {
            1 => u64::from(self.c.u8()?),
            4 => u64::from(self.c.u32_le()?),
            _ => self.c.u64_le()?,
        };
        let n = usize::try_from(n).map_err(|_| Error::malformed(at, format!("a length of {n} bytes")))?;
        self.c.bytes(n)
    }

    fn line(&mut self) -> Result<&str> {
        let at = self.c.offset();
        let b = self.c.until(b'\n')?;
        text(b, at)
    }

    fn step(&mut self, op: u8, at: u64) -> Result<()> {
        match op {
            b'N' | 0x88 | 0x89 | b'K' | b'M' | b'J' | 0x8a | 0x8b | b'G' | b'I' | b'L' | b'F' | b'X' | 0x8c | 0x8d
            | b'B' | b'C' | 0x8e | 0x96 | b'T' | b'U' | b'S' | b'V' => self.literal(op, at)?,
            b')' | 0x85..=0x87 | b't' | b']' | 0x8f | b'l' | 0x91 | b'}' | b'd' | b'a' | b'e' | 0x90 | b's' | b'u' => {
                self.container(op, at)?
            }
            b'q' | b'r' | 0x94 | b'p' | b'h' | b'j' | b'g' => self.memo_op(op, at)?,
            0x80 => {
                let v = self.c.u8()?;
                if v > 5 {
                    return Err(Error::malformed(at, format!("pickle protocol {v} (this reader knows 0 to 5)")));
                }
            }
            0x95 => self.c.skip(8)?, // FRAME: its length; the frame's opcodes follow
            0x98 => {}               // READONLY_BUFFER
            b'(' => self.marks.push(self.stack.len()),
            b'0' => drop(self.pop(at)?),
            b'1' => drop(self.pop_mark(at)?),
            b'2' => {
                let top = self.stack.last().cloned().ok_or_else(|| Error::malformed(at, "DUP of an empty stack"))?;
                self.push(top, at)?;
            }
            b'c' => {
                let module = self.line()?.to_owned();
                let name = self.line()?.to_owned();
                self.push(Value::Global(Rc::new((module, name))), at)?;
            }
            0x93 => {
                let name = self.pop(at)?;
                let module = self.pop(at)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        self.push(Value::Global(Rc::new((m.to_string(), n.to_string()))), at)?
                    }
                    _ => return Err(Error::malformed(at, "STACK_GLOBAL of values that are not strings")),
                }
            }
            b'Q' => {
                let pid = self.pop(at)?;
                let v = persistent(&pid, at)?;
                self.push(v, at)?;
            }
            b'R' => {
                let args = self.pop(at)?;
                let func = self.pop(at)?;
                let v = self.reduce(&func, &args, at)?;
                self.push(v, at)?;
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    self.pop(at)?; // kwargs
                }
                self.pop(at)?; // args
                let cls = self.pop(at)?;
                let v = self.new_obj(Obj::Other(class_name(&cls)));
                self.push(v, at)?;
            }
            b'b' => {
                self.pop(at)?; // the state: attributes (`_metadata` of a state_dict), ignored
                if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
                    return Err(Error::malformed(at, "BUILD with nothing to build"));
                }
            }
            _ => return Err(Error::malformed(at, format!("unsupported pickle opcode {op:#04x}"))),
        }
        Ok(())
    }

    /// Numbers, strings and bytes.
    fn literal(&mut self, op: u8, at: u64) -> Result<()> {
        match op {
            b'N' => self.push(Value::None, at)?,
            0x88 => self.push(Value::Bool(true), at)?,
            0x89 => self.push(Value::Bool(false), at)?,
            b'K' => {
                let v = self.c.u8()?;
                self.push(Value::Int(v.into()), at)?;
            }
            b'M' => {
                let v = self.c.u16_le()?;
                self.push(Value::Int(v.into()), at)?;
            }
            b'J' => {
                let v = self.c.i32_le()?;
                self.push(Value::Int(v.into()), at)?;
            }
            0x8a | 0x8b => {
                let b = self.len_prefixed(if op == 0x8a { 1 } else { 4 }, at)?;
                let v = long(b);
                self.push(v, at)?;
            }
            b'G' => {
                let v = self.c.f64_be()?;
                self.push(Value::Float(v), at)?;
            }
            b'I' | b'L' | b'F' => self.text_number(op, at)?,
            b'X' | 0x8c | 0x8d => {
                let width = match op {
                    b'X' => 4,
                    0x8c => 1,
                    _ => 8,
                };
                let s: Rc<str> = text(self.len_prefixed(width, at)?, at)?.into();
                self.push(Value::Str(s), at)?;
            }
            b'B' | b'C' | 0x8e | 0x96 | b'T' | b'U' => {
                let width = match op {
                    b'C' | b'U' => 1,
                    b'B' | b'T' => 4,
                    _ => 8,
                };
                let n = self.len_prefixed(width, at)?.len();
                self.push(Value::Bytes(n), at)?;
            }
            b'S' | b'V' => {
                let s: Rc<str> = self.line()?.into();
                self.push(Value::Str(s), at)?;
            }
            _ => unreachable_op(op, at)?,
        }
        Ok(())
    }

    /// Tuples, lists and dicts, and the opcodes that fill them.
    fn container(&mut self, op: u8, at: u64) -> Result<()> {
        match op {
            b')' => self.push(Value::Tuple(Rc::from(Vec::new())), at)?,
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.marks.last().copied().unwrap_or(0) + n {
                    return Err(Error::malformed(at, "pickle stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items.into()), at)?;
            }
            b't' => {
                let items = self.pop_mark(at)?;
                self.push(Value::Tuple(items.into()), at)?;
            }
            b']' | 0x8f => {
                let v = self.new_obj(Obj::List(Vec::new()));
                self.push(v, at)?;
            }
            b'l' | 0x91 => {
                let items = self.pop_mark(at)?;
                let v = self.new_obj(Obj::List(items));
                self.push(v, at)?;
            }
            b'}' => {
                let v = self.new_obj(Obj::Dict(Vec::new()));
                self.push(v, at)?;
            }
            b'd' => {
                let items = self.pop_mark(at)?;
                let v = self.new_obj(Obj::Dict(pairs(items, at)?));
                self.push(v, at)?;
            }
            b'a' => {
                let v = self.pop(at)?;
                self.extend(vec![v], at)?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark(at)?;
                self.extend(items, at)?;
            }
            b's' => {
                let v = self.pop(at)?;
                let k = self.pop(at)?;
                self.set_items(vec![(k, v)], at)?;
            }
            b'u' => {
                let items = self.pop_mark(at)?;
                self.set_items(pairs(items, at)?, at)?;
            }
            _ => unreachable_op(op, at)?,
        }
        Ok(())
    }

    /// The memo: PUT and GET in their forms.
    fn memo_op(&mut self, op: u8, at: u64) -> Result<()> {
        match op {
            b'q' => {
                let i = self.c.u8()?;
                self.put(i.into(), at)?;
            }
            b'r' => {
                let i = self.c.u32_le()?;
                self.put(i.into(), at)?;
            }
            0x94 => {
                let i = self.memo.len() as u64;
                self.put(i, at)?;
            }
            b'p' => {
                let i = self
                    .line()?
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Error::malformed(at, "a PUT index that is not a number"))?;
                self.put(i, at)?;
            }
            b'h' => {
                let i = self.c.u8()?;
                self.get(i.into(), at)?;
            }
            b'j' => {
                let i = self.c.u32_le()?;
                self.get(i.into(), at)?;
            }
            b'g' => {
                let i = self
                    .line()?
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Error::malformed(at, "a GET index that is not a number"))?;
                self.get(i, at)?;
            }
            _ => unreachable_op(op, at)?,
        }
        Ok(())
    }

    fn text_number(&mut self, op: u8, at: u64) -> Result<()> {
        let line = self.line()?.trim().trim_end_matches('L').to_owned();
        let v = match (op, line.as_str()) {
            (b'I', "01") => Value::Bool(true),
            (b'I', "00") => Value::Bool(false),
            (b'F', s) => Value::Float(s.parse().map_err(|_| Error::malformed(at, format!("`{s}` is not a float")))?),
            (_, s) => s.parse().map(Value::Int).unwrap_or(Value::BigInt),
        };
        self.push(v, at)
    }

    fn top_obj(&self, at: u64) -> Result<usize> {
        match self.stack.last() {
            Some(Value::Obj(i)) => Ok(*i),
            Some(_) => Ok(usize::MAX),
            None => Err(Error::malformed(at, "pickle stack underflow")),
        }
    }

    fn extend(&mut self, items: Vec<Value>, at: u64) -> Result<()> {
        let i = self.top_obj(at)?;
        match self.objs.get_mut(i) {
            Some(Obj::List(l)) => l.extend(items),
            Some(Obj::Other(_)) | None => {}
            Some(Obj::Dict(_)) => return Err(Error::malformed(at, "APPEND to a dict")),
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<(Value, Value)>, at: u64) -> Result<()> {
        let i = self.top_obj(at)?;
        match self.objs.get_mut(i) {
            Some(Obj::Dict(d)) => d.extend(items),
            Some(Obj::Other(_)) => {}
            _ => return Err(Error::malformed(at, "SETITEM on something that is not a dict")),
        }
        Ok(())
    }

    /// `func(*args)` for the calls torch pickles; anything else is opaque.
    fn reduce(&mut self, func: &Value, args: &Value, at: u64) -> Result<Value> {
        let Value::Global(g) = func else {
            return Ok(self.new_obj(Obj::Other("a call of a non-global".into())));
        };
        let args: &[Value] = match args {
            Value::Tuple(t) => t,
            _ => &[],
        };
        match (g.0.as_str(), g.1.as_str()) {
            ("collections", "OrderedDict" | "defaultdict") | ("builtins" | "__builtin__", "dict") => {
                Ok(self.new_obj(Obj::Dict(Vec::new())))
            }
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => rebuild_tensor(args, None, at),
            ("torch._utils", "_rebuild_tensor_v3") => match args.get(6) {
                Some(Value::Global(g)) if g.0 == "torch" => rebuild_tensor(args, Some(g.1.clone()), at),
                _ => Err(Error::malformed(at, "_rebuild_tensor_v3 without a torch dtype as its 7th argument")),
            },
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Ok(args.first().cloned().unwrap_or(Value::None))
            }
            ("torch._utils", "_rebuild_from_type_v2") => match args {
                [inner, _, inner_args, ..] => self.reduce(inner, inner_args, at),
                _ => Err(Error::malformed(at, "_rebuild_from_type_v2 with fewer than 3 arguments")),
            },
            (m, n) => Ok(self.new_obj(Obj::Other(format!("{m}.{n}")))),
        }
    }
}

/// The dispatch in `step` sends each opcode to the helper that handles it.
fn unreachable_op(op: u8, at: u64) -> Result<()> {
    Err(Error::malformed(at, format!("pickle opcode {op:#04x} dispatched to the wrong handler")))
}

fn class_name(v: &Value) -> String {
    match v {
        Value::Global(g) => format!("{}.{}", g.0, g.1),
        _ => "an object".into(),
    }
}

fn pairs(items: Vec<Value>, at: u64) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(Error::malformed(at, "SETITEMS with an odd number of values"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// A little-endian two's-complement integer (LONG1, LONG4).
fn long(b: &[u8]) -> Value {
    if b.len() > 8 {
        return Value::BigInt;
    }
    let negative = b.last().is_some_and(|x| x & 0x80 != 0);
    let mut buf = if negative { [0xff; 8] } else { [0; 8] };
    buf[..b.len()].copy_from_slice(b);
    Value::Int(i64::from_le_bytes(buf))
}

fn uint(v: &Value, what: &str, at: u64) -> Result<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(|_| Error::malformed(at, format!("{what} is negative ({i})"))),
        _ => Err(Error::malformed(at, format!("{what} is not an integer"))),
    }
}

fn uints(v: &Value, what: &str, at: u64) -> Result<Vec<u64>> {
    match v {
        Value::Tuple(t) => t.iter().map(|x| uint(x, what, at)).collect(),
        _ => Err(Error::malformed(at, format!("{what} is not a tuple"))),
    }
}

/// `('storage', storage_type, key, location, numel)`.
fn persistent(pid: &Value, at: u64) -> Result<Value> {
    let bad = || Error::malformed(at, "a persistent id that is not ('storage', type, key, location, numel)");
    let Value::Tuple(t) = pid else { return Err(bad()) };
    match &t[..] {
        [Value::Str(tag), Value::Global(g), key, _location, numel] if &**tag == "storage" => {
            let key = match key {
                Value::Str(s) => s.to_string(),
                Value::Int(i) => i.to_string(),
                _ => return Err(bad()),
            };
            Ok(Value::Storage(Rc::new(StorageRef {
                kind: g.1.clone(),
                key,
                numel: uint(numel, "a storage's size", at)?,
            })))
        }
        _ => Err(bad()),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])`
/// (`_rebuild_tensor_v3`: the same, then the dtype, given as `dtype`).
fn rebuild_tensor(args: &[Value], dtype: Option<String>, at: u64) -> Result<Value> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(Error::malformed(at, "_rebuild_tensor_v2 with fewer than 4 arguments"));
    };
    let Value::Storage(storage) = storage else {
        return Err(Error::malformed(at, "_rebuild_tensor_v2 of something that is not a storage"));
    };
    let shape = uints(size, "a tensor's size", at)?;
    let stride = uints(stride, "a tensor's stride", at)?;
    if shape.len() != stride.len() {
        return Err(Error::malformed(
            at,
            format!("a tensor of {} dimensions with {} strides", shape.len(), stride.len()),
        ));
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset: uint(offset, "a storage offset", at)?,
        shape,
        stride,
        dtype,
        at,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &[u8]) -> (Value, Machine) {
        load(p, 0).unwrap()
    }

    fn err(p: &[u8]) -> String {
        load(p, 100).unwrap_err().to_string()
    }

    #[test]
    fn scalars_and_containers() {
        // pickle.dumps({'a': [1, -2, 3.5, None, True], 'b': (300, 70000, 2**40)}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03M,\x01Jp\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x87q\x04u.";
        let (top, m) = ok(p);
        let Value::Obj(d) = top else { panic!("{top:?}") };
        let Obj::Dict(items) = &m.objs[d] else { panic!() };
        assert_eq!(items[0].0, Value::Str("a".into()));
        let Value::Obj(l) = items[0].1 else { panic!() };
        assert_eq!(
            m.objs[l],
            Obj::List(vec![Value::Int(1), Value::Int(-2), Value::Float(3.5), Value::None, Value::Bool(true)])
        );
        assert_eq!(items[1].1, Value::Tuple(vec![Value::Int(300), Value::Int(70000), Value::Int(1 << 40)].into()));
    }

    #[test]
    fn memo_references_see_later_items() {
        // x = []; pickle.dumps([x, x]) with x filled after the first reference: ]q\x00(]q\x01h\x01e h\x01 K\x07 a
        let p = b"\x80\x02]q\x00(]q\x01h\x01eh\x01K\x07a0.";
        let (top, m) = ok(p);
        let Value::Obj(outer) = top else { panic!() };
        let Obj::List(items) = &m.objs[outer] else { panic!() };
        assert_eq!(items.len(), 2);
        let Value::Obj(inner) = items[0] else { panic!() };
        assert_eq!(m.objs[inner], Obj::List(vec![Value::Int(7)]));
    }

    #[test]
    fn a_tensor_from_a_persistent_storage() {
        let p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00((X\x07\x00\x00\x00storageq\x01ctorch\nFloatStorage\nq\x02X\x01\x00\x00\x000q\x03X\x03\x00\x00\x00cpuq\x04K\x06tq\x05QK\x00K\x02K\x03\x86q\x06K\x03K\x01\x86q\x07\x89ccollections\nOrderedDict\nq\x08)Rq\x09tq\x0aRq\x0b.";
        let (top, _) = ok(p);
        let Value::Tensor(t) = top else { panic!("{top:?}") };
        assert_eq!(*t.storage, StorageRef { kind: "FloatStorage".into(), key: "0".into(), numel: 6 });
        assert_eq!((t.offset, t.shape.clone(), t.stride.clone()), (0, vec![2, 3], vec![3, 1]));
    }

    #[test]
    fn hostile_pickles_are_errors_naming_the_byte() {
        assert_eq!(err(b"\x80\x02"), "byte 102: truncated pickle: no STOP opcode");
        assert_eq!(err(b"\x80\x02a."), "byte 102: pickle stack underflow");
        assert_eq!(err(b"\x80\x02h\x05."), "byte 102: memo index 5 was never stored");
        assert_eq!(err(b"\x80\x02\xff."), "byte 102: unsupported pickle opcode 0xff");
        assert_eq!(err(b"\x80\x09."), "byte 100: pickle protocol 9 (this reader knows 0 to 5)");
        assert_eq!(
            err(b"X\xff\xff\xff\x7f"),
            "byte 105: truncated: 2147483647 bytes needed there, the data ends at byte 105"
        );
        assert_eq!(err(b"K\x01r\xff\xff\xff\xff."), "byte 102: memo index 4294967295 exceeds the limit of 1000000");
        assert_eq!(err(b"(K\x01u."), "byte 103: SETITEMS with an odd number of values");
        assert!(err(b"(t(K\x01Q.").contains("persistent id"));
        // A million empty tuples: bounded by MAX_VALUES, not by memory.
        let mut many = vec![b'('; 1];
        many.extend(std::iter::repeat_n(b')', MAX_VALUES as usize + 1));
        assert!(err(&many).contains("the number of pickled values exceeds the limit"));
    }
}
