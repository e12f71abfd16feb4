//! Finds the transaction id in a REST response body as it streams past.

use bytes::Bytes;

use super::json::decode_base64;

/// How many body bytes [`RestTransactionTap`] reads before giving up.
pub const TAP_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Scanning,
    Found(Bytes),
    GaveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collect {
    None,
    Key,
    Value,
}

/// Watches a REST response body, fed in chunks, for the transaction id a
/// call began: the top-level `"transaction"` of a `:beginTransaction`
/// response object, or of the first element of the JSON array that
/// `:batchGet`, `:runQuery` and `:runAggregationQuery` answer with.
///
/// It reads at most [`TAP_LIMIT`] bytes, keeps only the id it is
/// collecting, and stops at the first answer; it never changes the body.
#[derive(Debug, Clone)]
pub struct RestTransactionTap {
    state: State,
    seen: usize,
    depth: usize,
    /// Depth of the object inspected: 1 for an object body, 2 for the
    /// first element of an array body. 0 until the body's first byte.
    target: usize,
    in_string: bool,
    escape: bool,
    expect_key: bool,
    await_value: bool,
    last_key_is_tx: bool,
    collect: Collect,
    buf: Vec<u8>,
}

impl Default for RestTransactionTap {
    fn default() -> Self {
        Self::new()
    }
}

const KEY: &[u8] = b"transaction";

impl RestTransactionTap {
    /// A tap that has seen nothing.
    pub fn new() -> Self {
        Self {
            state: State::Scanning,
            seen: 0,
            depth: 0,
            target: 0,
            in_string: false,
            escape: false,
            expect_key: false,
            await_value: false,
            last_key_is_tx: false,
            collect: Collect::None,
            buf: Vec::new(),
        }
    }

