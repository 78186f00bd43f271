//! Self-service: a device's user asks for an app that an Available assignment offers
//! (Orchard's `OrchardAppRequest` check-in, as from a company portal). The request is
//! recorded; the engine then treats the (app, device) like a Required target, taking a
//! license if one is free.

use orchard_protocol::portal::AppRequest;

use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{InstallRecord, InstallStatus, Intent, NewCommand};
use orchard_protocol::command::{Command, InstallApplication};

/// Records an app request, or refuses it when no assignment offers the app.
pub async fn request(state: &ServerState, request: &AppRequest) -> ServerResult<()> {
    let adam = request.itunes_store_id.to_string();
    let candidates: Vec<_> = state
        .store
        .assignment_candidates()
        .await?
        .into_iter()
        .filter(|c| c.udid == request.udid)
        .collect();
    let mut offered = None;
    for e in crate::engine::precedence::resolve(&candidates) {
        let Some(app) = state.store.app(&e.winner.app_id).await? else {
            continue;
        };
        if app.adam_id.to_string() != adam {
            continue;
        }
        match e.winner.intent {
            // Already on its way: nothing to ask for.
            Intent::Required => return Ok(()),
            Intent::Available => offered = Some(app.id),
            Intent::Uninstall => {}
        }
    }
    // Installed with an update on offer: the user takes the update.
    if let Some(app_id) = &offered
        && let Some(row) = state
            .store
            .installs_of_device(&request.udid)
            .await?
            .into_iter()
            .find(|r| &r.app_id == app_id && r.status == InstallStatus::UpdateAvailable)
        && let Some(app) = state.store.app(app_id).await?
    {
        let now = state.clock.now();
        let command = Command::InstallApplication(InstallApplication::vpp(app.adam_id, 1));
        let queued = NewCommand::new(&request.udid, command, Some(app.id.clone()), now)?;
        state.store.enqueue(std::slice::from_ref(&queued)).await?;
        state
            .store
            .set_installs(&[InstallRecord {
                status: InstallStatus::Queued,
                reason: Some("the user asked for the update".into()),
                updated_at: now,
                since: None,
                ..row
            }])
            .await?;
        state.wake_for(&[queued]);
        return Ok(());
    }
    let Some(app_id) = offered else {
        return Err(ServerError::Invalid {
            field: "iTunesStoreID",
            reason: format!("no Available assignment offers app {adam} to this device"),
        });
    };
    if state
        .store
        .record_app_request(&app_id, &request.udid, state.clock.now())
        .await?
    {
        tracing::info!(udid = %request.udid, app = %adam, "app requested");
    }
    state.poke_reconciler();
    Ok(())
}
