//! The messages, one per [`MessageKind`], and their postcard bodies.

use serde::{Deserialize, Serialize};

use crate::batch::AlertBatch;
use crate::limits::{
    MAX_BUNDLE_CHUNK_LEN, MAX_CERT_LEN, MAX_COMMAND_LINE_LEN, MAX_COMMAND_NAME_LEN, MAX_CSR_LEN,
    MAX_ERROR_TEXT_LEN, MAX_EVENT_FIELDS, MAX_FIELD_KEY_LEN, MAX_FIELD_VALUE_LEN, MAX_HOSTNAME_LEN,
    MAX_MODULES, MAX_MODULE_NAME_LEN, MAX_PATH_LEN, MAX_REPLY_OUTPUT_LEN, MAX_RULE_ID_LEN,
    MAX_RULE_TITLE_LEN, MAX_TECHNIQUES, MAX_TOKEN_LEN, MAX_USER_LEN, MAX_VERSION_LEN,
};
use crate::{AlertId, BoundedBytes, BoundedStr, CommandId, Error, IpAddr, Level, TechniqueId};

/// The message kind byte of a frame header (docs/WIRE.md §Message kinds).
///
/// Who signs a kind is fixed: device kinds by the device key, backend kinds by
/// the fleet's command key ([`MessageKind::signer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum MessageKind {
    /// [`AlertBatch`], device to backend.
    AlertBatch = 1,
    /// [`Heartbeat`], device to backend.
    Heartbeat = 2,
    /// [`EnrollRequest`], device to backend.
    EnrollRequest = 3,
    /// [`EnrollResponse`], backend to device.
    EnrollResponse = 4,
    /// [`BundleAnnounce`], backend to device (retained).
    BundleAnnounce = 5,
    /// [`BundleChunk`], backend to device.
    BundleChunk = 6,
    /// [`BundleAck`], device to backend.
    BundleAck = 7,
    /// [`Command`], backend to device.
    Command = 8,
    /// [`CommandReply`], device to backend.
    CommandReply = 9,
}

/// Which key signs a message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The device identity key of the device the frame names.
    Device,
    /// The fleet backend's command key, pinned on the device.
    Backend,
}

impl MessageKind {
    /// Every kind, in wire order.
    pub const ALL: [MessageKind; 9] = [
        Self::AlertBatch,
        Self::Heartbeat,
        Self::EnrollRequest,
        Self::EnrollResponse,
        Self::BundleAnnounce,
        Self::BundleChunk,
        Self::BundleAck,
        Self::Command,
        Self::CommandReply,
    ];

    /// The kind for a header byte.
    ///
    /// # Errors
    /// [`Error::UnknownKind`] for a byte this version does not define.
    pub const fn from_u8(b: u8) -> Result<Self, Error> {
        Ok(match b {
            1 => Self::AlertBatch,
            2 => Self::Heartbeat,
            3 => Self::EnrollRequest,
            4 => Self::EnrollResponse,
            5 => Self::BundleAnnounce,
            6 => Self::BundleChunk,
            7 => Self::BundleAck,
            8 => Self::Command,
            9 => Self::CommandReply,
            found => return Err(Error::UnknownKind { found }),
        })
    }

    /// The header byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Which key signs frames of this kind.
    #[must_use]
    pub const fn signer(self) -> Signer {
        match self {
            Self::EnrollResponse | Self::BundleAnnounce | Self::BundleChunk | Self::Command => {
                Signer::Backend
            }
            _ => Signer::Device,
        }
    }
}

/// One detection, as the appliance reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert<'a> {
    /// Unique id; the backend de-duplicates redelivered alerts on it.
    pub id: AlertId,
    /// Per-device sequence number, strictly increasing in production order.
    pub seq: u64,
    /// When the event happened, milliseconds since the Unix epoch (device clock).
    pub timestamp_ms: u64,
    /// Severity of the rule that fired.
    pub level: Level,
    /// The rule's id (a Sigma UUID or a local name).
    #[serde(borrow)]
    pub rule_id: BoundedStr<'a, MAX_RULE_ID_LEN>,
    /// The rule's title.
    #[serde(borrow)]
    pub rule_title: BoundedStr<'a, MAX_RULE_TITLE_LEN>,
    /// ATT&CK techniques the rule is tagged with.
    pub techniques: heapless::Vec<TechniqueId, MAX_TECHNIQUES>,
    /// The event that matched.
    #[serde(borrow)]
    pub event: Event<'a>,
}

