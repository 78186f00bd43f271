//! Store metadata and versions end to end: a new version published at the stand-in
//! reaches Required devices (and a persona may decline it), Available devices see
//! "update available" and take it on request; changing the token's country refreshes
//! metadata, and an app the new store does not sell keeps its old metadata, flagged.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_agent::fleet::{DeviceKind, FleetProfile};
use orchard_agent::persona::{Persona, Response};
use orchard_agent::{Ownership, Platform};
use orchard_protocol::prompt::{PromptAnswer, PromptKind};
use orchard_testbed::apple::Seed;
use orchard_testbed::harness::{AdminClient, TestbedBuilder};
use serde_json::json;

const PAGES: u64 = 361309726;
const FIELD_NOTES: u64 = 1091189122;
const WAIT: Duration = Duration::from_secs(90);

fn kind(supervised: bool, update: Response) -> DeviceKind {
    DeviceKind {
        weight: 1,
        platform: Platform::Ios,
        os_versions: vec!["17.5".into()],
        product_name: Some("iPhone15,2".into()),
        ownership: Ownership::Corporate,
        supervised,
        kiosk: false,
        app_store_allowed: true,
        apple_id: None,
        persona: Persona {
            update,
            answer_after_ms: 50,
            ..Persona::default()
        },
        identity_key: orchard_certs::KeyAlgorithm::P256,
    }
}

