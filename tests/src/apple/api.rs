//! The stand-in's HTTP API: Apple's Apps and Books for Organizations v2 paths and JSON
//! field names under `/mdm/v2`, the iTunes lookup API at `/lookup`, and a testbed-only
//! side under `/testbed` (hand out token files).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::state::{Event, VppUser, World};

/// Shared world.
pub(super) type SharedWorld = Arc<Mutex<World>>;

pub(super) fn lock(world: &SharedWorld) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// An answer with Apple's error body `{errorNumber, errorMessage}`.
struct AppleFault(StatusCode, i64, &'static str);

impl IntoResponse for AppleFault {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({ "errorNumber": self.1, "errorMessage": self.2 })),
        )
            .into_response()
    }
}

fn apple_error(status: StatusCode, number: i64, message: &'static str) -> Response {
    AppleFault(status, number, message).into_response()
}

/// The error numbers the stand-in answers with, as service config lists them.
const ERROR_CODES: [(i64, &str); 27] = [
    (9600, "Missing argument"),
    (9601, "Login required"),
    (9602, "Invalid argument"),
    (9603, "Internal error"),
    (9609, "Registered user not found"),
    (9621, "Token has expired"),
    (9622, "Invalid authentication token"),
    (9625, "The server has revoked the sToken"),
    (9646, "Too many requests"),
    (9650, "Page index out of range"),
    (9700, "Too many assets"),
    (9701, "Too many clientUserIds"),
    (9702, "Too many serialNumbers"),
    (9703, "Duplicate assets"),
    (9704, "Duplicate clientUserIds"),
    (9705, "Duplicate serial numbers"),
    (9706, "Asset not revocable"),
    (9707, "Asset is not device assignable"),
    (9708, "Event not found"),
    (9709, "Not enough licenses"),
    (9712, "Notification URL must be https"),
    (9718, "Assets are missing"),
    (9719, "clientUserIds or serialNumbers needed"),
    (9721, "Invalid versionId"),
    (9726, "Unsupported HTTP method"),
    (9727, "Unsupported Content-Type"),
    (9728, "Notification URL is unreachable"),
];

/// Routes of the stand-in.
pub(super) fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/mdm/v2/service/config", get(service_config))
        .route(
            "/mdm/v2/client/config",
            get(client_config).post(set_client_config),
        )
        .route("/mdm/v2/assets", get(assets))
        .route("/mdm/v2/assets/associate", post(associate))
        .route("/mdm/v2/assets/disassociate", post(disassociate))
        .route("/mdm/v2/assignments", get(assignments))
        .route("/mdm/v2/status", get(status))
        .route("/mdm/v2/users", get(users))
        .route("/mdm/v2/users/create", post(create_users))
        .route("/mdm/v2/users/update", post(update_users))
        .route("/mdm/v2/users/retire", post(retire_users))
        .route("/mdm/v2/assets/revoke", post(revoke_assets))
        .route("/lookup", get(lookup))
        .route("/associateVPPUserWithITSAccount", get(accept_invitation))
        .route("/store/license", get(store_license))
        .merge(super::testbed_admin::routes())
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(json_posts_only))
        .layer(axum::middleware::from_fn_with_state(
            world.clone(),
            super::testbed_admin::inject_faults,
        ))
        .with_state(world)
}

/// Resolves the bearer token to a location, or answers as Apple does.
fn authenticate(world: &World, headers: &HeaderMap) -> Result<String, AppleFault> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(AppleFault(
            StatusCode::UNAUTHORIZED,
            9722,
            "Authorization header is missing",
        ));
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return Err(AppleFault(
            StatusCode::UNAUTHORIZED,
            9722,
            "Authorization header must be Bearer {sToken}",
        ));
    };
    let Some(uid) = world.location_of(token.trim()) else {
        // Apple answers an unknown token inside HTTP 200.
        return Err(AppleFault(
            StatusCode::OK,
            9622,
            "Invalid authentication token",
        ));
    };
    if world
        .locations
        .get(&uid)
        .is_some_and(|l| l.expires <= time::OffsetDateTime::now_utc())
    {
        return Err(AppleFault(
            StatusCode::UNAUTHORIZED,
            9621,
            "Token has expired",
        ));
    }
    Ok(uid)
}

fn expiration(world: &World, uid: &str) -> Value {
    world
        .locations
        .get(uid)
        .map(|l| {
            json!(
                l.expires
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            )
        })
        .unwrap_or(Value::Null)
}

