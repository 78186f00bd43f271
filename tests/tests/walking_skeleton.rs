//! End to end: the Apple stand-in, the server on SQLite and five agents on loopback over
//! real mutual TLS. A Required, device-licensed app assigned to a device group ends up
//! Managed with the store's version on every device, with exactly one license per serial.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_protocol::command::ManagedAppStatus;
use orchard_testbed::harness::{DEMO_LOCATION, TestbedBuilder, wait_for};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

const PAGES: u64 = 361309726;

async fn required_device_licensed_app_reaches_every_device_in_the_group(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let fleet = bed
        .enroll_fleet(5, Duration::from_millis(200))
        .await
        .unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let app = bed.app_by_adam_id(PAGES).await.unwrap();
    let app_id = app["id"].as_str().unwrap().to_owned();
    assert_eq!(app["bundle_id"], "com.apple.Pages");
    assert_eq!(app["licenses"]["used"], 0);
    let store_version = bed.apple.with_world(|w| w.catalog[&PAGES].version.clone());

    let (status, group) = bed
        .admin
        .post("/v1/groups", json!({ "name": "Field iPhones" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap().to_owned();
    let (status, body) = bed
        .admin
        .post(
            &format!("/v1/groups/{group_id}/devices"),
            json!({ "udids": fleet.udids() }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], 5);
    let (status, body) = bed
        .admin
        .post("/v1/assignments", json!({ "app_id": app_id, "group_id": group_id, "intent": "required", "license_type": "device" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let assigned_at = body["created_at"].as_str().unwrap().to_owned();

    let installs = bed
        .wait_installed(&app_id, 5, Duration::from_secs(30))
        .await
        .unwrap();

    // The server's view: every device verified Managed with the store's version.
    let mut udids: Vec<String> = installs
        .iter()
        .map(|i| i["udid"].as_str().unwrap().to_owned())
        .collect();
    udids.sort();
    let mut expected = fleet.udids();
    expected.sort();
    assert_eq!(udids, expected);
    for i in &installs {
        assert_eq!(i["device_status"], "Managed", "{i}");
        assert_eq!(i["version"], store_version.as_str(), "{i}");
    }

    // The devices' own view agrees.
    for agent in &fleet.agents {
        let device = agent.device();
        let device = device.lock().unwrap();
        let app = &device.apps()["com.apple.Pages"];
        assert_eq!(app.status, ManagedAppStatus::Managed);
        assert_eq!(app.version, store_version);
        assert!(app.device_based_vpp);
    }

    // Apple holds exactly one license per serial number, and the server's counts agree.
    let mut at_apple = bed
        .apple
        .with_world(|w| w.serials_for(DEMO_LOCATION, PAGES));
    at_apple.sort();
    let mut serials = fleet.serials();
    serials.sort();
    assert_eq!(at_apple, serials);
    let apple_counts = bed
        .apple
        .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), PAGES)]);
    assert_eq!(apple_counts.assigned, 5);
    let (_, app) = bed.admin.get(&format!("/v1/apps/{app_id}")).await.unwrap();
    assert_eq!(app["licenses"]["used"], 5, "{app}");
    assert_eq!(
        app["licenses"]["available"],
        apple_counts.total - 5,
        "{app}"
    );

    // Devices and install states are visible per device too.
    let (status, body) = bed
        .admin
        .get(&format!("/v1/devices/{}/installs", fleet.udids()[0]))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["status"], "installed");
    let (_, devices) = bed.admin.get("/v1/devices").await.unwrap();
    let devices = devices["items"].as_array().unwrap();
    assert_eq!(devices.len(), 5);
    assert!(
        devices
            .iter()
            .all(|d| d["status"] == "active" && d["is_supervised"] == true),
        "{devices:?}"
    );

    // Each device's sessions for the install are written as when it was last seen
    // (with other devices' times, shortly after).
    let assigned_at = time::OffsetDateTime::parse(&assigned_at, &Rfc3339).unwrap();
    wait_for(
        Duration::from_secs(10),
        "every device seen after the assignment",
        || async {
            let seen: Vec<String> = bed
                .admin
                .list_all("/v1/devices")
                .await?
                .iter()
                .map(|d| d["last_seen_at"].as_str().unwrap_or_default().to_owned())
                .collect();
            let after = seen
                .iter()
                .filter(|t| time::OffsetDateTime::parse(t, &Rfc3339).is_ok_and(|t| t > assigned_at))
                .count();
            Ok(if after == 5 {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            })
        },
    )
    .await
    .unwrap();

    fleet.stop().await;
    bed.shutdown().await;
}

async fn oversubscribed_group_gets_exactly_the_purchased_count(builder: TestbedBuilder) {
    // Numbers has 3 licenses in the demo seed; 5 devices want it.
    const NUMBERS: u64 = 361304891;
    let bed = builder.start().await.unwrap();
    let fleet = bed
        .enroll_fleet(5, Duration::from_millis(200))
        .await
        .unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = bed
        .assign_required(NUMBERS, &fleet.udids(), "All")
        .await
        .unwrap();
    let path = format!("/v1/apps/{app_id}/installs");
    let installs = wait_for(Duration::from_secs(30), "3 installed and 2 refused", || {
        let admin = bed.admin.clone();
        let path = path.clone();
        async move {
            let installs = admin.list_all(&path).await?;
            let installed = installs
                .iter()
                .filter(|i| i["status"] == "installed")
                .count();
            let refused = installs
                .iter()
                .filter(|i| i["status"] == "license_failed")
                .count();
            Ok(if installed == 3 && refused == 2 {
                Ok(installs)
            } else {
                Err(format!("{installs:?}"))
            })
        }
    })
    .await
    .unwrap();
    // Served in the order the devices joined: the first three enrolled.
    let udids = fleet.udids();
    for i in &installs {
        let position = udids
            .iter()
            .position(|u| u == i["udid"].as_str().unwrap())
            .unwrap();
        let expected = if position < 3 {
            "installed"
        } else {
            "license_failed"
        };
        assert_eq!(i["status"], expected, "{i}");
        if position >= 3 {
            assert_eq!(
                i["reason"],
                "license assignment failed: no licenses available"
            );
        }
    }
    assert_eq!(
        bed.apple
            .with_world(|w| w.serials_for(DEMO_LOCATION, NUMBERS).len()),
        3
    );
    let (_, app) = bed.admin.get(&format!("/v1/apps/{app_id}")).await.unwrap();
    assert_eq!(app["licenses"]["used"], 3);
    assert_eq!(app["licenses"]["available"], 0);
    // The same in one answer of counts.
    let (status, summary) = bed
        .admin
        .get(&format!("/v1/apps/{app_id}/summary"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["devices"], 5, "{summary}");
    assert_eq!(
        summary["installs"],
        serde_json::json!({ "installed": 3, "license_failed": 2 })
    );
    assert_eq!(
        summary["platforms"],
        serde_json::json!({ "ios": { "installed": 3, "license_failed": 2 } })
    );
    assert_eq!(summary["licenses"], app["licenses"]);
    let (status, missing) = bed.admin.get("/v1/apps/no-such-app/summary").await.unwrap();
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"], "not_found");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn rsa_identities_enroll_check_in_and_install(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let profile = orchard_agent::fleet::FleetProfile::parse(
        "[[devices]]\nplatform = \"ios\"\nos_versions = [\"17.5\"]\nsupervised = true\nidentity_key = \"rsa2048\"\n",
    )
    .unwrap();
    let fleet = bed
        .fleet_with(
            &profile,
            &bed.server.url,
            2,
            Duration::from_secs(600),
            "RSA",
        )
        .await
        .unwrap();
    for agent in &fleet.agents {
        assert!(agent.certificate_pem().contains("BEGIN CERTIFICATE"));
        let der =
            rustls_pki_types::pem::PemObject::from_pem_slice(agent.certificate_pem().as_bytes())
                .unwrap();
        let der: rustls_pki_types::CertificateDer = der;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.1",
            "an RSA identity"
        );
    }
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = bed
        .assign_required(PAGES, &fleet.udids(), "rsa")
        .await
        .unwrap();
    bed.wait_installed(&app_id, 2, Duration::from_secs(30))
        .await
        .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    rsa_identities_enroll_check_in_and_install,
    required_device_licensed_app_reaches_every_device_in_the_group,
    oversubscribed_group_gets_exactly_the_purchased_count,
);
