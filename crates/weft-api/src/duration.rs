//! Go-style durations (`250ms`, `30s`, `1h30m`, `1.5s`), held exactly in nanoseconds.
//!
//! The grammar is Go's `time.ParseDuration`: one or more `<number><unit>` components, summed,
//! where a number is `digits`, `digits.`, `digits.digits` or `.digits`, and the units are
//! `h`, `m`, `s`, `ms`, `us` (also `µs`/`μs`) and `ns`. A bare `0` is allowed; any other
//! number needs a unit. Like Go, components may repeat or come in any order (`1h1h` is
//! `2h`), and a leading `+` is accepted.
//!
//! Where weft deliberately differs from Go: negative durations are rejected (all weft
//! durations are timeouts, periods or windows); fractions finer than 1ns are rejected instead
//! of being truncated; and the range is `u64` nanoseconds (about 584 years) rather than `i64`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MIN: u64 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MIN;

/// Display components, largest first; parsing also accepts the micro sign spellings.
const UNITS: [(&str, u64); 6] = [
    ("h", NANOS_PER_HOUR),
    ("m", NANOS_PER_MIN),
    ("s", NANOS_PER_SEC),
    ("ms", NANOS_PER_MILLI),
    ("us", NANOS_PER_MICRO),
    ("ns", 1),
];

/// JSON-schema pattern for [`Duration`]; kept in step with the parser. The range and 1ns
/// precision limits cannot be expressed as a regex.
pub const DURATION_PATTERN: &str =
    r"^\+?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$";

/// An exact, non-negative span of time with nanosecond resolution, written like Go's
/// `time.Duration` (`250ms`, `1h30m`).
///
/// ```
/// use weft_api::duration::Duration;
///
/// let d: Duration = "1.5s".parse().unwrap();
/// assert_eq!(d, Duration::from_millis(1500));
/// assert_eq!(d.to_string(), "1s500ms");
/// assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
/// assert_eq!(d.as_std(), std::time::Duration::from_millis(1500));
///
/// let err = "30".parse::<Duration>().unwrap_err().to_string();
/// assert_eq!(err, r#"invalid duration "30": missing unit, e.g. 30s"#);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Duration {
    /// No time at all, printed as `0s`.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable duration, `5124095h34m33s709ms551us615ns` (~584 years).
    pub const MAX: Duration = Duration(u64::MAX);

    /// Parses a duration string; same as [`str::parse`].
    ///
    /// ```
    /// use weft_api::duration::Duration;
    /// assert_eq!(Duration::parse("2h45m30.5s").unwrap().to_string(), "2h45m30s500ms");
    /// assert_eq!(
    ///     Duration::parse("3d").unwrap_err().to_string(),
    ///     r#"invalid duration "3d": unknown unit "d": days are not supported, use h, e.g. 72h"#,
    /// );
    /// ```
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let fail = |kind| DurationError { input: input.to_owned(), kind };
        if input.is_empty() {
            return Err(fail(DurationErrorKind::Empty));
        }
        if input.chars().any(char::is_whitespace) {
            return Err(fail(DurationErrorKind::Whitespace));
        }
        if let Some(rest) = input.strip_prefix('-') {
            // Say "negative" only when the rest is well-formed; `-abc` is just garbage.
            return Err(fail(match parse_unsigned(rest) {
                Ok(_) | Err(DurationErrorKind::TooPrecise | DurationErrorKind::TooLarge) => {
                    DurationErrorKind::Negative
                }
                Err(kind) => kind,
            }));
        }
        parse_unsigned(input.strip_prefix('+').unwrap_or(input)).map(Duration).map_err(fail)
    }

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: u64) -> Self {
        Duration(nanos)
    }

    /// A duration of `millis` milliseconds.
    ///
    /// # Panics
    /// If the result exceeds [`Duration::MAX`] (about 584 years); in a `const` this is a
    /// compile error.
    pub const fn from_millis(millis: u64) -> Self {
        match millis.checked_mul(NANOS_PER_MILLI) {
            Some(nanos) => Duration(nanos),
            None => panic!("Duration::from_millis overflow"),
        }
    }

    /// A duration of `secs` seconds.
    ///
    /// # Panics
    /// If the result exceeds [`Duration::MAX`] (about 584 years); in a `const` this is a
    /// compile error.
    pub const fn from_secs(secs: u64) -> Self {
        match secs.checked_mul(NANOS_PER_SEC) {
            Some(nanos) => Duration(nanos),
            None => panic!("Duration::from_secs overflow"),
        }
    }

    /// Converts from [`std::time::Duration`], or `None` if it exceeds [`Duration::MAX`].
    pub fn from_std(d: std::time::Duration) -> Option<Self> {
        u64::try_from(d.as_nanos()).ok().map(Duration)
    }

    /// The exact length in nanoseconds.
    pub const fn as_nanos(&self) -> u64 {
        self.0
    }

    /// The same length as a [`std::time::Duration`] (always exact).
    pub const fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0)
    }

    /// Whether this is zero.
    pub const fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.as_std()
    }
}

