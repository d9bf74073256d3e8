//! Bytes on the wire for a typical process alert, alone and in a batch of 100,
//! raw and deflated (the uplink's compression is not part of this crate;
//! miniz_oxide stands in for it here). Run with `--nocapture` to see the figures.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use picket_proto::{encode_frame_to_vec, AlertBatch, Message};

fn frame_len(alerts: &[picket_proto::Alert<'_>]) -> (usize, usize) {
    let msg = Message::AlertBatch(AlertBatch::new(alerts).unwrap());
    let frame = encode_frame_to_vec(&msg, common::device_id(), &common::device_key()).unwrap();
    let deflated = miniz_oxide::deflate::compress_to_vec(&frame, 6);
    (frame.len(), deflated.len())
}

#[test]
fn a_typical_process_alert_is_small() {
    let one = [common::process_alert(0)];
    let (single, single_z) = frame_len(&one);
    let hundred: Vec<_> = (0..100).map(common::process_alert).collect();
    let (batch, batch_z) = frame_len(&hundred);
    println!("single alert frame: {single} B ({single_z} B deflated)");
    println!(
        "batch of 100: {batch} B ({} B/alert), deflated {batch_z} B ({} B/alert)",
        batch / 100,
        batch_z / 100
    );
    // Issue 4's goal: <= 100 B per alert, batched and compressed.
    assert!(batch_z / 100 <= 100, "{batch_z} B for 100 alerts");
    assert!(single < 400, "{single} B");
}
