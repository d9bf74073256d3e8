//! The byte-level primitives of every container (docs/BUNDLES.md §2):
//! little-endian integers and `u32`-length-prefixed byte strings, read from
//! a slice without ever trusting a length before checking it against the
//! bytes left and the limit that applies.

use crate::error::FormatError;

/// Appends the encoding of values to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A count or length; callers have checked it against a limit far
    /// below `u32::MAX`, the saturation is never reached.
    pub(crate) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.raw(v);
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub(crate) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

/// Reads values from a slice; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.rest.len() < n {
            return Err(FormatError::Truncated { what });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items, refused above `max` before anything is allocated.
    pub(crate) fn count(&mut self, what: &'static str, max: usize) -> Result<usize, FormatError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(FormatError::TooMany {
                what,
                count: n,
                max,
            });
        }
        Ok(n)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], FormatError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(FormatError::TooLarge { what, len: n, max });
        }
        self.take(n, what)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, FormatError> {
        std::str::from_utf8(self.bytes(what, max)?).map_err(|_| FormatError::InvalidUtf8 { what })
    }

    pub(crate) fn opt_str(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Option<&'a str>, FormatError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.str(what, max)?)),
            tag => Err(FormatError::InvalidTag { what, tag }),
        }
    }

    /// Checks a magic number and format version.
    pub(crate) fn header(&mut self, what: &'static str, magic: [u8; 4]) -> Result<(), FormatError> {
        if self.array::<4>(what)? != magic {
            return Err(FormatError::BadMagic { what });
        }
        match self.u8(what)? {
            crate::FORMAT_VERSION => Ok(()),
            version => Err(FormatError::UnsupportedVersion { what, version }),
        }
    }

    /// Refuses bytes after the end of a container.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), FormatError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FormatError::TrailingBytes {
                what,
                len: self.rest.len(),
            })
        }
    }
}

/// Refuses a sequence that is not strictly increasing: canonical order,
/// no duplicates (docs/BUNDLES.md §2).
pub(crate) fn strictly_sorted<T: Ord>(items: &[T], what: &'static str) -> Result<(), FormatError> {
    if items.windows(2).all(|w| w[0] < w[1]) {
        Ok(())
    } else {
        Err(FormatError::NotCanonical { what })
    }
}
