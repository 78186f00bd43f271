//! XML plist encoding and dictionary helpers shared by every channel.

use plist::{Dictionary, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ProtocolError, bounded};

/// Encodes a message as an XML property list.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(512);
    plist::to_writer_xml(&mut out, message)?;
    Ok(out)
}

/// Reads a property list (XML or binary) whose top level must be a dictionary, within
/// the device channels' limits.
pub(crate) fn decode_dictionary(bytes: &[u8]) -> Result<Dictionary, ProtocolError> {
    match bounded::decode(bytes, bounded::Limits::DEVICE)? {
        Value::Dictionary(dict) => Ok(dict),
        _ => Err(ProtocolError::NotADictionary),
    }
}

/// Reads a string key that must be present.
pub(crate) fn required_string(
    dict: &Dictionary,
    key: &'static str,
) -> Result<String, ProtocolError> {
    match dict.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ProtocolError::InvalidValue { key }),
        None => Err(ProtocolError::MissingKey { key }),
    }
}

/// Turns a dictionary into a typed message.
pub(crate) fn typed<T: DeserializeOwned>(dict: Dictionary) -> Result<T, ProtocolError> {
    Ok(plist::from_value(&Value::Dictionary(dict))?)
}

/// Turns a typed message into a dictionary.
pub(crate) fn to_dictionary<T: Serialize>(message: &T) -> Result<Dictionary, ProtocolError> {
    match plist::to_value(message)? {
        Value::Dictionary(dict) => Ok(dict),
        _ => Err(ProtocolError::NotADictionary),
    }
}
