//! Several orchard-server replicas on one PostgreSQL: a command queued through one
//! replica wakes devices whose push channel is on another; one replica at a time syncs a
//! token; when the replica running the sync schedule dies, another takes over. A
//! testbed's database goes with the testbed, shut down or not.
//! PostgreSQL is required in CI; elsewhere these tests are skipped with the reason printed.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use orchard_agent::fleet::Fleet;
use orchard_server::push::PushHub;
use orchard_testbed::balancer::Balancer;
use orchard_testbed::harness::{Testbed, wait_for};
use serde_json::json;

const TEN_MINUTES: Duration = Duration::from_secs(600);

/// Waits until each replica holds `each` push connections.
async fn wait_split(a: &PushHub, b: &PushHub, each: usize) {
    wait_for(
        Duration::from_secs(20),
        &format!("{each} push connections on each replica"),
        || {
            let (a, b) = (a.connected(), b.connected());
            async move {
                Ok(if a == each && b == each {
                    Ok(())
                } else {
                    Err(format!("A {a}, B {b}"))
                })
            }
        },
    )
    .await
    .unwrap();
}

fn handled(fleet: &Fleet, request_type: &str) -> Vec<u64> {
    fleet
        .agents
        .iter()
        .map(|a| {
            a.device()
                .lock()
                .unwrap()
                .handled()
                .get(request_type)
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_through_one_replica_reaches_devices_pushed_by_the_other() {
    let Some(builder) = Testbed::builder().postgres().await else {
        return;
    };
    let bed = builder.start().await.unwrap();
    let mut replica_b = bed.start_replica().await.unwrap();
    let on_a = bed
        .fleet_on(&bed.server.url, 10, TEN_MINUTES, "RA")
        .await
        .unwrap();
    let on_b = bed
        .fleet_on(&replica_b.url, 10, TEN_MINUTES, "RB")
        .await
        .unwrap();
    let (hub_a, hub_b) = (bed.server.state.push.clone(), replica_b.state.push.clone());
    wait_split(&hub_a, &hub_b, 10).await;
    let wakes_b_before = hub_b.wakes_sent();

    // Everything administrative goes through replica A.
    bed.upload_and_sync_demo_token().await.unwrap();
    let udids: Vec<String> = on_a.udids().into_iter().chain(on_b.udids()).collect();
    assign_and_wait(&bed, 1091189122, &udids, "both").await;
    assert!(
        hub_b.wakes_sent() >= wakes_b_before + 10,
        "replica B woke its own devices"
    );
    assert_eq!(handled(&on_a, "InstallApplication"), vec![1; 10]);
    assert_eq!(
        handled(&on_b, "InstallApplication"),
        vec![1; 10],
        "exactly once, though two replicas reconcile"
    );

    on_a.stop().await;
    on_b.stop().await;
    replica_b.shutdown().await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_sync_the_same_token_at_once() {
    let Some(builder) = Testbed::builder().postgres().await else {
        return;
    };
    let bed = builder.start().await.unwrap();
    let mut replica_b = bed.start_replica().await.unwrap();
    let file = bed
        .apple
        .token_file(orchard_testbed::harness::DEMO_LOCATION)
        .unwrap();
    let (_, token) = bed
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ", "token_file": file, "consent": true }),
        )
        .await
        .unwrap();
    let id = token["id"].as_str().unwrap().to_owned();
    bed.apple
        .with_world(|w| w.assets_delay = Duration::from_millis(1500));
    let admin_b = orchard_testbed::harness::AdminClient::new(
        &replica_b.url,
        &replica_b.ca_pem,
        &bed.admin_token(),
    )
    .unwrap();
    let path = format!("/v1/tokens/{id}/sync");
    let (a, b) = tokio::join!(
        bed.admin.post(&path, json!({})),
        admin_b.post(&path, json!({}))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = vec![a.0.as_u16(), b.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "A: {a:?} B: {b:?}");
    let refused = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("another replica"),
        "{refused}"
    );
    let runs = bed.server.state.syncs_run.load(Ordering::Relaxed)
        + replica_b.state.syncs_run.load(Ordering::Relaxed);
    assert_eq!(runs, 1);
    replica_b.shutdown().await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_takes_over_the_sync_schedule_when_a_replica_dies() {
    let Some(builder) = Testbed::builder().postgres().await else {
        return;
    };
    let mut bed = builder
        .sync_every(Duration::from_millis(500), Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    // A started first and runs the schedule; B waits.
    let mut replica_b = bed.start_replica().await.unwrap();
    let file = bed
        .apple
        .token_file(orchard_testbed::harness::DEMO_LOCATION)
        .unwrap();
    bed.admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ", "token_file": file, "consent": true }),
        )
        .await
        .unwrap();
    let (runs_a, runs_b) = (
        bed.server.state.syncs_run.clone(),
        replica_b.state.syncs_run.clone(),
    );
    wait_for(
        Duration::from_secs(15),
        "replica A to run scheduled syncs",
        || {
            let n = runs_a.load(Ordering::Relaxed);
            async move {
                Ok(if n >= 2 {
                    Ok(())
                } else {
                    Err(format!("{n} syncs"))
                })
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        runs_b.load(Ordering::Relaxed),
        0,
        "only the schedule holder syncs"
    );

    // A dies without giving its lease up; B takes over once the lease runs out.
    bed.server.shutdown().await;
    wait_for(
        Duration::from_secs(15),
        "replica B to take over the schedule",
        || {
            let n = runs_b.load(Ordering::Relaxed);
            async move {
                Ok(if n >= 2 {
                    Ok(())
                } else {
                    Err(format!("{n} syncs on B"))
                })
            }
        },
    )
    .await
    .unwrap();
    replica_b.shutdown().await;
    bed.shutdown().await;
}

async fn assign_and_wait(bed: &Testbed, adam_id: u64, udids: &[String], name: &str) {
    let app_id = bed.assign_required(adam_id, udids, name).await.unwrap();
    bed.wait_installed(&app_id, udids.len(), Duration::from_secs(40))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_moves_its_devices_to_the_survivor() {
    let Some(builder) = Testbed::builder().postgres().await else {
        return;
    };
    let balancer = Balancer::bind().await.unwrap();
    let bed = builder.public_url(balancer.url()).start().await.unwrap();
    let mut replica_b = bed.start_replica().await.unwrap();
    balancer.set_backends(vec![bed.server.addr, replica_b.addr]);
    let one = bed
        .fleet_on(&balancer.url(), 10, TEN_MINUTES, "F1")
        .await
        .unwrap();
    let two = bed
        .fleet_on(&balancer.url(), 10, TEN_MINUTES, "F2")
        .await
        .unwrap();
    let (hub_a, hub_b) = (bed.server.state.push.clone(), replica_b.state.push.clone());
    wait_split(&hub_a, &hub_b, 10).await;
    bed.upload_and_sync_demo_token().await.unwrap();
    let udids: Vec<String> = one.udids().into_iter().chain(two.udids()).collect();
    assign_and_wait(&bed, 1091189122, &udids, "first").await;

    // Replica B dies; the balancer's health check takes it out.
    replica_b.shutdown().await;
    balancer.set_backends(vec![bed.server.addr]);
    wait_for(
        Duration::from_secs(20),
        "every device back on the push channel, on A",
        || {
            let a = hub_a.connected();
            async move {
                Ok(if a == 20 {
                    Ok(())
                } else {
                    Err(format!("A {a}"))
                })
            }
        },
    )
    .await
    .unwrap();
    assign_and_wait(&bed, 1500000001, &udids, "second").await;
    assert_eq!(handled(&one, "InstallApplication"), vec![2; 10]);
    assert_eq!(
        handled(&two, "InstallApplication"),
        vec![2; 10],
        "each app installed exactly once"
    );
    one.stop().await;
    two.stop().await;
    bed.shutdown().await;
}

/// A testbed dropped without `shutdown` (a test that fails or ends early) leaves no
/// PostgreSQL database behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testbed_dropped_without_shutdown_drops_its_database() {
    use sqlx::Connection;
    let Some(builder) = Testbed::builder().postgres().await else {
        return;
    };
    let bed = builder.start().await.unwrap();
    let url = bed.database_url().unwrap();
    let (admin_url, name) = url.rsplit_once('/').unwrap();
    let mut admin = sqlx::PgConnection::connect(&format!("{admin_url}/postgres"))
        .await
        .unwrap();
    assert_eq!(
        databases_named(&mut admin, name).await,
        1,
        "{name} made for the testbed"
    );
    drop(bed);
    assert_eq!(
        databases_named(&mut admin, name).await,
        0,
        "{name} dropped with the testbed"
    );
}

async fn databases_named(admin: &mut sqlx::PgConnection, name: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}
