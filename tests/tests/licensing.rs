//! The licensing engine end to end with real agents and the Apple stand-in:
//! oversubscription and bought licenses, revoking by device, user and app on iOS and
//! macOS, Uninstall reclaiming, a user leaving a group, user-to-device migration and a
//! device checking out. After each, the server's counts equal the stand-in's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orchard_agent::fleet::{DeviceKind, Fleet};
use orchard_agent::persona::Persona;
use orchard_agent::{Ownership, Platform};
use orchard_protocol::command::ManagedAppStatus;
use orchard_server::engine::license_pool::NO_LICENSES;
use orchard_testbed::harness::{DEMO_LOCATION, Testbed, TestbedBuilder, wait_for};
use serde_json::{Value, json};

const PAGES: u64 = 361309726;
const TEAM_CHAT: u64 = 1500000001;
const WAIT: Duration = Duration::from_secs(90);

fn kind(platform: Platform, supervised: bool) -> DeviceKind {
    let (product, os) = match platform {
        Platform::MacOs => ("Mac14,2", "14.5"),
        _ => ("iPhone15,2", "17.5"),
    };
    DeviceKind {
        weight: 1,
        platform,
        os_versions: vec![os.into()],
        product_name: Some(product.into()),
        ownership: Ownership::Corporate,
        supervised,
        kiosk: false,
        app_store_allowed: true,
        apple_id: None,
        persona: Persona {
            answer_after_ms: 50,
            apple_id_to_enter: "person{index}@example.com".into(),
            ..Persona::default()
        },
        identity_key: orchard_certs::KeyAlgorithm::P256,
    }
}

/// One device per kind, in order.
async fn fleet(bed: &Testbed, kinds: Vec<DeviceKind>, run: &str) -> Fleet {
    bed.fleet_of(kinds, run).await.unwrap()
}

async fn app_id(bed: &Testbed, adam_id: u64) -> String {
    bed.app_by_adam_id(adam_id).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn serial_assigned(bed: &Testbed, adam_id: u64, serial: &str) -> bool {
    bed.apple.with_world(|w| {
        w.serial_assignments
            .contains(&(DEMO_LOCATION.to_owned(), adam_id, serial.to_owned()))
    })
}

fn user_assignments(bed: &Testbed, adam_id: u64) -> usize {
    bed.apple.with_world(|w| {
        w.user_assignments
            .iter()
            .filter(|(_, a, _)| *a == adam_id)
            .count()
    })
}

/// Waits until the stand-in's assigned count of an asset is `expected`.
async fn wait_assigned(bed: &Testbed, adam_id: u64, expected: i64) {
    wait_for(
        WAIT,
        &format!("{expected} assigned at Apple"),
        || async move {
            let assigned = bed
                .apple
                .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), adam_id)].assigned);
            Ok(if assigned == expected {
                Ok(())
            } else {
                Err(format!("{assigned}"))
            })
        },
    )
    .await
    .unwrap();
}

fn app_status(fleet: &Fleet, index: usize, bundle: &str) -> Option<ManagedAppStatus> {
    fleet.agents[index]
        .device()
        .lock()
        .unwrap()
        .apps()
        .get(bundle)
        .map(|a| a.status)
}

async fn statuses(bed: &Testbed, app_id: &str) -> (usize, usize, Vec<Value>) {
    let rows = bed
        .admin
        .list_all(&format!("/v1/apps/{app_id}/installs"))
        .await
        .unwrap();
    let installed = rows.iter().filter(|r| r["status"] == "installed").count();
    let refused: Vec<Value> = rows
        .iter()
        .filter(|r| r["status"] == "license_failed")
        .cloned()
        .collect();
    (installed, refused.len(), refused)
}

