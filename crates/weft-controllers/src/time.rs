//! Timestamps as the api writes them (RFC 3339), read and written in one place.

use std::time::{Duration, SystemTime};

/// Parses an RFC 3339 timestamp (`2024-05-01T10:00:00Z`, fractions and offsets accepted).
pub fn parse(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim()).ok()
}

/// Formats a time the way the api server stamps objects (whole seconds, UTC).
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long ago `text` was, as of `now`; `None` when unreadable, zero when in the future.
pub fn age(text: Option<&str>, now: SystemTime) -> Option<Duration> {
    let t = parse(text?)?;
    Some(now.duration_since(t).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ages() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format(t), "2023-11-14T22:13:20Z");
        assert_eq!(parse("2023-11-14T22:13:20Z"), Some(t));
        assert_eq!(parse("2023-11-14T22:13:20.500Z"), Some(t + Duration::from_millis(500)));
        assert_eq!(parse("yesterday"), None);
        let now = t + Duration::from_secs(30);
        assert_eq!(age(Some("2023-11-14T22:13:20Z"), now), Some(Duration::from_secs(30)));
        assert_eq!(
            age(Some("2023-11-14T22:13:20Z"), t - Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(age(None, now), None);
    }
}
