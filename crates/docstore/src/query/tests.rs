//! Query tests. Unless a test says otherwise, every expected answer (the
//! documents, in order, or the error text) is what Google's Firestore
//! emulator returned for the same query over the same documents, sent raw
//! through the Python client's `run_query` / `run_aggregation_query`.

use std::collections::HashMap;

use latchkey_documents::{DatabaseName, DocPath};

use super::*;
use crate::proto::structured_aggregation_query::aggregation::{Avg, Count, Operator, Sum};
use crate::proto::structured_aggregation_query::{Aggregation, QueryType};
use crate::proto::structured_query::{
    CollectionSelector, CompositeFilter, FieldFilter, FieldReference, Filter, Order, Projection,
    UnaryFilter, composite_filter, field_filter, filter::FilterType, unary_filter,
};
use crate::proto::{Cursor, StructuredAggregationQuery, Value};
use crate::testing::*;

const ROOT: &str = "projects/p/databases/(default)/documents";

fn doc(path: &str, fields: Vec<(&str, Value)>) -> Document {
    Document {
        name: format!("{ROOT}/{path}"),
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
        create_time: None,
        update_time: None,
    }
}

/// The emulator's data set: collection `q` of mixed types, and a few
/// documents in subcollections and other collections.
fn dataset() -> Vec<Document> {
    vec![
        doc(
            "q/d1",
            vec![
                ("a", int(1)),
                ("b", string("x")),
                ("arr", array(vec![int(1), int(2)])),
                ("m", map(vec![("k", int(1))])),
            ],
        ),
        doc(
            "q/d2",
            vec![
                ("a", double(2.5)),
                ("b", string("y")),
                ("arr", array(vec![null(), double(f64::NAN)])),
                ("m", map(vec![("k", int(2))])),
            ],
        ),
        doc(
            "q/d3",
            vec![
                ("a", string("s")),
                ("b", string("x")),
                ("arr", array(vec![string("a")])),
                ("c", boolean(true)),
            ],
        ),
        doc(
            "q/d4",
            vec![("a", null()), ("arr", array(vec![])), ("b", string("z"))],
        ),
        doc(
            "q/d5",
            vec![
                ("b", string("y")),
                ("arr", array(vec![map(vec![("x", int(1))])])),
                ("a", array(vec![int(1), int(2)])),
            ],
        ),
        doc("q/d6", vec![("a", double(f64::NAN)), ("b", string("x"))]),
        doc("q/d7", vec![("a", int(3)), ("c", boolean(false))]),
        doc("q/d8", vec![("a", map(vec![("z", int(1))])), ("b", int(1))]),
        doc("q/d9", vec![("b", string("z"))]),
        doc("q/d1/sub/s1", vec![("a", int(10))]),
        doc("q/d1/sub/s2", vec![("a", int(11))]),
        doc("q/d1/other/o1", vec![("a", int(12))]),
        doc("sub/top", vec![("a", int(13))]),
        doc("x/y/q/deep", vec![("a", int(14))]),
    ]
}

fn rel(d: &Document) -> String {
    d.name
        .strip_prefix(&format!("{ROOT}/"))
        .unwrap_or(&d.name)
        .to_owned()
}

fn path_of(d: &Document) -> DocPath {
    DocPath::from_segments(rel(d).split('/').map(str::to_owned).collect()).unwrap()
}

/// Plans the query under `parent`, takes the candidates the scan names,
/// shuffled, and runs it: the relative names in order, or the error text.
fn run_under(parent: &str, q: &StructuredQuery) -> Result<Vec<String>, String> {
    let parent = DocPath::parse(parent).unwrap();
    let db = DatabaseName::new("p", "(default)").unwrap();
    let scan = plan_in(&db, &parent, q).map_err(|e| e.message)?;
    let mut candidates: Vec<Document> = dataset()
        .into_iter()
        .filter(|d| scan.contains(&path_of(d)))
        .collect();
    candidates.reverse();
    let docs = run(q, candidates).map_err(|e| e.message)?;
    Ok(docs.iter().map(rel).collect())
}

fn names(q: &StructuredQuery) -> Result<Vec<String>, String> {
    run_under("", q)
}

fn expect(q: &StructuredQuery, expected: &[&str]) {
    assert_eq!(
        names(q),
        Ok(expected.iter().map(|s| s.to_string()).collect())
    );
}

fn expect_ids(q: &StructuredQuery, ids: &[&str]) {
    let full: Vec<String> = ids.iter().map(|i| format!("q/{i}")).collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    expect(q, &full);
}

fn refuse(q: &StructuredQuery, message: &str) {
    assert_eq!(names(q), Err(message.to_owned()));
}

fn from(id: &str, all: bool) -> Vec<CollectionSelector> {
    vec![CollectionSelector {
        collection_id: id.to_owned(),
        all_descendants: all,
    }]
}

fn q() -> StructuredQuery {
    StructuredQuery {
        from: from("q", false),
        ..Default::default()
    }
}

fn with(f: Filter) -> StructuredQuery {
    StructuredQuery {
        r#where: Some(f),
        ..q()
    }
}

fn fr(path: &str) -> Option<FieldReference> {
    Some(FieldReference {
        field_path: path.to_owned(),
    })
}

fn ff(path: &str, op: field_filter::Operator, value: Value) -> Filter {
    Filter {
        filter_type: Some(FilterType::FieldFilter(FieldFilter {
            field: fr(path),
            op: op as i32,
            value: Some(value),
        })),
    }
}

fn uf(path: &str, op: unary_filter::Operator) -> Filter {
    Filter {
        filter_type: Some(FilterType::UnaryFilter(UnaryFilter {
            op: op as i32,
            operand_type: Some(unary_filter::OperandType::Field(FieldReference {
                field_path: path.to_owned(),
            })),
        })),
    }
}

fn composite(op: composite_filter::Operator, filters: Vec<Filter>) -> Filter {
    Filter {
        filter_type: Some(FilterType::CompositeFilter(CompositeFilter {
            op: op as i32,
            filters,
        })),
    }
}

fn and(filters: Vec<Filter>) -> Filter {
    composite(composite_filter::Operator::And, filters)
}

fn or(filters: Vec<Filter>) -> Filter {
    composite(composite_filter::Operator::Or, filters)
}

fn asc(path: &str) -> Order {
    Order {
        field: fr(path),
        direction: 1,
    }
}

fn desc(path: &str) -> Order {
    Order {
        field: fr(path),
        direction: 2,
    }
}

fn cursor(values: Vec<Value>, before: bool) -> Option<Cursor> {
    Some(Cursor { values, before })
}

fn key(path: &str) -> Value {
    reference(&format!("{ROOT}/{path}"))
}

