//! `picketctl bundle push` and `picketctl rollout …`: the backend's REST API
//! (`/api/v1/bundles`, `/api/v1/rollouts`) with a bearer token
//! (`picket-backend create-token` or a login).
//!
//! Answers are passed through as JSON values: the backend's OpenAPI
//! document (`/api/v1/openapi.json`) is their schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::BundleCmdError;

/// Where the backend is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// Bearer token.
    pub token: String,
    /// CA certificate (PEM) to verify an `https://` backend with instead of
    /// the web PKI roots.
    pub ca_file: Option<PathBuf>,
}

/// A 2xx answer.
enum Answer {
    Json(Value),
    Bytes(Vec<u8>),
}

/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

impl Remote {
    /// Reads the token from `token_file` (first line, trimmed).
    ///
    /// # Errors
    /// The file cannot be read or is empty.
    pub fn new(
        url: &str,
        token_file: &Path,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, BundleCmdError> {
        let token = std::fs::read_to_string(token_file).map_err(|source| BundleCmdError::Io {
            path: token_file.to_owned(),
            source,
        })?;
        let token = token.lines().next().unwrap_or_default().trim().to_owned();
        if token.is_empty() {
            return Err(BundleCmdError::Usage(format!(
                "{}: no token in the file",
                token_file.display()
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(BundleCmdError::Usage(format!(
                "backend URL {url:?} must start with http:// or https://"
            )));
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            ca_file,
        })
    }

    fn agent(&self) -> Result<ureq::Agent, BundleCmdError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(120)));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).map_err(|source| BundleCmdError::Io {
                path: ca.clone(),
                source,
            })?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(BundleCmdError::Usage(format!(
                    "{}: no PEM certificate",
                    ca.display()
                )));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        Ok(config.build().into())
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        binary: bool,
    ) -> Result<Answer, BundleCmdError> {
        let url = format!("{}{path}", self.url);
        let what = format!("{method} {path}");
        let agent = self.agent()?;
        let auth = format!("Bearer {}", self.token);
        let transport = |e: ureq::Error| BundleCmdError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut resp = match (method, body) {
            ("GET", _) => agent
                .get(&url)
                .header("Authorization", &auth)
                .call()
                .map_err(transport)?,
            (_, Some((content_type, bytes))) => agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", content_type)
                .send(&bytes[..])
                .map_err(transport)?,
            (_, None) => agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty()
                .map_err(transport)?,
        };
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(transport)?;
        if (200..300).contains(&status) && binary {
            return Ok(Answer::Bytes(bytes));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            return Err(BundleCmdError::Backend {
                what,
                status,
                message,
            });
        }
        Ok(Answer::Json(value))
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, BundleCmdError> {
        match self.request(method, path, body, false)? {
            Answer::Json(v) => Ok(v),
            Answer::Bytes(_) => Err(BundleCmdError::Usage("unexpected binary answer".into())),
        }
    }

    /// `POST /api/v1/bundles` with the file's bytes; then, with `rollout`,
    /// `POST /api/v1/rollouts` for its version.
    ///
    /// # Errors
    /// The file cannot be read, or the backend refuses (its message).
    pub fn push(&self, file: &Path, rollout: Option<&Value>) -> Result<Value, BundleCmdError> {
        let bytes = std::fs::read(file).map_err(|source| BundleCmdError::Io {
            path: file.to_owned(),
            source,
        })?;
        let bundle = self.call(
            "POST",
            "/api/v1/bundles",
            Some(("application/octet-stream", bytes)),
        )?;
        let mut out = serde_json::json!({ "bundle": bundle });
        if let Some(spec) = rollout {
            let version = out["bundle"]["version"].clone();
            let body = serde_json::json!({ "version": version, "spec": spec });
            let r = self.call(
                "POST",
                "/api/v1/rollouts",
                Some(("application/json", body.to_string().into_bytes())),
            )?;
            out["rollout"] = r;
        }
        Ok(out)
    }

    /// One rollout's progress, or (without `id`) the newest rollout's.
    ///
    /// # Errors
    /// No rollout, or the backend refuses.
    pub fn status(&self, id: Option<i64>) -> Result<Value, BundleCmdError> {
        let id = match id {
            Some(id) => id,
            None => self
                .call("GET", "/api/v1/rollouts", None)?
                .as_array()
                .and_then(|a| a.first())
                .and_then(|r| r["id"].as_i64())
                .ok_or_else(|| BundleCmdError::Usage("the backend has no rollouts".into()))?,
        };
        self.call("GET", &format!("/api/v1/rollouts/{id}"), None)
    }

    /// Rolls a rollout back: devices refuse older versions (rollback
    /// protection), so the rules and settings of bundle `to` (default: the
    /// newest bundle older than the rollout's) are sealed again as a new
    /// version above every pushed one, signed with `keys`, pushed, and
    /// rolled out to every targeted device at once; the rollout is aborted
    /// first if it is still open.
    ///
    /// # Errors
    /// No earlier bundle, a bundle file that does not decode, or the
    /// backend refuses.
    pub fn rollback(
        &self,
        id: i64,
        to: Option<u64>,
        keys: &[picket_bundle::ed25519_dalek::SigningKey],
        valid_secs: u64,
    ) -> Result<Value, BundleCmdError> {
        let progress = self.status(Some(id))?;
        let rolled = progress["rollout"]["version"].as_u64().unwrap_or(0);
        let bundles = self.call("GET", "/api/v1/bundles", None)?;
        let versions: Vec<u64> = bundles
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["version"].as_u64())
            .collect();
        let newest = versions.iter().copied().max().unwrap_or(0);
        let to = match to {
            Some(v) => v,
            None => versions
                .iter()
                .copied()
                .filter(|v| *v < rolled)
                .max()
                .ok_or_else(|| {
                    BundleCmdError::Usage(format!("no bundle older than {rolled} to roll back to"))
                })?,
        };
        let path = format!("/api/v1/bundles/{to}/file");
        let Answer::Bytes(old) = self.request("GET", &path, None, true)? else {
            return Err(BundleCmdError::Usage(format!("{path}: not a bundle file")));
        };
        let here = PathBuf::from(format!("bundle {to}"));
        let format = |source| BundleCmdError::Format {
            path: here.clone(),
            source,
        };
        let signed = picket_bundle::SignedBundle::decode(&old).map_err(format)?;
        let manifest = signed.unverified_manifest().map_err(format)?;
        let (settings, files) =
            picket_bundle::decode_payload(&signed.payload_bytes).map_err(format)?;
        let now = super::now_unix();
        let version = newest + 1;
        let mut sealed = picket_bundle::Bundle::new(
            version,
            now,
            now.saturating_add(valid_secs),
            manifest.targets,
            files,
            settings,
        )
        .seal()
        .map_err(format)?;
        for k in keys {
            sealed.sign(k);
        }
        let state = progress["rollout"]["state"].as_str().unwrap_or("");
        if state == "running" || state == "paused" {
            self.act(id, "abort")?;
        }
        let bundle = self.call(
            "POST",
            "/api/v1/bundles",
            Some(("application/octet-stream", sealed.encode())),
        )?;
        let body = serde_json::json!({ "version": version, "spec": { "stages": [100] } });
        let rollout = self.call(
            "POST",
            "/api/v1/rollouts",
            Some(("application/json", body.to_string().into_bytes())),
        )?;
        Ok(serde_json::json!({
            "rolled_back": rolled,
            "content_of": to,
            "bundle": bundle,
            "rollout": rollout,
        }))
    }

    /// `pause`, `resume`, `promote` or `abort`.
    ///
    /// # Errors
    /// The backend refuses (unknown rollout, not allowed in its state).
    pub fn act(&self, id: i64, action: &str) -> Result<Value, BundleCmdError> {
        self.call("POST", &format!("/api/v1/rollouts/{id}/{action}"), None)
    }
}

