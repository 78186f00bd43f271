//! What the server counts for Prometheus: device check-ins and command results, Apple
//! calls, syncs and reconcile passes as they happen; push connections, devices and
//! license counts per app read when scraped. Every label takes values from a small
//! fixed set (message types, Apple endpoints, statuses, app ids), never from free text.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::AppRecord;

/// Upper bounds of the latency histograms, in seconds.
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process's recorder (one per process: servers started in one test process share
/// it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(SECONDS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics shows only scrape-time values"
            );
        }
        handle
    })
}

/// Starts recording (called once at start; recording before it is lost).
pub fn install() {
    let _ = handle();
}

/// A check-in message of this type was handled.
pub fn checkin(message_type: &'static str) {
    metrics::counter!("orchard_checkins_total", "message_type" => message_type).increment(1);
}

/// A device reported this status for a command of this type.
pub fn command_result(request_type: &str, status: &'static str) {
    metrics::counter!(
        "orchard_command_results_total",
        "request_type" => request_type.to_owned(),
        "status" => status
    )
    .increment(1);
}

/// One HTTP exchange with Apple: its endpoint (a path of the API or `lookup`), the
/// answer's status (`error` when none came) and how long it took.
pub fn apple_call(endpoint: &str, status: Option<u16>, took: Duration) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    metrics::counter!(
        "orchard_apple_requests_total",
        "endpoint" => endpoint.to_owned(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!("orchard_apple_request_duration_seconds", "endpoint" => endpoint.to_owned())
        .record(took.as_secs_f64());
}

/// A token's sync ended (`ok` or `error`) after `took`.
pub fn sync_finished(result: &'static str, took: Duration) {
    metrics::counter!("orchard_syncs_total", "result" => result).increment(1);
    metrics::histogram!("orchard_sync_duration_seconds").record(took.as_secs_f64());
}

/// A reconcile pass ended `lag` after the change that asked for it was noted, having
/// taken `took`.
pub fn reconcile_pass(lag: Duration, took: Duration) {
    metrics::counter!("orchard_reconcile_passes_total").increment(1);
    metrics::histogram!("orchard_reconcile_duration_seconds").record(took.as_secs_f64());
    metrics::histogram!("orchard_reconcile_lag_seconds").record(lag.as_secs_f64());
}

/// A webhook delivery was tried: `delivered` when the receiver took it.
pub fn webhook_delivery(delivered: bool) {
    let result = if delivered { "delivered" } else { "failed" };
    metrics::counter!("orchard_webhook_deliveries_total", "result" => result).increment(1);
}

/// Values read at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Devices connected to the push channel.
    pub push_connections: usize,
    /// HTTPS connections open (devices between sessions hold none).
    pub http_connections: usize,
    /// Devices waiting for their wake turn.
    pub push_waiting: usize,
    /// Apps with their license counts.
    pub apps: Vec<AppRecord>,
}

/// The exposition text: everything counted so far, and the values read now.
pub fn render(now: Snapshot) -> String {
    metrics::gauge!("orchard_push_connections").set(now.push_connections as f64);
    metrics::gauge!("orchard_http_connections").set(now.http_connections as f64);
    metrics::gauge!("orchard_push_waiting").set(now.push_waiting as f64);
    for app in now.apps {
        let c = app.counts;
        for (kind, n) in [
            ("total", c.total),
            ("used", c.assigned),
            ("available", c.available),
            ("retired", c.retired),
        ] {
            metrics::gauge!("orchard_app_licenses", "app_id" => app.id.clone(), "kind" => kind)
                .set(n as f64);
        }
    }
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}