async fn new_version_reaches_required_devices_and_is_offered_to_available_ones(
    builder: TestbedBuilder,
) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let (status, _) = bed
        .admin
        .patch(
            &format!("/v1/tokens/{token}"),
            json!({ "automatic_updates": true }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let app = bed.app_by_adam_id(PAGES).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let profile = FleetProfile {
        devices: vec![
            kind(true, Response::Accept),
            kind(false, Response::Decline),
            kind(true, Response::Accept),
        ],
    };
    let fleet = bed
        .fleet_with(
            &profile,
            &bed.server.url,
            3,
            Duration::from_secs(600),
            "UPD",
        )
        .await
        .unwrap();
    let udids = fleet.udids();
    let required = bed
        .group_of("Required", "device", &udids[..2])
        .await
        .unwrap();
    bed.assign(&app, &required, "device").await.unwrap();
    let ana = bed.create_user("upd@example.com").await.unwrap();
    bed.set_device_users(&udids[2..], &ana).await.unwrap();
    let people = bed
        .group_of("Portal", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    let offer = json!({ "app_id": app, "group_id": people, "intent": "available", "license_type": "device" });
    let (status, body) = bed.admin.post("/v1/assignments", offer).await.unwrap();
    assert_eq!(status, 201, "{body}");
    fleet.agents[2]
        .request_app(orchard_protocol::AdamId(PAGES))
        .await
        .unwrap();
    for udid in &udids {
        let row = bed
            .wait_install_status(&app, udid, "installed", WAIT)
            .await
            .unwrap();
        assert_eq!(row["version"], "14.1");
    }

    let stand_in = AdminClient::new(&bed.apple.base_url(), &bed.apple.ca_pem, "").unwrap();
    let (status, _) = stand_in
        .post(
            &format!("/testbed/apps/{PAGES}/version"),
            json!({ "version": "14.2" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = bed
        .admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Required, supervised: updated silently.
    let updated = bed
        .wait_install_status_where(&app, &udids[0], WAIT, |r| {
            r["status"] == "installed" && r["version"] == "14.2"
        })
        .await
        .unwrap();
    assert_eq!(updated["device_status"], "Managed");
    // Required, the user declines: still installed at the old version, reported.
    let declined = bed
        .wait_install_status_where(&app, &udids[1], WAIT, |r| {
            r["device_status"] == "UpdateRejected"
        })
        .await
        .unwrap();
    assert_eq!(
        (declined["status"].as_str(), declined["version"].as_str()),
        (Some("installed"), Some("14.1"))
    );
    let prompts = fleet.agents[1].device().lock().unwrap().prompts();
    assert!(
        prompts
            .iter()
            .any(|p| p.kind == PromptKind::AppUpdate && p.answer == Some(PromptAnswer::Declined)),
        "{prompts:?}"
    );
    // Available: offered, then taken on request.
    let offered = bed
        .wait_install_status(&app, &udids[2], "update_available", WAIT)
        .await
        .unwrap();
    assert!(
        offered["reason"].as_str().unwrap().contains("14.2"),
        "{offered}"
    );
    fleet.agents[2]
        .request_app(orchard_protocol::AdamId(PAGES))
        .await
        .unwrap();
    bed.wait_install_status_where(&app, &udids[2], WAIT, |r| {
        r["status"] == "installed" && r["version"] == "14.2"
    })
    .await
    .unwrap();
    let (_, used) = bed.counts_agree(&token, &app, PAGES).await.unwrap();
    assert_eq!(used, 3, "updates take no new license");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn country_change_refreshes_metadata_and_flags_missing_apps(builder: TestbedBuilder) {
    let mut seed = Seed::demo();
    let notes = seed
        .apps
        .iter_mut()
        .find(|a| a.adam_id == FIELD_NOTES)
        .unwrap();
    notes.countries = vec!["US".into()];
    let bed = builder.seed(seed).start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let pages = bed.app_by_adam_id(PAGES).await.unwrap();
    assert!(
        pages["store_url"].as_str().unwrap().contains("/us/"),
        "{pages}"
    );
    let (status, view) = bed
        .admin
        .patch(&format!("/v1/tokens/{token}"), json!({ "country": "de" }))
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), view["store_country"].as_str()),
        (200, Some("DE"))
    );
    let (status, summary) = bed
        .admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["country"], "DE");
    assert_eq!(
        summary["missing_metadata"],
        json!([FIELD_NOTES.to_string()])
    );
    let pages = bed.app_by_adam_id(PAGES).await.unwrap();
    assert!(
        pages["store_url"].as_str().unwrap().contains("/de/"),
        "{pages}"
    );
    let notes = bed.app_by_adam_id(FIELD_NOTES).await.unwrap();
    assert_eq!(
        notes["name"], "Field Notes Pro",
        "old metadata kept: {notes}"
    );
    assert!(notes["store_url"].as_str().unwrap().contains("/us/"));
    let (status, bad) = bed
        .admin
        .patch(
            &format!("/v1/tokens/{token}"),
            json!({ "country": "Germany" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{bad}");
    bed.shutdown().await;
}

async fn a_revoked_mac_gets_no_update(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    bed.admin
        .patch(
            &format!("/v1/tokens/{token}"),
            json!({ "automatic_updates": true }),
        )
        .await
        .unwrap();
    let mut mac = kind(true, Response::Accept);
    mac.platform = Platform::MacOs;
    mac.product_name = Some("Mac14,2".into());
    mac.os_versions = vec!["14.5".into()];
    let profile = FleetProfile {
        devices: vec![kind(true, Response::Accept), mac],
    };
    let fleet = bed
        .fleet_with(
            &profile,
            &bed.server.url,
            2,
            Duration::from_secs(600),
            "REVMAC",
        )
        .await
        .unwrap();
    let udids = fleet.udids();
    let app = bed.assign_required(PAGES, &udids, "Both").await.unwrap();
    bed.wait_installed(&app, 2, WAIT).await.unwrap();
    let (status, body) = bed
        .admin
        .post("/v1/licenses/revoke", json!({ "udid": udids[1] }))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let serial = fleet.serials()[1].clone();
    orchard_testbed::harness::wait_for(WAIT, "the Mac's license revoked at Apple", || async {
        let held = bed.apple.with_world(|w| {
            w.serial_assignments.contains(&(
                orchard_testbed::harness::DEMO_LOCATION.to_owned(),
                PAGES,
                serial.clone(),
            ))
        });
        Ok(if held {
            Err("still assigned".to_owned())
        } else {
            Ok(())
        })
    })
    .await
    .unwrap();
    bed.apple.with_world(|w| {
        w.catalog.get_mut(&PAGES).unwrap().version = "14.2".into();
    });
    bed.admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    // The iPhone updates; the revoked Mac keeps 14.1 and is sent nothing.
    bed.wait_install_status_where(&app, &udids[0], WAIT, |r| r["version"] == "14.2")
        .await
        .unwrap();
    // Planned together with the iPhone's update: the Mac's row is untouched.
    let row = bed.install_row(&app, &udids[1]).await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["version"].as_str()),
        (Some("installed"), Some("14.1")),
        "{row}"
    );
    let device = fleet.agents[1].device();
    let installs = device
        .lock()
        .unwrap()
        .handled()
        .get("InstallApplication")
        .copied();
    assert_eq!(installs, Some(1), "the Mac got only its first install");
    assert_eq!(
        device.lock().unwrap().apps()["com.apple.Pages"].version,
        "14.1"
    );
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    a_revoked_mac_gets_no_update,
    new_version_reaches_required_devices_and_is_offered_to_available_ones,
    country_change_refreshes_metadata_and_flags_missing_apps,
);
