//! `Restrictions` (Apple's `mdm/commands/device.restrictions.list.yaml`): the restrictions
//! in force on the device, e.g. whether a profile disables the App Store, which user
//! licensing needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The restriction (from `com.apple.applicationaccess`) that disables the App Store.
pub const ALLOW_APP_INSTALLATION: &str = "allowAppInstallation";
/// The supervised restriction that hides the App Store while MDM installs still work.
pub const ALLOW_UI_APP_INSTALLATION: &str = "allowUIAppInstallation";

/// The `Restrictions` command.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Restrictions {
    /// Also report the restrictions of each profile.
    #[serde(
        rename = "ProfileRestrictions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub profile_restrictions: Option<bool>,
}

/// The device's answer: the sum of all restrictions in force.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RestrictionsResponse {
    /// `GlobalRestrictions`.
    #[serde(rename = "GlobalRestrictions")]
    pub global_restrictions: GlobalRestrictions,
    /// Restrictions per profile identifier, when the command asked for them.
    #[serde(
        rename = "ProfileRestrictions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub profile_restrictions: Option<BTreeMap<String, GlobalRestrictions>>,
}

/// Apple's `RestrictionsDictionary`; Orchard reads the Boolean restrictions only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GlobalRestrictions {
    /// Boolean restrictions by name (`allowAppInstallation`, ...).
    #[serde(
        rename = "restrictedBool",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub restricted_bool: BTreeMap<String, BooleanRestriction>,
}

/// One Boolean restriction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BooleanRestriction {
    /// The value in force.
    pub value: bool,
}

impl RestrictionsResponse {
    /// Whether the user can reach the App Store (which the VPP invitation and
    /// user-licensed installs need): neither `allowAppInstallation` nor
    /// `allowUIAppInstallation` is false.
    pub fn app_store_allowed(&self) -> bool {
        [ALLOW_APP_INSTALLATION, ALLOW_UI_APP_INSTALLATION]
            .iter()
            .all(|key| {
                self.global_restrictions
                    .restricted_bool
                    .get(*key)
                    .is_none_or(|r| r.value)
            })
    }
}
