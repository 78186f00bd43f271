//! Newtypes for the identifiers Apple's protocols pass around as bare strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which identifier.
        kind: &'static str,
    },
    /// Longer than the identifier may be.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// Holds a character identifiers never hold (control characters, spaces, quotes).
    #[error("{kind} may hold only letters, digits and - _ . : (found {found:?})")]
    BadCharacter {
        /// Which identifier.
        kind: &'static str,
        /// The character.
        found: char,
    },
}

/// Checks an identifier: 1 to `max` characters, each an ASCII letter or digit or one of
/// `- _ . :` (what UDIDs, serial numbers and UUIDs are made of), so that an identifier
/// can be stored, listed, deleted, put in a path and logged as it is.
fn check_id(kind: &'static str, max: usize, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        Some(found) => Err(IdError::BadCharacter { kind, found }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        ///
        /// Decoding checks it (see [`IdError`]); `From` conversions do not, for values
        /// that come from storage or from the program itself.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Longest valid value.
            pub const MAX_LEN: usize = $max;

            /// The identifier as Apple writes it.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Checks a text from outside and makes it an identifier.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id($kind, $max, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                check_id($kind, $max, &s).map_err(serde::de::Error::custom)?;
                Ok(Self(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some($max))
                    .pattern(Some("^[A-Za-z0-9._:-]+$"))
                    .description(Some(concat!("`", $kind, "`: letters, digits, `-`, `_`, `.` and `:`, at most ", $max, " characters")))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

string_id!(
    /// A device's unique identifier (`UDID`), also the subject of its identity certificate.
    Udid, "UDID", 64
);
string_id!(
    /// A hardware serial number (`SerialNumber`); device-licensed VPP apps are bound to it.
    SerialNumber, "SerialNumber", 64
);
string_id!(
    /// The identifier of one MDM command (`CommandUUID`).
    CommandUuid, "CommandUUID", 128
);

/// An App Store item identifier ("adamId"): an integer in MDM commands (`iTunesStoreID`),
/// a decimal string in Apple's Apps and Books API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdamId(pub u64);

impl fmt::Display for AdamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for AdamId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_at_the_door() {
        assert!(Udid::parse("00008030-001A2D3C0E91802E").is_ok());
        assert!(SerialNumber::parse("C02XK0ABJGH5").is_ok());
        assert!(CommandUuid::parse("7C8B5E0A-2F1D-4E5A-9C3B-1D2E3F4A5B6C").is_ok());
        assert_eq!(Udid::parse(""), Err(IdError::Empty { kind: "UDID" }));
        assert_eq!(
            Udid::parse(&"A".repeat(65)),
            Err(IdError::TooLong {
                kind: "UDID",
                max: 64
            })
        );
        assert_eq!(
            Udid::parse("ABC\nINFO forged log line"),
            Err(IdError::BadCharacter {
                kind: "UDID",
                found: '\n'
            })
        );
        assert!(SerialNumber::parse("SN 1").is_err(), "spaces");
        assert!(Udid::parse("../../etc").is_err(), "slashes");
        let err = plist::from_value::<Udid>(&plist::Value::String(String::new())).unwrap_err();
        assert!(err.to_string().contains("UDID is empty"), "{err}");
    }
}