fn ints(range: std::ops::Range<i64>) -> Value {
    array(range.map(int).collect())
}

use field_filter::Operator as Op;
use unary_filter::Operator as Un;

#[test]
fn equality_never_matches_through_null_or_nan() {
    expect_ids(&with(ff("arr", Op::ArrayContains, null())), &[]);
    expect_ids(&with(ff("arr", Op::ArrayContains, double(f64::NAN))), &[]);
    expect_ids(&with(ff("arr", Op::ArrayContains, double(1.0))), &["d1"]);
    expect_ids(
        &with(ff(
            "arr",
            Op::ArrayContainsAny,
            array(vec![null(), int(2), string("a")]),
        )),
        &["d1", "d3"],
    );
    expect_ids(&with(ff("a", Op::Equal, null())), &[]);
    expect_ids(&with(ff("a", Op::Equal, double(f64::NAN))), &[]);
    expect_ids(
        &with(ff(
            "a",
            Op::In,
            array(vec![int(1), double(f64::NAN), null()]),
        )),
        &["d1"],
    );
    expect_ids(
        &with(ff(
            "a",
            Op::In,
            array(vec![array(vec![int(1), int(2)]), string("s")]),
        )),
        &["d3", "d5"],
    );
    expect_ids(
        &with(ff("arr", Op::ArrayContains, array(vec![int(1)]))),
        &[],
    );
    expect_ids(&with(ff("m.k", Op::Equal, int(1))), &["d1"]);
}

#[test]
fn negations_skip_missing_fields_and_null_and_order_by_their_field() {
    // `!=` orders by its field: NaN, 1, 2.5, 3, "s", then the map; d4's
    // null, d5's equal array and d9 (no `a`) are out.
    expect_ids(
        &with(ff("a", Op::NotEqual, array(vec![int(1), int(2)]))),
        &["d6", "d1", "d2", "d7", "d3", "d8"],
    );
    expect_ids(
        &with(ff("b", Op::NotEqual, string("x"))),
        &["d8", "d2", "d5", "d4", "d9"],
    );
    expect_ids(
        &with(ff("b", Op::NotIn, array(vec![string("x")]))),
        &["d8", "d2", "d5", "d4", "d9"],
    );
    expect_ids(
        &with(ff("b", Op::NotIn, array(vec![string("x"), string("x")]))),
        &["d8", "d2", "d5", "d4", "d9"],
    );
    // A null among not-in's values matches nothing; so does `!= null`.
    expect_ids(&with(ff("a", Op::NotIn, array(vec![null()]))), &[]);
    expect_ids(&with(ff("a", Op::NotEqual, null())), &[]);
    // `!= NaN` keeps NaN itself (NaN is never "equal").
    expect_ids(
        &with(ff("a", Op::NotEqual, double(f64::NAN))),
        &["d6", "d1", "d2", "d7", "d3", "d5", "d8"],
    );
    // IS_NOT_NAN orders by its field and leaves out null.
    expect_ids(
        &with(uf("arr", Un::IsNotNan)),
        &["d4", "d2", "d1", "d3", "d5"],
    );
    expect_ids(&with(uf("a", Un::IsNull)), &["d4"]);
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("a")],
            ..with(uf("a", Un::IsNotNull))
        },
        &["d8", "d5", "d3", "d7", "d2", "d1", "d6"],
    );
}

#[test]
fn comparisons_are_bounded_by_type() {
    expect_ids(&with(ff("a", Op::LessThan, array(vec![int(5)]))), &["d5"]);
    expect_ids(&with(ff("a", Op::GreaterThan, map(vec![]))), &["d8"]);
    expect_ids(&with(ff("a", Op::GreaterThanOrEqual, string(""))), &["d3"]);
    expect_ids(&with(ff("c", Op::LessThan, boolean(true))), &["d7"]);
    for op in [Op::LessThan, Op::GreaterThan, Op::GreaterThanOrEqual] {
        expect_ids(&with(ff("a", op, double(f64::NAN))), &[]);
        expect_ids(&with(ff("a", op, null())), &[]);
    }
}

#[test]
fn implicit_order_takes_inequality_fields_then_the_name() {
    // a > 0 ordered by b: b first, then a; d7 has no b and is out.
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("b")],
            ..with(ff("a", Op::GreaterThan, int(0)))
        },
        &["d1", "d2"],
    );
    expect_ids(
        &with(and(vec![
            ff("a", Op::GreaterThan, int(0)),
            ff("b", Op::GreaterThan, string("a")),
        ])),
        &["d1", "d2"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("a")],
            ..with(and(vec![
                ff("b", Op::GreaterThan, string("a")),
                ff("a", Op::GreaterThan, int(0)),
            ]))
        },
        &["d2", "d1"],
    );
    // Two inequality fields in field path order (a before b).
    expect_ids(
        &with(and(vec![
            ff("a", Op::NotEqual, int(1)),
            ff("b", Op::GreaterThan, string("a")),
        ])),
        &["d6", "d2", "d3", "d5"],
    );
    // Ties broken by name in the last direction.
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("b")],
            ..q()
        },
        &["d9", "d4", "d5", "d2", "d6", "d3", "d1", "d8"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("__name__")],
            ..with(ff("b", Op::Equal, string("x")))
        },
        &["d6", "d3", "d1"],
    );
    // Ordering by a field leaves out documents without it.
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("c")],
            ..q()
        },
        &["d7", "d3"],
    );
    // An unspecified direction is ascending.
    expect_ids(
        &StructuredQuery {
            order_by: vec![Order {
                field: fr("a"),
                direction: 0,
            }],
            ..q()
        },
        &["d4", "d6", "d1", "d2", "d7", "d3", "d5", "d8"],
    );
}

