//! The rows the storage traits read and write.

use orchard_protocol::{AdamId, CommandUuid, SerialNumber, Udid};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            /// The stored and wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Parses the stored and wire spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a device is in its enrollment.
    EnrollmentStatus {
        /// Holds an identity certificate, has not checked in yet.
        Enrolled = "enrolled",
        /// Sent Authenticate.
        Authenticated = "authenticated",
        /// Sent TokenUpdate: managed and reachable.
        Active = "active",
        /// Sent CheckOut: no longer managed.
        CheckedOut = "checked_out",
        /// An admin released the enrollment: the device may enroll again (its current
        /// certificate works until it does).
        Released = "released",
    }
);

text_enum!(
    /// A queued command's state.
    CommandState {
        /// Waiting to be sent.
        Queued = "queued",
        /// Sent, no result yet (re-sent if the device asks again).
        Sent = "sent",
        /// The device answered NotNow; re-offered in its next session.
        NotNow = "not_now",
        /// The device acknowledged it.
        Acknowledged = "acknowledged",
        /// The device reported an error.
        Error = "error",
        /// Withdrawn when handed out: what it was for no longer holds (an install
        /// whose assignment or license is gone). Never sent.
        Cancelled = "cancelled",
    }
);

text_enum!(
    /// What an assignment asks for.
    Intent {
        /// Installed automatically.
        Required = "required",
        /// Installed when the user asks.
        Available = "available",
        /// Removed, then the license reclaimed.
        Uninstall = "uninstall",
    }
);

text_enum!(
    /// Whom the license is associated with at Apple.
    LicenseType {
        /// A VPP user (clientUserId).
        User = "user",
        /// A device serial number.
        Device = "device",
    }
);

text_enum!(
    /// A license this server asked Apple for.
    LicenseState {
        /// Reserved here, not yet accepted by Apple.
        Pending = "pending",
        /// Apple accepted the request; waiting for its event to complete.
        Associating = "associating",
        /// Apple confirmed the association.
        Associated = "associated",
        /// Apple refused it.
        Failed = "failed",
        /// Given back because nothing needs it any more: disassociation asked of Apple;
        /// the record goes once Apple confirms.
        Releasing = "releasing",
        /// Taken back on purpose (revoked by an admin, or the user declined the install):
        /// disassociation asked of Apple.
        Revoking = "revoking",
        /// Taken back and confirmed; kept so the license is not asked for again until
        /// the device (or user) comes under an assignment anew.
        Revoked = "revoked",
    }
);

text_enum!(
    /// A user as registered at Apple under one token (Apple's user `status`, plus
    /// the steps before Apple answers).
    VppUserStatus {
        /// Asked Apple to create the user; waiting for the event.
        Registering = "registering",
        /// Created at Apple, has an invite code, has not joined yet.
        Registered = "registered",
        /// Joined the VPP program with an Apple Account (Apple has its idHash).
        Associated = "associated",
        /// Retired at Apple.
        Retired = "retired",
        /// Apple refused to create the user; see the error.
        Failed = "failed",
    }
);

text_enum!(
    /// An app's install state on one device, as admins see it.
    InstallStatus {
        /// The license is being associated at Apple.
        Pending = "pending",
        /// InstallApplication is queued for the device.
        Queued = "queued",
        /// The device is installing (or prompting).
        Installing = "installing",
        /// Verified present on the device with a version.
        Installed = "installed",
        /// The install failed; see the reason.
        Failed = "failed",
        /// No license could be associated; see the reason.
        LicenseFailed = "license_failed",
        /// The device waits for its user to answer a prompt.
        Prompting = "prompting",
        /// The assignment cannot apply to this device; see the reason.
        NotApplicable = "not_applicable",
        /// Installed once, but no longer on the device (the user deleted it); the
        /// license stays assigned.
        NotInstalled = "not_installed",
        /// The license is assigned; the assignment asks for no install.
        Licensed = "licensed",
        /// RemoveApplication is queued (Uninstall intent).
        Removing = "removing",
        /// The device removed the app; the license goes back.
        Removed = "removed",
        /// Installed, and a newer version is in the store (see the reason).
        UpdateAvailable = "update_available",
    }
);

