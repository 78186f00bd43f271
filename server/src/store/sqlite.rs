//! The SQLite backend: a file database in WAL mode, one writer connection (SQLite allows
//! one writer at a time; a single connection avoids lock-upgrade failures) and a small
//! reader pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use orchard_protocol::{AdamId, CommandUuid, SerialNumber, Udid};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, Transaction};

use super::group_commit::{BatchFuture, GroupCommit};
use super::kept::Kept;
use super::lending::{Lease, Lender};
use super::rows;
use super::*;

/// Orchard's storage on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one writer connection.
    writer: Arc<Lender<SqliteConnection>>,
    reader: Arc<Lender<SqliteConnection>>,
    seal: Arc<Seal>,
    /// Device exchanges, written in batches by a thread of their own.
    exchanges: GroupCommit<Exchange, Option<QueuedCommand>, StoreError>,
    /// Apps by id (every write of apps goes through this store and empties it).
    apps: Arc<Kept<AppRecord>>,
    /// What each bound certificate's enrollment is, by fingerprint (emptied by every
    /// write of a device's certificate, UDID or status).
    standings: Arc<Kept<Standing>>,
}

/// Read connections (reads run beside the one writer in WAL mode).
const READERS: usize = 4;

/// Statements the writer keeps prepared.
const WRITER_STATEMENTS: usize = 400;

/// Most device exchanges written in one transaction.
const EXCHANGE_BATCH: usize = 256;

/// The database holds VPP tokens and device data: the file is created 0600 before
/// SQLite opens it (SQLite gives its `-wal` and `-shm` files the database's mode), and
/// files an older version left readable are tightened.
fn private_files(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Database(sqlx::Error::Io(e));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = std::path::PathBuf::from(name);
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Borrows one of `connections`; an error once the store is closed.
async fn lend(connections: &Lender<SqliteConnection>) -> StoreResult<Lease<'_, SqliteConnection>> {
    connections
        .get()
        .await
        .ok_or(StoreError::Database(sqlx::Error::PoolClosed))
}

impl SqliteStore {
    /// Borrows a read connection.
    async fn read(&self) -> StoreResult<Lease<'_, SqliteConnection>> {
        lend(&self.reader).await
    }

    /// Borrows the writer connection (the only one: writes take turns).
    async fn write(&self) -> StoreResult<Lease<'_, SqliteConnection>> {
        lend(&self.writer).await
    }

    /// Every assignment reaching every active device, or only `udid`, in service order.
    async fn candidates(&self, udid: Option<&Udid>) -> StoreResult<Vec<Candidate>> {
        let sql = rows::candidates_sql("MAX", "?1", udid.is_some());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(udid) = udid {
            query = query.bind(udid.as_str());
        }
        let rows = query.fetch_all(&mut *self.read().await?).await?;
        collect(rows, candidate_row)
    }

    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path, seal: Arc<Seal>) -> StoreResult<Self> {
        private_files(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A SQLite connection is a file handle in this process: nothing outside breaks it,
        // so the writer and the readers are lent without sqlx's pings (see `lending`).
        // The writer keeps more statements prepared than sqlx's default 100: an exchange
        // comes in a few shapes, each with and without the batch's BEGIN and COMMIT.
        let mut writer = SqliteConnection::connect_with(
            &options.clone().statement_cache_capacity(WRITER_STATEMENTS),
        )
        .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        let writer = Arc::new(Lender::new(vec![writer]));
        let read_only = options.read_only(true);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(SqliteConnection::connect_with(&read_only).await?);
        }
        let reader = Arc::new(Lender::new(readers));
        let exchanges = GroupCommit::start(
            "orchard-sqlite-writer",
            writer.clone(),
            EXCHANGE_BATCH,
            exchange_batch,
            || StoreError::Database(sqlx::Error::PoolClosed),
        )
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self {
            writer,
            reader,
            seal,
            exchanges,
            apps: Arc::default(),
            standings: Arc::default(),
        })
    }

    /// The writes of [`VppStore::record_sync`], in one transaction.
    async fn record_sync_in(&self, s: &SyncRecord) -> StoreResult<()> {
        let mut writer = self.write().await?;
        rows::record_sync!(writer, s)
    }

    /// Closes the writer and the readers, once each is given back.
    pub async fn close(&self) {
        let writer = self.writer.close().await;
        for connection in writer.into_iter().chain(self.reader.close().await) {
            if let Err(e) = connection.close().await {
                tracing::debug!(error = %e, "closing a connection failed");
            }
        }
    }

    /// Opens a webhook's sealed secret.
    fn open_webhook(&self, mut w: WebhookRecord) -> StoreResult<WebhookRecord> {
        w.secret = self.seal.open(&w.secret)?;
        Ok(w)
    }

    /// Opens a token's sealed secrets.
    fn unseal(&self, mut t: VppTokenRecord) -> StoreResult<VppTokenRecord> {
        t.secret = self.seal.open(&t.secret)?;
        t.notification_secret = t
            .notification_secret
            .map(|n| self.seal.open(&n))
            .transpose()?;
        Ok(t)
    }

    /// One row of `table` by its key column (names are constants of this file, never input).
    async fn one<T>(
        &self,
        table: &'static str,
        key: &'static str,
        value: &str,
        f: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let sql = format!("SELECT * FROM {table} WHERE {key} = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(f).transpose()
    }

    /// A page of `table` ordered by its key column.
    async fn page<T>(
        &self,
        table: &'static str,
        key: &'static str,
        page: &Page,
        f: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let sql = format!("SELECT * FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cursor(page))
            .bind(page.limit)
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, f)
    }

    /// Runs a list query.
    async fn list<T>(
        &self,
        sql: rows::ListSql,
        f: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.text));
        for arg in sql.args {
            query = match arg {
                rows::Arg::Text(t) => query.bind(t),
                rows::Arg::Time(t) => query.bind(t),
                rows::Arg::Int(n) => query.bind(n),
            };
        }
        collect(query.fetch_all(&mut *self.read().await?).await?, f)
    }
}

rows::row_mappers!(SqliteRow);

fn cursor(page: &Page) -> String {
    page.cursor.clone().unwrap_or_default()
}

/// Rows per multi-row statement (well under SQLite's 32,766 bound parameters).
const BATCH: usize = 500;

