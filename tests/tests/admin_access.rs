//! Admin tokens and roles: named tokens created, rotated and revoked through the API;
//! each role against each class of endpoint (401 for who, 403 for what); expiry on the
//! server's clock; every audit entry names the token that acted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use orchard_server::clock::{ManualClock, Timestamp};
use orchard_testbed::harness::{AdminClient, Testbed, TestbedBuilder};
use orchard_testbed::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Creates a token with `role` and returns a client that uses it, and its id.
async fn token_with_role(admin: &AdminClient, name: &str, role: &str) -> (AdminClient, String) {
    let (status, body) = admin
        .post("/v1/admin-tokens", json!({ "name": name, "role": role }))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["role"], role);
    assert!(body.get("token_hash").is_none(), "the hash is never shown");
    let secret = body["token"].as_str().expect("the secret is shown once");
    (
        admin.with_token(secret),
        body["id"].as_str().unwrap().to_owned(),
    )
}

/// One request of each class of endpoint; `allowed` says whether the role may.
struct Probe {
    permission: &'static str,
    method: &'static str,
    path: String,
    body: Value,
}

async fn send(client: &AdminClient, probe: &Probe) -> (StatusCode, Value) {
    match probe.method {
        "GET" => client.get(&probe.path).await,
        "POST" => client.post(&probe.path, probe.body.clone()).await,
        "PATCH" => client.patch(&probe.path, probe.body.clone()).await,
        other => panic!("no probe method {other}"),
    }
    .unwrap()
}

