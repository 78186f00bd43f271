//! Enrollment: an enrollment secret plus a CSR gives a device identity certificate and
//! the MDM payload the device follows from then on.

use orchard_protocol::enroll::{EnrollRequest, EnrollResponse, MdmPayload, ORCHARD_ACCESS_RIGHTS};
use sha2::{Digest, Sha256};

use crate::device::identity::DeviceAuthError;
use crate::error::ServerResult;
use crate::state::ServerState;
use crate::store::{DeviceRecord, EnrollmentStatus};

/// Path of the command channel (`ServerURL`).
pub const SERVER_PATH: &str = "/mdm/connect";
/// Path of the check-in endpoint (`CheckInURL`).
pub const CHECKIN_PATH: &str = "/mdm/checkin";
/// Path of the enrollment endpoint.
pub const ENROLL_PATH: &str = "/mdm/enroll";

/// Handles an enrollment request body; returns the response body.
pub async fn enroll(state: &ServerState, body: &[u8]) -> ServerResult<Vec<u8>> {
    let request = EnrollRequest::from_xml(body)?;
    if Sha256::digest(request.enrollment_secret.as_bytes())
        != Sha256::digest(state.mdm.enrollment_secret.as_bytes())
    {
        return Err(DeviceAuthError::WrongEnrollmentSecret.into());
    }
    let issued = state.ca.sign_device_csr(&request.csr_pem, &request.udid)?;
    let now = state.clock.now();
    state
        .store
        .upsert_enrollment(&DeviceRecord {
            udid: request.udid.clone(),
            serial_number: request.serial_number.clone(),
            product_name: request.product_name.clone(),
            os_version: request.os_version.clone(),
            cert_fingerprint: orchard_certs::fingerprint(&issued.cert_der),
            status: EnrollmentStatus::Enrolled,
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
    tracing::info!(udid = %request.udid, serial = %request.serial_number, "device enrolled");
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
