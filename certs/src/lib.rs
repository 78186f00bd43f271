//! Orchard's PKI: a P-256 certificate authority, the server's TLS certificate, device
//! identity certificates issued from CSRs whose subject carries the device UDID, and
//! the PEM files in the server's data directory.

mod authority;
mod device;
mod error;
mod files;

pub use authority::{CertificateAuthority, IssuedCertificate};
pub use device::{
    DeviceIdentityRequest, KeyAlgorithm, fingerprint, not_after, udid_from_certificate, validity,
};
pub use error::CertError;
pub use files::ServerPki;
