//! The prompt table of the product specification (section 3) end to end: real agents,
//! the server and the Apple stand-in. For each scenario exactly the prompts of the
//! table appear on the device, the server's prompt report says the same, and the app
//! ends Managed with an accepting persona; user licensing runs through Apple's users
//! API and the VPP invitation.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use orchard_agent::fleet::{DeviceKind, Fleet};
use orchard_agent::persona::{Persona, Response};
use orchard_agent::{Ownership, Platform};
use orchard_protocol::prompt::{PromptAnswer, PromptKind};
use orchard_server::engine::user_licensing;
use orchard_testbed::harness::{DEMO_LOCATION, Testbed, TestbedBuilder};

const PAGES: u64 = 361309726;
const WAIT: Duration = Duration::from_secs(60);

fn quick_persona() -> Persona {
    Persona {
        answer_after_ms: 100,
        // Every user has an Apple ID of their own: Apple refuses one account for two users.
        apple_id_to_enter: "user{index}@example.com".into(),
        ..Persona::default()
    }
}

fn kind(ownership: Ownership, supervised: bool, kiosk: bool) -> DeviceKind {
    DeviceKind {
        weight: 1,
        platform: Platform::Ios,
        os_versions: vec!["17.5".into()],
        product_name: None,
        ownership,
        supervised,
        kiosk,
        app_store_allowed: true,
        apple_id: None,
        persona: quick_persona(),
        identity_key: orchard_certs::KeyAlgorithm::P256,
    }
}

/// One device per kind, in order.
async fn fleet(bed: &Testbed, kinds: Vec<DeviceKind>, run: &str) -> Fleet {
    bed.fleet_of(kinds, run).await.unwrap()
}

fn device_udids(fleet: &Fleet) -> Vec<String> {
    fleet
        .agents
        .iter()
        .map(|a| a.device().lock().unwrap().facts.udid.0.clone())
        .collect()
}

/// The prompts a device showed, as (kind, answer), sorted.
fn device_prompts(fleet: &Fleet, index: usize) -> Vec<(PromptKind, Option<PromptAnswer>)> {
    let mut prompts: Vec<_> = fleet.agents[index]
        .device()
        .lock()
        .unwrap()
        .prompts()
        .into_iter()
        .map(|p| (p.kind, p.answer))
        .collect();
    prompts.sort_by_key(|(k, _)| *k);
    prompts
}

/// The prompts the server recorded for a device, as (kind, answer), sorted.
async fn server_prompts(bed: &Testbed, udid: &str) -> Vec<(PromptKind, Option<PromptAnswer>)> {
    let (_, body) = bed
        .admin
        .get(&format!("/v1/devices/{udid}/prompts"))
        .await
        .unwrap();
    let mut prompts: Vec<_> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                PromptKind::parse(p["kind"].as_str().unwrap()).unwrap(),
                p["answer"].as_str().and_then(PromptAnswer::parse),
            )
        })
        .collect();
    prompts.sort_by_key(|(k, _)| *k);
    prompts
}

async fn pages(bed: &Testbed) -> (String, String) {
    let token = bed.upload_and_sync_demo_token().await.unwrap();
    let app = bed.app_by_adam_id(PAGES).await.unwrap();
    (token, app["id"].as_str().unwrap().to_owned())
}