text_enum!(
    /// The kind of members a group holds.
    GroupKind {
        /// Devices.
        Device = "device",
        /// Users (their devices are the devices with that user).
        User = "user",
    }
);

text_enum!(
    /// The platform of a device, from its product name.
    Platform {
        /// iPhone, iPod.
        Ios = "ios",
        /// iPad.
        IpadOs = "ipados",
        /// Mac.
        MacOs = "macos",
        /// Not known (no product name yet).
        Unknown = "unknown",
    }
);

impl Platform {
    /// The platform of a product name such as `iPhone15,2`, `iPad13,18` or `Mac14,2`,
    /// as the store's rules tell it ([`DeviceKind::of_product`]).
    pub fn of_product(product_name: Option<&str>) -> Self {
        use orchard_protocol::store_item::DeviceKind;
        match product_name.and_then(DeviceKind::of_product) {
            Some(DeviceKind::IPhone) => Self::Ios,
            Some(DeviceKind::IPad) => Self::IpadOs,
            Some(DeviceKind::AppleSiliconMac | DeviceKind::IntelMac) => Self::MacOs,
            None => Self::Unknown,
        }
    }
}

/// An OS version as text that sorts in version order (`17.2` →
/// `00017.00002.00000.00000`), stored beside the version so lists filter by "at least"
/// and "below" in the database. None for text that is not a version.
pub fn os_version_key(version: &str) -> Option<String> {
    let mut parts = Vec::with_capacity(4);
    for part in version.trim().split('.') {
        let n: u32 = part.parse().ok()?;
        if n > 99_999 || parts.len() == 4 {
            return None;
        }
        parts.push(format!("{n:05}"));
    }
    while parts.len() < 4 {
        parts.push("00000".into());
    }
    Some(parts.join("."))
}

/// Which devices a list shows (every field narrows it; none: all).
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// On this platform.
    pub platform: Option<Platform>,
    /// OS version at least this [`os_version_key`].
    pub os_at_least: Option<String>,
    /// OS version below this [`os_version_key`].
    pub os_below: Option<String>,
    /// In this group (a device group, or a user group through the device's user).
    pub group_id: Option<String>,
    /// Supervised, or not.
    pub supervised: Option<bool>,
    /// Ownership as reported, e.g. `corporate`.
    pub ownership: Option<String>,
    /// In this enrollment state.
    pub status: Option<EnrollmentStatus>,
    /// Last seen at or after.
    pub seen_since: Option<Timestamp>,
    /// Last seen before (or never).
    pub seen_before: Option<Timestamp>,
    /// With this user.
    pub user_id: Option<String>,
}

/// Which install rows a list shows.
#[derive(Debug, Clone, Default)]
pub struct InstallFilter {
    /// Of this app.
    pub app_id: Option<String>,
    /// On this device.
    pub udid: Option<Udid>,
    /// On the devices of this user.
    pub user_id: Option<String>,
    /// In this status.
    pub status: Option<InstallStatus>,
    /// On devices of this platform.
    pub platform: Option<Platform>,
    /// On devices of this group.
    pub group_id: Option<String>,
    /// Of apps of this VPP token.
    pub token_id: Option<String>,
}

/// Which prompts a list shows.
#[derive(Debug, Clone, Default)]
pub struct PromptFilter {
    /// Shown on this device.
    pub udid: Option<Udid>,
    /// For this app (bundle ID).
    pub bundle_id: Option<String>,
    /// Of this kind (its wire name, e.g. `AppInstall`).
    pub kind: Option<String>,
    /// Answered so (wire name, e.g. `Declined`); `Some(None)`: not answered yet.
    pub answer: Option<Option<String>>,
}

