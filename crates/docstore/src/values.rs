//! The pieces of Firestore's order that are more than a comparison of two
//! fields: numbers (integers and doubles on one exact scale) and the
//! segments of names (numeric ids `__id<n>__` before string ids). Both
//! [`crate::order`] and [`crate::encoding`] are written over these, so the
//! comparison and the byte encoding cannot disagree on them.

use std::cmp::Ordering;

pub use googleapis_tonic_google_firestore_v1::google::r#type::LatLng;

/// Smallest binary exponent a finite non-zero number can have (the least
/// subnormal double, 2^-1074).
pub(crate) const MIN_EXP: i16 = -1074;
/// Largest binary exponent a finite number can have (doubles reach
/// 2^1023 times their mantissa; integers only 2^63).
pub(crate) const MAX_EXP: i16 = 1023;

/// A number's place on Firestore's one scale for integers and doubles,
/// exactly: a finite non-zero number is `±2^exp × 1.frac` with `frac` the
/// bits after the leading one, left-aligned. Every `i64` (63 bits after
/// its leading one at most) and every finite `f64` (52) fits without
/// rounding, so `9007199254740993` and the double `9007199254740992.0`
/// differ here although `as f64` would make them equal.
///
/// `-0.0`, `0.0` and `0` are all [`NumKey::Zero`]; every NaN is
/// [`NumKey::NaN`], which Firestore orders before all numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NumKey {
    /// Not a number.
    NaN,
    /// Negative infinity.
    NegInf,
    /// A finite negative number, by its magnitude.
    Neg {
        /// The binary exponent of the magnitude.
        exp: i16,
        /// The magnitude's bits after its leading one, left-aligned.
        frac: u64,
    },
    /// Zero of any sign and type.
    Zero,
    /// A finite positive number.
    Pos {
        /// The binary exponent.
        exp: i16,
        /// The bits after the leading one, left-aligned.
        frac: u64,
    },
    /// Positive infinity.
    PosInf,
}

impl NumKey {
    /// The key of an integer.
    pub(crate) fn of_i64(n: i64) -> Self {
        let (exp, frac) = match magnitude(n.unsigned_abs()) {
            Some(m) => m,
            None => return Self::Zero,
        };
        if n < 0 {
            Self::Neg { exp, frac }
        } else {
            Self::Pos { exp, frac }
        }
    }

    /// The key of a double.
    pub(crate) fn of_f64(x: f64) -> Self {
        if x.is_nan() {
            return Self::NaN;
        }
        if x.is_infinite() {
            return if x < 0.0 { Self::NegInf } else { Self::PosInf };
        }
        if x == 0.0 {
            return Self::Zero;
        }
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i16;
        let mantissa = bits & ((1u64 << 52) - 1);
        let (exp, frac) = if biased == 0 {
            // Subnormal: mantissa × 2^-1074, its leading one somewhere in
            // the 52 bits. Non-zero, so `magnitude` answers.
            match magnitude(mantissa) {
                Some((p, frac)) => (p + MIN_EXP, frac),
                None => return Self::Zero,
            }
        } else {
            (biased - 1023, mantissa << 12)
        };
        if x < 0.0 {
            Self::Neg { exp, frac }
        } else {
            Self::Pos { exp, frac }
        }
    }

    /// The rank of the key's class, the first thing compared.
    fn class(self) -> u8 {
        match self {
            Self::NaN => 0,
            Self::NegInf => 1,
            Self::Neg { .. } => 2,
            Self::Zero => 3,
            Self::Pos { .. } => 4,
            Self::PosInf => 5,
        }
    }

    /// The integer with exactly this value, if there is one.
    pub(crate) fn to_i64(self) -> Option<i64> {
        let (negative, exp, frac) = match self {
            Self::Zero => return Some(0),
            Self::Neg { exp, frac } => (true, exp, frac),
            Self::Pos { exp, frac } => (false, exp, frac),
            _ => return None,
        };
        if !(0..=63).contains(&exp) {
            return None;
        }
        let shift = u32::try_from(exp).ok()?;
        // The bits below the integer part must all be zero.
        if shift == 0 && frac != 0 || shift > 0 && frac << shift != 0 {
            return None;
        }
        let high = if shift == 0 { 0 } else { frac >> (64 - shift) };
        let mag = (1u64 << shift) | high;
        let n = if negative {
            0i64.checked_sub_unsigned(mag)?
        } else {
            i64::try_from(mag).ok()?
        };
        (Self::of_i64(n) == self).then_some(n)
    }

    /// The double with exactly this value, if there is one. Zero is `0.0`.
    pub(crate) fn to_f64(self) -> Option<f64> {
        let (negative, exp, frac) = match self {
            Self::NaN => return Some(f64::NAN),
            Self::NegInf => return Some(f64::NEG_INFINITY),
            Self::PosInf => return Some(f64::INFINITY),
            Self::Zero => return Some(0.0),
            Self::Neg { exp, frac } => (true, exp, frac),
            Self::Pos { exp, frac } => (false, exp, frac),
        };
        let sign = if negative { 1u64 << 63 } else { 0 };
        let bits = if exp >= -1022 {
            if exp > MAX_EXP || frac & 0xfff != 0 {
                return None;
            }
            let biased = u64::try_from(exp + 1023).ok()?;
            sign | biased << 52 | frac >> 12
        } else {
            if exp < MIN_EXP {
                return None;
            }
            // Subnormal: the leading one sits at bit `exp + 1074` of the
            // mantissa, the fraction's top bits below it.
            let p = u32::try_from(exp - MIN_EXP).ok()?;
            let below = if p == 0 { 0 } else { frac >> (64 - p) };
            sign | 1u64 << p | below
        };
        let x = f64::from_bits(bits);
        // Whatever was cut off above shows up as a different key.
        (Self::of_f64(x) == self).then_some(x)
    }
}

