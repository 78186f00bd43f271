//! The sans-IO device model: facts the device is configured with, the apps on it, and
//! how it answers each MDM command. Time is passed in; nothing here does IO.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orchard_certs::KeyAlgorithm;
use orchard_protocol::command::{
    Command, CommandEnvelope, DeviceInformation, DeviceInformationResponse, InstallApplication,
    InstallApplicationResponse, InstalledApplication, InstalledApplicationList,
    InstalledApplicationListResponse, ManagedAppStatus, ManagedApplication, ManagedApplicationList,
    ManagedApplicationListResponse, QueryResponses, RejectionReason,
};
use orchard_protocol::report::{CommandReport, CommandStatus, ErrorChainItem};
use orchard_protocol::{AdamId, SerialNumber, Udid};
use serde::{Deserialize, Serialize};

/// The device's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// iPhone.
    #[serde(rename = "ios")]
    Ios,
    /// iPad.
    #[serde(rename = "ipados")]
    IpadOs,
    /// Mac.
    #[serde(rename = "macos")]
    MacOs,
}

/// Who owns the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Organisation-owned.
    Corporate,
    /// The user's own (BYOD).
    Personal,
}

/// What a device is, as configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// UDID.
    pub udid: Udid,
    /// Serial number.
    pub serial_number: SerialNumber,
    /// Platform.
    pub platform: Platform,
    /// OS version, e.g. `17.5`.
    pub os_version: String,
    /// OS build, e.g. `21F79`.
    pub build_version: String,
    /// Product name, e.g. `iPhone15,2`.
    pub product_name: String,
    /// Device name.
    pub device_name: String,
    /// Ownership.
    pub ownership: Ownership,
    /// Supervised.
    pub supervised: bool,
    /// Hash of the signed-in App Store account, if any.
    pub store_account_hash: Option<String>,
    /// Key type of the identity the device enrolls with.
    #[serde(default)]
    pub identity_key: KeyAlgorithm,
}

impl DeviceFacts {
    /// A supervised, corporate iPhone with the given identifiers.
    pub fn supervised_iphone(udid: &str, serial: &str) -> Self {
        Self {
            udid: udid.into(),
            serial_number: serial.into(),
            platform: Platform::Ios,
            os_version: "17.5".into(),
            build_version: "21F79".into(),
            product_name: "iPhone15,2".into(),
            device_name: format!("iPhone {serial}"),
            ownership: Ownership::Corporate,
            supervised: true,
            store_account_hash: None,
            identity_key: KeyAlgorithm::P256,
        }
    }

    fn model_name(&self) -> &'static str {
        match self.platform {
            Platform::Ios => "iPhone",
            Platform::IpadOs => "iPad",
            Platform::MacOs => "Mac",
        }
    }
}

/// What the App Store says about an app (the device looks it up before installing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreApp {
    /// App Store id.
    pub adam_id: AdamId,
    /// Bundle identifier.
    pub bundle_id: String,
    /// Name.
    pub name: String,
    /// Current version.
    pub version: String,
}

/// One app on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Bundle identifier.
    pub bundle_id: String,
    /// App Store id.
    pub adam_id: Option<AdamId>,
    /// Name.
    pub name: String,
    /// Installed (or installing) version.
    pub version: String,
    /// Apple's status of the app.
    pub status: ManagedAppStatus,
    /// Management flags from the install command.
    pub management_flags: i64,
    /// Installed with a device-based VPP license.
    pub device_based_vpp: bool,
    /// When the current step (prompt or install) ends, in milliseconds on the device's clock.
    #[serde(skip)]
    step_ends: Option<Instant>,
}

/// How long simulated steps take.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Download and install.
    pub install: Duration,
    /// Until the user answers an install prompt.
    pub prompt_answer: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            install: Duration::from_secs(2),
            prompt_answer: Duration::from_secs(1),
        }
    }
}

/// A simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its facts.
    pub facts: DeviceFacts,
    apps: BTreeMap<String, App>,
    handled: BTreeMap<String, u64>,
    timings: Timings,
}

fn error_report(
    udid: &Udid,
    uuid: &orchard_protocol::CommandUuid,
    code: i64,
    text: &str,
) -> CommandReport {
    let mut report = CommandReport::new(udid.clone(), CommandStatus::Error, Some(uuid.clone()));
    report.error_chain.push(ErrorChainItem {
        error_code: code,
        error_domain: "MCMDMErrorDomain".into(),
        localized_description: text.into(),
        us_english_description: Some(text.into()),
    });
    report
}

impl Device {
    /// A device with no apps.
    pub fn new(facts: DeviceFacts, timings: Timings) -> Self {
        Self::restore(facts, Vec::new(), BTreeMap::new(), timings)
    }

