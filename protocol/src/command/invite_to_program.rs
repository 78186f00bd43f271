//! `InviteToProgram` (Apple's `mdm/commands/application.invitetoprogram.yaml`): invite
//! the device's user to join the organisation's VPP program, the first step of user
//! licensing. The answer only says the invitation was shown, not whether it was accepted.

use serde::{Deserialize, Serialize};

/// The only `ProgramID` Apple defines: the Apps and Books (VPP) program.
pub const PROGRAM_ID_VPP: &str = "com.apple.cloudvpp";

/// The `InviteToProgram` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InviteToProgram {
    /// Always [`PROGRAM_ID_VPP`].
    #[serde(rename = "ProgramID")]
    pub program_id: String,
    /// The invitation URL: the service config's `invitationEmail` template with the
    /// user's `inviteCode` filled in.
    #[serde(rename = "InvitationURL")]
    pub invitation_url: String,
}

impl InviteToProgram {
    /// An invitation to the VPP program at `invitation_url`.
    pub fn vpp(invitation_url: impl Into<String>) -> Self {
        Self {
            program_id: PROGRAM_ID_VPP.to_owned(),
            invitation_url: invitation_url.into(),
        }
    }
}

/// The device's answer to `InviteToProgram`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InviteToProgramResponse {
    /// `InvitationResult`.
    #[serde(rename = "InvitationResult")]
    pub invitation_result: InvitationResult,
}

/// Apple's `InvitationResult` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvitationResult {
    /// The invitation was shown to the user.
    Acknowledged,
    /// `ProgramID` was not `com.apple.cloudvpp`.
    InvalidProgramID,
    /// `InvitationURL` was not a usable URL.
    InvalidInvitationURL,
}
