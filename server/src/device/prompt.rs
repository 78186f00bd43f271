//! Prompt reports (Orchard's `OrchardPromptReport` check-in): every prompt a device
//! showed its user, stored for the admin API, and what an answer to the VPP invitation
//! means for the user's registration.

use orchard_protocol::prompt::{PromptAnswer, PromptKind, PromptReport};

use crate::clock::Timestamp;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::PromptRecord;

/// Stores a device's prompt report and records invitation answers.
pub async fn record(state: &ServerState, report: &PromptReport) -> ServerResult<()> {
    let now = state.clock.now();
    // A device's own times are taken when they read as RFC 3339; else the time of the report.
    let time = |text: &str| text.parse::<Timestamp>().unwrap_or(now);
    let rows: Vec<PromptRecord> = report
        .prompts
        .iter()
        .map(|p| PromptRecord {
            udid: report.udid.clone(),
            prompt_id: p.prompt_id.clone(),
            kind: p.kind.as_str().to_owned(),
            bundle_id: p.identifier.clone(),
            adam_id: p.itunes_store_id.map(|a| a.to_string()),
            shown_at: time(&p.shown_at),
            answer: p.answer.map(|a| a.as_str().to_owned()),
            answered_at: p.answered_at.as_deref().map(time),
        })
        .collect();
    state.store.record_prompts(&rows).await?;
    let invitation_answer = report
        .prompts
        .iter()
        .filter(|p| p.kind == PromptKind::VppInvitation)
        .find_map(|p| p.answer.map(|a| (a, p.answered_at.as_deref().map(time))));
    if let Some((answer, answered_at)) = invitation_answer {
        record_invitation_answer(state, report, answer, answered_at).await?;
    }
    if report.prompts.iter().any(|p| p.answer.is_some()) {
        state.poke_reconciler();
    }
    Ok(())
}

/// The invitation sent to this device was answered: the user's registration says so
/// (a declined invitation is not sent again until the user is retired).
async fn record_invitation_answer(
    state: &ServerState,
    report: &PromptReport,
    answer: PromptAnswer,
    answered_at: Option<Timestamp>,
) -> ServerResult<()> {
    let users = state.store.vpp_users().await?;
    for mut user in users.into_iter().filter(|u| {
        u.invited_udid.as_deref() == Some(report.udid.as_str()) && u.invitation_answer.is_none()
    }) {
        user.invitation_answer = Some(answer.as_str().to_owned());
        user.answered_at = answered_at.or_else(|| Some(state.clock.now()));
        user.updated_at = state.clock.now();
        tracing::info!(user = %user.user_id, answer = answer.as_str(), "VPP invitation answered");
        state.store.put_vpp_user(&user).await?;
    }
    Ok(())
}
