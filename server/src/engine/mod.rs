//! The licensing engine: which assignment applies to a device, whether it can apply,
//! which token's license serves it, and the reconciler that moves licenses and queues
//! installs, updates and removals until the devices match the assignments.

pub mod applicability;
pub mod precedence;
pub mod reclaim;
pub mod reconcile;
pub mod token_order;
pub mod updates;
pub mod user_licensing;
