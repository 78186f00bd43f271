//! The device's side of the command channel: the report it PUTs to the server URL
//! (`UDID`, `Status`, `CommandUUID`, `ErrorChain`, plus the command's response keys).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{CommandUuid, ProtocolError, Udid, xml};

/// `Status` of a command report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Nothing to report; the device asks for work.
    Idle,
    /// The command ran successfully.
    Acknowledged,
    /// The command failed; see `ErrorChain`.
    Error,
    /// The command was malformed.
    CommandFormatError,
    /// The device cannot run the command now; the server re-offers it later.
    NotNow,
}

impl CommandStatus {
    /// Apple's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Acknowledged => "Acknowledged",
            Self::Error => "Error",
            Self::CommandFormatError => "CommandFormatError",
            Self::NotNow => "NotNow",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Idle,
            Self::Acknowledged,
            Self::Error,
            Self::CommandFormatError,
            Self::NotNow,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One item of `ErrorChain`; the first is the top-level error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorChainItem {
    /// Diagnostic code (may change between OS releases).
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
    /// Error domain, e.g. `MCMDMErrorDomain`.
    #[serde(rename = "ErrorDomain")]
    pub error_domain: String,
    /// Description in the device's language.
    #[serde(rename = "LocalizedDescription")]
    pub localized_description: String,
    /// Description in US English.
    #[serde(
        rename = "USEnglishDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub us_english_description: Option<String>,
}

/// A command-channel report from a device.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    /// `UDID`.
    pub udid: Udid,
    /// `Status`.
    pub status: CommandStatus,
    /// `CommandUUID` (absent with `Idle`).
    pub command_uuid: Option<CommandUuid>,
    /// `ErrorChain`, with `Error`.
    pub error_chain: Vec<ErrorChainItem>,
    /// `RequestType`, which some devices echo.
    pub request_type: Option<String>,
    /// The command-specific response keys.
    pub response: plist::Dictionary,
}

const ENVELOPE_KEYS: [&str; 5] = ["UDID", "Status", "CommandUUID", "ErrorChain", "RequestType"];

impl CommandReport {
    /// A report with no response keys.
    pub fn new(udid: Udid, status: CommandStatus, command_uuid: Option<CommandUuid>) -> Self {
        Self {
            udid,
            status,
            command_uuid,
            error_chain: Vec::new(),
            request_type: None,
            response: plist::Dictionary::new(),
        }
    }

    /// Adds the response keys of a typed command response.
    pub fn with_response<T: Serialize>(mut self, response: &T) -> Result<Self, ProtocolError> {
        for (k, v) in xml::to_dictionary(response)? {
            self.response.insert(k, v);
        }
        Ok(self)
    }