#[test]
fn structural_equality_and_more_orders() {
    // Inside arrays and maps NaN equals NaN and -0.0 equals 0 (emulator:
    // `a == [NaN]` matched `[NaN]`, `a == {x: 0}` matched `{x: -0.0}`).
    let docs = vec![
        doc("n/n1", vec![("a", array(vec![double(f64::NAN)]))]),
        doc("n/n2", vec![("a", map(vec![("x", double(f64::NAN))]))]),
        doc("n/n3", vec![("a", array(vec![double(1.0)]))]),
        doc("n/n4", vec![("a", map(vec![("x", double(-0.0))]))]),
    ];
    let over = |f: Filter| {
        let q = StructuredQuery {
            from: from("n", false),
            r#where: Some(f),
            ..Default::default()
        };
        let out = run(&q, docs.clone()).unwrap();
        out.iter().map(rel).collect::<Vec<_>>()
    };
    assert_eq!(
        over(ff("a", Op::Equal, array(vec![double(f64::NAN)]))),
        ["n/n1"]
    );
    assert_eq!(
        over(ff("a", Op::Equal, map(vec![("x", double(f64::NAN))]))),
        ["n/n2"]
    );
    assert_eq!(
        over(ff("a", Op::In, array(vec![array(vec![double(f64::NAN)])]))),
        ["n/n1"]
    );
    assert_eq!(over(ff("a", Op::Equal, array(vec![int(1)]))), ["n/n3"]);
    assert_eq!(over(ff("a", Op::Equal, map(vec![("x", int(0))]))), ["n/n4"]);
    assert_eq!(
        over(ff("a", Op::NotEqual, array(vec![double(f64::NAN)]))),
        ["n/n3", "n/n2", "n/n4"]
    );
    // An equality and an order on the same field.
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("b")],
            ..with(ff("b", Op::Equal, string("x")))
        },
        &["d1", "d3", "d6"],
    );
    // A name inequality beside a field inequality: the field, then the name.
    let name_and_a = and(vec![
        ff("a", Op::GreaterThan, int(0)),
        ff("__name__", Op::GreaterThan, key("q/d1")),
    ]);
    expect_ids(&with(name_and_a.clone()), &["d2", "d7"]);
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("a")],
            ..with(name_and_a)
        },
        &["d7", "d2"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("a")],
            ..with(ff("a", Op::In, array(vec![string("s"), int(1), int(3)])))
        },
        &["d3", "d7", "d1"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("a")],
            start_at: cursor(vec![int(1)], false),
            ..with(ff("a", Op::In, array(vec![string("s"), int(1), int(3)])))
        },
        &["d7", "d3"],
    );
    expect_ids(&with(ff("`a`", Op::Equal, int(1))), &["d1"]);
    expect_ids(
        &with(and(vec![
            ff("m.k", Op::GreaterThan, int(0)),
            ff("b", Op::GreaterThan, string("")),
        ])),
        &["d1", "d2"],
    );
    // Empty cursors: every document is "equal" to them.
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("a")],
            start_at: cursor(vec![], false),
            ..q()
        },
        &[],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("a")],
            start_at: cursor(vec![], true),
            end_at: cursor(vec![], true),
            ..q()
        },
        &[],
    );
    expect_ids(&with(ff("nope", Op::ArrayContains, int(1))), &[]);
}

#[test]
fn negations_and_cursors_with_several_orders() {
    let ne_b = with(ff("b", Op::NotEqual, string("x")));
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("a")],
            ..ne_b.clone()
        },
        &["d4", "d2", "d5", "d8"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("a")],
            ..ne_b
        },
        &["d8", "d5", "d2", "d4"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("b"), asc("a")],
            start_at: cursor(vec![string("y")], true),
            ..q()
        },
        &["d2", "d5", "d4"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("b"), desc("a")],
            start_at: cursor(vec![string("y"), int(3)], false),
            end_at: cursor(vec![string("z")], false),
            ..q()
        },
        &["d2", "d4"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("b")],
            start_at: cursor(vec![string("x")], false),
            offset: 1,
            limit: Some(2),
            ..q()
        },
        &["d5", "d4"],
    );
    expect_ids(
        &with(and(vec![uf("a", Un::IsNan), ff("a", Op::LessThan, int(5))])),
        &[],
    );
    expect_ids(
        &with(or(vec![
            and(vec![
                ff("b", Op::Equal, string("x")),
                ff("a", Op::GreaterThan, int(0)),
            ]),
            and(vec![
                ff("b", Op::Equal, string("y")),
                ff("a", Op::LessThan, int(10)),
            ]),
        ])),
        &["d1", "d2"],
    );
    expect_ids(
        &with(or(vec![
            ff("a", Op::GreaterThan, int(2)),
            ff("b", Op::LessThan, string("y")),
        ])),
        &["d6", "d1", "d2", "d3"],
    );
}

#[test]
fn long_strings_sort_by_their_first_bytes_only() {
    // Emulator: strings tie past their first 1499 bytes (then the name
    // decides: l1 before l2 though "…c" > "…b"), bytes past 1500; the
    // untruncated string with the same prefix still sorts first; longer
    // filter values are refused.
    let a = |n: usize| "a".repeat(n);
    let docs = vec![
        doc("l/l0", vec![("s", string(&a(1499)))]),
        doc("l/l1", vec![("s", string(&(a(1499) + "c")))]),
        doc("l/l2", vec![("s", string(&(a(1499) + "b")))]),
        doc("l/l3", vec![("s", string(&(a(1498) + "c")))]),
        doc("l/l4", vec![("s", string(&(a(1498) + "b")))]),
        doc("l/b1", vec![("y", bytes((a(1500) + "c").as_bytes()))]),
        doc("l/b2", vec![("y", bytes((a(1500) + "b").as_bytes()))]),
        doc("l/b3", vec![("y", bytes((a(1499) + "c").as_bytes()))]),
        doc("l/b4", vec![("y", bytes((a(1499) + "b").as_bytes()))]),
    ];
    let order = |f: &str| {
        let q = StructuredQuery {
            from: from("l", false),
            order_by: vec![asc(f)],
            ..Default::default()
        };
        run(&q, docs.clone()).map(|d| d.iter().map(rel).collect::<Vec<_>>())
    };
    assert_eq!(
        order("s"),
        Ok(["l/l0", "l/l1", "l/l2", "l/l4", "l/l3"]
            .map(str::to_owned)
            .to_vec())
    );
    assert_eq!(
        order("y"),
        Ok(["l/b1", "l/b2", "l/b4", "l/b3"].map(str::to_owned).to_vec())
    );
    refuse(
        &with(ff("s", Op::Equal, string(&a(1500)))),
        "value for s is too large to be used in a query",
    );
    refuse(
        &with(ff("s", Op::In, array(vec![string(&a(1500))]))),
        "value for s is too large to be used in a query",
    );
    refuse(
        &with(ff("s", Op::GreaterThan, bytes(a(1501).as_bytes()))),
        "value for s is too large to be used in a query",
    );
    expect_ids(
        &with(ff("s", Op::GreaterThan, bytes(a(1500).as_bytes()))),
        &[],
    );
    expect_ids(&with(ff("s", Op::Equal, string(&a(1499)))), &[]);
}

#[test]
fn matches_says_which_documents_are_candidates() {
    let query = StructuredQuery {
        order_by: vec![asc("c")],
        ..with(ff("b", Op::Equal, string("x")))
    };
    let verdicts: Vec<bool> = dataset()[..9]
        .iter()
        .map(|d| matches(&query, d).unwrap())
        .collect();
    // Only d3 has b == "x" and a `c` to order by.
    assert_eq!(
        verdicts,
        [false, false, true, false, false, false, false, false, false]
    );
    assert!(matches(&with(Filter { filter_type: None }), &dataset()[0]).is_err());
}

