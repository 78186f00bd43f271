//! Slow and idle clients cannot hold the server: a thousand connections that stay idle
//! after the handshake or stall in the middle of their headers or their body are closed
//! within the configured timeouts,
//! and while they are open an admin request and a device check-in both succeed. An
//! answer sent before its request's body was read says the connection closes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orchard_agent::tls::{Trust, client_config};
use orchard_protocol::report::{CommandReport, CommandStatus};
use orchard_server::http::ConnectionLimits;
use orchard_testbed::harness::{AdminClient, Testbed, wait_for};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

const STALLED: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(4);
/// Scheduling slack on two busy cores.
const SLACK: Duration = Duration::from_millis(1500);

fn connector(ca_pem: &str) -> TlsConnector {
    TlsConnector::from(Arc::new(client_config(Trust::Only(ca_pem), None).unwrap()))
}

/// Opens a TLS connection (`handshakes` bounds how many run at once), sends `partial`,
/// counts itself in `open`, and then sends nothing: returns how long after the stall
/// the server closed the connection.
async fn stall(
    connector: TlsConnector,
    addr: std::net::SocketAddr,
    partial: Vec<u8>,
    handshakes: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
) -> Duration {
    let permit = handshakes.acquire_owned().await.unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    drop(permit);
    tls.write_all(&partial).await.unwrap();
    tls.flush().await.unwrap();
    let stalled = Instant::now();
    open.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 4096];
    // Whatever the server answers (a 408 or 400), the connection must end.
    loop {
        match tokio::time::timeout(TIMEOUT * 10, tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return stalled.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => return stalled.elapsed(),
        }
    }
}

/// A testbed whose server has these connection limits.
async fn testbed(limits: ConnectionLimits) -> Testbed {
    Testbed::builder()
        .connection_limits(limits)
        .start()
        .await
        .unwrap()
}

/// Waits until `open` counts `n` stalled connections.
async fn until_open(open: &Arc<AtomicUsize>, n: usize) {
    wait_for(
        Duration::from_secs(60),
        "the stalled connections to open",
        || {
            let now = open.load(Ordering::SeqCst);
            async move {
                Ok(if now == n {
                    Ok(())
                } else {
                    Err(format!("{now} open"))
                })
            }
        },
    )
    .await
    .unwrap();
}

/// An Idle report of `udid` on the command channel.
async fn idle_checkin(bed: &Testbed, device: &reqwest::Client, udid: &str) -> reqwest::Response {
    let idle = CommandReport::new(udid.into(), CommandStatus::Idle, None)
        .to_xml()
        .unwrap();
    device
        .put(format!("{}/mdm/connect", bed.server.url))
        .body(idle)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_on_time_and_others_are_served() {
    let limits = ConnectionLimits {
        handshake_timeout: TIMEOUT,
        header_timeout: TIMEOUT,
        keep_alive_idle: TIMEOUT,
        body_timeout: TIMEOUT,
        max_connections: STALLED + 200,
        admin_reserve: 16,
        ..ConnectionLimits::default()
    };
    let bed = testbed(limits).await;
    let (cert, key) = bed.enroll_identity("SLOW-NEIGHBOUR").await.unwrap();
    let device = bed.device_client(Some((&cert, &key))).unwrap();
    let addr = bed.server.addr;
    let connector = connector(&bed.server.ca_pem);
    let mid_header = b"PUT /mdm/checkin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty".to_vec();
    let mid_body = b"POST /mdm/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000\r\n\r\n<plist version=\"1.0\"><dict>".to_vec();
    let handshakes = Arc::new(Semaphore::new(64));
    let open = Arc::new(AtomicUsize::new(0));
    let opening = Instant::now();
    let mut stalls = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let partial = if i % 2 == 0 {
            mid_header.clone()
        } else {
            mid_body.clone()
        };
        stalls.push(tokio::spawn(stall(
            connector.clone(),
            addr,
            partial,
            handshakes.clone(),
            open.clone(),
        )));
    }
    // Once every one of them is open and stalled: the admin API and a device both get
    // through.
    until_open(&open, STALLED).await;
    eprintln!(
        "{STALLED} connections open and stalled after {:?}",
        opening.elapsed()
    );
    let started = Instant::now();
    let (status, _) = bed.admin.get("/v1/devices").await.unwrap();
    assert_eq!(
        status, 200,
        "admin request while {STALLED} connections stall"
    );
    let response = idle_checkin(&bed, &device, "SLOW-NEIGHBOUR").await;
    assert_eq!(
        response.status(),
        200,
        "device check-in while connections stall"
    );
    eprintln!(
        "admin request and check-in served in {:?}",
        started.elapsed()
    );
    let mut slowest = Duration::ZERO;
    for stall in stalls {
        slowest = slowest.max(stall.await.unwrap());
    }
    eprintln!("{STALLED} stalled connections closed; the slowest after {slowest:?}");
    assert!(
        slowest <= TIMEOUT + SLACK,
        "a stalled connection stayed open {slowest:?} (timeout {TIMEOUT:?})"
    );
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_slot_taken_the_admin_api_still_answers() {
    const MAX: usize = 200;
    const RESERVE: usize = 8;
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(30),
        keep_alive_idle: Duration::from_secs(30),
        max_connections: MAX,
        admin_reserve: RESERVE,
        ..ConnectionLimits::default()
    };
    let bed = testbed(limits).await;
    let (cert, key) = bed.enroll_identity("CROWDED-OUT").await.unwrap();
    let connector = connector(&bed.server.ca_pem);
    let handshakes = Arc::new(Semaphore::new(32));
    let open = Arc::new(AtomicUsize::new(0));
    // Every open slot held by an idle connection.
    let hogs: Vec<_> = (0..MAX - RESERVE)
        .map(|_| {
            tokio::spawn(stall(
                connector.clone(),
                bed.server.addr,
                Vec::new(),
                handshakes.clone(),
                open.clone(),
            ))
        })
        .collect();
    until_open(&open, MAX - RESERVE).await;
    // A new client, so a new connection: it can only get a reserve slot.
    let admin = AdminClient::new(&bed.server.url, &bed.server.ca_pem, &bed.admin_token()).unwrap();
    let (status, body) = admin.get("/v1/devices").await.unwrap();
    assert_eq!(status, 200, "the admin API through the reserve: {body}");
    let device = bed.device_client(Some((&cert, &key))).unwrap();
    let response = idle_checkin(&bed, &device, "CROWDED-OUT").await;
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    assert!(text.contains("server_busy"), "{text}");
    for hog in hogs {
        hog.abort();
    }
    bed.shutdown().await;
}

