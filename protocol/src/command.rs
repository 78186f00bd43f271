//! The server's side of the command channel: the envelope `{CommandUUID, Command}`
//! and the commands Orchard sends, one module per Apple `RequestType`.

mod device_information;
mod install_application;
mod install_media;
mod installed_application_list;
mod invite_to_program;
mod managed_application_list;
mod managed_media_list;
mod notice;
mod remove_application;
mod restrictions;

pub use device_information::{DeviceInformation, DeviceInformationResponse, QueryResponses};
pub use install_application::{
    InstallApplication, InstallApplicationOptions, InstallApplicationResponse, ManagedAppStatus,
    PURCHASE_METHOD_VPP, RejectionReason,
};
pub use install_media::{BookState, InstallMedia, InstallMediaResponse, MEDIA_TYPE_BOOK};
pub use installed_application_list::{
    InstalledApplication, InstalledApplicationList, InstalledApplicationListResponse,
};
pub use invite_to_program::{
    InvitationResult, InviteToProgram, InviteToProgramResponse, PROGRAM_ID_VPP,
};
pub use managed_application_list::{
    ManagedApplication, ManagedApplicationList, ManagedApplicationListResponse,
};
pub use managed_media_list::{ManagedBook, ManagedMediaList, ManagedMediaListResponse};
pub use notice::Notice;
pub use remove_application::RemoveApplication;
pub use restrictions::{
    ALLOW_APP_INSTALLATION, ALLOW_UI_APP_INSTALLATION, BooleanRestriction, GlobalRestrictions,
    Restrictions, RestrictionsResponse,
};

use serde::{Deserialize, Serialize};

use crate::{CommandUuid, ProtocolError, xml};

/// One MDM command, tagged by Apple's `RequestType`.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `InstallApplication`.
    InstallApplication(InstallApplication),
    /// `RemoveApplication`.
    RemoveApplication(RemoveApplication),
    /// `InstalledApplicationList`.
    InstalledApplicationList(InstalledApplicationList),
    /// `ManagedApplicationList`.
    ManagedApplicationList(ManagedApplicationList),
    /// `DeviceInformation`.
    DeviceInformation(DeviceInformation),
    /// `InviteToProgram`.
    InviteToProgram(InviteToProgram),
    /// `Restrictions`.
    Restrictions(Restrictions),
    /// `InstallMedia`.
    InstallMedia(InstallMedia),
    /// `ManagedMediaList`.
    ManagedMediaList(ManagedMediaList),
    /// `OrchardNotice` (Orchard's own: a message for the device's user).
    Notice(Notice),
    /// A command this crate has no type for; a device answers it with `CommandFormatError`
    /// or `Error`.
    Unknown {
        /// The `RequestType` as sent.
        request_type: String,
    },
}

impl Command {
    /// Apple's `RequestType` of this command.
    pub fn request_type(&self) -> &str {
        match self {
            Self::InstallApplication(_) => "InstallApplication",
            Self::RemoveApplication(_) => "RemoveApplication",
            Self::InstalledApplicationList(_) => "InstalledApplicationList",
            Self::ManagedApplicationList(_) => "ManagedApplicationList",
            Self::DeviceInformation(_) => "DeviceInformation",
            Self::InviteToProgram(_) => "InviteToProgram",
            Self::Restrictions(_) => "Restrictions",
            Self::InstallMedia(_) => "InstallMedia",
            Self::ManagedMediaList(_) => "ManagedMediaList",
            Self::Notice(_) => "OrchardNotice",
            Self::Unknown { request_type } => request_type,
        }
    }

    fn to_dictionary(&self) -> Result<plist::Dictionary, ProtocolError> {
        let mut dict = match self {
            Self::InstallApplication(c) => xml::to_dictionary(c)?,
            Self::RemoveApplication(c) => xml::to_dictionary(c)?,
            Self::InstalledApplicationList(c) => xml::to_dictionary(c)?,
            Self::ManagedApplicationList(c) => xml::to_dictionary(c)?,
            Self::DeviceInformation(c) => xml::to_dictionary(c)?,
            Self::InviteToProgram(c) => xml::to_dictionary(c)?,
            Self::Restrictions(c) => xml::to_dictionary(c)?,
            Self::InstallMedia(c) => xml::to_dictionary(c)?,
            Self::ManagedMediaList(c) => xml::to_dictionary(c)?,
            Self::Notice(c) => xml::to_dictionary(c)?,
            Self::Unknown { .. } => plist::Dictionary::new(),
        };
        dict.insert("RequestType".into(), self.request_type().into());
        Ok(dict)
    }

