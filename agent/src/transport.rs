//! The thin async shell around the device model: enrollment, check-ins and the command
//! channel over mutual TLS, with the MDM payload from enrollment deciding the URLs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchard_certs::DeviceIdentityRequest;
use orchard_protocol::checkin::{Authenticate, CheckOut, CheckinMessage, TokenUpdate};
use orchard_protocol::command::CommandEnvelope;
use orchard_protocol::enroll::{EnrollRequest, EnrollResponse, MdmPayload};
use orchard_protocol::portal::AppRequest;
use orchard_protocol::prompt::PromptReport;
use orchard_protocol::report::{CommandReport, CommandStatus};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::device::{App, Device, DeviceAction, Timings};
use crate::error::AgentError;
use crate::facts::{DeviceFacts, Platform};
use crate::metrics::AgentMetrics;
use crate::push::{self, PushTarget, Registration};
use crate::store_lookup::{StoreConfig, StoreLookup};
use crate::tls::{Trust, client_config, counted_client, tls_client};

/// First wait after a failed session.
const SESSION_RETRY_START: Duration = Duration::from_secs(1);
/// Longest wait between tries of a failing session (never longer than the periodic
/// check-in).
const SESSION_RETRY_MAX: Duration = Duration::from_secs(60);
/// Most commands handled in one session before the device yields.
const MAX_COMMANDS_PER_SESSION: usize = 64;

/// What one command-channel session did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Commands handled.
    pub handled: usize,
    /// Whether a command was put off because the App Store could not be reached.
    pub put_off: bool,
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
    /// The long periodic check-in interval (pushes make check-ins immediate).
    pub poll_interval: Duration,
    /// The App Store the device installs from.
    pub store: StoreConfig,
    /// Simulated durations.
    pub timings: Timings,
    /// Where the device keeps its state across restarts.
    pub state_path: Option<PathBuf>,
    /// A QUIC endpoint shared by many devices (one is opened when absent).
    pub quic: Option<quinn::Endpoint>,
    /// Counters, shared by a fleet.
    pub metrics: Arc<AgentMetrics>,
    /// An App Store client shared by a fleet (one is made from `store` when absent).
    pub shared_store: Option<StoreLookup>,
}

/// What a device keeps on disk: identity, enrollment, apps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedState {
    facts: DeviceFacts,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
    payload: MdmPayload,
    push_url: Option<String>,
    push_magic: String,
    apps: Vec<App>,
    handled: BTreeMap<String, u64>,
}

/// The enrollment a device holds.
#[derive(Debug, Clone)]
struct Enrollment {
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
    payload: MdmPayload,
    push_url: Option<String>,
    push_magic: String,
}

/// A device's way to its server. The TLS configuration, with the sessions it remembers
/// for resumption, lives as long as the device; the HTTP client and its connection only
/// while the device talks to the server: a device between sessions holds no connection
/// (as a real one lets its connection go), and the next session resumes its TLS session.
struct ServerLink {
    tls: rustls::ClientConfig,
    client: Mutex<Option<reqwest::Client>>,
    metrics: Arc<AgentMetrics>,
}

impl ServerLink {
    fn new(tls: rustls::ClientConfig, metrics: Arc<AgentMetrics>) -> Self {
        Self {
            tls,
            client: Mutex::new(None),
            metrics,
        }
    }

    /// The client of the current conversation, made when there is none.
    fn client(&self) -> Result<reqwest::Client, AgentError> {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = client.as_ref() {
            return Ok(c.clone());
        }
        let made = counted_client(self.tls.clone(), self.metrics.clone())?;
        *client = Some(made.clone());
        Ok(made)
    }

    /// Ends the conversation: the connection closes once no request holds it.
    fn hang_up(&self) {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(client);
    }
}

/// An enrolled device talking to its server.
#[derive(Clone)]
pub struct Agent {
    http: Arc<ServerLink>,
    enrollment: Arc<Enrollment>,
    store: StoreLookup,
    device: Arc<Mutex<Device>>,
    poll_interval: Duration,
    wake: Arc<Notify>,
    metrics: Arc<AgentMetrics>,
    state_path: Option<PathBuf>,
    quic: Option<quinn::Endpoint>,
    resumed: bool,
    /// A command's result the server did not take (it was down): sent first in the next
    /// session, as a device does, so that the command is not run again.
    undelivered: Arc<Mutex<Option<CommandReport>>>,
}

