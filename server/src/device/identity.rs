//! Device authentication policy, wrapped around the check-in and command cores: the TLS
//! layer proves the certificate chains to our CA; here the certificate must be the one
//! bound to an enrollment, and that enrollment's UDID must be the one in the message.

use orchard_protocol::Udid;

use crate::store::{EnrollmentStatus, Standing, Store, StoreError};

/// The identity a device proved in the TLS handshake.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The UDID in the certificate's subject.
    pub udid: Udid,
    /// SHA-256 of the certificate.
    pub fingerprint: String,
}

impl DeviceIdentity {
    /// Reads the identity from a verified client certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Self, DeviceAuthError> {
        let udid = orchard_certs::udid_from_certificate(der)
            .map_err(|_| DeviceAuthError::UnreadableCertificate)?;
        Ok(Self {
            udid,
            fingerprint: orchard_certs::fingerprint(der),
        })
    }
}

/// Why a device request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    /// No client certificate was presented.
    #[error("this endpoint requires the device identity certificate issued at enrollment")]
    NoCertificate,
    /// The certificate has no UDID.
    #[error("the client certificate carries no device UDID")]
    UnreadableCertificate,
    /// The message names another device than the certificate.
    #[error("the message's UDID {message:?} differs from the certificate's UDID {certificate:?}")]
    UdidMismatch {
        /// UDID in the certificate.
        certificate: String,
        /// UDID in the message.
        message: String,
    },
    /// The certificate is not bound to any current enrollment (replaced or never issued here).
    #[error("the client certificate is not bound to a current enrollment; enroll again")]
    NotBound,
    /// The enrollment secret is wrong.
    #[error("the enrollment secret is wrong; ask the administrator for the current one")]
    WrongEnrollmentSecret,
    /// The device checked out and must enroll again.
    #[error("the device has checked out; enroll again")]
    CheckedOut,
}

/// Why [`authorize`] did not let a request through.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The request was refused.
    #[error(transparent)]
    Refused(#[from] DeviceAuthError),
    /// The enrollment could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a request's identity against the UDID its message claims; returns the
/// standing of the enrollment its certificate is bound to.
pub async fn authorize(
    store: &dyn Store,
    identity: &DeviceIdentity,
    claimed: &Udid,
) -> Result<Standing, AuthorizeError> {
    if &identity.udid != claimed {
        return Err(DeviceAuthError::UdidMismatch {
            certificate: identity.udid.0.clone(),
            message: claimed.0.clone(),
        }
        .into());
    }
    let standing = store
        .standing(&identity.fingerprint)
        .await?
        .ok_or(DeviceAuthError::NotBound)?;
    if &standing.udid != claimed {
        return Err(DeviceAuthError::NotBound.into());
    }
    if standing.status == EnrollmentStatus::CheckedOut {
        return Err(DeviceAuthError::CheckedOut.into());
    }
    Ok(standing)
}
