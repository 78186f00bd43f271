//! `InstallApplication` (Apple's `mdm/commands/application.install.yaml`): install or
//! update an App Store app; for VPP, `Options.PurchaseMethod` = 1.

use serde::{Deserialize, Serialize};

use crate::AdamId;

/// `Options.PurchaseMethod` value for a VPP (Apps and Books) license assignment.
pub const PURCHASE_METHOD_VPP: i64 = 1;

/// The `InstallApplication` command for an App Store app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallApplication {
    /// The App Store item (adamId).
    #[serde(
        rename = "iTunesStoreID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_id: Option<AdamId>,
    /// The app's bundle identifier (alternative to `iTunesStoreID`).
    #[serde(
        rename = "Identifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub identifier: Option<String>,
    /// Purchase options.
    #[serde(rename = "Options", default, skip_serializing_if = "Option::is_none")]
    pub options: Option<InstallApplicationOptions>,
    /// Bitwise OR of 1 (remove with the MDM profile) and 4 (no backup).
    #[serde(
        rename = "ManagementFlags",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub management_flags: Option<i64>,
    /// macOS 11+: install as a managed app.
    #[serde(
        rename = "InstallAsManaged",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub install_as_managed: Option<bool>,
}

/// `InstallApplication.Options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallApplicationOptions {
    /// 0 = free / redemption code, 1 = VPP assignment.
    #[serde(
        rename = "PurchaseMethod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub purchase_method: Option<i64>,
}

impl InstallApplication {
    /// A VPP install of `adam_id`, with the given management flags.
    pub fn vpp(adam_id: AdamId, management_flags: i64) -> Self {
        Self {
            itunes_store_id: Some(adam_id),
            identifier: None,
            options: Some(InstallApplicationOptions {
                purchase_method: Some(PURCHASE_METHOD_VPP),
            }),
            management_flags: Some(management_flags),
            install_as_managed: None,
        }
    }

    /// Whether the command asks for a VPP license assignment.
    pub fn is_vpp(&self) -> bool {
        self.options.as_ref().and_then(|o| o.purchase_method) == Some(PURCHASE_METHOD_VPP)
    }
}

/// The device's answer to `InstallApplication` (`Identifier`, `State`, `RejectionReason`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstallApplicationResponse {
    /// The app's bundle identifier.
    #[serde(
        rename = "Identifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub identifier: Option<String>,
    /// The app's state right after the command.
    #[serde(rename = "State", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ManagedAppStatus>,
    /// Why the device refused (with `Status` = `Error`).
    #[serde(
        rename = "RejectionReason",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rejection_reason: Option<RejectionReason>,
}

/// A managed app's status, as in `ManagedApplicationList` and `InstallApplication.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ManagedAppStatus {
    /// Install scheduled.
    Queued,
    /// Needs a redemption code (legacy VPP).
    NeedsRedemption,
    /// Redeeming a code.
    Redeeming,
    /// Asking the user to allow the install.
    Prompting,
    /// Asking for App Store credentials.
    PromptingForLogin,
    /// Validating the purchase or license.
    ValidatingPurchase,
    /// Asking the user to allow an update.
    PromptingForUpdate,
    /// Asking for App Store credentials for an update.
    PromptingForUpdateLogin,
    /// Asking the user to let an installed app become managed.
    PromptingForManagement,
    /// Validating an update.
    ValidatingUpdate,
    /// Installing an update.
    Updating,
    /// Installing.
    Installing,
    /// Installed and managed.
    Managed,
    /// Managed, but the user deleted it.
    ManagedButUninstalled,
    /// State unknown.
    Unknown,
    /// Transient: the user had installed the app before.
    UserInstalledApp,
    /// Transient: the user refused the install.
    UserRejected,
    /// Transient: the user refused the update.
    UpdateRejected,
    /// Transient: the user refused management.
    ManagementRejected,
    /// Transient: the install failed.
    Failed,
}

impl ManagedAppStatus {
    /// Every value, in Apple's order.
    pub const ALL: [Self; 20] = [
        Self::Queued,
        Self::NeedsRedemption,
        Self::Redeeming,
        Self::Prompting,
        Self::PromptingForLogin,
        Self::ValidatingPurchase,
        Self::PromptingForUpdate,
        Self::PromptingForUpdateLogin,
        Self::PromptingForManagement,
        Self::ValidatingUpdate,
        Self::Updating,
        Self::Installing,
        Self::Managed,
        Self::ManagedButUninstalled,
        Self::Unknown,
        Self::UserInstalledApp,
        Self::UserRejected,
        Self::UpdateRejected,
        Self::ManagementRejected,
        Self::Failed,
    ];

    /// Apple's spelling of the value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::NeedsRedemption => "NeedsRedemption",
            Self::Redeeming => "Redeeming",
            Self::Prompting => "Prompting",
            Self::PromptingForLogin => "PromptingForLogin",
            Self::ValidatingPurchase => "ValidatingPurchase",
            Self::PromptingForUpdate => "PromptingForUpdate",
            Self::PromptingForUpdateLogin => "PromptingForUpdateLogin",
            Self::PromptingForManagement => "PromptingForManagement",
            Self::ValidatingUpdate => "ValidatingUpdate",
            Self::Updating => "Updating",
            Self::Installing => "Installing",
            Self::Managed => "Managed",
            Self::ManagedButUninstalled => "ManagedButUninstalled",
            Self::Unknown => "Unknown",
            Self::UserInstalledApp => "UserInstalledApp",
            Self::UserRejected => "UserRejected",
            Self::UpdateRejected => "UpdateRejected",
            Self::ManagementRejected => "ManagementRejected",
            Self::Failed => "Failed",
        }
    }

    /// Parses Apple's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the status is still moving towards an end state (the server keeps watching).
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            Self::Queued
                | Self::NeedsRedemption
                | Self::Redeeming
                | Self::Prompting
                | Self::PromptingForLogin
                | Self::ValidatingPurchase
                | Self::PromptingForUpdate
                | Self::PromptingForUpdateLogin
                | Self::PromptingForManagement
                | Self::ValidatingUpdate
                | Self::Updating
                | Self::Installing
        )
    }
}

/// `InstallApplication.RejectionReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionReason {
    /// The app is already installed.
    AppAlreadyInstalled,
    /// The app is already queued.
    AppAlreadyQueued,
    /// The App Store is disabled.
    AppStoreDisabled,
    /// The app ID could not be verified.
    CouldNotVerifyAppID,
    /// Management change not supported.
    ManagementChangeNotSupported,
    /// Not an app.
    NotAnApp,
    /// Not supported.
    NotSupported,
    /// Any other reason (the only value macOS reports).
    Other,
    /// The purchase method is not supported.
    PurchaseMethodNotSupported,
    /// The purchase method is not supported in multi-user mode.
    PurchaseMethodNotSupportedInMultiUser,
}
