//! Integration tests against a real Mosquitto over TLS (issue 4's tests).
//!
//! Needs `mosquitto` on the PATH (Debian: `apt-get install mosquitto`); each
//! test starts its own broker on free ports with certificates made by rcgen.

// Helpers outside `#[test]` functions are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test harness: failing loudly is the point"
)]

mod common;
mod crash;
mod delivery;
mod eviction;
mod fleet_link;
mod recovery;
mod tls;
