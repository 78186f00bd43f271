//! Conformance with Apple's published schemas (`tests/schemas`, copied from
//! apple/device-management): every command, response and check-in message Orchard
//! defines is encoded, then each key is looked up in the schema: it must exist there,
//! have the schema's type, stay inside its `rangelist`, and every required key must be
//! written.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use orchard_protocol::checkin::{Authenticate, CheckOut, CheckinMessage, TokenUpdate};
use orchard_protocol::command::{
    BooleanRestriction, Command, CommandEnvelope, DeviceInformation, DeviceInformationResponse,
    GlobalRestrictions, InstallApplication, InstallApplicationResponse, InstalledApplication,
    InstalledApplicationList, InstalledApplicationListResponse, InvitationResult, InviteToProgram,
    InviteToProgramResponse, ManagedAppStatus, ManagedApplication, ManagedApplicationList,
    ManagedApplicationListResponse, QueryResponses, RejectionReason, RemoveApplication,
    Restrictions, RestrictionsResponse,
};
use orchard_protocol::{AdamId, prompt};
use plist::{Dictionary, Value};
use serde::Deserialize;

/// One key of a schema, as Apple's YAML describes it.
#[derive(Debug, Clone, Deserialize)]
struct KeySpec {
    key: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    presence: Option<String>,
    #[serde(default)]
    rangelist: Option<Vec<serde_norway::Value>>,
    #[serde(default)]
    subkeys: Option<Vec<Self>>,
    #[serde(default, rename = "supportedOS")]
    supported_os: Option<BTreeMap<String, serde_norway::Value>>,
}

/// Keys the schema marks required that Apple's own text says appear only sometimes.
const CONDITIONAL_KEYS: [(&str, &str); 2] = [
    (
        "UnusedRedemptionCode",
        "reported only when the user had already bought the paid app",
    ),
    (
        "ProfileRestrictions",
        "in the Restrictions response only when the command asked for it",
    ),
];

impl KeySpec {
    fn is_wildcard(&self) -> bool {
        self.key.starts_with("ANY ")
    }

    /// Required on the device channel of a device (not user) enrollment, which is
    /// where Orchard's devices speak.
    fn required(&self) -> bool {
        self.presence.as_deref() == Some("required")
            && !self.is_wildcard()
            && !CONDITIONAL_KEYS.iter().any(|(k, _)| *k == self.key)
            && !self.only_outside_device_channel()
    }

    /// User-channel-only keys (`devicechannel: false`) and keys of user enrollment only.
    fn only_outside_device_channel(&self) -> bool {
        let Some(os) = &self.supported_os else {
            return false;
        };
        os.values().any(|platform| {
            platform.get("devicechannel") == Some(&serde_norway::Value::Bool(false))
                || platform
                    .get("userenrollment")
                    .and_then(|u| u.get("mode"))
                    .and_then(|m| m.as_str())
                    == Some("required")
        })
    }
}

#[derive(Debug, Deserialize)]
struct PayloadInfo {
    requesttype: Option<String>,
}

/// One schema file.
#[derive(Debug, Deserialize)]
struct Schema {
    payload: PayloadInfo,
    #[serde(default)]
    payloadkeys: Vec<KeySpec>,
    #[serde(default)]
    responsekeys: Vec<KeySpec>,
}

fn schema(file: &str) -> Schema {
    let path = format!("{}/tests/schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "<string>",
        Value::Integer(_) => "<integer>",
        Value::Boolean(_) => "<boolean>",
        Value::Dictionary(_) => "<dictionary>",
        Value::Array(_) => "<array>",
        Value::Data(_) => "<data>",
        Value::Date(_) => "<date>",
        Value::Real(_) => "<real>",
        _ => "<unknown>",
    }
}

fn in_rangelist(value: &Value, range: &[serde_norway::Value]) -> bool {
    range.iter().any(|allowed| match (value, allowed) {
        (Value::String(s), serde_norway::Value::String(a)) => s == a,
        (Value::Integer(i), serde_norway::Value::Number(n)) => i.as_signed() == n.as_i64(),
        (Value::Boolean(b), serde_norway::Value::Bool(a)) => b == a,
        _ => false,
    })
}

