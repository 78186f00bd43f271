//! `GET /v1/events`: what changed, oldest first. With `Accept: text/event-stream` it is
//! a Server-Sent Events stream that stays open, each event carrying its id, so a client
//! that reconnects with `Last-Event-ID` (browsers do it themselves) resumes after the
//! last event it saw and misses none; otherwise a page of the same events as a list.
//! Both take the filters `kind` (an exact kind or a family such as `install`),
//! `app_id`, `udid` and `token_id`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::ApiQuery;
use super::error::ApiError;
use super::list::{List, Paging};
use crate::admin::Actor;
use crate::state::ServerState;
use crate::store::{EventFilter, EventRecord, Store};

/// Routes of the event stream.
pub(super) fn router() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// How often an open stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// Events read at once.
const BATCH: i64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Events in a page (a list only), 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor` (a list only).
    cursor: Option<String>,
    /// Start after this event id (a stream's `Last-Event-ID` wins over it).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// An event kind (`install.status`) or a family (`install`).
    kind: Option<String>,
    /// Events of this app.
    app_id: Option<String>,
    /// Events of this device.
    udid: Option<String>,
    /// Events of this VPP token.
    token_id: Option<String>,
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// What changed, oldest first: with `Accept: text/event-stream` a stream that stays
/// open (each event's SSE `id` is its id, its `event` its kind, its `data` the event as
/// JSON), otherwise a page of the same events.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        EventQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "A stream resumes after this event id (browsers send it when they reconnect)"),
    ),
    responses(
        (status = 200, description = "A page of events, or the stream", content(
            (List<EventRecord> = "application/json"),
            (String = "text/event-stream"),
        )),
    ),
)]
async fn events(
    State(state): State<ServerState>,
    _actor: Actor,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    if let Some(after) = q.after
        && after < 0
    {
        return Err(bad(
            "invalid_query",
            format!("after must be an event id (0 or more), not {after}"),
        ));
    }
    if let Some(kind) = &q.kind
        && !crate::webhook::valid_kind(kind)
    {
        return Err(bad(
            "invalid_query",
            format!(
                "kind {kind:?} is not an event kind such as install.status or a family such as install"
            ),
        ));
    }
    let filter = EventFilter {
        kind: q.kind,
        app_id: q.app_id,
        udid: q.udid,
        token_id: q.token_id,
    };
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        if q.after.is_some() && q.cursor.is_some() {
            return Err(bad(
                "invalid_query",
                "give after or cursor, not both: a cursor already says where the page starts"
                    .into(),
            ));
        }
        let paging = Paging::numbered("events", q.limit, q.cursor.as_deref())?;
        let after = paging.after_id().or(q.after).unwrap_or(0);
        let items = state
            .store
            .events(&filter, after, paging.page().limit)
            .await?;
        return Ok(Json(paging.list(items, |e| e.id.to_string(), |e| e)).into_response());
    }
    if q.limit.is_some() || q.cursor.is_some() {
        return Err(bad(
            "invalid_query",
            "a stream takes no limit or cursor; resume it with Last-Event-ID or after".into(),
        ));
    }
    let last_seen = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
            .ok_or_else(|| {
                bad(
                    "invalid_last_event_id",
                    "Last-Event-ID must be the id of an event this stream sent".into(),
                )
            })?,
        None => q.after.unwrap_or(0),
    };
    let follow = Follow {
        store: state.store.clone(),
        filter,
        after: last_seen,
        ready: VecDeque::new(),
    };
    let stopping = state.stopping.clone();
    let stream = futures_util::stream::unfold(follow, move |mut f| {
        let stopping = stopping.clone();
        async move {
            // The stream ends when the server stops; the client resumes elsewhere or
            // later with Last-Event-ID.
            tokio::select! {
                _ = stopping.cancelled() => None,
                event = f.next() => Some((Ok::<Event, Infallible>(event), f)),
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An open stream's place: the last id sent and the events read but not yet sent.
struct Follow {
    store: std::sync::Arc<dyn Store>,
    filter: EventFilter,
    after: i64,
    ready: VecDeque<EventRecord>,
}

impl Follow {
    /// The next event, waiting for one; a storage failure is sent as a comment and
    /// tried again, never ends the stream.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(record) = self.ready.pop_front() {
                self.after = record.id;
                let event = Event::default()
                    .id(record.id.to_string())
                    .event(record.kind.clone());
                return event
                    .json_data(&record)
                    .unwrap_or_else(|_| Event::default().comment("an event could not be encoded"));
            }
            match self.store.events(&self.filter, self.after, BATCH).await {
                Ok(batch) if !batch.is_empty() => self.ready.extend(batch),
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: cannot read events");
                    tokio::time::sleep(POLL * 4).await;
                    return Event::default().comment("events unavailable; retrying");
                }
            }
        }
    }
}
