//! The order-preserving byte encoding of values and document paths, after
//! FoundationDB's tuple layer: a type tag per value, strings escaped so a
//! terminator sorts below every continuation, numbers on one exact scale.
//! Sorting encodings bytewise sorts the values as Firestore does, so a
//! collection or a subtree is a range scan and an index is a byte table.
//!
//! Two encodings of a value:
//!
//! - [`encode_value`] (also [`order_key`]): the order key. Bytes compare
//!   exactly as [`crate::order::compare_values`] compares values, and are
//!   equal exactly when the values are equal in Firestore's order, so
//!   `1` and `1.0` (and `-0.0`, `0.0`, `0`) have one encoding. This is
//!   what goes into compound keys (`value ++ name`): a trailing type mark
//!   there would sort `1.0` documents apart from `1` documents instead of
//!   by name. [`decode_value`] gives back the canonical member of the
//!   value's class: a number that is an exact `i64` comes back as an
//!   integer, any other as a double, zero as the integer `0`.
//! - [`encode_value_exact`]: the order key and then one byte per number
//!   (integer, double, or the double `-0.0`), so [`decode_value_exact`]
//!   gives back the very value. Order-equal values that differ in type
//!   differ only in that trailer, which sorts after the whole key.
//!
//! Layout (every value is self-delimiting, so a key is a concatenation):
//!
//! | value | bytes |
//! | --- | --- |
//! | null | `08` |
//! | false, true | `10`, `11` |
//! | NaN | `20` |
//! | -inf, finite < 0, zero, finite > 0, +inf | `21`, `22 E F`, `23`, `24 E F`, `25` |
//! | timestamp | `30`, seconds (8, sign flipped), nanos (4, sign flipped) |
//! | string, bytes | `40` / `50`, escaped bytes, `00 01` |
//! | reference | `60`, segments, `00` |
//! | geopoint | `70`, latitude, longitude (as numbers) |
//! | array | `80`, elements, `00` |
//! | map | `90`, per entry in key order: `01`, escaped key, `00 01`, value; then `00` |
//!
//! Numbers: `E` is the binary exponent plus 1100 (2 bytes), `F` the bits
//! after the leading one (8 bytes, left-aligned); both complemented for
//! negatives. Escaping: `00` in the data becomes `00 FF`, so the
//! terminator `00 01` sorts below any longer string with the same start.
//! A name segment is `02` and a sign-flipped `i64` for a numeric id
//! (`__id<n>__`), `03` and an escaped string for any other.
//!
//! A value with no type set (which Firestore refuses) encodes as null.
//!
//! Decoding reads untrusted bytes: it never panics, bounds its depth, and
//! accepts only bytes that encoding produces (`encode(decode(b)) == b`).

use prost::bytes::Bytes;
use prost_types::Timestamp;

use crate::order::sorted_entries;
use crate::proto::value::ValueType;
use crate::proto::{ArrayValue, Function, MapValue, Pipeline, Value, pipeline};
use crate::values::{LatLng, MAX_EXP, MIN_EXP, NumKey, numeric_id};

/// Why bytes do not decode to a value or a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable key bytes at offset {offset}: {why}")]
pub struct DecodeError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub why: &'static str,
}

/// Deepest nesting of arrays, maps and expressions decoding accepts.
/// Firestore allows 20 levels of maps and arrays; protobuf decoding stops
/// at 100 messages, so no value that reaches here is deeper.
pub const MAX_DEPTH: usize = 128;

