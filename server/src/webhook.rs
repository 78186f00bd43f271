//! Webhook delivery: each webhook receives the events of its kind, one POST per event,
//! in order, from its own place in the event stream. Each POST is signed with the
//! webhook's secret (HMAC-SHA256 over `<timestamp>.<body>`, in `X-Orchard-Signature:
//! sha256=<hex>` beside `X-Orchard-Timestamp`); a failure (no 2xx, no answer within
//! the timeout) is logged and the same event is tried again after a doubling back-off,
//! so nothing is skipped. One replica delivers for a webhook at a time (a lease).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::Timestamp;
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{DeliveryRecord, EventFilter, Page, WebhookRecord};

/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "X-Orchard-Signature";
/// The header with the time that was signed (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Orchard-Timestamp";
/// Events read for one webhook at once.
const BATCH: i64 = 100;
/// How often the worker looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replica holds a webhook's delivery.
const LEASE: Duration = Duration::from_secs(60);
/// The longest webhook URL.
const MAX_URL: usize = 2048;

/// The signature of a delivery: HMAC-SHA256 with the webhook's secret over the
/// timestamp, a dot and the body.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    format!("sha256={}", hex::encode(context.sign().as_ref()))
}

/// Whether `kind` names an event kind (`install.status`) or family (`install`).
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
}

/// What an admin asks for when registering a webhook.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// `https://…`, or `http://` to this host (loopback) only.
    pub url: String,
    /// Only events of this kind or family.
    pub kind: Option<String>,
}

