//! The uplink's configuration and its validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use picket_proto::identity::DeviceIdentity;
use picket_proto::{ModuleState, MAX_ALERTS_PER_BATCH, MAX_FRAME_LEN};

use super::codec::Compression;
use super::session::SessionConfig;

/// Room for the MQTT fixed header, topic and packet id around a frame.
pub const PUBLISH_OVERHEAD: usize = 128;

/// The smallest maximum packet size accepted: a frame must hold at least one
/// sizeable alert.
pub const MIN_MAX_PACKET_BYTES: usize = 16 * 1024;

/// What the appliance contributes to each heartbeat (the uplink fills in the
/// spool figures, versions, uptime and time itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatExtras {
    /// Rule-bundle version running.
    pub rule_bundle_version: Option<u64>,
    /// Kernel ring-buffer records lost since the agent started.
    pub lost_kernel_records_total: u64,
    /// Module states: name, state, error text (truncated to the wire limits).
    pub modules: Vec<(String, ModuleState, Option<String>)>,
    /// CPU use over the last interval, thousandths of one core.
    pub cpu_permille: u32,
    /// Resident set size, bytes; `None` lets the uplink read its own.
    pub rss_bytes: Option<u64>,
}

/// A callback returning the appliance's heartbeat figures.
pub type HeartbeatSource = Arc<dyn Fn() -> HeartbeatExtras + Send + Sync>;

/// Everything the uplink needs. Build with [`UplinkConfig::new`], adjust the
/// public fields, and pass to [`crate::run`].
#[derive(Clone)]
#[non_exhaustive]
pub struct UplinkConfig {
    /// Broker host name or IP address; the server certificate must name it.
    pub broker_host: String,
    /// Broker TLS port.
    pub broker_port: u16,
    /// The pinned fleet CA, PEM: the only trust anchor for the server.
    pub ca_pem: Vec<u8>,
    /// The device's client certificate chain, PEM.
    pub client_cert_pem: Vec<u8>,
    /// The client certificate's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub client_key_pem: Vec<u8>,
    /// The device identity: client id, topics and frame signatures.
    pub identity: DeviceIdentity,
    /// Alerts per batch, 1..=256 (default 256).
    pub batch_max_alerts: usize,
    /// Longest wait for a batch to fill (default 1 s).
    pub batch_delay: Duration,
    /// MQTT maximum packet size, both directions (default: a full frame plus
    /// publish overhead). Batches are cut to fit it.
    pub max_packet_bytes: usize,
    /// Batches awaiting a PUBACK at most (default 8).
    pub inflight_batches: usize,
    /// MQTT keep-alive (default 30 s).
    pub keep_alive: Duration,
    /// Longest wait for a PUBACK before reconnecting (default 60 s).
    pub ack_timeout: Duration,
    /// First reconnect delay (default 1 s).
    pub backoff_initial: Duration,
    /// Longest reconnect delay (default 5 min).
    pub backoff_max: Duration,
    /// Heartbeat period (default 60 s).
    pub heartbeat_interval: Duration,
    /// Alert batch compression (default deflate level 6).
    pub compression: Compression,
    /// Agent version reported in heartbeats (default this crate's).
    pub agent_version: String,
    /// The appliance's heartbeat figures (default: none).
    pub heartbeat_source: Option<HeartbeatSource>,
    /// TCP/TLS/CONNACK timeout (default 10 s).
    pub connect_timeout: Duration,
}

