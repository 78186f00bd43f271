//! `orchard-server`: holds VPP tokens, syncs licenses and app metadata from Apple, lets
//! admins assign apps to groups, and drives devices over mutual TLS until the apps are
//! verified installed.

pub mod access;
pub mod admin;
pub mod apple;
pub mod clock;
pub mod data_dir;
pub mod device;
pub mod engine;
pub mod error;
pub mod http;
pub mod push;
pub mod rate_limit;
pub mod retry;
pub mod secret;
mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhook;

pub use server::{
    DEVICE_CONCURRENCY, RunningServer, ServerConfig, StartError, recover_admin_token, start,
    start_with_listener,
};