async fn oversubscribed_group_gets_exactly_the_purchased_count(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.apple.with_world(|w| {
        w.assets
            .get_mut(&(DEMO_LOCATION.to_owned(), TEAM_CHAT))
            .unwrap()
            .total = 100;
    });
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed
        .enroll_fleet(500, Duration::from_secs(600))
        .await
        .unwrap();
    let udids = fleet.udids();
    let app = bed
        .assign_required(TEAM_CHAT, &udids, "Everyone")
        .await
        .unwrap();
    let converged = |installed: usize, refused: usize| {
        let bed = &bed;
        let app = app.clone();
        async move {
            wait_for(
                Duration::from_secs(180),
                &format!("{installed} installed, {refused} refused"),
                || {
                    let app = app.clone();
                    async move {
                        let (i, r, _) = statuses(bed, &app).await;
                        Ok(if (i, r) == (installed, refused) {
                            Ok(())
                        } else {
                            Err(format!("{i} installed, {r} refused"))
                        })
                    }
                },
            )
            .await
            .unwrap();
        }
    };
    converged(100, 400).await;
    let (_, _, refused) = statuses(&bed, &app).await;
    assert!(refused.iter().all(|r| r["reason"] == NO_LICENSES));
    let managed = (0..fleet.agents.len())
        .filter(|i| {
            app_status(&fleet, *i, "com.example.teamchat") == Some(ManagedAppStatus::Managed)
        })
        .count();
    assert_eq!(managed, 100);
    assert_eq!(
        bed.counts_agree(&token, &app, TEAM_CHAT).await.unwrap(),
        (100, 100)
    );

    // 50 more are bought; the next sync serves the first 50 in line, no admin action.
    bed.apple.with_world(|w| {
        w.assets
            .get_mut(&(DEMO_LOCATION.to_owned(), TEAM_CHAT))
            .unwrap()
            .total += 50;
    });
    bed.admin
        .post(&format!("/v1/tokens/{token}/sync"), json!({}))
        .await
        .unwrap();
    converged(150, 350).await;
    assert_eq!(
        bed.counts_agree(&token, &app, TEAM_CHAT).await.unwrap(),
        (150, 150)
    );
    fleet.stop().await;
    bed.shutdown().await;
}

