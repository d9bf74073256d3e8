//! Parsing of query and path values, with errors that name the parameter.

use picket_store::model::Level;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Checks a device or alert id: 32 lowercase hex digits.
pub(crate) fn hex_id(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "invalid {what} id {s:?}: expected 32 lowercase hex digits"
        )))
    }
}

/// A time: integer milliseconds since the Unix epoch, or RFC 3339
/// (`2024-05-01T12:00:00Z`).
pub(crate) fn time_ms(name: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::bad(format!(
                "invalid `{name}` {s:?}: expected milliseconds since the epoch or RFC 3339 ({e})"
            ))
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::bad(format!("`{name}` {s:?} is out of range")))
}

/// A lowercase enum value as the API spells it (`status=acknowledged`).
pub(crate) fn enum_value<T: DeserializeOwned>(
    name: &str,
    s: &str,
    allowed: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| ApiError::bad(format!("invalid `{name}` {s:?}: expected one of {allowed}")))
}

pub(crate) const LEVELS: &str = "informational, low, medium, high, critical";

/// A level by name or number (0 informational ..= 4 critical).
pub(crate) fn level(name: &str, s: &str) -> Result<Level, ApiError> {
    if let Ok(n) = s.parse::<i16>() {
        return Level::from_i16(n)
            .ok_or_else(|| ApiError::bad(format!("invalid `{name}` {s}: expected 0 to 4")));
    }
    enum_value(name, s, LEVELS)
}

/// An integer in `min..=max`.
pub(crate) fn bounded<T>(name: &str, s: &str, min: T, max: T) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match s.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(ApiError::bad(format!(
            "invalid `{name}` {s:?}: expected an integer from {min} to {max}"
        ))),
    }
}

/// A duration like `30s`, `5m`, `1h`, `1d`, or plain milliseconds.
pub(crate) fn duration_ms(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "invalid `{name}` {s:?}: expected a duration like 30s, 5m, 1h, 1d or milliseconds"
        ))
    };
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_ms_or_rfc3339() {
        assert_eq!(time_ms("since", "1500").unwrap(), 1500);
        assert_eq!(time_ms("since", "1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert_eq!(
            time_ms("since", "2024-05-01T12:00:00+02:00").unwrap(),
            1_714_557_600_000
        );
        let e = time_ms("until", "yesterday").unwrap_err().to_string();
        assert!(e.contains("`until`"), "{e}");
    }

    #[test]
    fn durations_and_levels() {
        assert_eq!(duration_ms("bucket", "5m").unwrap(), 300_000);
        assert_eq!(duration_ms("bucket", "250").unwrap(), 250);
        assert!(duration_ms("bucket", "5 weeks").is_err());
        assert!(duration_ms("bucket", "99999999999999999d").is_err());
        assert_eq!(level("level", "high").unwrap(), Level::High);
        assert_eq!(level("level", "1").unwrap(), Level::Low);
        assert!(level("level", "7").is_err());
        assert!(level("level", "severe").is_err());
    }

    #[test]
    fn hex_ids() {
        assert!(hex_id("device", &"a".repeat(32)).is_ok());
        assert!(hex_id("device", &"A".repeat(32)).is_err());
        assert!(hex_id("device", "abc").is_err());
    }
}
