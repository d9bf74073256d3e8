//! Alert batches: built from a slice on the device, decoded lazily on the backend.
//!
//! The body is postcard's encoding of a sequence (a varint count, then each
//! alert), but decoding does not collect the alerts: it checks every one once
//! and keeps the bytes, and [`AlertBatch::iter`] decodes them again one at a
//! time. So a batch of [`MAX_ALERTS_PER_BATCH`] alerts decodes without a heap
//! and with one [`Alert`] on the stack.

use core::fmt;

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::limits::MAX_ALERTS_PER_BATCH;
use crate::{Alert, Error, MessageKind, TooLong};

/// A batch of alerts, at most [`MAX_ALERTS_PER_BATCH`].
#[derive(Clone)]
pub struct AlertBatch<'a> {
    repr: Repr<'a>,
}

#[derive(Clone)]
enum Repr<'a> {
    Slice(&'a [Alert<'a>]),
    // Invariant: `bytes` holds exactly `count` valid postcard alerts.
    Encoded { count: usize, bytes: &'a [u8] },
}

impl<'a> AlertBatch<'a> {
    /// A batch of these alerts, in this order (ascending `seq` by convention).
    ///
    /// # Errors
    /// [`TooLong`] when there are more than [`MAX_ALERTS_PER_BATCH`].
    pub const fn new(alerts: &'a [Alert<'a>]) -> Result<Self, TooLong> {
        if alerts.len() > MAX_ALERTS_PER_BATCH {
            return Err(TooLong {
                len: alerts.len(),
                max: MAX_ALERTS_PER_BATCH,
            });
        }
        Ok(Self {
            repr: Repr::Slice(alerts),
        })
    }

    /// Checks an encoded batch body and wraps it.
    ///
    /// # Errors
    /// [`Error::MalformedBody`] when the count is over the limit or an alert
    /// does not decode; [`Error::TrailingBytes`] when bytes follow the last one.
    pub fn decode(body: &'a [u8]) -> Result<Self, Error> {
        const KIND: MessageKind = MessageKind::AlertBatch;
        let malformed = |_| Error::MalformedBody { kind: KIND };
        let (count, mut rest) = postcard::take_from_bytes::<u32>(body).map_err(malformed)?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > MAX_ALERTS_PER_BATCH {
            return Err(Error::MalformedBody { kind: KIND });
        }
        let alerts = rest;
        for _ in 0..count {
            (_, rest) = postcard::take_from_bytes::<Alert<'_>>(rest).map_err(malformed)?;
        }
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { kind: KIND });
        }
        Ok(Self {
            repr: Repr::Encoded {
                count,
                bytes: alerts,
            },
        })
    }

    /// Number of alerts.
    #[must_use]
    pub const fn len(&self) -> usize {
        match self.repr {
            Repr::Slice(s) => s.len(),
            Repr::Encoded { count, .. } => count,
        }
    }

    /// Whether the batch holds no alert.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The alerts, in batch order.
    #[must_use]
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            repr: self.repr.clone(),
            index: 0,
        }
    }

    /// The alerts, collected.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn to_vec(&self) -> alloc::vec::Vec<Alert<'a>> {
        self.iter().collect()
    }
}

/// Iterator over a batch's alerts.
#[derive(Debug)]
pub struct Iter<'a> {
    repr: Repr<'a>,
    index: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Alert<'a>;

    fn next(&mut self) -> Option<Alert<'a>> {
        match &mut self.repr {
            Repr::Slice(s) => {
                let alert = s.get(self.index)?.clone();
                self.index += 1;
                Some(alert)
            }
            Repr::Encoded { count, bytes } => {
                if self.index >= *count {
                    return None;
                }
                // `decode` already checked these bytes, so this cannot fail;
                // if it somehow did, ending the iteration beats panicking.
                let (alert, rest) = postcard::take_from_bytes::<Alert<'a>>(bytes).ok()?;
                *bytes = rest;
                self.index += 1;
                Some(alert)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let total = match self.repr {
            Repr::Slice(s) => s.len(),
            Repr::Encoded { count, .. } => count,
        };
        let left = total.saturating_sub(self.index);
        (left, Some(left))
    }
}

impl<'a> IntoIterator for &AlertBatch<'a> {
    type Item = Alert<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repr::Slice(s) => write!(f, "Slice({})", s.len()),
            Repr::Encoded { count, bytes } => write!(f, "Encoded({count}, {} bytes)", bytes.len()),
        }
    }
}

impl fmt::Debug for AlertBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for AlertBatch<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for AlertBatch<'_> {}

impl Serialize for AlertBatch<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for alert in self {
            seq.serialize_element(&alert)?;
        }
        seq.end()
    }
}
