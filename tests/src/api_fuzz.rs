//! `orchard-testbed api-fuzz`: schemathesis against a live server. The Apple stand-in
//! and a server on SQLite start on loopback with a synced token, enrolled devices that
//! have an app installed, a user, a webhook and an event log, so lists answer with real
//! items; then schemathesis reads `/v1/openapi.json` and sends generated requests to
//! every operation with an admin token. It fails on any 5xx and on any answer the
//! document does not describe (status, content type, headers, body schema), on schema
//! violations the server accepted, and on operations that ignore authentication.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::demo::DEMO_APP;
use crate::harness::Testbed;

/// How the run goes.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// The schemathesis command (`st`).
    pub schemathesis: PathBuf,
    /// Generated cases per operation and phase.
    pub max_examples: u32,
    /// Hypothesis seed: the same seed sends the same requests.
    pub seed: u64,
    /// Longest the schemathesis run may take.
    pub timeout: Duration,
    /// Where schemathesis writes its JUnit report, if anywhere.
    pub junit: Option<PathBuf>,
}

/// Starts the system, fills it, runs schemathesis and returns its verdict.
pub async fn run(options: FuzzOptions) -> anyhow::Result<()> {
    // Webhooks the fuzzer registers may only point at this host: no traffic leaves it.
    let bed = Testbed::builder()
        .webhook_hosts(&["127.0.0.1", "localhost", "::1"])
        .start()
        .await?;
    let fleet = bed.enroll_fleet(3, Duration::from_millis(500)).await?;
    bed.upload_and_sync_demo_token().await?;
    let app_id = bed
        .assign_required(DEMO_APP, &fleet.udids(), "Fuzzed iPhones")
        .await?;
    bed.wait_installed(&app_id, 3, Duration::from_secs(60))
        .await?;
    let user = bed.create_user("fuzz@example.com").await?;
    bed.set_device_users(&fleet.udids()[..1], &user).await?;
    let (status, body) = bed
        .admin
        .post(
            "/v1/webhooks",
            json!({ "url": "http://127.0.0.1:9/orchard", "kind": "install" }),
        )
        .await?;
    if !status.is_success() {
        bail!("registering a webhook answered {status}: {body}");
    }
    // A token of its own, so the bootstrap token stays whatever the fuzzer does.
    let (status, body) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "schemathesis", "role": "admin" }),
        )
        .await?;
    let token = body["token"]
        .as_str()
        .with_context(|| format!("creating the fuzzer's token answered {status}: {body}"))?
        .to_owned();

    // A device identity of its own, so the device endpoints read what it sends
    // instead of refusing it for want of a certificate.
    let (cert, key) = bed.enroll_identity("FUZZ-DEVICE-0001").await?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &bed.server.ca_pem)?;
    let identity = dir.path().join("device.pem");
    std::fs::write(&identity, format!("{cert}{key}"))?;
    // A path (not a bare name looked up in PATH) is taken from here: the command runs
    // in a directory of its own.
    let program = if options.schemathesis.components().count() > 1 {
        std::path::absolute(&options.schemathesis)?
    } else {
        options.schemathesis.clone()
    };
    let mut command = tokio::process::Command::new(&program);
    command
        .arg("run")
        .arg(format!("{}/v1/openapi.json", bed.server.url))
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--tls-verify")
        .arg(&ca)
        .arg("--request-cert")
        .arg(&identity)
        // Every check but one: data valid by the schema may still be refused (a
        // `.vpptoken` file is base64 text to a schema, a group name may be taken).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // Links between operations are not described, so no stateful phase.
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &options.max_examples.to_string()])
        .args(["--seed", &options.seed.to_string()])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--no-color", "--output-truncate", "true"])
        // Its example database goes with the run, not into the working directory.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(junit) = &options.junit {
        command
            .args(["--report", "junit", "--report-junit-path"])
            .arg(std::path::absolute(junit)?);
    }
    println!(
        "schemathesis against {} ({} cases per operation and phase, seed {})",
        bed.server.url, options.max_examples, options.seed
    );
    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot run {} (install it with `bash tests/api-fuzz`, which makes a virtual environment)",
            options.schemathesis.display()
        )
    })?;
    let status = match tokio::time::timeout(options.timeout, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            child.kill().await.ok();
            bail!(
                "schemathesis did not finish within {} s",
                options.timeout.as_secs()
            );
        }
    };
    // A fuzzer that rotated or revoked its own token saw only refusals afterwards.
    let (still, _) = bed.admin.with_token(&token).get("/v1/apps").await?;
    bed.shutdown().await;
    if !status.success() {
        bail!("schemathesis found answers outside the API document or server errors ({status})");
    }
    if still != reqwest::StatusCode::OK {
        bail!(
            "the fuzzer's own admin token stopped working during the run (answer {still}): requests after that were only refused, so the run covered less than it says"
        );
    }
    println!("schemathesis: every answer is in the API document, no server error");
    Ok(())
}