/// A change as the event stream tells it (written by the database in the change's own
/// transaction).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// Its place in the stream: ids grow in commit order.
    pub id: i64,
    /// When the change happened (the server's clock).
    pub at: Timestamp,
    /// What changed, e.g. `install.status`, `license.associated`, `device.enrolled`.
    pub kind: String,
    /// The VPP token it concerns.
    pub token_id: Option<String>,
    /// The app it concerns.
    pub app_id: Option<String>,
    /// The device it concerns.
    pub udid: Option<String>,
    /// The details, by kind.
    pub data: serde_json::Value,
}

/// Where events are delivered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookRecord {
    /// Opaque id.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The HMAC-SHA256 key deliveries are signed with (sealed at rest, never shown but
    /// at creation).
    #[serde(skip)]
    pub secret: String,
    /// Only events of this kind or family (none: all).
    pub kind: Option<String>,
    /// The admin token that registered it.
    pub created_by: Option<String>,
    /// Registration time.
    pub created_at: Timestamp,
    /// The id of the last event delivered (or skipped by the filter).
    pub delivered_through: i64,
}

/// One attempt to deliver one event to one webhook.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// Its place in the log.
    pub id: i64,
    /// The webhook.
    pub webhook_id: String,
    /// The event.
    pub event_id: i64,
    /// 1 for the first try of this event.
    pub attempt: i64,
    /// When it was tried.
    pub at: Timestamp,
    /// The receiver's HTTP status (none: no answer).
    pub status_code: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The receiver took it (a 2xx).
    pub delivered: bool,
}

/// Which events a list or stream shows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Of this kind (`install.status`) or family (`install`).
    pub kind: Option<String>,
    /// Of this app.
    pub app_id: Option<String>,
    /// Of this device.
    pub udid: Option<String>,
    /// Of this token.
    pub token_id: Option<String>,
}

/// Which audit entries a list shows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// By the admin token with this name or id.
    pub actor: Option<String>,
    /// This action, e.g. `group.create`.
    pub action: Option<String>,
    /// On this target.
    pub target: Option<String>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub before: Option<Timestamp>,
}

text_enum!(
    /// What an admin token may do (see `access` for the permissions of each).
    Role {
        /// Everything, admin tokens and webhooks included.
        Admin = "admin",
        /// Apps and VPP tokens, and everything an operator may do.
        Manager = "manager",
        /// Assignments, groups, devices, users, enrollment and licenses; no VPP
        /// tokens, no admin tokens.
        Operator = "operator",
        /// Reads everything but secrets and admin tokens; changes nothing.
        Auditor = "auditor",
    }
);

/// Devices of one app in one install status with one product name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallCount {
    /// The status.
    pub status: InstallStatus,
    /// The devices' product name (none: not reported yet).
    pub product_name: Option<String>,
    /// How many.
    pub devices: i64,
}

/// A named admin API token (only the hash of its secret is kept).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminTokenRecord {
    /// Opaque id.
    pub id: String,
    /// Unique display name, e.g. "ci-pipeline".
    pub name: String,
    /// SHA-256 of the secret, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// What it may do.
    pub role: Role,
    /// It authenticates nothing from this time on (none: never expires).
    pub expires_at: Option<Timestamp>,
    /// The id of the token that created it (none: made at first start or by the
    /// recovery command on the server's host).
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// When its secret was last replaced.
    pub rotated_at: Option<Timestamp>,
}

/// What became of a request to delete an admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTokenRemoval {
    /// Deleted.
    Deleted,
    /// There is no token with that id.
    NotFound,
    /// It is the last unexpired `admin` token: kept.
    LastAdmin,
}

impl AdminTokenRemoval {
    /// Whether `token` may go, given every `admin` token (read in the removal's
    /// transaction): not when it is the last unexpired one.
    pub fn decide(token: &AdminTokenRecord, admins: &[AdminTokenRecord], now: Timestamp) -> Self {
        let others_live = admins.iter().any(|a| a.id != token.id && !a.expired(now));
        if token.role == Role::Admin && !others_live {
            Self::LastAdmin
        } else {
            Self::Deleted
        }
    }
}

