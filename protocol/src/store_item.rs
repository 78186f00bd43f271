//! Where an App Store item runs, as the store's metadata says (the iTunes lookup's
//! `kind`, `supportedDevices` and `minimumOsVersion`, and the Apps and Books asset's
//! `supportedPlatforms`), and whether a given device can run it. The server checks
//! this before it spends a license; the simulated device refuses what it cannot run,
//! as a real one does. Both use these rules, so they cannot disagree.

use std::fmt;

/// A kind of device an item runs on, as the store names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorePlatform {
    /// iPhone (and iPod touch).
    IPhone,
    /// iPad.
    IPad,
    /// Mac, natively (a Mac app, or a universal purchase with a Mac version).
    Mac,
    /// An iPhone or iPad app the developer lets Macs with Apple silicon run.
    AppleSiliconMac,
}

impl StorePlatform {
    /// The name stored and shown (`iPhone`, `iPad`, `Mac`, `AppleSiliconMac`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IPhone => "iPhone",
            Self::IPad => "iPad",
            Self::Mac => "Mac",
            Self::AppleSiliconMac => "AppleSiliconMac",
        }
    }

    /// Reads a stored name; also Apple's asset platforms `iOS` (iPhone and iPad) and
    /// `macOS`, which older records hold.
    pub fn parse(name: &str) -> Vec<Self> {
        match name {
            "iPhone" => vec![Self::IPhone],
            "iPad" => vec![Self::IPad],
            "Mac" | "macOS" => vec![Self::Mac],
            "AppleSiliconMac" => vec![Self::AppleSiliconMac],
            "iOS" => vec![Self::IPhone, Self::IPad],
            _ => Vec::new(),
        }
    }
}

/// The platforms of an item from its store metadata: the lookup's `kind`
/// (`software`, `mac-software`) and `supportedDevices` (`iPhone12-iPhone12`,
/// `iPadAir-iPadAir`, `MacDesktop-MacDesktop`), and the asset's `supportedPlatforms`
/// (`iOS`, `macOS`). A Mac entry on an iPhone/iPad app means Macs with Apple silicon
/// only; a native Mac version is what `macOS` or `mac-software` says. Empty when the
/// store says nothing (the device decides then).
pub fn platforms_from_store(
    kind: Option<&str>,
    supported_devices: &[String],
    asset_platforms: &[String],
) -> Vec<StorePlatform> {
    let native_mac = kind == Some("mac-software") || asset_platforms.iter().any(|p| p == "macOS");
    let mut out = Vec::new();
    for device in supported_devices {
        let platform = if device.starts_with("iPhone") || device.starts_with("iPod") {
            StorePlatform::IPhone
        } else if device.starts_with("iPad") {
            StorePlatform::IPad
        } else if device.starts_with("Mac") && !native_mac {
            StorePlatform::AppleSiliconMac
        } else {
            continue;
        };
        out.push(platform);
    }
    if out.is_empty() && kind != Some("mac-software") {
        // No device list: the asset's platforms say it, `iOS` meaning both.
        if asset_platforms.iter().any(|p| p == "iOS") {
            out.extend([StorePlatform::IPhone, StorePlatform::IPad]);
        }
    }
    if native_mac {
        out.push(StorePlatform::Mac);
    }
    out.sort();
    out.dedup();
    out
}

/// A device as far as compatibility goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// iPhone or iPod touch.
    IPhone,
    /// iPad.
    IPad,
    /// Mac with Apple silicon.
    AppleSiliconMac,
    /// Mac with an Intel processor.
    IntelMac,
}

impl DeviceKind {
    /// The kind of a product name such as `iPhone15,2`, `iPad13,18`, `Mac14,2` or
    /// `MacBookPro16,1`; `None` when the name tells nothing.
    pub fn of_product(product_name: &str) -> Option<Self> {
        let p = product_name;
        if p.starts_with("iPhone") || p.starts_with("iPod") {
            return Some(Self::IPhone);
        }
        if p.starts_with("iPad") {
            return Some(Self::IPad);
        }
        // Apple silicon Macs: every `MacN,M` and virtual Mac, and the first models of
        // each family from late 2020 on; the older identifiers of a family are Intel.
        let major = |prefix: &str| -> Option<u32> {
            p.strip_prefix(prefix)?.split(',').next()?.parse().ok()
        };
        let silicon_from = [
            ("MacBookAir", 10),
            ("MacBookPro", 17),
            // The 12-inch MacBook: Intel only.
            ("MacBook", u32::MAX),
            ("Macmini", 9),
            ("iMacPro", u32::MAX),
            ("iMac", 21),
            ("MacPro", u32::MAX),
            ("VirtualMac", 2),
            ("Mac", 1),
        ];
        for (prefix, first) in silicon_from {
            if let Some(n) = major(prefix) {
                return Some(if n >= first {
                    Self::AppleSiliconMac
                } else {
                    Self::IntelMac
                });
            }
        }
        None
    }

