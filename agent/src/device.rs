//! The sans-IO device model: facts the device is configured with, the apps on it, the
//! prompts its user sees, and how it answers each MDM command. Time is passed in;
//! nothing here does IO. What the device must do on the network by itself (join the
//! VPP program after accepting an invitation) comes out of [`Device::take_actions`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orchard_protocol::command::{
    ALLOW_UI_APP_INSTALLATION, BookState, BooleanRestriction, Command, CommandEnvelope,
    DeviceInformation, DeviceInformationResponse, GlobalRestrictions, InstallApplication,
    InstallApplicationResponse, InstallMedia, InstallMediaResponse, InstalledApplication,
    InstalledApplicationList, InstalledApplicationListResponse, InvitationResult, InviteToProgram,
    InviteToProgramResponse, ManagedAppStatus, ManagedApplication, ManagedApplicationList,
    ManagedApplicationListResponse, ManagedBook, ManagedMediaListResponse, PROGRAM_ID_VPP,
    QueryResponses, RejectionReason, Restrictions, RestrictionsResponse,
};
use orchard_protocol::prompt::{Prompt, PromptAnswer, PromptKind};
use orchard_protocol::report::{CommandReport, CommandStatus, ErrorChainItem};
use orchard_protocol::store_item::{self, DeviceKind, StorePlatform};
use orchard_protocol::{AdamId, CommandUuid, Udid};
use serde::{Deserialize, Serialize};

use crate::facts::{DeviceFacts, LicenseKind, Platform};
use crate::prompt::{Blocked, install_prompts, invitation_shown};

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
    /// The license this device can use, if any.
    pub license: Option<LicenseKind>,
    /// Where it runs, as the store says (empty: the store says nothing).
    pub platforms: Vec<StorePlatform>,
    /// The OS its current version needs, as the store says.
    pub minimum_os: Option<String>,
}

/// One managed book on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// Book Store id.
    pub adam_id: AdamId,
    /// Title.
    pub title: String,
    /// Version.
    pub version: String,
    /// State.
    pub state: BookState,
    /// When the download in progress ends.
    ready_at: Option<Instant>,
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
    /// The version an update prompt offers.
    #[serde(default)]
    pub offered_version: Option<String>,
    /// The App Store no longer finds a license for the app (revoked).
    #[serde(default)]
    pub license_revoked: bool,
    /// macOS: when a revoked app stops working and is removed.
    #[serde(skip)]
    grace_ends: Option<Instant>,
    /// When the current install step ends.
    #[serde(skip)]
    step_ends: Option<Instant>,
}

/// How long a macOS app whose license was revoked stays usable.
pub const REVOKED_MAC_APP_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long simulated steps take.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Download and install.
    pub install: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            install: Duration::from_secs(2),
        }
    }
}

/// What a prompt is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    /// The VPP invitation at this URL.
    Invitation(String),
    /// The app with this bundle id.
    App(String),
    /// The book with this Book Store id.
    Book(AdamId),
}

/// A prompt on the screen or answered.
#[derive(Debug, Clone)]
struct PromptRecord {
    id: String,
    kind: PromptKind,
    subject: Subject,
    adam_id: Option<AdamId>,
    shown_at: Instant,
    due: Option<Instant>,
    answer: Option<(PromptAnswer, Instant)>,
}

/// A prompt as tests and the agent see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptView {
    /// What was asked.
    pub kind: PromptKind,
    /// The app's bundle id, for app prompts.
    pub bundle_id: Option<String>,
    /// The answer, once given.
    pub answer: Option<PromptAnswer>,
}

/// Something the device does on its own on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    /// The user accepted the VPP invitation: open the invitation URL signed in with
    /// this account, which associates the user with it at Apple.
    JoinProgram {
        /// The invitation URL from `InviteToProgram`.
        invitation_url: String,
        /// The signed-in account's hash.
        account_hash: String,
    },
}

/// A simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its facts.
    pub facts: DeviceFacts,
    apps: BTreeMap<String, App>,
    books: BTreeMap<AdamId, Book>,
    /// Until when the device is locked (set at its first command).
    unlocked_at: Option<Instant>,
    /// It put a command off while locked and owes the server a check-in at unlock.
    locked_out: bool,
    /// Commands answered NotNow.
    put_off: u64,
    /// Notices shown to the user: (title, message).
    notices: Vec<(String, String)>,
    /// The store country of its App Store account.
    store_country: String,
    handled: BTreeMap<String, u64>,
    timings: Timings,
    prompts: Vec<PromptRecord>,
    unreported: Vec<usize>,
    actions: Vec<DeviceAction>,
    next_prompt: u64,
}

fn error_report(udid: &Udid, uuid: &CommandUuid, code: i64, text: &str) -> CommandReport {
    let mut report = CommandReport::new(udid.clone(), CommandStatus::Error, Some(uuid.clone()));
    report.error_chain.push(ErrorChainItem {
        error_code: code,
        error_domain: "MCMDMErrorDomain".into(),
        localized_description: text.into(),
        us_english_description: Some(text.into()),
    });
    report
}

/// An install refused outright, with Apple's rejection reason and a description.
fn rejected(
    udid: &Udid,
    uuid: &CommandUuid,
    code: i64,
    reason: RejectionReason,
    text: &str,
) -> CommandReport {
    error_report(udid, uuid, code, text)
        .with_response(&InstallApplicationResponse {
            identifier: None,
            state: None,
            rejection_reason: Some(reason),
        })
        .unwrap_or_else(|_| error_report(udid, uuid, code, text))
}

/// Statuses during which the app waits for its user.
fn prompt_kind_of(status: ManagedAppStatus) -> Option<PromptKind> {
    match status {
        ManagedAppStatus::Prompting => Some(PromptKind::AppInstall),
        ManagedAppStatus::PromptingForLogin | ManagedAppStatus::PromptingForUpdateLogin => {
            Some(PromptKind::AppleId)
        }
        ManagedAppStatus::PromptingForUpdate => Some(PromptKind::AppUpdate),
        _ => None,
    }
}

impl Device {
    /// A device with no apps.
    pub fn new(facts: DeviceFacts, timings: Timings) -> Self {
        Self::restore(facts, Vec::new(), BTreeMap::new(), timings)
    }

    /// A device as it was saved: its apps and how many commands of each type it ran.
    /// Prompts that were open are shown again at the next tick.
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
            books: BTreeMap::new(),
            unlocked_at: None,
            locked_out: false,
            put_off: 0,
            notices: Vec::new(),
            store_country: "US".into(),
            handled,
            timings,
            prompts: Vec::new(),
            unreported: Vec::new(),
            actions: Vec::new(),
            next_prompt: 0,
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

    /// The store country of the device's App Store (named when the store does not sell
    /// an app there).
    pub fn set_store_country(&mut self, country: &str) {
        country.clone_into(&mut self.store_country);
    }

    /// The notices the device showed its user, as (title, message), oldest first.
    pub fn notices(&self) -> &[(String, String)] {
        &self.notices
    }

    /// How many commands the device answered NotNow (it was locked).
    pub fn put_off(&self) -> u64 {
        self.put_off
    }

