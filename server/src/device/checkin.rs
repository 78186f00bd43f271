//! The check-in core: Authenticate, TokenUpdate and CheckOut, named after Apple's
//! messages, and Orchard's prompt report. Transport-neutral: it gets the device identity and the body.

use orchard_protocol::checkin::CheckinMessage;
use orchard_protocol::command::{Command, DeviceInformation, Restrictions};

use crate::device::identity::{self, DeviceIdentity};
use crate::device::{portal, prompt};
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{AuthenticateFacts, EnrollmentStatus, NewCommand};

/// The queries Orchard asks every device on its first TokenUpdate.
pub const DEVICE_QUERIES: [&str; 10] = [
    "UDID",
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "ProductName",
    "Model",
    "SerialNumber",
    "IsSupervised",
    "iTunesStoreAccountIsActive",
    "iTunesStoreAccountHash",
];

/// Handles one check-in body. The answer is always an empty 200 body.
pub async fn handle(
    state: &ServerState,
    identity: &DeviceIdentity,
    body: &[u8],
) -> ServerResult<()> {
    let message = CheckinMessage::from_xml(body)?;
    let (udid, kind) = match &message {
        CheckinMessage::Authenticate(m) => (&m.udid, "Authenticate"),
        CheckinMessage::TokenUpdate(m) => (&m.udid, "TokenUpdate"),
        CheckinMessage::CheckOut(m) => (&m.udid, "CheckOut"),
        CheckinMessage::PromptReport(m) => (&m.udid, "PromptReport"),
        CheckinMessage::AppRequest(m) => (&m.udid, "AppRequest"),
        CheckinMessage::Unknown { message_type } => {
            return Err(ServerError::UnsupportedMessage(message_type.clone()));
        }
    };
    let device = identity::authorize(state.store.as_ref(), identity, udid).await?;
    crate::telemetry::checkin(kind);
    let now = state.clock.now();
    match message {
        CheckinMessage::Authenticate(m) => {
            let facts = AuthenticateFacts {
                serial_number: m.serial_number,
                product_name: m.product_name,
                os_version: m.os_version,
            };
            state
                .store
                .record_authenticate(&m.udid, &facts, now)
                .await?;
        }
        CheckinMessage::TokenUpdate(m) => {
            state
                .store
                .record_token_update(&m.udid, &m.topic, &m.push_magic, &m.token, now)
                .await?;
            if device.status != EnrollmentStatus::Active {
                let queries = DEVICE_QUERIES.iter().map(|q| (*q).to_owned()).collect();
                let inventory = [
                    Command::DeviceInformation(DeviceInformation { queries }),
                    // Whether the App Store is usable decides if user licensing can work.
                    Command::Restrictions(Restrictions::default()),
                ];
                let queued = inventory
                    .into_iter()
                    .map(|c| NewCommand::new(&m.udid, c, None, now))
                    .collect::<Result<Vec<_>, _>>()?;
                state.store.enqueue(&queued).await?;
                state.wake_for(&queued);
                state.poke_reconciler();
            }
        }
        CheckinMessage::CheckOut(m) => {
            state.store.record_check_out(&m.udid, now).await?;
            // Its device licenses go back to the pool.
            state.poke_reconciler();
            tracing::info!(udid = %m.udid, "device checked out");
        }
        CheckinMessage::PromptReport(m) => prompt::record(state, &m).await?,
        CheckinMessage::AppRequest(m) => portal::request(state, &m).await?,
        CheckinMessage::Unknown { .. } => {}
    }
    Ok(())
}
