//! `orchard-agent`: a simulated Apple device. The device model ([`device`]) is sans-IO:
//! plain state and functions, commands and time in, reports out. The transport
//! ([`transport`]) is a thin async shell that enrolls, checks in and polls the command
//! channel over mutual TLS.

pub mod device;
pub mod fleet;
pub mod prompt;
pub mod push;
pub mod store_lookup;
pub mod transport;

pub use device::{Device, DeviceFacts, Ownership, Platform};
pub use prompt::{Persona, Response};
pub use transport::{Agent, AgentConfig, AgentError, AgentMetrics};
