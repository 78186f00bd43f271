//! The PEM files in the server's data directory: created on first start, reused after.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{CertError, CertificateAuthority};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";

/// The server's CA and TLS certificate, as loaded from (or written to) its data directory.
#[derive(Debug)]
pub struct ServerPki {
    /// The CA that signs the server and device certificates.
    pub ca: CertificateAuthority,
    /// The server's TLS certificate in PEM.
    pub server_cert_pem: String,
    /// The server's TLS key in PEM.
    pub server_key_pem: String,
    /// Whether this call created the files.
    pub created: bool,
}

impl ServerPki {
    /// Loads the PKI from `dir`, creating whatever is missing. The server certificate
    /// names localhost, 127.0.0.1 and ::1 plus `extra_names`.
    pub fn load_or_create(dir: &Path, extra_names: &[String]) -> Result<Self, CertError> {
        fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca_cert_path = dir.join(CA_CERT);
        let ca_key_path = dir.join(CA_KEY);
        let mut created = false;
        let ca = if ca_cert_path.exists() && ca_key_path.exists() {
            CertificateAuthority::from_pem(&read(&ca_cert_path)?, &read(&ca_key_path)?)?
        } else {
            let ca = CertificateAuthority::generate("Orchard CA")?;
            write(&ca_key_path, ca.key_pem(), true)?;
            write(&ca_cert_path, ca.cert_pem(), false)?;
            created = true;
            ca
        };
        let server_cert_path = dir.join(SERVER_CERT);
        let server_key_path = dir.join(SERVER_KEY);
        let (server_cert_pem, server_key_pem) =
            if !created && server_cert_path.exists() && server_key_path.exists() {
                (read(&server_cert_path)?, read(&server_key_path)?)
            } else {
                let mut names: Vec<String> =
                    ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
                names.extend(
                    extra_names
                        .iter()
                        .filter(|n| !names.contains(n))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                let issued = ca.issue_server(&names)?;
                let key = issued.key_pem.unwrap_or_default();
                write(&server_key_path, &key, true)?;
                write(&server_cert_path, &issued.cert_pem, false)?;
                created = true;
                (issued.cert_pem, key)
            };
        Ok(Self {
            ca,
            server_cert_pem,
            server_key_pem,
            created,
        })
    }

    /// Path of the CA certificate file, which clients pin.
    pub fn ca_cert_path(dir: &Path) -> PathBuf {
        dir.join(CA_CERT)
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a PEM.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    // A leftover from a crash may carry other permissions; start afresh.
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    // Secrets are private from their first byte: created 0600, never widened.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerPki::load_or_create(dir.path(), &["mdm.example.test".into()]).unwrap();
        assert!(first.created);
        let second = ServerPki::load_or_create(dir.path(), &[]).unwrap();
        assert!(!second.created);
        assert_eq!(first.ca.cert_pem(), second.ca.cert_pem());
        assert_eq!(first.server_cert_pem, second.server_cert_pem);
        assert_eq!(first.server_key_pem, second.server_key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(CA_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
