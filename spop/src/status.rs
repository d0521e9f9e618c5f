//! SPOP status codes, sent in DISCONNECT frames (SPOE.txt §3.2.8).

use std::fmt;

/// A status code carried by HAPROXY-DISCONNECT and AGENT-DISCONNECT frames.
///
/// An open newtype: every `u32` is representable, the codes HAProxy knows have
/// associated constants, and [`Status::description`] gives HAProxy's wording.
///
/// # Examples
///
/// ```
/// use haproxy_spop::Status;
/// assert_eq!(Status::TOO_BIG.code(), 3);
/// assert_eq!(Status::from(10), Status::FRAGMENTATION_NOT_SUPPORTED);
/// assert_eq!(Status::INVALID_FRAME.description(), "invalid frame received");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Status(pub u32);

impl Status {
    /// 0: normal end of the connection.
    pub const NORMAL: Self = Self(0);
    /// 1: an I/O error occurred.
    pub const IO: Self = Self(1);
    /// 2: a timeout occurred.
    pub const TIMEOUT: Self = Self(2);
    /// 3: a frame is larger than the negotiated max-frame-size.
    pub const TOO_BIG: Self = Self(3);
    /// 4: an invalid frame was received.
    pub const INVALID_FRAME: Self = Self(4);
    /// 5: the HELLO carries no version.
    pub const NO_VERSION: Self = Self(5);
    /// 6: the HELLO carries no max-frame-size.
    pub const NO_FRAME_SIZE: Self = Self(6);
    /// 7: the HELLO carries no capabilities.
    pub const NO_CAPABILITIES: Self = Self(7);
    /// 8: no supported version in common.
    pub const BAD_VERSION: Self = Self(8);
    /// 9: max-frame-size too big or too small.
    pub const BAD_FRAME_SIZE: Self = Self(9);
    /// 10: payload fragmentation is not supported.
    pub const FRAGMENTATION_NOT_SUPPORTED: Self = Self(10);
    /// 11: fragments of different frames were interlaced.
    pub const INTERLACED_FRAMES: Self = Self(11);
    /// 12: a fragment refers to a frame-id that is not being reassembled.
    pub const FRAME_ID_NOT_FOUND: Self = Self(12);
    /// 13: a resource could not be allocated (a limit was reached).
    pub const RESOURCE_ALLOCATION: Self = Self(13);
    /// 99: an unknown error occurred.
    pub const UNKNOWN: Self = Self(99);

    /// The numeric code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// HAProxy's description of the code, or `"unknown status code"`.
    pub const fn description(self) -> &'static str {
        match self.0 {
            0 => "normal",
            1 => "I/O error",
            2 => "a timeout occurred",
            3 => "frame is too big",
            4 => "invalid frame received",
            5 => "version value not found",
            6 => "max-frame-size value not found",
            7 => "capabilities value not found",
            8 => "unsupported version",
            9 => "max-frame-size too big or too small",
            10 => "payload fragmentation is not supported",
            11 => "invalid interlaced frames",
            12 => "frame-id not found",
            13 => "resource allocation error",
            99 => "an unknown error occurred",
            _ => "unknown status code",
        }
    }

    const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NORMAL",
            1 => "IO",
            2 => "TIMEOUT",
            3 => "TOO_BIG",
            4 => "INVALID_FRAME",
            5 => "NO_VERSION",
            6 => "NO_FRAME_SIZE",
            7 => "NO_CAPABILITIES",
            8 => "BAD_VERSION",
            9 => "BAD_FRAME_SIZE",
            10 => "FRAGMENTATION_NOT_SUPPORTED",
            11 => "INTERLACED_FRAMES",
            12 => "FRAME_ID_NOT_FOUND",
            13 => "RESOURCE_ALLOCATION",
            99 => "UNKNOWN",
            _ => return None,
        })
    }
}

impl From<u32> for Status {
    fn from(code: u32) -> Self {
        Self(code)
    }
}

impl From<Status> for u32 {
    fn from(status: Status) -> Self {
        status.0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Status::{name}({})", self.0),
            None => write!(f, "Status({})", self.0),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.description())
    }
}
