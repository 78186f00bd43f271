//! What one client connection may cost: how long its TLS handshake, its request
//! headers and its request body may take, how many connections are open at once, and
//! the few kept back for the admin API when devices (or an attacker) hold all the
//! others. Timeouts close slow and idle connections; a connection over the cap is
//! closed at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of the HTTPS front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A request's headers must arrive within this, counted from when the connection
    /// starts waiting for them.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed (its file
    /// descriptor and buffers are the server's to spend).
    pub keep_alive_idle: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Of those, how many only admin API requests may use: taken when all others are
    /// busy, so an admin can still reach the server.
    pub admin_reserve: usize,
    /// Largest enrollment request body (enrollment is open to anyone on the network).
    pub enrollment_body: usize,
    /// At shutdown, how long requests under way may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(20),
            keep_alive_idle: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            admin_reserve: 64,
            enrollment_body: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Which connections a new one may use.
#[derive(Debug)]
pub(super) enum Admission {
    /// Any request.
    Open(OwnedSemaphorePermit),
    /// Admin API requests only: every other slot is taken.
    AdminOnly(OwnedSemaphorePermit),
    /// No slot at all: closed at once.
    Refused,
}

/// Hands out connection slots.
#[derive(Debug, Clone)]
pub(super) struct Slots {
    open: Arc<Semaphore>,
    admin: Arc<Semaphore>,
}

impl Slots {
    pub(super) fn new(limits: &ConnectionLimits) -> Self {
        let admin = limits.admin_reserve.min(limits.max_connections);
        Self {
            open: Arc::new(Semaphore::new(limits.max_connections - admin)),
            admin: Arc::new(Semaphore::new(admin)),
        }
    }

    /// A slot for a new connection; freed when the permit drops.
    pub(super) fn admit(&self) -> Admission {
        if let Ok(p) = self.open.clone().try_acquire_owned() {
            Admission::Open(p)
        } else if let Ok(p) = self.admin.clone().try_acquire_owned() {
            Admission::AdminOnly(p)
        } else {
            Admission::Refused
        }
    }
}

/// The address a request came from (rate limits are per address).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl PeerAddr {
    /// The source address of a request (unspecified when the transport gave none).
    pub(crate) fn of(extensions: &axum::http::Extensions) -> std::net::IpAddr {
        extensions
            .get::<Self>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.ip())
    }
}

/// Whether a request may use a connection from the admin reserve.
pub(super) fn admin_request(path: &str) -> bool {
    path.starts_with("/v1/")
        || path.starts_with("/console")
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Raises this process's open-file limit as far as it is allowed, so the connection
/// cap, not the file descriptor limit, decides how many clients are served.
pub fn raise_open_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Files the server keeps for itself beside client connections: the database and its
/// journal, the push socket, Apple and PostgreSQL connections, logs.
pub const FILES_KEPT: u64 = 512;

impl ConnectionLimits {
    /// These limits with the connection cap lowered, where needed, to what `open_files`
    /// (the process's limit) allows beside [`FILES_KEPT`]: a connection over the cap is
    /// accepted and closed at once, while one over the file limit could not be accepted
    /// at all and would leave the listener failing.
    pub fn fit_to_open_files(self, open_files: u64) -> Self {
        let room = usize::try_from(open_files.saturating_sub(FILES_KEPT)).unwrap_or(usize::MAX);
        Self {
            max_connections: self.max_connections.min(room.max(1)),
            ..self
        }
    }
}

/// When the requests of one connection started and ended: a connection is idle once
/// no request is under way, from the end of the last one.
#[derive(Debug)]
pub(super) struct Activity {
    started: tokio::time::Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `started` to the end of the last request.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: tokio::time::Instant::now(),
            in_flight: 0.into(),
            last_ms: 0.into(),
        })
    }

    /// Marks a request under way until the guard drops.
    pub(super) fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// When the connection becomes idle too long, if nothing happens before: `None`
    /// while a request is under way.
    pub(super) fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        use std::sync::atomic::Ordering;
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
        Some(self.started + last + idle)
    }
}

/// A request under way on a connection.
pub(super) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.fetch_max(ms, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request body that notes when it has been read to its end. An answer sent before
/// that (a refusal from the headers alone, a body over its limit) leaves unread bytes on
/// the connection: hyper then drops the connection after the answer, and the answer must
/// say so (`Connection: close`), or a client may send its next request on a connection
/// that is already closing and see it fail.
pub(super) struct NotedBody<B> {
    inner: B,
    read: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether the body of one request has been read to its end.
#[derive(Debug, Clone)]
pub(super) struct BodyRead(Arc<std::sync::atomic::AtomicBool>);

impl BodyRead {
    /// True once the body ended (or when it was empty from the start).
    pub(super) fn finished(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl<B: hyper::body::Body> NotedBody<B> {
    /// Wraps `inner`; the returned flag turns true when it has been read to its end.
    pub(super) fn new(inner: B) -> (Self, BodyRead) {
        let read = Arc::new(std::sync::atomic::AtomicBool::new(inner.is_end_stream()));
        (
            Self {
                inner,
                read: read.clone(),
            },
            BodyRead(read),
        )
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for NotedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Marks `response` as the connection's last when the request's body was not read to
/// its end.
pub(super) fn close_unless_read(read: &BodyRead, response: &mut axum::response::Response) {
    if !read.finished() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_used_only_when_every_open_slot_is_taken() {
        let limits = ConnectionLimits {
            max_connections: 3,
            admin_reserve: 1,
            ..ConnectionLimits::default()
        };
        let slots = Slots::new(&limits);
        let a = slots.admit();
        let b = slots.admit();
        assert!(matches!((&a, &b), (Admission::Open(_), Admission::Open(_))));
        let c = slots.admit();
        assert!(matches!(c, Admission::AdminOnly(_)));
        assert!(matches!(slots.admit(), Admission::Refused));
        drop(a);
        assert!(
            matches!(slots.admit(), Admission::Open(_)),
            "a freed slot is reused"
        );
        assert!(admin_request("/v1/devices") && !admin_request("/mdm/connect"));
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_read_closes_the_connection() {
        use http_body_util::BodyExt as _;
        let response = || axum::response::Response::new(axum::body::Body::empty());

        let (empty, read) = NotedBody::new(http_body_util::Empty::<axum::body::Bytes>::new());
        let mut answer = response();
        close_unless_read(&read, &mut answer);
        assert!(read.finished(), "an empty body needs no reading");
        assert!(
            !answer
                .headers()
                .contains_key(axum::http::header::CONNECTION)
        );
        drop(empty);

        let (body, read) =
            NotedBody::new(http_body_util::Full::new(axum::body::Bytes::from("unread")));
        let mut answer = response();
        close_unless_read(&read, &mut answer);
        assert_eq!(answer.headers()[axum::http::header::CONNECTION], "close");

        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"unread");
        let mut answer = response();
        close_unless_read(&read, &mut answer);
        assert!(read.finished(), "a body read to its end is noted");
        assert!(
            !answer
                .headers()
                .contains_key(axum::http::header::CONNECTION)
        );
    }

    #[test]
    fn the_cap_leaves_room_for_the_servers_own_files() {
        let asked = ConnectionLimits {
            max_connections: 65_536,
            ..ConnectionLimits::default()
        };
        assert_eq!(
            asked.fit_to_open_files(20_000).max_connections,
            20_000 - FILES_KEPT as usize
        );
        assert_eq!(
            asked.fit_to_open_files(1_048_576).max_connections,
            65_536,
            "a cap the limit allows stays"
        );
        assert_eq!(asked.fit_to_open_files(100).max_connections, 1);
    }
}