/// A one-line summary of a rollout progress answer.
#[must_use]
pub fn progress_text(p: &Value) -> String {
    let r = &p["rollout"];
    let stages: Vec<String> = r["spec"]["stages"]
        .as_array()
        .map(|a| a.iter().map(|s| format!("{s}%")).collect())
        .unwrap_or_default();
    let stage = r["status"]["stage"].as_u64().unwrap_or(0);
    let states: Vec<String> = p["states"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let mut out = format!(
        "rollout {} of bundle {}: {}, stage {} of {} ({}), {} of {} targeted devices assigned: {}",
        r["id"],
        r["version"],
        r["state"].as_str().unwrap_or("?"),
        stage + 1,
        stages.len(),
        stages.join(" → "),
        p["assigned"],
        p["targeted"],
        if states.is_empty() {
            "none yet".to_owned()
        } else {
            states.join(", ")
        }
    );
    if let Some(f) = p["failure_percent"].as_f64() {
        out.push_str(&format!("; failures {f:.1} %"));
    }
    if let Some(reason) = r["status"]["reason"].as_str() {
        out.push_str(&format!("\nreason: {reason}"));
    }
    for f in p["failures"].as_array().into_iter().flatten().take(10) {
        out.push_str(&format!(
            "\nfailed {}: {}",
            f["device_id"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("")
        ));
    }
    out
}