#[test]
fn or_filters_and_nesting() {
    expect_ids(
        &with(or(vec![
            ff("a", Op::Equal, int(1)),
            ff("b", Op::Equal, string("z")),
        ])),
        &["d1", "d4", "d9"],
    );
    // An inequality inside OR still orders by its field, so d9 (b == "z"
    // but no `a`) is not a candidate.
    expect_ids(
        &with(or(vec![
            ff("a", Op::GreaterThan, int(1)),
            ff("b", Op::Equal, string("z")),
        ])),
        &["d4", "d2", "d7"],
    );
    expect_ids(
        &with(and(vec![
            ff("b", Op::Equal, string("x")),
            or(vec![
                ff("a", Op::Equal, int(1)),
                ff("a", Op::Equal, string("s")),
            ]),
        ])),
        &["d1", "d3"],
    );
    expect_ids(
        &with(or(vec![
            ff("a", Op::NotEqual, int(1)),
            ff("b", Op::Equal, string("z")),
        ])),
        &["d4", "d6", "d2", "d7", "d3", "d5", "d8"],
    );
    expect_ids(
        &with(or(vec![
            ff("b", Op::In, array(vec![string("x")])),
            ff("a", Op::Equal, int(3)),
        ])),
        &["d1", "d3", "d6", "d7"],
    );
    expect_ids(
        &with(or(vec![
            ff("arr", Op::ArrayContains, int(1)),
            ff("arr", Op::ArrayContains, string("a")),
        ])),
        &["d1", "d3"],
    );
    expect_ids(
        &with(and(vec![])),
        &["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"],
    );
    expect_ids(
        &with(and(vec![ff("b", Op::Equal, string("y"))])),
        &["d2", "d5"],
    );
    expect_ids(
        &with(and(vec![
            ff("arr", Op::ArrayContainsAny, array(vec![int(1)])),
            ff("a", Op::In, array(vec![int(1)])),
        ])),
        &["d1"],
    );
    expect_ids(
        &with(ff("b", Op::In, array(vec![string("x"), string("x")]))),
        &["d1", "d3", "d6"],
    );
    expect_ids(&with(ff("a", Op::In, ints(0..30))), &["d1", "d7"]);
}

#[test]
fn cursors_are_prefixes_of_the_order() {
    let by_a = |start: Option<Cursor>, end: Option<Cursor>| StructuredQuery {
        order_by: vec![asc("a")],
        start_at: start,
        end_at: end,
        ..q()
    };
    expect_ids(
        &by_a(cursor(vec![int(1)], false), None),
        &["d2", "d7", "d3", "d5", "d8"],
    );
    expect_ids(
        &by_a(cursor(vec![int(1)], true), cursor(vec![string("s")], false)),
        &["d1", "d2", "d7", "d3"],
    );
    expect_ids(
        &by_a(None, cursor(vec![string("s")], true)),
        &["d4", "d6", "d1", "d2", "d7"],
    );
    expect_ids(
        &by_a(cursor(vec![double(f64::NAN)], false), None),
        &["d1", "d2", "d7", "d3", "d5", "d8"],
    );
    expect_ids(
        &by_a(cursor(vec![null()], false), None),
        &["d6", "d1", "d2", "d7", "d3", "d5", "d8"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![desc("a")],
            start_at: cursor(vec![int(2)], true),
            ..q()
        },
        &["d1", "d6", "d4"],
    );
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("__name__")],
            start_at: cursor(vec![key("q/d3")], true),
            ..q()
        },
        &["d3", "d4", "d5", "d6", "d7", "d8", "d9"],
    );
    let by_b_name = |name: Value| StructuredQuery {
        order_by: vec![asc("b"), asc("__name__")],
        start_at: cursor(vec![string("x"), name], false),
        ..q()
    };
    expect_ids(&by_b_name(key("q/d3")), &["d6", "d2", "d5", "d4", "d9"]);
    // A name between documents, and one in another collection.
    expect_ids(&by_b_name(key("q/d3/x/y")), &["d6", "d2", "d5", "d4", "d9"]);
    expect_ids(&by_b_name(key("zz/d3")), &["d2", "d5", "d4", "d9"]);
}

#[test]
fn name_filters_compare_references() {
    expect_ids(
        &with(ff("__name__", Op::GreaterThan, key("q/d6"))),
        &["d7", "d8", "d9"],
    );
    expect_ids(
        &with(ff(
            "__name__",
            Op::In,
            array(vec![key("q/d6"), key("q/d1")]),
        )),
        &["d1", "d6"],
    );
    expect_ids(&with(ff("__name__", Op::Equal, key("z/d1"))), &[]);
    expect_ids(
        &with(ff("__name__", Op::GreaterThan, key("q/d1/sub/s1"))),
        &["d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"],
    );
    expect_ids(
        &with(ff("__name__", Op::NotEqual, key("q/d1"))),
        &["d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"],
    );
    expect_ids(
        &with(ff("__name__", Op::NotIn, array(vec![key("q/d1")]))),
        &["d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"],
    );
}

#[test]
fn offset_limit_and_projection() {
    expect_ids(
        &StructuredQuery {
            order_by: vec![asc("b")],
            offset: 1,
            limit: Some(2),
            ..q()
        },
        &["d1", "d3"],
    );
    expect_ids(
        &StructuredQuery {
            limit: Some(0),
            ..q()
        },
        &[],
    );
    expect_ids(&StructuredQuery { offset: 100, ..q() }, &[]);
    expect_ids(
        &StructuredQuery {
            limit: Some(i32::MAX),
            ..q()
        },
        &["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"],
    );
    // The emulator returns `m` whole for `m` and `m.k`, `b`, and nothing
    // for a missing field; `__name__` alone returns no fields.
    let select = |paths: &[&str]| StructuredQuery {
        select: Some(Projection {
            fields: paths.iter().map(|p| fr(p).unwrap()).collect(),
        }),
        limit: Some(2),
        ..q()
    };
    let docs = run(&select(&["m", "m.k", "b", "nope"]), dataset()[..9].to_vec()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0].fields,
        [
            ("m".to_owned(), map(vec![("k", int(1))])),
            ("b".to_owned(), string("x"))
        ]
        .into_iter()
        .collect::<HashMap<_, _>>()
    );
    let docs = run(&select(&["__name__"]), dataset()[..9].to_vec()).unwrap();
    assert!(docs.iter().all(|d| d.fields.is_empty()));
    assert_eq!(rel(&docs[0]), "q/d1");
    // An empty projection returns no fields; a path through a non-map
    // returns nothing.
    let docs = run(&select(&[]), dataset()[..9].to_vec()).unwrap();
    assert!(docs.iter().all(|d| d.fields.is_empty()));
    let docs = run(&select(&["m.k.z", "a.z"]), dataset()[..9].to_vec()).unwrap();
    assert!(docs[0].fields.is_empty());
    // A nested path alone keeps just that leaf.
    let docs = run(&select(&["m.k"]), dataset()[..9].to_vec()).unwrap();
    assert_eq!(
        docs[1].fields,
        [("m".to_owned(), map(vec![("k", int(2))]))]
            .into_iter()
            .collect::<HashMap<_, _>>()
    );
}

