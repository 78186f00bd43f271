//! The simulated user of a device: how each kind of prompt is answered, and after how
//! long.

use std::time::Duration;

use orchard_protocol::prompt::{PromptAnswer, PromptKind};
use serde::{Deserialize, Serialize};

/// How a simulated user answers one kind of prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Accept (or sign in).
    #[default]
    Accept,
    /// Decline (for an install prompt: "Cancel").
    Decline,
    /// Close the prompt without deciding.
    Dismiss,
    /// Leave the prompt open forever.
    Never,
}

impl Response {
    /// The answer given, or `None` for [`Response::Never`].
    pub fn answer(self) -> Option<PromptAnswer> {
        match self {
            Self::Accept => Some(PromptAnswer::Accepted),
            Self::Decline => Some(PromptAnswer::Declined),
            Self::Dismiss => Some(PromptAnswer::Dismissed),
            Self::Never => None,
        }
    }
}

/// The simulated user of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Persona {
    /// Answer to the invitation to the organisation's VPP program.
    pub invitation: Response,
    /// Answer to "install this app?".
    pub install: Response,
    /// Answer to "update this app?".
    pub update: Response,
    /// Answer to the Apple ID sign-in prompt.
    pub apple_id: Response,
    /// The Apple ID the user types when asked to sign in.
    pub apple_id_to_enter: String,
    /// How long the user takes to answer, in milliseconds.
    pub answer_after_ms: u64,
    /// How long the device stays locked (busy) after it starts, in milliseconds: until
    /// then it answers NotNow to commands that need the user, and checks in again once
    /// unlocked, as a real device does.
    pub locked_for_ms: u64,
}

impl Default for Persona {
    fn default() -> Self {
        Self {
            invitation: Response::Accept,
            install: Response::Accept,
            update: Response::Accept,
            apple_id: Response::Accept,
            apple_id_to_enter: "user@example.com".into(),
            answer_after_ms: 1000,
            locked_for_ms: 0,
        }
    }
}

impl Persona {
    /// How this persona answers `kind`.
    pub fn response(&self, kind: PromptKind) -> Response {
        match kind {
            PromptKind::VppInvitation => self.invitation,
            PromptKind::AppInstall => self.install,
            PromptKind::AppUpdate => self.update,
            PromptKind::AppleId => self.apple_id,
        }
    }

    /// How long the persona takes to answer.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.answer_after_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persona_reads_from_toml_with_defaults() {
        let persona: Persona =
            toml::from_str("install = \"decline\"\napple_id = \"never\"\nanswer_after_ms = 5")
                .unwrap();
        assert_eq!(persona.response(PromptKind::AppInstall), Response::Decline);
        assert_eq!(persona.response(PromptKind::AppleId), Response::Never);
        assert_eq!(
            persona.response(PromptKind::VppInvitation),
            Response::Accept
        );
        assert_eq!(persona.delay(), Duration::from_millis(5));
        assert!(toml::from_str::<Persona>("instal = \"accept\"").is_err());
    }
}
