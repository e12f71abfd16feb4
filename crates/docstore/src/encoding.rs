//! The order-preserving byte encoding of values and document paths
//! (owned by the query work).

use crate::proto::Value;

/// Why bytes do not decode to a value or a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable key bytes at offset {offset}: {why}")]
pub struct DecodeError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub why: &'static str,
}

/// Appends the encoding of `value`: `encode(a) < encode(b)` (bytewise)
/// exactly when Firestore orders `a` before `b`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    // CONTRACT PLACEHOLDER: replaced by the query work.
    let _ = (value, out);
}

/// Decodes one value from the front of `bytes`; returns it and the bytes
/// it took.
pub fn decode_value(bytes: &[u8]) -> Result<(Value, usize), DecodeError> {
    let _ = bytes;
    Err(DecodeError {
        offset: 0,
        why: "not implemented",
    })
}

/// The key of a document or collection path (its segments, alternately
/// collection ids and document ids): ordered as Firestore orders names, and
/// every path under `p` has `encode_path(p)` as a prefix, so a subtree is
/// a range scan.
pub fn encode_path(segments: &[String]) -> Vec<u8> {
    let _ = segments;
    Vec::new()
}

/// The segments of an encoded path.
pub fn decode_path(bytes: &[u8]) -> Result<Vec<String>, DecodeError> {
    let _ = bytes;
    Err(DecodeError {
        offset: 0,
        why: "not implemented",
    })
}
