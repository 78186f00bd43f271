//! Licensing decisions end to end, with real agents and the Apple stand-in: the app
//! must run on the device (store platforms, minimum OS) before a license is spent, and
//! no target in scope is ever silent, whatever state its token is in.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_agent::Agent;
use orchard_agent::Platform;
use orchard_agent::fleet::{DeviceKind, Fleet, FleetProfile};
use orchard_testbed::apple::Seed;
use orchard_testbed::apple::seed::SeedApp;
use orchard_testbed::harness::{DEMO_LOCATION, Testbed, TestbedBuilder, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);
const IPHONE_ONLY: u64 = 1700000001;
const IPAD_ON_MAC: u64 = 1700000002;

fn device(platform: Platform, product: &str, os: &str) -> DeviceKind {
    orchard_testbed::harness::device_kind(platform, product, os)
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

async fn a_serial_number_apple_refuses_does_not_block_the_batch(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed
        .enroll_fleet(16, Duration::from_secs(600))
        .await
        .unwrap();
    let bad = fleet.serials()[5].clone();
    bed.apple.with_world(|w| {
        w.refused_serials.insert(bad.clone());
    });
    let udids = fleet.udids();
    let app = bed
        .assign_required(1091189122, &udids, "Sixteen")
        .await
        .unwrap();
    // The other fifteen are served; the refusal is told to the one it concerns.
    bed.wait_installed(&app, 15, WAIT).await.unwrap();
    let row = bed
        .wait_install_status_where(&app, &udids[5], WAIT, |r| r["status"] == "license_failed")
        .await
        .unwrap();
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("9602"), "{reason}");
    assert_eq!(assigned_at_apple(&bed, 1091189122), 15);
    // Halving the batch found it: a handful of requests, not one per device.
    let calls = bed.apple.with_world(|w| w.associate_calls);
    assert!(calls <= 10, "{calls} association requests");
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

async fn an_app_store_that_cannot_be_reached_puts_the_install_off_and_it_is_tried_again(
    builder: TestbedBuilder,
) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    // Periodic check-ins ten minutes apart: only the device's own retry brings it back.
    let fleet = fleet(
        &bed,
        vec![device(Platform::Ios, "iPhone15,2", "17.5")],
        "STOREDOWN",
    )
    .await;
    let udids = fleet.udids();
    // The store is down for the first lookups: that is no answer that it does not sell
    // the app, so the device puts the install off and asks again.
    bed.apple.fail_store_lookups(2);
    let app = bed
        .assign_required(1091189122, &udids, "Store down")
        .await
        .unwrap();
    bed.wait_installed(&app, 1, WAIT).await.unwrap();
    assert_eq!(bed.apple.with_world(|w| w.store_outage), 0);
    let put_off = fleet.agents[0].device().lock().unwrap().put_off();
    assert!(
        put_off >= 1,
        "the install was put off while the store was down"
    );
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
    an_app_store_that_cannot_be_reached_puts_the_install_off_and_it_is_tried_again,
    a_store_that_does_not_sell_the_app_names_the_country,
    an_install_whose_assignment_went_away_while_the_device_was_offline_is_never_sent,
    apps_run_only_where_the_store_says,
    targets_of_an_unusable_token_are_told_why,
    two_devices_sharing_a_serial_do_not_block_the_others,
    a_serial_number_apple_refuses_does_not_block_the_batch,
    a_device_enrolled_again_takes_over_its_license,
);