    /// The managed books on the device, by Book Store id.
    pub fn books(&self) -> &BTreeMap<AdamId, Book> {
        &self.books
    }

    /// Every prompt shown since the device started, oldest first.
    pub fn prompts(&self) -> Vec<PromptView> {
        self.prompts
            .iter()
            .map(|p| PromptView {
                kind: p.kind,
                bundle_id: match &p.subject {
                    Subject::App(b) => Some(b.clone()),
                    Subject::Invitation(_) | Subject::Book(_) => None,
                },
                answer: p.answer.map(|(a, _)| a),
            })
            .collect()
    }

    /// Prompts shown or answered since the last call, for the server's prompt report;
    /// `wall` turns the device clock into RFC 3339 wall-clock time.
    pub fn take_prompt_report(&mut self, wall: impl Fn(Instant) -> String) -> Vec<Prompt> {
        let mut out = Vec::new();
        for i in std::mem::take(&mut self.unreported) {
            let Some(p) = self.prompts.get(i) else {
                continue;
            };
            out.push(Prompt {
                prompt_id: p.id.clone(),
                kind: p.kind,
                identifier: match &p.subject {
                    Subject::App(b) => Some(b.clone()),
                    Subject::Invitation(_) | Subject::Book(_) => None,
                },
                itunes_store_id: p.adam_id,
                shown_at: wall(p.shown_at),
                answer: p.answer.map(|(a, _)| a),
                answered_at: p.answer.map(|(_, at)| wall(at)),
            });
        }
        out
    }

    /// Puts back a report that could not be delivered, so it goes with the next one.
    pub fn unreport(&mut self, prompts: &[Prompt]) {
        for p in prompts {
            if let Some(i) = self.prompts.iter().position(|r| r.id == p.prompt_id)
                && !self.unreported.contains(&i)
            {
                self.unreported.push(i);
            }
        }
    }

    /// What the device must do on the network by itself, since the last call.
    pub fn take_actions(&mut self) -> Vec<DeviceAction> {
        std::mem::take(&mut self.actions)
    }

    /// The user deletes an app by hand: it stays managed but is no longer installed.
    /// Returns whether there was such an app.
    pub fn user_deletes_app(&mut self, bundle_id: &str) -> bool {
        match self.apps.get_mut(bundle_id) {
            Some(app) if app.status == ManagedAppStatus::Managed => {
                app.status = ManagedAppStatus::ManagedButUninstalled;
                true
            }
            _ => false,
        }
    }

    /// The App Store says the license of an installed VPP app was revoked. iOS keeps
    /// the app (it only stops getting updates); macOS keeps it usable for a
    /// [`REVOKED_MAC_APP_GRACE`] and then removes it.
    pub fn license_revoked(&mut self, bundle_id: &str, now: Instant) {
        let mac = self.facts.platform == Platform::MacOs;
        if let Some(app) = self.apps.get_mut(bundle_id)
            && !app.license_revoked
        {
            app.license_revoked = true;
            if mac {
                app.grace_ends = Some(now + REVOKED_MAC_APP_GRACE);
            }
        }
    }

    /// When a revoked macOS app goes, if it is on its grace period.
    pub fn grace_ends(&self, bundle_id: &str) -> Option<Instant> {
        self.apps.get(bundle_id).and_then(|a| a.grace_ends)
    }

    /// Installed VPP apps whose license the device should check with the App Store.
    pub fn licensed_apps(&self) -> Vec<(String, AdamId)> {
        self.apps
            .values()
            .filter(|a| a.status == ManagedAppStatus::Managed && !a.license_revoked)
            .filter_map(|a| a.adam_id.map(|id| (a.bundle_id.clone(), id)))
            .collect()
    }

    /// The app store item an envelope needs looked up before it can be handled.
    pub fn store_lookup_needed(envelope: &CommandEnvelope) -> Option<AdamId> {
        match &envelope.command {
            Command::InstallApplication(c) => c.itunes_store_id,
            Command::InstallMedia(c) => c.itunes_store_id,
            _ => None,
        }
    }

    fn show(&mut self, kind: PromptKind, subject: Subject, adam_id: Option<AdamId>, now: Instant) {
        let persona = &self.facts.persona;
        let due = persona
            .response(kind)
            .answer()
            .map(|_| now + persona.delay());
        self.next_prompt += 1;
        self.prompts.push(PromptRecord {
            id: format!("{}-{}", self.facts.udid, self.next_prompt),
            kind,
            subject,
            adam_id,
            shown_at: now,
            due,
            answer: None,
        });
        self.unreported.push(self.prompts.len() - 1);
    }

    fn is_open(&self, kind: PromptKind, subject: &Subject) -> bool {
        self.prompts
            .iter()
            .any(|p| p.answer.is_none() && p.kind == kind && &p.subject == subject)
    }

    /// When something happens next on its own: a prompt answered or an install done.
    pub fn next_deadline(&self) -> Option<Instant> {
        let prompts = self
            .prompts
            .iter()
            .filter(|p| p.answer.is_none())
            .filter_map(|p| p.due);
        let steps = self.apps.values().filter_map(|a| a.step_ends);
        let books = self.books.values().filter_map(|b| b.ready_at);
        // Unlocking makes the device check in again for what it put off.
        let unlock = self.unlocked_at.filter(|_| self.locked_out);
        prompts.chain(steps).chain(books).chain(unlock).min()
    }

    /// Whether the device unlocks by `now` owing the server a check-in for what it put
    /// off while locked.
    pub fn unlock_due(&self, now: Instant) -> bool {
        self.locked_out && self.unlocked_at.is_some_and(|u| u <= now)
    }

    /// Advances installs and prompts to `now`: the persona answers the prompts that are due.
    pub fn tick(&mut self, now: Instant) {
        if self.unlocked_at.is_some_and(|u| u <= now) {
            self.locked_out = false;
        }
        // Prompts lost to a restart are shown again.
        let reopen: Vec<(PromptKind, String, Option<AdamId>)> = self
            .apps
            .values()
            .filter_map(|a| prompt_kind_of(a.status).map(|k| (k, a.bundle_id.clone(), a.adam_id)))
            .filter(|(k, b, _)| !self.is_open(*k, &Subject::App(b.clone())))
            .collect();
        for (kind, bundle_id, adam_id) in reopen {
            self.show(kind, Subject::App(bundle_id), adam_id, now);
        }
        // Answering a prompt may show the next one, which may be due at once.
        while let Some(i) = self
            .prompts
            .iter()
            .position(|p| p.answer.is_none() && p.due.is_some_and(|d| d <= now))
        {
            let due = self.prompts[i].due.unwrap_or(now);
            let kind = self.prompts[i].kind;
            let Some(answer) = self.facts.persona.response(kind).answer() else {
                self.prompts[i].due = None;
                continue;
            };
            self.prompts[i].answer = Some((answer, due));
            self.unreported.push(i);
            let subject = self.prompts[i].subject.clone();
            let adam_id = self.prompts[i].adam_id;
            self.answered(kind, subject, adam_id, answer, due);
        }
        // Revoked macOS apps stop working after their grace period (a grace lost to a
        // restart starts again: the device cannot know how much had passed).
        let mac = self.facts.platform == Platform::MacOs;
        for app in self.apps.values_mut() {
            if mac && app.license_revoked && app.grace_ends.is_none() {
                app.grace_ends = Some(now + REVOKED_MAC_APP_GRACE);
            }
        }
        self.apps
            .retain(|_, a| a.grace_ends.is_none_or(|ends| now < ends));
        for app in self.apps.values_mut() {
            let ends = match app.step_ends {
                Some(ends) => ends,
                // A step interrupted by a restart has no deadline left: it ends now.
                None if matches!(
                    app.status,
                    ManagedAppStatus::Installing | ManagedAppStatus::Updating
                ) =>
                {
                    now
                }
                None => continue,
            };
            if now < ends {
                continue;
            }
            if matches!(
                app.status,
                ManagedAppStatus::Installing | ManagedAppStatus::Updating
            ) {
                app.status = ManagedAppStatus::Managed;
            }
            app.step_ends = None;
        }
        for book in self.books.values_mut() {
            if book.ready_at.is_some_and(|r| r <= now) {
                book.state = BookState::Installed;
                book.ready_at = None;
            }
        }
    }

