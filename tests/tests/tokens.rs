//! VPP token lifecycle end to end: upload with settings, duplicates and the limit,
//! renewal, deletion, a token another MDM owns and its takeover, an expired token, and
//! a stand-in that fails half of Apple's calls during a 200-device assignment.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_testbed::apple::Seed;
use orchard_testbed::apple::seed::Location;
use orchard_testbed::harness::{AdminClient, DEMO_LOCATION, Testbed, TestbedBuilder, wait_for};
use serde_json::{Value, json};

const PAGES: u64 = 361309726;
const FIELD_NOTES: u64 = 1091189122;
const WAIT: Duration = Duration::from_secs(90);

/// The stand-in's testbed side.
fn apple_admin(bed: &Testbed) -> AdminClient {
    AdminClient::new(&bed.apple.base_url(), &bed.apple.ca_pem, "").unwrap()
}

async fn upload(bed: &Testbed, file: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({ "name": "Token", "token_file": file, "consent": true });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, answer) = bed.admin.post("/v1/tokens", body).await.unwrap();
    (status.as_u16(), answer)
}

async fn token_view(bed: &Testbed, id: &str) -> Value {
    bed.admin.get(&format!("/v1/tokens/{id}")).await.unwrap().1
}

async fn upload_duplicate_limit_renew_and_delete(builder: TestbedBuilder) {
    let mut seed = Seed::demo();
    for i in 0..256 {
        seed.locations.push(Location {
            uid: format!("90000000000{i:04}"),
            name: format!("Shop {i}"),
            country: "US".into(),
        });
    }
    let bed = builder.seed(seed).start().await.unwrap();
    let file = bed.apple.token_file(DEMO_LOCATION).unwrap();
    let (status, token) = upload(
        &bed,
        &file,
        json!({ "apple_id": "vpp@example.com", "country": "us", "account_type": "education", "automatic_updates": true }),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    assert_eq!(token["apple_id"], "vpp@example.com");
    assert_eq!(token["store_country"], "US");
    assert_eq!(token["account_type"], "education");
    assert_eq!(token["automatic_updates"], true);
    assert_eq!(token["status"], "active");
    assert!(token.get("secret").is_none() && !token.to_string().contains(&file));
    let id = token["id"].as_str().unwrap().to_owned();

    let (status, dup) = upload(&bed, &file, json!({})).await;
    assert_eq!(
        (status, dup["error"].as_str()),
        (409, Some("conflict")),
        "{dup}"
    );
    let (status, bad) = upload(&bed, &file, json!({ "account_type": "school" })).await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("account_type"));

    // 256 tokens at most.
    for i in 0..255 {
        let other = bed.apple.token_file(&format!("90000000000{i:04}")).unwrap();
        let (status, body) = upload(&bed, &other, json!({})).await;
        assert_eq!(status, 201, "token {i}: {body}");
    }
    let last = bed.apple.token_file("900000000000255").unwrap();
    let (status, refused) = upload(&bed, &last, json!({})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("256"),
        "{refused}"
    );

    // Sync, assign, install; then renew with a new file for the same location.
    bed.admin
        .post(&format!("/v1/tokens/{id}/sync"), json!({}))
        .await
        .unwrap();
    let fleet = bed.enroll_fleet(1, Duration::from_secs(600)).await.unwrap();
    let udid = fleet.udids().remove(0);
    let app = bed
        .assign_required(PAGES, std::slice::from_ref(&udid), "Renewers")
        .await
        .unwrap();
    bed.wait_install_status(&app, &udid, "installed", WAIT)
        .await
        .unwrap();
    let stand_in = apple_admin(&bed);
    let (status, renewed_file) = stand_in
        .post(
            &format!("/testbed/locations/{DEMO_LOCATION}/token"),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let renewed_file = renewed_file.as_str().unwrap().to_owned();
    let (status, synced) = bed
        .admin
        .post(&format!("/v1/tokens/{id}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 502, "the old file no longer works: {synced}");
    let other_location = bed.apple.token_file("900000000000000").unwrap();
    let (status, wrong) = bed
        .admin
        .post(
            &format!("/v1/tokens/{id}/renew"),
            json!({ "token_file": other_location }),
        )
        .await
        .unwrap();
    assert!(status == 422 || status == 409, "{status} {wrong}");
    let (status, renewed) = bed
        .admin
        .post(
            &format!("/v1/tokens/{id}/renew"),
            json!({ "token_file": renewed_file }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{renewed}");
    let (status, synced) = bed
        .admin
        .post(&format!("/v1/tokens/{id}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{synced}");

    // Delete: apps and assignments go, licenses stay associated at Apple.
    let (status, deleted) = bed.admin.delete(&format!("/v1/tokens/{id}")).await.unwrap();
    assert_eq!(status, 200, "{deleted}");
    assert!(deleted["apps_removed"].as_u64().unwrap() >= 5);
    assert!(
        deleted["note"]
            .as_str()
            .unwrap()
            .contains("no license was revoked"),
        "{deleted}"
    );
    let (status, _) = bed.admin.get(&format!("/v1/apps/{app}")).await.unwrap();
    assert_eq!(status, 404);
    let (_, assignments) = bed.admin.get("/v1/assignments").await.unwrap();
    assert_eq!(assignments["items"], json!([]));
    let assigned = bed
        .apple
        .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), PAGES)].assigned);
    assert_eq!(assigned, 1, "deleting a token revokes nothing");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn token_of_another_mdm_is_not_used_until_taken_over(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let stand_in = apple_admin(&bed);
    let (status, _) = stand_in
        .post(
            &format!("/testbed/locations/{DEMO_LOCATION}/owner"),
            json!({ "id": "other-mdm-1", "name": "Other MDM" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let view = token_view(&bed, &token).await;
    assert_eq!(view["status"], "assigned_to_external_mdm", "{view}");
    assert_eq!(view["external_mdm"], "Other MDM");
    let fleet = bed.enroll_fleet(1, Duration::from_secs(600)).await.unwrap();
    let udid = fleet.udids().remove(0);
    let app = bed
        .assign_required(PAGES, std::slice::from_ref(&udid), "Waiting")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let assigned = bed
        .apple
        .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), PAGES)].assigned);
    assert_eq!(
        assigned, 0,
        "no license is taken through another MDM's token"
    );

    let (status, taken) = bed
        .admin
        .post(&format!("/v1/tokens/{token}/take-over"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{taken}");
    assert_eq!(taken["status"], "active");
    let owner = bed.apple.with_world(|w| {
        w.locations[DEMO_LOCATION]
            .mdm_info
            .as_ref()
            .map(|i| i["name"].clone())
    });
    assert_eq!(owner, Some(json!("Orchard")));
    bed.wait_install_status(&app, &udid, "installed", WAIT)
        .await
        .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

async fn expired_token_stops_syncing_until_renewed(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let stand_in = apple_admin(&bed);
    stand_in
        .post(
            &format!("/testbed/locations/{DEMO_LOCATION}/expire"),
            json!({}),
        )
        .await
        .unwrap();
    let (status, failed) = bed
        .admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    assert!(
        status.is_server_error() || status.is_client_error(),
        "{failed}"
    );
    let view = token_view(&bed, &token).await;
    assert_eq!(view["status"], "disabled", "{view}");
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{view}"
    );
    let (status, refused) = bed
        .admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("renew"),
        "{refused}"
    );
    let (_, file) = stand_in
        .post(
            &format!("/testbed/locations/{DEMO_LOCATION}/token"),
            json!({}),
        )
        .await
        .unwrap();
    let (status, renewed) = bed
        .admin
        .post(
            &format!("/v1/tokens/{token}/renew"),
            json!({ "token_file": file }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["status"], "active");
    let (status, _) = bed
        .admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    bed.shutdown().await;
}

async fn half_of_apples_calls_failing_still_ends_with_exact_counts(builder: TestbedBuilder) {
    let bed = builder
        .apple_timeout(Duration::from_millis(800))
        .start()
        .await
        .unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed
        .enroll_fleet(200, Duration::from_secs(600))
        .await
        .unwrap();
    let udids = fleet.udids();
    let (status, _) = apple_admin(&bed)
        .post(
            "/testbed/faults",
            json!({ "rate": 0.5, "kinds": ["timeout", "5xx", "429", "errorNumber"], "timeoutMs": 1200, "retryAfterSeconds": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let app = bed
        .assign_required(FIELD_NOTES, &udids, "Everyone")
        .await
        .unwrap();
    bed.wait_installed(&app, 200, Duration::from_secs(300))
        .await
        .unwrap();
    apple_admin(&bed)
        .post("/testbed/faults", json!({ "rate": 0.0, "kinds": [] }))
        .await
        .unwrap();
    let (distinct, assigned) = bed.apple.with_world(|w| {
        (
            w.serials_for(DEMO_LOCATION, FIELD_NOTES).len(),
            w.assets[&(DEMO_LOCATION.to_owned(), FIELD_NOTES)].assigned,
        )
    });
    assert_eq!((distinct, assigned), (200, 200), "no double association");
    wait_for(WAIT, "counts equal to Apple's", || {
        let bed = &bed;
        let (token, app) = (token.clone(), app.clone());
        async move {
            Ok(match bed.counts_agree(&token, &app, FIELD_NOTES).await {
                Ok(c) => Ok(c),
                Err(e) => Err(e.to_string()),
            })
        }
    })
    .await
    .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    upload_duplicate_limit_renew_and_delete,
    token_of_another_mdm_is_not_used_until_taken_over,
    expired_token_stops_syncing_until_renewed,
    half_of_apples_calls_failing_still_ends_with_exact_counts,
);
