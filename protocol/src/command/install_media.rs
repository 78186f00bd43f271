//! `InstallMedia` (Apple's Install Media command): install a book from the Book Store
//! by its `iTunesStoreID`. A VPP book is licensed to a user (books are never
//! device-assignable), so the device needs the user's Apple Account.

use serde::{Deserialize, Serialize};

use crate::AdamId;

/// `MediaType` of a book.
pub const MEDIA_TYPE_BOOK: &str = "Book";

/// The `InstallMedia` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallMedia {
    /// The Book Store item (adamId).
    #[serde(
        rename = "iTunesStoreID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_id: Option<AdamId>,
    /// A book not from the store (PDF, EPUB); not used for VPP books.
    #[serde(rename = "MediaURL", default, skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
    /// Always `Book`.
    #[serde(rename = "MediaType")]
    pub media_type: String,
}

impl InstallMedia {
    /// A VPP book from the Book Store.
    pub fn book(adam_id: AdamId) -> Self {
        Self {
            itunes_store_id: Some(adam_id),
            media_url: None,
            media_type: MEDIA_TYPE_BOOK.into(),
        }
    }
}

/// A managed book's state, as in `ManagedMediaList` and `InstallMedia.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BookState {
    /// Waiting to download.
    Queued,
    /// Asking for the Apple Account the license belongs to.
    PromptingForLogin,
    /// Downloading a newer version.
    Updating,
    /// Downloading.
    Installing,
    /// On the device.
    Installed,
    /// Managed, but the user removed it.
    Uninstalled,
    /// The user had bought it already.
    UserInstalledBook,
    /// The user refused it.
    UserRejected,
    /// It could not be installed.
    Failed,
}

impl BookState {
    /// Still on its way.
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            Self::Queued | Self::PromptingForLogin | Self::Updating | Self::Installing
        )
    }
}

/// The device's answer to `InstallMedia`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstallMediaResponse {
    /// The book.
    #[serde(
        rename = "iTunesStoreID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_id: Option<AdamId>,
    /// Its state.
    #[serde(rename = "State", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BookState>,
    /// Why it was refused.
    #[serde(
        rename = "RejectionReason",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rejection_reason: Option<String>,
}
