//! Whether an assignment can apply to a device at all (sans-IO): the OS minimums of
//! VPP licensing, what macOS does not allow, and whether the app itself runs on the
//! device (its store platforms and minimum OS). A device that fails gets a per-device
//! "not applicable" status with the reason, before any license is spent; never a
//! silent skip.

use orchard_protocol::store_item::{self, DeviceKind, StorePlatform};

use crate::store::{AppRecord, Candidate, LicenseType};

pub use crate::store::Platform;

/// The platform of a product name such as `iPhone15,2`, `iPad13,18` or `Mac14,2`.
pub fn platform_of(product_name: Option<&str>) -> Platform {
    Platform::of_product(product_name)
}

/// Whether `version` (e.g. `17.5`, `10.15.7`) is at least `minimum`. An unreadable
/// version counts as new enough: the device decides then.
pub fn at_least(version: &str, minimum: &str) -> bool {
    store_item::version_at_least(version, minimum)
}

/// Reason for an iOS device below the minimum of user licensing.
pub const IOS_USER_MINIMUM: &str =
    "not applicable: user-licensed VPP apps need iOS 7 or later on this device";
/// Reason for an iOS device below the minimum of device licensing.
pub const IOS_DEVICE_MINIMUM: &str =
    "not applicable: device-licensed VPP apps need iOS 9 or later on this device";
/// Reason for a Mac below the minimum of user licensing.
pub const MACOS_USER_MINIMUM: &str =
    "not applicable: user-licensed VPP apps need macOS 10.9 or later on this Mac";
/// Reason for a Mac below the minimum of device licensing.
pub const MACOS_DEVICE_MINIMUM: &str =
    "not applicable: device-licensed VPP apps need macOS 10.10 or later on this Mac";
/// Reason for the Uninstall intent on a Mac.
pub const MACOS_UNINSTALL: &str = "not applicable: macOS apps cannot be removed with the Uninstall intent; revoke the license instead (the app stays usable without updates and is removed after a 30-day grace period)";

/// Checks the OS minimum of the candidate's license type.
pub fn check(c: &Candidate) -> Result<(), &'static str> {
    let Some(version) = c.os_version.as_deref() else {
        return Ok(());
    };
    let platform = platform_of(c.product_name.as_deref());
    let (minimum, reason) = match (platform, c.license_type) {
        (Platform::Ios | Platform::IpadOs, LicenseType::User) => ("7.0", IOS_USER_MINIMUM),
        (Platform::Ios | Platform::IpadOs, LicenseType::Device) => ("9.0", IOS_DEVICE_MINIMUM),
        (Platform::MacOs, LicenseType::User) => ("10.9", MACOS_USER_MINIMUM),
        (Platform::MacOs, LicenseType::Device) => ("10.10", MACOS_DEVICE_MINIMUM),
        (Platform::Unknown, _) => return Ok(()),
    };
    if at_least(version, minimum) {
        Ok(())
    } else {
        Err(reason)
    }
}

/// Checks that the app runs on the candidate's device, as the store's metadata says
/// (books are read on every device and are not checked). A device whose product name
/// tells nothing is left to decide for itself.
pub fn runs_on(c: &Candidate, app: &AppRecord) -> Result<(), String> {
    if app.product_type == "Book" {
        return Ok(());
    }
    let Some(device) = c.product_name.as_deref().and_then(DeviceKind::of_product) else {
        return Ok(());
    };
    let platforms: Vec<StorePlatform> = app
        .platforms
        .iter()
        .flat_map(|p| StorePlatform::parse(p))
        .collect();
    store_item::check(
        &platforms,
        app.minimum_os_version.as_deref(),
        device,
        c.os_version.as_deref(),
    )
    .map_err(|e| format!("not applicable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(product: &str, os: &str, license_type: LicenseType) -> Candidate {
        Candidate {
            license_type,
            os_version: Some(os.into()),
            product_name: Some(product.into()),
            ..Candidate::example()
        }
    }

    #[test]
    fn os_minimums_table() {
        use LicenseType::{Device, User};
        let cases = [
            ("iPhone5,1", "6.1.4", User, Err(IOS_USER_MINIMUM)),
            ("iPhone5,1", "7.0", User, Ok(())),
            ("iPhone5,1", "8.4", Device, Err(IOS_DEVICE_MINIMUM)),
            ("iPhone8,1", "9.0", Device, Ok(())),
            ("iPad13,18", "17.5", Device, Ok(())),
            ("Mac14,2", "10.8.5", User, Err(MACOS_USER_MINIMUM)),
            ("Mac14,2", "10.9", User, Ok(())),
            ("iMac14,2", "10.9.5", Device, Err(MACOS_DEVICE_MINIMUM)),
            ("Mac14,2", "10.10", Device, Ok(())),
            ("Mac14,2", "14.5", Device, Ok(())),
            ("Unknown1,1", "1.0", Device, Ok(())),
        ];
        for (product, os, license, expected) in cases {
            assert_eq!(
                check(&device(product, os, license)),
                expected,
                "{product} {os} {license:?}"
            );
        }
    }

    #[test]
    fn the_app_must_run_on_the_device() {
        let app = |platforms: &[&str], minimum: Option<&str>| AppRecord {
            platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
            minimum_os_version: minimum.map(String::from),
            ..AppRecord::example()
        };
        let iphone_app = app(&["iPhone", "iPad"], Some("15.0"));
        let on = |product: &str, os: &str, a: &AppRecord| {
            runs_on(&device(product, os, LicenseType::Device), a)
        };
        assert!(on("iPhone15,2", "17.5", &iphone_app).is_ok());
        let old = on("iPhone12,1", "14.0", &iphone_app).unwrap_err();
        assert!(
            old.starts_with("not applicable: ") && old.contains("iOS 15.0"),
            "{old}"
        );
        let mac = on("Mac14,2", "14.5", &iphone_app).unwrap_err();
        assert!(mac.contains("a Mac with Apple silicon"), "{mac}");
        // Older records hold Apple's asset platforms.
        assert!(
            on(
                "MacBookPro16,1",
                "14.5",
                &app(&["iOS", "macOS"], Some("15.0"))
            )
            .is_ok()
        );
        let mut book = app(&["iPhone"], None);
        book.product_type = "Book".into();
        assert!(on("Mac14,2", "14.5", &book).is_ok());
        assert!(on("Unknown1,1", "1.0", &iphone_app).is_ok());
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(at_least("16.1", "16.0") && !at_least("15.7", "16.0"));
        assert!(at_least("10.10", "10.9"));
        assert!(!at_least("10.9", "10.10"));
        assert!(at_least("17", "9.0"));
        assert!(at_least("garbage", "99.0"));
    }
}
