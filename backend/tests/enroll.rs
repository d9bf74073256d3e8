//! Enrollment against a real SQLite store and a real fleet CA: every
//! outcome of docs/WIRE.md §4.3, and every answer verifies under the
//! backend's command key.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::sync::Arc;

use picket_backend::enroll::{Decision, Enroller};
use picket_backend::pki::{device_id_of_cert, serial_of_cert, FleetCa, Revocations};
use picket_proto::ed25519_dalek::{SigningKey, VerifyingKey};
use picket_proto::{
    encode_frame_to_vec, BoundedBytes, BoundedStr, DeviceId, EnrollRejection, EnrollRequest,
    EnrollResponse, Frame, Heartbeat, Message,
};
use picket_store::model::AuditFilter;
use picket_store::{token_hash, Store};

const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    ca: Arc<FleetCa>,
    enroller: Enroller,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(picket_store::sqlite::SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
    let ca = Arc::new(FleetCa::load_or_create(&dir.path().join("pki")).unwrap());
    let enroller = Enroller::new(store.clone(), ca.clone());
    Setup {
        _dir: dir,
        store,
        ca,
        enroller,
    }
}

impl Setup {
    async fn token(&self, token: &str, expires_ms: i64) {
        self.store
            .create_token(
                &token_hash(token),
                "site 12",
                "alice",
                NOW - HOUR,
                expires_ms,
            )
            .await
            .unwrap();
    }
}

fn key(seed: u8) -> (SigningKey, DeviceId) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let id = DeviceId::from_public_key(&key.verifying_key());
    (key, id)
}

/// An EnrollRequest carrying `carried`'s public key, naming `id`, signed by `signer`.
fn request(carried: &SigningKey, id: DeviceId, signer: &SigningKey, token: &str) -> Vec<u8> {
    let msg = Message::EnrollRequest(EnrollRequest {
        token: BoundedStr::new(token).unwrap(),
        public_key: carried.verifying_key().to_bytes(),
        csr_der: None,
        hostname: BoundedStr::new("gw-12").unwrap(),
        agent_version: BoundedStr::new("0.1.0").unwrap(),
    });
    encode_frame_to_vec(&msg, id, signer).unwrap()
}

fn simple_request(key: &SigningKey, token: &str) -> Vec<u8> {
    request(
        key,
        DeviceId::from_public_key(&key.verifying_key()),
        key,
        token,
    )
}

/// What the device sees: the frame must verify under the command key and
/// name `device`.
enum Answer {
    Accepted { cert: Vec<u8>, ca: Vec<u8> },
    Rejected(EnrollRejection, String),
}

fn open(ca: &FleetCa, frame: &[u8], device: DeviceId) -> Answer {
    let command = VerifyingKey::from_bytes(&ca.command_public_key()).unwrap();
    let frame = Frame::decode_exact(frame).unwrap();
    match frame.open_for(device, &command).unwrap() {
        Message::EnrollResponse(EnrollResponse::Accepted {
            certificate_der,
            ca_certificate_der,
        }) => Answer::Accepted {
            cert: certificate_der.as_bytes().to_vec(),
            ca: ca_certificate_der.as_bytes().to_vec(),
        },
        Message::EnrollResponse(EnrollResponse::Rejected { reason, message }) => {
            Answer::Rejected(reason, message.as_str().to_owned())
        }
        other => panic!("not an EnrollResponse: {other:?}"),
    }
}

fn rejected(answer: Answer) -> (EnrollRejection, String) {
    match answer {
        Answer::Rejected(r, m) => (r, m),
        Answer::Accepted { .. } => panic!("accepted"),
    }
}