impl AdminTokenRecord {
    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A console sign-in: the session cookie's hash and the admin token it acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 of the cookie's value, hex (the value itself is never stored).
    pub id_hash: String,
    /// The admin token the session acts as.
    pub admin_token_id: String,
    /// Sign-in time.
    pub created_at: Timestamp,
    /// It authenticates nothing from this time on.
    pub expires_at: Timestamp,
}

/// An enrollment token an admin handed out (only its hash is kept).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollmentTokenRecord {
    /// Opaque id.
    pub id: String,
    /// What it is for, e.g. "Lab iPads".
    pub name: String,
    /// SHA-256 of the token, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// Enrollments it may still admit.
    pub uses_left: i64,
    /// It admits nothing after this.
    pub expires_at: Timestamp,
    /// Only a device with this serial number may use it.
    pub serial_number: Option<SerialNumber>,
    /// Only a device with this UDID may use it.
    pub udid: Option<Udid>,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Creation time.
    pub created_at: Timestamp,
}

/// One audit log entry: who did what to which target, when, with what result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its place in the log (0 before it is written).
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// The admin token's name (or who failed to authenticate).
    pub actor: String,
    /// The id of the admin token that acted (none: not authenticated).
    pub actor_token: Option<String>,
    /// The action, e.g. `token.upload`.
    pub action: String,
    /// The target's id.
    pub target: String,
    /// `ok` or the error code.
    pub result: String,
}

/// An enrolled device.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    /// UDID.
    pub udid: Udid,
    /// Serial number.
    pub serial_number: SerialNumber,
    /// Product name.
    pub product_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Platform, from the product name.
    pub platform: Platform,
    /// SHA-256 of the identity certificate bound to this enrollment.
    #[serde(skip)]
    pub cert_fingerprint: String,
    /// Enrollment state.
    pub status: EnrollmentStatus,
    /// APNs topic.
    #[serde(skip)]
    pub topic: Option<String>,
    /// PushMagic from the last TokenUpdate.
    #[serde(skip)]
    pub push_magic: Option<String>,
    /// Supervised, as last reported.
    pub is_supervised: Option<bool>,
    /// `Corporate` or `Personal`, as enrolled.
    pub ownership: Option<String>,
    /// Runs in single-app (kiosk) mode.
    pub single_app_mode: Option<bool>,
    /// The App Store is usable (from the Restrictions query).
    pub app_store_allowed: Option<bool>,
    /// The device's user, if any.
    pub user_id: Option<String>,
    /// When the certificate was issued.
    pub enrolled_at: Timestamp,
    /// Last request.
    pub last_seen_at: Timestamp,
}

/// A command to queue.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// CommandUUID.
    pub uuid: CommandUuid,
    /// Target device.
    pub udid: Udid,
    /// RequestType.
    pub request_type: String,
    /// The app the command concerns, if any.
    pub app_id: Option<String>,
    /// The full envelope in XML plist.
    pub payload: Vec<u8>,
    /// Not sent before this time.
    pub not_before: Timestamp,
    /// Creation time.
    pub created_at: Timestamp,
}

impl NewCommand {
    /// Wraps a command in its envelope with a fresh CommandUUID, created and due `now`.
    pub fn new(
        udid: &Udid,
        command: orchard_protocol::command::Command,
        app_id: Option<String>,
        now: Timestamp,
    ) -> Result<Self, orchard_protocol::ProtocolError> {
        let envelope = orchard_protocol::command::CommandEnvelope {
            command_uuid: uuid::Uuid::new_v4().to_string().into(),
            command,
        };
        Ok(Self {
            uuid: envelope.command_uuid.clone(),
            udid: udid.clone(),
            request_type: envelope.command.request_type().to_owned(),
            app_id,
            payload: envelope.to_xml()?,
            not_before: now,
            created_at: now,
        })
    }

