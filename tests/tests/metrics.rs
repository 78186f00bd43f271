//! `/metrics` in Prometheus's text format: scraped with an admin token after devices
//! installed an app, every sample line parses, and the counts say what happened
//! (check-ins, command results, Apple calls, syncs, reconcile passes, push connections,
//! license counts per app, HTTPS connections: none held by devices between sessions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use orchard_testbed::harness::{Testbed, wait_for};
use reqwest::StatusCode;
use serde_json::json;

const PAGES: u64 = 361_309_726;

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the exposition text; panics on a line that is not a comment or a sample.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label is k=\"v\"");
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name:?}"
        );
        samples.push((name, labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_parse_as_prometheus_text() {
    let bed = Testbed::builder().start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(5, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let app = bed.assign_required(PAGES, &udids, "Metrics").await.unwrap();
    bed.wait_installed(&app, udids.len(), Duration::from_secs(30))
        .await
        .unwrap();

    let (status, body) = bed.admin.with_token("").get("/metrics").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, reader) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "prometheus", "role": "auditor" }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let scraper = bed.admin.with_token(reader["token"].as_str().unwrap());
    let (status, body) = scraper.get("/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("plain text, not JSON");
    let samples = parse(text);

    let n = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert!(
        n(
            "orchard_checkins_total",
            &[("message_type", "Authenticate")]
        ) >= 2.0
    );
    assert!(n("orchard_checkins_total", &[("message_type", "TokenUpdate")]) >= 2.0);
    assert!(
        n(
            "orchard_command_results_total",
            &[
                ("request_type", "InstallApplication"),
                ("status", "Acknowledged")
            ]
        ) >= 2.0,
        "{text}"
    );
    assert!(
        n(
            "orchard_apple_requests_total",
            &[("endpoint", "/assets"), ("status", "200")]
        ) >= 1.0
    );
    assert!(n("orchard_apple_requests_total", &[("endpoint", "lookup")]) >= 1.0);
    assert!(
        n(
            "orchard_apple_request_duration_seconds_count",
            &[("endpoint", "/assets")]
        ) >= 1.0
    );
    assert!(n("orchard_syncs_total", &[("result", "ok")]) >= 1.0);
    assert!(n("orchard_sync_duration_seconds_count", &[]) >= 1.0);
    assert!(n("orchard_reconcile_passes_total", &[]) >= 1.0);
    assert!(n("orchard_reconcile_lag_seconds_count", &[]) >= 1.0);
    assert_eq!(
        n("orchard_push_connections", &[]),
        udids.len() as f64,
        "{text}"
    );
    // Devices between sessions hold no HTTPS connection: soon fewer connections are
    // open than there are devices (the admin client's, and a device's session under
    // way, if any), while devices keeping theirs would hold all of them for the
    // client's 5 s idle limit.
    let devices = udids.len();
    wait_for(
        Duration::from_secs(3),
        "the devices to let their connections go",
        || async {
            let (_, body) = scraper.get("/metrics").await?;
            let open = value(
                &parse(body.as_str().unwrap_or_default()),
                "orchard_http_connections",
                &[],
            );
            Ok(if open >= 1.0 && open < devices as f64 {
                Ok(())
            } else {
                Err(format!(
                    "{open} HTTPS connections open for {devices} devices"
                ))
            })
        },
    )
    .await
    .unwrap();
    let (_, app_view) = bed.admin.get(&format!("/v1/apps/{app}")).await.unwrap();
    for kind in ["total", "used", "available"] {
        assert_eq!(
            n("orchard_app_licenses", &[("app_id", &app), ("kind", kind)]),
            app_view["licenses"][kind].as_f64().unwrap(),
            "{kind}: {app_view}"
        );
    }
    fleet.stop().await;
    bed.shutdown().await;
}
