//! The one error type of the certs crate.

use std::path::PathBuf;

/// What went wrong making, reading or checking a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The certificate signing request does not parse or its signature is wrong.
    #[error("the certificate signing request is not a valid signed PKCS#10 request in PEM")]
    InvalidCsr,
    /// The CSR's subject common name is not the UDID the device enrolls with.
    #[error(
        "the certificate signing request's common name {found:?} does not match the UDID {expected:?}"
    )]
    CsrSubjectMismatch {
        /// The UDID of the enrollment.
        expected: String,
        /// The common name in the CSR.
        found: String,
    },
    /// An RSA key could not be generated or encoded.
    #[error("RSA key generation failed")]
    RsaKey,
    /// A certificate could not be parsed.
    #[error("the certificate is not valid X.509 DER")]
    InvalidCertificate,
    /// A certificate's subject has no common name to read a UDID from.
    #[error("the certificate's subject has no common name (UDID)")]
    MissingUdid,
}
