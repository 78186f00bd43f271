//! Secrets at rest: the data directory and its files are private from their first byte,
//! and the database holds no VPP token, notification secret or enrollment secret in
//! clear text (a dump of it, or a PostgreSQL replica alone, reveals none); a secret an
//! older version stored in clear is sealed at the next start.
#![allow(clippy::unwrap_used)]

use orchard_testbed::harness::{DEMO_LOCATION, Testbed, TestbedBuilder};
use sqlx::Connection;

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_and_its_secrets_are_private_after_first_start() {
    let bed = Testbed::builder().start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    let dir = &bed.data_dir;
    assert_eq!(mode(dir), 0o700, "the data directory");
    for file in ["orchard.db", "ca-key.pem", "server-key.pem", "secret.key"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    for file in ["orchard.db-wal", "orchard.db-shm"] {
        let path = dir.join(file);
        assert!(path.exists(), "{file} exists in WAL mode");
        assert_eq!(mode(&path), 0o600, "{file}");
    }
    assert_eq!(
        mode(&dir.join("ca.pem")),
        0o644,
        "the CA certificate is public"
    );
    bed.shutdown().await;
}

/// The raw secret columns as the database holds them.
async fn stored_secrets(bed: &Testbed) -> Vec<String> {
    let query = "SELECT secret AS v FROM vpp_tokens
                 UNION ALL SELECT notification_secret FROM vpp_tokens
                 UNION ALL SELECT value FROM settings WHERE key = 'enrollment_secret'";
    let rows: Vec<(Option<String>,)> = match bed.database_url() {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_as(query).fetch_all(&mut c).await.unwrap()
        }
        None => {
            let url = format!("sqlite://{}", bed.data_dir.join("orchard.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as(query).fetch_all(&mut c).await.unwrap()
        }
    };
    rows.into_iter().filter_map(|(v,)| v).collect()
}

async fn write_raw(bed: &Testbed, sql: &str, value: &str) {
    match bed.database_url() {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.replace('?', "$1")))
                .bind(value)
                .execute(&mut c)
                .await
                .unwrap();
        }
        None => {
            let url = format!("sqlite://{}", bed.data_dir.join("orchard.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(value)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

async fn database_holds_no_secret_in_clear_text(builder: TestbedBuilder) {
    let mut bed = builder.start().await.unwrap();
    let s_token: String = bed
        .apple
        .token_file(DEMO_LOCATION)
        .unwrap()
        .split_whitespace()
        .collect();
    bed.upload_and_sync_demo_token().await.unwrap();
    let (_, enrollment) = bed.admin.get("/v1/enrollment").await.unwrap();
    let enrollment_secret = enrollment["enrollment_secret"].as_str().unwrap().to_owned();
    let stored = stored_secrets(&bed).await;
    assert_eq!(
        stored.len(),
        3,
        "token, notification and enrollment secrets: {stored:?}"
    );
    for value in &stored {
        assert!(value.starts_with("sealed:v1:"), "stored in clear: {value}");
        assert!(!value.contains(&s_token) && !value.contains(&enrollment_secret));
    }
    if bed.database_url().is_none() {
        // The whole SQLite database, its WAL included, as a dump would copy it.
        let mut bytes = std::fs::read(bed.data_dir.join("orchard.db")).unwrap();
        bytes.extend(std::fs::read(bed.data_dir.join("orchard.db-wal")).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&s_token),
            "the sToken is in the database file"
        );
        assert!(
            !text.contains(&enrollment_secret),
            "the enrollment secret is in the file"
        );
    }
    // A secret an older version wrote in clear is sealed at the next start, and still
    // works: the token syncs with Apple.
    bed.server.shutdown().await;
    write_raw(&bed, "UPDATE vpp_tokens SET secret = ?", &s_token).await;
    bed.restart_server().await.unwrap();
    for value in stored_secrets(&bed).await {
        assert!(
            value.starts_with("sealed:v1:"),
            "not sealed at start: {value}"
        );
    }
    let (_, tokens) = bed.admin.get("/v1/tokens").await.unwrap();
    let id = tokens["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = bed
        .admin
        .post(&format!("/v1/tokens/{id}/sync"), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_key_refuses_to_start() {
    let mut bed = Testbed::builder().start().await.unwrap();
    bed.upload_and_sync_demo_token().await.unwrap();
    bed.server.shutdown().await;
    let key = bed.data_dir.join("secret.key");
    std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let err = bed.restart_server().await.unwrap_err();
    assert!(
        format!("{err:#}").contains("does not open with this server's secret key"),
        "{err:#}"
    );
}

orchard_testbed::on_both_backends!(database_holds_no_secret_in_clear_text,);
