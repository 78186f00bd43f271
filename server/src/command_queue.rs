//! The command channel core: take a device's report, apply its result, answer with the
//! next queued command (or nothing). Transport-neutral.

use orchard_protocol::command::CommandEnvelope;
use orchard_protocol::report::{CommandReport, CommandStatus};

use crate::clock;
use crate::error::ServerResult;
use crate::identity::{self, DeviceIdentity};
use crate::install;
use crate::state::ServerState;
use crate::store::{CommandState, NewCommand};

/// Handles one command-channel body; returns the next command's envelope, or `None` for
/// the zero-byte body that ends the session.
pub async fn handle(
    state: &ServerState,
    identity: &DeviceIdentity,
    body: &[u8],
) -> ServerResult<Option<Vec<u8>>> {
    let report = CommandReport::from_xml(body)?;
    identity::authorize(state.store.as_ref(), identity, &report.udid).await?;
    let now = clock::now();
    state.store.touch_device(&report.udid, &now).await?;
    if report.status == CommandStatus::Idle {
        // A new session: commands the device put off are offered again.
        state.store.reopen_not_now(&report.udid).await?;
    } else if let Some(uuid) = &report.command_uuid {
        match state.store.command(&report.udid, uuid).await? {
            Some(command)
                if matches!(command.status, CommandState::Sent | CommandState::Queued) =>
            {
                let outcome = install::apply_result(state, &command, &report, body, &now).await?;
                state.store.complete_command(&outcome).await?;
                state.wake_for(&outcome.follow_ups);
            }
            Some(_) => tracing::debug!(udid = %report.udid, %uuid, "duplicate result ignored"),
            None => {
                tracing::warn!(udid = %report.udid, %uuid, "result for an unknown command ignored")
            }
        }
    }
    Ok(state
        .store
        .next_command(&report.udid, &now)
        .await?
        .map(|c| c.payload))
}

/// Builds a queue entry for a command.
pub fn new_command(
    udid: &orchard_protocol::Udid,
    command: orchard_protocol::command::Command,
    app_id: Option<String>,
    not_before: String,
) -> ServerResult<NewCommand> {
    let envelope = CommandEnvelope {
        command_uuid: uuid::Uuid::new_v4().to_string().into(),
        command,
    };
    Ok(NewCommand {
        uuid: envelope.command_uuid.clone(),
        udid: udid.clone(),
        request_type: envelope.command.request_type().to_owned(),
        app_id,
        payload: envelope.to_xml()?,
        not_before,
        created_at: clock::now(),
    })
}
