//! HAPROXY-DISCONNECT and AGENT-DISCONNECT (SPOE.txt §3.2.7, §3.2.8).

use bytes::{BufMut, Bytes};

use super::hello::{kv_len, put_kv};
use crate::reader::Reader;
use crate::{DecodeError, Status, TypedData};

/// The payload of both DISCONNECT frames: a status code and a message.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Disconnect, Status};
/// let d = Disconnect::new(Status::TOO_BIG, "frame is too big");
/// assert_eq!(d.status, Status::TOO_BIG);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Disconnect {
    /// Why the connection ends.
    pub status: Status,
    /// A human-readable explanation (may be empty).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::frame::arbitrary_bytes))]
    pub message: Bytes,
}

impl Disconnect {
    /// A disconnect with a status and a message.
    pub fn new(status: Status, message: impl Into<Bytes>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A disconnect whose message is the status code's description.
    pub fn from_status(status: Status) -> Self {
        Self::new(status, Bytes::from_static(status.description().as_bytes()))
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut status = None;
        let mut message = Bytes::new();
        let mut r = Reader::new(payload);
        while !r.is_empty() {
            let (key, value) = r.kv()?;
            match key {
                b"status-code" => {
                    let code = value.as_u64().ok_or(DecodeError::InvalidValue {
                        what: "status-code",
                    })?;
                    let code = u32::try_from(code).map_err(|_| DecodeError::InvalidValue {
                        what: "status-code",
                    })?;
                    status = Some(Status(code));
                }
                b"message" => {
                    if let Some(b) = value.as_bytes() {
                        message = b.clone();
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            status: status.ok_or(DecodeError::MissingKey("status-code"))?,
            message,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        kv_len("status-code", &TypedData::Uint32(self.status.0))
            + kv_len("message", &TypedData::String(self.message.clone()))
    }

    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        put_kv(buf, "status-code", &TypedData::Uint32(self.status.0));
        put_kv(buf, "message", &TypedData::String(self.message.clone()));
    }
}
