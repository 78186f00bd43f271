//! Check-in messages a device PUTs to the check-in URL (`MessageType`): Authenticate,
//! TokenUpdate and CheckOut, as in Apple's `mdm/checkin/*.yaml` schemas.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::portal::{APP_REQUEST, AppRequest};
use crate::prompt::{PROMPT_REPORT, PromptReport};
use crate::xml;
use crate::{ProtocolError, SerialNumber, Udid};

/// Apple's `Authenticate` check-in: the device announces itself before the MDM
/// profile is installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authenticate {
    /// The APNs topic from the MDM payload.
    #[serde(rename = "Topic")]
    pub topic: String,
    /// The device's UDID.
    #[serde(rename = "UDID")]
    pub udid: Udid,
    /// OS version, e.g. `17.5`.
    #[serde(rename = "OSVersion", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// OS build, e.g. `21F79`.
    #[serde(
        rename = "BuildVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub build_version: Option<String>,
    /// Hardware model identifier, e.g. `iPhone15,2`.
    #[serde(
        rename = "ProductName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_name: Option<String>,
    /// Hardware serial number.
    #[serde(
        rename = "SerialNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub serial_number: Option<SerialNumber>,
    /// Device name (macOS only).
    #[serde(
        rename = "DeviceName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_name: Option<String>,
    /// Model (macOS only), e.g. `iMac14,2`.
    #[serde(rename = "Model", default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model name (macOS only), e.g. `iMac`.
    #[serde(rename = "ModelName", default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
}

/// Apple's `TokenUpdate` check-in: the profile is installed and the device can be
/// woken with a push carrying `PushMagic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenUpdate {
    /// The APNs topic from the MDM payload.
    #[serde(rename = "Topic")]
    pub topic: String,
    /// The device's UDID.
    #[serde(rename = "UDID")]
    pub udid: Udid,
    /// The push token (APNs device token; Orchard's push channel identifies the device by it too).
    #[serde(rename = "Token")]
    pub token: ByteBuf,
    /// Must be echoed in every push that wakes the device.
    #[serde(rename = "PushMagic")]
    pub push_magic: String,
    /// Unlock token (iOS), kept for passcode clearing.
    #[serde(
        rename = "UnlockToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unlock_token: Option<ByteBuf>,
    /// True while the device waits in Setup Assistant for `DeviceConfigured`.
    #[serde(
        rename = "AwaitingConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub awaiting_configuration: Option<bool>,
}

/// Apple's `CheckOut` check-in: the MDM profile was removed (only sent when the
/// payload has `CheckOutWhenRemoved`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOut {
    /// The APNs topic from the MDM payload.
    #[serde(rename = "Topic")]
    pub topic: String,
    /// The device's UDID.
    #[serde(rename = "UDID")]
    pub udid: Udid,
}

/// One message of the check-in channel.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckinMessage {
    /// `MessageType` = `Authenticate`.
    Authenticate(Authenticate),
    /// `MessageType` = `TokenUpdate`.
    TokenUpdate(TokenUpdate),
    /// `MessageType` = `CheckOut`.
    CheckOut(CheckOut),
    /// Orchard's extension: `MessageType` = `OrchardPromptReport`.
    PromptReport(PromptReport),
    /// Orchard's extension: `MessageType` = `OrchardAppRequest`.
    AppRequest(AppRequest),
    /// A well-formed check-in of a kind Orchard does not handle (e.g. `UserAuthenticate`).
    Unknown {
        /// The `MessageType` the device sent.
        message_type: String,
    },
}

impl CheckinMessage {
    /// Decodes the body of a check-in request.
    pub fn from_xml(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let dict = xml::decode_dictionary(bytes)?;
        let message_type = xml::required_string(&dict, "MessageType")?;
        Ok(match message_type.as_str() {
            "Authenticate" => Self::Authenticate(xml::typed(dict)?),
            "TokenUpdate" => Self::TokenUpdate(xml::typed(dict)?),
            "CheckOut" => Self::CheckOut(xml::typed(dict)?),
            PROMPT_REPORT => Self::PromptReport(xml::typed(dict)?),
            APP_REQUEST => Self::AppRequest(xml::typed(dict)?),
            _ => Self::Unknown { message_type },
        })
    }

