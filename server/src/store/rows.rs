//! Reading rows back into records: the same mapping for every backend, generated per
//! row type, since each backend decodes its own row type; and the list queries with
//! their filters, the same text for every backend but for the placeholders.

use super::records::{AuditFilter, DeviceFilter, EventFilter, InstallFilter, Page, PromptFilter};
use crate::clock::Timestamp;

/// Defines `device_row`, `command_row`, … for the row type `$row`.
macro_rules! row_mappers {
    ($row:ty) => {
        fn corrupt(column: &'static str) -> StoreError {
            StoreError::Corrupt { column }
        }

        fn device_row(row: &$row) -> StoreResult<DeviceRecord> {
            let status: String = row.try_get("status")?;
            let supervised: Option<i64> = row.try_get("is_supervised")?;
            Ok(DeviceRecord {
                udid: Udid(row.try_get("udid")?),
                serial_number: SerialNumber(row.try_get("serial_number")?),
                product_name: row.try_get("product_name")?,
                os_version: row.try_get("os_version")?,
                platform: match row.try_get::<Option<String>, _>("platform")? {
                    Some(p) => Platform::parse(&p).ok_or(corrupt("devices.platform"))?,
                    None => Platform::of_product(
                        row.try_get::<Option<String>, _>("product_name")?.as_deref(),
                    ),
                },
                cert_fingerprint: row.try_get("cert_fingerprint")?,
                status: EnrollmentStatus::parse(&status).ok_or(corrupt("devices.status"))?,
                topic: row.try_get("topic")?,
                push_magic: row.try_get("push_magic")?,
                is_supervised: supervised.map(|v| v != 0),
                ownership: row.try_get("ownership")?,
                single_app_mode: row
                    .try_get::<Option<i64>, _>("single_app_mode")?
                    .map(|v| v != 0),
                app_store_allowed: row
                    .try_get::<Option<i64>, _>("app_store_allowed")?
                    .map(|v| v != 0),
                user_id: row.try_get("user_id")?,
                enrolled_at: row.try_get("enrolled_at")?,
                last_seen_at: row.try_get("last_seen_at")?,
            })
        }

        fn console_session_row(row: &$row) -> StoreResult<ConsoleSession> {
            Ok(ConsoleSession {
                id_hash: row.try_get("id_hash")?,
                admin_token_id: row.try_get("admin_token_id")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        }

        fn admin_token_row(row: &$row) -> StoreResult<AdminTokenRecord> {
            let role: String = row.try_get("role")?;
            Ok(AdminTokenRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                token_hash: row.try_get("token_hash")?,
                role: Role::parse(&role).ok_or(corrupt("admin_tokens.role"))?,
                expires_at: row.try_get("expires_at")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                rotated_at: row.try_get("rotated_at")?,
            })
        }

        fn event_row(row: &$row) -> StoreResult<EventRecord> {
            let data: String = row.try_get("data")?;
            Ok(EventRecord {
                id: row.try_get("id")?,
                at: row.try_get("at")?,
                kind: row.try_get("kind")?,
                token_id: row.try_get("token_id")?,
                app_id: row.try_get("app_id")?,
                udid: row.try_get("udid")?,
                data: serde_json::from_str(&data).map_err(|_| corrupt("events.data"))?,
            })
        }

        fn webhook_row(row: &$row) -> StoreResult<WebhookRecord> {
            Ok(WebhookRecord {
                id: row.try_get("id")?,
                url: row.try_get("url")?,
                secret: row.try_get("secret")?,
                kind: row.try_get("kind")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                delivered_through: row.try_get("delivered_through")?,
            })
        }

        fn delivery_row(row: &$row) -> StoreResult<DeliveryRecord> {
            Ok(DeliveryRecord {
                id: row.try_get("id")?,
                webhook_id: row.try_get("webhook_id")?,
                event_id: row.try_get("event_id")?,
                attempt: row.try_get("attempt")?,
                at: row.try_get("at")?,
                status_code: row.try_get("status_code")?,
                error: row.try_get("error")?,
                delivered: row.try_get::<i64, _>("delivered")? != 0,
            })
        }

        fn audit_row(row: &$row) -> StoreResult<AuditEntry> {
            Ok(AuditEntry {
                id: row.try_get("id")?,
                at: row.try_get("at")?,
                actor: row.try_get("actor")?,
                actor_token: row.try_get("actor_token")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                result: row.try_get("result")?,
            })
        }

        fn enrollment_token_row(row: &$row) -> StoreResult<EnrollmentTokenRecord> {
            Ok(EnrollmentTokenRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                token_hash: row.try_get("token_hash")?,
                uses_left: row.try_get("uses_left")?,
                expires_at: row.try_get("expires_at")?,
                serial_number: row
                    .try_get::<Option<String>, _>("serial_number")?
                    .map(SerialNumber),
                udid: row.try_get::<Option<String>, _>("udid")?.map(Udid),
                revoked: row.try_get::<i64, _>("revoked")? != 0,
                created_at: row.try_get("created_at")?,
            })
        }

        fn command_row(row: &$row) -> StoreResult<QueuedCommand> {
            let status: String = row.try_get("status")?;
            Ok(QueuedCommand {
                uuid: CommandUuid(row.try_get("uuid")?),
                udid: Udid(row.try_get("udid")?),
                request_type: row.try_get("request_type")?,
                app_id: row.try_get("app_id")?,
                payload: row.try_get("payload")?,
                status: CommandState::parse(&status).ok_or(corrupt("commands.status"))?,
                created_at: row.try_get("created_at")?,
            })
        }

        fn token_row(row: &$row) -> StoreResult<VppTokenRecord> {
            Ok(VppTokenRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                org_name: row.try_get("org_name")?,
                secret: row.try_get("secret")?,
                secret_hash: row.try_get("secret_hash")?,
                expires_at: row.try_get("expires_at")?,
                location_name: row.try_get("location_name")?,
                country: row.try_get("country")?,
                location_uid: row.try_get("location_uid")?,
                created_at: row.try_get("created_at")?,
                last_sync_at: row.try_get("last_sync_at")?,
                last_sync_error: row.try_get("last_sync_error")?,
                priority: row.try_get("priority")?,
                apple_id: row.try_get("apple_id")?,
                account_type: row.try_get("account_type")?,
                automatic_updates: row.try_get::<i64, _>("automatic_updates")? != 0,
                store_country: row.try_get("store_country")?,
                external_mdm: row.try_get("external_mdm")?,
                disabled_reason: row.try_get("disabled_reason")?,
                notification_secret: row.try_get("notification_secret")?,
                last_notification_at: row.try_get("last_notification_at")?,
                notifications: row.try_get("notifications")?,
            })
        }

        fn app_row(row: &$row) -> StoreResult<AppRecord> {
            let adam: String = row.try_get("adam_id")?;
            let platforms: String = row.try_get("platforms")?;
            Ok(AppRecord {
                id: row.try_get("id")?,
                token_id: row.try_get("token_id")?,
                adam_id: AdamId::from_str(&adam).map_err(|_| corrupt("apps.adam_id"))?,
                pricing_param: row.try_get("pricing_param")?,
                product_type: row.try_get("product_type")?,
                name: row.try_get("name")?,
                bundle_id: row.try_get("bundle_id")?,
                version: row.try_get("version")?,
                platforms: platforms
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                device_assignable: row.try_get::<i64, _>("device_assignable")? != 0,
                counts: LicenseCounts {
                    total: row.try_get("total_count")?,
                    assigned: row.try_get("assigned_count")?,
                    available: row.try_get("available_count")?,
                    retired: row.try_get("retired_count")?,
                },
                updated_at: row.try_get("updated_at")?,
                install_timeout_seconds: row.try_get("install_timeout_seconds")?,
                store_url: row.try_get("store_url")?,
                minimum_os_version: row.try_get("minimum_os_version")?,
            })
        }

        fn group_row(row: &$row) -> StoreResult<GroupRecord> {
            let kind: String = row.try_get("kind")?;
            Ok(GroupRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                kind: GroupKind::parse(&kind).ok_or(corrupt("groups.kind"))?,
                created_at: row.try_get("created_at")?,
            })
        }

        fn assignment_row(row: &$row) -> StoreResult<AssignmentRecord> {
            let intent: String = row.try_get("intent")?;
            let license_type: String = row.try_get("license_type")?;
            Ok(AssignmentRecord {
                id: row.try_get("id")?,
                app_id: row.try_get("app_id")?,
                group_id: row.try_get("group_id")?,
                intent: Intent::parse(&intent).ok_or(corrupt("assignments.intent"))?,
                license_type: LicenseType::parse(&license_type)
                    .ok_or(corrupt("assignments.license_type"))?,
                install: row.try_get::<i64, _>("install")? != 0,
                any_token: row.try_get::<i64, _>("any_token")? != 0,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn candidate_row(row: &$row) -> StoreResult<Candidate> {
            let intent: String = row.try_get("intent")?;
            let license_type: String = row.try_get("license_type")?;
            let kind: String = row.try_get("group_kind")?;
            Ok(Candidate {
                assignment_id: row.try_get("assignment_id")?,
                app_id: row.try_get("app_id")?,
                group_id: row.try_get("group_id")?,
                group_kind: GroupKind::parse(&kind).ok_or(corrupt("groups.kind"))?,
                intent: Intent::parse(&intent).ok_or(corrupt("assignments.intent"))?,
                license_type: LicenseType::parse(&license_type)
                    .ok_or(corrupt("assignments.license_type"))?,
                install: row.try_get::<i64, _>("install")? != 0,
                any_token: row.try_get::<i64, _>("any_token")? != 0,
                created_at: row.try_get("created_at")?,
                joined_at: row.try_get("joined_at")?,
                udid: Udid(row.try_get("udid")?),
                serial_number: SerialNumber(row.try_get("serial_number")?),
                user_id: row.try_get("user_id")?,
                single_app_mode: row
                    .try_get::<Option<i64>, _>("single_app_mode")?
                    .is_some_and(|v| v != 0),
                app_store_allowed: row
                    .try_get::<Option<i64>, _>("app_store_allowed")?
                    .map(|v| v != 0),
                os_version: row.try_get("os_version")?,
                product_name: row.try_get("product_name")?,
                active: row.try_get::<String, _>("device_status")? == "active",
                enrolled_at: row.try_get("enrolled_at")?,
                last_seen_at: row.try_get("last_seen_at")?,
                account_hash: row.try_get("account_hash")?,
            })
        }

        fn license_row(row: &$row) -> StoreResult<LicenseRecord> {
            let state: String = row.try_get("state")?;
            Ok(LicenseRecord {
                app_id: row.try_get("app_id")?,
                udid: Udid(row.try_get("udid")?),
                serial_number: SerialNumber(row.try_get("serial_number")?),
                state: LicenseState::parse(&state).ok_or(corrupt("licenses.state"))?,
                event_id: row.try_get("event_id")?,
                error: row.try_get("error")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn install_row(row: &$row) -> StoreResult<InstallRecord> {
            let status: String = row.try_get("status")?;
            Ok(InstallRecord {
                app_id: row.try_get("app_id")?,
                udid: Udid(row.try_get("udid")?),
                status: InstallStatus::parse(&status).ok_or(corrupt("installs.status"))?,
                device_status: row.try_get("device_status")?,
                version: row.try_get("version")?,
                reason: row.try_get("reason")?,
                updated_at: row.try_get("updated_at")?,
                since: row.try_get("since")?,
            })
        }

        fn user_row(row: &$row) -> StoreResult<UserRecord> {
            Ok(UserRecord {
                id: row.try_get("id")?,
                email: row.try_get("email")?,
                managed_apple_id: row.try_get("managed_apple_id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                deleted_at: row.try_get("deleted_at")?,
            })
        }

        fn vpp_user_row(row: &$row) -> StoreResult<VppUserRecord> {
            let status: String = row.try_get("status")?;
            Ok(VppUserRecord {
                token_id: row.try_get("token_id")?,
                user_id: row.try_get("user_id")?,
                client_user_id: row.try_get("client_user_id")?,
                status: VppUserStatus::parse(&status).ok_or(corrupt("vpp_users.status"))?,
                event_id: row.try_get("event_id")?,
                invite_code: row.try_get("invite_code")?,
                id_hash: row.try_get("id_hash")?,
                invited_udid: row.try_get("invited_udid")?,
                invited_at: row.try_get("invited_at")?,
                invitation_answer: row.try_get("invitation_answer")?,
                answered_at: row.try_get("answered_at")?,
                error: row.try_get("error")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        fn user_license_row(row: &$row) -> StoreResult<UserLicenseRecord> {
            let state: String = row.try_get("state")?;
            Ok(UserLicenseRecord {
                app_id: row.try_get("app_id")?,
                user_id: row.try_get("user_id")?,
                state: LicenseState::parse(&state).ok_or(corrupt("user_licenses.state"))?,
                event_id: row.try_get("event_id")?,
                error: row.try_get("error")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        /// Splits the rows of `rows::device_and_user_licenses` into the device's
        /// licenses and its user's.
        fn split_licenses(
            rows: &[$row],
        ) -> StoreResult<(Vec<LicenseRecord>, Vec<UserLicenseRecord>)> {
            let (mut device, mut user) = (Vec::new(), Vec::new());
            for row in rows {
                let owner: String = row.try_get("owner_kind")?;
                if owner == "device" {
                    device.push(license_row(row)?);
                } else {
                    user.push(user_license_row(row)?);
                }
            }
            Ok((device, user))
        }

        fn prompt_row(row: &$row) -> StoreResult<PromptRecord> {
            Ok(PromptRecord {
                udid: Udid(row.try_get("udid")?),
                prompt_id: row.try_get("prompt_id")?,
                kind: row.try_get("kind")?,
                bundle_id: row.try_get("bundle_id")?,
                adam_id: row.try_get("adam_id")?,
                shown_at: row.try_get("shown_at")?,
                answer: row.try_get("answer")?,
                answered_at: row.try_get("answered_at")?,
            })
        }

        fn install_count_row(row: &$row) -> StoreResult<InstallCount> {
            let status: String = row.try_get("status")?;
            Ok(InstallCount {
                status: InstallStatus::parse(&status).ok_or(corrupt("installs.status"))?,
                product_name: row.try_get("product_name")?,
                devices: row.try_get("devices")?,
            })
        }

        fn collect<T>(rows: Vec<$row>, f: fn(&$row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
            rows.iter().map(f).collect()
        }
    };
}

pub(super) use row_mappers;

/// The writes of a sync (`$pool`: either backend's pool, `$s`: a `SyncRecord`) in one
/// transaction: the token's location and sync time, then each app by [`UPSERT_APP`].
/// Both backends take the same statements and binds, so both expand this.
macro_rules! record_sync {
    ($pool:expr, $s:expr) => {{
        let s = $s;
        let mut tx = $pool.begin().await?;
        sqlx::query(
            "UPDATE vpp_tokens SET location_name = $1, country = $2, location_uid = $3,
                last_sync_at = $4, last_sync_error = NULL WHERE id = $5",
        )
        .bind(&s.location_name)
        .bind(&s.country)
        .bind(&s.location_uid)
        .bind(s.now)
        .bind(&s.token_id)
        .execute(&mut *tx)
        .await?;
        for a in &s.apps {
            sqlx::query($crate::store::rows::UPSERT_APP)
                .bind(&a.id)
                .bind(&s.token_id)
                .bind(a.adam_id.to_string())
                .bind(&a.pricing_param)
                .bind(&a.product_type)
                .bind(&a.name)
                .bind(&a.bundle_id)
                .bind(&a.version)
                .bind(a.platforms.join(","))
                .bind(i64::from(a.device_assignable))
                .bind(a.counts.total)
                .bind(a.counts.assigned)
                .bind(a.counts.available)
                .bind(a.counts.retired)
                .bind(s.now)
                .bind(&a.store_url)
                .bind(&a.minimum_os_version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }};
}

pub(super) use record_sync;

/// An app as a sync reports it (17 parameters, `$1` to `$17`, which both backends take):
/// a new one is inserted, a known one (same token, adamId and pricing) takes the new
/// counts and keeps the store metadata the sync did not bring.
pub(super) const UPSERT_APP: &str = "INSERT INTO apps (id, token_id, adam_id, pricing_param, product_type, name, bundle_id, version,
    platforms, device_assignable, total_count, assigned_count, available_count,
    retired_count, updated_at, store_url, minimum_os_version)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
    ON CONFLICT (token_id, adam_id, pricing_param) DO UPDATE SET
    product_type = excluded.product_type,
    name = COALESCE(excluded.name, apps.name),
    bundle_id = COALESCE(excluded.bundle_id, apps.bundle_id),
    version = COALESCE(excluded.version, apps.version),
    store_url = COALESCE(excluded.store_url, apps.store_url),
    minimum_os_version = COALESCE(excluded.minimum_os_version, apps.minimum_os_version),
    platforms = excluded.platforms, device_assignable = excluded.device_assignable,
    total_count = excluded.total_count, assigned_count = excluded.assigned_count,
    available_count = excluded.available_count, retired_count = excluded.retired_count,
    updated_at = excluded.updated_at";

/// The head of a multi-row insert of queued commands (the values follow).
pub(super) const INSERT_COMMANDS: &str = "INSERT INTO commands (uuid, udid, request_type, app_id, payload, status, not_before, created_at, updated_at) ";

/// The head of a multi-row write of installs (the values follow, then
/// [`INSTALLS_ON_CONFLICT`]).
pub(super) const INSERT_INSTALLS: &str = "INSERT INTO installs (app_id, udid, status, device_status, version, reason, updated_at, since) ";

/// An install already recorded takes the new status; what the device did not report
/// again is kept, and `since` is kept while the status stays.
pub(super) const INSTALLS_ON_CONFLICT: &str =
    " ON CONFLICT (app_id, udid) DO UPDATE SET status = excluded.status,
    device_status = COALESCE(excluded.device_status, installs.device_status),
    version = COALESCE(excluded.version, installs.version),
    reason = excluded.reason, updated_at = excluded.updated_at,
    since = CASE WHEN installs.status = excluded.status
                 THEN COALESCE(installs.since, excluded.since) ELSE excluded.since END";

/// The assignment candidates query of both backends: every device of every assigned
/// group, or one device's rows found by its key (`param` is the backend's placeholder
/// for its UDID), never by a scan of every membership. `greatest` is the backend's
/// two-argument maximum.
pub(super) fn candidates_sql(greatest: &str, param: &str, one_device: bool) -> String {
    let (device, user, all) = if one_device {
        (
            format!("WHERE gd.udid = {param}"),
            format!("WHERE d.udid = {param}"),
            format!("AND d.udid = {param}"),
        )
    } else {
        Default::default()
    };
    format!(
        "WITH members AS (
            SELECT gd.group_id, gd.udid, gd.joined_at FROM group_devices gd {device}
            UNION ALL
            SELECT gu.group_id, d.udid, gu.joined_at
            FROM group_users gu JOIN devices d ON d.user_id = gu.user_id {user}
         )
         SELECT a.id AS assignment_id, a.app_id AS app_id, a.group_id AS group_id,
                g.kind AS group_kind, a.intent AS intent, a.license_type AS license_type,
                a.install AS install, a.any_token AS any_token, a.created_at AS created_at,
                {greatest}(m.joined_at, COALESCE(a.updated_at, a.created_at)) AS joined_at,
                d.udid AS udid, d.serial_number AS serial_number, d.user_id AS user_id,
                d.single_app_mode AS single_app_mode, d.app_store_allowed AS app_store_allowed,
                d.os_version AS os_version, d.product_name AS product_name,
                d.status AS device_status, d.enrolled_at AS enrolled_at,
                d.last_seen_at AS last_seen_at, d.itunes_account_hash AS account_hash
         FROM assignments a
         JOIN groups g ON g.id = a.group_id
         JOIN members m ON m.group_id = a.group_id
         JOIN devices d ON d.udid = m.udid
         WHERE d.status <> 'checked_out' {all}
         ORDER BY joined_at, d.udid, a.created_at, a.id"
    )
}

/// Install counts of one app by status and product name (`param`: the backend's
/// placeholder for the app id).
pub(super) fn install_counts_sql(param: &str) -> String {
    format!(
        "SELECT i.status AS status, d.product_name AS product_name, COUNT(*) AS devices
         FROM installs i LEFT JOIN devices d ON d.udid = i.udid
         WHERE i.app_id = {param}
         GROUP BY i.status, d.product_name"
    )
}

/// A value bound to a list query.
pub(super) enum Arg {
    /// Text.
    Text(String),
    /// A time.
    Time(Timestamp),
    /// A count.
    Int(i64),
}

/// A list query under construction: its text, with the backend's placeholders
/// (`?` for SQLite, `$n` for PostgreSQL), and the values to bind in order.
pub(super) struct ListSql {
    /// The SQL text.
    pub text: String,
    /// Values, in placeholder order.
    pub args: Vec<Arg>,
    numbered: bool,
}

impl ListSql {
    fn new(numbered: bool, select: &str) -> Self {
        Self {
            text: format!("{select} WHERE 1 = 1"),
            args: Vec::new(),
            numbered,
        }
    }

    /// A placeholder for `arg`.
    fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        if self.numbered {
            format!("${}", self.args.len())
        } else {
            "?".to_owned()
        }
    }

    /// `AND` the condition `make(placeholder)` when `value` is set.
    fn and<T>(
        &mut self,
        value: Option<T>,
        arg: impl FnOnce(T) -> Arg,
        make: impl FnOnce(&str) -> String,
    ) {
        if let Some(v) = value {
            let p = self.bind(arg(v));
            let condition = make(&p);
            self.text.push_str(" AND ");
            self.text.push_str(&condition);
        }
    }

    fn tail(&mut self, order: &str, limit: i64) {
        let p = self.bind(Arg::Int(limit));
        self.text.push_str(&format!(" ORDER BY {order} LIMIT {p}"));
    }
}

fn text(s: &str) -> Arg {
    Arg::Text(s.to_owned())
}

/// Splits a two-part cursor key (`first` NUL `second`).
fn two_keys(cursor: &str) -> (String, String) {
    match cursor.split_once('\u{0}') {
        Some((a, b)) => (a.to_owned(), b.to_owned()),
        None => (cursor.to_owned(), String::new()),
    }
}

/// A device's licenses and its user's, in one read: each row says whose it is in
/// `owner_kind` (`device` rows decode as licenses, `user` rows as user licenses). `p` is
/// the backend's placeholder of the device's UDID (`?1`, `$1`).
pub fn device_and_user_licenses(p: &str) -> String {
    format!(
        "SELECT 'device' AS owner_kind, app_id, udid, serial_number, NULL AS user_id, state,
                event_id, error, updated_at
           FROM licenses WHERE udid = {p}
         UNION ALL
         SELECT 'user', app_id, NULL, NULL, user_id, state, event_id, error, updated_at
           FROM user_licenses
          WHERE user_id = (SELECT user_id FROM devices WHERE udid = {p})"
    )
}

/// The two-part cursor key of a row.
pub fn two_key(first: &str, second: &str) -> String {
    format!("{first}\u{0}{second}")
}

/// Devices in a group: a device group's members, or the devices of a user group's
/// users (`col` is the device's UDID column).
fn in_group(sql: &mut ListSql, group_id: Option<&String>, col: &str) {
    if let Some(g) = group_id {
        let a = sql.bind(text(g));
        let b = sql.bind(text(g));
        sql.text.push_str(&format!(
            " AND (EXISTS (SELECT 1 FROM group_devices gd WHERE gd.group_id = {a} AND gd.udid = {col})
               OR EXISTS (SELECT 1 FROM group_users gu JOIN devices gdv ON gdv.user_id = gu.user_id
                          WHERE gu.group_id = {b} AND gdv.udid = {col}))"
        ));
    }
}

/// The device list query.
pub(super) fn device_list_sql(f: &DeviceFilter, page: &Page, numbered: bool) -> ListSql {
    let mut sql = ListSql::new(numbered, "SELECT * FROM devices d");
    sql.and(page.cursor.as_deref(), text, |p| format!("d.udid > {p}"));
    sql.and(
        f.platform,
        |p| text(p.as_str()),
        |p| format!("d.platform = {p}"),
    );
    sql.and(f.os_at_least.as_deref(), text, |p| {
        format!("d.os_version_key >= {p}")
    });
    sql.and(f.os_below.as_deref(), text, |p| {
        format!("d.os_version_key < {p}")
    });
    sql.and(
        f.supervised,
        |s| Arg::Int(i64::from(s)),
        |p| format!("COALESCE(d.is_supervised, 0) = {p}"),
    );
    sql.and(f.ownership.as_deref(), text, |p| {
        format!("d.ownership = {p}")
    });
    sql.and(
        f.status,
        |s| text(s.as_str()),
        |p| format!("d.status = {p}"),
    );
    sql.and(f.seen_since, Arg::Time, |p| {
        format!("d.last_seen_at >= {p}")
    });
    sql.and(f.seen_before, Arg::Time, |p| {
        format!("d.last_seen_at < {p}")
    });
    sql.and(f.user_id.as_deref(), text, |p| format!("d.user_id = {p}"));
    in_group(&mut sql, f.group_id.as_ref(), "d.udid");
    sql.tail("d.udid", page.limit);
    sql
}

/// The install list query, by app then device.
pub(super) fn install_list_sql(f: &InstallFilter, page: &Page, numbered: bool) -> ListSql {
    let mut sql = ListSql::new(numbered, "SELECT i.* FROM installs i");
    if let Some(cursor) = page.cursor.as_deref() {
        let (app, udid) = two_keys(cursor);
        let a = sql.bind(Arg::Text(app.clone()));
        let b = sql.bind(Arg::Text(app));
        let c = sql.bind(Arg::Text(udid));
        sql.text.push_str(&format!(
            " AND (i.app_id > {a} OR (i.app_id = {b} AND i.udid > {c}))"
        ));
    }
    sql.and(f.app_id.as_deref(), text, |p| format!("i.app_id = {p}"));
    sql.and(
        f.udid.as_ref(),
        |u| text(u.as_str()),
        |p| format!("i.udid = {p}"),
    );
    sql.and(
        f.status,
        |s| text(s.as_str()),
        |p| format!("i.status = {p}"),
    );
    sql.and(f.user_id.as_deref(), text, |p| {
        format!("EXISTS (SELECT 1 FROM devices d WHERE d.udid = i.udid AND d.user_id = {p})")
    });
    sql.and(
        f.platform,
        |p| text(p.as_str()),
        |p| format!("EXISTS (SELECT 1 FROM devices d WHERE d.udid = i.udid AND d.platform = {p})"),
    );
    sql.and(f.token_id.as_deref(), text, |p| {
        format!("EXISTS (SELECT 1 FROM apps a WHERE a.id = i.app_id AND a.token_id = {p})")
    });
    in_group(&mut sql, f.group_id.as_ref(), "i.udid");
    sql.tail("i.app_id, i.udid", page.limit);
    sql
}

/// The prompt list query, by device then prompt.
pub(super) fn prompt_list_sql(f: &PromptFilter, page: &Page, numbered: bool) -> ListSql {
    let mut sql = ListSql::new(numbered, "SELECT * FROM prompts p");
    if let Some(cursor) = page.cursor.as_deref() {
        let (udid, prompt) = two_keys(cursor);
        let a = sql.bind(Arg::Text(udid.clone()));
        let b = sql.bind(Arg::Text(udid));
        let c = sql.bind(Arg::Text(prompt));
        sql.text.push_str(&format!(
            " AND (p.udid > {a} OR (p.udid = {b} AND p.prompt_id > {c}))"
        ));
    }
    sql.and(
        f.udid.as_ref(),
        |u| text(u.as_str()),
        |p| format!("p.udid = {p}"),
    );
    sql.and(f.bundle_id.as_deref(), text, |p| {
        format!("p.bundle_id = {p}")
    });
    sql.and(f.kind.as_deref(), text, |p| format!("p.kind = {p}"));
    match &f.answer {
        Some(Some(answer)) => sql.and(Some(answer.as_str()), text, |p| format!("p.answer = {p}")),
        Some(None) => sql.text.push_str(" AND p.answer IS NULL"),
        None => {}
    }
    sql.tail("p.udid, p.prompt_id", page.limit);
    sql
}

/// The audit log query, newest first (the cursor is the last entry's id).
pub(super) fn audit_list_sql(
    f: &AuditFilter,
    before_id: i64,
    limit: i64,
    numbered: bool,
) -> ListSql {
    let mut sql = ListSql::new(numbered, "SELECT * FROM audit_log a");
    sql.and(Some(before_id), Arg::Int, |p| format!("a.id < {p}"));
    if let Some(actor) = &f.actor {
        let a = sql.bind(text(actor));
        let b = sql.bind(text(actor));
        sql.text
            .push_str(&format!(" AND (a.actor = {a} OR a.actor_token = {b})"));
    }
    sql.and(f.action.as_deref(), text, |p| format!("a.action = {p}"));
    sql.and(f.target.as_deref(), text, |p| format!("a.target = {p}"));
    sql.and(f.since, Arg::Time, |p| format!("a.at >= {p}"));
    sql.and(f.before, Arg::Time, |p| format!("a.at < {p}"));
    sql.tail("a.id DESC", limit);
    sql
}

/// The event query, oldest first after the id `after`. A `kind` without a dot is a
/// family (`install` is every `install.*`); kinds are checked at the door to hold only
/// lowercase letters, `_` and `.`.
pub(super) fn event_list_sql(f: &EventFilter, after: i64, limit: i64, numbered: bool) -> ListSql {
    let mut sql = ListSql::new(numbered, "SELECT * FROM events e");
    sql.and(Some(after), Arg::Int, |p| format!("e.id > {p}"));
    match f.kind.as_deref() {
        Some(kind) if kind.contains('.') => sql.and(Some(kind), text, |p| format!("e.kind = {p}")),
        Some(family) => sql.and(Some(format!("{family}.%")), Arg::Text, |p| {
            format!("e.kind LIKE {p}")
        }),
        None => {}
    }
    sql.and(f.app_id.as_deref(), text, |p| format!("e.app_id = {p}"));
    sql.and(f.udid.as_deref(), text, |p| format!("e.udid = {p}"));
    sql.and(f.token_id.as_deref(), text, |p| format!("e.token_id = {p}"));
    sql.tail("e.id", limit);
    sql
}
