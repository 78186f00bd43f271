//! Install tracking past the acknowledgement: an acknowledged InstallApplication is not
//! yet an installed app. The server first looks at the device's managed apps
//! (InstalledApplicationList, `ManagedAppsOnly`): the app listed, installed and at the
//! expected version is verified with that one command. Otherwise ManagedApplicationList
//! says why, and is asked again until the app is `Managed`; then InstalledApplicationList
//! reads the installed version.

use std::time::Duration;

use orchard_protocol::Udid;
use orchard_protocol::command::{
    BookState, Command, CommandEnvelope, InstallApplicationResponse, InstallMediaResponse,
    InstalledApplication, InstalledApplicationList, InstalledApplicationListResponse,
    InvitationResult, ManagedAppStatus, ManagedApplicationList, ManagedApplicationListResponse,
    ManagedMediaList, ManagedMediaListResponse,
};
use orchard_protocol::report::{CommandReport, CommandStatus};

use crate::clock::Timestamp;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{
    AppRecord, AuthenticateFacts, CommandOutcome, CommandState, InstallRecord, InstallStatus,
    NewCommand, QueuedCommand, VppUserStatus,
};

/// What one command result means for installs.
#[derive(Debug, Default, PartialEq)]
pub struct Interpretation {
    /// Install state to write, if the result concerns an app.
    pub install: Option<InstallUpdate>,
    /// Follow-up query to queue, with the delay before it may be sent.
    pub follow_up: Option<(Command, Duration)>,
}

/// A change of one app's install state.
#[derive(Debug, PartialEq, Eq)]
pub struct InstallUpdate {
    /// New status.
    pub status: InstallStatus,
    /// Apple's status, when the device reported one.
    pub device_status: Option<ManagedAppStatus>,
    /// Installed version.
    pub version: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
}

impl InstallUpdate {
    fn new(status: InstallStatus, device_status: Option<ManagedAppStatus>) -> Self {
        Self {
            status,
            device_status,
            version: None,
            reason: None,
        }
    }

    fn failed(device_status: Option<ManagedAppStatus>, reason: String) -> Self {
        Self {
            status: InstallStatus::Failed,
            device_status,
            version: None,
            reason: Some(reason),
        }
    }
}

fn managed_list(bundle_id: &str) -> Command {
    Command::ManagedApplicationList(ManagedApplicationList {
        identifiers: Some(vec![bundle_id.to_owned()]),
    })
}

fn installed_list(bundle_id: &str) -> Command {
    installed_apps(bundle_id, None)
}

/// The first look after an install: the app among the device's managed apps. Listed,
/// installed and at the expected version, the install is verified; otherwise
/// ManagedApplicationList follows at once to say why.
fn first_look(bundle_id: &str) -> Command {
    installed_apps(bundle_id, Some(true))
}

/// InstalledApplicationList of one app, with the keys the server reads.
fn installed_apps(bundle_id: &str, managed_apps_only: Option<bool>) -> Command {
    Command::InstalledApplicationList(InstalledApplicationList {
        identifiers: Some(vec![bundle_id.to_owned()]),
        managed_apps_only,
        items: Some(
            [
                "Identifier",
                "Name",
                "ShortVersion",
                "Version",
                "Installing",
            ]
            .map(String::from)
            .to_vec(),
        ),
    })
}

/// Whether a queued command is an install's first look ([`first_look`]): an
/// InstalledApplicationList of managed apps only.
pub fn is_first_look(command: &QueuedCommand) -> bool {
    command.request_type == "InstalledApplicationList"
        && matches!(
            CommandEnvelope::from_xml(&command.payload).map(|e| e.command),
            Ok(Command::InstalledApplicationList(
                InstalledApplicationList {
                    managed_apps_only: Some(true),
                    ..
                }
            ))
        )
}