#[tokio::test]
async fn valid_token_enrolls_and_stores_the_device() {
    let s = setup();
    s.token("tok-1", NOW + HOUR).await;
    let (key, id) = key(1);
    let frame = s.enroller.enroll(&simple_request(&key, "tok-1"), NOW).await;
    let Answer::Accepted { cert, ca } = open(&s.ca, &frame, id) else {
        panic!("refused")
    };
    assert_eq!(ca, s.ca.ca_der().to_vec());
    assert_eq!(device_id_of_cert(&cert), Some(id));

    let device = s.store.device(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(device.public_key, key.verifying_key().to_bytes().to_vec());
    assert_eq!(device.hostname, "gw-12");
    assert_eq!(device.enrolled_ms, NOW);
    assert_eq!(Some(device.cert_serial), serial_of_cert(&cert));
    assert_eq!(device.revoked_ms, None);

    let audit = s
        .store
        .audit_log(&AuditFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "device.enroll");
    assert_eq!(audit[0].actor, format!("device:{id}"));
    assert_eq!(audit[0].target, id.to_string());
    assert_eq!(audit[0].detail["token_created_by"], "alice");
}

#[tokio::test]
async fn token_refusals() {
    let s = setup();
    s.token("once", NOW + HOUR).await;
    s.token("stale", NOW - 1).await;
    let (a, a_id) = key(2);
    let (b, b_id) = key(3);

    let frame = s.enroller.enroll(&simple_request(&a, "once"), NOW).await;
    assert!(matches!(open(&s.ca, &frame, a_id), Answer::Accepted { .. }));

    let frame = s.enroller.enroll(&simple_request(&b, "once"), NOW).await;
    assert_eq!(
        rejected(open(&s.ca, &frame, b_id)).0,
        EnrollRejection::TokenUsed
    );

    let frame = s.enroller.enroll(&simple_request(&b, "stale"), NOW).await;
    assert_eq!(
        rejected(open(&s.ca, &frame, b_id)).0,
        EnrollRejection::ExpiredToken
    );

    let frame = s
        .enroller
        .enroll(&simple_request(&b, "never-issued"), NOW)
        .await;
    assert_eq!(
        rejected(open(&s.ca, &frame, b_id)).0,
        EnrollRejection::InvalidToken
    );

    assert!(s.store.device(&b_id.to_string()).await.unwrap().is_none());
}

#[tokio::test]
async fn proof_of_possession_is_required_and_refusal_keeps_the_token() {
    let s = setup();
    s.token("tok", NOW + HOUR).await;
    let (a, a_id) = key(4);
    let (b, b_id) = key(5);

    // Carries a's key and names a, but b signed it.
    let frame = s.enroller.enroll(&request(&a, a_id, &b, "tok"), NOW).await;
    let (reason, message) = rejected(open(&s.ca, &frame, a_id));
    assert_eq!(reason, EnrollRejection::KeyMismatch);
    assert!(message.contains("not signed"), "{message}");

    // Signed by a with a's key, but names b.
    let frame = s.enroller.enroll(&request(&a, b_id, &a, "tok"), NOW).await;
    assert_eq!(
        rejected(open(&s.ca, &frame, b_id)).0,
        EnrollRejection::KeyMismatch
    );

    // The token survived both refusals.
    let frame = s.enroller.enroll(&simple_request(&a, "tok"), NOW).await;
    assert!(matches!(open(&s.ca, &frame, a_id), Answer::Accepted { .. }));
}

#[tokio::test]
async fn revoked_device_cannot_enroll_again_but_a_live_one_can() {
    let s = setup();
    for t in ["t1", "t2", "t3"] {
        s.token(t, NOW + HOUR).await;
    }
    let (key, id) = key(6);
    let frame = s.enroller.enroll(&simple_request(&key, "t1"), NOW).await;
    assert!(matches!(open(&s.ca, &frame, id), Answer::Accepted { .. }));

    // Re-enrollment with the same key and a new token re-issues.
    let (_, decision) = s
        .enroller
        .decide(&simple_request(&key, "t2"), NOW + 1)
        .await;
    assert!(
        matches!(
            decision,
            Decision::Accepted {
                reenrolled: true,
                ..
            }
        ),
        "{decision:?}"
    );

    s.store
        .revoke_device(&id.to_string(), NOW + 2)
        .await
        .unwrap();
    let frame = s
        .enroller
        .enroll(&simple_request(&key, "t3"), NOW + 3)
        .await;
    assert_eq!(
        rejected(open(&s.ca, &frame, id)).0,
        EnrollRejection::Revoked
    );
    // Refusing a revoked device does not spend the token.
    let tokens = s.store.tokens().await.unwrap();
    assert!(tokens
        .iter()
        .any(|t| t.label == "site 12" && t.used_ms.is_none()));
}

#[tokio::test]
async fn reenrollment_records_the_new_certificate_and_revocation_names_it() {
    let s = setup();
    for t in ["first", "second"] {
        s.token(t, NOW + HOUR).await;
    }
    let (key, id) = key(7);
    let (_, first) = s.enroller.decide(&simple_request(&key, "first"), NOW).await;
    let Decision::Accepted { cert: first, .. } = first else {
        panic!("refused: {first:?}")
    };
    let (_, second) = s
        .enroller
        .decide(&simple_request(&key, "second"), NOW + 1)
        .await;
    let Decision::Accepted {
        cert: second,
        reenrolled: true,
    } = second
    else {
        panic!("not a re-enrollment: {second:?}")
    };
    assert_ne!(first.serial_hex, second.serial_hex);
    assert_eq!(
        serial_of_cert(second.der.as_ref()).as_deref(),
        Some(second.serial_hex.as_str())
    );

    // The store follows the certificate in use.
    let stored = s.store.device(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(stored.cert_serial, second.serial_hex);
    assert_eq!(stored.public_key, key.verifying_key().to_bytes().to_vec());
    let audit = s
        .store
        .audit_log(&AuditFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(audit[0].detail["reenrolled"], true);
    assert_eq!(audit[0].detail["cert_serial"], second.serial_hex.as_str());

    // Revoking it puts the current certificate's serial on the CRL.
    let revoked = s
        .store
        .revoke_device(&id.to_string(), NOW + 2)
        .await
        .unwrap();
    assert_eq!(revoked.cert_serial, second.serial_hex);
    let revocations = Revocations::from_devices(&s.store.devices().await.unwrap());
    assert!(revocations.is_revoked_serial(&second.serial_hex));
    assert!(revocations.is_revoked_cert(second.der.as_ref()));
    // The earlier certificate is refused by device id (the TLS front).
    assert!(revocations.is_revoked_cert(first.der.as_ref()));
    let crl = s.ca.crl_der(&revocations).unwrap();
    let serial = hex_bytes(&second.serial_hex);
    assert!(
        crl.windows(serial.len()).any(|w| w == serial.as_slice()),
        "the CRL does not list {}",
        second.serial_hex
    );
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn garbage_gets_a_signed_rejection_never_a_panic() {
    let s = setup();
    let zero = DeviceId::default();
    for junk in [
        &b""[..],
        b"garbage",
        b"PW\x01\x03\xff\xff\xff\xff",
        &[0u8; 200],
    ] {
        let frame = s.enroller.enroll(junk, NOW).await;
        let (reason, message) = rejected(open(&s.ca, &frame, zero));
        assert_eq!(reason, EnrollRejection::Other);
        assert!(message.contains("malformed"), "{message}");
    }

    // A valid frame of another kind.
    let (key, id) = key(7);
    let hb = Message::Heartbeat(Heartbeat {
        seq: 1,
        sent_at_ms: 0,
        uptime_secs: 0,
        agent_version: BoundedStr::new("0.1.0").unwrap(),
        protocol_version: 1,
        rule_bundle_version: None,
        spool_depth: 0,
        spool_bytes: 0,
        spool_evictions_total: 0,
        lost_kernel_records_total: 0,
        modules: picket_proto::heapless::Vec::new(),
        cpu_permille: 0,
        rss_bytes: 0,
    });
    let frame = encode_frame_to_vec(&hb, id, &key).unwrap();
    let (reason, message) = rejected(open(&s.ca, &s.enroller.enroll(&frame, NOW).await, id));
    assert_eq!(reason, EnrollRejection::Other);
    assert!(message.contains("Heartbeat"), "{message}");

    // A CSR that is not one.
    s.token("tok", NOW + HOUR).await;
    let msg = Message::EnrollRequest(EnrollRequest {
        token: BoundedStr::new("tok").unwrap(),
        public_key: key.verifying_key().to_bytes(),
        csr_der: Some(BoundedBytes::new(b"junk").unwrap()),
        hostname: BoundedStr::new("gw").unwrap(),
        agent_version: BoundedStr::new("0.1.0").unwrap(),
    });
    let frame = encode_frame_to_vec(&msg, id, &key).unwrap();
    let (reason, message) = rejected(open(&s.ca, &s.enroller.enroll(&frame, NOW).await, id));
    assert_eq!(reason, EnrollRejection::Other);
    assert!(message.contains("CSR"), "{message}");

    // Every truncation and single-byte corruption of a valid request.
    let good = simple_request(&key, "tok");
    for cut in 0..good.len() {
        let _ = s.enroller.enroll(&good[..cut], NOW).await;
    }
    let mut state = 0x2545_f491_u32;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let mut bad = good.clone();
        let i = state as usize % bad.len();
        bad[i] ^= (state >> 24) as u8 | 1;
        let frame = s.enroller.enroll(&bad, NOW).await;
        Frame::decode_exact(&frame).unwrap();
    }
}
