//! The admin API over HTTPS: the server's CA pinned (or the web's roots), the bearer
//! token, every list read to its end through its cursors, and names turned into ids.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

/// A client of one server with one admin token.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A client of `server`, trusting `ca_pem` when given (else the web's roots).
    pub(crate) fn new(server: &str, ca_pem: Option<&str>, token: &str) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots
                        .add(cert.context("the CA file holds a broken certificate")?)
                        .context("the CA file holds a certificate rustls refuses")?;
                }
                if roots.is_empty() {
                    bail!("the CA file holds no certificate");
                }
            }
            None => roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("orchard-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
    }

    async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(refusal(status, &body))
    }

    /// GET a path.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Self::answer(self.request(reqwest::Method::GET, path).send().await?).await
    }

    /// Sends JSON with `method`.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        Self::answer(self.request(method, path).json(body).send().await?).await
    }

    /// DELETE a path.
    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        Self::answer(self.request(reqwest::Method::DELETE, path).send().await?).await
    }

    /// Every item of a list.
    pub(crate) async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let body = self.get(&page).await?;
            items.extend(body["items"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The id of the item of `list` whose id or `name_field` is `given`; a name must be
    /// unique.
    pub(crate) async fn resolve(
        &self,
        list: &str,
        name_field: &str,
        given: &str,
    ) -> anyhow::Result<String> {
        let items = self.list_all(list).await?;
        if items.iter().any(|i| i["id"] == given) {
            return Ok(given.to_owned());
        }
        let named: Vec<&Value> = items.iter().filter(|i| i[name_field] == given).collect();
        match named.as_slice() {
            [one] => one["id"]
                .as_str()
                .map(str::to_owned)
                .context("the server gave an item without an id"),
            [] => bail!("no {} named or with the id {given:?}", noun(list)),
            many => bail!(
                "{} {} are named {given:?}; give the id instead: {}",
                many.len(),
                noun(list),
                many.iter()
                    .filter_map(|i| i["id"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Opens the event stream after the event `after`.
    pub(crate) async fn event_stream(
        &self,
        path: &str,
        after: Option<i64>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "text/event-stream");
        if let Some(id) = after {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(refusal(status, &body));
        }
        Ok(response)
    }
}

/// The server's refusal as an error: its status and message.
fn refusal(status: reqwest::StatusCode, body: &Value) -> anyhow::Error {
    match body["message"].as_str() {
        Some(message) => anyhow::anyhow!("{status}: {message}"),
        None => anyhow::anyhow!("{status}"),
    }
}

fn noun(list: &str) -> &str {
    list.trim_start_matches("/v1/")
        .split(['/', '?'])
        .next()
        .unwrap_or(list)
}
