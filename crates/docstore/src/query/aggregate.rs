//! `count`, `sum` and `avg` over a query's results, with Firestore's
//! number rules (checked against Google's emulator):
//!
//! - `count` counts the nested query's results (its cursors, offset and
//!   limit apply), at most `up_to`.
//! - `sum` adds the integers exactly and gives an integer when the total
//!   fits in 64 bits (`MAX + 1 - 1` is `MAX`, not a double), a double when
//!   it does not or when any double took part; NaN and opposite
//!   infinities give NaN; non-numbers are skipped; no numbers give `0`.
//! - `avg` is always a double, null when no value was a number.
//! - With any `sum` or `avg`, only documents holding every summed or
//!   averaged field (whatever its value) are aggregated, and that before
//!   the nested query's cursors, offset and limit: a `count` beside
//!   `sum(n)` counts the documents that have `n` (Firestore answers from
//!   the fields' index entries; confirmed on the emulator by the
//!   conformance table).

use std::collections::{HashMap, HashSet};

use super::check::{self, Field};
use crate::Status;
use crate::proto::structured_aggregation_query::QueryType;
use crate::proto::structured_aggregation_query::aggregation::Operator;
use crate::proto::value::ValueType;
use crate::proto::{AggregationResult, Document, StructuredAggregationQuery, Value};

/// Most aggregations one query may ask for.
pub(crate) const MAX_AGGREGATIONS: usize = 5;
/// Longest alias, in UTF-8 bytes (a field name's limit).
const MAX_ALIAS_BYTES: usize = 1500;

/// What one aggregation computes.
enum Agg {
    Count(Option<usize>),
    Sum(Vec<String>),
    Avg(Vec<String>),
}

/// Runs an aggregation (count, sum, avg) over its query's candidates.
pub fn aggregate(
    query: &StructuredAggregationQuery,
    candidates: Vec<Document>,
) -> Result<AggregationResult, Status> {
    let Some(QueryType::StructuredQuery(nested)) = &query.query_type else {
        return Err(Status::invalid(
            "an aggregation query needs its `structured_query`",
        ));
    };
    if query.aggregations.is_empty() {
        return Err(Status::invalid("Aggregations can not be empty."));
    }
    if query.aggregations.len() > MAX_AGGREGATIONS {
        return Err(Status::invalid(format!(
            "a query can have at most {MAX_AGGREGATIONS} aggregations; this one has {}",
            query.aggregations.len()
        )));
    }

    let explicit: HashSet<&str> = query
        .aggregations
        .iter()
        .map(|a| a.alias.as_str())
        .filter(|a| !a.is_empty())
        .collect();
    let mut used: HashSet<String> = HashSet::new();
    let mut unnamed = 0usize;
    let mut plan = Vec::new();
    for a in &query.aggregations {
        let alias = if a.alias.is_empty() {
            // Unaliased aggregations are `field_1`, `field_2`, ... in
            // order, skipping names given explicitly.
            loop {
                unnamed += 1;
                let name = format!("field_{unnamed}");
                if !explicit.contains(name.as_str()) {
                    break name;
                }
            }
        } else {
            check_alias(&a.alias)?;
            a.alias.clone()
        };
        if !used.insert(alias.clone()) {
            return Err(Status::invalid(format!(
                "Aggregations aliases contain duplicate alias: {}.",
                latchkey_core::echo(&alias)
            )));
        }
        let agg = match &a.operator {
            None => return Err(Status::invalid("Operator field in Aggregation is not set.")),
            Some(Operator::Count(c)) => Agg::Count(match c.up_to {
                None => None,
                Some(n) => Some(usize::try_from(n).map_err(|_| {
                    Status::invalid(
                        "The `up_to` value in a COUNT aggregation must be greater than or equal \
                         to zero.",
                    )
                })?),
            }),
            Some(Operator::Sum(s)) => Agg::Sum(field(s.field.as_ref())?),
            Some(Operator::Avg(s)) => Agg::Avg(field(s.field.as_ref())?),
        };
        plan.push((alias, agg));
    }

    let summed: Vec<&Vec<String>> = plan
        .iter()
        .filter_map(|(_, agg)| match agg {
            Agg::Sum(path) | Agg::Avg(path) => Some(path),
            Agg::Count(_) => None,
        })
        .collect();
    let candidates = if summed.is_empty() {
        candidates
    } else {
        candidates
            .into_iter()
            .filter(|d| {
                summed
                    .iter()
                    .all(|path| super::eval::lookup(&d.fields, path).is_some())
            })
            .collect()
    };
    let mut nested = nested.clone();
    nested.select = None;
    let docs = super::run(&nested, candidates)?;

    let mut aggregate_fields = HashMap::new();
    for (alias, agg) in plan {
        let value = match agg {
            Agg::Count(up_to) => {
                let n = up_to.map_or(docs.len(), |u| docs.len().min(u));
                ValueType::IntegerValue(i64::try_from(n).unwrap_or(i64::MAX))
            }
            Agg::Sum(path) => Total::over(&docs, &path).sum(),
            Agg::Avg(path) => Total::over(&docs, &path).avg(),
        };
        aggregate_fields.insert(
            alias,
            Value {
                value_type: Some(value),
            },
        );
    }
    Ok(AggregationResult { aggregate_fields })
}

fn check_alias(alias: &str) -> Result<(), Status> {
    if alias.len() > MAX_ALIAS_BYTES {
        return Err(Status::invalid(
            "The property.name is longer than 1500 bytes.",
        ));
    }
    if alias.len() >= 4 && alias.starts_with("__") && alias.ends_with("__") {
        return Err(Status::invalid(format!(
            "The property.name \"{}\" is reserved.",
            latchkey_core::echo(alias)
        )));
    }
    Ok(())
}

fn field(
    f: Option<&crate::proto::structured_query::FieldReference>,
) -> Result<Vec<String>, Status> {
    let path = f.map_or("", |f| f.field_path.as_str());
    match check::Field::parse(path)? {
        Field::Name => Err(Status::invalid(
            "Aggregations are not supported for the property: __key__",
        )),
        Field::Path(segments) => Ok(segments),
    }
}

/// The numbers at one field over the results.
struct Total {
    /// The integers' exact sum (i128 cannot overflow: fewer than 2^64
    /// documents of at most 2^63 each).
    integers: i128,
    /// The doubles' sum, in result order.
    doubles: f64,
    any_double: bool,
    count: u64,
}

impl Total {
    fn over(docs: &[Document], path: &[String]) -> Self {
        let mut t = Self {
            integers: 0,
            doubles: 0.0,
            any_double: false,
            count: 0,
        };
        for d in docs {
            match super::eval::lookup(&d.fields, path).and_then(|v| v.value_type.as_ref()) {
                Some(ValueType::IntegerValue(n)) => {
                    t.integers += i128::from(*n);
                    t.count += 1;
                }
                Some(ValueType::DoubleValue(x)) => {
                    t.doubles += x;
                    t.any_double = true;
                    t.count += 1;
                }
                _ => {}
            }
        }
        t
    }

    fn as_double(&self) -> f64 {
        // i128 to f64 rounds to nearest, as Firestore's double sum does.
        self.integers as f64 + self.doubles
    }

    fn sum(&self) -> ValueType {
        if !self.any_double
            && let Ok(n) = i64::try_from(self.integers)
        {
            return ValueType::IntegerValue(n);
        }
        ValueType::DoubleValue(self.as_double())
    }

    fn avg(&self) -> ValueType {
        if self.count == 0 {
            return ValueType::NullValue(0);
        }
        ValueType::DoubleValue(self.as_double() / self.count as f64)
    }
}
