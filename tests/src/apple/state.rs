//! The stand-in's in-memory world: locations with their tokens, the catalog, license
//! counts per location, associations, and asynchronous events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::seed::Seed;

/// An app or book in the store.
#[derive(Debug, Clone)]
pub struct CatalogItem {
    /// Name.
    pub name: String,
    /// Bundle identifier.
    pub bundle_id: String,
    /// Current version.
    pub version: String,
    /// `App` or `Book`.
    pub product_type: String,
    /// Platforms.
    pub platforms: Vec<String>,
    /// Licensable to serial numbers.
    pub device_assignable: bool,
    /// Store countries that sell it; every country when empty.
    pub countries: Vec<String>,
    /// The iOS the current version needs.
    pub minimum_os: String,
    /// The macOS the current Mac version needs.
    pub minimum_macos: String,
}

impl CatalogItem {
    /// Apple's asset `supportedPlatforms`: `iOS` for an iPhone or iPad app, `macOS` for
    /// a native Mac version.
    pub fn asset_platforms(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self
            .platforms
            .iter()
            .any(|p| matches!(p.as_str(), "iOS" | "iPhone" | "iPad"))
        {
            out.push("iOS");
        }
        if self.platforms.iter().any(|p| p == "macOS") {
            out.push("macOS");
        }
        out
    }

    /// The lookup's `kind`, `supportedDevices` and `minimumOsVersion`. `mac` asks for
    /// the Mac App Store's entry (`entity=macSoftware`), which a native Mac version has;
    /// otherwise the iPhone/iPad entry, whose devices list a Mac only where the app
    /// runs on Apple silicon.
    pub fn store_entry(&self, mac: bool) -> (&'static str, Vec<&'static str>, &str) {
        let has = |p: &str| self.platforms.iter().any(|q| q == p);
        if self.product_type == "Book" {
            return ("ebook", Vec::new(), &self.minimum_os);
        }
        let mobile = has("iOS") || has("iPhone") || has("iPad");
        if has("macOS") && (mac || !mobile) {
            return (
                "mac-software",
                vec!["MacDesktop-MacDesktop"],
                &self.minimum_macos,
            );
        }
        let mut devices = Vec::new();
        if has("iOS") || has("iPhone") {
            devices.push("iPhone12-iPhone12");
        }
        if has("iOS") || has("iPad") {
            devices.push("iPadAir-iPadAir");
        }
        if has("AppleSiliconMac") {
            devices.push("MacDesktop-MacDesktop");
        }
        ("software", devices, &self.minimum_os)
    }
}

/// A location and its token.
#[derive(Debug, Clone)]
pub struct LocationState {
    /// Name.
    pub name: String,
    /// Store country.
    pub country: String,
    /// The whole token file text, which is the bearer sToken.
    pub token_file: String,
    /// Token expiry.
    pub expires: OffsetDateTime,
    /// The MDM that claimed the location (`mdmInfo`), if any.
    pub mdm_info: Option<Value>,
    /// Where the claiming MDM takes notifications.
    pub notification_url: Option<String>,
    /// The bearer secret sent with them.
    pub notification_token: Option<String>,
}

/// License counts of one asset at one location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bought.
    pub total: i64,
    /// Associated.
    pub assigned: i64,
}

/// A user registered at a location (Apple's `ResponseUser`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VppUser {
    /// Email.
    pub email: Option<String>,
    /// Managed Apple Account.
    pub managed_apple_id: Option<String>,
    /// `Registered`, `Associated` or `Retired`.
    pub status: &'static str,
    /// Invite code, until associated.
    pub invite_code: Option<String>,
    /// Hash of the Apple Account the user joined with.
    pub id_hash: Option<String>,
}

impl VppUser {
    /// Apple's `ResponseUser` JSON.
    pub fn to_json(&self, client_user_id: &str) -> Value {
        let mut user = json!({ "clientUserId": client_user_id, "status": self.status });
        if let Some(email) = &self.email {
            user["email"] = json!(email);
        }
        if let Some(code) = &self.invite_code {
            user["inviteCode"] = json!(code);
        }
        if let Some(hash) = &self.id_hash {
            user["idHash"] = json!(hash);
        }
        user
    }
}

