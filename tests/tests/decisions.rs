//! Licensing decisions end to end, with real agents and the Apple stand-in: the app
//! must run on the device (store platforms, minimum OS) before a license is spent, and
//! no target in scope is ever silent, whatever state its token is in.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_agent::Agent;
use orchard_agent::fleet::{DeviceKind, Fleet, FleetProfile};
use orchard_agent::persona::Persona;
use orchard_agent::{Ownership, Platform};
use orchard_testbed::apple::Seed;
use orchard_testbed::apple::seed::SeedApp;
use orchard_testbed::harness::{DEMO_LOCATION, Testbed, TestbedBuilder, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);
const IPHONE_ONLY: u64 = 1700000001;
const IPAD_ON_MAC: u64 = 1700000002;

fn device(platform: Platform, product: &str, os: &str) -> DeviceKind {
    DeviceKind {
        weight: 1,
        platform,
        os_versions: vec![os.into()],
        product_name: Some(product.into()),
        ownership: Ownership::Corporate,
        supervised: true,
        kiosk: false,
        app_store_allowed: true,
        apple_id: None,
        persona: Persona::default(),
        identity_key: orchard_certs::KeyAlgorithm::P256,
    }
}

fn seed_app(adam_id: u64, name: &str, platforms: &[&str], minimum_os: &str) -> SeedApp {
    SeedApp {
        adam_id,
        name: name.into(),
        bundle_id: format!("com.example.{}", name.to_lowercase().replace(' ', "")),
        version: "1.0".into(),
        product_type: "App".into(),
        platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
        device_assignable: true,
        licenses: [(DEMO_LOCATION.to_owned(), 20)].into(),
        countries: vec![],
        minimum_os: minimum_os.into(),
        minimum_macos: "11.0".into(),
    }
}

/// One device per kind, in order.
async fn fleet(bed: &Testbed, kinds: Vec<DeviceKind>, run: &str) -> Fleet {
    bed.fleet_of(kinds, run).await.unwrap()
}

/// Waits until every device's row of the app has the expected status; returns the rows.
async fn wait_statuses(bed: &Testbed, app_id: &str, expected: &[(&str, &str)]) -> Vec<Value> {
    let mut rows = Vec::new();
    for (udid, status) in expected {
        rows.push(
            bed.wait_install_status_where(app_id, udid, WAIT, |r| r["status"] == *status)
                .await
                .unwrap(),
        );
    }
    rows
}

fn assigned_at_apple(bed: &Testbed, adam_id: u64) -> i64 {
    bed.apple
        .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), adam_id)].assigned)
}

async fn apps_run_only_where_the_store_says(builder: TestbedBuilder) {
    let mut seed = Seed::demo();
    seed.apps
        .push(seed_app(IPHONE_ONLY, "Phone Only", &["iPhone"], "15.0"));
    seed.apps.push(seed_app(
        IPAD_ON_MAC,
        "Tablet Tools",
        &["iPad", "AppleSiliconMac"],
        "15.0",
    ));
    let bed = builder.seed(seed).start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = fleet(
        &bed,
        vec![
            device(Platform::Ios, "iPhone15,2", "17.5"),
            device(Platform::Ios, "iPhone12,1", "14.0"),
            device(Platform::IpadOs, "iPad13,18", "17.5"),
            device(Platform::MacOs, "Mac14,2", "14.5"),
            device(Platform::MacOs, "MacBookPro16,1", "14.5"),
        ],
        "platforms",
    )
    .await;
    let u = fleet.udids();
    let (phone, old_phone, ipad, silicon, intel) = (&u[0], &u[1], &u[2], &u[3], &u[4]);

    let app = bed.assign_required(IPHONE_ONLY, &u, "All").await.unwrap();
    let rows = wait_statuses(
        &bed,
        &app,
        &[
            (phone, "installed"),
            (old_phone, "not_applicable"),
            (ipad, "not_applicable"),
            (silicon, "not_applicable"),
            (intel, "not_applicable"),
        ],
    )
    .await;
    assert!(
        rows[1]["reason"].as_str().unwrap().contains("iOS 15.0"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2]["reason"].as_str().unwrap().contains("an iPad"),
        "{}",
        rows[2]
    );
    assert_eq!(
        assigned_at_apple(&bed, IPHONE_ONLY),
        1,
        "no license is spent on a device that cannot run the app"
    );

    let app = bed.assign_required(IPAD_ON_MAC, &u, "All 2").await.unwrap();
    let rows = wait_statuses(
        &bed,
        &app,
        &[
            (ipad, "installed"),
            (silicon, "installed"),
            (intel, "not_applicable"),
            (phone, "not_applicable"),
        ],
    )
    .await;
    assert!(
        rows[2]["reason"]
            .as_str()
            .unwrap()
            .contains("Macs with Apple silicon"),
        "{}",
        rows[2]
    );
    assert_eq!(assigned_at_apple(&bed, IPAD_ON_MAC), 2);

    // The store raises the minimum after the server's last sync: the server still
    // thinks the device can run the app, the device refuses as a real one does, and the
    // status names the version.
    bed.apple.with_world(|w| {
        w.catalog.get_mut(&1091189122).unwrap().minimum_os = "18.0".into();
    });
    let app = bed
        .assign_required(1091189122, std::slice::from_ref(phone), "Phone")
        .await
        .unwrap();
    let row = bed
        .wait_install_status_where(&app, phone, WAIT, |r| r["status"] == "failed")
        .await
        .unwrap();
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("NotSupported") && reason.contains("iOS 18.0"),
        "{reason}"
    );
    fleet.stop().await;
    bed.shutdown().await;
}