async fn refused(what: &'static str, response: reqwest::Response) -> AgentError {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    AgentError::Refused { what, status, body }
}

fn load_state(path: &std::path::Path) -> Result<Option<SavedState>, AgentError> {
    let state_err = |reason: String| AgentError::State {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(e.to_string())),
    }
}

/// Sends an enrollment request (`what`: an enrollment or a renewal) for the configured
/// device with `credential` and a CSR through `client`, which presents the current
/// identity for a renewal.
async fn post_enrollment(
    config: &AgentConfig,
    client: &reqwest::Client,
    credential: String,
    csr_pem: &str,
    what: &'static str,
) -> Result<EnrollResponse, AgentError> {
    let facts = &config.facts;
    let request = EnrollRequest {
        enrollment_secret: credential,
        csr_pem: csr_pem.to_owned(),
        udid: facts.udid.clone(),
        serial_number: facts.serial_number.clone(),
        product_name: Some(facts.product_name.clone()),
        os_version: Some(facts.os_version.clone()),
        ownership: Some(facts.ownership.wire()),
        single_app_mode: Some(facts.kiosk),
    };
    let url = format!("{}/mdm/enroll", config.server_url.trim_end_matches('/'));
    config.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = client.post(url).body(request.to_xml()?).send().await?;
    if !response.status().is_success() {
        return Err(refused(what, response).await);
    }
    Ok(EnrollResponse::from_xml(&response.bytes().await?)?)
}

/// Whether the certificate is in the last third of its validity.
fn renewal_due_now(cert_pem: &str) -> bool {
    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .and_then(|der| orchard_certs::validity(&der).ok())
        .is_some_and(|(from, until)| crate::renewal::renewal_due(from, until, time_now()))
}

