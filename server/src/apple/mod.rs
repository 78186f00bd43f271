//! Apple's side: the Apps and Books for Organizations client and the JSON it speaks,
//! the token file, syncing a token's location, apps and counts, a token's life after
//! upload (ownership, renewal, deletion), and Apple's notifications.
//!
//! May not import the device channel, push, the HTTP layer or the admin services. Of
//! the engine it uses only the update planner, to which a sync hands new versions.

mod client;
mod model;
pub mod notifications;
pub mod polling;
pub mod sync;
mod token_file;
pub mod token_lifecycle;

pub use client::{
    AppleClient, AppleConfig, DUPLICATE_SERIAL_NUMBERS, ITEM_ERRORS, MAX_APPLE_BODY, VppError,
};
pub use model::*;
pub use token_file::{TokenFile, TokenFileError};
