//! Orchard's push channel, the stand-in for APNs: one long-lived QUIC connection per
//! device (mutual TLS with the device identity), one bidirectional stream carrying
//! length-prefixed JSON frames. The device registers with the `PushMagic` it sent in
//! TokenUpdate; the server wakes it with `{"mdm": PushMagic}`, APNs' MDM payload.

use serde::{Deserialize, Serialize};

/// ALPN protocol name of the push channel.
pub const PUSH_ALPN: &[u8] = b"orchard-push/1";

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 4096;

/// One frame of the push channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PushFrame {
    /// Device to server: listen for wake-ups for this `PushMagic` and topic.
    Register {
        /// The `PushMagic` of the device's last TokenUpdate.
        #[serde(rename = "register")]
        push_magic: String,
        /// The push topic from the MDM payload.
        topic: String,
    },
    /// Server to device: registration accepted.
    Registered {
        /// Always true.
        registered: bool,
    },
    /// Server to device: refused, with the reason; the server closes the connection.
    Refused {
        /// Why.
        refused: String,
    },
    /// Server to device: check in now. Exactly APNs' MDM payload.
    Wake {
        /// The device's `PushMagic`.
        mdm: String,
    },
}

/// Why bytes on the push channel are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushFrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("push frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The payload is not a frame.
    #[error("push frame is not valid JSON of a known shape")]
    Malformed,
}

impl PushFrame {
    /// Encodes the frame with its 2-byte big-endian length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(json.len() + 2);
        out.extend_from_slice(&(json.len() as u16).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }
}

/// Splits a byte stream into frames (sans-IO: feed bytes, take frames).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    /// Adds received bytes.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<PushFrame>, PushFrameError> {
        if self.buffer.len() < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buffer[0], self.buffer[1]]) as usize;
        if len > MAX_FRAME {
            return Err(PushFrameError::TooLarge(len));
        }
        if self.buffer.len() < 2 + len {
            return Ok(None);
        }
        let frame =
            serde_json::from_slice(&self.buffer[2..2 + len]).map_err(|_| PushFrameError::Malformed);
        self.buffer.drain(..2 + len);
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<PushFrame> {
        vec![
            PushFrame::Register {
                push_magic: "MAGIC".into(),
                topic: "com.apple.mgmt.External.x".into(),
            },
            PushFrame::Registered { registered: true },
            PushFrame::Refused {
                refused: "unknown PushMagic".into(),
            },
            PushFrame::Wake {
                mdm: "MAGIC".into(),
            },
        ]
    }

    #[test]
    fn frames_round_trip_even_when_split_byte_by_byte() {
        let bytes: Vec<u8> = all().iter().flat_map(PushFrame::encode).collect();
        let mut decoder = FrameDecoder::default();
        let mut out = Vec::new();
        for b in bytes {
            decoder.push_bytes(&[b]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, all());
    }

    #[test]
    fn wake_is_apns_mdm_payload() {
        let bytes = PushFrame::Wake { mdm: "M".into() }.encode();
        assert_eq!(&bytes[2..], br#"{"mdm":"M"}"#);
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut decoder = FrameDecoder::default();
        decoder.push_bytes(&[0xff, 0xff]);
        assert_eq!(decoder.next_frame(), Err(PushFrameError::TooLarge(0xffff)));
        let mut decoder = FrameDecoder::default();
        decoder.push_bytes(&[0, 3, b'{', b'x', b'}']);
        assert_eq!(decoder.next_frame(), Err(PushFrameError::Malformed));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        // A small deterministic fuzz: every prefix of mixed garbage and frames.
        let mut seed: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut decoder = FrameDecoder::default();
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            decoder.push_bytes(&bytes);
            for _ in 0..4 {
                if !matches!(decoder.next_frame(), Ok(Some(_))) {
                    break;
                }
            }
        }
    }
}
