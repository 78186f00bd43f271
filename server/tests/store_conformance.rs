//! One storage conformance suite, run against every backend: SQLite on a file, and
//! PostgreSQL in a fresh database created for the run. In CI PostgreSQL must be
//! reachable; elsewhere its half is skipped with a printed reason when it is not.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use orchard_protocol::{AdamId, CommandUuid, SerialNumber, Udid};
use orchard_server::store::*;
use time::macros::datetime;

struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(PostgresStore, String)>,
}

impl Backend {
    /// Drops the test's PostgreSQL database.
    async fn finish(self) {
        use sqlx::Connection;
        let Some((store, name)) = self.postgres else {
            return;
        };
        store.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

fn admin_url() -> String {
    std::env::var("ORCHARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("conformance.db"), seal())
        .await
        .unwrap();
    let mut all = vec![Backend {
        name: "sqlite",
        store: Arc::new(sqlite),
        _dir: Some(dir),
        postgres: None,
    }];
    match fresh_postgres().await {
        Ok((store, name)) => all.push(Backend {
            name: "postgres",
            store: Arc::new(store.clone()),
            _dir: None,
            postgres: Some((store, name)),
        }),
        Err(reason) if std::env::var("CI").is_ok() => {
            panic!("PostgreSQL is required in CI: {reason}")
        }
        Err(reason) => eprintln!("skipping the PostgreSQL half of the storage suite: {reason}"),
    }
    all
}

/// Creates a database of its own for this test and connects to it.
async fn fresh_postgres() -> Result<(PostgresStore, String), String> {
    use sqlx::Connection;
    let admin_url = admin_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .map_err(|e| format!("cannot connect to {admin_url}: {e}"))?;
    let name = format!("orchard_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("cannot create a test database: {e}"))?;
    let store = PostgresStore::open(&database_url(&name), seal())
        .await
        .map_err(|e| e.to_string())?;
    Ok((store, name))
}

/// The URL of database `name` on the test server.
fn database_url(name: &str) -> String {
    let admin_url = admin_url();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// Waits up to `seconds` for `done` to hold; says whether it did.
async fn eventually<F: std::future::Future<Output = bool>>(
    seconds: u64,
    mut done: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

const NOW: Timestamp = Timestamp::at_utc(datetime!(2026-11-25 12:00:00));
const LATER: Timestamp = Timestamp::at_utc(datetime!(2026-11-25 12:00:05));

/// A seal with a fresh key.
fn seal() -> Arc<Seal> {
    Arc::new(Seal::new(&Seal::generate_key()).unwrap())
}

/// A time written as RFC 3339.
fn ts(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 time")
}

fn device(udid: &str, fingerprint: &str) -> DeviceRecord {
    DeviceRecord {
        udid: udid.into(),
        serial_number: format!("SN-{udid}").into(),
        product_name: Some("iPhone15,2".into()),
        os_version: Some("17.5".into()),
        platform: Platform::Ios,
        cert_fingerprint: fingerprint.into(),
        status: EnrollmentStatus::Enrolled,
        topic: None,
        push_magic: None,
        is_supervised: None,
        ownership: Some("Corporate".into()),
        single_app_mode: Some(false),
        app_store_allowed: None,
        user_id: None,
        enrolled_at: NOW,
        last_seen_at: NOW,
    }
}

fn command(uuid: &str, udid: &str, not_before: Timestamp, created_at: Timestamp) -> NewCommand {
    NewCommand {
        uuid: uuid.into(),
        udid: udid.into(),
        request_type: "DeviceInformation".into(),
        app_id: None,
        payload: uuid.as_bytes().to_vec(),
        not_before,
        created_at,
    }
}

fn exchange(
    udid: &str,
    new_session: bool,
    outcome: Option<CommandOutcome>,
    now: Timestamp,
) -> Exchange {
    Exchange {
        udid: udid.into(),
        new_session,
        outcome,
        now,
    }
}

fn outcome(
    udid: &str,
    uuid: &str,
    status: CommandState,
    follow_ups: Vec<NewCommand>,
) -> CommandOutcome {
    CommandOutcome {
        udid: udid.into(),
        uuid: uuid.into(),
        status,
        result: b"result".to_vec(),
        installs: Vec::new(),
        follow_ups,
        now: NOW,
    }
}

fn app(id: &str, token: &str, adam: u64, available: i64) -> AppRecord {
    AppRecord {
        id: id.into(),
        token_id: token.into(),
        adam_id: AdamId(adam),
        pricing_param: "STDQ".into(),
        product_type: "App".into(),
        name: Some("App".into()),
        bundle_id: Some(format!("com.example.{adam}")),
        version: Some("1.0".into()),
        platforms: vec!["iOS".into(), "macOS".into()],
        device_assignable: true,
        counts: LicenseCounts {
            total: available,
            assigned: 0,
            available,
            retired: 0,
        },
        updated_at: NOW,
        install_timeout_seconds: None,
        store_url: None,
        minimum_os_version: None,
    }
}

fn token(id: &str, secret: &str) -> VppTokenRecord {
    VppTokenRecord {
        id: id.into(),
        org_name: "Org".into(),
        secret: secret.into(),
        secret_hash: format!("hash-{secret}"),
        expires_at: ts("2027-11-25T00:00:00.000000Z"),
        created_at: NOW,
        priority: 100,
        ..VppTokenRecord::example()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_admin_tokens() {
    for b in backends().await {
        let s = b.store.as_ref();
        assert_eq!(s.setting("topic").await.unwrap(), None, "{}", b.name);
        assert_eq!(s.setting_or_insert("topic", "a").await.unwrap(), "a");
        assert_eq!(
            s.setting_or_insert("topic", "b").await.unwrap(),
            "a",
            "{}: first value wins",
            b.name
        );
        let t = AdminTokenRecord {
            id: "bootstrap".into(),
            name: "admin".into(),
            token_hash: "h".into(),
            role: Role::Admin,
            expires_at: None,
            created_by: None,
            created_at: NOW,
            rotated_at: None,
        };
        assert!(s.insert_admin_token(&t).await.unwrap());
        assert!(
            !s.insert_admin_token(&t).await.unwrap(),
            "{}: a second insert is refused",
            b.name
        );
        let same_name = AdminTokenRecord {
            id: "other".into(),
            token_hash: "h2".into(),
            ..t.clone()
        };
        assert!(
            !s.insert_admin_token(&same_name).await.unwrap(),
            "{}: names are unique",
            b.name
        );
        assert_eq!(
            s.admin_token_by_hash("h").await.unwrap().unwrap().role,
            Role::Admin
        );
        assert!(s.admin_token_by_hash("nope").await.unwrap().is_none());
        // The last unexpired admin stays; an expired one does not count.
        let expired = AdminTokenRecord {
            id: "old".into(),
            name: "old admin".into(),
            token_hash: "h3".into(),
            expires_at: Some(NOW - std::time::Duration::from_secs(1)),
            ..t.clone()
        };
        assert!(s.insert_admin_token(&expired).await.unwrap());
        assert_eq!(
            s.delete_admin_token("bootstrap", NOW).await.unwrap(),
            AdminTokenRemoval::LastAdmin,
            "{}",
            b.name
        );
        let auditor = AdminTokenRecord {
            id: "aud".into(),
            name: "auditor".into(),
            token_hash: "h4".into(),
            role: Role::Auditor,
            ..t.clone()
        };
        assert!(s.insert_admin_token(&auditor).await.unwrap());
        assert!(s.rotate_admin_token("aud", "h5", NOW).await.unwrap());
        assert!(!s.rotate_admin_token("none", "h6", NOW).await.unwrap());
        assert!(s.admin_token_by_hash("h4").await.unwrap().is_none());
        let rotated = s.admin_token("aud").await.unwrap().unwrap();
        assert_eq!(
            (rotated.token_hash.as_str(), rotated.rotated_at),
            ("h5", Some(NOW))
        );
        let names: Vec<String> = s
            .admin_tokens(&Page {
                limit: 2,
                cursor: Some("admin".into()),
            })
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            names,
            ["auditor", "old admin"],
            "{}: by name after the cursor",
            b.name
        );
        assert_eq!(
            s.delete_admin_token("aud", NOW).await.unwrap(),
            AdminTokenRemoval::Deleted
        );
        assert_eq!(
            s.delete_admin_token("aud", NOW).await.unwrap(),
            AdminTokenRemoval::NotFound
        );
        assert_eq!(
            s.delete_admin_token("old", NOW).await.unwrap(),
            AdminTokenRemoval::Deleted,
            "{}: an expired admin is not the last one",
            b.name
        );
        for i in 0..3 {
            let e = AuditEntry {
                id: 0,
                at: NOW,
                actor: "admin".into(),
                actor_token: Some("bootstrap".into()),
                action: format!("a{i}"),
                target: "t".into(),
                result: "ok".into(),
            };
            s.audit(&e).await.unwrap();
        }
        let log = s
            .audit_log(
                &AuditFilter::default(),
                &Page {
                    limit: 2,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["a2", "a1"],
            "{}: newest first",
            b.name
        );
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_lifecycle() {
    for b in backends().await {
        let s = b.store.as_ref();
        let udid = Udid::from("U1");
        s.upsert_enrollment(&device("U1", "fp1")).await.unwrap();
        assert_eq!(
            s.device_by_fingerprint("fp1").await.unwrap().unwrap().udid,
            udid
        );
        let facts = AuthenticateFacts {
            serial_number: Some("SN-NEW".into()),
            product_name: None,
            os_version: Some("18.0".into()),
        };
        s.record_authenticate(&udid, &facts, LATER).await.unwrap();
        let d = s.device(&udid).await.unwrap().unwrap();
        assert_eq!(
            (d.status, d.serial_number.as_str(), d.os_version.as_deref()),
            (EnrollmentStatus::Authenticated, "SN-NEW", Some("18.0")),
            "{}",
            b.name
        );
        assert_eq!(
            d.product_name.as_deref(),
            Some("iPhone15,2"),
            "{}: absent facts keep their value",
            b.name
        );
        s.record_token_update(&udid, "topic", "MAGIC", &[1, 2, 3], LATER)
            .await
            .unwrap();
        let d = s.device(&udid).await.unwrap().unwrap();
        assert_eq!(
            (d.status, d.push_magic.as_deref(), d.topic.as_deref()),
            (EnrollmentStatus::Active, Some("MAGIC"), Some("topic"))
        );
        s.record_device_information(
            &udid,
            &AuthenticateFacts::default(),
            Some(true),
            Some("account-hash"),
        )
        .await
        .unwrap();
        assert_eq!(
            s.device(&udid).await.unwrap().unwrap().is_supervised,
            Some(true)
        );
        // Re-enrollment binds the new certificate; the old one no longer finds the device.
        s.upsert_enrollment(&device("U1", "fp2")).await.unwrap();
        assert!(
            s.device_by_fingerprint("fp1").await.unwrap().is_none(),
            "{}",
            b.name
        );
        assert_eq!(
            s.device_by_fingerprint("fp2").await.unwrap().unwrap().udid,
            udid
        );
        s.record_check_out(&udid, LATER).await.unwrap();
        let d = s.device(&udid).await.unwrap().unwrap();
        assert_eq!(
            (d.status, d.push_magic),
            (EnrollmentStatus::CheckedOut, None)
        );
        s.upsert_enrollment(&device("U0", "fp0")).await.unwrap();
        let page = s
            .devices(
                &DeviceFilter::default(),
                &Page {
                    limit: 1,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(page[0].udid.as_str(), "U0");
        let page = s
            .devices(
                &DeviceFilter::default(),
                &Page {
                    limit: 5,
                    cursor: Some("U0".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|d| d.udid.as_str()).collect::<Vec<_>>(),
            ["U1"]
        );
        b.finish().await;
    }
}

/// What a certificate's enrollment is follows every write of it, though each step reads
/// it first (a store may keep what it read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificates_standing_follows_every_write_of_its_enrollment() {
    for b in backends().await {
        let s = b.store.as_ref();
        let udid = Udid::from("STANDING-1");
        let standing = |status| {
            Some(Standing {
                udid: udid.clone(),
                status,
            })
        };
        assert_eq!(s.standing("fp-1").await.unwrap(), None);
        s.upsert_enrollment(&device("STANDING-1", "fp-1"))
            .await
            .unwrap();
        assert_eq!(
            s.standing("fp-1").await.unwrap(),
            standing(EnrollmentStatus::Enrolled),
            "{}",
            b.name
        );
        let facts = AuthenticateFacts {
            serial_number: None,
            product_name: None,
            os_version: None,
        };
        s.record_authenticate(&udid, &facts, LATER).await.unwrap();
        assert_eq!(
            s.standing("fp-1").await.unwrap(),
            standing(EnrollmentStatus::Authenticated),
            "{}",
            b.name
        );
        s.record_token_update(&udid, "topic", "magic", b"token", LATER)
            .await
            .unwrap();
        assert_eq!(
            s.standing("fp-1").await.unwrap(),
            standing(EnrollmentStatus::Active),
            "{}",
            b.name
        );
        s.release_device(&udid).await.unwrap();
        assert_eq!(
            s.standing("fp-1").await.unwrap(),
            standing(EnrollmentStatus::Released),
            "{}",
            b.name
        );
        // Enrolling again binds the new certificate; the old one is bound to nothing.
        s.upsert_enrollment(&device("STANDING-1", "fp-2"))
            .await
            .unwrap();
        assert_eq!(s.standing("fp-1").await.unwrap(), None, "{}", b.name);
        assert_eq!(
            s.standing("fp-2").await.unwrap(),
            standing(EnrollmentStatus::Enrolled)
        );
        s.record_check_out(&udid, LATER).await.unwrap();
        assert_eq!(
            s.standing("fp-2").await.unwrap(),
            standing(EnrollmentStatus::CheckedOut),
            "{}",
            b.name
        );
        assert!(s.delete_device(&udid).await.unwrap());
        assert_eq!(s.standing("fp-2").await.unwrap(), None, "{}", b.name);
        b.finish().await;
    }
}

/// PostgreSQL replicas keep apps and standings in memory; what one replica writes
/// reaches what another keeps, also when that one's listening connection was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_hears_of_another_replicas_writes_of_what_it_keeps() {
    let (a, name) = match fresh_postgres().await {
        Ok(found) => found,
        Err(reason) if std::env::var("CI").is_ok() => {
            panic!("PostgreSQL is required in CI: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the replica cache test: {reason}");
            return;
        }
    };
    let b = PostgresStore::open(&database_url(&name), seal())
        .await
        .unwrap();
    assert!(
        eventually(10, || async {
            a.hears_of_changes() && b.hears_of_changes()
        })
        .await,
        "both replicas listen for changes"
    );
    let udid = Udid::from("REPLICA-1");
    let standing = |status| {
        Some(Standing {
            udid: udid.clone(),
            status,
        })
    };
    a.upsert_enrollment(&device("REPLICA-1", "fp-r"))
        .await
        .unwrap();
    // B reads (and keeps) the standing, then A checks the device out.
    assert_eq!(
        b.standing("fp-r").await.unwrap(),
        standing(EnrollmentStatus::Enrolled)
    );
    a.record_check_out(&udid, LATER).await.unwrap();
    assert!(
        eventually(5, || async {
            b.standing("fp-r").await.unwrap() == standing(EnrollmentStatus::CheckedOut)
        })
        .await,
        "B hears of A's check-out"
    );
    // The same for apps.
    assert!(a.insert_token(&token("t1", "secret")).await.unwrap());
    a.record_sync(&SyncRecord {
        token_id: "t1".into(),
        location_name: None,
        country: None,
        location_uid: None,
        apps: vec![app("a1", "t1", 1, 10)],
        now: NOW,
    })
    .await
    .unwrap();
    assert_eq!(
        b.app("a1").await.unwrap().unwrap().install_timeout_seconds,
        None
    );
    assert!(a.set_app_install_timeout("a1", Some(60)).await.unwrap());
    assert!(
        eventually(5, || async {
            b.app("a1").await.unwrap().unwrap().install_timeout_seconds == Some(60)
        })
        .await,
        "B hears of A's change of the app"
    );
    // Both listening connections are cut, and A deletes the device before B has
    // noticed: B's notification is lost with the connection, so B forgets what it kept
    // and listens again.
    assert_eq!(
        b.standing("fp-r").await.unwrap(),
        standing(EnrollmentStatus::CheckedOut)
    );
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND query = 'LISTEN \"orchard_kept\"'",
        )
        .bind(&name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(cut, [true, true], "two listening connections, both cut");
    }
    assert!(a.delete_device(&udid).await.unwrap());
    assert!(
        eventually(10, || async { b.standing("fp-r").await.unwrap().is_none() }).await,
        "B no longer answers with the deleted device's standing"
    );
    assert!(
        eventually(10, || async {
            a.hears_of_changes() && b.hears_of_changes()
        })
        .await,
        "both replicas listen again"
    );
    b.close().await;
    Backend {
        name: "postgres",
        store: Arc::new(a.clone()),
        _dir: None,
        postgres: Some((a, name)),
    }
    .finish()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_queue_hands_out_in_order_and_applies_results_once() {
    for b in backends().await {
        let s = b.store.as_ref();
        s.upsert_enrollment(&device("U1", "fp1")).await.unwrap();
        assert!(
            !s.has_due_commands(&"U1".into(), NOW).await.unwrap(),
            "{}: nothing queued",
            b.name
        );
        s.enqueue(&[
            command("c1", "U1", NOW, ts("2026-11-25T11:00:00.000000Z")),
            command("c2", "U1", NOW, ts("2026-11-25T11:00:01.000000Z")),
        ])
        .await
        .unwrap();
        assert!(s.has_due_commands(&"U1".into(), NOW).await.unwrap());
        let first = s
            .exchange(&exchange("U1", true, None, NOW))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.uuid.as_str(), first.status),
            ("c1", CommandState::Sent),
            "{}",
            b.name
        );
        // Unanswered commands stay at the head and are sent again.
        assert_eq!(
            s.exchange(&exchange("U1", true, None, NOW))
                .await
                .unwrap()
                .unwrap()
                .uuid
                .as_str(),
            "c1"
        );
        // A deferred follow-up is not handed out before it is due.
        let deferred = command("c3", "U1", ts("2026-11-25T13:00:00.000000Z"), NOW);
        let next = s
            .exchange(&exchange(
                "U1",
                false,
                Some(outcome(
                    "U1",
                    "c1",
                    CommandState::Acknowledged,
                    vec![deferred],
                )),
                NOW,
            ))
            .await
            .unwrap();
        assert_eq!(next.unwrap().uuid.as_str(), "c2", "{}", b.name);
        let stored = s
            .command(&"U1".into(), &CommandUuid::from("c1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, CommandState::Acknowledged);
        // NotNow: not offered again in this session, offered again in the next one.
        let next = s
            .exchange(&exchange(
                "U1",
                false,
                Some(outcome("U1", "c2", CommandState::NotNow, vec![])),
                NOW,
            ))
            .await
            .unwrap();
        assert!(next.is_none(), "{}: nothing else is due", b.name);
        let next = s.exchange(&exchange("U1", true, None, NOW)).await.unwrap();
        assert_eq!(
            next.unwrap().uuid.as_str(),
            "c2",
            "{}: NotNow'd command returns in a new session",
            b.name
        );
        s.exchange(&exchange(
            "U1",
            false,
            Some(outcome("U1", "c2", CommandState::Acknowledged, vec![])),
            NOW,
        ))
        .await
        .unwrap();
        let due = s
            .exchange(&exchange(
                "U1",
                true,
                None,
                ts("2026-11-25T13:00:00.000000Z"),
            ))
            .await
            .unwrap();
        assert_eq!(
            due.unwrap().uuid.as_str(),
            "c3",
            "{}: due once its time has come",
            b.name
        );
        let all = s.commands_of(&"U1".into()).await.unwrap();
        assert_eq!(all.len(), 3);
        // Another device's queue is separate.
        assert!(
            s.exchange(&exchange("U2", true, None, NOW))
                .await
                .unwrap()
                .is_none()
        );
        assert!(!s.has_due_commands(&"U2".into(), NOW).await.unwrap());
        // Last-seen times written in a batch never go back in time.
        let seen = ts("2026-11-25T14:00:00.000000Z");
        s.touch_devices(&[("U1".into(), seen)]).await.unwrap();
        s.touch_devices(&[("U1".into(), NOW)]).await.unwrap();
        assert_eq!(
            s.device(&"U1".into()).await.unwrap().unwrap().last_seen_at,
            seen,
            "{}",
            b.name
        );
        // Many devices in one batch, each with its own time.
        s.upsert_enrollment(&device("U3", "fp3")).await.unwrap();
        let later = ts("2026-11-25T15:00:00.000000Z");
        s.touch_devices(&[("U1".into(), later), ("U3".into(), seen)])
            .await
            .unwrap();
        let last_seen = |udid: &'static str| async move {
            s.device(&udid.into()).await.unwrap().unwrap().last_seen_at
        };
        assert_eq!(
            (last_seen("U1").await, last_seen("U3").await),
            (later, seen),
            "{}",
            b.name
        );
        b.finish().await;
    }
}

/// Many devices' exchanges at once, which the store writes in batches: each device's
/// result, install and follow-up land on its own rows, and each is handed its own next
/// command, never another device's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_of_many_devices_at_once_keep_to_each_device() {
    const DEVICES: usize = 40;
    for b in backends().await {
        let s = b.store.clone();
        s.insert_token(&token("t1", "secret")).await.unwrap();
        s.record_sync(&SyncRecord {
            token_id: "t1".into(),
            location_name: Some("HQ".into()),
            country: Some("US".into()),
            location_uid: Some("1".into()),
            apps: vec![app("a1", "t1", 1, 100)],
            now: NOW,
        })
        .await
        .unwrap();
        let udids: Vec<String> = (0..DEVICES).map(|i| format!("M{i:02}")).collect();
        for u in &udids {
            s.upsert_enrollment(&device(u, &format!("fp-{u}")))
                .await
                .unwrap();
            s.enqueue(&[
                command(&format!("{u}-a"), u, NOW, ts("2026-11-25T11:00:00.000000Z")),
                command(&format!("{u}-b"), u, NOW, ts("2026-11-25T11:00:01.000000Z")),
            ])
            .await
            .unwrap();
        }
        let all_at_once = |make: fn(&str) -> Exchange| {
            let mut set = tokio::task::JoinSet::new();
            for u in &udids {
                let (s, x) = (s.clone(), make(u));
                set.spawn(async move { (x.udid.clone(), s.exchange(&x).await) });
            }
            set.join_all()
        };
        // New sessions: each device is handed its own oldest command.
        for (udid, next) in all_at_once(|u| exchange(u, true, None, NOW)).await {
            let next = next.unwrap().unwrap();
            assert_eq!(
                (next.udid.as_str(), next.uuid.as_str()),
                (udid.as_str(), format!("{udid}-a").as_str()),
                "{}",
                b.name
            );
        }
        // Results: each acknowledges its first command with an install and a follow-up
        // due now, and is handed its second command (older than the follow-up). M00's
        // follow-up reuses another device's command id: its exchange fails alone, in
        // whatever batch it lands, and nothing of it is written.
        fn acknowledged(u: &str, follow_up: &str) -> Exchange {
            let mut o = outcome(
                u,
                &format!("{u}-a"),
                CommandState::Acknowledged,
                vec![command(follow_up, u, NOW, NOW)],
            );
            o.installs = vec![InstallRecord {
                app_id: "a1".into(),
                udid: u.into(),
                status: InstallStatus::Installing,
                device_status: None,
                version: None,
                reason: Some(format!("reported by {u}")),
                updated_at: NOW,
                since: None,
            }];
            exchange(u, false, Some(o), NOW)
        }
        let results = all_at_once(|u| {
            let follow_up = if u == "M00" {
                "M01-a".to_owned()
            } else {
                format!("{u}-c")
            };
            acknowledged(u, &follow_up)
        })
        .await;
        for (udid, next) in results {
            if udid.as_str() == "M00" {
                assert!(next.is_err(), "{}: {next:?}", b.name);
                continue;
            }
            assert_eq!(
                next.unwrap().map(|c| c.uuid.to_string()),
                Some(format!("{udid}-b")),
                "{}",
                b.name
            );
        }
        let statuses = |udid: Udid| {
            let s = s.clone();
            async move {
                let mut all: Vec<(String, CommandState)> = s
                    .commands_of(&udid)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| (c.uuid.to_string(), c.status))
                    .collect();
                all.sort();
                all
            }
        };
        let failed: Udid = "M00".into();
        assert_eq!(
            statuses(failed.clone()).await,
            [
                ("M00-a".to_owned(), CommandState::Sent),
                ("M00-b".to_owned(), CommandState::Queued),
            ],
            "{}: the failed exchange wrote nothing",
            b.name
        );
        assert!(
            s.installs_of_device(&failed).await.unwrap().is_empty(),
            "{}",
            b.name
        );
        // The store goes on: the device's result, sent again right, is written.
        let next = s.exchange(&acknowledged("M00", "M00-c")).await;
        assert_eq!(
            next.unwrap().map(|c| c.uuid.to_string()),
            Some("M00-b".to_owned()),
            "{}",
            b.name
        );
        for u in &udids {
            let udid: Udid = u.as_str().into();
            assert_eq!(
                statuses(udid.clone()).await,
                [
                    (format!("{u}-a"), CommandState::Acknowledged),
                    (format!("{u}-b"), CommandState::Sent),
                    (format!("{u}-c"), CommandState::Queued),
                ],
                "{}: {u}",
                b.name
            );
            let installs = s.installs_of_device(&udid).await.unwrap();
            assert_eq!(installs.len(), 1, "{}: {u}", b.name);
            assert_eq!(
                (installs[0].status, installs[0].reason.clone()),
                (InstallStatus::Installing, Some(format!("reported by {u}"))),
                "{}",
                b.name
            );
        }
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_sync_keep_app_ids_stable() {
    for b in backends().await {
        let s = b.store.as_ref();
        assert!(s.insert_token(&token("t1", "secret")).await.unwrap());
        assert!(
            !s.insert_token(&token("t2", "secret")).await.unwrap(),
            "{}: same secret twice",
            b.name
        );
        assert_eq!(s.token_count().await.unwrap(), 1);
        let sync = |apps, now: Timestamp| SyncRecord {
            token_id: "t1".into(),
            location_name: Some("HQ".into()),
            country: Some("US".into()),
            location_uid: Some("1".into()),
            apps,
            now,
        };
        s.record_sync(&sync(
            vec![app("a1", "t1", 1, 10), app("a2", "t1", 2, 5)],
            NOW,
        ))
        .await
        .unwrap();
        // Read before each write below: what a store keeps of a read never outlives a
        // write.
        assert_eq!(s.app("a1").await.unwrap().unwrap().counts.available, 10);
        assert_eq!(s.app("a2").await.unwrap().unwrap().counts.assigned, 0);
        // A later sync reports new counts; the app keeps its id.
        let mut again = app("new-id", "t1", 1, 7);
        again.name = None;
        s.record_sync(&sync(vec![again], LATER)).await.unwrap();
        let a1 = s.app("a1").await.unwrap().unwrap();
        assert_eq!(
            (a1.counts.available, a1.name.as_deref()),
            (7, Some("App")),
            "{}: counts move, missing metadata is kept",
            b.name
        );
        assert!(s.app("new-id").await.unwrap().is_none());
        assert_eq!(a1.platforms, ["iOS", "macOS"]);
        let t = s.token("t1").await.unwrap().unwrap();
        assert_eq!(
            (t.last_sync_at, t.country.as_deref()),
            (Some(LATER), Some("US"))
        );
        s.record_sync_error("t1", "Apple error 9622", LATER)
            .await
            .unwrap();
        assert_eq!(
            s.token("t1")
                .await
                .unwrap()
                .unwrap()
                .last_sync_error
                .as_deref(),
            Some("Apple error 9622")
        );
        assert_eq!(s.app("a2").await.unwrap().unwrap().counts.assigned, 0);
        s.update_app_counts(
            "a2",
            &LicenseCounts {
                total: 5,
                assigned: 2,
                available: 3,
                retired: 0,
            },
            LATER,
        )
        .await
        .unwrap();
        assert_eq!(s.app("a2").await.unwrap().unwrap().counts.assigned, 2);
        assert_eq!(s.apps(&Page::all()).await.unwrap().len(), 2);
        assert!(s.set_app_install_timeout("a2", Some(90)).await.unwrap());
        assert_eq!(
            s.app("a2").await.unwrap().unwrap().install_timeout_seconds,
            Some(90)
        );
        // Deleting the token takes its apps.
        assert!(s.app("a1").await.unwrap().is_some());
        assert!(s.delete_token("t1").await.unwrap());
        assert!(s.app("a1").await.unwrap().is_none(), "{}", b.name);
        assert!(s.app("a2").await.unwrap().is_none(), "{}", b.name);
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_assignments_and_targets() {
    for b in backends().await {
        let s = b.store.as_ref();
        s.insert_token(&token("t1", "secret")).await.unwrap();
        s.record_sync(&SyncRecord {
            token_id: "t1".into(),
            location_name: None,
            country: None,
            location_uid: None,
            apps: vec![app("a1", "t1", 1, 10)],
            now: NOW,
        })
        .await
        .unwrap();
        let g = GroupRecord {
            id: "g1".into(),
            name: "Lab".into(),
            kind: GroupKind::Device,
            created_at: NOW,
        };
        assert!(s.insert_group(&g).await.unwrap());
        assert!(
            !s.insert_group(&GroupRecord {
                id: "g2".into(),
                ..g.clone()
            })
            .await
            .unwrap(),
            "{}: names are unique",
            b.name
        );
        for (udid, fp) in [("U1", "f1"), ("U2", "f2"), ("U3", "f3")] {
            s.upsert_enrollment(&device(udid, fp)).await.unwrap();
        }
        s.record_token_update(&"U1".into(), "t", "m", &[], NOW)
            .await
            .unwrap();
        s.record_token_update(&"U2".into(), "t", "m", &[], NOW)
            .await
            .unwrap();
        assert_eq!(
            s.add_group_devices("g1", &["U2".into()], NOW)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            s.add_group_devices("g1", &["U1".into(), "U2".into(), "U3".into()], LATER)
                .await
                .unwrap(),
            2,
            "{}",
            b.name
        );
        assert_eq!(
            s.group_devices("g1").await.unwrap(),
            vec![Udid::from("U2"), "U1".into(), "U3".into()]
        );
        assert_eq!(
            s.group_sizes().await.unwrap(),
            std::collections::HashMap::from([("g1".to_owned(), 3)]),
            "{}: members counted",
            b.name
        );
        let a = AssignmentRecord {
            id: "as1".into(),
            app_id: "a1".into(),
            group_id: "g1".into(),
            intent: Intent::Required,
            license_type: LicenseType::Device,
            install: true,
            any_token: false,
            created_at: NOW,
            updated_at: None,
        };
        assert!(s.insert_assignment(&a).await.unwrap());
        assert!(
            !s.insert_assignment(&AssignmentRecord {
                id: "as2".into(),
                ..a.clone()
            })
            .await
            .unwrap()
        );
        let targets = s.assignment_candidates().await.unwrap();
        // U3 has not finished enrollment; U2 joined first.
        assert_eq!(
            targets
                .iter()
                .map(|t| (t.udid.as_str(), t.active))
                .collect::<Vec<_>>(),
            [("U2", true), ("U1", true), ("U3", false)],
            "{}",
            b.name
        );
        assert_eq!(targets[0].serial_number, SerialNumber::from("SN-U2"));
        assert_eq!(targets[0].group_kind, GroupKind::Device);
        assert_eq!(targets[1].joined_at, LATER);
        // Changing the assignment brings every device under it anew.
        let mut changed = a.clone();
        changed.license_type = LicenseType::User;
        changed.install = false;
        changed.updated_at = Some(ts("2026-11-25T13:00:00.000000Z"));
        assert!(s.update_assignment(&changed).await.unwrap());
        assert_eq!(s.assignment("as1").await.unwrap(), Some(changed.clone()));
        let targets = s.assignment_candidates().await.unwrap();
        assert!(
            targets
                .iter()
                .all(|t| t.joined_at == ts("2026-11-25T13:00:00.000000Z")
                    && t.license_type == LicenseType::User
                    && !t.install)
        );
        assert_eq!(
            s.remove_group_devices("g1", &["U1".into()]).await.unwrap(),
            1
        );
        assert_eq!(s.assignment_candidates().await.unwrap().len(), 2);
        assert!(s.delete_assignment("as1").await.unwrap());
        assert!(s.assignment_candidates().await.unwrap().is_empty());
        assert!(!s.delete_assignment("as1").await.unwrap());
        s.insert_assignment(&a).await.unwrap();
        assert_eq!(s.assignments(&Page::all()).await.unwrap().len(), 1);
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_reservations_follow_apples_answers() {
    for b in backends().await {
        let s = b.store.as_ref();
        s.insert_token(&token("t1", "secret")).await.unwrap();
        s.record_sync(&SyncRecord {
            token_id: "t1".into(),
            location_name: None,
            country: None,
            location_uid: None,
            apps: vec![app("a1", "t1", 1, 10)],
            now: NOW,
        })
        .await
        .unwrap();
        let lic = |udid: &str, state, error: Option<&str>| LicenseRecord {
            app_id: "a1".into(),
            udid: udid.into(),
            serial_number: format!("SN-{udid}").into(),
            state,
            event_id: None,
            error: error.map(String::from),
            updated_at: NOW,
        };
        s.reserve_licenses(&[
            lic("U1", LicenseState::Pending, None),
            lic("U2", LicenseState::Pending, None),
            lic("U3", LicenseState::Failed, Some("no licenses")),
        ])
        .await
        .unwrap();
        let installs = s.installs_of_app("a1").await.unwrap();
        assert_eq!(
            installs.iter().map(|i| i.status).collect::<Vec<_>>(),
            [
                InstallStatus::Pending,
                InstallStatus::Pending,
                InstallStatus::LicenseFailed
            ],
            "{}",
            b.name
        );
        s.mark_license_error("a1", &["U1".into()], "Apple unreachable", NOW)
            .await
            .unwrap();
        s.mark_associating("a1", &["U1".into(), "U2".into()], "ev1", LATER)
            .await
            .unwrap();
        let held = s.licenses().await.unwrap();
        assert!(
            held.iter()
                .filter(|l| l.udid.as_str() != "U3")
                .all(|l| l.state == LicenseState::Associating
                    && l.event_id.as_deref() == Some("ev1")
                    && l.error.is_none()),
            "{}: {held:?}",
            b.name
        );
        let install_cmd = NewCommand {
            app_id: Some("a1".into()),
            request_type: "InstallApplication".into(),
            ..command("i1", "U1", NOW, NOW)
        };
        s.finish_association(&AssociationOutcome {
            app_id: "a1".into(),
            associated: vec!["U1".into()],
            failed: vec![("U2".into(), "no licenses available".into())],
            installs: vec![install_cmd],
            install_rows: vec![InstallRecord {
                app_id: "a1".into(),
                udid: "U1".into(),
                status: InstallStatus::Queued,
                device_status: None,
                version: None,
                reason: None,
                updated_at: LATER,
                since: None,
            }],
            now: LATER,
        })
        .await
        .unwrap();
        let held = s.licenses().await.unwrap();
        let state = |u: &str| {
            held.iter()
                .find(|l| l.udid.as_str() == u)
                .map(|l| (l.state, l.error.clone()))
                .unwrap()
        };
        assert_eq!(state("U1"), (LicenseState::Associated, None), "{}", b.name);
        assert_eq!(
            state("U2"),
            (LicenseState::Failed, Some("no licenses available".into()))
        );
        let queued = s.commands_of(&"U1".into()).await.unwrap();
        assert_eq!(
            queued
                .iter()
                .map(|c| c.request_type.as_str())
                .collect::<Vec<_>>(),
            ["InstallApplication"]
        );
        let mine = s.installs_of_device(&"U1".into()).await.unwrap();
        assert_eq!(mine[0].status, InstallStatus::Queued);
        // Install updates keep Apple's last status and the version when a later write omits them.
        s.set_installs(&[InstallRecord {
            app_id: "a1".into(),
            udid: "U1".into(),
            status: InstallStatus::Installed,
            device_status: Some("Managed".into()),
            version: Some("1.0".into()),
            reason: None,
            updated_at: LATER,
            since: None,
        }])
        .await
        .unwrap();
        s.set_installs(&[InstallRecord {
            app_id: "a1".into(),
            udid: "U1".into(),
            status: InstallStatus::Installing,
            device_status: None,
            version: None,
            reason: None,
            updated_at: LATER,
            since: None,
        }])
        .await
        .unwrap();
        let mine = &s.installs_of_device(&"U1".into()).await.unwrap()[0];
        assert_eq!(
            (mine.device_status.as_deref(), mine.version.as_deref()),
            (Some("Managed"), Some("1.0")),
            "{}",
            b.name
        );
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_registrations_user_licenses_and_prompts() {
    for b in backends().await {
        let s = b.store.as_ref();
        s.insert_token(&token("t1", "secret")).await.unwrap();
        s.record_sync(&SyncRecord {
            token_id: "t1".into(),
            location_name: None,
            country: None,
            location_uid: None,
            apps: vec![app("a1", "t1", 1, 10)],
            now: NOW,
        })
        .await
        .unwrap();
        let ana = UserRecord {
            id: "ana".into(),
            email: "ana@example.com".into(),
            managed_apple_id: None,
            name: Some("Ana".into()),
            created_at: NOW,
            deleted_at: None,
        };
        assert!(s.insert_user(&ana).await.unwrap());
        assert!(
            !s.insert_user(&UserRecord {
                id: "other".into(),
                ..ana.clone()
            })
            .await
            .unwrap(),
            "{}: emails are unique",
            b.name
        );
        assert_eq!(s.user("ana").await.unwrap(), Some(ana.clone()));
        for (udid, fp) in [("U1", "f1"), ("U2", "f2")] {
            s.upsert_enrollment(&device(udid, fp)).await.unwrap();
            s.record_token_update(&udid.into(), "t", "m", &[], NOW)
                .await
                .unwrap();
            s.set_device_user(&udid.into(), Some("ana")).await.unwrap();
        }
        s.record_restrictions(&"U2".into(), false).await.unwrap();
        let devices = s.devices_of_user("ana").await.unwrap();
        assert_eq!(devices.len(), 2, "{}", b.name);
        assert_eq!(devices[1].app_store_allowed, Some(false));
        assert_eq!(devices[0].ownership.as_deref(), Some("Corporate"));
        s.insert_group(&GroupRecord {
            id: "g1".into(),
            name: "Sales".into(),
            kind: GroupKind::User,
            created_at: NOW,
        })
        .await
        .unwrap();
        assert_eq!(
            s.add_group_users("g1", &["ana".into()], NOW).await.unwrap(),
            1
        );
        assert_eq!(s.group_users("g1").await.unwrap(), vec!["ana".to_owned()]);
        s.insert_assignment(&AssignmentRecord {
            id: "as1".into(),
            app_id: "a1".into(),
            group_id: "g1".into(),
            intent: Intent::Required,
            license_type: LicenseType::User,
            install: true,
            any_token: false,
            created_at: LATER,
            updated_at: None,
        })
        .await
        .unwrap();
        let targets = s.assignment_candidates().await.unwrap();
        assert_eq!(targets.len(), 2, "{}", b.name);
        assert_eq!(targets[0].user_id.as_deref(), Some("ana"));
        assert_eq!(targets[0].group_kind, GroupKind::User);
        assert_eq!(
            targets[0].joined_at, LATER,
            "the later of join and assignment"
        );
        assert_eq!(targets[1].app_store_allowed, Some(false));
        assert_eq!(
            s.remove_group_users("g1", &["ana".into()]).await.unwrap(),
            1,
            "{}",
            b.name
        );
        assert!(s.assignment_candidates().await.unwrap().is_empty());
        s.add_group_users("g1", &["ana".into()], NOW).await.unwrap();

        let mut vu = VppUserRecord {
            token_id: "t1".into(),
            user_id: "ana".into(),
            client_user_id: "c-ana".into(),
            status: VppUserStatus::Registering,
            event_id: Some("e1".into()),
            invite_code: None,
            id_hash: None,
            invited_udid: None,
            invited_at: None,
            invitation_answer: None,
            answered_at: None,
            error: None,
            updated_at: NOW,
        };
        s.put_vpp_user(&vu).await.unwrap();
        vu.status = VppUserStatus::Associated;
        vu.id_hash = Some("hash".into());
        s.put_vpp_user(&vu).await.unwrap();
        assert_eq!(s.vpp_users().await.unwrap(), vec![vu.clone()], "{}", b.name);

        let mut l = UserLicenseRecord {
            app_id: "a1".into(),
            user_id: "ana".into(),
            state: LicenseState::Pending,
            event_id: None,
            error: None,
            updated_at: NOW,
        };
        s.put_user_licenses(std::slice::from_ref(&l)).await.unwrap();
        l.state = LicenseState::Associated;
        l.event_id = Some("e2".into());
        s.put_user_licenses(std::slice::from_ref(&l)).await.unwrap();
        assert_eq!(s.user_licenses().await.unwrap(), vec![l]);
        s.delete_user_licenses("a1", &["ana".into()]).await.unwrap();
        assert!(s.user_licenses().await.unwrap().is_empty(), "{}", b.name);

        let shown = PromptRecord {
            udid: "U1".into(),
            prompt_id: "p1".into(),
            kind: "AppleID".into(),
            bundle_id: Some("com.apple.Pages".into()),
            adam_id: Some("1".into()),
            shown_at: NOW,
            answer: None,
            answered_at: None,
        };
        s.record_prompts(std::slice::from_ref(&shown))
            .await
            .unwrap();
        let answered = PromptRecord {
            answer: Some("Accepted".into()),
            answered_at: Some(LATER),
            ..shown.clone()
        };
        s.record_prompts(std::slice::from_ref(&answered))
            .await
            .unwrap();
        // A late copy of the first report does not erase the answer.
        s.record_prompts(std::slice::from_ref(&shown))
            .await
            .unwrap();
        let prompts =
            |udid: Option<&str>, bundle: Option<&str>, answer: Option<Option<&str>>| PromptFilter {
                udid: udid.map(Udid::from),
                bundle_id: bundle.map(str::to_owned),
                kind: None,
                answer: answer.map(|a| a.map(str::to_owned)),
            };
        let all = Page::all();
        assert_eq!(
            s.prompts(&prompts(Some("U1"), None, None), &all)
                .await
                .unwrap(),
            vec![answered.clone()],
            "{}",
            b.name
        );
        assert_eq!(
            s.prompts(
                &prompts(None, Some("com.apple.Pages"), Some(Some("Accepted"))),
                &all
            )
            .await
            .unwrap(),
            vec![answered]
        );
        for empty in [
            prompts(Some("U2"), None, None),
            prompts(None, None, Some(None)),
            prompts(None, None, Some(Some("Declined"))),
            PromptFilter {
                kind: Some("AppInstall".into()),
                ..Default::default()
            },
        ] {
            assert!(
                s.prompts(&empty, &all).await.unwrap().is_empty(),
                "{}: {empty:?}",
                b.name
            );
        }

        // One device's view: its candidates and licenses, and its user's licenses.
        let mine = s.device_candidates(&"U1".into()).await.unwrap();
        assert!(
            !mine.is_empty() && mine.iter().all(|c| c.udid.as_str() == "U1"),
            "{}: {mine:?}",
            b.name
        );
        s.put_user_licenses(&[UserLicenseRecord {
            app_id: "a1".into(),
            user_id: "ana".into(),
            state: LicenseState::Associated,
            event_id: None,
            error: None,
            updated_at: NOW,
        }])
        .await
        .unwrap();
        let (device, user) = s.device_licenses(&"U1".into()).await.unwrap();
        assert!(device.is_empty(), "{}", b.name);
        assert_eq!(user.len(), 1, "{}: the user's license", b.name);
        // With a license of its own too, each comes back as what it is.
        s.reserve_licenses(&[LicenseRecord {
            app_id: "a1".into(),
            udid: "U1".into(),
            serial_number: "SN-U1".into(),
            state: LicenseState::Pending,
            event_id: None,
            error: None,
            updated_at: NOW,
        }])
        .await
        .unwrap();
        let (device, user) = s.device_licenses(&"U1".into()).await.unwrap();
        assert_eq!(
            device
                .iter()
                .map(|l| (
                    l.app_id.as_str(),
                    l.udid.as_str(),
                    l.serial_number.as_str(),
                    l.state
                ))
                .collect::<Vec<_>>(),
            [("a1", "U1", "SN-U1", LicenseState::Pending)],
            "{}",
            b.name
        );
        assert_eq!(
            user.iter()
                .map(|l| (l.app_id.as_str(), l.user_id.as_str(), l.state))
                .collect::<Vec<_>>(),
            [("a1", "ana", LicenseState::Associated)],
            "{}",
            b.name
        );
        // Read together (the hand-out check), the same candidates and licenses.
        let standing = s.device_standing(&"U1".into()).await.unwrap();
        assert_eq!(
            (
                standing.candidates,
                standing.licenses,
                standing.user_licenses
            ),
            (
                s.device_candidates(&"U1".into()).await.unwrap(),
                device,
                user
            ),
            "{}",
            b.name
        );
        s.delete_licenses("a1", &["U1".into()]).await.unwrap();

        // Deleting a user: out of its groups and off its devices at once, removed later.
        assert!(s.begin_user_deletion("ana", LATER).await.unwrap());
        assert!(
            !s.begin_user_deletion("ana", LATER).await.unwrap(),
            "{}: once",
            b.name
        );
        assert!(s.group_users("g1").await.unwrap().is_empty());
        assert!(s.devices_of_user("ana").await.unwrap().is_empty());
        let deleting = s.users_being_deleted().await.unwrap();
        assert_eq!(deleting.len(), 1);
        assert_eq!(deleting[0].deleted_at, Some(LATER), "{}", b.name);
        assert!(s.delete_user("ana").await.unwrap());
        assert_eq!(s.user("ana").await.unwrap(), None);
        assert!(
            s.user_licenses().await.unwrap().is_empty() && s.vpp_users().await.unwrap().is_empty(),
            "{}: registrations and licenses go with the user",
            b.name
        );
        // Deleting a group takes its assignments along.
        assert!(s.delete_group("g1").await.unwrap());
        assert!(!s.delete_group("g1").await.unwrap());
        assert!(s.assignment("as1").await.unwrap().is_none(), "{}", b.name);
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_clock_and_pass_to_another_replica() {
    use orchard_server::clock::{Clock, ManualClock};
    use std::time::Duration;
    const LEASE: Duration = Duration::from_secs(120);
    for b in backends().await {
        let s = b.store.as_ref();
        let clock = ManualClock::new(NOW);
        let take = |holder: &'static str, now: Timestamp| {
            s.try_lease("reconcile", holder, now, now + LEASE)
        };
        assert!(
            take("a", clock.now()).await.unwrap(),
            "{}: a free lease",
            b.name
        );
        clock.advance(Duration::from_secs(60));
        assert!(
            !take("b", clock.now()).await.unwrap(),
            "{}: held by a",
            b.name
        );
        assert!(
            take("a", clock.now()).await.unwrap(),
            "{}: a renews until +3 min",
            b.name
        );
        clock.advance(Duration::from_secs(119));
        assert!(
            !take("b", clock.now()).await.unwrap(),
            "{}: renewed, not yet expired",
            b.name
        );
        clock.advance(Duration::from_secs(2));
        assert!(
            take("b", clock.now()).await.unwrap(),
            "{}: a's lease expired",
            b.name
        );
        assert!(
            !take("a", clock.now()).await.unwrap(),
            "{}: now b's",
            b.name
        );
        s.release_lease("reconcile", "a").await.unwrap();
        assert!(
            !take("a", clock.now()).await.unwrap(),
            "{}: a cannot release b's lease",
            b.name
        );
        s.release_lease("reconcile", "b").await.unwrap();
        assert!(
            take("a", clock.now()).await.unwrap(),
            "{}: released, free at once",
            b.name
        );
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_sealed_and_read_open() {
    for b in backends().await {
        let s = b.store.as_ref();
        let open = s
            .secret_setting_or_insert("enrollment_secret", "enroll-me")
            .await
            .unwrap();
        assert_eq!(open, "enroll-me", "{}", b.name);
        let raw = s.setting("enrollment_secret").await.unwrap().unwrap();
        assert!(
            Seal::is_sealed(&raw) && !raw.contains("enroll-me"),
            "{}: {raw}",
            b.name
        );
        assert_eq!(
            s.secret_setting_or_insert("enrollment_secret", "other")
                .await
                .unwrap(),
            "enroll-me",
            "{}: first value wins",
            b.name
        );
        let mut t = token("t1", "sToken-plain");
        t.notification_secret = Some("notify-me".into());
        assert!(s.insert_token(&t).await.unwrap());
        let back = s.token("t1").await.unwrap().unwrap();
        assert_eq!(back.secret, "sToken-plain", "{}", b.name);
        assert_eq!(back.notification_secret.as_deref(), Some("notify-me"));
        assert_eq!(
            s.reseal_secrets().await.unwrap(),
            0,
            "{}: all sealed",
            b.name
        );
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_gives_up_all_its_leases_and_the_queue_says_what_falls_due_next() {
    for b in backends().await {
        let s = b.store.as_ref();
        for name in ["reconcile", "sync:t1", "sync-scheduler"] {
            assert!(s.try_lease(name, "a", NOW, LATER).await.unwrap());
        }
        assert!(s.try_lease("sync:t2", "b", NOW, LATER).await.unwrap());
        assert_eq!(s.release_leases_of("a").await.unwrap(), 3, "{}", b.name);
        assert!(
            s.try_lease("reconcile", "b", NOW, LATER).await.unwrap(),
            "free at once"
        );
        assert!(
            !s.try_lease("sync:t2", "a", NOW, LATER).await.unwrap(),
            "b's stays"
        );

        s.upsert_enrollment(&device("U1", "fp1")).await.unwrap();
        assert_eq!(s.next_deferred(&"U1".into(), NOW).await.unwrap(), None);
        let soon = ts("2026-11-25T12:00:03.000000Z");
        let later = ts("2026-11-25T12:00:09.000000Z");
        s.enqueue(&[
            command("due-now", "U1", NOW, NOW),
            command("later", "U1", later, NOW),
            command("soon", "U1", soon, NOW),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.next_deferred(&"U1".into(), NOW).await.unwrap(),
            Some(soon),
            "{}",
            b.name
        );
        assert_eq!(
            s.next_deferred(&"U1".into(), soon).await.unwrap(),
            Some(later)
        );
        assert_eq!(s.next_deferred(&"U1".into(), later).await.unwrap(), None);
        b.finish().await;
    }
}

/// Every filter of the admin lists, on both backends: each narrows to exactly the rows
/// it names, and pages follow the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_narrow_to_exactly_their_rows() {
    for b in backends().await {
        let s = b.store.as_ref();
        s.insert_token(&token("t1", "secret")).await.unwrap();
        s.insert_token(&token("t2", "secret2")).await.unwrap();
        for (t, a, adam) in [("t1", "a1", 1), ("t2", "a2", 2)] {
            s.record_sync(&SyncRecord {
                token_id: t.into(),
                location_name: None,
                country: None,
                location_uid: None,
                apps: vec![app(a, t, adam, 10)],
                now: NOW,
            })
            .await
            .unwrap();
        }
        // U1 iPhone 17.5 supervised corporate in the device group; U2 iPad 16.1 with
        // the user ana (in the user group); U3 Mac 14.2 never seen since enrollment.
        let fleet = [
            ("U1", "iPhone15,2", "17.5", Some(true), "Corporate"),
            ("U2", "iPad13,18", "16.1", Some(false), "Personal"),
            ("U3", "Mac14,2", "14.2", None, "Corporate"),
        ];
        for (udid, product, os, supervised, ownership) in fleet {
            let mut d = device(udid, &format!("f{udid}"));
            d.product_name = Some(product.into());
            d.os_version = Some("1.0".into());
            d.platform = Platform::of_product(Some(product));
            d.ownership = Some(ownership.into());
            d.last_seen_at = NOW;
            s.upsert_enrollment(&d).await.unwrap();
            // The check-in's facts update the platform and version key.
            let facts = AuthenticateFacts {
                os_version: Some(os.into()),
                ..Default::default()
            };
            s.record_device_information(&udid.into(), &facts, supervised, None)
                .await
                .unwrap();
        }
        s.record_authenticate(&"U1".into(), &AuthenticateFacts::default(), LATER)
            .await
            .unwrap();
        s.record_authenticate(&"U2".into(), &AuthenticateFacts::default(), LATER)
            .await
            .unwrap();
        s.insert_user(&UserRecord {
            id: "ana".into(),
            email: "ana@example.com".into(),
            managed_apple_id: None,
            name: None,
            created_at: NOW,
            deleted_at: None,
        })
        .await
        .unwrap();
        s.set_device_user(&"U2".into(), Some("ana")).await.unwrap();
        for (id, name, kind) in [
            ("gd", "Lab", GroupKind::Device),
            ("gu", "Sales", GroupKind::User),
        ] {
            s.insert_group(&GroupRecord {
                id: id.into(),
                name: name.into(),
                kind,
                created_at: NOW,
            })
            .await
            .unwrap();
        }
        s.add_group_devices("gd", &["U1".into()], NOW)
            .await
            .unwrap();
        s.add_group_users("gu", &["ana".into()], NOW).await.unwrap();

        let all = Page::all();
        let udids = |f: DeviceFilter| async move {
            s.devices(&f, &Page::all())
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.udid.0)
                .collect::<Vec<_>>()
        };
        let key = |v: &str| os_version_key(v);
        let cases: Vec<(DeviceFilter, Vec<&str>)> = vec![
            (DeviceFilter::default(), vec!["U1", "U2", "U3"]),
            (
                DeviceFilter {
                    platform: Some(Platform::Ios),
                    ..Default::default()
                },
                vec!["U1"],
            ),
            (
                DeviceFilter {
                    platform: Some(Platform::IpadOs),
                    ..Default::default()
                },
                vec!["U2"],
            ),
            (
                DeviceFilter {
                    platform: Some(Platform::MacOs),
                    ..Default::default()
                },
                vec!["U3"],
            ),
            (
                DeviceFilter {
                    os_at_least: key("16.1"),
                    ..Default::default()
                },
                vec!["U1", "U2"],
            ),
            (
                DeviceFilter {
                    os_below: key("16.1"),
                    ..Default::default()
                },
                vec!["U3"],
            ),
            // Version order, not text order: 17.5 is at least 9.
            (
                DeviceFilter {
                    os_at_least: key("9"),
                    os_below: key("17"),
                    ..Default::default()
                },
                vec!["U2", "U3"],
            ),
            (
                DeviceFilter {
                    supervised: Some(true),
                    ..Default::default()
                },
                vec!["U1"],
            ),
            (
                DeviceFilter {
                    supervised: Some(false),
                    ..Default::default()
                },
                vec!["U2", "U3"],
            ),
            (
                DeviceFilter {
                    ownership: Some("Corporate".into()),
                    ..Default::default()
                },
                vec!["U1", "U3"],
            ),
            (
                DeviceFilter {
                    status: Some(EnrollmentStatus::Authenticated),
                    ..Default::default()
                },
                vec!["U1", "U2"],
            ),
            (
                DeviceFilter {
                    status: Some(EnrollmentStatus::Enrolled),
                    ..Default::default()
                },
                vec!["U3"],
            ),
            (
                DeviceFilter {
                    seen_since: Some(LATER),
                    ..Default::default()
                },
                vec!["U1", "U2"],
            ),
            (
                DeviceFilter {
                    seen_before: Some(LATER),
                    ..Default::default()
                },
                vec!["U3"],
            ),
            (
                DeviceFilter {
                    group_id: Some("gd".into()),
                    ..Default::default()
                },
                vec!["U1"],
            ),
            (
                DeviceFilter {
                    group_id: Some("gu".into()),
                    ..Default::default()
                },
                vec!["U2"],
            ),
            (
                DeviceFilter {
                    user_id: Some("ana".into()),
                    ..Default::default()
                },
                vec!["U2"],
            ),
            (
                DeviceFilter {
                    platform: Some(Platform::Ios),
                    supervised: Some(false),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(udids(filter.clone()).await, want, "{}: {filter:?}", b.name);
        }

        let install = |app: &str, udid: &str, status| InstallRecord {
            app_id: app.into(),
            udid: udid.into(),
            status,
            device_status: None,
            version: None,
            reason: None,
            updated_at: NOW,
            since: None,
        };
        s.set_installs(&[
            install("a1", "U1", InstallStatus::Installed),
            install("a1", "U2", InstallStatus::Failed),
            install("a1", "U3", InstallStatus::Installed),
            install("a2", "U2", InstallStatus::Installed),
        ])
        .await
        .unwrap();
        let rows = |f: InstallFilter, page: Page| async move {
            s.installs(&f, &page)
                .await
                .unwrap()
                .into_iter()
                .map(|i| format!("{}/{}", i.app_id, i.udid.0))
                .collect::<Vec<_>>()
        };
        let cases: Vec<(InstallFilter, Vec<&str>)> = vec![
            (
                InstallFilter::default(),
                vec!["a1/U1", "a1/U2", "a1/U3", "a2/U2"],
            ),
            (
                InstallFilter {
                    app_id: Some("a2".into()),
                    ..Default::default()
                },
                vec!["a2/U2"],
            ),
            (
                InstallFilter {
                    udid: Some("U2".into()),
                    ..Default::default()
                },
                vec!["a1/U2", "a2/U2"],
            ),
            (
                InstallFilter {
                    user_id: Some("ana".into()),
                    ..Default::default()
                },
                vec!["a1/U2", "a2/U2"],
            ),
            (
                InstallFilter {
                    status: Some(InstallStatus::Failed),
                    ..Default::default()
                },
                vec!["a1/U2"],
            ),
            (
                InstallFilter {
                    platform: Some(Platform::MacOs),
                    ..Default::default()
                },
                vec!["a1/U3"],
            ),
            (
                InstallFilter {
                    group_id: Some("gd".into()),
                    ..Default::default()
                },
                vec!["a1/U1"],
            ),
            (
                InstallFilter {
                    group_id: Some("gu".into()),
                    ..Default::default()
                },
                vec!["a1/U2", "a2/U2"],
            ),
            (
                InstallFilter {
                    token_id: Some("t2".into()),
                    ..Default::default()
                },
                vec!["a2/U2"],
            ),
            (
                InstallFilter {
                    app_id: Some("a1".into()),
                    status: Some(InstallStatus::Installed),
                    ..Default::default()
                },
                vec!["a1/U1", "a1/U3"],
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(
                rows(filter.clone(), all.clone()).await,
                want,
                "{}: {filter:?}",
                b.name
            );
        }
        // Pages follow the two-part cursor across apps.
        let page = |cursor: Option<String>| Page { limit: 2, cursor };
        assert_eq!(
            rows(InstallFilter::default(), page(None)).await,
            ["a1/U1", "a1/U2"]
        );
        let after = Some(rows::two_key("a1", "U2"));
        assert_eq!(
            rows(InstallFilter::default(), page(after)).await,
            ["a1/U3", "a2/U2"]
        );
        let after = Some(rows::two_key("a2", "U2"));
        assert!(rows(InstallFilter::default(), page(after)).await.is_empty());

        // Audit: by actor name or token id, action, target and time.
        for (i, (actor, token, action, at)) in [
            ("ops", "tok-ops", "group.create", NOW),
            ("ops", "tok-ops", "group.delete", LATER),
            ("bootstrap-admin", "bootstrap", "group.create", LATER),
        ]
        .into_iter()
        .enumerate()
        {
            s.audit(&AuditEntry {
                id: 0,
                at,
                actor: actor.into(),
                actor_token: Some(token.into()),
                action: action.into(),
                target: format!("g{i}"),
                result: "ok".into(),
            })
            .await
            .unwrap();
        }
        let targets = |f: AuditFilter| async move {
            s.audit_log(&f, &Page::all())
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.target)
                .collect::<Vec<_>>()
        };
        let cases: Vec<(AuditFilter, Vec<&str>)> = vec![
            (AuditFilter::default(), vec!["g2", "g1", "g0"]),
            (
                AuditFilter {
                    actor: Some("ops".into()),
                    ..Default::default()
                },
                vec!["g1", "g0"],
            ),
            (
                AuditFilter {
                    actor: Some("bootstrap".into()),
                    ..Default::default()
                },
                vec!["g2"],
            ),
            (
                AuditFilter {
                    action: Some("group.create".into()),
                    ..Default::default()
                },
                vec!["g2", "g0"],
            ),
            (
                AuditFilter {
                    target: Some("g1".into()),
                    ..Default::default()
                },
                vec!["g1"],
            ),
            (
                AuditFilter {
                    since: Some(LATER),
                    ..Default::default()
                },
                vec!["g2", "g1"],
            ),
            (
                AuditFilter {
                    before: Some(LATER),
                    ..Default::default()
                },
                vec!["g0"],
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(
                targets(filter.clone()).await,
                want,
                "{}: {filter:?}",
                b.name
            );
        }
        b.finish().await;
    }
}

#[test]
fn os_version_keys_sort_in_version_order() {
    let mut versions = ["17.5", "9.3.5", "17", "10.15.7", "17.10", "14.2.1"];
    versions.sort_by_key(|v| os_version_key(v).unwrap());
    assert_eq!(
        versions,
        ["9.3.5", "10.15.7", "14.2.1", "17", "17.5", "17.10"]
    );
    for not_a_version in ["", "x", "17.x", "1.2.3.4.5", "-1", "100000"] {
        assert_eq!(os_version_key(not_a_version), None, "{not_a_version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_start_after_the_newest_event_and_keep_their_place_and_log() {
    for b in backends().await {
        let s = b.store.as_ref();
        // An event before the webhook exists (a device enrolls).
        s.upsert_enrollment(&device("U1", "f1")).await.unwrap();
        let before = s.events(&EventFilter::default(), 0, 10).await.unwrap();
        assert_eq!(before.len(), 1, "{}: {before:?}", b.name);
        assert_eq!(before[0].kind, "device.enrolled");
        let hook = s
            .insert_webhook(&WebhookRecord {
                id: "w1".into(),
                url: "https://example.com/hook".into(),
                secret: "s3cret".into(),
                kind: Some("device".into()),
                created_by: Some("bootstrap".into()),
                created_at: NOW,
                delivered_through: 0,
            })
            .await
            .unwrap();
        assert_eq!(hook.delivered_through, before[0].id, "{}", b.name);
        let stored = s.webhook("w1").await.unwrap().unwrap();
        assert_eq!(stored.secret, "s3cret", "{}: opened when read", b.name);
        let delivery = |attempt, delivered| DeliveryRecord {
            id: 0,
            webhook_id: "w1".into(),
            event_id: 42,
            attempt,
            at: NOW,
            status_code: Some(if delivered { 200 } else { 503 }),
            error: (!delivered).then(|| "the receiver answered 503".to_owned()),
            delivered,
        };
        s.record_delivery(Some(&delivery(1, false)), "w1", None)
            .await
            .unwrap();
        assert_eq!(
            s.webhook("w1").await.unwrap().unwrap().delivered_through,
            before[0].id
        );
        s.record_delivery(Some(&delivery(2, true)), "w1", Some(42))
            .await
            .unwrap();
        // A place never moves back.
        s.record_delivery(None, "w1", Some(7)).await.unwrap();
        assert_eq!(
            s.webhooks(&Page::all()).await.unwrap()[0].delivered_through,
            42
        );
        let log = s.deliveries("w1", &Page::all()).await.unwrap();
        assert_eq!(
            log.iter()
                .map(|d| (d.attempt, d.delivered))
                .collect::<Vec<_>>(),
            [(2, true), (1, false)],
            "{}: newest first",
            b.name
        );
        assert!(s.delete_webhook("w1").await.unwrap());
        assert!(!s.delete_webhook("w1").await.unwrap());
        assert!(s.deliveries("w1", &Page::all()).await.unwrap().is_empty());
        b.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_are_found_by_hash_end_on_request_and_expire_away() {
    for b in backends().await {
        let s = b.store.as_ref();
        let hour = std::time::Duration::from_secs(3600);
        let old = ConsoleSession {
            id_hash: "old".into(),
            admin_token_id: "bootstrap".into(),
            created_at: NOW,
            expires_at: NOW + hour,
        };
        s.insert_console_session(&old, NOW).await.unwrap();
        assert_eq!(
            s.console_session("old").await.unwrap(),
            Some(old.clone()),
            "{}",
            b.name
        );
        assert_eq!(
            s.console_session("other").await.unwrap(),
            None,
            "{}",
            b.name
        );
        // A sign-in after the old session ended forgets it.
        let later = NOW + hour * 2;
        let new = ConsoleSession {
            id_hash: "new".into(),
            created_at: later,
            expires_at: later + hour,
            ..old.clone()
        };
        s.insert_console_session(&new, later).await.unwrap();
        assert_eq!(
            s.console_session("old").await.unwrap(),
            None,
            "{}: ended sessions go",
            b.name
        );
        assert_eq!(
            s.console_session("new").await.unwrap(),
            Some(new),
            "{}",
            b.name
        );
        s.delete_console_session("new").await.unwrap();
        assert_eq!(
            s.console_session("new").await.unwrap(),
            None,
            "{}: signed out",
            b.name
        );
        assert_eq!(
            s.latest_event_id().await.unwrap(),
            0,
            "{}: no event yet",
            b.name
        );
    }
}
