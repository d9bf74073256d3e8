//! A frame is accepted only under the key of the device it names, and only
//! with every signed byte intact.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use common::{backend_key, device_id, device_key, samples};
use ed25519_dalek::SigningKey;
use picket_proto::{encode_frame_to_vec, DeviceId, Error, Frame, Message, HEADER_LEN};

fn heartbeat_frame() -> Vec<u8> {
    let msg = &samples()[1];
    encode_frame_to_vec(msg, device_id(), &device_key()).unwrap()
}

#[test]
fn a_good_frame_verifies() {
    let f = heartbeat_frame();
    let frame = Frame::decode_exact(&f).unwrap();
    frame.verify(&device_key().verifying_key()).unwrap();
}

#[test]
fn every_tampered_byte_is_refused() {
    let f = heartbeat_frame();
    let key = device_key().verifying_key();
    for i in 0..f.len() {
        let mut t = f.clone();
        t[i] ^= 0x01;
        match Frame::decode_exact(&t) {
            // Header bytes: caught structurally.
            Err(_) => assert!(i < HEADER_LEN, "byte {i}"),
            Ok(frame) => assert!(
                matches!(frame.open(&key), Err(Error::BadSignature { .. })),
                "flipping byte {i} was accepted"
            ),
        }
    }
}

#[test]
fn the_wrong_key_is_refused() {
    let f = heartbeat_frame();
    let frame = Frame::decode_exact(&f).unwrap();
    let other = SigningKey::from_bytes(&[0x33; 32]).verifying_key();
    assert_eq!(
        frame.open(&other),
        Err(Error::BadSignature {
            device_id: device_id()
        })
    );
    assert!(frame.open(&backend_key().verifying_key()).is_err());
}

#[test]
fn a_frame_for_another_device_is_refused() {
    let f = heartbeat_frame();
    let frame = Frame::decode_exact(&f).unwrap();
    let other_key = SigningKey::from_bytes(&[0x44; 32]);
    let other = DeviceId::from_public_key(&other_key.verifying_key());
    // Published on the other device's topic: refused before any crypto.
    assert_eq!(
        frame.open_for(other, &other_key.verifying_key()),
        Err(Error::DeviceMismatch {
            expected: other,
            found: device_id()
        })
    );
}

#[test]
fn a_device_cannot_sign_in_another_devices_name() {
    // The impersonator signs a frame naming the victim with its own key.
    let victim_key = SigningKey::from_bytes(&[0x55; 32]);
    let victim = DeviceId::from_public_key(&victim_key.verifying_key());
    let msg = &samples()[0];
    let forged = encode_frame_to_vec(msg, victim, &device_key()).unwrap();
    let frame = Frame::decode_exact(&forged).unwrap();
    assert_eq!(
        frame.open_for(victim, &victim_key.verifying_key()),
        Err(Error::BadSignature { device_id: victim })
    );

    // Rewriting the device id of a genuine frame breaks its signature too.
    let mut f = heartbeat_frame();
    f[HEADER_LEN..HEADER_LEN + 16].copy_from_slice(victim.as_bytes());
    let frame = Frame::decode_exact(&f).unwrap();
    assert!(matches!(
        frame.open_for(victim, &victim_key.verifying_key()),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn a_signature_cannot_be_moved_to_another_kind() {
    // Same body bytes under another kind byte: the header is signed.
    let mut f = heartbeat_frame();
    f[3] = picket_proto::MessageKind::BundleAck.as_u8();
    let frame = Frame::decode_exact(&f).unwrap();
    assert!(frame.verify(&device_key().verifying_key()).is_err());
}

#[test]
fn enrollment_proves_possession_of_the_key() {
    let msg = samples().into_iter().nth(2).unwrap();
    let f = encode_frame_to_vec(&msg, device_id(), &device_key()).unwrap();
    let frame = Frame::decode_exact(&f).unwrap();
    let Message::EnrollRequest(req) = frame.message_unverified().unwrap() else {
        panic!("not an enroll request");
    };
    let key = ed25519_dalek::VerifyingKey::from_bytes(&req.public_key).unwrap();
    assert_eq!(DeviceId::from_public_key(&key), frame.device_id());
    frame.verify(&key).unwrap();
}

#[test]
fn plain_ed25519_signatures_do_not_verify_as_frame_signatures() {
    // A pure Ed25519 signature by the same key over the same bytes (what TLS
    // or another tool might produce) is not a frame signature.
    use ed25519_dalek::Signer as _;
    let mut f = heartbeat_frame();
    let n = f.len() - 64;
    let sig = device_key().sign(&f[..n]);
    f[n..].copy_from_slice(&sig.to_bytes());
    let frame = Frame::decode_exact(&f).unwrap();
    assert!(frame.verify(&device_key().verifying_key()).is_err());
}
