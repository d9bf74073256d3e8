//! Bytes on the wire for a typical process alert, alone and in a batch of 100,
//! as plain frames and as compressed (`FLAG_DEFLATE`) frames. Run with
//! `--nocapture` to see the figures.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns fail loudly on purpose"
)]

mod common;

use picket_proto::{
    encode_frame_compressed_to_vec, encode_frame_to_vec, AlertBatch, Message, DEFAULT_DEFLATE_LEVEL,
};

fn frame_len(alerts: &[picket_proto::Alert<'_>]) -> (usize, usize) {
    let msg = Message::AlertBatch(AlertBatch::new(alerts).unwrap());
    let (device, key) = (common::device_id(), common::device_key());
    let plain = encode_frame_to_vec(&msg, device, &key).unwrap();
    let packed = encode_frame_compressed_to_vec(&msg, device, &key, DEFAULT_DEFLATE_LEVEL).unwrap();
    (plain.len(), packed.len())
}

#[test]
fn a_typical_process_alert_is_small() {
    let one = [common::process_alert(0)];
    let (single, single_z) = frame_len(&one);
    let hundred: Vec<_> = (0..100).map(common::process_alert).collect();
    let (batch, batch_z) = frame_len(&hundred);
    println!("single alert frame: {single} B ({single_z} B as a compressed frame)");
    println!(
        "batch of 100: {batch} B ({} B/alert), compressed frame {batch_z} B ({} B/alert)",
        batch / 100,
        batch_z / 100
    );
    // Issue 4's goal: <= 100 B per alert, batched and compressed.
    assert!(batch_z / 100 <= 100, "{batch_z} B for 100 alerts");
    assert!(single < 400, "{single} B");
    // The encoder falls back to a plain frame rather than grow one.
    assert!(single_z <= single);
}