/// The exponent and left-aligned fraction of a non-zero magnitude.
fn magnitude(m: u64) -> Option<(i16, u64)> {
    if m == 0 {
        return None;
    }
    let p = 63 - m.leading_zeros();
    let rest = m & !(1u64 << p);
    let frac = if p == 0 { 0 } else { rest << (64 - p) };
    // p ≤ 63, so this cannot fail.
    Some((i16::try_from(p).unwrap_or(63), frac))
}

impl Ord for NumKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (*self, *other) {
            (Self::Pos { exp: a, frac: x }, Self::Pos { exp: b, frac: y }) => (a, x).cmp(&(b, y)),
            // A larger magnitude is a smaller negative number.
            (Self::Neg { exp: a, frac: x }, Self::Neg { exp: b, frac: y }) => (b, y).cmp(&(a, x)),
            (a, b) => a.class().cmp(&b.class()),
        }
    }
}

impl PartialOrd for NumKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The number of a numeric id `__id<n>__`, as Firestore reads it: `n` is a
/// non-zero 64-bit integer written without a `+`, leading zeros or `-0`
/// (the emulator refuses `__id0__`, `__id01__`, `__id-0__` as reserved and
/// `__id99999999999999999999__` as "not a 64 bit integer"). Such ids sort
/// before every other id, by their number.
pub fn numeric_id(segment: &str) -> Option<i64> {
    let digits = segment.strip_prefix("__id")?.strip_suffix("__")?;
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    let canonical = unsigned
        .bytes()
        .next()
        .is_some_and(|b| (b'1'..=b'9').contains(&b))
        && unsigned.bytes().all(|b| b.is_ascii_digit());
    if !canonical {
        return None;
    }
    digits.parse::<i64>().ok()
}

/// Compares two name segments (collection or document ids) as Firestore
/// orders names: numeric ids first, by number; then the rest by UTF-8
/// bytes.
pub fn compare_segments(a: &str, b: &str) -> Ordering {
    match (numeric_id(a), numeric_id(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.as_bytes().cmp(b.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_doubles_meet_exactly() {
        assert_eq!(NumKey::of_i64(1), NumKey::of_f64(1.0));
        assert_eq!(NumKey::of_i64(0), NumKey::of_f64(-0.0));
        assert_eq!(NumKey::of_i64(-8), NumKey::of_f64(-8.0));
        // 2^53 + 1 is not a double: the nearest double is below it.
        let big = (1i64 << 53) + 1;
        assert!(NumKey::of_i64(big) > NumKey::of_f64(big as f64));
        // i64::MAX rounds up to 2^63 as a double.
        assert!(NumKey::of_i64(i64::MAX) < NumKey::of_f64(i64::MAX as f64));
        assert_eq!(NumKey::of_i64(i64::MIN), NumKey::of_f64(i64::MIN as f64));
        assert!(NumKey::of_f64(f64::NAN) < NumKey::of_f64(f64::NEG_INFINITY));
        assert!(NumKey::of_f64(-1.5) < NumKey::of_i64(-1));
        assert!(NumKey::of_f64(5e-324) > NumKey::Zero);
        assert!(NumKey::of_f64(-5e-324) < NumKey::Zero);
        assert!(NumKey::of_f64(f64::MAX) < NumKey::PosInf);
    }

    #[test]
    fn keys_convert_back_exactly() {
        for n in [
            0,
            1,
            -1,
            7,
            i64::MAX,
            i64::MIN,
            1 << 53,
            (1 << 53) + 1,
            -12345,
        ] {
            assert_eq!(NumKey::of_i64(n).to_i64(), Some(n));
        }
        for x in [
            1.0,
            -2.5,
            5e-324,
            -5e-324,
            2.2250738585072014e-308,
            2.225073858507201e-308,
            f64::MAX,
            f64::MIN,
            0.1,
            1e300,
        ] {
            assert_eq!(NumKey::of_f64(x).to_f64(), Some(x), "{x}");
        }
        assert_eq!(NumKey::of_f64(0.5).to_i64(), None);
        assert_eq!(NumKey::of_f64(1e19).to_i64(), None);
        assert_eq!(NumKey::of_i64(i64::MAX).to_f64(), None);
        assert_eq!(NumKey::of_f64(-4.0).to_i64(), Some(-4));
    }

    #[test]
    fn numeric_ids_are_canonical_nonzero_i64s() {
        // Checked against Google's Firestore emulator: these ids were
        // accepted and sorted by number before string ids.
        assert_eq!(numeric_id("__id5__"), Some(5));
        assert_eq!(numeric_id("__id-3__"), Some(-3));
        assert_eq!(numeric_id("__id-9223372036854775808__"), Some(i64::MIN));
        // ... and these were refused as reserved or not a 64-bit integer.
        for id in [
            "__id0__",
            "__id01__",
            "__id-0__",
            "__id__",
            "__id1a__",
            "__idz__",
            "__id+1__",
            "__id99999999999999999999__",
        ] {
            assert_eq!(numeric_id(id), None, "{id}");
        }
        // Emulator: ['__id-3__', '__id5__', '__id10__', 'B', '_', 'a'].
        let mut ids = vec!["a", "_", "B", "__id10__", "__id5__", "__id-3__"];
        ids.sort_by(|a, b| compare_segments(a, b));
        assert_eq!(ids, ["__id-3__", "__id5__", "__id10__", "B", "_", "a"]);
    }
}