/// The event behind an alert: typed for the common sources, key/value for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event<'a> {
    /// A process started.
    Process(#[serde(borrow)] ProcessEvent<'a>),
    /// A file was touched.
    File(#[serde(borrow)] FileEvent<'a>),
    /// A network connection or flow.
    Network(#[serde(borrow)] NetworkEvent<'a>),
    /// Any other source, as key/value fields.
    Fields(#[serde(borrow)] Fields<'a>),
}

/// Key/value fields of an event, at most [`MAX_EVENT_FIELDS`].
pub type Fields<'a> = heapless::Vec<Field<'a>, MAX_EVENT_FIELDS>;

/// One key/value field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field<'a> {
    /// Field name, in the rule engine's field vocabulary.
    #[serde(borrow)]
    pub key: BoundedStr<'a, MAX_FIELD_KEY_LEN>,
    /// Field value.
    #[serde(borrow)]
    pub value: BoundedStr<'a, MAX_FIELD_VALUE_LEN>,
}

/// A process creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent<'a> {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Executable path.
    #[serde(borrow)]
    pub image: BoundedStr<'a, MAX_PATH_LEN>,
    /// Command line, arguments joined by spaces.
    #[serde(borrow)]
    pub command_line: BoundedStr<'a, MAX_COMMAND_LINE_LEN>,
    /// Parent's executable path.
    #[serde(borrow)]
    pub parent_image: Option<BoundedStr<'a, MAX_PATH_LEN>>,
    /// Parent's command line.
    #[serde(borrow)]
    pub parent_command_line: Option<BoundedStr<'a, MAX_COMMAND_LINE_LEN>>,
    /// Working directory.
    #[serde(borrow)]
    pub cwd: Option<BoundedStr<'a, MAX_PATH_LEN>>,
    /// User name, when the sensor resolved it.
    #[serde(borrow)]
    pub user: Option<BoundedStr<'a, MAX_USER_LEN>>,
    /// Further fields.
    #[serde(borrow)]
    pub extra: Fields<'a>,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileAction {
    /// Created.
    Create,
    /// Opened for reading.
    Read,
    /// Written.
    Write,
    /// Deleted.
    Delete,
    /// Renamed to `target_path`.
    Rename,
    /// Mode or owner changed.
    Chmod,
}

/// A file operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent<'a> {
    /// Acting process id.
    pub pid: u32,
    /// Acting user id.
    pub uid: u32,
    /// Acting process's executable path.
    #[serde(borrow)]
    pub image: BoundedStr<'a, MAX_PATH_LEN>,
    /// What happened.
    pub action: FileAction,
    /// The file.
    #[serde(borrow)]
    pub path: BoundedStr<'a, MAX_PATH_LEN>,
    /// New path of a rename.
    #[serde(borrow)]
    pub target_path: Option<BoundedStr<'a, MAX_PATH_LEN>>,
    /// Further fields.
    #[serde(borrow)]
    pub extra: Fields<'a>,
}

/// Transport protocol of a network event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
    /// Another IP protocol number.
    Other(u8),
}

/// Direction of a network event, seen from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Initiated by the device or a process on it.
    Outbound,
    /// Initiated by a peer.
    Inbound,
}

