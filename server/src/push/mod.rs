//! The push channel: the QUIC endpoint devices keep a connection to, the hub that
//! knows which devices are connected here and wakes them, and the wake bus that carries
//! wake-ups between replicas on PostgreSQL.
//!
//! Push sits below the device channel and the engine: it may import the store, the
//! TLS setup and the device identity, never the server state, the engine, Apple's
//! side or the HTTP layer. What it needs is passed in.

mod endpoint;
mod hub;
pub mod wake_bus;

pub use endpoint::{PUSH_IDLE_TIMEOUT, PushLimits, endpoint, serve, server_config, transport};
pub use hub::PushHub;
