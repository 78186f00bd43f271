//! Everything a device talks to: enrollment, the check-in messages, the command
//! channel, install tracking past the acknowledgement, prompt reports and self-service
//! requests, and the identity policy wrapped around them. Transport-neutral: the HTTP
//! layer hands these cores a device identity and a body.
//!
//! May not import Apple's side, push, the HTTP layer or the admin services; devices
//! are woken through the server state, and of the engine only its pure decisions
//! (precedence) are used.

pub mod checkin;
pub mod command_queue;
pub mod enroll;
pub mod handout;
pub mod identity;
pub mod install;
pub mod last_seen;
pub mod portal;
pub mod prompt;
