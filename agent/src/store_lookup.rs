//! The App Store as a device sees it: looking up an item before installing it, through
//! the iTunes lookup API (Apple's, or a testbed's stand-in).

use std::sync::Arc;

use orchard_protocol::AdamId;
use serde::Deserialize;

use crate::device::StoreApp;
use crate::transport::{AgentError, Trust, tls_client};

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

/// An App Store lookup client.
#[derive(Debug, Clone)]
pub struct StoreLookup {
    http: reqwest::Client,
    config: Arc<StoreConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LookupResult {
    track_id: u64,
    track_name: Option<String>,
    bundle_id: Option<String>,
    version: Option<String>,
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
        })
    }

    /// Looks an item up; `None` when the store does not sell it in this country.
    pub async fn app(&self, adam_id: AdamId) -> Result<Option<StoreApp>, AgentError> {
        let id = adam_id.to_string();
        let response = self
            .http
            .get(&self.config.lookup_url)
            .query(&[
                ("id", id.as_str()),
                ("country", self.config.country.as_str()),
            ])
            .send()
            .await?
            .error_for_status()?;
        let body: LookupResponse = response.json().await?;
        Ok(body
            .results
            .into_iter()
            .find(|r| r.track_id == adam_id.0)
            .and_then(|r| {
                Some(StoreApp {
                    adam_id,
                    bundle_id: r.bundle_id?,
                    name: r.track_name.unwrap_or_default(),
                    version: r.version.unwrap_or_else(|| "1.0".into()),
                })
            }))
    }
}
