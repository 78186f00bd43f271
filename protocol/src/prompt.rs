//! Orchard's extension of the check-in channel: the prompts a device showed its user
//! and how they were answered (message type [`PROMPT_REPORT`]). Apple's protocol only
//! shows prompts indirectly through `ManagedApplicationList` statuses; testbeds need
//! to see each one.

use serde::{Deserialize, Serialize};

use crate::{AdamId, Udid};

/// The `MessageType` of a prompt report.
pub const PROMPT_REPORT: &str = "OrchardPromptReport";

/// What the device asked its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PromptKind {
    /// The invitation to join the organisation's VPP program (`InviteToProgram`).
    #[serde(rename = "VPPInvitation")]
    VppInvitation,
    /// "Allow this app to be installed?"
    #[serde(rename = "AppInstall")]
    AppInstall,
    /// "Allow this app to be updated?"
    #[serde(rename = "AppUpdate")]
    AppUpdate,
    /// Sign in with an Apple ID, which user-licensed apps need.
    #[serde(rename = "AppleID")]
    AppleId,
}

impl PromptKind {
    /// The wire name, also used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VppInvitation => "VPPInvitation",
            Self::AppInstall => "AppInstall",
            Self::AppUpdate => "AppUpdate",
            Self::AppleId => "AppleID",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::VppInvitation,
            Self::AppInstall,
            Self::AppUpdate,
            Self::AppleId,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How the user answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PromptAnswer {
    /// Accepted (or signed in).
    Accepted,
    /// Declined (an install prompt: "Cancel").
    Declined,
    /// Closed without deciding.
    Dismissed,
}

impl PromptAnswer {
    /// The wire name, also used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Declined => "Declined",
            Self::Dismissed => "Dismissed",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Accepted, Self::Declined, Self::Dismissed]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// One prompt as the device saw it. A prompt is reported when shown and again when
/// answered; `PromptID` makes the second report update the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// Unique on the device.
    #[serde(rename = "PromptID")]
    pub prompt_id: String,
    /// What was asked.
    #[serde(rename = "Kind")]
    pub kind: PromptKind,
    /// The app's bundle identifier, for app prompts.
    #[serde(
        rename = "Identifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub identifier: Option<String>,
    /// The app's App Store id, for app prompts.
    #[serde(
        rename = "iTunesStoreID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_id: Option<AdamId>,
    /// When it was shown (RFC 3339, UTC).
    #[serde(rename = "ShownAt")]
    pub shown_at: String,
    /// The answer, once given.
    #[serde(rename = "Answer", default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<PromptAnswer>,
    /// When it was answered (RFC 3339, UTC).
    #[serde(
        rename = "AnsweredAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub answered_at: Option<String>,
}

/// The `OrchardPromptReport` check-in message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptReport {
    /// The device's UDID.
    #[serde(rename = "UDID")]
    pub udid: Udid,
    /// Prompts shown or answered since the last report.
    #[serde(rename = "Prompts")]
    pub prompts: Vec<Prompt>,
}
