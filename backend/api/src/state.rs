//! The state every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell, Semaphore, SemaphorePermit};

use crate::auth::hash_password;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ApiContext;

/// How many argon2 computations may run at once. Each takes
/// `PasswordParams::memory_kib` of memory and one core for tens of
/// milliseconds; on the 2-core appliance-class backend host a burst of logins
/// must not starve ingest.
const CONCURRENT_HASHES: usize = 2;

#[derive(Debug)]
pub(crate) struct Shared {
    pub ctx: ApiContext,
    pub metrics: Metrics,
    pub open_agents: Arc<crate::agents::OpenAgents>,
    pub setup_lock: Mutex<()>,
    hash_slots: Semaphore,
    dummy_hash: OnceCell<String>,
}

/// Cheap to clone handle on [`Shared`].
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(ctx: ApiContext) -> Self {
        Self(Arc::new(Shared {
            ctx,
            metrics: Metrics::default(),
            open_agents: Arc::default(),
            setup_lock: Mutex::new(()),
            hash_slots: Semaphore::new(CONCURRENT_HASHES),
            dummy_hash: OnceCell::new(),
        }))
    }

    pub(crate) async fn hash_permit(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.hash_slots
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(format!("hash semaphore: {e}")))
    }

    /// A hash of a random password with the configured cost, computed once:
    /// logins for unknown users verify against it.
    pub(crate) async fn dummy_hash(&self) -> Result<String, ApiError> {
        let params = self.ctx.config.password;
        self.dummy_hash
            .get_or_try_init(|| async move {
                let pw = crate::auth::random_token();
                tokio::task::spawn_blocking(move || hash_password(&pw, &params))
                    .await
                    .map_err(|e| ApiError::Internal(format!("hash task: {e}")))?
            })
            .await
            .cloned()
    }
}
