//! The server follows Apple's asynchronous model: an association returns an eventId and
//! InstallApplication is queued only once that event has completed; Apple's errors,
//! also those inside HTTP 200 answers, are reported.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use orchard_protocol::Udid;
use orchard_testbed::harness::{TestbedBuilder, wait_for};
use serde_json::json;

async fn install_is_queued_only_after_the_association_event_completes(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.apple.set_event_delay(Duration::from_millis(1500));
    let fleet = bed
        .enroll_fleet(2, Duration::from_millis(100))
        .await
        .unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = bed
        .assign_required(361309726, &fleet.udids(), "g")
        .await
        .unwrap();

    let store = bed.server.state.store.clone();
    let udid = Udid(fleet.udids()[0].clone());
    // While Apple's event is pending, the install is "pending" and no command exists.
    let path = format!("/v1/apps/{app_id}/installs");
    wait_for(
        Duration::from_secs(5),
        "the licenses to be requested",
        || {
            let admin = bed.admin.clone();
            let path = path.clone();
            async move {
                let rows = admin.list_all(&path).await?;
                let pending = rows.iter().filter(|i| i["status"] == "pending").count();
                Ok(if pending == 2 {
                    Ok(())
                } else {
                    Err(format!("{pending} pending: {rows:?}"))
                })
            }
        },
    )
    .await
    .unwrap();
    let commands = store.commands_of(&udid).await.unwrap();
    assert!(
        commands
            .iter()
            .all(|c| c.request_type != "InstallApplication"),
        "no install may be queued before Apple confirms: {:?}",
        commands.iter().map(|c| &c.request_type).collect::<Vec<_>>()
    );
    bed.wait_installed(&app_id, 2, Duration::from_secs(20))
        .await
        .unwrap();
    let installs: Vec<_> = store
        .commands_of(&udid)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.request_type == "InstallApplication")
        .collect();
    assert_eq!(installs.len(), 1, "exactly one install command per device");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn sync_with_a_token_apple_does_not_know_reports_apples_error(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let unknown = base64::engine::general_purpose::STANDARD.encode(
        r#"{"token":"bm90LWtub3du","expDate":"2099-01-01T00:00:00+0000","orgName":"Elsewhere"}"#,
    );
    let (status, token) = bed
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "Stray", "token_file": unknown, "consent": true }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{token}");
    let id = token["id"].as_str().unwrap();
    // The stand-in answers HTTP 200 with errorNumber 9622, as Apple does.
    let (status, body) = bed
        .admin
        .post(&format!("/v1/tokens/{id}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "apple_error");
    assert!(body["message"].as_str().unwrap().contains("9622"), "{body}");
    let (_, tokens) = bed.admin.get("/v1/tokens").await.unwrap();
    assert!(
        tokens["items"][0]["last_sync_error"]
            .as_str()
            .unwrap()
            .contains("9622"),
        "{tokens}"
    );
    let (_, apps) = bed.admin.get("/v1/apps").await.unwrap();
    assert_eq!(apps["items"].as_array().unwrap().len(), 0);
    bed.shutdown().await;
}

async fn an_event_apple_keeps_pending_is_submitted_again_without_a_second_license(
    builder: TestbedBuilder,
) {
    let bed = builder
        .event_resubmit(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(1, Duration::from_secs(600)).await.unwrap();
    // Apple keeps the first events pending for a long time.
    bed.apple.set_event_delay(Duration::from_secs(3600));
    let app = bed
        .assign_required(361309726, &fleet.udids(), "Slow")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the request submitted again",
        || async {
            let calls = bed.apple.with_world(|w| w.associate_calls);
            Ok(if calls >= 2 {
                Ok(())
            } else {
                Err(calls.to_string())
            })
        },
    )
    .await
    .unwrap();
    // Apple answers promptly again: the resubmitted request completes.
    bed.apple.set_event_delay(Duration::ZERO);
    bed.wait_installed(&app, 1, Duration::from_secs(60))
        .await
        .unwrap();
    let assigned = bed.apple.with_world(|w| {
        w.assets[&(
            orchard_testbed::harness::DEMO_LOCATION.to_owned(),
            361309726,
        )]
            .assigned
    });
    assert_eq!(assigned, 1, "asking again took no second license");
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    an_event_apple_keeps_pending_is_submitted_again_without_a_second_license,
    install_is_queued_only_after_the_association_event_completes,
    sync_with_a_token_apple_does_not_know_reports_apples_error,
);

/// The stand-in's users, retire and revoke calls keep Apple's counts right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_retires_users_and_revokes_assets() {
    use orchard_testbed::harness::{AdminClient, DEMO_LOCATION, Testbed};
    use serde_json::json;
    let bed = Testbed::builder().start().await.unwrap();
    let file = bed.apple.token_file(DEMO_LOCATION).unwrap();
    let apple = AdminClient::new(&bed.apple.vpp_url(), &bed.apple.ca_pem, &file).unwrap();
    let assigned = || {
        bed.apple
            .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), 361309726)].assigned)
    };
    let (status, _) = apple
        .post(
            "/users/create",
            json!({ "users": [{ "clientUserId": "u1", "email": "u1@example.com" }] }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = apple
        .post(
            "/users/update",
            json!({ "users": [{ "clientUserId": "u1", "email": "new@example.com" }] }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (_, users) = apple.get("/users?clientUserId=u1").await.unwrap();
    assert_eq!(users["users"][0]["email"], "new@example.com");
    let assets = json!([{ "adamId": "361309726", "pricingParam": "STDQ" }]);
    apple
        .post(
            "/assets/associate",
            json!({ "assets": assets, "clientUserIds": ["u1"] }),
        )
        .await
        .unwrap();
    apple
        .post(
            "/assets/associate",
            json!({ "assets": assets, "serialNumbers": ["SN1"] }),
        )
        .await
        .unwrap();
    assert_eq!(assigned(), 2);
    let (status, _) = apple
        .post("/assets/revoke", json!({ "serialNumbers": ["SN1"] }))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(assigned(), 1);
    let (status, _) = apple
        .post(
            "/users/retire",
            json!({ "users": [{ "clientUserId": "u1" }] }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(assigned(), 0, "a retired user's licenses go back");
    let (_, users) = apple.get("/users?clientUserId=u1").await.unwrap();
    assert_eq!(users["users"][0]["status"], "Retired");
    let (status, refused) = apple
        .post(
            "/users/retire",
            json!({ "users": [{ "clientUserId": "nobody" }] }),
        )
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), refused["errorNumber"].as_i64()),
        (400, Some(9609))
    );
    bed.shutdown().await;
}

/// The server follows the limits Apple's service config gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_follow_the_limits_of_service_config() {
    use orchard_testbed::harness::Testbed;
    let bed = Testbed::builder().start().await.unwrap();
    bed.apple.with_world(|w| w.max_serial_numbers = 7);
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed
        .enroll_fleet(20, Duration::from_secs(600))
        .await
        .unwrap();
    let app = bed
        .assign_required(1091189122, &fleet.udids(), "Limited")
        .await
        .unwrap();
    bed.wait_installed(&app, 20, Duration::from_secs(90))
        .await
        .unwrap();
    let largest = bed.apple.with_world(|w| w.largest_serial_batch);
    assert!((1..=7).contains(&largest), "largest batch {largest}");
    fleet.stop().await;
    bed.shutdown().await;
}
