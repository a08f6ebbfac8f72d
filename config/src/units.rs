//! Human-readable units used across the config: durations (`250ms`, `2s`, `1m`),
//! percentages (`50%`) and rates (`100/s`, `6000/m`).
//!
//! Each type parses from a string, prints back to the same form, and has a JSON Schema
//! so editors can complete and check it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct UnitError {
    kind: &'static str,
    input: String,
    reason: &'static str,
}

impl UnitError {
    fn new(kind: &'static str, input: &str, reason: &'static str) -> Self {
        Self {
            kind,
            input: input.to_owned(),
            reason,
        }
    }
}

/// Parse a duration written as a number followed by a unit: `ms`, `s`, `m`, `h`
/// (also `us`). Fractions are allowed (`1.5s`). A bare `0` means zero.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    const KIND: &str = "duration";
    const HINT: &str = "expected a number and a unit: ms, s, m, h or d (e.g. 250ms, 2s, 1m)";
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| UnitError::new(KIND, input, HINT))?;
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(UnitError::new(KIND, input, HINT));
    }
    let value: f64 = num.parse().map_err(|_| UnitError::new(KIND, input, HINT))?;
    let secs_per_unit = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(UnitError::new(KIND, input, HINT)),
    };
    let secs = value * secs_per_unit;
    if !secs.is_finite() || secs > 10.0 * 365.0 * 86400.0 {
        return Err(UnitError::new(KIND, input, "too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Format a duration the way the config writes it (the largest unit that is exact).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.is_zero() {
        "0".into()
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A config duration: `250ms`, `2s`, `1m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// A share of something: `50%` (also accepts a plain number `50`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    pub const fn new_const(p: f64) -> Self {
        Self(p)
    }
    /// The share as a fraction in `0.0..=1.0`.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
    pub fn value(self) -> f64 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "percentage";
        let s = input.trim();
        let num = s.strip_suffix('%').unwrap_or(s).trim();
        let v: f64 = num
            .parse()
            .map_err(|_| UnitError::new(KIND, input, "expected e.g. 50%"))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(UnitError::new(KIND, input, "must be between 0% and 100%"));
        }
        Ok(Self(v))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A rate: `100/s`, `6000/m`, `1000/h`, or a count per a whole number of units
/// (`500/5m`, `100/30s`: what sliding windows count in). `10/ms` is refused (too fine).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl Rate {
    /// Events per second.
    pub fn per_second(self) -> f64 {
        if self.per.is_zero() {
            0.0
        } else {
            self.count as f64 / self.per.as_secs_f64()
        }
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "rate";
        const HINT: &str = "expected a count per unit: 100/s, 6000/m, 1000/h, 500/5m";
        let (count, unit) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| UnitError::new(KIND, input, HINT))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| UnitError::new(KIND, input, HINT))?;
        let unit = unit.trim();
        let digits = unit.len() - unit.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (times, unit) = unit.split_at(digits);
        let times: u32 = match times {
            "" => 1,
            t => t
                .parse()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .ok_or_else(|| UnitError::new(KIND, input, HINT))?,
        };
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(UnitError::new(KIND, input, HINT)),
        };
        Ok(Self {
            count,
            per: per * times,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/m", self.count),
            3600 => write!(f, "{}/h", self.count),
            s if s % 3600 == 0 => write!(f, "{}/{}h", self.count, s / 3600),
            s if s % 60 == 0 => write!(f, "{}/{}m", self.count, s / 60),
            s => write!(f, "{}/{s}s", self.count),
        }
    }
}

/// A size in bytes: `1048576`, `64KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB` = 1000s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "size";
        const HINT: &str = "a number of bytes, or with a unit: 64KiB, 10MiB, 1GiB";
        let t = input.trim();
        let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (n, unit) = t.split_at(digits);
        let n: u64 = n.parse().map_err(|_| UnitError::new(KIND, input, HINT))?;
        let times: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(UnitError::new(KIND, input, HINT)),
        };
        n.checked_mul(times)
            .map(Self)
            .ok_or_else(|| UnitError::new(KIND, input, HINT))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        match b {
            0 => f.write_str("0"),
            b if b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            b if b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            b if b % (1 << 10) == 0 => write!(f, "{}KiB", b >> 10),
            b => write!(f, "{b}"),
        }
    }
}

macro_rules! string_unit {
    ($ty:ty, $name:literal, $pattern:literal, $desc:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Accept YAML numbers too (`rate: 50` for a percentage), as text.
                let v = StringOrNumber::deserialize(d)?;
                v.as_str().parse().map_err(de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "description": $desc })
            }
        }
    };
}

string_unit!(
    HumanDuration,
    "Duration",
    r"^(0|[0-9.]+(us|ms|s|m|h|d))$",
    "A duration such as 250ms, 2s, 1m"
);
string_unit!(
    ByteSize,
    "ByteSize",
    r"^[0-9]+ *(B|KiB|MiB|GiB|KB|kB|MB|GB)?$",
    "A size in bytes such as 1048576, 64KiB, 10MiB"
);
string_unit!(
    Percent,
    "Percent",
    r"^[0-9.]+%?$",
    "A percentage such as 50%"
);
string_unit!(
    Rate,
    "Rate",
    r"^[0-9]+/(s|m|h)$",
    "A rate such as 100/s or 6000/m"
);

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    S(String),
    U(u64),
    F(f64),
}

impl StringOrNumber {
    fn as_str(&self) -> Cow<'_, str> {
        match self {
            Self::S(s) => Cow::Borrowed(s),
            Self::U(u) => Cow::Owned(u.to_string()),
            Self::F(f) => Cow::Owned(f.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, d) in [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
            ("100us", Duration::from_micros(100)),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_micros(5)), "5us");
    }

    #[test]
    fn bad_durations_are_refused_with_a_hint() {
        for s in ["", "5", "ms", "5 parsecs", "-1s", "1e400s", "s5"] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(e.contains("duration"), "{s}: {e}");
        }
    }

    #[test]
    fn percents_and_rates() {
        assert_eq!("50%".parse::<Percent>().map(Percent::fraction), Ok(0.5));
        assert_eq!("25".parse::<Percent>().map(Percent::fraction), Ok(0.25));
        assert!("150%".parse::<Percent>().is_err());
        assert!("x%".parse::<Percent>().is_err());
        let r: Rate = "6000/m".parse().unwrap_or_default();
        assert_eq!(r.per_second(), 100.0);
        assert_eq!(r.to_string(), "6000/m");
        assert!("100".parse::<Rate>().is_err());
        assert!("100/d".parse::<Rate>().is_err());
        for (text, count, secs) in [
            ("500/5m", 500, 300),
            ("100/30s", 100, 30),
            ("10/2h", 10, 7200),
            ("7/90s", 7, 90),
        ] {
            let r: Rate = text.parse().unwrap_or_default();
            assert_eq!((r.count, r.per.as_secs()), (count, secs), "{text}");
            assert_eq!(r.to_string(), text);
        }
        assert!("100/0m".parse::<Rate>().is_err());
        assert!("100/5".parse::<Rate>().is_err());
        assert!("100/m5".parse::<Rate>().is_err());
    }

    #[test]
    fn yaml_numbers_are_accepted_for_percent() {
        let p: Percent = serde_yaml::from_str("50").unwrap_or_default();
        assert_eq!(p.fraction(), 0.5);
        let d: Result<HumanDuration, _> = serde_yaml::from_str("5");
        assert!(d.is_err(), "a bare number is not a duration");
    }
}
