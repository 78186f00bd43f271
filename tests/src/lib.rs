//! Orchard's testbed: a stand-in for Apple's Apps and Books service, builders that
//! start the whole system on loopback, and the demo.

pub mod api_fuzz;
pub mod apple;
pub mod balancer;
pub mod bench;
pub mod convergence;
pub mod demo;
pub mod harness;
pub mod load;
pub mod server_process;