#[test]
fn collection_groups_and_kindless_queries() {
    let group = StructuredQuery {
        from: from("sub", true),
        ..Default::default()
    };
    assert_eq!(
        run_under("", &group),
        Ok(vec![
            "q/d1/sub/s1".to_owned(),
            "q/d1/sub/s2".to_owned(),
            "sub/top".to_owned()
        ])
    );
    assert_eq!(
        run_under("q/d1", &group),
        Ok(vec!["q/d1/sub/s1".to_owned(), "q/d1/sub/s2".to_owned()])
    );
    let kindless = StructuredQuery {
        from: from("", true),
        ..Default::default()
    };
    assert_eq!(
        run_under("q/d1", &kindless),
        Ok(vec![
            "q/d1/other/o1".to_owned(),
            "q/d1/sub/s1".to_owned(),
            "q/d1/sub/s2".to_owned()
        ])
    );
    // What `recursiveDelete` sends for the collection `q/d1/other`:
    // kindless under `q/d1`, names from `other/__id<MIN>__` up to
    // `other\0/__id<MIN>__`, names only, ordered by name.
    let min = "__id-9223372036854775808__";
    let recursive = |parent: &str, collection: &str| StructuredQuery {
        select: Some(Projection {
            fields: vec![FieldReference {
                field_path: "__name__".to_owned(),
            }],
        }),
        r#where: Some(and(vec![
            ff(
                "__name__",
                Op::GreaterThanOrEqual,
                key(&format!("{parent}{collection}/{min}")),
            ),
            ff(
                "__name__",
                Op::LessThan,
                key(&format!("{parent}{collection}\0/{min}")),
            ),
        ])),
        order_by: vec![asc("__name__")],
        limit: Some(100),
        ..kindless.clone()
    };
    assert_eq!(
        run_under("q/d1", &recursive("q/d1/", "other")),
        Ok(vec!["q/d1/other/o1".to_owned()])
    );
    assert_eq!(
        run_under("", &recursive("", "q")),
        Ok([
            "q/d1",
            "q/d1/other/o1",
            "q/d1/sub/s1",
            "q/d1/sub/s2",
            "q/d2",
            "q/d3",
            "q/d4",
            "q/d5",
            "q/d6",
            "q/d7",
            "q/d8",
            "q/d9"
        ]
        .map(str::to_owned)
        .to_vec())
    );
    // Not all descendants: the parent's own collections' documents.
    let children = StructuredQuery {
        r#where: Some(ff("__name__", Op::GreaterThan, key("sub/a"))),
        ..Default::default()
    };
    assert_eq!(run_under("", &children), Ok(vec!["sub/top".to_owned()]));
    assert_eq!(
        run_under("q/d1", &StructuredQuery::default()),
        Ok(vec![
            "q/d1/other/o1".to_owned(),
            "q/d1/sub/s1".to_owned(),
            "q/d1/sub/s2".to_owned()
        ])
    );
    assert_eq!(
        plan(&DocPath::root(), &StructuredQuery::default()),
        Ok(Scan::Children {
            under: DocPath::root()
        })
    );
    // Kindless queries filter and order by name only.
    assert_eq!(
        run_under(
            "",
            &StructuredQuery {
                r#where: Some(ff("a", Op::GreaterThan, int(11))),
                ..kindless.clone()
            }
        ),
        Err("kind is required for filter: a".to_owned())
    );
    for order in [asc("a"), desc("__name__")] {
        assert_eq!(
            run_under(
                "",
                &StructuredQuery {
                    order_by: vec![order],
                    ..kindless.clone()
                }
            ),
            Err("kind is required for all orders except __key__ ascending".to_owned())
        );
    }
    // A collection group's name filter may name any document.
    assert_eq!(
        run_under(
            "",
            &StructuredQuery {
                r#where: Some(ff("__name__", Op::Equal, key("q/d1/sub/s1"))),
                ..group.clone()
            }
        ),
        Ok(vec!["q/d1/sub/s1".to_owned()])
    );
    assert_eq!(
        run_under(
            "",
            &StructuredQuery {
                order_by: vec![asc("__name__")],
                start_at: cursor(vec![key("q/d1/sub/s1")], false),
                ..group
            }
        ),
        Ok(vec!["q/d1/sub/s2".to_owned(), "sub/top".to_owned()])
    );
}

