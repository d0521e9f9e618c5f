//! Errors, each mapping to the SPOP status code an agent sends in AGENT-DISCONNECT.

use crate::Status;

/// Why a frame (or a piece of one) could not be decoded.
///
/// Small and `Copy`; [`DecodeError::status`] (or `Status::from(&err)`) gives the
/// status code to send in AGENT-DISCONNECT before closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame ended in the middle of a field.
    #[error("frame truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A varint ran over 10 bytes.
    #[error("varint longer than {max} bytes")]
    VarintTooLong {
        /// The longest valid varint.
        max: usize,
    },
    /// A varint's value does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// The frame's length is above the negotiated max-frame-size.
    #[error("frame of {len} bytes is larger than the max-frame-size {max}")]
    FrameTooLarge {
        /// The length announced by the frame.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// The frame type byte names no SPOP frame.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A typed-data type tag names no SPOP type.
    #[error("unknown data type {0}")]
    UnknownDataType(u8),
    /// An ACK action type is neither SET-VAR nor UNSET-VAR.
    #[error("unknown action type {0}")]
    UnknownAction(u8),
    /// An ACK action carries the wrong number of arguments.
    #[error("action {action} has {found} arguments, expected {expected}")]
    ActionArgCount {
        /// The action type.
        action: u8,
        /// The number announced.
        found: u8,
        /// The number the action takes.
        expected: u8,
    },
    /// A value does not fit its declared type or field.
    #[error("invalid value for {what}")]
    InvalidValue {
        /// The field.
        what: &'static str,
    },
    /// Bytes were left over after a structure that must end the frame or block.
    #[error("trailing bytes after {what}")]
    TrailingBytes {
        /// The structure.
        what: &'static str,
    },
    /// A HELLO carries no `supported-versions` / `version`.
    #[error("version value not found")]
    MissingVersion,
    /// A HELLO carries no `max-frame-size`.
    #[error("max-frame-size value not found")]
    MissingMaxFrameSize,
    /// A HELLO carries no `capabilities`.
    #[error("capabilities value not found")]
    MissingCapabilities,
    /// Another required key is absent (for example `status-code`).
    #[error("required key {0} not found")]
    MissingKey(&'static str),
    /// A `req.hdrs_bin` / `res.hdrs_bin` block is malformed.
    #[error("malformed header block: {what}")]
    InvalidHeaderBlock {
        /// What is wrong with it.
        what: &'static str,
    },
    /// A fragment arrived for a frame other than the one being reassembled,
    /// or a new fragmented frame started before the previous one ended.
    #[error("invalid interlaced frames")]
    InterlacedFrames,
    /// A continuation fragment arrived with no fragmented frame under way.
    #[error("fragment for a frame-id not being reassembled")]
    FrameIdNotFound,
    /// Reassembling fragments would hold more bytes than allowed.
    #[error("reassembled frame over the {max} byte limit")]
    ReassemblyTooLarge {
        /// The cap on bytes held.
        max: usize,
    },
}

impl DecodeError {
    /// The status code an agent sends in AGENT-DISCONNECT for this error.
    ///
    /// # Examples
    ///
    /// ```
    /// use haproxy_spop::{DecodeError, Status};
    /// assert_eq!(DecodeError::MissingMaxFrameSize.status(), Status::NO_FRAME_SIZE);
    /// ```
    pub const fn status(&self) -> Status {
        match self {
            Self::FrameTooLarge { .. } => Status::TOO_BIG,
            Self::MissingVersion => Status::NO_VERSION,
            Self::MissingMaxFrameSize => Status::NO_FRAME_SIZE,
            Self::MissingCapabilities => Status::NO_CAPABILITIES,
            Self::InterlacedFrames => Status::INTERLACED_FRAMES,
            Self::FrameIdNotFound => Status::FRAME_ID_NOT_FOUND,
            Self::ReassemblyTooLarge { .. } => Status::RESOURCE_ALLOCATION,
            Self::Truncated { .. }
            | Self::VarintTooLong { .. }
            | Self::VarintOverflow
            | Self::UnknownFrameType(_)
            | Self::UnknownDataType(_)
            | Self::UnknownAction(_)
            | Self::ActionArgCount { .. }
            | Self::InvalidValue { .. }
            | Self::TrailingBytes { .. }
            | Self::MissingKey(_)
            | Self::InvalidHeaderBlock { .. } => Status::INVALID_FRAME,
        }
    }
}

impl From<&DecodeError> for Status {
    fn from(err: &DecodeError) -> Self {
        err.status()
    }
}

impl From<DecodeError> for Status {
    fn from(err: DecodeError) -> Self {
        err.status()
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would be larger than the max-frame-size in force.
    #[error("encoded frame of {len} bytes is larger than the max-frame-size {max}")]
    FrameTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit in force.
        max: u32,
    },
    /// A list holds more entries than its one-byte count can say (messages'
    /// arguments are limited to 255).
    #[error("too many {what} (at most 255)")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
    },
    /// A NOTIFY argument was added before any message.
    #[error("argument added before any message")]
    ArgWithoutMessage,
}

impl EncodeError {
    /// The status code that fits this error.
    pub const fn status(&self) -> Status {
        match self {
            Self::FrameTooLarge { .. } => Status::TOO_BIG,
            Self::TooMany { .. } | Self::ArgWithoutMessage => Status::INVALID_FRAME,
        }
    }
}

/// An error from the tokio codec: I/O, or a frame that could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A received frame is invalid.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Error {
    /// The status code to send in AGENT-DISCONNECT for this error.
    pub fn status(&self) -> Status {
        match self {
            Self::Io(_) => Status::IO,
            Self::Decode(err) => err.status(),
            Self::Encode(err) => err.status(),
        }
    }
}
