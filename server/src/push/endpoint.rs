//! The push endpoint, Orchard's stand-in for APNs: devices keep one QUIC connection
//! (mutual TLS with their identity certificate), register with their `PushMagic`, and
//! receive a wake frame whenever the hub wakes them.

use std::sync::Arc;
use std::time::Duration;

use orchard_protocol::push::{FrameDecoder, MAX_FRAME, PUSH_ALPN, PushFrame};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use super::hub::PushHub;
use crate::clock::Clock;
use crate::device::identity::DeviceIdentity;
use crate::store::Store;
use crate::tls::TlsError;

/// How long a device has to complete the handshake and register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long closing push connections may take to drain.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A connection with no traffic for this long is dropped (devices send keep-alives).
pub const PUSH_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The QUIC server configuration: TLS 1.3, a device certificate required, one stream
/// per connection and small windows (push frames are tiny).
pub fn server_config(tls_pki: &orchard_certs::ServerPki) -> Result<quinn::ServerConfig, TlsError> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let provider = crate::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(tls_pki.ca.cert_der().clone())
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls_pki.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem {
                what: "server certificate",
                reason: e.to_string(),
            })?;
    let key = PrivateKeyDer::from_pem_slice(tls_pki.server_key_pem.as_bytes()).map_err(|e| {
        TlsError::Pem {
            what: "server key",
            reason: e.to_string(),
        }
    })?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    tls.alpn_protocols = vec![PUSH_ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// Transport limits for push connections on both sides.
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1u8.into())
        .max_concurrent_uni_streams(0u8.into())
        .stream_receive_window(8192u32.into())
        .receive_window(16384u32.into())
        .send_window(16384)
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(quinn::IdleTimeout::try_from(PUSH_IDLE_TIMEOUT).ok());
    t
}

/// What the push endpoint admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushLimits {
    /// Most devices connected at once.
    pub max_connections: usize,
    /// Most handshakes (and registrations) in progress at once; more are refused.
    pub max_handshakes: usize,
    /// With more handshakes than this in progress, a client must first prove its
    /// address (a QUIC Retry) before the server spends anything on it.
    pub validate_above: usize,
}

impl Default for PushLimits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_handshakes: 1024,
            validate_above: 64,
        }
    }
}

/// Creates the push endpoint on `socket`. Its stateless-reset key is derived from
/// `reset_secret`, which outlives the process: after a restart (even a crash) the
/// server resets the devices' old connections at their next packet, and they reconnect
/// at once instead of waiting for their idle timeout.
pub fn endpoint(
    socket: std::net::UdpSocket,
    server: quinn::ServerConfig,
    reset_secret: &[u8],
) -> std::io::Result<quinn::Endpoint> {
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
    let reset = ring::hmac::sign(&secret, b"orchard push stateless reset");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref());
    // Connection IDs are checked against a key as well: the next process must recognise
    // the old ones as its own to answer them with a reset.
    let cid = ring::hmac::sign(&secret, b"orchard push connection ids");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_be_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config
        .cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        })
        // After a restart every device sends a packet within its keep-alive, many in
        // the same millisecond: each gets its reset (a reset is always smaller than the
        // packet that caused it, so answering all of them amplifies nothing).
        .min_reset_interval(Duration::ZERO);
    quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))
}

/// Accepts push connections until `shutdown`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    store: Arc<dyn Store>,
    hub: Arc<PushHub>,
    clock: Arc<dyn Clock>,
    limits: PushLimits,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
        };
        if hub.connected() >= limits.max_connections {
            tracing::debug!("push connection refused: the connection cap is reached");
            incoming.refuse();
            continue;
        }
        let in_progress = limits.max_handshakes - handshakes.available_permits();
        if in_progress >= limits.validate_above && !incoming.remote_address_validated() {
            // Under load, a handshake costs the server nothing until the client
            // answers a Retry from its claimed address.
            if let Err(refused) = incoming.retry() {
                refused.into_incoming().ignore();
            }
            continue;
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!("push connection refused: too many handshakes in progress");
            incoming.refuse();
            continue;
        };
        let store = store.clone();
        let hub = hub.clone();
        let clock = clock.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(reason) = connection(
                incoming,
                store.as_ref(),
                &hub,
                clock.as_ref(),
                permit,
                shutdown,
            )
            .await
            {
                tracing::debug!(%reason, "push connection ended");
            }
        });
    }
    endpoint.close(0u8.into(), b"server shutting down");
    // Every device was told; a peer that no longer answers (a device stopped without
    // closing) must not hold the shutdown up until its idle timeout.
    if tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle())
        .await
        .is_err()
    {
        tracing::debug!("push connections still draining at shutdown");
    }
}