mod tag {
    pub(super) const END: u8 = 0x00;
    pub(super) const ENTRY: u8 = 0x01;
    pub(super) const NUMERIC_ID: u8 = 0x02;
    pub(super) const STRING_ID: u8 = 0x03;
    pub(super) const NULL: u8 = 0x08;
    pub(super) const FALSE: u8 = 0x10;
    pub(super) const TRUE: u8 = 0x11;
    pub(super) const NAN: u8 = 0x20;
    pub(super) const NEG_INF: u8 = 0x21;
    pub(super) const NEG: u8 = 0x22;
    pub(super) const ZERO: u8 = 0x23;
    pub(super) const POS: u8 = 0x24;
    pub(super) const POS_INF: u8 = 0x25;
    pub(super) const TIMESTAMP: u8 = 0x30;
    pub(super) const STRING: u8 = 0x40;
    pub(super) const BYTES: u8 = 0x50;
    pub(super) const REFERENCE: u8 = 0x60;
    pub(super) const GEO: u8 = 0x70;
    pub(super) const ARRAY: u8 = 0x80;
    pub(super) const MAP: u8 = 0x90;
    pub(super) const FIELD_REFERENCE: u8 = 0xA0;
    pub(super) const VARIABLE_REFERENCE: u8 = 0xA1;
    pub(super) const FUNCTION: u8 = 0xA2;
    pub(super) const PIPELINE: u8 = 0xA3;
}

/// The trailer bytes of [`encode_value_exact`], one per number.
mod kind {
    pub(super) const INTEGER: u8 = 0x01;
    pub(super) const DOUBLE: u8 = 0x02;
    pub(super) const NEGATIVE_ZERO: u8 = 0x03;
}

/// The exponent bias: every exponent in [`MIN_EXP`]..=[`MAX_EXP`] becomes
/// a positive `u16`.
const EXP_BIAS: i16 = 1100;

/// Appends the encoding of `value`: `encode(a) < encode(b)` (bytewise)
/// exactly when Firestore orders `a` before `b`, and equal bytes exactly
/// when they are equal in that order (so `1` and `1.0` encode alike; see
/// [`encode_value_exact`] to keep the difference).
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    write_value(value, out, &mut None);
}

/// The order key of `value` as a fresh vector ([`encode_value`]).
pub fn order_key(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(value, &mut out);
    out
}

/// Appends the order key of `value` and then a trailer saying which of
/// its numbers are integers, doubles or `-0.0`, so that
/// [`decode_value_exact`] returns exactly `value`. Orders as
/// [`encode_value`] does wherever the values differ in Firestore's order.
pub fn encode_value_exact(value: &Value, out: &mut Vec<u8>) {
    let mut kinds = Some(Vec::new());
    write_value(value, out, &mut kinds);
    out.extend(kinds.unwrap_or_default());
}

/// Decodes one value's order key from the front of `bytes`; returns the
/// canonical value of its class (integers for exact `i64`s, doubles
/// otherwise) and the bytes it took.
pub fn decode_value(bytes: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut r = Reader::new(bytes, None);
    let value = r.value(0)?;
    Ok((value, r.pos))
}

/// Decodes what [`encode_value_exact`] wrote from the front of `bytes`;
/// returns the value and the bytes it took.
pub fn decode_value_exact(bytes: &[u8]) -> Result<(Value, usize), DecodeError> {
    // First pass: where the key ends and how many numbers it holds.
    let mut first = Reader::new(bytes, None);
    first.value(0)?;
    let (key_len, count) = (first.pos, first.numbers);
    let trailer = bytes
        .get(key_len..key_len.saturating_add(count))
        .filter(|t| t.len() == count)
        .ok_or(DecodeError {
            offset: bytes.len(),
            why: "the number types after the key are cut short",
        })?;
    let mut second = Reader::new(&bytes[..key_len], Some((trailer, key_len)));
    let value = second.value(0)?;
    Ok((value, key_len + count))
}

/// The key of a document or collection path (its segments, alternately
/// collection ids and document ids): ordered as Firestore orders names,
/// and every path under `p` has `encode_path(p)` as a prefix, so a subtree
/// is a range scan ([`prefix_end`] bounds it).
///
/// The documents directly in a collection are therefore contiguous up to
/// their own subtrees: `c/a`, then everything under `c/a`, then `c/b`.
/// No prefix-preserving encoding can do better (anything between `c/a`
/// and `c/b` that starts with `c/a`'s key is under `c/a`), so a scan of
/// one collection skips keys with more segments.
pub fn encode_path(segments: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        write_segment(s, &mut out);
    }
    out
}

