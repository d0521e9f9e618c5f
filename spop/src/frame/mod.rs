//! Frames (SPOE.txt §3.2): the header, the frame types and their payloads.
//!
//! ```text
//! <LENGTH:u32 BE> <TYPE:u8> <FLAGS:u32 BE> <STREAM-ID:varint> <FRAME-ID:varint> <PAYLOAD>
//! ```
//!
//! [`Frame::decode`] takes the bytes after LENGTH (the codec strips it);
//! [`Frame::encode`] writes them, and [`Frame::encode_framed`] adds LENGTH.

mod ack;
mod capabilities;
mod disconnect;
mod hello;
mod notify;

use std::fmt;

use bytes::{Buf, BufMut, Bytes};

pub use ack::{Ack, Action, VarScope};
pub use capabilities::Capabilities;
pub use disconnect::Disconnect;
pub use hello::{AgentHello, HaproxyHello};
pub use notify::{ArgError, Args, ArgsRef, Message, Messages, Notify, NotifyBuilder};

use crate::reader::Reader;
use crate::{varint, DecodeError, EncodeError};

/// The type byte of a frame. An open newtype: [`Frame::decode`] rejects values
/// that name no frame with [`DecodeError::UnknownFrameType`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u8);

impl FrameType {
    /// 0: a continuation fragment of a NOTIFY.
    pub const UNSET: Self = Self(0);
    /// 1: HAProxy opens the handshake.
    pub const HAPROXY_HELLO: Self = Self(1);
    /// 2: HAProxy closes the connection.
    pub const HAPROXY_DISCONNECT: Self = Self(2);
    /// 3: HAProxy sends messages.
    pub const NOTIFY: Self = Self(3);
    /// 101: the agent answers the handshake.
    pub const AGENT_HELLO: Self = Self(101);
    /// 102: the agent closes the connection.
    pub const AGENT_DISCONNECT: Self = Self(102);
    /// 103: the agent answers a NOTIFY with actions.
    pub const ACK: Self = Self(103);

    /// The frame type's name as SPOE.txt writes it.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "UNSET",
            1 => "HAPROXY-HELLO",
            2 => "HAPROXY-DISCONNECT",
            3 => "NOTIFY",
            101 => "AGENT-HELLO",
            102 => "AGENT-DISCONNECT",
            103 => "ACK",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameType::{}({})", self.name(), self.0)
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The FLAGS word. Reserved bits are kept as read (and written back as kept).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Flags(pub u32);

impl Flags {
    /// Bit 0: this is the last (or only) fragment of the frame.
    pub const FIN: Self = Self(0x1);
    /// Bit 1: cancel the processing of this frame.
    pub const ABORT: Self = Self(0x2);

    /// `true` if FIN is set.
    pub const fn is_fin(self) -> bool {
        self.0 & Self::FIN.0 != 0
    }

    /// `true` if ABORT is set.
    pub const fn is_abort(self) -> bool {
        self.0 & Self::ABORT.0 != 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        if self.is_fin() {
            set.entry(&format_args!("FIN"));
        }
        if self.is_abort() {
            set.entry(&format_args!("ABORT"));
        }
        let rest = self.0 & !(Self::FIN.0 | Self::ABORT.0);
        if rest != 0 {
            set.entry(&format_args!("{rest:#x}"));
        }
        set.finish()
    }
}

/// The frame header after the type: flags, stream-id and frame-id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Metadata {
    /// FIN and ABORT.
    pub flags: Flags,
    /// The stream the frame belongs to (0 for HELLO and DISCONNECT).
    pub stream_id: u64,
    /// The frame's id within the stream (0 for HELLO and DISCONNECT).
    pub frame_id: u64,
}

impl Metadata {
    /// FIN set, with the given ids (what an ACK uses: the NOTIFY's ids).
    pub const fn new(stream_id: u64, frame_id: u64) -> Self {
        Self {
            flags: Flags::FIN,
            stream_id,
            frame_id,
        }
    }

    /// The metadata of HELLO and DISCONNECT frames: FIN, stream-id 0, frame-id 0.
    pub const fn connection() -> Self {
        Self::new(0, 0)
    }

    fn encoded_len(&self) -> usize {
        4 + varint::encoded_len(self.stream_id) + varint::encoded_len(self.frame_id)
    }
}

/// What a frame carries, by frame type.
///
/// `Debug` shows the length of fragments, never their bytes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameBody {
    /// HAPROXY-HELLO.
    HaproxyHello(HaproxyHello),
    /// AGENT-HELLO.
    AgentHello(AgentHello),
    /// HAPROXY-DISCONNECT.
    HaproxyDisconnect(Disconnect),
    /// AGENT-DISCONNECT.
    AgentDisconnect(Disconnect),
    /// A NOTIFY with FIN set: a complete, validated list of messages.
    Notify(Notify),
    /// A NOTIFY without FIN: the first piece of a fragmented NOTIFY, its payload
    /// raw (it may end anywhere, inside an argument too). See
    /// [`Reassembler`](crate::Reassembler).
    NotifyFragment(Bytes),
    /// UNSET: a continuation fragment (FIN on the last), payload raw.
    Unset(Bytes),
    /// ACK.
    Ack(Ack),
}

