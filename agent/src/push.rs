//! The device side of the push channel: keep one QUIC connection to the server's push
//! endpoint, register with the `PushMagic` sent in TokenUpdate, and turn every wake-up
//! into a check-in. Reconnects with jittered exponential back-off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use orchard_protocol::push::{FrameDecoder, PUSH_ALPN, PushFrame};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::AgentError;
use crate::metrics::AgentMetrics;

/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Keep-alive interval: well under the server's idle timeout, and short enough that a
/// restarted server's stateless reset reaches the device within seconds.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A server silent this long (four keep-alives unanswered, and no stateless reset: it is
/// down or unreachable) is given up on, and the device reconnects.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A client endpoint (one UDP socket) that many simulated devices can share.
pub fn client_endpoint(ipv6: bool) -> Result<quinn::Endpoint, AgentError> {
    let bind: SocketAddr = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" }
        .parse()
        .map_err(|_| AgentError::Tls("bad bind address".into()))?;
    quinn::Endpoint::client(bind)
        .map_err(|e| AgentError::Tls(format!("cannot open a UDP socket: {e}")))
}

/// The QUIC client configuration of one device: TLS 1.3, its identity, the server CA.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<quinn::ClientConfig, AgentError> {
    let tls_err = |e: &dyn std::fmt::Display| AgentError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| tls_err(&e))?)
            .map_err(|e| tls_err(&e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_err(&e))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::device_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_err(&e))?;
    tls.alpn_protocols = vec![PUSH_ALPN.to_vec()];
    tls.resumption =
        rustls::client::Resumption::in_memory_sessions(crate::tls::SESSIONS_REMEMBERED);
    let quic = QuicClientConfig::try_from(tls).map_err(|e| tls_err(&e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(0u8.into())
        .max_concurrent_uni_streams(0u8.into())
        .stream_receive_window(8192u32.into())
        .receive_window(16384u32.into())
        .send_window(16384)
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Where to connect: parsed from `quic://host:port`.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// Socket address.
    pub addr: SocketAddr,
    /// TLS server name.
    pub server_name: String,
}

impl PushTarget {
    /// Resolves a push URL.
    pub async fn resolve(url: &str) -> Result<Self, AgentError> {
        let rest = url
            .strip_prefix("quic://")
            .ok_or_else(|| AgentError::Tls(format!("push URL {url:?} must start with quic://")))?;
        let host_port = rest.split('/').next().unwrap_or(rest);
        let host = match host_port.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => host_port,
        };
        let addr = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| AgentError::Tls(format!("cannot resolve {host_port}: {e}")))?
            .next()
            .ok_or_else(|| AgentError::Tls(format!("{host_port} has no address")))?;
        Ok(Self {
            addr,
            server_name: host.to_owned(),
        })
    }
}

/// What registering tells the device to do.
pub struct Registration {
    /// `PushMagic` from TokenUpdate.
    pub push_magic: String,
    /// Push topic from the MDM payload.
    pub topic: String,
}

/// Keeps the push connection up until `shutdown`, notifying `wake` on every wake-up.
pub async fn run(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    target: PushTarget,
    registration: Registration,
    wake: Arc<Notify>,
    metrics: Arc<AgentMetrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = connection(&endpoint, &config, &target, &registration, &wake, &metrics) => result,
        };
        match connected {
            Ok(()) => backoff.succeeded(),
            Err(e) => tracing::debug!(error = %e, "push connection lost"),
        }
        let delay = backoff.failed();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection's life. Returns Ok when it was registered and later ended.
async fn connection(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    target: &PushTarget,
    registration: &Registration,
    wake: &Notify,
    metrics: &AgentMetrics,
) -> Result<(), String> {
    let conn = endpoint
        .connect_with(config.clone(), target.addr, &target.server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let register = PushFrame::Register {
        push_magic: registration.push_magic.clone(),
        topic: registration.topic.clone(),
    };
    send.write_all(&register.encode())
        .await
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::default();
    // Frames are a few dozen bytes: a small buffer, kept by every idle device.
    let mut buf = [0u8; 256];
    let mut registered = false;
    let result = loop {
        match decoder.next_frame() {
            Ok(Some(PushFrame::Registered { .. })) => {
                if !registered {
                    registered = true;
                    metrics.push_connected.fetch_add(1, Ordering::Relaxed);
                    metrics.push_registrations.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Ok(Some(PushFrame::Wake { mdm })) if mdm == registration.push_magic => {
                metrics.wakes.fetch_add(1, Ordering::Relaxed);
                wake.notify_one();
                continue;
            }
            Ok(Some(PushFrame::Wake { .. })) => {
                tracing::warn!("wake-up for another PushMagic ignored");
                continue;
            }
            Ok(Some(PushFrame::Refused { refused })) => {
                break Err(format!("push registration refused: {refused}"));
            }
            Ok(Some(PushFrame::Register { .. })) => {
                break Err("unexpected frame from the server".into());
            }
            Err(e) => break Err(e.to_string()),
            Ok(None) => {}
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push_bytes(&buf[..n]),
            Ok(None) | Err(_) if registered => break Ok(()),
            Ok(None) => break Err("server closed the stream".into()),
            Err(e) => break Err(e.to_string()),
        }
    };
    if registered {
        metrics.push_connected.fetch_sub(1, Ordering::Relaxed);
    }
    result
}
