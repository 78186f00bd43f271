//! `DeviceInformation` (Apple's `mdm/commands/information.device.yaml`): the server asks
//! for named facts; the device answers only the queries it can.

use serde::{Deserialize, Serialize};

use crate::{SerialNumber, Udid};

/// The `DeviceInformation` command.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceInformation {
    /// The names of the facts asked for.
    #[serde(rename = "Queries")]
    pub queries: Vec<String>,
}

/// The device's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceInformationResponse {
    /// The facts, only those asked for and allowed.
    #[serde(rename = "QueryResponses")]
    pub query_responses: QueryResponses,
}

/// `QueryResponses`: the facts Orchard reads. Queries a device cannot answer are left out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryResponses {
    /// Device UDID.
    #[serde(rename = "UDID", default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<Udid>,
    /// Device name.
    #[serde(
        rename = "DeviceName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_name: Option<String>,
    /// OS version.
    #[serde(rename = "OSVersion", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// OS build.
    #[serde(
        rename = "BuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub build_version: Option<String>,
    /// Model name, e.g. `iPhone`.
    #[serde(rename = "ModelName", default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Model, e.g. `MQ9T3LL/A`.
    #[serde(rename = "Model", default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Product name, e.g. `iPhone15,2`.
    #[serde(
        rename = "ProductName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_name: Option<String>,
    /// Serial number.
    #[serde(
        rename = "SerialNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub serial_number: Option<SerialNumber>,
    /// Supervised.
    #[serde(
        rename = "IsSupervised",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_supervised: Option<bool>,
    /// An App Store account is signed in.
    #[serde(
        rename = "iTunesStoreAccountIsActive",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_account_is_active: Option<bool>,
    /// Hash of the signed-in App Store account (Apple's `idHash`).
    #[serde(
        rename = "iTunesStoreAccountHash",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_account_hash: Option<String>,
}
