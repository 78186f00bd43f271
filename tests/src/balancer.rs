//! A small load balancer for testbeds, standing in for the one in front of a real
//! replica set: one loopback port, TCP connections and UDP (QUIC) flows forwarded to a
//! set of backends, round-robin, with backends taken out as a health check would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

type Flows = Arc<Mutex<HashMap<SocketAddr, (SocketAddr, Arc<UdpSocket>)>>>;

/// A running balancer.
pub struct Balancer {
    /// The address clients use (TCP and UDP).
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    flows: Flows,
    tasks: Vec<JoinHandle<()>>,
}

fn pick(backends: &Mutex<Vec<SocketAddr>>, next: &AtomicUsize) -> Option<SocketAddr> {
    let backends = backends.lock().unwrap_or_else(|p| p.into_inner());
    (!backends.is_empty()).then(|| backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()])
}

impl Balancer {
    /// Binds TCP and UDP on one loopback port; no backends yet.
    pub async fn bind() -> std::io::Result<Self> {
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let udp = Arc::new(UdpSocket::bind(addr).await?);
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let flows: Flows = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let tcp_task = {
            let backends = backends.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = tcp.accept().await {
                    let Some(backend) = pick(&backends, &next) else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let _ = client.set_nodelay(true);
                        if let Ok(upstream) = TcpStream::connect(backend).await {
                            let _ = upstream.set_nodelay(true);
                            let (mut a, mut b) = (client, upstream);
                            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                        }
                    });
                }
            })
        };
        let udp_task = {
            // Flows count apart from TCP connections, so consecutive clients alternate.
            let next = Arc::new(AtomicUsize::new(0));
            let (backends, flows) = (backends.clone(), flows.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65535];
                while let Ok((n, client)) = udp.recv_from(&mut buf).await {
                    let existing = flows
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&client)
                        .map(|(_, s)| s.clone());
                    let upstream = match existing {
                        Some(s) => s,
                        None => {
                            let Some(backend) = pick(&backends, &next) else {
                                continue;
                            };
                            let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                                continue;
                            };
                            if socket.connect(backend).await.is_err() {
                                continue;
                            }
                            let socket = Arc::new(socket);
                            flows
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(client, (backend, socket.clone()));
                            let (reply, back, flows) = (udp.clone(), socket.clone(), flows.clone());
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 65535];
                                while let Ok(n) = back.recv(&mut buf).await {
                                    let _ = reply.send_to(&buf[..n], client).await;
                                }
                                flows
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&client);
                            });
                            socket
                        }
                    };
                    let _ = upstream.send(&buf[..n]).await;
                }
            })
        };
        Ok(Self {
            addr,
            backends,
            flows,
            tasks: vec![tcp_task, udp_task],
        })
    }

    /// The HTTPS URL clients use.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Replaces the set of backends; UDP flows to removed backends are dropped, so their
    /// clients' next packets go to a backend still in the set.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        self.flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (b, _)| backends.contains(b));
        *self.backends.lock().unwrap_or_else(|p| p.into_inner()) = backends;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