    /// A device as it was saved: its apps and how many commands of each type it ran.
    pub fn restore(
        facts: DeviceFacts,
        apps: Vec<App>,
        handled: BTreeMap<String, u64>,
        timings: Timings,
    ) -> Self {
        let apps = apps.into_iter().map(|a| (a.bundle_id.clone(), a)).collect();
        Self {
            facts,
            apps,
            handled,
            timings,
        }
    }

    /// How many commands of each `RequestType` the device has run.
    pub fn handled(&self) -> &BTreeMap<String, u64> {
        &self.handled
    }

    /// The apps on the device, by bundle id.
    pub fn apps(&self) -> &BTreeMap<String, App> {
        &self.apps
    }

    /// The app store item an envelope needs looked up before it can be handled.
    pub fn store_lookup_needed(envelope: &CommandEnvelope) -> Option<AdamId> {
        match &envelope.command {
            Command::InstallApplication(c) => c.itunes_store_id,
            _ => None,
        }
    }

    /// Advances installs and prompts to `now`.
    pub fn tick(&mut self, now: Instant) {
        for app in self.apps.values_mut() {
            // A step interrupted by a restart has no deadline left: it ends now.
            let ends = match app.step_ends {
                Some(ends) => ends,
                None if app.status.is_in_progress() => now,
                None => continue,
            };
            if now < ends {
                continue;
            }
            match app.status {
                // The persona accepts install prompts.
                ManagedAppStatus::Prompting => {
                    app.status = ManagedAppStatus::Installing;
                    app.step_ends = Some(ends + self.timings.install);
                }
                ManagedAppStatus::Installing | ManagedAppStatus::Updating => {
                    app.status = ManagedAppStatus::Managed;
                    app.step_ends = None;
                }
                _ => app.step_ends = None,
            }
        }
    }

    /// Handles one command; `store` is the App Store's answer for installs.
    pub fn handle(
        &mut self,
        envelope: &CommandEnvelope,
        store: Option<&StoreApp>,
        now: Instant,
    ) -> CommandReport {
        self.tick(now);
        *self
            .handled
            .entry(envelope.command.request_type().to_owned())
            .or_default() += 1;
        let udid = self.facts.udid.clone();
        let uuid = envelope.command_uuid.clone();
        let ack = || {
            CommandReport::new(
                udid.clone(),
                CommandStatus::Acknowledged,
                Some(uuid.clone()),
            )
        };
        let answered = match &envelope.command {
            Command::DeviceInformation(c) => ack().with_response(&self.device_information(c)),
            Command::InstallApplication(c) => return self.install(c, store, &uuid, now),
            Command::ManagedApplicationList(c) => ack().with_response(&self.managed_list(c)),
            Command::InstalledApplicationList(c) => ack().with_response(&self.installed_list(c)),
            Command::RemoveApplication(c) => {
                let removable = self
                    .apps
                    .get(&c.identifier)
                    .is_some_and(|a| a.status != ManagedAppStatus::Unknown);
                if !removable {
                    return error_report(&udid, &uuid, 12029, "The app is not managed");
                }
                self.apps.remove(&c.identifier);
                Ok(ack())
            }
            Command::Unknown { request_type } => {
                return error_report(
                    &udid,
                    &uuid,
                    12021,
                    &format!("Unknown command {request_type}"),
                );
            }
        };
        answered.unwrap_or_else(|_| error_report(&udid, &uuid, 12000, "Internal error"))
    }

    fn install(
        &mut self,
        command: &InstallApplication,
        store: Option<&StoreApp>,
        uuid: &orchard_protocol::CommandUuid,
        now: Instant,
    ) -> CommandReport {
        let udid = self.facts.udid.clone();
        let Some(store) = store else {
            let mut report = error_report(
                &udid,
                uuid,
                12001,
                "Could not verify the app ID with the App Store",
            );
            report = report
                .with_response(&InstallApplicationResponse {
                    identifier: None,
                    state: None,
                    rejection_reason: Some(RejectionReason::CouldNotVerifyAppID),
                })
                .unwrap_or_else(|_| {
                    error_report(&udid, uuid, 12001, "Could not verify the app ID")
                });
            return report;
        };
        let prompts = !self.facts.supervised;
        let (status, step) = match self.apps.get(&store.bundle_id) {
            Some(existing)
                if existing.status == ManagedAppStatus::Managed
                    && existing.version == store.version =>
            {
                (ManagedAppStatus::Managed, None)
            }
            Some(existing) if existing.status.is_in_progress() => {
                (existing.status, existing.step_ends)
            }
            Some(_) => (ManagedAppStatus::Updating, Some(now + self.timings.install)),
            None if prompts => (
                ManagedAppStatus::Prompting,
                Some(now + self.timings.prompt_answer),
            ),
            None => (
                ManagedAppStatus::Installing,
                Some(now + self.timings.install),
            ),
        };
        self.apps.insert(
            store.bundle_id.clone(),
            App {
                bundle_id: store.bundle_id.clone(),
                adam_id: Some(store.adam_id),
                name: store.name.clone(),
                version: store.version.clone(),
                status,
                management_flags: command.management_flags.unwrap_or(0),
                device_based_vpp: command.is_vpp() && self.facts.store_account_hash.is_none(),
                step_ends: step,
            },
        );
        let response = InstallApplicationResponse {
            identifier: Some(store.bundle_id.clone()),
            state: Some(status),
            rejection_reason: None,
        };
        CommandReport::new(
            udid.clone(),
            CommandStatus::Acknowledged,
            Some(uuid.clone()),
        )
        .with_response(&response)
        .unwrap_or_else(|_| error_report(&udid, uuid, 12000, "Internal error"))
    }

