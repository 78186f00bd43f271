//! The device side of identity: key pair and CSR generation, and reading the UDID and
//! fingerprint back from a presented certificate.

use orchard_protocol::Udid;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::CertError;

/// The key type of a device identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA P-256: cheap to sign with, the default.
    #[default]
    P256,
    /// RSA-2048, what Apple's SCEP payloads ask real devices for.
    Rsa2048,
}

/// A fresh device key pair and the CSR that asks for an identity certificate.
#[derive(Debug, Clone)]
pub struct DeviceIdentityRequest {
    /// PKCS#8 private key in PEM; never leaves the device.
    pub key_pem: String,
    /// PKCS#10 request in PEM, subject common name = UDID.
    pub csr_pem: String,
}

impl DeviceIdentityRequest {
    /// Generates a P-256 key and a CSR for `udid`.
    pub fn generate(udid: &Udid) -> Result<Self, CertError> {
        Self::generate_with(udid, KeyAlgorithm::P256)
    }

    /// Generates a key of the given type and a CSR for `udid`.
    pub fn generate_with(udid: &Udid, algorithm: KeyAlgorithm) -> Result<Self, CertError> {
        let key = match algorithm {
            KeyAlgorithm::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyAlgorithm::Rsa2048 => {
                use rsa::pkcs8::{EncodePrivateKey, LineEnding};
                let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                    .map_err(|_| CertError::RsaKey)?;
                let pem = rsa
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|_| CertError::RsaKey)?;
                KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)?
            }
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, udid.as_str());
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem()?,
        })
    }
}

/// Reads the UDID (subject common name) from a DER certificate.
pub fn udid_from_certificate(der: &[u8]) -> Result<Udid, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertError::InvalidCertificate)?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(CertError::MissingUdid)?;
    Ok(Udid(cn.to_owned()))
}

/// When a DER certificate stops being valid.
pub fn not_after(der: &[u8]) -> Result<time::OffsetDateTime, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertError::InvalidCertificate)?;
    Ok(cert.validity().not_after.to_datetime())
}

/// When a DER certificate starts and stops being valid.
pub fn validity(der: &[u8]) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertError::InvalidCertificate)?;
    Ok((
        cert.validity().not_before.to_datetime(),
        cert.validity().not_after.to_datetime(),
    ))
}

/// SHA-256 of a DER certificate, hex: the key that binds a certificate to an enrollment.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertificateAuthority;

    #[test]
    fn device_certificate_carries_the_udid_and_chains_to_the_ca() {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let udid = Udid::from("0000-DEVICE-1");
        let request = DeviceIdentityRequest::generate(&udid).unwrap();
        let issued = ca.sign_device_csr(&request.csr_pem, &udid).unwrap();
        assert_eq!(udid_from_certificate(&issued.cert_der).unwrap(), udid);

        let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(!cert.is_ca());
    }

    #[test]
    fn rsa_identities_are_issued_too() {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let udid = Udid::from("RSA-DEVICE");
        let request = DeviceIdentityRequest::generate_with(&udid, KeyAlgorithm::Rsa2048).unwrap();
        assert!(request.key_pem.contains("BEGIN PRIVATE KEY"));
        let issued = ca.sign_device_csr(&request.csr_pem, &udid).unwrap();
        let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.1"
        );
        assert_eq!(udid_from_certificate(&issued.cert_der).unwrap(), udid);
    }

    #[test]
    fn csr_for_another_udid_is_refused() {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let request = DeviceIdentityRequest::generate(&Udid::from("A")).unwrap();
        let err = ca
            .sign_device_csr(&request.csr_pem, &Udid::from("B"))
            .unwrap_err();
        assert!(matches!(err, CertError::CsrSubjectMismatch { .. }), "{err}");
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let err = ca.sign_device_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            &Udid::from("A"),
        );
        assert!(matches!(err, Err(CertError::InvalidCsr)));
    }

    #[test]
    fn fingerprints_differ_per_certificate() {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let udid = Udid::from("A");
        let one = ca
            .sign_device_csr(
                &DeviceIdentityRequest::generate(&udid).unwrap().csr_pem,
                &udid,
            )
            .unwrap();
        let two = ca
            .sign_device_csr(
                &DeviceIdentityRequest::generate(&udid).unwrap().csr_pem,
                &udid,
            )
            .unwrap();
        assert_ne!(fingerprint(&one.cert_der), fingerprint(&two.cert_der));
        assert_eq!(fingerprint(&one.cert_der).len(), 64);
    }
}