impl fmt::Debug for FrameBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HaproxyHello(h) => f.debug_tuple("HaproxyHello").field(h).finish(),
            Self::AgentHello(h) => f.debug_tuple("AgentHello").field(h).finish(),
            Self::HaproxyDisconnect(d) => f.debug_tuple("HaproxyDisconnect").field(d).finish(),
            Self::AgentDisconnect(d) => f.debug_tuple("AgentDisconnect").field(d).finish(),
            Self::Notify(n) => f.debug_tuple("Notify").field(n).finish(),
            Self::NotifyFragment(b) => f
                .debug_struct("NotifyFragment")
                .field("len", &b.len())
                .finish(),
            Self::Unset(b) => f.debug_struct("Unset").field("len", &b.len()).finish(),
            Self::Ack(a) => f.debug_tuple("Ack").field(a).finish(),
        }
    }
}

/// One SPOP frame: its metadata and its body.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Ack, Frame, FrameBody, VarScope};
/// let ack = Frame::ack(7, 1, Ack::new().set_var(VarScope::TRANSACTION, "score", 42i64));
/// let mut wire = bytes::BytesMut::new();
/// ack.encode_framed(&mut wire, 16380).unwrap();
/// let back = Frame::decode(wire.freeze().slice(4..)).unwrap();
/// assert_eq!(back, ack);
/// assert!(matches!(back.body, FrameBody::Ack(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Flags, stream-id and frame-id.
    pub metadata: Metadata,
    /// The typed payload.
    pub body: FrameBody,
}

impl Frame {
    /// An ACK for the NOTIFY with these ids (FIN set).
    pub const fn ack(stream_id: u64, frame_id: u64, ack: Ack) -> Self {
        Self {
            metadata: Metadata::new(stream_id, frame_id),
            body: FrameBody::Ack(ack),
        }
    }

    /// An AGENT-HELLO frame.
    pub const fn agent_hello(hello: AgentHello) -> Self {
        Self {
            metadata: Metadata::connection(),
            body: FrameBody::AgentHello(hello),
        }
    }

    /// A HAPROXY-HELLO frame.
    pub const fn haproxy_hello(hello: HaproxyHello) -> Self {
        Self {
            metadata: Metadata::connection(),
            body: FrameBody::HaproxyHello(hello),
        }
    }

    /// An AGENT-DISCONNECT frame with a status and a message.
    pub fn agent_disconnect(status: crate::Status, message: impl Into<Bytes>) -> Self {
        Self {
            metadata: Metadata::connection(),
            body: FrameBody::AgentDisconnect(Disconnect::new(status, message)),
        }
    }

    /// A HAPROXY-DISCONNECT frame with a status and a message.
    pub fn haproxy_disconnect(status: crate::Status, message: impl Into<Bytes>) -> Self {
        Self {
            metadata: Metadata::connection(),
            body: FrameBody::HaproxyDisconnect(Disconnect::new(status, message)),
        }
    }

    /// A complete NOTIFY frame (FIN set).
    pub const fn notify(stream_id: u64, frame_id: u64, notify: Notify) -> Self {
        Self {
            metadata: Metadata::new(stream_id, frame_id),
            body: FrameBody::Notify(notify),
        }
    }

    /// The frame's type byte.
    pub const fn frame_type(&self) -> FrameType {
        match self.body {
            FrameBody::HaproxyHello(_) => FrameType::HAPROXY_HELLO,
            FrameBody::AgentHello(_) => FrameType::AGENT_HELLO,
            FrameBody::HaproxyDisconnect(_) => FrameType::HAPROXY_DISCONNECT,
            FrameBody::AgentDisconnect(_) => FrameType::AGENT_DISCONNECT,
            FrameBody::Notify(_) | FrameBody::NotifyFragment(_) => FrameType::NOTIFY,
            FrameBody::Unset(_) => FrameType::UNSET,
            FrameBody::Ack(_) => FrameType::ACK,
        }
    }

