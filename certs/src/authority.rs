//! The certificate authority: it signs the server's TLS certificate and every device
//! identity certificate, so one trust anchor serves both directions of mutual TLS.

use orchard_protocol::Udid;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::CertError;

/// How long device identity certificates are valid.
const DEVICE_CERT_VALIDITY: Duration = Duration::days(365);
/// How long the server's TLS certificate is valid.
const SERVER_CERT_VALIDITY: Duration = Duration::days(825);
/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);

/// A certificate with (for generated key pairs) its private key, in PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate in PEM.
    pub cert_pem: String,
    /// The certificate in DER.
    pub cert_der: CertificateDer<'static>,
    /// The PKCS#8 private key in PEM, when the authority generated the key.
    pub key_pem: Option<String>,
}

/// An ECDSA P-256 certificate authority.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Orchard");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let cert_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CertError::InvalidCertificate)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate in PEM (what devices and clients pin).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a TLS server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCertificate, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for name in names {
            params
                .subject_alt_names
                .push(match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(name.as_str().try_into()?),
                });
        }
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("orchard-server", String::as_str),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + SERVER_CERT_VALIDITY;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: Some(key.serialize_pem()),
        })
    }

    /// Issues a device identity certificate for a CSR. The CSR must be validly signed and
    /// name `udid` as its common name; everything else it asks for is ignored, so a device
    /// cannot obtain a CA or server certificate.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        udid: &Udid,
    ) -> Result<IssuedCertificate, CertError> {
        self.sign_device_csr_at(csr_pem, udid, OffsetDateTime::now_utc())
    }

    /// [`Self::sign_device_csr`] valid from `now` (the issuer's clock) for a year.
    pub fn sign_device_csr_at(
        &self,
        csr_pem: &str,
        udid: &Udid,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|_| CertError::InvalidCsr)?;
        let found = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(|v| match v {
                rcgen::DnValue::Utf8String(s) => Some(s.clone()),
                rcgen::DnValue::PrintableString(p) => Some(p.as_str().to_owned()),
                _ => None,
            })
            .unwrap_or_default();
        if found != udid.as_str() {
            return Err(CertError::CsrSubjectMismatch {
                expected: udid.0.clone(),
                found,
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, udid.as_str());
        dn.push(DnType::OrganizationName, "Orchard device identity");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + DEVICE_CERT_VALIDITY;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: None,
        })
    }
}