    /// Encodes the message as the XML plist a device sends.
    pub fn to_xml(&self) -> Result<Vec<u8>, ProtocolError> {
        let (message_type, mut dict) = match self {
            Self::Authenticate(m) => ("Authenticate", xml::to_dictionary(m)?),
            Self::TokenUpdate(m) => ("TokenUpdate", xml::to_dictionary(m)?),
            Self::CheckOut(m) => ("CheckOut", xml::to_dictionary(m)?),
            Self::PromptReport(m) => (PROMPT_REPORT, xml::to_dictionary(m)?),
            Self::AppRequest(m) => (APP_REQUEST, xml::to_dictionary(m)?),
            Self::Unknown { message_type } => (message_type.as_str(), plist::Dictionary::new()),
        };
        dict.insert("MessageType".into(), message_type.into());
        xml::encode(&dict)
    }

    /// The UDID the message claims to come from, if it names one.
    pub fn udid(&self) -> Option<&Udid> {
        match self {
            Self::Authenticate(m) => Some(&m.udid),
            Self::TokenUpdate(m) => Some(&m.udid),
            Self::CheckOut(m) => Some(&m.udid),
            Self::PromptReport(m) => Some(&m.udid),
            Self::AppRequest(m) => Some(&m.udid),
            Self::Unknown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticate() -> Authenticate {
        Authenticate {
            topic: "com.apple.mgmt.External.test".into(),
            udid: "UDID-1".into(),
            os_version: Some("17.5".into()),
            build_version: Some("21F79".into()),
            product_name: Some("iPhone15,2".into()),
            serial_number: Some("C02TEST0001".into()),
            device_name: None,
            model: None,
            model_name: None,
        }
    }

    #[test]
    fn every_checkin_message_round_trips_through_xml() {
        let messages = [
            CheckinMessage::Authenticate(authenticate()),
            CheckinMessage::TokenUpdate(TokenUpdate {
                topic: "com.apple.mgmt.External.test".into(),
                udid: "UDID-1".into(),
                token: ByteBuf::from(vec![1, 2, 3, 255]),
                push_magic: "MAGIC".into(),
                unlock_token: Some(ByteBuf::from(vec![9; 40])),
                awaiting_configuration: Some(false),
            }),
            CheckinMessage::CheckOut(CheckOut {
                topic: "com.apple.mgmt.External.test".into(),
                udid: "UDID-1".into(),
            }),
            CheckinMessage::PromptReport(PromptReport {
                udid: "UDID-1".into(),
                prompts: vec![crate::prompt::Prompt {
                    prompt_id: "p1".into(),
                    kind: crate::prompt::PromptKind::AppleId,
                    identifier: Some("com.apple.Pages".into()),
                    itunes_store_id: Some(crate::AdamId(361309726)),
                    shown_at: "2026-11-25T10:00:00.000000Z".into(),
                    answer: Some(crate::prompt::PromptAnswer::Dismissed),
                    answered_at: Some("2026-11-25T10:00:01.000000Z".into()),
                }],
            }),
            CheckinMessage::AppRequest(crate::portal::AppRequest {
                udid: "UDID-1".into(),
                itunes_store_id: crate::AdamId(361309726),
            }),
        ];
        for message in messages {
            let bytes = message.to_xml().unwrap();
            assert!(bytes.starts_with(b"<?xml"), "XML plist expected");
            assert_eq!(CheckinMessage::from_xml(&bytes).unwrap(), message);
        }
    }

    #[test]
    fn unknown_message_type_is_reported_not_rejected() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>MessageType</key><string>UserAuthenticate</string>
<key>UDID</key><string>X</string></dict></plist>"#;
        assert_eq!(
            CheckinMessage::from_xml(body).unwrap(),
            CheckinMessage::Unknown {
                message_type: "UserAuthenticate".into()
            }
        );
    }

    #[test]
    fn missing_message_type_names_the_key() {
        let body =
            br#"<plist version="1.0"><dict><key>UDID</key><string>X</string></dict></plist>"#;
        let err = CheckinMessage::from_xml(body).unwrap_err();
        assert!(err.to_string().contains("MessageType"), "{err}");
    }

    #[test]
    fn authenticate_without_udid_is_an_error() {
        let body =
            br#"<plist version="1.0"><dict><key>MessageType</key><string>Authenticate</string>
<key>Topic</key><string>t</string></dict></plist>"#;
        assert!(CheckinMessage::from_xml(body).is_err());
    }

    #[test]
    fn garbage_is_a_plist_error() {
        assert!(matches!(
            CheckinMessage::from_xml(b"not a plist at all"),
            Err(ProtocolError::Plist(_))
        ));
        assert!(matches!(
            CheckinMessage::from_xml(br#"<plist version="1.0"><string>x</string></plist>"#),
            Err(ProtocolError::NotADictionary)
        ));
    }
}
