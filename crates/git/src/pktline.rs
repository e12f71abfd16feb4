//! pkt-line framing (`gitprotocol-common(5)`): a four-hex-digit length that
//! counts itself, then the payload. Pure: no I/O.

/// Largest pkt-line, length prefix included.
pub const MAX_PKT_LEN: usize = 65520;
/// Largest payload of one pkt-line.
pub const MAX_PKT_DATA: usize = MAX_PKT_LEN - 4;

/// One parsed pkt-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkt<'a> {
    /// `0000`: end of a section.
    Flush,
    /// `0001`: protocol v2 section delimiter.
    Delim,
    /// `0002`: protocol v2 end of a stateless response.
    ResponseEnd,
    /// A data line (possibly empty for `0004`).
    Data(&'a [u8]),
}

/// The result of trying to read one pkt-line from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PktParse<'a> {
    /// More bytes are needed.
    Incomplete,
    /// A pkt-line and how many bytes of the buffer it used.
    Complete {
        /// The pkt-line.
        pkt: Pkt<'a>,
        /// Bytes consumed from the front of the buffer.
        consumed: usize,
    },
}

/// Why bytes are not a pkt-line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    /// The length prefix is not four hex digits.
    #[error("invalid pkt-line length prefix `{0}`")]
    BadLength(String),
    /// The length prefix is `0003` (reserved) or above the maximum.
    #[error("invalid pkt-line length {0}")]
    OutOfRange(usize),
}

fn hex_val(b: u8) -> Option<usize> {
    match b {
        b'0'..=b'9' => Some(usize::from(b - b'0')),
        b'a'..=b'f' => Some(usize::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(usize::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Reads one pkt-line from the front of `buf`.
pub fn parse_pkt(buf: &[u8]) -> Result<PktParse<'_>, PktError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(PktParse::Incomplete);
    };
    let mut len = 0usize;
    for &b in prefix {
        let Some(v) = hex_val(b) else {
            return Err(PktError::BadLength(
                String::from_utf8_lossy(prefix).escape_debug().to_string(),
            ));
        };
        len = len * 16 + v;
    }
    let pkt = match len {
        0 => Pkt::Flush,
        1 => Pkt::Delim,
        2 => Pkt::ResponseEnd,
        3 => return Err(PktError::OutOfRange(3)),
        n if n > MAX_PKT_LEN => return Err(PktError::OutOfRange(n)),
        n => match buf.get(4..n) {
            Some(data) => Pkt::Data(data),
            None => return Ok(PktParse::Incomplete),
        },
    };
    let consumed = if len < 4 { 4 } else { len };
    Ok(PktParse::Complete { pkt, consumed })
}

/// Frames `data` as one pkt-line. `data` must be at most [`MAX_PKT_DATA`]
/// bytes; longer input is split over several pkt-lines.
pub fn pkt_line(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    write_pkt_line(&mut out, data);
    out
}

/// Appends `data` to `out` framed as pkt-lines (several if longer than
/// [`MAX_PKT_DATA`]).
pub fn write_pkt_line(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        out.extend_from_slice(b"0004");
        return;
    }
    for chunk in data.chunks(MAX_PKT_DATA) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 4).as_bytes());
        out.extend_from_slice(chunk);
    }
}

/// The flush-pkt, `0000`.
pub fn flush() -> &'static [u8] {
    b"0000"
}

/// Side-band channels used by upload-pack and receive-pack responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// Band 1: the payload.
    Data = 1,
    /// Band 2: progress text shown as `remote: ...`.
    Progress = 2,
    /// Band 3: a fatal error message.
    Error = 3,
}

/// Appends `data` to `out` as side-band pkt-lines on `band`, in chunks no
/// larger than `max_pkt` bytes (1000 for `side-band`, 65520 for
/// `side-band-64k`).
pub fn write_sideband(out: &mut Vec<u8>, band: Band, data: &[u8], max_pkt: usize) {
    let max_payload = max_pkt.clamp(6, MAX_PKT_LEN) - 5;
    for chunk in data.chunks(max_payload) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
        out.push(band as u8);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_special_and_data_lines() {
        assert_eq!(parse_pkt(b"").unwrap(), PktParse::Incomplete);
        assert_eq!(parse_pkt(b"00").unwrap(), PktParse::Incomplete);
        assert_eq!(
            parse_pkt(b"0000rest").unwrap(),
            PktParse::Complete {
                pkt: Pkt::Flush,
                consumed: 4
            }
        );
        assert_eq!(
            parse_pkt(b"0001").unwrap(),
            PktParse::Complete {
                pkt: Pkt::Delim,
                consumed: 4
            }
        );
        assert_eq!(
            parse_pkt(b"0002").unwrap(),
            PktParse::Complete {
                pkt: Pkt::ResponseEnd,
                consumed: 4
            }
        );
        assert_eq!(
            parse_pkt(b"0004").unwrap(),
            PktParse::Complete {
                pkt: Pkt::Data(b""),
                consumed: 4
            }
        );
        assert_eq!(
            parse_pkt(b"0009hello0000").unwrap(),
            PktParse::Complete {
                pkt: Pkt::Data(b"hello"),
                consumed: 9
            }
        );
        assert_eq!(parse_pkt(b"0009hell").unwrap(), PktParse::Incomplete);
        assert_eq!(
            parse_pkt(b"000AabcdefXX").unwrap(),
            PktParse::Complete {
                pkt: Pkt::Data(b"abcdef"),
                consumed: 10
            }
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(parse_pkt(b"0003"), Err(PktError::OutOfRange(3)));
        assert_eq!(parse_pkt(b"fff1"), Err(PktError::OutOfRange(0xfff1)));
        assert!(matches!(parse_pkt(b"00g0"), Err(PktError::BadLength(_))));
        assert!(matches!(parse_pkt(b"+001"), Err(PktError::BadLength(_))));
    }

    #[test]
    fn writes_round_trip() {
        let line = pkt_line(b"hello\n");
        assert_eq!(line, b"000ahello\n");
        assert_eq!(pkt_line(b""), b"0004");
        let big = vec![b'x'; MAX_PKT_DATA + 10];
        let framed = pkt_line(&big);
        let PktParse::Complete {
            pkt: Pkt::Data(d),
            consumed,
        } = parse_pkt(&framed).unwrap()
        else {
            panic!()
        };
        assert_eq!(d.len(), MAX_PKT_DATA);
        let PktParse::Complete {
            pkt: Pkt::Data(d2), ..
        } = parse_pkt(&framed[consumed..]).unwrap()
        else {
            panic!()
        };
        assert_eq!(d2.len(), 10);
        let mut sb = Vec::new();
        write_sideband(&mut sb, Band::Progress, b"hi\n", 1000);
        assert_eq!(sb, b"0008\x02hi\n");
    }
}
