//! Kubernetes-style resource quantities (`100m`, `0.5`, `64Mi`, `1G`, `1e3`), held exactly.
//!
//! A [`Quantity`] is an exact, non-negative count of nano-units stored in a `u128`, so `0.1`
//! is exactly 100 million nano-units and never a binary float. Parsing follows
//! Kubernetes' `resource.Quantity` grammar:
//!
//! ```text
//! quantity  ::= ["+"] number [suffix]
//! number    ::= digits | digits "." [digits] | "." digits
//! suffix    ::= binarySI | decimalSI | exponent
//! binarySI  ::= Ki | Mi | Gi | Ti | Pi | Ei                (powers of 1024)
//! decimalSI ::= n | u | m | k | M | G | T | P | E          (powers of 1000)
//! exponent  ::= ("e" | "E") ["+" | "-"] digits              (powers of 10)
//! ```
//!
//! `1E` is exa (10^18) and `2E6` is 2×10^6, exactly as in Kubernetes: a bare `E` is the
//! decimal suffix, `E`/`e` followed by an integer is an exponent.
//!
//! Where weft deliberately differs from Kubernetes:
//! - values finer than `1n` are rejected instead of being silently rounded up;
//! - negative values (including `-0`) are rejected: every weft quantity is an amount of a
//!   resource;
//! - a suffix without a number (`Mi`, `.`) is rejected instead of meaning zero;
//! - values are limited to `u128` nano-units (about 3.4×10^29 units, ~2.8×10^11 Ei) and 38
//!   significant digits, where Kubernetes uses arbitrary precision;
//! - in the canonical form, a binary-family value that is not a whole multiple of `1Ki` is
//!   printed in decimal SI (`2k`, not Kubernetes' `2000`), so that printing is a fixed point:
//!   `display(parse(display(q))) == display(q)`.
//!
//! A leading `+` is accepted (as in Kubernetes) and dropped from the canonical form.
//! `QUANTITY_PATTERN` accepts exactly the syntax the parser accepts.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nano-units per unit: the resolution of a [`Quantity`].
const NANO: u128 = 1_000_000_000;

/// Binary suffixes by power of 1024 (index 0 is "no suffix").
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// Decimal SI suffixes for exponents -9, -6, …, 18 (index = exponent / 3 + 3).
const DECIMAL_SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];

/// JSON-schema pattern for the string form: exactly the parser's syntax (see the grammar in
/// the module docs). Range and precision limits cannot be expressed as a regex.
pub const QUANTITY_PATTERN: &str =
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?$";

/// How a quantity was written, which decides how it is printed back.
///
/// Keeping the family of the input means `64Mi` stays `64Mi` and `1e3` stays `1e3` after a
/// round trip through the API, which is what users (and Kubernetes) expect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// No suffix or a decimal SI suffix (`n u m k M G T P E`), e.g. `100m`, `1G`, `2`.
    #[default]
    DecimalSi,
    /// A binary SI suffix (`Ki Mi Gi Ti Pi Ei`), e.g. `64Mi`.
    BinarySi,
    /// A decimal exponent, e.g. `1e3`, `5E-3`.
    DecimalExponent,
}

