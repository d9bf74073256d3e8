//! MQTT topics: one versioned root, one subtree per device (docs/WIRE.md §Topics).
//!
//! ```text
//! picket/v1/devices/{device_id}/alerts            device -> backend  AlertBatch
//! picket/v1/devices/{device_id}/heartbeat         device -> backend  Heartbeat
//! picket/v1/devices/{device_id}/enroll            device -> backend  EnrollRequest
//! picket/v1/devices/{device_id}/enroll/response   backend -> device  EnrollResponse
//! picket/v1/devices/{device_id}/bundles/announce  backend -> device  BundleAnnounce (retained)
//! picket/v1/devices/{device_id}/bundles/chunks    backend -> device  BundleChunk
//! picket/v1/devices/{device_id}/acks              device -> backend  BundleAck
//! picket/v1/devices/{device_id}/commands          backend -> device  Command
//! picket/v1/devices/{device_id}/replies           device -> backend  CommandReply
//! ```
//!
//! `{device_id}` is the [`DeviceId`] as 32 lowercase hex digits.

use core::fmt::Write as _;

use crate::limits::MAX_TOPIC_LEN;
use crate::{DeviceId, MessageKind};

/// Root of every topic of this protocol version.
pub const ROOT: &str = "picket/v1";
/// Prefix of every device subtree.
pub const DEVICES: &str = "picket/v1/devices";

/// A topic string, built without a heap.
pub type Topic = heapless::String<MAX_TOPIC_LEN>;

/// Who publishes on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The device publishes, the backend subscribes.
    FromDevice,
    /// The backend publishes, the device subscribes.
    ToDevice,
}

/// One topic of a device's subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Channel {
    /// Alert batches.
    Alerts,
    /// Heartbeats.
    Heartbeat,
    /// Enrollment requests.
    Enroll,
    /// Enrollment responses.
    EnrollResponse,
    /// The newest bundle announcement (retained).
    BundleAnnounce,
    /// Bundle chunks.
    BundleChunks,
    /// Bundle acknowledgements.
    Acks,
    /// Commands.
    Commands,
    /// Command replies.
    Replies,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 9] = [
        Self::Alerts,
        Self::Heartbeat,
        Self::Enroll,
        Self::EnrollResponse,
        Self::BundleAnnounce,
        Self::BundleChunks,
        Self::Acks,
        Self::Commands,
        Self::Replies,
    ];

    /// The topic part after the device id.
    #[must_use]
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Heartbeat => "heartbeat",
            Self::Enroll => "enroll",
            Self::EnrollResponse => "enroll/response",
            Self::BundleAnnounce => "bundles/announce",
            Self::BundleChunks => "bundles/chunks",
            Self::Acks => "acks",
            Self::Commands => "commands",
            Self::Replies => "replies",
        }
    }

    /// The one message kind this channel carries; anything else is refused.
    #[must_use]
    pub const fn kind(self) -> MessageKind {
        match self {
            Self::Alerts => MessageKind::AlertBatch,
            Self::Heartbeat => MessageKind::Heartbeat,
            Self::Enroll => MessageKind::EnrollRequest,
            Self::EnrollResponse => MessageKind::EnrollResponse,
            Self::BundleAnnounce => MessageKind::BundleAnnounce,
            Self::BundleChunks => MessageKind::BundleChunk,
            Self::Acks => MessageKind::BundleAck,
            Self::Commands => MessageKind::Command,
            Self::Replies => MessageKind::CommandReply,
        }
    }

    /// The channel that carries `kind`.
    #[must_use]
    pub const fn for_kind(kind: MessageKind) -> Self {
        match kind {
            MessageKind::AlertBatch => Self::Alerts,
            MessageKind::Heartbeat => Self::Heartbeat,
            MessageKind::EnrollRequest => Self::Enroll,
            MessageKind::EnrollResponse => Self::EnrollResponse,
            MessageKind::BundleAnnounce => Self::BundleAnnounce,
            MessageKind::BundleChunk => Self::BundleChunks,
            MessageKind::BundleAck => Self::Acks,
            MessageKind::Command => Self::Commands,
            MessageKind::CommandReply => Self::Replies,
        }
    }

    /// Who publishes on it.
    #[must_use]
    pub const fn direction(self) -> Direction {
        match self {
            Self::EnrollResponse | Self::BundleAnnounce | Self::BundleChunks | Self::Commands => {
                Direction::ToDevice
            }
            _ => Direction::FromDevice,
        }
    }

    /// Whether publishes are retained (only the bundle announcement).
    #[must_use]
    pub const fn retained(self) -> bool {
        matches!(self, Self::BundleAnnounce)
    }

    /// The MQTT QoS to publish and subscribe with: 1 for everything that
    /// must arrive, 0 for heartbeats (the next one supersedes a lost one).
    #[must_use]
    pub const fn qos(self) -> u8 {
        match self {
            Self::Heartbeat => 0,
            _ => 1,
        }
    }

    /// A filter matching this channel for every device
    /// (`picket/v1/devices/+/alerts`); the backend subscribes with it.
    #[must_use]
    pub fn filter_all_devices(self) -> Topic {
        let mut t = Topic::new();
        // Cannot fail: the longest filter is far below MAX_TOPIC_LEN.
        let _ = write!(t, "{DEVICES}/+/{}", self.suffix());
        t
    }
}

/// The topic of `channel` for `device`.
#[must_use]
pub fn topic(device: DeviceId, channel: Channel) -> Topic {
    let mut t = Topic::new();
    // Cannot fail: MAX_TOPIC_LEN fits the longest suffix (tested).
    let _ = write!(t, "{DEVICES}/{device}/{}", channel.suffix());
    t
}

/// Splits a topic into device and channel; `None` for anything outside this
/// protocol version's layout.
#[must_use]
pub fn parse(topic: &str) -> Option<(DeviceId, Channel)> {
    let rest = topic.strip_prefix(DEVICES)?.strip_prefix('/')?;
    let (id, suffix) = rest.split_once('/')?;
    // Only the canonical lowercase form: two spellings of one device would
    // be two topics to the broker.
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let device = id.parse().ok()?;
    let channel = Channel::ALL.into_iter().find(|c| c.suffix() == suffix)?;
    Some((device, channel))
}
