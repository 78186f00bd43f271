//! Reading property lists from outside without trusting their shape. The bytes are
//! read as a stream of events (XML or binary) and the value is built with an explicit
//! stack, never by recursion; nesting depth, the number of values, the decoded bytes and
//! the length of any one string or data value are counted as the events arrive, and the
//! first limit crossed ends the decoding. A binary plist whose objects share children
//! is counted as it expands, so a few hundred bytes cannot decode into gigabytes.

use std::io::Cursor;

use plist::stream::{BinaryReader, Event, XmlReader};
use plist::{Dictionary, Value};

use crate::ProtocolError;

/// The bounds a decoded property list must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most nested arrays and dictionaries (the top-level dictionary is level 1).
    pub depth: usize,
    /// Most values in all, keys, arrays and dictionaries included.
    pub values: usize,
    /// Most bytes of strings, keys and data in all, counted each time a shared object
    /// is reached again.
    pub decoded_bytes: usize,
    /// Longest single string or data value, in bytes.
    pub value_length: usize,
    /// Text fields with a tighter bound: a string under one of these keys (in any
    /// dictionary) must be at most this many bytes and hold no control characters.
    pub fields: &'static [(&'static str, usize)],
}

/// The device-reported text fields Orchard stores or logs, and how long each may be.
pub const DEVICE_FIELDS: &[(&str, usize)] = &[
    ("UDID", 64),
    ("SerialNumber", 64),
    ("CommandUUID", 128),
    ("MessageType", 64),
    ("Status", 64),
    ("RequestType", 64),
    ("Topic", 256),
    ("PushMagic", 256),
    ("ProductName", 128),
    ("Model", 128),
    ("ModelName", 128),
    ("DeviceName", 256),
    ("OSVersion", 32),
    ("BuildVersion", 32),
    ("Identifier", 256),
    ("Version", 64),
    ("ShortVersion", 64),
    ("Name", 256),
    ("PromptID", 128),
    ("Kind", 64),
    ("Answer", 64),
    ("ShownAt", 64),
    ("AnsweredAt", 64),
    ("Ownership", 32),
];

impl Limits {
    /// The limits of every device channel: far above what a real device sends (an
    /// InstalledApplicationList of a thousand apps is about 20,000 values and 1 MiB),
    /// far below what would hurt the server.
    pub const DEVICE: Self = Self {
        depth: 32,
        values: 200_000,
        decoded_bytes: 8 * 1024 * 1024,
        value_length: 256 * 1024,
        fields: DEVICE_FIELDS,
    };
}

/// Which limit a property list crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Nesting depth.
    Depth,
    /// Number of values.
    Values,
    /// Decoded bytes in all.
    DecodedBytes,
    /// Length of one value.
    ValueLength,
    /// A text field's length or characters.
    Field(&'static str),
}

impl Limit {
    /// What the limit bounds, in words.
    pub fn describe(self) -> String {
        match self {
            Self::Depth => "nesting depth".into(),
            Self::Values => "number of values".into(),
            Self::DecodedBytes => "decoded size in bytes".into(),
            Self::ValueLength => "length of a single value in bytes".into(),
            Self::Field(key) => format!("{key}: printable text of at most this many bytes"),
        }
    }
}

enum Open {
    Array(Vec<Value>),
    Dictionary(Dictionary, Option<String>),
}

struct Builder {
    limits: Limits,
    stack: Vec<Open>,
    root: Option<Value>,
    values: usize,
    bytes: usize,
}

impl Builder {
    fn over(&self, limit: Limit) -> ProtocolError {
        let max = match limit {
            Limit::Depth => self.limits.depth,
            Limit::Values => self.limits.values,
            Limit::DecodedBytes => self.limits.decoded_bytes,
            Limit::ValueLength => self.limits.value_length,
            Limit::Field(key) => self
                .limits
                .fields
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(0, |(_, max)| *max),
        };
        ProtocolError::LimitExceeded { limit, max }
    }

    fn count(&mut self, length: usize) -> Result<(), ProtocolError> {
        self.values += 1;
        if self.values > self.limits.values {
            return Err(self.over(Limit::Values));
        }
        if length > self.limits.value_length {
            return Err(self.over(Limit::ValueLength));
        }
        self.bytes = self.bytes.saturating_add(length);
        if self.bytes > self.limits.decoded_bytes {
            return Err(self.over(Limit::DecodedBytes));
        }
        Ok(())
    }