impl fmt::Debug for UplinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("UplinkConfig")
            .field("broker_host", &self.broker_host)
            .field("broker_port", &self.broker_port)
            .field("device_id", &self.identity.device_id())
            .field("batch_max_alerts", &self.batch_max_alerts)
            .field("batch_delay", &self.batch_delay)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("inflight_batches", &self.inflight_batches)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl UplinkConfig {
    /// A config with the defaults listed on each field.
    pub fn new(
        broker_host: impl Into<String>,
        broker_port: u16,
        ca_pem: impl Into<Vec<u8>>,
        client_cert_pem: impl Into<Vec<u8>>,
        client_key_pem: impl Into<Vec<u8>>,
        identity: DeviceIdentity,
    ) -> Self {
        Self {
            broker_host: broker_host.into(),
            broker_port,
            ca_pem: ca_pem.into(),
            client_cert_pem: client_cert_pem.into(),
            client_key_pem: client_key_pem.into(),
            identity,
            batch_max_alerts: MAX_ALERTS_PER_BATCH,
            batch_delay: Duration::from_secs(1),
            max_packet_bytes: MAX_FRAME_LEN + PUBLISH_OVERHEAD,
            inflight_batches: 8,
            keep_alive: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(60),
            compression: Compression::default(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_source: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the values that have limits.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid { field, reason };
        if self.broker_host.is_empty() {
            return Err(invalid("broker_host", "empty".into()));
        }
        if !(1..=MAX_ALERTS_PER_BATCH).contains(&self.batch_max_alerts) {
            return Err(invalid(
                "batch_max_alerts",
                format!(
                    "{} is not in 1..={MAX_ALERTS_PER_BATCH}",
                    self.batch_max_alerts
                ),
            ));
        }
        if self.max_packet_bytes < MIN_MAX_PACKET_BYTES {
            return Err(invalid(
                "max_packet_bytes",
                format!("{} is below {MIN_MAX_PACKET_BYTES}", self.max_packet_bytes),
            ));
        }
        if !(1..=1000).contains(&self.inflight_batches) {
            return Err(invalid(
                "inflight_batches",
                format!("{} is not in 1..=1000", self.inflight_batches),
            ));
        }
        for (field, d) in [
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
            ("heartbeat_interval", self.heartbeat_interval),
            ("ack_timeout", self.ack_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must not be zero".into()));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(invalid("backoff_max", "below backoff_initial".into()));
        }
        if self.keep_alive < Duration::from_secs(5) {
            return Err(invalid("keep_alive", "below 5 s".into()));
        }
        Ok(())
    }

    /// The largest frame that fits the maximum packet size.
    #[must_use]
    pub fn max_frame_len(&self) -> usize {
        self.max_packet_bytes
            .saturating_sub(PUBLISH_OVERHEAD)
            .min(MAX_FRAME_LEN)
    }

    pub(crate) fn session(&self) -> SessionConfig {
        SessionConfig {
            batch_max_alerts: self.batch_max_alerts,
            batch_delay: self.batch_delay,
            inflight_batches: self.inflight_batches,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            heartbeat_interval: self.heartbeat_interval,
            ack_timeout: self.ack_timeout,
        }
    }
}

/// Why the uplink cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field is out of range.
    #[error("uplink config: {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The CA, certificate or key PEM is unusable.
    #[error("uplink TLS: {what}: {reason}")]
    Tls {
        /// Which input.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use picket_proto::ed25519_dalek::SigningKey;

    use super::*;
    use crate::uplink::tls;

    type Breaker = fn(&mut UplinkConfig);

    fn pems() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(p, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    fn config() -> UplinkConfig {
        let (ca, cert, key) = pems();
        let id = DeviceIdentity::from_signing_key(SigningKey::from_bytes(&[1; 32]));
        UplinkConfig::new("broker.example", 8883, ca, cert, key, id)
    }

    #[test]
    fn defaults_are_valid_and_build_a_tls_config() {
        let c = config();
        c.validate().unwrap();
        tls::client_config(&c).unwrap();
        assert_eq!(c.max_frame_len(), MAX_FRAME_LEN);
        // Key material never shows in logs.
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let cases: [(&str, Breaker); 6] = [
            ("batch_max_alerts", |c| c.batch_max_alerts = 0),
            ("batch_max_alerts", |c| c.batch_max_alerts = 257),
            ("max_packet_bytes", |c| c.max_packet_bytes = 1000),
            ("inflight_batches", |c| c.inflight_batches = 0),
            ("backoff_max", |c| c.backoff_max = Duration::from_millis(1)),
            ("keep_alive", |c| c.keep_alive = Duration::from_secs(1)),
        ];
        for (field, break_it) in cases {
            let mut c = config();
            break_it(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn unusable_pem_is_refused_with_its_name() {
        let cases: [(&str, Breaker); 4] = [
            ("fleet CA", |c| c.ca_pem = b"junk".to_vec()),
            ("client certificate", |c| c.client_cert_pem.clear()),
            ("client key", |c| c.client_key_pem = b"junk".to_vec()),
            ("client certificate and key", |c| {
                c.client_key_pem = rcgen::KeyPair::generate()
                    .unwrap()
                    .serialize_pem()
                    .into_bytes();
            }),
        ];
        for (what, break_it) in cases {
            let mut c = config();
            break_it(&mut c);
            match tls::client_config(&c) {
                Err(ConfigError::Tls { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
