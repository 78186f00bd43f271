//! Orchard's extension of the check-in channel for self-service: the device's user
//! asks for an app an Available assignment offers, as from a company portal
//! (message type [`APP_REQUEST`]).

use serde::{Deserialize, Serialize};

use crate::{AdamId, Udid};

/// The `MessageType` of an app request.
pub const APP_REQUEST: &str = "OrchardAppRequest";

/// The `OrchardAppRequest` check-in message: install this app on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRequest {
    /// The device's UDID.
    #[serde(rename = "UDID")]
    pub udid: Udid,
    /// The App Store id of the app asked for.
    #[serde(rename = "iTunesStoreID")]
    pub itunes_store_id: AdamId,
}
