//! Field transforms: server time, increment, maximum, minimum, array union
//! and array removal, with Firestore's numeric rules (as its API reference
//! states them).

use std::cmp::Ordering;

use crate::Status;
use crate::order::compare_values;
use crate::proto::document_transform::FieldTransform;
use crate::proto::document_transform::field_transform::{ServerValue, TransformType};
use crate::proto::{ArrayValue, Value, value::ValueType};

/// A checked transform, ready to apply to a field's current value.
#[derive(Debug, Clone)]
pub(crate) enum Transform {
    /// The commit time.
    ServerTime,
    /// Add a number.
    Increment(Number),
    /// The larger of the two.
    Maximum(Number),
    /// The smaller of the two.
    Minimum(Number),
    /// Append the elements not already present.
    Union(Vec<Value>),
    /// Remove every equivalent element.
    Remove(Vec<Value>),
}

/// An integer or a double operand.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
}

impl Number {
    fn of(v: &Value) -> Option<Self> {
        match v.value_type {
            Some(ValueType::IntegerValue(i)) => Some(Self::Int(i)),
            Some(ValueType::DoubleValue(d)) => Some(Self::Double(d)),
            _ => None,
        }
    }

    fn value(self) -> Value {
        Value {
            value_type: Some(match self {
                Self::Int(i) => ValueType::IntegerValue(i),
                Self::Double(d) => ValueType::DoubleValue(d),
            }),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Double(d) => d,
        }
    }

    fn is_nan(self) -> bool {
        matches!(self, Self::Double(d) if d.is_nan())
    }

    /// Numeric order, exact between integers and doubles (NaN excluded by
    /// the caller).
    fn cmp(self, other: Self) -> Ordering {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a.cmp(&b),
            (Self::Double(a), Self::Double(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Self::Int(a), Self::Double(b)) => cmp_int_double(a, b),
            (Self::Double(a), Self::Int(b)) => cmp_int_double(b, a).reverse(),
        }
    }
}

