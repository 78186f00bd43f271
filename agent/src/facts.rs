//! What a device is, as configured: platform, OS, identifiers, ownership, supervision,
//! kiosk mode, the signed-in Apple ID and App Store policy, and the persona of its user.

use orchard_certs::KeyAlgorithm;
use orchard_protocol::{SerialNumber, Udid};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::persona::Persona;

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

impl Ownership {
    /// The same, as the enrollment request says it.
    pub fn wire(self) -> orchard_protocol::enroll::Ownership {
        match self {
            Self::Corporate => orchard_protocol::enroll::Ownership::Corporate,
            Self::Personal => orchard_protocol::enroll::Ownership::Personal,
        }
    }
}

fn yes() -> bool {
    true
}

/// What a device is, as configured, and the user holding it.
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
    /// Single-app (kiosk) mode: the device shows no prompts.
    #[serde(default)]
    pub kiosk: bool,
    /// The Apple ID signed in to the App Store, if any.
    #[serde(default)]
    pub apple_id: Option<String>,
    /// The App Store is reachable (no restrictions profile disables it).
    #[serde(default = "yes")]
    pub app_store_allowed: bool,
    /// How the device's user answers prompts.
    #[serde(default)]
    pub persona: Persona,
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
            kiosk: false,
            apple_id: None,
            app_store_allowed: true,
            persona: Persona::default(),
            identity_key: KeyAlgorithm::P256,
        }
    }

    /// The model family a user sees, e.g. `iPhone`.
    pub fn model_name(&self) -> &'static str {
        match self.platform {
            Platform::Ios => "iPhone",
            Platform::IpadOs => "iPad",
            Platform::MacOs => "Mac",
        }
    }

    /// Apple's opaque hash of the signed-in account (`iTunesStoreAccountHash`, the VPP
    /// service's `idHash`); the Apple ID itself never leaves the device.
    pub fn account_hash(&self) -> Option<String> {
        self.apple_id.as_deref().map(account_hash)
    }
}

/// The opaque hash of an Apple ID, as the device and Apple's service both compute it.
pub fn account_hash(apple_id: &str) -> String {
    let digest = Sha256::digest(apple_id.trim().to_lowercase().as_bytes());
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whom the App Store says the license for an app on this device belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseKind {
    /// Associated with the device's serial number.
    Device,
    /// Associated with the user's Apple ID (or, before sign-in, not yet known: the
    /// device must sign in to find out).
    User,
}
