//! The prompts a device shows its user and when it shows them (the table of the product
//! specification, section 3); the persona that answers them is in [`crate::persona`].
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

use crate::facts::{DeviceFacts, LicenseKind};

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
    use crate::facts::Ownership;

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
}