fn certificate_valid(cert_pem: &str) -> bool {
    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .and_then(|der| orchard_certs::not_after(&der).ok())
        .is_some_and(|not_after| not_after > time_now())
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The wall-clock time of a device-clock instant, RFC 3339 UTC.
fn wall_clock(at: Instant) -> String {
    let now = Instant::now();
    let wall = if at <= now {
        time_now() - now.duration_since(at)
    } else {
        time_now() + at.duration_since(now)
    };
    wall.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Agent {
    /// Starts a device: resumes from its state file when it holds a valid certificate,
    /// otherwise enrolls (and writes the state file).
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        if let Some(path) = &config.state_path
            && let Some(saved) = load_state(path)?
            && certificate_valid(&saved.cert_pem)
        {
            let mut device =
                Device::restore(saved.facts, saved.apps, saved.handled, config.timings);
            device.set_store_country(&config.store.country);
            let mut enrollment = Enrollment {
                key_pem: saved.key_pem,
                cert_pem: saved.cert_pem,
                ca_pem: saved.ca_pem,
                payload: saved.payload,
                push_url: saved.push_url,
                push_magic: saved.push_magic,
            };
            if renewal_due_now(&enrollment.cert_pem) {
                enrollment = Self::renew(&config, enrollment).await?;
                let agent = Self::assemble(config.clone(), enrollment, device, true)?;
                agent.save()?;
                return Ok(agent);
            }
            return Self::assemble(config.clone(), enrollment, device, true);
        }
        Self::enroll(config).await
    }

    /// Renews the identity certificate: a new key and CSR, sent with the current
    /// certificate as the TLS client identity, which proves the device is the one
    /// enrolled. Everything but the key and certificate stays.
    async fn renew(config: &AgentConfig, current: Enrollment) -> Result<Enrollment, AgentError> {
        let udid = config.facts.udid.clone();
        let identity = DeviceIdentityRequest::generate_with(&udid, config.facts.identity_key)?;
        let proven = tls_client(
            Trust::Only(&current.ca_pem),
            Some((&current.cert_pem, &current.key_pem)),
        )?;
        // The certificate proves the device; no credential is sent.
        let renewed = post_enrollment(
            config,
            &proven,
            String::new(),
            &identity.csr_pem,
            "certificate renewal",
        )
        .await?;
        config.metrics.renewals.fetch_add(1, Ordering::Relaxed);
        tracing::info!(udid = %config.facts.udid, "identity certificate renewed");
        Ok(Enrollment {
            key_pem: identity.key_pem,
            cert_pem: renewed.certificate_pem,
            ..current
        })
    }

    /// Enrolls the device: key pair, CSR, enrollment request; then follows the MDM
    /// payload it receives with Authenticate and TokenUpdate.
    pub async fn enroll(config: AgentConfig) -> Result<Self, AgentError> {
        let udid = config.facts.udid.clone();
        let identity = DeviceIdentityRequest::generate_with(&udid, config.facts.identity_key)?;
        let anonymous = tls_client(Trust::Only(&config.server_ca_pem), None)?;
        let enrolled = post_enrollment(
            &config,
            &anonymous,
            config.enrollment_secret.clone(),
            &identity.csr_pem,
            "enrollment",
        )
        .await?;
        config.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
        let enrollment = Enrollment {
            key_pem: identity.key_pem,
            cert_pem: enrolled.certificate_pem,
            ca_pem: enrolled.ca_certificate_pem,
            payload: enrolled.mdm_payload,
            push_url: enrolled.push_url,
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
        };
        let mut device = Device::new(config.facts.clone(), config.timings);
        device.set_store_country(&config.store.country);
        let agent = Self::assemble(config, enrollment, device, false)?;
        agent.authenticate().await?;
        agent.token_update().await?;
        agent.http.hang_up();
        agent.save()?;
        Ok(agent)
    }

    fn assemble(
        config: AgentConfig,
        enrollment: Enrollment,
        device: Device,
        resumed: bool,
    ) -> Result<Self, AgentError> {
        let tls = client_config(
            Trust::Only(&enrollment.ca_pem),
            Some((&enrollment.cert_pem, &enrollment.key_pem)),
        )?;
        Ok(Self {
            http: Arc::new(ServerLink::new(tls, config.metrics.clone())),
            enrollment: Arc::new(enrollment),
            store: match config.shared_store {
                Some(store) => store,
                None => StoreLookup::new(config.store)?,
            },
            device: Arc::new(Mutex::new(device)),
            poll_interval: config.poll_interval,
            wake: Arc::new(Notify::new()),
            metrics: config.metrics,
            state_path: config.state_path,
            quic: config.quic,
            resumed,
            undelivered: Arc::new(Mutex::new(None)),
        })
    }

    /// Whether this device resumed from its state file instead of enrolling.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The identity certificate in PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.enrollment.cert_pem
    }

    /// The device model (read it; never hold the lock across an await).
    pub fn device(&self) -> Arc<Mutex<Device>> {
        self.device.clone()
    }

    /// Writes the state file (through a temporary file and a rename).
    pub fn save(&self) -> Result<(), AgentError> {
        let Some(path) = &self.state_path else {
            return Ok(());
        };
        let (facts, apps, handled) = {
            let device = self.device.lock().unwrap_or_else(|p| p.into_inner());
            (
                device.facts.clone(),
                device.apps().values().cloned().collect(),
                device.handled().clone(),
            )
        };
        let e = &self.enrollment;
        let saved = SavedState {
            facts,
            key_pem: e.key_pem.clone(),
            cert_pem: e.cert_pem.clone(),
            ca_pem: e.ca_pem.clone(),
            payload: e.payload.clone(),
            push_url: e.push_url.clone(),
            push_magic: e.push_magic.clone(),
            apps,
            handled,
        };
        let state_err = |reason: String| AgentError::State {
            path: path.clone(),
            reason,
        };
        let json = serde_json::to_vec_pretty(&saved).map_err(|e| state_err(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json).map_err(|e| state_err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| state_err(e.to_string()))
    }

    fn facts(&self) -> DeviceFacts {
        self.device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .facts
            .clone()
    }

    async fn checkin(&self, message: CheckinMessage) -> Result<(), AgentError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .client()?
            .put(self.enrollment.payload.check_in_url())
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
            topic: self.enrollment.payload.topic.clone(),
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

    /// Does what the device's user set off (joining the VPP program) and reports the
    /// prompts shown or answered since the last report. What fails is kept for the
    /// next call.
    pub async fn deliver(&self) -> Result<(), AgentError> {
        let (actions, prompts, udid) = {
            let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
            device.tick(Instant::now());
            let prompts = device.take_prompt_report(wall_clock);
            (device.take_actions(), prompts, device.facts.udid.clone())
        };
        for action in actions {
            match action {
                DeviceAction::JoinProgram {
                    invitation_url,
                    account_hash,
                } => {
                    self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                    self.store
                        .join_program(&invitation_url, &account_hash)
                        .await?;
                }
            }
        }
        if prompts.is_empty() {
            return Ok(());
        }
        let report = CheckinMessage::PromptReport(PromptReport {
            udid,
            prompts: prompts.clone(),
        });
        if let Err(e) = self.checkin(report).await {
            self.device
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unreport(&prompts);
            return Err(e);
        }
        Ok(())
    }

    /// Asks the App Store about the license of every installed VPP app; an app whose
    /// license is gone is marked revoked (macOS then removes it after its grace period).
    /// Returns how many were found revoked.
    pub async fn recheck_licenses(&self) -> Result<usize, AgentError> {
        let (apps, facts) = {
            let device = self.device.lock().unwrap_or_else(|p| p.into_inner());
            (device.licensed_apps(), device.facts.clone())
        };
        let account = facts.account_hash();
        let mut revoked = 0;
        for (bundle_id, adam_id) in apps {
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let license = self
                .store
                .license(adam_id, &facts.serial_number, account.as_deref())
                .await?;
            // Without a signed-in account a user license cannot be checked.
            if license.is_none() {
                self.device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .license_revoked(&bundle_id, Instant::now());
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// The device's user asks for an app an Available assignment offers (Orchard's
    /// `OrchardAppRequest` check-in, as from a company portal).
    pub async fn request_app(&self, adam_id: orchard_protocol::AdamId) -> Result<(), AgentError> {
        let f = self.facts();
        self.checkin(CheckinMessage::AppRequest(AppRequest {
            udid: f.udid,
            itunes_store_id: adam_id,
        }))
        .await
    }

    /// Sends CheckOut: the MDM profile is removed and the device leaves management.
    pub async fn check_out(&self) -> Result<(), AgentError> {
        let f = self.facts();
        self.checkin(CheckinMessage::CheckOut(CheckOut {
            topic: self.enrollment.payload.topic.clone(),
            udid: f.udid,
        }))
        .await
    }

    /// Sends TokenUpdate with this device's push token and PushMagic.
    pub async fn token_update(&self) -> Result<(), AgentError> {
        let f = self.facts();
        self.checkin(CheckinMessage::TokenUpdate(TokenUpdate {
            topic: self.enrollment.payload.topic.clone(),
            udid: f.udid.clone(),
            token: serde_bytes::ByteBuf::from(f.udid.as_str().as_bytes().to_vec()),
            push_magic: self.enrollment.push_magic.clone(),
            unlock_token: None,
            awaiting_configuration: Some(false),
        }))
        .await
    }

    async fn put_report(
        &self,
        report: &CommandReport,
    ) -> Result<Option<CommandEnvelope>, AgentError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .client()?
            .put(&self.enrollment.payload.server_url)
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
    pub async fn session(&self) -> Result<Session, AgentError> {
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        let udid = self.facts().udid;
        let pending = self
            .undelivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut report =
            pending.unwrap_or_else(|| CommandReport::new(udid, CommandStatus::Idle, None));
        let mut session = Session::default();
        while let Some(envelope) = self.deliver_report(report).await? {
            let store_app = match Device::store_lookup_needed(&envelope) {
                Some(adam_id) => {
                    let facts = self.facts();
                    let account = facts.account_hash();
                    self.store
                        .app_for(
                            adam_id,
                            &facts.serial_number,
                            account.as_deref(),
                            facts.platform == Platform::MacOs,
                        )
                        .await
                        .map_err(|e| tracing::warn!(error = %e, "App Store lookup failed"))
                }
                None => Ok(None),
            };
            report = {
                let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
                match store_app {
                    Ok(store_app) => device.handle(&envelope, store_app.as_ref(), Instant::now()),
                    Err(()) => {
                        session.put_off = true;
                        device.store_unreachable(&envelope)
                    }
                }
            };
            session.handled += 1;
            if session.handled >= MAX_COMMANDS_PER_SESSION {
                // Report the last result; what the server offers next waits for the next session.
                self.deliver_report(report).await?;
                break;
            }
        }
        Ok(session)
    }

    /// Sends a report; a command's result that does not reach the server is kept for
    /// the next session.
    async fn deliver_report(
        &self,
        report: CommandReport,
    ) -> Result<Option<CommandEnvelope>, AgentError> {
        match self.put_report(&report).await {
            Ok(next) => Ok(next),
            Err(e) => {
                if report.status != CommandStatus::Idle {
                    *self.undelivered.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
                }
                Err(e)
            }
        }
    }

    /// Runs the device until `shutdown`: keeps the push channel up, checks in on every
    /// wake-up and on the long periodic timer, and saves its state after changes.
    pub async fn run(&self, shutdown: CancellationToken) {
        let push_task = match self.push_task(shutdown.clone()).await {
            Ok(task) => task,
            Err(e) => {
                tracing::warn!(error = %e, "no push channel; relying on periodic check-ins");
                None
            }
        };
        // A session that fails (the server is busy, restarting or unreachable) is
        // tried again soon, not at the next periodic check-in: what the server queued
        // for the device must not wait that long.
        let mut retry = Backoff::new(SESSION_RETRY_START, SESSION_RETRY_MAX);
        'run: loop {
            // Macs find out about revoked licenses themselves (iOS keeps the apps anyway).
            if self.facts().platform == crate::facts::Platform::MacOs
                && let Err(e) = Box::pin(self.recheck_licenses()).await
            {
                tracing::warn!(error = %e, "cannot check licenses with the App Store");
            }
            let mut wait = self.poll_interval;
            // The futures of a session live on the heap while it runs: a device waiting
            // for its next check-in keeps only the small state of its wait.
            match Box::pin(self.session()).await {
                Ok(session) => {
                    if session.handled > 0
                        && let Err(e) = self.save()
                    {
                        tracing::warn!(error = %e, "cannot save state");
                    }
                    // Something put off for want of the App Store is tried again soon.
                    if session.put_off {
                        wait = retry.failed().min(self.poll_interval);
                    } else {
                        retry.succeeded();
                    }
                }
                Err(e) => {
                    wait = retry.failed().min(self.poll_interval);
                    tracing::warn!(error = %e, retry_in = ?wait, "session failed; will retry");
                }
            }
            if let Err(e) = Box::pin(self.deliver()).await {
                tracing::warn!(error = %e, "cannot deliver prompt answers; will retry");
            }
            self.http.hang_up();
            // Until the next check-in: a wake-up, the long periodic timer, or unlocking
            // with commands put off. An install finishing or the user answering a
            // prompt is no check-in: only the prompt answers are reported.
            let check_in_at = tokio::time::Instant::now() + wait;
            loop {
                let next_step = self
                    .device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next_deadline()
                    .map(tokio::time::Instant::from_std);
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    _ = self.wake.notified() => break,
                    _ = tokio::time::sleep_until(check_in_at) => break,
                    _ = sleep_until_some(next_step) => {
                        let unlocked = self
                            .device
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .unlock_due(Instant::now());
                        if let Err(e) = Box::pin(self.deliver()).await {
                            tracing::warn!(error = %e, "cannot deliver prompt answers; will retry");
                        }
                        self.http.hang_up();
                        // Unlocked: check in for what was put off.
                        if unlocked {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(task) = push_task {
            let _ = task.await;
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "cannot save state");
        }
    }

    async fn push_task(
        &self,
        shutdown: CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, AgentError> {
        let Some(url) = &self.enrollment.push_url else {
            return Ok(None);
        };
        let target = PushTarget::resolve(url).await?;
        let endpoint = match &self.quic {
            Some(endpoint) => endpoint.clone(),
            None => push::client_endpoint(target.addr.is_ipv6())?,
        };
        let e = &self.enrollment;
        let config = push::client_config(&e.ca_pem, &e.cert_pem, &e.key_pem)?;
        let registration = Registration {
            push_magic: e.push_magic.clone(),
            topic: e.payload.topic.clone(),
        };
        Ok(Some(tokio::spawn(push::run(
            endpoint,
            config,
            target,
            registration,
            self.wake.clone(),
            self.metrics.clone(),
            shutdown,
        ))))
    }
}
