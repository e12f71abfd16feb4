//! The byte-exact record line format and the chain hash. Pure code, no I/O.
//!
//! A record line is
//! `{"seq":N,"prev":"<64 lowercase hex>","hash":"<64 lowercase hex>","event":<event JSON>}\n`
//! and `hash = SHA-256(seq as 8 bytes big-endian || prev as 32 raw bytes ||
//! the event JSON bytes exactly as written)`.
//!
//! The parser is strict (no whitespace, lowercase hex only, no leading zeros)
//! so that every byte of a line is either covered by the hash or fixed by the
//! format: changing any one byte is detected.

use aws_lc_rs::digest;

/// The `prev` of the first record.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

const SEQ_PREFIX: &[u8] = b"{\"seq\":";
const PREV_PREFIX: &[u8] = b",\"prev\":\"";
const HASH_PREFIX: &[u8] = b"\",\"hash\":\"";
const EVENT_PREFIX: &[u8] = b"\",\"event\":";

/// The chain hash of one record.
pub(crate) fn record_hash(seq: u64, prev: &[u8; 32], event_json: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev);
    ctx.update(event_json);
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Appends one record line (with its newline) to `buf`.
pub(crate) fn encode_line(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; 32],
    hash: &[u8; 32],
    event_json: &[u8],
) {
    buf.reserve(event_json.len() + 180);
    buf.extend_from_slice(SEQ_PREFIX);
    push_u64(buf, seq);
    buf.extend_from_slice(PREV_PREFIX);
    push_hex(buf, prev);
    buf.extend_from_slice(HASH_PREFIX);
    push_hex(buf, hash);
    buf.extend_from_slice(EVENT_PREFIX);
    buf.extend_from_slice(event_json);
    buf.extend_from_slice(b"}\n");
}

/// One record line split into its parts, event bytes borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRecord<'a> {
    pub(crate) seq: u64,
    pub(crate) prev: [u8; 32],
    pub(crate) hash: [u8; 32],
    pub(crate) event: &'a [u8],
}

impl RawRecord<'_> {
    /// Whether the stored hash is the hash of the stored contents.
    pub(crate) fn hash_matches(&self) -> bool {
        record_hash(self.seq, &self.prev, self.event) == self.hash
    }
}

/// Splits one line (without its newline). The error says what is malformed.
pub(crate) fn parse_line(line: &[u8]) -> Result<RawRecord<'_>, &'static str> {
    let rest = line
        .strip_prefix(SEQ_PREFIX)
        .ok_or("it does not start with `{\"seq\":`")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return Err("`seq` is not a canonical number");
    }
    let seq = parse_u64(&rest[..digits]).ok_or("`seq` is not a canonical number")?;
    let rest = rest[digits..]
        .strip_prefix(PREV_PREFIX)
        .ok_or("`prev` is missing or misplaced")?;
    let (prev, rest) = take_hex(rest).ok_or("`prev` is not 64 lowercase hex digits")?;
    let rest = rest
        .strip_prefix(HASH_PREFIX)
        .ok_or("`hash` is missing or misplaced")?;
    let (hash, rest) = take_hex(rest).ok_or("`hash` is not 64 lowercase hex digits")?;
    let rest = rest
        .strip_prefix(EVENT_PREFIX)
        .ok_or("`event` is missing or misplaced")?;
    let event = rest
        .strip_suffix(b"}")
        .ok_or("the line does not end with `}`")?;
    if !event.starts_with(b"{") || !event.ends_with(b"}") {
        return Err("`event` is not a JSON object");
    }
    Ok(RawRecord {
        seq,
        prev,
        hash,
        event,
    })
}

/// Lowercase hex of a hash.
pub(crate) fn to_hex(bytes: &[u8; 32]) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Parses 64 lowercase hex digits.
pub(crate) fn from_hex(text: &str) -> Option<[u8; 32]> {
    match take_hex(text.as_bytes()) {
        Some((bytes, [])) => Some(bytes),
        _ => None,
    }
}

fn take_hex(input: &[u8]) -> Option<([u8; 32], &[u8])> {
    if input.len() < 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in input[..64].chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some((out, &input[64..]))
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn push_hex(buf: &mut Vec<u8>, bytes: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        buf.push(DIGITS[usize::from(b >> 4)]);
        buf.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Reads only the `seq` of a line, for skipping without a full parse.
pub(crate) fn peek_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(SEQ_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    parse_u64(&rest[..digits])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let prev = [7u8; 32];
        let event = br#"{"a":1}"#;
        let hash = record_hash(42, &prev, event);
        let mut buf = Vec::new();
        encode_line(&mut buf, 42, &prev, &hash, event);
        assert!(buf.ends_with(b"}\n"));
        let line = &buf[..buf.len() - 1];
        let raw = parse_line(line).unwrap();
        assert_eq!(raw.seq, 42);
        assert_eq!(raw.prev, prev);
        assert_eq!(raw.hash, hash);
        assert_eq!(raw.event, event);
        assert!(raw.hash_matches());
        assert_eq!(peek_seq(line), Some(42));
        assert!(serde_json::from_slice::<serde_json::Value>(line).is_ok());
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
    }

    #[test]
    fn strict_parsing() {
        let prev = GENESIS;
        let event = br#"{"a":1}"#;
        let hash = record_hash(1, &prev, event);
        let mut buf = Vec::new();
        encode_line(&mut buf, 1, &prev, &hash, event);
        let good = String::from_utf8(buf[..buf.len() - 1].to_vec()).unwrap();
        assert!(parse_line(good.as_bytes()).is_ok());
        // Leading zero, uppercase hex, whitespace: all refused.
        assert!(parse_line(good.replacen("\"seq\":1", "\"seq\":01", 1).as_bytes()).is_err());
        let upper = good.replacen(&to_hex(&hash), &to_hex(&hash).to_uppercase(), 1);
        assert!(parse_line(upper.as_bytes()).is_err());
        assert!(parse_line(good.replacen("{\"seq\"", "{ \"seq\"", 1).as_bytes()).is_err());
        assert!(parse_line(b"").is_err());
        assert_eq!(parse_u64(b"99999999999999999999"), None);
    }

    #[test]
    fn every_event_byte_is_covered() {
        let event = br#"{"action":"git.push"}"#;
        let hash = record_hash(3, &GENESIS, event);
        let mut changed = event.to_vec();
        changed[12] ^= 1;
        assert_ne!(record_hash(3, &GENESIS, &changed), hash);
        assert_ne!(record_hash(4, &GENESIS, event), hash);
    }
}
