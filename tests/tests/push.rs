//! Push over QUIC: devices that check in only every ten minutes still get a Required
//! app within seconds, because the server wakes them; a cut push connection reconnects
//! and the command is delivered exactly once; an agent restarted from its state file
//! keeps its identity and apps and does not enroll again.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use orchard_agent::fleet::Fleet;
use orchard_protocol::Udid;
use orchard_server::store::CommandState;
use orchard_testbed::harness::{Testbed, TestbedBuilder, wait_for};

const PAGES: u64 = 361309726;
const TEN_MINUTES: Duration = Duration::from_secs(600);

async fn assign_to_all(bed: &Testbed, fleet: &Fleet, adam_id: u64) -> String {
    bed.assign_required(adam_id, &fleet.udids(), &format!("all-{adam_id}"))
        .await
        .unwrap()
}

async fn wait_installed(bed: &Testbed, app_id: &str, count: usize, timeout: Duration) {
    bed.wait_installed(app_id, count, timeout).await.unwrap();
}

async fn wait_push_connected(bed: &Testbed, fleet: &Fleet) {
    let hub = bed.server.state.push.clone();
    let udids: Vec<Udid> = fleet.udids().into_iter().map(Udid).collect();
    wait_for(
        Duration::from_secs(20),
        "every device on the push channel",
        || {
            let hub = hub.clone();
            let udids = udids.clone();
            async move {
                let connected = udids.iter().filter(|u| hub.is_connected(u)).count();
                Ok(if connected == udids.len() {
                    Ok(())
                } else {
                    Err(format!("{connected}/{} connected", udids.len()))
                })
            }
        },
    )
    .await
    .unwrap();
}

fn handled(fleet: &Fleet, index: usize, request_type: &str) -> u64 {
    let device = fleet.agents[index].device();
    let device = device.lock().unwrap();
    device.handled().get(request_type).copied().unwrap_or(0)
}

async fn fifty_devices_polling_every_ten_minutes_get_a_required_app_within_seconds(
    builder: TestbedBuilder,
) {
    let bed = builder.start().await.unwrap();
    let fleet = bed.enroll_fleet(50, TEN_MINUTES).await.unwrap();
    wait_push_connected(&bed, &fleet).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = assign_to_all(&bed, &fleet, 1091189122).await;
    let started = std::time::Instant::now();
    // Without pushes nothing would happen for ten minutes.
    wait_installed(&bed, &app_id, 50, Duration::from_secs(60)).await;
    println!(
        "50 devices verified installed {:?} after the assignment",
        started.elapsed()
    );
    assert!(fleet.metrics.wakes.load(Ordering::Relaxed) >= 50);
    for i in 0..50 {
        assert_eq!(handled(&fleet, i, "InstallApplication"), 1, "device {i}");
    }
    fleet.stop().await;
    bed.shutdown().await;
}

async fn dropped_push_connection_reconnects_and_the_command_arrives_once(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let fleet = bed.enroll_fleet(3, TEN_MINUTES).await.unwrap();
    wait_push_connected(&bed, &fleet).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    // The network drops device 0's push connection just before the assignment.
    let victim = Udid(fleet.udids()[0].clone());
    bed.server.state.push.disconnect(&victim);
    assert!(!bed.server.state.push.is_connected(&victim));
    let app_id = assign_to_all(&bed, &fleet, PAGES).await;
    wait_installed(&bed, &app_id, 3, Duration::from_secs(30)).await;
    assert!(
        bed.server.state.push.is_connected(&victim),
        "the device reconnected"
    );
    for i in 0..3 {
        assert_eq!(
            handled(&fleet, i, "InstallApplication"),
            1,
            "device {i} ran the install exactly once"
        );
    }
    fleet.stop().await;
    bed.shutdown().await;
}

async fn server_restart_cuts_push_and_devices_still_get_the_command_once(builder: TestbedBuilder) {
    let mut bed = builder.start().await.unwrap();
    let fleet = bed.enroll_fleet(3, TEN_MINUTES).await.unwrap();
    wait_push_connected(&bed, &fleet).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    bed.restart_server().await.unwrap();
    let app_id = assign_to_all(&bed, &fleet, PAGES).await;
    wait_installed(&bed, &app_id, 3, Duration::from_secs(40)).await;
    for i in 0..3 {
        assert_eq!(handled(&fleet, i, "InstallApplication"), 1, "device {i}");
    }
    assert_eq!(
        fleet.metrics.enrollments.load(Ordering::Relaxed),
        3,
        "nobody enrolled again"
    );
    fleet.stop().await;
    bed.shutdown().await;
}

