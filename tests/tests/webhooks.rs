//! Webhooks: events are POSTed to a registered receiver in order, each signed with
//! HMAC-SHA256 of the webhook's secret; a receiver that fails gets the same event again
//! after a back-off, nothing is skipped, and the delivery log shows every attempt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use orchard_testbed::harness::{Testbed, wait_for};
use serde_json::{Value, json};

const PAGES: u64 = 361_309_726;

/// What the receiver got: signature headers and body of each request, and how many
/// to refuse first.
#[derive(Default)]
struct Received {
    requests: Vec<(String, String, Vec<u8>, bool)>,
    refuse_first: usize,
}

async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut r = received.lock().unwrap();
    let accept = r.requests.len() >= r.refuse_first;
    r.requests.push((
        header("x-orchard-timestamp"),
        header("x-orchard-signature"),
        body.to_vec(),
        accept,
    ));
    if accept {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// HMAC-SHA256, computed here apart from the server's code.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_in_order_and_logged() {
    let received = Arc::new(Mutex::new(Received {
        refuse_first: 2,
        ..Received::default()
    }));
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let bed = Testbed::builder().start().await.unwrap();
    // Who may register, and where to.
    let (status, operator) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "ops", "role": "operator" }),
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let ops = bed.admin.with_token(operator["token"].as_str().unwrap());
    let (status, _) = ops
        .post("/v1/webhooks", json!({ "url": url }))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    for bad in [
        "ftp://127.0.0.1/x",
        "http://example.com/hook",
        "https://user:pw@example.com/",
        "not a url",
    ] {
        let (status, body) = bed
            .admin
            .post("/v1/webhooks", json!({ "url": bad }))
            .await
            .unwrap();
        assert_eq!(
            status,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {body}"
        );
    }
    let (status, hook) = bed
        .admin
        .post("/v1/webhooks", json!({ "url": url, "kind": "install" }))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let (_, shown) = bed
        .admin
        .get(&format!("/v1/webhooks/{hook_id}"))
        .await
        .unwrap();
    assert!(shown.get("secret").is_none(), "the secret is shown once");

    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(2, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let pages = bed.assign_required(PAGES, &udids, "Hooked").await.unwrap();
    bed.wait_installed(&pages, 2, Duration::from_secs(30))
        .await
        .unwrap();
    let events: Vec<i64> = bed
        .admin
        .list_all("/v1/events?kind=install")
        .await
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let delivered = wait_for(
        Duration::from_secs(30),
        "every install event delivered",
        || {
            let received = received.clone();
            let events = events.clone();
            async move {
                let r = received.lock().unwrap();
                let ids: Vec<i64> = r
                    .requests
                    .iter()
                    .filter(|(_, _, _, accepted)| *accepted)
                    .map(|(_, _, body, _)| {
                        serde_json::from_slice::<Value>(body).unwrap()["id"]
                            .as_i64()
                            .unwrap()
                    })
                    .collect();
                Ok(if ids.len() >= events.len() {
                    Ok(ids)
                } else {
                    Err(format!("{} of {} delivered", ids.len(), events.len()))
                })
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(delivered, events, "in order, none skipped, none twice");
    // The webhook's place moved to the last event, so nothing is sent again.
    let last = *events.last().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the webhook's place at the last event",
        || {
            let admin = bed.admin.clone();
            let path = format!("/v1/webhooks/{hook_id}");
            async move {
                let (_, hook) = admin.get(&path).await?;
                Ok(if hook["delivered_through"] == last {
                    Ok(())
                } else {
                    Err(hook.to_string())
                })
            }
        },
    )
    .await
    .unwrap();

    let requests = received.lock().unwrap().requests.clone();
    assert_eq!(
        requests.len(),
        events.len() + 2,
        "two refusals, then each event once"
    );
    // The two refused tries and the accepted one carry the first event.
    let first_id = |i: usize| {
        serde_json::from_slice::<Value>(&requests[i].2).unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    assert_eq!([first_id(0), first_id(1), first_id(2)], [events[0]; 3]);
    for (timestamp, signature, body, _) in &requests {
        let mut message = timestamp.as_bytes().to_vec();
        message.push(b'.');
        message.extend_from_slice(body);
        assert_eq!(
            signature,
            &format!("sha256={}", hmac_sha256(secret.as_bytes(), &message)),
            "signed with the webhook's secret"
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        assert!(
            event["kind"].as_str().unwrap().starts_with("install."),
            "{event}"
        );
    }

    let log = bed
        .admin
        .list_all(&format!("/v1/webhooks/{hook_id}/deliveries"))
        .await
        .unwrap();
    let oldest_first: Vec<(i64, i64, bool, Value)> = log
        .iter()
        .rev()
        .map(|d| {
            (
                d["event_id"].as_i64().unwrap(),
                d["attempt"].as_i64().unwrap(),
                d["delivered"].as_bool().unwrap(),
                d["status_code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        oldest_first[..3],
        [
            (events[0], 1, false, json!(503)),
            (events[0], 2, false, json!(503)),
            (events[0], 3, true, json!(200)),
        ]
    );
    assert_eq!(log.len(), events.len() + 2);
    let (status, _) = bed
        .admin
        .delete(&format!("/v1/webhooks/{hook_id}"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);
    let (status, _) = bed
        .admin
        .get(&format!("/v1/webhooks/{hook_id}/deliveries"))
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    fleet.stop().await;
    bed.shutdown().await;
}
