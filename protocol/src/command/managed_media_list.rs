//! `ManagedMediaList` (Apple's Managed Media List command): the managed books on a
//! device and their states.

use serde::{Deserialize, Serialize};

use super::BookState;
use crate::AdamId;

/// The `ManagedMediaList` command (no keys).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ManagedMediaList {}

/// The device's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ManagedMediaListResponse {
    /// The managed books.
    #[serde(rename = "Books", default)]
    pub books: Vec<ManagedBook>,
}

/// One managed book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedBook {
    /// The Book Store item.
    #[serde(
        rename = "iTunesStoreID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub itunes_store_id: Option<AdamId>,
    /// Its state.
    #[serde(rename = "State", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BookState>,
    /// Its version.
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its title.
    #[serde(rename = "Title", default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `epub`, `pdf` or `ibooks`.
    #[serde(rename = "Kind", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}
