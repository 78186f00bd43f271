//! `orchard-testbed bench checkin`: Orchard's device channel against the TLS floor.
//! The same client (tokio-rustls, ring, a device identity, no session resumption)
//! sends the same Idle report with `PUT /mdm/connect` to a minimal tokio-rustls + hyper
//! server that answers 200 at once, and to Orchard's command channel, both in this
//! process with the same TLS configuration; first with a full mutual-TLS handshake per
//! request, then on kept-alive connections. It prints each rate and Orchard's ratio to
//! the floor. A benchmark, not a test: it prints figures and asserts nothing but that
//! every answer is a 200.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orchard_protocol::report::{CommandReport, CommandStatus};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::harness::Testbed;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How long each measurement runs.
    pub duration: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Rates {
    full_handshake: f64,
    kept_alive: f64,
}

/// Largest answer header or body the client reads.
const MAX_ANSWER: usize = 64 * 1024;

/// Runs the bench and prints the table.
pub async fn checkin(options: BenchOptions) -> anyhow::Result<()> {
    let bed = Testbed::builder().start().await?;
    let udid = "BENCH-DEVICE-0001";
    let (cert_pem, key_pem) = bed.enroll_identity(udid).await?;
    let body = CommandReport::new(udid.into(), CommandStatus::Idle, None).to_xml()?;

    // The floor: the same TLS configuration as Orchard's, and an answer with nothing
    // behind it.
    let floor = minimal_server().await?;

    let client = Arc::new(client_config(&bed.server.ca_pem, &cert_pem, &key_pem)?);
    let orchard_addr: SocketAddr = bed
        .server
        .url
        .trim_start_matches("https://")
        .parse()
        .context("the server's address")?;
    let floor_client = Arc::new(client_config(
        &floor.ca_pem,
        &floor.cert_pem,
        &floor.key_pem,
    )?);

    println!(
        "device channel bench: {} requests in flight, {:?} per measurement",
        options.concurrency, options.duration
    );
    let minimal = measure(floor.addr, floor_client, &body, &options).await?;
    let orchard = measure(orchard_addr, client, &body, &options).await?;
    println!();
    println!("  server                            full handshake/s   kept-alive/s");
    println!(
        "  minimal tokio-rustls + hyper      {:>16.0}   {:>12.0}",
        minimal.full_handshake, minimal.kept_alive
    );
    println!(
        "  Orchard PUT /mdm/connect (Idle)   {:>16.0}   {:>12.0}",
        orchard.full_handshake, orchard.kept_alive
    );
    println!(
        "  ratio Orchard / minimal           {:>16.2}   {:>12.2}",
        orchard.full_handshake / minimal.full_handshake.max(f64::EPSILON),
        orchard.kept_alive / minimal.kept_alive.max(f64::EPSILON)
    );
    floor.task.abort();
    bed.shutdown().await;
    Ok(())
}

async fn measure(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    body: &[u8],
    options: &BenchOptions,
) -> anyhow::Result<Rates> {
    let full_handshake = rate(addr, client.clone(), body, options, false).await?;
    let kept_alive = rate(addr, client, body, options, true).await?;
    Ok(Rates {
        full_handshake,
        kept_alive,
    })
}

/// Requests per second over `options.duration` with `options.concurrency` workers, on
/// a new connection each (`keep_alive` false) or one connection per worker.
async fn rate(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    body: &[u8],
    options: &BenchOptions,
    keep_alive: bool,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + options.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.max(1) {
        let client = client.clone();
        let done = done.clone();
        let body = body.to_vec();
        workers.spawn(async move {
            let connector = TlsConnector::from(client);
            let name = ServerName::IpAddress(addr.ip().into());
            while Instant::now() < until {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name.clone(), tcp).await?;
                let mut stream = BufReader::new(tls);
                loop {
                    request(&mut stream, &body, !keep_alive).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    if !keep_alive || Instant::now() >= until {
                        break;
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a bench worker stopped")??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// One `PUT /mdm/connect` and its answer, which must be a 200.
async fn request<S>(stream: &mut BufReader<S>, body: &[u8], close: bool) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let head = format!(
        "PUT /mdm/connect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-apple-aspen-mdm\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    let writer = stream.get_mut();
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(body).await?;
    writer.flush().await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("the server answered {:?}", line.trim_end());
    }
    let mut length = 0usize;
    let mut read = line.len();
    loop {
        line.clear();
        let n = stream.read_line(&mut line).await?;
        read += n;
        if n == 0 || read > MAX_ANSWER {
            bail!("the answer's header is cut or too long");
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("Content-Length")?;
        }
    }
    if length > MAX_ANSWER {
        bail!("the answer's body is too long");
    }
    let mut answer = vec![0; length];
    stream.read_exact(&mut answer).await?;
    Ok(())
}

fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = orchard_agent::tls::client_config(
        orchard_agent::tls::Trust::Only(ca_pem),
        Some((cert_pem, key_pem)),
    )?;
    // Every connection pays the whole handshake: no resumption.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The floor: Orchard's TLS configuration in front of a handler that answers 200 with
/// an empty body.
struct MinimalServer {
    addr: SocketAddr,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn minimal_server() -> anyhow::Result<MinimalServer> {
    let dir = tempfile::tempdir()?;
    let pki = orchard_certs::ServerPki::load_or_create(dir.path(), &["127.0.0.1".into()])?;
    let identity = orchard_certs::DeviceIdentityRequest::generate(&"BENCH-DEVICE-0001".into())?;
    let issued = pki
        .ca
        .sign_device_csr(&identity.csr_pem, &"BENCH-DEVICE-0001".into())?;
    let acceptor = TlsAcceptor::from(orchard_server::tls::server_config(&pki)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                // Read the report, answer nothing: the least a server can do.
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async {
                        let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(MinimalServer {
        addr,
        ca_pem: pki.ca.cert_pem().to_owned(),
        cert_pem: issued.cert_pem,
        key_pem: identity.key_pem,
        task,
        _dir: dir,
    })
}
