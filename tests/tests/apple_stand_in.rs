//! The Apple stand-in answers as strictly as Apple's documentation says, called the way
//! the documentation describes: paging (`pageIndex`, 9650), `versionId` and
//! `sinceVersionId` on assignments and users (9721 for a version it never gave), the
//! asset filters, 9703 for a repeated asset, 9726 for a wrong method, 9727 for a POST
//! that is not JSON, and the error codes in service config.
#![allow(clippy::unwrap_used)]

use orchard_testbed::harness::{AdminClient, DEMO_LOCATION, Testbed};
use serde_json::{Value, json};

async fn apple(bed: &Testbed) -> AdminClient {
    let file = bed.apple.token_file(DEMO_LOCATION).unwrap();
    AdminClient::new(&bed.apple.vpp_url(), &bed.apple.ca_pem, &file).unwrap()
}

fn error_number(body: &Value) -> i64 {
    body["errorNumber"].as_i64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_and_incremental_reads_follow_apples_documentation() {
    let bed = Testbed::builder().start().await.unwrap();
    bed.apple.with_world(|w| w.page_size = 2);
    let apple = apple(&bed).await;
    let serials: Vec<String> = (0..5).map(|i| format!("C02SERIAL{i:03}")).collect();
    let (status, body) = apple
        .post(
            "/assets/associate",
            json!({ "assets": [{ "adamId": "361309726", "pricingParam": "STDQ" }], "serialNumbers": serials }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    // Five assignments, two a page: pages 0, 1, 2, then 9650.
    let (_, first) = apple.get("/assignments").await.unwrap();
    assert_eq!(first["totalPages"], 3, "{first}");
    assert_eq!(first["nextPageIndex"], 1);
    assert_eq!(first["size"], 2);
    let version = first["versionId"].as_str().unwrap().to_owned();
    let (_, last) = apple.get("/assignments?pageIndex=2").await.unwrap();
    assert_eq!(last["currentPageIndex"], 2);
    assert!(last.get("nextPageIndex").is_none(), "{last}");
    assert_eq!(last["assignments"].as_array().unwrap().len(), 1);
    let (status, beyond) = apple.get("/assignments?pageIndex=9999").await.unwrap();
    assert_eq!((status.as_u16(), error_number(&beyond)), (400, 9650));
    let (status, bad) = apple.get("/assignments?pageIndex=x").await.unwrap();
    assert_eq!((status.as_u16(), error_number(&bad)), (400, 9602));

    // Nothing changed: an incremental read is empty and keeps the version.
    let (_, same) = apple
        .get(&format!("/assignments?sinceVersionId={version}"))
        .await
        .unwrap();
    assert_eq!(same["assignments"], json!([]), "{same}");
    assert_eq!(same["versionId"], version.as_str());
    // One more serial: the incremental read has exactly it, under a newer version.
    apple
        .post(
            "/assets/associate",
            json!({ "assets": [{ "adamId": "361309726" }], "serialNumbers": ["C02SERIAL999"] }),
        )
        .await
        .unwrap();
    let (_, changed) = apple
        .get(&format!("/assignments?sinceVersionId={version}"))
        .await
        .unwrap();
    let items = changed["assignments"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{changed}");
    assert_eq!(items[0]["serialNumber"], "C02SERIAL999");
    assert_ne!(changed["versionId"], version.as_str());
    let (status, unknown) = apple
        .get("/assignments?sinceVersionId=99999")
        .await
        .unwrap();
    assert_eq!((status.as_u16(), error_number(&unknown)), (400, 9721));

    // Users: a new user shows in the incremental read, an unchanged one does not.
    apple
        .post(
            "/users/create",
            json!({ "users": [{ "clientUserId": "u1", "email": "u1@example.com" }] }),
        )
        .await
        .unwrap();
    let (_, users) = apple.get("/users").await.unwrap();
    let version = users["versionId"].as_str().unwrap().to_owned();
    apple
        .post(
            "/users/create",
            json!({ "users": [{ "clientUserId": "u2", "email": "u2@example.com" }] }),
        )
        .await
        .unwrap();
    let (_, since) = apple
        .get(&format!("/users?sinceVersionId={version}"))
        .await
        .unwrap();
    let ids: Vec<&str> = since["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["clientUserId"].as_str())
        .collect();
    assert_eq!(ids, ["u2"], "{since}");
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_filters_methods_content_types_and_error_codes() {
    let bed = Testbed::builder().start().await.unwrap();
    let apple = apple(&bed).await;
    let adam_ids = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["adamId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let (_, books) = apple.get("/assets?productType=Book").await.unwrap();
    assert_eq!(adam_ids(&books), ["1490240032"], "{books}");
    let (_, not_assignable) = apple.get("/assets?deviceAssignable=false").await.unwrap();
    assert_eq!(adam_ids(&not_assignable), ["1490240032"]);
    let (_, big) = apple.get("/assets?minAvailableCount=1000").await.unwrap();
    assert_eq!(adam_ids(&big), ["1091189122", "1500000001"], "{big}");
    let (_, small) = apple.get("/assets?maxAvailableCount=10").await.unwrap();
    assert_eq!(adam_ids(&small), ["361304891", "361309726"], "{small}");
    let (status, bad) = apple.get("/assets?revocable=perhaps").await.unwrap();
    assert_eq!((status.as_u16(), error_number(&bad)), (400, 9602));

    let (status, twice) = apple
        .post(
            "/assets/associate",
            json!({ "assets": [{ "adamId": "361309726" }, { "adamId": "361309726" }], "serialNumbers": ["C02A"] }),
        )
        .await
        .unwrap();
    assert_eq!((status.as_u16(), error_number(&twice)), (400, 9703));
    let (status, dup) = apple
        .post(
            "/assets/associate",
            json!({ "assets": [{ "adamId": "361309726" }], "serialNumbers": ["C02A", "C02A"] }),
        )
        .await
        .unwrap();
    assert_eq!((status.as_u16(), error_number(&dup)), (400, 9705));

    let (status, method) = apple.delete("/assets").await.unwrap();
    assert_eq!((status.as_u16(), error_number(&method)), (405, 9726));
    let (status, method) = apple.get("/users/create").await.unwrap();
    assert_eq!((status.as_u16(), error_number(&method)), (405, 9726));
    for path in ["/users/create", "/assets/disassociate", "/client/config"] {
        let (status, body) = apple
            .post_raw(path, "{}", "text/plain", true)
            .await
            .unwrap();
        assert_eq!(
            (status.as_u16(), error_number(&body)),
            (415, 9727),
            "{path}: {body}"
        );
    }

    let (_, config) = apple.get("/service/config").await.unwrap();
    let codes: Vec<i64> = config["errorCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["errorNumber"].as_i64().unwrap())
        .collect();
    for n in [9602, 9650, 9703, 9705, 9709, 9721, 9726, 9727, 9728] {
        assert!(codes.contains(&n), "service config lists {n}: {codes:?}");
    }
    assert!(
        config["errorCodes"][0]["errorMessage"].is_string(),
        "{config}"
    );
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_walks_every_page_of_apples_lists() {
    let bed = Testbed::builder().start().await.unwrap();
    // Five assets, two a page: three pages to walk.
    bed.apple.with_world(|w| w.page_size = 2);
    bed.upload_and_sync_demo_token().await.unwrap();
    let (_, apps) = bed.admin.get("/v1/apps").await.unwrap();
    assert_eq!(apps["items"].as_array().unwrap().len(), 5, "{apps}");
    bed.shutdown().await;
}