async fn every_scenario_of_the_prompt_table(builder: TestbedBuilder) {
    use PromptKind::{AppInstall, AppleId, VppInvitation};
    let bed = builder.start().await.unwrap();
    let (token, app_id) = pages(&bed).await;
    let accepted = |kinds: &[PromptKind]| -> Vec<(PromptKind, Option<PromptAnswer>)> {
        let mut v: Vec<_> = kinds
            .iter()
            .map(|k| (*k, Some(PromptAnswer::Accepted)))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    };
    // (scenario, kind, user-licensed, prompts expected)
    let table: Vec<(u8, DeviceKind, bool, Vec<PromptKind>)> = vec![
        (
            1,
            kind(Ownership::Personal, false, false),
            true,
            vec![VppInvitation, AppInstall, AppleId],
        ),
        (
            2,
            kind(Ownership::Corporate, false, false),
            true,
            vec![VppInvitation, AppInstall, AppleId],
        ),
        (
            3,
            kind(Ownership::Corporate, true, false),
            true,
            vec![VppInvitation, AppleId],
        ),
        (
            4,
            kind(Ownership::Personal, false, false),
            false,
            vec![AppInstall],
        ),
        (
            5,
            kind(Ownership::Corporate, false, false),
            false,
            vec![AppInstall],
        ),
        (6, kind(Ownership::Corporate, true, false), false, vec![]),
        (7, kind(Ownership::Corporate, true, true), false, vec![]),
        (8, kind(Ownership::Corporate, true, true), true, vec![]),
    ];
    let fleet = fleet(&bed, table.iter().map(|r| r.1.clone()).collect(), "PT").await;
    let udids = device_udids(&fleet);
    let mut user_devices = Vec::new();
    let mut users = Vec::new();
    let mut device_devices = Vec::new();
    for (i, (scenario, _, user_licensed, _)) in table.iter().enumerate() {
        if *user_licensed {
            let user = bed
                .create_user(&format!("scenario{scenario}@example.com"))
                .await
                .unwrap();
            bed.set_device_users(&udids[i..=i], &user).await.unwrap();
            users.push(user);
            user_devices.push(udids[i].clone());
        } else {
            device_devices.push(udids[i].clone());
        }
    }
    let user_group = bed.group_of("People", "user", &users).await.unwrap();
    let device_group = bed
        .group_of("Shared devices", "device", &device_devices)
        .await
        .unwrap();
    let answer = bed.assign(&app_id, &user_group, "user").await.unwrap();
    let warnings = answer["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1
            && warnings[0].as_str().unwrap().contains("kiosk")
            && warnings[0].as_str().unwrap().contains(&udids[7]),
        "scenario 8 is warned about at assignment time: {answer}"
    );
    let answer = bed.assign(&app_id, &device_group, "device").await.unwrap();
    assert_eq!(answer["warnings"], serde_json::json!([]));

    for (i, (scenario, _, _, _)) in table.iter().enumerate() {
        let expected = if *scenario == 8 {
            "not_applicable"
        } else {
            "installed"
        };
        let row = bed
            .wait_install_status(&app_id, &udids[i], expected, WAIT)
            .await
            .unwrap_or_else(|e| panic!("scenario {scenario}: {e}"));
        if *scenario == 8 {
            assert_eq!(row["reason"], user_licensing::KIOSK);
        } else {
            assert_eq!(row["version"], "14.1", "scenario {scenario}: {row}");
        }
    }
    for (i, (scenario, _, _, prompts)) in table.iter().enumerate() {
        let expected = accepted(prompts);
        assert_eq!(
            device_prompts(&fleet, i),
            expected,
            "scenario {scenario}: the device shows exactly the table's prompts"
        );
        let recorded = orchard_testbed::harness::wait_for(
            Duration::from_secs(10),
            "the server's prompt report",
            || {
                let bed = &bed;
                let udid = udids[i].clone();
                let expected = expected.clone();
                async move {
                    let recorded = server_prompts(bed, &udid).await;
                    Ok(if recorded == expected {
                        Ok(recorded)
                    } else {
                        Err(format!("{recorded:?}"))
                    })
                }
            },
        )
        .await;
        assert!(recorded.is_ok(), "scenario {scenario}: {recorded:?}");
        if i < 7 {
            let managed = fleet.agents[i]
                .device()
                .lock()
                .unwrap()
                .apps()
                .get("com.apple.Pages")
                .map(|a| a.status);
            assert_eq!(
                managed,
                Some(orchard_protocol::command::ManagedAppStatus::Managed),
                "scenario {scenario}"
            );
        }
    }
    // Users who joined show accepted terms and Apple's hash, never the Apple ID.
    let (_, user) = bed
        .admin
        .get(&format!("/v1/users/{}", users[0]))
        .await
        .unwrap();
    assert_eq!(user["vpp"][0]["terms_accepted"], true, "{user}");
    assert_eq!(user["vpp"][0]["invitation"]["answer"], "Accepted");
    let apple_id = fleet.agents[0]
        .device()
        .lock()
        .unwrap()
        .facts
        .apple_id
        .clone()
        .unwrap();
    assert!(
        user["vpp"][0]["apple_account_hash"].is_string() && !user.to_string().contains(&apple_id),
        "the server knows the account's hash, never the Apple ID: {user}"
    );
    // The kiosk user was never invited.
    let (_, kiosk_user) = bed
        .admin
        .get(&format!("/v1/users/{}", users[3]))
        .await
        .unwrap();
    assert!(
        kiosk_user["vpp"].as_array().unwrap().is_empty(),
        "{kiosk_user}"
    );
    // 3 user licenses and 4 device licenses.
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 7);
    let by_kind = bed
        .apple
        .with_world(|w| (w.user_assignments.len(), w.serial_assignments.len()));
    assert_eq!(by_kind, (3, 4));
    // Users who joined were noticed through incremental reads of Apple's users list.
    let (full, incremental) = bed
        .apple
        .with_world(|w| (w.user_reads, w.incremental_user_reads));
    assert!(
        full >= 1 && incremental >= 1,
        "{full} full and {incremental} incremental reads"
    );
    fleet.stop().await;
    bed.shutdown().await;
}

