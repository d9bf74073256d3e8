//! Test harness: a temp SQLite store, a fake `Fleet`, request helpers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use picket_api::{ApiConfig, ApiContext, Fleet, LiveEvent, PasswordParams};
use picket_store::model::{
    AlertSource, AuditEntry, AuditFilter, Device, DeviceId, Level, NewAlert, NewDevice, Role,
    Session,
};
use picket_store::sqlite::SqliteStore;
use picket_store::{token_hash, Store};
use serde_json::Value;
use tower::ServiceExt as _;

/// Cheap argon2 parameters so the debug-build tests stay fast.
pub const FAST: PasswordParams = PasswordParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

pub const PASSWORD: &str = "correct horse battery";

/// A `Fleet` that records what the API asked of it.
#[derive(Debug)]
pub struct TestFleet {
    pub store: Arc<dyn Store>,
    pub ready: AtomicBool,
    pub revoked: Mutex<Vec<(DeviceId, String)>>,
}

#[async_trait]
impl Fleet for TestFleet {
    async fn enroll(&self, request: &[u8]) -> Vec<u8> {
        let mut out = b"ENROLLED:".to_vec();
        out.extend_from_slice(&request[..request.len().min(8)]);
        out
    }

    fn ca_pem(&self) -> String {
        "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n".into()
    }

    fn command_public_key(&self) -> [u8; 32] {
        [0xab; 32]
    }

    async fn revoke(&self, device: &DeviceId, actor: &str) -> Result<Device, String> {
        self.revoked
            .lock()
            .unwrap()
            .push((device.clone(), actor.to_owned()));
        self.store
            .revoke_device(device, now_ms())
            .await
            .map_err(|e| e.to_string())
    }

    fn metrics(&self) -> String {
        "# TYPE picket_test_fleet_total counter\npicket_test_fleet_total 7\n".into()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

pub struct App {
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub fleet: Arc<TestFleet>,
    pub live: tokio::sync::broadcast::Sender<LiveEvent>,
    pub ctx: ApiContext,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// Asserts a JSON error body with this status and code; returns the message.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.bytes)
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        v["error"].as_str().expect("error message").to_owned()
    }
}

impl App {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(tweak: impl FnOnce(&mut ApiConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db")).unwrap());
        let fleet = Arc::new(TestFleet {
            store: store.clone(),
            ready: AtomicBool::new(true),
            revoked: Mutex::default(),
        });
        let (live, _) = tokio::sync::broadcast::channel(16);
        let mut config = ApiConfig {
            password: FAST,
            ..ApiConfig::default()
        };
        tweak(&mut config);
        let ctx = ApiContext {
            store: store.clone(),
            fleet: fleet.clone(),
            live: live.clone(),
            config,
        };
        Self {
            router: picket_api::router(ctx.clone()),
            store,
            fleet,
            live,
            ctx,
            _dir: dir,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            bytes,
        }
    }

    /// A request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    pub async fn get(&self, uri: &str, token: &str) -> Resp {
        self.call("GET", uri, Some(token), None).await
    }

    /// Creates a user with `PASSWORD` (hashed cheaply).
    pub async fn user(&self, name: &str, role: Role) -> i64 {
        let hash = picket_api::hash_password(PASSWORD, &FAST).unwrap();
        self.store
            .create_user(name, &hash, role, now_ms())
            .await
            .unwrap()
            .id
    }

    /// A fresh session token for a user id, straight into the store.
    pub async fn session(&self, user_id: i64) -> String {
        self.session_expiring(user_id, now_ms() + 3_600_000).await
    }

    pub async fn session_expiring(&self, user_id: i64, expires_ms: i64) -> String {
        let token = format!("{:064x}", rand_u128());
        self.store
            .create_session(&Session {
                token_hash: token_hash(&token),
                user_id,
                created_ms: now_ms(),
                expires_ms,
            })
            .await
            .unwrap();
        token
    }

    /// A user of that role with a fresh session.
    pub async fn login_as(&self, name: &str, role: Role) -> String {
        let id = self.user(name, role).await;
        self.session(id).await
    }

    pub async fn audit(&self, action_prefix: &str) -> Vec<AuditEntry> {
        self.store
            .audit_log(
                &AuditFilter {
                    action_prefix: Some(action_prefix.into()),
                    ..AuditFilter::default()
                },
                1000,
            )
            .await
            .unwrap()
    }

    pub async fn device(&self, id: &str, last_seen_ms: Option<i64>) {
        self.store
            .insert_device(NewDevice {
                id: id.into(),
                hostname: format!("host-{}", &id[..4]),
                public_key: vec![7; 32],
                cert_serial: "01".into(),
                agent_version: "0.1.0".into(),
                enrolled_ms: 1_000,
            })
            .await
            .unwrap();
        if let Some(t) = last_seen_ms {
            self.store.touch_device(id, t).await.unwrap();
        }
    }
}

fn rand_u128() -> u128 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    u128::from(n) << 64 | u128::from(std::process::id())
}

pub fn hex_id(n: u64) -> String {
    format!("{n:032x}")
}

pub fn alert(n: u64, device: &str, ts: i64, level: Level) -> NewAlert {
    NewAlert {
        id: hex_id(0xa000 + n),
        device_id: device.into(),
        seq: n,
        timestamp_ms: ts,
        received_ms: ts + 5,
        level,
        source: if n.is_multiple_of(2) {
            AlertSource::Appliance
        } else {
            AlertSource::Upload
        },
        rule_id: format!("rule-{}", n % 3),
        rule_title: format!("Rule {}", n % 3),
        techniques: vec![if n.is_multiple_of(4) {
            "T1059.004".into()
        } else {
            "T1105".into()
        }],
        image: Some("/usr/bin/bash".into()),
        command_line: Some(format!("bash -c 'curl http://x/{n}'")),
        path: None,
        event: serde_json::json!({ "rule_author": "Florian Roth", "pid": n }),
    }
}

/// Waits for a condition, polling, with a deadline.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
