//! Install verification past the acknowledgement: a long install fails with a reason
//! after the app's timeout, and an app the user deleted by hand shows as not
//! installed while its license stays assigned.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_agent::fleet::{Fleet, FleetOptions, FleetProfile};
use orchard_testbed::harness::{DEMO_LOCATION, TestbedBuilder};
use serde_json::json;

const PAGES: u64 = 361309726;
const WAIT: Duration = Duration::from_secs(60);

async fn install_that_outlives_its_timeout_fails_with_a_reason(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = bed.app_by_adam_id(PAGES).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, app) = bed
        .admin
        .patch(
            &format!("/v1/apps/{app_id}"),
            json!({ "install_timeout_seconds": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{app}");
    assert_eq!(app["install_timeout_seconds"], 1);
    let (status, refused) = bed
        .admin
        .patch(
            &format!("/v1/apps/{app_id}"),
            json!({ "install_timeout_seconds": 0 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("install_timeout_seconds")
    );

    // A device whose downloads take a minute.
    let profile = FleetProfile::supervised_iphones();
    let mut template = bed
        .agent_config(profile.facts(0, "SLOW"), Duration::from_secs(600))
        .await
        .unwrap();
    template.timings.install = Duration::from_secs(60);
    let options = FleetOptions {
        count: 1,
        concurrency: 1,
        run: "SLOW".into(),
        state_dir: None,
    };
    let fleet = Fleet::start(template, &profile, &options, |_| {})
        .await
        .unwrap();
    let udid = fleet.udids().remove(0);
    bed.assign_required(PAGES, std::slice::from_ref(&udid), "Slow")
        .await
        .unwrap();
    let row = bed
        .wait_install_status(&app_id, &udid, "failed", WAIT)
        .await
        .unwrap();
    // Still on its way on the device (a real device walks Queued, ValidatingPurchase,
    // Installing).
    assert!(
        ["Queued", "ValidatingPurchase", "Installing"]
            .contains(&row["device_status"].as_str().unwrap_or("")),
        "{row}"
    );
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1 s"),
        "{row}"
    );
    // The failed install gives its license back.
    orchard_testbed::harness::wait_for(WAIT, "the license given back", || {
        let bed = &bed;
        async move {
            let assigned = bed
                .apple
                .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), PAGES)].assigned);
            Ok(if assigned == 0 {
                Ok(())
            } else {
                Err(format!("{assigned} assigned"))
            })
        }
    })
    .await
    .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

async fn app_deleted_by_the_user_shows_not_installed_and_keeps_its_license(
    builder: TestbedBuilder,
) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(1, Duration::from_secs(600)).await.unwrap();
    let udid = fleet.udids().remove(0);
    let app_id = bed
        .assign_required(PAGES, std::slice::from_ref(&udid), "Deleters")
        .await
        .unwrap();
    bed.wait_install_status(&app_id, &udid, "installed", WAIT)
        .await
        .unwrap();
    assert!(
        fleet.agents[0]
            .device()
            .lock()
            .unwrap()
            .user_deletes_app("com.apple.Pages")
    );
    let (status, body) = bed
        .admin
        .post(&format!("/v1/devices/{udid}/inventory"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queries_queued"], 1);
    let row = bed
        .wait_install_status(&app_id, &udid, "not_installed", WAIT)
        .await
        .unwrap();
    assert_eq!(row["device_status"], "ManagedButUninstalled", "{row}");
    let serial = fleet.serials().remove(0);
    let still_assigned = bed.apple.with_world(|w| {
        w.serial_assignments
            .contains(&(DEMO_LOCATION.to_owned(), PAGES, serial.clone()))
    });
    assert!(still_assigned, "deleting the app by hand frees no license");
    let (_, app) = bed.admin.get(&format!("/v1/apps/{app_id}")).await.unwrap();
    assert_eq!(app["licenses"]["used"], 1, "{app}");
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    install_that_outlives_its_timeout_fails_with_a_reason,
    app_deleted_by_the_user_shows_not_installed_and_keeps_its_license,
);
