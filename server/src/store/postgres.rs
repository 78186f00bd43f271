//! The PostgreSQL backend, for several replicas sharing one database: a connection
//! pool, its own SQL and migrations. Commands are taken with `FOR UPDATE SKIP LOCKED`
//! so replicas never hand one command out twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orchard_protocol::{AdamId, CommandUuid, SerialNumber, Udid};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::group_commit::{BatchFuture, GroupCommit};
use super::kept_postgres::{self, Caches};
use super::rows;
use super::*;

/// Orchard's storage on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    seal: Arc<Seal>,
    /// Device exchanges, written in batches by a thread of their own.
    exchanges: GroupCommit<Exchange, Option<QueuedCommand>, StoreError>,
    /// Apps by id and certificate standings, kept while this replica hears of every
    /// change (see `kept_postgres`).
    kept: Caches,
    /// Stops hearing of changes when the last clone of the store goes.
    _listening: Arc<tokio_util::sync::DropGuard>,
}

/// Most device exchanges written in one transaction.
const EXCHANGE_BATCH: usize = 256;

impl PostgresStore {
    /// Every assignment reaching every active device, or only `udid`, in service order.
    async fn candidates(&self, udid: Option<&Udid>) -> StoreResult<Vec<Candidate>> {
        let sql = rows::candidates_sql("GREATEST", "$1", udid.is_some());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(udid) = udid {
            query = query.bind(udid.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        collect(rows, candidate_row)
    }

    /// Connects to `url` and applies migrations.
    pub async fn open(url: &str, seal: Arc<Seal>) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let exchanges = GroupCommit::start(
            "orchard-pg-writer",
            pool.clone(),
            EXCHANGE_BATCH,
            exchange_batch,
            || StoreError::Database(sqlx::Error::PoolClosed),
        )
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        let kept = Caches::paused();
        let listening = Arc::new(kept_postgres::listen(&pool, kept.clone()));
        Ok(Self {
            pool,
            seal,
            exchanges,
            kept,
            _listening: listening,
        })
    }

    /// Whether this replica hears of every change of the apps and certificate standings
    /// it keeps in memory, and so keeps them: false until it listens, and again while
    /// its listening connection is lost.
    pub fn hears_of_changes(&self) -> bool {
        self.kept.running()
    }

    /// The writes of [`DeviceStore::delete_device`], in one transaction.
    async fn delete_device_in(&self, udid: &Udid) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        for table in [
            "group_devices",
            "commands",
            "installs",
            "prompts",
            "app_requests",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE udid = $1"
            )))
            .bind(udid.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM devices WHERE udid = $1")
            .bind(udid.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The writes of [`VppStore::record_sync`], in one transaction.
    async fn record_sync_in(&self, s: &SyncRecord) -> StoreResult<()> {
        rows::record_sync!(self.pool, s)
    }

    /// The connection pool (the wake-up bus listens on it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
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
        f: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let sql = format!("SELECT * FROM {table} WHERE {key} = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(f).transpose()
    }

    /// A page of `table` ordered by its key column.
    async fn page<T>(
        &self,
        table: &'static str,
        key: &'static str,
        page: &Page,
        f: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let sql = format!("SELECT * FROM {table} WHERE {key} > $1 ORDER BY {key} LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cursor(page))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        collect(rows, f)
    }

    /// Runs a list query.
    async fn list<T>(
        &self,
        sql: rows::ListSql,
        f: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.text));
        for arg in sql.args {
            query = match arg {
                rows::Arg::Text(t) => query.bind(t),
                rows::Arg::Time(t) => query.bind(t),
                rows::Arg::Int(n) => query.bind(n),
            };
        }
        collect(query.fetch_all(&self.pool).await?, f)
    }
}

rows::row_mappers!(PgRow);

fn cursor(page: &Page) -> String {
    page.cursor.clone().unwrap_or_default()
}

/// Rows per multi-row statement (well under SQLite's 32,766 bound parameters).
const BATCH: usize = 500;