async fn agent_restarted_from_its_state_file_keeps_identity_and_apps(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let fleet = bed
        .fleet(2, TEN_MINUTES, Some(state_dir.path().to_owned()))
        .await
        .unwrap();
    wait_push_connected(&bed, &fleet).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = assign_to_all(&bed, &fleet, PAGES).await;
    wait_installed(&bed, &app_id, 2, Duration::from_secs(30)).await;
    let certificates: Vec<String> = fleet
        .agents
        .iter()
        .map(|a| a.certificate_pem().to_owned())
        .collect();
    let udid = Udid(fleet.udids()[0].clone());
    let enrolled_at = bed
        .server
        .state
        .store
        .device(&udid)
        .await
        .unwrap()
        .unwrap()
        .enrolled_at;
    fleet.stop().await;

    let again = bed
        .fleet(2, TEN_MINUTES, Some(state_dir.path().to_owned()))
        .await
        .unwrap();
    assert_eq!(
        again.metrics.enrollments.load(Ordering::Relaxed),
        0,
        "no second enrollment"
    );
    for (i, agent) in again.agents.iter().enumerate() {
        assert!(agent.resumed());
        assert_eq!(agent.certificate_pem(), certificates[i], "same identity");
        let device = agent.device();
        let device = device.lock().unwrap();
        let app = &device.apps()["com.apple.Pages"];
        assert_eq!(
            app.status,
            orchard_protocol::command::ManagedAppStatus::Managed
        );
        assert_eq!(device.handled().get("InstallApplication"), Some(&1));
    }
    assert_eq!(
        bed.server
            .state
            .store
            .device(&udid)
            .await
            .unwrap()
            .unwrap()
            .enrolled_at,
        enrolled_at
    );
    // The resumed devices are still managed: the server reaches them over push again.
    wait_push_connected(&bed, &again).await;
    let numbers = assign_to_all(&bed, &again, 361304891).await;
    wait_installed(&bed, &numbers, 2, Duration::from_secs(30)).await;
    again.stop().await;
    bed.shutdown().await;
}

async fn graceful_restart_mid_install_leaves_no_device_waiting(builder: TestbedBuilder) {
    // Follow-ups of installs in progress fall due 3 s later: a restart in between
    // loses the old process's timers, and the queue must stand in for them.
    let mut bed = builder
        .install_poll(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    // The demo seed holds 10 licenses of the app.
    let fleet = bed.enroll_fleet(8, TEN_MINUTES).await.unwrap();
    wait_push_connected(&bed, &fleet).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    let app_id = assign_to_all(&bed, &fleet, PAGES).await;
    let first = fleet.udids()[0].clone();
    bed.wait_install_status_where(&app_id, &first, Duration::from_secs(30), |row| {
        row["status"] == "installing"
    })
    .await
    .unwrap();
    bed.restart_server().await.unwrap();
    // Well before the devices' ten-minute periodic check-in.
    wait_installed(&bed, &app_id, 8, Duration::from_secs(45)).await;
    fleet.stop().await;
    bed.shutdown().await;
}

/// Every command queued for the fleet has its answer.
async fn fleet_done(bed: &Testbed, fleet: &Fleet) {
    let store = bed.server.state.store.clone();
    let udids: Vec<Udid> = fleet.udids().into_iter().map(Udid).collect();
    wait_for(Duration::from_secs(30), "no command open", || {
        let store = store.clone();
        let udids = udids.clone();
        async move {
            let mut open = 0;
            for udid in &udids {
                open += store
                    .commands_of(udid)
                    .await?
                    .iter()
                    .filter(|c| matches!(c.status, CommandState::Queued | CommandState::Sent))
                    .count();
            }
            Ok(if open == 0 {
                Ok(())
            } else {
                Err(format!("{open} commands open"))
            })
        }
    })
    .await
    .unwrap();
}

/// An install costs a device two sessions and three commands: one session for
/// InstallApplication, one (woken when the follow-up falls due) for the one
/// InstalledApplicationList that finds the app among the managed ones at the App
/// Store's version; no ManagedApplicationList is needed. The install finishing on the
/// device is no check-in. A session's requests share one connection, which the device
/// lets go when the session ends.
async fn an_install_costs_a_device_two_sessions(builder: TestbedBuilder) {
    let bed = builder
        .install_poll(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let fleet = bed.enroll_fleet(4, TEN_MINUTES).await.unwrap();
    wait_push_connected(&bed, &fleet).await;
    fleet_done(&bed, &fleet).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    let sessions = fleet.metrics.sessions.load(Ordering::Relaxed);
    let connections = fleet.metrics.connections.load(Ordering::Relaxed);
    let app_id = assign_to_all(&bed, &fleet, PAGES).await;
    wait_installed(&bed, &app_id, 4, Duration::from_secs(30)).await;
    fleet_done(&bed, &fleet).await;
    assert_eq!(
        fleet.metrics.sessions.load(Ordering::Relaxed) - sessions,
        2 * 4,
        "sessions of 4 devices for one install each"
    );
    assert_eq!(
        fleet.metrics.connections.load(Ordering::Relaxed) - connections,
        2 * 4,
        "connections of 4 devices for one install each"
    );
    for i in 0..4 {
        assert_eq!(handled(&fleet, i, "InstallApplication"), 1, "device {i}");
        assert_eq!(
            handled(&fleet, i, "ManagedApplicationList"),
            0,
            "device {i}"
        );
        assert_eq!(
            handled(&fleet, i, "InstalledApplicationList"),
            1,
            "device {i}"
        );
    }
    fleet.stop().await;
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    an_install_costs_a_device_two_sessions,
    graceful_restart_mid_install_leaves_no_device_waiting,
    fifty_devices_polling_every_ten_minutes_get_a_required_app_within_seconds,
    dropped_push_connection_reconnects_and_the_command_arrives_once,
    server_restart_cuts_push_and_devices_still_get_the_command_once,
    agent_restarted_from_its_state_file_keeps_identity_and_apps,
);
