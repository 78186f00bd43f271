//! `OrchardNotice`: a message Orchard asks its devices to show their user, such as
//! "your organisation took back the license of an app". Apple's MDM protocol has no
//! command for it (and the Apps and Books API v2 no `notifyDisassociation`), so it is
//! Orchard's own and only sent when an admin asks for it; a device that does not know
//! it answers with an error and shows nothing.

use serde::{Deserialize, Serialize};

/// The `OrchardNotice` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// A short title.
    #[serde(rename = "Title")]
    pub title: String,
    /// The message.
    #[serde(rename = "Message")]
    pub message: String,
}
