//! Several tokens holding the same app (sans-IO). An assignment made with `any_token`
//! may license through any token that bought the app: a target keeps the token it
//! already holds a license from; otherwise it gets the first token, in priority order
//! (lower `priority` first, then the older token), that has a license free; when every
//! token is exhausted it stays with the first and is reported "no licenses available".
//! Targets are taken in service order, so the choice is deterministic.
//!
//! The choice rewrites the applying assignment's app to the chosen token's copy of the
//! app, so licenses, installs and give-backs all follow that token.

use std::collections::{HashMap, HashSet};

use orchard_protocol::Udid;

use crate::clock::Timestamp;
use crate::engine::precedence::Effective;
use crate::store::{AppRecord, LicenseRecord, LicenseState, LicenseType, UserLicenseRecord};

/// A token's place: (priority, upload time).
pub type TokenRank = (i64, Timestamp);

/// Chooses the token of every any-token target; returns the requests moved along with
/// their targets.
pub fn choose(
    effective: &mut [Effective],
    apps: &HashMap<String, AppRecord>,
    ranks: &HashMap<String, TokenRank>,
    device_licenses: &[LicenseRecord],
    user_licenses: &[UserLicenseRecord],
    requested: &HashSet<(String, Udid)>,
) -> HashSet<(String, Udid)> {
    let live = |s: LicenseState| s != LicenseState::Failed;
    let in_flight =
        |s: LicenseState| matches!(s, LicenseState::Pending | LicenseState::Associating);
    let mut free: HashMap<&str, i64> = apps
        .values()
        .map(|a| {
            let flying = device_licenses
                .iter()
                .filter(|l| l.app_id == a.id && in_flight(l.state))
                .count()
                + user_licenses
                    .iter()
                    .filter(|l| l.app_id == a.id && in_flight(l.state))
                    .count();
            (a.id.as_str(), a.counts.available - flying as i64)
        })
        .collect();
    let mut moved = requested.clone();
    for e in effective.iter_mut().filter(|e| e.winner.any_token) {
        let Some(primary) = apps.get(&e.winner.app_id) else {
            continue;
        };
        let mut family: Vec<&AppRecord> = apps
            .values()
            .filter(|a| {
                a.adam_id == primary.adam_id
                    && a.pricing_param == primary.pricing_param
                    && a.product_type == primary.product_type
            })
            .collect();
        family.sort_by(|a, b| {
            let ra = ranks.get(&a.token_id);
            let rb = ranks.get(&b.token_id);
            (ra, &a.id).cmp(&(rb, &b.id))
        });
        let w = &e.winner;
        let holds = |app: &AppRecord| match w.license_type {
            LicenseType::Device => device_licenses
                .iter()
                .any(|l| l.app_id == app.id && l.udid == w.udid && live(l.state)),
            LicenseType::User => w.user_id.as_ref().is_some_and(|user| {
                user_licenses
                    .iter()
                    .any(|l| l.app_id == app.id && &l.user_id == user && live(l.state))
            }),
        };
        let chosen = match family.iter().find(|a| holds(a)) {
            Some(app) => app.id.clone(),
            None => match family
                .iter()
                .find(|a| free.get(a.id.as_str()).is_some_and(|f| *f > 0))
            {
                Some(app) => {
                    if let Some(f) = free.get_mut(app.id.as_str()) {
                        *f -= 1;
                    }
                    app.id.clone()
                }
                None => family
                    .first()
                    .map_or_else(|| w.app_id.clone(), |a| a.id.clone()),
            },
        };
        if chosen != e.winner.app_id {
            if moved.remove(&(e.winner.app_id.clone(), e.winner.udid.clone())) {
                moved.insert((chosen.clone(), e.winner.udid.clone()));
            }
            e.winner.app_id = chosen;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Candidate, LicenseCounts};
    use orchard_protocol::AdamId;

    fn app(id: &str, token: &str, available: i64) -> AppRecord {
        AppRecord {
            id: id.into(),
            token_id: token.into(),
            adam_id: AdamId(1),
            pricing_param: "STDQ".into(),
            product_type: "App".into(),
            name: None,
            bundle_id: None,
            version: None,
            platforms: vec![],
            device_assignable: true,
            counts: LicenseCounts {
                total: available,
                assigned: 0,
                available,
                retired: 0,
            },
            updated_at: Timestamp::UNIX_EPOCH,
            install_timeout_seconds: None,
            store_url: None,
            minimum_os_version: None,
        }
    }

    fn target(udid: &str, any_token: bool) -> Effective {
        Effective {
            winner: Candidate {
                assignment_id: "as".into(),
                app_id: "a-hq".into(),
                any_token,
                udid: udid.into(),
                os_version: None,
                product_name: None,
                ..Candidate::example()
            },
            overridden: vec![],
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds).unwrap()
    }

    fn ranks() -> HashMap<String, TokenRank> {
        HashMap::from([
            ("hq".to_owned(), (1, at(1))),
            ("branch".to_owned(), (2, at(0))),
        ])
    }

    fn chosen(effective: &[Effective]) -> Vec<&str> {
        effective.iter().map(|e| e.winner.app_id.as_str()).collect()
    }

    #[test]
    fn falls_through_tokens_in_priority_order() {
        let apps = HashMap::from([
            ("a-hq".to_owned(), app("a-hq", "hq", 1)),
            ("a-branch".to_owned(), app("a-branch", "branch", 1)),
        ]);
        let mut effective: Vec<Effective> =
            ["1", "2", "3"].iter().map(|u| target(u, true)).collect();
        choose(&mut effective, &apps, &ranks(), &[], &[], &HashSet::new());
        assert_eq!(chosen(&effective), ["a-hq", "a-branch", "a-hq"]);
    }

    #[test]
    fn keeps_the_token_a_license_came_from_and_pins_without_any_token() {
        let apps = HashMap::from([
            ("a-hq".to_owned(), app("a-hq", "hq", 5)),
            ("a-branch".to_owned(), app("a-branch", "branch", 5)),
        ]);
        let held = LicenseRecord {
            app_id: "a-branch".into(),
            udid: "1".into(),
            serial_number: "S".into(),
            state: LicenseState::Associated,
            event_id: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        let mut effective = vec![target("1", true), target("2", false)];
        let requested = HashSet::from([("a-hq".to_owned(), Udid::from("1"))]);
        let moved = choose(&mut effective, &apps, &ranks(), &[held], &[], &requested);
        assert_eq!(chosen(&effective), ["a-branch", "a-hq"]);
        assert!(moved.contains(&("a-branch".to_owned(), Udid::from("1"))));
    }
}
