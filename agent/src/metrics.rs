//! Counters shared by every device of a process (a fleet reports them as progress).

use std::sync::atomic::AtomicU64;

/// Counters shared by every device of a process.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// HTTP requests to the server (enrollment, check-ins, command channel).
    pub requests: AtomicU64,
    /// Command-channel sessions.
    pub sessions: AtomicU64,
    /// HTTPS connections opened to the server by enrolled devices (check-ins, command
    /// channel, prompt answers).
    pub connections: AtomicU64,
    /// Wake-ups received over the push channel.
    pub wakes: AtomicU64,
    /// Devices whose push channel is registered now.
    pub push_connected: AtomicU64,
    /// Registrations on the push channel so far (each reconnection counts again).
    pub push_registrations: AtomicU64,
    /// Enrollments performed.
    pub enrollments: AtomicU64,
    /// Identity certificates renewed.
    pub renewals: AtomicU64,
}