/// An asynchronous event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Location.
    pub uid: String,
    /// `ASSOCIATE`, …
    pub event_type: &'static str,
    /// Items requested.
    pub requested: i64,
    /// Per-item failures (Apple's ErrorResponse objects).
    pub failures: Vec<Value>,
    /// When the event reports COMPLETE.
    pub ready_at: Instant,
}

/// The world.
#[derive(Debug)]
pub struct World {
    /// Organisation name.
    pub org_name: String,
    /// Locations by uid.
    pub locations: BTreeMap<String, LocationState>,
    /// Store items by adamId.
    pub catalog: BTreeMap<u64, CatalogItem>,
    /// Counts by (location, adamId).
    pub assets: BTreeMap<(String, u64), Counts>,
    /// Device associations: (location, adamId, serial).
    pub serial_assignments: BTreeSet<(String, u64, String)>,
    /// Users by (location, clientUserId).
    pub users: BTreeMap<(String, String), VppUser>,
    /// User associations: (location, adamId, clientUserId).
    pub user_assignments: BTreeSet<(String, u64, String)>,
    /// Events by id.
    pub events: HashMap<String, Event>,
    /// How long events stay PENDING.
    pub event_delay: Duration,
    /// Assets per page.
    pub page_size: usize,
    /// How long `GET /assets` takes to answer (a slow Apple).
    pub assets_delay: Duration,
    /// Faults injected into Apple's answers.
    pub faults: Option<super::testbed_admin::Faults>,
    /// The next this many App Store lookups answer 503 (the store is down).
    pub store_outage: u32,
    /// The CA the MDM's notification endpoint chains to (none: no notifications).
    pub notification_ca: Option<String>,
    /// Wait between delivery attempts (Apple: minutes; tests: short).
    pub notification_retry: Duration,
    /// Send no notifications (the MDM must fall back to polling).
    pub drop_notifications: bool,
    /// Notifications delivered.
    pub notifications_sent: u64,
    /// Service config `maxSerialNumbers` (larger requests are refused with 9702).
    pub max_serial_numbers: usize,
    /// The most serial numbers one association request carried.
    pub largest_serial_batch: usize,
    /// Association requests taken.
    pub associate_calls: u64,
    /// When each association request was taken.
    pub associated_at: Vec<Instant>,
    /// How long an association request takes to answer (a slow Apple).
    pub associate_delay: Duration,
    /// Serial numbers Apple refuses outright: a request naming one is answered 400 with
    /// 9602 (as for a malformed serial number), whatever else it carries.
    pub refused_serials: BTreeSet<String>,
    /// When each (adamId, serial) license was last taken back.
    pub serial_released_at: HashMap<(u64, String), Instant>,
    /// Devices that asked the store for a license they did not have: (adamId, serial,
    /// when). A device asks right before installing.
    pub unlicensed_checks: Vec<(u64, String, Instant)>,
    /// Versions of the assignments list.
    pub assignment_versions: super::paging::Versions,
    /// Versions of the users list.
    pub user_versions: super::paging::Versions,
    /// Service config's `invitationEmail` when set (a broken one makes devices refuse
    /// invitations).
    pub invitation_template: Option<String>,
    /// Reads of the users list.
    pub user_reads: u64,
    /// Of those, reads with `sinceVersionId`.
    pub incremental_user_reads: u64,
}

/// A new token file (base64 JSON, as Apple issues it).
pub fn token_file(org_name: &str, expires: OffsetDateTime) -> String {
    let mut secret = [0u8; 48];
    rand::rng().fill_bytes(&mut secret);
    let exp = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
        expires.year(),
        u8::from(expires.month()),
        expires.day(),
        expires.hour(),
        expires.minute(),
        expires.second()
    );
    let json = json!({
        "token": base64::engine::general_purpose::STANDARD.encode(secret),
        "expDate": exp,
        "orgName": org_name,
    });
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