    fn start_book(&mut self, adam_id: AdamId, at: Instant) {
        let install = self.timings.install;
        if let Some(book) = self.books.get_mut(&adam_id) {
            book.state = BookState::Installing;
            book.ready_at = Some(at + install);
        }
    }

    fn sign_in(&mut self) {
        self.facts.apple_id = Some(self.facts.persona.apple_id_to_enter.clone());
    }

    fn start_install(&mut self, bundle_id: &str, at: Instant) {
        let install = self.timings.install;
        if let Some(app) = self.apps.get_mut(bundle_id) {
            app.status = if matches!(
                app.status,
                ManagedAppStatus::PromptingForUpdate | ManagedAppStatus::PromptingForUpdateLogin
            ) {
                if let Some(v) = app.offered_version.take() {
                    app.version = v;
                }
                ManagedAppStatus::Updating
            } else {
                ManagedAppStatus::Installing
            };
            app.step_ends = Some(at + install);
        }
    }

    fn set_status(&mut self, bundle_id: &str, status: ManagedAppStatus) {
        if let Some(app) = self.apps.get_mut(bundle_id) {
            app.status = status;
            app.step_ends = None;
            if status == ManagedAppStatus::UpdateRejected {
                app.offered_version = None;
            }
        }
    }

    fn answered(
        &mut self,
        kind: PromptKind,
        subject: Subject,
        adam_id: Option<AdamId>,
        answer: PromptAnswer,
        at: Instant,
    ) {
        let accepted = answer == PromptAnswer::Accepted;
        match (kind, subject) {
            (PromptKind::VppInvitation, Subject::Invitation(url)) if accepted => {
                match self.facts.account_hash() {
                    Some(account_hash) => self.actions.push(DeviceAction::JoinProgram {
                        invitation_url: url,
                        account_hash,
                    }),
                    None => self.show(PromptKind::AppleId, Subject::Invitation(url), None, at),
                }
            }
            (PromptKind::AppleId, Subject::Invitation(url)) if accepted => {
                self.sign_in();
                if let Some(account_hash) = self.facts.account_hash() {
                    self.actions.push(DeviceAction::JoinProgram {
                        invitation_url: url,
                        account_hash,
                    });
                }
            }
            (PromptKind::AppInstall, Subject::App(bundle)) if accepted => {
                let needs_account = self.apps.get(&bundle).is_some_and(|a| !a.device_based_vpp)
                    && self.facts.apple_id.is_none();
                if needs_account {
                    self.set_status(&bundle, ManagedAppStatus::PromptingForLogin);
                    self.show(PromptKind::AppleId, Subject::App(bundle), adam_id, at);
                } else {
                    self.start_install(&bundle, at);
                }
            }
            (PromptKind::AppInstall, Subject::App(bundle)) => {
                self.set_status(&bundle, ManagedAppStatus::UserRejected)
            }
            (PromptKind::AppUpdate, Subject::App(bundle)) if accepted => {
                self.start_install(&bundle, at)
            }
            (PromptKind::AppUpdate, Subject::App(bundle)) => {
                self.set_status(&bundle, ManagedAppStatus::UpdateRejected)
            }
            (PromptKind::AppleId, Subject::App(bundle)) if accepted => {
                self.sign_in();
                self.start_install(&bundle, at);
            }
            // Without an account a user-licensed app cannot be installed.
            (PromptKind::AppleId, Subject::App(bundle)) => {
                self.set_status(&bundle, ManagedAppStatus::Failed)
            }
            (PromptKind::AppleId, Subject::Book(adam_id)) if accepted => {
                self.sign_in();
                self.start_book(adam_id, at);
            }
            (PromptKind::AppleId, Subject::Book(adam_id)) => {
                if let Some(book) = self.books.get_mut(&adam_id) {
                    book.state = BookState::Failed;
                }
            }
            // A declined invitation, or an invitation's sign-in not given: nothing joins.
            _ => {}
        }
    }

    /// Puts off an install the App Store could not be asked about (unreachable or
    /// failing, not an answer that it does not sell the item): NotNow, so the server
    /// offers it again at the next check-in.
    pub fn store_unreachable(&mut self, envelope: &CommandEnvelope) -> CommandReport {
        self.put_off += 1;
        CommandReport::new(
            self.facts.udid.clone(),
            CommandStatus::NotNow,
            Some(envelope.command_uuid.clone()),
        )
    }