async fn revoking_by_device_user_and_app(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let pages = app_id(&bed, PAGES).await;
    // An iPhone and a Mac with device licenses, an iPhone of a user with a user license.
    let fleet = fleet(
        &bed,
        vec![
            kind(Platform::Ios, true),
            kind(Platform::MacOs, true),
            kind(Platform::Ios, true),
        ],
        "REV",
    )
    .await;
    let udids = fleet.udids();
    let serials = fleet.serials();
    let devices = bed
        .group_of("Devices", "device", &udids[..2])
        .await
        .unwrap();
    bed.assign(&pages, &devices, "device").await.unwrap();
    let ana = bed.create_user("ana@example.com").await.unwrap();
    bed.set_device_users(&udids[2..], &ana).await.unwrap();
    let people = bed
        .group_of("People", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    bed.assign(&pages, &people, "user").await.unwrap();
    for udid in &udids {
        bed.wait_install_status(&pages, udid, "installed", WAIT)
            .await
            .unwrap();
    }
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 3);

    // By device (iOS): the license goes back, the app stays installed.
    let (status, body) = bed
        .admin
        .post("/v1/licenses/revoke", json!({ "udid": udids[0] }))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["device_licenses"], 1);
    wait_assigned(&bed, PAGES, 2).await;
    assert!(!serial_assigned(&bed, PAGES, &serials[0]));
    assert_eq!(
        app_status(&fleet, 0, "com.apple.Pages"),
        Some(ManagedAppStatus::Managed),
        "revoking never uninstalls on iOS"
    );
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 2);

    // By user: the user license goes back.
    let (status, body) = bed
        .admin
        .post(
            "/v1/licenses/revoke",
            json!({ "user_id": ana, "notify_users": true }),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["user_licenses"], 1);
    assert_eq!(body["notified_devices"], 1, "{body}");
    // The user is told on the device; the device revoked by UDID above was not.
    wait_for(WAIT, "the notice on the user's device", || async {
        let notices = fleet.agents[2].device().lock().unwrap().notices().to_vec();
        Ok(match notices.first() {
            Some((_, message)) if message.contains("Pages") => Ok(()),
            _ => Err(format!("{notices:?}")),
        })
    })
    .await
    .unwrap();
    assert!(
        fleet.agents[0]
            .device()
            .lock()
            .unwrap()
            .notices()
            .is_empty()
    );
    wait_assigned(&bed, PAGES, 1).await;
    assert_eq!(user_assignments(&bed, PAGES), 0);
    assert_eq!(
        app_status(&fleet, 2, "com.apple.Pages"),
        Some(ManagedAppStatus::Managed)
    );

    // By app: what is left (the Mac's) goes back; the Mac keeps the app for its grace
    // period, which its agent learns from the App Store.
    let (status, body) = bed
        .admin
        .post("/v1/licenses/revoke", json!({ "app_id": pages }))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["device_licenses"], 1, "{body}");
    wait_assigned(&bed, PAGES, 0).await;
    assert_eq!(fleet.agents[1].recheck_licenses().await.unwrap(), 1);
    {
        let device = fleet.agents[1].device();
        let device = device.lock().unwrap();
        assert_eq!(
            device.apps().get("com.apple.Pages").map(|a| a.status),
            Some(ManagedAppStatus::Managed)
        );
        let grace = device.grace_ends("com.apple.Pages").unwrap();
        let days = grace.duration_since(std::time::Instant::now()).as_secs() / 86400;
        assert!((29..=30).contains(&days), "{days} days of grace");
    }
    // Revoked stays revoked while the assignments stand.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 0);

    // Books are never revoked.
    let book = app_id(&bed, 1490240032).await;
    let (status, body) = bed
        .admin
        .post("/v1/licenses/revoke", json!({ "app_id": book }))
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("book"), "{body}");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn uninstall_removes_the_app_then_reclaims_the_license(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let pages = app_id(&bed, PAGES).await;
    let fleet = fleet(
        &bed,
        vec![kind(Platform::Ios, true), kind(Platform::MacOs, true)],
        "UNI",
    )
    .await;
    let udids = fleet.udids();
    let group = bed.group_of("Lab", "device", &udids).await.unwrap();
    let assignment = bed.assign(&pages, &group, "device").await.unwrap();
    for udid in &udids {
        bed.wait_install_status(&pages, udid, "installed", WAIT)
            .await
            .unwrap();
    }
    let id = assignment["id"].as_str().unwrap();
    let (status, body) = bed
        .admin
        .patch(
            &format!("/v1/assignments/{id}"),
            json!({ "intent": "uninstall" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    bed.wait_install_status(&pages, &udids[0], "removed", WAIT)
        .await
        .unwrap();
    assert_eq!(
        app_status(&fleet, 0, "com.apple.Pages"),
        None,
        "removed from the iPhone"
    );
    let mac = bed
        .wait_install_status(&pages, &udids[1], "not_applicable", WAIT)
        .await
        .unwrap();
    assert_eq!(
        mac["reason"],
        orchard_server::engine::applicability::MACOS_UNINSTALL
    );
    assert_eq!(
        app_status(&fleet, 1, "com.apple.Pages"),
        Some(ManagedAppStatus::Managed)
    );
    // The iPhone's license goes back; the Mac's stays.
    wait_assigned(&bed, PAGES, 1).await;
    assert!(serial_assigned(&bed, PAGES, &fleet.serials()[1]));
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 1);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn user_leaving_the_group_loses_the_user_license(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let pages = app_id(&bed, PAGES).await;
    let fleet = fleet(&bed, vec![kind(Platform::Ios, true)], "LEAVE").await;
    let udid = fleet.udids().remove(0);
    let ana = bed.create_user("leaver@example.com").await.unwrap();
    bed.set_device_users(std::slice::from_ref(&udid), &ana)
        .await
        .unwrap();
    let group = bed
        .group_of("Team", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    bed.assign(&pages, &group, "user").await.unwrap();
    bed.wait_install_status(&pages, &udid, "installed", WAIT)
        .await
        .unwrap();
    assert_eq!(user_assignments(&bed, PAGES), 1);
    let (status, body) = bed
        .admin
        .delete(&format!("/v1/groups/{group}/users/{ana}"))
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), body["removed"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    wait_assigned(&bed, PAGES, 0).await;
    assert_eq!(user_assignments(&bed, PAGES), 0);
    assert_eq!(
        app_status(&fleet, 0, "com.apple.Pages"),
        Some(ManagedAppStatus::Managed)
    );
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 0);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn user_to_device_licensing_migrates_silently(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let pages = app_id(&bed, PAGES).await;
    // Unsupervised: a reinstall would show an install prompt.
    let fleet = fleet(&bed, vec![kind(Platform::Ios, false)], "MIG").await;
    let udid = fleet.udids().remove(0);
    let serial = fleet.serials().remove(0);
    let ana = bed.create_user("mover@example.com").await.unwrap();
    bed.set_device_users(std::slice::from_ref(&udid), &ana)
        .await
        .unwrap();
    let group = bed
        .group_of("Movers", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    let assignment = bed.assign(&pages, &group, "user").await.unwrap();
    bed.wait_install_status(&pages, &udid, "installed", WAIT)
        .await
        .unwrap();
    let prompts_before = fleet.agents[0].device().lock().unwrap().prompts().len();
    let id = assignment["id"].as_str().unwrap();
    let (status, body) = bed
        .admin
        .patch(
            &format!("/v1/assignments/{id}"),
            json!({ "license_type": "device" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for(WAIT, "a device license and no user license", || {
        let bed = &bed;
        let serial = serial.clone();
        async move {
            let state = (
                serial_assigned(bed, PAGES, &serial),
                user_assignments(bed, PAGES),
            );
            Ok(if state == (true, 0) {
                Ok(())
            } else {
                Err(format!("{state:?}"))
            })
        }
    })
    .await
    .unwrap();
    bed.wait_install_status(&pages, &udid, "installed", WAIT)
        .await
        .unwrap();
    {
        let device = fleet.agents[0].device();
        let device = device.lock().unwrap();
        let app = device.apps().get("com.apple.Pages").unwrap();
        assert_eq!(app.status, ManagedAppStatus::Managed);
        assert!(app.device_based_vpp, "now on the device license");
        assert_eq!(
            device.prompts().len(),
            prompts_before,
            "no prompt: not reinstalled"
        );
    }
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 1);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn device_checking_out_or_deleted_releases_its_licenses(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(2, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let serials = fleet.serials();
    let pages = bed.assign_required(PAGES, &udids, "Leavers").await.unwrap();
    for udid in &udids {
        bed.wait_install_status(&pages, udid, "installed", WAIT)
            .await
            .unwrap();
    }
    fleet.agents[0].check_out().await.unwrap();
    wait_assigned(&bed, PAGES, 1).await;
    assert!(!serial_assigned(&bed, PAGES, &serials[0]));
    assert!(serial_assigned(&bed, PAGES, &serials[1]));
    let (_, device) = bed
        .admin
        .get(&format!("/v1/devices/{}", udids[0]))
        .await
        .unwrap();
    assert_eq!(device["status"], "checked_out");
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 1);
    // A deleted device releases its licenses too.
    let (status, body) = bed
        .admin
        .delete(&format!("/v1/devices/{}", udids[1]))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_assigned(&bed, PAGES, 0).await;
    let (status, _) = bed
        .admin
        .get(&format!("/v1/devices/{}", udids[1]))
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 0);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn the_api_explains_which_assignment_applies(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let pages = app_id(&bed, PAGES).await;
    let fleet = fleet(&bed, vec![kind(Platform::Ios, true)], "WHY").await;
    let udid = fleet.udids().remove(0);
    let ana = bed.create_user("why@example.com").await.unwrap();
    bed.set_device_users(std::slice::from_ref(&udid), &ana)
        .await
        .unwrap();
    let users = bed
        .group_of("Why users", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    let devices = bed
        .group_of("Why devices", "device", std::slice::from_ref(&udid))
        .await
        .unwrap();
    let by_user = bed.assign(&pages, &users, "user").await.unwrap();
    let by_device = bed.assign(&pages, &devices, "device").await.unwrap();
    let (_, body) = bed
        .admin
        .get(&format!("/v1/devices/{udid}/assignments"))
        .await
        .unwrap();
    let item = &body["items"][0];
    assert_eq!(item["winner"]["assignment_id"], by_device["id"], "{body}");
    assert_eq!(
        item["overridden"][0]["candidate"]["assignment_id"],
        by_user["id"]
    );
    assert_eq!(
        item["overridden"][0]["rule"],
        orchard_server::engine::precedence::BY_GROUP
    );
    // The device license of the winning assignment is the one used.
    bed.wait_install_status(&pages, &udid, "installed", WAIT)
        .await
        .unwrap();
    assert!(serial_assigned(&bed, PAGES, &fleet.serials()[0]));
    assert_eq!(user_assignments(&bed, PAGES), 0);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn available_apps_are_licensed_when_the_user_asks(builder: TestbedBuilder) {
    const NUMBERS: u64 = 361304891;
    let bed = builder.start().await.unwrap();
    bed.apple.with_world(|w| {
        w.assets
            .get_mut(&(DEMO_LOCATION.to_owned(), NUMBERS))
            .unwrap()
            .total = 1;
    });
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let numbers = app_id(&bed, NUMBERS).await;
    let fleet = fleet(
        &bed,
        vec![kind(Platform::Ios, true), kind(Platform::Ios, true)],
        "PORTAL",
    )
    .await;
    let udids = fleet.udids();
    let ana = bed.create_user("portal@example.com").await.unwrap();
    bed.set_device_users(&udids, &ana).await.unwrap();
    let group = bed
        .group_of("Portal", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    let offer = json!({ "app_id": numbers, "group_id": group, "intent": "available", "license_type": "device" });
    let (status, body) = bed.admin.post("/v1/assignments", offer).await.unwrap();
    assert_eq!(status, 201, "{body}");
    // Offered, not installed: no license is taken until someone asks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bed.install_row(&numbers, &udids[0]).await.unwrap(),
        Value::Null
    );
    assert_eq!(
        bed.counts_agree(&token, &numbers, NUMBERS).await.unwrap().1,
        0
    );

    fleet.agents[0]
        .request_app(orchard_protocol::AdamId(NUMBERS))
        .await
        .unwrap();
    bed.wait_install_status(&numbers, &udids[0], "installed", WAIT)
        .await
        .unwrap();
    fleet.agents[1]
        .request_app(orchard_protocol::AdamId(NUMBERS))
        .await
        .unwrap();
    let refused = bed
        .wait_install_status(&numbers, &udids[1], "license_failed", WAIT)
        .await
        .unwrap();
    assert_eq!(refused["reason"], NO_LICENSES);
    // An app nobody offers cannot be asked for.
    let err = fleet.agents[0]
        .request_app(orchard_protocol::AdamId(PAGES))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no Available assignment"), "{err}");
    assert_eq!(
        bed.counts_agree(&token, &numbers, NUMBERS).await.unwrap(),
        (1, 1)
    );
    fleet.stop().await;
    bed.shutdown().await;
}

async fn license_only_assignment_installs_nothing(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let pages = app_id(&bed, PAGES).await;
    let fleet = bed.enroll_fleet(1, Duration::from_secs(600)).await.unwrap();
    let udid = fleet.udids().remove(0);
    let group = bed
        .group_of("Other tool", "device", std::slice::from_ref(&udid))
        .await
        .unwrap();
    let body = json!({ "app_id": pages, "group_id": group, "intent": "required", "license_type": "device", "install": false });
    let (status, answer) = bed.admin.post("/v1/assignments", body).await.unwrap();
    assert_eq!(status, 201, "{answer}");
    let row = bed
        .wait_install_status(&pages, &udid, "licensed", WAIT)
        .await
        .unwrap();
    assert_eq!(
        row["reason"],
        orchard_server::engine::license_pool::LICENSE_ONLY
    );
    assert!(serial_assigned(&bed, PAGES, &fleet.serials()[0]));
    assert_eq!(app_status(&fleet, 0, "com.apple.Pages"), None);
    let handled = fleet.agents[0].device().lock().unwrap().handled().clone();
    assert!(!handled.contains_key("InstallApplication"), "{handled:?}");
    assert_eq!(bed.counts_agree(&token, &pages, PAGES).await.unwrap().1, 1);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn any_token_assignment_falls_through_tokens_in_priority_order(builder: TestbedBuilder) {
    const BRANCH: &str = "2049025000431440";
    let mut seed = orchard_testbed::apple::Seed::demo();
    seed.locations.push(orchard_testbed::apple::seed::Location {
        uid: BRANCH.into(),
        name: "Branch".into(),
        country: "US".into(),
    });
    let pages_seed = seed.apps.iter_mut().find(|a| a.adam_id == PAGES).unwrap();
    pages_seed.licenses.insert(DEMO_LOCATION.into(), 1);
    pages_seed.licenses.insert(BRANCH.into(), 2);
    let bed = builder.seed(seed).start().await.unwrap();
    let hq = bed.upload_and_sync_demo_token().await.unwrap();
    let branch = bed.upload_and_sync_token(BRANCH, "Branch").await.unwrap();
    for (token, priority) in [(&hq, 1), (&branch, 2)] {
        let (status, body) = bed
            .admin
            .patch(
                &format!("/v1/tokens/{token}"),
                json!({ "priority": priority }),
            )
            .await
            .unwrap();
        assert_eq!(
            (status.as_u16(), body["priority"].as_i64()),
            (200, Some(priority))
        );
    }
    let (_, apps) = bed.admin.get("/v1/apps").await.unwrap();
    let copies: Vec<(String, String)> = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["adam_id"].as_str() == Some(PAGES.to_string().as_str()))
        .map(|a| {
            (
                a["token_id"].as_str().unwrap().to_owned(),
                a["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        copies.len(),
        2,
        "an app bought with two tokens appears once per token"
    );
    let app_of = |token: &str| copies.iter().find(|(t, _)| t == token).unwrap().1.clone();
    let (hq_app, branch_app) = (app_of(&hq), app_of(&branch));

    let fleet = bed.enroll_fleet(4, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let group = bed.group_of("Everyone", "device", &udids).await.unwrap();
    let body = json!({ "app_id": hq_app, "group_id": group, "intent": "required", "license_type": "device", "any_token": true });
    let (status, answer) = bed.admin.post("/v1/assignments", body).await.unwrap();
    assert_eq!(status, 201, "{answer}");
    // HQ's one license first, then Branch's two; the fourth device finds none.
    bed.wait_install_status(&hq_app, &udids[0], "installed", WAIT)
        .await
        .unwrap();
    for udid in &udids[1..3] {
        bed.wait_install_status(&branch_app, udid, "installed", WAIT)
            .await
            .unwrap();
    }
    let refused = bed
        .wait_install_status(&hq_app, &udids[3], "license_failed", WAIT)
        .await
        .unwrap();
    assert_eq!(refused["reason"], NO_LICENSES);
    let per_location = bed.apple.with_world(|w| {
        (
            w.assets[&(DEMO_LOCATION.to_owned(), PAGES)].assigned,
            w.assets[&(BRANCH.to_owned(), PAGES)].assigned,
        )
    });
    assert_eq!(per_location, (1, 2));
    assert_eq!(bed.counts_agree(&hq, &hq_app, PAGES).await.unwrap(), (1, 1));
    let (_, branch_view) = bed
        .admin
        .get(&format!("/v1/apps/{branch_app}"))
        .await
        .unwrap();
    assert_eq!(branch_view["licenses"]["used"], 2, "{branch_view}");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn deleting_a_group_gives_its_licenses_back(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed.enroll_fleet(3, Duration::from_secs(600)).await.unwrap();
    let udids = fleet.udids();
    let app = bed
        .assign_required(TEAM_CHAT, &udids, "Temporary")
        .await
        .unwrap();
    bed.wait_installed(&app, 3, WAIT).await.unwrap();
    wait_assigned(&bed, TEAM_CHAT, 3).await;
    let (_, groups) = bed.admin.get("/v1/groups").await.unwrap();
    let group = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Temporary")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = bed
        .admin
        .delete(&format!("/v1/groups/{group}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_assigned(&bed, TEAM_CHAT, 0).await;
    let (status, _) = bed
        .admin
        .delete(&format!("/v1/groups/{group}"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (_, assignments) = bed.admin.get("/v1/assignments").await.unwrap();
    assert!(
        assignments["items"].as_array().unwrap().is_empty(),
        "the assignment went with the group: {assignments}"
    );
    for i in 0..3 {
        assert_eq!(
            app_status(&fleet, i, "com.example.teamchat"),
            Some(ManagedAppStatus::Managed),
            "apps stay installed"
        );
    }
    fleet.stop().await;
    bed.shutdown().await;
}

/// A slow Apple (every association request answered after 700 ms, every event
/// finished 200 ms later, two serial numbers a request): the licenses go out in
/// batches, and the first batch's devices are installed before the last batch is even
/// asked for. No stage waits for the whole fleet.
async fn licenses_stream_in_batches_and_the_first_install_before_the_last_request(
    builder: TestbedBuilder,
) {
    let bed = builder.start().await.unwrap();
    bed.apple.with_world(|w| {
        w.max_serial_numbers = 2;
        w.associate_delay = Duration::from_millis(700);
        w.event_delay = Duration::from_millis(200);
    });
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = fleet(&bed, vec![kind(Platform::Ios, true); 8], "STREAM").await;
    let app = bed
        .assign_required(PAGES, &fleet.udids(), "Streaming")
        .await
        .unwrap();
    wait_for(WAIT, "the first batch installed", || async {
        let (installed, _, _) = statuses(&bed, &app).await;
        Ok(if installed >= 2 {
            Ok(())
        } else {
            Err(format!("{installed} installed"))
        })
    })
    .await
    .unwrap();
    let first_batch_installed = std::time::Instant::now();
    bed.wait_installed(&app, 8, WAIT).await.unwrap();
    let requests = bed.apple.with_world(|w| w.associated_at.clone());
    assert_eq!(requests.len(), 4, "four batches of two");
    let last_request = *requests.last().unwrap();
    assert!(
        first_batch_installed < last_request,
        "the first batch was installed {:?} after the last batch was asked for",
        first_batch_installed - last_request
    );
    // Exactly one license a device at Apple.
    wait_assigned(&bed, PAGES, 8).await;
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    licenses_stream_in_batches_and_the_first_install_before_the_last_request,
    deleting_a_group_gives_its_licenses_back,
    any_token_assignment_falls_through_tokens_in_priority_order,
    available_apps_are_licensed_when_the_user_asks,
    license_only_assignment_installs_nothing,
    oversubscribed_group_gets_exactly_the_purchased_count,
    revoking_by_device_user_and_app,
    uninstall_removes_the_app_then_reclaims_the_license,
    user_leaving_the_group_loses_the_user_license,
    user_to_device_licensing_migrates_silently,
    device_checking_out_or_deleted_releases_its_licenses,
    the_api_explains_which_assignment_applies,
);
