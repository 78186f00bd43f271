//! The thin async shell around the device model: enrollment, check-ins and the command
//! channel over mutual TLS, with the MDM payload from enrollment deciding the URLs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchard_certs::DeviceIdentityRequest;
use orchard_protocol::checkin::{Authenticate, CheckinMessage, TokenUpdate};
use orchard_protocol::command::CommandEnvelope;
use orchard_protocol::enroll::{EnrollRequest, EnrollResponse, MdmPayload};
use orchard_protocol::report::{CommandReport, CommandStatus};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::device::{Device, DeviceFacts, Timings};
use crate::store_lookup::{StoreConfig, StoreLookup};

/// Most commands handled in one session before the device yields.
const MAX_COMMANDS_PER_SESSION: usize = 64;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Network, TLS or HTTP failure.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server refused a request.
    #[error("{what} refused with HTTP {status}: {body}")]
    Refused {
        /// Which request.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The server's error body.
        body: String,
    },
    /// A message could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(#[from] orchard_protocol::ProtocolError),
    /// Key or CSR generation failed.
    #[error("identity error: {0}")]
    Identity(#[from] orchard_certs::CertError),
    /// A PEM or TLS setting is unusable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// Only this CA (PEM): the device pins its server's CA.
    Only(&'a str),
    /// The public web roots, plus an extra CA (PEM) if given.
    Public(Option<&'a str>),
}

/// Builds an HTTPS client with the given trust, optionally presenting a client identity
/// (certificate PEM, key PEM). TCP_NODELAY is set on every connection.
pub fn tls_client(
    trust: Trust<'_>,
    identity: Option<(&str, &str)>,
) -> Result<reqwest::Client, AgentError> {
    let tls_err = |e: &dyn std::fmt::Display| AgentError::Tls(e.to_string());
    let (mut roots, ca_pem) = match trust {
        Trust::Only(pem) => (rustls::RootCertStore::empty(), Some(pem)),
        Trust::Public(extra) => (
            rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            extra,
        ),
    };
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| tls_err(&e))?)
                .map_err(|e| tls_err(&e))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(&e))?
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| tls_err(&e))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_err(&e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(&e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .user_agent("MDM/1.0")
        .build()?)
}

/// How to reach the server and what device to be.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL (enrollment is at `/mdm/enroll`).
    pub server_url: String,
    /// The server CA in PEM.
    pub server_ca_pem: String,
    /// The enrollment secret.
    pub enrollment_secret: String,
    /// The device.
    pub facts: DeviceFacts,
    /// How often the device polls the command channel.
    pub poll_interval: Duration,
    /// The App Store the device installs from.
    pub store: StoreConfig,
    /// Simulated durations.
    pub timings: Timings,
}

/// An enrolled device talking to its server.
#[derive(Clone)]
pub struct Agent {
    http: reqwest::Client,
    payload: MdmPayload,
    store: StoreLookup,
    device: Arc<Mutex<Device>>,
    poll_interval: Duration,
}

async fn refused(what: &'static str, response: reqwest::Response) -> AgentError {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    AgentError::Refused { what, status, body }
}

impl Agent {
    /// Enrolls the device: key pair, CSR, enrollment request; then follows the MDM
    /// payload it receives with Authenticate and TokenUpdate.
    pub async fn enroll(config: AgentConfig) -> Result<Self, AgentError> {
        let udid = config.facts.udid.clone();
        let identity = DeviceIdentityRequest::generate(&udid)?;
        let anonymous = tls_client(Trust::Only(&config.server_ca_pem), None)?;
        let request = EnrollRequest {
            enrollment_secret: config.enrollment_secret.clone(),
            csr_pem: identity.csr_pem.clone(),
            udid: udid.clone(),
            serial_number: config.facts.serial_number.clone(),
            product_name: Some(config.facts.product_name.clone()),
            os_version: Some(config.facts.os_version.clone()),
        };
        let url = format!("{}/mdm/enroll", config.server_url.trim_end_matches('/'));
        let response = anonymous.post(url).body(request.to_xml()?).send().await?;
        if !response.status().is_success() {
            return Err(refused("enrollment", response).await);
        }
        let enrolled = EnrollResponse::from_xml(&response.bytes().await?)?;
        let http = tls_client(
            Trust::Only(&enrolled.ca_certificate_pem),
            Some((&enrolled.certificate_pem, &identity.key_pem)),
        )?;
        let agent = Self {
            http,
            payload: enrolled.mdm_payload,
            store: StoreLookup::new(config.store)?,
            device: Arc::new(Mutex::new(Device::new(config.facts, config.timings))),
            poll_interval: config.poll_interval,
        };
        agent.authenticate().await?;
        agent.token_update().await?;
        Ok(agent)
    }

