//! Everything a device talks to: enrollment, the check-in messages, the command
//! channel, install tracking past the acknowledgement, prompt reports and self-service
//! requests, and the identity policy wrapped around them. Transport-neutral: the HTTP
//! layer hands these cores a device identity and a body.

pub mod checkin;
pub mod command_queue;
pub mod enroll;
pub mod identity;
pub mod install;
pub mod portal;
pub mod prompt;