    fn open(&mut self, collection: Open) -> Result<(), ProtocolError> {
        self.count(0)?;
        if self.stack.len() + 1 > self.limits.depth {
            return Err(self.over(Limit::Depth));
        }
        self.stack.push(collection);
        Ok(())
    }

    fn close(&mut self) -> Result<(), ProtocolError> {
        let value = match self.stack.pop() {
            Some(Open::Array(items)) => Value::Array(items),
            Some(Open::Dictionary(dict, None)) => Value::Dictionary(dict),
            // A key without its value, or a close without an open: the reader lets
            // neither through, but a decoder of outside bytes does not rely on that.
            Some(Open::Dictionary(_, Some(_))) | None => return Err(malformed()),
        };
        self.attach(value)
    }

    fn attach(&mut self, value: Value) -> Result<(), ProtocolError> {
        match self.stack.last_mut() {
            None if self.root.is_none() => {
                self.root = Some(value);
                Ok(())
            }
            None => Err(malformed()),
            Some(Open::Array(items)) => {
                items.push(value);
                Ok(())
            }
            Some(Open::Dictionary(dict, key)) => match key.take() {
                Some(k) => {
                    if let Value::String(text) = &value
                        && let Some((name, max)) =
                            self.limits.fields.iter().find(|(name, _)| *name == k)
                        && (text.len() > *max || text.chars().any(char::is_control))
                    {
                        return Err(self.over(Limit::Field(name)));
                    }
                    dict.insert(k, value);
                    Ok(())
                }
                None => match value {
                    Value::String(k) => {
                        *key = Some(k);
                        Ok(())
                    }
                    _ => Err(malformed()),
                },
            },
        }
    }

    fn event(&mut self, event: Event<'_>) -> Result<(), ProtocolError> {
        match event {
            Event::StartArray(_) => self.open(Open::Array(Vec::new())),
            Event::StartDictionary(_) => self.open(Open::Dictionary(Dictionary::new(), None)),
            Event::EndCollection => self.close(),
            Event::String(s) => {
                self.count(s.len())?;
                self.attach(Value::String(s.into_owned()))
            }
            Event::Data(d) => {
                self.count(d.len())?;
                self.attach(Value::Data(d.into_owned()))
            }
            Event::Boolean(b) => {
                self.count(1)?;
                self.attach(Value::Boolean(b))
            }
            Event::Integer(i) => {
                self.count(8)?;
                self.attach(Value::Integer(i))
            }
            Event::Real(r) => {
                self.count(8)?;
                self.attach(Value::Real(r))
            }
            Event::Date(d) => {
                self.count(8)?;
                self.attach(Value::Date(d))
            }
            Event::Uid(u) => {
                self.count(8)?;
                self.attach(Value::Uid(u))
            }
            // The event type may grow; what Orchard does not know is not a message.
            _ => Err(malformed()),
        }
    }
}

fn malformed() -> ProtocolError {
    ProtocolError::Malformed
}

