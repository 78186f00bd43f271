//! When a device renews its identity certificate: once less than a third of its
//! validity is left, it enrolls again presenting the current certificate, which the
//! server takes as proof that it is the same device (sans-IO: times are passed in).

use time::OffsetDateTime;

/// Whether a certificate valid from `not_before` to `not_after` is due for renewal at
/// `now` (and can still be renewed: it has not expired).
pub fn renewal_due(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    let lifetime = not_after - not_before;
    now < not_after && not_after - now < lifetime / 3
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn renews_in_the_last_third_of_the_validity_and_not_once_expired() {
        let issued = datetime!(2026-01-01 0:00 UTC);
        let expires = issued + Duration::days(365);
        let cases = [
            (issued, false),
            (issued + Duration::days(240), false),
            (issued + Duration::days(244), true),
            (expires - Duration::seconds(1), true),
            (expires, false),
        ];
        for (now, due) in cases {
            assert_eq!(renewal_due(issued, expires, now), due, "{now}");
        }
    }
}
