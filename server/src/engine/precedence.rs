//! Which assignment applies when several reach one device for one app (sans-IO).
//!
//! Precedence, first rule that separates two assignments wins:
//! 1. intent: Required, then Uninstall, then Available (an app the organisation
//!    requires stays; an explicit removal beats an offer);
//! 2. group: an assignment through a device group beats one through the device's
//!    user's group (it names the device itself);
//! 3. age: the older assignment (created first), then the lower assignment id.
//!
//! The result keeps the assignments that lost, so the admin API can explain it.

use std::collections::BTreeMap;

use orchard_protocol::Udid;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::store::{Candidate, GroupKind, Intent};

/// The assignment that applies to one (app, device), and those it beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Effective {
    /// The assignment that applies.
    pub winner: Candidate,
    /// The others reaching the device, each with the rule it lost by.
    pub overridden: Vec<Overridden>,
}

/// An assignment that lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Overridden {
    /// The assignment.
    pub candidate: Candidate,
    /// Why it lost.
    pub rule: &'static str,
}

/// Rule texts, as the API shows them.
pub const BY_INTENT: &str = "intent: Required wins over Uninstall, which wins over Available";
/// See [`BY_INTENT`].
pub const BY_GROUP: &str = "same intent: a device group's assignment wins over a user group's";
/// See [`BY_INTENT`].
pub const BY_AGE: &str = "same intent and kind of group: the older assignment wins";

fn intent_rank(intent: Intent) -> u8 {
    match intent {
        Intent::Required => 0,
        Intent::Uninstall => 1,
        Intent::Available => 2,
    }
}

fn group_rank(kind: GroupKind) -> u8 {
    match kind {
        GroupKind::Device => 0,
        GroupKind::User => 1,
    }
}

fn rank(c: &Candidate) -> (u8, u8, Timestamp, &str) {
    (
        intent_rank(c.intent),
        group_rank(c.group_kind),
        c.created_at,
        &c.assignment_id,
    )
}

fn rule(winner: &Candidate, loser: &Candidate) -> &'static str {
    if winner.intent != loser.intent {
        BY_INTENT
    } else if winner.group_kind != loser.group_kind {
        BY_GROUP
    } else {
        BY_AGE
    }
}

/// Resolves every (app, device) to its applying assignment; the result is in service
/// order (when the device came under the winning assignment, then UDID).
pub fn resolve(candidates: &[Candidate]) -> Vec<Effective> {
    let mut by_pair: BTreeMap<(&str, &Udid), Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_pair.entry((&c.app_id, &c.udid)).or_default().push(c);
    }
    let mut out: Vec<Effective> = by_pair
        .into_values()
        .filter_map(|mut group| {
            group.sort_by(|a, b| rank(a).cmp(&rank(b)));
            let (winner, rest) = group.split_first()?;
            Some(Effective {
                winner: (*winner).clone(),
                overridden: rest
                    .iter()
                    .map(|c| Overridden {
                        candidate: (*c).clone(),
                        rule: rule(winner, c),
                    })
                    .collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.winner.joined_at, &a.winner.udid, &a.winner.app_id).cmp(&(
            &b.winner.joined_at,
            &b.winner.udid,
            &b.winner.app_id,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, intent: Intent, kind: GroupKind, created: &str) -> Candidate {
        Candidate {
            assignment_id: id.into(),
            group_id: format!("g-{id}"),
            group_kind: kind,
            intent,
            created_at: Timestamp::from_unix_seconds(created.parse().unwrap()).unwrap(),
            joined_at: Timestamp::from_unix_seconds(created.parse().unwrap()).unwrap(),
            app_store_allowed: Some(true),
            ..Candidate::example()
        }
    }

    #[test]
    fn precedence_table() {
        use GroupKind::{Device, User};
        use Intent::{Available, Required, Uninstall};
        // (a, b, winner, rule)
        let cases = [
            (
                (Required, Device, "2"),
                (Uninstall, Device, "1"),
                "a",
                BY_INTENT,
            ),
            (
                (Available, Device, "1"),
                (Uninstall, User, "2"),
                "b",
                BY_INTENT,
            ),
            (
                (Available, Device, "1"),
                (Required, User, "2"),
                "b",
                BY_INTENT,
            ),
            (
                (Required, User, "1"),
                (Required, Device, "2"),
                "b",
                BY_GROUP,
            ),
            (
                (Uninstall, Device, "2"),
                (Uninstall, Device, "1"),
                "b",
                BY_AGE,
            ),
        ];
        for ((ia, ka, ca), (ib, kb, cb), winner, expected_rule) in cases {
            let a = candidate("a", ia, ka, ca);
            let b = candidate("b", ib, kb, cb);
            for input in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
                let resolved = resolve(&input);
                assert_eq!(resolved.len(), 1);
                assert_eq!(resolved[0].winner.assignment_id, winner, "{ia:?}/{ib:?}");
                assert_eq!(resolved[0].overridden[0].rule, expected_rule);
            }
        }
    }

    #[test]
    fn result_is_in_service_order() {
        let mut late = candidate("a", Intent::Required, GroupKind::Device, "2");
        late.udid = "A".into();
        let mut early = candidate("b", Intent::Required, GroupKind::Device, "1");
        early.udid = "B".into();
        let resolved = resolve(&[late, early]);
        let order: Vec<&str> = resolved.iter().map(|e| e.winner.udid.as_str()).collect();
        assert_eq!(order, ["B", "A"]);
    }
}
