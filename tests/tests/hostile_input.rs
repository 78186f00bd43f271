//! Hostile bodies against every device endpoint over real TLS, before authentication
//! (no certificate, enrollment) and after it (an enrolled device's certificate): each
//! gets a 4xx with a named error, the server stays up and answers a real device
//! afterwards, and its memory stays bounded. The corpus is `tests/hostile/`; larger
//! shapes are built here. The same corpus is replayed through every decoder directly.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use orchard_protocol::checkin::CheckinMessage;
use orchard_protocol::command::CommandEnvelope;
use orchard_protocol::enroll::{EnrollRequest, EnrollResponse};
use orchard_protocol::report::{CommandReport, CommandStatus};
use orchard_testbed::harness::{Testbed, TestbedBuilder};

/// Every file of the committed corpus, with its name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hostile");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "plist" || e == "bplist"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 18, "the corpus is in {}", dir.display());
    out
}

/// Shapes too large to commit: a 300 KiB string where a product name belongs, a quarter
/// of a million values, and a body over the 1 MiB device limit.
fn generated() -> Vec<(String, Vec<u8>)> {
    let huge_string = format!(
        r#"<plist version="1.0"><dict><key>MessageType</key><string>Authenticate</string><key>UDID</key><string>X</string><key>Topic</key><string>t</string><key>ProductName</key><string>{}</string></dict></plist>"#,
        "A".repeat(300 * 1024)
    );
    // A binary array of 250,000 references to one string: 500 KB that decode to a
    // quarter of a million values.
    let mut many_values = b"bplist00".to_vec();
    let count: u32 = 250_000;
    many_values.push(0xAF); // array, count follows as an integer
    many_values.push(0x12); // 4-byte integer
    many_values.extend_from_slice(&count.to_be_bytes());
    many_values.extend(std::iter::repeat_n(1u8, count as usize)); // 1-byte refs to object 1
    let string_at = many_values.len();
    many_values.extend_from_slice(&[0x51, b'x']);
    let table_at = many_values.len();
    many_values.extend_from_slice(&8u32.to_be_bytes());
    many_values.extend_from_slice(&u32::try_from(string_at).unwrap().to_be_bytes());
    many_values.extend_from_slice(&[0, 0, 0, 0, 0, 0, 4, 1]);
    many_values.extend_from_slice(&2u64.to_be_bytes());
    many_values.extend_from_slice(&0u64.to_be_bytes());
    many_values.extend_from_slice(&(table_at as u64).to_be_bytes());
    let too_big = format!(
        r#"<plist version="1.0"><dict><key>Padding</key><string>{}</string></dict></plist>"#,
        "B".repeat(1024 * 1024 + 1)
    );
    vec![
        ("huge-string".into(), huge_string.into_bytes()),
        ("many-values".into(), many_values),
        ("over-body-limit".into(), too_big.into_bytes()),
    ]
}

/// What the error answer must name for a shape, beyond being a 4xx with a code.
fn expected_error(name: &str) -> Option<&'static str> {
    match name {
        "deep-arrays.plist" | "deep-dicts.plist" | "deep-unclosed.plist" => Some("nesting depth"),
        "bplist-shared-children.bplist" | "bplist-shared-dicts.bplist" | "many-values" => {
            Some("number of values")
        }
        "huge-string" => Some("length of a single value"),
        "newline-in-udid.plist" => Some("UDID"),
        "long-product-name.plist" => Some("ProductName"),
        "over-body-limit" => Some("limited to"),
        _ => None,
    }
}

