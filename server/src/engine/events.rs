//! Apple's asynchronous events as the planners follow them: an event is asked about
//! only when its poll is due (see `apple::polling`), and forgotten once finished.

use crate::apple::{EventStatus, StatusResponse, VppError};
use crate::state::ServerState;

/// Asks Apple about a pending event when it is due; `Ok(None)` when it is not (it is
/// taken to be pending still).
pub async fn poll(
    state: &ServerState,
    s_token: &str,
    event_id: &str,
) -> Result<Option<StatusResponse>, VppError> {
    let now = state.clock.now();
    if !state
        .event_polls
        .due(event_id, now, state.options.event_poll_interval)
    {
        return Ok(None);
    }
    state.event_polls.polled(event_id, now);
    let status = state.apple.event_status(s_token, event_id).await?;
    if status.event_status != EventStatus::Pending {
        state.event_polls.finished(event_id);
    }
    Ok(Some(status))
}
