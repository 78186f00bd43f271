//! Enrollment cannot be used to take a device over: an enrolled UDID is not enrolled
//! again with a valid credential (the real device keeps working), only renewed by the
//! device itself or re-enrolled after an admin releases it; enrollment tokens are used up,
//! bound and revocable; the shared secret rotates; and per-address rate limits answer 429.
#![allow(clippy::unwrap_used)]

use orchard_certs::DeviceIdentityRequest;
use orchard_protocol::Udid;
use orchard_protocol::enroll::{EnrollRequest, EnrollResponse};
use orchard_protocol::report::{CommandReport, CommandStatus};
use orchard_server::rate_limit::Rate;
use orchard_testbed::harness::{AdminClient, Testbed, TestbedBuilder};
use rustls_pki_types::pem::PemObject;
use serde_json::json;

struct Identity {
    cert_pem: String,
    key_pem: String,
}

/// Enrolls `udid` (serial `serial`) with `credential`, presenting `current` in TLS if
/// given: the HTTP status and, on success, the new identity.
async fn enroll(
    bed: &Testbed,
    udid: &str,
    serial: &str,
    credential: &str,
    current: Option<&Identity>,
) -> (u16, String, Option<Identity>) {
    let request = DeviceIdentityRequest::generate(&Udid::from(udid)).unwrap();
    let body = EnrollRequest {
        enrollment_secret: credential.to_owned(),
        csr_pem: request.csr_pem,
        udid: udid.into(),
        serial_number: serial.into(),
        product_name: Some("iPhone15,2".into()),
        os_version: Some("17.5".into()),
        ownership: None,
        single_app_mode: None,
    };
    let client = bed
        .device_client(current.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())))
        .unwrap();
    let response = client
        .post(format!("{}/mdm/enroll", bed.server.url))
        .body(body.to_xml().unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.unwrap();
    if status != 200 {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        return (status, format!("{text} retry-after={retry_after:?}"), None);
    }
    let answer = EnrollResponse::from_xml(&bytes).unwrap();
    (
        status,
        String::new(),
        Some(Identity {
            cert_pem: answer.certificate_pem,
            key_pem: request.key_pem,
        }),
    )
}

