//! Small value types shared by several messages.

use core::fmt;
use core::marker::PhantomData;
use core::str::FromStr;

use ed25519_dalek::{Digest, Sha512, VerifyingKey};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::TooLong;

macro_rules! id16 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            /// Parses the 32 lowercase or uppercase hex digits `Display` writes.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.as_bytes();
                if s.len() != 32 {
                    return Err(ParseIdError);
                }
                let mut out = [0u8; 16];
                for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
                    *o = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
                }
                Ok(Self(out))
            }
        }
    };
}

fn hex_val(c: u8) -> Result<u8, ParseIdError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ParseIdError),
    }
}

/// A 16-byte id is written as exactly 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected 32 hex digits")]
pub struct ParseIdError;

id16!(
    /// A device's identity: the first 16 bytes of
    /// `SHA-512("picket-device-id/v1" || ed25519 public key)`.
    ///
    /// Derived from the key so a device knows its id (and its topics) before
    /// enrolling, and so the backend can check that an enrollment request's key
    /// and id belong together.
    DeviceId
);
id16!(
    /// An alert's globally unique id; the backend de-duplicates on it.
    AlertId
);
id16!(
    /// A command's unique id, echoed by its reply.
    CommandId
);

const DEVICE_ID_DOMAIN: &[u8] = b"picket-device-id/v1";

impl DeviceId {
    /// The id that belongs to a device's public key.
    #[must_use]
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        let digest = Sha512::new()
            .chain_update(DEVICE_ID_DOMAIN)
            .chain_update(key.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }
}

/// A borrowed string of at most `MAX` bytes.
///
/// Decoding a longer string fails, so every text field's bound is part of its
/// type. Decoding borrows from the frame buffer (no copy, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedStr<'a, const MAX: usize>(&'a str);

impl<'a, const MAX: usize> BoundedStr<'a, MAX> {
    /// Wraps `s`, or refuses it if it is longer than `MAX` bytes.
    ///
    /// # Errors
    /// [`TooLong`] when `s.len() > MAX`.
    pub const fn new(s: &'a str) -> Result<Self, TooLong> {
        if s.len() > MAX {
            Err(TooLong {
                len: s.len(),
                max: MAX,
            })
        } else {
            Ok(Self(s))
        }
    }

    /// Wraps `s`, cut to at most `MAX` bytes on a character boundary.
    ///
    /// Sensors use this for attacker-controlled text (command lines, paths):
    /// an overlong value must still produce an alert, not an error.
    #[must_use]
    pub fn truncated(s: &'a str) -> Self {
        if s.len() <= MAX {
            return Self(s);
        }
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Self(&s[..end])
    }

    /// The string.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedStr<'_, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedStr<'_, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<const MAX: usize> Serialize for BoundedStr<'_, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de: 'a, 'a, const MAX: usize> Deserialize<'de> for BoundedStr<'a, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a, const MAX: usize>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a, const MAX: usize> Visitor<'de> for V<'a, MAX> {
            type Value = BoundedStr<'a, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a borrowed string of at most {MAX} bytes")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                BoundedStr::new(v).map_err(|e| E::invalid_length(e.len, &self))
            }
        }
        deserializer.deserialize_str(V(PhantomData))
    }
}

/// Borrowed bytes, at most `MAX` of them; the byte twin of [`BoundedStr`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BoundedBytes<'a, const MAX: usize>(&'a [u8]);

impl<'a, const MAX: usize> BoundedBytes<'a, MAX> {
    /// Wraps `b`, or refuses it if it is longer than `MAX` bytes.
    ///
    /// # Errors
    /// [`TooLong`] when `b.len() > MAX`.
    pub const fn new(b: &'a [u8]) -> Result<Self, TooLong> {
        if b.len() > MAX {
            Err(TooLong {
                len: b.len(),
                max: MAX,
            })
        } else {
            Ok(Self(b))
        }
    }