/// Checks one value against its key's spec, appending every problem found.
fn check_value(value: &Value, spec: &KeySpec, path: &str, problems: &mut Vec<String>) {
    if spec.ty != "<any>" && type_name(value) != spec.ty {
        problems.push(format!(
            "{path}: schema says {}, Orchard writes {}",
            spec.ty,
            type_name(value)
        ));
        return;
    }
    if let Some(range) = &spec.rangelist
        && !in_rangelist(value, range)
    {
        problems.push(format!(
            "{path}: {value:?} is outside the schema's rangelist"
        ));
    }
    match value {
        Value::Dictionary(dict) => {
            if let Some(subkeys) = &spec.subkeys {
                check_dictionary(dict, subkeys, path, problems);
            }
        }
        Value::Array(items) => {
            // An array's subkeys describe its element.
            if let Some(element) = spec.subkeys.as_ref().and_then(|s| s.first()) {
                for (i, item) in items.iter().enumerate() {
                    check_value(item, element, &format!("{path}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

/// Checks a dictionary against a list of key specs; returns the problems found.
fn check_dictionary(dict: &Dictionary, specs: &[KeySpec], path: &str, problems: &mut Vec<String>) {
    for (key, value) in dict {
        let spec = specs
            .iter()
            .find(|s| &s.key == key)
            .or_else(|| specs.iter().find(|s| s.is_wildcard()));
        match spec {
            Some(spec) => check_value(value, spec, &format!("{path}.{key}"), problems),
            None => problems.push(format!("{path}.{key}: not a key of Apple's schema")),
        }
    }
    for spec in specs.iter().filter(|s| s.required()) {
        if !dict.contains_key(&spec.key) {
            problems.push(format!("{path}.{}: required key not written", spec.key));
        }
    }
}

fn dictionary_of<T: serde::Serialize>(value: &T) -> Dictionary {
    match plist::to_value(value).unwrap() {
        Value::Dictionary(d) => d,
        other => panic!("not a dictionary: {other:?}"),
    }
}

/// The command's dictionary as it goes on the wire (inside the envelope).
fn command_dictionary(command: &Command) -> Dictionary {
    let envelope = CommandEnvelope {
        command_uuid: "conformance".into(),
        command: command.clone(),
    };
    let value: Value = plist::from_bytes(&envelope.to_xml().unwrap()).unwrap();
    let Value::Dictionary(mut outer) = value else {
        panic!("envelope is not a dictionary")
    };
    match outer.remove("Command") {
        Some(Value::Dictionary(d)) => d,
        _ => panic!("envelope has no Command dictionary"),
    }
}

fn assert_conforms(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "schema problems:\n{}",
        problems.join("\n")
    );
}

fn check_command(file: &str, command: &Command) -> Vec<String> {
    let schema = schema(file);
    let mut dict = command_dictionary(command);
    let mut problems = Vec::new();
    match dict.remove("RequestType") {
        Some(Value::String(rt)) if Some(&rt) == schema.payload.requesttype.as_ref() => {}
        other => problems.push(format!(
            "RequestType {other:?} is not {:?}",
            schema.payload.requesttype
        )),
    }
    check_dictionary(
        &dict,
        &schema.payloadkeys,
        command.request_type(),
        &mut problems,
    );
    problems
}

fn check_response<T: serde::Serialize>(file: &str, response: &T) -> Vec<String> {
    let schema = schema(file);
    let mut problems = Vec::new();
    check_dictionary(
        &dictionary_of(response),
        &schema.responsekeys,
        "response",
        &mut problems,
    );
    problems
}

fn check_checkin(file: &str, message: &CheckinMessage) -> Vec<String> {
    let schema = schema(file);
    let value: Value = plist::from_bytes(&message.to_xml().unwrap()).unwrap();
    let Value::Dictionary(dict) = value else {
        panic!("check-in is not a dictionary")
    };
    let mut problems = Vec::new();
    check_dictionary(&dict, &schema.payloadkeys, "checkin", &mut problems);
    problems
}

#[test]
fn every_command_conforms_to_apples_schema() {
    let cases = [
        (
            "mdm_commands_application.install.yaml",
            Command::InstallApplication(InstallApplication {
                install_as_managed: Some(true),
                identifier: Some("com.apple.Pages".into()),
                ..InstallApplication::vpp(AdamId(361309726), 5)
            }),
        ),
        (
            "mdm_commands_application.remove.yaml",
            Command::RemoveApplication(RemoveApplication {
                identifier: "com.apple.Pages".into(),
            }),
        ),
        (
            "mdm_commands_application.installed.list.yaml",
            Command::InstalledApplicationList(InstalledApplicationList {
                identifiers: Some(vec!["com.apple.Pages".into()]),
                managed_apps_only: Some(true),
                items: Some(vec!["Identifier".into(), "ShortVersion".into()]),
            }),
        ),
        (
            "mdm_commands_application.managed.list.yaml",
            Command::ManagedApplicationList(ManagedApplicationList {
                identifiers: Some(vec!["com.apple.Pages".into()]),
            }),
        ),
        (
            "mdm_commands_information.device.yaml",
            Command::DeviceInformation(DeviceInformation {
                queries: vec!["UDID".into(), "IsSupervised".into()],
            }),
        ),
        (
            "mdm_commands_application.invitetoprogram.yaml",
            Command::InviteToProgram(InviteToProgram::vpp(
                "https://vpp.example/associate?inviteCode=abc",
            )),
        ),
        (
            "mdm_commands_device.restrictions.list.yaml",
            Command::Restrictions(Restrictions {
                profile_restrictions: Some(true),
            }),
        ),
    ];
    for (file, command) in cases {
        assert_conforms(&check_command(file, &command));
    }
}

#[test]
fn every_response_conforms_to_apples_schema() {
    for state in ManagedAppStatus::ALL {
        assert_conforms(&check_response(
            "mdm_commands_application.install.yaml",
            &InstallApplicationResponse {
                identifier: Some("com.apple.Pages".into()),
                state: Some(state),
                rejection_reason: None,
            },
        ));
        assert_conforms(&check_response(
            "mdm_commands_application.managed.list.yaml",
            &ManagedApplicationListResponse {
                managed_application_list: BTreeMap::from([(
                    "com.apple.Pages".to_owned(),
                    ManagedApplication {
                        status: state,
                        management_flags: 1,
                        has_configuration: Some(false),
                        has_feedback: Some(false),
                        is_validated: Some(true),
                        external_version_identifier: Some(8_000_000),
                    },
                )]),
            },
        ));
    }
    for reason in [
        RejectionReason::AppAlreadyInstalled,
        RejectionReason::AppStoreDisabled,
        RejectionReason::CouldNotVerifyAppID,
        RejectionReason::PurchaseMethodNotSupported,
        RejectionReason::Other,
    ] {
        assert_conforms(&check_response(
            "mdm_commands_application.install.yaml",
            &InstallApplicationResponse {
                identifier: None,
                state: None,
                rejection_reason: Some(reason),
            },
        ));
    }
    assert_conforms(&check_response(
        "mdm_commands_application.installed.list.yaml",
        &InstalledApplicationListResponse {
            installed_application_list: vec![InstalledApplication {
                identifier: Some("com.apple.Pages".into()),
                name: Some("Pages".into()),
                version: Some("14.1".into()),
                short_version: Some("14.1".into()),
                external_version_identifier: Some(1),
                bundle_size: Some(1024),
                installing: Some(false),
                device_based_vpp: Some(true),
                app_store_vendable: Some(false),
                has_update_available: Some(false),
            }],
        },
    ));
    assert_conforms(&check_response(
        "mdm_commands_information.device.yaml",
        &DeviceInformationResponse {
            query_responses: QueryResponses {
                udid: Some("U".into()),
                device_name: Some("iPhone".into()),
                os_version: Some("17.5".into()),
                build_version: Some("21F79".into()),
                model_name: Some("iPhone".into()),
                model: Some("MQ9T3LL/A".into()),
                product_name: Some("iPhone15,2".into()),
                serial_number: Some("SN".into()),
                is_supervised: Some(true),
                itunes_store_account_is_active: Some(true),
                itunes_store_account_hash: Some("hash".into()),
            },
        },
    ));
    for result in [
        InvitationResult::Acknowledged,
        InvitationResult::InvalidProgramID,
        InvitationResult::InvalidInvitationURL,
    ] {
        assert_conforms(&check_response(
            "mdm_commands_application.invitetoprogram.yaml",
            &InviteToProgramResponse {
                invitation_result: result,
            },
        ));
    }
    let restrictions = GlobalRestrictions {
        restricted_bool: BTreeMap::from([(
            "allowAppInstallation".to_owned(),
            BooleanRestriction { value: false },
        )]),
    };
    for per_profile in [
        None,
        Some(BTreeMap::from([(
            "com.example.restrictions".to_owned(),
            restrictions.clone(),
        )])),
    ] {
        assert_conforms(&check_response(
            "mdm_commands_device.restrictions.list.yaml",
            &RestrictionsResponse {
                global_restrictions: restrictions.clone(),
                profile_restrictions: per_profile,
            },
        ));
    }
}

#[test]
fn every_checkin_message_conforms_to_apples_schema() {
    let cases = [
        (
            "mdm_checkin_authenticate.yaml",
            CheckinMessage::Authenticate(Authenticate {
                topic: "com.apple.mgmt.External.x".into(),
                udid: "U".into(),
                os_version: Some("17.5".into()),
                build_version: Some("21F79".into()),
                product_name: Some("iPhone15,2".into()),
                serial_number: Some("SN".into()),
                device_name: Some("iPhone".into()),
                model: Some("iMac14,2".into()),
                model_name: Some("iMac".into()),
            }),
        ),
        (
            "mdm_checkin_tokenupdate.yaml",
            CheckinMessage::TokenUpdate(TokenUpdate {
                topic: "com.apple.mgmt.External.x".into(),
                udid: "U".into(),
                token: serde_bytes::ByteBuf::from(vec![1, 2, 3]),
                push_magic: "magic".into(),
                unlock_token: Some(serde_bytes::ByteBuf::from(vec![4])),
                awaiting_configuration: Some(false),
            }),
        ),
        (
            "mdm_checkin_checkout.yaml",
            CheckinMessage::CheckOut(CheckOut {
                topic: "com.apple.mgmt.External.x".into(),
                udid: "U".into(),
            }),
        ),
    ];
    for (file, message) in cases {
        assert_conforms(&check_checkin(file, &message));
    }
}

#[test]
fn orchards_prompt_report_is_not_an_apple_message_type() {
    for file in [
        "mdm_checkin_authenticate.yaml",
        "mdm_checkin_tokenupdate.yaml",
        "mdm_checkin_checkout.yaml",
    ] {
        assert_ne!(
            schema(file).payload.requesttype.as_deref(),
            Some(prompt::PROMPT_REPORT)
        );
    }
}

/// The checker itself must catch what it is for.
mod checker {
    use super::*;

    fn install_dictionary() -> Dictionary {
        command_dictionary(&Command::InstallApplication(InstallApplication::vpp(
            AdamId(1),
            1,
        )))
    }

    fn specs() -> Vec<KeySpec> {
        schema("mdm_commands_application.install.yaml").payloadkeys
    }

    #[test]
    fn a_misspelled_key_is_reported() {
        let mut dict = install_dictionary();
        let value = dict.remove("iTunesStoreID").unwrap();
        dict.insert("ItunesStoreID".into(), value);
        let mut problems = Vec::new();
        check_dictionary(&dict, &specs(), "cmd", &mut problems);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("ItunesStoreID") && p.contains("not a key")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_wrong_type_is_reported() {
        let mut dict = install_dictionary();
        dict.insert("ManagementFlags".into(), Value::String("1".into()));
        let mut problems = Vec::new();
        check_dictionary(&dict, &specs(), "cmd", &mut problems);
        assert!(
            problems.iter().any(|p| p.contains("ManagementFlags")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_value_outside_the_rangelist_is_reported() {
        let mut dict = install_dictionary();
        dict.insert(
            "ChangeManagementState".into(),
            Value::String("Unmanaged".into()),
        );
        let mut problems = Vec::new();
        check_dictionary(&dict, &specs(), "cmd", &mut problems);
        assert!(
            problems.iter().any(|p| p.contains("rangelist")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_missing_required_key_is_reported() {
        let mut dict = command_dictionary(&Command::InviteToProgram(InviteToProgram::vpp("u")));
        dict.remove("InvitationURL");
        let mut problems = Vec::new();
        check_dictionary(
            &dict,
            &schema("mdm_commands_application.invitetoprogram.yaml").payloadkeys,
            "cmd",
            &mut problems,
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("InvitationURL") && p.contains("required")),
            "{problems:?}"
        );
    }
}
