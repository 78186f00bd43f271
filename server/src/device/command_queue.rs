//! The command channel core: take a device's report, apply its result, answer with the
//! next queued command (or nothing). Transport-neutral.

use orchard_protocol::report::{CommandReport, CommandStatus};

use crate::device::identity::{self, DeviceIdentity};
use crate::device::install;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{CommandState, Exchange, InstallStatus, NewCommand};

/// Handles one command-channel body; returns the next command's envelope, or `None` for
/// the zero-byte body that ends the session.
pub async fn handle(
    state: &ServerState,
    identity: &DeviceIdentity,
    body: &[u8],
) -> ServerResult<Option<Vec<u8>>> {
    let report = CommandReport::from_xml(body)?;
    identity::authorize(state.store.as_ref(), identity, &report.udid).await?;
    let now = state.clock.now();
    if report.status == CommandStatus::Idle {
        // Once a session: the time is written with other devices' shortly, outside
        // the exchange's transaction.
        state.last_seen.note(&report.udid, now);
    }
    let mut outcome = None;
    let mut reconcile = false;
    if let (
        CommandStatus::Acknowledged
        | CommandStatus::Error
        | CommandStatus::CommandFormatError
        | CommandStatus::NotNow,
        Some(uuid),
    ) = (report.status, &report.command_uuid)
    {
        match state.store.command(&report.udid, uuid).await? {
            Some(command)
                if matches!(command.status, CommandState::Sent | CommandState::Queued) =>
            {
                crate::telemetry::command_result(&command.request_type, report.status.as_str());
                let applied = install::apply_result(state, &command, &report, body, now).await?;
                reconcile = applied.reconcile;
                outcome = Some(applied.outcome);
            }
            Some(_) => tracing::debug!(udid = %report.udid, %uuid, "duplicate result ignored"),
            None => {
                tracing::warn!(udid = %report.udid, %uuid, "result for an unknown command ignored")
            }
        }
    }
    // An Idle check-in with nothing to hand out: a read, no write transaction. A
    // device woken here was woken for something queued: its exchange is written
    // without asking first.
    if outcome.is_none()
        && report.status == CommandStatus::Idle
        && !state.push.is_woken(&report.udid)
        && !state.store.has_due_commands(&report.udid, now).await?
    {
        state.push.session_ended(&report.udid);
        return Ok(None);
    }
    let exchange = Exchange {
        udid: report.udid.clone(),
        // A new session: commands the device put off are offered again.
        new_session: report.status == CommandStatus::Idle,
        outcome,
        now,
    };
    let mut next = state.store.exchange(&exchange).await?;
    // What is handed out is checked again: an install that no longer holds is withdrawn
    // (each withdrawal closes a command, so this ends) and the next one is offered.
    while let Some(command) = &next {
        let Some(withdrawal) = crate::device::handout::check(state, command).await? else {
            break;
        };
        next = state
            .store
            .exchange(&Exchange {
                udid: report.udid.clone(),
                new_session: false,
                outcome: Some(withdrawal),
                now,
            })
            .await?;
    }
    if let Some(outcome) = &exchange.outcome {
        // Follow-ups due now go out in this session; later ones need a wake when due.
        let later: Vec<NewCommand> = outcome
            .follow_ups
            .iter()
            .filter(|c| c.not_before > exchange.now)
            .cloned()
            .collect();
        state.wake_for(&later);
        // An install that ended without the app, or an app removed, may have a license
        // to give back; a changed sign-in or restriction may change a decision. The
        // engine looks once the result is written, so it sees the command answered.
        if reconcile
            || outcome
                .installs
                .iter()
                .any(|i| matches!(i.status, InstallStatus::Failed | InstallStatus::Removed))
        {
            state.poke_reconciler();
        }
    }
    if next.is_none() {
        state.push.session_ended(&report.udid);
    }
    Ok(next.map(|c| c.payload))
}