    /// The same command, not sent before `at`.
    #[must_use]
    pub fn not_before(mut self, at: Timestamp) -> Self {
        self.not_before = at;
        self
    }
}

/// A queued or finished command.
#[derive(Debug, Clone)]
pub struct QueuedCommand {
    /// CommandUUID.
    pub uuid: CommandUuid,
    /// Target device.
    pub udid: Udid,
    /// RequestType.
    pub request_type: String,
    /// The app the command concerns.
    pub app_id: Option<String>,
    /// The envelope.
    pub payload: Vec<u8>,
    /// State.
    pub status: CommandState,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Everything one command result changes, applied in one transaction.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// Device.
    pub udid: Udid,
    /// Command.
    pub uuid: CommandUuid,
    /// New state of the command.
    pub status: CommandState,
    /// The device's report body.
    pub result: Vec<u8>,
    /// Install states to write.
    pub installs: Vec<InstallRecord>,
    /// Commands to queue.
    pub follow_ups: Vec<NewCommand>,
    /// Time of the report.
    pub now: Timestamp,
}

/// One command-channel request, as storage applies it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Device.
    pub udid: Udid,
    /// The device started a session (reported Idle): commands it put off are offered
    /// again. (When it was seen is not written here but with others', see `LastSeen`.)
    pub new_session: bool,
    /// The result the device reported, if any.
    pub outcome: Option<CommandOutcome>,
    /// Time of the request.
    pub now: Timestamp,
}

/// A VPP (content) token.
#[derive(Debug, Clone)]
pub struct VppTokenRecord {
    /// Opaque id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Organisation named in the token file.
    pub org_name: String,
    /// The sToken, Apple's bearer credential.
    pub secret: String,
    /// SHA-256 of the secret, for duplicate detection.
    pub secret_hash: String,
    /// Expiry from the token file.
    pub expires_at: Timestamp,
    /// Apple's location name (from client config).
    pub location_name: Option<String>,
    /// Store country (ISO 3166 alpha-2).
    pub country: Option<String>,
    /// Apple's location id (`uId`).
    pub location_uid: Option<String>,
    /// Upload time.
    pub created_at: Timestamp,
    /// Last successful sync.
    pub last_sync_at: Option<Timestamp>,
    /// Last sync error.
    pub last_sync_error: Option<String>,
    /// Order among tokens holding the same app (lower first).
    pub priority: i64,
    /// The Apple ID of the account that manages the token.
    pub apple_id: Option<String>,
    /// `business` or `education`.
    pub account_type: String,
    /// Push newer versions found at sync to devices of Required assignments.
    pub automatic_updates: bool,
    /// The store country for metadata, as the admin chose it.
    pub store_country: Option<String>,
    /// The other MDM Apple names as owner, while the token is not this server's.
    pub external_mdm: Option<String>,
    /// Why the token is not used (expired or revoked), until renewed.
    pub disabled_reason: Option<String>,
    /// The bearer secret Apple sends with notifications for this token.
    pub notification_secret: Option<String>,
    /// When Apple's last notification came.
    pub last_notification_at: Option<Timestamp>,
    /// Whether Apple notifies this server, and if not why (it polls instead).
    pub notifications: Option<String>,
}

impl VppTokenRecord {
    /// A business token `t` uploaded at the epoch, never synced, expiring a year later,
    /// for tests to change what matters to them.
    pub fn example() -> Self {
        Self {
            id: "t".into(),
            name: "HQ".into(),
            org_name: "Example Org".into(),
            secret: "secret".into(),
            secret_hash: "hash".into(),
            expires_at: Timestamp::UNIX_EPOCH + std::time::Duration::from_secs(365 * 24 * 3600),
            location_name: None,
            country: None,
            location_uid: None,
            created_at: Timestamp::UNIX_EPOCH,
            last_sync_at: None,
            last_sync_error: None,
            priority: 0,
            apple_id: None,
            account_type: "business".into(),
            automatic_updates: false,
            store_country: None,
            external_mdm: None,
            disabled_reason: None,
            notification_secret: None,
            last_notification_at: None,
            notifications: None,
        }
    }
}