/// One user-licensed device with this persona and facts; returns the bed pieces.
async fn one_user_device(
    bed: &Testbed,
    configure: impl FnOnce(&mut DeviceKind),
    run: &str,
) -> (Fleet, String, String) {
    let mut k = kind(Ownership::Personal, false, false);
    configure(&mut k);
    let fleet = fleet(bed, vec![k], run).await;
    let udid = device_udids(&fleet).remove(0);
    let user = bed
        .create_user(&format!("{run}@example.com"))
        .await
        .unwrap();
    bed.set_device_users(std::slice::from_ref(&udid), &user)
        .await
        .unwrap();
    (fleet, udid, user)
}

async fn declined_invitation_uses_no_license(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (token, app_id) = pages(&bed).await;
    let (fleet, udid, user) = one_user_device(
        &bed,
        |k| k.persona.invitation = Response::Decline,
        "DECLINE",
    )
    .await;
    let group = bed
        .group_of("Decliners", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    let row = bed
        .wait_install_status(&app_id, &udid, "failed", WAIT)
        .await
        .unwrap();
    assert_eq!(row["reason"], user_licensing::DECLINED);
    let (_, view) = bed.admin.get(&format!("/v1/users/{user}")).await.unwrap();
    assert_eq!(view["vpp"][0]["invitation"]["answer"], "Declined", "{view}");
    assert_eq!(view["vpp"][0]["terms_accepted"], false);
    assert_eq!(
        device_prompts(&fleet, 0),
        vec![(PromptKind::VppInvitation, Some(PromptAnswer::Declined))]
    );
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 0, "a declined invitation consumes no license");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn declined_install_prompt_ends_user_rejected(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (token, app_id) = pages(&bed).await;
    let mut k = kind(Ownership::Corporate, false, false);
    k.persona.install = Response::Decline;
    let fleet = fleet(&bed, vec![k], "REJECT").await;
    let udid = device_udids(&fleet).remove(0);
    bed.assign_required(PAGES, std::slice::from_ref(&udid), "Rejecters")
        .await
        .unwrap();
    let row = bed
        .wait_install_status(&app_id, &udid, "failed", WAIT)
        .await
        .unwrap();
    assert_eq!(row["device_status"], "UserRejected", "{row}");
    assert!(
        row["reason"].as_str().unwrap().contains("declined"),
        "{row}"
    );
    assert_eq!(
        device_prompts(&fleet, 0),
        vec![(PromptKind::AppInstall, Some(PromptAnswer::Declined))]
    );
    // The license was a reservation: the declined install gives it back.
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
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 0);
    // It is not asked for again while the user's answer stands.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let row = bed.install_row(&app_id, &udid).await.unwrap();
    assert_eq!(row["device_status"], "UserRejected", "{row}");
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 0);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn unanswered_apple_id_prompt_stays_pending_and_visible(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (token, app_id) = pages(&bed).await;
    let (fleet, udid, user) = one_user_device(
        &bed,
        |k| {
            k.supervised = true;
            k.ownership = Ownership::Corporate;
            k.persona.apple_id = Response::Never;
        },
        "NEVER",
    )
    .await;
    let group = bed
        .group_of("Silent", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    let open_prompt = orchard_testbed::harness::wait_for(WAIT, "an open Apple ID prompt", || {
        let bed = &bed;
        let udid = udid.clone();
        async move {
            let prompts = server_prompts(bed, &udid).await;
            Ok(
                if prompts
                    == vec![
                        (PromptKind::VppInvitation, Some(PromptAnswer::Accepted)),
                        (PromptKind::AppleId, None),
                    ]
                {
                    Ok(prompts)
                } else {
                    Err(format!("{prompts:?}"))
                },
            )
        }
    })
    .await;
    assert!(open_prompt.is_ok(), "{open_prompt:?}");
    // Time passes: still pending, still visible, nothing installed, no license used.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let row = bed.install_row(&app_id, &udid).await.unwrap();
    assert_eq!(row["status"], "pending", "{row}");
    assert_eq!(row["reason"], user_licensing::INVITED);
    assert_eq!(
        server_prompts(&bed, &udid).await[1],
        (PromptKind::AppleId, None)
    );
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 0);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn app_store_disabled_fails_user_licensing_clearly(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (token, app_id) = pages(&bed).await;
    let (fleet, udid, user) = one_user_device(
        &bed,
        |k| {
            k.supervised = true;
            k.app_store_allowed = false;
        },
        "NOSTORE",
    )
    .await;
    // The server learns the restriction from the device's Restrictions answer.
    orchard_testbed::harness::wait_for(WAIT, "the restrictions answer", || {
        let bed = &bed;
        let udid = udid.clone();
        async move {
            let (_, d) = bed.admin.get(&format!("/v1/devices/{udid}")).await?;
            Ok(if d["app_store_allowed"] == false {
                Ok(())
            } else {
                Err(d.to_string())
            })
        }
    })
    .await
    .unwrap();
    let group = bed
        .group_of("Locked", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    let row = bed
        .wait_install_status(&app_id, &udid, "failed", WAIT)
        .await
        .unwrap();
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("disables the App Store") && reason.contains("device licensing"),
        "the failure names the cause and the fix: {reason}"
    );
    assert!(device_prompts(&fleet, 0).is_empty());
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 0);
    fleet.stop().await;
    bed.shutdown().await;
}