    /// Reads the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.state != State::Scanning {
                return;
            }
            if self.seen >= TAP_LIMIT {
                self.give_up();
                return;
            }
            self.seen += 1;
            self.byte(b);
        }
    }

    /// The transaction id, once found.
    pub fn transaction(&self) -> Option<&Bytes> {
        match &self.state {
            State::Found(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the tap has its answer (an id, or that there is none to find).
    pub fn is_done(&self) -> bool {
        self.state != State::Scanning
    }

    fn give_up(&mut self) {
        self.state = State::GaveUp;
        self.buf = Vec::new();
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            self.string_byte(b);
            return;
        }
        if b.is_ascii_whitespace() {
            return;
        }
        if self.target == 0 {
            self.target = match b {
                b'{' => 1,
                b'[' => 2,
                _ => return self.give_up(),
            };
        }
        let at_target = self.depth == self.target;
        // An array body whose first element is not an object.
        if self.target == 2 && self.depth == 1 && b != b'{' {
            return self.give_up();
        }
        match b {
            b'"' => {
                self.in_string = true;
                if at_target && self.expect_key {
                    self.collect = Collect::Key;
                    self.buf.clear();
                } else if at_target && self.await_value {
                    self.collect = Collect::Value;
                    self.buf.clear();
                }
                self.await_value = false;
            }
            b'{' | b'[' => {
                self.await_value = false;
                self.depth += 1;
                if self.depth == self.target {
                    if b != b'{' {
                        return self.give_up();
                    }
                    self.expect_key = true;
                }
            }
            b'}' | b']' => {
                // Closing the inspected object: it had no id.
                if at_target || self.depth == 0 {
                    return self.give_up();
                }
                self.depth -= 1;
            }
            b':' if at_target => {
                self.expect_key = false;
                self.await_value = self.last_key_is_tx;
            }
            b',' if at_target => {
                self.expect_key = true;
                self.await_value = false;
                self.last_key_is_tx = false;
            }
            _ => self.await_value = false,
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escape {
            self.escape = false;
            match (self.collect, b) {
                (Collect::Value, b'/') => self.buf.push(b'/'),
                // Any other escape in a key makes it not `transaction`;
                // base64 never needs one.
                (Collect::Key, _) => self.buf.push(b'\\'),
                (Collect::Value, _) => return self.give_up(),
                (Collect::None, _) => {}
            }
            return;
        }
        match b {
            b'\\' => self.escape = true,
            b'"' => {
                self.in_string = false;
                match std::mem::replace(&mut self.collect, Collect::None) {
                    Collect::Key => {
                        self.last_key_is_tx = self.buf == KEY;
                        self.expect_key = false;
                    }
                    Collect::Value => {
                        let found = std::str::from_utf8(&self.buf)
                            .ok()
                            .and_then(decode_base64)
                            .filter(|t| !t.is_empty());
                        self.buf = Vec::new();
                        self.state = match found {
                            Some(t) => State::Found(t),
                            None => State::GaveUp,
                        };
                    }
                    Collect::None => {}
                }
            }
            _ => match self.collect {
                // Keys longer than `transaction` cannot match; stop copying.
                Collect::Key if self.buf.len() <= KEY.len() => self.buf.push(b),
                Collect::Value => self.buf.push(b),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap_all(body: &[u8]) -> Option<Bytes> {
        let mut t = RestTransactionTap::new();
        t.feed(body);
        t.transaction().cloned()
    }

    #[test]
    fn begin_transaction_object() {
        let body = br#"{"transaction": "AAEC/w=="}"#;
        assert_eq!(tap_all(body).unwrap().as_ref(), &[0, 1, 2, 255]);
        for cut in 0..=body.len() {
            for cut2 in cut..=body.len() {
                let mut t = RestTransactionTap::new();
                t.feed(&body[..cut]);
                t.feed(&body[cut..cut2]);
                t.feed(&body[cut2..]);
                assert_eq!(t.transaction().unwrap().as_ref(), &[0, 1, 2, 255]);
            }
        }
    }

    #[test]
    fn first_array_element() {
        let body = br#"[{
          "readTime": "2024-01-01T00:00:00Z",
          "nested": {"transaction": "bm90IHRoaXM="},
          "note": "\"transaction\": \"bm9wZQ==\"",
          "transaction": "dHg\/MQ=="
        }, {"transaction": "c2Vjb25k"}]"#;
        assert_eq!(tap_all(body).unwrap().as_ref(), b"tx?1");
        // Byte by byte.
        let mut t = RestTransactionTap::new();
        for b in body {
            t.feed(std::slice::from_ref(b));
        }
        assert_eq!(t.transaction().unwrap().as_ref(), b"tx?1");
    }

    #[test]
    fn nothing_to_find() {
        for body in [
            &br#"[{"readTime": "x"}, {"transaction": "c2Vjb25k"}]"#[..],
            br#"{"readTime": "x"}{"transaction": "c2Vjb25k"}"#,
            br#"[]"#,
            br#"[1, {"transaction": "c2Vjb25k"}]"#,
            br#"[[{"transaction": "c2Vjb25k"}]]"#,
            br#""transaction""#,
            br#"{"transaction": 5}"#,
            br#"{"transaction": ""}"#,
            br#"{"transaction": "!!"}"#,
            br#"{"a": "transaction", "b": "c2Vjb25k"}"#,
            br#"{"error": {"code": 403, "transaction": "c2Vjb25k"}}"#,
        ] {
            let mut t = RestTransactionTap::new();
            t.feed(body);
            assert_eq!(t.transaction(), None, "{}", String::from_utf8_lossy(body));
        }
        let mut t = RestTransactionTap::new();
        t.feed(br#"{"transaction": 5}"#);
        assert!(!t.is_done() || t.transaction().is_none());
    }

    #[test]
    fn bounded() {
        let mut body = b"{\"pad\": \"".to_vec();
        body.extend(std::iter::repeat_n(b'x', TAP_LIMIT));
        body.extend_from_slice(br#"", "transaction": "c2Vjb25k"}"#);
        let mut t = RestTransactionTap::new();
        t.feed(&body);
        assert!(t.is_done());
        assert_eq!(t.transaction(), None);
    }
}