/// License counts of an asset, as Apple reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LicenseCounts {
    /// Purchased.
    pub total: i64,
    /// Associated with users or devices.
    pub assigned: i64,
    /// Free.
    pub available: i64,
    /// Retired.
    pub retired: i64,
}

/// An app or book synced from a token.
#[derive(Debug, Clone)]
pub struct AppRecord {
    /// Opaque id.
    pub id: String,
    /// The token it was bought with.
    pub token_id: String,
    /// App Store id.
    pub adam_id: AdamId,
    /// `STDQ` or `PLUS`.
    pub pricing_param: String,
    /// `App` or `Book`.
    pub product_type: String,
    /// Store name.
    pub name: Option<String>,
    /// Bundle identifier.
    pub bundle_id: Option<String>,
    /// Current store version.
    pub version: Option<String>,
    /// Supported platforms.
    pub platforms: Vec<String>,
    /// Can be associated with serial numbers.
    pub device_assignable: bool,
    /// License counts.
    pub counts: LicenseCounts,
    /// Last update.
    pub updated_at: Timestamp,
    /// How long an install may stay `Installing` before it counts as failed (none: the
    /// server's default).
    pub install_timeout_seconds: Option<i64>,
    /// The app's page in the token's store country.
    pub store_url: Option<String>,
    /// The OS the current version needs, e.g. `15.0`.
    pub minimum_os_version: Option<String>,
}

/// The UDID and status of the enrollment a certificate is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The device.
    pub udid: Udid,
    /// Its enrollment status.
    pub status: EnrollmentStatus,
}

impl Standing {
    /// The standing of a device record.
    pub fn of(d: &DeviceRecord) -> Self {
        Self {
            udid: d.udid.clone(),
            status: d.status,
        }
    }
}

#[cfg(test)]
impl AppRecord {
    /// App `a` of token `t` (adamId 1), device-assignable with 10 licenses free, no store
    /// metadata, for tests to change what matters to them.
    pub fn example() -> Self {
        Self {
            id: "a".into(),
            token_id: "t".into(),
            adam_id: orchard_protocol::AdamId(1),
            pricing_param: "STDQ".into(),
            product_type: "App".into(),
            name: None,
            bundle_id: Some("b".into()),
            version: Some("1".into()),
            platforms: vec![],
            device_assignable: true,
            counts: LicenseCounts {
                total: 10,
                assigned: 0,
                available: 10,
                retired: 0,
            },
            updated_at: Timestamp::UNIX_EPOCH,
            install_timeout_seconds: None,
            store_url: None,
            minimum_os_version: None,
        }
    }
}

/// One sync's result for a token.
#[derive(Debug, Clone)]
pub struct SyncRecord {
    /// Token.
    pub token_id: String,
    /// Location name.
    pub location_name: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Location id.
    pub location_uid: Option<String>,
    /// Apps as Apple reports them now (matched to stored apps by adamId and pricing).
    pub apps: Vec<AppRecord>,
    /// Time of the sync.
    pub now: Timestamp,
}

/// A group.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupRecord {
    /// Opaque id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Member kind.
    pub kind: GroupKind,
    /// Creation time.
    pub created_at: Timestamp,
}

/// An app assigned to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AssignmentRecord {
    /// Opaque id.
    pub id: String,
    /// App.
    pub app_id: String,
    /// Group.
    pub group_id: String,
    /// Intent.
    pub intent: Intent,
    /// License type.
    pub license_type: LicenseType,
    /// Install the app (false: only hold the license, for devices whose installs
    /// another tool does).
    pub install: bool,
    /// Use every token holding the app, in priority order, not only the app's own.
    pub any_token: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of intent, license type or install.
    pub updated_at: Option<Timestamp>,
}

