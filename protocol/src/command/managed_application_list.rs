//! `ManagedApplicationList` (Apple's `mdm/commands/application.managed.list.yaml`):
//! the status of each managed app.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ManagedAppStatus;

/// The `ManagedApplicationList` command.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ManagedApplicationList {
    /// Only these bundle identifiers.
    #[serde(
        rename = "Identifiers",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub identifiers: Option<Vec<String>>,
}

/// The device's answer: a dictionary keyed by bundle identifier.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ManagedApplicationListResponse {
    /// Status of each managed app, by bundle identifier.
    #[serde(rename = "ManagedApplicationList")]
    pub managed_application_list: BTreeMap<String, ManagedApplication>,
}

/// One managed app's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedApplication {
    /// The app's status.
    #[serde(rename = "Status")]
    pub status: ManagedAppStatus,
    /// 1 = remove with the MDM profile, 4 = no backup.
    #[serde(rename = "ManagementFlags")]
    pub management_flags: i64,
    /// The app has a server-provided configuration.
    #[serde(
        rename = "HasConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub has_configuration: Option<bool>,
    /// The app has feedback for the server.
    #[serde(
        rename = "HasFeedback",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub has_feedback: Option<bool>,
    /// iOS 9.2+: the app is validated.
    #[serde(
        rename = "IsValidated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_validated: Option<bool>,
    /// The store's version identifier of the installed build.
    #[serde(
        rename = "ExternalVersionIdentifier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_version_identifier: Option<i64>,
}