/// Whether a listed app is at the version the App Store offers (any, when that is not
/// known).
fn at_expected_version(listed: &InstalledApplication, app: &AppRecord) -> bool {
    let installed = listed
        .short_version
        .as_deref()
        .or(listed.version.as_deref());
    app.version
        .as_deref()
        .is_none_or(|expected| installed == Some(expected))
}

fn error_reason(report: &CommandReport) -> String {
    report
        .error_chain
        .first()
        .map(|e| {
            e.us_english_description
                .clone()
                .unwrap_or_else(|| e.localized_description.clone())
        })
        .unwrap_or_else(|| "the device reported an error without details".to_owned())
}

/// Whether an install `Installing` since `since` has outlived `timeout` at `now`.
pub fn timed_out(since: Timestamp, now: Timestamp, timeout: Duration) -> bool {
    now.since(since) > timeout
}

/// Orchard's status for an app still on its way: waiting for the user, or installing.
fn progress(status: ManagedAppStatus) -> InstallStatus {
    match status {
        ManagedAppStatus::Prompting
        | ManagedAppStatus::PromptingForLogin
        | ManagedAppStatus::PromptingForUpdate
        | ManagedAppStatus::PromptingForUpdateLogin
        | ManagedAppStatus::PromptingForManagement => InstallStatus::Prompting,
        _ => InstallStatus::Installing,
    }
}

/// What a book's state on the device means (sans-IO); `version` is the installed one.
fn book_progress(state: BookState, version: Option<String>, poll: Duration) -> Interpretation {
    let list = || Some((Command::ManagedMediaList(ManagedMediaList {}), poll));
    let install = match state {
        BookState::Installed | BookState::UserInstalledBook => InstallUpdate {
            status: InstallStatus::Installed,
            device_status: None,
            version,
            reason: (state == BookState::UserInstalledBook)
                .then(|| "the user had bought the book already".to_owned()),
        },
        BookState::PromptingForLogin => {
            return Interpretation {
                install: Some(InstallUpdate {
                    reason: Some("the device asks for the user's Apple Account".into()),
                    ..InstallUpdate::new(InstallStatus::Prompting, None)
                }),
                follow_up: list(),
            };
        }
        s if s.is_in_progress() => {
            return Interpretation {
                install: Some(InstallUpdate::new(InstallStatus::Installing, None)),
                follow_up: list(),
            };
        }
        BookState::Uninstalled => InstallUpdate {
            reason: Some("the user removed the book".into()),
            ..InstallUpdate::new(InstallStatus::NotInstalled, None)
        },
        s => InstallUpdate::failed(None, format!("the device reported the book {s:?}")),
    };
    Interpretation {
        install: Some(install),
        follow_up: None,
    }
}

