//! `orchard-server`: holds VPP tokens, syncs licenses and app metadata from Apple, lets
//! admins assign apps to groups, and drives devices over mutual TLS until the apps are
//! verified installed.

pub mod admin;
pub mod applicability;
pub mod checkin;
pub mod clock;
pub mod command_queue;
pub mod enroll;
pub mod error;
pub mod http;
pub mod identity;
pub mod install;
pub mod notifications;
pub mod portal;
pub mod precedence;
pub mod prompt;
pub mod push;
pub mod reclaim;
pub mod reconcile;
mod server;
pub mod state;
pub mod store;
pub mod sync;
pub mod tls;
pub mod token_lifecycle;
pub mod token_order;
pub mod updates;
pub mod user_licensing;
pub mod vpp;
pub mod wake_bus;

pub use server::{RunningServer, ServerConfig, StartError, start, start_with_listener};