/// An exact, non-negative resource amount such as `100m` cpu or `64Mi` memory.
///
/// Equality, ordering and hashing use the value only, so `1000m == 1` and `1Ki == 1024`;
/// the [`QuantityFormat`] only affects how the value is printed.
///
/// ```
/// use weft_api::quantity::Quantity;
///
/// let cpu: Quantity = "100m".parse().unwrap();
/// assert_eq!(cpu.as_milli_ceil(), 100);
/// assert_eq!("0.1".parse::<Quantity>().unwrap(), cpu);
///
/// let mem: Quantity = "1.5Gi".parse().unwrap();
/// assert_eq!(mem.to_string(), "1536Mi");
/// assert_eq!(mem.as_units_ceil(), 1536 * 1024 * 1024);
///
/// assert!("-1".parse::<Quantity>().is_err());
/// ```
#[derive(Clone, Copy, Default)]
pub struct Quantity {
    nano: u128,
    format: QuantityFormat,
}

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Quantity = Quantity { nano: 0, format: QuantityFormat::DecimalSi };

    /// Parses a quantity string; same as [`str::parse`].
    ///
    /// ```
    /// use weft_api::quantity::Quantity;
    /// assert_eq!(Quantity::parse("2E6").unwrap(), Quantity::from_units(2_000_000));
    /// assert_eq!(Quantity::parse("1E").unwrap().to_string(), "1E");
    /// let err = Quantity::parse("12Xi").unwrap_err().to_string();
    /// assert!(err.starts_with(r#"invalid quantity "12Xi": unknown suffix "Xi""#));
    /// ```
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let fail = |kind| QuantityError { input: input.to_owned(), kind };
        if input.is_empty() {
            return Err(fail(QuantityErrorKind::Empty));
        }
        if input.chars().any(char::is_whitespace) {
            return Err(fail(QuantityErrorKind::Whitespace));
        }
        if let Some(rest) = input.strip_prefix('-') {
            // Say "negative" only when the rest is well-formed; `-abc` is just garbage.
            return Err(fail(match parse_unsigned(rest) {
                Ok(_)
                | Err(
                    QuantityErrorKind::TooPrecise
                    | QuantityErrorKind::TooLarge
                    | QuantityErrorKind::TooManyDigits,
                ) => QuantityErrorKind::Negative,
                Err(kind) => kind,
            }));
        }
        parse_unsigned(input.strip_prefix('+').unwrap_or(input)).map_err(fail)
    }

    /// A decimal-family quantity of exactly `nano` nano-units.
    pub const fn from_nano(nano: u128) -> Self {
        Quantity { nano, format: QuantityFormat::DecimalSi }
    }

    /// A decimal-family quantity of `milli` thousandths, e.g. cpu millicores.
    ///
    /// ```
    /// use weft_api::quantity::Quantity;
    /// assert_eq!(Quantity::from_milli(1500).to_string(), "1500m");
    /// assert_eq!(Quantity::from_milli(2000).to_string(), "2");
    /// ```
    pub const fn from_milli(milli: u64) -> Self {
        Self::from_nano(milli as u128 * 1_000_000)
    }

    /// A decimal-family quantity of whole units (cores, bytes, …), printed with decimal
    /// suffixes: `from_units(1_000_000)` is `1M`.
    pub const fn from_units(units: u64) -> Self {
        Self::from_nano(units as u128 * NANO)
    }

    /// A binary-family quantity of `bytes`, printed with binary suffixes where exact.
    ///
    /// ```
    /// use weft_api::quantity::Quantity;
    /// assert_eq!(Quantity::from_bytes_binary(64 << 20).to_string(), "64Mi");
    /// assert_eq!(Quantity::from_bytes_binary(64 << 20), "67108864".parse().unwrap());
    /// ```
    pub const fn from_bytes_binary(bytes: u64) -> Self {
        Quantity { nano: bytes as u128 * NANO, format: QuantityFormat::BinarySi }
    }

    /// The exact value in nano-units (`1` is `1_000_000_000`).
    pub const fn as_nano(&self) -> u128 {
        self.nano
    }

    /// The value in thousandths, rounded up (so `1n` cpu still reserves `1m`), saturating
    /// at `u64::MAX`.
    pub const fn as_milli_ceil(&self) -> u64 {
        saturate(self.nano.div_ceil(1_000_000))
    }

    /// The value in whole units (e.g. bytes), rounded up, saturating at `u64::MAX`.
    pub const fn as_units_ceil(&self) -> u64 {
        saturate(self.nano.div_ceil(NANO))
    }

    /// Whether the value is zero.
    pub const fn is_zero(&self) -> bool {
        self.nano == 0
    }

    /// The notation this quantity is printed in.
    pub const fn format(&self) -> QuantityFormat {
        self.format
    }

    /// `self + other`, or `None` on overflow; keeps `self`'s format.
    pub const fn checked_add(self, other: Quantity) -> Option<Quantity> {
        match self.nano.checked_add(other.nano) {
            Some(nano) => Some(Quantity { nano, format: self.format }),
            None => None,
        }
    }

    /// `self - other`, clamped at zero; keeps `self`'s format.
    pub const fn saturating_sub(self, other: Quantity) -> Quantity {
        Quantity { nano: self.nano.saturating_sub(other.nano), format: self.format }
    }
}

const fn saturate(v: u128) -> u64 {
    if v > u64::MAX as u128 { u64::MAX } else { v as u64 }
}

