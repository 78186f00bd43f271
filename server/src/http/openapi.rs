//! The API document: OpenAPI 3.1 at `GET /v1/openapi.json`, made from the handlers'
//! own annotations as their routes are registered (a route is registered only through
//! its description), then completed with the answers every operation of a class can
//! give: authentication and role refusals for the admin API, unreadable parameters and
//! bodies, storage failures, and a busy server for device endpoints.

use std::sync::Arc;

use axum::Extension;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder, schema::Type,
};

use super::connection;
use super::error::ErrorBody;

/// The root of the document; paths come from the routers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Orchard",
        description = "Orchard's management server: VPP tokens, apps and their licenses, groups and assignments, devices and their installs, over one HTTPS listener.\n\nThe admin API (`/v1/`) takes `Authorization: Bearer <admin token>`; each token has a role (`admin`, `manager`, `operator`, `auditor`) and a refusal names the permission it lacks. Every error is `{\"error\", \"message\"}`. Lists answer `{items, next_cursor}` and take `limit` (1 to 1000) and the opaque `cursor` of the previous page; a parameter a list does not know is refused, never ignored.\n\nDevice endpoints (`/mdm/`) speak Apple's MDM protocol in XML property lists over mutual TLS; `/apple/` receives Apple's notifications."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "enrollment", description = "How devices enroll: the shared secret and enrollment tokens"),
        (name = "devices", description = "Enrolled devices, their users and inventory"),
        (name = "tokens", description = "VPP (Apps and Books) location tokens and their sync"),
        (name = "apps", description = "Apps and books of the tokens, with their license counts"),
        (name = "groups", description = "Groups of devices or of users"),
        (name = "assignments", description = "Apps assigned to groups, and what applies to a device"),
        (name = "licenses", description = "Taking licenses back"),
        (name = "users", description = "Users for user-licensed apps"),
        (name = "installs", description = "Install states of apps on devices"),
        (name = "prompts", description = "What devices asked their users, and the answers"),
        (name = "audit", description = "Who did what through the API"),
        (name = "events", description = "What changed, as a list or a Server-Sent Events stream"),
        (name = "webhooks", description = "Events delivered to HTTPS endpoints, signed"),
        (name = "admin-tokens", description = "Admin API tokens and their roles"),
        (name = "operations", description = "Probes, metrics and this document"),
        (name = "device-protocol", description = "Apple's MDM protocol: enrollment, check-in and the command channel"),
        (name = "apple", description = "Where Apple's Apps and Books service sends notifications"),
    )
)]
pub(super) struct ApiDoc;

/// The security scheme of admin tokens.
pub(super) const ADMIN_TOKEN: &str = "admin_token";
/// The security scheme of a token's notification secret.
pub(super) const APPLE_NOTIFICATIONS: &str = "apple_notification_secret";

/// The finished document as served: encoded once at start.
#[derive(Clone)]
pub(super) struct Document(pub(super) Arc<[u8]>);

/// The API document (this one).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "get_openapi_document",
    tag = "operations",
    responses((status = 200, description = "This document, OpenAPI 3.1", content_type = "application/json", body = Object)),
)]
pub(super) async fn document(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.0.to_vec(),
    )
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn rate_limited() -> RefOr<Response> {
    ResponseBuilder::new()
        .description("Too many failed authentications (or enrollments) from this address; `Retry-After` gives the seconds to wait")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer),
                ))
                .description(Some("Seconds"))
                .build(),
        )
        .build()
        .into()
}

/// Adds `status` with `response` unless the operation describes it itself.
fn answer(op: &mut Operation, status: u16, response: impl FnOnce() -> RefOr<Response>) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(response);
}

/// Whether an operation is the admin API's (an admin token is needed).
fn needs_admin_token(path: &str) -> bool {
    (path.starts_with("/v1/") && path != "/v1/openapi.json") || path == "/metrics"
}

/// Completes the document: security schemes, and the answers each class of operation
/// can give besides the ones its handler names.
pub(super) fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        ADMIN_TOKEN,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components.add_security_scheme(
        APPLE_NOTIFICATIONS,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            complete_operation(path, op);
        }
    }
}

fn complete_operation(path: &str, op: &mut Operation) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let in_query = params.iter().any(|p| match p {
        RefOr::T(p) => matches!(p.parameter_in, ParameterIn::Query),
        RefOr::Ref(_) => true,
    });
    let in_path = params.iter().any(|p| match p {
        RefOr::T(p) => matches!(p.parameter_in, ParameterIn::Path),
        RefOr::Ref(_) => true,
    });
    let json_body = op.request_body.as_ref().is_some_and(|b| match b {
        RefOr::T(b) => b.content.contains_key("application/json"),
        RefOr::Ref(_) => true,
    });
    if needs_admin_token(path) {
        op.security = Some(vec![SecurityRequirement::new(
            ADMIN_TOKEN,
            Vec::<String>::new(),
        )]);
        answer(op, 401, || {
            error("No admin token, or one that is unknown, revoked or expired")
        });
        answer(op, 403, || {
            error(
                "The token's role lacks the permission this operation needs; the message names it",
            )
        });
        answer(op, 429, rate_limited);
    }
    if in_query || in_path || json_body {
        answer(op, 400, || {
            error(
                "A parameter or body that cannot be read: an unknown query parameter, a bad `limit` or `cursor`, a value of the wrong type, or malformed JSON",
            )
        });
    }
    if op.request_body.is_some() {
        answer(op, 408, || error("The body did not arrive in time"));
        answer(op, 413, || {
            error("The body is larger than this endpoint takes")
        });
    }
    if json_body {
        answer(op, 415, || error("The body is not `application/json`"));
        answer(op, 422, || {
            error(
                "Well-formed JSON of the wrong shape, or a value the server refuses; the message names the field",
            )
        });
    }
    if path != "/healthz" && path != "/v1/openapi.json" {
        answer(op, 500, || {
            error("Storage failed; the server's log has the details and nothing was half-written")
        });
    }
    if !connection::admin_request(path) {
        answer(op, 503, || {
            error("Every connection slot for devices is taken; try again shortly")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_operations_need_a_token_and_probes_do_not() {
        assert!(needs_admin_token("/v1/apps"));
        assert!(needs_admin_token("/metrics"));
        assert!(!needs_admin_token("/v1/openapi.json"));
        assert!(!needs_admin_token("/healthz"));
        assert!(!needs_admin_token("/mdm/checkin"));
    }
}