/// Reads a result for a command that concerns `app` (sans-IO); `first_look_asked`: the
/// command was an install's first look ([`is_first_look`]).
pub fn interpret(
    request_type: &str,
    first_look_asked: bool,
    app: Option<&AppRecord>,
    report: &CommandReport,
    poll: Duration,
) -> Interpretation {
    let Some(app) = app else {
        return Interpretation::default();
    };
    let bundle_id = app.bundle_id.clone();
    let follow = |cmd: fn(&str) -> Command, delay: Duration, id: Option<&str>| {
        id.or(bundle_id.as_deref()).map(|b| (cmd(b), delay))
    };
    match (request_type, report.status) {
        (_, CommandStatus::NotNow | CommandStatus::Idle) => Interpretation::default(),
        ("InstallMedia", CommandStatus::Acknowledged) => {
            let response: InstallMediaResponse = report.response().unwrap_or_default();
            let state = response.state.unwrap_or(BookState::Queued);
            if state == BookState::Installed {
                // Verified by the list of managed books, like an app by its list.
                Interpretation {
                    install: Some(InstallUpdate::new(InstallStatus::Installing, None)),
                    follow_up: Some((
                        Command::ManagedMediaList(ManagedMediaList {}),
                        Duration::ZERO,
                    )),
                }
            } else {
                book_progress(state, None, poll)
            }
        }
        ("InstallMedia", _) => Interpretation {
            install: Some(InstallUpdate::failed(
                None,
                format!("the device refused the book: {}", error_reason(report)),
            )),
            follow_up: None,
        },
        ("ManagedMediaList", CommandStatus::Acknowledged) => {
            let list: ManagedMediaListResponse = report.response().unwrap_or_default();
            match list
                .books
                .iter()
                .find(|b| b.itunes_store_id == Some(app.adam_id))
            {
                Some(book) => book_progress(
                    book.state.unwrap_or(BookState::Queued),
                    book.version.clone().or_else(|| app.version.clone()),
                    poll,
                ),
                None => Interpretation {
                    install: Some(InstallUpdate::failed(
                        None,
                        "the device does not list the book among its managed books".into(),
                    )),
                    follow_up: None,
                },
            }
        }
        ("RemoveApplication", CommandStatus::Acknowledged) => Interpretation {
            install: Some(InstallUpdate::new(InstallStatus::Removed, None)),
            follow_up: None,
        },
        ("RemoveApplication", _) => {
            // Nothing to remove is as good as removed.
            let absent = report.error_chain.iter().any(|e| e.error_code == 12029);
            Interpretation {
                install: Some(if absent {
                    InstallUpdate {
                        reason: Some("the app was not on the device".into()),
                        ..InstallUpdate::new(InstallStatus::Removed, None)
                    }
                } else {
                    InstallUpdate::failed(
                        None,
                        format!(
                            "the device could not remove the app: {}",
                            error_reason(report)
                        ),
                    )
                }),
                follow_up: None,
            }
        }
        ("InstallApplication", CommandStatus::Acknowledged) => {
            let response: InstallApplicationResponse = report.response().unwrap_or_default();
            let state = response.state.unwrap_or(ManagedAppStatus::Queued);
            let id = response.identifier.as_deref();
            match state {
                ManagedAppStatus::Managed => Interpretation {
                    install: Some(InstallUpdate::new(InstallStatus::Installing, Some(state))),
                    follow_up: follow(installed_list, Duration::ZERO, id),
                },
                // A prompt is not answered within a poll: its status is what to ask.
                s if s.is_in_progress() && progress(s) == InstallStatus::Prompting => {
                    Interpretation {
                        install: Some(InstallUpdate::new(progress(s), Some(s))),
                        follow_up: follow(managed_list, poll, id),
                    }
                }
                s if s.is_in_progress() => Interpretation {
                    install: Some(InstallUpdate::new(progress(s), Some(s))),
                    follow_up: follow(first_look, poll, id),
                },
                s => Interpretation {
                    install: Some(InstallUpdate::failed(
                        Some(s),
                        format!("the device reported {}", s.as_str()),
                    )),
                    follow_up: None,
                },
            }
        }
        ("InstallApplication", _) => {
            let response: InstallApplicationResponse = report.response().unwrap_or_default();
            let reason = match response.rejection_reason {
                Some(r) => format!(
                    "the device refused the install ({r:?}): {}",
                    error_reason(report)
                ),
                None => format!("the device refused the install: {}", error_reason(report)),
            };
            Interpretation {
                install: Some(InstallUpdate::failed(None, reason)),
                follow_up: None,
            }
        }
        ("ManagedApplicationList", CommandStatus::Acknowledged) => {
            let Some(bundle) = bundle_id.as_deref() else {
                return Interpretation::default();
            };
            let list: ManagedApplicationListResponse = report.response().unwrap_or_default();
            match list.managed_application_list.get(bundle).map(|a| a.status) {
                Some(ManagedAppStatus::Managed) => Interpretation {
                    install: Some(InstallUpdate::new(
                        InstallStatus::Installing,
                        Some(ManagedAppStatus::Managed),
                    )),
                    follow_up: follow(installed_list, Duration::ZERO, None),
                },
                Some(s) if s.is_in_progress() => Interpretation {
                    install: Some(InstallUpdate::new(progress(s), Some(s))),
                    follow_up: follow(managed_list, poll, None),
                },
                Some(ManagedAppStatus::ManagedButUninstalled) => Interpretation {
                    install: Some(InstallUpdate {
                        status: InstallStatus::NotInstalled,
                        device_status: Some(ManagedAppStatus::ManagedButUninstalled),
                        version: None,
                        reason: Some(
                            "the user deleted the app; it stays managed and its license stays assigned"
                                .into(),
                        ),
                    }),
                    follow_up: None,
                },
                Some(ManagedAppStatus::UserRejected) => Interpretation {
                    install: Some(InstallUpdate::failed(
                        Some(ManagedAppStatus::UserRejected),
                        "the user declined the install prompt".into(),
                    )),
                    follow_up: None,
                },
                // Still installed, at the version it had.
                Some(ManagedAppStatus::UpdateRejected) => Interpretation {
                    install: Some(InstallUpdate {
                        status: InstallStatus::Installed,
                        device_status: Some(ManagedAppStatus::UpdateRejected),
                        version: None,
                        reason: Some(
                            "the user declined the update; the installed version stays".into(),
                        ),
                    }),
                    follow_up: None,
                },
                Some(s) => Interpretation {
                    install: Some(InstallUpdate::failed(
                        Some(s),
                        format!("the device reported {}", s.as_str()),
                    )),
                    follow_up: None,
                },
                None => Interpretation {
                    install: Some(InstallUpdate::failed(
                        None,
                        "the device does not list the app as managed".into(),
                    )),
                    follow_up: None,
                },
            }
        }
        ("InstalledApplicationList", CommandStatus::Acknowledged) => {
            let Some(bundle) = bundle_id.as_deref() else {
                return Interpretation::default();
            };
            let list: InstalledApplicationListResponse = report.response().unwrap_or_default();
            let entry = list
                .installed_application_list
                .iter()
                .find(|a| a.identifier.as_deref() == Some(bundle));
            match entry {
                // Still installing: a first look is taken again, which verifies the
                // app in one command once it is installed.
                Some(a) if a.installing == Some(true) => Interpretation {
                    install: Some(InstallUpdate::new(
                        InstallStatus::Installing,
                        Some(ManagedAppStatus::Installing),
                    )),
                    follow_up: if first_look_asked {
                        follow(first_look, poll, None)
                    } else {
                        follow(managed_list, poll, None)
                    },
                },
                // Not listed among the managed apps, or at another version (an update
                // under way, or declined): the device's status of the app says why.
                Some(a) if first_look_asked && !at_expected_version(a, app) => Interpretation {
                    install: None,
                    follow_up: follow(managed_list, Duration::ZERO, None),
                },
                None if first_look_asked => Interpretation {
                    install: None,
                    follow_up: follow(managed_list, Duration::ZERO, None),
                },
                Some(a) => Interpretation {
                    install: Some(InstallUpdate {
                        status: InstallStatus::Installed,
                        device_status: Some(ManagedAppStatus::Managed),
                        version: a.short_version.clone().or_else(|| a.version.clone()),
                        reason: None,
                    }),
                    follow_up: None,
                },
                None => Interpretation {
                    install: Some(InstallUpdate::failed(
                        None,
                        "the app is not installed on the device".into(),
                    )),
                    follow_up: None,
                },
            }
        }
        (_, CommandStatus::Acknowledged) => Interpretation::default(),
        (_, _) => Interpretation {
            install: Some(InstallUpdate::failed(
                None,
                format!("{request_type} failed: {}", error_reason(report)),
            )),
            follow_up: None,
        },
    }
}

