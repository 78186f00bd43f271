//! The prompts a device shows its user, when it shows them (the table of the product
//! specification, section 3), and the persona that answers them.
//!
//! Rules, applied per app install:
//! - a VPP invitation prompt appears when the device receives `InviteToProgram`;
//! - an app install prompt appears on devices that are not supervised (also for
//!   updates: "allow this app to be updated?");
//! - an Apple ID prompt appears when a user-licensed app (or accepting the invitation)
//!   needs an App Store account and none is signed in; once the user signs in the
//!   account stays, so it is asked once per device;
//! - a device in single-app (kiosk) mode can show no prompt at all: what would need one
//!   fails instead, and says so.

use std::time::Duration;

use orchard_protocol::prompt::{PromptAnswer, PromptKind};
use serde::{Deserialize, Serialize};

use crate::device::{DeviceFacts, LicenseKind};

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

/// The prompts a first install of an app needs on a device, in the order shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallPrompts {
    /// "Install this app?"
    pub app_install: bool,
    /// Sign in with an Apple ID.
    pub apple_id: bool,
}

/// Why an install cannot even start on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// User licensing needs the App Store, which a restrictions profile disables.
    AppStoreDisabled,
    /// A single-app (kiosk) device cannot show the prompts the install needs.
    KioskCannotPrompt,
}

/// The prompt table: which prompts installing an app with `license` needs on a device
/// with these facts, or why it cannot be installed at all.
pub fn install_prompts(
    facts: &DeviceFacts,
    license: LicenseKind,
) -> Result<InstallPrompts, Blocked> {
    let user_licensed = license == LicenseKind::User;
    if user_licensed && !facts.app_store_allowed {
        return Err(Blocked::AppStoreDisabled);
    }
    let prompts = InstallPrompts {
        app_install: !facts.supervised,
        apple_id: user_licensed && facts.apple_id.is_none(),
    };
    if facts.kiosk && (prompts.app_install || prompts.apple_id) {
        return Err(Blocked::KioskCannotPrompt);
    }
    Ok(prompts)
}

/// Whether an invitation to the VPP program can be shown on this device.
pub fn invitation_shown(facts: &DeviceFacts) -> bool {
    !facts.kiosk && facts.app_store_allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Ownership;

    fn facts(ownership: Ownership, supervised: bool, kiosk: bool) -> DeviceFacts {
        let mut f = DeviceFacts::supervised_iphone("U", "S");
        f.ownership = ownership;
        f.supervised = supervised;
        f.kiosk = kiosk;
        f.apple_id = None;
        f
    }

    /// The table of the product specification, section 3: (scenario, facts, license,
    /// invitation, install prompt, Apple ID prompt). Scenario 8 is the kiosk row that
    /// cannot prompt.
    #[test]
    fn prompt_table_matches_the_specification() {
        use LicenseKind::{Device, User};
        use Ownership::{Corporate, Personal};
        let rows = [
            (1, facts(Personal, false, false), User, true, true, true),
            (2, facts(Corporate, false, false), User, true, true, true),
            (3, facts(Corporate, true, false), User, true, false, true),
            (4, facts(Personal, false, false), Device, false, true, false),
            (
                5,
                facts(Corporate, false, false),
                Device,
                false,
                true,
                false,
            ),
            (
                6,
                facts(Corporate, true, false),
                Device,
                false,
                false,
                false,
            ),
            (7, facts(Corporate, true, true), Device, false, false, false),
        ];
        for (scenario, facts, license, invite, install, apple_id) in rows {
            let prompts = install_prompts(&facts, license).unwrap();
            // The invitation belongs to user licensing only; the server sends it.
            assert_eq!(
                license == User && invitation_shown(&facts),
                invite,
                "scenario {scenario}: invitation"
            );
            assert_eq!(prompts.app_install, install, "scenario {scenario}: install");
            assert_eq!(prompts.apple_id, apple_id, "scenario {scenario}: Apple ID");
        }
        let kiosk = facts(Corporate, true, true);
        assert_eq!(
            install_prompts(&kiosk, User),
            Err(Blocked::KioskCannotPrompt)
        );
        assert!(
            !invitation_shown(&kiosk),
            "scenario 8: no invitation on a kiosk"
        );
    }

    #[test]
    fn signed_in_apple_id_is_not_asked_again() {
        let mut f = facts(Ownership::Corporate, true, false);
        f.apple_id = Some("user@example.com".into());
        let prompts = install_prompts(&f, LicenseKind::User).unwrap();
        assert!(!prompts.apple_id && !prompts.app_install);
    }

    #[test]
    fn app_store_disabled_blocks_user_licensing_only() {
        let mut f = facts(Ownership::Corporate, true, false);
        f.app_store_allowed = false;
        assert_eq!(
            install_prompts(&f, LicenseKind::User),
            Err(Blocked::AppStoreDisabled)
        );
        assert!(install_prompts(&f, LicenseKind::Device).is_ok());
        assert!(!invitation_shown(&f));
    }

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