/// Registers a webhook; returns it with its secret (shown once).
pub async fn register(
    state: &ServerState,
    new: NewWebhook,
    created_by: Option<&str>,
) -> ServerResult<WebhookRecord> {
    let invalid = |reason: String| ServerError::Invalid {
        field: "url",
        reason,
    };
    if new.url.len() > MAX_URL {
        return Err(invalid(format!("must be at most {MAX_URL} characters")));
    }
    let url = reqwest::Url::parse(&new.url).map_err(|e| invalid(format!("not a URL: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        other => {
            return Err(invalid(format!(
                "must be https:// (http:// only to this host), not {other}://"
            )));
        }
    }
    if !host_allowed(&state.options.webhook_hosts, host) {
        return Err(invalid(format!(
            "{host} is not among the hosts this server delivers webhooks to (--webhook-host)"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry a user name or password".into()));
    }
    if let Some(kind) = &new.kind
        && !valid_kind(kind)
    {
        return Err(ServerError::Invalid {
            field: "kind",
            reason: format!(
                "{kind:?} is not an event kind such as install.status or a family such as install"
            ),
        });
    }
    let record = WebhookRecord {
        id: uuid::Uuid::new_v4().to_string(),
        url: url.to_string(),
        secret: crate::secret::random(),
        kind: new.kind,
        created_by: created_by.map(str::to_owned),
        created_at: state.clock.now(),
        delivered_through: 0,
    };
    Ok(state.store.insert_webhook(&record).await?)
}

/// Whether `host` is one of `allowed` (names, addresses, `*.suffix` patterns, compared
/// without case); any host when `allowed` is empty.
fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    allowed.is_empty()
        || allowed.iter().any(|pattern| {
            let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
            match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .len()
                    .checked_sub(suffix.len() + 1)
                    .and_then(|dot| host.get(dot..))
                    .is_some_and(|tail| {
                        tail.starts_with('.') && tail[1..].eq_ignore_ascii_case(suffix)
                    }),
                None => host.eq_ignore_ascii_case(pattern),
            }
        })
}

/// The doubling wait before try `attempt + 1` of an event.
fn backoff(base: Duration, max: Duration, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    base.saturating_mul(1 << doublings).min(max)
}

/// Delivers until `shutdown` fires.
pub async fn run(state: ServerState, retry: (Duration, Duration), shutdown: CancellationToken) {
    let client = match delivery_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; nothing is delivered");
            return;
        }
    };
    // Per webhook: the failed tries of its next event, and when to try again.
    let mut waiting: HashMap<String, (i64, Instant)> = HashMap::new();
    loop {
        match state.store.webhooks(&Page::all()).await {
            Ok(webhooks) => {
                waiting.retain(|id, _| webhooks.iter().any(|w| &w.id == id));
                for webhook in webhooks {
                    if waiting
                        .get(&webhook.id)
                        .is_some_and(|(_, at)| *at > Instant::now())
                    {
                        continue;
                    }
                    if let Err(e) = deliver(&state, &client, &webhook, retry, &mut waiting).await {
                        tracing::warn!(webhook = %webhook.id, error = %e, "webhook delivery failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot read the webhooks"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn delivery_client() -> Result<reqwest::Client, reqwest::Error> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth()
    });
    let mut builder = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Orchard-Webhooks/", env!("CARGO_PKG_VERSION")));
    if let Ok(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder.build()
}

/// Sends this webhook's next events in order; stops at the first failure.
async fn deliver(
    state: &ServerState,
    client: &reqwest::Client,
    webhook: &WebhookRecord,
    (base, max): (Duration, Duration),
    waiting: &mut HashMap<String, (i64, Instant)>,
) -> ServerResult<()> {
    let now = state.clock.now();
    let lease = format!("webhook:{}", webhook.id);
    if !state
        .store
        .try_lease(&lease, &state.replica, now, now + LEASE)
        .await?
    {
        return Ok(());
    }
    let filter = EventFilter {
        kind: webhook.kind.clone(),
        ..EventFilter::default()
    };
    let events = state
        .store
        .events(&filter, webhook.delivered_through, BATCH)
        .await?;
    for event in events {
        let attempt = waiting.get(&webhook.id).map_or(1, |(tries, _)| tries + 1);
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let sent_at: Timestamp = state.clock.now();
        let timestamp = sent_at.as_offset().unix_timestamp().to_string();
        let answer = client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Orchard-Event", &event.kind)
            .header("X-Orchard-Event-Id", event.id.to_string())
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, sign(&webhook.secret, &timestamp, &body))
            .body(body)
            .send()
            .await;
        let (status_code, error) = match &answer {
            Ok(r) if r.status().is_success() => (Some(i64::from(r.status().as_u16())), None),
            Ok(r) => (
                Some(i64::from(r.status().as_u16())),
                Some(format!("the receiver answered {}", r.status())),
            ),
            Err(e) if e.is_timeout() => (None, Some("no answer within 10 s".to_owned())),
            Err(_) => (None, Some("cannot reach the receiver".to_owned())),
        };
        let delivered = error.is_none();
        let record = DeliveryRecord {
            id: 0,
            webhook_id: webhook.id.clone(),
            event_id: event.id,
            attempt,
            at: sent_at,
            status_code,
            error,
            delivered,
        };
        crate::telemetry::webhook_delivery(delivered);
        if delivered {
            state
                .store
                .record_delivery(Some(&record), &webhook.id, Some(event.id))
                .await?;
            waiting.remove(&webhook.id);
        } else {
            state
                .store
                .record_delivery(Some(&record), &webhook.id, None)
                .await?;
            waiting.insert(
                webhook.id.clone(),
                (attempt, Instant::now() + backoff(base, max, attempt)),
            );
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_hosts_match_names_addresses_and_suffixes_only() {
        let allowed = [
            "hooks.example.com".to_owned(),
            "*.corp.example".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ];
        for host in [
            "hooks.example.com",
            "HOOKS.example.com",
            "a.corp.example",
            "b.a.corp.example",
            "127.0.0.1",
            "[::1]",
        ] {
            assert!(host_allowed(&allowed, host), "{host}");
        }
        for host in [
            "example.com",
            "evilhooks.example.com",
            "corp.example",
            "xcorp.example",
            "a.corp.example.evil",
            "127.0.0.2",
            "localhost",
            "é.corp.example.x",
        ] {
            assert!(!host_allowed(&allowed, host), "{host}");
        }
        assert!(host_allowed(&[], "anything.example"));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let secret = "key";
        let signature = sign(secret, "1700000000", b"{}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let expected = ring::hmac::sign(&key, b"1700000000.{}");
        assert_eq!(
            signature,
            format!("sha256={}", hex::encode(expected.as_ref()))
        );
        assert_ne!(sign(secret, "1700000001", b"{}"), signature);
        assert_ne!(sign("other", "1700000000", b"{}"), signature);
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_the_most() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(600);
        let waits: Vec<u64> = (1..=9).map(|a| backoff(base, max, a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(backoff(base, max, i64::MAX), max);
    }
}