    fn from_dictionary(dict: plist::Dictionary) -> Result<Self, ProtocolError> {
        let request_type = xml::required_string(&dict, "RequestType")?;
        Ok(match request_type.as_str() {
            "InstallApplication" => Self::InstallApplication(xml::typed(dict)?),
            "RemoveApplication" => Self::RemoveApplication(xml::typed(dict)?),
            "InstalledApplicationList" => Self::InstalledApplicationList(xml::typed(dict)?),
            "ManagedApplicationList" => Self::ManagedApplicationList(xml::typed(dict)?),
            "DeviceInformation" => Self::DeviceInformation(xml::typed(dict)?),
            "InviteToProgram" => Self::InviteToProgram(xml::typed(dict)?),
            "Restrictions" => Self::Restrictions(xml::typed(dict)?),
            "InstallMedia" => Self::InstallMedia(xml::typed(dict)?),
            "ManagedMediaList" => Self::ManagedMediaList(xml::typed(dict)?),
            "OrchardNotice" => Self::Notice(xml::typed(dict)?),
            _ => Self::Unknown { request_type },
        })
    }
}

/// The body the server answers a command-channel PUT with: the next command.
/// (No command is a zero-byte body, not an empty plist.)
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnvelope {
    /// `CommandUUID`.
    pub command_uuid: CommandUuid,
    /// `Command`.
    pub command: Command,
}

#[derive(Serialize, Deserialize)]
struct RawEnvelope {
    #[serde(rename = "CommandUUID")]
    command_uuid: CommandUuid,
    #[serde(rename = "Command")]
    command: plist::Dictionary,
}

impl CommandEnvelope {
    /// Encodes the envelope as XML plist.
    pub fn to_xml(&self) -> Result<Vec<u8>, ProtocolError> {
        xml::encode(&RawEnvelope {
            command_uuid: self.command_uuid.clone(),
            command: self.command.to_dictionary()?,
        })
    }

    /// Decodes a command envelope (the device's side of the channel).
    pub fn from_xml(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let raw: RawEnvelope = xml::typed(xml::decode_dictionary(bytes)?)?;
        Ok(Self {
            command_uuid: raw.command_uuid,
            command: Command::from_dictionary(raw.command)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AdamId;

    fn all_commands() -> Vec<Command> {
        vec![
            Command::InstallApplication(InstallApplication::vpp(AdamId(361309726), 1)),
            Command::RemoveApplication(RemoveApplication {
                identifier: "com.apple.Pages".into(),
            }),
            Command::InstalledApplicationList(InstalledApplicationList {
                identifiers: Some(vec!["com.apple.Pages".into()]),
                managed_apps_only: Some(true),
                items: Some(vec!["Identifier".into(), "ShortVersion".into()]),
            }),
            Command::ManagedApplicationList(ManagedApplicationList {
                identifiers: Some(vec!["com.apple.Pages".into()]),
            }),
            Command::DeviceInformation(DeviceInformation {
                queries: vec!["UDID".into(), "IsSupervised".into()],
            }),
            Command::InviteToProgram(InviteToProgram::vpp(
                "https://buy.itunes.apple.com/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount?inviteCode=abc&mt=8",
            )),
            Command::Restrictions(Restrictions {
                profile_restrictions: Some(false),
            }),
            Command::InstallMedia(InstallMedia::book(AdamId(1490240032))),
            Command::ManagedMediaList(ManagedMediaList::default()),
            Command::Notice(Notice {
                title: "License taken back".into(),
                message: "Pages".into(),
            }),
        ]
    }

    #[test]
    fn every_command_round_trips_in_its_envelope() {
        for command in all_commands() {
            let envelope = CommandEnvelope {
                command_uuid: "uuid-1".into(),
                command,
            };
            let bytes = envelope.to_xml().unwrap();
            assert_eq!(CommandEnvelope::from_xml(&bytes).unwrap(), envelope);
        }
    }

    #[test]
    fn install_application_uses_apples_keys_and_vpp_purchase_method() {
        let envelope = CommandEnvelope {
            command_uuid: "u".into(),
            command: Command::InstallApplication(InstallApplication::vpp(AdamId(42), 1)),
        };
        let text = String::from_utf8(envelope.to_xml().unwrap()).unwrap();
        for needle in [
            "<key>RequestType</key>",
            "<string>InstallApplication</string>",
            "<key>iTunesStoreID</key>",
            "<integer>42</integer>",
            "<key>PurchaseMethod</key>",
            "<integer>1</integer>",
            "<key>ManagementFlags</key>",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }

    #[test]
    fn unknown_request_type_decodes_as_unknown() {
        let body = br#"<plist version="1.0"><dict><key>CommandUUID</key><string>a</string>
<key>Command</key><dict><key>RequestType</key><string>EraseDevice</string></dict></dict></plist>"#;
        let envelope = CommandEnvelope::from_xml(body).unwrap();
        assert_eq!(
            envelope.command,
            Command::Unknown {
                request_type: "EraseDevice".into()
            }
        );
    }
}