/// Devices in one last-seen statement (two parameters each, under SQLite's 32,766).
const TOUCH_BATCH: usize = 8192;

async fn insert_commands(
    tx: &mut Transaction<'_, Sqlite>,
    commands: &[NewCommand],
) -> StoreResult<()> {
    for chunk in commands.chunks(BATCH) {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_insert_commands(&mut q, chunk);
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends the statement that inserts `commands` (at most [`BATCH`]) as queued.
fn push_insert_commands(q: &mut QueryBuilder<Sqlite>, commands: &[NewCommand]) {
    q.push(rows::INSERT_COMMANDS);
    q.push_values(commands, |mut b, c| {
        b.push_bind(c.uuid.as_str())
            .push_bind(c.udid.as_str())
            .push_bind(&c.request_type)
            .push_bind(&c.app_id)
            .push_bind(&c.payload)
            .push_bind("queued")
            .push_bind(c.not_before)
            .push_bind(c.created_at)
            .push_bind(c.created_at);
    });
}

async fn upsert_installs(
    tx: &mut Transaction<'_, Sqlite>,
    installs: &[InstallRecord],
) -> StoreResult<()> {
    for chunk in installs.chunks(BATCH) {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_upsert_installs(&mut q, chunk);
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends the statement that writes `installs` (at most [`BATCH`]), keeping `since`
/// while the status stays.
fn push_upsert_installs(q: &mut QueryBuilder<Sqlite>, installs: &[InstallRecord]) {
    q.push(rows::INSERT_INSTALLS);
    q.push_values(installs, |mut b, i| {
        b.push_bind(&i.app_id)
            .push_bind(i.udid.as_str())
            .push_bind(i.status.as_str())
            .push_bind(&i.device_status)
            .push_bind(&i.version)
            .push_bind(&i.reason)
            .push_bind(i.updated_at)
            .push_bind(i.since.as_ref().unwrap_or(&i.updated_at));
    });
    q.push(rows::INSTALLS_ON_CONFLICT);
}

/// Writes device exchanges in one transaction (see [`GroupCommit`]): each applies the
/// device's result and takes the next command due, marking it sent. The transaction's
/// `BEGIN` goes with the first exchange's statements and its `COMMIT` with the last's,
/// so a batch of one exchange is one round trip to SQLite's thread, not three.
fn exchange_batch<'a>(
    writer: &'a Arc<Lender<SqliteConnection>>,
    exchanges: &'a [Exchange],
) -> BatchFuture<'a, Option<QueuedCommand>, StoreError> {
    Box::pin(async move {
        let mut connection = lend(writer).await?;
        let last = exchanges.len().saturating_sub(1);
        let mut handed_out = Vec::with_capacity(exchanges.len());
        for (i, x) in exchanges.iter().enumerate() {
            match exchange_in(&mut connection, x, i == 0, i == last).await {
                Ok(next) => handed_out.push(next),
                Err(e) => {
                    // A list stops at its failed statement, inside the transaction:
                    // nothing of the batch is kept. (An error that ended the
                    // transaction already makes this ROLLBACK fail, harmlessly.)
                    let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                    return Err(e);
                }
            }
        }
        Ok(handed_out)
    })
}

/// One device exchange, sent to SQLite's thread as one list of statements (each
/// statement sent on its own is a round trip to that thread and back), opening the
/// batch's transaction when `begin` and committing it when `commit`. sqlx's SQLite
/// driver prepares and runs every statement of a query string, binding `?` parameters
/// in order across them; the other drivers do not, and sqlx calls the behaviour
/// deprecated, so the store conformance tests (every exchange path, and a batch that
/// fails) are what an upgrade of sqlx must pass.
async fn exchange_in(
    connection: &mut SqliteConnection,
    x: &Exchange,
    begin: bool,
    commit: bool,
) -> StoreResult<Option<QueuedCommand>> {
    let mut q = QueryBuilder::<Sqlite>::new(if begin { "BEGIN;\n" } else { "" });
    if x.new_session {
        // Once per session, not per request: put-off commands return.
        q.push("UPDATE commands SET status = 'queued' WHERE udid = ")
            .push_bind(x.udid.as_str())
            .push(" AND status = 'not_now';\n");
    }
    if let Some(o) = &x.outcome {
        q.push("UPDATE commands SET status = ")
            .push_bind(o.status.as_str())
            .push(", result = ")
            .push_bind(&o.result)
            .push(", updated_at = ")
            .push_bind(o.now)
            .push(" WHERE uuid = ")
            .push_bind(o.uuid.as_str())
            .push(" AND udid = ")
            .push_bind(o.udid.as_str())
            .push(";\n");
        for chunk in o.installs.chunks(BATCH) {
            push_upsert_installs(&mut q, chunk);
            q.push(";\n");
        }
        for chunk in o.follow_ups.chunks(BATCH) {
            push_insert_commands(&mut q, chunk);
            q.push(";\n");
        }
    }
    // Take the oldest open command that is due, marking it sent, in one statement: the
    // list's only statement that returns a row.
    q.push("UPDATE commands SET status = 'sent', updated_at = ")
        .push_bind(x.now)
        .push(" WHERE uuid = (SELECT uuid FROM commands WHERE udid = ")
        .push_bind(x.udid.as_str())
        .push(" AND status IN ('queued', 'sent') AND not_before <= ")
        .push_bind(x.now)
        .push(" ORDER BY created_at, uuid LIMIT 1) RETURNING *");
    if commit {
        q.push(";\nCOMMIT");
    }
    let rows = q.build().fetch_all(&mut *connection).await?;
    rows.first().map(command_row).transpose()
}

/// Sets a license state (and error, event) for many devices of one app.
async fn set_license_state(
    tx: &mut Transaction<'_, Sqlite>,
    app_id: &str,
    udids: &[Udid],
    state: Option<LicenseState>,
    event_id: Option<&str>,
    error: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    for chunk in udids.chunks(BATCH) {
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE licenses SET updated_at = ");
        q.push_bind(now).push(", error = ").push_bind(error);
        if let Some(state) = state {
            q.push(", state = ").push_bind(state.as_str());
        }
        // The event belongs to the state: a new state without one clears it.
        q.push(", event_id = ").push_bind(event_id);
        q.push(" WHERE app_id = ")
            .push_bind(app_id)
            .push(" AND udid IN (");
        let mut list = q.separated(", ");
        for udid in chunk {
            list.push_bind(udid.as_str());
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut *self.read().await?)
                .await?,
        )
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        // Both on one borrowing of the writer: no other write comes between.
        let mut writer = self.write().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *writer)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_one(&mut *writer)
                .await?,
        )
    }

    async fn secret_setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let stored = self.setting_or_insert(key, &self.seal.seal(value)).await?;
        if !Seal::is_sealed(&stored) {
            sqlx::query("UPDATE settings SET value = ? WHERE key = ? AND value = ?")
                .bind(self.seal.seal(&stored))
                .bind(key)
                .bind(&stored)
                .execute(&mut *self.write().await?)
                .await?;
        }
        Ok(self.seal.open(&stored)?)
    }

    async fn secret_setting(&self, key: &str) -> StoreResult<Option<String>> {
        match self.setting(key).await? {
            Some(stored) => Ok(Some(self.seal.open(&stored)?)),
            None => Ok(None),
        }
    }

    async fn put_secret_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(self.seal.seal(value))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn insert_admin_token(&self, t: &AdminTokenRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, role, expires_at, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.token_hash)
        .bind(t.role.as_str())
        .bind(t.expires_at)
        .bind(&t.created_by)
        .bind(t.created_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn admin_token_by_hash(&self, hash: &str) -> StoreResult<Option<AdminTokenRecord>> {
        self.one("admin_tokens", "token_hash", hash, admin_token_row)
            .await
    }

    async fn admin_token(&self, id: &str) -> StoreResult<Option<AdminTokenRecord>> {
        self.one("admin_tokens", "id", id, admin_token_row).await
    }

    async fn admin_tokens(&self, page: &Page) -> StoreResult<Vec<AdminTokenRecord>> {
        self.page("admin_tokens", "name", page, admin_token_row)
            .await
    }

    async fn rotate_admin_token(&self, id: &str, hash: &str, now: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE admin_tokens SET token_hash = ?, rotated_at = ? WHERE id = ?")
                .bind(hash)
                .bind(now)
                .bind(id)
                .execute(&mut *self.write().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_admin_token(&self, id: &str, now: Timestamp) -> StoreResult<AdminTokenRemoval> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        // The admin rows are read (and, on PostgreSQL, locked) first, so two removals
        // at once cannot each leave the other as the last admin.
        let admins = sqlx::query("SELECT * FROM admin_tokens WHERE role = 'admin'")
            .fetch_all(&mut *tx)
            .await?;
        let admins = collect(admins, admin_token_row)?;
        let Some(token) = sqlx::query("SELECT * FROM admin_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(AdminTokenRemoval::NotFound);
        };
        let decision = AdminTokenRemoval::decide(&admin_token_row(&token)?, &admins, now);
        if decision != AdminTokenRemoval::Deleted {
            return Ok(decision);
        }
        sqlx::query("DELETE FROM admin_tokens WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AdminTokenRemoval::Deleted)
    }

    async fn insert_console_session(
        &self,
        session: &ConsoleSession,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, admin_token_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&session.id_hash)
        .bind(&session.admin_token_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_session(&self, id_hash: &str) -> StoreResult<Option<ConsoleSession>> {
        self.one("console_sessions", "id_hash", id_hash, console_session_row)
            .await
    }

    async fn latest_event_id(&self) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&mut *self.read().await?)
            .await?;
        Ok(id)
    }

    async fn delete_console_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn audit(&self, e: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, actor_token, action, target, result) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.actor_token)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.result)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        self.list(rows::event_list_sql(filter, after, limit, false), event_row)
            .await
    }

    async fn insert_webhook(&self, w: &WebhookRecord) -> StoreResult<WebhookRecord> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO webhooks (id, url, secret, kind, created_by, created_at, delivered_through) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&w.id)
        .bind(&w.url)
        .bind(self.seal.seal(&w.secret))
        .bind(&w.kind)
        .bind(&w.created_by)
        .bind(w.created_at)
        .bind(newest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(WebhookRecord {
            delivered_through: newest,
            ..w.clone()
        })
    }

    async fn webhooks(&self, page: &Page) -> StoreResult<Vec<WebhookRecord>> {
        self.page("webhooks", "id", page, webhook_row)
            .await?
            .into_iter()
            .map(|w| self.open_webhook(w))
            .collect()
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>> {
        self.one("webhooks", "id", id, webhook_row)
            .await?
            .map(|w| self.open_webhook(w))
            .transpose()
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_delivery(
        &self,
        delivery: Option<&DeliveryRecord>,
        webhook_id: &str,
        through: Option<i64>,
    ) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        if let Some(d) = delivery {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, at, status_code, error, delivered) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&d.webhook_id)
            .bind(d.event_id)
            .bind(d.attempt)
            .bind(d.at)
            .bind(d.status_code)
            .bind(&d.error)
            .bind(i64::from(d.delivered))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(through) = through {
            sqlx::query(
                "UPDATE webhooks SET delivered_through = ? WHERE id = ? AND delivered_through < ?",
            )
            .bind(through)
            .bind(webhook_id)
            .bind(through)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn deliveries(&self, webhook_id: &str, page: &Page) -> StoreResult<Vec<DeliveryRecord>> {
        let before: i64 = page
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(webhook_id)
        .bind(before)
        .bind(page.limit)
        .fetch_all(&mut *self.read().await?)
        .await?;
        collect(rows, delivery_row)
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM events WHERE at < ?")
            .bind(before)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected())
    }

    async fn audit_log(&self, filter: &AuditFilter, page: &Page) -> StoreResult<Vec<AuditEntry>> {
        let before: i64 = page
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(i64::MAX);
        self.list(
            rows::audit_list_sql(filter, before, page.limit, false),
            audit_row,
        )
        .await
    }
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn upsert_enrollment(&self, d: &DeviceRecord) -> StoreResult<()> {
        self.standings
            .writing(async {
                sqlx::query(
                    "INSERT INTO devices (udid, serial_number, product_name, os_version, cert_fingerprint, status,
                                          enrolled_at, last_seen_at, ownership, single_app_mode, platform, os_version_key)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (udid) DO UPDATE SET serial_number = excluded.serial_number,
                        platform = excluded.platform, os_version_key = excluded.os_version_key,
                        product_name = excluded.product_name, os_version = excluded.os_version,
                        cert_fingerprint = excluded.cert_fingerprint, status = excluded.status,
                        enrolled_at = excluded.enrolled_at, last_seen_at = excluded.last_seen_at,
                        ownership = excluded.ownership, single_app_mode = excluded.single_app_mode",
                )
                .bind(d.udid.as_str())
                .bind(d.serial_number.as_str())
                .bind(&d.product_name)
                .bind(&d.os_version)
                .bind(&d.cert_fingerprint)
                .bind(d.status.as_str())
                .bind(d.enrolled_at)
                .bind(d.last_seen_at)
                .bind(&d.ownership)
                .bind(d.single_app_mode.map(i64::from))
                .bind(d.platform.as_str())
                .bind(d.os_version.as_deref().and_then(os_version_key))
                .execute(&mut *self.write().await?)
                .await?;
                Ok(())
            })
            .await
    }

    async fn device(&self, udid: &Udid) -> StoreResult<Option<DeviceRecord>> {
        self.one("devices", "udid", udid.as_str(), device_row).await
    }

    async fn device_by_fingerprint(&self, fingerprint: &str) -> StoreResult<Option<DeviceRecord>> {
        self.one("devices", "cert_fingerprint", fingerprint, device_row)
            .await
    }

    async fn standing(&self, fingerprint: &str) -> StoreResult<Option<Standing>> {
        let read = async {
            let device = self.device_by_fingerprint(fingerprint).await?;
            Ok(device.map(|d| Standing::of(&d)))
        };
        self.standings.get_or_read(fingerprint, read).await
    }

    async fn record_authenticate(
        &self,
        udid: &Udid,
        f: &AuthenticateFacts,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.standings
            .writing(async {
                sqlx::query(
                    "UPDATE devices SET status = CASE WHEN status = 'active' THEN status ELSE 'authenticated' END,
                        serial_number = COALESCE(?, serial_number), product_name = COALESCE(?, product_name),
                        os_version = COALESCE(?, os_version), last_seen_at = ?, platform = COALESCE(?, platform),
                        os_version_key = CASE WHEN ? IS NULL THEN os_version_key ELSE ? END WHERE udid = ?",
                )
                .bind(f.serial_number.as_ref().map(SerialNumber::as_str))
                .bind(&f.product_name)
                .bind(&f.os_version)
                .bind(now)
                .bind(f.platform())
                .bind(&f.os_version)
                .bind(f.os_version_key())
                .bind(udid.as_str())
                .execute(&mut *self.write().await?)
                .await?;
                Ok(())
            })
            .await
    }

    async fn record_token_update(
        &self,
        udid: &Udid,
        topic: &str,
        push_magic: &str,
        token: &[u8],
        now: Timestamp,
    ) -> StoreResult<()> {
        self.standings
            .writing(async {
                sqlx::query(
                    "UPDATE devices SET status = 'active', topic = ?, push_magic = ?, push_token = ?, last_seen_at = ?
                     WHERE udid = ?",
                )
                .bind(topic)
                .bind(push_magic)
                .bind(token)
                .bind(now)
                .bind(udid.as_str())
                .execute(&mut *self.write().await?)
                .await?;
                Ok(())
            })
            .await
    }

    async fn record_check_out(&self, udid: &Udid, now: Timestamp) -> StoreResult<()> {
        self.standings
            .writing(async {
                sqlx::query("UPDATE devices SET status = 'checked_out', push_magic = NULL, last_seen_at = ? WHERE udid = ?")
                    .bind(now)
                    .bind(udid.as_str())
                    .execute(&mut *self.write().await?)
                    .await?;
                Ok(())
            })
            .await
    }

    async fn record_device_information(
        &self,
        udid: &Udid,
        f: &AuthenticateFacts,
        supervised: Option<bool>,
        account_hash: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET serial_number = COALESCE(?, serial_number), product_name = COALESCE(?, product_name),
                os_version = COALESCE(?, os_version), is_supervised = COALESCE(?, is_supervised),
                itunes_account_hash = ?, platform = COALESCE(?, platform),
                os_version_key = CASE WHEN ? IS NULL THEN os_version_key ELSE ? END WHERE udid = ?",
        )
        .bind(f.serial_number.as_ref().map(SerialNumber::as_str))
        .bind(&f.product_name)
        .bind(&f.os_version)
        .bind(supervised.map(i64::from))
        .bind(account_hash)
        .bind(f.platform())
        .bind(&f.os_version)
        .bind(f.os_version_key())
        .bind(udid.as_str())
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn devices(&self, filter: &DeviceFilter, page: &Page) -> StoreResult<Vec<DeviceRecord>> {
        self.list(rows::device_list_sql(filter, page, false), device_row)
            .await
    }

    async fn fill_device_keys(&self) -> StoreResult<u64> {
        let rows = sqlx::query(
            "SELECT udid, product_name, os_version FROM devices WHERE platform IS NULL",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for row in &rows {
            let udid: String = row.try_get("udid")?;
            let product: Option<String> = row.try_get("product_name")?;
            let os: Option<String> = row.try_get("os_version")?;
            sqlx::query("UPDATE devices SET platform = ?, os_version_key = ? WHERE udid = ?")
                .bind(Platform::of_product(product.as_deref()).as_str())
                .bind(os.as_deref().and_then(os_version_key))
                .bind(udid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn delete_device(&self, udid: &Udid) -> StoreResult<bool> {
        self.standings
            .writing(async {
                let mut writer = self.write().await?;
                let mut tx = writer.begin().await?;
                for table in [
                    "group_devices",
                    "commands",
                    "installs",
                    "prompts",
                    "app_requests",
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE udid = ?"
                    )))
                    .bind(udid.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                let done = sqlx::query("DELETE FROM devices WHERE udid = ?")
                    .bind(udid.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            })
            .await
    }
}

#[async_trait]
impl EnrollmentStore for SqliteStore {
    async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, name, token_hash, uses_left, expires_at, serial_number, udid, revoked, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.token_hash)
        .bind(t.uses_left)
        .bind(t.expires_at)
        .bind(t.serial_number.as_ref().map(SerialNumber::as_str))
        .bind(t.udid.as_ref().map(Udid::as_str))
        .bind(i64::from(t.revoked))
        .bind(t.created_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn enrollment_tokens(&self, page: &Page) -> StoreResult<Vec<EnrollmentTokenRecord>> {
        self.page("enrollment_tokens", "id", page, enrollment_token_row)
            .await
    }

    async fn revoke_enrollment_token(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked = 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn consume_enrollment_token(
        &self,
        token_hash: &str,
        serial_number: &SerialNumber,
        udid: &Udid,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1
             WHERE token_hash = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?
               AND (serial_number IS NULL OR serial_number = ?)
               AND (udid IS NULL OR udid = ?)",
        )
        .bind(token_hash)
        .bind(now)
        .bind(serial_number.as_str())
        .bind(udid.as_str())
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn enrollment_token_admits(
        &self,
        token_hash: &str,
        serial_number: &SerialNumber,
        udid: &Udid,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT id FROM enrollment_tokens
             WHERE token_hash = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?
               AND (serial_number IS NULL OR serial_number = ?)
               AND (udid IS NULL OR udid = ?)",
        )
        .bind(token_hash)
        .bind(now)
        .bind(serial_number.as_str())
        .bind(udid.as_str())
        .fetch_optional(&mut *self.read().await?)
        .await?;
        Ok(found.is_some())
    }

    async fn release_device(&self, udid: &Udid) -> StoreResult<bool> {
        self.standings
            .writing(async {
                let done = sqlx::query("UPDATE devices SET status = 'released' WHERE udid = ?")
                    .bind(udid.as_str())
                    .execute(&mut *self.write().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
            .await
    }
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn enqueue(&self, commands: &[NewCommand]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        insert_commands(&mut tx, commands).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn exchange(&self, x: &Exchange) -> StoreResult<Option<QueuedCommand>> {
        self.exchanges.submit(x.clone()).await
    }

    async fn has_due_commands(&self, udid: &Udid, now: Timestamp) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM commands WHERE udid = ?1
             AND (status = 'not_now' OR (status IN ('queued', 'sent') AND not_before <= ?2))
             LIMIT 1",
        )
        .bind(udid.as_str())
        .bind(now)
        .fetch_optional(&mut *self.read().await?)
        .await?;
        Ok(found.is_some())
    }

    async fn touch_devices(&self, seen: &[(Udid, Timestamp)]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for chunk in seen.chunks(TOUCH_BATCH) {
            // One statement for the chunk (each device once in it). Never back in time: a
            // check-in written since (Authenticate, TokenUpdate) may have gone further.
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE devices SET last_seen_at = seen.column2 FROM (",
            );
            q.push_values(chunk, |mut b, (udid, at)| {
                b.push_bind(udid.as_str()).push_bind(*at);
            });
            q.push(
                ") AS seen WHERE devices.udid = seen.column1 AND devices.last_seen_at < seen.column2",
            );
            // Its text changes with the chunk's length: not kept prepared.
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn command(&self, udid: &Udid, uuid: &CommandUuid) -> StoreResult<Option<QueuedCommand>> {
        let row = sqlx::query("SELECT * FROM commands WHERE uuid = ? AND udid = ?")
            .bind(uuid.as_str())
            .bind(udid.as_str())
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.as_ref().map(command_row).transpose()
    }

    async fn commands_of(&self, udid: &Udid) -> StoreResult<Vec<QueuedCommand>> {
        let rows = sqlx::query("SELECT * FROM commands WHERE udid = ? ORDER BY created_at, uuid")
            .bind(udid.as_str())
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, command_row)
    }

    async fn next_deferred(&self, udid: &Udid, now: Timestamp) -> StoreResult<Option<Timestamp>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(not_before) FROM commands
             WHERE udid = ? AND status IN ('queued', 'not_now') AND not_before > ?",
        )
        .bind(udid.as_str())
        .bind(now)
        .fetch_one(&mut *self.read().await?)
        .await?)
    }
}

#[async_trait]
impl VppStore for SqliteStore {
    async fn reseal_secrets(&self) -> StoreResult<u64> {
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, secret, notification_secret FROM vpp_tokens")
                .fetch_all(&mut *self.write().await?)
                .await?;
        let mut sealed = 0;
        for (id, secret, notification) in rows {
            if let Some((new_secret, new_notification)) =
                self.seal.reseal(&secret, notification.as_deref())?
            {
                sqlx::query(
                    "UPDATE vpp_tokens SET secret = ?, notification_secret = ? WHERE id = ? AND secret = ?",
                )
                .bind(new_secret)
                .bind(new_notification)
                .bind(&id)
                .bind(&secret)
                .execute(&mut *self.write().await?)
                .await?;
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    async fn insert_token(&self, t: &VppTokenRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO vpp_tokens (id, name, org_name, secret, secret_hash, expires_at, created_at,
                                     priority, apple_id, account_type, automatic_updates, store_country,
                                     notification_secret)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.org_name)
        .bind(self.seal.seal(&t.secret))
        .bind(&t.secret_hash)
        .bind(t.expires_at)
        .bind(t.created_at)
        .bind(t.priority)
        .bind(&t.apple_id)
        .bind(&t.account_type)
        .bind(i64::from(t.automatic_updates))
        .bind(&t.store_country)
        .bind(t.notification_secret.as_deref().map(|n| self.seal.seal(n)))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_token(&self, t: &VppTokenRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE vpp_tokens SET name = ?, secret = ?, secret_hash = ?, expires_at = ?,
                priority = ?, apple_id = ?, account_type = ?, automatic_updates = ?,
                store_country = ?, external_mdm = ?, disabled_reason = ?, notification_secret = ?,
                notifications = ?
             WHERE id = ?",
        )
        .bind(&t.name)
        .bind(self.seal.seal(&t.secret))
        .bind(&t.secret_hash)
        .bind(t.expires_at)
        .bind(t.priority)
        .bind(&t.apple_id)
        .bind(&t.account_type)
        .bind(i64::from(t.automatic_updates))
        .bind(&t.store_country)
        .bind(&t.external_mdm)
        .bind(&t.disabled_reason)
        .bind(t.notification_secret.as_deref().map(|n| self.seal.seal(n)))
        .bind(&t.notifications)
        .bind(&t.id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_notification(
        &self,
        id: &str,
        token_id: &str,
        notification_type: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let done = sqlx::query(
            "INSERT INTO apple_notifications (id, token_id, notification_type, received_at)
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(token_id)
        .bind(notification_type)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE vpp_tokens SET last_notification_at = ? WHERE id = ?")
            .bind(now)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        // The token's apps go with it.
        let done = self
            .apps
            .writing(
                sqlx::query("DELETE FROM vpp_tokens WHERE id = ?")
                    .bind(id)
                    .execute(&mut *self.write().await?),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token(&self, id: &str) -> StoreResult<Option<VppTokenRecord>> {
        match self.one("vpp_tokens", "id", id, token_row).await? {
            Some(t) => Ok(Some(self.unseal(t)?)),
            None => Ok(None),
        }
    }

    async fn tokens(&self, page: &Page) -> StoreResult<Vec<VppTokenRecord>> {
        self.page("vpp_tokens", "id", page, token_row)
            .await?
            .into_iter()
            .map(|t| self.unseal(t))
            .collect()
    }

    async fn token_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM vpp_tokens")
            .fetch_one(&mut *self.read().await?)
            .await?)
    }

    async fn record_sync(&self, s: &SyncRecord) -> StoreResult<()> {
        self.apps.writing(self.record_sync_in(s)).await
    }

    async fn record_sync_error(
        &self,
        token_id: &str,
        error: &str,
        _now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE vpp_tokens SET last_sync_error = ? WHERE id = ?")
            .bind(error)
            .bind(token_id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn update_app_counts(
        &self,
        app_id: &str,
        c: &LicenseCounts,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let update = sqlx::query(
            "UPDATE apps SET total_count = ?, assigned_count = ?, available_count = ?, retired_count = ?,
                updated_at = ? WHERE id = ?",
        )
        .bind(c.total)
        .bind(c.assigned)
        .bind(c.available)
        .bind(c.retired)
        .bind(now)
        .bind(app_id)
        .execute(&mut *writer);
        self.apps.writing(update).await?;
        Ok(())
    }

    async fn set_app_install_timeout(
        &self,
        app_id: &str,
        seconds: Option<i64>,
    ) -> StoreResult<bool> {
        let mut writer = self.write().await?;
        let update = sqlx::query("UPDATE apps SET install_timeout_seconds = ? WHERE id = ?")
            .bind(seconds)
            .bind(app_id)
            .execute(&mut *writer);
        Ok(self.apps.writing(update).await?.rows_affected() == 1)
    }

    async fn app(&self, id: &str) -> StoreResult<Option<AppRecord>> {
        let read = self.one("apps", "id", id, app_row);
        self.apps.get_or_read(id, read).await
    }

    async fn apps(&self, page: &Page) -> StoreResult<Vec<AppRecord>> {
        self.page("apps", "id", page, app_row).await
    }
}

#[async_trait]
impl DirectoryStore for SqliteStore {
    async fn insert_group(&self, g: &GroupRecord) -> StoreResult<bool> {
        let done = sqlx::query("INSERT INTO groups (id, name, kind, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(&g.id)
            .bind(&g.name)
            .bind(g.kind.as_str())
            .bind(g.created_at)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_group(&self, id: &str) -> StoreResult<bool> {
        // Memberships and assignments go with the group (foreign keys cascade).
        let done = sqlx::query("DELETE FROM groups WHERE id = ?")
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn group(&self, id: &str) -> StoreResult<Option<GroupRecord>> {
        self.one("groups", "id", id, group_row).await
    }

    async fn groups(&self, page: &Page) -> StoreResult<Vec<GroupRecord>> {
        self.page("groups", "id", page, group_row).await
    }

    async fn add_group_devices(
        &self,
        group_id: &str,
        udids: &[Udid],
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let mut added = 0;
        for udid in udids {
            added += sqlx::query("INSERT INTO group_devices (group_id, udid, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(group_id)
                .bind(udid.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn group_sizes(&self) -> StoreResult<std::collections::HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT group_id, COUNT(*) FROM group_devices GROUP BY group_id
             UNION ALL SELECT group_id, COUNT(*) FROM group_users GROUP BY group_id",
        )
        .fetch_all(&mut *self.read().await?)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn group_devices(&self, group_id: &str) -> StoreResult<Vec<Udid>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT udid FROM group_devices WHERE group_id = ? ORDER BY joined_at, udid",
        )
        .bind(group_id)
        .fetch_all(&mut *self.read().await?)
        .await?;
        Ok(rows.into_iter().map(Udid).collect())
    }

    async fn group_device_page(&self, group_id: &str, page: &Page) -> StoreResult<Vec<Udid>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT udid FROM group_devices WHERE group_id = ? AND udid > ? ORDER BY udid LIMIT ?",
        )
        .bind(group_id)
        .bind(cursor(page))
        .bind(page.limit)
        .fetch_all(&mut *self.read().await?)
        .await?;
        Ok(rows.into_iter().map(Udid).collect())
    }

    async fn remove_group_devices(&self, group_id: &str, udids: &[Udid]) -> StoreResult<u64> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let mut removed = 0;
        for udid in udids {
            removed += sqlx::query("DELETE FROM group_devices WHERE group_id = ? AND udid = ?")
                .bind(group_id)
                .bind(udid.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }
}

#[async_trait]
impl AssignmentStore for SqliteStore {
    async fn insert_assignment(&self, a: &AssignmentRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO assignments (id, app_id, group_id, intent, license_type, created_at, install,
                                      updated_at, any_token)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.app_id)
        .bind(&a.group_id)
        .bind(a.intent.as_str())
        .bind(a.license_type.as_str())
        .bind(a.created_at)
        .bind(i64::from(a.install))
        .bind(a.updated_at)
        .bind(i64::from(a.any_token))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn assignments(&self, page: &Page) -> StoreResult<Vec<AssignmentRecord>> {
        self.page("assignments", "id", page, assignment_row).await
    }

    async fn assignment(&self, id: &str) -> StoreResult<Option<AssignmentRecord>> {
        self.one("assignments", "id", id, assignment_row).await
    }

    async fn update_assignment(&self, a: &AssignmentRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE assignments SET intent = ?, license_type = ?, install = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(a.intent.as_str())
        .bind(a.license_type.as_str())
        .bind(i64::from(a.install))
        .bind(a.updated_at)
        .bind(&a.id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_assignment(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM assignments WHERE id = ?")
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn assignment_candidates(&self) -> StoreResult<Vec<Candidate>> {
        self.candidates(None).await
    }

    async fn device_candidates(&self, udid: &Udid) -> StoreResult<Vec<Candidate>> {
        self.candidates(Some(udid)).await
    }

    async fn device_standing(&self, udid: &Udid) -> StoreResult<DeviceStanding> {
        // Both reads as one list of statements: one round trip to a reader's thread.
        static BOTH: LazyLock<String> = LazyLock::new(|| {
            format!(
                "{};\n{}",
                rows::candidates_sql("MAX", "?1", true),
                rows::device_and_user_licenses("?1")
            )
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(BOTH.as_str()))
            .bind(udid.as_str())
            .fetch_all(&mut *self.read().await?)
            .await?;
        // License rows say whose they are; candidate rows have no such column.
        let (licenses, candidates): (Vec<SqliteRow>, Vec<SqliteRow>) = rows
            .into_iter()
            .partition(|row| row.try_column("owner_kind").is_ok());
        let (licenses, user_licenses) = split_licenses(&licenses)?;
        Ok(DeviceStanding {
            candidates: collect(candidates, candidate_row)?,
            licenses,
            user_licenses,
        })
    }

    async fn device_licenses(
        &self,
        udid: &Udid,
    ) -> StoreResult<(Vec<LicenseRecord>, Vec<UserLicenseRecord>)> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(rows::device_and_user_licenses("?1")))
            .bind(udid.as_str())
            .fetch_all(&mut *self.read().await?)
            .await?;
        split_licenses(&rows)
    }

    async fn record_app_request(
        &self,
        app_id: &str,
        udid: &Udid,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO app_requests (app_id, udid, requested_at) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(app_id)
        .bind(udid.as_str())
        .bind(now)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn app_requests(&self) -> StoreResult<Vec<(String, Udid)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT app_id, udid FROM app_requests ORDER BY requested_at, udid")
                .fetch_all(&mut *self.read().await?)
                .await?;
        Ok(rows.into_iter().map(|(a, u)| (a, Udid(u))).collect())
    }

    async fn delete_licenses(&self, app_id: &str, udids: &[Udid]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for udid in udids {
            sqlx::query("DELETE FROM licenses WHERE app_id = ? AND udid = ?")
                .bind(app_id)
                .bind(udid.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn licenses(&self) -> StoreResult<Vec<LicenseRecord>> {
        let rows = sqlx::query("SELECT * FROM licenses ORDER BY app_id, udid")
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, license_row)
    }

    async fn reserve_licenses(&self, rows: &[LicenseRecord]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for chunk in rows.chunks(BATCH) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO licenses (app_id, udid, serial_number, state, event_id, error, updated_at) ",
            );
            q.push_values(chunk, |mut b, l| {
                b.push_bind(&l.app_id)
                    .push_bind(l.udid.as_str())
                    .push_bind(l.serial_number.as_str())
                    .push_bind(l.state.as_str())
                    .push_bind(&l.event_id)
                    .push_bind(&l.error)
                    .push_bind(l.updated_at);
            });
            q.push(
                " ON CONFLICT (app_id, udid) DO UPDATE SET state = excluded.state, event_id = excluded.event_id,
                    error = excluded.error, updated_at = excluded.updated_at",
            );
            q.build().execute(&mut *tx).await?;
        }
        let installs: Vec<InstallRecord> = rows
            .iter()
            .map(|l| InstallRecord {
                app_id: l.app_id.clone(),
                udid: l.udid.clone(),
                status: if l.state == LicenseState::Failed {
                    InstallStatus::LicenseFailed
                } else {
                    InstallStatus::Pending
                },
                device_status: None,
                version: None,
                reason: l.error.clone(),
                updated_at: l.updated_at,
                since: None,
            })
            .collect();
        upsert_installs(&mut tx, &installs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_license_states(
        &self,
        app_id: &str,
        udids: &[Udid],
        state: LicenseState,
        event_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        set_license_state(&mut tx, app_id, udids, Some(state), event_id, None, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_associating(
        &self,
        app_id: &str,
        udids: &[Udid],
        event_id: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        set_license_state(
            &mut tx,
            app_id,
            udids,
            Some(LicenseState::Associating),
            Some(event_id),
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_license_error(
        &self,
        app_id: &str,
        udids: &[Udid],
        error: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        set_license_state(&mut tx, app_id, udids, None, None, Some(error), now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_association(&self, o: &AssociationOutcome) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        set_license_state(
            &mut tx,
            &o.app_id,
            &o.associated,
            Some(LicenseState::Associated),
            None,
            None,
            o.now,
        )
        .await?;
        let mut by_reason: BTreeMap<&str, Vec<Udid>> = BTreeMap::new();
        for (udid, error) in &o.failed {
            by_reason
                .entry(error.as_str())
                .or_default()
                .push(udid.clone());
        }
        for (error, udids) in by_reason {
            set_license_state(
                &mut tx,
                &o.app_id,
                &udids,
                Some(LicenseState::Failed),
                None,
                Some(error),
                o.now,
            )
            .await?;
        }
        upsert_installs(&mut tx, &o.install_rows).await?;
        insert_commands(&mut tx, &o.installs).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn installs_of_app(&self, app_id: &str) -> StoreResult<Vec<InstallRecord>> {
        let rows = sqlx::query("SELECT * FROM installs WHERE app_id = ? ORDER BY udid")
            .bind(app_id)
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, install_row)
    }

    async fn install_counts(&self, app_id: &str) -> StoreResult<Vec<InstallCount>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(rows::install_counts_sql("?")))
            .bind(app_id)
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, install_count_row)
    }

    async fn installs_of_device(&self, udid: &Udid) -> StoreResult<Vec<InstallRecord>> {
        let rows = sqlx::query("SELECT * FROM installs WHERE udid = ? ORDER BY app_id")
            .bind(udid.as_str())
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, install_row)
    }

    async fn installs(
        &self,
        filter: &InstallFilter,
        page: &Page,
    ) -> StoreResult<Vec<InstallRecord>> {
        self.list(rows::install_list_sql(filter, page, false), install_row)
            .await
    }

    async fn set_installs(&self, installs: &[InstallRecord]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        upsert_installs(&mut tx, installs).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, u: &UserRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO users (id, email, managed_apple_id, name, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.managed_apple_id)
        .bind(&u.name)
        .bind(u.created_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        self.one("users", "id", id, user_row).await
    }

    async fn users(&self, page: &Page) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users WHERE id > ? ORDER BY id LIMIT ?")
            .bind(page.cursor.as_deref().unwrap_or(""))
            .bind(page.limit)
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, user_row)
    }

    async fn begin_user_deletion(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let marked =
            sqlx::query("UPDATE users SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if marked == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM group_users WHERE user_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE devices SET user_id = NULL WHERE user_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn users_being_deleted(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users WHERE deleted_at IS NOT NULL ORDER BY id")
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, user_row)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        // Registrations and licenses go with the user (foreign keys cascade).
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_device_user(&self, udid: &Udid, user_id: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET user_id = ? WHERE udid = ?")
            .bind(user_id)
            .bind(udid.as_str())
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn devices_of_user(&self, user_id: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows =
            sqlx::query("SELECT * FROM devices WHERE user_id = ? ORDER BY enrolled_at, udid")
                .bind(user_id)
                .fetch_all(&mut *self.read().await?)
                .await?;
        collect(rows, device_row)
    }

    async fn add_group_users(
        &self,
        group_id: &str,
        user_ids: &[String],
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let mut added = 0;
        for user_id in user_ids {
            added += sqlx::query(
                "INSERT INTO group_users (group_id, user_id, joined_at) VALUES (?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )
            .bind(group_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn group_users(&self, group_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM group_users WHERE group_id = ? ORDER BY joined_at, user_id",
        )
        .bind(group_id)
        .fetch_all(&mut *self.read().await?)
        .await?)
    }

    async fn group_user_page(&self, group_id: &str, page: &Page) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM group_users WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
        )
        .bind(group_id)
        .bind(cursor(page))
        .bind(page.limit)
        .fetch_all(&mut *self.read().await?)
        .await?)
    }

    async fn vpp_users(&self) -> StoreResult<Vec<VppUserRecord>> {
        let rows = sqlx::query("SELECT * FROM vpp_users ORDER BY token_id, user_id")
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, vpp_user_row)
    }

    async fn put_vpp_user(&self, u: &VppUserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO vpp_users (token_id, user_id, client_user_id, status, event_id, invite_code,
                                    id_hash, invited_udid, invited_at, invitation_answer, answered_at,
                                    error, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (token_id, user_id) DO UPDATE SET client_user_id = excluded.client_user_id,
                status = excluded.status, event_id = excluded.event_id,
                invite_code = excluded.invite_code, id_hash = excluded.id_hash,
                invited_udid = excluded.invited_udid, invited_at = excluded.invited_at,
                invitation_answer = excluded.invitation_answer, answered_at = excluded.answered_at,
                error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(&u.token_id)
        .bind(&u.user_id)
        .bind(&u.client_user_id)
        .bind(u.status.as_str())
        .bind(&u.event_id)
        .bind(&u.invite_code)
        .bind(&u.id_hash)
        .bind(&u.invited_udid)
        .bind(u.invited_at)
        .bind(&u.invitation_answer)
        .bind(u.answered_at)
        .bind(&u.error)
        .bind(u.updated_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn user_licenses(&self) -> StoreResult<Vec<UserLicenseRecord>> {
        let rows = sqlx::query("SELECT * FROM user_licenses ORDER BY app_id, user_id")
            .fetch_all(&mut *self.read().await?)
            .await?;
        collect(rows, user_license_row)
    }

    async fn put_user_licenses(&self, rows: &[UserLicenseRecord]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for l in rows {
            sqlx::query(
                "INSERT INTO user_licenses (app_id, user_id, state, event_id, error, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (app_id, user_id) DO UPDATE SET state = excluded.state,
                    event_id = excluded.event_id, error = excluded.error,
                    updated_at = excluded.updated_at",
            )
            .bind(&l.app_id)
            .bind(&l.user_id)
            .bind(l.state.as_str())
            .bind(&l.event_id)
            .bind(&l.error)
            .bind(l.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_user_licenses(&self, app_id: &str, user_ids: &[String]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for user_id in user_ids {
            sqlx::query("DELETE FROM user_licenses WHERE app_id = ? AND user_id = ?")
                .bind(app_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn remove_group_users(&self, group_id: &str, user_ids: &[String]) -> StoreResult<u64> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        let mut removed = 0;
        for user_id in user_ids {
            removed += sqlx::query("DELETE FROM group_users WHERE group_id = ? AND user_id = ?")
                .bind(group_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn record_prompts(&self, prompts: &[PromptRecord]) -> StoreResult<()> {
        let mut writer = self.write().await?;
        let mut tx = writer.begin().await?;
        for p in prompts {
            sqlx::query(
                "INSERT INTO prompts (udid, prompt_id, kind, bundle_id, adam_id, shown_at, answer,
                                      answered_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (udid, prompt_id) DO UPDATE SET
                    answer = COALESCE(excluded.answer, prompts.answer),
                    answered_at = COALESCE(excluded.answered_at, prompts.answered_at)",
            )
            .bind(p.udid.as_str())
            .bind(&p.prompt_id)
            .bind(&p.kind)
            .bind(&p.bundle_id)
            .bind(&p.adam_id)
            .bind(p.shown_at)
            .bind(&p.answer)
            .bind(p.answered_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prompts(&self, filter: &PromptFilter, page: &Page) -> StoreResult<Vec<PromptRecord>> {
        self.list(rows::prompt_list_sql(filter, page, false), prompt_row)
            .await
    }

    async fn record_restrictions(&self, udid: &Udid, app_store_allowed: bool) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET app_store_allowed = ? WHERE udid = ?")
            .bind(i64::from(app_store_allowed))
            .bind(udid.as_str())
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.expires_at < ? OR leases.holder = excluded.holder
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .fetch_optional(&mut *self.write().await?)
        .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn release_leases_of(&self, holder: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM leases WHERE holder = ?")
            .bind(holder)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(done.rows_affected())
    }
}