async fn insert_commands(
    tx: &mut Transaction<'_, Postgres>,
    commands: &[NewCommand],
) -> StoreResult<()> {
    for chunk in commands.chunks(BATCH) {
        let mut q = QueryBuilder::<Postgres>::new(rows::INSERT_COMMANDS);
        q.push_values(chunk, |mut b, c| {
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
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Writes device exchanges in one transaction (see [`GroupCommit`]): each applies the
/// device's result and takes the next command due, marking it sent. Another replica's
/// batch may hold a device's rows: a deadlock fails the batch, whose exchanges are then
/// written one at a time.
fn exchange_batch<'a>(
    pool: &'a PgPool,
    exchanges: &'a [Exchange],
) -> BatchFuture<'a, Option<QueuedCommand>, StoreError> {
    Box::pin(async move {
        let mut tx = pool.begin().await?;
        let mut devices = HashSet::with_capacity(exchanges.len());
        let handed_out = if exchanges.iter().all(|x| devices.insert(x.udid.as_str())) {
            exchange_all(&mut tx, exchanges).await?
        } else {
            // A device twice in one batch: its exchanges are written in order, one by one.
            let mut handed_out = Vec::with_capacity(exchanges.len());
            for x in exchanges {
                handed_out.push(exchange_in(&mut tx, x).await?);
            }
            handed_out
        };
        tx.commit().await?;
        Ok(handed_out)
    })
}

/// A batch of exchanges of different devices in five statements whatever the number of
/// devices (more only past [`BATCH`] installs or follow-ups): each exchange on its own
/// is up to five round trips to PostgreSQL. Every statement
/// touches each device's own rows, so taking them statement by statement across the
/// batch keeps each device's order (put-off commands back, result, installs,
/// follow-ups, next).
async fn exchange_all(
    tx: &mut Transaction<'_, Postgres>,
    exchanges: &[Exchange],
) -> StoreResult<Vec<Option<QueuedCommand>>> {
    let udids: Vec<&str> = exchanges
        .iter()
        .filter(|x| x.new_session)
        .map(|x| x.udid.as_str())
        .collect();
    if !udids.is_empty() {
        sqlx::query(
            "UPDATE commands SET status = 'queued' WHERE udid = ANY($1) AND status = 'not_now'",
        )
        .bind(&udids)
        .execute(&mut **tx)
        .await?;
    }
    let outcomes: Vec<&CommandOutcome> = exchanges
        .iter()
        .filter_map(|x| x.outcome.as_ref())
        .collect();
    if !outcomes.is_empty() {
        sqlx::query(
            "UPDATE commands c SET status = o.status, result = o.result, updated_at = o.now
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[])
                  AS o(uuid, udid, status, result, now)
             WHERE c.uuid = o.uuid AND c.udid = o.udid",
        )
        .bind(outcomes.iter().map(|o| o.uuid.as_str()).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.udid.as_str()).collect::<Vec<_>>())
        .bind(
            outcomes
                .iter()
                .map(|o| o.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            outcomes
                .iter()
                .map(|o| o.result.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(outcomes.iter().map(|o| o.now).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        let installs: Vec<InstallRecord> = outcomes
            .iter()
            .flat_map(|o| o.installs.iter().cloned())
            .collect();
        upsert_installs(tx, &installs).await?;
        let follow_ups: Vec<NewCommand> = outcomes
            .iter()
            .flat_map(|o| o.follow_ups.iter().cloned())
            .collect();
        insert_commands(tx, &follow_ups).await?;
    }
    // Each device's oldest open command that is due, marked sent.
    let rows = sqlx::query(
        "UPDATE commands c SET status = 'sent', updated_at = s.now
         FROM unnest($1::text[], $2::timestamptz[]) AS s(udid, now)
         CROSS JOIN LATERAL (
             SELECT uuid FROM commands WHERE udid = s.udid AND status IN ('queued', 'sent')
             AND not_before <= s.now ORDER BY created_at, uuid LIMIT 1 FOR UPDATE SKIP LOCKED
         ) AS n
         WHERE c.uuid = n.uuid
         RETURNING c.*",
    )
    .bind(
        exchanges
            .iter()
            .map(|x| x.udid.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(exchanges.iter().map(|x| x.now).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let mut next: HashMap<Udid, QueuedCommand> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let command = command_row(row)?;
        next.insert(command.udid.clone(), command);
    }
    Ok(exchanges.iter().map(|x| next.remove(&x.udid)).collect())
}

/// One device exchange inside a transaction.
async fn exchange_in(
    tx: &mut Transaction<'_, Postgres>,
    x: &Exchange,
) -> StoreResult<Option<QueuedCommand>> {
    if x.new_session {
        // Once per session, not per request: put-off commands return.
        sqlx::query("UPDATE commands SET status = 'queued' WHERE udid = $1 AND status = 'not_now'")
            .bind(x.udid.as_str())
            .execute(&mut **tx)
            .await?;
    }
    if let Some(o) = &x.outcome {
        sqlx::query("UPDATE commands SET status = $1, result = $2, updated_at = $3 WHERE uuid = $4 AND udid = $5")
            .bind(o.status.as_str())
            .bind(&o.result)
            .bind(o.now)
            .bind(o.uuid.as_str())
            .bind(o.udid.as_str())
            .execute(&mut **tx)
            .await?;
        upsert_installs(tx, &o.installs).await?;
        insert_commands(tx, &o.follow_ups).await?;
    }
    // Take the oldest open command that is due, marking it sent, in one statement.
    let row = sqlx::query(
        "UPDATE commands SET status = 'sent', updated_at = $1
         WHERE uuid = (SELECT uuid FROM commands WHERE udid = $2 AND status IN ('queued', 'sent')
                       AND not_before <= $1 ORDER BY created_at, uuid LIMIT 1
                       FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .bind(x.now)
    .bind(x.udid.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let next = row.as_ref().map(command_row).transpose()?;
    Ok(next)
}

async fn upsert_installs(
    tx: &mut Transaction<'_, Postgres>,
    installs: &[InstallRecord],
) -> StoreResult<()> {
    for chunk in installs.chunks(BATCH) {
        let mut q = QueryBuilder::<Postgres>::new(rows::INSERT_INSTALLS);
        q.push_values(chunk, |mut b, i| {
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
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Sets a license state (and error, event) for many devices of one app.
async fn set_license_state(
    tx: &mut Transaction<'_, Postgres>,
    app_id: &str,
    udids: &[Udid],
    state: Option<LicenseState>,
    event_id: Option<&str>,
    error: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    for chunk in udids.chunks(BATCH) {
        let mut q = QueryBuilder::<Postgres>::new("UPDATE licenses SET updated_at = ");
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
impl AdminStore for PostgresStore {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn secret_setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let stored = self.setting_or_insert(key, &self.seal.seal(value)).await?;
        if !Seal::is_sealed(&stored) {
            sqlx::query("UPDATE settings SET value = $1 WHERE key = $2 AND value = $3")
                .bind(self.seal.seal(&stored))
                .bind(key)
                .bind(&stored)
                .execute(&self.pool)
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
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(self.seal.seal(value))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_admin_token(&self, t: &AdminTokenRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, role, expires_at, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.token_hash)
        .bind(t.role.as_str())
        .bind(t.expires_at)
        .bind(&t.created_by)
        .bind(t.created_at)
        .execute(&self.pool)
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
            sqlx::query("UPDATE admin_tokens SET token_hash = $1, rotated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_admin_token(&self, id: &str, now: Timestamp) -> StoreResult<AdminTokenRemoval> {
        let mut tx = self.pool.begin().await?;
        // The admin rows are read (and, on PostgreSQL, locked) first, so two removals
        // at once cannot each leave the other as the last admin.
        let admins = sqlx::query("SELECT * FROM admin_tokens WHERE role = 'admin' FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
        let admins = collect(admins, admin_token_row)?;
        let Some(token) = sqlx::query("SELECT * FROM admin_tokens WHERE id = $1")
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
        sqlx::query("DELETE FROM admin_tokens WHERE id = $1")
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, admin_token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
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
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    async fn delete_console_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit(&self, e: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, actor_token, action, target, result) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.actor_token)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        self.list(rows::event_list_sql(filter, after, limit, true), event_row)
            .await
    }

    async fn insert_webhook(&self, w: &WebhookRecord) -> StoreResult<WebhookRecord> {
        let mut tx = self.pool.begin().await?;
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO webhooks (id, url, secret, kind, created_by, created_at, delivered_through) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
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
        let mut tx = self.pool.begin().await?;
        if let Some(d) = delivery {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, attempt, at, status_code, error, delivered) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            sqlx::query("UPDATE webhooks SET delivered_through = $1 WHERE id = $2 AND delivered_through < $1")
                .bind(through)
                .bind(webhook_id)
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
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(webhook_id)
        .bind(before)
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        collect(rows, delivery_row)
    }

    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM events WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
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
            rows::audit_list_sql(filter, before, page.limit, true),
            audit_row,
        )
        .await
    }
}

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn upsert_enrollment(&self, d: &DeviceRecord) -> StoreResult<()> {
        let upsert = sqlx::query(
            "INSERT INTO devices (udid, serial_number, product_name, os_version, cert_fingerprint, status,
                                  enrolled_at, last_seen_at, ownership, single_app_mode, platform, os_version_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
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
        .execute(&self.pool);
        self.kept.standings.writing(upsert).await?;
        Ok(())
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
        self.kept.standings.get_or_read(fingerprint, read).await
    }

    async fn record_authenticate(
        &self,
        udid: &Udid,
        f: &AuthenticateFacts,
        now: Timestamp,
    ) -> StoreResult<()> {
        let write = sqlx::query(
            "UPDATE devices SET status = CASE WHEN status = 'active' THEN status ELSE 'authenticated' END,
                serial_number = COALESCE($1, serial_number), product_name = COALESCE($2, product_name),
                os_version = COALESCE($3, os_version), last_seen_at = $4, platform = COALESCE($6, platform),
                os_version_key = CASE WHEN $3::text IS NULL THEN os_version_key ELSE $7 END WHERE udid = $5",
        )
        .bind(f.serial_number.as_ref().map(SerialNumber::as_str))
        .bind(&f.product_name)
        .bind(&f.os_version)
        .bind(now)
        .bind(udid.as_str())
        .bind(f.platform())
        .bind(f.os_version_key())
        .execute(&self.pool);
        self.kept.standings.writing(write).await?;
        Ok(())
    }

    async fn record_token_update(
        &self,
        udid: &Udid,
        topic: &str,
        push_magic: &str,
        token: &[u8],
        now: Timestamp,
    ) -> StoreResult<()> {
        let write = sqlx::query(
            "UPDATE devices SET status = 'active', topic = $1, push_magic = $2, push_token = $3, last_seen_at = $4
             WHERE udid = $5",
        )
        .bind(topic)
        .bind(push_magic)
        .bind(token)
        .bind(now)
        .bind(udid.as_str())
        .execute(&self.pool);
        self.kept.standings.writing(write).await?;
        Ok(())
    }

    async fn record_check_out(&self, udid: &Udid, now: Timestamp) -> StoreResult<()> {
        let write = sqlx::query("UPDATE devices SET status = 'checked_out', push_magic = NULL, last_seen_at = $1 WHERE udid = $2")
            .bind(now)
            .bind(udid.as_str())
            .execute(&self.pool);
        self.kept.standings.writing(write).await?;
        Ok(())
    }

    async fn record_device_information(
        &self,
        udid: &Udid,
        f: &AuthenticateFacts,
        supervised: Option<bool>,
        account_hash: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE devices SET serial_number = COALESCE($1, serial_number), product_name = COALESCE($2, product_name),
                os_version = COALESCE($3, os_version), is_supervised = COALESCE($4, is_supervised),
                itunes_account_hash = $5, platform = COALESCE($7, platform),
                os_version_key = CASE WHEN $3::text IS NULL THEN os_version_key ELSE $8 END WHERE udid = $6",
        )
        .bind(f.serial_number.as_ref().map(SerialNumber::as_str))
        .bind(&f.product_name)
        .bind(&f.os_version)
        .bind(supervised.map(i64::from))
        .bind(account_hash)
        .bind(udid.as_str())
        .bind(f.platform())
        .bind(f.os_version_key())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn devices(&self, filter: &DeviceFilter, page: &Page) -> StoreResult<Vec<DeviceRecord>> {
        self.list(rows::device_list_sql(filter, page, true), device_row)
            .await
    }

    async fn fill_device_keys(&self) -> StoreResult<u64> {
        let rows = sqlx::query(
            "SELECT udid, product_name, os_version FROM devices WHERE platform IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        for row in &rows {
            let udid: String = row.try_get("udid")?;
            let product: Option<String> = row.try_get("product_name")?;
            let os: Option<String> = row.try_get("os_version")?;
            sqlx::query("UPDATE devices SET platform = $1, os_version_key = $2 WHERE udid = $3")
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
        self.kept
            .standings
            .writing(self.delete_device_in(udid))
            .await
    }
}

#[async_trait]
impl EnrollmentStore for PostgresStore {
    async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, name, token_hash, uses_left, expires_at, serial_number, udid, revoked, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enrollment_tokens(&self, page: &Page) -> StoreResult<Vec<EnrollmentTokenRecord>> {
        self.page("enrollment_tokens", "id", page, enrollment_token_row)
            .await
    }

    async fn revoke_enrollment_token(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
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
             WHERE token_hash = $1 AND uses_left > 0 AND revoked = 0 AND expires_at > $2
               AND (serial_number IS NULL OR serial_number = $3)
               AND (udid IS NULL OR udid = $4)",
        )
        .bind(token_hash)
        .bind(now)
        .bind(serial_number.as_str())
        .bind(udid.as_str())
        .execute(&self.pool)
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
             WHERE token_hash = $1 AND uses_left > 0 AND revoked = 0 AND expires_at > $2
               AND (serial_number IS NULL OR serial_number = $3)
               AND (udid IS NULL OR udid = $4)",
        )
        .bind(token_hash)
        .bind(now)
        .bind(serial_number.as_str())
        .bind(udid.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn release_device(&self, udid: &Udid) -> StoreResult<bool> {
        let write = sqlx::query("UPDATE devices SET status = 'released' WHERE udid = $1")
            .bind(udid.as_str())
            .execute(&self.pool);
        let done = self.kept.standings.writing(write).await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl CommandStore for PostgresStore {
    async fn enqueue(&self, commands: &[NewCommand]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_commands(&mut tx, commands).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn exchange(&self, x: &Exchange) -> StoreResult<Option<QueuedCommand>> {
        self.exchanges.submit(x.clone()).await
    }

    async fn has_due_commands(&self, udid: &Udid, now: Timestamp) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM commands WHERE udid = $1
             AND (status = 'not_now' OR (status IN ('queued', 'sent') AND not_before <= $2))
             LIMIT 1",
        )
        .bind(udid.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn touch_devices(&self, seen: &[(Udid, Timestamp)]) -> StoreResult<()> {
        // One statement for the batch (each device once in it). Never back in time: a
        // check-in written since (Authenticate, TokenUpdate) may have gone further.
        let udids: Vec<&str> = seen.iter().map(|(u, _)| u.as_str()).collect();
        let times: Vec<Timestamp> = seen.iter().map(|(_, at)| *at).collect();
        sqlx::query(
            "UPDATE devices d SET last_seen_at = s.at
             FROM unnest($1::text[], $2::timestamptz[]) AS s(udid, at)
             WHERE d.udid = s.udid AND d.last_seen_at < s.at",
        )
        .bind(&udids)
        .bind(&times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn command(&self, udid: &Udid, uuid: &CommandUuid) -> StoreResult<Option<QueuedCommand>> {
        let row = sqlx::query("SELECT * FROM commands WHERE uuid = $1 AND udid = $2")
            .bind(uuid.as_str())
            .bind(udid.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(command_row).transpose()
    }

    async fn commands_of(&self, udid: &Udid) -> StoreResult<Vec<QueuedCommand>> {
        let rows = sqlx::query("SELECT * FROM commands WHERE udid = $1 ORDER BY created_at, uuid")
            .bind(udid.as_str())
            .fetch_all(&self.pool)
            .await?;
        collect(rows, command_row)
    }

    async fn next_deferred(&self, udid: &Udid, now: Timestamp) -> StoreResult<Option<Timestamp>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(not_before) FROM commands
             WHERE udid = $1 AND status IN ('queued', 'not_now') AND not_before > $2",
        )
        .bind(udid.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }
}

#[async_trait]
impl VppStore for PostgresStore {
    async fn reseal_secrets(&self) -> StoreResult<u64> {
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, secret, notification_secret FROM vpp_tokens")
                .fetch_all(&self.pool)
                .await?;
        let mut sealed = 0;
        for (id, secret, notification) in rows {
            if let Some((new_secret, new_notification)) =
                self.seal.reseal(&secret, notification.as_deref())?
            {
                sqlx::query(
                    "UPDATE vpp_tokens SET secret = $1, notification_secret = $2 WHERE id = $3 AND secret = $4",
                )
                .bind(new_secret)
                .bind(new_notification)
                .bind(&id)
                .bind(&secret)
                .execute(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_token(&self, t: &VppTokenRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE vpp_tokens SET name = $1, secret = $2, secret_hash = $3, expires_at = $4,
                priority = $5, apple_id = $6, account_type = $7, automatic_updates = $8,
                store_country = $9, external_mdm = $10, disabled_reason = $11, notification_secret = $12,
                notifications = $13
             WHERE id = $14",
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
        .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO apple_notifications (id, token_id, notification_type, received_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(token_id)
        .bind(notification_type)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE vpp_tokens SET last_notification_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        let write = sqlx::query("DELETE FROM vpp_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool);
        let done = self.kept.apps.writing(write).await?;
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
            .fetch_one(&self.pool)
            .await?)
    }

    async fn record_sync(&self, s: &SyncRecord) -> StoreResult<()> {
        self.kept.apps.writing(self.record_sync_in(s)).await
    }

    async fn record_sync_error(
        &self,
        token_id: &str,
        error: &str,
        _now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE vpp_tokens SET last_sync_error = $1 WHERE id = $2")
            .bind(error)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn update_app_counts(
        &self,
        app_id: &str,
        c: &LicenseCounts,
        now: Timestamp,
    ) -> StoreResult<()> {
        let write = sqlx::query(
            "UPDATE apps SET total_count = $1, assigned_count = $2, available_count = $3, retired_count = $4,
                updated_at = $5 WHERE id = $6",
        )
        .bind(c.total)
        .bind(c.assigned)
        .bind(c.available)
        .bind(c.retired)
        .bind(now)
        .bind(app_id)
        .execute(&self.pool);
        self.kept.apps.writing(write).await?;
        Ok(())
    }

    async fn set_app_install_timeout(
        &self,
        app_id: &str,
        seconds: Option<i64>,
    ) -> StoreResult<bool> {
        let write = sqlx::query("UPDATE apps SET install_timeout_seconds = $1 WHERE id = $2")
            .bind(seconds)
            .bind(app_id)
            .execute(&self.pool);
        let done = self.kept.apps.writing(write).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn app(&self, id: &str) -> StoreResult<Option<AppRecord>> {
        let read = self.one("apps", "id", id, app_row);
        self.kept.apps.get_or_read(id, read).await
    }

    async fn apps(&self, page: &Page) -> StoreResult<Vec<AppRecord>> {
        self.page("apps", "id", page, app_row).await
    }
}

#[async_trait]
impl DirectoryStore for PostgresStore {
    async fn insert_group(&self, g: &GroupRecord) -> StoreResult<bool> {
        let done = sqlx::query("INSERT INTO groups (id, name, kind, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(&g.id)
            .bind(&g.name)
            .bind(g.kind.as_str())
            .bind(g.created_at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_group(&self, id: &str) -> StoreResult<bool> {
        // Memberships and assignments go with the group (foreign keys cascade).
        let done = sqlx::query("DELETE FROM groups WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for udid in udids {
            added += sqlx::query("INSERT INTO group_devices (group_id, udid, joined_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn group_devices(&self, group_id: &str) -> StoreResult<Vec<Udid>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT udid FROM group_devices WHERE group_id = $1 ORDER BY joined_at, udid",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Udid).collect())
    }

    async fn group_device_page(&self, group_id: &str, page: &Page) -> StoreResult<Vec<Udid>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT udid FROM group_devices WHERE group_id = $1 AND udid > $2 ORDER BY udid LIMIT $3",
        )
        .bind(group_id)
        .bind(cursor(page))
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Udid).collect())
    }

    async fn remove_group_devices(&self, group_id: &str, udids: &[Udid]) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut removed = 0;
        for udid in udids {
            removed += sqlx::query("DELETE FROM group_devices WHERE group_id = $1 AND udid = $2")
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
impl AssignmentStore for PostgresStore {
    async fn insert_assignment(&self, a: &AssignmentRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO assignments (id, app_id, group_id, intent, license_type, created_at, install,
                                      updated_at, any_token)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
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
        .execute(&self.pool)
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
            "UPDATE assignments SET intent = $1, license_type = $2, install = $3, updated_at = $4
             WHERE id = $5",
        )
        .bind(a.intent.as_str())
        .bind(a.license_type.as_str())
        .bind(i64::from(a.install))
        .bind(a.updated_at)
        .bind(&a.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_assignment(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM assignments WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn assignment_candidates(&self) -> StoreResult<Vec<Candidate>> {
        self.candidates(None).await
    }

    async fn device_candidates(&self, udid: &Udid) -> StoreResult<Vec<Candidate>> {
        self.candidates(Some(udid)).await
    }

    async fn device_licenses(
        &self,
        udid: &Udid,
    ) -> StoreResult<(Vec<LicenseRecord>, Vec<UserLicenseRecord>)> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(rows::device_and_user_licenses("$1")))
            .bind(udid.as_str())
            .fetch_all(&self.pool)
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
            "INSERT INTO app_requests (app_id, udid, requested_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(app_id)
        .bind(udid.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn app_requests(&self) -> StoreResult<Vec<(String, Udid)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT app_id, udid FROM app_requests ORDER BY requested_at, udid")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(a, u)| (a, Udid(u))).collect())
    }

    async fn delete_licenses(&self, app_id: &str, udids: &[Udid]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for udid in udids {
            sqlx::query("DELETE FROM licenses WHERE app_id = $1 AND udid = $2")
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
            .fetch_all(&self.pool)
            .await?;
        collect(rows, license_row)
    }

    async fn reserve_licenses(&self, rows: &[LicenseRecord]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(BATCH) {
            let mut q = QueryBuilder::<Postgres>::new(
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        set_license_state(&mut tx, app_id, udids, None, None, Some(error), now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_association(&self, o: &AssociationOutcome) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
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
        let rows = sqlx::query("SELECT * FROM installs WHERE app_id = $1 ORDER BY udid")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?;
        collect(rows, install_row)
    }

    async fn install_counts(&self, app_id: &str) -> StoreResult<Vec<InstallCount>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(rows::install_counts_sql("$1")))
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?;
        collect(rows, install_count_row)
    }

    async fn installs_of_device(&self, udid: &Udid) -> StoreResult<Vec<InstallRecord>> {
        let rows = sqlx::query("SELECT * FROM installs WHERE udid = $1 ORDER BY app_id")
            .bind(udid.as_str())
            .fetch_all(&self.pool)
            .await?;
        collect(rows, install_row)
    }

    async fn installs(
        &self,
        filter: &InstallFilter,
        page: &Page,
    ) -> StoreResult<Vec<InstallRecord>> {
        self.list(rows::install_list_sql(filter, page, true), install_row)
            .await
    }

    async fn set_installs(&self, installs: &[InstallRecord]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        upsert_installs(&mut tx, installs).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn insert_user(&self, u: &UserRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO users (id, email, managed_apple_id, name, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.managed_apple_id)
        .bind(&u.name)
        .bind(u.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        self.one("users", "id", id, user_row).await
    }

    async fn users(&self, page: &Page) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(page.cursor.as_deref().unwrap_or(""))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        collect(rows, user_row)
    }

    async fn begin_user_deletion(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let marked =
            sqlx::query("UPDATE users SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if marked == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM group_users WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE devices SET user_id = NULL WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn users_being_deleted(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users WHERE deleted_at IS NOT NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        collect(rows, user_row)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        // Registrations and licenses go with the user (foreign keys cascade).
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_device_user(&self, udid: &Udid, user_id: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET user_id = $1 WHERE udid = $2")
            .bind(user_id)
            .bind(udid.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn devices_of_user(&self, user_id: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows =
            sqlx::query("SELECT * FROM devices WHERE user_id = $1 ORDER BY enrolled_at, udid")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        collect(rows, device_row)
    }

    async fn add_group_users(
        &self,
        group_id: &str,
        user_ids: &[String],
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for user_id in user_ids {
            added += sqlx::query(
                "INSERT INTO group_users (group_id, user_id, joined_at) VALUES ($1, $2, $3)
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
            "SELECT user_id FROM group_users WHERE group_id = $1 ORDER BY joined_at, user_id",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn group_user_page(&self, group_id: &str, page: &Page) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM group_users WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        )
        .bind(group_id)
        .bind(cursor(page))
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn vpp_users(&self) -> StoreResult<Vec<VppUserRecord>> {
        let rows = sqlx::query("SELECT * FROM vpp_users ORDER BY token_id, user_id")
            .fetch_all(&self.pool)
            .await?;
        collect(rows, vpp_user_row)
    }

    async fn put_vpp_user(&self, u: &VppUserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO vpp_users (token_id, user_id, client_user_id, status, event_id, invite_code,
                                    id_hash, invited_udid, invited_at, invitation_answer, answered_at,
                                    error, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user_licenses(&self) -> StoreResult<Vec<UserLicenseRecord>> {
        let rows = sqlx::query("SELECT * FROM user_licenses ORDER BY app_id, user_id")
            .fetch_all(&self.pool)
            .await?;
        collect(rows, user_license_row)
    }

    async fn put_user_licenses(&self, rows: &[UserLicenseRecord]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for l in rows {
            sqlx::query(
                "INSERT INTO user_licenses (app_id, user_id, state, event_id, error, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
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
        let mut tx = self.pool.begin().await?;
        for user_id in user_ids {
            sqlx::query("DELETE FROM user_licenses WHERE app_id = $1 AND user_id = $2")
                .bind(app_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn remove_group_users(&self, group_id: &str, user_ids: &[String]) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut removed = 0;
        for user_id in user_ids {
            removed += sqlx::query("DELETE FROM group_users WHERE group_id = $1 AND user_id = $2")
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
        let mut tx = self.pool.begin().await?;
        for p in prompts {
            sqlx::query(
                "INSERT INTO prompts (udid, prompt_id, kind, bundle_id, adam_id, shown_at, answer,
                                      answered_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
        self.list(rows::prompt_list_sql(filter, page, true), prompt_row)
            .await
    }

    async fn record_restrictions(&self, udid: &Udid, app_store_allowed: bool) -> StoreResult<()> {
        sqlx::query("UPDATE devices SET app_store_allowed = $1 WHERE udid = $2")
            .bind(i64::from(app_store_allowed))
            .bind(udid.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.expires_at < $4 OR leases.holder = excluded.holder
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_leases_of(&self, holder: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM leases WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
