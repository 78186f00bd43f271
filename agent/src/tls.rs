//! HTTPS clients for the server and the App Store: rustls on ring, pinned or public
//! roots, an optional client identity.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::AgentError;
use crate::metrics::AgentMetrics;

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

/// ring, offering the TLS 1.3 cipher suites in the order Apple's devices do
/// (AES-128-GCM with SHA-256 first), the TLS 1.2 ones after.
pub fn device_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    let mut provider = rustls::crypto::ring::default_provider();
    let first = [
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let rest = provider
        .cipher_suites
        .iter()
        .filter(|s| !first.iter().any(|f| f.suite() == s.suite()))
        .copied();
    provider.cipher_suites = first.into_iter().chain(rest).collect();
    Arc::new(provider)
}

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
    let builder = rustls::ClientConfig::builder_with_provider(device_provider())
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
    Ok(builder(config).build()?)
}

/// [`client_with`], counting each connection it opens in `opened`.
pub fn counted_client(
    config: rustls::ClientConfig,
    opened: Arc<AgentMetrics>,
) -> Result<reqwest::Client, AgentError> {
    Ok(builder(config)
        .connector_layer(tower::util::MapRequestLayer::new(move |destination| {
            opened.connections.fetch_add(1, Ordering::Relaxed);
            destination
        }))
        .build()?)
}

fn builder(config: rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .tcp_nodelay(true)
        // A device keeps its connection across back-to-back sessions and lets it go
        // once idle, as a real device does.
        .pool_idle_timeout(IDLE_CONNECTION)
        .timeout(Duration::from_secs(30))
        .user_agent("MDM/1.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_offer_aes_128_first_and_every_suite_of_ring() {
        let ours: Vec<_> = device_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            ours.first(),
            Some(&rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        let mut ours_sorted: Vec<_> = ours.iter().map(|s| u16::from(*s)).collect();
        let mut ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        ours_sorted.sort_unstable();
        ring.sort_unstable();
        assert_eq!(ours_sorted, ring, "the same suites, in another order");
    }
}