/// Parses one or more `<number><unit>` components (or a bare `0`) after an optional sign.
fn parse_unsigned(s: &str) -> Result<u64, DurationErrorKind> {
    // Go accepts exactly "0" without a unit: it is unambiguous in every unit.
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        // Only after a sign: the caller rejects an empty input before getting here.
        return Err(DurationErrorKind::MissingNumber { unit: String::new() });
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (int_digits, after_int) = split_digits(rest);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after_int),
        };
        let number = &rest[..rest.len() - after_number.len()];
        // Like Go, the unit runs to the next digit or dot.
        let unit_end = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, next) = after_number.split_at(unit_end);
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationErrorKind::MissingNumber { unit: unit.to_owned() });
        }
        if unit.is_empty() {
            return Err(DurationErrorKind::MissingUnit { number: number.to_owned() });
        }
        let Some(unit_nanos) = unit_nanos(unit) else {
            return Err(DurationErrorKind::UnknownUnit {
                unit: unit.to_owned(),
                number: number.to_owned(),
            });
        };
        let nanos = component_nanos(int_digits, frac_digits, unit_nanos)?;
        total = total.checked_add(nanos).ok_or(DurationErrorKind::TooLarge)?;
        rest = next;
    }
    Ok(total)
}

fn unit_nanos(unit: &str) -> Option<u64> {
    match unit {
        // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU, both accepted by Go.
        "µs" | "μs" => Some(NANOS_PER_MICRO),
        _ => UNITS.iter().find(|(name, _)| *name == unit).map(|&(_, nanos)| nanos),
    }
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// `int.frac × unit` in nanoseconds, exactly or not at all.
fn component_nanos(
    int_digits: &str,
    frac_digits: &str,
    unit: u64,
) -> Result<u64, DurationErrorKind> {
    let int = int_digits
        .bytes()
        .try_fold(0u64, |acc, b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')));
    let whole = int.and_then(|i| i.checked_mul(unit)).ok_or(DurationErrorKind::TooLarge)?;

    let frac_digits = frac_digits.trim_end_matches('0');
    // A fraction whose last digit is non-zero needs 10^len to divide frac × unit; the units
    // have at most 13 factors of two or of five (1h = 2^13·3^2·5^11 ns), so a longer fraction
    // can never be a whole number of nanoseconds. This bound also keeps the maths in u128.
    if frac_digits.len() > 13 {
        return Err(DurationErrorKind::TooPrecise);
    }
    let frac = frac_digits.bytes().fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
    let scaled = frac * u128::from(unit);
    let denominator = 10u128.pow(frac_digits.len() as u32);
    if !scaled.is_multiple_of(denominator) {
        return Err(DurationErrorKind::TooPrecise);
    }
    // scaled / denominator < unit, so it fits in u64.
    whole.checked_add((scaled / denominator) as u64).ok_or(DurationErrorKind::TooLarge)
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

/// Canonical form: the non-zero components from hours down to nanoseconds (`1m30s`,
/// `1s500ms`, `36h`), or `0s`. Hours are never rolled up into days, which Go and weft do not
/// parse.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.pad("0s");
        }
        let mut text = String::new();
        let mut rest = self.0;
        for (unit, nanos) in UNITS {
            let count = rest / nanos;
            rest %= nanos;
            if count > 0 {
                text.push_str(&count.to_string());
                text.push_str(unit);
            }
        }
        f.pad(&text)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

/// Why a duration was rejected, with the offending input.
///
/// Displays as e.g. `invalid duration "30": missing unit, e.g. 30s`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {kind}")]
pub struct DurationError {
    input: String,
    kind: DurationErrorKind,
}

impl DurationError {
    /// The rejected input (for numbers, their decimal text).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &DurationErrorKind {
        &self.kind
    }
}

/// The reason inside a [`DurationError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationErrorKind {
    /// The input was empty.
    #[error("empty; expected a duration such as 250ms, 30s, 5m or 1h30m")]
    Empty,
    /// The input contained whitespace.
    #[error("must not contain whitespace")]
    Whitespace,
    /// The input had a leading `-`.
    #[error("must not be negative")]
    Negative,
    /// A unit without a number in front of it (or no number at all).
    #[error("{}", missing_number_message(.unit))]
    MissingNumber {
        /// The text where a number was expected.
        unit: String,
    },
    /// A number (other than a bare `0`) without a unit; YAML numbers land here too.
    #[error("missing unit, e.g. {number}s")]
    MissingUnit {
        /// The number as written.
        number: String,
    },
    /// A unit other than h, m, s, ms, us, µs, ns.
    #[error("unknown unit {unit:?}{}", unknown_unit_hint(.unit, .number))]
    UnknownUnit {
        /// The unrecognised unit.
        unit: String,
        /// The number in front of it, used to suggest a replacement.
        number: String,
    },
    /// A fraction that is not a whole number of nanoseconds.
    #[error("more precision than 1ns")]
    TooPrecise,
    /// Longer than [`Duration::MAX`].
    #[error("too large (the maximum is {})", Duration::MAX)]
    TooLarge,
}