    /// Decodes one frame from its bytes after the 4-byte LENGTH. Strings and
    /// binaries in the result are views into `payload`.
    ///
    /// A NOTIFY with FIN is validated whole (every message, argument, type tag
    /// and length); a NOTIFY without FIN and an UNSET are fragments and stay raw.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]: a truncated header or payload, an unknown frame
    /// type, a bad varint or typed value, a HELLO missing a required key...
    /// [`DecodeError::status`] gives the status code to disconnect with.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use haproxy_spop::{DecodeError, Frame};
    /// let err = Frame::decode(Bytes::from_static(&[42, 0, 0, 0, 1, 0, 0])).unwrap_err();
    /// assert_eq!(err, DecodeError::UnknownFrameType(42));
    /// ```
    pub fn decode(mut payload: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&payload);
        let frame_type = FrameType(r.u8("frame type")?);
        let flags = Flags(r.u32("flags")?);
        let stream_id = r.varint()?;
        let frame_id = r.varint()?;
        let metadata = Metadata {
            flags,
            stream_id,
            frame_id,
        };
        // Move the view past the header: no refcount traffic.
        let header_len = r.pos();
        payload.advance(header_len);
        let rest = payload;
        let body = match frame_type {
            FrameType::HAPROXY_HELLO => FrameBody::HaproxyHello(HaproxyHello::decode(&rest)?),
            FrameType::AGENT_HELLO => FrameBody::AgentHello(AgentHello::decode(&rest)?),
            FrameType::HAPROXY_DISCONNECT => {
                FrameBody::HaproxyDisconnect(Disconnect::decode(&rest)?)
            }
            FrameType::AGENT_DISCONNECT => FrameBody::AgentDisconnect(Disconnect::decode(&rest)?),
            FrameType::NOTIFY if flags.is_fin() => FrameBody::Notify(Notify::decode(rest)?),
            FrameType::NOTIFY => FrameBody::NotifyFragment(rest),
            FrameType::UNSET => FrameBody::Unset(rest),
            FrameType::ACK => FrameBody::Ack(Ack::decode(&rest)?),
            FrameType(other) => return Err(DecodeError::UnknownFrameType(other)),
        };
        Ok(Self { metadata, body })
    }

    /// The exact number of bytes [`Frame::encode`] writes (LENGTH excluded).
    pub fn encoded_len(&self) -> usize {
        1 + self.metadata.encoded_len()
            + match &self.body {
                FrameBody::HaproxyHello(h) => h.encoded_len(),
                FrameBody::AgentHello(h) => h.encoded_len(),
                FrameBody::HaproxyDisconnect(d) | FrameBody::AgentDisconnect(d) => d.encoded_len(),
                FrameBody::Notify(n) => n.encoded_len(),
                FrameBody::NotifyFragment(b) | FrameBody::Unset(b) => b.len(),
                FrameBody::Ack(a) => a.encoded_len(),
            }
    }

    /// Writes the frame without its LENGTH prefix.
    ///
    /// # Panics
    ///
    /// Panics if `buf` has less than [`Frame::encoded_len`] bytes of room (never
    /// for a growable buffer).
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.frame_type().0);
        buf.put_u32(self.metadata.flags.0);
        varint::encode(self.metadata.stream_id, buf);
        varint::encode(self.metadata.frame_id, buf);
        match &self.body {
            FrameBody::HaproxyHello(h) => h.encode(buf),
            FrameBody::AgentHello(h) => h.encode(buf),
            FrameBody::HaproxyDisconnect(d) | FrameBody::AgentDisconnect(d) => d.encode(buf),
            FrameBody::Notify(n) => n.encode(buf),
            FrameBody::NotifyFragment(b) | FrameBody::Unset(b) => buf.put_slice(b),
            FrameBody::Ack(a) => a.encode(buf),
        }
    }

    /// Writes LENGTH and the frame in one go, after checking the size once
    /// against `max_frame_size`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::FrameTooLarge`] if the frame is longer than
    /// `max_frame_size`; nothing is written then.
    pub fn encode_framed(
        &self,
        buf: &mut impl BufMut,
        max_frame_size: u32,
    ) -> Result<(), EncodeError> {
        let len = self.encoded_len();
        if len > max_frame_size as usize {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: max_frame_size,
            });
        }
        buf.put_u32(len as u32);
        self.encode(buf);
        Ok(())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Frame {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let metadata: Metadata = u.arbitrary()?;
        let body = match u.int_in_range(0u8..=7)? {
            0 => FrameBody::HaproxyHello(u.arbitrary()?),
            1 => FrameBody::AgentHello(u.arbitrary()?),
            2 => FrameBody::HaproxyDisconnect(u.arbitrary()?),
            3 => FrameBody::AgentDisconnect(u.arbitrary()?),
            4 => FrameBody::Notify(u.arbitrary()?),
            5 => FrameBody::NotifyFragment(Bytes::from(u.arbitrary::<Vec<u8>>()?)),
            6 => FrameBody::Unset(Bytes::from(u.arbitrary::<Vec<u8>>()?)),
            _ => FrameBody::Ack(u.arbitrary()?),
        };
        // A NOTIFY's FIN bit decides whether it is whole or a fragment.
        let mut metadata = metadata;
        match body {
            FrameBody::Notify(_) => metadata.flags.0 |= Flags::FIN.0,
            FrameBody::NotifyFragment(_) => metadata.flags.0 &= !Flags::FIN.0,
            _ => {}
        }
        Ok(Self { metadata, body })
    }
}

#[cfg(feature = "arbitrary")]
pub(crate) fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    Ok(Bytes::from(u.arbitrary::<Vec<u8>>()?))
}

#[cfg(feature = "arbitrary")]
pub(crate) fn arbitrary_opt_bytes(
    u: &mut arbitrary::Unstructured<'_>,
) -> arbitrary::Result<Option<Bytes>> {
    Ok(u.arbitrary::<Option<Vec<u8>>>()?.map(Bytes::from))
}
