//! Decoders read plists in the format real devices send (captures from NanoMDM's test data).
#![allow(clippy::unwrap_used)]

use orchard_protocol::checkin::CheckinMessage;
use orchard_protocol::command::DeviceInformationResponse;
use orchard_protocol::report::{CommandReport, CommandStatus};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn real_authenticate_messages_decode() {
    for (name, udid, serial) in [
        (
            "Authenticate.1.plist",
            "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69",
            "F5JM992LF193",
        ),
        (
            "Authenticate.2.plist",
            "66ADE930-5FDF-5EC4-8429-15640684C489",
            "C02MT66KFLHH",
        ),
    ] {
        match CheckinMessage::from_xml(&fixture(name)).unwrap() {
            CheckinMessage::Authenticate(a) => {
                assert_eq!(a.udid.as_str(), udid);
                assert_eq!(a.serial_number.unwrap().as_str(), serial);
                assert!(a.topic.starts_with("com.apple.mgmt."));
            }
            other => panic!("{name}: decoded as {other:?}"),
        }
    }
}

#[test]
fn real_token_updates_decode_with_binary_token() {
    for name in ["TokenUpdate.1.plist", "TokenUpdate.2.plist"] {
        match CheckinMessage::from_xml(&fixture(name)).unwrap() {
            CheckinMessage::TokenUpdate(t) => {
                assert!(!t.push_magic.is_empty());
                assert!(
                    !t.token.is_empty(),
                    "{name}: token should be decoded from <data>"
                );
            }
            other => panic!("{name}: decoded as {other:?}"),
        }
    }
    match CheckinMessage::from_xml(&fixture("TokenUpdate.1.plist")).unwrap() {
        CheckinMessage::TokenUpdate(t) => {
            assert_eq!(t.token.len(), 32);
            assert_eq!(t.push_magic, "CEFDF0BD-E342-4A27-8742-E930EA116B0A");
            assert!(t.unlock_token.is_some());
        }
        _ => unreachable!(),
    }
}

#[test]
fn real_device_information_report_decodes() {
    let report = CommandReport::from_xml(&fixture("DeviceInformation.1.plist")).unwrap();
    assert_eq!(report.status, CommandStatus::Acknowledged);
    assert_eq!(report.request_type.as_deref(), Some("DeviceInformation"));
    assert_eq!(
        report.command_uuid.as_ref().unwrap().as_str(),
        "76eda240-5488-4989-8339-f2ae160113c4"
    );
    let info: DeviceInformationResponse = report.response().unwrap();
    assert_eq!(
        info.query_responses.udid.unwrap().as_str(),
        "66ADE930-5FDF-5EC4-8429-15640684C489"
    );
}