/// Parses everything after an optional sign.
fn parse_unsigned(s: &str) -> Result<Quantity, QuantityErrorKind> {
    let (int_digits, rest) = split_digits(s);
    let (frac_digits, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => split_digits(after_dot),
        None => ("", rest),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(QuantityErrorKind::MissingNumber);
    }
    let (format, exp10, pow1024) = parse_suffix(suffix)?;
    let nano = exact_nano(int_digits, frac_digits, exp10, pow1024)?;
    Ok(Quantity { nano, format })
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Returns (format, power of ten, power of 1024) for a suffix.
fn parse_suffix(suffix: &str) -> Result<(QuantityFormat, i64, u32), QuantityErrorKind> {
    use QuantityFormat::*;
    let decimal = |e| Ok((DecimalSi, e, 0));
    let binary = |p| Ok((BinarySi, 0, p));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        _ => {
            let Some(exp) = suffix.strip_prefix(['e', 'E']) else {
                return Err(QuantityErrorKind::UnknownSuffix { suffix: suffix.to_owned() });
            };
            // `Ex`/`ek` read as a bad suffix; `e`, `e+`, `e1.5` as a bad exponent.
            if !(exp.is_empty()
                || exp.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-'))
            {
                return Err(QuantityErrorKind::UnknownSuffix { suffix: suffix.to_owned() });
            }
            let invalid = || QuantityErrorKind::InvalidExponent { exponent: suffix.to_owned() };
            let (negative, digits) = match exp.as_bytes().first() {
                Some(b'-') => (true, &exp[1..]),
                Some(b'+') => (false, &exp[1..]),
                _ => (false, exp),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            // Saturating is exact enough: any non-zero mantissa is out of range long before
            // i64::MAX, and zero stays zero whatever the exponent.
            let magnitude = digits
                .bytes()
                .fold(0i64, |acc, b| acc.saturating_mul(10).saturating_add(i64::from(b - b'0')));
            Ok((DecimalExponent, if negative { -magnitude } else { magnitude }, 0))
        }
    }
}

/// Computes `int.frac × 10^exp10 × 1024^pow1024` in nano-units, exactly or not at all.
fn exact_nano(
    int_digits: &str,
    frac_digits: &str,
    exp10: i64,
    pow1024: u32,
) -> Result<u128, QuantityErrorKind> {
    // Mantissa without trailing zeros, so the only way to divide it exactly by a power of
    // ten is through factors contributed by 1024^pow1024 (e.g. 0.5Ki = 5 × 2^10 / 10).
    let mut mantissa: u128 = 0;
    let mut pending_zeros: i64 = 0;
    for b in int_digits.bytes().chain(frac_digits.bytes()) {
        if b == b'0' {
            pending_zeros += 1;
            continue;
        }
        if mantissa != 0 {
            for _ in 0..pending_zeros {
                mantissa = mantissa.checked_mul(10).ok_or(QuantityErrorKind::TooManyDigits)?;
            }
        }
        pending_zeros = 0;
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or(QuantityErrorKind::TooManyDigits)?;
    }
    if mantissa == 0 {
        return Ok(0);
    }
    // value in nano = mantissa × 10^shift × 2^(10·pow1024)
    let frac_len = i64::try_from(frac_digits.len()).unwrap_or(i64::MAX);
    let shift = pending_zeros.saturating_sub(frac_len).saturating_add(exp10).saturating_add(9);
    let mut fives = shift;
    let mut twos = shift.saturating_add(10 * i64::from(pow1024));
    for (factor, exponent) in [(5u128, &mut fives), (2u128, &mut twos)] {
        while *exponent < 0 {
            if !mantissa.is_multiple_of(factor) {
                return Err(QuantityErrorKind::TooPrecise);
            }
            mantissa /= factor;
            *exponent += 1;
        }
    }
    let power = |base: u128, e: i64| {
        u32::try_from(e).ok().and_then(|e| base.checked_pow(e)).ok_or(QuantityErrorKind::TooLarge)
    };
    mantissa
        .checked_mul(power(5, fives)?)
        .and_then(|m| m.checked_mul(power(2, twos).ok()?))
        .ok_or(QuantityErrorKind::TooLarge)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// Kubernetes' canonical form: the input's notation with the largest suffix that keeps the
/// number an integer (`1.5Gi` → `1536Mi`, `0.1` → `100m`, `1000M` → `1G`).
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.canonical())
    }
}

impl Quantity {
    fn canonical(&self) -> String {
        if self.nano == 0 {
            return "0".to_owned();
        }
        // Binary notation is used only for whole multiples of 1Ki; anything else falls back
        // to decimal SI. Kubernetes also falls back for fractions and values below 1Ki, but
        // prints other whole byte counts as plain integers (2000 bytes as `2000`); those
        // re-parse as decimal and would then print as `2k`, so weft prints `2k` right away
        // to keep the canonical text a fixed point.
        if self.format == QuantityFormat::BinarySi && self.nano.is_multiple_of(1024 * NANO) {
            let mut amount = self.nano / NANO;
            let mut power = 0;
            while power + 1 < BINARY_SUFFIXES.len() && amount.is_multiple_of(1024) {
                amount /= 1024;
                power += 1;
            }
            return format!("{amount}{}", BINARY_SUFFIXES[power]);
        }
        let mut amount = self.nano;
        let mut exponent: i32 = -9;
        while amount.is_multiple_of(10) {
            amount /= 10;
            exponent += 1;
        }
        // Round the exponent down to a multiple of three; cannot overflow because
        // amount × 10^exponent is the value, which fits.
        let excess = exponent.rem_euclid(3);
        amount *= 10u128.pow(excess as u32);
        exponent -= excess;
        if self.format == QuantityFormat::DecimalExponent {
            return if exponent == 0 { amount.to_string() } else { format!("{amount}e{exponent}") };
        }
        if exponent > 18 {
            amount *= 10u128.pow((exponent - 18) as u32);
            exponent = 18;
        }
        format!("{amount}{}", DECIMAL_SUFFIXES[(exponent / 3 + 3) as usize])
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({self})")
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nano == other.nano
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nano.cmp(&other.nano)
    }
}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nano.hash(state);
    }
}

/// Why a quantity was rejected, with the offending input.
///
/// Displays as e.g. `invalid quantity "12Xi": unknown suffix "Xi" (use …)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {input:?}: {kind}")]
pub struct QuantityError {
    input: String,
    kind: QuantityErrorKind,
}

impl QuantityError {
    /// The rejected input (for numbers, their decimal text).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &QuantityErrorKind {
        &self.kind
    }
}

