//! Picket's eBPF probes and the record format they write.
//!
//! The probes are C programs in `probes/src/*.bpf.c`, compiled with clang
//! for the `bpfel` target with BTF so that the loader can apply CO-RE
//! relocations for the running kernel. The compiled objects are committed in
//! `probes/bpf/` and embedded here, so building Picket never needs clang; CI
//! rebuilds them with `probes/build.sh --check` and fails when a committed
//! object is stale (the convention of Go's `bpf2go`).
//!
//! ```text
//!  kernel                                    user space (picketd)
//!  ─────────────────────────────────────     ─────────────────────────────
//!  tracepoint ─► probe (filters: module on,  ring buffer ─► [`decode`] ─► [`Record`]
//!                interest map, prefixes)  ─►  (one per module)
//!                    │ ring full?
//!                    └► pk_lost counter ───────────► lost-record metrics
//! ```
//!
//! There is one object per module (`process`, `file`, `network`,
//! `syscalls`), each with its own ring buffer, lost counter, config and
//! interest map, so a module the verifier rejects or a ring that overflows
//! never touches another module.
//!
//! Every record is a fixed [`HEADER_SIZE`]-byte header, a [`BODY_SIZE`]-byte
//! body whose meaning depends on the kind, and a tail holding the strings.
//! [`decode`] checks every length and offset: a malformed record is an
//! error, never a panic.
//!
//! ```
//! use picket_probes::{decode, DecodeError};
//! assert!(matches!(decode(&[0u8; 10]), Err(DecodeError::Short { .. })));
//! ```

mod abi;
mod objects;

pub use abi::*;
pub use objects::{Object, FEATURES, OBJECTS};