    /// The device model (read it; never hold the lock across an await).
    pub fn device(&self) -> Arc<Mutex<Device>> {
        self.device.clone()
    }

    fn facts(&self) -> DeviceFacts {
        self.device
            .lock()
            .map(|d| d.facts.clone())
            .unwrap_or_else(|p| p.into_inner().facts.clone())
    }

    async fn checkin(&self, message: CheckinMessage) -> Result<(), AgentError> {
        let response = self
            .http
            .put(self.payload.check_in_url())
            .header("Content-Type", "application/x-apple-aspen-mdm-checkin")
            .body(message.to_xml()?)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(refused("check-in", response).await);
        }
        Ok(())
    }

    /// Sends Authenticate.
    pub async fn authenticate(&self) -> Result<(), AgentError> {
        let f = self.facts();
        self.checkin(CheckinMessage::Authenticate(Authenticate {
            topic: self.payload.topic.clone(),
            udid: f.udid,
            os_version: Some(f.os_version),
            build_version: Some(f.build_version),
            product_name: Some(f.product_name),
            serial_number: Some(f.serial_number),
            device_name: None,
            model: None,
            model_name: None,
        }))
        .await
    }

    /// Sends TokenUpdate with this device's push token and PushMagic.
    pub async fn token_update(&self) -> Result<(), AgentError> {
        let f = self.facts();
        self.checkin(CheckinMessage::TokenUpdate(TokenUpdate {
            topic: self.payload.topic.clone(),
            udid: f.udid.clone(),
            token: serde_bytes::ByteBuf::from(f.udid.as_str().as_bytes().to_vec()),
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
            unlock_token: None,
            awaiting_configuration: Some(false),
        }))
        .await
    }

    async fn put_report(
        &self,
        report: &CommandReport,
    ) -> Result<Option<CommandEnvelope>, AgentError> {
        let response = self
            .http
            .put(&self.payload.server_url)
            .header(
                "Content-Type",
                "application/x-apple-aspen-mdm; charset=UTF-8",
            )
            .body(report.to_xml()?)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(refused("command channel", response).await);
        }
        let body = response.bytes().await?;
        if body.is_empty() {
            return Ok(None);
        }
        Ok(Some(CommandEnvelope::from_xml(&body)?))
    }

    /// One command-channel session: Idle, then every command until the server has none.
    /// Returns how many commands were handled.
    pub async fn session(&self) -> Result<usize, AgentError> {
        let udid = self.facts().udid;
        let mut report = CommandReport::new(udid, CommandStatus::Idle, None);
        let mut handled = 0;
        while let Some(envelope) = self.put_report(&report).await? {
            let store_app = match crate::device::Device::store_lookup_needed(&envelope) {
                Some(adam_id) => self.store.app(adam_id).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "App Store lookup failed");
                    None
                }),
                None => None,
            };
            report = {
                let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
                device.handle(&envelope, store_app.as_ref(), Instant::now())
            };
            handled += 1;
            if handled >= MAX_COMMANDS_PER_SESSION {
                // Report the last result and let the server answer; the rest waits for the next poll.
                self.put_report(&report).await?;
                break;
            }
        }
        Ok(handled)
    }

    /// Polls the command channel every `poll_interval` until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.session().await {
                tracing::warn!(error = %e, "session failed; will retry at the next poll");
            }
            if let Ok(mut device) = self.device.lock() {
                device.tick(Instant::now());
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
