//! The event stream: changes come out of `/v1/events` as Server-Sent Events with ids;
//! a client that drops its connection and comes back with `Last-Event-ID` gets every
//! event it missed, once, in order; the list form shows the same events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use orchard_testbed::harness::TestbedBuilder;
use orchard_testbed::on_both_backends;
use reqwest::StatusCode;
use serde_json::Value;

const PAGES: u64 = 361_309_726;
const NUMBERS: u64 = 361_304_891;

/// One event of the stream: id, kind and data.
#[derive(Debug, Clone)]
struct Sse {
    id: i64,
    kind: String,
    data: Value,
}

/// Reads events from an open stream until `done` holds for the events read so far (or
/// fails after 60 s).
async fn read_until(
    response: &mut reqwest::Response,
    buffer: &mut String,
    done: impl Fn(&[Sse]) -> bool,
) -> Vec<Sse> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<i64>().unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                events.push(Sse {
                    id,
                    kind,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
        }
        if done(&events) {
            return events;
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("stream stalled after {events:?}"))
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn a_dropped_stream_resumes_with_last_event_id_losing_nothing(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(2, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let pages = bed.assign_required(PAGES, &udids, "Events").await.unwrap();

    // First connection: from the start until one device has Pages installed.
    let mut first = bed.admin.event_stream("/v1/events", None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let mut buffer = String::new();
    let seen = read_until(&mut first, &mut buffer, |events| {
        events
            .iter()
            .any(|e| e.kind == "install.status" && e.data["data"]["status"] == "installed")
    })
    .await;
    drop(first);
    let last = seen.last().unwrap().id;

    // While nobody listens: a second app goes to both devices.
    let (_, group) = bed.admin.get("/v1/groups").await.unwrap();
    let group_id = group["items"][0]["id"].as_str().unwrap().to_owned();
    let numbers = bed.app_by_adam_id(NUMBERS).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bed.assign(&numbers, &group_id, "device").await.unwrap();
    bed.wait_installed(&numbers, 2, Duration::from_secs(30))
        .await
        .unwrap();
    bed.wait_installed(&pages, 2, Duration::from_secs(30))
        .await
        .unwrap();
    let listed: Vec<i64> = bed
        .admin
        .list_all("/v1/events")
        .await
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let newest = *listed.last().unwrap();
    assert!(newest > last, "events happened while the stream was closed");

    // Second connection: resumes after the last event seen, up to the newest listed.
    let mut second = bed
        .admin
        .event_stream("/v1/events", Some(&last.to_string()))
        .await
        .unwrap();
    let mut buffer = String::new();
    let resumed = read_until(&mut second, &mut buffer, |events| {
        events.last().is_some_and(|e| e.id >= newest)
    })
    .await;
    drop(second);
    let streamed: Vec<i64> = seen.iter().chain(&resumed).map(|e| e.id).collect();
    let listed_so_far: Vec<i64> = listed.iter().copied().filter(|id| *id <= newest).collect();
    assert_eq!(
        streamed, listed_so_far,
        "every event once, in order, across the dropped connection"
    );
    let kinds: std::collections::BTreeSet<&str> = seen
        .iter()
        .chain(&resumed)
        .map(|e| e.kind.as_str())
        .collect();
    for kind in [
        "device.enrolled",
        "sync.finished",
        "license.associated",
        "install.status",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    let numbers_installed = resumed
        .iter()
        .filter(|e| {
            e.kind == "install.status"
                && e.data["app_id"] == numbers.as_str()
                && e.data["data"]["status"] == "installed"
        })
        .count();
    assert_eq!(numbers_installed, 2, "both Numbers installs: {resumed:?}");

    // Filters narrow the stream and the list alike.
    let mut filtered = bed
        .admin
        .event_stream(&format!("/v1/events?kind=install&udid={}", udids[0]), None)
        .await
        .unwrap();
    let mut buffer = String::new();
    let mine = read_until(&mut filtered, &mut buffer, |events| {
        events
            .iter()
            .filter(|e| e.data["data"]["status"] == "installed")
            .count()
            == 2
    })
    .await;
    drop(filtered);
    assert!(
        mine.iter()
            .all(|e| e.kind.starts_with("install.") && e.data["udid"] == udids[0].as_str()),
        "{mine:?}"
    );
    let listed_mine = bed
        .admin
        .list_all(&format!("/v1/events?kind=install.status&udid={}", udids[0]))
        .await
        .unwrap();
    assert_eq!(
        listed_mine
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        mine.iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // What the stream cannot take is named.
    let bad = bed
        .admin
        .event_stream("/v1/events", Some("yesterday"))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let (_, first) = bed.admin.get("/v1/events?limit=1").await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) = bed
        .admin
        .get(&format!("/v1/events?after=1&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "after and cursor together: {body}"
    );
    for query in ["kind=Install%25", "colour=blue", "cursor=x"] {
        let (status, body) = bed.admin.get(&format!("/v1/events?{query}")).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    fleet.stop().await;
    // A stopping server ends open streams instead of waiting out its grace period.
    let mut open = bed
        .admin
        .event_stream("/v1/events", Some(&newest.to_string()))
        .await
        .unwrap();
    let stopping = tokio::spawn(bed.shutdown());
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = open.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended when the server stopped");
    stopping.await.unwrap();
}

on_both_backends!(a_dropped_stream_resumes_with_last_event_id_losing_nothing);