/// Decodes a property list (XML or binary) within `limits`.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Value, ProtocolError> {
    let mut builder = Builder {
        limits,
        stack: Vec::new(),
        root: None,
        values: 0,
        bytes: 0,
    };
    // Devices send XML or binary property lists; the old ASCII form is not a message.
    let events: Box<dyn Iterator<Item = Result<Event<'static>, plist::Error>>> =
        if bytes.starts_with(b"bplist") {
            Box::new(BinaryReader::new(Cursor::new(bytes)))
        } else {
            Box::new(XmlReader::new(Cursor::new(bytes)))
        };
    for event in events {
        if builder.root.is_some() {
            // Anything after the top-level value.
            return Err(malformed());
        }
        builder.event(event?)?;
    }
    match builder.root {
        Some(value) if builder.stack.is_empty() => Ok(value),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_xml(depth: usize) -> Vec<u8> {
        let mut s = String::from(
            r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>k</key>"#,
        );
        s.push_str(&"<array>".repeat(depth));
        s.push_str(&"</array>".repeat(depth));
        s.push_str("</dict></plist>");
        s.into_bytes()
    }

    /// A binary plist of `levels` arrays, each holding the next one twice: it decodes to
    /// 2^levels leaves from a few bytes per level.
    pub(crate) fn doubling_bplist(levels: u8) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        // Object 0 is the root; object i is an array [i+1, i+1]; the last is a string.
        for i in 0..levels {
            offsets.push(out.len());
            out.extend_from_slice(&[0xA2, i + 1, i + 1]);
        }
        offsets.push(out.len());
        out.extend_from_slice(&[0x51, b'x']);
        let table = out.len();
        for o in &offsets {
            out.push(u8::try_from(*o).unwrap());
        }
        let mut trailer = vec![0u8; 6];
        trailer.push(1); // offset size
        trailer.push(1); // object reference size
        trailer.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
        trailer.extend_from_slice(&0u64.to_be_bytes());
        trailer.extend_from_slice(&(table as u64).to_be_bytes());
        out.extend_from_slice(&trailer);
        out
    }

    #[test]
    fn deep_nesting_stops_at_the_depth_limit_without_recursion() {
        let within = decode(&nested_xml(30), Limits::DEVICE);
        assert!(within.is_ok(), "{within:?}");
        let err = decode(&nested_xml(4000), Limits::DEVICE).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::LimitExceeded {
                limit: Limit::Depth,
                max: 32
            }
        ));
    }

    #[test]
    fn shared_binary_children_are_counted_as_they_expand() {
        let small = doubling_bplist(8);
        let value = decode(&small, Limits::DEVICE).unwrap();
        assert!(matches!(value, Value::Array(_)), "256 leaves decode");
        let bomb = doubling_bplist(30);
        assert!(bomb.len() < 200, "{} bytes", bomb.len());
        let err = decode(&bomb, Limits::DEVICE).unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::LimitExceeded {
                    limit: Limit::Values,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn long_values_and_large_totals_are_refused() {
        let long = format!(
            r#"<plist version="1.0"><dict><key>ProductName</key><string>{}</string></dict></plist>"#,
            "x".repeat(300 * 1024)
        );
        assert!(matches!(
            decode(long.as_bytes(), Limits::DEVICE).unwrap_err(),
            ProtocolError::LimitExceeded {
                limit: Limit::ValueLength,
                ..
            }
        ));
        let tight = Limits {
            decoded_bytes: 6,
            ..Limits::DEVICE
        };
        let two =
            r#"<plist version="1.0"><dict><key>A</key><string>123456</string></dict></plist>"#;
        assert!(matches!(
            decode(two.as_bytes(), tight).unwrap_err(),
            ProtocolError::LimitExceeded {
                limit: Limit::DecodedBytes,
                ..
            }
        ));
    }

    #[test]
    fn text_fields_are_bounded_and_printable() {
        let body = |name: &str| {
            format!(
                r#"<plist version="1.0"><dict><key>MessageType</key><string>Authenticate</string><key>ProductName</key><string>{name}</string></dict></plist>"#
            )
        };
        assert!(decode(body("iPhone15,2").as_bytes(), Limits::DEVICE).is_ok());
        for bad in ["x".repeat(129), "iPhone\nINFO forged".to_owned()] {
            let err = decode(body(&bad).as_bytes(), Limits::DEVICE).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProtocolError::LimitExceeded {
                        limit: Limit::Field("ProductName"),
                        max: 128
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("ProductName"), "{err}");
        }
    }

    #[test]
    fn decodes_what_the_plist_crate_decodes() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>MessageType</key><string>Authenticate</string>
<key>Count</key><integer>-3</integer>
<key>On</key><true/>
<key>Ratio</key><real>0.5</real>
<key>Blob</key><data>AAEC</data>
<key>When</key><date>2026-11-30T12:00:00Z</date>
<key>List</key><array><string>a</string><dict/></array>
</dict></plist>"#;
        let ours = decode(xml, Limits::DEVICE).unwrap();
        let theirs: Value = plist::from_bytes(xml).unwrap();
        assert_eq!(ours, theirs);
        let mut binary = Vec::new();
        plist::to_writer_binary(&mut binary, &theirs).unwrap();
        assert_eq!(decode(&binary, Limits::DEVICE).unwrap(), theirs);
    }
}