/// Random changes of assignments, memberships and the token while some devices are
/// offline; once everything is back and has converged, the invariants hold on every
/// device:
/// - a device never installs an app Apple holds no license for (checked by the store
///   right before each install; a license given back within 50 ms before is the race
///   of a command already on its way, which every MDM has, and is not counted);
/// - every device in scope of an assignment has a status, whatever the token did;
/// - a serial number holds at most one license per app, and Apple's counts equal the
///   licenses the server holds.
///
/// The seed is printed; `ORCHARD_PROPERTY_SEED` replays one.
async fn random_changes_with_devices_offline_keep_the_invariants(builder: TestbedBuilder) {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("ORCHARD_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("property seed {seed} (ORCHARD_PROPERTY_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let online = bed.enroll_fleet(4, Duration::from_secs(600)).await.unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let kind = FleetProfile::supervised_iphones();
    // The part that goes offline resumes from its state files.
    let away_options = orchard_agent::fleet::FleetOptions {
        count: 4,
        concurrency: 4,
        run: "AWAY".into(),
        state_dir: Some(state_dir.path().to_owned()),
    };
    let template = bed
        .agent_config(kind.facts(0, "AWAY"), Duration::from_secs(600))
        .await
        .unwrap();
    let come_back = || async {
        Fleet::start(template.clone(), &kind, &away_options, |_| {})
            .await
            .unwrap()
    };
    let mut away = Some(come_back().await);
    let shared_serial = online.serials()[0].clone();
    let (twin, twin_stop) = twin(&bed, "TWIN-RANDOM", &shared_serial).await;
    let mut devices = online.udids();
    devices.extend(away.as_ref().unwrap().udids());
    devices.push("TWIN-RANDOM".into());

    let apps = [1091189122u64, 1500000001];
    let mut app_ids = Vec::new();
    for adam in apps {
        app_ids.push(
            bed.app_by_adam_id(adam).await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut groups = Vec::new();
    for name in ["Red", "Blue"] {
        let (_, g) = bed
            .admin
            .post("/v1/groups", json!({ "name": name }))
            .await
            .unwrap();
        groups.push(g["id"].as_str().unwrap().to_owned());
    }
    let mut members: std::collections::BTreeSet<(usize, String)> = Default::default();
    let mut assignments: std::collections::BTreeMap<(usize, usize), String> = Default::default();
    let mut blocked = false;

    for step in 0..48 {
        let g = rng.random_range(0..groups.len());
        let a = rng.random_range(0..app_ids.len());
        let d = devices[rng.random_range(0..devices.len())].clone();
        // Weighted: memberships and assignments change most, devices come and go, the
        // token now and then.
        let op = match rng.random_range(0..20) {
            0..5 => 0,
            5..8 => 1,
            8..12 => 2,
            12..15 => 3,
            15..18 => 4,
            _ => 5,
        };
        match op {
            0 => {
                bed.admin
                    .post(
                        &format!("/v1/groups/{}/devices", groups[g]),
                        json!({ "udids": [d] }),
                    )
                    .await
                    .unwrap();
                members.insert((g, d));
            }
            1 => {
                bed.admin
                    .delete(&format!("/v1/groups/{}/devices/{d}", groups[g]))
                    .await
                    .unwrap();
                members.remove(&(g, d));
            }
            2 if !assignments.contains_key(&(a, g)) => {
                let body = bed.assign(&app_ids[a], &groups[g], "device").await.unwrap();
                assignments.insert((a, g), body["id"].as_str().unwrap().to_owned());
            }
            3 => {
                if let Some(id) = assignments.remove(&(a, g)) {
                    bed.admin
                        .delete(&format!("/v1/assignments/{id}"))
                        .await
                        .unwrap();
                }
            }
            4 => match away.take() {
                Some(fleet) => fleet.stop().await,
                None => away = Some(come_back().await),
            },
            _ => {
                if blocked {
                    bed.admin
                        .post(&format!("/v1/tokens/{token}/take-over"), json!({}))
                        .await
                        .unwrap();
                } else {
                    bed.apple.with_world(|w| {
                        w.locations.get_mut(DEMO_LOCATION).unwrap().mdm_info =
                            Some(json!({ "id": "other-mdm", "name": "Other MDM", "metadata": "" }));
                    });
                    bed.admin
                        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
                        .await
                        .unwrap();
                }
                blocked = !blocked;
            }
        }
        eprintln!(
            "step {step}: members {members:?}, assignments {:?}, away online {}, token blocked {blocked}",
            assignments.keys().collect::<Vec<_>>(),
            away.is_some()
        );
        // Let Apple's side settle (licenses associated or given back), so that
        // installs queue up for offline devices and licenses go while they are away.
        // A pacing aid, not an assertion: what did not settle is checked at the end.
        let store = bed.server.state.store.clone();
        let expected: Vec<(String, String, bool)> = app_ids
            .iter()
            .enumerate()
            .flat_map(|(a, app_id)| devices.iter().map(move |d| (a, app_id.clone(), d.clone())))
            .map(|(a, app_id, d)| {
                let wanted = members
                    .iter()
                    .any(|(g, m)| m == &d && assignments.contains_key(&(a, *g)));
                (app_id, d, wanted)
            })
            .collect();
        let _ = wait_for(Duration::from_secs(10), "licenses to settle", || async {
            use orchard_server::store::LicenseState as S;
            let licenses = store.licenses().await?;
            for (app_id, udid, wanted) in &expected {
                let state = licenses
                    .iter()
                    .find(|l| &l.app_id == app_id && l.udid.as_str() == udid)
                    .map(|l| l.state);
                // A token another MDM holds moves nothing.
                let settled = match (wanted, state) {
                    _ if blocked => true,
                    (true, Some(S::Associated | S::Failed)) => true,
                    (false, None | Some(S::Failed | S::Revoked)) => true,
                    _ => false,
                };
                if !settled {
                    return Ok(Err(format!("{app_id} {udid}: {state:?}")));
                }
            }
            Ok(Ok(()))
        })
        .await;
    }

    // Everything back: the devices online, the token this server's again.
    if away.is_none() {
        away = Some(come_back().await);
    }
    if blocked {
        bed.admin
            .post(&format!("/v1/tokens/{token}/take-over"), json!({}))
            .await
            .unwrap();
    }
    let in_scope = |a: usize| -> std::collections::BTreeSet<String> {
        members
            .iter()
            .filter(|(g, _)| assignments.contains_key(&(a, *g)))
            .map(|(_, d)| d.clone())
            .collect()
    };
    let store = bed.server.state.store.clone();
    wait_for(Duration::from_secs(120), "convergence", || async {
        let licenses = store.licenses().await?;
        for (a, app_id) in app_ids.iter().enumerate() {
            let rows = bed
                .admin
                .list_all(&format!("/v1/apps/{app_id}/installs"))
                .await?;
            for udid in in_scope(a) {
                let row = rows.iter().find(|r| r["udid"] == udid.as_str());
                let settled = row.is_some_and(|r| {
                    ["installed", "license_failed", "not_applicable", "failed"]
                        .contains(&r["status"].as_str().unwrap_or(""))
                });
                if !settled {
                    return Ok(Err(format!("{udid} of app {a}: {row:?}")));
                }
            }
            let moving = licenses.iter().any(|l| {
                &l.app_id == app_id
                    && !matches!(
                        l.state,
                        orchard_server::store::LicenseState::Associated
                            | orchard_server::store::LicenseState::Failed
                            | orchard_server::store::LicenseState::Revoked
                    )
            });
            let held = licenses
                .iter()
                .filter(|l| {
                    &l.app_id == app_id
                        && l.state == orchard_server::store::LicenseState::Associated
                })
                .count() as i64;
            let at_apple = assigned_at_apple(&bed, apps[a]);
            if moving || held != at_apple {
                return Ok(Err(format!(
                    "app {a}: {held} held, {at_apple} at Apple, moving {moving}"
                )));
            }
        }
        Ok(Ok(()))
    })
    .await
    .unwrap();

    // A serial number holds at most one license per app.
    let licenses = store.licenses().await.unwrap();
    for app_id in &app_ids {
        let mut serials = std::collections::BTreeSet::new();
        for l in licenses.iter().filter(|l| {
            &l.app_id == app_id && l.state == orchard_server::store::LicenseState::Associated
        }) {
            assert!(
                serials.insert(l.serial_number.clone()),
                "seed {seed}: serial {} holds two licenses of {app_id}",
                l.serial_number
            );
        }
    }
    // No device installed an app Apple held no license for.
    let violations: Vec<String> = bed.apple.with_world(|w| {
        w.unlicensed_checks
            .iter()
            .filter(|(adam, serial, at)| {
                let released = w.serial_released_at.get(&(*adam, serial.clone()));
                released
                    .is_none_or(|r| at.saturating_duration_since(*r) > Duration::from_millis(50))
            })
            .map(|(adam, serial, _)| format!("{adam}/{serial}"))
            .collect()
    });
    assert!(
        violations.is_empty(),
        "seed {seed}: installs without a license at Apple: {violations:?}"
    );
    twin_stop.cancel();
    drop(twin);
    if let Some(fleet) = away {
        fleet.stop().await;
    }
    online.stop().await;
    bed.shutdown().await;
}

mod random_changes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::random_changes_with_devices_offline_keep_the_invariants(
            orchard_testbed::harness::Testbed::builder(),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(builder) = orchard_testbed::harness::Testbed::builder()
            .postgres()
            .await
        {
            super::random_changes_with_devices_offline_keep_the_invariants(builder).await;
        }
    }
}