    fn managed_list(&mut self, command: &ManagedApplicationList) -> ManagedApplicationListResponse {
        let wanted = |id: &str| {
            command
                .identifiers
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == id))
        };
        let mut response = ManagedApplicationListResponse::default();
        for app in self.apps.values().filter(|a| wanted(&a.bundle_id)) {
            response.managed_application_list.insert(
                app.bundle_id.clone(),
                ManagedApplication {
                    status: app.status,
                    management_flags: app.management_flags,
                    has_configuration: Some(false),
                    has_feedback: Some(false),
                    is_validated: Some(true),
                    external_version_identifier: None,
                },
            );
        }
        // Transient statuses are reported once, then the entry is gone.
        self.apps.retain(|_, a| {
            !matches!(
                a.status,
                ManagedAppStatus::Failed | ManagedAppStatus::UserRejected
            ) || !wanted(&a.bundle_id)
        });
        response
    }

    fn installed_list(
        &self,
        command: &InstalledApplicationList,
    ) -> InstalledApplicationListResponse {
        let wanted = |id: &str| {
            command
                .identifiers
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == id))
        };
        let installed = self.apps.values().filter(|a| {
            wanted(&a.bundle_id)
                && matches!(
                    a.status,
                    ManagedAppStatus::Managed
                        | ManagedAppStatus::Installing
                        | ManagedAppStatus::Updating
                )
        });
        InstalledApplicationListResponse {
            installed_application_list: installed
                .map(|a| InstalledApplication {
                    identifier: Some(a.bundle_id.clone()),
                    name: Some(a.name.clone()),
                    version: Some(a.version.clone()),
                    short_version: Some(a.version.clone()),
                    installing: Some(a.status != ManagedAppStatus::Managed),
                    device_based_vpp: Some(a.device_based_vpp),
                    app_store_vendable: Some(!a.device_based_vpp),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn device_information(&self, command: &DeviceInformation) -> DeviceInformationResponse {
        let f = &self.facts;
        let asked = |q: &str| command.queries.iter().any(|x| x == q);
        let pick = |q: &str, v: String| asked(q).then_some(v);
        DeviceInformationResponse {
            query_responses: QueryResponses {
                udid: asked("UDID").then(|| f.udid.clone()),
                device_name: pick("DeviceName", f.device_name.clone()),
                os_version: pick("OSVersion", f.os_version.clone()),
                build_version: pick("BuildVersion", f.build_version.clone()),
                model_name: pick("ModelName", f.model_name().to_owned()),
                model: pick("Model", f.product_name.clone()),
                product_name: pick("ProductName", f.product_name.clone()),
                serial_number: asked("SerialNumber").then(|| f.serial_number.clone()),
                is_supervised: asked("IsSupervised").then_some(f.supervised),
                itunes_store_account_is_active: asked("iTunesStoreAccountIsActive")
                    .then_some(f.store_account_hash.is_some()),
                itunes_store_account_hash: if asked("iTunesStoreAccountHash") {
                    f.store_account_hash.clone()
                } else {
                    None
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_app() -> StoreApp {
        StoreApp {
            adam_id: AdamId(361309726),
            bundle_id: "com.apple.Pages".into(),
            name: "Pages".into(),
            version: "14.1".into(),
        }
    }

    fn envelope(command: Command) -> CommandEnvelope {
        CommandEnvelope {
            command_uuid: "c".into(),
            command,
        }
    }

    fn install_cmd() -> CommandEnvelope {
        envelope(Command::InstallApplication(InstallApplication::vpp(
            AdamId(361309726),
            1,
        )))
    }

    fn managed_status(device: &mut Device, now: Instant) -> Option<ManagedAppStatus> {
        let report = device.handle(
            &envelope(Command::ManagedApplicationList(Default::default())),
            None,
            now,
        );
        let list: ManagedApplicationListResponse = report.response().unwrap();
        list.managed_application_list
            .get("com.apple.Pages")
            .map(|a| a.status)
    }

    #[test]
    fn supervised_device_installs_silently_then_reports_managed() {
        let t0 = Instant::now();
        let mut device = Device::new(DeviceFacts::supervised_iphone("U", "S"), Timings::default());
        let report = device.handle(&install_cmd(), Some(&store_app()), t0);
        assert_eq!(report.status, CommandStatus::Acknowledged);
        let ack: InstallApplicationResponse = report.response().unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::Installing));
        assert_eq!(ack.identifier.as_deref(), Some("com.apple.Pages"));
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(500)),
            Some(ManagedAppStatus::Installing)
        );
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_secs(3)),
            Some(ManagedAppStatus::Managed)
        );

        let report = device.handle(
            &envelope(Command::InstalledApplicationList(Default::default())),
            None,
            t0 + Duration::from_secs(3),
        );
        let list: InstalledApplicationListResponse = report.response().unwrap();
        assert_eq!(list.installed_application_list.len(), 1);
        let app = &list.installed_application_list[0];
        assert_eq!(app.short_version.as_deref(), Some("14.1"));
        assert_eq!(app.installing, Some(false));
        assert_eq!(app.device_based_vpp, Some(true));
    }

    #[test]
    fn unsupervised_device_prompts_before_installing() {
        let t0 = Instant::now();
        let mut facts = DeviceFacts::supervised_iphone("U", "S");
        facts.supervised = false;
        let mut device = Device::new(facts, Timings::default());
        let ack: InstallApplicationResponse = device
            .handle(&install_cmd(), Some(&store_app()), t0)
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::Prompting));
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(1500)),
            Some(ManagedAppStatus::Installing)
        );
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_secs(4)),
            Some(ManagedAppStatus::Managed)
        );
    }

    #[test]
    fn unknown_app_is_refused_with_could_not_verify() {
        let mut device = Device::new(DeviceFacts::supervised_iphone("U", "S"), Timings::default());
        let report = device.handle(&install_cmd(), None, Instant::now());
        assert_eq!(report.status, CommandStatus::Error);
        let r: InstallApplicationResponse = report.response().unwrap();
        assert_eq!(
            r.rejection_reason,
            Some(RejectionReason::CouldNotVerifyAppID)
        );
        assert!(device.apps().is_empty());
    }

    #[test]
    fn device_information_answers_only_what_is_asked() {
        let mut device = Device::new(
            DeviceFacts::supervised_iphone("U", "SN1"),
            Timings::default(),
        );
        let cmd = envelope(Command::DeviceInformation(DeviceInformation {
            queries: vec![
                "SerialNumber".into(),
                "IsSupervised".into(),
                "iTunesStoreAccountIsActive".into(),
            ],
        }));
        let info: DeviceInformationResponse = device
            .handle(&cmd, None, Instant::now())
            .response()
            .unwrap();
        let q = info.query_responses;
        assert_eq!(q.serial_number.unwrap().as_str(), "SN1");
        assert_eq!(q.is_supervised, Some(true));
        assert_eq!(q.itunes_store_account_is_active, Some(false));
        assert!(q.udid.is_none() && q.os_version.is_none());
    }

    #[test]
    fn remove_application_removes_a_managed_app_and_refuses_unknown_ones() {
        let t0 = Instant::now();
        let mut device = Device::new(DeviceFacts::supervised_iphone("U", "S"), Timings::default());
        device.handle(&install_cmd(), Some(&store_app()), t0);
        let remove = |id: &str| {
            envelope(Command::RemoveApplication(
                orchard_protocol::command::RemoveApplication {
                    identifier: id.into(),
                },
            ))
        };
        assert_eq!(
            device.handle(&remove("com.apple.Pages"), None, t0).status,
            CommandStatus::Acknowledged
        );
        assert!(device.apps().is_empty());
        assert_eq!(
            device.handle(&remove("com.apple.Pages"), None, t0).status,
            CommandStatus::Error
        );
    }

    #[test]
    fn unknown_commands_are_errors() {
        let mut device = Device::new(DeviceFacts::supervised_iphone("U", "S"), Timings::default());
        let report = device.handle(
            &envelope(Command::Unknown {
                request_type: "EraseDevice".into(),
            }),
            None,
            Instant::now(),
        );
        assert_eq!(report.status, CommandStatus::Error);
        assert_eq!(report.error_chain[0].error_code, 12021);
    }
}