/// The segments of an encoded path.
pub fn decode_path(bytes: &[u8]) -> Result<Vec<String>, DecodeError> {
    let mut r = Reader::new(bytes, None);
    let mut segments = Vec::new();
    while r.pos < bytes.len() {
        segments.push(r.segment()?);
    }
    Ok(segments)
}

/// The smallest key above every key that starts with `prefix`, the
/// exclusive end of a prefix range scan; `None` when there is none (the
/// prefix is empty or all `FF`), meaning the scan runs to the end.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = prefix[..=keep].to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Some(end)
}

/// The order key of a resource name (`projects/…/documents/c/a`) or any
/// `/`-separated name, as a reference value's key holds it (without the
/// reference tag): segment by segment, then an end mark.
pub fn encode_name(name: &str, out: &mut Vec<u8>) {
    for s in name.split('/') {
        write_segment(s, out);
    }
    out.push(tag::END);
}

fn write_value(value: &Value, out: &mut Vec<u8>, kinds: &mut Option<Vec<u8>>) {
    let Some(v) = &value.value_type else {
        out.push(tag::NULL);
        return;
    };
    match v {
        ValueType::NullValue(_) => out.push(tag::NULL),
        ValueType::BooleanValue(b) => out.push(if *b { tag::TRUE } else { tag::FALSE }),
        ValueType::IntegerValue(n) => {
            write_number(NumKey::of_i64(*n), out);
            note(kinds, kind::INTEGER);
        }
        ValueType::DoubleValue(x) => write_double(*x, out, kinds),
        ValueType::TimestampValue(t) => {
            out.push(tag::TIMESTAMP);
            out.extend(flip64(t.seconds));
            out.extend(flip32(t.nanos));
        }
        ValueType::StringValue(s) => {
            out.push(tag::STRING);
            write_escaped(s.as_bytes(), out);
        }
        ValueType::BytesValue(b) => {
            out.push(tag::BYTES);
            write_escaped(b, out);
        }
        ValueType::ReferenceValue(r) => {
            out.push(tag::REFERENCE);
            encode_name(r, out);
        }
        ValueType::GeoPointValue(g) => {
            out.push(tag::GEO);
            write_double(g.latitude, out, kinds);
            write_double(g.longitude, out, kinds);
        }
        ValueType::ArrayValue(a) => {
            out.push(tag::ARRAY);
            write_list(&a.values, out, kinds);
        }
        ValueType::MapValue(m) => {
            out.push(tag::MAP);
            write_map(m, out, kinds);
        }
        ValueType::FieldReferenceValue(s) => {
            out.push(tag::FIELD_REFERENCE);
            write_escaped(s.as_bytes(), out);
        }
        ValueType::VariableReferenceValue(s) => {
            out.push(tag::VARIABLE_REFERENCE);
            write_escaped(s.as_bytes(), out);
        }
        ValueType::FunctionValue(f) => {
            out.push(tag::FUNCTION);
            write_call(&f.name, &f.args, &f.options, out, kinds);
        }
        ValueType::PipelineValue(p) => {
            out.push(tag::PIPELINE);
            for s in &p.stages {
                out.push(tag::ENTRY);
                write_call(&s.name, &s.args, &s.options, out, kinds);
            }
            out.push(tag::END);
        }
    }
}

fn note(kinds: &mut Option<Vec<u8>>, k: u8) {
    if let Some(kinds) = kinds {
        kinds.push(k);
    }
}

fn write_double(x: f64, out: &mut Vec<u8>, kinds: &mut Option<Vec<u8>>) {
    write_number(NumKey::of_f64(x), out);
    let negative_zero = x == 0.0 && x.is_sign_negative();
    note(
        kinds,
        if negative_zero {
            kind::NEGATIVE_ZERO
        } else {
            kind::DOUBLE
        },
    );
}

fn write_number(key: NumKey, out: &mut Vec<u8>) {
    match key {
        NumKey::NaN => out.push(tag::NAN),
        NumKey::NegInf => out.push(tag::NEG_INF),
        NumKey::Zero => out.push(tag::ZERO),
        NumKey::PosInf => out.push(tag::POS_INF),
        NumKey::Pos { exp, frac } => {
            out.push(tag::POS);
            out.extend(biased(exp));
            out.extend(frac.to_be_bytes());
        }
        NumKey::Neg { exp, frac } => {
            // Complemented: a larger magnitude sorts lower.
            out.push(tag::NEG);
            out.extend(biased(exp).map(|b| !b));
            out.extend((!frac).to_be_bytes());
        }
    }
}

