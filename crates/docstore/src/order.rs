//! Firestore's total order of values, across types and within them
//! ([`compare_values`]). Written out directly rather than by comparing
//! encodings, so the property tests can hold [`crate::encoding`] to it.

use std::cmp::Ordering;

use crate::proto::value::ValueType;
use crate::proto::{MapValue, Value};
use crate::values::{NumKey, compare_segments};

/// Where a value's type falls in the order, the first thing compared.
/// Integers and doubles share a rank (they are compared as numbers), NaN
/// has its own just below them.
pub(crate) fn type_rank(value: &Value) -> u8 {
    match &value.value_type {
        None | Some(ValueType::NullValue(_)) => 0,
        Some(ValueType::BooleanValue(_)) => 1,
        Some(ValueType::DoubleValue(x)) if x.is_nan() => 2,
        Some(ValueType::IntegerValue(_) | ValueType::DoubleValue(_)) => 3,
        Some(ValueType::TimestampValue(_)) => 4,
        Some(ValueType::StringValue(_)) => 5,
        Some(ValueType::BytesValue(_)) => 6,
        Some(ValueType::ReferenceValue(_)) => 7,
        Some(ValueType::GeoPointValue(_)) => 8,
        Some(ValueType::ArrayValue(_)) => 9,
        Some(ValueType::MapValue(_)) => 10,
        // Not document values (pipeline expressions): after every value a
        // document can hold, so they never interleave with stored data.
        Some(
            ValueType::FieldReferenceValue(_)
            | ValueType::VariableReferenceValue(_)
            | ValueType::FunctionValue(_)
            | ValueType::PipelineValue(_),
        ) => 11,
    }
}

/// Compares two values as Firestore orders them across and within types:
/// null < booleans (false < true) < NaN < numbers < timestamps < strings <
/// bytes < references < geopoints < arrays < maps.
///
/// - Integers and doubles are compared as numbers, exactly (no rounding of
///   large integers through `f64`): `1 == 1.0`, `-0.0 == 0.0 == 0`, and
///   every NaN equals every NaN.
/// - Timestamps by seconds, then nanos.
/// - Strings by UTF-8 bytes (not UTF-16 units as some clients do);
///   bytes bytewise.
/// - References segment by segment (`c/a/d/b` < `c/ab`), numeric ids
///   `__id<n>__` before other ids and by number, then fewer segments first.
/// - Geopoints by latitude, then longitude.
/// - Arrays element by element, then the shorter first.
/// - Maps by their entries in key order (keys by UTF-8 bytes): key, then
///   value, pair by pair, then the smaller map first.
///
/// A value with no type set (which Firestore refuses) orders as null.
/// Checked against Google's Firestore emulator; see the tests.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    let (Some(x), Some(y)) = (&a.value_type, &b.value_type) else {
        return Ordering::Equal;
    };
    match (x, y) {
        (ValueType::BooleanValue(p), ValueType::BooleanValue(q)) => p.cmp(q),
        (
            ValueType::IntegerValue(_) | ValueType::DoubleValue(_),
            ValueType::IntegerValue(_) | ValueType::DoubleValue(_),
        ) => num_key(x).cmp(&num_key(y)),
        (ValueType::TimestampValue(p), ValueType::TimestampValue(q)) => {
            (p.seconds, p.nanos).cmp(&(q.seconds, q.nanos))
        }
        (ValueType::StringValue(p), ValueType::StringValue(q)) => p.as_bytes().cmp(q.as_bytes()),
        (ValueType::BytesValue(p), ValueType::BytesValue(q)) => p[..].cmp(&q[..]),
        (ValueType::ReferenceValue(p), ValueType::ReferenceValue(q)) => compare_names(p, q),
        (ValueType::GeoPointValue(p), ValueType::GeoPointValue(q)) => NumKey::of_f64(p.latitude)
            .cmp(&NumKey::of_f64(q.latitude))
            .then_with(|| NumKey::of_f64(p.longitude).cmp(&NumKey::of_f64(q.longitude))),
        (ValueType::ArrayValue(p), ValueType::ArrayValue(q)) => compare_lists(&p.values, &q.values),
        (ValueType::MapValue(p), ValueType::MapValue(q)) => compare_maps(p, q),
        // Same rank, so both are pipeline expressions (rank 11) or both
        // NaN (rank 2, equal). The expressions have no Firestore order;
        // their encodings give a fixed, total one.
        _ if ra == 11 => crate::encoding::order_key(a).cmp(&crate::encoding::order_key(b)),
        _ => Ordering::Equal,
    }
}

/// The number key of an integer or double value (anything else is zero;
/// callers match the types first).
fn num_key(v: &ValueType) -> NumKey {
    match v {
        ValueType::IntegerValue(n) => NumKey::of_i64(*n),
        ValueType::DoubleValue(x) => NumKey::of_f64(*x),
        _ => NumKey::Zero,
    }
}