async fn each_role_reaches_exactly_its_endpoints(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let (_, apps) = bed.admin.get("/v1/apps").await.unwrap();
    let app_id = apps["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, tokens) = bed.admin.get("/v1/tokens").await.unwrap();
    let token_id = tokens["items"][0]["id"].as_str().unwrap().to_owned();

    let probes = |role: &str| {
        [
            Probe {
                permission: "read",
                method: "GET",
                path: "/v1/devices".into(),
                body: Value::Null,
            },
            Probe {
                permission: "read",
                method: "GET",
                path: "/v1/audit".into(),
                body: Value::Null,
            },
            Probe {
                permission: "read",
                method: "GET",
                path: "/v1/installs?status=installed".into(),
                body: Value::Null,
            },
            Probe {
                permission: "read",
                method: "GET",
                path: "/v1/prompts".into(),
                body: Value::Null,
            },
            Probe {
                permission: "operate",
                method: "POST",
                path: "/v1/groups".into(),
                body: json!({ "name": format!("{role} probe group") }),
            },
            Probe {
                permission: "operate",
                method: "GET",
                path: "/v1/enrollment".into(),
                body: Value::Null,
            },
            Probe {
                permission: "operate",
                method: "POST",
                path: format!("/v1/tokens/{token_id}/sync"),
                body: json!({}),
            },
            Probe {
                permission: "manage_vpp",
                method: "PATCH",
                path: format!("/v1/apps/{app_id}"),
                body: json!({ "install_timeout_seconds": 900 }),
            },
            Probe {
                permission: "manage_vpp",
                method: "PATCH",
                path: format!("/v1/tokens/{token_id}"),
                body: json!({ "name": format!("renamed by {role}") }),
            },
            Probe {
                permission: "administer",
                method: "GET",
                path: "/v1/admin-tokens".into(),
                body: Value::Null,
            },
        ]
    };
    let roles = [
        ("admin", vec!["read", "operate", "manage_vpp", "administer"]),
        ("manager", vec!["read", "operate", "manage_vpp"]),
        ("operator", vec!["read", "operate"]),
        ("auditor", vec!["read"]),
    ];
    for (role, granted) in roles {
        let (client, _) = token_with_role(&bed.admin, &format!("{role} probe"), role).await;
        for probe in &probes(role) {
            let (status, body) = send(&client, probe).await;
            let what = format!("{role} {} {}: {status} {body}", probe.method, probe.path);
            if granted.contains(&probe.permission) {
                assert!(status.is_success(), "allowed, {what}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "refused, {what}");
                assert_eq!(body["error"], "forbidden", "{what}");
                let message = body["message"].as_str().unwrap();
                assert!(
                    message.contains(probe.permission) && message.contains(role),
                    "the refusal names the role and the missing permission: {message}"
                );
            }
        }
    }
    // No token, or a wrong one: 401 whatever the endpoint.
    for client in [
        bed.admin.with_token(""),
        bed.admin.with_token("not-a-token"),
    ] {
        let (status, body) = client.get("/v1/devices").await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "unauthenticated");
    }
    bed.shutdown().await;
}

async fn tokens_are_rotated_and_revoked_and_the_audit_names_them(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (operator, operator_id) = token_with_role(&bed.admin, "field ops", "operator").await;
    let (status, _) = operator
        .post("/v1/groups", json!({ "name": "Field iPhones" }))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);

    // Names are unique; the role must be one of the four.
    let (status, body) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "field ops", "role": "auditor" }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "x", "role": "superuser" }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("role"), "{body}");

    // The list shows names, roles and ids, never secrets or hashes.
    let (_, list) = bed.admin.get("/v1/admin-tokens").await.unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bootstrap-admin", "field ops"]);
    assert!(list["items"][1].get("token").is_none());
    assert_eq!(list["items"][1]["created_by"], "bootstrap");

    // Rotation: the old secret stops working at once, the new one works.
    let (status, rotated) = bed
        .admin
        .post(&format!("/v1/admin-tokens/{operator_id}/rotate"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (status, _) = operator.get("/v1/groups").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let operator = operator.with_token(rotated["token"].as_str().unwrap());
    let (status, _) = operator.get("/v1/groups").await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // The audit log names the token that acted, by name and id.
    let (_, audit) = bed.admin.get("/v1/audit").await.unwrap();
    let entries = audit["items"].as_array().unwrap();
    let group_create = entries
        .iter()
        .find(|e| e["action"] == "group.create")
        .expect("the group creation is audited");
    assert_eq!(group_create["actor"], "field ops");
    assert_eq!(group_create["actor_token"], operator_id.as_str());
    let rotation = entries
        .iter()
        .find(|e| e["action"] == "admin_token.rotate")
        .expect("the rotation is audited");
    assert_eq!(rotation["actor_token"], "bootstrap");

    // Revocation: refused from then on. The last admin token cannot be revoked.
    let (status, body) = bed
        .admin
        .delete(&format!("/v1/admin-tokens/{operator_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = operator.get("/v1/groups").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = bed
        .admin
        .delete("/v1/admin-tokens/bootstrap")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("recover-admin-token"),
        "{body}"
    );
    let (status, _) = bed.admin.get("/v1/admin-tokens").await.unwrap();
    assert_eq!(status, StatusCode::OK, "the last admin token still works");
    // With a second admin, the first may go.
    let (second, second_id) = token_with_role(&bed.admin, "second admin", "admin").await;
    let (status, _) = second.delete("/v1/admin-tokens/bootstrap").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _) = second
        .delete(&format!("/v1/admin-tokens/{second_id}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "now it is the last one");
    let (status, _) = second.get("/v1/admin-tokens/nope").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    bed.shutdown().await;
}

on_both_backends!(
    each_role_reaches_exactly_its_endpoints,
    tokens_are_rotated_and_revoked_and_the_audit_names_them,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_stops_working_when_it_expires_on_the_servers_clock() {
    let clock = Arc::new(ManualClock::new(Timestamp::from(
        time::OffsetDateTime::now_utc(),
    )));
    let bed = Testbed::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let (status, body) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "one hour", "role": "auditor", "expires_in_seconds": 3600 }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let expires: Timestamp = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires, clock_now(&clock) + Duration::from_secs(3600));
    let auditor = bed.admin.with_token(body["token"].as_str().unwrap());
    let (status, _) = auditor.get("/v1/devices").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    clock.advance(Duration::from_secs(3599));
    let (status, _) = auditor.get("/v1/devices").await.unwrap();
    assert_eq!(status, StatusCode::OK, "one second left");
    clock.advance(Duration::from_secs(1));
    let (status, body) = auditor.get("/v1/devices").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // A zero or absurd validity is refused.
    for seconds in [0_u64, 400 * 365 * 24 * 3600] {
        let (status, body) = bed
            .admin
            .post(
                "/v1/admin-tokens",
                json!({ "name": "bad", "role": "auditor", "expires_in_seconds": seconds }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    bed.shutdown().await;
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    orchard_server::clock::Clock::now(clock)
}