async fn sixth_device_of_one_user_is_refused(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (token, app_id) = pages(&bed).await;
    let mut k = kind(Ownership::Corporate, true, false);
    k.persona.apple_id_to_enter = "ana@example.com".into();
    let fleet = fleet(&bed, vec![k; 6], "SIX").await;
    let udids = device_udids(&fleet);
    let ana = bed.create_user("ana@example.com").await.unwrap();
    bed.set_device_users(&udids, &ana).await.unwrap();
    let group = bed
        .group_of("Ana", "user", std::slice::from_ref(&ana))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    let mut statuses = BTreeMap::new();
    for udid in &udids[..5] {
        let row = bed
            .wait_install_status(&app_id, udid, "installed", WAIT)
            .await
            .unwrap();
        statuses.insert(udid.clone(), row["status"].clone());
    }
    let row = bed
        .wait_install_status(&app_id, &udids[5], "license_failed", WAIT)
        .await
        .unwrap();
    assert_eq!(row["reason"], user_licensing::DEVICE_LIMIT);
    assert_eq!(statuses.len(), 5);
    // One invitation for the user; the other devices only signed in.
    let invitations: usize = (0..6)
        .map(|i| {
            device_prompts(&fleet, i)
                .iter()
                .filter(|(k, _)| *k == PromptKind::VppInvitation)
                .count()
        })
        .sum();
    assert_eq!(invitations, 1);
    let (_, assigned) = bed.counts_agree(&token, &app_id, PAGES).await.unwrap();
    assert_eq!(assigned, 1, "one user license serves the user's devices");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_device_signed_in_with_another_account_waits_until_it_matches(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (_, app_id) = pages(&bed).await;
    let mut ana = kind(Ownership::Corporate, true, false);
    ana.apple_id = Some("ana@example.com".into());
    let mut other = ana.clone();
    other.apple_id = Some("someone.else@example.com".into());
    let fleet = fleet(&bed, vec![ana, other], "ACCOUNT").await;
    let udids = device_udids(&fleet);
    let user = bed.create_user("ana@example.com").await.unwrap();
    bed.set_device_users(&udids, &user).await.unwrap();
    // Only the first device gets the invitation: Ana joins with her own account.
    let group = bed
        .group_of("Ana", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    bed.wait_install_status(&app_id, &udids[0], "installed", WAIT)
        .await
        .unwrap();
    let waiting = bed
        .wait_install_status_where(&app_id, &udids[1], WAIT, |r: &serde_json::Value| {
            r["reason"] == user_licensing::OTHER_ACCOUNT
        })
        .await
        .unwrap();
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert!(
        fleet.agents[1].device().lock().unwrap().apps().is_empty(),
        "no install went to the device signed in with another account"
    );
    // The user signs in there with her own account: the device is asked again and served.
    fleet.agents[1].device().lock().unwrap().facts.apple_id = Some("ana@example.com".into());
    bed.wait_install_status(&app_id, &udids[1], "installed", WAIT)
        .await
        .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_refused_invitation_is_sent_again(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (_, app_id) = pages(&bed).await;
    // Service config gives an invitation URL the device cannot open.
    bed.apple.with_world(|w| {
        w.invitation_template = Some("itms-broken:inviteCode=%25inviteCode%25".into());
    });
    let (fleet, udid, user) = one_user_device(&bed, |_| {}, "REINVITE").await;
    let group = bed
        .group_of("Reinvited", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    let (_, refused) = orchard_testbed::harness::wait_for(WAIT, "the refusal recorded", || async {
        let (_, view) = bed.admin.get(&format!("/v1/users/{user}")).await?;
        Ok(
            if view["vpp"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("InvalidInvitationURL"))
            {
                Ok(((), view))
            } else {
                Err(view.to_string())
            },
        )
    })
    .await
    .unwrap();
    assert!(refused["vpp"][0]["error"].is_string());
    // Apple's URL is right again: the invitation goes out anew and the user joins.
    bed.apple.with_world(|w| w.invitation_template = None);
    bed.wait_install_status(&app_id, &udid, "installed", WAIT)
        .await
        .unwrap();
    let invitations = fleet.agents[0]
        .device()
        .lock()
        .unwrap()
        .handled()
        .get("InviteToProgram")
        .copied();
    assert!(invitations >= Some(2), "{invitations:?}");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_book_is_delivered_with_install_media(builder: TestbedBuilder) {
    const HANDBOOK: u64 = 1490240032;
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let book = bed.app_by_adam_id(HANDBOOK).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (fleet, udid, user) = one_user_device(&bed, |_| {}, "READER").await;
    let group = bed
        .group_of("Readers", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&book, &group, "user").await.unwrap();
    let row = bed
        .wait_install_status(&book, &udid, "installed", WAIT)
        .await
        .unwrap();
    assert_eq!(row["version"], "1.0", "{row}");
    {
        let device = fleet.agents[0].device();
        let device = device.lock().unwrap();
        let on_device = device.books().values().next().cloned().unwrap();
        assert_eq!(
            (on_device.adam_id.0, on_device.state),
            (HANDBOOK, orchard_protocol::command::BookState::Installed)
        );
        assert!(device.apps().is_empty(), "a book is not an app");
        assert_eq!(device.handled().get("InstallMedia"), Some(&1));
        assert_eq!(device.handled().get("InstallApplication"), None);
    }
    // One user license at Apple; books are never revoked.
    assert_eq!(
        bed.apple
            .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), HANDBOOK)].assigned),
        1
    );
    let (status, body) = bed
        .admin
        .post("/v1/licenses/revoke", serde_json::json!({ "app_id": book }))
        .await
        .unwrap();
    let revoked = bed
        .apple
        .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), HANDBOOK)].assigned);
    assert_eq!(revoked, 1, "the book's license stays: {status} {body}");
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_declined_invitation_is_sent_again_when_the_admin_asks(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (_, app_id) = pages(&bed).await;
    let (fleet, udid, user) =
        one_user_device(&bed, |k| k.persona.invitation = Response::Decline, "SECOND").await;
    let group = bed
        .group_of("Second chance", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    bed.wait_install_status(&app_id, &udid, "failed", WAIT)
        .await
        .unwrap();
    // Nothing to send again for a user who never declined.
    let other = bed.create_user("never.invited@example.com").await.unwrap();
    let (status, body) = bed
        .admin
        .post(
            &format!("/v1/users/{other}/invitation"),
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    // The user changes their mind; the admin sends the invitation again.
    fleet.agents[0]
        .device()
        .lock()
        .unwrap()
        .facts
        .persona
        .invitation = Response::Accept;
    let (status, view) = bed
        .admin
        .post(
            &format!("/v1/users/{user}/invitation"),
            serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{view}");
    assert!(view["vpp"][0]["invitation"].is_null(), "{view}");
    bed.wait_install_status(&app_id, &udid, "installed", WAIT)
        .await
        .unwrap();
    // The user's installs, across the user's devices.
    let (status, installs) = bed
        .admin
        .get(&format!("/v1/users/{user}/installs"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let rows = installs["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{installs}");
    assert_eq!(
        (rows[0]["udid"].as_str(), rows[0]["status"].as_str()),
        (Some(udid.as_str()), Some("installed"))
    );
    fleet.stop().await;
    bed.shutdown().await;
}

async fn a_deleted_user_gives_its_licenses_back_and_is_retired_at_apple(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (_, app_id) = pages(&bed).await;
    let (fleet, udid, user) = one_user_device(&bed, |_| {}, "LEAVER").await;
    let group = bed
        .group_of("Leavers", "user", std::slice::from_ref(&user))
        .await
        .unwrap();
    bed.assign(&app_id, &group, "user").await.unwrap();
    bed.wait_install_status(&app_id, &udid, "installed", WAIT)
        .await
        .unwrap();
    let held = || {
        bed.apple
            .with_world(|w| w.assets[&(DEMO_LOCATION.to_owned(), PAGES)].assigned)
    };
    assert_eq!(held(), 1);
    let (status, body) = bed
        .admin
        .delete(&format!("/v1/users/{user}"))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, again) = bed
        .admin
        .delete(&format!("/v1/users/{user}"))
        .await
        .unwrap();
    assert!(
        status == 409 || status == 404,
        "a second delete is refused: {status} {again}"
    );
    orchard_testbed::harness::wait_for(WAIT, "the user removed", || async {
        let (status, view) = bed.admin.get(&format!("/v1/users/{user}")).await?;
        Ok(if status == 404 {
            Ok(())
        } else {
            Err(view.to_string())
        })
    })
    .await
    .unwrap();
    assert_eq!(held(), 0, "the user license went back");
    let retired = bed.apple.with_world(|w| {
        w.users
            .iter()
            .filter(|((l, _), u)| l == DEMO_LOCATION && u.status == "Retired")
            .count()
    });
    assert_eq!(retired, 1, "the registration is retired at Apple");
    assert!(
        !fleet.agents[0].device().lock().unwrap().apps().is_empty(),
        "the app stays on the device"
    );
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    a_book_is_delivered_with_install_media,
    a_declined_invitation_is_sent_again_when_the_admin_asks,
    a_deleted_user_gives_its_licenses_back_and_is_retired_at_apple,
    a_device_signed_in_with_another_account_waits_until_it_matches,
    a_refused_invitation_is_sent_again,
    every_scenario_of_the_prompt_table,
    declined_invitation_uses_no_license,
    declined_install_prompt_ends_user_rejected,
    unanswered_apple_id_prompt_stays_pending_and_visible,
    app_store_disabled_fails_user_licensing_clearly,
    sixth_device_of_one_user_is_refused,
);
