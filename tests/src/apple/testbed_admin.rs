//! The stand-in's testbed side, under `/testbed` (not part of Apple's API): what a test
//! does to Apple's world, and faults injected into Apple's answers.
//!
//! - `GET  /testbed/locations/{uid}/token`: the location's token file;
//! - `POST /testbed/locations/{uid}/token`: a new token file (valid a year); the old
//!   one stops working;
//! - `POST /testbed/locations/{uid}/assets/{adamId}/buy` `{count}`: licenses bought;
//! - `POST /testbed/apps/{adamId}/version` `{version, minimumOs?}`: a new version in
//!   the store;
//! - `POST /testbed/locations/{uid}/expire`: the token expires now;
//! - `POST /testbed/locations/{uid}/owner` `{id, name}`: another MDM claims the location;
//! - `POST /testbed/events/delay` `{ms}`: Apple's events stay PENDING this long;
//! - `POST /testbed/associations/delay` `{ms}`: every association request is answered
//!   this late (a slow Apple);
//! - `POST /testbed/faults` `{rate, kinds, timeoutMs, retryAfterSeconds}`: from now on a
//!   share `rate` of `/mdm/v2` calls fails with one of `kinds`: `timeout` (the work is
//!   done, the answer comes too late), `5xx`, `429` (with Retry-After) or `errorNumber`
//!   (Apple's 9646 inside an HTTP 200); `rate` 0 ends it.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{SharedWorld, lock};

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FaultKind {
    /// The work is done but the answer comes after the client gave up.
    #[serde(rename = "timeout")]
    Timeout,
    /// HTTP 503 with Apple's 9603, nothing done.
    #[serde(rename = "5xx")]
    ServerError,
    /// HTTP 429 with Retry-After and Apple's 9646, nothing done.
    #[serde(rename = "429")]
    TooManyRequests,
    /// Apple's 9646 inside an HTTP 200, nothing done.
    #[serde(rename = "errorNumber")]
    ErrorNumber,
}

/// Faults injected into Apple's answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Share of calls that fail, 0 to 1.
    pub rate: f64,
    /// The kinds, chosen at random.
    pub kinds: Vec<FaultKind>,
    /// How late a `timeout` answer comes.
    #[serde(default = "two_seconds")]
    pub timeout_ms: u64,
    /// The Retry-After of a 429.
    #[serde(default = "one")]
    pub retry_after_seconds: u64,
}

fn two_seconds() -> u64 {
    2000
}

fn one() -> u64 {
    1
}

pub(super) fn routes() -> Router<SharedWorld> {
    Router::new()
        .route(
            "/testbed/locations/{uid}/token",
            get(token_file).post(new_token_file),
        )
        .route("/testbed/locations/{uid}/assets/{adam_id}/buy", post(buy))
        .route("/testbed/apps/{adam_id}/version", post(publish_version))
        .route("/testbed/locations/{uid}/expire", post(expire))
        .route("/testbed/locations/{uid}/owner", post(give_to_mdm))
        .route("/testbed/faults", post(set_faults))
        .route("/testbed/events/delay", post(set_event_delay))
        .route("/testbed/associations/delay", post(set_associate_delay))
}