    /// The bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedBytes<'_, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<'_, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a, const MAX: usize> Deserialize<'de> for BoundedBytes<'a, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a, const MAX: usize>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a, const MAX: usize> Visitor<'de> for V<'a, MAX> {
            type Value = BoundedBytes<'a, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "borrowed bytes, at most {MAX}")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                BoundedBytes::new(v).map_err(|e| E::invalid_length(e.len, &self))
            }
        }
        deserializer.deserialize_bytes(V(PhantomData))
    }
}

/// A MITRE ATT&CK technique id such as `T1059.004`, stored as two numbers
/// (2–4 bytes on the wire instead of 10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "(u16, u16)", try_from = "(u16, u16)")]
pub struct TechniqueId {
    technique: u16,
    sub: u16,
}

/// A technique id outside `T0000`–`T9999`, sub-technique `.001`–`.999`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an ATT&CK technique id (T#### or T####.###)")]
pub struct TechniqueIdError;

impl TechniqueId {
    /// `T{technique}` with sub-technique `.{sub}` (0 means none).
    ///
    /// # Errors
    /// [`TechniqueIdError`] when `technique > 9999` or `sub > 999`.
    pub const fn new(technique: u16, sub: u16) -> Result<Self, TechniqueIdError> {
        if technique > 9999 || sub > 999 {
            Err(TechniqueIdError)
        } else {
            Ok(Self { technique, sub })
        }
    }

    /// The technique number (1059 in `T1059.004`).
    #[must_use]
    pub const fn technique(&self) -> u16 {
        self.technique
    }

    /// The sub-technique number (4 in `T1059.004`), if any.
    #[must_use]
    pub const fn sub(&self) -> Option<u16> {
        if self.sub == 0 {
            None
        } else {
            Some(self.sub)
        }
    }
}

impl From<TechniqueId> for (u16, u16) {
    fn from(t: TechniqueId) -> Self {
        (t.technique, t.sub)
    }
}

impl TryFrom<(u16, u16)> for TechniqueId {
    type Error = TechniqueIdError;
    fn try_from((technique, sub): (u16, u16)) -> Result<Self, Self::Error> {
        Self::new(technique, sub)
    }
}

impl fmt::Display for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{:04}", self.technique)?;
        if self.sub != 0 {
            write!(f, ".{:03}", self.sub)?;
        }
        Ok(())
    }
}

impl fmt::Debug for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for TechniqueId {
    type Err = TechniqueIdError;

    /// Parses `T1059` or `T1059.004` (the `T` may be lowercase, as in Sigma tags).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn digits(s: &str, n: usize) -> Result<u16, TechniqueIdError> {
            if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TechniqueIdError);
            }
            s.parse().map_err(|_| TechniqueIdError)
        }
        let rest = s
            .strip_prefix('T')
            .or_else(|| s.strip_prefix('t'))
            .ok_or(TechniqueIdError)?;
        let (t, sub) = match rest.split_once('.') {
            Some((t, sub)) => (digits(t, 4)?, digits(sub, 3)?),
            None => (digits(rest, 4)?, 0),
        };
        if sub == 0 && rest.contains('.') {
            return Err(TechniqueIdError);
        }
        Self::new(t, sub)
    }
}

/// Alert severity, in Sigma's order; `Ord` follows severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// Sigma `informational`.
    Informational,
    /// Sigma `low`.
    Low,
    /// Sigma `medium`.
    Medium,
    /// Sigma `high`.
    High,
    /// Sigma `critical`.
    Critical,
}

/// An IP address in the smallest wire form (tag + 4 or 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpAddr {
    /// IPv4, network byte order.
    V4([u8; 4]),
    /// IPv6, network byte order.
    V6([u8; 16]),
}

impl From<core::net::IpAddr> for IpAddr {
    fn from(ip: core::net::IpAddr) -> Self {
        match ip {
            core::net::IpAddr::V4(v4) => Self::V4(v4.octets()),
            core::net::IpAddr::V6(v6) => Self::V6(v6.octets()),
        }
    }
}

impl From<IpAddr> for core::net::IpAddr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(o) => core::net::IpAddr::from(o),
            IpAddr::V6(o) => core::net::IpAddr::from(o),
        }
    }
}