/// A network connection or flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEvent<'a> {
    /// Process id (0 for traffic forwarded by the gateway).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Executable path, empty for forwarded traffic.
    #[serde(borrow)]
    pub image: BoundedStr<'a, MAX_PATH_LEN>,
    /// Transport protocol.
    pub transport: Transport,
    /// Who initiated it.
    pub direction: Direction,
    /// Source address.
    pub src_ip: IpAddr,
    /// Source port (0 when the transport has none).
    pub src_port: u16,
    /// Destination address.
    pub dst_ip: IpAddr,
    /// Destination port (0 when the transport has none).
    pub dst_port: u16,
    /// Destination host name, when known (DNS or SNI).
    #[serde(borrow)]
    pub dst_host: Option<BoundedStr<'a, MAX_HOSTNAME_LEN>>,
    /// Further fields.
    #[serde(borrow)]
    pub extra: Fields<'a>,
}

/// State of one appliance module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModuleState {
    /// Switched off by configuration.
    Disabled,
    /// Starting up.
    Starting,
    /// Working.
    Running,
    /// Working with reduced coverage (see `error`).
    Degraded,
    /// Stopped on an error (see `error`).
    Failed,
}

/// One module's line in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleStatus<'a> {
    /// Module name (`process`, `file`, `network`, ...).
    #[serde(borrow)]
    pub name: BoundedStr<'a, MAX_MODULE_NAME_LEN>,
    /// Its state.
    pub state: ModuleState,
    /// Why it is degraded or failed.
    #[serde(borrow)]
    pub error: Option<BoundedStr<'a, MAX_ERROR_TEXT_LEN>>,
}

/// Periodic device health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat<'a> {
    /// Heartbeat counter since the agent started; with `uptime_secs` it lets
    /// the backend spot replays.
    pub seq: u64,
    /// When it was sent, milliseconds since the Unix epoch (device clock).
    pub sent_at_ms: u64,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Agent version string.
    #[serde(borrow)]
    pub agent_version: BoundedStr<'a, MAX_VERSION_LEN>,
    /// Highest protocol version the agent speaks.
    pub protocol_version: u8,
    /// Rule-bundle version running, `None` before the first bundle.
    pub rule_bundle_version: Option<u64>,
    /// Alerts waiting in the spool.
    pub spool_depth: u64,
    /// Bytes the spool uses on disk.
    pub spool_bytes: u64,
    /// Alerts evicted from the spool since it was created.
    pub spool_evictions_total: u64,
    /// Kernel ring-buffer records lost since the agent started.
    pub lost_kernel_records_total: u64,
    /// Module states.
    #[serde(borrow)]
    pub modules: heapless::Vec<ModuleStatus<'a>, MAX_MODULES>,
    /// Agent CPU use over the last interval, in thousandths of one core
    /// (may exceed 1000 on several cores).
    pub cpu_permille: u32,
    /// Agent resident set size, bytes.
    pub rss_bytes: u64,
}

/// A device asks to join the fleet. Signed by the key it carries (proof of
/// possession); the frame's device id must be that key's [`DeviceId`](crate::DeviceId).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest<'a> {
    /// One-time enrollment token from the operator.
    #[serde(borrow)]
    pub token: BoundedStr<'a, MAX_TOKEN_LEN>,
    /// The device's ed25519 public key.
    pub public_key: [u8; 32],
    /// A DER PKCS#10 request for the device certificate, when the device
    /// wants to choose the subject; otherwise the backend builds one for the key.
    #[serde(borrow)]
    pub csr_der: Option<BoundedBytes<'a, MAX_CSR_LEN>>,
    /// Host name, for the inventory.
    #[serde(borrow)]
    pub hostname: BoundedStr<'a, MAX_HOSTNAME_LEN>,
    /// Agent version string.
    #[serde(borrow)]
    pub agent_version: BoundedStr<'a, MAX_VERSION_LEN>,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EnrollRejection {
    /// The token is unknown.
    InvalidToken,
    /// The token has expired.
    ExpiredToken,
    /// The token was already used.
    TokenUsed,
    /// The device id does not belong to the key, or the CSR's key differs.
    KeyMismatch,
    /// This device was revoked.
    Revoked,
    /// Anything else; see the message.
    Other,
}

