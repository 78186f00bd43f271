//! Device requests are authenticated by the identity certificate: no certificate, a
//! certificate from another CA, another device's UDID or a replaced certificate are
//! refused, and a refused request changes nothing in the database.
#![allow(clippy::unwrap_used)]

use orchard_agent::tls::{Trust, tls_client};
use orchard_certs::{CertificateAuthority, DeviceIdentityRequest};
use orchard_protocol::Udid;
use orchard_protocol::checkin::{Authenticate, CheckinMessage, TokenUpdate};
use orchard_protocol::enroll::EnrollRequest;
use orchard_protocol::report::{CommandReport, CommandStatus};
use orchard_server::store::Store;
use orchard_testbed::harness::{Testbed, TestbedBuilder};

struct Identity {
    cert_pem: String,
    key_pem: String,
}

async fn secret(bed: &Testbed) -> String {
    let (_, body) = bed.admin.get("/v1/enrollment").await.unwrap();
    body["enrollment_secret"].as_str().unwrap().to_owned()
}

async fn enroll(bed: &Testbed, udid: &str, secret: &str) -> reqwest::Response {
    let request = DeviceIdentityRequest::generate(&Udid::from(udid)).unwrap();
    let body = EnrollRequest {
        enrollment_secret: secret.to_owned(),
        csr_pem: request.csr_pem,
        udid: udid.into(),
        serial_number: format!("SN-{udid}").into(),
        product_name: Some("iPhone15,2".into()),
        os_version: Some("17.5".into()),
        ownership: None,
        single_app_mode: None,
    };
    let http = tls_client(Trust::Only(&bed.server.ca_pem), None).unwrap();
    http.post(format!("{}/mdm/enroll", bed.server.url))
        .body(body.to_xml().unwrap())
        .send()
        .await
        .unwrap()
}

async fn enrolled(bed: &Testbed, udid: &str) -> Identity {
    let (cert_pem, key_pem) = bed.enroll_identity(udid).await.unwrap();
    Identity { cert_pem, key_pem }
}

fn client(bed: &Testbed, identity: Option<&Identity>) -> reqwest::Client {
    tls_client(
        Trust::Only(&bed.server.ca_pem),
        identity.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())),
    )
    .unwrap()
}

fn authenticate(udid: &str) -> Vec<u8> {
    CheckinMessage::Authenticate(Authenticate {
        topic: "com.apple.mgmt.External.test".into(),
        udid: udid.into(),
        os_version: Some("1.0".into()),
        build_version: None,
        product_name: Some("Hacked1,1".into()),
        serial_number: Some("EVIL".into()),
        device_name: None,
        model: None,
        model_name: None,
    })
    .to_xml()
    .unwrap()
}

fn token_update(udid: &str) -> Vec<u8> {
    CheckinMessage::TokenUpdate(TokenUpdate {
        topic: "com.apple.mgmt.External.test".into(),
        udid: udid.into(),
        token: serde_bytes::ByteBuf::from(vec![1, 2, 3]),
        push_magic: "STOLEN".into(),
        unlock_token: None,
        awaiting_configuration: None,
    })
    .to_xml()
    .unwrap()
}

fn idle(udid: &str) -> Vec<u8> {
    CommandReport::new(udid.into(), CommandStatus::Idle, None)
        .to_xml()
        .unwrap()
}

/// Everything the server stores about a device: its record and its command queue.
async fn snapshot(store: &dyn Store, udid: &str) -> String {
    let udid = Udid::from(udid);
    let device = store.device(&udid).await.unwrap();
    let commands = store.commands_of(&udid).await.unwrap();
    let commands: Vec<_> = commands
        .iter()
        .map(|c| (c.uuid.clone(), c.status))
        .collect();
    format!("{device:?} {commands:?}")
}

async fn put(
    client: &reqwest::Client,
    url: String,
    body: Vec<u8>,
) -> reqwest::Result<(u16, String)> {
    let response = client.put(url).body(body).send().await?;
    Ok((
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    ))
}

