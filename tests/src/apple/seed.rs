//! The stand-in's seed file (TOML): organisation, locations and the apps bought with them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// The organisation.
    pub organisation: Organisation,
    /// Locations, each with its own token.
    pub locations: Vec<Location>,
    /// Apps and books.
    #[serde(default)]
    pub apps: Vec<SeedApp>,
}

/// The organisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Its name (the token file's `orgName`).
    pub name: String,
}

/// A location (Apple's unit that owns licenses and has a token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Apple's location id (`uId`).
    pub uid: String,
    /// Display name.
    pub name: String,
    /// Store country.
    #[serde(default = "us")]
    pub country: String,
}

fn us() -> String {
    "US".into()
}

fn app() -> String {
    "App".into()
}

/// An app or book.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApp {
    /// App Store id.
    pub adam_id: u64,
    /// Name.
    pub name: String,
    /// Bundle identifier.
    pub bundle_id: String,
    /// Current version.
    pub version: String,
    /// `App` or `Book`.
    #[serde(default = "app")]
    pub product_type: String,
    /// Where it runs: `iOS` (iPhone and iPad), `iPhone`, `iPad`, `macOS` (a native Mac
    /// version) and `AppleSiliconMac` (the iPhone/iPad app runs on Macs with Apple
    /// silicon).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Can be licensed to serial numbers.
    #[serde(default)]
    pub device_assignable: bool,
    /// Licenses bought, by location uid.
    #[serde(default)]
    pub licenses: BTreeMap<String, i64>,
    /// Store countries that sell the app (two letters); every country when empty.
    #[serde(default)]
    pub countries: Vec<String>,
    /// The iOS the current version needs.
    #[serde(default = "fifteen")]
    pub minimum_os: String,
    /// The macOS the current Mac version needs.
    #[serde(default = "eleven")]
    pub minimum_macos: String,
}

fn fifteen() -> String {
    "15.0".into()
}

fn eleven() -> String {
    "11.0".into()
}

/// The platform names a seed may use.
const PLATFORMS: [&str; 5] = ["iOS", "iPhone", "iPad", "macOS", "AppleSiliconMac"];

impl Seed {
    /// Parses a seed and checks its references.
    pub fn parse(text: &str) -> Result<Self, String> {
        let seed: Self = toml::from_str(text).map_err(|e| format!("invalid seed: {e}"))?;
        for a in &seed.apps {
            if let Some(p) = a
                .platforms
                .iter()
                .find(|p| !PLATFORMS.contains(&p.as_str()))
            {
                return Err(format!(
                    "app {} names unknown platform {p} (known: {PLATFORMS:?})",
                    a.adam_id
                ));
            }
            for uid in a.licenses.keys() {
                if !seed.locations.iter().any(|l| &l.uid == uid) {
                    return Err(format!(
                        "app {} buys licenses at unknown location {uid}",
                        a.adam_id
                    ));
                }
            }
        }
        Ok(seed)
    }

    /// The seed of `orchard-testbed demo` and most tests.
    pub fn demo() -> Self {
        // The file is part of the crate; a parse failure is a build-time mistake caught by tests.
        Self::parse(include_str!("../../seeds/demo.toml")).unwrap_or_else(|e| panic!("{e}"))
    }
}
