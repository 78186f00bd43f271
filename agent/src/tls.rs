//! HTTPS clients for the server and the App Store: rustls on ring, pinned or public
//! roots, an optional client identity.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::AgentError;

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// Only this CA (PEM): the device pins its server's CA.
    Only(&'a str),
    /// The public web roots, plus an extra CA (PEM) if given.
    Public(Option<&'a str>),
}

/// How long an idle kept-alive connection stays open.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(5);

/// TLS sessions a client remembers for resumption.
pub const SESSIONS_REMEMBERED: usize = 4;

/// A TLS client configuration (rustls on ring) with the given trust, optionally
/// presenting a client identity (certificate PEM, key PEM).
pub fn client_config(
    trust: Trust<'_>,
    identity: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, AgentError> {
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
    let mut config = match identity {
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
    // A device talks to a handful of servers: a few remembered sessions, each
    // reconnection resumed (as a real device's are) instead of a full handshake.
    config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_REMEMBERED);
    Ok(config)
}

/// Builds an HTTPS client with the given trust, optionally presenting a client identity
/// (certificate PEM, key PEM). TCP_NODELAY is set on every connection.
pub fn tls_client(
    trust: Trust<'_>,
    identity: Option<(&str, &str)>,
) -> Result<reqwest::Client, AgentError> {
    client_with(client_config(trust, identity)?)
}

/// Builds an HTTPS client on a TLS configuration already made (a clone of one shares
/// its remembered sessions). TCP_NODELAY is set on every connection.
pub fn client_with(config: rustls::ClientConfig) -> Result<reqwest::Client, AgentError> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .tcp_nodelay(true)
        // A device keeps its connection across back-to-back sessions and lets it go
        // once idle, as a real device does.
        .pool_idle_timeout(IDLE_CONNECTION)
        .timeout(Duration::from_secs(30))
        .user_agent("MDM/1.0")
        .build()?)
}