#[test]
fn every_decoder_refuses_the_corpus_without_panicking() {
    for (name, bytes) in corpus().into_iter().chain(generated()) {
        match CheckinMessage::from_xml(&bytes) {
            Err(_) => {}
            // Entities a document declares are never expanded: the reference reads as
            // nothing, and the message is of no known type.
            Ok(CheckinMessage::Unknown { message_type }) if name == "entity-expansion.plist" => {
                assert_eq!(message_type, "", "{name}")
            }
            Ok(other) => panic!("{name}: check-in decoded as {other:?}"),
        }
        assert!(CommandReport::from_xml(&bytes).is_err(), "{name}: report");
        assert!(
            EnrollRequest::from_xml(&bytes).is_err(),
            "{name}: enrollment"
        );
        assert!(
            EnrollResponse::from_xml(&bytes).is_err(),
            "{name}: enrollment answer"
        );
        assert!(
            CommandEnvelope::from_xml(&bytes).is_err(),
            "{name}: command"
        );
        if let Some(needle) = expected_error(&name).filter(|_| name != "over-body-limit") {
            let err = CheckinMessage::from_xml(&bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{name}: {err}");
        }
    }
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server's default `--enrollment-body-limit`.
const ENROLLMENT_BODY_LIMIT: usize = 64 * 1024;

async fn enrolled_client(bed: &Testbed, udid: &str) -> reqwest::Client {
    let (cert, key) = bed.enroll_identity(udid).await.unwrap();
    bed.device_client(Some((&cert, &key))).unwrap()
}

async fn hostile_bodies_get_named_4xx_and_the_server_stays_up(builder: TestbedBuilder) {
    let bed = builder.start().await.unwrap();
    let device = enrolled_client(&bed, "HOSTILE-TARGET").await;
    let anonymous = bed.device_client(None).unwrap();
    let idle = CommandReport::new("HOSTILE-TARGET".into(), CommandStatus::Idle, None)
        .to_xml()
        .unwrap();
    let before = resident_kib();
    let mut peak = before;
    let inputs: Vec<(String, Vec<u8>)> = corpus().into_iter().chain(generated()).collect();
    for (name, bytes) in &inputs {
        let requests = [
            (
                "enroll",
                anonymous.post(format!("{}/mdm/enroll", bed.server.url)),
            ),
            (
                "checkin, no certificate",
                anonymous.put(format!("{}/mdm/checkin", bed.server.url)),
            ),
            (
                "connect, no certificate",
                anonymous.put(format!("{}/mdm/connect", bed.server.url)),
            ),
            (
                "checkin, enrolled",
                device.put(format!("{}/mdm/checkin", bed.server.url)),
            ),
            (
                "connect, enrolled",
                device.put(format!("{}/mdm/connect", bed.server.url)),
            ),
        ];
        for (endpoint, request) in requests {
            // Enrollment, open to anyone, takes small bodies only.
            let over_limit = name == "over-body-limit"
                || (endpoint == "enroll" && bytes.len() > ENROLLMENT_BODY_LIMIT);
            let response = request.body(bytes.clone()).send().await;
            let response = match response {
                Ok(r) => r,
                // A request refused before its body is read (no certificate, a body over
                // the endpoint's limit) may see the connection close while it is still
                // sending.
                Err(e) if over_limit || endpoint.ends_with("no certificate") => {
                    assert!(!e.is_timeout(), "{name} on {endpoint}: {e}");
                    continue;
                }
                Err(e) => panic!("{name} on {endpoint}: {e}"),
            };
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(
                status.is_client_error(),
                "{name} on {endpoint}: {status} {text}"
            );
            let body: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{name} on {endpoint}: not JSON: {text}"));
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty())
                    && body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name} on {endpoint}: {text}"
            );
            let authenticated = endpoint == "enroll" || endpoint.ends_with("enrolled");
            let needle = if over_limit {
                Some("limited to")
            } else {
                expected_error(name)
            };
            if let Some(needle) = needle.filter(|_| authenticated) {
                assert!(text.contains(needle), "{name} on {endpoint}: {text}");
            }
            peak = peak.max(resident_kib());
        }
        // The server is alive and the real device still checks in.
        let response = device
            .put(format!("{}/mdm/connect", bed.server.url))
            .body(idle.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "after {name}");
    }
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("resident memory: {before} KiB before, peak {peak} KiB, growth {growth_mib} MiB");
    assert!(
        growth_mib < 256,
        "decoding hostile bodies grew the process by {growth_mib} MiB"
    );
    bed.shutdown().await;
}

orchard_testbed::on_both_backends!(hostile_bodies_get_named_4xx_and_the_server_stays_up,);