async fn service_config(State(world): State<SharedWorld>, headers: HeaderMap) -> Json<Value> {
    let (max_serials, template) = {
        let world = lock(&world);
        (world.max_serial_numbers, world.invitation_template.clone())
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("https://{host}/mdm/v2");
    Json(json!({
        "urls": {
            "clientConfig": format!("{base}/client/config"),
            "getAssets": format!("{base}/assets"),
            "associateAssets": format!("{base}/assets/associate"),
            "disassociateAssets": format!("{base}/assets/disassociate"),
            "revokeAssets": format!("{base}/assets/revoke"),
            "getAssignments": format!("{base}/assignments"),
            "getUsers": format!("{base}/users"),
            "createUsers": format!("{base}/users/create"),
            "updateUsers": format!("{base}/users/update"),
            "retireUsers": format!("{base}/users/retire"),
            "eventStatus": format!("{base}/status"),
            "contentMetadataLookup": format!("https://{host}/lookup"),
            "invitationEmail": template.unwrap_or_else(|| format!("https://{host}/associateVPPUserWithITSAccount?inviteCode=%25inviteCode%25&mt=8")),
        },
        "limits": {
            "maxAssets": 25, "maxClientUserIds": 1000, "maxSerialNumbers": max_serials,
            "maxRevokeClientUserIds": 100, "maxRevokeSerialNumbers": 100, "maxUsers": 100,
            "maxNotificationLength": 512, "maxMdmIdLength": 100, "maxMdmNameLength": 100,
            "maxMdmMetadataLength": 255,
        },
        "notificationTypes": ["ASSET_MANAGEMENT", "ASSET_COUNT", "USER_MANAGEMENT", "USER_ASSOCIATED", "TEST_NOTIFICATION"],
        "errorCodes": ERROR_CODES
            .iter()
            .map(|(number, message)| json!({ "errorNumber": number, "errorMessage": message }))
            .collect::<Vec<_>>(),
    }))
}

async fn client_config(State(world): State<SharedWorld>, headers: HeaderMap) -> Response {
    let world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let Some(location) = world.locations.get(&uid) else {
        return apple_error(StatusCode::INTERNAL_SERVER_ERROR, 9603, "Internal error");
    };
    let mut body = json!({
        "countryISO2ACode": location.country,
        "defaultPlatform": "volumestore",
        "locationName": location.name,
        "notificationUrl": "",
        "subscribedNotificationTypes": [],
        "tokenExpirationDate": expiration(&world, &uid),
        "uId": uid,
        "websiteURL": "https://business.apple.com",
    });
    if let Some(info) = &location.mdm_info {
        body["mdmInfo"] = info.clone();
    }
    Json(body).into_response()
}

/// `POST /client/config`: the caller claims the location (`mdmInfo`) and names where
/// notifications go.
async fn set_client_config(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut tested = None;
    {
        let mut world = lock(&world);
        let uid = match authenticate(&world, &headers) {
            Ok(uid) => uid,
            Err(fault) => return fault.into_response(),
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return apple_error(
                StatusCode::BAD_REQUEST,
                9602,
                "Invalid argument: body is not JSON",
            );
        };
        if let Some(info) = body.get("mdmInfo") {
            let field = |k: &str| info.get(k).and_then(Value::as_str).map(str::len);
            match (field("id"), field("name"), field("metadata")) {
                (Some(id), Some(name), Some(meta)) => {
                    if id > 100 {
                        return apple_error(StatusCode::BAD_REQUEST, 9724, "MDM id too long");
                    }
                    if name > 100 {
                        return apple_error(StatusCode::BAD_REQUEST, 9725, "MDM name too long");
                    }
                    if meta > 255 {
                        return apple_error(StatusCode::BAD_REQUEST, 9713, "MDM metadata too long");
                    }
                }
                _ => {
                    return apple_error(
                        StatusCode::BAD_REQUEST,
                        9723,
                        "mdmInfo needs id, name and metadata",
                    );
                }
            }
            if let Some(location) = world.locations.get_mut(&uid) {
                location.mdm_info = Some(info.clone());
            }
        }
        let url = body.get("notificationUrl").and_then(Value::as_str);
        let secret = body.get("notificationAuthToken").and_then(Value::as_str);
        match (url, secret) {
            (None, None) => {}
            (Some(url), Some(secret)) => {
                if !url.starts_with("https://") {
                    return apple_error(
                        StatusCode::BAD_REQUEST,
                        9712,
                        "Notification URL must be https",
                    );
                }
                if let Some(location) = world.locations.get_mut(&uid) {
                    location.notification_url = Some(url.to_owned());
                    location.notification_token = Some(secret.to_owned());
                }
                tested = Some(uid);
            }
            _ => {
                return apple_error(
                    StatusCode::BAD_REQUEST,
                    9710,
                    "notificationUrl and notificationAuthToken go together",
                );
            }
        }
    }
    // Apple sends a test notification; a config whose URL cannot take it is refused.
    if let Some(uid) = tested
        && !super::notify::test(&world, &uid).await
    {
        if let Some(location) = lock(&world).locations.get_mut(&uid) {
            location.notification_url = None;
            location.notification_token = None;
        }
        return apple_error(
            StatusCode::BAD_REQUEST,
            9728,
            "Notification URL is unreachable",
        );
    }
    client_config(State(world), headers).await
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssetsQuery {
    adam_id: Option<String>,
    product_type: Option<String>,
    pricing_param: Option<String>,
    device_assignable: Option<String>,
    revocable: Option<String>,
    min_assigned_count: Option<String>,
    max_assigned_count: Option<String>,
    min_available_count: Option<String>,
    max_available_count: Option<String>,
    page_index: Option<String>,
}

/// Reads an optional query value as `T`, or answers 9602 naming the parameter.
fn query_value<T: std::str::FromStr>(
    value: Option<&String>,
    name: &'static str,
) -> Result<Option<T>, AppleFault> {
    value
        .map(|v| v.parse::<T>())
        .transpose()
        .map_err(|_| AppleFault(StatusCode::BAD_REQUEST, 9602, name))
}

/// A paged list's body: the page's records under `list`, and the paging fields.
fn paged(
    list: &str,
    page: super::paging::Page<Value>,
    version: u64,
    world: &World,
    uid: &str,
) -> Response {
    let mut body = json!({
        "currentPageIndex": page.index,
        "size": page.items.len(),
        "totalPages": page.total,
        "versionId": version.to_string(),
        "tokenExpirationDate": expiration(world, uid),
        "uId": uid,
    });
    if page.index + 1 < page.total {
        body["nextPageIndex"] = json!(page.index + 1);
    }
    body[list] = Value::Array(page.items);
    Json(body).into_response()
}

fn page_error((number, message): super::paging::PageError) -> Response {
    apple_error(StatusCode::BAD_REQUEST, number, message)
}

async fn assets(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    Query(q): Query<AssetsQuery>,
) -> Response {
    let delay = lock(&world).assets_delay;
    tokio::time::sleep(delay).await;
    let world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let filters = (|| {
        Ok::<_, AppleFault>((
            query_value::<bool>(
                q.device_assignable.as_ref(),
                "Invalid argument: deviceAssignable",
            )?,
            query_value::<bool>(q.revocable.as_ref(), "Invalid argument: revocable")?,
            query_value::<i64>(
                q.min_assigned_count.as_ref(),
                "Invalid argument: minAssignedCount",
            )?,
            query_value::<i64>(
                q.max_assigned_count.as_ref(),
                "Invalid argument: maxAssignedCount",
            )?,
            query_value::<i64>(
                q.min_available_count.as_ref(),
                "Invalid argument: minAvailableCount",
            )?,
            query_value::<i64>(
                q.max_available_count.as_ref(),
                "Invalid argument: maxAvailableCount",
            )?,
        ))
    })();
    let (assignable, revocable, min_assigned, max_assigned, min_available, max_available) =
        match filters {
            Ok(f) => f,
            Err(refused) => return refused.into_response(),
        };
    let matches = |v: &Value| {
        let int = |k: &str| v[k].as_i64().unwrap_or(0);
        q.product_type
            .as_ref()
            .is_none_or(|t| v["productType"] == t.as_str())
            && q.pricing_param
                .as_ref()
                .is_none_or(|p| v["pricingParam"] == p.as_str())
            && assignable.is_none_or(|b| v["deviceAssignable"] == b)
            && revocable.is_none_or(|b| v["revocable"] == b)
            && min_assigned.is_none_or(|n| int("assignedCount") >= n)
            && max_assigned.is_none_or(|n| int("assignedCount") <= n)
            && min_available.is_none_or(|n| int("availableCount") >= n)
            && max_available.is_none_or(|n| int("availableCount") <= n)
    };
    let all: Vec<Value> = world
        .assets
        .keys()
        .filter(|(u, a)| u == &uid && q.adam_id.as_ref().is_none_or(|id| id == &a.to_string()))
        .filter_map(|(u, a)| world.response_asset(u, *a))
        .filter(matches)
        .collect();
    match super::paging::page(all, q.page_index.as_deref(), world.page_size) {
        // Assets carry a versionId but ignore sinceVersionId, as Apple's do.
        Ok(page) => paged("assets", page, 1, &world, &uid),
        Err(e) => page_error(e),
    }
}

/// Apple refuses the same asset twice in one request (9703).
fn distinct_assets(assets: &[Value]) -> Result<(), AppleFault> {
    let keys: BTreeSet<(String, String)> = assets
        .iter()
        .map(|a| {
            (
                a["adamId"].as_str().unwrap_or_default().to_owned(),
                a["pricingParam"].as_str().unwrap_or("STDQ").to_owned(),
            )
        })
        .collect();
    if keys.len() == assets.len() {
        Ok(())
    } else {
        Err(AppleFault(
            StatusCode::BAD_REQUEST,
            9703,
            "Duplicate assets",
        ))
    }
}

/// Every POST of Apple's API carries JSON: anything else is 9727 (HTTP 415).
pub(super) async fn json_posts_only(request: Request, next: Next) -> Response {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if request.method() == Method::POST && request.uri().path().starts_with("/mdm/v2/") && !json {
        return apple_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            9727,
            "Content-Type must be application/json",
        );
    }
    next.run(request).await
}

/// A path of Apple's API asked with a method it does not take: 9726 (HTTP 405).
async fn wrong_method() -> Response {
    apple_error(
        StatusCode::METHOD_NOT_ALLOWED,
        9726,
        "Unsupported HTTP method",
    )
}

fn strings(body: &Value, key: &str) -> Option<Vec<String>> {
    body.get(key)?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

async fn associate(State(world): State<SharedWorld>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = lock(&world).associate_delay;
    tokio::time::sleep(delay).await;
    let shared = world.clone();
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9602,
            "Invalid argument: body is not JSON",
        );
    };
    let Some(assets) = body
        .get("assets")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    else {
        return apple_error(StatusCode::BAD_REQUEST, 9718, "Assets are missing");
    };
    if assets.len() > 25 {
        return apple_error(StatusCode::BAD_REQUEST, 9700, "Too many assets");
    }
    if let Err(refused) = distinct_assets(assets) {
        return refused.into_response();
    }
    let serials = strings(&body, "serialNumbers").unwrap_or_default();
    let users = strings(&body, "clientUserIds").unwrap_or_default();
    if serials.is_empty() && users.is_empty() {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9719,
            "Either clientUserIds or serialNumbers are required",
        );
    }
    if serials.len() > world.max_serial_numbers {
        return apple_error(StatusCode::BAD_REQUEST, 9702, "Too many serial numbers");
    }
    world.largest_serial_batch = world.largest_serial_batch.max(serials.len());
    world.associate_calls += 1;
    world.associated_at.push(Instant::now());
    if serials.iter().any(|s| world.refused_serials.contains(s)) {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9602,
            "Invalid argument: serialNumbers",
        );
    }
    if serials.iter().collect::<BTreeSet<_>>().len() != serials.len() {
        return apple_error(StatusCode::BAD_REQUEST, 9705, "Duplicate serial numbers");
    }
    if users.len() > 1000 {
        return apple_error(StatusCode::BAD_REQUEST, 9701, "Too many clientUserIds");
    }
    if users.iter().collect::<BTreeSet<_>>().len() != users.len() {
        return apple_error(StatusCode::BAD_REQUEST, 9704, "Duplicate clientUserIds");
    }
    let mut adam_ids = Vec::new();
    for asset in assets {
        let Some(adam_id) = asset
            .get("adamId")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return apple_error(StatusCode::BAD_REQUEST, 9602, "Invalid argument: adamId");
        };
        if !world.assets.contains_key(&(uid.clone(), adam_id)) {
            return apple_error(
                StatusCode::BAD_REQUEST,
                9718,
                "Asset is not owned by this location",
            );
        }
        if !serials.is_empty()
            && !world
                .catalog
                .get(&adam_id)
                .is_some_and(|c| c.device_assignable)
        {
            return apple_error(
                StatusCode::BAD_REQUEST,
                9707,
                "Asset is not device assignable",
            );
        }
        adam_ids.push(adam_id);
    }
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for adam_id in adam_ids {
        let mut short = Vec::new();
        for serial in &serials {
            let key = (uid.clone(), adam_id, serial.clone());
            if world.serial_assignments.contains(&key) {
                continue;
            }
            let counts = world.assets.entry((uid.clone(), adam_id)).or_default();
            if counts.assigned < counts.total {
                counts.assigned += 1;
                world.serial_assignments.insert(key);
                done.push(json!({ "adamId": adam_id.to_string(), "pricingParam": "STDQ", "serialNumber": serial }));
            } else {
                short.push(serial.clone());
            }
        }
        if !short.is_empty() {
            failures.push(json!({
                "errorNumber": 9709,
                "errorMessage": "Not enough licenses",
                "errorInfo": { "assets": [{ "adamId": adam_id.to_string(), "pricingParam": "STDQ" }], "serialNumbers": short },
            }));
        }
        let mut short_users = Vec::new();
        let mut unknown_users = Vec::new();
        for client in &users {
            let key = (uid.clone(), adam_id, client.clone());
            if world.user_assignments.contains(&key) {
                continue;
            }
            let active = world
                .users
                .get(&(uid.clone(), client.clone()))
                .is_some_and(|u| u.status != "Retired");
            if !active {
                unknown_users.push(client.clone());
                continue;
            }
            let counts = world.assets.entry((uid.clone(), adam_id)).or_default();
            if counts.assigned < counts.total {
                counts.assigned += 1;
                world.user_assignments.insert(key);
                done.push(json!({ "adamId": adam_id.to_string(), "pricingParam": "STDQ", "clientUserId": client }));
            } else {
                short_users.push(client.clone());
            }
        }
        if !short_users.is_empty() {
            failures.push(json!({
                "errorNumber": 9709,
                "errorMessage": "Not enough licenses",
                "errorInfo": { "assets": [{ "adamId": adam_id.to_string(), "pricingParam": "STDQ" }], "clientUserIds": short_users },
            }));
        }
        if !unknown_users.is_empty() {
            failures.push(json!({
                "errorNumber": 9609,
                "errorMessage": "Registered user not found",
                "errorInfo": { "clientUserIds": unknown_users },
            }));
        }
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let ready_at = Instant::now() + world.event_delay;
    world.events.insert(
        event_id.clone(),
        Event {
            uid: uid.clone(),
            event_type: "ASSOCIATE",
            requested: (serials.len() + users.len()) as i64,
            failures: failures.clone(),
            ready_at,
        },
    );
    super::notify::later(
        &shared,
        super::notify::target_of(&world, &uid),
        &uid,
        "ASSET_MANAGEMENT",
        super::notify::asset_management(&event_id, "ASSOCIATE", &done, &failures),
        world.event_delay,
    );
    Json(
        json!({ "eventId": event_id, "tokenExpirationDate": expiration(&world, &uid), "uId": uid }),
    )
    .into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentsQuery {
    adam_id: Option<String>,
    serial_number: Option<String>,
    client_user_id: Option<String>,
    pricing_param: Option<String>,
    page_index: Option<String>,
    since_version_id: Option<String>,
}

async fn assignments(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    Query(q): Query<AssignmentsQuery>,
) -> Response {
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let key = |a: &u64, subject: &str| format!("{a}/{subject}");
    let everything: Vec<(String, String)> = world
        .serial_assignments
        .iter()
        .map(|(u, a, s)| (format!("{u}/{}", key(a, s)), String::new()))
        .chain(
            world
                .user_assignments
                .iter()
                .map(|(u, a, c)| (format!("{u}/{}", key(a, c)), String::new())),
        )
        .collect();
    world.assignment_versions.refresh(everything);
    let since =
        match super::paging::since(q.since_version_id.as_deref(), &world.assignment_versions) {
            Ok(since) => since,
            Err(e) => return page_error(e),
        };
    let versions = &world.assignment_versions;
    let changed = |a: &u64, subject: &str| {
        since.is_none_or(|v| versions.changed_since(&format!("{uid}/{}", key(a, subject)), v))
    };
    let wanted_asset = |a: &u64| q.adam_id.as_ref().is_none_or(|id| id == &a.to_string());
    let stdq = q.pricing_param.as_deref().is_none_or(|p| p == "STDQ");
    let devices = world
        .serial_assignments
        .iter()
        .filter(|(u, a, s)| {
            u == &uid
                && stdq
                && wanted_asset(a)
                && q.client_user_id.is_none()
                && q.serial_number.as_ref().is_none_or(|sn| sn == s)
                && changed(a, s)
        })
        .map(|(_, a, s)| json!({ "adamId": a.to_string(), "pricingParam": "STDQ", "serialNumber": s }));
    let users = world
        .user_assignments
        .iter()
        .filter(|(u, a, c)| {
            u == &uid
                && stdq
                && wanted_asset(a)
                && q.serial_number.is_none()
                && q.client_user_id.as_ref().is_none_or(|id| id == c)
                && changed(a, c)
        })
        .map(|(_, a, c)| json!({ "adamId": a.to_string(), "pricingParam": "STDQ", "clientUserId": c }));
    let items: Vec<Value> = devices.chain(users).collect();
    let version = world.assignment_versions.current();
    match super::paging::page(items, q.page_index.as_deref(), world.page_size) {
        Ok(page) => paged("assignments", page, version, &world, &uid),
        Err(e) => page_error(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    event_id: Option<String>,
}

async fn status(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    Query(q): Query<StatusQuery>,
) -> Response {
    let world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let Some(event) = q
        .event_id
        .as_ref()
        .and_then(|id| world.events.get(id))
        .filter(|e| e.uid == uid)
    else {
        return apple_error(StatusCode::BAD_REQUEST, 9708, "Event ID not found");
    };
    let done = Instant::now() >= event.ready_at;
    let failed_items: i64 = event
        .failures
        .iter()
        .map(|f| {
            ["serialNumbers", "clientUserIds"]
                .iter()
                .filter_map(|k| f["errorInfo"][k].as_array().map(|a| a.len() as i64))
                .sum::<i64>()
        })
        .sum();
    Json(json!({
        "eventStatus": if done { "COMPLETE" } else { "PENDING" },
        "eventType": event.event_type,
        "numRequested": event.requested,
        "numCompleted": if done { event.requested - failed_items } else { 0 },
        "failures": if done { Value::Array(event.failures.clone()) } else { json!([]) },
        "tokenExpirationDate": expiration(&world, &uid),
        "uId": uid,
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct LookupQuery {
    id: Option<String>,
    country: Option<String>,
    entity: Option<String>,
}

async fn lookup(State(world): State<SharedWorld>, Query(q): Query<LookupQuery>) -> Response {
    let mut world = lock(&world);
    if world.store_outage > 0 {
        world.store_outage -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "the App Store is down").into_response();
    }
    let country = q.country.unwrap_or_else(|| "US".into());
    let mac = q.entity.as_deref() == Some("macSoftware");
    let results: Vec<Value> = q
        .id
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse::<u64>().ok())
        .filter_map(|id| world.catalog.get(&id).map(|c| (id, c)))
        .filter(|(_, c)| {
            c.countries.is_empty() || c.countries.iter().any(|k| k.eq_ignore_ascii_case(&country))
        })
        .map(|(id, c)| {
            let (kind, devices, minimum) = c.store_entry(mac);
            json!({
                "trackId": id,
                "trackName": c.name,
                "bundleId": c.bundle_id,
                "version": c.version,
                "kind": kind,
                "supportedDevices": devices,
                "minimumOsVersion": minimum,
                "trackViewUrl": format!("https://apps.apple.com/{}/app/id{id}", country.to_lowercase()),
                "price": 0.0,
                "currency": "USD",
                "sellerName": world.org_name,
            })
        })
        .collect();
    Json(json!({ "resultCount": results.len(), "results": results })).into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersQuery {
    client_user_id: Option<String>,
    active_only: Option<String>,
    retired_only: Option<String>,
    page_index: Option<String>,
    since_version_id: Option<String>,
}

async fn users(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    Query(q): Query<UsersQuery>,
) -> Response {
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let (active_only, retired_only) = match (
        query_value::<bool>(q.active_only.as_ref(), "Invalid argument: activeOnly"),
        query_value::<bool>(q.retired_only.as_ref(), "Invalid argument: retiredOnly"),
    ) {
        (Ok(a), Ok(r)) => (a.unwrap_or(false), r.unwrap_or(false)),
        (Err(refused), _) | (_, Err(refused)) => return refused.into_response(),
    };
    let everything: Vec<(String, String)> = world
        .users
        .iter()
        .map(|((u, c), user)| (format!("{u}/{c}"), user.to_json(c).to_string()))
        .collect();
    world.user_versions.refresh(everything);
    let since = match super::paging::since(q.since_version_id.as_deref(), &world.user_versions) {
        Ok(since) => since,
        Err(e) => return page_error(e),
    };
    world.user_reads += 1;
    if since.is_some() {
        world.incremental_user_reads += 1;
    }
    let items: Vec<Value> = world
        .users
        .iter()
        .filter(|((u, c), user)| {
            u == &uid
                && q.client_user_id.as_ref().is_none_or(|id| id == c)
                && (!active_only || user.status != "Retired")
                && (!retired_only || user.status == "Retired")
                && since.is_none_or(|v| world.user_versions.changed_since(&format!("{u}/{c}"), v))
        })
        .map(|((_, c), user)| user.to_json(c))
        .collect();
    let version = world.user_versions.current();
    match super::paging::page(items, q.page_index.as_deref(), world.page_size) {
        Ok(page) => paged("users", page, version, &world, &uid),
        Err(e) => page_error(e),
    }
}

async fn create_users(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = world.clone();
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9602,
            "Invalid argument: body is not JSON",
        );
    };
    let Some(requested) = body
        .get("users")
        .and_then(Value::as_array)
        .filter(|u| !u.is_empty())
    else {
        return apple_error(StatusCode::BAD_REQUEST, 9720, "Users are missing");
    };
    if requested.len() > 100 {
        return apple_error(StatusCode::BAD_REQUEST, 9714, "Too many users");
    }
    let mut seen = BTreeSet::new();
    let mut new_users = Vec::new();
    for user in requested {
        let Some(client) = user.get("clientUserId").and_then(Value::as_str) else {
            return apple_error(
                StatusCode::BAD_REQUEST,
                9602,
                "Invalid argument: clientUserId",
            );
        };
        if !seen.insert(client.to_owned()) {
            return apple_error(StatusCode::BAD_REQUEST, 9715, "Duplicate users");
        }
        let email = user.get("email").and_then(Value::as_str).map(str::to_owned);
        if email.as_deref().is_some_and(|e| !e.contains('@')) {
            return apple_error(StatusCode::BAD_REQUEST, 9717, "Invalid email");
        }
        new_users.push((
            client.to_owned(),
            VppUser {
                email,
                managed_apple_id: user
                    .get("managedAppleId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                status: "Registered",
                invite_code: Some(uuid::Uuid::new_v4().simple().to_string()),
                id_hash: None,
            },
        ));
    }
    let requested = new_users.len() as i64;
    let mut created = Vec::new();
    for (client, user) in new_users {
        // Creating a user again changes nothing (a retried request is harmless).
        let user = world
            .users
            .entry((uid.clone(), client.clone()))
            .or_insert(user);
        created.push(user.to_json(&client));
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let ready_at = Instant::now() + world.event_delay;
    world.events.insert(
        event_id.clone(),
        Event {
            uid: uid.clone(),
            event_type: "CREATE",
            requested,
            failures: Vec::new(),
            ready_at,
        },
    );
    let notifications = created
        .chunks(super::notify::MAX_ITEMS)
        .map(|users| json!({ "eventId": event_id, "result": "SUCCESS", "type": "CREATE", "users": users }))
        .collect();
    super::notify::later(
        &shared,
        super::notify::target_of(&world, &uid),
        &uid,
        "USER_MANAGEMENT",
        notifications,
        world.event_delay,
    );
    Json(
        json!({ "eventId": event_id, "tokenExpirationDate": expiration(&world, &uid), "uId": uid }),
    )
    .into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvitationQuery {
    invite_code: Option<String>,
    id_hash: Option<String>,
}

/// The invitation page a device opens when its user accepts the VPP invitation,
/// signed in with an Apple Account (`idHash`): the user becomes `Associated`.
async fn accept_invitation(
    State(world): State<SharedWorld>,
    Query(q): Query<InvitationQuery>,
) -> Response {
    let shared = world.clone();
    let mut world = lock(&world);
    let (Some(code), Some(hash)) = (q.invite_code, q.id_hash) else {
        return (
            StatusCode::BAD_REQUEST,
            "inviteCode and a signed-in account are required",
        )
            .into_response();
    };
    let Some(key) = world
        .users
        .iter()
        .find(|(_, u)| u.invite_code.as_deref() == Some(code.as_str()))
        .map(|(k, _)| k.clone())
    else {
        return (
            StatusCode::NOT_FOUND,
            "this invitation is not valid any more",
        )
            .into_response();
    };
    let taken = world.users.iter().any(|((uid, client), u)| {
        uid == &key.0
            && client != &key.1
            && u.status == "Associated"
            && u.id_hash.as_deref() == Some(hash.as_str())
    });
    if taken {
        return (
            StatusCode::CONFLICT,
            "this Apple Account is already associated with another user of the organisation",
        )
            .into_response();
    }
    let mut associated = None;
    if let Some(user) = world.users.get_mut(&key) {
        user.status = "Associated";
        user.id_hash = Some(hash);
        user.invite_code = None;
        associated = Some(json!({ "associatedUsers": [user.to_json(&key.1)] }));
    }
    if let Some(associated) = associated {
        super::notify::later(
            &shared,
            super::notify::target_of(&world, &key.0),
            &key.0,
            "USER_ASSOCIATED",
            vec![associated],
            std::time::Duration::ZERO,
        );
    }
    (
        StatusCode::OK,
        "You have joined the organisation's Apps and Books program",
    )
        .into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseQuery {
    adam_id: Option<String>,
    serial_number: Option<String>,
    id_hash: Option<String>,
}

/// What the App Store tells a device about its license for an app.
async fn store_license(
    State(world): State<SharedWorld>,
    Query(q): Query<LicenseQuery>,
) -> Json<Value> {
    let mut world = lock(&world);
    let adam_id = q.adam_id.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let serial = q.serial_number.unwrap_or_default();
    let license = world.license_for(adam_id, &serial, q.id_hash.as_deref());
    if license.is_none() {
        world
            .unlicensed_checks
            .push((adam_id, serial, Instant::now()));
    }
    Json(json!({ "license": license }))
}

/// `POST /assets/disassociate`: the licenses go back to the pool. Items that hold no
/// license are not an error (a retried request is harmless).
async fn disassociate(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = world.clone();
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9602,
            "Invalid argument: body is not JSON",
        );
    };
    let Some(assets) = body
        .get("assets")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    else {
        return apple_error(StatusCode::BAD_REQUEST, 9718, "Assets are missing");
    };
    if let Err(refused) = distinct_assets(assets) {
        return refused.into_response();
    }
    let serials = strings(&body, "serialNumbers").unwrap_or_default();
    let users = strings(&body, "clientUserIds").unwrap_or_default();
    if serials.is_empty() && users.is_empty() {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9719,
            "Either clientUserIds or serialNumbers are required",
        );
    }
    let adam_ids: Vec<u64> = assets
        .iter()
        .filter_map(|a| a.get("adamId").and_then(Value::as_str)?.parse().ok())
        .collect();
    if adam_ids.len() != assets.len() {
        return apple_error(StatusCode::BAD_REQUEST, 9602, "Invalid argument: adamId");
    }
    for adam_id in adam_ids {
        for serial in &serials {
            if world
                .serial_assignments
                .remove(&(uid.clone(), adam_id, serial.clone()))
            {
                world
                    .serial_released_at
                    .insert((adam_id, serial.clone()), Instant::now());
                if let Some(c) = world.assets.get_mut(&(uid.clone(), adam_id)) {
                    c.assigned -= 1;
                }
            }
        }
        for client in &users {
            if world
                .user_assignments
                .remove(&(uid.clone(), adam_id, client.clone()))
                && let Some(c) = world.assets.get_mut(&(uid.clone(), adam_id))
            {
                c.assigned -= 1;
            }
        }
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let ready_at = Instant::now() + world.event_delay;
    world.events.insert(
        event_id.clone(),
        Event {
            uid: uid.clone(),
            event_type: "DISASSOCIATE",
            requested: (serials.len() + users.len()) as i64,
            failures: Vec::new(),
            ready_at,
        },
    );
    let items: Vec<Value> = serials
        .iter()
        .map(|s| json!({ "serialNumber": s }))
        .chain(users.iter().map(|c| json!({ "clientUserId": c })))
        .collect();
    super::notify::later(
        &shared,
        super::notify::target_of(&world, &uid),
        &uid,
        "ASSET_MANAGEMENT",
        super::notify::asset_management(&event_id, "DISASSOCIATE", &items, &[]),
        world.event_delay,
    );
    Json(
        json!({ "eventId": event_id, "tokenExpirationDate": expiration(&world, &uid), "uId": uid }),
    )
    .into_response()
}

/// A finished event with no failures, and its id.
fn finished_event(
    world: &mut World,
    uid: &str,
    event_type: &'static str,
    requested: i64,
) -> String {
    let event_id = uuid::Uuid::new_v4().to_string();
    let ready_at = Instant::now() + world.event_delay;
    world.events.insert(
        event_id.clone(),
        Event {
            uid: uid.to_owned(),
            event_type,
            requested,
            failures: Vec::new(),
            ready_at,
        },
    );
    event_id
}

/// The users of a `ManageUsersRequest`, or Apple's error for a bad one.
fn request_users(body: &Bytes) -> Result<Vec<Value>, AppleFault> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Err(AppleFault(
            StatusCode::BAD_REQUEST,
            9602,
            "Invalid argument: body is not JSON",
        ));
    };
    let users = body
        .get("users")
        .and_then(Value::as_array)
        .filter(|u| !u.is_empty())
        .cloned()
        .ok_or(AppleFault(
            StatusCode::BAD_REQUEST,
            9720,
            "Users are missing",
        ))?;
    if users.len() > 100 {
        return Err(AppleFault(StatusCode::BAD_REQUEST, 9714, "Too many users"));
    }
    Ok(users)
}

/// `POST /users/update`: change a user's email or managed Apple Account.
async fn update_users(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let users = match request_users(&body) {
        Ok(u) => u,
        Err(fault) => return fault.into_response(),
    };
    for u in &users {
        let Some(client) = u.get("clientUserId").and_then(Value::as_str) else {
            return apple_error(
                StatusCode::BAD_REQUEST,
                9602,
                "Invalid argument: clientUserId",
            );
        };
        let Some(user) = world.users.get_mut(&(uid.clone(), client.to_owned())) else {
            return apple_error(StatusCode::BAD_REQUEST, 9609, "Registered user not found");
        };
        if let Some(email) = u.get("email").and_then(Value::as_str) {
            user.email = Some(email.to_owned());
        }
        if let Some(managed) = u.get("managedAppleId").and_then(Value::as_str) {
            user.managed_apple_id = Some(managed.to_owned());
        }
    }
    let event_id = finished_event(&mut world, &uid, "UPDATE", users.len() as i64);
    Json(
        json!({ "eventId": event_id, "tokenExpirationDate": expiration(&world, &uid), "uId": uid }),
    )
    .into_response()
}

/// `POST /users/retire`: retired users lose their licenses; their invitation is void.
async fn retire_users(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let users = match request_users(&body) {
        Ok(u) => u,
        Err(fault) => return fault.into_response(),
    };
    for u in &users {
        let Some(client) = u.get("clientUserId").and_then(Value::as_str) else {
            return apple_error(
                StatusCode::BAD_REQUEST,
                9602,
                "Invalid argument: clientUserId",
            );
        };
        match world.users.get_mut(&(uid.clone(), client.to_owned())) {
            Some(user) => {
                user.status = "Retired";
                user.invite_code = None;
            }
            None => return apple_error(StatusCode::BAD_REQUEST, 9609, "Registered user not found"),
        }
        let held: Vec<(String, u64, String)> = world
            .user_assignments
            .iter()
            .filter(|(l, _, c)| l == &uid && c == client)
            .cloned()
            .collect();
        for key in held {
            world.user_assignments.remove(&key);
            if let Some(c) = world.assets.get_mut(&(key.0.clone(), key.1)) {
                c.assigned -= 1;
            }
        }
    }
    let event_id = finished_event(&mut world, &uid, "RETIRE", users.len() as i64);
    Json(
        json!({ "eventId": event_id, "tokenExpirationDate": expiration(&world, &uid), "uId": uid }),
    )
    .into_response()
}

/// `POST /assets/revoke`: every revocable license of these users and devices goes back
/// (books are not revocable and stay).
async fn revoke_assets(
    State(world): State<SharedWorld>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = lock(&world);
    let uid = match authenticate(&world, &headers) {
        Ok(uid) => uid,
        Err(fault) => return fault.into_response(),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9602,
            "Invalid argument: body is not JSON",
        );
    };
    let serials = strings(&body, "serialNumbers").unwrap_or_default();
    let users = strings(&body, "clientUserIds").unwrap_or_default();
    if serials.is_empty() && users.is_empty() {
        return apple_error(
            StatusCode::BAD_REQUEST,
            9719,
            "Either clientUserIds or serialNumbers are required",
        );
    }
    if serials.len() > 100 {
        return apple_error(StatusCode::BAD_REQUEST, 9702, "Too many serial numbers");
    }
    if users.len() > 100 {
        return apple_error(StatusCode::BAD_REQUEST, 9701, "Too many clientUserIds");
    }
    let revocable = |world: &World, adam: u64| {
        world
            .catalog
            .get(&adam)
            .is_some_and(|c| c.product_type != "Book")
    };
    let devices: Vec<(String, u64, String)> = world
        .serial_assignments
        .iter()
        .filter(|(l, a, s)| l == &uid && serials.contains(s) && revocable(&world, *a))
        .cloned()
        .collect();
    let people: Vec<(String, u64, String)> = world
        .user_assignments
        .iter()
        .filter(|(l, a, c)| l == &uid && users.contains(c) && revocable(&world, *a))
        .cloned()
        .collect();
    for key in &devices {
        world.serial_assignments.remove(key);
        world
            .serial_released_at
            .insert((key.1, key.2.clone()), Instant::now());
    }
    for key in &people {
        world.user_assignments.remove(key);
    }
    for (l, a, _) in devices.iter().chain(&people) {
        if let Some(c) = world.assets.get_mut(&(l.clone(), *a)) {
            c.assigned -= 1;
        }
    }
    let event_id = finished_event(
        &mut world,
        &uid,
        "REVOKE",
        (serials.len() + users.len()) as i64,
    );
    Json(
        json!({ "eventId": event_id, "tokenExpirationDate": expiration(&world, &uid), "uId": uid }),
    )
    .into_response()
}