/// A command result read: what to write, and whether the licensing engine should look
/// again once it is written (it reads the command's state, so not before).
#[derive(Debug)]
pub struct Applied {
    /// The writes of the result.
    pub outcome: CommandOutcome,
    /// The result changed a sign-in, program membership or App Store restriction.
    pub reconcile: bool,
}

/// Applies a device's result for `command`: returns everything to store in one transaction.
pub async fn apply_result(
    state: &ServerState,
    command: &QueuedCommand,
    report: &CommandReport,
    body: &[u8],
    now: Timestamp,
) -> ServerResult<Applied> {
    let status = match report.status {
        CommandStatus::Acknowledged => CommandState::Acknowledged,
        CommandStatus::NotNow => CommandState::NotNow,
        CommandStatus::Idle => CommandState::Sent,
        CommandStatus::Error | CommandStatus::CommandFormatError => CommandState::Error,
    };
    // A changed sign-in, program membership or App Store restriction may change what
    // the licensing engine decides; it looks again once the result is written.
    let mut reconcile = false;
    if command.request_type == "DeviceInformation" && report.status == CommandStatus::Acknowledged {
        record_device_information(state, &report.udid, report).await?;
        reconcile = true;
    }
    if command.request_type == "InviteToProgram" {
        reconcile |= read_invitation_result(state, report, now).await?;
    }
    if command.request_type == "Restrictions" && report.status == CommandStatus::Acknowledged {
        let answer: orchard_protocol::command::RestrictionsResponse = report.response()?;
        state
            .store
            .record_restrictions(&report.udid, answer.app_store_allowed())
            .await?;
        reconcile = true;
    }
    let app = match &command.app_id {
        Some(id) => state.store.app(id).await?,
        None => None,
    };
    let mut reading = interpret(
        &command.request_type,
        is_first_look(command),
        app.as_ref(),
        report,
        state.options.install_poll_interval,
    );
    // An install still on its way may have outlived its timeout. Not looked at when the
    // install is acknowledged (one read less for every install): its first look follows
    // within a poll, and every look while it installs checks.
    if let (Some(app), Some(update)) = (&app, reading.install.as_mut())
        && update.status == InstallStatus::Installing
        && update.device_status != Some(ManagedAppStatus::Managed)
        && command.request_type != "InstallApplication"
    {
        let timeout = app
            .install_timeout_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(state.options.install_timeout, Duration::from_secs);
        let since = state
            .store
            .installs_of_device(&report.udid)
            .await?
            .into_iter()
            .find(|r| r.app_id == app.id && r.status == InstallStatus::Installing)
            .and_then(|r| r.since);
        if let Some(since) = since
            && timed_out(since, now, timeout)
        {
            *update = InstallUpdate::failed(
                update.device_status,
                format!(
                    "the install did not finish within {} s; the device still reports {}",
                    timeout.as_secs(),
                    update
                        .device_status
                        .map_or("it installing", ManagedAppStatus::as_str)
                ),
            );
            reading.follow_up = None;
        }
    }
    let mut installs = Vec::new();
    let mut follow_ups: Vec<NewCommand> = Vec::new();
    if let (Some(app), Some(update)) = (&app, reading.install) {
        installs.push(InstallRecord {
            app_id: app.id.clone(),
            udid: report.udid.clone(),
            status: update.status,
            device_status: update.device_status.map(|s| s.as_str().to_owned()),
            version: update.version,
            reason: update.reason,
            updated_at: now,
            since: None,
        });
    }
    if let (Some(app), Some((cmd, delay))) = (&app, reading.follow_up) {
        follow_ups.push(
            // Due from the time of this report: a follow-up due at once goes out in this
            // session (a second reading of the clock would put it after the exchange,
            // costing the device another wake and session).
            NewCommand::new(&report.udid, cmd, Some(app.id.clone()), now)?.not_before(now + delay),
        );
    }
    Ok(Applied {
        outcome: CommandOutcome {
            udid: report.udid.clone(),
            uuid: command.uuid.clone(),
            status,
            result: body.to_vec(),
            installs,
            follow_ups,
            now,
        },
        reconcile,
    })
}