    fn is_mac(self) -> bool {
        matches!(self, Self::AppleSiliconMac | Self::IntelMac)
    }

    fn name(self) -> &'static str {
        match self {
            Self::IPhone => "an iPhone",
            Self::IPad => "an iPad",
            Self::AppleSiliconMac => "a Mac with Apple silicon",
            Self::IntelMac => "a Mac with an Intel processor",
        }
    }
}

/// Why a device cannot run an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incompatible {
    /// The store offers the item for other devices.
    Platform {
        /// What the device is.
        device: DeviceKind,
        /// Where the item runs.
        platforms: Vec<StorePlatform>,
    },
    /// The device's OS is older than the item's current version needs.
    OsTooOld {
        /// The item's minimum.
        minimum: String,
        /// The device's OS.
        os_version: String,
        /// `iOS` or `macOS`.
        os_name: &'static str,
    },
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform { device, platforms } => {
                let names: Vec<&str> = platforms
                    .iter()
                    .map(|p| match p {
                        StorePlatform::IPhone => "iPhone",
                        StorePlatform::IPad => "iPad",
                        StorePlatform::Mac => "Mac",
                        StorePlatform::AppleSiliconMac => "Macs with Apple silicon",
                    })
                    .collect();
                write!(
                    f,
                    "the App Store offers this app for {}, and this device is {}",
                    names.join(", "),
                    device.name()
                )
            }
            Self::OsTooOld {
                minimum,
                os_version,
                os_name,
            } => write!(
                f,
                "the app's current version needs {os_name} {minimum} or later, and this device runs {os_version}"
            ),
        }
    }
}

/// Whether a device can run an item. `platforms` empty means the store said nothing;
/// `minimum_os` is the lookup's `minimumOsVersion`, which is the iOS minimum of an
/// iPhone/iPad app and the macOS minimum of a Mac-only app. An unreadable version
/// counts as new enough.
pub fn check(
    platforms: &[StorePlatform],
    minimum_os: Option<&str>,
    device: DeviceKind,
    os_version: Option<&str>,
) -> Result<(), Incompatible> {
    let has = |p| platforms.contains(&p);
    let runs = platforms.is_empty()
        || match device {
            DeviceKind::IPhone => has(StorePlatform::IPhone),
            DeviceKind::IPad => has(StorePlatform::IPad),
            DeviceKind::IntelMac => has(StorePlatform::Mac),
            DeviceKind::AppleSiliconMac => {
                has(StorePlatform::Mac) || has(StorePlatform::AppleSiliconMac)
            }
        };
    if !runs {
        return Err(Incompatible::Platform {
            device,
            platforms: platforms.to_vec(),
        });
    }
    let mobile_app = platforms.is_empty() || has(StorePlatform::IPhone) || has(StorePlatform::IPad);
    let os_name = if device.is_mac() { "macOS" } else { "iOS" };
    // The lookup's minimum is the one of the item's own kind: an iOS minimum says
    // nothing about a Mac running the Mac version, and the reverse.
    let minimum_applies = device.is_mac() != mobile_app;
    let (Some(minimum), Some(os)) = (minimum_os, os_version) else {
        return Ok(());
    };
    if minimum_applies && !version_at_least(os, minimum) {
        return Err(Incompatible::OsTooOld {
            minimum: minimum.to_owned(),
            os_version: os.to_owned(),
            os_name,
        });
    }
    Ok(())
}

/// Whether dotted `version` is at least dotted `minimum`, number by number
/// (`10.15.7` < `11.0`); an unreadable version counts as new enough.
pub fn version_at_least(version: &str, minimum: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u32>> {
        v.split('.').map(|p| p.trim().parse::<u32>().ok()).collect()
    };
    let (Some(mut have), Some(mut need)) = (parse(version), parse(minimum)) else {
        return true;
    };
    let len = have.len().max(need.len());
    have.resize(len, 0);
    need.resize(len, 0);
    have >= need
}

#[cfg(test)]
mod tests {
    use super::StorePlatform::{AppleSiliconMac, IPad, IPhone, Mac};
    use super::*;

