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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_admin_token_mints_an_admin_token_on_the_host_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path().to_owned());
    let mut server = orchard_server::start_with_listener(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchard-server"))
        .args(["recover-admin-token", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = stdout.lines().last().unwrap().trim();
    let hash = orchard_server::http::token_hash(secret);
    let minted = server
        .state
        .store
        .admin_token_by_hash(&hash)
        .await
        .unwrap()
        .expect("the printed token is stored, as a hash");
    assert_eq!(minted.role, orchard_server::store::Role::Admin);
    assert!(minted.name.starts_with("recovery-"), "{}", minted.name);
    assert!(stdout.contains(&minted.id), "{stdout}");
    let page = orchard_server::store::Page {
        limit: 10,
        cursor: None,
    };
    let audit = server
        .state
        .store
        .audit_log(&orchard_server::store::AuditFilter::default(), &page)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "admin_token.recover" && e.target == minted.id),
        "the recovery is audited: {audit:?}"
    );
    server.shutdown().await;

    // A mistyped data directory is named, not created.
    let missing = dir.path().join("nope");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchard-server"))
        .args(["recover-admin-token", "--data-dir"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no data directory"));
    assert!(!missing.exists());
}