async fn targets_of_an_unusable_token_are_told_why(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(3, Duration::from_secs(600)).await.unwrap();
    let u = fleet.udids();
    // One device is served while the token works.
    let app = bed
        .assign_required(361309726, &u[..1], "First")
        .await
        .unwrap();
    bed.wait_installed(&app, 1, WAIT).await.unwrap();

    // Another MDM takes the location; the next sync sees it.
    bed.apple.with_world(|w| {
        w.locations.get_mut(DEMO_LOCATION).unwrap().mdm_info =
            Some(json!({ "id": "other-mdm", "name": "Other MDM", "metadata": "" }));
    });
    bed.admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    wait_for(WAIT, "the token shows the other MDM", || async {
        let (_, t) = bed.admin.get(&format!("/v1/tokens/{token}")).await?;
        Ok(if t["status"] == "assigned_to_external_mdm" {
            Ok(())
        } else {
            Err(t.to_string())
        })
    })
    .await
    .unwrap();

    let group = bed.group_of("Later", "device", &u[1..]).await.unwrap();
    bed.assign(&app, &group, "device").await.unwrap();
    for udid in &u[1..] {
        let row = bed
            .wait_install_status_where(&app, udid, WAIT, |r| r["status"] == "license_failed")
            .await
            .unwrap();
        let reason = row["reason"].as_str().unwrap();
        assert!(
            reason.contains("assigned to another MDM") && reason.contains("take it over"),
            "{reason}"
        );
    }
    // The device served before keeps its app and its status.
    let row = bed.install_row(&app, &u[0]).await.unwrap();
    assert_eq!(row["status"], "installed", "{row}");
    fleet.stop().await;
    bed.shutdown().await;
}

/// Starts one more device whose serial number is `serial` (another record of the same
/// hardware, or a device that lies about its serial).
async fn twin(bed: &Testbed, udid: &str, serial: &str) -> (Agent, CancellationToken) {
    let mut facts = FleetProfile::supervised_iphones().facts(0, "TWIN");
    facts.udid = udid.into();
    facts.serial_number = serial.into();
    let config = bed
        .agent_config(facts, Duration::from_secs(600))
        .await
        .unwrap();
    let agent = Agent::start(config).await.unwrap();
    let stop = CancellationToken::new();
    let running = agent.clone();
    let until = stop.clone();
    tokio::spawn(async move { running.run(until).await });
    (agent, stop)
}

