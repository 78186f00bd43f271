//! Lists behave the same everywhere: every list pages with `limit` and `cursor` to the
//! same items as one big page, refuses an unknown parameter and a cursor it did not give
//! out with a 400 naming the problem, and filters in the server (devices carry their
//! platform).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use orchard_agent::Platform;
use orchard_agent::fleet::DeviceKind;
use orchard_testbed::harness::{AdminClient, TestbedBuilder, wait_for};
use orchard_testbed::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PAGES: u64 = 361_309_726;

fn device(platform: Platform, product: &str, os: &str) -> DeviceKind {
    orchard_testbed::harness::device_kind(platform, product, os)
}

fn with_query(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

/// Walks a list one item per page; returns the items in order.
async fn one_by_one(admin: &AdminClient, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut next = with_query(path, "limit=1");
    for _ in 0..500 {
        let (status, body) = admin.get(&next).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{next}: {body}");
        let page = body["items"].as_array().unwrap();
        assert!(page.len() <= 1, "{next}: {body}");
        items.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => next = with_query(path, &format!("limit=1&cursor={cursor}")),
            None => return items,
        }
    }
    panic!("{path} did not end within 500 pages");
}

async fn every_list_pages_and_refuses_what_it_does_not_know(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let fleet = bed
        .fleet_of(
            vec![
                device(Platform::Ios, "iPhone15,2", "17.5"),
                device(Platform::Ios, "iPad13,18", "16.1"),
                device(Platform::MacOs, "Mac14,2", "14.2"),
            ],
            "lists",
        )
        .await
        .unwrap();
    let udids = fleet.udids();
    let ana = bed.create_user("ana@example.com").await.unwrap();
    let ben = bed.create_user("ben@example.com").await.unwrap();
    let devices_group = bed.group_of("Lab devices", "device", &udids).await.unwrap();
    let users_group = bed
        .group_of("Sales", "user", &[ana.clone(), ben])
        .await
        .unwrap();
    let pages = bed.app_by_adam_id(PAGES).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bed.assign(&pages, &devices_group, "device").await.unwrap();
    let numbers = bed.app_by_adam_id(361_304_891).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bed.assign(&numbers, &devices_group, "device")
        .await
        .unwrap();
    for name in ["one", "two"] {
        let (status, _) = bed
            .admin
            .post("/v1/enrollment-tokens", json!({ "name": name }))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = bed
        .admin
        .post(
            "/v1/admin-tokens",
            json!({ "name": "reader", "role": "auditor" }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    for udid in &udids {
        bed.wait_install_status(&pages, udid, "installed", Duration::from_secs(30))
            .await
            .unwrap();
    }

    // (path, fewest items it holds here)
    let lists = [
        ("/v1/enrollment-tokens".to_owned(), 2),
        ("/v1/tokens".to_owned(), 1),
        ("/v1/apps".to_owned(), 2),
        ("/v1/groups".to_owned(), 2),
        (format!("/v1/groups/{devices_group}/devices"), 3),
        (format!("/v1/groups/{users_group}/users"), 2),
        ("/v1/assignments".to_owned(), 2),
        ("/v1/devices".to_owned(), 3),
        ("/v1/users".to_owned(), 2),
        ("/v1/audit".to_owned(), 5),
        ("/v1/admin-tokens".to_owned(), 2),
        ("/v1/installs".to_owned(), 6),
        (format!("/v1/apps/{pages}/installs"), 3),
        (format!("/v1/devices/{}/installs", udids[0]), 2),
        (format!("/v1/users/{ana}/installs"), 0),
        ("/v1/prompts".to_owned(), 0),
        (format!("/v1/devices/{}/prompts", udids[0]), 0),
        (format!("/v1/apps/{pages}/prompts"), 0),
    ];
    let mut cursors = Vec::new();
    for (path, fewest) in &lists {
        let (status, body) = bed
            .admin
            .get(&with_query(path, "limit=1000"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body["next_cursor"].is_null(), "{path}: one page holds all");
        let all = body["items"].as_array().unwrap().clone();
        assert!(all.len() >= *fewest, "{path}: {} items: {body}", all.len());
        let paged = one_by_one(&bed.admin, path).await;
        assert_eq!(
            paged, all,
            "{path}: pages of one give the same items in order"
        );

        let (status, body) = bed
            .admin
            .get(&with_query(path, "colour=blue"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("colour"),
            "{path}: the refusal names the parameter: {body}"
        );
        for bad in ["garbage", "%21%21", "bGlzdAprZXk"] {
            let (status, body) = bed
                .admin
                .get(&with_query(path, &format!("cursor={bad}")))
                .await
                .unwrap();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{path} cursor {bad}: {body}"
            );
            assert!(
                body["message"].as_str().unwrap().contains("cursor"),
                "{path}: {body}"
            );
        }
        for limit in ["0", "1001", "ten"] {
            let (status, body) = bed
                .admin
                .get(&with_query(path, &format!("limit={limit}")))
                .await
                .unwrap();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{path} limit {limit}: {body}"
            );
        }
        if all.len() >= 2 {
            let (_, body) = bed.admin.get(&with_query(path, "limit=1")).await.unwrap();
            cursors.push((
                path.clone(),
                body["next_cursor"].as_str().unwrap().to_owned(),
            ));
        }
    }
    // A cursor works only on the list that gave it out.
    for (i, (from, cursor)) in cursors.iter().enumerate() {
        let (other, _) = &cursors[(i + 1) % cursors.len()];
        // Views of one list (all installs, one app's installs) share their cursors.
        let resource = |p: &str| p.rsplit('/').next().unwrap_or_default().to_owned();
        if resource(other) == resource(from) {
            continue;
        }
        let (status, body) = bed
            .admin
            .get(&with_query(other, &format!("cursor={cursor}")))
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{from}'s cursor on {other}: {body}"
        );
    }

    // Devices carry their platform, and filters filter.
    let udids_of = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|d| d["udid"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = bed.admin.list_all("/v1/devices").await.unwrap();
    let platforms: Vec<&str> = all
        .iter()
        .map(|d| d["platform"].as_str().unwrap())
        .collect();
    let mut sorted = platforms.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["ios", "ipados", "macos"]);
    let mac = bed
        .admin
        .list_all("/v1/devices?platform=macos")
        .await
        .unwrap();
    assert_eq!(udids_of(&mac), [udids[2].clone()]);
    let recent = bed
        .admin
        .list_all("/v1/devices?os_at_least=16&os_below=17.5")
        .await
        .unwrap();
    assert_eq!(udids_of(&recent), [udids[1].clone()], "iPadOS 16.1 only");
    let in_group = bed
        .admin
        .list_all(&format!(
            "/v1/devices?group_id={devices_group}&supervised=true&status=active"
        ))
        .await
        .unwrap();
    assert_eq!(in_group.len(), 3, "{in_group:?}");
    for (query, problem) in [
        ("platform=windows", "windows"),
        ("os_at_least=seventeen", "seventeen"),
        ("supervised=maybe", "maybe"),
        ("seen_since=yesterday", "yesterday"),
        ("status=asleep", "asleep"),
    ] {
        let (status, body) = bed
            .admin
            .get(&format!("/v1/devices?{query}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["message"].as_str().unwrap();
        let name = query.split('=').next().unwrap();
        assert!(
            message.contains(problem) || message.contains(name),
            "{query}: the refusal names the parameter or its value: {body}"
        );
    }
    let ios_installs = bed
        .admin
        .list_all(&format!(
            "/v1/apps/{pages}/installs?platform=ios&status=installed"
        ))
        .await
        .unwrap();
    assert_eq!(udids_of(&ios_installs), [udids[0].clone()]);
    let (_, token) = bed.admin.get("/v1/tokens").await.unwrap();
    let token_id = token["items"][0]["id"].as_str().unwrap();
    let of_token = bed
        .admin
        .list_all(&format!(
            "/v1/installs?token_id={token_id}&group_id={devices_group}"
        ))
        .await
        .unwrap();
    assert_eq!(of_token.len(), 6, "two apps on three devices: {of_token:?}");
    let none = bed
        .admin
        .list_all("/v1/installs?token_id=no-such-token")
        .await
        .unwrap();
    assert!(none.is_empty());
    let (status, body) = bed
        .admin
        .get(&format!("/v1/apps/{pages}/installs?app_id={numbers}"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let created = bed
        .admin
        .list_all("/v1/audit?actor=bootstrap-admin&action=group.create")
        .await
        .unwrap();
    assert_eq!(created.len(), 2, "{created:?}");
    let future = bed
        .admin
        .list_all("/v1/audit?since=2999-01-01T00:00:00Z")
        .await
        .unwrap();
    assert!(future.is_empty());
    let (status, body) = bed.admin.get("/v1/prompts?answer=perhaps").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Counts agree with the rows.
    wait_for(
        Duration::from_secs(10),
        "the summary counts 3 installed",
        || {
            let admin = bed.admin.clone();
            let pages = pages.clone();
            async move {
                let (_, summary) = admin.get(&format!("/v1/apps/{pages}/summary")).await?;
                Ok(if summary["installs"]["installed"] == 3 {
                    Ok(())
                } else {
                    Err(summary.to_string())
                })
            }
        },
    )
    .await
    .unwrap();
    fleet.stop().await;
    bed.shutdown().await;
}

on_both_backends!(every_list_pages_and_refuses_what_it_does_not_know);
