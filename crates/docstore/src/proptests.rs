//! Property tests over arbitrary nested values: the order is a total
//! order, the encoding follows it exactly and round-trips, and decoding
//! arbitrary bytes never panics and accepts only what encoding writes.

use std::cmp::Ordering;

use proptest::prelude::*;

use crate::encoding::{
    decode_path, decode_value, decode_value_exact, encode_path, encode_value_exact, order_key,
    prefix_end,
};
use crate::order::{compare_names, compare_values};
use crate::proto::Value;
use crate::proto::value::ValueType;
use crate::testing::*;

/// Doubles biased to the edges: zeros of both signs, NaN, infinities,
/// subnormals, integers, and values next to large integers.
fn edge_double() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(5e-324),
        Just(-5e-324),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(9.223_372_036_854_776e18),
        Just(-9.223_372_036_854_776e18),
        (-5i64..5).prop_map(|n| n as f64),
        (-5i64..5).prop_map(|n| n as f64 + 0.5),
        any::<f64>(),
    ]
}

fn edge_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(i64::MAX),
        Just(i64::MIN),
        Just((1 << 53) + 1),
        -5i64..5,
        any::<i64>(),
    ]
}

/// Short strings over an alphabet that exercises the escaping and UTF-8
/// order: NUL, `\u{ffff}`, an astral character.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('\0'),
            Just('a'),
            Just('b'),
            Just('\u{ffff}'),
            Just('\u{1F600}'),
            Just('/'),
        ],
        0..4,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_filter("segments are not empty", |s| !s.is_empty()
            && !s.contains('/')),
        (-3i64..3).prop_map(|n| format!("__id{n}__")),
        edge_int().prop_map(|n| format!("__id{n}__")),
        Just("__id01__".to_owned()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(null()),
        Just(Value { value_type: None }),
        any::<bool>().prop_map(boolean),
        edge_int().prop_map(int),
        edge_double().prop_map(double),
        (
            prop_oneof![Just(0i64), Just(-1), Just(i64::MIN), any::<i64>()],
            prop_oneof![Just(0i32), Just(999_999_999), any::<i32>()]
        )
            .prop_map(|(s, n)| timestamp(s, n)),
        text().prop_map(|s| string(&s)),
        text().prop_map(|s| bytes(s.as_bytes())),
        text().prop_map(|s| reference(&s)),
        prop::collection::vec(segment(), 0..4).prop_map(|s| reference(&s.join("/"))),
        (edge_double(), edge_double()).prop_map(|(a, b)| geo(a, b)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(array),
            prop::collection::vec((text(), inner), 0..4).prop_map(|entries| {
                let entries: Vec<(String, Value)> = entries;
                map(entries
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect())
            }),
        ]
    })
}

/// Structural identity: what exact round-trip must preserve (every NaN
/// is one NaN; a value with no type is null, as encoding documents).
fn identical(a: &Value, b: &Value) -> bool {
    let null = ValueType::NullValue(0);
    let (x, y) = (
        a.value_type.as_ref().unwrap_or(&null),
        b.value_type.as_ref().unwrap_or(&null),
    );
    let same_f64 = |p: f64, q: f64| p.to_bits() == q.to_bits() || p.is_nan() && q.is_nan();
    match (x, y) {
        (ValueType::DoubleValue(p), ValueType::DoubleValue(q)) => same_f64(*p, *q),
        (ValueType::GeoPointValue(p), ValueType::GeoPointValue(q)) => {
            same_f64(p.latitude, q.latitude) && same_f64(p.longitude, q.longitude)
        }
        (ValueType::ArrayValue(p), ValueType::ArrayValue(q)) => {
            p.values.len() == q.values.len()
                && p.values.iter().zip(&q.values).all(|(a, b)| identical(a, b))
        }
        (ValueType::MapValue(p), ValueType::MapValue(q)) => {
            p.fields.len() == q.fields.len()
                && p.fields
                    .iter()
                    .all(|(k, v)| q.fields.get(k).is_some_and(|w| identical(v, w)))
        }
        _ => x == y,
    }
}