async fn token_file(State(world): State<SharedWorld>, Path(uid): Path<String>) -> Response {
    let world = lock(&world);
    match world.locations.get(&uid) {
        Some(l) => (StatusCode::OK, l.token_file.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no location {uid}")).into_response(),
    }
}

async fn new_token_file(State(world): State<SharedWorld>, Path(uid): Path<String>) -> Response {
    let mut world = lock(&world);
    let org = world.org_name.clone();
    match world.locations.get_mut(&uid) {
        Some(l) => {
            l.expires = time::OffsetDateTime::now_utc() + time::Duration::days(365);
            l.token_file = super::state::token_file(&org, l.expires);
            (StatusCode::OK, l.token_file.clone()).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no location {uid}")).into_response(),
    }
}

#[derive(Deserialize)]
struct Count {
    count: i64,
}

async fn buy(
    State(world): State<SharedWorld>,
    Path((uid, adam_id)): Path<(String, u64)>,
    Json(body): Json<Count>,
) -> Response {
    let shared = world.clone();
    let mut world = lock(&world);
    if !world.locations.contains_key(&uid) || !world.catalog.contains_key(&adam_id) {
        return (StatusCode::NOT_FOUND, "no such location or app").into_response();
    }
    let counts = world.assets.entry((uid.clone(), adam_id)).or_default();
    counts.total = (counts.total + body.count).max(counts.assigned);
    let answer = json!({ "totalCount": counts.total, "assignedCount": counts.assigned });
    let count =
        json!({ "adamId": adam_id.to_string(), "pricingParam": "STDQ", "countDelta": body.count });
    let target = super::notify::target_of(&world, &uid);
    drop(world);
    super::notify::later(
        &shared,
        target,
        &uid,
        "ASSET_COUNT",
        vec![count],
        Duration::ZERO,
    );
    Json(answer).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    version: String,
    minimum_os: Option<String>,
}

async fn publish_version(
    State(world): State<SharedWorld>,
    Path(adam_id): Path<u64>,
    Json(body): Json<Version>,
) -> Response {
    let mut world = lock(&world);
    match world.catalog.get_mut(&adam_id) {
        Some(item) => {
            item.version = body.version;
            if let Some(os) = body.minimum_os {
                item.minimum_os = os;
            }
            Json(json!({ "adamId": adam_id, "version": item.version })).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such app").into_response(),
    }
}

async fn expire(State(world): State<SharedWorld>, Path(uid): Path<String>) -> Response {
    let mut world = lock(&world);
    match world.locations.get_mut(&uid) {
        Some(l) => {
            l.expires = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such location").into_response(),
    }
}

async fn give_to_mdm(
    State(world): State<SharedWorld>,
    Path(uid): Path<String>,
    Json(info): Json<Value>,
) -> Response {
    let mut world = lock(&world);
    match world.locations.get_mut(&uid) {
        Some(l) => {
            l.mdm_info = Some(json!({
                "id": info["id"],
                "name": info["name"],
                "metadata": info.get("metadata").cloned().unwrap_or(json!("")),
            }));
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such location").into_response(),
    }
}

#[derive(Deserialize)]
struct Delay {
    ms: u64,
}

async fn set_event_delay(State(world): State<SharedWorld>, Json(body): Json<Delay>) -> Response {
    lock(&world).event_delay = Duration::from_millis(body.ms);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_faults(State(world): State<SharedWorld>, Json(faults): Json<Faults>) -> Response {
    if !(0.0..=1.0).contains(&faults.rate) {
        return (StatusCode::BAD_REQUEST, "rate must be between 0 and 1").into_response();
    }
    lock(&world).faults = (faults.rate > 0.0 && !faults.kinds.is_empty()).then_some(faults);
    StatusCode::NO_CONTENT.into_response()
}

/// Middleware on Apple's API: injects the configured faults.
pub(super) async fn inject_faults(
    State(world): State<SharedWorld>,
    request: Request,
    next: Next,
) -> Response {
    let fault = {
        let world = lock(&world);
        world.faults.as_ref().and_then(|f| {
            let mut rng = rand::rng();
            (request.uri().path().starts_with("/mdm/v2/") && rng.random_bool(f.rate))
                .then(|| (f.kinds[rng.random_range(0..f.kinds.len())], f.clone()))
        })
    };
    let Some((kind, faults)) = fault else {
        return next.run(request).await;
    };
    let apple = |status: StatusCode, number: i64, message: &str| {
        (
            status,
            Json(json!({ "errorNumber": number, "errorMessage": message })),
        )
            .into_response()
    };
    match kind {
        FaultKind::Timeout => {
            let answer = next.run(request).await;
            tokio::time::sleep(Duration::from_millis(faults.timeout_ms)).await;
            answer
        }
        FaultKind::ServerError => apple(
            StatusCode::SERVICE_UNAVAILABLE,
            9603,
            "Internal error (injected)",
        ),
        FaultKind::TooManyRequests => {
            let mut answer = apple(
                StatusCode::TOO_MANY_REQUESTS,
                9646,
                "Too many requests (injected)",
            );
            if let Ok(v) = faults.retry_after_seconds.to_string().parse() {
                answer.headers_mut().insert("Retry-After", v);
            }
            answer
        }
        FaultKind::ErrorNumber => apple(StatusCode::OK, 9646, "Too many requests (injected)"),
    }
}

async fn set_associate_delay(
    State(world): State<SharedWorld>,
    Json(body): Json<Delay>,
) -> Response {
    lock(&world).associate_delay = Duration::from_millis(body.ms);
    StatusCode::NO_CONTENT.into_response()
}