/// Reads a device's answer to InviteToProgram: `Acknowledged` (the invitation is
/// shown), or a refusal (`InvalidInvitationURL`, `InvalidProgramID`, an error), after
/// which the invitation is sent again later with a fresh URL. `NotNow` needs nothing:
/// the command is offered again in the device's next session. True after a refusal:
/// the licensing engine then looks again.
async fn read_invitation_result(
    state: &ServerState,
    report: &CommandReport,
    now: Timestamp,
) -> ServerResult<bool> {
    let refusal = match report.status {
        CommandStatus::Acknowledged => {
            let answer: orchard_protocol::command::InviteToProgramResponse = report.response()?;
            match answer.invitation_result {
                InvitationResult::Acknowledged => return Ok(false),
                other => format!("the device refused the VPP invitation ({other:?})"),
            }
        }
        CommandStatus::Error | CommandStatus::CommandFormatError => format!(
            "the device could not show the VPP invitation: {}",
            error_reason(report)
        ),
        CommandStatus::NotNow | CommandStatus::Idle => return Ok(false),
    };
    for mut user in state.store.vpp_users().await? {
        let invited_here = user.invited_udid.as_deref() == Some(report.udid.as_str())
            && user.invited_at.is_some()
            && user.status == VppUserStatus::Registered
            && user.invitation_answer.is_none();
        if !invited_here {
            continue;
        }
        tracing::warn!(udid = %report.udid, user = %user.user_id, %refusal, "VPP invitation refused; it is sent again later");
        state.apple_backoff.failed(
            &crate::retry::invitation_key(&user.token_id, &user.user_id),
            now,
        );
        user.invited_at = None;
        user.invited_udid = None;
        user.error = Some(format!("{refusal}; it is sent again"));
        user.updated_at = now;
        state.store.put_vpp_user(&user).await?;
    }
    Ok(true)
}