    /// (lookup kind, supportedDevices, asset platforms, expected platforms).
    type MetadataCase<'a> = (
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
        &'a [StorePlatform],
    );
    /// (platforms, minimum OS, device, its OS, runs).
    type CompatibilityCase<'a> = (
        &'a [StorePlatform],
        Option<&'a str>,
        DeviceKind,
        &'a str,
        bool,
    );

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn platforms_from_store_metadata_table() {
        let cases: [MetadataCase<'_>; 7] = [
            (
                Some("software"),
                &["iPhone12-iPhone12"],
                &["iOS"],
                &[IPhone],
            ),
            (
                Some("software"),
                &["iPhone12-iPhone12", "iPadAir-iPadAir"],
                &["iOS"],
                &[IPhone, IPad],
            ),
            (
                Some("software"),
                &["iPadAir-iPadAir", "MacDesktop-MacDesktop"],
                &["iOS"],
                &[IPad, AppleSiliconMac],
            ),
            (
                Some("software"),
                &["iPhone12-iPhone12", "MacDesktop-MacDesktop"],
                &["iOS", "macOS"],
                &[IPhone, Mac],
            ),
            (
                Some("mac-software"),
                &["MacDesktop-MacDesktop"],
                &["macOS"],
                &[Mac],
            ),
            (None, &[], &["iOS"], &[IPhone, IPad]),
            (None, &[], &[], &[]),
        ];
        for (kind, devices, assets, expected) in cases {
            assert_eq!(
                platforms_from_store(kind, &strings(devices), &strings(assets)),
                expected,
                "{kind:?} {devices:?} {assets:?}"
            );
        }
    }

    #[test]
    fn product_names_tell_the_device_kind() {
        let cases = [
            ("iPhone15,2", Some(DeviceKind::IPhone)),
            ("iPod9,1", Some(DeviceKind::IPhone)),
            ("iPad13,18", Some(DeviceKind::IPad)),
            ("Mac14,2", Some(DeviceKind::AppleSiliconMac)),
            ("MacBookAir10,1", Some(DeviceKind::AppleSiliconMac)),
            ("MacBookAir9,1", Some(DeviceKind::IntelMac)),
            ("MacBookPro16,1", Some(DeviceKind::IntelMac)),
            ("MacBookPro18,3", Some(DeviceKind::AppleSiliconMac)),
            ("MacBook10,1", Some(DeviceKind::IntelMac)),
            ("iMac20,1", Some(DeviceKind::IntelMac)),
            ("iMac21,1", Some(DeviceKind::AppleSiliconMac)),
            ("iMacPro1,1", Some(DeviceKind::IntelMac)),
            ("MacPro7,1", Some(DeviceKind::IntelMac)),
            ("Macmini9,1", Some(DeviceKind::AppleSiliconMac)),
            ("VirtualMac2,1", Some(DeviceKind::AppleSiliconMac)),
            ("AppleTV11,1", None),
        ];
        for (product, expected) in cases {
            assert_eq!(DeviceKind::of_product(product), expected, "{product}");
        }
    }

    #[test]
    fn compatibility_table() {
        use DeviceKind::{AppleSiliconMac as Silicon, IPad as Pad, IPhone as Phone, IntelMac};
        let ios = [IPhone, IPad];
        let ipad_on_mac = [IPad, AppleSiliconMac];
        let universal = [IPhone, IPad, Mac];
        let mac_only = [Mac];
        let cases: [CompatibilityCase<'_>; 12] = [
            (&ios, Some("15.0"), Phone, "17.5", true),
            (&ios, Some("15.0"), Phone, "14.8", false),
            (&ios, Some("15.0"), Silicon, "14.5", false),
            (&[IPhone], None, Pad, "17.5", false),
            (&ipad_on_mac, Some("15.0"), Silicon, "14.5", true),
            (&ipad_on_mac, Some("15.0"), IntelMac, "14.5", false),
            (&universal, Some("15.0"), IntelMac, "10.15", true),
            (&mac_only, Some("13.0"), Silicon, "14.5", true),
            (&mac_only, Some("13.0"), IntelMac, "12.7", false),
            (&mac_only, Some("13.0"), Phone, "17.5", false),
            (&[], Some("99.0"), Phone, "17.5", false),
            (&[], None, IntelMac, "10.9", true),
        ];
        for (platforms, minimum, device, os, ok) in cases {
            assert_eq!(
                check(platforms, minimum, device, Some(os)).is_ok(),
                ok,
                "{platforms:?} {minimum:?} {device:?} {os}"
            );
        }
    }

    #[test]
    fn reasons_name_the_platforms_and_the_versions() {
        let e = check(&[IPhone, IPad], None, DeviceKind::IntelMac, Some("14.5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the App Store offers this app for iPhone, iPad, and this device is a Mac with an Intel processor"
        );
        let e = check(&[IPhone], Some("15.0"), DeviceKind::IPhone, Some("14.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the app's current version needs iOS 15.0 or later, and this device runs 14.0"
        );
    }

    #[test]
    fn versions_compare_number_by_number() {
        assert!(version_at_least("10.15.7", "10.15"));
        assert!(!version_at_least("10.15.7", "11.0"));
        assert!(version_at_least("17", "16.4"));
        assert!(version_at_least("garbage", "99"));
    }
}