async fn request_without_certificate_is_refused_and_changes_nothing(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let a = enrolled(&bed, "DEVICE-A").await;
    put(
        &client(&bed, Some(&a)),
        format!("{}/mdm/checkin", bed.server.url),
        token_update("DEVICE-A"),
    )
    .await
    .unwrap();
    let store = bed.server.state.store.clone();
    let before = snapshot(store.as_ref(), "DEVICE-A").await;

    let anonymous = client(&bed, None);
    for (path, body) in [
        ("/mdm/checkin", authenticate("DEVICE-A")),
        ("/mdm/checkin", token_update("DEVICE-A")),
        ("/mdm/connect", idle("DEVICE-A")),
    ] {
        let (status, text) = put(&anonymous, format!("{}{path}", bed.server.url), body)
            .await
            .unwrap();
        assert_eq!(status, 401, "{path}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"], "unauthenticated");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("identity certificate"),
            "{text}"
        );
    }
    assert_eq!(snapshot(store.as_ref(), "DEVICE-A").await, before);
    bed.shutdown().await;
}

async fn certificate_from_another_ca_is_refused_and_changes_nothing(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let a = enrolled(&bed, "DEVICE-A").await;
    put(
        &client(&bed, Some(&a)),
        format!("{}/mdm/checkin", bed.server.url),
        token_update("DEVICE-A"),
    )
    .await
    .unwrap();
    let store = bed.server.state.store.clone();
    let before = snapshot(store.as_ref(), "DEVICE-A").await;

    // A look-alike CA issues a certificate for the same UDID.
    let rogue_ca = CertificateAuthority::generate("Orchard CA").unwrap();
    let request = DeviceIdentityRequest::generate(&Udid::from("DEVICE-A")).unwrap();
    let forged = rogue_ca
        .sign_device_csr(&request.csr_pem, &Udid::from("DEVICE-A"))
        .unwrap();
    let forged = Identity {
        cert_pem: forged.cert_pem,
        key_pem: request.key_pem,
    };
    let rogue = client(&bed, Some(&forged));
    for (path, body) in [
        ("/mdm/checkin", authenticate("DEVICE-A")),
        ("/mdm/connect", idle("DEVICE-A")),
    ] {
        let result = put(&rogue, format!("{}{path}", bed.server.url), body).await;
        assert!(
            result.is_err(),
            "{path}: the TLS handshake must fail, got {result:?}"
        );
    }
    assert_eq!(snapshot(store.as_ref(), "DEVICE-A").await, before);
    bed.shutdown().await;
}

async fn another_devices_udid_is_refused_and_changes_nothing(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let a = enrolled(&bed, "DEVICE-A").await;
    let b = enrolled(&bed, "DEVICE-B").await;
    put(
        &client(&bed, Some(&b)),
        format!("{}/mdm/checkin", bed.server.url),
        token_update("DEVICE-B"),
    )
    .await
    .unwrap();
    let store = bed.server.state.store.clone();
    let before_a = snapshot(store.as_ref(), "DEVICE-A").await;
    let before_b = snapshot(store.as_ref(), "DEVICE-B").await;

    let as_a = client(&bed, Some(&a));
    for (path, body) in [
        ("/mdm/checkin", authenticate("DEVICE-B")),
        ("/mdm/checkin", token_update("DEVICE-B")),
        ("/mdm/connect", idle("DEVICE-B")),
    ] {
        let (status, text) = put(&as_a, format!("{}{path}", bed.server.url), body)
            .await
            .unwrap();
        assert_eq!(status, 403, "{path}: {text}");
        assert!(
            text.contains("DEVICE-B") && text.contains("DEVICE-A"),
            "the error names both UDIDs: {text}"
        );
    }
    assert_eq!(snapshot(store.as_ref(), "DEVICE-A").await, before_a);
    assert_eq!(snapshot(store.as_ref(), "DEVICE-B").await, before_b);
    bed.shutdown().await;
}

