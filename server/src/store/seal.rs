//! Secrets at rest: VPP tokens, Apple's notification secrets and the enrollment secret
//! are sealed (ChaCha20-Poly1305, a random nonce per value) with a key that does not
//! live in the database, so a dump of the database or a PostgreSQL replica alone reveals
//! no secret. A stored value reads `sealed:v1:<base64 of nonce and ciphertext>`; a value
//! without the prefix was written before sealing and is sealed again at start.

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "sealed:v1:";

/// Length of a sealing key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key or a sealed value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key is not 32 bytes.
    #[error("the secret key must be {KEY_LEN} bytes (base64: 44 characters)")]
    BadKey,
    /// The value was sealed with another key, or changed.
    #[error(
        "a stored secret does not open with this server's secret key (another key, or changed)"
    )]
    WrongKey,
}

/// Seals and opens secrets with one key.
pub struct Seal {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

impl Seal {
    /// A seal with `key` (32 bytes).
    pub fn new(key: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// A fresh random key.
    pub fn generate_key() -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        // The system's random source failing leaves nothing safe to do.
        if SystemRandom::new().fill(&mut key).is_err() {
            panic!("the system's random source failed");
        }
        key
    }

    /// Whether a stored value is sealed.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Seals a secret for storage.
    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        if self.rng.fill(&mut nonce).is_err() {
            panic!("the system's random source failed");
        }
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .unwrap_or_else(|_| panic!("sealing cannot fail for a value in memory"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        )
    }

    /// For a token's stored secret and notification secret: checks that the sealed ones
    /// open with this key, and when either was stored in clear, both values to store
    /// instead.
    pub fn reseal(
        &self,
        secret: &str,
        notification: Option<&str>,
    ) -> Result<Option<(String, Option<String>)>, SealError> {
        let plain = !Self::is_sealed(secret) || notification.is_some_and(|n| !Self::is_sealed(n));
        let secret = self.open(secret)?;
        let notification = notification.map(|n| self.open(n)).transpose()?;
        Ok(plain.then(|| {
            (
                self.seal(&secret),
                notification.as_deref().map(|n| self.seal(n)),
            )
        }))
    }

    /// Opens a stored value; a value written before sealing is returned as it is.
    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let mut bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::WrongKey)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::WrongKey);
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SealError::WrongKey)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_never_show_the_secret() {
        let seal = Seal::new(&Seal::generate_key()).unwrap();
        let stored = seal.seal("eyJ0b2tlbiI6InNlY3JldCJ9");
        assert!(Seal::is_sealed(&stored));
        assert!(!stored.contains("eyJ0b2tlbiI6InNlY3JldCJ9"));
        assert_ne!(
            stored,
            seal.seal("eyJ0b2tlbiI6InNlY3JldCJ9"),
            "a nonce per value"
        );
        assert_eq!(seal.open(&stored).unwrap(), "eyJ0b2tlbiI6InNlY3JldCJ9");
        let other = Seal::new(&Seal::generate_key()).unwrap();
        assert_eq!(other.open(&stored), Err(SealError::WrongKey));
        assert_eq!(seal.open("legacy plain").unwrap(), "legacy plain");
        assert_eq!(Seal::new(&[0u8; 5]).unwrap_err(), SealError::BadKey);
    }
}