/// Compares an integer with a (non-NaN) double without losing precision.
fn cmp_int_double(i: i64, d: f64) -> Ordering {
    // 2^63 as a double: every i64 lies in [-2^63, 2^63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if d >= TWO_63 {
        return Ordering::Less;
    }
    if d < -TWO_63 {
        return Ordering::Greater;
    }
    let t = d.trunc();
    // `t` is integral and within range, so the cast is exact.
    let ti = t as i64;
    match i.cmp(&ti) {
        Ordering::Equal => {
            if d > t {
                Ordering::Less
            } else if d < t {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

impl Transform {
    /// Checks a transform as Firestore does.
    pub(crate) fn parse(t: &FieldTransform) -> Result<Self, Status> {
        let number = |v: &Value, what: &str| {
            Number::of(v).ok_or_else(|| {
                Status::invalid(format!(
                    "{what} transform on field `{}` needs an integer or a double operand",
                    t.field_path
                ))
            })
        };
        match &t.transform_type {
            None => Err(Status::invalid(format!(
                "the transform on field `{}` has no transform type",
                t.field_path
            ))),
            Some(TransformType::SetToServerValue(v)) => {
                if *v == ServerValue::RequestTime as i32 {
                    Ok(Self::ServerTime)
                } else {
                    Err(Status::invalid(format!(
                        "unknown server value {v} for field `{}`",
                        t.field_path
                    )))
                }
            }
            Some(TransformType::Increment(v)) => Ok(Self::Increment(number(v, "an increment")?)),
            Some(TransformType::Maximum(v)) => Ok(Self::Maximum(number(v, "a maximum")?)),
            Some(TransformType::Minimum(v)) => Ok(Self::Minimum(number(v, "a minimum")?)),
            Some(TransformType::AppendMissingElements(a)) => Ok(Self::Union(a.values.clone())),
            Some(TransformType::RemoveAllFromArray(a)) => Ok(Self::Remove(a.values.clone())),
        }
    }

    /// The operand values that would be stored (to check and normalize).
    pub(crate) fn operands_mut(&mut self) -> Vec<&mut Value> {
        match self {
            Self::Union(v) | Self::Remove(v) => v.iter_mut().collect(),
            _ => Vec::new(),
        }
    }

    /// Applies the transform to the field's current value: returns the new
    /// value and the transform result Firestore reports.
    pub(crate) fn apply(&self, current: Option<&Value>, now: &Value) -> (Value, Value) {
        let null = Value {
            value_type: Some(ValueType::NullValue(0)),
        };
        let current_number = current.and_then(Number::of);
        match self {
            Self::ServerTime => (now.clone(), now.clone()),
            Self::Increment(by) => {
                let v = match current_number {
                    None => by.value(),
                    Some(cur) => increment(cur, *by).value(),
                };
                (v.clone(), v)
            }
            Self::Maximum(x) => {
                let v = match current_number {
                    None => x.value(),
                    Some(cur) => extreme(cur, *x, Ordering::Greater).value(),
                };
                (v.clone(), v)
            }
            Self::Minimum(x) => {
                let v = match current_number {
                    None => x.value(),
                    Some(cur) => extreme(cur, *x, Ordering::Less).value(),
                };
                (v.clone(), v)
            }
            Self::Union(elements) => {
                let mut values = current_array(current);
                for e in elements {
                    if !values.iter().any(|v| equivalent(v, e)) {
                        values.push(e.clone());
                    }
                }
                (array(values), null)
            }
            Self::Remove(elements) => {
                let mut values = current_array(current);
                values.retain(|v| !elements.iter().any(|e| equivalent(v, e)));
                (array(values), null)
            }
        }
    }
}

/// Integer addition saturates at the i64 bounds; a double on either side
/// makes the sum a double.
fn increment(cur: Number, by: Number) -> Number {
    match (cur, by) {
        (Number::Int(a), Number::Int(b)) => Number::Int(a.saturating_add(b)),
        (a, b) => Number::Double(a.as_f64() + b.as_f64()),
    }
}

/// The maximum (`want` = Greater) or minimum (`want` = Less): NaN on either
/// side gives NaN; equivalent operands (3 and 3.0, 0 and -0.0) keep the
/// stored value; otherwise the winner keeps its own type.
fn extreme(cur: Number, x: Number, want: Ordering) -> Number {
    if cur.is_nan() {
        return cur;
    }
    if x.is_nan() {
        return x;
    }
    if x.cmp(cur) == want { x } else { cur }
}

fn current_array(current: Option<&Value>) -> Vec<Value> {
    match current.and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::ArrayValue(a)) => a.values.clone(),
        _ => Vec::new(),
    }
}

fn array(values: Vec<Value>) -> Value {
    Value {
        value_type: Some(ValueType::ArrayValue(ArrayValue { values })),
    }
}

/// Equivalence for array union and removal: Firestore's value equality
/// (3 equals 3.0, NaN equals NaN, null equals null).
fn equivalent(a: &Value, b: &Value) -> bool {
    compare_values(a, b) == Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> Value {
        Number::Int(i).value()
    }
    fn dbl(d: f64) -> Value {
        Number::Double(d).value()
    }
    fn now() -> Value {
        Value {
            value_type: Some(ValueType::NullValue(0)),
        }
    }

    #[test]
    fn increment_saturates_and_promotes() {
        let t = Transform::Increment(Number::Int(1));
        assert_eq!(t.apply(Some(&int(i64::MAX)), &now()).0, int(i64::MAX));
        assert_eq!(t.apply(Some(&int(2)), &now()).0, int(3));
        assert_eq!(t.apply(Some(&dbl(0.5)), &now()).0, dbl(1.5));
        let neg = Transform::Increment(Number::Int(-5));
        assert_eq!(neg.apply(Some(&int(i64::MIN + 1)), &now()).0, int(i64::MIN));
        let d = Transform::Increment(Number::Double(0.25));
        assert_eq!(d.apply(Some(&int(2)), &now()).0, dbl(2.25));
        // Not a number, or missing: set to the operand.
        let s = Value {
            value_type: Some(ValueType::StringValue("x".into())),
        };
        assert_eq!(t.apply(Some(&s), &now()).0, int(1));
        assert_eq!(d.apply(None, &now()).0, dbl(0.25));
    }

    #[test]
    fn maximum_and_minimum_follow_firestore_rules() {
        let max = |cur: Value, x: Number| Transform::Maximum(x).apply(Some(&cur), &now()).0;
        let min = |cur: Value, x: Number| Transform::Minimum(x).apply(Some(&cur), &now()).0;
        assert_eq!(max(int(3), Number::Double(3.0)), int(3));
        assert_eq!(max(dbl(3.0), Number::Int(3)), dbl(3.0));
        assert_eq!(max(int(3), Number::Double(3.5)), dbl(3.5));
        assert_eq!(min(int(3), Number::Double(2.5)), dbl(2.5));
        assert_eq!(max(dbl(-0.0), Number::Int(0)), dbl(-0.0));
        let nan = max(int(3), Number::Double(f64::NAN));
        assert!(matches!(nan.value_type, Some(ValueType::DoubleValue(d)) if d.is_nan()));
        let nan = min(dbl(f64::NAN), Number::Int(1));
        assert!(matches!(nan.value_type, Some(ValueType::DoubleValue(d)) if d.is_nan()));
        // Exact between large integers and doubles.
        assert_eq!(max(int(i64::MAX), Number::Double(9.2e18)), int(i64::MAX));
        assert_eq!(
            min(int(1 << 53 | 1), Number::Double((1u64 << 53) as f64)),
            dbl((1u64 << 53) as f64)
        );
    }
}