#[test]
fn refusals_are_worded_as_firestore_words_them() {
    refuse(
        &with(ff("a", Op::In, ints(0..31))),
        "'IN' supports up to 30 comparison values.",
    );
    refuse(
        &with(ff("a", Op::In, array(vec![]))),
        "'IN' requires an non-empty ArrayValue.",
    );
    refuse(
        &with(ff("a", Op::In, int(1))),
        "'IN' requires an ArrayValue.",
    );
    refuse(
        &with(ff("a", Op::NotIn, ints(0..11))),
        "'NOT_IN' supports up to 10 comparison values.",
    );
    refuse(
        &with(ff("arr", Op::NotIn, array(vec![]))),
        "'NOT_IN' requires an non-empty ArrayValue.",
    );
    refuse(
        &with(ff("a", Op::ArrayContainsAny, ints(0..31))),
        "'ARRAY_CONTAINS_ANY' supports up to 30 comparison values.",
    );
    refuse(
        &with(ff("arr", Op::ArrayContainsAny, int(1))),
        "'ARRAY_CONTAINS_ANY' requires an ArrayValue.",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("a")],
            start_at: cursor(vec![int(1), string("x"), string("y")], true),
            ..q()
        },
        "Cursor has too many values.",
    );
    // Only explicit orders take cursor values, even with an implicit
    // inequality order or the implicit name.
    refuse(
        &StructuredQuery {
            start_at: cursor(vec![key("q/d3")], false),
            ..q()
        },
        "Cursor has too many values.",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("b")],
            start_at: cursor(vec![string("x"), key("q/d3")], false),
            ..q()
        },
        "Cursor has too many values.",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("__name__")],
            start_at: cursor(vec![string("d3")], true),
            ..q()
        },
        "Cursor __key__ value is not a document reference.",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("__name__")],
            start_at: cursor(vec![key("q")], false),
            ..q()
        },
        &format!(
            "Resource name \"{ROOT}/q\" lacks \"/\" at index {}.",
            ROOT.len() + 2
        ),
    );
    refuse(
        &with(ff("__name__", Op::Equal, string("d3"))),
        "__key__ filter value must be a Key",
    );
    refuse(
        &with(ff("__name__", Op::LessThan, string("q/d3"))),
        "__key__ filter value must be a Key",
    );
    refuse(
        &with(uf("__name__", Un::IsNull)),
        "__key__ filter value must be a Key",
    );
    refuse(
        &with(ff("__name__", Op::ArrayContains, key("q/d1"))),
        "the name __key__ is reserved",
    );
    refuse(
        &with(ff(
            "__name__",
            Op::Equal,
            reference("projects/other/databases/(default)/documents/q/d1"),
        )),
        "The request was for database 'projects/p/databases/(default)' but was attempting to \
         access database 'projects/other/databases/(default)'",
    );
    refuse(&StructuredQuery { offset: -1, ..q() }, "offset is negative");
    refuse(
        &StructuredQuery {
            limit: Some(-1),
            ..q()
        },
        "limit is negative",
    );
    refuse(
        &StructuredQuery {
            from: vec![from("q", false)[0].clone(), from("r", false)[0].clone()],
            ..q()
        },
        "StructuredQuery.from cannot have more than one collection selector.",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("__name__"), asc("a")],
            ..q()
        },
        "order by clause cannot contain more fields after the key",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![desc("__name__")],
            ..with(ff("a", Op::GreaterThan, int(0)))
        },
        "order by clause cannot contain more fields after the key",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("a"), asc("a")],
            ..q()
        },
        "order by clause cannot contain duplicate fields a",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![Order {
                field: fr("a"),
                direction: 7,
            }],
            ..q()
        },
        "Unrecognized ordering.",
    );
    refuse(
        &with(ff("a..b", Op::Equal, int(1))),
        "Invalid property path \"a..b\". Unquoted property paths must match regex \
         ([a-zA-Z_][a-zA-Z_0-9]*), and quoted property paths must match regex \
         (`(?:[^`\\\\]|(?:\\\\.))+`)",
    );
    refuse(
        &with(ff("", Op::Equal, int(1))),
        "Invalid empty property path string.",
    );
    refuse(
        &StructuredQuery {
            order_by: vec![asc("")],
            ..q()
        },
        "Invalid empty property path string.",
    );
    refuse(
        &with(and(vec![
            ff("a", Op::NotIn, array(vec![int(1)])),
            ff("b", Op::NotEqual, string("x")),
        ])),
        "Only a single 'NOT_EQUAL', 'NOT_IN', 'IS_NOT_NAN', or 'IS_NOT_NULL' filter allowed per \
         query.",
    );
    refuse(
        &with(and(vec![
            ff("a", Op::NotEqual, int(1)),
            ff("b", Op::NotEqual, string("x")),
        ])),
        "Only a single 'NOT_EQUAL', 'NOT_IN', 'IS_NOT_NAN', or 'IS_NOT_NULL' filter allowed per \
         query.",
    );
    let one_array_contains = "A maximum of 1 'ARRAY_CONTAINS' filter is allowed per disjunction.";
    refuse(
        &with(and(vec![
            ff("arr", Op::ArrayContains, int(1)),
            ff("arr", Op::ArrayContains, int(2)),
        ])),
        one_array_contains,
    );
    refuse(
        &with(and(vec![
            ff("arr", Op::ArrayContains, int(1)),
            or(vec![
                ff("arr", Op::ArrayContains, int(2)),
                ff("b", Op::Equal, string("q")),
            ]),
        ])),
        one_array_contains,
    );
    refuse(
        &with(and(vec![
            ff("arr", Op::ArrayContainsAny, array(vec![int(1)])),
            ff("arr", Op::ArrayContainsAny, array(vec![int(2)])),
        ])),
        one_array_contains,
    );
    refuse(
        &with(and(vec![
            ff("arr", Op::ArrayContains, int(1)),
            ff("arr", Op::ArrayContainsAny, array(vec![int(2)])),
        ])),
        one_array_contains,
    );
    let not_in_with = "'NOT_IN' cannot be used in the same query with 'IN', 'ARRAY_CONTAINS_ANY' \
                       or 'OR'.";
    refuse(
        &with(and(vec![
            ff("b", Op::In, array(vec![string("x")])),
            ff("a", Op::NotIn, array(vec![int(1)])),
        ])),
        not_in_with,
    );
    refuse(
        &with(or(vec![
            ff("a", Op::NotIn, array(vec![int(1)])),
            ff("b", Op::Equal, string("z")),
        ])),
        not_in_with,
    );
    refuse(
        &with(and(vec![
            ff("a", Op::In, ints(0..30)),
            ff("b", Op::In, array(vec![string("x"), string("y")])),
        ])),
        "Too many disjunctions after normalization. Result had 60 disjunctions which is more \
         than the maximum of 30",
    );
    refuse(
        &with(or((0..31).map(|i| ff("a", Op::Equal, int(i))).collect())),
        "Too many disjunctions after normalization. Result had 31 disjunctions which is more \
         than the maximum of 30",
    );
    refuse(
        &with(and(vec![
            or(vec![ff("b", Op::Equal, string("x"))]),
            ff("a", Op::NotIn, array(vec![int(7)])),
        ])),
        not_in_with,
    );
    refuse(
        &with(or(vec![ff("a", Op::NotIn, array(vec![int(1)]))])),
        not_in_with,
    );
    refuse(
        &with(and(vec![
            ff("arr", Op::ArrayContainsAny, ints(0..30)),
            ff("b", Op::In, array(vec![string("x"), string("y")])),
        ])),
        "Too many disjunctions after normalization. Result had 60 disjunctions which is more \
         than the maximum of 30",
    );
    // The emulator lists the fields in no particular order; ours are in
    // field path order.
    refuse(
        &with(and((0..11)
            .map(|i| ff(&format!("f{i}"), Op::GreaterThan, int(0)))
            .collect())),
        "The query contains 11 distinct inequality fields: [f0, f1, f10, f2, f3, f4, f5, f6, \
         f7, f8, f9]. A query may not have more than 10 distinct inequality fields.",
    );
    expect_ids(
        &with(and((0..10)
            .map(|i| ff(&format!("f{i}"), Op::GreaterThan, int(0)))
            .collect())),
        &[],
    );
    refuse(
        &StructuredQuery {
            select: Some(Projection {
                fields: vec![FieldReference {
                    field_path: "a..b".to_owned(),
                }],
            }),
            ..q()
        },
        "Invalid property path \"a..b\". Unquoted property paths must match regex \
         ([a-zA-Z_][a-zA-Z_0-9]*), and quoted property paths must match regex \
         (`(?:[^`\\\\]|(?:\\\\.))+`)",
    );
    refuse(
        &with(or(vec![])),
        "Composite filter must have at least one sub-filter.",
    );
    refuse(
        &with(composite(
            composite_filter::Operator::Unspecified,
            vec![ff("b", Op::Equal, string("y"))],
        )),
        "Unsupported CompositeFilter operator.",
    );
    refuse(&with(Filter { filter_type: None }), "Unknown Filter type.");
    refuse(
        &with(ff("a", Op::Unspecified, int(1))),
        "Unknown FieldFilter operator.",
    );
    refuse(
        &with(uf("a", Un::Unspecified)),
        "Unknown UnaryFilter operator.",
    );
    refuse(
        &with(ff("a", Op::Equal, Value { value_type: None })),
        "Cannot convert firestore.v1.Value with type unset.",
    );
    refuse(
        &StructuredQuery {
            from: from("a/b", false),
            ..q()
        },
        "Collection id \"a/b\" is invalid because it contains \"/\".",
    );
    refuse(
        &StructuredQuery {
            from: from("__x__", false),
            ..q()
        },
        "Collection id \"__x__\" is invalid because it is reserved.",
    );
}

