//! A zero-copy implementation of SPOP, the Stream Processing Offload Protocol
//! that HAProxy's SPOE filter speaks to external agents.
//!
//! HAProxy opens connections to an agent, says HAPROXY-HELLO, then sends
//! NOTIFY frames carrying *messages* (named, typed arguments taken from each
//! request); the agent answers every NOTIFY with an ACK carrying *actions*
//! (set or unset HAProxy variables).
//!
//! ```text
//!  0       4      5              9                 ...
//! +-------+------+--------------+---------+---------+------------------+
//! |LENGTH | TYPE |    FLAGS     |STREAM-ID|FRAME-ID | PAYLOAD          |
//! |u32 BE |  u8  |   u32 BE     | varint  | varint  | (by frame type)  |
//! +-------+------+--------------+---------+---------+------------------+
//!          <-------------------- LENGTH bytes --------------------------->
//! ```
//!
//! # Layers
//!
//! - [`varint`], [`TypedData`] (and its borrowed twin [`TypedRef`]): the
//!   wire's integers and values.
//! - [`Frame`] with [`FrameBody`]: every frame type, decoded from a `Bytes`
//!   payload without copying ([`Notify`] validates once and iterates lazily),
//!   encoded with an exact [`Frame::encoded_len`].
//! - [`Headers`]: the `req.hdrs_bin` blocks agents receive most;
//!   [`HeadersBuilder`] and [`HeaderNames`] build the blocks HAProxy 3.4's
//!   `set-headers-bin` / `add-headers-bin` / `del-headers-bin` take.
//! - [`RequestView`]: the HTTP request a message carries (method, path,
//!   headers, body) with its framing and the truncation check.
//! - [`Reassembler`]: fragmented NOTIFY (HAProxy 2.x), sans-IO, capped.
//! - [`conn::Connection`]: the agent side of a whole connection, sans-IO
//!   (bytes and time in, events and bytes out; no async runtime needed).
//! - [`SpopCodec`] (feature `codec`): a `tokio_util::codec` Decoder/Encoder.
//! - [`runtime`] (feature `runtime`): a tokio agent server around a handler
//!   function, and a client that speaks HAProxy's side.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use haproxy_spop::{Ack, Frame, FrameBody, Notify, VarScope};
//!
//! // What HAProxy sends (built here; normally read by the codec).
//! let notify = Notify::builder().message("check").arg("path", "/admin").build().unwrap();
//! let mut wire = Vec::new();
//! Frame::notify(5, 1, notify).encode(&mut wire);
//!
//! let frame = Frame::decode(Bytes::from(wire)).unwrap();
//! let FrameBody::Notify(notify) = &frame.body else { unreachable!() };
//! let msg = notify.message("check").unwrap();
//! let blocked = msg.bytes("path").unwrap().starts_with(b"/admin");
//! let ack = Frame::ack(
//!     frame.metadata.stream_id,
//!     frame.metadata.frame_id,
//!     Ack::new().set_var(VarScope::TRANSACTION, "blocked", blocked),
//! );
//! assert_eq!(ack.encoded_len(), 19);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod data;
mod error;
mod fragment;
mod frame;
mod hdrs;
mod hdrs_build;
mod reader;
mod request;
mod stats;
mod status;
pub mod varint;

pub mod conn;

#[cfg(feature = "codec")]
mod codec;
#[cfg(feature = "runtime")]
pub mod runtime;

pub use data::{DataType, TypedData, TypedRef};
pub use error::{DecodeError, EncodeError, Error};
pub use fragment::{Reassembled, Reassembler};
pub use frame::ArgError;
pub use frame::{
    Ack, Action, AgentHello, Args, ArgsRef, Capabilities, Disconnect, Flags, Frame, FrameBody,
    FrameType, HaproxyHello, Message, Messages, Metadata, Notify, NotifyBuilder, VarScope,
};
pub use hdrs::{HeaderIter, HeaderRefIter, Headers};
pub use hdrs_build::{base64, HeaderNames, HeadersBuilder, InvalidHeader};
pub use request::{Framing, RequestArgs, RequestError, RequestView};
pub use status::Status;

#[cfg(feature = "codec")]
pub use codec::SpopCodec;
pub use conn::{DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CEILING};

/// The smallest max-frame-size an agent may announce.
pub const MIN_FRAME_SIZE: u32 = 256;

/// The protocol version this crate speaks.
pub const VERSION: &str = "2.0";

/// Checks a HAPROXY-HELLO the way an agent must and builds the answer.
///
/// `max_frame_size` is the agent's own limit (the answer is the smaller of it
/// and HAProxy's; [`DEFAULT_MAX_FRAME_SIZE`] is HAProxy's default);
/// `capabilities` what the agent supports.
///
/// # Errors
///
/// The status to disconnect with: [`Status::BAD_VERSION`] if HAProxy offers no
/// 2.x version, [`Status::BAD_FRAME_SIZE`] if the agreed size would be below
/// [`MIN_FRAME_SIZE`].
///
/// # Examples
///
/// ```
/// use haproxy_spop::{negotiate, Capabilities, HaproxyHello, Status};
/// let hello = HaproxyHello {
///     supported_versions: "2.0".into(),
///     max_frame_size: 16380,
///     capabilities: Capabilities::PIPELINING | Capabilities::ASYNC,
///     healthcheck: false,
///     engine_id: None,
/// };
/// let answer = negotiate(&hello, 8192, Capabilities::PIPELINING).unwrap();
/// assert_eq!(answer.max_frame_size, 8192);
/// assert_eq!(answer.capabilities, Capabilities::PIPELINING);
/// assert_eq!(negotiate(&hello, 100, Capabilities::NONE), Err(Status::BAD_FRAME_SIZE));
/// ```
pub fn negotiate(
    hello: &HaproxyHello,
    max_frame_size: u32,
    capabilities: Capabilities,
) -> Result<AgentHello, Status> {
    if !hello.supports_v2() {
        return Err(Status::BAD_VERSION);
    }
    let answer = AgentHello::answering(hello, max_frame_size, capabilities);
    if answer.max_frame_size < MIN_FRAME_SIZE {
        return Err(Status::BAD_FRAME_SIZE);
    }
    Ok(answer)
}
