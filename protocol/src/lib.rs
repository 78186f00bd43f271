//! Orchard's wire types: Apple MDM check-in messages, the command channel and the
//! commands Orchard sends, and Orchard's enrollment exchange. XML plist, no IO.
//!
//! Every channel has one decode entry point: [`checkin::CheckinMessage::from_xml`],
//! [`report::CommandReport::from_xml`], [`command::CommandEnvelope::from_xml`] and
//! [`enroll::EnrollRequest::from_xml`] / [`enroll::EnrollResponse::from_xml`]. Each
//! reads its bytes through [`bounded`], which enforces nesting depth, value count and
//! size limits before any value is built.

pub mod bounded;
pub mod checkin;
pub mod command;
pub mod enroll;
mod error;
pub mod ids;
pub mod portal;
pub mod prompt;
pub mod push;
pub mod report;
pub mod store_item;
mod xml;

pub use error::ProtocolError;
pub use ids::{AdamId, CommandUuid, IdError, SerialNumber, Udid};
