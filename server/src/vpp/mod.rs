//! Apple's Apps and Books for Organizations service: the token file, the JSON the API
//! speaks, and the client that calls it.

mod client;
mod model;
mod token_file;

pub use client::{AppleClient, AppleConfig, VppError};
pub use model::*;
pub use token_file::{TokenFile, TokenFileError};