fn agg_query(
    nested: StructuredQuery,
    aggregations: Vec<Aggregation>,
) -> StructuredAggregationQuery {
    StructuredAggregationQuery {
        aggregations,
        query_type: Some(QueryType::StructuredQuery(nested)),
    }
}

fn count(alias: &str, up_to: Option<i64>) -> Aggregation {
    Aggregation {
        alias: alias.to_owned(),
        operator: Some(Operator::Count(Count { up_to })),
    }
}

fn sum(alias: &str, field: &str) -> Aggregation {
    Aggregation {
        alias: alias.to_owned(),
        operator: Some(Operator::Sum(Sum { field: fr(field) })),
    }
}

fn avg(alias: &str, field: &str) -> Aggregation {
    Aggregation {
        alias: alias.to_owned(),
        operator: Some(Operator::Avg(Avg { field: fr(field) })),
    }
}

/// The emulator's `g` collection.
fn g_docs() -> Vec<Document> {
    vec![
        doc(
            "g/g1",
            vec![
                ("i", int(1)),
                ("x", int(1)),
                ("big", int(i64::MAX)),
                ("nn", double(f64::NAN)),
                ("inf", double(f64::INFINITY)),
                ("mix", int(1)),
                ("s", string("a")),
            ],
        ),
        doc(
            "g/g2",
            vec![
                ("i", int(2)),
                ("x", double(2.5)),
                ("big", int(1)),
                ("nn", int(1)),
                ("inf", double(f64::NEG_INFINITY)),
                ("mix", string("str")),
                ("s", string("b")),
            ],
        ),
        doc(
            "g/g3",
            vec![
                ("i", int(3)),
                ("x", null()),
                ("big", int(5)),
                ("nn", int(2)),
                ("inf", int(1)),
                ("mix", boolean(true)),
            ],
        ),
        doc(
            "g/g4",
            vec![
                ("j", int(1)),
                ("neg", int(i64::MIN)),
                ("negd", double(-1.5)),
            ],
        ),
    ]
}

fn g() -> StructuredQuery {
    StructuredQuery {
        from: from("g", false),
        ..Default::default()
    }
}

fn agg(
    nested: StructuredQuery,
    aggregations: Vec<Aggregation>,
    docs: Vec<Document>,
) -> Result<Vec<(String, String)>, String> {
    let result = aggregate(&agg_query(nested, aggregations), docs).map_err(|e| e.message)?;
    let mut out: Vec<(String, String)> = result
        .aggregate_fields
        .into_iter()
        .map(|(k, v)| (k, format!("{:?}", v.value_type.unwrap())))
        .collect();
    out.sort();
    Ok(out)
}

fn pairs(p: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
    let mut v: Vec<(String, String)> = p
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    Ok(v)
}

#[test]
fn sums_and_averages_follow_firestores_number_rules() {
    let both = |f: &str| agg(g(), vec![sum("s", f), avg("a", f)], g_docs());
    assert_eq!(
        both("i"),
        pairs(&[("s", "IntegerValue(6)"), ("a", "DoubleValue(2.0)")])
    );
    assert_eq!(
        both("x"),
        pairs(&[("s", "DoubleValue(3.5)"), ("a", "DoubleValue(1.75)")])
    );
    // 2^63-1 + 1 + 5 overflows: a double.
    assert_eq!(
        both("big"),
        pairs(&[
            ("s", "DoubleValue(9.223372036854776e18)"),
            ("a", "DoubleValue(3.0744573456182584e18)")
        ])
    );
    assert_eq!(
        both("nn"),
        pairs(&[("s", "DoubleValue(NaN)"), ("a", "DoubleValue(NaN)")])
    );
    // inf + -inf + 1.
    assert_eq!(
        both("inf"),
        pairs(&[("s", "DoubleValue(NaN)"), ("a", "DoubleValue(NaN)")])
    );
    assert_eq!(
        both("mix"),
        pairs(&[("s", "IntegerValue(1)"), ("a", "DoubleValue(1.0)")])
    );
    for f in ["s", "nope"] {
        assert_eq!(
            both(f),
            pairs(&[("s", "IntegerValue(0)"), ("a", "NullValue(NullValue)")])
        );
    }
    assert_eq!(
        both("neg"),
        pairs(&[
            ("s", "IntegerValue(-9223372036854775808)"),
            ("a", "DoubleValue(-9.223372036854776e18)")
        ])
    );
    assert_eq!(
        both("negd"),
        pairs(&[("s", "DoubleValue(-1.5)"), ("a", "DoubleValue(-1.5)")])
    );
    let over = |values: Vec<Value>| {
        let docs = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| doc(&format!("g/o{i}"), vec![("v", v)]))
            .collect();
        agg(g(), vec![sum("s", "v"), avg("a", "v")], docs)
    };
    // Integers add exactly: MAX + 1 - 1 stays an integer (the emulator's
    // sum; the average is ours, the exact total over 3 as a double).
    assert_eq!(
        over(vec![int(i64::MAX), int(1), int(-1)]),
        pairs(&[
            ("s", "IntegerValue(9223372036854775807)"),
            ("a", "DoubleValue(3.0744573456182584e18)")
        ])
    );
    assert_eq!(
        over(vec![int(1 << 62), int(1 << 62), int(1 << 62), int(-5)]),
        pairs(&[
            ("s", "DoubleValue(1.3835058055282164e19)"),
            ("a", "DoubleValue(3.458764513820541e18)")
        ])
    );
    assert_eq!(
        over(vec![int(i64::MIN), int(-1)]),
        pairs(&[
            ("s", "DoubleValue(-9.223372036854776e18)"),
            ("a", "DoubleValue(-4.611686018427388e18)")
        ])
    );
    assert_eq!(
        over(vec![double(1e308), double(1e308)]),
        pairs(&[("s", "DoubleValue(inf)"), ("a", "DoubleValue(inf)")])
    );
    assert_eq!(
        over(vec![int((1 << 53) + 1), double(0.5), int(1 << 53)]),
        pairs(&[
            ("s", "DoubleValue(1.8014398509481984e16)"),
            ("a", "DoubleValue(6004799503160661.0)")
        ])
    );
}

