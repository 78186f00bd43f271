//! The API document: OpenAPI 3.1, served without a token, the same document the
//! server's `openapi` command prints, complete (every operation tagged, answering a
//! success and its error classes, every reference resolved, operation ids unique), and
//! true: every operation it names is served at that path and method. (Schemathesis,
//! run by `bash tests/api-fuzz`, checks the answers against it.)

use std::collections::{BTreeSet, HashSet};

use orchard_testbed::harness::Testbed;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((path.clone(), method.to_owned(), op.clone()));
            }
        }
    }
    ops
}

fn refs(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => {
                        found.insert(target.clone());
                    }
                    _ => refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn the_document_is_complete() {
    let doc = serde_json::to_value(orchard_server::http::openapi_document()).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    assert!(ops.len() >= 70, "only {} operations", ops.len());
    let mut ids = HashSet::new();
    for (path, method, op) in &ops {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty() && ids.insert(id.to_owned()),
            "{at}: operation id {id:?} missing or repeated"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{at}: no tag"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{at}: no success answer"
        );
        let admin = (path.starts_with("/v1/") && path != "/v1/openapi.json") || path == "/metrics";
        if admin {
            assert_eq!(
                op["security"][0]["admin_token"],
                Value::Array(vec![]),
                "{at}: no admin token"
            );
            for status in ["401", "403", "429"] {
                assert!(responses.contains_key(status), "{at}: no {status}");
            }
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if params.iter().any(|p| p["in"] == "query") || op.get("requestBody").is_some() {
            assert!(responses.contains_key("400"), "{at}: parameters but no 400");
        }
        if params.iter().any(|p| p["in"] == "path") && path.starts_with("/v1/") {
            assert!(
                responses.contains_key("404"),
                "{at}: an id in the path but no 404"
            );
        }
        if op["requestBody"]["content"]
            .get("application/json")
            .is_some()
        {
            for status in ["413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{at}: a JSON body but no {status}"
                );
            }
        }
        for (status, answer) in responses {
            // Every refusal is `{error, message}`; only the readiness probe says more.
            if !status.starts_with('2') && path != "/readyz" {
                assert_eq!(
                    answer["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{at}: answer {status} is not the error format"
                );
            }
        }
    }
    let mut targets = BTreeSet::new();
    refs(&doc, &mut targets);
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for target in targets {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("reference {target} outside the schemas"));
        assert!(
            schemas.contains_key(name),
            "reference {target} resolves to nothing"
        );
    }
    // Lists all answer the same shape.
    for (name, schema) in schemas.iter().filter(|(n, _)| n.starts_with("List_")) {
        let props = schema["properties"].as_object().expect("list properties");
        let keys: BTreeSet<&str> = props.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["items", "next_cursor"]), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served_and_the_document_needs_no_token() {
    let bed = Testbed::builder().start().await.expect("testbed");
    let client = bed.device_client(None).expect("client");
    let served: Value = client
        .get(format!("{}/v1/openapi.json", bed.server.url))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    let printed = serde_json::to_value(orchard_server::http::openapi_document()).expect("json");
    assert_eq!(
        served, printed,
        "the served document is not the printed one"
    );

    for (path, method, _) in operations(&served) {
        let url = format!(
            "{}{}",
            bed.server.url,
            path.replace("{token_id}", "t-1")
                .replace("{user_id}", "u-1")
                .replace("{udid}", "UDID-1")
                .replace("{id}", "x-1")
        );
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let answer = client
            .request(method.clone(), &url)
            .send()
            .await
            .expect("answer");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        let at = format!("{method} {path}");
        assert!(!body.contains("no such endpoint"), "{at}: not served");
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{at}: not served with this method"
        );
        let admin = (path.starts_with("/v1/") && path != "/v1/openapi.json") || path == "/metrics";
        if admin {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{at}: served without a token"
            );
        } else if path.starts_with("/mdm/") && method == Method::PUT {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{at}: served without a device identity"
            );
        } else if path.starts_with("/apple/") {
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{at}: an unknown token's notification"
            );
        } else {
            assert!(
                status.as_u16() < 500 && status != StatusCode::NOT_FOUND,
                "{at}: {status}"
            );
        }
    }
    // What the document does not name is not served.
    let status = client
        .get(format!("{}/v1/not-an-endpoint", bed.server.url))
        .send()
        .await
        .expect("answer")
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = client
        .get(format!("{}/v1/not-an-endpoint", bed.server.url))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(body["message"], "no such endpoint");
    bed.shutdown().await;
}