/// A TLS connection to the testbed's server.
async fn open(
    bed: &Testbed,
    connector: &TlsConnector,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(bed.server.addr)
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Sends one HTTP/1.1 request on `tls` and reads its answer (a body with a length):
/// the status and the head.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    request: &[u8],
) -> (u16, String) {
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the answer");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + length {
            let status = head[9..12].parse().unwrap();
            return (status, head);
        }
    }
}

/// How long until the server closes `tls`, at most `within`.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(tls: &mut S, within: Duration) -> Duration {
    let since = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection stayed open {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_close_once_idle_and_enrollment_ones_at_once() {
    const IDLE: Duration = Duration::from_secs(2);
    let limits = ConnectionLimits {
        header_timeout: Duration::from_secs(60),
        keep_alive_idle: IDLE,
        ..ConnectionLimits::default()
    };
    let bed = testbed(limits).await;
    let connector = connector(&bed.server.ca_pem);
    let mut tls = open(&bed, &connector).await;
    let get = format!(
        "GET /v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        bed.admin_token()
    );
    // Requests spaced by less than the idle limit keep the connection.
    for _ in 0..3 {
        let (status, _) = exchange(&mut tls, get.as_bytes()).await;
        assert_eq!(status, 200);
        tokio::time::sleep(IDLE / 2).await;
    }
    let (status, _) = exchange(&mut tls, get.as_bytes()).await;
    assert_eq!(status, 200, "the connection was kept between requests");
    let idle = closed_after(&mut tls, IDLE * 10).await;
    eprintln!("a kept-alive connection idle for {idle:?} was closed (limit {IDLE:?})");
    assert!(
        idle >= IDLE - Duration::from_millis(200) && idle <= IDLE + SLACK,
        "closed after {idle:?} idle, limit {IDLE:?}"
    );

    // An enrollment's connection is closed with the answer.
    let (_, body) = bed.admin.get("/v1/enrollment").await.unwrap();
    let request =
        orchard_certs::DeviceIdentityRequest::generate(&orchard_protocol::Udid::from("CLOSE-1"))
            .unwrap();
    let enroll = orchard_protocol::enroll::EnrollRequest {
        enrollment_secret: body["enrollment_secret"].as_str().unwrap().to_owned(),
        csr_pem: request.csr_pem,
        udid: "CLOSE-1".into(),
        serial_number: "SN-CLOSE-1".into(),
        product_name: None,
        os_version: None,
        ownership: None,
        single_app_mode: None,
    }
    .to_xml()
    .unwrap();
    let mut tls = open(&bed, &connector).await;
    let mut post = format!(
        "POST /mdm/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        enroll.len()
    )
    .into_bytes();
    post.extend_from_slice(&enroll);
    let (status, head) = exchange(&mut tls, &post).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let closed = closed_after(&mut tls, IDLE * 10).await;
    assert!(
        closed < IDLE,
        "the enrollment connection was closed after {closed:?}, not with the answer"
    );
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_sent_before_the_body_is_read_says_the_connection_closes() {
    let bed = testbed(ConnectionLimits::default()).await;
    let connector = connector(&bed.server.ca_pem);

    // Refused from its headers alone (no certificate): the body is left unread, so the
    // answer says the connection ends, and it does.
    let mut tls = open(&bed, &connector).await;
    let mut put =
        b"PUT /mdm/connect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
    put.extend_from_slice(b"<plist ver");
    let (status, head) = exchange(&mut tls, &put).await;
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    closed_after(&mut tls, Duration::from_secs(10)).await;

    // The same refusal with nothing left unread keeps the connection for the next request.
    let mut tls = open(&bed, &connector).await;
    let empty = b"PUT /mdm/connect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n";
    let (status, head) = exchange(&mut tls, empty).await;
    assert_eq!(status, 401, "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let get = format!(
        "GET /v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        bed.admin_token()
    );
    let (status, head) = exchange(&mut tls, get.as_bytes()).await;
    assert_eq!(status, 200, "the connection was kept: {head}");
    bed.shutdown().await;
}
