//! Framed reads and writes over [`embedded_io`] streams (serial links, TCP,
//! spool files): one frame after another, no delimiter needed.

use embedded_io::{Read, Write};

use crate::frame::{FrameHeader, HEADER_LEN};
use crate::{Error, Frame, ReadError};

/// Writes one encoded frame (from [`encode_frame`](crate::encode_frame)).
///
/// # Errors
/// The writer's error.
pub fn write_frame<W: Write>(writer: &mut W, frame: &[u8]) -> Result<(), W::Error> {
    writer.write_all(frame)
}

/// Reads the next frame into `buf` and decodes it (not verified).
///
/// Returns `Ok(None)` when the stream ends cleanly between frames. The header
/// is checked before the payload is read, so an oversized or foreign frame is
/// refused without reading it.
///
/// # Errors
/// [`ReadError::Io`] from the reader, [`ReadError::UnexpectedEof`] when the
/// stream ends inside a frame, [`ReadError::Frame`] for an invalid header or
/// a `buf` smaller than the frame ([`Error::BufferTooSmall`]).
pub fn read_frame<'b, R: Read>(
    reader: &mut R,
    buf: &'b mut [u8],
) -> Result<Option<Frame<'b>>, ReadError<R::Error>> {
    if buf.len() < HEADER_LEN {
        return Err(Error::BufferTooSmall.into());
    }
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader
            .read(&mut buf[filled..HEADER_LEN])
            .map_err(ReadError::Io)?
        {
            0 if filled == 0 => return Ok(None),
            0 => return Err(ReadError::UnexpectedEof),
            n => filled += n,
        }
    }
    let header = FrameHeader::parse(&buf[..HEADER_LEN])?;
    let len = header.frame_len();
    let Some(payload) = buf.get_mut(HEADER_LEN..len) else {
        return Err(Error::BufferTooSmall.into());
    };
    reader.read_exact(payload).map_err(|e| match e {
        embedded_io::ReadExactError::UnexpectedEof => ReadError::UnexpectedEof,
        embedded_io::ReadExactError::Other(e) => ReadError::Io(e),
    })?;
    let (frame, _) = Frame::decode(&buf[..len])?;
    Ok(Some(frame))
}

/// Adapters for `std::io` readers and writers.
#[cfg(feature = "std")]
pub mod std_io {
    use crate::{Frame, ReadError};

    struct Adapter<T>(T);

    impl<T> embedded_io::ErrorType for Adapter<T> {
        type Error = std::io::Error;
    }

    impl<T: std::io::Read> embedded_io::Read for Adapter<T> {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
            loop {
                match self.0.read(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    other => return other,
                }
            }
        }
    }

    /// [`read_frame`](super::read_frame) from a `std::io::Read`.
    ///
    /// # Errors
    /// As [`read_frame`](super::read_frame).
    pub fn read_frame<'b, R: std::io::Read>(
        reader: R,
        buf: &'b mut [u8],
    ) -> Result<Option<Frame<'b>>, ReadError<std::io::Error>> {
        super::read_frame(&mut Adapter(reader), buf)
    }

    /// Writes one encoded frame to a `std::io::Write`.
    ///
    /// # Errors
    /// The writer's error.
    pub fn write_frame<W: std::io::Write>(mut writer: W, frame: &[u8]) -> std::io::Result<()> {
        writer.write_all(frame)
    }
}
