//! The push channel: the hub that holds each device's QUIC connection and wakes it, and
//! the wake bus that carries wake-ups between replicas on PostgreSQL.

mod hub;
pub mod wake_bus;

pub use hub::{PUSH_IDLE_TIMEOUT, PushHub, serve, server_config, transport};