/// Element by element, then the shorter first.
pub(crate) fn compare_lists(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = compare_values(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// A map's entries in Firestore's key order (UTF-8 bytes).
pub(crate) fn sorted_entries(map: &MapValue) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.fields.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries
}

fn compare_maps(a: &MapValue, b: &MapValue) -> Ordering {
    let (ea, eb) = (sorted_entries(a), sorted_entries(b));
    for ((ka, va), (kb, vb)) in ea.iter().zip(&eb) {
        let o = ka
            .as_bytes()
            .cmp(kb.as_bytes())
            .then_with(|| compare_values(va, vb));
        if o != Ordering::Equal {
            return o;
        }
    }
    ea.len().cmp(&eb.len())
}

/// Compares resource names (or any `/`-separated names) as Firestore
/// does: segment by segment, then fewer segments first.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    let (mut sa, mut sb) = (a.split('/'), b.split('/'));
    loop {
        match (sa.next(), sb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = compare_segments(x, y);
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn sorted(mut values: Vec<Value>) -> Vec<Value> {
        values.sort_by(compare_values);
        values
    }

    #[test]
    fn types_order_as_firestore_orders_them() {
        // The emulator's order for `order_by("a")` over one value per type:
        // null, false, true, NaN, -inf, -1, -0.0 / 0.0 / 0, 1.0 / 1,
        // 2^63-1, 9.223372036854775807e18, inf, then a string.
        let expected = vec![
            null(),
            boolean(false),
            boolean(true),
            double(f64::NAN),
            double(f64::NEG_INFINITY),
            int(-1),
            double(-0.0),
            int(1),
            int(i64::MAX),
            double(9.223_372_036_854_776e18),
            double(f64::INFINITY),
            timestamp(0, 0),
            string("a"),
            bytes(b"a"),
            reference("projects/p/databases/d/documents/c/a"),
            geo(0.0, 0.0),
            array(vec![]),
            map(vec![]),
        ];
        let mut shuffled = expected.clone();
        shuffled.reverse();
        // Debug, not `==`: NaN is not `==` to itself.
        assert_eq!(format!("{:?}", sorted(shuffled)), format!("{expected:?}"));
    }

    #[test]
    fn numbers_compare_exactly_across_types() {
        // The emulator matched both `1` and `1.0` for `== 1`, and all of
        // `-0.0`, `0.0`, `0` for `== 0`.
        assert_eq!(compare_values(&int(1), &double(1.0)), Ordering::Equal);
        assert_eq!(compare_values(&double(-0.0), &int(0)), Ordering::Equal);
        assert_eq!(compare_values(&double(-0.0), &double(0.0)), Ordering::Equal);
        assert_eq!(
            compare_values(&double(f64::NAN), &double(-f64::NAN)),
            Ordering::Equal
        );
        // 2^63 - 1 is below the double 2^63 it rounds to.
        assert_eq!(
            compare_values(&int(i64::MAX), &double(i64::MAX as f64)),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&int((1 << 53) + 1), &double((1u64 << 53) as f64)),
            Ordering::Greater
        );
    }

    #[test]
    fn strings_order_by_utf8_bytes() {
        // Emulator: "", "a", "a\0", "ab", "\u{ffff}", "😀" (UTF-16 would put
        // the emoji's surrogates before U+FFFF).
        let expected: Vec<Value> = ["", "a", "a\0", "ab", "\u{ffff}", "\u{1F600}"]
            .into_iter()
            .map(string)
            .collect();
        let mut v = expected.clone();
        v.reverse();
        assert_eq!(sorted(v), expected);
    }

    #[test]
    fn references_order_segment_by_segment() {
        // Emulator, for references to these documents:
        // c/__id5__, c/__id10__, c/a, c/a/d/b, c/ab, c/b, c-/a, c0/a.
        let root = "projects/dsq-probe/databases/(default)/documents/";
        let expected: Vec<Value> = [
            "c/__id5__",
            "c/__id10__",
            "c/a",
            "c/a/d/b",
            "c/ab",
            "c/b",
            "c-/a",
            "c0/a",
        ]
        .into_iter()
        .map(|p| reference(&format!("{root}{p}")))
        .collect();
        let mut v = expected.clone();
        v.reverse();
        assert_eq!(sorted(v), expected);
    }

    #[test]
    fn maps_order_by_entries_then_size() {
        // Emulator: {}, {B:1}, {b:1}, {x:1}, {x:1,y:0}, {x:2}, {x:"s"},
        // {y:0}, {"\u{ffff}":1}, {"😀":1}.
        let expected = vec![
            map(vec![]),
            map(vec![("B", int(1))]),
            map(vec![("b", int(1))]),
            map(vec![("x", int(1))]),
            map(vec![("x", int(1)), ("y", int(0))]),
            map(vec![("x", int(2))]),
            map(vec![("x", string("s"))]),
            map(vec![("y", int(0))]),
            map(vec![("\u{ffff}", int(1))]),
            map(vec![("\u{1F600}", int(1))]),
        ];
        let mut v = expected.clone();
        v.reverse();
        assert_eq!(sorted(v), expected);
    }

    #[test]
    fn timestamps_bytes_and_geopoints_as_the_emulator_sorts_them() {
        // Emulator: 1969-12-31T23:59:59.999999Z < 1970-01-01 < 2020-01-01;
        // b"" < b"\0\x01" < b"\xff"; (-1, 5) < (1, -6) < (1, -5).
        let groups = [
            vec![
                timestamp(-1, 999_999_000),
                timestamp(0, 0),
                timestamp(1_577_836_800, 0),
            ],
            vec![bytes(b""), bytes(b"\0\x01"), bytes(b"\xff")],
            vec![geo(-1.0, 5.0), geo(1.0, -6.0), geo(1.0, -5.0)],
        ];
        for expected in groups {
            let mut v = expected.clone();
            v.reverse();
            assert_eq!(sorted(v), expected);
        }
    }

    #[test]
    fn arrays_geopoints_timestamps() {
        assert_eq!(
            compare_values(&array(vec![int(1)]), &array(vec![int(1), null()])),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&array(vec![int(2)]), &array(vec![int(1), null()])),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&geo(1.0, -50.0), &geo(0.0, 50.0)),
            Ordering::Greater
        );
        assert_eq!(
            compare_values(&timestamp(1, 5), &timestamp(1, 7)),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&timestamp(-1, 999_999_999), &timestamp(0, 0)),
            Ordering::Less
        );
    }
}
