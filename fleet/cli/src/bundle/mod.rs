//! `picketctl keygen`, `picketctl root …` and `picketctl bundle …`: the
//! operator side of signed rule bundles (`docs/BUNDLES.md`, crate
//! [`picket_bundle`]).
//!
//! ```text
//!  keygen ──► KEY (PKCS#8, 0600) + KEY.pub (hex)
//!  root init --key K… --bundle-key B.pub… ──► root.proot (signed by every --key)
//!  root sign / root rotate ──► more signatures / version + 1 signed by old and new keys
//!  bundle build --rules DIR… ──► read *.yml ─► compile ALL with picket_rules (any error:
//!                                refuse, naming file and rule) ─► seal ─► unsigned .pbundle
//!  bundle sign --key K… ──► .pbundle + signatures
//!  bundle verify --root ROOT [--root-update NEW…] ──► the device's checks (TrustStore)
//!  bundle push FILE [--stages 1,10,100] ──► POST /api/v1/bundles (+ /api/v1/rollouts)
//!  rollout status|pause|resume|promote|abort ──► /api/v1/rollouts/{id}[/{action}]
//!  rollout rollback ID --key K ──► old bundle's rules re-sealed as a new version, pushed, 100 %
//! ```
//!
//! Every function returns a report struct that `main.rs` prints as text or
//! JSON (`--json`); nothing here prints.

mod build;
mod error;
mod ops;
mod remote;

pub use build::{build, BuildConfig, BuildReport};
pub use error::BundleCmdError;
pub use ops::{
    keygen, read_secret_keys, root_init, root_rotate, root_sign, root_verify, sign_bundle,
    verify_bundle, KeygenReport, RootConfig, RootReport, SignReport, VerifyConfig, VerifyReport,
};
pub use remote::{progress_text, Remote};

/// Unix seconds now (0 if the clock is before 1970).
#[must_use]
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds in `days` days, saturating.
#[must_use]
pub fn days(days: u64) -> u64 {
    days.saturating_mul(86_400)
}
