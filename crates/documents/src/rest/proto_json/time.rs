//! RFC 3339 timestamps as proto3 JSON spells `google.protobuf.Timestamp`.
//!
//! Reading takes what Google's JSON front end takes: `YYYY-MM-DDTHH:MM:SS`,
//! an optional fraction of one to nine digits, then `Z` or an offset
//! `+HH:MM`/`-HH:MM`; years 0001 to 9999. Anything looser (a lowercase `t`
//! or `z`, a missing offset, a leap second, spaces) is refused, never
//! guessed at. Writing gives UTC with 0, 3, 6 or 9 fraction digits, as
//! Google renders them.

use prost_types::Timestamp;

/// Seconds from 0001-01-01T00:00:00Z to the Unix epoch.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds from the Unix epoch to 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits at `*i`, advancing it.
fn digits(b: &[u8], i: &mut usize, n: usize) -> Option<i64> {
    let s = b.get(*i..*i + n)?;
    let mut v = 0i64;
    for c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    *i += n;
    Some(v)
}

fn expect(b: &[u8], i: &mut usize, c: u8) -> Option<()> {
    (b.get(*i) == Some(&c)).then(|| *i += 1)
}

/// Parses an RFC 3339 timestamp; `None` for anything Google would refuse.
pub(crate) fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let mut i = 0;
    let year = digits(b, &mut i, 4)?;
    expect(b, &mut i, b'-')?;
    let month = digits(b, &mut i, 2)?;
    expect(b, &mut i, b'-')?;
    let day = digits(b, &mut i, 2)?;
    expect(b, &mut i, b'T')?;
    let hour = digits(b, &mut i, 2)?;
    expect(b, &mut i, b':')?;
    let minute = digits(b, &mut i, 2)?;
    expect(b, &mut i, b':')?;
    let second = digits(b, &mut i, 2)?;
    if year < 1
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        let mut j = start;
        nanos = digits(b, &mut j, n)? * 10i64.pow(u32::try_from(9 - n).ok()?);
    }
    let offset = match b.get(i)? {
        b'Z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let negative = *sign == b'-';
            i += 1;
            let oh = digits(b, &mut i, 2)?;
            expect(b, &mut i, b':')?;
            let om = digits(b, &mut i, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if negative { -o } else { o }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        return None;
    }
    Some(Timestamp {
        seconds,
        nanos: i32::try_from(nanos).ok()?,
    })
}

/// Renders a timestamp in UTC with 0, 3, 6 or 9 fraction digits. A
/// timestamp outside what RFC 3339 can spell (a year outside 1 to 9999,
/// nanoseconds out of range) is clamped into range rather than failing:
/// only a server produces these, and a reply must still be JSON.
pub(crate) fn format_timestamp(t: &Timestamp) -> String {
    let seconds = t.seconds.clamp(MIN_SECONDS, MAX_SECONDS);
    let nanos = t.nanos.clamp(0, 999_999_999);
    let (days, rem) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let frac = fraction(nanos.unsigned_abs());
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}Z")
}

/// `.123`, `.123456` or `.123456789`: the fewest of 3, 6 or 9 digits that
/// hold `nanos` exactly, or nothing for zero.
fn fraction(nanos: u32) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos.is_multiple_of(1_000_000) {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1000) {
        format!(".{:06}", nanos / 1000)
    } else {
        format!(".{nanos:09}")
    }
}

/// Renders a `google.protobuf.Duration` as proto3 JSON does: seconds with
/// 0, 3, 6 or 9 fraction digits and an `s`.
pub(crate) fn format_duration(d: &prost_types::Duration) -> String {
    let negative = d.seconds < 0 || d.nanos < 0;
    let secs = d.seconds.unsigned_abs();
    let nanos = d.nanos.unsigned_abs().min(999_999_999);
    let frac = fraction(nanos);
    format!("{}{secs}{frac}s", if negative { "-" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn parses_what_google_accepts() {
        let cases = [
            ("1970-01-01T00:00:00Z", ts(0, 0)),
            ("1970-01-01T00:00:00.5Z", ts(0, 500_000_000)),
            ("1970-01-01T00:00:00.000000001Z", ts(0, 1)),
            (
                "2024-01-01T10:00:00.123456789+02:00",
                ts(1_704_096_000, 123_456_789),
            ),
            ("2024-02-29T00:00:00-01:30", ts(1_709_170_200, 0)),
            ("0001-01-01T00:00:00Z", ts(MIN_SECONDS, 0)),
            (
                "9999-12-31T23:59:59.999999999Z",
                ts(MAX_SECONDS, 999_999_999),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
    }

    #[test]
    fn refuses_the_rest() {
        for s in [
            "",
            "1970-01-01",
            "1970-01-01t00:00:00Z",
            "1970-01-01T00:00:00z",
            "1970-01-01T00:00:00",
            "1970-01-01 00:00:00Z",
            "1970-01-01T00:00:60Z",
            "2023-02-29T00:00:00Z",
            "1970-13-01T00:00:00Z",
            "1970-01-01T00:00:00.Z",
            "1970-01-01T00:00:00.1234567890Z",
            "1970-01-01T00:00:00+0100",
            "1970-01-01T00:00:00+24:00",
            "0000-12-31T00:00:00Z",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "1970-01-01T00:00:00Z ",
            "+970-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    #[test]
    fn renders_as_google_does() {
        assert_eq!(format_timestamp(&ts(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_timestamp(&ts(0, 1_000_000)),
            "1970-01-01T00:00:00.001Z"
        );
        assert_eq!(
            format_timestamp(&ts(0, 700_036_000)),
            "1970-01-01T00:00:00.700036Z"
        );
        assert_eq!(
            format_timestamp(&ts(-1, 1)),
            "1969-12-31T23:59:59.000000001Z"
        );
        assert_eq!(
            format_timestamp(&ts(MAX_SECONDS, 0)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            format_duration(&prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }),
            "1.500s"
        );
        assert_eq!(
            format_duration(&prost_types::Duration {
                seconds: 0,
                nanos: 0
            }),
            "0s"
        );
    }

    #[test]
    fn round_trips() {
        for seconds in [
            MIN_SECONDS,
            -86_401,
            -1,
            0,
            1,
            951_782_400,
            1_709_170_200,
            MAX_SECONDS,
        ] {
            for nanos in [0, 1, 1000, 1_000_000, 999_999_999] {
                let t = ts(seconds, nanos);
                assert_eq!(parse_timestamp(&format_timestamp(&t)), Some(t));
            }
        }
    }
}
