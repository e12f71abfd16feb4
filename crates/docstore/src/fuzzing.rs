//! Property checks shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/docstore_value_encoding.rs`) and the stable test
//! that replays its corpus. Each takes arbitrary bytes and panics only if
//! an invariant breaks.

// A broken invariant is the finding: panicking is how a fuzz target reports.
#![allow(clippy::panic, clippy::unwrap_used)]

use crate::encoding::{
    decode_path, decode_value, decode_value_exact, encode_path, encode_value_exact, order_key,
};
use crate::order::compare_values;

/// Decoding arbitrary bytes as a value key, an exact value encoding and a
/// path never panics; whatever decodes encodes back to exactly the bytes
/// it took; and two values decoded one after the other compare by their
/// keys exactly as [`compare_values`] compares them.
pub fn value_encoding(data: &[u8]) {
    if let Ok((v, used)) = decode_value(data) {
        assert_eq!(order_key(&v), &data[..used], "canonical key re-encodes");
        assert_eq!(compare_values(&v, &v), std::cmp::Ordering::Equal);
        if let Ok((w, _)) = decode_value(&data[used..]) {
            assert_eq!(
                order_key(&v).cmp(&order_key(&w)),
                compare_values(&v, &w),
                "keys order as values: {v:?} vs {w:?}"
            );
        }
    }
    if let Ok((v, used)) = decode_value_exact(data) {
        let mut again = Vec::new();
        encode_value_exact(&v, &mut again);
        assert_eq!(again, &data[..used], "exact encoding re-encodes");
    }
    if let Ok(segments) = decode_path(data) {
        assert_eq!(encode_path(&segments), data, "path re-encodes");
    }
}
