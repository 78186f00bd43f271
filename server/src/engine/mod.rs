//! The licensing engine: which assignment applies to a device, whether it can apply,
//! which token's license serves it, and the reconciler that moves licenses and queues
//! installs, updates and removals until the devices match the assignments.
//!
//! May not import the device channel, push, the HTTP layer or the admin services: it
//! reads device reports from the store, talks to Apple through Apple's client, and
//! wakes devices through the server state. Inside, the planners share
//! `license_pool` and never import each other back.

pub mod applicability;
pub mod events;
pub mod license_pool;
pub mod precedence;
pub mod reclaim;
pub mod reconcile;
pub mod token_order;
pub mod updates;
pub mod user_licensing;