/// What an install handed out to a device is checked against: the assignments reaching
/// the device, and its and its user's licenses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStanding {
    /// The device's candidates, in service order.
    pub candidates: Vec<Candidate>,
    /// The device's licenses.
    pub licenses: Vec<LicenseRecord>,
    /// The user licenses of the device's user.
    pub user_licenses: Vec<UserLicenseRecord>,
}

/// One assignment reaching one device, with what the engine needs to know about both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    /// Assignment.
    pub assignment_id: String,
    /// App.
    pub app_id: String,
    /// The group through which it reaches the device.
    pub group_id: String,
    /// A device group, or a user group (through the device's user).
    pub group_kind: GroupKind,
    /// Intent.
    pub intent: Intent,
    /// License type.
    pub license_type: LicenseType,
    /// Install the app, or only license it.
    pub install: bool,
    /// Any token holding the app may license it.
    pub any_token: bool,
    /// When the assignment was created.
    pub created_at: Timestamp,
    /// When the device came under the assignment: the latest of joining the group and
    /// the assignment's creation or last change.
    pub joined_at: Timestamp,
    /// Device.
    pub udid: Udid,
    /// Serial number.
    pub serial_number: SerialNumber,
    /// The device's user.
    pub user_id: Option<String>,
    /// Single-app mode.
    pub single_app_mode: bool,
    /// App Store usable, if known.
    pub app_store_allowed: Option<bool>,
    /// OS version.
    pub os_version: Option<String>,
    /// Product name (tells the platform).
    pub product_name: Option<String>,
    /// Finished enrollment (sent TokenUpdate); only such devices are served.
    pub active: bool,
    /// When the device enrolled (a newer enrollment of the same serial number wins it).
    pub enrolled_at: Timestamp,
    /// When the device was last heard from.
    pub last_seen_at: Timestamp,
    /// The hash of the Apple Account its App Store is signed in to, as last reported.
    pub account_hash: Option<String>,
}

/// An (app, device) pair a Required, device-licensed assignment targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// App.
    pub app_id: String,
    /// Device.
    pub udid: Udid,
    /// Its serial number.
    pub serial_number: SerialNumber,
    /// When it joined the targeting group (earliest, if several).
    pub joined_at: Timestamp,
    /// Install the app once licensed (false: license only).
    pub install: bool,
    /// When the device enrolled.
    pub enrolled_at: Timestamp,
    /// When the device was last heard from.
    pub last_seen_at: Timestamp,
}

/// A license this server asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseRecord {
    /// App.
    pub app_id: String,
    /// Device.
    pub udid: Udid,
    /// Serial number associated.
    pub serial_number: SerialNumber,
    /// State.
    pub state: LicenseState,
    /// Apple's event id.
    pub event_id: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// The outcome of one association event.
#[derive(Debug, Clone)]
pub struct AssociationOutcome {
    /// App.
    pub app_id: String,
    /// Devices whose license Apple confirmed.
    pub associated: Vec<Udid>,
    /// Devices Apple refused, with the reason.
    pub failed: Vec<(Udid, String)>,
    /// Install commands for the confirmed devices.
    pub installs: Vec<NewCommand>,
    /// Install states to write.
    pub install_rows: Vec<InstallRecord>,
    /// Time.
    pub now: Timestamp,
}

/// An app's install state on a device.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct InstallRecord {
    /// App.
    pub app_id: String,
    /// Device.
    pub udid: Udid,
    /// Orchard's status.
    pub status: InstallStatus,
    /// Apple's last reported status (`ManagedApplicationList`).
    pub device_status: Option<String>,
    /// Installed version.
    pub version: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the current status began (kept by storage while the status stays).
    #[serde(rename = "status_since")]
    pub since: Option<Timestamp>,
}

/// A person in the directory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserRecord {
    /// Opaque id.
    pub id: String,
    /// Email (unique).
    pub email: String,
    /// Managed Apple Account, if the organisation has one for the user (unique).
    pub managed_apple_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// When an admin deleted the user: it goes once its licenses are back and its
    /// registrations retired at Apple.
    pub deleted_at: Option<Timestamp>,
}

