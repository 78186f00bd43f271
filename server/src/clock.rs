//! Time as the server stores and shows it: RFC 3339 UTC text.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats a time as RFC 3339 UTC, e.g. `2026-11-25T12:00:00Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Now, as RFC 3339 UTC. Sub-second digits are kept so ordering by the text is ordering in time.
pub fn now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// `now` plus a duration, as RFC 3339 UTC.
pub fn after(d: std::time::Duration) -> String {
    rfc3339(OffsetDateTime::now_utc() + d)
}
