//! JSON bodies of Apple's Apps and Books for Organizations API (v2) and of the
//! iTunes lookup API, with Apple's field names.

use serde::{Deserialize, Serialize};

/// `ClientConfigResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfigResponse {
    /// Store country of the location.
    #[serde(rename = "countryISO2ACode")]
    pub country_iso2a_code: Option<String>,
    /// Location name.
    pub location_name: Option<String>,
    /// Location id.
    pub u_id: Option<String>,
    /// The MDM that claims the location.
    pub mdm_info: Option<MdmInfo>,
    /// Set when the token expires soon.
    pub token_expiration_date: Option<String>,
}

/// `MdmInfo`: which MDM owns a location.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MdmInfo {
    /// The MDM's id.
    pub id: String,
    /// The MDM's name.
    pub name: String,
    /// Free-form metadata.
    pub metadata: String,
}

/// Where Apple sends notifications, and the bearer secret it sends with them.
#[derive(Debug, Clone)]
pub struct NotificationTarget {
    /// HTTPS URL.
    pub url: String,
    /// Bearer secret.
    pub secret: String,
}

/// The notification types Orchard subscribes to (the complete list Apple takes).
pub const NOTIFICATION_TYPES: [&str; 5] = [
    "ASSET_MANAGEMENT",
    "ASSET_COUNT",
    "USER_MANAGEMENT",
    "USER_ASSOCIATED",
    "TEST_NOTIFICATION",
];

/// Apple's notification envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEnvelope {
    /// Unique per notification (the de-duplication key).
    pub notification_id: String,
    /// `ASSET_MANAGEMENT`, `ASSET_COUNT`, ...
    pub notification_type: String,
    /// The payload.
    #[serde(default)]
    pub notification: serde_json::Value,
    /// Location.
    #[serde(default)]
    pub u_id: Option<String>,
}

/// `ResponseAsset`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseAsset {
    /// App Store id, as a string.
    pub adam_id: String,
    /// `STDQ` or `PLUS`.
    #[serde(default)]
    pub pricing_param: Option<String>,
    /// `App` or `Book`.
    pub product_type: String,
    /// Licenses associated.
    pub assigned_count: i64,
    /// Licenses free.
    pub available_count: i64,
    /// Licenses retired.
    #[serde(default)]
    pub retired_count: i64,
    /// Licenses purchased.
    pub total_count: i64,
    /// Can be associated with serial numbers.
    #[serde(default)]
    pub device_assignable: bool,
    /// Can be revoked.
    #[serde(default)]
    pub revocable: bool,
    /// Platforms.
    #[serde(default)]
    pub supported_platforms: Vec<String>,
}

/// `GetAssetsResponse` (one page).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetAssetsResponse {
    /// The assets of this page.
    #[serde(default)]
    pub assets: Vec<ResponseAsset>,
    /// This page.
    #[serde(default)]
    pub current_page_index: i64,
    /// The next page, absent on the last.
    pub next_page_index: Option<i64>,
    /// Pages in all.
    #[serde(default)]
    pub total_pages: i64,
}

/// `Asset` in requests.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAsset {
    /// App Store id, as a string.
    pub adam_id: String,
    /// `STDQ` or `PLUS`.
    pub pricing_param: String,
}

/// `ManageAssetsRequest`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManageAssetsRequest {
    /// Assets.
    pub assets: Vec<RequestAsset>,
    /// Serial numbers (device licensing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub serial_numbers: Vec<String>,
    /// Client user ids (user licensing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_user_ids: Vec<String>,
}

/// `ServiceConfigResponse`: the URLs and limits Orchard reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceConfigResponse {
    /// Endpoint URLs.
    pub urls: ServiceUrls,
    /// Apple's limits per call.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Apple's limits per call (service config `limits`); missing values are Apple's
/// documented ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// Assets per association request.
    pub max_assets: usize,
    /// Client user ids per association request.
    pub max_client_user_ids: usize,
    /// Serial numbers per association request.
    pub max_serial_numbers: usize,
    /// Users per users request.
    pub max_users: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_assets: 25,
            max_client_user_ids: 1000,
            max_serial_numbers: 1000,
            max_users: 100,
        }
    }
}

/// `ServiceConfigResponse.urls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUrls {
    /// The VPP invitation URL template (`%25inviteCode%25` stands for the code).
    #[serde(default)]
    pub invitation_email: Option<String>,
}

/// `RequestUser` inside `ManageUsersRequest`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestUser {
    /// This server's id for the user.
    pub client_user_id: String,
    /// The user's email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's Managed Apple Account, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_apple_id: Option<String>,
}

/// `ManageUsersRequest` (`POST /users/create`, `/users/update`).
#[derive(Debug, Clone, Serialize)]
pub struct ManageUsersRequest {
    /// Users.
    pub users: Vec<RequestUser>,
}

/// `ResponseUser`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseUser {
    /// This server's id for the user.
    pub client_user_id: String,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Apple's hash of the user's Apple Account, once associated.
    #[serde(default)]
    pub id_hash: Option<String>,
    /// Invite code, until associated.
    #[serde(default)]
    pub invite_code: Option<String>,
    /// `Registered`, `Associated` or `Retired`.
    pub status: String,
}

/// `GetUsersResponse` (one page).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetUsersResponse {
    /// Users on this page.
    #[serde(default)]
    pub users: Vec<ResponseUser>,
    /// The next page, absent on the last.
    #[serde(default)]
    pub next_page_index: Option<i64>,
    /// The list's version; `sinceVersionId` of the next incremental read.
    #[serde(default)]
    pub version_id: Option<String>,
}

/// Users changed since a version, and the version to read from next time.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// The users (all of them on a first read).
    pub users: Vec<ResponseUser>,
    /// `versionId` of the first page.
    pub version_id: Option<String>,
}

/// `EventResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResponse {
    /// The asynchronous event to follow.
    pub event_id: String,
}

/// `eventStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventStatus {
    /// Still running.
    Pending,
    /// Done (see failures for per-item errors).
    Complete,
    /// Failed.
    Failed,
}

/// `StatusResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// State of the event.
    pub event_status: EventStatus,
    /// Items requested.
    #[serde(default)]
    pub num_requested: i64,
    /// Items done.
    #[serde(default)]
    pub num_completed: i64,
    /// Per-item errors.
    #[serde(default)]
    pub failures: Vec<ErrorResponse>,
}

/// `ErrorResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    /// Apple's error number.
    pub error_number: Option<i64>,
    /// Apple's message.
    pub error_message: Option<String>,
    /// The items the error concerns.
    pub error_info: Option<ErrorInfo>,
}

/// `ErrorInfo`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Serial numbers concerned.
    #[serde(default)]
    pub serial_numbers: Vec<String>,
    /// Client user ids concerned.
    #[serde(default)]
    pub client_user_ids: Vec<String>,
}

/// One result of the iTunes lookup API.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupResult {
    /// App Store id.
    pub track_id: u64,
    /// Name.
    pub track_name: Option<String>,
    /// Bundle identifier.
    pub bundle_id: Option<String>,
    /// Current version.
    pub version: Option<String>,
    /// Devices, e.g. `iPhone5s-iPhone5s`.
    #[serde(default)]
    pub supported_devices: Vec<String>,
    /// `software` or `mac-software`.
    pub kind: Option<String>,
    /// The OS the current version needs.
    pub minimum_os_version: Option<String>,
    /// The app's page in this store.
    pub track_view_url: Option<String>,
}

/// The iTunes lookup API's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupResponse {
    /// Results.
    #[serde(default)]
    pub results: Vec<LookupResult>,
}
