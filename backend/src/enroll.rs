//! Enrollment: an EnrollRequest frame in, a signed EnrollResponse frame out
//! (docs/WIRE.md §4.3).
//!
//! The checks, in order (the first failure answers):
//!
//! 1. The frame decodes and is an EnrollRequest (else `Other`).
//! 2. Proof of possession: the frame verifies under the public key it
//!    carries, and its device id is the id derived from that key (else
//!    `KeyMismatch`).
//! 3. A device already stored under that id: revoked → `Revoked`; another
//!    key → `KeyMismatch`; the same key → re-enrollment (a new certificate,
//!    which is also how a device renews one before it expires).
//! 4. The certificate is issued (a CSR, if any, must carry the same key:
//!    else `KeyMismatch`). This happens before the token is spent, so a
//!    request the CA refuses does not burn the operator's token.
//! 5. The token is spent atomically (`Store::use_token`): unknown →
//!    `InvalidToken`, past its expiry → `ExpiredToken`, spent → `TokenUsed`.
//!    Re-enrollment needs a valid token too.
//! 6. A new device is stored (a known one gets the new certificate's
//!    serial) and an audit entry written
//!    (`device.enroll`, actor `device:<id>`, the token's creator and label
//!    in the details).
//!
//! Every answer, refusals included, is an EnrollResponse frame signed by the
//! backend's command key and naming the requesting device (the zero id when
//! the request is too broken to name one). Nothing here panics on any input.
//!
//! A re-enrolled device's new certificate serial (and its key, the same one)
//! replace the stored ones (`Store::set_device_identity`), so revoking it
//! puts the certificate in use on the CRL. The TLS front also refuses
//! revoked devices by id ([`crate::pki::Revocations`]), which covers the
//! certificates issued before; an external broker only has the CRL, which
//! lists the current serial.

use std::fmt;
use std::sync::Arc;

use picket_proto::ed25519_dalek::VerifyingKey;
use picket_proto::{
    encode_frame_to_vec, BoundedBytes, BoundedStr, DeviceId, EnrollRejection, EnrollRequest,
    EnrollResponse, Frame, Message, MAX_ERROR_TEXT_LEN,
};
use picket_store::model::{AuditEntry, NewDevice, TokenRefusal};
use picket_store::{token_hash, Store, StoreError};

use crate::pki::{FleetCa, IssuedCert, PkiError};

/// The audit action of an enrollment.
pub const AUDIT_ACTION: &str = "device.enroll";

/// What the backend decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Enrolled (or re-enrolled) with this certificate.
    Accepted {
        /// The certificate issued.
        cert: IssuedCert,
        /// Whether the device was already enrolled with this key.
        reenrolled: bool,
    },
    /// Refused.
    Rejected {
        /// Why, on the wire.
        reason: EnrollRejection,
        /// Details for the operator (sent to the device).
        message: String,
    },
}

impl Decision {
    fn reject(reason: EnrollRejection, message: impl Into<String>) -> Self {
        Self::Rejected {
            reason,
            message: message.into(),
        }
    }
}

/// Handles enrollment requests against a store and the fleet CA.
#[derive(Clone)]
pub struct Enroller {
    /// Where devices, tokens and the audit log live.
    pub store: Arc<dyn Store>,
    /// Issues the certificates and signs the responses.
    pub ca: Arc<FleetCa>,
}

impl fmt::Debug for Enroller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enroller")
            .field("store", &self.store)
            .field("ca", &self.ca)
            .finish()
    }
}

