//! The client for Apple's Apps and Books for Organizations API: bearer sToken, JSON,
//! `errorNumber` read from every answer (Apple also reports errors inside HTTP 200),
//! retries with back-off on 5xx and 429 honouring `Retry-After`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orchard_protocol::AdamId;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::*;

/// Where Apple's services are and how to trust them.
#[derive(Debug, Clone)]
pub struct AppleConfig {
    /// Base URL of the v2 API, e.g. `https://vpp.itunes.apple.com/mdm/v2`.
    pub vpp_base_url: String,
    /// URL of the iTunes lookup API, e.g. `https://itunes.apple.com/lookup`.
    pub lookup_url: String,
    /// An extra CA to trust (a testbed's stand-in); the public roots are always trusted.
    pub extra_ca_file: Option<PathBuf>,
    /// Attempts per call on 5xx / 429 / network errors.
    pub attempts: u32,
    /// First back-off.
    pub backoff: Duration,
    /// How long one HTTP call may take.
    pub timeout: Duration,
}

impl Default for AppleConfig {
    fn default() -> Self {
        Self {
            vpp_base_url: "https://vpp.itunes.apple.com/mdm/v2".into(),
            lookup_url: "https://itunes.apple.com/lookup".into(),
            extra_ca_file: None,
            attempts: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A failed call to Apple.
#[derive(Debug, thiserror::Error)]
pub enum VppError {
    /// The extra CA file cannot be used.
    #[error("cannot use the Apple CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Network or TLS failure.
    #[error("cannot reach Apple: {0}")]
    Transport(#[from] reqwest::Error),
    /// Apple answered with an error number.
    #[error("Apple error {error_number}: {message}")]
    Apple {
        /// HTTP status.
        status: u16,
        /// Apple's `errorNumber`.
        error_number: i64,
        /// Apple's `errorMessage`.
        message: String,
    },
    /// Apple answered with an HTTP error and no error number.
    #[error("Apple answered HTTP {status}")]
    Http {
        /// HTTP status.
        status: u16,
    },
    /// The answer is not the JSON expected.
    #[error("Apple's answer could not be read: {0}")]
    Decode(String),
    /// The answer is larger than any answer of Apple's documented API.
    #[error("Apple's answer exceeds {max} bytes; not read")]
    TooLarge {
        /// The limit.
        max: usize,
    },
}

/// Largest answer read from Apple's service (a page of assets or a lookup of 100 apps
/// with their descriptions is well below a megabyte).
pub const MAX_APPLE_BODY: usize = 16 * 1024 * 1024;

/// Most pages of one list read in one walk (Apple's pages hold several hundred items;
/// this is millions).
const MAX_PAGES: usize = 10_000;

/// Reads an answer's body, refusing one over [`MAX_APPLE_BODY`] without buffering it.
async fn read_body(mut resp: reqwest::Response) -> Result<bytes::Bytes, VppError> {
    let too_large = VppError::TooLarge {
        max: MAX_APPLE_BODY,
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_APPLE_BODY as u64)
    {
        return Err(too_large);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_APPLE_BODY {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Apple's error numbers that refuse a request for some of its items (invalid
/// argument, duplicate assets, users or serial numbers, unknown user, bad email), not
/// for the token or the service: the other items of the batch are fine on their own.
pub const ITEM_ERRORS: [i64; 6] = [9602, 9703, 9704, 9705, 9609, 9717];

/// Apple's error number for duplicate serial numbers in one request.
pub const DUPLICATE_SERIAL_NUMBERS: i64 = 9705;

impl VppError {
    /// Apple's error number, if Apple gave one.
    pub fn error_number(&self) -> Option<i64> {
        match self {
            Self::Apple { error_number, .. } => Some(*error_number),
            _ => None,
        }
    }

    /// Whether Apple refused the request for some of its items (see [`ITEM_ERRORS`]).
    pub fn about_items(&self) -> bool {
        self.error_number()
            .is_some_and(|n| ITEM_ERRORS.contains(&n))
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Http { status } => *status >= 500 || *status == 429,
            Self::Apple {
                status,
                error_number,
                ..
            } => *status >= 500 || matches!(error_number, 9603 | 9646 | 9729 | 9644),
            Self::CaFile { .. } | Self::Decode(_) | Self::TooLarge { .. } => false,
        }
    }
}

/// The Apple client; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppleClient {
    http: reqwest::Client,
    config: Arc<AppleConfig>,
    limits: Arc<std::sync::Mutex<Option<(std::time::Instant, Limits)>>>,
}

/// How long Apple's limits are used before service config is read again (Apple
/// suggests about five minutes).
const LIMITS_TTL: Duration = Duration::from_secs(300);

impl AppleClient {
    /// Apple's current limits (service config), read again every few minutes; Apple's
    /// documented values while the service config cannot be read.
    pub async fn limits(&self, s_token: &str) -> Limits {
        if let Ok(cached) = self.limits.lock()
            && let Some((at, limits)) = cached.as_ref()
            && at.elapsed() < LIMITS_TTL
        {
            return *limits;
        }
        match self
            .call::<(), ServiceConfigResponse>(Method::GET, "/service/config", s_token, &[], None)
            .await
        {
            Ok(config) => {
                let limits = config.limits.unwrap_or_default();
                if let Ok(mut cached) = self.limits.lock() {
                    *cached = Some((std::time::Instant::now(), limits));
                }
                limits
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Apple's limits; using the documented ones");
                Limits::default()
            }
        }
    }

    /// Builds a client trusting the public web roots plus the configured extra CA.
    pub fn new(config: AppleConfig) -> Result<Self, VppError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &config.extra_ca_file {
            let ca_err = |reason: String| VppError::CaFile {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| ca_err(e.to_string()))?)
                    .map_err(|e| ca_err(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| VppError::CaFile {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("Orchard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            config: Arc::new(config),
            limits: Arc::default(),
        })
    }

    /// `GET /client/config`.
    pub async fn client_config(&self, s_token: &str) -> Result<ClientConfigResponse, VppError> {
        self.call::<(), _>(Method::GET, "/client/config", s_token, &[], None)
            .await
    }

    /// `POST /client/config`: names this server as the MDM that owns the location and
    /// where Apple sends its notifications, with the bearer secret it sends back.
    pub async fn claim(
        &self,
        s_token: &str,
        mdm_info: &MdmInfo,
        notifications: Option<&NotificationTarget>,
    ) -> Result<ClientConfigResponse, VppError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Request<'a> {
            mdm_info: &'a MdmInfo,
            #[serde(skip_serializing_if = "Option::is_none")]
            notification_url: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            notification_auth_token: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            notification_types: Option<&'a [&'a str]>,
        }
        self.call(
            Method::POST,
            "/client/config",
            s_token,
            &[],
            Some(&Request {
                mdm_info,
                notification_url: notifications.map(|n| n.url.as_str()),
                notification_auth_token: notifications.map(|n| n.secret.as_str()),
                notification_types: notifications.map(|_| &NOTIFICATION_TYPES[..]),
            }),
        )
        .await
    }

    /// `GET /assets`, every page.
    pub async fn assets(&self, s_token: &str) -> Result<Vec<ResponseAsset>, VppError> {
        let pages: Vec<GetAssetsResponse> = self
            .pages("/assets", s_token, &[], |p: &GetAssetsResponse| {
                p.next_page_index
            })
            .await?;
        Ok(pages.into_iter().flat_map(|p| p.assets).collect())
    }

    /// `GET /assets?adamId=…`: one asset's current counts.
    pub async fn asset(
        &self,
        s_token: &str,
        adam_id: AdamId,
    ) -> Result<Option<ResponseAsset>, VppError> {
        let id = adam_id.to_string();
        let resp: GetAssetsResponse = self
            .call::<(), _>(
                Method::GET,
                "/assets",
                s_token,
                &[("adamId", id.as_str())],
                None,
            )
            .await?;
        Ok(resp.assets.into_iter().find(|a| a.adam_id == id))
    }

    /// `POST /assets/associate`: returns the event to follow.
    pub async fn associate(
        &self,
        s_token: &str,
        request: &ManageAssetsRequest,
    ) -> Result<EventResponse, VppError> {
        self.call(
            Method::POST,
            "/assets/associate",
            s_token,
            &[],
            Some(request),
        )
        .await
    }

    /// `POST /assets/disassociate`: returns the event to follow.
    pub async fn disassociate(
        &self,
        s_token: &str,
        request: &ManageAssetsRequest,
    ) -> Result<EventResponse, VppError> {
        self.call(
            Method::POST,
            "/assets/disassociate",
            s_token,
            &[],
            Some(request),
        )
        .await
    }

    /// `POST /users/create`: registers users; returns the event to follow.
    pub async fn create_users(
        &self,
        s_token: &str,
        request: &ManageUsersRequest,
    ) -> Result<EventResponse, VppError> {
        self.call(Method::POST, "/users/create", s_token, &[], Some(request))
            .await
    }

    /// `POST /users/retire`: retires users (their licenses go back); returns the event.
    pub async fn retire_users(
        &self,
        s_token: &str,
        request: &ManageUsersRequest,
    ) -> Result<EventResponse, VppError> {
        self.call(Method::POST, "/users/retire", s_token, &[], Some(request))
            .await
    }

    /// `GET /users[?sinceVersionId=…]`, every page: the users changed since `since`
    /// (all users when `None`), as Apple's incremental sync offers. The version to ask
    /// from next time is the first page's `versionId`.
    pub async fn users_changed(
        &self,
        s_token: &str,
        since: Option<&str>,
    ) -> Result<UserChanges, VppError> {
        let query: Vec<(&str, &str)> = since.map(|v| ("sinceVersionId", v)).into_iter().collect();
        let pages: Vec<GetUsersResponse> = self
            .pages("/users", s_token, &query, |p: &GetUsersResponse| {
                p.next_page_index
            })
            .await?;
        let version_id = pages.first().and_then(|p| p.version_id.clone());
        Ok(UserChanges {
            users: pages.into_iter().flat_map(|p| p.users).collect(),
            version_id,
        })
    }

    /// Walks a paged list (`pageIndex` from 0, following `nextPageIndex`, which must
    /// grow) and returns its pages; at most [`MAX_PAGES`], so a service that never says
    /// "last page" cannot keep the caller walking.
    async fn pages<T: DeserializeOwned>(
        &self,
        path: &str,
        s_token: &str,
        query: &[(&str, &str)],
        next: fn(&T) -> Option<i64>,
    ) -> Result<Vec<T>, VppError> {
        let mut out = Vec::new();
        let mut page = 0i64;
        loop {
            let index = page.to_string();
            let mut q = vec![("pageIndex", index.as_str())];
            q.extend_from_slice(query);
            let resp: T = self
                .call::<(), _>(Method::GET, path, s_token, &q, None)
                .await?;
            let following = next(&resp);
            out.push(resp);
            match following {
                Some(n) if n > page && out.len() < MAX_PAGES => page = n,
                Some(n) if n > page => {
                    return Err(VppError::Decode(format!(
                        "{path} has more than {MAX_PAGES} pages; not read further"
                    )));
                }
                _ => return Ok(out),
            }
        }
    }

    /// The VPP invitation URL for an invite code: service config's `invitationEmail`
    /// template with the code filled in.
    pub async fn invitation_url(
        &self,
        s_token: &str,
        invite_code: &str,
    ) -> Result<String, VppError> {
        let config: ServiceConfigResponse = self
            .call::<(), _>(Method::GET, "/service/config", s_token, &[], None)
            .await?;
        let template = config
            .urls
            .invitation_email
            .ok_or_else(|| VppError::Decode("service config has no invitationEmail URL".into()))?;
        Ok(template
            .replace("%25inviteCode%25", invite_code)
            .replace("%inviteCode%", invite_code))
    }

    /// `GET /status?eventId=…`.
    pub async fn event_status(
        &self,
        s_token: &str,
        event_id: &str,
    ) -> Result<StatusResponse, VppError> {
        self.call::<(), _>(
            Method::GET,
            "/status",
            s_token,
            &[("eventId", event_id)],
            None,
        )
        .await
    }

    /// iTunes lookup of several apps in one store country.
    pub async fn lookup(
        &self,
        adam_ids: &[AdamId],
        country: &str,
    ) -> Result<Vec<LookupResult>, VppError> {
        if adam_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = adam_ids
            .iter()
            .map(AdamId::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let request = self
            .http
            .get(&self.config.lookup_url)
            .query(&[("id", ids.as_str()), ("country", country)]);
        let (status, body) = self.send("lookup", request).await?;
        if !status.is_success() {
            return Err(VppError::Http {
                status: status.as_u16(),
            });
        }
        let resp: LookupResponse =
            serde_json::from_slice(&body).map_err(|e| VppError::Decode(e.to_string()))?;
        Ok(resp.results)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        s_token: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, VppError> {
        let url = format!("{}{}", self.config.vpp_base_url.trim_end_matches('/'), path);
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(s_token)
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, bytes) = self.send(path, request).await?;
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) if !status.is_success() => {
                return Err(VppError::Http {
                    status: status.as_u16(),
                });
            }
            Err(e) => return Err(VppError::Decode(e.to_string())),
        };
        if let Some(error_number) = value.get("errorNumber").and_then(serde_json::Value::as_i64) {
            let message = value
                .get("errorMessage")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            return Err(VppError::Apple {
                status: status.as_u16(),
                error_number,
                message,
            });
        }
        if !status.is_success() {
            return Err(VppError::Http {
                status: status.as_u16(),
            });
        }
        serde_json::from_value(value).map_err(|e| VppError::Decode(e.to_string()))
    }

    /// Sends with retries on network errors, 5xx and 429, waiting `Retry-After` when given.
    async fn send(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, bytes::Bytes), VppError> {
        let mut delay = self.config.backoff;
        let mut attempt = 1;
        loop {
            let started = std::time::Instant::now();
            let Some(this_try) = request.try_clone() else {
                let resp = request.send().await;
                let status = resp.as_ref().ok().map(|r| r.status().as_u16());
                crate::telemetry::apple_call(endpoint, status, started.elapsed());
                let resp = resp?;
                let status = resp.status();
                return Ok((status, read_body(resp).await?));
            };
            let sent = this_try.send().await;
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            crate::telemetry::apple_call(endpoint, status, started.elapsed());
            let outcome: Result<(), Option<Duration>> = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = read_body(resp).await?;
                    if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < self.config.attempts
                    {
                        Err(retry_after)
                    } else {
                        return Ok((status, body));
                    }
                }
                Err(e) if attempt < self.config.attempts && (e.is_connect() || e.is_timeout()) => {
                    Err(None)
                }
                Err(e) => return Err(e.into()),
            };
            if let Err(retry_after) = outcome {
                let wait = retry_after.unwrap_or(delay).min(Duration::from_secs(300));
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "Apple call failed, retrying"
                );
                tokio::time::sleep(wait).await;
                delay *= 3;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod body_limit_tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTP server on loopback answering every request with `head` and then `body_len`
    /// bytes of JSON-looking filler.
    async fn answering(head: String, body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let head = head.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(head.as_bytes()).await;
                    let chunk = vec![b' '; 64 * 1024];
                    let mut sent = 0;
                    while sent < body_len {
                        let n = chunk.len().min(body_len - sent);
                        if socket.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn client(base: String) -> AppleClient {
        AppleClient::new(AppleConfig {
            vpp_base_url: base.clone(),
            lookup_url: base,
            attempts: 1,
            ..AppleConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_by_its_length_or_as_it_streams() {
        let declared = answering(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                MAX_APPLE_BODY + 1
            ),
            0,
        )
        .await;
        let err = client(declared).client_config("s").await.unwrap_err();
        assert!(matches!(err, VppError::TooLarge { .. }), "{err}");
        let streamed = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".into(),
            MAX_APPLE_BODY + 64 * 1024,
        )
        .await;
        let err = client(streamed).client_config("s").await.unwrap_err();
        assert!(matches!(err, VppError::TooLarge { .. }), "{err}");
    }
}