fn missing_number_message(unit: &str) -> String {
    if unit.is_empty() {
        // A lone sign, or a dot with no digits on either side.
        "expected a number with a unit, e.g. 30s or 1.5s".to_owned()
    } else {
        format!("expected a number before {unit:?}, e.g. 30s, 250ms or 1h30m")
    }
}

/// Suggests the nearest supported spelling for common mistakes.
fn unknown_unit_hint(unit: &str, number: &str) -> String {
    const ALL: &str = "use h, m, s, ms, us or ns";
    // Translate whole days/weeks into the equivalent hours so the hint is copy-pasteable.
    let in_hours = |hours_per_unit: u64, name: &str| {
        let example = int_or_frac_duration(number, hours_per_unit * NANOS_PER_HOUR)
            .map_or_else(|| format!("{hours_per_unit}h"), |d| d.to_string());
        format!(": {name} are not supported, use h, e.g. {example}")
    };
    match unit {
        "d" | "day" | "days" => in_hours(24, "days"),
        "w" | "wk" | "week" | "weeks" => in_hours(24 * 7, "weeks"),
        "y" | "yr" | "year" | "years" => in_hours(24 * 365, "years"),
        "sec" | "secs" | "second" | "seconds" => r#": did you mean "s"?"#.to_owned(),
        "min" | "mins" | "minute" | "minutes" => r#": did you mean "m"?"#.to_owned(),
        "hr" | "hrs" | "hour" | "hours" => r#": did you mean "h"?"#.to_owned(),
        "msec" | "msecs" => r#": did you mean "ms"?"#.to_owned(),
        _ => {
            let lower = unit.to_lowercase();
            if lower != unit && unit_nanos(&lower).is_some() {
                format!(": did you mean {lower:?}? units are lowercase")
            } else {
                format!(" ({ALL})")
            }
        }
    }
}