/// The reason inside a [`QuantityError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityErrorKind {
    /// The input was empty.
    #[error("empty; expected a quantity such as 100m, 0.5, 2 or 64Mi")]
    Empty,
    /// The input contained whitespace.
    #[error("must not contain whitespace")]
    Whitespace,
    /// The input had a leading `-`.
    #[error("must not be negative")]
    Negative,
    /// A number was a float NaN or infinity.
    #[error("must be a finite number")]
    NotFinite,
    /// There were no digits before the suffix.
    #[error("expected a number, e.g. 100m, 0.5, 2 or 64Mi")]
    MissingNumber,
    /// The text after the number is not a known suffix.
    #[error("unknown suffix {suffix:?}{}", suffix_hint(.suffix))]
    UnknownSuffix {
        /// The unrecognised suffix.
        suffix: String,
    },
    /// `e`/`E` followed by something other than an integer.
    #[error("invalid exponent {exponent:?}: expected an integer after e, e.g. 1e3 or 5e-3")]
    InvalidExponent {
        /// The exponent suffix as written, e.g. `e1.5`.
        exponent: String,
    },
    /// The value is not a whole number of nano-units.
    #[error("more precision than 1n (the smallest amount is 1n = 0.000000001)")]
    TooPrecise,
    /// The value does not fit in `u128` nano-units.
    #[error("too large")]
    TooLarge,
    /// More significant digits than can be held exactly.
    #[error("too many significant digits (at most 38)")]
    TooManyDigits,
}

