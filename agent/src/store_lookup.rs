//! The App Store as a device sees it: looking up an item before installing it, through
//! the iTunes lookup API (Apple's, or a testbed's stand-in), asking which license the
//! device may use, and opening a VPP invitation signed in with the user's account.

use std::sync::Arc;

use orchard_protocol::store_item::platforms_from_store;
use orchard_protocol::{AdamId, SerialNumber};
use serde::Deserialize;

use crate::device::StoreApp;
use crate::error::AgentError;
use crate::facts::LicenseKind;
use crate::tls::{Trust, tls_client};

/// Where the App Store is.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// iTunes lookup URL, e.g. `https://itunes.apple.com/lookup`.
    pub lookup_url: String,
    /// Extra CA (PEM) to trust for it.
    pub ca_pem: Option<String>,
    /// Store country of the device.
    pub country: String,
}

/// Most App Store requests in flight at once from one client (a fleet shares one):
/// thousands of simulated devices woken together queue here instead of opening
/// thousands of connections.
const MAX_IN_FLIGHT: usize = 128;

/// An App Store lookup client.
#[derive(Debug, Clone)]
pub struct StoreLookup {
    http: reqwest::Client,
    config: Arc<StoreConfig>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LookupResult {
    track_id: u64,
    track_name: Option<String>,
    bundle_id: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    supported_devices: Vec<String>,
    minimum_os_version: Option<String>,
}

#[derive(Deserialize)]
struct LicenseResponse {
    #[serde(default)]
    license: Option<String>,
}

#[derive(Deserialize)]
struct LookupResponse {
    #[serde(default)]
    results: Vec<LookupResult>,
}

impl StoreLookup {
    /// Builds the client.
    pub fn new(config: StoreConfig) -> Result<Self, AgentError> {
        let http = tls_client(Trust::Public(config.ca_pem.as_deref()), None)?;
        Ok(Self {
            http,
            config: Arc::new(config),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Waits for a slot among the requests in flight.
    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed; were it, requests would go unbounded.
        self.in_flight.acquire().await.ok()
    }

    /// A GET of `url` with `query`, answered 2xx, its JSON body read.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, AgentError> {
        let _slot = self.slot().await;
        let response = self
            .http
            .get(url)
            .query(query)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// Where the device asks whether it holds a license for an item: beside the
    /// lookup service, at `/store/license`.
    fn license_url(&self) -> String {
        let base = self
            .config
            .lookup_url
            .trim_end_matches('/')
            .trim_end_matches("/lookup");
        format!("{base}/store/license")
    }

    /// Asks the store whose license this device can use for `adam_id`: the one of its
    /// serial number, or the one of the signed-in account; `None` when neither holds one.
    pub async fn license(
        &self,
        adam_id: AdamId,
        serial_number: &SerialNumber,
        account_hash: Option<&str>,
    ) -> Result<Option<LicenseKind>, AgentError> {
        let id = adam_id.to_string();
        let mut query = vec![
            ("adamId", id.as_str()),
            ("serialNumber", serial_number.as_str()),
        ];
        if let Some(hash) = account_hash {
            query.push(("idHash", hash));
        }
        let body: LicenseResponse = self.get(&self.license_url(), &query).await?;
        Ok(match body.license.as_deref() {
            Some("device") => Some(LicenseKind::Device),
            Some("user") => Some(LicenseKind::User),
            _ => None,
        })
    }

    /// Opens a VPP invitation URL signed in with the account `account_hash`: Apple
    /// then associates the invited user with that account.
    pub async fn join_program(
        &self,
        invitation_url: &str,
        account_hash: &str,
    ) -> Result<(), AgentError> {
        let _slot = self.slot().await;
        self.http
            .get(invitation_url)
            .query(&[("idHash", account_hash)])
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Looks an item up and the license this device holds for it; `None` when the
    /// store does not sell it in this country.
    pub async fn app_for(
        &self,
        adam_id: AdamId,
        serial_number: &SerialNumber,
        account_hash: Option<&str>,
        mac: bool,
    ) -> Result<Option<StoreApp>, AgentError> {
        let Some(mut app) = self.app(adam_id, mac).await? else {
            return Ok(None);
        };
        // Before sign-in a user license cannot be known: the device takes it to be
        // one, which makes it ask for the Apple ID.
        app.license = match self.license(adam_id, serial_number, account_hash).await? {
            None if account_hash.is_none() => Some(LicenseKind::User),
            found => found,
        };
        Ok(Some(app))
    }

    /// Looks an item up, as the Mac App Store does when `mac` (its entry, if the item
    /// has a Mac version); `None` when the store does not sell it in this country.
    pub async fn app(&self, adam_id: AdamId, mac: bool) -> Result<Option<StoreApp>, AgentError> {
        let id = adam_id.to_string();
        let mut query = vec![
            ("id", id.as_str()),
            ("country", self.config.country.as_str()),
        ];
        if mac {
            query.push(("entity", "macSoftware"));
        }
        let body: LookupResponse = self.get(&self.config.lookup_url, &query).await?;
        Ok(body
            .results
            .into_iter()
            .find(|r| r.track_id == adam_id.0)
            .and_then(|r| {
                let platforms = match r.kind.as_deref() {
                    Some("software" | "mac-software") => {
                        platforms_from_store(r.kind.as_deref(), &r.supported_devices, &[])
                    }
                    _ => Vec::new(),
                };
                Some(StoreApp {
                    adam_id,
                    bundle_id: r.bundle_id?,
                    name: r.track_name.unwrap_or_default(),
                    version: r.version.unwrap_or_else(|| "1.0".into()),
                    license: None,
                    platforms,
                    minimum_os: r.minimum_os_version,
                })
            }))
    }
}
