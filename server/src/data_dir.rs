//! The data directory: the SQLite database, the CA and server keys, and the key that
//! seals secrets at rest. It is private to the server's user: created 0700, and an
//! existing one is tightened to 0700 at start; key files are created 0600.

use std::path::Path;

use base64::Engine;

use crate::store::{KEY_LEN, Seal};

/// Creates the data directory (and its parents) if needed and makes it private.
pub fn prepare(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    builder.create(dir)?;
    Ok(())
}

/// The file in the data directory that holds the key sealing secrets at rest.
pub const SECRET_KEY_FILE: &str = "secret.key";

/// Why the secret key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// The key given or found is not 32 bytes of base64.
    #[error("the secret key {origin} is not {KEY_LEN} bytes of base64")]
    Malformed {
        /// Where it came from.
        origin: String,
    },
    /// The key file cannot be read or written.
    #[error("cannot use the secret key file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The key that seals secrets at rest: `configured` (base64, e.g. from
/// `ORCHARD_SECRET_KEY`) when given, else the data directory's key file, created 0600
/// with a random key on first start. Replicas sharing a database must share the key.
pub fn secret_key(dir: &Path, configured: Option<&str>) -> Result<[u8; KEY_LEN], SecretKeyError> {
    if let Some(text) = configured {
        return decode_key(text, "given in ORCHARD_SECRET_KEY");
    }
    let path = dir.join(SECRET_KEY_FILE);
    let io = |source| SecretKeyError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return decode_key(&text, &format!("in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let key = Seal::generate_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            use std::io::Write;
            let text = base64::engine::general_purpose::STANDARD.encode(key);
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(key)
        }
        // Another replica on the same directory made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            decode_key(&text, &format!("in {}", path.display()))
        }
        Err(e) => Err(io(e)),
    }
}

fn decode_key(text: &str, origin: &str) -> Result<[u8; KEY_LEN], SecretKeyError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
        .ok_or_else(|| SecretKeyError::Malformed {
            origin: origin.to_owned(),
        })
}
