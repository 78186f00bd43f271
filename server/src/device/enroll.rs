//! Enrollment: an enrollment credential (an admin's enrollment token, or the shared
//! enrollment secret) plus a CSR gives a device identity certificate and the MDM
//! payload the device follows from then on.
//!
//! A UDID with an active enrollment is not enrolled again by whoever holds a
//! credential: only the device itself, presenting its current identity certificate
//! (renewal), or anyone after an admin released the enrollment.

use orchard_protocol::enroll::{EnrollRequest, EnrollResponse, MdmPayload, ORCHARD_ACCESS_RIGHTS};
use sha2::{Digest, Sha256};

use orchard_protocol::Udid;

use crate::device::identity::{DeviceAuthError, DeviceIdentity};
use crate::error::{ServerError, ServerResult};
use crate::state::ServerState;
use crate::store::{DeviceRecord, EnrollmentStatus};

/// Path of the command channel (`ServerURL`).
pub const SERVER_PATH: &str = "/mdm/connect";
/// Path of the check-in endpoint (`CheckInURL`).
pub const CHECKIN_PATH: &str = "/mdm/checkin";
/// Path of the enrollment endpoint.
pub const ENROLL_PATH: &str = "/mdm/enroll";
/// The setting that holds the shared enrollment secret (sealed).
pub const ENROLLMENT_SECRET: &str = "enrollment_secret";

/// Why an enrollment is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The UDID is new here.
    New,
    /// The UDID checked out or an admin released it: a new enrollment replaces it.
    Replacement,
    /// The device renews its identity with its current certificate.
    Renewal,
}

/// Whether a device may enroll as `udid`, given its existing enrollment and the
/// identity certificate the request presented in TLS (if any).
pub fn admission(
    udid: &Udid,
    existing: Option<&DeviceRecord>,
    presented: Option<&DeviceIdentity>,
) -> Result<Admission, ServerError> {
    let Some(existing) = existing else {
        return Ok(Admission::New);
    };
    if presented.is_some_and(|p| &p.udid == udid && p.fingerprint == existing.cert_fingerprint) {
        return Ok(Admission::Renewal);
    }
    match existing.status {
        EnrollmentStatus::CheckedOut | EnrollmentStatus::Released => Ok(Admission::Replacement),
        EnrollmentStatus::Enrolled | EnrollmentStatus::Authenticated | EnrollmentStatus::Active => {
            Err(ServerError::Conflict(format!(
                "UDID {udid} is already enrolled; only the device itself may renew it (with its \
                 current identity certificate), or an admin may release it first \
                 (POST /v1/devices/{udid}/release)"
            )))
        }
    }
}

/// Whether `given` is the shared enrollment secret.
async fn shared_secret_matches(state: &ServerState, given: &str) -> ServerResult<bool> {
    let current = state
        .store
        .secret_setting(ENROLLMENT_SECRET)
        .await?
        .unwrap_or_default();
    Ok(!current.is_empty()
        && Sha256::digest(given.as_bytes()) == Sha256::digest(current.as_bytes()))
}

/// The hash under which an enrollment token is stored.
pub fn enrollment_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Handles an enrollment request body, with the identity certificate the TLS client
/// presented if any; returns the response body.
pub async fn enroll(
    state: &ServerState,
    body: &[u8],
    presented: Option<&DeviceIdentity>,
) -> ServerResult<Vec<u8>> {
    let request = EnrollRequest::from_xml(body)?;
    let now = state.clock.now();
    let existing = state.store.device(&request.udid).await?;
    let admitted = admission(&request.udid, existing.as_ref(), presented);
    let renewal = matches!(admitted, Ok(Admission::Renewal));
    let token_hash = enrollment_token_hash(&request.enrollment_secret);
    let shared = !renewal && shared_secret_matches(state, &request.enrollment_secret).await?;
    // Who may enroll is settled before anything about the UDID is told: a renewal is
    // proven by the current certificate, anything else needs a valid credential.
    if !renewal
        && !shared
        && !state
            .store
            .enrollment_token_admits(&token_hash, &request.serial_number, &request.udid, now)
            .await?
    {
        return Err(DeviceAuthError::WrongEnrollmentSecret.into());
    }
    let admission = admitted?;
    let issued = state
        .ca
        .sign_device_csr_at(&request.csr_pem, &request.udid, now.as_offset())?;
    // One use of the token, taken only once everything else checked out.
    if !renewal
        && !shared
        && !state
            .store
            .consume_enrollment_token(&token_hash, &request.serial_number, &request.udid, now)
            .await?
    {
        return Err(DeviceAuthError::WrongEnrollmentSecret.into());
    }
    let status = match (admission, &existing) {
        // A renewal changes the certificate only: the device stays where it was.
        (Admission::Renewal, Some(d)) => d.status,
        _ => EnrollmentStatus::Enrolled,
    };
    state
        .store
        .upsert_enrollment(&DeviceRecord {
            udid: request.udid.clone(),
            serial_number: request.serial_number.clone(),
            product_name: request.product_name.clone(),
            os_version: request.os_version.clone(),
            platform: crate::store::Platform::of_product(request.product_name.as_deref()),
            cert_fingerprint: orchard_certs::fingerprint(&issued.cert_der),
            status,
            topic: None,
            push_magic: None,
            is_supervised: None,
            ownership: request.ownership.map(|o| o.as_str().to_owned()),
            single_app_mode: request.single_app_mode,
            app_store_allowed: None,
            user_id: None,
            enrolled_at: now,
            last_seen_at: now,
        })
        .await?;
    tracing::info!(udid = %request.udid, serial = %request.serial_number, ?admission, "device enrolled");
    let base = state.mdm.public_url.trim_end_matches('/');
    let identity_uuid = uuid::Uuid::new_v4().to_string();
    let response = EnrollResponse {
        certificate_pem: issued.cert_pem,
        ca_certificate_pem: state.ca.cert_pem().to_owned(),
        push_url: Some(state.mdm.push_url.clone()),
        mdm_payload: MdmPayload {
            payload_type: "com.apple.mdm".into(),
            payload_identifier: "dev.orchard.mdm".into(),
            payload_uuid: uuid::Uuid::new_v4().to_string(),
            payload_version: 1,
            identity_certificate_uuid: identity_uuid,
            topic: state.mdm.topic.clone(),
            server_url: format!("{base}{SERVER_PATH}"),
            check_in_url: Some(format!("{base}{CHECKIN_PATH}")),
            access_rights: ORCHARD_ACCESS_RIGHTS,
            check_out_when_removed: true,
            sign_message: false,
            server_capabilities: Vec::new(),
        },
    };
    Ok(response.to_xml()?)
}
