//! Storage: small traits per concern, one implementation per backend. Handlers and
//! services hold an `Arc<dyn Store>` and never see SQL.
//!
//! The bottom of the house: imports nothing else of the server but its time type.

mod group_commit;
mod kept;
mod kept_postgres;
mod last_seen;
mod lending;
mod postgres;
mod records;
pub mod rows;
mod seal;
mod sqlite;

use async_trait::async_trait;
use orchard_protocol::{CommandUuid, SerialNumber, Udid};

pub use crate::clock::Timestamp;

pub use last_seen::LastSeen;
pub use postgres::PostgresStore;
pub use records::*;
pub use seal::{KEY_LEN, Seal, SealError};
pub use sqlite::SqliteStore;

/// A storage failure. Details are logged, never returned to API clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A sealed secret does not open with this server's key.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A stored value could not be read back.
    #[error("corrupt stored value in {column}")]
    Corrupt {
        /// The column.
        column: &'static str,
    },
}

/// Result of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Server-wide settings and admin credentials.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Reads a setting.
    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Writes a setting only if it is absent; returns the value now stored.
    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;
    /// The same for a secret: stored sealed, returned open; a value stored before
    /// sealing is sealed now.
    async fn secret_setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;
    /// Reads a secret setting, opened.
    async fn secret_setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Writes a secret setting (sealed), replacing the old value.
    async fn put_secret_setting(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Stores an admin token's hash; returns false when one with that id or name exists.
    async fn insert_admin_token(&self, token: &AdminTokenRecord) -> StoreResult<bool>;
    /// Finds an admin token by the hash of its secret.
    async fn admin_token_by_hash(&self, hash: &str) -> StoreResult<Option<AdminTokenRecord>>;
    /// Finds an admin token by id.
    async fn admin_token(&self, id: &str) -> StoreResult<Option<AdminTokenRecord>>;
    /// Lists admin tokens by name.
    async fn admin_tokens(&self, page: &Page) -> StoreResult<Vec<AdminTokenRecord>>;
    /// Replaces a token's secret (the old one stops working at once); false when
    /// there is no token with this id.
    async fn rotate_admin_token(&self, id: &str, hash: &str, now: Timestamp) -> StoreResult<bool>;
    /// Deletes a token, in one transaction with the check that another unexpired
    /// `admin` token remains when it is one (so admin access is never lost through
    /// the API).
    async fn delete_admin_token(&self, id: &str, now: Timestamp) -> StoreResult<AdminTokenRemoval>;
    /// Stores a console session, forgetting sessions that ended before `now`.
    async fn insert_console_session(
        &self,
        session: &ConsoleSession,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Finds a console session by its cookie's hash (ended ones too: the caller checks).
    async fn console_session(&self, id_hash: &str) -> StoreResult<Option<ConsoleSession>>;
    /// The id of the newest event (0 when there is none).
    async fn latest_event_id(&self) -> StoreResult<i64>;
    /// Ends a console session.
    async fn delete_console_session(&self, id_hash: &str) -> StoreResult<()>;
    /// Appends an audit entry.
    async fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Events after the id `after`, oldest first, at most `limit`.
    async fn events(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>>;
    /// Registers a webhook (its secret sealed), starting after the newest event.
    async fn insert_webhook(&self, webhook: &WebhookRecord) -> StoreResult<WebhookRecord>;
    /// Lists webhooks by id (secrets opened).
    async fn webhooks(&self, page: &Page) -> StoreResult<Vec<WebhookRecord>>;
    /// Finds a webhook (secret opened).
    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookRecord>>;
    /// Removes a webhook and its delivery log; false when there is none.
    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;
    /// Logs a delivery attempt and, in the same transaction, moves the webhook's place
    /// to `through` when given (the event was delivered, or filtered out).
    async fn record_delivery(
        &self,
        delivery: Option<&DeliveryRecord>,
        webhook_id: &str,
        through: Option<i64>,
    ) -> StoreResult<()>;
    /// A webhook's delivery log, newest first (the cursor is the last entry's id).
    async fn deliveries(&self, webhook_id: &str, page: &Page) -> StoreResult<Vec<DeliveryRecord>>;
    /// Forgets events from before `before`; returns how many.
    async fn prune_events(&self, before: Timestamp) -> StoreResult<u64>;
    /// Lists audit entries, newest first (the cursor is the last entry's id).
    async fn audit_log(&self, filter: &AuditFilter, page: &Page) -> StoreResult<Vec<AuditEntry>>;
}

/// Enrollments: devices and the certificate each is bound to.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Creates or replaces the enrollment of a device (re-enrollment binds the new certificate).
    async fn upsert_enrollment(&self, device: &DeviceRecord) -> StoreResult<()>;
    /// Finds a device.
    async fn device(&self, udid: &Udid) -> StoreResult<Option<DeviceRecord>>;
    /// Finds the device a certificate is bound to.
    async fn device_by_fingerprint(&self, fingerprint: &str) -> StoreResult<Option<DeviceRecord>>;
    /// The UDID and status of the enrollment a certificate is bound to: what
    /// authorizing a device request needs.
    async fn standing(&self, fingerprint: &str) -> StoreResult<Option<Standing>> {
        Ok(self
            .device_by_fingerprint(fingerprint)
            .await?
            .map(|d| Standing::of(&d)))
    }
    /// Records an Authenticate check-in.
    async fn record_authenticate(
        &self,
        udid: &Udid,
        facts: &AuthenticateFacts,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Records a TokenUpdate check-in.
    async fn record_token_update(
        &self,
        udid: &Udid,
        topic: &str,
        push_magic: &str,
        token: &[u8],
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Records a CheckOut: the device is no longer managed.
    async fn record_check_out(&self, udid: &Udid, now: Timestamp) -> StoreResult<()>;
    /// Records a DeviceInformation answer (the account hash as reported: none when
    /// nobody is signed in to the App Store).
    async fn record_device_information(
        &self,
        udid: &Udid,
        facts: &AuthenticateFacts,
        is_supervised: Option<bool>,
        account_hash: Option<&str>,
    ) -> StoreResult<()>;
    /// Lists devices by UDID.
    async fn devices(&self, filter: &DeviceFilter, page: &Page) -> StoreResult<Vec<DeviceRecord>>;
    /// Fills in the platform and OS version key of devices written before they were
    /// stored; returns how many.
    async fn fill_device_keys(&self) -> StoreResult<u64>;
    /// Forgets a device: its enrollment, memberships, queued commands, install states
    /// and prompts (its licenses stay until the engine gives them back).
    async fn delete_device(&self, udid: &Udid) -> StoreResult<bool>;
}

/// Enrollment tokens and the release of enrollments.
#[async_trait]
pub trait EnrollmentStore: Send + Sync {
    /// Stores a new enrollment token.
    async fn insert_enrollment_token(&self, token: &EnrollmentTokenRecord) -> StoreResult<()>;
    /// Lists enrollment tokens by id.
    async fn enrollment_tokens(&self, page: &Page) -> StoreResult<Vec<EnrollmentTokenRecord>>;
    /// Revokes a token; false when there is none with this id.
    async fn revoke_enrollment_token(&self, id: &str) -> StoreResult<bool>;
    /// Takes one use of the token with this hash, in one statement, if it is not
    /// revoked, not expired at `now`, has uses left and admits this device (its serial
    /// number and UDID); false otherwise.
    async fn consume_enrollment_token(
        &self,
        token_hash: &str,
        serial_number: &SerialNumber,
        udid: &Udid,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Whether the token with this hash would admit this device at `now` (nothing is
    /// taken).
    async fn enrollment_token_admits(
        &self,
        token_hash: &str,
        serial_number: &SerialNumber,
        udid: &Udid,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Marks a device's enrollment released so that it may enroll again; false when the
    /// device is unknown.
    async fn release_device(&self, udid: &Udid) -> StoreResult<bool>;
}

/// The per-device command queue.
#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Queues commands.
    async fn enqueue(&self, commands: &[NewCommand]) -> StoreResult<()>;
    /// One command-channel exchange in one transaction: marks the device seen, re-offers
    /// NotNow'd commands when a session starts, applies a result's outcome, and takes the
    /// oldest open command that may be sent now (marking it sent).
    async fn exchange(&self, exchange: &Exchange) -> StoreResult<Option<QueuedCommand>>;
    /// Whether the device has a command to be offered at `now` (queued or sent and due,
    /// or put off with NotNow); a read, no transaction.
    async fn has_due_commands(&self, udid: &Udid, now: Timestamp) -> StoreResult<bool>;
    /// Writes when devices were last heard from (one transaction for the batch).
    async fn touch_devices(&self, seen: &[(Udid, Timestamp)]) -> StoreResult<()>;
    /// Finds a command of a device.
    async fn command(&self, udid: &Udid, uuid: &CommandUuid) -> StoreResult<Option<QueuedCommand>>;
    /// Lists the commands of a device, oldest first.
    async fn commands_of(&self, udid: &Udid) -> StoreResult<Vec<QueuedCommand>>;
    /// When the device's next queued command falls due, if one is due after `now`.
    async fn next_deferred(&self, udid: &Udid, now: Timestamp) -> StoreResult<Option<Timestamp>>;
}

/// VPP tokens and the apps synced from them.
#[async_trait]
pub trait VppStore: Send + Sync {
    /// Adds a token; false when a token with the same secret exists.
    async fn insert_token(&self, token: &VppTokenRecord) -> StoreResult<bool>;
    /// Finds a token.
    async fn token(&self, id: &str) -> StoreResult<Option<VppTokenRecord>>;
    /// Seals the token secrets stored before sealing, and checks that every sealed one
    /// opens with this server's key; returns how many were sealed now.
    async fn reseal_secrets(&self) -> StoreResult<u64>;
    /// Writes a token's settings, secret and status (not its sync results).
    async fn update_token(&self, token: &VppTokenRecord) -> StoreResult<bool>;
    /// Records a notification from Apple; false when this notificationId came before.
    async fn record_notification(
        &self,
        id: &str,
        token_id: &str,
        notification_type: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Deletes a token with its apps, assignments and license records.
    async fn delete_token(&self, id: &str) -> StoreResult<bool>;
    /// Lists tokens.
    async fn tokens(&self, page: &Page) -> StoreResult<Vec<VppTokenRecord>>;
    /// Counts tokens.
    async fn token_count(&self) -> StoreResult<i64>;
    /// Records a sync's outcome on the token and replaces its apps in one transaction.
    async fn record_sync(&self, result: &SyncRecord) -> StoreResult<()>;
    /// Records a failed sync.
    async fn record_sync_error(
        &self,
        token_id: &str,
        error: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Updates one app's license counts from Apple.
    async fn update_app_counts(
        &self,
        app_id: &str,
        counts: &LicenseCounts,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Finds an app.
    /// Sets (or clears) an app's install timeout.
    async fn set_app_install_timeout(
        &self,
        app_id: &str,
        seconds: Option<i64>,
    ) -> StoreResult<bool>;
    async fn app(&self, id: &str) -> StoreResult<Option<AppRecord>>;
    /// Lists apps.
    async fn apps(&self, page: &Page) -> StoreResult<Vec<AppRecord>>;
}

/// Groups and memberships.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Creates a group; false when the name is taken.
    async fn insert_group(&self, group: &GroupRecord) -> StoreResult<bool>;
    /// Finds a group.
    async fn group(&self, id: &str) -> StoreResult<Option<GroupRecord>>;
    /// Deletes a group with its memberships and assignments (one transaction); false
    /// when there is no such group.
    async fn delete_group(&self, id: &str) -> StoreResult<bool>;
    /// Lists groups.
    async fn groups(&self, page: &Page) -> StoreResult<Vec<GroupRecord>>;
    /// Adds devices to a group (already-members are left as they are); returns how many joined.
    async fn add_group_devices(
        &self,
        group_id: &str,
        udids: &[Udid],
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Members of a group.
    async fn group_devices(&self, group_id: &str) -> StoreResult<Vec<Udid>>;
    /// How many members (devices or users) each group with members has.
    async fn group_sizes(&self) -> StoreResult<std::collections::HashMap<String, i64>>;
    /// A page of a group's device UDIDs.
    async fn group_device_page(&self, group_id: &str, page: &Page) -> StoreResult<Vec<Udid>>;
    /// Removes devices from a group.
    async fn remove_group_devices(&self, group_id: &str, udids: &[Udid]) -> StoreResult<u64>;
}

/// Assignments, licenses and install states.
#[async_trait]
pub trait AssignmentStore: Send + Sync {
    /// Creates an assignment; false when the app is already assigned to the group.
    async fn insert_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<bool>;
    /// Lists assignments.
    async fn assignments(&self, page: &Page) -> StoreResult<Vec<AssignmentRecord>>;
    /// Every (app, device) pair a Required, device-licensed assignment targets, among
    /// devices that finished enrollment, in the order they joined.
    async fn assignment(&self, id: &str) -> StoreResult<Option<AssignmentRecord>>;
    /// Changes intent, license type and install of an assignment.
    async fn update_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<bool>;
    async fn delete_assignment(&self, id: &str) -> StoreResult<bool>;
    /// Every assignment reaching every active device (through device groups and the
    /// device's user's groups), in service order: joined, then UDID.
    async fn assignment_candidates(&self) -> StoreResult<Vec<Candidate>>;
    /// The same, for one device.
    async fn device_candidates(&self, udid: &Udid) -> StoreResult<Vec<Candidate>>;
    /// The device's licenses, and the user licenses of its user.
    async fn device_licenses(
        &self,
        udid: &Udid,
    ) -> StoreResult<(Vec<LicenseRecord>, Vec<UserLicenseRecord>)>;
    /// [`Self::device_candidates`] and [`Self::device_licenses`] of one device together
    /// (what an install is checked against when it is handed out), read at once where
    /// the backend can.
    async fn device_standing(&self, udid: &Udid) -> StoreResult<DeviceStanding> {
        let candidates = self.device_candidates(udid).await?;
        let (licenses, user_licenses) = self.device_licenses(udid).await?;
        Ok(DeviceStanding {
            candidates,
            licenses,
            user_licenses,
        })
    }
    /// Records that a device's user asked for an app; false when already asked.
    async fn record_app_request(
        &self,
        app_id: &str,
        udid: &Udid,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Every (app, device) a user asked for.
    async fn app_requests(&self) -> StoreResult<Vec<(String, Udid)>>;
    /// Forgets device licenses (after Apple confirmed giving them back).
    async fn delete_licenses(&self, app_id: &str, udids: &[Udid]) -> StoreResult<()>;
    /// Every license this server holds or asked for.
    async fn licenses(&self) -> StoreResult<Vec<LicenseRecord>>;
    /// Reserves licenses before asking Apple (state `pending`).
    async fn reserve_licenses(&self, rows: &[LicenseRecord]) -> StoreResult<()>;
    /// Records the event Apple answered an association with.
    async fn mark_associating(
        &self,
        app_id: &str,
        udids: &[Udid],
        event_id: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Records a failed attempt to reach Apple; the reservation stays pending for a retry.
    async fn mark_license_error(
        &self,
        app_id: &str,
        udids: &[Udid],
        error: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Applies an association's outcome: confirmed licenses, their installs queued, failures recorded.
    async fn finish_association(&self, outcome: &AssociationOutcome) -> StoreResult<()>;
    /// Sets the state (and, if given, the event) of many devices' licenses of one app.
    async fn set_license_states(
        &self,
        app_id: &str,
        udids: &[Udid],
        state: LicenseState,
        event_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Install states of one app, by device.
    async fn installs_of_app(&self, app_id: &str) -> StoreResult<Vec<InstallRecord>>;
    /// How many devices of one app stand in each install status, by product name.
    async fn install_counts(&self, app_id: &str) -> StoreResult<Vec<InstallCount>>;
    /// Install states of one device, by app.
    async fn installs_of_device(&self, udid: &Udid) -> StoreResult<Vec<InstallRecord>>;
    /// A page of install states, by app then device (the cursor is [`rows::two_key`]
    /// of the last row's app and device).
    async fn installs(
        &self,
        filter: &InstallFilter,
        page: &Page,
    ) -> StoreResult<Vec<InstallRecord>>;
    /// Sets install states that need no command (e.g. license failures).
    async fn set_installs(&self, installs: &[InstallRecord]) -> StoreResult<()>;
}

/// Leases: one replica at a time runs a singleton job.
/// The directory's people, user licensing state at Apple, and reported prompts.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Adds a user; false when the email or managed Apple ID is taken.
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<bool>;
    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>>;
    async fn users(&self, page: &Page) -> StoreResult<Vec<UserRecord>>;
    /// Starts deleting a user (one transaction): marks it, takes it out of every group
    /// and off every device; false when there is no such user or it is being deleted.
    async fn begin_user_deletion(&self, id: &str, now: Timestamp) -> StoreResult<bool>;
    /// Users being deleted.
    async fn users_being_deleted(&self) -> StoreResult<Vec<UserRecord>>;
    /// Removes a user and its registrations; false when there is no such user.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    /// Sets (or clears) a device's user.
    async fn set_device_user(&self, udid: &Udid, user_id: Option<&str>) -> StoreResult<()>;
    async fn devices_of_user(&self, user_id: &str) -> StoreResult<Vec<DeviceRecord>>;
    async fn add_group_users(
        &self,
        group_id: &str,
        user_ids: &[String],
        now: Timestamp,
    ) -> StoreResult<u64>;
    async fn group_users(&self, group_id: &str) -> StoreResult<Vec<String>>;
    async fn vpp_users(&self) -> StoreResult<Vec<VppUserRecord>>;
    /// Writes a user's registration at Apple (insert or replace).
    async fn put_vpp_user(&self, user: &VppUserRecord) -> StoreResult<()>;
    async fn user_licenses(&self) -> StoreResult<Vec<UserLicenseRecord>>;
    /// Writes user licenses (insert or replace).
    async fn put_user_licenses(&self, rows: &[UserLicenseRecord]) -> StoreResult<()>;
    /// Forgets user licenses (after Apple confirmed giving them back).
    async fn delete_user_licenses(&self, app_id: &str, user_ids: &[String]) -> StoreResult<()>;
    /// Removes users from a group.
    async fn remove_group_users(&self, group_id: &str, user_ids: &[String]) -> StoreResult<u64>;
    /// Records prompts; a prompt reported again (answered) replaces the first report.
    async fn record_prompts(&self, prompts: &[PromptRecord]) -> StoreResult<()>;
    /// A page of prompts, by device then prompt (the cursor is [`rows::two_key`] of the
    /// last row's device and prompt).
    async fn prompts(&self, filter: &PromptFilter, page: &Page) -> StoreResult<Vec<PromptRecord>>;
    /// A page of a group's user ids.
    async fn group_user_page(&self, group_id: &str, page: &Page) -> StoreResult<Vec<String>>;
    /// Records whether the App Store is usable on a device (Restrictions answer).
    async fn record_restrictions(&self, udid: &Udid, app_store_allowed: bool) -> StoreResult<()>;
}

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes or renews the lease `name` for `holder` until `until`, if it is free, expired
    /// (before `now`) or already `holder`'s. Returns whether `holder` holds it now.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool>;
    /// Gives the lease up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
    /// Gives up every lease `holder` holds (a replica shutting down); returns how many.
    async fn release_leases_of(&self, holder: &str) -> StoreResult<u64>;
}

/// Everything the server stores.
pub trait Store:
    AdminStore
    + DeviceStore
    + EnrollmentStore
    + CommandStore
    + VppStore
    + DirectoryStore
    + AssignmentStore
    + UserStore
    + LeaseStore
{
}

impl<T> Store for T where
    T: AdminStore
        + DeviceStore
        + EnrollmentStore
        + CommandStore
        + VppStore
        + DirectoryStore
        + AssignmentStore
        + UserStore
        + LeaseStore
{
}

/// The storage backend a server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Embedded SQLite, the default.
    Sqlite(SqliteStore),
    /// PostgreSQL, for several replicas.
    Postgres(PostgresStore),
}

impl Backend {
    /// PostgreSQL when `database` is a `postgres://` URL, else SQLite in `data_dir`;
    /// secrets sealed with `seal`.
    pub async fn open(
        database: Option<&str>,
        data_dir: &std::path::Path,
        seal: std::sync::Arc<Seal>,
    ) -> StoreResult<Self> {
        match database {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(PostgresStore::open(url, seal).await?))
            }
            Some(path) => Ok(Self::Sqlite(
                SqliteStore::open(std::path::Path::new(path), seal).await?,
            )),
            None => Ok(Self::Sqlite(
                SqliteStore::open(&data_dir.join("orchard.db"), seal).await?,
            )),
        }
    }

    /// The backend as the services use it.
    pub fn store(&self) -> std::sync::Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => std::sync::Arc::new(s.clone()),
            Self::Postgres(s) => std::sync::Arc::new(s.clone()),
        }
    }

    /// Closes its connections.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

/// Facts a device states about itself.
#[derive(Debug, Clone, Default)]
pub struct AuthenticateFacts {
    /// Serial number.
    pub serial_number: Option<SerialNumber>,
    /// Product name.
    pub product_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
}

impl AuthenticateFacts {
    /// The platform its product name tells (none without one).
    pub fn platform(&self) -> Option<&'static str> {
        self.product_name
            .as_deref()
            .map(|p| Platform::of_product(Some(p)).as_str())
    }

    /// The sortable key of its OS version.
    pub fn os_version_key(&self) -> Option<String> {
        self.os_version.as_deref().and_then(os_version_key)
    }
}
