//! Apple's side: the Apps and Books for Organizations client and the JSON it speaks,
//! the token file, syncing a token's location, apps and counts, a token's life after
//! upload (ownership, renewal, deletion), and Apple's notifications.

mod client;
mod model;
pub mod notifications;
pub mod sync;
mod token_file;
pub mod token_lifecycle;

pub use client::{AppleClient, AppleConfig, VppError};
pub use model::*;
pub use token_file::{TokenFile, TokenFileError};
