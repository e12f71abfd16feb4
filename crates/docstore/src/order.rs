//! Firestore's total order of values (owned by the query work; see
//! `compare_values`).

use std::cmp::Ordering;

use crate::proto::Value;

/// Compares two values as Firestore orders them across and within types:
/// null < booleans < NaN < numbers (integers and doubles compared
/// numerically) < timestamps < strings (UTF-8 bytes) < bytes < references
/// < geopoints < arrays < maps.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    // CONTRACT PLACEHOLDER: replaced by the query work.
    let _ = (a, b);
    Ordering::Equal
}
