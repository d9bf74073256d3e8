//! Integration tests of the API against a real SQLite store: the router is
//! driven with `oneshot`, the WebSocket stream through a real socket on
//! `127.0.0.1:0`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test harness: a failed step should fail the test loudly"
)]

mod agents;
mod alerts;
mod auth;
mod common;
mod inputs;
mod matrix;
mod misc;
mod stream;