/// The command channel's answer to an Idle report from `udid` with `identity`.
async fn idle(bed: &Testbed, udid: &str, identity: &Identity) -> u16 {
    let body = CommandReport::new(udid.into(), CommandStatus::Idle, None)
        .to_xml()
        .unwrap();
    bed.device_client(Some((&identity.cert_pem, &identity.key_pem)))
        .unwrap()
        .put(format!("{}/mdm/connect", bed.server.url))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn shared_secret(bed: &Testbed) -> String {
    let (_, body) = bed.admin.get("/v1/enrollment").await.unwrap();
    body["enrollment_secret"].as_str().unwrap().to_owned()
}

async fn token(bed: &Testbed, body: serde_json::Value) -> String {
    let (status, answer) = bed.admin.post("/v1/enrollment-tokens", body).await.unwrap();
    assert_eq!(status, 201, "{answer}");
    assert!(answer["token_hash"].is_null(), "the hash is never shown");
    answer["token"].as_str().unwrap().to_owned()
}

async fn an_enrolled_udid_cannot_be_taken_over(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let secret = shared_secret(&bed).await;
    let (status, _, real) = enroll(&bed, "VICTIM-1", "SN-VICTIM", &secret, None).await;
    assert_eq!(status, 200);
    let real = real.unwrap();
    assert_eq!(idle(&bed, "VICTIM-1", &real).await, 200);
    // Without a credential nobody learns whether the UDID is enrolled.
    let (status, text, _) = enroll(&bed, "VICTIM-1", "SN-VICTIM", "guess", None).await;
    assert_eq!(status, 401, "{text}");
    // An attacker with the shared secret, then with a fresh enrollment token.
    let (status, text, _) = enroll(&bed, "VICTIM-1", "SN-VICTIM", &secret, None).await;
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("already enrolled") && text.contains("release"),
        "{text}"
    );
    let fresh = token(&bed, json!({ "name": "attacker's" })).await;
    let (status, _, _) = enroll(&bed, "VICTIM-1", "SN-VICTIM", &fresh, None).await;
    assert_eq!(status, 409);
    // The refusal used nothing: the token still enrolls another device.
    let (status, _, _) = enroll(&bed, "OTHER-1", "SN-OTHER", &fresh, None).await;
    assert_eq!(status, 200, "the refused attempt did not use the token");
    // Another device's certificate proves nothing about this UDID.
    let (_, _, other) = enroll(&bed, "OTHER-2", "SN-OTHER-2", &secret, None).await;
    let (status, _, _) = enroll(&bed, "VICTIM-1", "SN-VICTIM", &secret, other.as_ref()).await;
    assert_eq!(status, 409);
    assert_eq!(
        idle(&bed, "VICTIM-1", &real).await,
        200,
        "the real device works"
    );

    // The device itself renews with its current certificate: the old one is retired.
    let (status, text, renewed) = enroll(&bed, "VICTIM-1", "SN-VICTIM", "", Some(&real)).await;
    assert_eq!(status, 200, "renewal: {text}");
    let renewed = renewed.unwrap();
    assert_eq!(idle(&bed, "VICTIM-1", &renewed).await, 200);
    assert_eq!(
        idle(&bed, "VICTIM-1", &real).await,
        403,
        "the old certificate"
    );

    // After an admin releases it (a wiped device), a new enrollment is admitted.
    let (status, body) = bed
        .admin
        .post("/v1/devices/VICTIM-1/release", json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        idle(&bed, "VICTIM-1", &renewed).await,
        200,
        "works until replaced"
    );
    let (status, _, wiped) = enroll(&bed, "VICTIM-1", "SN-VICTIM", &secret, None).await;
    assert_eq!(status, 200);
    assert_eq!(idle(&bed, "VICTIM-1", &wiped.unwrap()).await, 200);
    assert_eq!(idle(&bed, "VICTIM-1", &renewed).await, 403);
    bed.shutdown().await;
}

