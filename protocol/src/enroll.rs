//! Orchard's enrollment exchange (SCEP-like): the device sends an enrollment secret,
//! a CSR and its facts; the server answers with an identity certificate, the CA to pin,
//! and an MDM payload with Apple's `com.apple.mdm` keys that the device then follows.

use serde::{Deserialize, Serialize};

use crate::{ProtocolError, SerialNumber, Udid, xml};

/// Access rights Orchard asks for: device info (16), installed apps (256),
/// restrictions (512), settings (2048) and app management (4096), plus profile inspection (1).
pub const ORCHARD_ACCESS_RIGHTS: i64 = 1 | 16 | 256 | 512 | 2048 | 4096;

/// The device's enrollment request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The enrollment secret the admin handed out (the SCEP challenge's role).
    #[serde(rename = "EnrollmentSecret")]
    pub enrollment_secret: String,
    /// PEM-encoded PKCS#10 request whose subject common name is the UDID.
    #[serde(rename = "CSR")]
    pub csr_pem: String,
    /// The device's UDID.
    #[serde(rename = "UDID")]
    pub udid: Udid,
    /// Hardware serial number.
    #[serde(rename = "SerialNumber")]
    pub serial_number: SerialNumber,
    /// Product name, e.g. `iPhone15,2`.
    #[serde(
        rename = "ProductName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_name: Option<String>,
    /// OS version, e.g. `17.5`.
    #[serde(rename = "OSVersion", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Orchard extension: who owns the device (a real server learns it from the
    /// enrollment type: automated enrollment is corporate, user enrollment personal).
    #[serde(rename = "Ownership", default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,
    /// Orchard extension: the device runs in single-app (kiosk) mode (a real server
    /// knows from the App Lock payload it installed).
    #[serde(
        rename = "SingleAppMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub single_app_mode: Option<bool>,
}

/// Who owns an enrolled device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// Organisation-owned.
    Corporate,
    /// The user's own (BYOD).
    Personal,
}

impl Ownership {
    /// The wire name, also used by the admin API and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Corporate => "Corporate",
            Self::Personal => "Personal",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Corporate" => Some(Self::Corporate),
            "Personal" => Some(Self::Personal),
            _ => None,
        }
    }
}

impl EnrollRequest {
    /// Decodes an enrollment request body.
    pub fn from_xml(bytes: &[u8]) -> Result<Self, ProtocolError> {
        xml::typed(xml::decode_dictionary(bytes)?)
    }

    /// Encodes the request as XML plist.
    pub fn to_xml(&self) -> Result<Vec<u8>, ProtocolError> {
        xml::encode(self)
    }
}

/// The server's answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// PEM identity certificate issued for the CSR.
    #[serde(rename = "Certificate")]
    pub certificate_pem: String,
    /// PEM of the CA the server's TLS certificate and the identity chain to.
    #[serde(rename = "CACertificate")]
    pub ca_certificate_pem: String,
    /// The MDM payload the device follows from now on.
    #[serde(rename = "MDMPayload")]
    pub mdm_payload: MdmPayload,
    /// Orchard extension: where to keep the push channel (`quic://host:port`), the
    /// stand-in for APNs.
    #[serde(rename = "PushURL", default, skip_serializing_if = "Option::is_none")]
    pub push_url: Option<String>,
}

impl EnrollResponse {
    /// Decodes an enrollment response body.
    pub fn from_xml(bytes: &[u8]) -> Result<Self, ProtocolError> {
        xml::typed(xml::decode_dictionary(bytes)?)
    }

    /// Encodes the response as XML plist.
    pub fn to_xml(&self) -> Result<Vec<u8>, ProtocolError> {
        xml::encode(self)
    }
}

/// The `com.apple.mdm` payload (Apple's `mdm/profiles/com.apple.mdm.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MdmPayload {
    /// Always `com.apple.mdm`.
    #[serde(rename = "PayloadType")]
    pub payload_type: String,
    /// Reverse-DNS identifier of the payload.
    #[serde(rename = "PayloadIdentifier")]
    pub payload_identifier: String,
    /// Payload UUID.
    #[serde(rename = "PayloadUUID")]
    pub payload_uuid: String,
    /// Payload version, 1.
    #[serde(rename = "PayloadVersion")]
    pub payload_version: i64,
    /// UUID of the identity payload (the certificate issued at enrollment).
    #[serde(rename = "IdentityCertificateUUID")]
    pub identity_certificate_uuid: String,
    /// Push topic; must start with `com.apple.mgmt.`.
    #[serde(rename = "Topic")]
    pub topic: String,
    /// The command channel URL.
    #[serde(rename = "ServerURL")]
    pub server_url: String,
    /// The check-in URL (defaults to `ServerURL`).
    #[serde(
        rename = "CheckInURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub check_in_url: Option<String>,
    /// Bitmask of the rights the server asks for; never 0.
    #[serde(rename = "AccessRights")]
    pub access_rights: i64,
    /// Send `CheckOut` when the profile is removed.
    #[serde(rename = "CheckOutWhenRemoved", default)]
    pub check_out_when_removed: bool,
    /// Sign every request with `Mdm-Signature` (Orchard uses mutual TLS instead).
    #[serde(rename = "SignMessage", default)]
    pub sign_message: bool,
    /// Extra server capabilities.
    #[serde(
        rename = "ServerCapabilities",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub server_capabilities: Vec<String>,
}

impl MdmPayload {
    /// The URL check-in messages go to.
    pub fn check_in_url(&self) -> &str {
        self.check_in_url.as_deref().unwrap_or(&self.server_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_messages_round_trip() {
        let request = EnrollRequest {
            enrollment_secret: "s".into(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            udid: "U".into(),
            serial_number: "SN".into(),
            product_name: Some("iPhone15,2".into()),
            os_version: Some("17.5".into()),
            ownership: Some(Ownership::Personal),
            single_app_mode: Some(false),
        };
        assert_eq!(
            EnrollRequest::from_xml(&request.to_xml().unwrap()).unwrap(),
            request
        );

        let response = EnrollResponse {
            certificate_pem: "cert".into(),
            ca_certificate_pem: "ca".into(),
            push_url: Some("quic://127.0.0.1:1".into()),
            mdm_payload: MdmPayload {
                payload_type: "com.apple.mdm".into(),
                payload_identifier: "dev.orchard.mdm".into(),
                payload_uuid: "p".into(),
                payload_version: 1,
                identity_certificate_uuid: "i".into(),
                topic: "com.apple.mgmt.External.x".into(),
                server_url: "https://127.0.0.1:1/mdm/connect".into(),
                check_in_url: Some("https://127.0.0.1:1/mdm/checkin".into()),
                access_rights: ORCHARD_ACCESS_RIGHTS,
                check_out_when_removed: true,
                sign_message: false,
                server_capabilities: vec![],
            },
        };
        let bytes = response.to_xml().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        for key in [
            "ServerURL",
            "CheckInURL",
            "Topic",
            "AccessRights",
            "CheckOutWhenRemoved",
            "SignMessage",
        ] {
            assert!(text.contains(&format!("<key>{key}</key>")), "{key} missing");
        }
        assert_eq!(EnrollResponse::from_xml(&bytes).unwrap(), response);
    }
}
