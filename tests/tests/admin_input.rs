//! Bad admin input gets a 4xx with a JSON error that names the problem, and nothing is
//! written.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use orchard_testbed::harness::{DEMO_LOCATION, Testbed, TestbedBuilder};
use serde_json::{Value, json};

fn assert_error(
    status: reqwest::StatusCode,
    body: &Value,
    expected: u16,
    code: &str,
    needle: &str,
) {
    assert_eq!(status.as_u16(), expected, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message should name {needle:?}: {body}"
    );
}

async fn count(bed: &Testbed, path: &str) -> usize {
    let (status, body) = bed.admin.get(path).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().len()
}

async fn missing_or_wrong_admin_token_is_refused(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (status, body) = bed
        .admin
        .post_raw("/v1/groups", r#"{"name":"x"}"#, "application/json", false)
        .await
        .unwrap();
    assert_error(status, &body, 401, "unauthenticated", "Authorization");
    let (status, body) = bed
        .admin
        .with_token("wrong")
        .post("/v1/groups", json!({ "name": "x" }))
        .await
        .unwrap();
    assert_error(status, &body, 401, "unauthenticated", "not valid");
    let (status, body) = bed.admin.with_token("wrong").get("/v1/apps").await.unwrap();
    assert_error(status, &body, 401, "unauthenticated", "not valid");
    assert_eq!(count(&bed, "/v1/groups").await, 0);
    bed.shutdown().await;
}

async fn bad_token_files_are_refused_with_the_reason(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cases = [
        ("not base64 at all!", "base64"),
        (&b64("{\"hello\": 1}") as &str, "token JSON"),
        (
            &b64(r#"{"token":"t","expDate":"someday","orgName":"o"}"#),
            "expDate",
        ),
        (
            &b64(r#"{"token":"t","expDate":"2020-01-01T00:00:00+0000","orgName":"o"}"#),
            "expired",
        ),
        ("", "empty"),
    ];
    for (file, needle) in cases {
        let (status, body) = bed
            .admin
            .post(
                "/v1/tokens",
                json!({ "name": "HQ", "token_file": file, "consent": true }),
            )
            .await
            .unwrap();
        assert_error(status, &body, 422, "invalid_token_file", needle);
    }
    let good = bed.apple.token_file(DEMO_LOCATION).unwrap();
    let (status, body) = bed
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ", "token_file": good, "consent": false }),
        )
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid", "consent");
    assert_eq!(count(&bed, "/v1/tokens").await, 0, "nothing may be stored");

    let (status, _) = bed
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ", "token_file": good, "consent": true }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let (status, body) = bed
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ again", "token_file": good, "consent": true }),
        )
        .await
        .unwrap();
    assert_error(status, &body, 409, "conflict", "already been uploaded");
    assert_eq!(count(&bed, "/v1/tokens").await, 1);
    bed.shutdown().await;
}

async fn wrong_json_names_the_problem(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let (status, body) = bed
        .admin
        .post_raw("/v1/groups", "{ not json", "application/json", true)
        .await
        .unwrap();
    assert_error(status, &body, 400, "invalid_json", "JSON");
    let (status, body) = bed
        .admin
        .post_raw("/v1/groups", r#"{"name":"x"}"#, "text/plain", true)
        .await
        .unwrap();
    assert_error(status, &body, 415, "invalid_json", "Content-Type");
    let (status, body) = bed
        .admin
        .post("/v1/groups", json!({ "title": "x" }))
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid_json", "title");
    let (status, body) = bed
        .admin
        .post("/v1/groups", json!({ "name": 42 }))
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid_json", "name");
    let (status, body) = bed
        .admin
        .post(
            "/v1/tokens",
            json!({ "name": "HQ", "token_file": "x", "consent": "yes" }),
        )
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid_json", "consent");
    let (status, body) = bed
        .admin
        .post("/v1/groups", json!({ "name": "  " }))
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid", "name");
    let (status, body) = bed.admin.get("/v1/apps?limit=0").await.unwrap();
    assert_error(status, &body, 400, "invalid_limit", "limit");
    let (status, body) = bed.admin.get("/v1/nothing-here").await.unwrap();
    assert_error(status, &body, 404, "not_found", "endpoint");
    assert_eq!(count(&bed, "/v1/groups").await, 0);
    bed.shutdown().await;
}

async fn unknown_app_group_or_device_is_refused_and_nothing_is_assigned(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let pages = bed.app_by_adam_id(361309726).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let book = bed.app_by_adam_id(1490240032).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, group) = bed
        .admin
        .post("/v1/groups", json!({ "name": "Lab" }))
        .await
        .unwrap();
    let group = group["id"].as_str().unwrap().to_owned();
    let assign = |app: &str, group: &str, intent: &str| json!({ "app_id": app, "group_id": group, "intent": intent, "license_type": "device" });

    let (status, body) = bed
        .admin
        .post("/v1/assignments", assign("no-such-app", &group, "required"))
        .await
        .unwrap();
    assert_error(status, &body, 404, "not_found", "no-such-app");
    let (status, body) = bed
        .admin
        .post(
            "/v1/assignments",
            assign(&pages, "no-such-group", "required"),
        )
        .await
        .unwrap();
    assert_error(status, &body, 404, "not_found", "no-such-group");
    let (status, body) = bed
        .admin
        .post("/v1/assignments", assign(&pages, &group, "available"))
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid", "device group");
    let (status, body) = bed
        .admin
        .post("/v1/assignments", assign(&pages, &group, "sometimes"))
        .await
        .unwrap();
    assert_error(status, &body, 422, "invalid_json", "intent");
    let (status, body) = bed
        .admin
        .post("/v1/assignments", assign(&book, &group, "required"))
        .await
        .unwrap();
    assert_error(
        status,
        &body,
        422,
        "invalid",
        "cannot be licensed to devices",
    );
    assert_eq!(count(&bed, "/v1/assignments").await, 0);

    let (status, body) = bed
        .admin
        .post(
            &format!("/v1/groups/{group}/devices"),
            json!({ "udids": ["NO-SUCH-DEVICE"] }),
        )
        .await
        .unwrap();
    assert_error(status, &body, 404, "not_found", "NO-SUCH-DEVICE");
    let (status, body) = bed
        .admin
        .post("/v1/groups/nope/devices", json!({ "udids": ["X"] }))
        .await
        .unwrap();
    assert_error(status, &body, 404, "not_found", "nope");
    let (_, members) = bed
        .admin
        .get(&format!("/v1/groups/{group}/devices"))
        .await
        .unwrap();
    assert_eq!(members["items"].as_array().unwrap().len(), 0);

    let (status, body) = bed
        .admin
        .post("/v1/tokens/no-such-token/sync", json!({}))
        .await
        .unwrap();
    assert_error(status, &body, 404, "not_found", "no-such-token");

    // Every change attempt is in the audit log, with its result.
    let (_, audit) = bed.admin.get("/v1/audit").await.unwrap();
    let entries = audit["items"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "assignment.create"
            && e["result"].as_str().unwrap().starts_with("error")),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "token.upload" && e["result"] == "ok"),
        "{audit}"
    );
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    missing_or_wrong_admin_token_is_refused,
    bad_token_files_are_refused_with_the_reason,
    wrong_json_names_the_problem,
    unknown_app_group_or_device_is_refused_and_nothing_is_assigned,
);