/// A user as registered at Apple under one token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VppUserRecord {
    /// Token.
    pub token_id: String,
    /// User.
    pub user_id: String,
    /// Apple's `clientUserId` (chosen by this server).
    pub client_user_id: String,
    /// Status.
    pub status: VppUserStatus,
    /// Apple's event for the registration.
    #[serde(skip)]
    pub event_id: Option<String>,
    /// Invite code for the VPP invitation.
    #[serde(skip)]
    pub invite_code: Option<String>,
    /// Apple's opaque hash of the user's Apple Account, once joined.
    pub id_hash: Option<String>,
    /// The device the invitation was sent to.
    pub invited_udid: Option<String>,
    /// When the invitation was sent.
    pub invited_at: Option<Timestamp>,
    /// The user's answer to the invitation (`Accepted`, `Declined`, `Dismissed`).
    pub invitation_answer: Option<String>,
    /// When the user answered.
    pub answered_at: Option<Timestamp>,
    /// Last error.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A user license this server asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLicenseRecord {
    /// App.
    pub app_id: String,
    /// User.
    pub user_id: String,
    /// State.
    pub state: LicenseState,
    /// Apple's event id.
    pub event_id: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// An (app, device) pair a Required, user-licensed assignment targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTarget {
    /// App.
    pub app_id: String,
    /// The device's user (none: the device has no user).
    pub user_id: Option<String>,
    /// Device.
    pub udid: Udid,
    /// When it joined the targeting group (earliest, if several).
    pub joined_at: Timestamp,
    /// The device runs in single-app mode.
    pub single_app_mode: bool,
    /// The App Store is usable, if known.
    pub app_store_allowed: Option<bool>,
    /// Install the app once licensed (false: license only).
    pub install: bool,
    /// The hash of the Apple Account the device's App Store is signed in to.
    pub account_hash: Option<String>,
}

#[cfg(test)]
impl Candidate {
    /// A Required, device-licensed assignment of app `app` reaching an active iPhone
    /// `U` on iOS 17.5, for tests to change what matters to them.
    pub fn example() -> Self {
        Self {
            assignment_id: "a".into(),
            app_id: "app".into(),
            group_id: "g".into(),
            group_kind: GroupKind::Device,
            intent: Intent::Required,
            license_type: LicenseType::Device,
            install: true,
            any_token: false,
            created_at: Timestamp::UNIX_EPOCH,
            joined_at: Timestamp::UNIX_EPOCH,
            udid: "U".into(),
            serial_number: "S".into(),
            user_id: None,
            single_app_mode: false,
            app_store_allowed: None,
            os_version: Some("17.5".into()),
            product_name: Some("iPhone15,2".into()),
            active: true,
            enrolled_at: Timestamp::UNIX_EPOCH,
            last_seen_at: Timestamp::UNIX_EPOCH,
            account_hash: None,
        }
    }
}

/// A prompt a device showed its user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PromptRecord {
    /// Device.
    pub udid: Udid,
    /// The device's id for the prompt.
    pub prompt_id: String,
    /// `VPPInvitation`, `AppInstall`, `AppUpdate` or `AppleID`.
    pub kind: String,
    /// App bundle id, for app prompts.
    pub bundle_id: Option<String>,
    /// App Store id, for app prompts.
    pub adam_id: Option<String>,
    /// When shown.
    pub shown_at: Timestamp,
    /// The answer, once given.
    pub answer: Option<String>,
    /// When answered.
    pub answered_at: Option<Timestamp>,
}

/// Keyset pagination: up to `limit` items after `cursor`.
#[derive(Debug, Clone)]
pub struct Page {
    /// Maximum items.
    pub limit: i64,
    /// The last key of the previous page.
    pub cursor: Option<String>,
}

impl Page {
    /// Everything, for internal callers.
    pub fn all() -> Self {
        Self {
            limit: i64::MAX,
            cursor: None,
        }
    }
}
