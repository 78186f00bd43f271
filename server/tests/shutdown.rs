//! Stopping the server with SIGTERM: it stops accepting, lets the request under way
//! finish, releases its leases and exits 0.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The next stdout line containing `needle`, within a minute.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the server exited early");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server never printed {needle:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_under_way_releases_leases_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchard-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let token_line = line_with(&mut lines, "Admin API token").await;
    let token = token_line.rsplit(' ').next().unwrap().to_owned();
    let url_line = line_with(&mut lines, "listening on").await;
    let addr = url_line.rsplit("https://").next().unwrap().to_owned();
    let db = format!("sqlite://{}", dir.path().join("orchard.db").display());
    // The sync schedule holds its lease while the server runs.
    let leases = || async {
        let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
            .fetch_one(&mut c)
            .await
            .unwrap();
        n
    };
    let held = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if leases().await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        held.is_ok(),
        "the running server holds the sync schedule's lease"
    );

    // A request under way: its headers and half its body are sent.
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let body = br#"{"name":"Created while stopping"}"#;
    let head = format!(
        "POST /v1/groups HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..10]).await.unwrap();
    tls.flush().await.unwrap();

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    line_with(&mut lines, "shutting down").await;
    // New connections are not accepted any more.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener closes at once");
    // The request under way still completes.
    tls.write_all(&body[10..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits within its grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(leases().await, 0, "no lease left behind");
    let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
    let groups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM groups")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(groups, 1, "the request's work is stored");
}