/// `number × unit` as a duration, if exact and in range.
fn int_or_frac_duration(number: &str, unit: u64) -> Option<Duration> {
    let (int_digits, rest) = split_digits(number);
    let frac_digits = rest.strip_prefix('.').unwrap_or(rest);
    component_nanos(int_digits, frac_digits, unit).ok().map(Duration)
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl DurationVisitor {
    /// Bare numbers are rejected even when they would be valid as text (`0`): `timeout: 2`
    /// could mean seconds or milliseconds, so the user must say which.
    fn number<E: de::Error>(text: String) -> E {
        let kind = if text.starts_with('-') {
            DurationErrorKind::Negative
        } else {
            DurationErrorKind::MissingUnit { number: text.clone() }
        };
        E::custom(DurationError { input: text, kind })
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a duration string with a unit, such as "2s", "250ms" or "1h30m""#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        Duration::parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(Self::number(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(Self::number(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Duration, E> {
        Err(Self::number(v.to_string()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Duration, E> {
        Err(Self::number(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(Self::number(v.to_string()))
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Duration").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A non-negative duration in Go syntax: one or more number+unit \
                components with units h, m, s, ms, us (or µs) and ns, e.g. 250ms, 30s, 5m, \
                1h30m, 1.5s. A bare 0 is allowed; other numbers need a unit. Days are not \
                supported (use 24h). Precision is limited to 1ns.",
            "examples": ["250ms", "30s", "5m", "1h30m", "1.5s"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        s.parse().unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<Duration>() {
            Ok(v) => panic!("{s:?} should be rejected, got {v}"),
            Err(e) => e.to_string(),
        }
    }

    const MS: u64 = NANOS_PER_MILLI;
    const S: u64 = NANOS_PER_SEC;
    const M: u64 = NANOS_PER_MIN;
    const H: u64 = NANOS_PER_HOUR;

    #[test]
    fn parses_every_accepted_form() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("0s", 0),
            ("0h0m", 0),
            ("0.0s", 0),
            ("10ns", 10),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("100μs", 100_000),
            ("250ms", 250 * MS),
            ("30s", 30 * S),
            ("5m", 5 * M),
            ("1h", H),
            ("36h", 36 * H),
            ("1h30m", H + 30 * M),
            ("1.5s", 1_500 * MS),
            ("1.5h", H + 30 * M),
            (".5s", 500 * MS),
            ("1.s", S),
            ("2h45m30.5s", 2 * H + 45 * M + 30 * S + 500 * MS),
            ("1.000000001s", S + 1),
            ("1.5000000000000000000s", 1_500 * MS),
            ("0.00000000001h", 36),
            ("0.0000000000025h", 9),
            ("1.5us", 1_500),
            ("007s", 7 * S),
            ("+5m", 5 * M),
            ("1s1h", H + S),
            ("1h1h", 2 * H),
            ("1m60s", 2 * M),
            ("18446744073709551615ns", u64::MAX),
            ("5124095h34m33s709ms551us615ns", u64::MAX),
        ];
        for &(input, nanos) in cases {
            assert_eq!(d(input).as_nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn rejections_with_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                r#"invalid duration "": empty; expected a duration such as 250ms, 30s, 5m or 1h30m"#,
            ),
            (" 1s", r#"invalid duration " 1s": must not contain whitespace"#),
            ("1h 30m", r#"invalid duration "1h 30m": must not contain whitespace"#),
            ("-1s", r#"invalid duration "-1s": must not be negative"#),
            ("-0", r#"invalid duration "-0": must not be negative"#),
            ("-0.5ns", r#"invalid duration "-0.5ns": must not be negative"#),
            ("30", r#"invalid duration "30": missing unit, e.g. 30s"#),
            ("1.5", r#"invalid duration "1.5": missing unit, e.g. 1.5s"#),
            ("00", r#"invalid duration "00": missing unit, e.g. 00s"#),
            ("1h30", r#"invalid duration "1h30": missing unit, e.g. 30s"#),
            ("-30", r#"invalid duration "-30": missing unit, e.g. 30s"#),
            (
                "3d",
                r#"invalid duration "3d": unknown unit "d": days are not supported, use h, e.g. 72h"#,
            ),
            (
                "1.5d",
                r#"invalid duration "1.5d": unknown unit "d": days are not supported, use h, e.g. 36h"#,
            ),
            (
                "2w",
                r#"invalid duration "2w": unknown unit "w": weeks are not supported, use h, e.g. 336h"#,
            ),
            (
                "1y",
                r#"invalid duration "1y": unknown unit "y": years are not supported, use h, e.g. 8760h"#,
            ),
            (
                "99999999999999999999d",
                r#"invalid duration "99999999999999999999d": unknown unit "d": days are not supported, use h, e.g. 24h"#,
            ),
            (
                "1h2d",
                r#"invalid duration "1h2d": unknown unit "d": days are not supported, use h, e.g. 48h"#,
            ),
            ("5sec", r#"invalid duration "5sec": unknown unit "sec": did you mean "s"?"#),
            ("5mins", r#"invalid duration "5mins": unknown unit "mins": did you mean "m"?"#),
            ("1hr", r#"invalid duration "1hr": unknown unit "hr": did you mean "h"?"#),
            (
                "1H",
                r#"invalid duration "1H": unknown unit "H": did you mean "h"? units are lowercase"#,
            ),
            (
                "1MS",
                r#"invalid duration "1MS": unknown unit "MS": did you mean "ms"? units are lowercase"#,
            ),
            ("1x", r#"invalid duration "1x": unknown unit "x" (use h, m, s, ms, us or ns)"#),
            ("1s-2s", r#"invalid duration "1s-2s": unknown unit "s-" (use h, m, s, ms, us or ns)"#),
            (
                "s",
                r#"invalid duration "s": expected a number before "s", e.g. 30s, 250ms or 1h30m"#,
            ),
            ("1hm", r#"invalid duration "1hm": unknown unit "hm" (use h, m, s, ms, us or ns)"#),
            (
                ".s",
                r#"invalid duration ".s": expected a number before "s", e.g. 30s, 250ms or 1h30m"#,
            ),
            ("1h.", r#"invalid duration "1h.": expected a number with a unit, e.g. 30s or 1.5s"#),
            ("+", r#"invalid duration "+": expected a number with a unit, e.g. 30s or 1.5s"#),
            ("-", r#"invalid duration "-": expected a number with a unit, e.g. 30s or 1.5s"#),
            ("0.5ns", r#"invalid duration "0.5ns": more precision than 1ns"#),
            ("0.000000000001h", r#"invalid duration "0.000000000001h": more precision than 1ns"#),
            ("1.0000000001s", r#"invalid duration "1.0000000001s": more precision than 1ns"#),
            (
                "0.00000000000000000000000000000000001h",
                r#"invalid duration "0.00000000000000000000000000000000001h": more precision than 1ns"#,
            ),
            (
                "18446744073709551616ns",
                r#"invalid duration "18446744073709551616ns": too large (the maximum is 5124095h34m33s709ms551us615ns)"#,
            ),
            (
                "5124095h34m33s709ms551us616ns",
                r#"invalid duration "5124095h34m33s709ms551us616ns": too large (the maximum is 5124095h34m33s709ms551us615ns)"#,
            ),
            (
                "9999999999999999999999h",
                r#"invalid duration "9999999999999999999999h": too large (the maximum is 5124095h34m33s709ms551us615ns)"#,
            ),
        ];
        for (input, message) in cases {
            assert_eq!(&err(input), message, "input {input:?}");
        }
        let e = Duration::parse("30").unwrap_err();
        assert_eq!(e.input(), "30");
        assert_eq!(e.kind(), &DurationErrorKind::MissingUnit { number: "30".into() });
    }

    #[test]
    fn canonical_printing() {
        let cases: &[(&str, &str)] = &[
            ("0", "0s"),
            ("0s", "0s"),
            ("0.000h", "0s"),
            ("90s", "1m30s"),
            ("1.5s", "1s500ms"),
            ("250ms", "250ms"),
            ("5m", "5m"),
            ("3600s", "1h"),
            ("36h", "36h"),
            ("1h30m", "1h30m"),
            ("90m", "1h30m"),
            ("1h0m1s", "1h1s"),
            ("1h1ms", "1h1ms"),
            ("2h45m30.5s", "2h45m30s500ms"),
            ("1500us", "1ms500us"),
            ("100µs", "100us"),
            ("1001ns", "1us1ns"),
            ("1.000000001s", "1s1ns"),
            ("86400s", "24h"),
            ("18446744073709551615ns", "5124095h34m33s709ms551us615ns"),
        ];
        for (input, canonical) in cases {
            assert_eq!(d(input).to_string(), *canonical, "input {input:?}");
        }
        assert_eq!(format!("{:>6}|", d("5m")), "    5m|");
        assert_eq!(format!("{:?}", d("90s")), "Duration(1m30s)");
    }

    #[test]
    fn constructors_and_conversions() {
        assert_eq!(Duration::from_secs(90), d("1m30s"));
        assert_eq!(Duration::from_millis(250), d("250ms"));
        assert_eq!(Duration::from_nanos(1), d("1ns"));
        assert_eq!(Duration::ZERO, d("0s"));
        assert_eq!(Duration::default(), Duration::ZERO);
        assert!(Duration::ZERO.is_zero() && !d("1ns").is_zero());
        assert_eq!(Duration::MAX.as_nanos(), u64::MAX);

        let std = std::time::Duration::new(2, 5);
        assert_eq!(Duration::from_std(std), Some(d("2s5ns")));
        assert_eq!(d("2s5ns").as_std(), std);
        assert_eq!(std::time::Duration::from(d("1h")), std::time::Duration::from_secs(3600));
        assert_eq!(Duration::from_std(std::time::Duration::MAX), None);
        assert_eq!(Duration::from_std(Duration::MAX.as_std()), Some(Duration::MAX));

        assert!(d("999ms") < d("1s"));
        assert!(d("1h") > d("59m59s"));
        assert_eq!(d("60m"), d("1h"));
    }

    #[test]
    #[should_panic(expected = "Duration::from_secs overflow")]
    fn from_secs_panics_on_overflow() {
        let _ = Duration::from_secs(u64::MAX);
    }

    #[test]
    #[should_panic(expected = "Duration::from_millis overflow")]
    fn from_millis_panics_on_overflow() {
        let _ = Duration::from_millis(u64::MAX);
    }

    /// SplitMix64: a tiny deterministic generator so the property test needs no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn display_round_trips_for_generated_values() {
        let mut rng = Rng(1);
        for i in 0..50_000u64 {
            let nanos = match i % 4 {
                // Round values of each unit, so single-component outputs are covered.
                0 => (rng.next() % 10_000) * UNITS[(rng.next() % 6) as usize].1,
                1 => rng.next() % (10 * H),
                2 => rng.next() >> (rng.next() % 64),
                _ => u64::MAX - rng.next() % 1_000_000,
            };
            let value = Duration(nanos);
            let text = value.to_string();
            assert_eq!(d(&text), value, "{text}");
            // Also through the Go-style decimal-seconds spelling, which is a different path.
            let seconds = format!("{}.{:09}s", nanos / S, nanos % S);
            assert_eq!(d(&seconds), value, "{seconds}");
        }
    }

    #[test]
    fn serde_round_trip() {
        for text in ["0s", "250ms", "1m30s", "1h", "2h45m30s500ms"] {
            let v = d(text);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Duration>(&json).unwrap(), v);
        }
        assert_eq!(serde_json::from_str::<Duration>("\"90s\"").unwrap().to_string(), "1m30s");
        assert_eq!(serde_json::from_str::<Duration>("\"0\"").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bare_numbers_are_rejected_with_a_hint() {
        let message = |json: &str| serde_json::from_str::<Duration>(json).unwrap_err().to_string();
        assert_eq!(
            message("2"),
            r#"invalid duration "2": missing unit, e.g. 2s at line 1 column 1"#
        );
        assert_eq!(
            message("0"),
            r#"invalid duration "0": missing unit, e.g. 0s at line 1 column 1"#
        );
        assert_eq!(
            message("1.5"),
            r#"invalid duration "1.5": missing unit, e.g. 1.5s at line 1 column 3"#
        );
        assert_eq!(
            message("-2"),
            r#"invalid duration "-2": must not be negative at line 1 column 2"#
        );
        assert!(message("\"3d\"").contains("days are not supported"));
        assert!(message("true").contains(r#"a duration string with a unit"#));
    }

    #[test]
    fn deserializes_yaml_scalars() {
        #[derive(Debug, Deserialize)]
        struct Traffic {
            timeout: Duration,
        }
        let parse = |yaml: &str| serde_yaml_ng::from_str::<Traffic>(yaml);
        assert_eq!(parse("timeout: 2s").unwrap().timeout, Duration::from_secs(2));
        assert_eq!(parse("timeout: 1h30m").unwrap().timeout.to_string(), "1h30m");
        assert_eq!(parse("timeout: \"0\"").unwrap().timeout, Duration::ZERO);
        let message = parse("timeout: 2").unwrap_err().to_string();
        assert!(
            message.starts_with(r#"timeout: invalid duration "2": missing unit, e.g. 2s"#),
            "{message}"
        );
        let message = parse("timeout: 0.5").unwrap_err().to_string();
        assert!(message.contains("missing unit, e.g. 0.5s"), "{message}");
        let message = parse("timeout: 3d").unwrap_err().to_string();
        assert!(message.contains("days are not supported, use h, e.g. 72h"), "{message}");
    }

    #[test]
    fn json_schema_is_a_pattern_string() {
        let schema = schemars::schema_for!(Duration);
        let value = schema.as_value();
        assert_eq!(value["type"], "string");
        assert_eq!(value["pattern"], DURATION_PATTERN);
        assert!(value["description"].as_str().unwrap().contains("1h30m"));
        assert_eq!(Duration::schema_name(), "Duration");
    }
}
