//! A queued install checked again when it is handed out: one whose assignment is gone
//! or changed (nothing applying installs the app on the device any more) or whose
//! license is gone is withdrawn and never sent. The decision is pure ([`decide`]); the
//! shell reads the device's assignments and licenses.

use orchard_protocol::AdamId;

use crate::engine::precedence::Effective;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{
    CommandOutcome, CommandState, InstallRecord, InstallStatus, Intent, LicenseRecord,
    LicenseState, QueuedCommand, UserLicenseRecord,
};

/// Why an install is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// No applying assignment installs the app on the device.
    NoAssignment,
    /// The applying assignment now removes the app.
    Uninstall,
    /// No license of the app serves the device (revoked, released or never confirmed).
    NoLicense,
}

impl Withdrawal {
    /// The install status and reason shown for the withdrawn install.
    pub fn status(self) -> (InstallStatus, &'static str) {
        match self {
            Self::NoAssignment => (
                InstallStatus::NotApplicable,
                "install withdrawn before it was sent: no assignment installs the app on this device any more",
            ),
            Self::Uninstall => (
                InstallStatus::NotApplicable,
                "install withdrawn before it was sent: the assignment that applies now uninstalls the app",
            ),
            Self::NoLicense => (
                InstallStatus::LicenseFailed,
                "install withdrawn before it was sent: the device no longer has a license for the app (revoked or released)",
            ),
        }
    }
}

/// Whether an install of app `app_id` (App Store id `adam_id`) may still go to the
/// device (sans-IO). `effective` are the device's applying assignments, each with the
/// App Store id of its app; licenses are the device's and its user's.
pub fn decide(
    app_id: &str,
    adam_id: AdamId,
    effective: &[(Effective, AdamId)],
    device_licenses: &[LicenseRecord],
    user_licenses: &[UserLicenseRecord],
) -> Result<(), Withdrawal> {
    // An any-token assignment may install a copy of the app bought with another token.
    let winner = effective
        .iter()
        .map(|(e, adam)| (&e.winner, adam))
        .find(|(w, adam)| w.app_id == app_id || (w.any_token && **adam == adam_id))
        .map(|(w, _)| w)
        .ok_or(Withdrawal::NoAssignment)?;
    if winner.intent == Intent::Uninstall {
        return Err(Withdrawal::Uninstall);
    }
    let held = device_licenses
        .iter()
        .any(|l| l.app_id == app_id && l.state == LicenseState::Associated)
        || user_licenses
            .iter()
            .any(|l| l.app_id == app_id && l.state == LicenseState::Associated);
    if held {
        Ok(())
    } else {
        Err(Withdrawal::NoLicense)
    }
}

/// Checks a command about to be handed out; returns the outcome that withdraws it, or
/// `None` when it may go. Only VPP installs (apps and books) are checked.
pub async fn check(
    state: &ServerState,
    command: &QueuedCommand,
) -> ServerResult<Option<CommandOutcome>> {
    if !matches!(
        command.request_type.as_str(),
        "InstallApplication" | "InstallMedia"
    ) {
        return Ok(None);
    }
    let Some(app_id) = command.app_id.as_deref() else {
        return Ok(None);
    };
    let store = state.store.as_ref();
    let Some(app) = store.app(app_id).await? else {
        return Ok(Some(withdraw(
            state,
            command,
            app_id,
            Withdrawal::NoAssignment,
        )));
    };
    let standing = store.device_standing(&command.udid).await?;
    let mut effective = Vec::new();
    for e in crate::engine::precedence::resolve(&standing.candidates) {
        let adam = if e.winner.app_id == app.id {
            app.adam_id
        } else {
            match store.app(&e.winner.app_id).await? {
                Some(other) => other.adam_id,
                None => continue,
            }
        };
        effective.push((e, adam));
    }
    Ok(
        match decide(
            app_id,
            app.adam_id,
            &effective,
            &standing.licenses,
            &standing.user_licenses,
        ) {
            Ok(()) => None,
            Err(why) => Some(withdraw(state, command, app_id, why)),
        },
    )
}

fn withdraw(
    state: &ServerState,
    command: &QueuedCommand,
    app_id: &str,
    why: Withdrawal,
) -> CommandOutcome {
    let now = state.clock.now();
    let (status, reason) = why.status();
    tracing::info!(udid = %command.udid, uuid = %command.uuid, app = app_id, reason, "install withdrawn");
    CommandOutcome {
        udid: command.udid.clone(),
        uuid: command.uuid.clone(),
        status: CommandState::Cancelled,
        result: Vec::new(),
        installs: vec![InstallRecord {
            app_id: app_id.to_owned(),
            udid: command.udid.clone(),
            status,
            device_status: None,
            version: None,
            reason: Some(reason.to_owned()),
            updated_at: now,
            since: None,
        }],
        follow_ups: Vec::new(),
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::Candidate;

    /// (applying assignments, device licenses, user licenses, decision).
    type Case<'a> = (
        &'a [(Effective, AdamId)],
        &'a [LicenseRecord],
        &'a [UserLicenseRecord],
        Result<(), Withdrawal>,
    );

    fn applying(app_id: &str, intent: Intent, any_token: bool, adam: u64) -> (Effective, AdamId) {
        (
            Effective {
                winner: Candidate {
                    app_id: app_id.into(),
                    intent,
                    any_token,
                    ..Candidate::example()
                },
                overridden: vec![],
            },
            AdamId(adam),
        )
    }

    fn license(app_id: &str, state: LicenseState) -> LicenseRecord {
        LicenseRecord {
            app_id: app_id.into(),
            udid: "U".into(),
            serial_number: "S".into(),
            state,
            event_id: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn hand_out_table() {
        let held = [license("app", LicenseState::Associated)];
        let releasing = [license("app", LicenseState::Releasing)];
        let user_held = [UserLicenseRecord {
            app_id: "app".into(),
            user_id: "ana".into(),
            state: LicenseState::Associated,
            event_id: None,
            error: None,
            updated_at: Timestamp::UNIX_EPOCH,
        }];
        let required = [applying("app", Intent::Required, false, 1)];
        let other_token = [applying("other", Intent::Required, true, 1)];
        let other_app = [applying("other", Intent::Required, false, 2)];
        let uninstall = [applying("app", Intent::Uninstall, false, 1)];
        let cases: [Case<'_>; 8] = [
            (&required, &held, &[], Ok(())),
            (&required, &[], &user_held, Ok(())),
            (&other_token, &held, &[], Ok(())),
            (&[], &held, &[], Err(Withdrawal::NoAssignment)),
            (&other_app, &held, &[], Err(Withdrawal::NoAssignment)),
            (&uninstall, &held, &[], Err(Withdrawal::Uninstall)),
            (&required, &releasing, &[], Err(Withdrawal::NoLicense)),
            (&required, &[], &[], Err(Withdrawal::NoLicense)),
        ];
        for (i, (effective, devices, users, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide("app", AdamId(1), effective, devices, users),
                expected,
                "case {i}"
            );
        }
    }
}
