//! Crash drills: the server process is killed (SIGKILL, no shutdown of any kind) twice
//! during assignments to 100 devices: while Apple's associations are pending, and while
//! install commands are being handed out. After each restart on the same data directory
//! every device is back on the push channel within 15 s, every device converges, no
//! command runs twice on any device, and the license counts equal Apple's.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use orchard_agent::device::Timings;
use orchard_agent::fleet::{Fleet, FleetOptions, FleetProfile};
use orchard_agent::store_lookup::StoreConfig;
use orchard_agent::{AgentConfig, AgentMetrics};
use orchard_testbed::apple::{AppleStandIn, Seed};
use orchard_testbed::harness::{AdminClient, DEMO_LOCATION, free_port, wait_for};
use orchard_testbed::server_process::ServerProcess;
use serde_json::{Value, json};

const DEVICES: usize = 100;
/// Field Notes Pro and Team Chat: 5,000 and 1,000 licenses in the demo seed.
const FIRST_APP: u64 = 1091189122;
const SECOND_APP: u64 = 1500000001;

struct Drill {
    apple: AppleStandIn,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    server: ServerProcess,
    admin: AdminClient,
}

impl Drill {
    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("server")
    }

    fn start_server(&self) -> ServerProcess {
        ServerProcess::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_orchard-testbed")),
            &self.apple,
            &self.dir.path().join("apple-ca.pem"),
            &self.data_dir(),
            None,
            Some(self.addr),
        )
        .unwrap()
    }

    /// SIGKILL, then a new process on the same data directory and port; every device
    /// must be back on the push channel within 15 s of the restart.
    async fn crash_and_wait_push(&mut self, metrics: &AgentMetrics, kill: u32) {
        let registered = metrics.push_registrations.load(Ordering::Relaxed);
        self.server.kill();
        self.server = self.start_server();
        let back = wait_push(
            metrics,
            registered,
            Duration::from_secs(15),
            &format!("every device back on the push channel after kill {kill}"),
        )
        .await;
        eprintln!("after kill {kill}: all {DEVICES} devices back on push in {back:?}");
    }

    async fn installs(&self, app_id: &str) -> Vec<Value> {
        self.admin
            .list_all(&format!("/v1/apps/{app_id}/installs"))
            .await
            .unwrap()
    }

    async fn wait_installed(&self, app_id: &str) {
        wait_for(
            Duration::from_secs(120),
            "every device installed",
            || async {
                let installs = self.installs(app_id).await;
                let done = installs
                    .iter()
                    .filter(|i| i["status"] == "installed")
                    .count();
                Ok(if done == DEVICES {
                    Ok(())
                } else {
                    Err(format!("{done}/{DEVICES} installed"))
                })
            },
        )
        .await
        .unwrap();
    }

    async fn app_id(&self, adam_id: u64) -> String {
        let (_, apps) = self.admin.get("/v1/apps").await.unwrap();
        apps["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["adam_id"].as_str() == Some(adam_id.to_string().as_str()))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn assign(&self, app_id: &str, group_id: &str) {
        let (status, body) = self
            .admin
            .post(
                "/v1/assignments",
                json!({ "app_id": app_id, "group_id": group_id, "intent": "required", "license_type": "device" }),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
    }

    /// The server's counts after a sync equal the stand-in's.
    async fn counts_agree(&self, token_id: &str, app_id: &str, adam_id: u64) {
        let (status, body) = self
            .admin
            .post(&format!("/v1/tokens/{token_id}/sync"), json!({}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let (_, app) = self.admin.get(&format!("/v1/apps/{app_id}")).await.unwrap();
        let (total, assigned) = self
            .apple
            .with_world(|w| {
                w.assets
                    .get(&(DEMO_LOCATION.to_owned(), adam_id))
                    .map(|c| (c.total, c.assigned))
            })
            .unwrap();
        assert_eq!(
            assigned, DEVICES as i64,
            "Apple holds one license per device"
        );
        assert_eq!(app["licenses"]["total"].as_i64(), Some(total));
        assert_eq!(app["licenses"]["used"].as_i64(), Some(assigned));
    }
}

/// Waits until `DEVICES` registrations on the push channel beyond `before` (every device
/// registered again); returns how long that took.
async fn wait_push(metrics: &AgentMetrics, before: u64, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    wait_for(within, what, || {
        let n = metrics.push_registrations.load(Ordering::Relaxed) - before;
        async move {
            Ok(if n >= DEVICES as u64 {
                Ok(())
            } else {
                Err(format!("{n}/{DEVICES} on the push channel"))
            })
        }
    })
    .await
    .unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twice_during_assignments_nothing_is_lost_or_done_twice() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let apple = AppleStandIn::start(
        &Seed::demo(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    apple.write_ca(&dir.path().join("apple-ca.pem")).unwrap();
    let addr = free_port().unwrap();
    let server = ServerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_orchard-testbed")),
        &apple,
        &dir.path().join("apple-ca.pem"),
        &dir.path().join("server"),
        None,
        Some(addr),
    )
    .unwrap();
    let admin = AdminClient::new(
        &server.url,
        &server.ca_pem,
        server.admin_token.as_deref().unwrap(),
    )
    .unwrap();
    let mut drill = Drill {
        apple,
        dir,
        addr,
        server,
        admin,
    };
    let apple_ca_pem = drill.apple.ca_pem.clone();
    let apple = &drill.apple;
    apple.with_world(|w| w.notification_ca = Some(drill.server.ca_pem.clone()));

    let (_, enrollment) = drill.admin.get("/v1/enrollment").await.unwrap();
    let metrics = Arc::new(AgentMetrics::default());
    let profile = FleetProfile::supervised_iphones();
    let template = AgentConfig {
        server_url: drill.server.url.clone(),
        server_ca_pem: drill.server.ca_pem.clone(),
        enrollment_secret: enrollment["enrollment_secret"].as_str().unwrap().to_owned(),
        facts: profile.facts(0, "DRILL"),
        poll_interval: Duration::from_secs(600),
        store: StoreConfig {
            lookup_url: apple.lookup_url(),
            ca_pem: Some(apple_ca_pem),
            country: "US".into(),
        },
        timings: Timings {
            install: Duration::from_millis(300),
        },
        state_path: None,
        quic: None,
        metrics: metrics.clone(),
        shared_store: None,
    };
    let options = FleetOptions {
        count: DEVICES,
        concurrency: 16,
        run: "DRILL".into(),
        state_dir: None,
    };
    let fleet = Fleet::start(template, &profile, &options, |_| {})
        .await
        .unwrap();
    wait_push(
        &metrics,
        0,
        Duration::from_secs(60),
        "the fleet on the push channel",
    )
    .await;

    let (status, token) = drill
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ", "token_file": apple.token_file(DEMO_LOCATION), "consent": true }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{token}");
    let token_id = token["id"].as_str().unwrap().to_owned();
    let (status, body) = drill
        .admin
        .post(&format!("/v1/tokens/{token_id}/sync"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, group) = drill
        .admin
        .post("/v1/groups", json!({ "name": "Drill fleet" }))
        .await
        .unwrap();
    let group_id = group["id"].as_str().unwrap().to_owned();
    let (status, body) = drill
        .admin
        .post(
            &format!("/v1/groups/{group_id}/devices"),
            json!({ "udids": fleet.udids() }),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{body}");

    // Kill 1: Apple's associations are pending (events stay PENDING for a while).
    let first = drill.app_id(FIRST_APP).await;
    drill.apple.set_event_delay(Duration::from_secs(3));
    drill.assign(&first, &group_id).await;
    wait_for(
        Duration::from_secs(30),
        "associations pending at Apple",
        || async {
            let installs = drill.installs(&first).await;
            let pending = installs.iter().filter(|i| i["status"] == "pending").count();
            Ok(if pending > 0 {
                Ok(())
            } else {
                Err("none pending yet".to_owned())
            })
        },
    )
    .await
    .unwrap();
    drill.crash_and_wait_push(&metrics, 1).await;
    drill.apple.set_event_delay(Duration::ZERO);
    drill.wait_installed(&first).await;

    // Kill 2: install commands are being handed out.
    let second = drill.app_id(SECOND_APP).await;
    drill.assign(&second, &group_id).await;
    wait_for(
        Duration::from_secs(30),
        "installs being handed out",
        || async {
            let installs = drill.installs(&second).await;
            // Install commands queued or sent, not every device done yet.
            let count = |s: &str| installs.iter().filter(|i| i["status"] == s).count();
            let (queued, installing, installed) =
                (count("queued"), count("installing"), count("installed"));
            Ok(if queued + installing > 0 && installed < DEVICES {
                Ok(())
            } else {
                Err(format!(
                    "{queued} queued, {installing} installing, {installed} installed"
                ))
            })
        },
    )
    .await
    .unwrap();
    drill.crash_and_wait_push(&metrics, 2).await;
    drill.wait_installed(&second).await;

    // Each device ran each app's InstallApplication exactly once.
    for (i, agent) in fleet.agents.iter().enumerate() {
        let device = agent.device();
        let device = device.lock().unwrap();
        assert_eq!(
            device.handled().get("InstallApplication").copied(),
            Some(2),
            "device {i}: {:?}",
            device.handled()
        );
    }
    drill.counts_agree(&token_id, &first, FIRST_APP).await;
    drill.counts_agree(&token_id, &second, SECOND_APP).await;
    fleet.stop().await;
    drill.server.kill();
    let _ = drill.data_dir();
}
