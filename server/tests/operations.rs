//! The server as operators run it: `/healthz` and `/readyz` answer without a token,
//! every request gets an access log line with its request id (sent back in the
//! answer), and with `--log-format json` every line the process writes is JSON, with
//! no colour codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request over TLS trusting `ca_pem`; returns the whole answer.
async fn request(addr: &str, ca_pem: &str, head: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A server process that is killed if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_requests_are_logged_with_their_id_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut running = Running(
        Command::new(env!("CARGO_BIN_EXE_orchard-server"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                &addr,
                "--data-dir",
            ])
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut running.0;
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut seen = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server starts and says where it listens");
        let listening = line.contains("\"listening\"");
        seen.push(line);
        if listening {
            break;
        }
    }
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();

    let health = request(&addr, &ca, &get("/healthz", "X-Request-Id: probe-17\r\n")).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health
            .to_ascii_lowercase()
            .contains("x-request-id: probe-17"),
        "{health}"
    );
    let ready = request(&addr, &ca, &get("/readyz", "")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"database\":\"ok\""), "{ready}");
    assert!(ready.contains("\"no tokens\""), "{ready}");
    // A request id that is not a short plain token is replaced, not logged.
    let hostile = format!("X-Request-Id: {}\r\n", "<b>{}</b> ".repeat(20));
    let answer = request(&addr, &ca, &get("/v1/devices", &hostile)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("<b>"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id: "),
        "a new id: {answer}"
    );

    // Stop it, then read everything it wrote.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "stops cleanly on SIGTERM: {status}");
    reader.join().unwrap();
    seen.extend(lines_rx.try_iter());
    let all: Vec<String> = seen.into_iter().chain(errors.join().unwrap()).collect();
    assert!(
        !all.iter().any(|l| l.contains("<b>")),
        "the hostile id is not logged"
    );
    for line in &all {
        assert!(!line.contains('\u{1b}'), "no colour codes: {line}");
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "every line is JSON: {line}");
    }
    let access: Vec<&String> = all
        .iter()
        .filter(|l| l.contains("\"path\":\"/healthz\""))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("probe-17") && l.contains("200")),
        "the access log names the request id and status: {all:#?}"
    );
    assert!(
        all.iter().any(|l| l.contains("\"admin_token\"")),
        "the first admin token is printed as JSON too"
    );
}

#[test]
fn a_config_file_sets_what_flags_and_variables_do_not_and_names_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (from_file, from_flag) = (free(), free());
    let config = dir.path().join("orchard.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{from_file}\"\ndata-dir = {:?}\nevent-retention-hours = 72\nserver-name = [\"mdm.example.com\"]\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let start = |extra: &[&str]| {
        let mut running = Running(
            Command::new(env!("CARGO_BIN_EXE_orchard-server"))
                .args(["--log-format", "json", "serve", "--config"])
                .arg(&config)
                .args(extra)
                .env("RUST_LOG", "warn")
                .env_remove("ORCHARD_LISTEN")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let child = &mut running.0;
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut url = None;
        for line in stdout.lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["message"] == "listening" {
                url = v["url"].as_str().map(str::to_owned);
                break;
            }
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        url.expect("the server says where it listens")
    };
    assert_eq!(start(&[]), format!("https://127.0.0.1:{from_file}"));
    assert!(
        dir.path().join("data").join("ca.pem").exists(),
        "data-dir from the file"
    );
    let listen = format!("--listen=127.0.0.1:{from_flag}");
    assert_eq!(
        start(&[&listen]),
        format!("https://127.0.0.1:{from_flag}"),
        "the flag wins"
    );

    std::fs::write(&config, "listen = \"127.0.0.1:1\"\ncolour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchard-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting `colour`"), "{stderr}");
}
