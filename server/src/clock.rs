//! Time as the server stores and shows it: RFC 3339 UTC text with exactly six
//! fractional digits, so that ordering the text orders the times (the database compares
//! and sorts these strings).

use time::OffsetDateTime;
use time::macros::format_description;

/// Formats a time as RFC 3339 UTC, e.g. `2026-11-25T12:00:00.000000Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Now, as RFC 3339 UTC.
pub fn now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// `now` plus a duration, as RFC 3339 UTC.
pub fn after(d: std::time::Duration) -> String {
    rfc3339(OffsetDateTime::now_utc() + d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn text_order_is_time_order() {
        let times = [
            datetime!(2026-11-25 12:00:05 UTC),
            datetime!(2026-11-25 12:00:05.5 UTC),
            datetime!(2026-11-25 12:00:05.123456 UTC),
            datetime!(2026-11-25 12:00:06 UTC),
            datetime!(2026-01-01 00:00:00 UTC),
        ];
        let mut by_text: Vec<_> = times.iter().map(|t| (rfc3339(*t), *t)).collect();
        by_text.sort();
        let mut by_time = times.to_vec();
        by_time.sort();
        assert_eq!(
            by_text.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
            by_time
        );
        assert_eq!(
            rfc3339(datetime!(2026-11-25 12:00:05 UTC)),
            "2026-11-25T12:00:05.000000Z"
        );
    }
}