    /// Handles one command; `store` is the App Store's answer for installs.
    pub fn handle(
        &mut self,
        envelope: &CommandEnvelope,
        store: Option<&StoreApp>,
        now: Instant,
    ) -> CommandReport {
        self.tick(now);
        let unlocked_at = *self
            .unlocked_at
            .get_or_insert_with(|| now + Duration::from_millis(self.facts.persona.locked_for_ms));
        let needs_user = matches!(
            envelope.command,
            Command::InstallApplication(_) | Command::InstallMedia(_) | Command::InviteToProgram(_)
        );
        if needs_user && now < unlocked_at {
            // Locked: the command is put off; the server offers it again when the
            // device checks in after unlocking.
            self.locked_out = true;
            self.put_off += 1;
            return CommandReport::new(
                self.facts.udid.clone(),
                CommandStatus::NotNow,
                Some(envelope.command_uuid.clone()),
            );
        }
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
            Command::ManagedApplicationList(c) => ack().with_response(&self.managed_list(c, now)),
            Command::InstalledApplicationList(c) => ack().with_response(&self.installed_list(c)),
            Command::InviteToProgram(c) => ack().with_response(&self.invite(c, now)),
            Command::Restrictions(c) => ack().with_response(&self.restrictions(c)),
            Command::InstallMedia(c) => return self.install_book(c, store, &uuid, now),
            Command::ManagedMediaList(_) => ack().with_response(&self.managed_media()),
            Command::Notice(n) => {
                self.notices.push((n.title.clone(), n.message.clone()));
                Ok(ack())
            }
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

    fn invite(&mut self, command: &InviteToProgram, now: Instant) -> InviteToProgramResponse {
        let url_ok = command.invitation_url.starts_with("https://")
            || command.invitation_url.starts_with("http://");
        let invitation_result = if command.program_id != PROGRAM_ID_VPP {
            InvitationResult::InvalidProgramID
        } else if !url_ok {
            InvitationResult::InvalidInvitationURL
        } else {
            let subject = Subject::Invitation(command.invitation_url.clone());
            if invitation_shown(&self.facts) && !self.is_open(PromptKind::VppInvitation, &subject) {
                self.show(PromptKind::VppInvitation, subject, None, now);
            }
            InvitationResult::Acknowledged
        };
        InviteToProgramResponse { invitation_result }
    }

    fn restrictions(&self, command: &Restrictions) -> RestrictionsResponse {
        let global = GlobalRestrictions {
            restricted_bool: BTreeMap::from([(
                ALLOW_UI_APP_INSTALLATION.to_owned(),
                BooleanRestriction {
                    value: self.facts.app_store_allowed,
                },
            )]),
        };
        let per_profile = (command.profile_restrictions == Some(true)
            && !self.facts.app_store_allowed)
            .then(|| BTreeMap::from([("com.orchard.restrictions".to_owned(), global.clone())]));
        RestrictionsResponse {
            global_restrictions: global,
            profile_restrictions: command
                .profile_restrictions
                .unwrap_or(false)
                .then(|| per_profile.unwrap_or_default()),
        }
    }

    fn install(
        &mut self,
        command: &InstallApplication,
        store: Option<&StoreApp>,
        uuid: &CommandUuid,
        now: Instant,
    ) -> CommandReport {
        let udid = self.facts.udid.clone();
        let Some(store) = store else {
            // The App Store of the device's country does not sell it: a real device
            // says the item is not available there.
            let text = format!(
                "The app is not available in the App Store of the device's country or region ({})",
                self.store_country
            );
            return rejected(
                &udid,
                uuid,
                12001,
                RejectionReason::CouldNotVerifyAppID,
                &text,
            );
        };
        if let Some(device) = DeviceKind::of_product(&self.facts.product_name)
            && let Err(why) = store_item::check(
                &store.platforms,
                store.minimum_os.as_deref(),
                device,
                Some(&self.facts.os_version),
            )
        {
            // As a real device: iOS refuses with NotSupported, macOS only says Other.
            let reason = if self.facts.platform == Platform::MacOs {
                RejectionReason::Other
            } else {
                RejectionReason::NotSupported
            };
            return rejected(
                &udid,
                uuid,
                12030,
                reason,
                &format!("The app cannot be installed: {why}"),
            );
        }
        let existing = self.apps.get(&store.bundle_id).cloned();
        let (status, prompt) = match (&existing, store.license) {
            (Some(e), _) if e.status == ManagedAppStatus::Managed && e.version == store.version => {
                (ManagedAppStatus::Managed, None)
            }
            (Some(e), _) if e.status.is_in_progress() || prompt_kind_of(e.status).is_some() => {
                (e.status, None)
            }
            // Not a VPP install and no license: a paid app waits for a redemption code.
            (_, None) if !command.is_vpp() => (ManagedAppStatus::NeedsRedemption, None),
            (_, None) => (ManagedAppStatus::Failed, None),
            // An update of an installed app.
            (Some(e), Some(license))
                if matches!(
                    e.status,
                    ManagedAppStatus::Managed | ManagedAppStatus::UpdateRejected
                ) =>
            {
                if license == LicenseKind::User && self.facts.apple_id.is_none() {
                    // A user-licensed update needs the account the license belongs to.
                    (
                        ManagedAppStatus::PromptingForUpdateLogin,
                        Some(PromptKind::AppleId),
                    )
                } else if self.facts.supervised {
                    (ManagedAppStatus::Updating, None)
                } else {
                    (
                        ManagedAppStatus::PromptingForUpdate,
                        Some(PromptKind::AppUpdate),
                    )
                }
            }
            (_, Some(license)) => match install_prompts(&self.facts, license) {
                Err(Blocked::AppStoreDisabled) => {
                    return rejected(
                        &udid,
                        uuid,
                        12024,
                        RejectionReason::AppStoreDisabled,
                        "The App Store is disabled by a restrictions profile; a user-licensed app cannot be installed",
                    );
                }
                Err(Blocked::KioskCannotPrompt) => {
                    return rejected(
                        &udid,
                        uuid,
                        12025,
                        RejectionReason::Other,
                        "The device is in single-app mode and cannot show the prompts this install needs",
                    );
                }
                Ok(p) if p.app_install => {
                    (ManagedAppStatus::Prompting, Some(PromptKind::AppInstall))
                }
                Ok(p) if p.apple_id => (
                    ManagedAppStatus::PromptingForLogin,
                    Some(PromptKind::AppleId),
                ),
                Ok(_) => (ManagedAppStatus::Installing, None),
            },
        };
        let offering = matches!(
            status,
            ManagedAppStatus::PromptingForUpdate | ManagedAppStatus::PromptingForUpdateLogin
        );
        let step_ends = match status {
            ManagedAppStatus::Installing | ManagedAppStatus::Updating => {
                Some(now + self.timings.install)
            }
            _ => existing.as_ref().and_then(|e| e.step_ends),
        };
        let keep_version = offering
            || (status != ManagedAppStatus::Updating
                && existing
                    .as_ref()
                    .is_some_and(|e| prompt_kind_of(e.status).is_some()));
        let version = match (&existing, keep_version) {
            (Some(e), true) => e.version.clone(),
            _ => store.version.clone(),
        };
        self.apps.insert(
            store.bundle_id.clone(),
            App {
                bundle_id: store.bundle_id.clone(),
                adam_id: Some(store.adam_id),
                name: store.name.clone(),
                version,
                status,
                management_flags: command.management_flags.unwrap_or(0),
                device_based_vpp: store.license == Some(LicenseKind::Device),
                offered_version: offering.then(|| store.version.clone()),
                license_revoked: false,
                grace_ends: None,
                step_ends,
            },
        );
        if let Some(kind) = prompt {
            self.show(
                kind,
                Subject::App(store.bundle_id.clone()),
                Some(store.adam_id),
                now,
            );
        }
        let state = self
            .apps
            .get(&store.bundle_id)
            .map_or(status, |a| self.reported_status(a, now));
        let response = InstallApplicationResponse {
            identifier: Some(store.bundle_id.clone()),
            state: Some(state),
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

    /// `InstallMedia` of a Book Store book: a VPP book is the user's, so the device
    /// needs the user's account (it asks for it when nobody is signed in).
    fn install_book(
        &mut self,
        command: &InstallMedia,
        store: Option<&StoreApp>,
        uuid: &CommandUuid,
        now: Instant,
    ) -> CommandReport {
        let udid = self.facts.udid.clone();
        let (Some(adam_id), Some(store)) = (command.itunes_store_id, store) else {
            let text = format!(
                "The book is not available in the Book Store of the device's country or region ({})",
                self.store_country
            );
            return error_report(&udid, uuid, 12001, &text);
        };
        let state = if self
            .books
            .get(&adam_id)
            .is_some_and(|b| b.state == BookState::Installed && b.version == store.version)
        {
            BookState::Installed
        } else if self.facts.apple_id.is_none() {
            BookState::PromptingForLogin
        } else if store.license.is_none() {
            BookState::Failed
        } else {
            BookState::Installing
        };
        self.books.insert(
            adam_id,
            Book {
                adam_id,
                title: store.name.clone(),
                version: store.version.clone(),
                state,
                ready_at: (state == BookState::Installing).then(|| now + self.timings.install),
            },
        );
        if state == BookState::PromptingForLogin {
            self.show(
                PromptKind::AppleId,
                Subject::Book(adam_id),
                Some(adam_id),
                now,
            );
        }
        let response = InstallMediaResponse {
            itunes_store_id: Some(adam_id),
            state: Some(state),
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

    fn managed_media(&mut self) -> ManagedMediaListResponse {
        let books = self
            .books
            .values()
            .map(|b| ManagedBook {
                itunes_store_id: Some(b.adam_id),
                state: Some(b.state),
                version: Some(b.version.clone()),
                title: Some(b.title.clone()),
                kind: Some("epub".into()),
            })
            .collect();
        // A failed book is reported once, then forgotten.
        self.books.retain(|_, b| b.state != BookState::Failed);
        ManagedMediaListResponse { books }
    }

    /// What the device reports for an app: a new install walks through Queued,
    /// ValidatingPurchase and Redeeming (the store checks and redeems the VPP license)
    /// before Installing, as a real device does; everything else as it is.
    fn reported_status(&self, app: &App, now: Instant) -> ManagedAppStatus {
        if app.status != ManagedAppStatus::Installing {
            return app.status;
        }
        let Some(ends) = app.step_ends else {
            return app.status;
        };
        let total = self.timings.install.as_secs_f64().max(f64::EPSILON);
        let left = ends.saturating_duration_since(now).as_secs_f64();
        match 1.0 - left / total {
            done if done < 0.15 => ManagedAppStatus::Queued,
            done if done < 0.3 => ManagedAppStatus::ValidatingPurchase,
            done if done < 0.45 => ManagedAppStatus::Redeeming,
            _ => ManagedAppStatus::Installing,
        }
    }

    fn managed_list(
        &mut self,
        command: &ManagedApplicationList,
        now: Instant,
    ) -> ManagedApplicationListResponse {
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
                    status: self.reported_status(app, now),
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

    /// The apps on the device. Every app this model holds was installed by its server
    /// (managed), so `ManagedAppsOnly` lists the same apps.
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
                        | ManagedAppStatus::PromptingForUpdate
                        | ManagedAppStatus::UpdateRejected
                )
        });
        InstalledApplicationListResponse {
            installed_application_list: installed
                .map(|a| InstalledApplication {
                    identifier: Some(a.bundle_id.clone()),
                    name: Some(a.name.clone()),
                    version: Some(a.version.clone()),
                    short_version: Some(a.version.clone()),
                    installing: Some(a.status == ManagedAppStatus::Installing),
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
                    .then_some(f.apple_id.is_some()),
                itunes_store_account_hash: if asked("iTunesStoreAccountHash") {
                    f.account_hash()
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
    use crate::facts::account_hash;
    use crate::persona::Response;

    const PAGES: &str = "com.apple.Pages";

    fn store_app(license: LicenseKind) -> StoreApp {
        StoreApp {
            adam_id: AdamId(361309726),
            bundle_id: PAGES.into(),
            name: "Pages".into(),
            version: "14.1".into(),
            license: Some(license),
            platforms: vec![StorePlatform::IPhone, StorePlatform::IPad],
            minimum_os: Some("15.0".into()),
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

    fn invite_cmd() -> CommandEnvelope {
        envelope(Command::InviteToProgram(InviteToProgram::vpp(
            "https://vpp.example/associate?inviteCode=abc",
        )))
    }

    fn device(configure: impl FnOnce(&mut DeviceFacts)) -> Device {
        let mut facts = DeviceFacts::supervised_iphone("U", "S");
        configure(&mut facts);
        Device::new(facts, Timings::default())
    }

    fn managed_status(device: &mut Device, now: Instant) -> Option<ManagedAppStatus> {
        let report = device.handle(
            &envelope(Command::ManagedApplicationList(Default::default())),
            None,
            now,
        );
        let list: ManagedApplicationListResponse = report.response().unwrap();
        list.managed_application_list.get(PAGES).map(|a| a.status)
    }

    fn installed_versions(device: &mut Device, now: Instant) -> Vec<String> {
        let report = device.handle(
            &envelope(Command::InstalledApplicationList(Default::default())),
            None,
            now,
        );
        let list: InstalledApplicationListResponse = report.response().unwrap();
        list.installed_application_list
            .into_iter()
            .filter_map(|a| a.short_version)
            .collect()
    }

    fn kinds(device: &Device) -> Vec<(PromptKind, Option<PromptAnswer>)> {
        device
            .prompts()
            .into_iter()
            .map(|p| (p.kind, p.answer))
            .collect()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn supervised_device_installs_silently_then_reports_managed() {
        let t0 = Instant::now();
        let mut device = device(|_| {});
        let report = device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        assert_eq!(report.status, CommandStatus::Acknowledged);
        let ack: InstallApplicationResponse = report.response().unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::Queued));
        assert_eq!(ack.identifier.as_deref(), Some(PAGES));
        // The walk of a real device: Queued, ValidatingPurchase, Redeeming, Installing,
        // Managed.
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(500)),
            Some(ManagedAppStatus::ValidatingPurchase)
        );
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(800)),
            Some(ManagedAppStatus::Redeeming)
        );
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(1500)),
            Some(ManagedAppStatus::Installing)
        );
        assert_eq!(
            managed_status(&mut device, t0 + secs(3)),
            Some(ManagedAppStatus::Managed)
        );
        let report = device.handle(
            &envelope(Command::InstalledApplicationList(Default::default())),
            None,
            t0 + secs(3),
        );
        let list: InstalledApplicationListResponse = report.response().unwrap();
        assert_eq!(list.installed_application_list.len(), 1);
        let app = &list.installed_application_list[0];
        assert_eq!(app.short_version.as_deref(), Some("14.1"));
        assert_eq!(app.installing, Some(false));
        assert_eq!(app.device_based_vpp, Some(true));
        assert!(
            device.prompts().is_empty(),
            "no prompt on a supervised device"
        );
    }

    #[test]
    fn unsupervised_device_prompts_before_installing() {
        let t0 = Instant::now();
        let mut device = device(|f| f.supervised = false);
        let ack: InstallApplicationResponse = device
            .handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0)
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::Prompting));
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(500)),
            Some(ManagedAppStatus::Prompting)
        );
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(2500)),
            Some(ManagedAppStatus::Installing)
        );
        assert_eq!(
            managed_status(&mut device, t0 + secs(4)),
            Some(ManagedAppStatus::Managed)
        );
        assert_eq!(
            kinds(&device),
            vec![(PromptKind::AppInstall, Some(PromptAnswer::Accepted))]
        );
    }

    #[test]
    fn declined_install_prompt_ends_user_rejected() {
        let t0 = Instant::now();
        let mut device = device(|f| {
            f.supervised = false;
            f.persona.install = Response::Decline;
        });
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        assert_eq!(
            managed_status(&mut device, t0 + secs(2)),
            Some(ManagedAppStatus::UserRejected)
        );
        assert!(installed_versions(&mut device, t0 + secs(5)).is_empty());
        assert_eq!(
            kinds(&device),
            vec![(PromptKind::AppInstall, Some(PromptAnswer::Declined))]
        );
    }

    #[test]
    fn user_license_without_account_asks_for_the_apple_id_then_installs() {
        let t0 = Instant::now();
        let mut device = device(|f| f.persona.apple_id_to_enter = "ana@example.com".into());
        let ack: InstallApplicationResponse = device
            .handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0)
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::PromptingForLogin));
        assert_eq!(
            managed_status(&mut device, t0 + secs(4)),
            Some(ManagedAppStatus::Managed)
        );
        assert_eq!(device.facts.apple_id.as_deref(), Some("ana@example.com"));
        assert_eq!(
            kinds(&device),
            vec![(PromptKind::AppleId, Some(PromptAnswer::Accepted))]
        );
    }

    #[test]
    fn unsupervised_user_license_shows_install_then_apple_id_prompt() {
        let t0 = Instant::now();
        let mut device = device(|f| f.supervised = false);
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0);
        assert_eq!(
            managed_status(&mut device, t0 + Duration::from_millis(1500)),
            Some(ManagedAppStatus::PromptingForLogin)
        );
        assert_eq!(
            managed_status(&mut device, t0 + secs(5)),
            Some(ManagedAppStatus::Managed)
        );
        assert_eq!(
            kinds(&device),
            vec![
                (PromptKind::AppInstall, Some(PromptAnswer::Accepted)),
                (PromptKind::AppleId, Some(PromptAnswer::Accepted)),
            ]
        );
    }

    #[test]
    fn apple_id_prompt_never_answered_stays_pending() {
        let t0 = Instant::now();
        let mut device = device(|f| f.persona.apple_id = Response::Never);
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0);
        for later in [secs(5), secs(3600)] {
            assert_eq!(
                managed_status(&mut device, t0 + later),
                Some(ManagedAppStatus::PromptingForLogin)
            );
        }
        assert_eq!(kinds(&device), vec![(PromptKind::AppleId, None)]);
        assert_eq!(device.next_deadline(), None);
    }

    #[test]
    fn dismissed_apple_id_prompt_fails_the_install() {
        let t0 = Instant::now();
        let mut device = device(|f| f.persona.apple_id = Response::Dismiss);
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0);
        assert_eq!(
            managed_status(&mut device, t0 + secs(2)),
            Some(ManagedAppStatus::Failed)
        );
        assert!(device.facts.apple_id.is_none());
    }

    #[test]
    fn accepted_invitation_signs_in_and_joins_the_program() {
        let t0 = Instant::now();
        let mut device = device(|f| f.persona.apple_id_to_enter = "ana@example.com".into());
        let answer: InviteToProgramResponse =
            device.handle(&invite_cmd(), None, t0).response().unwrap();
        assert_eq!(answer.invitation_result, InvitationResult::Acknowledged);
        device.tick(t0 + secs(1));
        assert!(device.take_actions().is_empty(), "not signed in yet");
        device.tick(t0 + secs(2));
        assert_eq!(
            device.take_actions(),
            vec![DeviceAction::JoinProgram {
                invitation_url: "https://vpp.example/associate?inviteCode=abc".into(),
                account_hash: account_hash("ana@example.com"),
            }]
        );
        assert_eq!(
            kinds(&device),
            vec![
                (PromptKind::VppInvitation, Some(PromptAnswer::Accepted)),
                (PromptKind::AppleId, Some(PromptAnswer::Accepted)),
            ]
        );
        // Signed in now: a user-licensed install needs no further Apple ID prompt.
        device.handle(
            &install_cmd(),
            Some(&store_app(LicenseKind::User)),
            t0 + secs(3),
        );
        assert_eq!(
            managed_status(&mut device, t0 + secs(6)),
            Some(ManagedAppStatus::Managed)
        );
        assert_eq!(device.prompts().len(), 2);
    }

    #[test]
    fn declined_invitation_joins_nothing() {
        let t0 = Instant::now();
        let mut device = device(|f| f.persona.invitation = Response::Decline);
        device.handle(&invite_cmd(), None, t0);
        device.tick(t0 + secs(10));
        assert!(device.take_actions().is_empty());
        assert_eq!(
            kinds(&device),
            vec![(PromptKind::VppInvitation, Some(PromptAnswer::Declined))]
        );
    }

    #[test]
    fn invitation_with_a_wrong_program_or_url_is_refused() {
        let mut device = device(|_| {});
        let wrong_program = envelope(Command::InviteToProgram(InviteToProgram {
            program_id: "com.example".into(),
            invitation_url: "https://x".into(),
        }));
        let r: InviteToProgramResponse = device
            .handle(&wrong_program, None, Instant::now())
            .response()
            .unwrap();
        assert_eq!(r.invitation_result, InvitationResult::InvalidProgramID);
        let r: InviteToProgramResponse = device
            .handle(
                &envelope(Command::InviteToProgram(InviteToProgram::vpp("nope"))),
                None,
                Instant::now(),
            )
            .response()
            .unwrap();
        assert_eq!(r.invitation_result, InvitationResult::InvalidInvitationURL);
        assert!(device.prompts().is_empty());
    }

    #[test]
    fn kiosk_device_shows_no_invitation_and_refuses_user_licensed_installs() {
        let t0 = Instant::now();
        let mut device = device(|f| f.kiosk = true);
        device.handle(&invite_cmd(), None, t0);
        let report = device.handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0);
        assert_eq!(report.status, CommandStatus::Error);
        assert!(
            report.error_chain[0]
                .localized_description
                .contains("single-app mode")
        );
        assert!(device.prompts().is_empty());
        // Device licensing works silently on a supervised kiosk.
        let report = device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        assert_eq!(report.status, CommandStatus::Acknowledged);
        assert_eq!(
            managed_status(&mut device, t0 + secs(3)),
            Some(ManagedAppStatus::Managed)
        );
        assert!(device.prompts().is_empty());
    }

    #[test]
    fn app_store_disabled_rejects_user_licensed_installs_and_says_so() {
        let mut device = device(|f| f.app_store_allowed = false);
        let report = device.handle(
            &install_cmd(),
            Some(&store_app(LicenseKind::User)),
            Instant::now(),
        );
        assert_eq!(report.status, CommandStatus::Error);
        let r: InstallApplicationResponse = report.response().unwrap();
        assert_eq!(r.rejection_reason, Some(RejectionReason::AppStoreDisabled));
        let restrictions: RestrictionsResponse = device
            .handle(
                &envelope(Command::Restrictions(Restrictions::default())),
                None,
                Instant::now(),
            )
            .response()
            .unwrap();
        assert!(!restrictions.app_store_allowed());
    }

    #[test]
    fn update_prompt_rejected_keeps_the_old_version() {
        let t0 = Instant::now();
        let mut device = device(|f| {
            f.supervised = false;
            f.persona.update = Response::Decline;
        });
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        assert_eq!(
            managed_status(&mut device, t0 + secs(4)),
            Some(ManagedAppStatus::Managed)
        );
        let newer = StoreApp {
            version: "14.2".into(),
            ..store_app(LicenseKind::Device)
        };
        let ack: InstallApplicationResponse = device
            .handle(&install_cmd(), Some(&newer), t0 + secs(5))
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::PromptingForUpdate));
        assert_eq!(
            managed_status(&mut device, t0 + secs(7)),
            Some(ManagedAppStatus::UpdateRejected)
        );
        assert_eq!(installed_versions(&mut device, t0 + secs(7)), vec!["14.1"]);
        assert_eq!(
            device.prompts().last().map(|p| (p.kind, p.answer)),
            Some((PromptKind::AppUpdate, Some(PromptAnswer::Declined)))
        );
    }

    #[test]
    fn accepted_update_installs_the_new_version() {
        let t0 = Instant::now();
        let mut device = device(|f| f.supervised = false);
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        managed_status(&mut device, t0 + secs(4));
        let newer = StoreApp {
            version: "14.2".into(),
            ..store_app(LicenseKind::Device)
        };
        device.handle(&install_cmd(), Some(&newer), t0 + secs(5));
        assert_eq!(
            managed_status(&mut device, t0 + secs(9)),
            Some(ManagedAppStatus::Managed)
        );
        assert_eq!(installed_versions(&mut device, t0 + secs(9)), vec!["14.2"]);
    }

    #[test]
    fn prompt_report_sends_each_prompt_when_shown_and_when_answered() {
        let t0 = Instant::now();
        let mut device = device(|f| f.supervised = false);
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        let shown = device.take_prompt_report(|_| "t".into());
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].kind, PromptKind::AppInstall);
        assert_eq!(shown[0].identifier.as_deref(), Some(PAGES));
        assert!(shown[0].answer.is_none());
        assert!(device.take_prompt_report(|_| "t".into()).is_empty());
        device.tick(t0 + secs(2));
        let answered = device.take_prompt_report(|_| "t".into());
        assert_eq!(answered.len(), 1);
        assert_eq!(answered[0].prompt_id, shown[0].prompt_id);
        assert_eq!(answered[0].answer, Some(PromptAnswer::Accepted));
        // A report that could not be delivered goes again.
        device.unreport(&answered);
        assert_eq!(device.take_prompt_report(|_| "t".into()), answered);
    }

    #[test]
    fn open_prompt_is_shown_again_after_a_restart() {
        let t0 = Instant::now();
        let mut before = device(|f| f.persona.apple_id = Response::Never);
        before.handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0);
        let mut after = Device::restore(
            before.facts.clone(),
            before.apps().values().cloned().collect(),
            before.handled().clone(),
            Timings::default(),
        );
        after.tick(t0 + secs(1));
        assert_eq!(kinds(&after), vec![(PromptKind::AppleId, None)]);
    }

    #[test]
    fn app_deleted_by_the_user_is_managed_but_uninstalled() {
        let t0 = Instant::now();
        let mut device = device(|_| {});
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        managed_status(&mut device, t0 + secs(3));
        assert!(device.user_deletes_app(PAGES));
        assert_eq!(
            managed_status(&mut device, t0 + secs(4)),
            Some(ManagedAppStatus::ManagedButUninstalled)
        );
        assert!(installed_versions(&mut device, t0 + secs(4)).is_empty());
        // Installing again brings it back.
        device.handle(
            &install_cmd(),
            Some(&store_app(LicenseKind::Device)),
            t0 + secs(5),
        );
        assert_eq!(
            managed_status(&mut device, t0 + secs(8)),
            Some(ManagedAppStatus::Managed)
        );
    }

    #[test]
    fn revoked_license_keeps_ios_apps_and_removes_mac_apps_after_30_days() {
        let t0 = Instant::now();
        let day = secs(24 * 3600);
        for (platform, removed) in [(Platform::Ios, false), (Platform::MacOs, true)] {
            let mut device = device(|f| f.platform = platform);
            device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
            managed_status(&mut device, t0 + secs(3));
            assert_eq!(device.licensed_apps().len(), 1);
            device.license_revoked(PAGES, t0 + secs(10));
            assert!(device.licensed_apps().is_empty(), "checked once");
            assert_eq!(
                managed_status(&mut device, t0 + day * 29),
                Some(ManagedAppStatus::Managed),
                "{platform:?}: still usable within the grace period"
            );
            assert_eq!(
                managed_status(&mut device, t0 + day * 31).is_none(),
                removed,
                "{platform:?}"
            );
        }
    }

    #[test]
    fn a_locked_device_puts_installs_off_until_it_is_unlocked() {
        let t0 = Instant::now();
        let mut device = device(|f| f.persona.locked_for_ms = 3000);
        let report = device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        assert_eq!(report.status, CommandStatus::NotNow);
        assert!(device.apps().is_empty());
        // Queries need no user: answered while locked.
        let list = device.handle(
            &envelope(Command::ManagedApplicationList(Default::default())),
            None,
            t0 + secs(1),
        );
        assert_eq!(list.status, CommandStatus::Acknowledged);
        assert_eq!(
            device.next_deadline(),
            Some(t0 + secs(3)),
            "the device checks in again when unlocked"
        );
        let report = device.handle(
            &install_cmd(),
            Some(&store_app(LicenseKind::Device)),
            t0 + secs(3),
        );
        assert_eq!(report.status, CommandStatus::Acknowledged);
        assert_eq!(device.put_off(), 1);
    }

    #[test]
    fn a_user_licensed_update_without_an_account_asks_for_it() {
        let t0 = Instant::now();
        let mut device = device(|f| {
            f.supervised = false;
            f.apple_id = Some("ana@example.com".into());
        });
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::User)), t0);
        assert_eq!(
            managed_status(&mut device, t0 + secs(5)),
            Some(ManagedAppStatus::Managed)
        );
        device.facts.apple_id = None;
        let newer = StoreApp {
            version: "14.2".into(),
            ..store_app(LicenseKind::User)
        };
        let ack: InstallApplicationResponse = device
            .handle(&install_cmd(), Some(&newer), t0 + secs(6))
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::PromptingForUpdateLogin));
        // The user signs in: the update goes on.
        assert_eq!(
            managed_status(&mut device, t0 + secs(7) + Duration::from_millis(100)),
            Some(ManagedAppStatus::Updating)
        );
        assert_eq!(installed_versions(&mut device, t0 + secs(10)), vec!["14.2"]);
    }

    #[test]
    fn an_install_without_vpp_and_without_a_license_needs_redemption() {
        let mut device = device(|_| {});
        let mut command = InstallApplication::vpp(AdamId(361309726), 1);
        command.options = None;
        let app = StoreApp {
            license: None,
            ..store_app(LicenseKind::Device)
        };
        let ack: InstallApplicationResponse = device
            .handle(
                &envelope(Command::InstallApplication(command)),
                Some(&app),
                Instant::now(),
            )
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::NeedsRedemption));
    }

    #[test]
    fn a_store_that_does_not_sell_the_app_names_the_country() {
        let mut device = device(|_| {});
        device.set_store_country("DE");
        let report = device.handle(&install_cmd(), None, Instant::now());
        let text = &report.error_chain[0].localized_description;
        assert!(text.contains("(DE)"), "{text}");
    }

    #[test]
    fn a_book_asks_for_the_account_then_downloads_and_is_listed() {
        let t0 = Instant::now();
        let mut device = device(|f| {
            f.apple_id = None;
            f.persona.answer_after_ms = 100;
        });
        let book = StoreApp {
            adam_id: AdamId(1490240032),
            bundle_id: "com.example.handbook".into(),
            name: "The Handbook".into(),
            version: "1.0".into(),
            license: Some(LicenseKind::User),
            platforms: vec![],
            minimum_os: None,
        };
        let report = device.handle(
            &envelope(Command::InstallMedia(InstallMedia::book(book.adam_id))),
            Some(&book),
            t0,
        );
        let ack: InstallMediaResponse = report.response().unwrap();
        assert_eq!(ack.state, Some(BookState::PromptingForLogin));
        let list = |device: &mut Device, at| -> Vec<BookState> {
            let report = device.handle(
                &envelope(Command::ManagedMediaList(
                    orchard_protocol::command::ManagedMediaList::default(),
                )),
                None,
                at,
            );
            let list: ManagedMediaListResponse = report.response().unwrap();
            list.books.iter().filter_map(|b| b.state).collect()
        };
        assert_eq!(
            list(&mut device, t0 + secs(0)),
            [BookState::PromptingForLogin]
        );
        assert_eq!(list(&mut device, t0 + secs(1)), [BookState::Installing]);
        assert_eq!(list(&mut device, t0 + secs(3)), [BookState::Installed]);
        assert!(device.facts.apple_id.is_some(), "the user signed in");
    }

    #[test]
    fn a_device_refuses_an_app_it_cannot_run_as_a_real_one_does() {
        let t0 = Instant::now();
        let refusal = |facts: fn(&mut DeviceFacts), app: StoreApp| {
            let mut device = device(facts);
            let report = device.handle(&install_cmd(), Some(&app), t0);
            let ack: InstallApplicationResponse = report.response().unwrap();
            (
                report.status,
                ack.rejection_reason,
                report.error_chain[0].localized_description.clone(),
                device.apps.is_empty(),
            )
        };
        let (status, reason, text, nothing) = refusal(
            |f| f.os_version = "14.0".into(),
            store_app(LicenseKind::Device),
        );
        assert_eq!(status, CommandStatus::Error);
        assert_eq!(reason, Some(RejectionReason::NotSupported));
        assert!(text.contains("iOS 15.0") && text.contains("14.0"), "{text}");
        assert!(nothing, "nothing was installed");
        let (_, reason, text, _) = refusal(
            |f| {
                f.platform = Platform::MacOs;
                f.product_name = "MacBookPro16,1".into();
                f.os_version = "14.5".into();
            },
            StoreApp {
                platforms: vec![StorePlatform::IPad, StorePlatform::AppleSiliconMac],
                ..store_app(LicenseKind::Device)
            },
        );
        assert_eq!(
            reason,
            Some(RejectionReason::Other),
            "macOS only says Other"
        );
        assert!(text.contains("Intel"), "{text}");
        // The same iPad app runs on a Mac with Apple silicon.
        let mut mac = device(|f| {
            f.platform = Platform::MacOs;
            f.product_name = "Mac14,2".into();
            f.os_version = "14.5".into();
        });
        let ipad_app = StoreApp {
            platforms: vec![StorePlatform::IPad, StorePlatform::AppleSiliconMac],
            ..store_app(LicenseKind::Device)
        };
        let report = mac.handle(&install_cmd(), Some(&ipad_app), t0);
        assert_eq!(report.status, CommandStatus::Acknowledged);
    }

    #[test]
    fn no_license_at_the_store_fails_the_install() {
        let t0 = Instant::now();
        let mut device = device(|_| {});
        let app = StoreApp {
            license: None,
            ..store_app(LicenseKind::Device)
        };
        let ack: InstallApplicationResponse = device
            .handle(&install_cmd(), Some(&app), t0)
            .response()
            .unwrap();
        assert_eq!(ack.state, Some(ManagedAppStatus::Failed));
        assert_eq!(
            managed_status(&mut device, t0),
            Some(ManagedAppStatus::Failed)
        );
        assert!(device.apps().is_empty(), "a failure is reported once");
    }

    #[test]
    fn unknown_app_is_refused_with_could_not_verify() {
        let mut device = device(|_| {});
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
        let mut device = device(|f| {
            f.serial_number = "SN1".into();
            f.apple_id = Some("ana@example.com".into());
        });
        let cmd = envelope(Command::DeviceInformation(DeviceInformation {
            queries: vec![
                "SerialNumber".into(),
                "IsSupervised".into(),
                "iTunesStoreAccountIsActive".into(),
                "iTunesStoreAccountHash".into(),
            ],
        }));
        let info: DeviceInformationResponse = device
            .handle(&cmd, None, Instant::now())
            .response()
            .unwrap();
        let q = info.query_responses;
        assert_eq!(q.serial_number.unwrap().as_str(), "SN1");
        assert_eq!(q.is_supervised, Some(true));
        assert_eq!(q.itunes_store_account_is_active, Some(true));
        let hash = q.itunes_store_account_hash.unwrap();
        assert_eq!(hash, account_hash("Ana@Example.com "));
        assert!(
            !hash.contains("ana"),
            "the Apple ID itself stays on the device"
        );
        assert!(q.udid.is_none() && q.os_version.is_none());
    }

    #[test]
    fn remove_application_removes_a_managed_app_and_refuses_unknown_ones() {
        let t0 = Instant::now();
        let mut device = device(|_| {});
        device.handle(&install_cmd(), Some(&store_app(LicenseKind::Device)), t0);
        let remove = |id: &str| {
            envelope(Command::RemoveApplication(
                orchard_protocol::command::RemoveApplication {
                    identifier: id.into(),
                },
            ))
        };
        assert_eq!(
            device.handle(&remove(PAGES), None, t0).status,
            CommandStatus::Acknowledged
        );
        assert!(device.apps().is_empty());
        assert_eq!(
            device.handle(&remove(PAGES), None, t0).status,
            CommandStatus::Error
        );
    }

    #[test]
    fn unknown_commands_are_errors() {
        let mut device = device(|_| {});
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
