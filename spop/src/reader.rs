//! A bounds-checked cursor over a frame's `Bytes`: every read checks what is
//! left first, and variable-length fields come out as `Bytes` views (or
//! borrowed slices, where no owner is needed).
//!
//! The common cases (one-byte varints, short fields) take an inlined fast
//! path; errors are built in cold functions so the hot loop stays small.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::data::{DataType, TypedData, TypedRef};
use crate::{varint, DecodeError};

#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    data: &'a [u8],
    pos: usize,
}

#[cold]
#[inline(never)]
fn truncated(what: &'static str) -> DecodeError {
    DecodeError::Truncated { what }
}

impl<'a> Reader<'a> {
    #[inline]
    /// The whole buffer this reader reads.
    pub(crate) const fn bytes(&self) -> &'a Bytes {
        self.buf
    }

    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Self {
            buf,
            data: buf,
            pos: 0,
        }
    }

    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(truncated(what)),
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let raw = self.array::<4>(what)?;
        Ok(u32::from_be_bytes(raw))
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .rest()
            .first_chunk::<N>()
            .ok_or_else(|| truncated(what))?;
        self.pos += N;
        Ok(*bytes)
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        match self.data.get(self.pos) {
            Some(&b) if b < 240 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, DecodeError> {
        let (value, used) = varint::decode_slice(self.rest())?;
        self.pos += used;
        Ok(value)
    }

    /// The varint length of a field; running out names the field.
    #[inline]
    fn length(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match self.data.get(self.pos) {
            Some(&b) if b < 240 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            None => Err(truncated(what)),
            Some(_) => self.varint_long().map_err(|e| match e {
                DecodeError::Truncated { .. } => truncated(what),
                other => other,
            }),
        }
    }

    /// Skips `len` bytes, returning the range they cover.
    #[inline]
    fn span(&mut self, len: u64, what: &'static str) -> Result<(usize, usize), DecodeError> {
        let left = self.data.len().saturating_sub(self.pos);
        if len > left as u64 {
            return Err(truncated(what));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok((start, self.pos))
    }

    /// A varint length and that many bytes, as a view.
    #[inline]
    pub(crate) fn string(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.length(what)?;
        let (start, end) = self.span(len, what)?;
        Ok(self.buf.slice(start..end))
    }

    /// A varint length and that many bytes, as a borrowed slice (no refcount).
    #[inline]
    pub(crate) fn string_ref(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.length(what)?;
        let (start, end) = self.span(len, what)?;
        Ok(self.data.get(start..end).unwrap_or_default())
    }

    /// The type byte of a typed value: its type and its flag nibble.
    #[inline]
    fn data_type(&mut self) -> Result<(DataType, u8), DecodeError> {
        let byte = self.u8("data type")?;
        let ty = DataType(byte & 0x0f);
        if ty.0 > DataType::BINARY.0 {
            return Err(unknown_type(ty.0));
        }
        Ok((ty, byte & 0xf0))
    }

    /// Reads one typed value; strings and binaries are views into the frame.
    #[inline]
    pub(crate) fn typed(&mut self) -> Result<TypedData, DecodeError> {
        let (ty, flags) = self.data_type()?;
        Ok(match ty {
            DataType::STRING => TypedData::String(self.string("STRING")?),
            DataType::BINARY => TypedData::Binary(self.string("BINARY")?),
            _ => scalar(self, ty, flags)?.into_owned(),
        })
    }

    /// Reads one typed value, strings and binaries borrowed (no refcount).
    #[inline]
    pub(crate) fn typed_ref(&mut self) -> Result<TypedRef<'a>, DecodeError> {
        let (ty, flags) = self.data_type()?;
        Ok(match ty {
            DataType::STRING => TypedRef::String(self.string_ref("STRING")?),
            DataType::BINARY => TypedRef::Binary(self.string_ref("BINARY")?),
            _ => scalar(self, ty, flags)?,
        })
    }

    /// Checks one typed value without building it.
    #[inline]
    pub(crate) fn skip_typed(&mut self) -> Result<(), DecodeError> {
        let (ty, _) = self.data_type()?;
        match ty {
            DataType::STRING | DataType::BINARY => {
                let what = if ty == DataType::STRING {
                    "STRING"
                } else {
                    "BINARY"
                };
                let len = self.length(what)?;
                self.span(len, what)?;
            }
            DataType::NULL | DataType::BOOL => {}
            DataType::INT32 => {
                int32(self.varint()?)?;
            }
            DataType::UINT32 => {
                uint32(self.varint()?)?;
            }
            DataType::INT64 | DataType::UINT64 => {
                self.varint()?;
            }
            DataType::IPV4 => {
                self.span(4, "IPV4")?;
            }
            _ => {
                self.span(16, "IPV6")?;
            }
        }
        Ok(())
    }

    /// One KV-LIST item: a STRING key (borrowed) and a typed value.
    pub(crate) fn kv(&mut self) -> Result<(&'a [u8], TypedData), DecodeError> {
        let key = self.string_ref("key")?;
        let value = self.typed()?;
        Ok((key, value))
    }
}

/// A value of any type but STRING and BINARY, once its type byte is read.
#[inline]
fn scalar<'a>(r: &mut Reader<'a>, ty: DataType, flags: u8) -> Result<TypedRef<'a>, DecodeError> {
    Ok(match ty {
        DataType::NULL => TypedRef::Null,
        DataType::BOOL => TypedRef::Bool(flags & 0x10 != 0),
        DataType::INT32 => TypedRef::Int32(int32(r.varint()?)?),
        DataType::UINT32 => TypedRef::Uint32(uint32(r.varint()?)?),
        DataType::INT64 => TypedRef::Int64(r.varint()? as i64),
        DataType::UINT64 => TypedRef::Uint64(r.varint()?),
        DataType::IPV4 => TypedRef::Ipv4(Ipv4Addr::from(r.array::<4>("IPV4")?)),
        _ => TypedRef::Ipv6(Ipv6Addr::from(r.array::<16>("IPV6")?)),
    })
}

#[cold]
#[inline(never)]
fn unknown_type(t: u8) -> DecodeError {
    DecodeError::UnknownDataType(t)
}

/// INT32 travels as the two's complement in 64 bits; a 32-bit two's complement
/// (what some agents write) is accepted too.
#[inline]
fn int32(raw: u64) -> Result<i32, DecodeError> {
    i32::try_from(raw as i64)
        .or_else(|_| u32::try_from(raw).map(|v| v as i32))
        .map_err(|_| DecodeError::InvalidValue { what: "INT32" })
}

#[inline]
fn uint32(raw: u64) -> Result<u32, DecodeError> {
    u32::try_from(raw).map_err(|_| DecodeError::InvalidValue { what: "UINT32" })
}