fn exact(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value_exact(v, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn order_is_antisymmetric_and_reflexive(a in value(), b in value()) {
        prop_assert_eq!(compare_values(&a, &b), compare_values(&b, &a).reverse());
        prop_assert_eq!(compare_values(&a, &a), Ordering::Equal);
    }

    #[test]
    fn order_is_transitive(mut values in prop::collection::vec(value(), 0..12)) {
        values.sort_by(compare_values);
        for (i, a) in values.iter().enumerate() {
            for b in &values[i..] {
                prop_assert_ne!(compare_values(a, b), Ordering::Greater);
            }
        }
    }

    #[test]
    fn keys_compare_exactly_as_values_do(a in value(), b in value()) {
        prop_assert_eq!(order_key(&a).cmp(&order_key(&b)), compare_values(&a, &b));
    }

    #[test]
    fn exact_keys_order_as_values_wherever_they_differ(a in value(), b in value()) {
        let o = compare_values(&a, &b);
        if o != Ordering::Equal {
            prop_assert_eq!(exact(&a).cmp(&exact(&b)), o);
        }
    }

    #[test]
    fn keys_round_trip(a in value(), suffix in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut k = order_key(&a);
        let len = k.len();
        k.extend(&suffix);
        let (back, used) = decode_value(&k).unwrap();
        prop_assert_eq!(used, len);
        prop_assert_eq!(compare_values(&back, &a), Ordering::Equal);
        prop_assert_eq!(order_key(&back), &k[..len]);

        let mut e = exact(&a);
        let len = e.len();
        e.extend(&suffix);
        let (back, used) = decode_value_exact(&e).unwrap();
        prop_assert_eq!(used, len);
        prop_assert!(identical(&back, &a), "{:?} came back as {:?}", a, back);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_is_canonical(
        bytes in prop::collection::vec(any::<u8>(), 0..64)
    ) {
        if let Ok((v, used)) = decode_value(&bytes) {
            prop_assert_eq!(order_key(&v), &bytes[..used]);
        }
        if let Ok((v, used)) = decode_value_exact(&bytes) {
            prop_assert_eq!(exact(&v), &bytes[..used]);
        }
        if let Ok(segments) = decode_path(&bytes) {
            prop_assert_eq!(encode_path(&segments), bytes);
        }
    }

    #[test]
    fn paths_order_as_names_and_nest_as_prefixes(
        a in prop::collection::vec(segment(), 0..5),
        b in prop::collection::vec(segment(), 0..5),
    ) {
        let (ka, kb) = (encode_path(&a), encode_path(&b));
        let names = compare_names(&a.join("/"), &b.join("/"));
        // An empty path and a path of one empty segment are the same name
        // string; segments are never empty, so skip that corner.
        if !a.is_empty() && !b.is_empty() {
            prop_assert_eq!(ka.cmp(&kb), names);
        }
        prop_assert_eq!(decode_path(&ka).unwrap(), a.clone());
        let under = b.starts_with(&a);
        prop_assert_eq!(kb.starts_with(&ka), under);
        if let Some(end) = prefix_end(&ka) {
            prop_assert_eq!(ka <= kb && kb < end, under);
        }
    }
}

/// The query engine's byte-key sort, cursors, offset and limit against a
/// plain reading of Firestore's rules with [`compare_values`].
mod queries {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::value;
    use crate::order::compare_values;
    use crate::proto::structured_query::{CollectionSelector, FieldReference, Order};
    use crate::proto::{Cursor, Document, StructuredQuery, Value};
    use crate::query::run;
    use crate::testing::{null, reference};

    const ROOT: &str = "projects/p/databases/d/documents/c/";

    fn docs(values: Vec<Option<Value>>) -> Vec<Document> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| Document {
                name: format!("{ROOT}__id{}__", i + 1),
                fields: v.into_iter().map(|v| ("a".to_owned(), v)).collect(),
                create_time: None,
                update_time: None,
            })
            .collect()
    }

    /// Sorts and slices as the rules read: documents with `a` (when
    /// ordering by it), by `a` then name in the direction, cursors as
    /// prefixes compared with `compare_values`.
    fn naive(
        docs: &[Document],
        order: Option<bool>,
        start: Option<(Value, bool)>,
        end: Option<(Value, bool)>,
        offset: usize,
        limit: Option<usize>,
    ) -> Vec<String> {
        let descending = order == Some(true);
        let mut rows: Vec<&Document> = docs
            .iter()
            .filter(|d| order.is_none() || d.fields.contains_key("a"))
            .collect();
        let name = |d: &Document| reference(&d.name);
        let dir = |o: Ordering| if descending { o.reverse() } else { o };
        let first = |d: &Document| -> Value {
            match order {
                Some(_) => d.fields["a"].clone(),
                None => name(d),
            }
        };
        rows.sort_by(|x, y| {
            let by_a = if order.is_some() {
                compare_values(&x.fields["a"], &y.fields["a"])
            } else {
                Ordering::Equal
            };
            dir(by_a.then_with(|| compare_values(&name(x), &name(y))))
        });
        rows.retain(|d| {
            let ok_start = start.as_ref().is_none_or(|(c, before)| {
                let o = dir(compare_values(&first(d), c));
                o == Ordering::Greater || (o == Ordering::Equal && *before)
            });
            let ok_end = end.as_ref().is_none_or(|(c, before)| {
                let o = dir(compare_values(&first(d), c));
                o == Ordering::Less || (o == Ordering::Equal && !*before)
            });
            ok_start && ok_end
        });
        rows.into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(|d| d.name.clone())
            .collect()
    }

    fn field(path: &str) -> Option<FieldReference> {
        Some(FieldReference {
            field_path: path.to_owned(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn run_sorts_and_slices_as_the_rules_read(
            values in prop::collection::vec(prop::option::weighted(0.8, value()), 0..20),
            order in prop::option::of(any::<bool>()),
            start in prop::option::of((value(), any::<bool>())),
            end in prop::option::of((value(), any::<bool>())),
            offset in 0usize..5,
            limit in prop::option::of(0usize..8),
        ) {
            let docs = docs(values);
            // Cursors need an explicit order; by name they take references.
            let name_cursor = |(_, before): (Value, bool), i: usize| {
                (reference(&format!("{ROOT}__id{i}__")), before)
            };
            // A cursor value with no type is refused; those are tested apart.
            let typed = |c: Option<(Value, bool)>| {
                c.map(|(v, before)| (if v.value_type.is_none() { null() } else { v }, before))
            };
            let (start, end) = (typed(start), typed(end));
            let (start, end) = match order {
                Some(_) => (start, end),
                None => (
                    start.map(|c| name_cursor(c, 3)),
                    end.map(|c| name_cursor(c, 12)),
                ),
            };
            let query = StructuredQuery {
                from: vec![CollectionSelector {
                    collection_id: "c".to_owned(),
                    all_descendants: false,
                }],
                order_by: vec![Order {
                    field: field(if order.is_some() { "a" } else { "__name__" }),
                    direction: if order == Some(true) { 2 } else { 1 },
                }],
                start_at: start.clone().map(|(v, before)| Cursor { values: vec![v], before }),
                end_at: end.clone().map(|(v, before)| Cursor { values: vec![v], before }),
                offset: i32::try_from(offset).unwrap(),
                limit: limit.map(|l| i32::try_from(l).unwrap()),
                ..Default::default()
            };
            let mut shuffled = docs.clone();
            shuffled.reverse();
            let got: Vec<String> = run(&query, shuffled).unwrap().into_iter().map(|d| d.name).collect();
            prop_assert_eq!(got, naive(&docs, order, start, end, offset, limit));
        }
    }
}