/// A targeted hint for common mistakes, else the list of valid suffixes.
fn suffix_hint(suffix: &str) -> String {
    const ALL: &str =
        "use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3";
    if suffix == "K" {
        return r#": did you mean "k" (10^3) or "Ki" (2^10)?"#.to_owned();
    }
    if suffix.len() > 1 && suffix.ends_with(['B', 'b']) {
        return format!(": quantities have no byte unit; drop the B, e.g. 64Mi or 64M ({ALL})");
    }
    if let [first, b'i'] = suffix.as_bytes() {
        let upper = format!("{}i", first.to_ascii_uppercase() as char);
        if BINARY_SUFFIXES.contains(&upper.as_str()) {
            return format!(r#": did you mean "{upper}"? suffixes are case-sensitive"#);
        }
    }
    format!(" ({ALL})")
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl QuantityVisitor {
    fn number_error<E: de::Error>(text: String, kind: QuantityErrorKind) -> E {
        E::custom(QuantityError { input: text, kind })
    }
}

impl Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a quantity such as "100m" or "64Mi", or a non-negative number"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
        Quantity::parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
        Ok(Quantity::from_units(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
        match u64::try_from(v) {
            Ok(v) => Ok(Quantity::from_units(v)),
            Err(_) => Err(Self::number_error(v.to_string(), QuantityErrorKind::Negative)),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Quantity, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Quantity, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
        if !v.is_finite() {
            return Err(Self::number_error(v.to_string(), QuantityErrorKind::NotFinite));
        }
        if v == 0.0 {
            // Also covers -0.0, which is not a negative amount.
            return Ok(Quantity::ZERO);
        }
        // `Display` for f64 prints the shortest decimal that round-trips, never in
        // exponent notation, so YAML `0.1` becomes exactly 100m rather than
        // 0.1000000000000000055…
        self.visit_str(&v.to_string())
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Quantity").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An exact, non-negative resource amount. A string with an optional \
                suffix: decimal n (1e-9), u (1e-6), m (1e-3), k, M, G, T, P, E (powers of 1000); \
                binary Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024); or a decimal exponent such as \
                1e3. A plain number is also accepted. Precision is limited to 1n. \
                Examples: 100m (0.1 cpu), 0.5, 2, 64Mi, 1.5Gi, 1G, 1e3.",
            "anyOf": [
                { "type": "string", "pattern": QUANTITY_PATTERN },
                { "type": "number", "minimum": 0 }
            ],
            "examples": ["100m", "0.5", "2", "64Mi", "1.5Gi", "1G", "1e3"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<Quantity>() {
            Ok(v) => panic!("{s:?} should be rejected, got {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn hash(v: &Quantity) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    const GI: u128 = 1 << 30;

    #[test]
    fn parses_every_accepted_form() {
        let cases: &[(&str, u128, QuantityFormat)] = &[
            ("0", 0, QuantityFormat::DecimalSi),
            ("2", 2 * NANO, QuantityFormat::DecimalSi),
            ("007", 7 * NANO, QuantityFormat::DecimalSi),
            ("+3", 3 * NANO, QuantityFormat::DecimalSi),
            ("0.5", NANO / 2, QuantityFormat::DecimalSi),
            ("1.5", 3 * NANO / 2, QuantityFormat::DecimalSi),
            (".5", NANO / 2, QuantityFormat::DecimalSi),
            ("1.", NANO, QuantityFormat::DecimalSi),
            ("1.000000000000000", NANO, QuantityFormat::DecimalSi),
            ("0.000000001", 1, QuantityFormat::DecimalSi),
            ("0.0000000010000", 1, QuantityFormat::DecimalSi),
            ("1n", 1, QuantityFormat::DecimalSi),
            ("1u", 1_000, QuantityFormat::DecimalSi),
            ("100m", 100_000_000, QuantityFormat::DecimalSi),
            ("1.5m", 1_500_000, QuantityFormat::DecimalSi),
            ("500k", 500_000 * NANO, QuantityFormat::DecimalSi),
            ("1M", 1_000_000 * NANO, QuantityFormat::DecimalSi),
            ("1G", 1_000_000_000 * NANO, QuantityFormat::DecimalSi),
            ("1T", 10u128.pow(12) * NANO, QuantityFormat::DecimalSi),
            ("1P", 10u128.pow(15) * NANO, QuantityFormat::DecimalSi),
            ("1E", 10u128.pow(18) * NANO, QuantityFormat::DecimalSi),
            ("1Ki", 1024 * NANO, QuantityFormat::BinarySi),
            ("64Mi", 64 * (1 << 20) * NANO, QuantityFormat::BinarySi),
            ("1.5Gi", 3 * GI / 2 * NANO, QuantityFormat::BinarySi),
            ("0.5Gi", GI / 2 * NANO, QuantityFormat::BinarySi),
            ("1Ti", (1 << 40) * NANO, QuantityFormat::BinarySi),
            ("1Pi", (1 << 50) * NANO, QuantityFormat::BinarySi),
            ("1Ei", (1 << 60) * NANO, QuantityFormat::BinarySi),
            ("0.001Ki", 1_024_000_000, QuantityFormat::BinarySi),
            ("1e3", 1_000 * NANO, QuantityFormat::DecimalExponent),
            ("1E3", 1_000 * NANO, QuantityFormat::DecimalExponent),
            ("2E6", 2_000_000 * NANO, QuantityFormat::DecimalExponent),
            ("1e+3", 1_000 * NANO, QuantityFormat::DecimalExponent),
            ("5e-3", 5_000_000, QuantityFormat::DecimalExponent),
            ("1e-9", 1, QuantityFormat::DecimalExponent),
            ("1.5e1", 15 * NANO, QuantityFormat::DecimalExponent),
            ("1e0", NANO, QuantityFormat::DecimalExponent),
            ("0e99999999999999999999999", 0, QuantityFormat::DecimalExponent),
        ];
        for &(input, nano, format) in cases {
            let v = q(input);
            assert_eq!(v.as_nano(), nano, "{input}");
            assert_eq!(v.format(), format, "{input}");
        }
        // Zero is exact whatever its notation.
        assert!(q("0.000000000000000").is_zero());
        assert!(q("0Ki").is_zero());
        assert!(q("0e-30").is_zero());
    }

    #[test]
    fn largest_values() {
        let max = Quantity::from_nano(u128::MAX);
        assert_eq!(q(&max.to_string()), max);
        assert_eq!(max.as_units_ceil(), u64::MAX);
        assert_eq!(max.as_milli_ceil(), u64::MAX);
        assert_eq!(q("100000000000Ei").as_units_ceil(), u64::MAX);
        assert_eq!(q("340282366920938463463374607431768211455n"), max);
    }

    #[test]
    fn rejections_with_messages() {
        let cases: &[(&str, &str)] = &[
            ("", r#"invalid quantity "": empty; expected a quantity such as 100m, 0.5, 2 or 64Mi"#),
            (" 1", r#"invalid quantity " 1": must not contain whitespace"#),
            ("1 Mi", r#"invalid quantity "1 Mi": must not contain whitespace"#),
            ("1\n", r#"invalid quantity "1\n": must not contain whitespace"#),
            ("-1", r#"invalid quantity "-1": must not be negative"#),
            ("-100m", r#"invalid quantity "-100m": must not be negative"#),
            ("-0", r#"invalid quantity "-0": must not be negative"#),
            ("-1e99", r#"invalid quantity "-1e99": must not be negative"#),
            ("-1e-99", r#"invalid quantity "-1e-99": must not be negative"#),
            ("-", r#"invalid quantity "-": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            ("-abc", r#"invalid quantity "-abc": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            ("Mi", r#"invalid quantity "Mi": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            (".", r#"invalid quantity ".": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            ("+", r#"invalid quantity "+": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            ("++1", r#"invalid quantity "++1": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            ("abc", r#"invalid quantity "abc": expected a number, e.g. 100m, 0.5, 2 or 64Mi"#),
            (
                "12Xi",
                r#"invalid quantity "12Xi": unknown suffix "Xi" (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"#,
            ),
            (
                "1.2.3",
                r#"invalid quantity "1.2.3": unknown suffix ".3" (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"#,
            ),
            (
                "1µ",
                r#"invalid quantity "1µ": unknown suffix "µ" (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"#,
            ),
            (
                "1Ex",
                r#"invalid quantity "1Ex": unknown suffix "Ex" (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"#,
            ),
            (
                "1Mi1",
                r#"invalid quantity "1Mi1": unknown suffix "Mi1" (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"#,
            ),
            (
                "1K",
                r#"invalid quantity "1K": unknown suffix "K": did you mean "k" (10^3) or "Ki" (2^10)?"#,
            ),
            (
                "1gi",
                r#"invalid quantity "1gi": unknown suffix "gi": did you mean "Gi"? suffixes are case-sensitive"#,
            ),
            (
                "512MB",
                r#"invalid quantity "512MB": unknown suffix "MB": quantities have no byte unit; drop the B, e.g. 64Mi or 64M (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent like e3)"#,
            ),
            (
                "1e",
                r#"invalid quantity "1e": invalid exponent "e": expected an integer after e, e.g. 1e3 or 5e-3"#,
            ),
            (
                "1e+",
                r#"invalid quantity "1e+": invalid exponent "e+": expected an integer after e, e.g. 1e3 or 5e-3"#,
            ),
            (
                "1e1.5",
                r#"invalid quantity "1e1.5": invalid exponent "e1.5": expected an integer after e, e.g. 1e3 or 5e-3"#,
            ),
            (
                "1e3k",
                r#"invalid quantity "1e3k": invalid exponent "e3k": expected an integer after e, e.g. 1e3 or 5e-3"#,
            ),
            (
                "0.0000000001",
                r#"invalid quantity "0.0000000001": more precision than 1n (the smallest amount is 1n = 0.000000001)"#,
            ),
            (
                "1.5n",
                r#"invalid quantity "1.5n": more precision than 1n (the smallest amount is 1n = 0.000000001)"#,
            ),
            (
                "1e-10",
                r#"invalid quantity "1e-10": more precision than 1n (the smallest amount is 1n = 0.000000001)"#,
            ),
            (
                "1e-99999999999999999999",
                r#"invalid quantity "1e-99999999999999999999": more precision than 1n (the smallest amount is 1n = 0.000000001)"#,
            ),
            (
                "0.0000000001Ki",
                r#"invalid quantity "0.0000000001Ki": more precision than 1n (the smallest amount is 1n = 0.000000001)"#,
            ),
            ("1e30", r#"invalid quantity "1e30": too large"#),
            ("1e99999999999999999999", r#"invalid quantity "1e99999999999999999999": too large"#),
            ("300000000000Ei", r#"invalid quantity "300000000000Ei": too large"#),
            (
                "340282366920938463463374607431768211456n",
                r#"invalid quantity "340282366920938463463374607431768211456n": too many significant digits (at most 38)"#,
            ),
        ];
        for (input, message) in cases {
            assert_eq!(&err(input), message, "input {input:?}");
        }
        // Exactly 1n finer than representable is still rejected, one digit less is fine.
        assert_eq!(q("0.000000001Ki").as_nano(), 1024);
        let e = Quantity::parse("1e").unwrap_err();
        assert_eq!(e.input(), "1e");
        assert_eq!(e.kind(), &QuantityErrorKind::InvalidExponent { exponent: "e".into() });
    }

    #[test]
    fn binary_fractions_are_exact() {
        // 2^-40 Ei is one Mi: 40 fraction digits, 28 significant ones.
        assert_eq!(q("0.0000000000009094947017729282379150390625Ei"), q("1Mi"));
        assert_eq!(q("0.5Ki").as_nano(), 512 * NANO);
        assert_eq!(q("0.0009765625Ki"), Quantity::from_units(1));
        // 2^-60 Ei is one byte, but needs 42 significant digits: the documented limit.
        let one_byte = "0.000000000000000000867361737988403547205962240695953369140625Ei";
        assert_eq!(
            Quantity::parse(one_byte).unwrap_err().kind(),
            &QuantityErrorKind::TooManyDigits
        );
    }

    #[test]
    fn canonical_printing() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("0Gi", "0"),
            ("0e3", "0"),
            ("0.0m", "0"),
            ("1", "1"),
            ("+1", "1"),
            ("1.0", "1"),
            ("1000m", "1"),
            ("0.1", "100m"),
            ("100m", "100m"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1.25", "1250m"),
            ("0.001", "1m"),
            ("0.0001", "100u"),
            ("0.000000001", "1n"),
            ("1500", "1500"),
            ("15000", "15k"),
            ("500k", "500k"),
            ("1000", "1k"),
            ("1G", "1G"),
            ("1000M", "1G"),
            ("1.5G", "1500M"),
            ("1000E", "1000E"),
            ("1000000E", "1000000E"),
            ("12345678", "12345678"),
            ("64Mi", "64Mi"),
            ("1024Ki", "1Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("1Ki", "1Ki"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1023", "1023"),
            ("1Ei", "1Ei"),
            ("1024Ei", "1024Ei"),
            ("0.001Ki", "1024m"),
            ("2000", "2k"),
            ("1.953125Ki", "2k"),
            ("1.0001Ki", "1024102400u"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("2E6", "2e6"),
            ("1e0", "1"),
            ("1500e0", "1500"),
            ("15e3", "15e3"),
            ("1e1", "10"),
            ("1e2", "100"),
            ("1e4", "10e3"),
            ("5e-3", "5e-3"),
            ("1e-1", "100e-3"),
            ("1e-9", "1e-9"),
            ("1e21", "1e21"),
        ];
        for (input, canonical) in cases {
            assert_eq!(q(input).to_string(), *canonical, "input {input:?}");
            assert_eq!(q(canonical), q(input), "canonical form of {input:?} changes the value");
        }
        assert_eq!(format!("{:>6}|", q("100m")), "  100m|");
        assert_eq!(format!("{:?}", q("1000m")), "Quantity(1)");
        assert_eq!(format!("{:?}", q("1.5Gi")), "Quantity(1536Mi)");
    }

    #[test]
    fn constructors_and_accessors() {
        assert_eq!(Quantity::from_milli(100), q("100m"));
        assert_eq!(Quantity::from_milli(100).to_string(), "100m");
        assert_eq!(Quantity::from_units(3).to_string(), "3");
        assert_eq!(Quantity::from_units(1_000_000).to_string(), "1M");
        assert_eq!(Quantity::from_units(u64::MAX).as_units_ceil(), u64::MAX);
        assert_eq!(Quantity::from_milli(u64::MAX).as_milli_ceil(), u64::MAX);
        assert_eq!(Quantity::from_bytes_binary(1 << 20).to_string(), "1Mi");
        assert_eq!(Quantity::from_bytes_binary(1000).to_string(), "1k");
        assert_eq!(Quantity::from_bytes_binary(1536).to_string(), "1536");
        assert_eq!(Quantity::from_bytes_binary(3_000_000_000).to_string(), "3G");
        assert_eq!(Quantity::from_bytes_binary(0).to_string(), "0");
        assert_eq!(Quantity::from_nano(1).to_string(), "1n");

        assert_eq!(q("1n").as_milli_ceil(), 1);
        assert_eq!(q("1001u").as_milli_ceil(), 2);
        assert_eq!(q("100m").as_milli_ceil(), 100);
        assert_eq!(q("2").as_milli_ceil(), 2000);
        assert_eq!(q("1n").as_units_ceil(), 1);
        assert_eq!(q("100m").as_units_ceil(), 1);
        assert_eq!(q("64Mi").as_units_ceil(), 64 << 20);
        assert_eq!(q("0").as_units_ceil(), 0);
        assert_eq!(q("0").as_milli_ceil(), 0);
        assert!(q("0").is_zero() && Quantity::ZERO.is_zero() && Quantity::default().is_zero());
        assert!(!q("1n").is_zero());

        assert_eq!(q("100m").checked_add(q("0.9")), Some(q("1")));
        assert_eq!(q("1Gi").checked_add(q("1Gi")).unwrap().to_string(), "2Gi");
        assert_eq!(Quantity::from_nano(u128::MAX).checked_add(q("1n")), None);
        assert_eq!(q("1").saturating_sub(q("100m")), q("900m"));
        assert_eq!(q("1").saturating_sub(q("2")), Quantity::ZERO);
    }

    #[test]
    fn equality_ordering_and_hash_use_the_value() {
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(hash(&q("1000m")), hash(&q("1")));
        assert_eq!(hash(&q("1Ki")), hash(&q("1.024k")));
        assert!(q("999m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1Ki").cmp(&q("1024")), Ordering::Equal);
        let mut v = [q("1Gi"), q("100m"), q("1"), q("0"), q("1G")];
        v.sort();
        let printed: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["0", "100m", "1", "1G", "1Gi"]);
    }

    /// A small deterministic generator (SplitMix64) so the property test needs no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn display_round_trips_for_generated_values() {
        let mut rng = Rng(7);
        let formats =
            [QuantityFormat::DecimalSi, QuantityFormat::BinarySi, QuantityFormat::DecimalExponent];
        for i in 0..20_000 {
            // Mix small "nice" values (many trailing zeros, powers of 1024) with wide random ones.
            let nano: u128 = match i % 4 {
                0 => u128::from(rng.below(10_000)) * 10u128.pow(rng.below(25) as u32),
                1 => (u128::from(rng.below(5_000)) << (10 * rng.below(7))) * NANO,
                2 => (u128::from(rng.next()) * u128::from(rng.next())) >> rng.below(64),
                _ => u128::from(rng.next()) << rng.below(64),
            };
            let value = Quantity { nano, format: formats[rng.below(3) as usize] };
            let text = value.to_string();
            let back = q(&text);
            assert_eq!(back.as_nano(), nano, "{text} for {nano} nano ({:?})", value.format);
            assert_eq!(back.to_string(), text, "canonical form must be a fixed point");
        }
    }

    #[test]
    fn generated_strings_parse_to_their_exact_value() {
        // Builds "<int>.<frac><suffix>" text and checks it against independently computed
        // nano-units, so parsing is tested without going through Display.
        let mut rng = Rng(42);
        let suffixes: [(&str, u128, u128); 9] = [
            ("n", 1, 1),
            ("u", 1_000, 1),
            ("m", 1_000_000, 1),
            ("", NANO, 1),
            ("k", 1_000 * NANO, 1),
            ("G", 1_000_000_000 * NANO, 1),
            ("Ki", 1024 * NANO, 1),
            ("Mi", (1 << 20) * NANO, 1),
            ("e6", 1_000_000 * NANO, 1),
        ];
        for _ in 0..20_000 {
            let int = rng.below(100_000);
            let frac_len = rng.below(4) as u32;
            let frac = rng.below(10u64.pow(frac_len));
            let (suffix, scale, _) = suffixes[rng.below(suffixes.len() as u64) as usize];
            let text = if frac_len == 0 {
                format!("{int}{suffix}")
            } else {
                format!("{int}.{frac:0width$}{suffix}", width = frac_len as usize)
            };
            let numerator = (u128::from(int) * 10u128.pow(frac_len) + u128::from(frac)) * scale;
            let denominator = 10u128.pow(frac_len);
            match text.parse::<Quantity>() {
                Ok(v) => {
                    assert_eq!(numerator % denominator, 0, "{text} should be too precise");
                    assert_eq!(v.as_nano(), numerator / denominator, "{text}");
                }
                Err(e) => {
                    assert_ne!(numerator % denominator, 0, "{text}: {e}");
                    assert_eq!(e.kind(), &QuantityErrorKind::TooPrecise, "{text}");
                }
            }
        }
    }

    #[test]
    fn serde_round_trip() {
        for text in ["100m", "1", "64Mi", "1536Mi", "1e3", "0", "1G"] {
            let v = q(text);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            let back: Quantity = serde_json::from_str(&json).unwrap();
            assert_eq!(back, v);
            assert_eq!(back.to_string(), text);
        }
        let v: Quantity = serde_json::from_str("\"1.5Gi\"").unwrap();
        assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!("1536Mi"));
    }

    #[test]
    fn deserializes_json_numbers() {
        let from = |json: &str| serde_json::from_str::<Quantity>(json);
        assert_eq!(from("1").unwrap(), q("1"));
        assert_eq!(from("0").unwrap(), Quantity::ZERO);
        assert_eq!(from("0.5").unwrap().to_string(), "500m");
        assert_eq!(from("0.1").unwrap().as_nano(), 100_000_000);
        assert_eq!(from("1.1").unwrap().to_string(), "1100m");
        assert_eq!(from("2.0").unwrap().to_string(), "2");
        assert_eq!(from("1e3").unwrap().to_string(), "1k");
        assert_eq!(from("1e-3").unwrap().to_string(), "1m");
        assert_eq!(from("-0.0").unwrap(), Quantity::ZERO);
        assert_eq!(from("18446744073709551615").unwrap(), Quantity::from_units(u64::MAX));
        assert_eq!(from("1e20").unwrap(), q("100E"));

        let message = |json: &str| from(json).unwrap_err().to_string();
        assert!(message("-1").starts_with(r#"invalid quantity "-1": must not be negative"#));
        assert!(message("-0.5").starts_with(r#"invalid quantity "-0.5": must not be negative"#));
        assert!(message("1e-10").starts_with(r#"invalid quantity "0.0000000001": more precision"#));
        assert!(message("true").contains("a quantity such as"), "{}", message("true"));
        assert!(message("\"-1\"").contains("must not be negative"));

        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, F64Deserializer};
        let nan: F64Deserializer<Error> = f64::NAN.into_deserializer();
        let msg = Quantity::deserialize(nan).unwrap_err().to_string();
        assert_eq!(msg, r#"invalid quantity "NaN": must be a finite number"#);
        let inf: F64Deserializer<Error> = f64::INFINITY.into_deserializer();
        assert!(Quantity::deserialize(inf).unwrap_err().to_string().contains("finite"));
    }

    #[test]
    fn deserializes_yaml_scalars() {
        #[derive(Deserialize)]
        struct Resources {
            cpu: Quantity,
            memory: Quantity,
        }
        let parse = |yaml: &str| serde_yaml_ng::from_str::<Resources>(yaml);
        let r = parse("{ cpu: 100m, memory: 64Mi }").unwrap();
        assert_eq!((r.cpu.to_string(), r.memory.to_string()), ("100m".into(), "64Mi".into()));
        let r = parse("{ cpu: 0.5, memory: 1e3 }").unwrap();
        assert_eq!((r.cpu.to_string(), r.memory.to_string()), ("500m".into(), "1k".into()));
        let r = parse("{ cpu: \"1\", memory: 1E }").unwrap();
        assert_eq!((r.cpu, r.memory.to_string()), (q("1"), "1E".into()));
        let r = parse("{ cpu: 2, memory: 0.1 }").unwrap();
        assert_eq!((r.cpu.as_milli_ceil(), r.memory.as_nano()), (2000, 100_000_000));

        let message = |yaml: &str| parse(yaml).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message("{ cpu: -1, memory: 1 }")
                .contains(r#"invalid quantity "-1": must not be negative"#)
        );
        assert!(message("{ cpu: .inf, memory: 1 }").contains("must be a finite number"));
        assert!(message("{ cpu: 1, memory: 12Xi }").contains(r#"unknown suffix "Xi""#));
    }

    #[test]
    fn json_schema_describes_string_or_number() {
        let schema = schemars::schema_for!(Quantity);
        let value = schema.as_value();
        assert_eq!(value["anyOf"][0]["type"], "string");
        assert_eq!(value["anyOf"][0]["pattern"], QUANTITY_PATTERN);
        assert_eq!(value["anyOf"][1]["type"], "number");
        assert_eq!(value["anyOf"][1]["minimum"], 0);
        assert!(value["description"].as_str().unwrap().contains("64Mi"));
        assert_eq!(Quantity::schema_name(), "Quantity");
    }
}
