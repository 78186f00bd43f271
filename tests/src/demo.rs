//! `orchard-testbed demo`: the Apple stand-in, a server on embedded SQLite and a small
//! fleet of simulated devices on loopback. It assigns an app, waits until every device
//! has it installed, and prints each device's status and the license counts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::harness::{DEMO_LOCATION, Testbed, wait_for};

/// The app the demo assigns (Pages in the demo seed).
pub const DEMO_APP: u64 = 361309726;

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Devices to enroll.
    pub devices: usize,
    /// How long to wait for every install.
    pub timeout: Duration,
}

/// Runs the demo; an error names what did not happen.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let step = |msg: &str| println!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64());
    let bed = Testbed::builder().start().await?;
    step(&format!(
        "Apple stand-in at {}; orchard-server at {} (SQLite in {})",
        bed.apple.vpp_url(),
        bed.server.url,
        bed.data_dir.display()
    ));
    let fleet = bed
        .enroll_fleet(options.devices, Duration::from_millis(500))
        .await?;
    step(&format!(
        "enrolled {} supervised iPhones over mutual TLS",
        fleet.agents.len()
    ));
    let token_id = bed.upload_and_sync_demo_token().await?;
    step(&format!(
        "uploaded the VPP token and synced it (token {token_id})"
    ));
    let app = bed.app_by_adam_id(DEMO_APP).await?;
    let app_id = app["id"].as_str().context("app id")?.to_owned();
    step(&format!(
        "{} {} has {} licenses, {} available",
        app["name"].as_str().unwrap_or("?"),
        app["version"].as_str().unwrap_or("?"),
        app["licenses"]["total"],
        app["licenses"]["available"]
    ));
    let (status, group) = bed
        .admin
        .post("/v1/groups", json!({ "name": "Demo iPhones" }))
        .await?;
    if !status.is_success() {
        bail!("creating the group failed: {group}");
    }
    let group_id = group["id"].as_str().context("group id")?.to_owned();
    let (status, body) = bed
        .admin
        .post(
            &format!("/v1/groups/{group_id}/devices"),
            json!({ "udids": fleet.udids() }),
        )
        .await?;
    if !status.is_success() {
        bail!("adding devices failed: {body}");
    }
    let (status, body) = bed
        .admin
        .post("/v1/assignments", json!({ "app_id": app_id, "group_id": group_id, "intent": "required", "license_type": "device" }))
        .await?;
    if !status.is_success() {
        bail!("the assignment failed: {body}");
    }
    step("assigned the app to the group: Required, device licensing");

    let expected = options.devices;
    let installs: Vec<Value> = wait_for(
        options.timeout,
        "every device to report the app installed",
        || {
            let admin = bed.admin.clone();
            let path = format!("/v1/apps/{app_id}/installs");
            async move {
                let installs = admin.list_all(&path).await?;
                let done = installs
                    .iter()
                    .filter(|i| i["status"] == "installed")
                    .count();
                if done == expected {
                    Ok(Ok(installs))
                } else {
                    let statuses: Vec<&str> = installs
                        .iter()
                        .filter_map(|i| i["status"].as_str())
                        .collect();
                    Ok(Err(format!("{done}/{expected} installed: {statuses:?}")))
                }
            }
        },
    )
    .await?;
    step("every device reports the app installed");
    println!();
    println!(
        "  {:<28} {:<14} {:<10} {:<8} device status",
        "device", "serial", "status", "version"
    );
    let serials: std::collections::HashMap<String, String> =
        fleet.udids().into_iter().zip(fleet.serials()).collect();
    for i in &installs {
        let udid = i["udid"].as_str().unwrap_or("?");
        println!(
            "  {:<28} {:<14} {:<10} {:<8} {}",
            udid,
            serials.get(udid).map_or("?", String::as_str),
            i["status"].as_str().unwrap_or("?"),
            i["version"].as_str().unwrap_or("-"),
            i["device_status"].as_str().unwrap_or("-"),
        );
    }
    let (_, app) = bed.admin.get(&format!("/v1/apps/{app_id}")).await?;
    let at_apple = bed
        .apple
        .with_world(|w| w.serials_for(DEMO_LOCATION, DEMO_APP).len());
    println!();
    println!(
        "  licenses: total {}, used {}, available {} (Apple holds {} associations)",
        app["licenses"]["total"], app["licenses"]["used"], app["licenses"]["available"], at_apple
    );
    if app["licenses"]["used"] != json!(expected) || at_apple != expected {
        bail!(
            "license counts disagree: server shows {} used, Apple holds {at_apple}, expected {expected}",
            app["licenses"]["used"]
        );
    }
    fleet.stop().await;
    bed.shutdown().await;
    step("demo finished: success");
    Ok(())
}