    /// Reads the response keys as a typed command response.
    pub fn response<T: DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        xml::typed(self.response.clone())
    }

    /// Decodes a command-channel request body.
    pub fn from_xml(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut dict = xml::decode_dictionary(bytes)?;
        let udid = Udid::parse(&xml::required_string(&dict, "UDID")?)?;
        let status = CommandStatus::parse(&xml::required_string(&dict, "Status")?)
            .ok_or(ProtocolError::InvalidValue { key: "Status" })?;
        let command_uuid = match dict.get("CommandUUID") {
            None => None,
            Some(plist::Value::String(s)) => Some(CommandUuid::parse(s)?),
            Some(_) => return Err(ProtocolError::InvalidValue { key: "CommandUUID" }),
        };
        if status != CommandStatus::Idle && command_uuid.is_none() {
            return Err(ProtocolError::MissingKey { key: "CommandUUID" });
        }
        let error_chain = match dict.get("ErrorChain") {
            None => Vec::new(),
            Some(v) => plist::from_value(v)
                .map_err(|_| ProtocolError::InvalidValue { key: "ErrorChain" })?,
        };
        let request_type = match dict.get("RequestType") {
            Some(plist::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        for key in ENVELOPE_KEYS {
            dict.remove(key);
        }
        Ok(Self {
            udid,
            status,
            command_uuid,
            error_chain,
            request_type,
            response: dict,
        })
    }

    /// Encodes the report as the XML plist a device sends.
    pub fn to_xml(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut dict = self.response.clone();
        dict.insert("UDID".into(), self.udid.as_str().into());
        dict.insert("Status".into(), self.status.as_str().into());
        if let Some(uuid) = &self.command_uuid {
            dict.insert("CommandUUID".into(), uuid.as_str().into());
        }
        if !self.error_chain.is_empty() {
            dict.insert("ErrorChain".into(), plist::to_value(&self.error_chain)?);
        }
        if let Some(rt) = &self.request_type {
            dict.insert("RequestType".into(), rt.as_str().into());
        }
        xml::encode(&dict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{
        InstallApplicationResponse, InstalledApplication, InstalledApplicationListResponse,
        ManagedAppStatus, ManagedApplication, ManagedApplicationListResponse,
    };

    #[test]
    fn idle_report_round_trips() {
        let report = CommandReport::new("U".into(), CommandStatus::Idle, None);
        let back = CommandReport::from_xml(&report.to_xml().unwrap()).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn error_report_with_chain_round_trips() {
        let mut report = CommandReport::new("U".into(), CommandStatus::Error, Some("c".into()));
        report.error_chain.push(ErrorChainItem {
            error_code: 12021,
            error_domain: "MCMDMErrorDomain".into(),
            localized_description: "Unknown command".into(),
            us_english_description: Some("Unknown command".into()),
        });
        let back = CommandReport::from_xml(&report.to_xml().unwrap()).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn typed_responses_round_trip_through_the_report() {
        let install = InstallApplicationResponse {
            identifier: Some("com.example.app".into()),
            state: Some(ManagedAppStatus::Installing),
            rejection_reason: None,
        };
        let mut managed = ManagedApplicationListResponse::default();
        managed.managed_application_list.insert(
            "com.example.app".into(),
            ManagedApplication {
                status: ManagedAppStatus::Managed,
                management_flags: 1,
                has_configuration: Some(false),
                has_feedback: Some(false),
                is_validated: Some(true),
                external_version_identifier: Some(8765),
            },
        );
        let installed = InstalledApplicationListResponse {
            installed_application_list: vec![InstalledApplication {
                identifier: Some("com.example.app".into()),
                short_version: Some("2.1".into()),
                ..Default::default()
            }],
        };
        let ack = |r: CommandReport| CommandReport::from_xml(&r.to_xml().unwrap()).unwrap();
        let base = || CommandReport::new("U".into(), CommandStatus::Acknowledged, Some("c".into()));
        assert_eq!(
            ack(base().with_response(&install).unwrap())
                .response::<InstallApplicationResponse>()
                .unwrap(),
            install
        );
        assert_eq!(
            ack(base().with_response(&managed).unwrap())
                .response::<ManagedApplicationListResponse>()
                .unwrap(),
            managed
        );
        assert_eq!(
            ack(base().with_response(&installed).unwrap())
                .response::<InstalledApplicationListResponse>()
                .unwrap(),
            installed
        );
    }

    #[test]
    fn acknowledged_without_command_uuid_is_refused() {
        let body = br#"<plist version="1.0"><dict><key>UDID</key><string>U</string>
<key>Status</key><string>Acknowledged</string></dict></plist>"#;
        assert!(matches!(
            CommandReport::from_xml(body),
            Err(ProtocolError::MissingKey { key: "CommandUUID" })
        ));
    }

    #[test]
    fn unknown_status_names_the_key() {
        let body = br#"<plist version="1.0"><dict><key>UDID</key><string>U</string>
<key>Status</key><string>Maybe</string></dict></plist>"#;
        assert!(matches!(
            CommandReport::from_xml(body),
            Err(ProtocolError::InvalidValue { key: "Status" })
        ));
    }
}