#[test]
fn counts_aliases_and_the_nested_query() {
    assert_eq!(
        agg(g(), vec![count("c", None)], g_docs()),
        pairs(&[("c", "IntegerValue(4)")])
    );
    assert_eq!(
        agg(g(), vec![count("c", Some(2))], g_docs()),
        pairs(&[("c", "IntegerValue(2)")])
    );
    assert_eq!(
        agg(g(), vec![count("c", Some(0))], g_docs()),
        pairs(&[("c", "IntegerValue(0)")])
    );
    assert_eq!(
        agg(
            StructuredQuery {
                limit: Some(2),
                ..g()
            },
            vec![count("c", None)],
            g_docs()
        ),
        pairs(&[("c", "IntegerValue(2)")])
    );
    assert_eq!(
        agg(
            StructuredQuery { offset: 2, ..g() },
            vec![count("c", None)],
            g_docs()
        ),
        pairs(&[("c", "IntegerValue(2)")])
    );
    assert_eq!(
        agg(
            StructuredQuery {
                limit: Some(1),
                order_by: vec![desc("i")],
                ..g()
            },
            vec![sum("s", "i")],
            g_docs()
        ),
        pairs(&[("s", "IntegerValue(3)")])
    );
    assert_eq!(
        agg(
            StructuredQuery {
                order_by: vec![asc("i")],
                start_at: cursor(vec![int(2)], true),
                ..g()
            },
            vec![count("c", None), sum("s", "i")],
            g_docs()
        ),
        pairs(&[("c", "IntegerValue(2)"), ("s", "IntegerValue(5)")])
    );
    assert_eq!(
        agg(
            StructuredQuery {
                from: from("nothing", false),
                ..g()
            },
            vec![sum("s", "i"), avg("a", "i"), count("c", None)],
            vec![]
        ),
        pairs(&[
            ("s", "IntegerValue(0)"),
            ("a", "NullValue(NullValue)"),
            ("c", "IntegerValue(0)")
        ])
    );
    assert_eq!(
        // Beside `sum(i)`, the count is of the documents holding `i` (g4
        // has none): the emulator answers 3 (checked with the Python
        // client), as the conformance table's aggregations show too.
        agg(g(), vec![count("", None), sum("", "i")], g_docs()),
        pairs(&[
            ("field_1", "IntegerValue(3)"),
            ("field_2", "IntegerValue(6)")
        ])
    );
    assert_eq!(
        agg(g(), vec![count("field_2", None), count("", None)], g_docs()),
        pairs(&[
            ("field_2", "IntegerValue(4)"),
            ("field_1", "IntegerValue(4)")
        ])
    );
    assert_eq!(
        agg(g(), vec![count("a.b", None), count("`a`", None)], g_docs()),
        pairs(&[("a.b", "IntegerValue(4)"), ("`a`", "IntegerValue(4)")])
    );
    let refused = |aggs: Vec<Aggregation>| agg(g(), aggs, g_docs()).unwrap_err();
    assert_eq!(
        refused(vec![count("c", Some(-1))]),
        "The `up_to` value in a COUNT aggregation must be greater than or equal to zero."
    );
    assert_eq!(
        refused(vec![count("a", None), count("a", None)]),
        "Aggregations aliases contain duplicate alias: a."
    );
    assert_eq!(refused(vec![]), "Aggregations can not be empty.");
    assert_eq!(
        refused(vec![sum("s", "__name__")]),
        "Aggregations are not supported for the property: __key__"
    );
    assert_eq!(
        refused(vec![count("__x__", None)]),
        "The property.name \"__x__\" is reserved."
    );
    assert_eq!(
        refused(vec![count(&"x".repeat(1501), None)]),
        "The property.name is longer than 1500 bytes."
    );
    assert_eq!(
        refused(vec![Aggregation {
            alias: "c".to_owned(),
            operator: None
        }]),
        "Operator field in Aggregation is not set."
    );
    // Not the emulator's words: it fails six aggregations with UNKNOWN
    // and no message; Firestore allows five.
    assert!(refused((0..6).map(|i| count(&format!("a{i}"), None)).collect()).contains("at most 5"));
}

#[test]
fn a_hundred_results_from_ten_thousand_documents() {
    // Not an emulator answer: the order of generated documents, checked
    // against a plain sort.
    let docs: Vec<Document> = (0..10_000)
        .map(|i| {
            doc(
                &format!("big/d{i:05}"),
                vec![
                    ("n", int((i * 7919) % 10_007)),
                    ("s", string(&format!("v{}", i % 13))),
                ],
            )
        })
        .collect();
    let query = StructuredQuery {
        from: from("big", false),
        r#where: Some(ff("n", Op::GreaterThan, int(100))),
        order_by: vec![desc("n")],
        limit: Some(100),
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let out = run(&query, docs.clone()).unwrap();
    let took = started.elapsed();
    let mut expected: Vec<(i64, String)> = docs
        .iter()
        .filter_map(|d| match d.fields["n"].value_type {
            Some(ValueType::IntegerValue(n)) if n > 100 => Some((n, d.name.clone())),
            _ => None,
        })
        .collect();
    expected.sort_by(|a, b| b.cmp(a));
    let got: Vec<String> = out.iter().map(|d| d.name.clone()).collect();
    let want: Vec<String> = expected.into_iter().take(100).map(|(_, n)| n).collect();
    assert_eq!(got, want);
    // Generous for an unoptimized build on a shared machine.
    assert!(took.as_millis() < 2_000, "took {took:?}");
}

use crate::proto::value::ValueType;