async fn certificate_replaced_by_a_new_enrollment_is_refused(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let first = enrolled(&bed, "DEVICE-A").await;
    // The device was wiped: an admin releases it and it enrolls again.
    let (status, body) = bed
        .admin
        .post("/v1/devices/DEVICE-A/release", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let second = enrolled(&bed, "DEVICE-A").await;
    let url = format!("{}/mdm/checkin", bed.server.url);
    let (status, text) = put(
        &client(&bed, Some(&first)),
        url.clone(),
        authenticate("DEVICE-A"),
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not bound"), "{text}");
    let (status, text) = put(&client(&bed, Some(&second)), url, authenticate("DEVICE-A"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    bed.shutdown().await;
}

/// One request on a new TLS connection sharing `config` (and its session cache):
/// the answer's status and whether the handshake resumed an earlier session.
async fn request_on_new_connection(
    bed: &Testbed,
    config: &std::sync::Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> (u16, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = bed.server.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    // The server closes after answering; a TLS close without close_notify is fine here.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer}"));
    (status, resumed)
}

/// Devices reconnect often: the second connection resumes the first's TLS session,
/// still as the device its certificate names; a session resumed with a certificate
/// that a new enrollment replaced is refused like a full handshake with it.
async fn resumed_sessions_keep_the_identity_and_its_checks(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let first = enrolled(&bed, "DEVICE-R").await;
    let config = std::sync::Arc::new(
        orchard_agent::tls::client_config(
            Trust::Only(&bed.server.ca_pem),
            Some((&first.cert_pem, &first.key_pem)),
        )
        .unwrap(),
    );
    let idle = CommandReport::new("DEVICE-R".into(), CommandStatus::Idle, None)
        .to_xml()
        .unwrap();
    let (status, resumed) = request_on_new_connection(&bed, &config, "/mdm/connect", &idle).await;
    assert_eq!(
        (status, resumed),
        (200, false),
        "the first handshake is full"
    );
    let (status, resumed) = request_on_new_connection(&bed, &config, "/mdm/connect", &idle).await;
    assert_eq!((status, resumed), (200, true), "the second resumes");
    // Wiped and enrolled again: the old certificate's sessions are refused too.
    let (status, body) = bed
        .admin
        .post("/v1/devices/DEVICE-R/release", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let _second = enrolled(&bed, "DEVICE-R").await;
    let (status, resumed) =
        request_on_new_connection(&bed, &config, "/mdm/checkin", &authenticate("DEVICE-R")).await;
    assert!(resumed, "the old session resumed");
    assert_eq!(
        status, 403,
        "a replaced certificate is refused on a resumed session"
    );
    bed.shutdown().await;
}

async fn wrong_enrollment_secret_enrolls_nothing(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let response = enroll(&bed, "DEVICE-X", "not-the-secret").await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("enrollment secret"),
        "{body}"
    );
    assert!(
        bed.server
            .state
            .store
            .device(&Udid::from("DEVICE-X"))
            .await
            .unwrap()
            .is_none()
    );

    let response = enroll(&bed, "DEVICE-X", &secret(&bed).await).await;
    assert_eq!(response.status(), 200);
    bed.shutdown().await;
}

async fn malformed_plists_get_a_400_naming_the_problem(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let a = enrolled(&bed, "DEVICE-A").await;
    let as_a = client(&bed, Some(&a));
    let cases: [(&str, &[u8], &str); 3] = [
        ("/mdm/checkin", b"this is not a plist", "property list"),
        ("/mdm/checkin", br#"<plist version="1.0"><dict><key>UDID</key><string>DEVICE-A</string></dict></plist>"#, "MessageType"),
        ("/mdm/connect", br#"<plist version="1.0"><dict><key>UDID</key><string>DEVICE-A</string><key>Status</key><string>Perhaps</string></dict></plist>"#, "Status"),
    ];
    for (path, body, needle) in cases {
        let (status, text) = put(&as_a, format!("{}{path}", bed.server.url), body.to_vec())
            .await
            .unwrap();
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            text.contains(needle),
            "{path}: error should name {needle}: {text}"
        );
    }
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    request_without_certificate_is_refused_and_changes_nothing,
    certificate_from_another_ca_is_refused_and_changes_nothing,
    another_devices_udid_is_refused_and_changes_nothing,
    certificate_replaced_by_a_new_enrollment_is_refused,
    resumed_sessions_keep_the_identity_and_its_checks,
    wrong_enrollment_secret_enrolls_nothing,
    malformed_plists_get_a_400_naming_the_problem,
);