/// The backend's answer to an [`EnrollRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse<'a> {
    /// Enrolled.
    Accepted {
        /// The device certificate, DER.
        #[serde(borrow)]
        certificate_der: BoundedBytes<'a, MAX_CERT_LEN>,
        /// The fleet CA certificate that signed it, DER.
        #[serde(borrow)]
        ca_certificate_der: BoundedBytes<'a, MAX_CERT_LEN>,
    },
    /// Refused.
    Rejected {
        /// Why.
        reason: EnrollRejection,
        /// Details for the operator.
        #[serde(borrow)]
        message: BoundedStr<'a, MAX_ERROR_TEXT_LEN>,
    },
}

/// The newest rule bundle for this device (retained, so a reconnecting device
/// sees only the newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleAnnounce {
    /// Bundle version, monotonically increasing.
    pub version: u64,
    /// SHA-256 of the whole bundle file.
    pub sha256: [u8; 32],
    /// Bundle size, bytes.
    pub total_len: u64,
    /// Size of every chunk but the last, bytes (at most [`MAX_BUNDLE_CHUNK_LEN`]).
    pub chunk_len: u32,
    /// Number of chunks.
    pub chunk_count: u32,
}

/// One piece of a rule bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleChunk<'a> {
    /// Bundle version this chunk belongs to.
    pub version: u64,
    /// Chunk index, from 0.
    pub index: u32,
    /// The bytes.
    #[serde(borrow)]
    pub data: BoundedBytes<'a, MAX_BUNDLE_CHUNK_LEN>,
}

/// A device's state for one bundle version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BundleState {
    /// Announced, not started.
    Pending,
    /// Chunks arriving.
    Downloading,
    /// Complete, hash and signatures verified, not yet running.
    Verified,
    /// Running.
    Active,
    /// Refused or failed to activate; see `error`.
    Failed,
}

/// A device reports its state for a bundle version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleAck<'a> {
    /// Bundle version.
    pub version: u64,
    /// State reached.
    pub state: BundleState,
    /// Chunks received so far (meaningful while downloading).
    pub chunks_received: u32,
    /// Why it failed.
    #[serde(borrow)]
    pub error: Option<BoundedStr<'a, MAX_ERROR_TEXT_LEN>>,
}

/// What a command asks for.
#[expect(
    clippy::large_enum_variant,
    reason = "boxing needs a heap; commands are rare and decoded one at a time"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandAction<'a> {
    /// Reply, nothing else.
    Ping,
    /// Send a heartbeat now.
    SendHeartbeat,
    /// Try to deliver the spool now.
    FlushSpool,
    /// Restart the agent.
    Restart,
    /// Change the agent's log filter (`info`, `picket=debug`, ...).
    SetLogFilter(#[serde(borrow)] BoundedStr<'a, MAX_FIELD_VALUE_LEN>),
    /// An extension command, by name.
    Custom {
        /// Command name.
        #[serde(borrow)]
        name: BoundedStr<'a, MAX_COMMAND_NAME_LEN>,
        /// Arguments.
        #[serde(borrow)]
        args: Fields<'a>,
    },
}

/// An operator's command to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command<'a> {
    /// Unique id; a device executes an id at most once.
    pub id: CommandId,
    /// When issued, milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// Devices refuse the command after this time (milliseconds since the Unix epoch).
    pub expires_at_ms: u64,
    /// What to do.
    #[serde(borrow)]
    pub action: CommandAction<'a>,
}

/// Outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Accepted; a final reply follows.
    Accepted,
    /// Done.
    Succeeded,
    /// Tried and failed.
    Failed,
    /// Refused (expired, already executed, not allowed).
    Rejected,
    /// This agent does not know the command.
    Unsupported,
}

/// A device's reply to a [`Command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply<'a> {
    /// The command's id.
    pub id: CommandId,
    /// Outcome.
    pub status: CommandStatus,
    /// Human-readable details.
    #[serde(borrow)]
    pub message: Option<BoundedStr<'a, MAX_ERROR_TEXT_LEN>>,
    /// Command output, if any.
    #[serde(borrow)]
    pub output: Option<BoundedBytes<'a, MAX_REPLY_OUTPUT_LEN>>,
}