fn biased(exp: i16) -> [u8; 2] {
    // Exponents are within MIN_EXP..=MAX_EXP, so this is positive.
    exp.saturating_add(EXP_BIAS).to_be_bytes()
}

fn flip64(n: i64) -> [u8; 8] {
    (n.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

fn flip32(n: i32) -> [u8; 4] {
    (n.cast_unsigned() ^ (1 << 31)).to_be_bytes()
}

fn write_escaped(data: &[u8], out: &mut Vec<u8>) {
    escape_into(data, out);
    out.extend([0x00, 0x01]);
}

fn escape_into(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// Longest string, in UTF-8 bytes, that Firestore's queries tell apart:
/// the emulator orders strings by their first 1499 bytes only and refuses
/// longer filter values ("too large to be used in a query").
pub const MAX_QUERY_STRING_BYTES: usize = 1499;
/// Longest bytes value queries tell apart (1500: bytes have no terminator
/// in Firestore's index entries, strings do).
pub const MAX_QUERY_BYTES: usize = 1500;

/// The key a query sorts a top-level value by: [`encode_value`], except
/// that a string or bytes value longer than queries tell apart keeps only
/// its first [`MAX_QUERY_STRING_BYTES`] / [`MAX_QUERY_BYTES`] bytes and a
/// "truncated" end (`00 02`) that sorts after the untruncated value with
/// that prefix, so all long values sharing the prefix tie (and fall back
/// to the next order, the name), as they do in Firestore's indexes.
/// Nested strings are kept whole (the emulator's limit there depends on
/// its index entry sizes, which this does not model).
pub fn encode_query_key(value: &Value, out: &mut Vec<u8>) {
    let (tag, data, max) = match &value.value_type {
        Some(ValueType::StringValue(s)) => (tag::STRING, s.as_bytes(), MAX_QUERY_STRING_BYTES),
        Some(ValueType::BytesValue(b)) => (tag::BYTES, &b[..], MAX_QUERY_BYTES),
        _ => return encode_value(value, out),
    };
    match data.get(..max) {
        Some(prefix) if data.len() > max => {
            out.push(tag);
            escape_into(prefix, out);
            out.extend([0x00, 0x02]);
        }
        _ => encode_value(value, out),
    }
}

fn write_segment(segment: &str, out: &mut Vec<u8>) {
    match numeric_id(segment) {
        Some(n) => {
            out.push(tag::NUMERIC_ID);
            out.extend(flip64(n));
        }
        None => {
            out.push(tag::STRING_ID);
            write_escaped(segment.as_bytes(), out);
        }
    }
}

fn write_list(values: &[Value], out: &mut Vec<u8>, kinds: &mut Option<Vec<u8>>) {
    for v in values {
        write_value(v, out, kinds);
    }
    out.push(tag::END);
}

fn write_entries<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
    kinds: &mut Option<Vec<u8>>,
) {
    for (k, v) in entries {
        out.push(tag::ENTRY);
        write_escaped(k.as_bytes(), out);
        write_value(v, out, kinds);
    }
    out.push(tag::END);
}

fn write_map(map: &MapValue, out: &mut Vec<u8>, kinds: &mut Option<Vec<u8>>) {
    write_entries(sorted_entries(map).into_iter(), out, kinds);
}

fn write_call(
    name: &str,
    args: &[Value],
    options: &std::collections::HashMap<String, Value>,
    out: &mut Vec<u8>,
    kinds: &mut Option<Vec<u8>>,
) {
    write_escaped(name.as_bytes(), out);
    write_list(args, out, kinds);
    let mut entries: Vec<_> = options.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    write_entries(entries.into_iter(), out, kinds);
}

/// A cursor over untrusted key bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// How many numbers have been read (the trailer's length).
    numbers: usize,
    /// The trailer of an exact encoding, and where it starts (for errors).
    kinds: Option<(&'a [u8], usize)>,
}

/// How a number is to come back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A number value: an integer or a double.
    Number,
    /// A geopoint coordinate: always a double.
    Coordinate,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], kinds: Option<(&'a [u8], usize)>) -> Self {
        Self {
            bytes,
            pos: 0,
            numbers: 0,
            kinds,
        }
    }

    fn fail<T>(&self, why: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError {
            offset: self.pos,
            why,
        })
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.fail("the key ends in the middle of a value"),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.saturating_add(N);
        match self
            .bytes
            .get(self.pos..end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
        {
            Some(a) => {
                self.pos = end;
                Ok(a)
            }
            None => self.fail("the key ends in the middle of a fixed-size field"),
        }
    }

    /// An escaped byte string up to and including its terminator.
    fn escaped(&mut self) -> Result<Vec<u8>, DecodeError> {
        let mut data = Vec::new();
        loop {
            let b = self.byte()?;
            if b != 0 {
                data.push(b);
                continue;
            }
            match self.byte()? {
                0xFF => data.push(0),
                0x01 => return Ok(data),
                _ => {
                    self.pos -= 1;
                    return self.fail("a 00 byte in a string is neither escaped nor the end");
                }
            }
        }
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let data = self.escaped()?;
        String::from_utf8(data).map_err(|_| DecodeError {
            offset: start,
            why: "a string is not valid UTF-8",
        })
    }

    fn segment(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        match self.byte()? {
            tag::NUMERIC_ID => {
                let n = (u64::from_be_bytes(self.array()?) ^ (1 << 63)).cast_signed();
                let s = format!("__id{n}__");
                if numeric_id(&s) != Some(n) {
                    self.pos = start;
                    return self.fail("a numeric id is not one Firestore reads as a number");
                }
                Ok(s)
            }
            tag::STRING_ID => {
                let s = self.text()?;
                if numeric_id(&s).is_some() {
                    self.pos = start;
                    return self.fail("a numeric id is encoded as a string");
                }
                Ok(s)
            }
            _ => {
                self.pos = start;
                self.fail("not a name segment")
            }
        }
    }

    fn number(&mut self, first: u8, slot: Slot) -> Result<ValueType, DecodeError> {
        let start = self.pos - 1;
        let key = match first {
            tag::NAN => NumKey::NaN,
            tag::NEG_INF => NumKey::NegInf,
            tag::ZERO => NumKey::Zero,
            tag::POS_INF => NumKey::PosInf,
            tag::POS | tag::NEG => {
                let negative = first == tag::NEG;
                let mut e = self.array::<2>()?;
                let mut f = self.array::<8>()?;
                if negative {
                    e = e.map(|b| !b);
                    f = f.map(|b| !b);
                }
                let exp = i16::from_be_bytes(e).wrapping_sub(EXP_BIAS);
                if !(MIN_EXP..=MAX_EXP).contains(&exp) || i16::from_be_bytes(e) < 0 {
                    self.pos = start;
                    return self.fail("a number's exponent is out of range");
                }
                let frac = u64::from_be_bytes(f);
                if negative {
                    NumKey::Neg { exp, frac }
                } else {
                    NumKey::Pos { exp, frac }
                }
            }
            _ => {
                self.pos = start;
                return self.fail("not a number");
            }
        };
        let index = self.numbers;
        self.numbers += 1;
        let as_double = |r: &Self, k: NumKey| match k.to_f64() {
            Some(x) => Ok(ValueType::DoubleValue(x)),
            None => Err(DecodeError {
                offset: r.pos,
                why: "a number is neither a 64-bit integer nor a double",
            }),
        };
        let Some((trailer, at)) = self.kinds else {
            // Canonical: an exact integer is an integer.
            if slot == Slot::Number
                && let Some(n) = key.to_i64()
            {
                return Ok(ValueType::IntegerValue(n));
            }
            return as_double(self, key);
        };
        let bad = |why| {
            Err(DecodeError {
                offset: at + index,
                why,
            })
        };
        match trailer.get(index).copied() {
            Some(kind::INTEGER) if slot == Slot::Number => match key.to_i64() {
                Some(n) => Ok(ValueType::IntegerValue(n)),
                None => bad("an integer's value is not a 64-bit integer"),
            },
            Some(kind::DOUBLE) => as_double(self, key),
            Some(kind::NEGATIVE_ZERO) if key == NumKey::Zero => Ok(ValueType::DoubleValue(-0.0)),
            _ => bad("a number's type mark does not fit it"),
        }
    }

    fn double(&mut self) -> Result<f64, DecodeError> {
        let first = self.byte()?;
        match self.number(first, Slot::Coordinate)? {
            ValueType::DoubleValue(x) => Ok(x),
            _ => self.fail("a coordinate is not a double"),
        }
    }

    fn values(&mut self, depth: usize) -> Result<Vec<Value>, DecodeError> {
        let mut values = Vec::new();
        while self.peek() != Some(tag::END) {
            values.push(self.value(depth + 1)?);
        }
        self.pos += 1;
        Ok(values)
    }

    fn entries(
        &mut self,
        depth: usize,
    ) -> Result<std::collections::HashMap<String, Value>, DecodeError> {
        let mut fields = std::collections::HashMap::new();
        let mut last: Option<String> = None;
        loop {
            match self.byte()? {
                tag::END => return Ok(fields),
                tag::ENTRY => {}
                _ => {
                    self.pos -= 1;
                    return self.fail("expected a map entry or the map's end");
                }
            }
            let start = self.pos;
            let key = self.text()?;
            if last
                .as_ref()
                .is_some_and(|l| l.as_bytes() >= key.as_bytes())
            {
                self.pos = start;
                return self.fail("map keys are not in ascending order");
            }
            let value = self.value(depth + 1)?;
            fields.insert(key.clone(), value);
            last = Some(key);
        }
    }

    fn call(&mut self, depth: usize) -> Result<Function, DecodeError> {
        let name = self.text()?;
        let args = self.values(depth)?;
        let options = self.entries(depth)?;
        Ok(Function {
            name,
            args,
            options,
        })
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return self.fail("values are nested too deeply");
        }
        let start = self.pos;
        let v = match self.byte()? {
            tag::NULL => ValueType::NullValue(0),
            tag::FALSE => ValueType::BooleanValue(false),
            tag::TRUE => ValueType::BooleanValue(true),
            t @ tag::NAN..=tag::POS_INF => self.number(t, Slot::Number)?,
            tag::TIMESTAMP => {
                let seconds = (u64::from_be_bytes(self.array()?) ^ (1 << 63)).cast_signed();
                let nanos = (u32::from_be_bytes(self.array()?) ^ (1 << 31)).cast_signed();
                ValueType::TimestampValue(Timestamp { seconds, nanos })
            }
            tag::STRING => ValueType::StringValue(self.text()?),
            tag::BYTES => ValueType::BytesValue(Bytes::from(self.escaped()?)),
            tag::REFERENCE => {
                let mut segments = Vec::new();
                loop {
                    let at = self.pos;
                    let s = self.segment()?;
                    // A reference is split at `/`, so no segment holds one.
                    if s.contains('/') {
                        self.pos = at;
                        return self.fail("a reference's segment contains `/`");
                    }
                    segments.push(s);
                    if self.peek() == Some(tag::END) {
                        break;
                    }
                }
                self.pos += 1;
                ValueType::ReferenceValue(segments.join("/"))
            }
            tag::GEO => {
                let latitude = self.double()?;
                let longitude = self.double()?;
                ValueType::GeoPointValue(LatLng {
                    latitude,
                    longitude,
                })
            }
            tag::ARRAY => ValueType::ArrayValue(ArrayValue {
                values: self.values(depth)?,
            }),
            tag::MAP => ValueType::MapValue(MapValue {
                fields: self.entries(depth)?,
            }),
            tag::FIELD_REFERENCE => ValueType::FieldReferenceValue(self.text()?),
            tag::VARIABLE_REFERENCE => ValueType::VariableReferenceValue(self.text()?),
            tag::FUNCTION => ValueType::FunctionValue(self.call(depth)?),
            tag::PIPELINE => {
                let mut stages = Vec::new();
                loop {
                    match self.byte()? {
                        tag::END => break,
                        tag::ENTRY => {}
                        _ => {
                            self.pos -= 1;
                            return self.fail("expected a pipeline stage or the end");
                        }
                    }
                    let f = self.call(depth)?;
                    stages.push(pipeline::Stage {
                        name: f.name,
                        args: f.args,
                        options: f.options,
                    });
                }
                ValueType::PipelineValue(Pipeline { stages })
            }
            _ => {
                self.pos = start;
                return self.fail("not a value's type tag");
            }
        };
        Ok(Value {
            value_type: Some(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::compare_values;
    use crate::testing::*;

    fn key(v: &Value) -> Vec<u8> {
        order_key(v)
    }

    fn exact(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value_exact(v, &mut out);
        out
    }

    #[test]
    fn order_equal_numbers_share_a_key_and_keep_their_type_exactly() {
        assert_eq!(key(&int(1)), key(&double(1.0)));
        assert_eq!(key(&int(0)), key(&double(-0.0)));
        assert_ne!(exact(&int(1)), exact(&double(1.0)));
        for v in [int(1), double(1.0), double(-0.0), double(0.0), int(0)] {
            let bytes = exact(&v);
            let (back, used) = decode_value_exact(&bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
        // The canonical decoding of the shared key is the integer.
        assert_eq!(decode_value(&key(&double(3.0))).unwrap().0, int(3));
        assert_eq!(decode_value(&key(&double(2.5))).unwrap().0, double(2.5));
        assert_eq!(decode_value(&key(&double(-0.0))).unwrap().0, int(0));
    }

    #[test]
    fn keys_sort_as_values_do() {
        let values = vec![
            null(),
            boolean(false),
            boolean(true),
            double(f64::NAN),
            double(f64::NEG_INFINITY),
            double(f64::MIN),
            int(i64::MIN),
            int(-1),
            double(-5e-324),
            int(0),
            double(5e-324),
            double(0.5),
            int(1),
            int(i64::MAX),
            double(9.3e18),
            double(f64::MAX),
            double(f64::INFINITY),
            timestamp(-5, 0),
            timestamp(0, 0),
            timestamp(0, 1),
            string(""),
            string("a"),
            string("a\0"),
            string("a\0\0"),
            string("ab"),
            bytes(b""),
            bytes(b"\0"),
            bytes(b"\xff"),
            reference("a"),
            reference("a/__id-1__"),
            reference("a/__id2__"),
            reference("a/\0"),
            reference("a/b"),
            reference("a/b/c"),
            reference("a/b\0"),
            geo(-90.0, 0.0),
            geo(0.0, -1.0),
            array(vec![]),
            array(vec![null()]),
            array(vec![null(), null()]),
            array(vec![int(1)]),
            map(vec![]),
            map(vec![("", int(1))]),
            map(vec![("\0", int(1))]),
            map(vec![("a", int(1))]),
            map(vec![("a", int(1)), ("b", int(1))]),
            map(vec![("a", int(2))]),
        ];
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate() {
                assert_eq!(key(a).cmp(&key(b)), i.cmp(&j), "keys of {a:?} and {b:?}");
                assert_eq!(compare_values(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        for v in &values {
            let k = key(v);
            let (back, used) = decode_value(&k).unwrap();
            assert_eq!(used, k.len());
            assert_eq!(key(&back), k);
        }
    }

    #[test]
    fn paths_are_prefixes_of_their_subtrees_and_sort_by_segments() {
        let p = |s: &str| -> Vec<String> { s.split('/').map(str::to_owned).collect() };
        let c = encode_path(&p("c"));
        let ca = encode_path(&p("c/a"));
        let deep = encode_path(&p("c/a/d/b"));
        assert!(ca.starts_with(&c) && deep.starts_with(&ca));
        let end = prefix_end(&ca).unwrap();
        assert!(deep < end && ca < end);
        // The emulator's `__name__` order for a collection group:
        // numeric ids first by number, then by UTF-8 bytes.
        let order = [
            "c/__id-3__",
            "c/__id5__",
            "c/__id10__",
            "c/B",
            "c/_",
            "c/a",
            "c/a/d/b",
            "c/ab",
            "c-/a",
        ];
        for w in order.windows(2) {
            assert!(encode_path(&p(w[0])) < encode_path(&p(w[1])), "{w:?}");
        }
        for s in order {
            assert_eq!(decode_path(&encode_path(&p(s))).unwrap(), p(s));
        }
        assert_eq!(decode_path(&[]).unwrap(), Vec::<String>::new());
        assert!(prefix_end(&[]).is_none());
        assert_eq!(prefix_end(&[1, 0xFF]).unwrap(), vec![2]);
    }

    /// Writes the fuzz target's seed corpus (`fuzz/corpus/
    /// docstore_value_encoding`): run with `--ignored` after changing the
    /// layout, and commit the files.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/docstore_value_encoding");
        std::fs::create_dir_all(&dir).unwrap();
        let nested = map(vec![
            ("a", array(vec![null(), boolean(true), double(f64::NAN)])),
            ("b", map(vec![("c", double(1.0)), ("d", double(-0.0))])),
            ("\0", bytes(b"\0\xff")),
        ]);
        let seeds: Vec<(&str, Vec<u8>)> = vec![
            ("null", key(&null())),
            ("numbers", [key(&int(-7)), key(&double(2.5))].concat()),
            (
                "extremes",
                [key(&int(i64::MIN)), key(&double(5e-324))].concat(),
            ),
            (
                "infinities",
                [key(&double(f64::NEG_INFINITY)), key(&double(f64::INFINITY))].concat(),
            ),
            ("timestamp", key(&timestamp(1_700_000_000, 123_000))),
            (
                "strings",
                [key(&string("a\0b")), key(&string("\u{1F600}"))].concat(),
            ),
            (
                "reference",
                key(&reference(
                    "projects/p/databases/(default)/documents/c/__id-5__/s/x",
                )),
            ),
            ("geo", key(&geo(-33.5, 151.25))),
            (
                "array",
                key(&array(vec![int(1), string("a"), array(vec![])])),
            ),
            ("nested_map", key(&nested)),
            ("exact_nested", exact(&nested)),
            ("exact_geo", exact(&geo(-0.0, 1.0))),
            (
                "path",
                encode_path(&[
                    "c".to_owned(),
                    "__id7__".to_owned(),
                    "s".to_owned(),
                    "a\0".to_owned(),
                ]),
            ),
        ];
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn decoding_refuses_what_encoding_never_writes() {
        assert!(decode_value(&[]).is_err());
        assert!(decode_value(&[0xEE]).is_err());
        assert!(decode_value(&[tag::STRING, b'a']).is_err());
        assert!(decode_value(&[tag::STRING, 0, 7]).is_err());
        assert!(decode_value(&[tag::STRING, 0xC3, 0, 1]).is_err());
        // Map keys out of order.
        let bad_map = [
            tag::MAP,
            tag::ENTRY,
            b'b',
            0,
            1,
            tag::NULL,
            tag::ENTRY,
            b'a',
            0,
            1,
            tag::NULL,
            tag::END,
        ];
        assert!(decode_value(&bad_map).is_err());
        // A positive number with fraction bits no double or integer has.
        let mut odd = vec![tag::POS];
        odd.extend(biased(-3));
        odd.extend(1u64.to_be_bytes());
        assert!(decode_value(&odd).is_err());
        // Too deep.
        let deep = vec![tag::ARRAY; MAX_DEPTH + 5];
        assert!(decode_value(&deep).is_err());
        // A reference segment holding `/` would come back as two segments
        // (found by the corpus mutations).
        let mut r = vec![tag::REFERENCE, tag::STRING_ID];
        write_escaped(b"a/b", &mut r);
        r.push(tag::END);
        assert!(decode_value(&r).is_err());
        // A numeric id spelled as a string.
        let mut s = vec![tag::STRING_ID];
        write_escaped(b"__id5__", &mut s);
        assert!(decode_path(&s).is_err());
    }
}
