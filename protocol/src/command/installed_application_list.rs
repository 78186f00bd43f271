//! `InstalledApplicationList` (Apple's `mdm/commands/application.installed.list.yaml`):
//! which apps are on the device, with versions.

use serde::{Deserialize, Serialize};

/// The `InstalledApplicationList` command.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstalledApplicationList {
    /// Only these bundle identifiers.
    #[serde(
        rename = "Identifiers",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub identifiers: Option<Vec<String>>,
    /// Only managed apps.
    #[serde(
        rename = "ManagedAppsOnly",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub managed_apps_only: Option<bool>,
    /// Only these keys of each item (`Identifier` is always included).
    #[serde(rename = "Items", default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<String>>,
}

/// The device's answer: `InstalledApplicationList`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstalledApplicationListResponse {
    /// One entry per installed app.
    #[serde(rename = "InstalledApplicationList")]
    pub installed_application_list: Vec<InstalledApplication>,
}

/// One installed app.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstalledApplication {
    /// Bundle identifier.
    #[serde(
        rename = "Identifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub identifier: Option<String>,
    /// Display name.
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `CFBundleVersion`.
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `CFBundleShortVersionString`: the version users see.
    #[serde(
        rename = "ShortVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub short_version: Option<String>,
    /// The store's version identifier of the installed build.
    #[serde(
        rename = "ExternalVersionIdentifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_version_identifier: Option<i64>,
    /// App size in bytes.
    #[serde(
        rename = "BundleSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bundle_size: Option<i64>,
    /// True while downloading or installing.
    #[serde(
        rename = "Installing",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub installing: Option<bool>,
    /// Installed with a device-based VPP license.
    #[serde(
        rename = "DeviceBasedVPP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_based_vpp: Option<bool>,
    /// False for device-based VPP apps.
    #[serde(
        rename = "AppStoreVendable",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub app_store_vendable: Option<bool>,
    /// An update is available in the store.
    #[serde(
        rename = "HasUpdateAvailable",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub has_update_available: Option<bool>,
}