impl Enroller {
    /// An enroller over `store` and `ca`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, ca: Arc<FleetCa>) -> Self {
        Self { store, ca }
    }

    /// Handles one EnrollRequest frame received at `now_ms`; returns the
    /// EnrollResponse frame, signed by the command key, accepted or rejected.
    pub async fn enroll(&self, frame: &[u8], now_ms: i64) -> Vec<u8> {
        let (device, decision) = self.decide(frame, now_ms).await;
        self.response_frame(device, &decision)
    }

    /// Like [`Enroller::enroll`], but returns the decision and the device it
    /// names instead of the frame (for logging, metrics and tests).
    pub async fn decide(&self, frame: &[u8], now_ms: i64) -> (DeviceId, Decision) {
        let (device, decision) = match Frame::decode_exact(frame) {
            Err(e) => (
                DeviceId::default(),
                Decision::reject(EnrollRejection::Other, format!("malformed frame: {e}")),
            ),
            Ok(frame) => {
                let device = frame.device_id();
                (device, self.decide_frame(&frame, now_ms).await)
            }
        };
        match &decision {
            Decision::Accepted { cert, reenrolled } => tracing::info!(
                %device, serial = %cert.serial_hex, reenrolled, "device enrolled"
            ),
            Decision::Rejected { reason, message } => tracing::info!(
                %device, ?reason, %message, "enrollment refused"
            ),
        }
        (device, decision)
    }

    async fn decide_frame(&self, frame: &Frame<'_>, now_ms: i64) -> Decision {
        let request = match frame.message_unverified() {
            Ok(Message::EnrollRequest(r)) => r,
            Ok(other) => {
                return Decision::reject(
                    EnrollRejection::Other,
                    format!("expected an EnrollRequest frame, got {:?}", other.kind()),
                )
            }
            Err(e) => {
                return Decision::reject(
                    EnrollRejection::Other,
                    format!("malformed EnrollRequest: {e}"),
                )
            }
        };
        let device = frame.device_id();

        // Proof of possession (docs/WIRE.md §4.3).
        let Ok(key) = VerifyingKey::from_bytes(&request.public_key) else {
            return Decision::reject(
                EnrollRejection::KeyMismatch,
                "the public key is not a valid ed25519 key",
            );
        };
        if frame.verify(&key).is_err() {
            return Decision::reject(
                EnrollRejection::KeyMismatch,
                "the frame is not signed by the public key it carries",
            );
        }
        let derived = DeviceId::from_public_key(&key);
        if derived != device {
            return Decision::reject(
                EnrollRejection::KeyMismatch,
                format!("the frame names device {device} but the key belongs to {derived}"),
            );
        }

        match self.decide_verified(device, &request, now_ms).await {
            Ok(decision) => decision,
            Err(e) => {
                tracing::error!(%device, error = %e, "enrollment failed on a store error");
                Decision::reject(
                    EnrollRejection::Other,
                    "internal error in the backend; try again later",
                )
            }
        }
    }

    async fn decide_verified(
        &self,
        device: DeviceId,
        request: &EnrollRequest<'_>,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        let id = device.to_string();
        let existing = self.store.device(&id).await?;
        if let Some(d) = &existing {
            if d.revoked_ms.is_some() {
                return Ok(Decision::reject(
                    EnrollRejection::Revoked,
                    format!("device {id} was revoked; it cannot enroll again"),
                ));
            }
            if d.public_key != request.public_key {
                return Ok(Decision::reject(
                    EnrollRejection::KeyMismatch,
                    format!("device {id} is enrolled with another key"),
                ));
            }
        }

        let csr = request.csr_der.map(|c| c.as_bytes());
        let cert = match self.ca.issue_device_cert(&device, &request.public_key, csr) {
            Ok(cert) => cert,
            Err(e @ PkiError::KeyMismatch { .. }) => {
                return Ok(Decision::reject(
                    EnrollRejection::KeyMismatch,
                    e.to_string(),
                ))
            }
            Err(e @ PkiError::InvalidCsr { .. }) => {
                return Ok(Decision::reject(EnrollRejection::Other, e.to_string()))
            }
            Err(e) => {
                tracing::error!(%device, error = %e, "issuing a device certificate failed");
                return Ok(Decision::reject(
                    EnrollRejection::Other,
                    "internal error in the backend's CA; try again later",
                ));
            }
        };

        let token = match self
            .store
            .use_token(&token_hash(request.token.as_str()), &id, now_ms)
            .await?
        {
            Ok(token) => token,
            Err(refusal) => {
                let (reason, message) = match refusal {
                    TokenRefusal::Invalid => {
                        (EnrollRejection::InvalidToken, "unknown enrollment token")
                    }
                    TokenRefusal::Expired => (
                        EnrollRejection::ExpiredToken,
                        "the enrollment token has expired",
                    ),
                    TokenRefusal::Used => (
                        EnrollRejection::TokenUsed,
                        "the enrollment token was already used",
                    ),
                };
                return Ok(Decision::reject(reason, message));
            }
        };

        let mut reenrolled = existing.is_some();
        if !reenrolled {
            let new = NewDevice {
                id: id.clone(),
                hostname: request.hostname.as_str().to_owned(),
                public_key: request.public_key.to_vec(),
                cert_serial: cert.serial_hex.clone(),
                agent_version: request.agent_version.as_str().to_owned(),
                enrolled_ms: now_ms,
            };
            match self.store.insert_device(new).await {
                Ok(_) => {}
                // A concurrent request of the same device (with another
                // token) stored it first: the same key, so a re-enrollment.
                Err(StoreError::Conflict { .. }) => reenrolled = true,
                Err(e) => return Err(e),
            }
        }
        if reenrolled {
            let d = self
                .store
                .set_device_identity(&id, &request.public_key, &cert.serial_hex)
                .await?;
            // Revoked since the check above: the certificate must not go out.
            if d.revoked_ms.is_some() {
                return Ok(Decision::reject(
                    EnrollRejection::Revoked,
                    format!("device {id} was revoked; it cannot enroll again"),
                ));
            }
        }

        let entry = AuditEntry {
            id: 0,
            at_ms: now_ms,
            actor: format!("device:{id}"),
            action: AUDIT_ACTION.to_owned(),
            target: id.clone(),
            detail: serde_json::json!({
                "hostname": request.hostname.as_str(),
                "agent_version": request.agent_version.as_str(),
                "cert_serial": cert.serial_hex,
                "reenrolled": reenrolled,
                "token_id": token.id,
                "token_label": token.label,
                "token_created_by": token.created_by,
            }),
        };
        if let Err(e) = self.store.audit(&entry).await {
            // The device is enrolled; losing the audit line must not make it
            // retry with a spent token.
            tracing::error!(%device, error = %e, "writing the enrollment audit entry failed");
        }
        Ok(Decision::Accepted { cert, reenrolled })
    }

    /// Encodes `decision` as an EnrollResponse frame to `device`, signed by
    /// the command key.
    #[must_use]
    pub fn response_frame(&self, device: DeviceId, decision: &Decision) -> Vec<u8> {
        let key = self.ca.command_key();
        let encoded = match decision {
            Decision::Accepted { cert, .. } => {
                match (
                    BoundedBytes::new(cert.der.as_ref()),
                    BoundedBytes::new(self.ca.ca_der().as_ref()),
                ) {
                    (Ok(certificate_der), Ok(ca_certificate_der)) => encode_frame_to_vec(
                        &Message::EnrollResponse(EnrollResponse::Accepted {
                            certificate_der,
                            ca_certificate_der,
                        }),
                        device,
                        key,
                    ),
                    _ => Err(picket_proto::Error::BufferTooSmall),
                }
            }
            Decision::Rejected { reason, message } => encode_frame_to_vec(
                &Message::EnrollResponse(EnrollResponse::Rejected {
                    reason: *reason,
                    message: BoundedStr::<MAX_ERROR_TEXT_LEN>::truncated(message),
                }),
                device,
                key,
            ),
        };
        match encoded {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(%device, error = %e, "encoding the enrollment response failed");
                encode_frame_to_vec(
                    &Message::EnrollResponse(EnrollResponse::Rejected {
                        reason: EnrollRejection::Other,
                        message: BoundedStr::truncated("internal error in the backend"),
                    }),
                    device,
                    key,
                )
                .unwrap_or_default()
            }
        }
    }
}
