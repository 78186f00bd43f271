//! The `orchard` command against a live server: a token uploaded and synced, a group
//! made of enrolled devices, an app assigned by name, and the event stream followed
//! until every device reports it installed; tables for people, JSON for scripts, and
//! refusals that name the problem.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use orchard_testbed::harness::{DEMO_LOCATION, Testbed};
use serde_json::Value;

struct Orchard {
    env: Vec<(String, String)>,
}

impl Orchard {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orchard"));
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to the end; returns stdout, failing on a non-zero exit.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "orchard {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.run(&all)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_assigns_an_app_and_follows_events_until_it_is_installed() {
    let bed = Testbed::builder().start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("hq.vpptoken");
    std::fs::write(&token_file, bed.apple.token_file(DEMO_LOCATION).unwrap()).unwrap();
    let orchard = Orchard {
        env: vec![
            ("ORCHARD_SERVER".into(), bed.server.url.clone()),
            (
                "ORCHARD_CA".into(),
                bed.data_dir.join("ca.pem").display().to_string(),
            ),
            ("ORCHARD_TOKEN".into(), bed.admin_token()),
        ],
    };
    let token_path = token_file.display().to_string();
    let uploaded = orchard.json(&[
        "tokens",
        "upload",
        "--name",
        "HQ",
        "--file",
        &token_path,
        "--consent",
    ]);
    assert_eq!(uploaded["name"], "HQ");
    orchard.json(&["tokens", "sync", "HQ"]);
    let apps = orchard.run(&["apps"]);
    assert!(apps.starts_with("ID"), "a table with titles: {apps}");
    assert!(apps.lines().any(|l| l.contains("Pages")), "{apps}");

    let secret = orchard.run(&["enrollment", "--secret"]);
    let (_, details) = bed.admin.get("/v1/enrollment").await.unwrap();
    assert_eq!(secret.trim(), details["enrollment_secret"]);
    let fleet = bed.enroll_fleet(2, Duration::from_secs(600)).await.unwrap();
    let mut udids = fleet.udids();
    udids.sort();
    let listed = orchard.run(&["devices", "--udids"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), udids, "one UDID a line");
    orchard.json(&["groups", "create", "Field iPhones"]);
    let mut add = vec!["groups", "add-devices", "Field iPhones"];
    add.extend(listed.lines());
    orchard.json(&add);
    let members = orchard.run(&["groups", "members", "Field iPhones"]);
    assert_eq!(
        members.lines().count(),
        3,
        "title and two devices: {members}"
    );

    // Follow install events (as JSON lines) while the app is assigned by name.
    let mut follow = orchard
        .command(&[
            "--json",
            "events",
            "--follow",
            "--kind",
            "install.status",
            "--app",
            "Pages",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let assigned = orchard.json(&["assign", "--app", "Pages", "--group", "Field iPhones"]);
    assert_eq!(assigned["intent"], "required", "{assigned}");
    let lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let reader = std::thread::spawn(move || {
        let mut installed = std::collections::BTreeSet::new();
        for line in lines.map_while(Result::ok) {
            let event: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(event["kind"], "install.status", "{event}");
            if event["data"]["status"] == "installed" {
                installed.insert(event["udid"].as_str().unwrap().to_owned());
                if installed.len() == 2 {
                    return installed;
                }
            }
        }
        installed
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let installed = reader.join().unwrap();
    assert_eq!(
        installed,
        udids.iter().cloned().collect(),
        "the stream reported both devices installed"
    );
    let table = orchard.run(&["installs", "--app", "Pages", "--status", "installed"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    let audit = orchard.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "assignment.create" && e["actor"] == "bootstrap-admin"),
        "{audit}"
    );

    let user = orchard.json(&["users", "--create", "ana@example.com", "--name", "Ana"]);
    assert_eq!(user["email"], "ana@example.com", "{user}");
    let users = orchard.run(&["users"]);
    assert!(
        users
            .lines()
            .any(|l| l.contains("ana@example.com") && l.contains("Ana")),
        "{users}"
    );
    let assignments = orchard.json(&["assignments"]);
    let id = assignments[0]["id"].as_str().unwrap();
    orchard.json(&["assignments", "--delete", id]);
    assert_eq!(
        orchard.run(&["assignments"]).lines().count(),
        1,
        "only the titles are left"
    );

    // Refusals name the problem and exit non-zero.
    let out = orchard
        .command(&["assign", "--app", "No Such App", "--group", "Field iPhones"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No Such App"));
    let out = orchard
        .command(&["devices", "--platform", "windows"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("400"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = orchard
        .command(&["apps"])
        .env("ORCHARD_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    fleet.stop().await;
    bed.shutdown().await;
}
