//! `orchard-agent`: a simulated Apple device. The device model ([`device`]) is sans-IO:
//! plain state and functions, commands and time in, reports out. The transport
//! ([`transport`]) is a thin async shell that enrolls, checks in and polls the command
//! channel over mutual TLS.

pub mod backoff;
pub mod device;
pub mod error;
pub mod facts;
pub mod fleet;
pub mod metrics;
pub mod persona;
pub mod prompt;
pub mod push;
pub mod renewal;
pub mod store_lookup;
pub mod tls;
pub mod transport;

pub use device::Device;
pub use error::AgentError;
pub use facts::{DeviceFacts, Ownership, Platform};
pub use metrics::AgentMetrics;
pub use persona::{Persona, Response};
pub use transport::{Agent, AgentConfig};