/// Any message, borrowing its text from the frame it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// Alerts.
    AlertBatch(AlertBatch<'a>),
    /// Health report.
    Heartbeat(Heartbeat<'a>),
    /// Enrollment request.
    EnrollRequest(EnrollRequest<'a>),
    /// Enrollment response.
    EnrollResponse(EnrollResponse<'a>),
    /// Newest rule bundle.
    BundleAnnounce(BundleAnnounce),
    /// Rule bundle piece.
    BundleChunk(BundleChunk<'a>),
    /// Bundle state report.
    BundleAck(BundleAck<'a>),
    /// Operator command.
    Command(Command<'a>),
    /// Command reply.
    CommandReply(CommandReply<'a>),
}

impl<'a> Message<'a> {
    /// The kind byte this message travels under.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        match self {
            Self::AlertBatch(_) => MessageKind::AlertBatch,
            Self::Heartbeat(_) => MessageKind::Heartbeat,
            Self::EnrollRequest(_) => MessageKind::EnrollRequest,
            Self::EnrollResponse(_) => MessageKind::EnrollResponse,
            Self::BundleAnnounce(_) => MessageKind::BundleAnnounce,
            Self::BundleChunk(_) => MessageKind::BundleChunk,
            Self::BundleAck(_) => MessageKind::BundleAck,
            Self::Command(_) => MessageKind::Command,
            Self::CommandReply(_) => MessageKind::CommandReply,
        }
    }

    /// Writes the postcard body (no header, no signature) into `out`,
    /// returning its length.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `out` cannot hold it.
    pub fn encode_body(&self, out: &mut [u8]) -> Result<usize, Error> {
        fn put<T: Serialize>(v: &T, out: &mut [u8]) -> Result<usize, Error> {
            postcard::to_slice(v, out)
                .map(|used| used.len())
                .map_err(|_| Error::BufferTooSmall)
        }
        match self {
            Self::AlertBatch(m) => put(m, out),
            Self::Heartbeat(m) => put(m, out),
            Self::EnrollRequest(m) => put(m, out),
            Self::EnrollResponse(m) => put(m, out),
            Self::BundleAnnounce(m) => put(m, out),
            Self::BundleChunk(m) => put(m, out),
            Self::BundleAck(m) => put(m, out),
            Self::Command(m) => put(m, out),
            Self::CommandReply(m) => put(m, out),
        }
    }

    /// Decodes a body of the given kind; the whole of `body` must be used.
    ///
    /// # Errors
    /// [`Error::MalformedBody`] for an invalid encoding or an over-limit
    /// field, [`Error::TrailingBytes`] when bytes are left over.
    pub fn decode_body(kind: MessageKind, body: &'a [u8]) -> Result<Self, Error> {
        fn take<'a, T: Deserialize<'a>>(kind: MessageKind, body: &'a [u8]) -> Result<T, Error> {
            let (v, rest) =
                postcard::take_from_bytes(body).map_err(|_| Error::MalformedBody { kind })?;
            if rest.is_empty() {
                Ok(v)
            } else {
                Err(Error::TrailingBytes { kind })
            }
        }
        Ok(match kind {
            MessageKind::AlertBatch => Self::AlertBatch(AlertBatch::decode(body)?),
            MessageKind::Heartbeat => Self::Heartbeat(take(kind, body)?),
            MessageKind::EnrollRequest => Self::EnrollRequest(take(kind, body)?),
            MessageKind::EnrollResponse => Self::EnrollResponse(take(kind, body)?),
            MessageKind::BundleAnnounce => Self::BundleAnnounce(take(kind, body)?),
            MessageKind::BundleChunk => Self::BundleChunk(take(kind, body)?),
            MessageKind::BundleAck => Self::BundleAck(take(kind, body)?),
            MessageKind::Command => Self::Command(take(kind, body)?),
            MessageKind::CommandReply => Self::CommandReply(take(kind, body)?),
        })
    }
}
