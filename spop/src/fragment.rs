//! Reassembly of fragmented NOTIFY frames (HAProxy 2.x), sans-IO.
//!
//! HAProxy sends a NOTIFY without FIN, then UNSET frames with the same
//! stream-id and frame-id, FIN on the last. The cut can fall anywhere, inside
//! an argument too, so the payload is joined first and parsed once complete.
//! A fragment with ABORT cancels the frame.

use bytes::BytesMut;

use crate::{DecodeError, Frame, FrameBody, Metadata, Notify};

/// What [`Reassembler::push`] made of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reassembled {
    /// A frame to handle: a NOTIFY just completed (FIN, validated), or any
    /// frame that is not a fragment, passed through unchanged.
    Frame(Frame),
    /// A fragment was stored; more are expected.
    Pending,
    /// The frame with these ids was cancelled (ABORT); it gets no ACK.
    Aborted {
        /// The aborted frame's stream-id.
        stream_id: u64,
        /// The aborted frame's frame-id.
        frame_id: u64,
    },
}

#[derive(Debug)]
struct Pending {
    stream_id: u64,
    frame_id: u64,
    buf: BytesMut,
}

/// Joins NOTIFY fragments, holding at most `max_bytes` of payload.
///
/// One fragmented frame is reassembled at a time per connection, as HAProxy
/// sends them; complete frames may pass in between.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use haproxy_spop::{Flags, Frame, FrameBody, Metadata, Reassembled, Reassembler};
///
/// let mut r = Reassembler::new(1 << 20);
/// let whole = haproxy_spop::Notify::builder().message("m").arg("a", "xyz").build().unwrap();
/// let (a, b) = whole.payload().split_at(4);
/// let first = Frame { metadata: Metadata { flags: Flags(0), stream_id: 3, frame_id: 1 },
///                     body: FrameBody::NotifyFragment(Bytes::copy_from_slice(a)) };
/// let last = Frame { metadata: Metadata::new(3, 1), body: FrameBody::Unset(Bytes::copy_from_slice(b)) };
/// assert_eq!(r.push(first).unwrap(), Reassembled::Pending);
/// assert_eq!(r.push(last).unwrap(), Reassembled::Frame(Frame::notify(3, 1, whole)));
/// ```
#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    pending: Option<Pending>,
}

impl Reassembler {
    /// A reassembler that refuses to hold more than `max_bytes` of payload.
    pub const fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            pending: None,
        }
    }

    /// The cap on bytes held.
    pub const fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// `true` while a fragmented frame is under way.
    pub const fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The ids of the frame under way, if any.
    pub fn pending_ids(&self) -> Option<(u64, u64)> {
        self.pending.as_ref().map(|p| (p.stream_id, p.frame_id))
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.buf.len())
    }

    /// Feeds one frame.
    ///
    /// # Errors
    ///
    /// - [`DecodeError::InterlacedFrames`] (status 11): a new fragmented NOTIFY
    ///   starts while one is under way, or an UNSET carries other ids;
    /// - [`DecodeError::FrameIdNotFound`] (status 12): an UNSET arrives with no
    ///   fragmented frame under way;
    /// - [`DecodeError::ReassemblyTooLarge`] (status 13): the payload would
    ///   exceed the cap;
    /// - any error of [`Notify::decode`] once the frame is complete.
    ///
    /// After an error the reassembler holds nothing.
    pub fn push(&mut self, frame: Frame) -> Result<Reassembled, DecodeError> {
        let Frame { metadata, body } = frame;
        let Metadata {
            flags,
            stream_id,
            frame_id,
        } = metadata;
        let aborted = Reassembled::Aborted {
            stream_id,
            frame_id,
        };
        match body {
            FrameBody::NotifyFragment(data) => {
                if self.pending.is_some() {
                    self.pending = None;
                    return Err(DecodeError::InterlacedFrames);
                }
                if flags.is_abort() {
                    return Ok(aborted);
                }
                self.check_cap(data.len())?;
                let mut buf =
                    BytesMut::with_capacity(data.len().saturating_mul(2).min(self.max_bytes));
                buf.extend_from_slice(&data);
                self.pending = Some(Pending {
                    stream_id,
                    frame_id,
                    buf,
                });
                Ok(Reassembled::Pending)
            }
            FrameBody::Unset(data) => {
                let Some(pending) = self.pending.as_mut() else {
                    // An ABORT for a frame already gone is harmless.
                    return if flags.is_abort() {
                        Ok(aborted)
                    } else {
                        Err(DecodeError::FrameIdNotFound)
                    };
                };
                if (pending.stream_id, pending.frame_id) != (stream_id, frame_id) {
                    self.pending = None;
                    return Err(DecodeError::InterlacedFrames);
                }
                if flags.is_abort() {
                    self.pending = None;
                    return Ok(aborted);
                }
                let total = pending.buf.len().saturating_add(data.len());
                if total > self.max_bytes {
                    self.pending = None;
                    return Err(DecodeError::ReassemblyTooLarge {
                        max: self.max_bytes,
                    });
                }
                pending.buf.extend_from_slice(&data);
                if !flags.is_fin() {
                    return Ok(Reassembled::Pending);
                }
                let payload = self
                    .pending
                    .take()
                    .map(|p| p.buf.freeze())
                    .unwrap_or_default();
                let notify = Notify::decode(payload)?;
                Ok(Reassembled::Frame(Frame {
                    metadata,
                    body: FrameBody::Notify(notify),
                }))
            }
            body => Ok(Reassembled::Frame(Frame { metadata, body })),
        }
    }

    fn check_cap(&self, len: usize) -> Result<(), DecodeError> {
        if len > self.max_bytes {
            Err(DecodeError::ReassemblyTooLarge {
                max: self.max_bytes,
            })
        } else {
            Ok(())
        }
    }

    /// Drops whatever is held.
    pub fn clear(&mut self) {
        self.pending = None;
    }
}
