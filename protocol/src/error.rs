//! The one error type of the protocol crate.

/// Why bytes could not be turned into an Orchard or Apple message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not a well-formed property list.
    #[error("body is not a valid property list: {0}")]
    Plist(#[from] plist::Error),
    /// The property list crosses one of the decoder's limits.
    #[error("the property list exceeds the limit on {} ({max}); nothing of it was used", .limit.describe())]
    LimitExceeded {
        /// Which limit.
        limit: crate::bounded::Limit,
        /// Its value.
        max: usize,
    },
    /// The property list's structure is broken (a key without a value, a value where a
    /// key belongs, more than one top-level value).
    #[error("body is not a valid property list: broken structure")]
    Malformed,
    /// An identifier (UDID, serial number, CommandUUID) is not one.
    #[error("invalid identifier: {0}")]
    InvalidIdentifier(#[from] crate::ids::IdError),
    /// The property list is well formed but its top level is not a dictionary.
    #[error("expected a dictionary at the top level of the property list")]
    NotADictionary,
    /// A key every message of this channel carries is absent.
    #[error("required key {key} is missing")]
    MissingKey {
        /// Apple's name of the missing key.
        key: &'static str,
    },
    /// A key has a value of the wrong type or outside its allowed values.
    #[error("key {key} has an invalid value")]
    InvalidValue {
        /// Apple's name of the key.
        key: &'static str,
    },
}