async fn enrollment_tokens_are_used_up_bound_and_revocable(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let once = token(&bed, json!({ "name": "one iPad" })).await;
    assert_eq!(
        enroll(&bed, "IPAD-1", "SN-IPAD-1", &once, None).await.0,
        200
    );
    let (status, text, _) = enroll(&bed, "IPAD-2", "SN-IPAD-2", &once, None).await;
    assert_eq!(status, 401, "a used single-use token: {text}");
    let bound = token(
        &bed,
        json!({ "name": "for one serial", "uses": 5, "serial_number": "SN-BOUND" }),
    )
    .await;
    assert_eq!(enroll(&bed, "IPAD-3", "SN-ELSE", &bound, None).await.0, 401);
    assert_eq!(
        enroll(&bed, "IPAD-3", "SN-BOUND", &bound, None).await.0,
        200
    );
    let revoked = token(&bed, json!({ "name": "lab", "uses": 10 })).await;
    let (_, list) = bed.admin.get("/v1/enrollment-tokens").await.unwrap();
    let id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lab")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        list.to_string().find(&revoked).is_none(),
        "tokens are never listed"
    );
    let (status, _) = bed
        .admin
        .delete(&format!("/v1/enrollment-tokens/{id}"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        enroll(&bed, "IPAD-4", "SN-IPAD-4", &revoked, None).await.0,
        401
    );
    for bad in [
        json!({ "name": "x", "uses": 0 }),
        json!({ "name": "x", "expires_in_seconds": 0 }),
        json!({ "name": "x", "udid": "bad udid\n" }),
    ] {
        let (status, body) = bed.admin.post("/v1/enrollment-tokens", bad).await.unwrap();
        assert!(status == 422 || status == 400, "{status} {body}");
    }
    // The shared secret rotates: the old one stops working at once.
    let old = shared_secret(&bed).await;
    let (status, body) = bed
        .admin
        .post("/v1/enrollment/rotate", json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let new = body["enrollment_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(enroll(&bed, "IPAD-5", "SN-IPAD-5", &old, None).await.0, 401);
    assert_eq!(enroll(&bed, "IPAD-5", "SN-IPAD-5", &new, None).await.0, 200);
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_and_failed_authentication_are_rate_limited() {
    let slow = Rate {
        per_second: 0.1,
        burst: 3.0,
    };
    let bed = Testbed::builder()
        .rate_limits(slow, slow)
        .start()
        .await
        .unwrap();
    let secret = shared_secret(&bed).await;
    for i in 0..3 {
        let (status, text, _) = enroll(
            &bed,
            &format!("BURST-{i}"),
            &format!("SN-B{i}"),
            &secret,
            None,
        )
        .await;
        assert_eq!(status, 200, "{text}");
    }
    let (status, text, _) = enroll(&bed, "BURST-3", "SN-B3", &secret, None).await;
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("rate_limited") && text.contains("retry-after=Some"),
        "{text}"
    );

    // Wrong admin tokens: refused, audited, then 429 for the address.
    let intruder = AdminClient::new(&bed.server.url, &bed.server.ca_pem, "not-a-token").unwrap();
    for _ in 0..3 {
        assert_eq!(intruder.get("/v1/devices").await.unwrap().0, 401);
    }
    let (status, body) = intruder.get("/v1/devices").await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");
    // The whole loopback address is limited now, the real admin too, until it cools down;
    // the audit log, read from the store, names the failed attempts.
    let audit = bed
        .server
        .state
        .store
        .audit_log(&Default::default(), &orchard_server::store::Page::all())
        .await
        .unwrap();
    let failed = audit
        .iter()
        .filter(|e| e.action == "admin.authenticate")
        .count();
    assert_eq!(failed, 3, "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|e| e.actor.starts_with("unauthenticated (127.0.0.1)"))
    );
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(
    an_enrolled_udid_cannot_be_taken_over,
    enrollment_tokens_are_used_up_bound_and_revocable,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_renew_their_identity_in_the_last_third_of_its_validity() {
    use orchard_server::clock::{ManualClock, Timestamp};
    use std::sync::Arc;
    use std::time::Duration;
    // The server's clock runs 300 days behind: the certificate it issues has 65 of its
    // 365 days left, less than a third.
    let real_now = Timestamp::from(time::OffsetDateTime::now_utc());
    let clock = Arc::new(ManualClock::new(
        real_now - Duration::from_secs(300 * 24 * 3600),
    ));
    let bed = Testbed::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let fleet = bed
        .fleet(
            1,
            Duration::from_secs(600),
            Some(state_dir.path().to_owned()),
        )
        .await
        .unwrap();
    let first = fleet.agents[0].certificate_pem().to_owned();
    let udid = fleet.udids()[0].clone();
    fleet.stop().await;
    clock.set(real_now);
    // Restarted from its state file, the device renews with its current certificate.
    let again = bed
        .fleet(
            1,
            Duration::from_secs(600),
            Some(state_dir.path().to_owned()),
        )
        .await
        .unwrap();
    let metrics = &again.metrics;
    assert_eq!(
        metrics.renewals.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        metrics
            .enrollments
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let renewed = again.agents[0].certificate_pem().to_owned();
    assert_ne!(renewed, first, "a new certificate");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(renewed.as_bytes()).unwrap();
    let (_, until) = orchard_certs::validity(&der).unwrap();
    assert!(until - time::OffsetDateTime::now_utc() > time::Duration::days(360));
    // The renewed device is the same enrollment, and still reachable.
    let device = bed
        .server
        .state
        .store
        .device(&Udid::from(udid.as_str()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.cert_fingerprint, orchard_certs::fingerprint(&der));
    assert_eq!(
        device.status,
        orchard_server::store::EnrollmentStatus::Active
    );
    again.stop().await;
    bed.shutdown().await;
}
