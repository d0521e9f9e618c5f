//! The `tokio_util::codec` layer: LENGTH-prefixed frames over a byte stream.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::conn::READ_STEP;
use crate::{DecodeError, Error, Frame, DEFAULT_MAX_FRAME_SIZE};

/// Decodes and encodes SPOP frames on a byte stream.
///
/// The decoder reads the 4-byte LENGTH, refuses a length above the max frame
/// size before buffering anything more (so a peer cannot make it grow), and
/// returns `Ok(None)` only while a frame is incomplete. While a frame is
/// incomplete it reserves at most [`READ_STEP`](crate::conn::READ_STEP)
/// (64 KiB) beyond what is buffered, however large the announced LENGTH: the
/// buffer grows with the bytes that arrive. Every frame below it is
/// parsed from a complete `Bytes` payload split off the read buffer, without
/// copying. The limit starts at [`DEFAULT_MAX_FRAME_SIZE`] and is set to the
/// negotiated value after the handshake with [`SpopCodec::set_max_frame_size`].
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use haproxy_spop::{Ack, Frame, SpopCodec};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = SpopCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Frame::ack(1, 1, Ack::new()), &mut buf).unwrap();
/// let frame = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(frame, Frame::ack(1, 1, Ack::new()));
/// assert!(codec.decode(&mut buf).unwrap().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct SpopCodec {
    max_frame_size: u32,
}

impl Default for SpopCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl SpopCodec {
    /// A codec with the default limit, [`DEFAULT_MAX_FRAME_SIZE`].
    pub const fn new() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }

    /// A codec with the given limit on frame length (LENGTH excluded).
    pub const fn with_max_frame_size(max_frame_size: u32) -> Self {
        Self { max_frame_size }
    }

    /// The limit in force.
    pub const fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Changes the limit, e.g. to the size negotiated by the handshake.
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size;
    }
}

impl Decoder for SpopCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some(head) = src.first_chunk::<4>() else {
            src.reserve(4 - src.len());
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head);
        if len > self.max_frame_size {
            return Err(DecodeError::FrameTooLarge {
                len: u64::from(len),
                max: self.max_frame_size,
            }
            .into());
        }
        let total = (len as usize).saturating_add(4);
        if src.len() < total {
            // Room for what arrives next, never the whole announced LENGTH.
            src.reserve((total - src.len()).min(READ_STEP));
            return Ok(None);
        }
        src.advance(4);
        let payload = src.split_to(len as usize).freeze();
        Frame::decode(payload).map(Some).map_err(Error::from)
    }
}

impl Encoder<&Frame> for SpopCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        dst.reserve(4 + frame.encoded_len());
        frame.encode_framed(dst, self.max_frame_size)?;
        Ok(())
    }
}

impl Encoder<Frame> for SpopCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_large_length_before_buffering() {
        let mut codec = SpopCodec::with_max_frame_size(1000);
        let mut buf = BytesMut::from(&[0u8, 0, 0x03, 0xe9][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            Error::Decode(DecodeError::FrameTooLarge {
                len: 1001,
                max: 1000
            })
        ));
        assert_eq!(err.status(), crate::Status::TOO_BIG);
        assert!(buf.capacity() < 1001);
    }

    #[test]
    fn announced_length_is_not_reserved_up_front() {
        let mut codec = SpopCodec::with_max_frame_size(u32::MAX);
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0x00, 3, 0, 0, 0, 1][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 4 * READ_STEP, "{}", buf.capacity());
        // More bytes arrive: the buffer follows them, a step at a time.
        for _ in 0..8 {
            buf.extend_from_slice(&[0u8; 1000]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        assert!(
            buf.capacity() <= buf.len() + 4 * READ_STEP,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn partial_header_and_body_need_more() {
        let mut codec = SpopCodec::new();
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[0, 7, 103, 0, 0]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[0, 1, 5, 6]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame, Frame::ack(5, 6, crate::Ack::new()));
    }

    #[test]
    fn encoder_enforces_limit() {
        let mut codec = SpopCodec::with_max_frame_size(8);
        let mut buf = BytesMut::new();
        let frame = Frame::agent_disconnect(crate::Status::NORMAL, "bye");
        assert!(matches!(
            codec.encode(&frame, &mut buf),
            Err(Error::Encode(crate::EncodeError::FrameTooLarge { .. }))
        ));
        assert!(buf.is_empty());
    }
}