impl World {
    /// Builds the world from a seed; each location gets a fresh token valid one year.
    pub fn from_seed(seed: &Seed) -> Self {
        let expires = OffsetDateTime::now_utc() + time::Duration::days(365);
        let locations = seed
            .locations
            .iter()
            .map(|l| {
                let state = LocationState {
                    name: l.name.clone(),
                    country: l.country.clone(),
                    token_file: token_file(&seed.organisation.name, expires),
                    expires,
                    mdm_info: None,
                    notification_url: None,
                    notification_token: None,
                };
                (l.uid.clone(), state)
            })
            .collect();
        let mut catalog = BTreeMap::new();
        let mut assets = BTreeMap::new();
        for a in &seed.apps {
            catalog.insert(
                a.adam_id,
                CatalogItem {
                    name: a.name.clone(),
                    bundle_id: a.bundle_id.clone(),
                    version: a.version.clone(),
                    product_type: a.product_type.clone(),
                    platforms: a.platforms.clone(),
                    device_assignable: a.device_assignable,
                    countries: a.countries.clone(),
                    minimum_os: a.minimum_os.clone(),
                    minimum_macos: a.minimum_macos.clone(),
                },
            );
            for (uid, total) in &a.licenses {
                assets.insert(
                    (uid.clone(), a.adam_id),
                    Counts {
                        total: *total,
                        assigned: 0,
                    },
                );
            }
        }
        Self {
            org_name: seed.organisation.name.clone(),
            locations,
            catalog,
            assets,
            serial_assignments: BTreeSet::new(),
            users: BTreeMap::new(),
            user_assignments: BTreeSet::new(),
            events: HashMap::new(),
            event_delay: Duration::ZERO,
            page_size: 100,
            assets_delay: Duration::ZERO,
            faults: None,
            store_outage: 0,
            notification_ca: None,
            notification_retry: Duration::from_millis(500),
            drop_notifications: false,
            notifications_sent: 0,
            max_serial_numbers: 1000,
            largest_serial_batch: 0,
            associate_calls: 0,
            associated_at: Vec::new(),
            associate_delay: Duration::ZERO,
            refused_serials: BTreeSet::new(),
            serial_released_at: HashMap::new(),
            unlicensed_checks: Vec::new(),
            assignment_versions: Default::default(),
            user_versions: Default::default(),
            invitation_template: None,
            user_reads: 0,
            incremental_user_reads: 0,
        }
    }

    /// The location a bearer token belongs to.
    pub fn location_of(&self, bearer: &str) -> Option<String> {
        self.locations
            .iter()
            .find(|(_, l)| l.token_file == bearer)
            .map(|(uid, _)| uid.clone())
    }

    /// Apple's `ResponseAsset` JSON for one asset.
    pub fn response_asset(&self, uid: &str, adam_id: u64) -> Option<Value> {
        let counts = self.assets.get(&(uid.to_owned(), adam_id))?;
        let item = self.catalog.get(&adam_id)?;
        Some(json!({
            "adamId": adam_id.to_string(),
            "pricingParam": "STDQ",
            "productType": item.product_type,
            "assignedCount": counts.assigned,
            "availableCount": counts.total - counts.assigned,
            "retiredCount": 0,
            "totalCount": counts.total,
            "deviceAssignable": item.device_assignable,
            "revocable": item.product_type != "Book",
            "supportedPlatforms": item.asset_platforms(),
        }))
    }

    /// Which license a device may use for an app, as the App Store tells the device:
    /// `device` when its serial number holds one, `user` when the signed-in account
    /// (`id_hash`) belongs to a user holding one.
    pub fn license_for(
        &self,
        adam_id: u64,
        serial: &str,
        id_hash: Option<&str>,
    ) -> Option<&'static str> {
        // Looked up at each location (there are few), not by a walk of every
        // association: every simulated device asks once per install.
        let key = |uid: &String| (uid.clone(), adam_id, serial.to_owned());
        if self
            .locations
            .keys()
            .any(|uid| self.serial_assignments.contains(&key(uid)))
        {
            return Some("device");
        }
        let hash = id_hash?;
        self.user_assignments
            .iter()
            .any(|(uid, a, client)| {
                *a == adam_id
                    && self
                        .users
                        .get(&(uid.clone(), client.clone()))
                        .is_some_and(|u| {
                            u.status == "Associated" && u.id_hash.as_deref() == Some(hash)
                        })
            })
            .then_some("user")
    }

    /// Serial numbers associated with an asset at a location.
    pub fn serials_for(&self, uid: &str, adam_id: u64) -> Vec<String> {
        self.serial_assignments
            .iter()
            .filter(|(u, a, _)| u == uid && *a == adam_id)
            .map(|(_, _, s)| s.clone())
            .collect()
    }
}
