//! TLS configuration: one crypto provider (ring) for the whole workspace, the server
//! certificate, and client certificates verified against our CA when presented.

use std::sync::Arc;

use orchard_certs::ServerPki;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM could not be read.
    #[error("cannot read {what}: {reason}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// The crypto provider every TLS endpoint of Orchard uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server's TLS configuration.
pub fn server_config(pki: &ServerPki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.ca.cert_der().clone())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem {
                what: "server certificate",
                reason: e.to_string(),
            })?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).map_err(|e| {
        TlsError::Pem {
            what: "server key",
            reason: e.to_string(),
        }
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Devices reconnect often: their sessions resume from a ticket (which carries the
    // client certificate the first handshake verified), sparing the signatures of a
    // full handshake. One ticket a connection is enough for a device's one channel;
    // the ticket keys live in memory and rotate.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}