async fn two_devices_sharing_a_serial_do_not_block_the_others(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed
        .enroll_fleet(49, Duration::from_secs(600))
        .await
        .unwrap();
    let shared = fleet.serials()[0].clone();
    // A newer record of the first device's serial number, still alive beside it.
    let (twin, stop) = twin(&bed, "TWIN-OF-0", &shared).await;
    let mut udids = fleet.udids();
    udids.push("TWIN-OF-0".into());
    let app = bed
        .assign_required(1091189122, &udids, "Fifty")
        .await
        .unwrap();
    // 48 others and the newest record of the shared serial are served.
    bed.wait_installed(&app, 49, WAIT).await.unwrap();
    let twin_row = bed.install_row(&app, "TWIN-OF-0").await.unwrap();
    assert_eq!(twin_row["status"], "installed", "{twin_row}");
    let old = bed
        .wait_install_status_where(&app, &udids[0], WAIT, |r| r["status"] == "license_failed")
        .await
        .unwrap();
    let reason = old["reason"].as_str().unwrap();
    assert!(
        reason.contains(&shared) && reason.contains("TWIN-OF-0"),
        "the status names the conflict: {reason}"
    );
    assert_eq!(
        assigned_at_apple(&bed, 1091189122),
        49,
        "one license per serial number"
    );
    stop.cancel();
    drop(twin);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_device_enrolled_again_takes_over_its_license(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(2, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let serial = fleet.serials()[0].clone();
    let app = bed.app_by_adam_id(1091189122).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = bed.group_of("Two", "device", &udids).await.unwrap();
    bed.assign(&app, &group, "device").await.unwrap();
    bed.wait_installed(&app, 2, WAIT).await.unwrap();
    // The first device is erased: its old record goes quiet and it enrolls again
    // under a new UDID, into the same group.
    fleet.stop().await;
    let (twin, stop) = twin(&bed, "ERASED-AND-BACK", &serial).await;
    let (status, body) = bed
        .admin
        .post(
            &format!("/v1/groups/{group}/devices"),
            json!({ "udids": ["ERASED-AND-BACK"] }),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");
    bed.wait_install_status_where(&app, "ERASED-AND-BACK", WAIT, |r| {
        r["status"] == "installed"
    })
    .await
    .unwrap();
    let old = bed
        .wait_install_status_where(&app, &udids[0], WAIT, |r| r["status"] == "license_failed")
        .await
        .unwrap();
    assert!(
        old["reason"].as_str().unwrap().contains("ERASED-AND-BACK"),
        "{old}"
    );
    assert_eq!(
        assigned_at_apple(&bed, 1091189122),
        2,
        "the license moved with the serial number; none more was taken"
    );
    stop.cancel();
    drop(twin);
    bed.shutdown().await;
}

async fn an_install_whose_assignment_went_away_while_the_device_was_offline_is_never_sent(
    builder: TestbedBuilder,
) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let fleet = bed
        .fleet(
            1,
            Duration::from_secs(600),
            Some(state_dir.path().to_owned()),
        )
        .await
        .unwrap();
    let udid = fleet.udids().remove(0);
    fleet.stop().await;
    // Offline: the assignment licenses the device and queues its install.
    let app = bed.app_by_adam_id(1091189122).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = bed
        .group_of("Offline", "device", std::slice::from_ref(&udid))
        .await
        .unwrap();
    let assignment = bed.assign(&app, &group, "device").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bed.wait_install_status_where(&app, &udid, WAIT, |r| r["status"] == "queued")
        .await
        .unwrap();
    // Still offline: the assignment is deleted and its license goes back to Apple.
    let (status, body) = bed
        .admin
        .delete(&format!("/v1/assignments/{assignment}"))
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");
    wait_for(WAIT, "the license back at Apple", || async {
        let n = assigned_at_apple(&bed, 1091189122);
        Ok(if n == 0 { Ok(()) } else { Err(n.to_string()) })
    })
    .await
    .unwrap();
    // Back online: the queued install is withdrawn, never sent.
    let fleet = bed
        .fleet(
            1,
            Duration::from_secs(600),
            Some(state_dir.path().to_owned()),
        )
        .await
        .unwrap();
    let row = bed
        .wait_install_status_where(&app, &udid, WAIT, |r| {
            r["reason"]
                .as_str()
                .is_some_and(|w| w.starts_with("install withdrawn"))
        })
        .await
        .unwrap();
    assert_ne!(row["status"], "installed", "{row}");
    {
        let device = fleet.agents[0].device();
        let device = device.lock().unwrap();
        assert!(
            device.apps().is_empty(),
            "the device never got the app: {:?}",
            device.apps()
        );
        assert_eq!(device.handled().get("InstallApplication"), None);
    }
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_locked_device_is_served_once_it_is_unlocked(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let mut locked = device(Platform::Ios, "iPhone15,2", "17.5");
    locked.persona.locked_for_ms = 5000;
    let fleet = fleet(&bed, vec![locked], "LOCKED").await;
    let udids = fleet.udids();
    let app = bed
        .assign_required(1091189122, &udids, "Locked")
        .await
        .unwrap();
    bed.wait_installed(&app, 1, WAIT).await.unwrap();
    let put_off = fleet.agents[0].device().lock().unwrap().put_off();
    assert!(put_off >= 1, "the install was put off while locked");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_store_that_does_not_sell_the_app_names_the_country(builder: TestbedBuilder) {
    let mut seed = Seed::demo();
    let mut us_only = seed_app(1700000003, "Local News", &["iOS"], "15.0");
    us_only.countries = vec!["US".into()];
    seed.apps.push(us_only);
    let bed = builder.seed(seed).start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let profile = FleetProfile {
        devices: vec![device(Platform::Ios, "iPhone15,2", "17.5")],
    };
    let mut template = bed
        .agent_config(profile.facts(0, "ABROAD"), Duration::from_secs(600))
        .await
        .unwrap();
    template.store.country = "DE".into();
    let options = orchard_agent::fleet::FleetOptions {
        count: 1,
        concurrency: 1,
        run: "ABROAD".into(),
        state_dir: None,
    };
    let fleet = Fleet::start(template, &profile, &options, |_| {})
        .await
        .unwrap();
    let udid = fleet.udids().remove(0);
    let app = bed
        .assign_required(1700000003, std::slice::from_ref(&udid), "Abroad")
        .await
        .unwrap();
    let row = bed
        .wait_install_status_where(&app, &udid, WAIT, |r| r["status"] == "failed")
        .await
        .unwrap();
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("(DE)"),
        "the status names the country: {reason}"
    );
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    a_locked_device_is_served_once_it_is_unlocked,
    a_store_that_does_not_sell_the_app_names_the_country,
    an_install_whose_assignment_went_away_while_the_device_was_offline_is_never_sent,
    apps_run_only_where_the_store_says,
    targets_of_an_unusable_token_are_told_why,
    two_devices_sharing_a_serial_do_not_block_the_others,
    a_device_enrolled_again_takes_over_its_license,
);
