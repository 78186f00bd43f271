//! Random secrets the server hands out: admin tokens, the shared enrollment secret and
//! enrollment tokens.

use base64::Engine;
use rand::RngCore;

/// 32 random bytes, URL-safe base64 without padding.
pub fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