async fn connection(
    incoming: quinn::Incoming,
    store: &dyn Store,
    hub: &Arc<PushHub>,
    clock: &dyn Clock,
    handshake: tokio::sync::OwnedSemaphorePermit,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let conn = tokio::time::timeout(REGISTER_TIMEOUT, incoming)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let cert = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().cloned())
        .ok_or("no client certificate")?;
    let identity = DeviceIdentity::from_certificate(&cert).map_err(|e| e.to_string())?;
    let (mut send, mut recv) = tokio::time::timeout(REGISTER_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "no stream opened".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::default();
    let mut buf = [0u8; 1024];
    let frame = tokio::time::timeout(REGISTER_TIMEOUT, async {
        loop {
            if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                return Ok::<_, String>(frame);
            }
            match recv.read(&mut buf).await.map_err(|e| e.to_string())? {
                Some(n) => decoder.push_bytes(&buf[..n]),
                None => return Err("stream closed before registering".into()),
            }
        }
    })
    .await
    .map_err(|_| "no registration".to_owned())??;
    let PushFrame::Register { push_magic, topic } = frame else {
        return Err("first frame must register".into());
    };
    let device = store
        .device_by_fingerprint(&identity.fingerprint)
        .await
        .map_err(|e| e.to_string())?;
    let refusal = match &device {
        None => Some("the certificate is not bound to a current enrollment"),
        Some(d) if d.udid != identity.udid => Some("the certificate is not bound to this device"),
        Some(d) if d.push_magic.as_deref() != Some(push_magic.as_str()) => {
            Some("unknown PushMagic; send TokenUpdate first")
        }
        Some(d) if d.topic.as_deref() != Some(topic.as_str()) => Some("wrong push topic"),
        Some(_) => None,
    };
    if let Some(reason) = refusal {
        let _ = send
            .write_all(
                &PushFrame::Refused {
                    refused: reason.into(),
                }
                .encode(),
            )
            .await;
        let _ = send.finish();
        conn.close(1u8.into(), reason.as_bytes());
        return Err(reason.into());
    }
    let udid = identity.udid;
    let (id, mut wakes) = hub.register(&udid);
    // Registered: the handshake is over.
    drop(handshake);
    let result = async {
        send.write_all(&PushFrame::Registered { registered: true }.encode())
            .await
            .map_err(|e| e.to_string())?;
        // Catch up with anything queued while the device was away: one coalesced wake.
        let wake = PushFrame::Wake {
            mdm: push_magic.clone(),
        }
        .encode();
        send.write_all(&wake).await.map_err(|e| e.to_string())?;
        hub.count_wake();
        // Commands that fall due later were to be announced by timers that may have died
        // with an earlier server process: the queue says when the next one is due.
        match store.next_deferred(&udid, clock.now()).await {
            Ok(Some(due)) => hub.wake_later(&udid, due.since(clock.now())),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the device's deferred commands"),
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                reason = conn.closed() => return Err(reason.to_string()),
                woken = wakes.recv() => match woken {
                    Some(()) => {
                        send.write_all(&wake).await.map_err(|e| e.to_string())?;
                        hub.count_wake();
                    }
                    None => {
                        conn.close(2u8.into(), b"disconnected by the server");
                        return Err("disconnected by the server".into());
                    }
                },
                read = recv.read(&mut buf) => match read {
                    Ok(Some(n)) if n <= MAX_FRAME => {}
                    _ => return Err("device closed its stream".into()),
                },
            }
        }
    }
    .await;
    hub.unregister(&udid, id);
    result
}
