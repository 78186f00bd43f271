//! A server restarted on the same data directory keeps its CA, server certificate,
//! admin token and data, and does not print a new admin token.
#![allow(clippy::unwrap_used)]

use orchard_server::ServerConfig;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_pki_and_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path().to_owned());
    let mut first = orchard_server::start_with_listener(
        config.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let token = first
        .first_admin_token
        .clone()
        .expect("first start creates an admin token");
    let ca = first.ca_pem.clone();
    let secret = first
        .state
        .store
        .secret_setting("enrollment_secret")
        .await
        .unwrap()
        .expect("first start creates an enrollment secret");
    let topic = first.state.mdm.topic.clone();
    let server_pem = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();
    first.shutdown().await;

    let mut second = orchard_server::start_with_listener(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    assert!(
        second.first_admin_token.is_none(),
        "the admin token is shown once only"
    );
    assert_eq!(second.ca_pem, ca);
    assert_eq!(
        second
            .state
            .store
            .secret_setting("enrollment_secret")
            .await
            .unwrap(),
        Some(secret)
    );
    assert_eq!(second.state.mdm.topic, topic);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("server.pem")).unwrap(),
        server_pem
    );
    let hash = orchard_server::http::token_hash(&token);
    let stored = second.state.store.admin_token_by_hash(&hash).await.unwrap();
    assert!(
        stored.is_some(),
        "the first admin token still authenticates"
    );
    second.shutdown().await;
}