async fn record_device_information(
    state: &ServerState,
    udid: &Udid,
    report: &CommandReport,
) -> ServerResult<()> {
    let info: orchard_protocol::command::DeviceInformationResponse = report.response()?;
    let q = info.query_responses;
    let facts = AuthenticateFacts {
        serial_number: q.serial_number,
        product_name: q.product_name,
        os_version: q.os_version,
    };
    state
        .store
        .record_device_information(
            udid,
            &facts,
            q.is_supervised,
            q.itunes_store_account_hash.as_deref(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use orchard_protocol::AdamId;
    use orchard_protocol::command::{InstalledApplication, ManagedApplication};
    use orchard_protocol::report::ErrorChainItem;

    use crate::store::LicenseCounts;

    const POLL: Duration = Duration::from_secs(2);

    fn app() -> AppRecord {
        AppRecord {
            id: "app-1".into(),
            token_id: "t".into(),
            adam_id: AdamId(1),
            pricing_param: "STDQ".into(),
            product_type: "App".into(),
            name: Some("Example".into()),
            bundle_id: Some("com.example.app".into()),
            version: Some("2.0".into()),
            platforms: vec!["iOS".into()],
            device_assignable: true,
            counts: LicenseCounts::default(),
            updated_at: Timestamp::UNIX_EPOCH,
            install_timeout_seconds: None,
            store_url: None,
            minimum_os_version: None,
        }
    }

    fn report(status: CommandStatus) -> CommandReport {
        CommandReport::new("U".into(), status, Some("c".into()))
    }

    fn managed(status: ManagedAppStatus) -> CommandReport {
        let mut list = ManagedApplicationListResponse::default();
        list.managed_application_list.insert(
            "com.example.app".into(),
            ManagedApplication {
                status,
                management_flags: 1,
                has_configuration: None,
                has_feedback: None,
                is_validated: None,
                external_version_identifier: None,
            },
        );
        report(CommandStatus::Acknowledged)
            .with_response(&list)
            .unwrap()
    }

    fn acknowledged(state: ManagedAppStatus) -> CommandReport {
        report(CommandStatus::Acknowledged)
            .with_response(&InstallApplicationResponse {
                identifier: Some("com.example.app".into()),
                state: Some(state),
                rejection_reason: None,
            })
            .unwrap()
    }

    fn listed(short_version: &str, installing: bool) -> CommandReport {
        let list = InstalledApplicationListResponse {
            installed_application_list: vec![InstalledApplication {
                identifier: Some("com.example.app".into()),
                short_version: Some(short_version.into()),
                installing: Some(installing),
                ..Default::default()
            }],
        };
        report(CommandStatus::Acknowledged)
            .with_response(&list)
            .unwrap()
    }

    /// A follow-up's request type, whether it is a first look, and its delay.
    type FollowUp = (String, bool, Duration);

    /// The follow-up of a reading.
    fn follow_up(i: &Interpretation) -> Option<FollowUp> {
        i.follow_up.as_ref().map(|(cmd, delay)| {
            let queued = QueuedCommand {
                uuid: "f".into(),
                udid: "U".into(),
                request_type: cmd.request_type().to_owned(),
                app_id: Some("app-1".into()),
                payload: NewCommand::new(&"U".into(), cmd.clone(), None, Timestamp::UNIX_EPOCH)
                    .unwrap()
                    .payload,
                status: CommandState::Queued,
                created_at: Timestamp::UNIX_EPOCH,
            };
            (
                cmd.request_type().to_owned(),
                is_first_look(&queued),
                *delay,
            )
        })
    }

    #[test]
    fn an_acknowledged_install_is_looked_at_among_the_managed_apps_after_a_poll() {
        let i = interpret(
            "InstallApplication",
            false,
            Some(&app()),
            &acknowledged(ManagedAppStatus::Installing),
            POLL,
        );
        assert_eq!(
            i.install.as_ref().unwrap().status,
            InstallStatus::Installing
        );
        assert_eq!(
            follow_up(&i),
            Some(("InstalledApplicationList".into(), true, POLL))
        );
        // A prompt is not answered within a poll: the device's status is asked.
        let i = interpret(
            "InstallApplication",
            false,
            Some(&app()),
            &acknowledged(ManagedAppStatus::Prompting),
            POLL,
        );
        assert_eq!(i.install.as_ref().unwrap().status, InstallStatus::Prompting);
        assert_eq!(
            follow_up(&i),
            Some(("ManagedApplicationList".into(), false, POLL))
        );
    }

    #[test]
    fn first_look_table() {
        let absent = report(CommandStatus::Acknowledged)
            .with_response(&InstalledApplicationListResponse::default())
            .unwrap();
        // (the device's list, the install written, the follow-up).
        let cases: [(CommandReport, Option<InstallStatus>, Option<FollowUp>); 4] = [
            // Listed, installed, at the App Store's version: verified in one command.
            (listed("2.0", false), Some(InstallStatus::Installed), None),
            // Still installing: another first look after a poll.
            (
                listed("2.0", true),
                Some(InstallStatus::Installing),
                Some(("InstalledApplicationList".into(), true, POLL)),
            ),
            // Another version (an update under way or declined): the status says which.
            (
                listed("1.0", false),
                None,
                Some(("ManagedApplicationList".into(), false, Duration::ZERO)),
            ),
            // Not among the managed apps: the status says why, at once.
            (
                absent,
                None,
                Some(("ManagedApplicationList".into(), false, Duration::ZERO)),
            ),
        ];
        for (i, (list, install, follow)) in cases.into_iter().enumerate() {
            let reading = interpret("InstalledApplicationList", true, Some(&app()), &list, POLL);
            assert_eq!(
                reading.install.as_ref().map(|u| u.status),
                install,
                "case {i}"
            );
            assert_eq!(follow_up(&reading), follow, "case {i}");
        }
        // The look after the status said Managed is the last: another version is the
        // installed one, and an app not listed is not installed.
        let reading = interpret(
            "InstalledApplicationList",
            false,
            Some(&app()),
            &listed("1.0", false),
            POLL,
        );
        let update = reading.install.unwrap();
        assert_eq!(
            (update.status, update.version.as_deref()),
            (InstallStatus::Installed, Some("1.0"))
        );
        assert_eq!(reading.follow_up, None);
    }

    #[test]
    fn installs_time_out_only_after_the_timeout() {
        // The server's clock, moved by hand: no sleeping.
        let since: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let clock = ManualClock::new(since);
        let minute = Duration::from_secs(60);
        clock.advance(Duration::from_secs(59));
        assert!(!timed_out(since, clock.now(), minute));
        clock.advance(Duration::from_millis(1500));
        assert!(timed_out(since, clock.now(), minute));
    }

    #[test]
    fn managed_status_table() {
        let cases = [
            (
                ManagedAppStatus::Managed,
                InstallStatus::Installing,
                Some("InstalledApplicationList"),
            ),
            (
                ManagedAppStatus::Installing,
                InstallStatus::Installing,
                Some("ManagedApplicationList"),
            ),
            (
                ManagedAppStatus::Prompting,
                InstallStatus::Prompting,
                Some("ManagedApplicationList"),
            ),
            (
                ManagedAppStatus::PromptingForLogin,
                InstallStatus::Prompting,
                Some("ManagedApplicationList"),
            ),
            (
                ManagedAppStatus::Updating,
                InstallStatus::Installing,
                Some("ManagedApplicationList"),
            ),
            (ManagedAppStatus::UserRejected, InstallStatus::Failed, None),
            (
                ManagedAppStatus::UpdateRejected,
                InstallStatus::Installed,
                None,
            ),
            (
                ManagedAppStatus::ManagedButUninstalled,
                InstallStatus::NotInstalled,
                None,
            ),
            (ManagedAppStatus::Failed, InstallStatus::Failed, None),
        ];
        for (device, expected, follow) in cases {
            let i = interpret(
                "ManagedApplicationList",
                false,
                Some(&app()),
                &managed(device),
                POLL,
            );
            let update = i.install.unwrap();
            assert_eq!(update.status, expected, "{device:?}");
            assert_eq!(update.device_status, Some(device));
            assert_eq!(
                i.follow_up
                    .map(|(c, _)| c.request_type().to_owned())
                    .as_deref(),
                follow,
                "{device:?}"
            );
        }
    }

    #[test]
    fn installed_list_confirms_the_version() {
        let list = InstalledApplicationListResponse {
            installed_application_list: vec![InstalledApplication {
                identifier: Some("com.example.app".into()),
                short_version: Some("2.0".into()),
                installing: Some(false),
                ..Default::default()
            }],
        };
        let r = report(CommandStatus::Acknowledged)
            .with_response(&list)
            .unwrap();
        let update = interpret("InstalledApplicationList", false, Some(&app()), &r, POLL)
            .install
            .unwrap();
        assert_eq!(update.status, InstallStatus::Installed);
        assert_eq!(update.version.as_deref(), Some("2.0"));
    }

    #[test]
    fn missing_app_in_installed_list_is_not_installed() {
        let r = report(CommandStatus::Acknowledged)
            .with_response(&InstalledApplicationListResponse::default())
            .unwrap();
        let update = interpret("InstalledApplicationList", false, Some(&app()), &r, POLL)
            .install
            .unwrap();
        assert_eq!(update.status, InstallStatus::Failed);
    }

    #[test]
    fn refused_install_carries_the_devices_reason() {
        let mut r = report(CommandStatus::Error);
        r.error_chain.push(ErrorChainItem {
            error_code: 12064,
            error_domain: "MCMDMErrorDomain".into(),
            localized_description: "App Store disabled".into(),
            us_english_description: Some("The App Store is disabled".into()),
        });
        let update = interpret("InstallApplication", false, Some(&app()), &r, POLL)
            .install
            .unwrap();
        assert_eq!(update.status, InstallStatus::Failed);
        assert!(update.reason.unwrap().contains("The App Store is disabled"));
    }

    #[test]
    fn not_now_changes_nothing() {
        assert_eq!(
            interpret(
                "InstallApplication",
                false,
                Some(&app()),
                &report(CommandStatus::NotNow),
                POLL
            ),
            Interpretation::default()
        );
    }
}
