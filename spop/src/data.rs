//! Typed data (SPOE.txt §3.1): the values carried by NOTIFY arguments, ACK
//! actions and HELLO / DISCONNECT keys.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes};

use crate::reader::Reader;
use crate::{varint, DecodeError};

/// The type tag of a typed value (the low 4 bits of its first byte).
///
/// An open newtype; decoding rejects tags above [`DataType::BINARY`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataType(pub u8);

impl DataType {
    /// 0: no value (an absent sample).
    pub const NULL: Self = Self(0);
    /// 1: a boolean, its value in the flag bit 0x10.
    pub const BOOL: Self = Self(1);
    /// 2: a signed 32-bit integer.
    pub const INT32: Self = Self(2);
    /// 3: an unsigned 32-bit integer.
    pub const UINT32: Self = Self(3);
    /// 4: a signed 64-bit integer.
    pub const INT64: Self = Self(4);
    /// 5: an unsigned 64-bit integer.
    pub const UINT64: Self = Self(5);
    /// 6: an IPv4 address, 4 bytes.
    pub const IPV4: Self = Self(6);
    /// 7: an IPv6 address, 16 bytes.
    pub const IPV6: Self = Self(7);
    /// 8: a byte string (not necessarily UTF-8).
    pub const STRING: Self = Self(8);
    /// 9: binary data.
    pub const BINARY: Self = Self(9);

    /// The type's name as the SPOP documentation writes it.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "NULL",
            1 => "BOOL",
            2 => "INT32",
            3 => "UINT32",
            4 => "INT64",
            5 => "UINT64",
            6 => "IPV4",
            7 => "IPV6",
            8 => "STRING",
            9 => "BINARY",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Debug for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataType::{}", self.name())
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One typed value.
///
/// `String` and `Binary` are [`Bytes`] views into the received frame: decoding
/// copies none of their bytes. Strings are byte strings; [`TypedData::as_str`]
/// checks UTF-8 on demand. `Debug` shows the length of binary values, never
/// their contents.
///
/// # Examples
///
/// ```
/// use haproxy_spop::TypedData;
/// let v = TypedData::from("GET");
/// assert_eq!(v.as_str(), Some("GET"));
/// assert_eq!(TypedData::from(-42i64).as_i64(), Some(-42));
/// let mut buf = Vec::new();
/// TypedData::Bool(true).encode(&mut buf);
/// assert_eq!(buf, [0x11]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TypedData {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 32-bit integer.
    Int32(i32),
    /// An unsigned 32-bit integer.
    Uint32(u32),
    /// A signed 64-bit integer (HAProxy sends every integer sample as this).
    Int64(i64),
    /// An unsigned 64-bit integer.
    Uint64(u64),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// A byte string, not checked for UTF-8.
    String(Bytes),
    /// Binary data.
    Binary(Bytes),
}

impl TypedData {
    /// The value's type tag.
    pub const fn data_type(&self) -> DataType {
        match self {
            Self::Null => DataType::NULL,
            Self::Bool(_) => DataType::BOOL,
            Self::Int32(_) => DataType::INT32,
            Self::Uint32(_) => DataType::UINT32,
            Self::Int64(_) => DataType::INT64,
            Self::Uint64(_) => DataType::UINT64,
            Self::Ipv4(_) => DataType::IPV4,
            Self::Ipv6(_) => DataType::IPV6,
            Self::String(_) => DataType::STRING,
            Self::Binary(_) => DataType::BINARY,
        }
    }

    /// Decodes one value from the start of `src`, returning it and the bytes used.
    /// The value's bytes are views into `src`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnknownDataType`], [`DecodeError::Truncated`], varint
    /// errors, or [`DecodeError::InvalidValue`] for an INT32 or UINT32 out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use haproxy_spop::TypedData;
    /// let (v, used) = TypedData::decode(&Bytes::from_static(b"\x08\x02hi")).unwrap();
    /// assert_eq!((v, used), (TypedData::from("hi"), 4));
    /// ```
    pub fn decode(src: &Bytes) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(src);
        let value = r.typed()?;
        Ok((value, r.pos()))
    }

    /// The exact number of bytes [`TypedData::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Null | Self::Bool(_) => 0,
            Self::Int32(v) => varint::encoded_len(i64::from(*v) as u64),
            Self::Uint32(v) => varint::encoded_len(u64::from(*v)),
            Self::Int64(v) => varint::encoded_len(*v as u64),
            Self::Uint64(v) => varint::encoded_len(*v),
            Self::Ipv4(_) => 4,
            Self::Ipv6(_) => 16,
            Self::String(b) | Self::Binary(b) => varint::encoded_len(b.len() as u64) + b.len(),
        }
    }

    /// Writes the value.
    ///
    /// # Panics
    ///
    /// Panics if `buf` has less than [`TypedData::encoded_len`] bytes of room.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Bool(true) => buf.put_u8(DataType::BOOL.0 | 0x10),
            other => buf.put_u8(other.data_type().0),
        }
        match self {
            Self::Null | Self::Bool(_) => {}
            Self::Int32(v) => varint::encode_signed(i64::from(*v), buf),
            Self::Uint32(v) => varint::encode(u64::from(*v), buf),
            Self::Int64(v) => varint::encode_signed(*v, buf),
            Self::Uint64(v) => varint::encode(*v, buf),
            Self::Ipv4(ip) => buf.put_slice(&ip.octets()),
            Self::Ipv6(ip) => buf.put_slice(&ip.octets()),
            Self::String(b) | Self::Binary(b) => {
                varint::encode(b.len() as u64, buf);
                buf.put_slice(b);
            }
        }
    }

    /// `true` for [`TypedData::Null`].
    pub const fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The bytes of a STRING or BINARY value.
    pub const fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Self::String(b) | Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// A STRING or BINARY value as `&str`, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        TypedRef::from(self).as_str()
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        TypedRef::from(self).as_bool()
    }

    /// Any integer value that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        TypedRef::from(self).as_i64()
    }

    /// Any integer value that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        TypedRef::from(self).as_u64()
    }

    /// An IPv4 or IPv6 value.
    pub fn as_ip(&self) -> Option<IpAddr> {
        TypedRef::from(self).as_ip()
    }
}

impl fmt::Debug for TypedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&TypedRef::from(self), f)
    }
}

/// One typed value borrowed from a received frame, as
/// [`Message::args_ref`](crate::Message::args_ref) yields it.
///
/// The borrowed twin of [`TypedData`]: `String` and `Binary` are plain slices
/// of the frame, so reading a value costs no reference count. Use it to look
/// at arguments while the frame is at hand; keep a [`TypedData`] (or a
/// [`Bytes`] from [`Message::bytes`](crate::Message::bytes)) to hold one
/// past it.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Notify, TypedRef};
/// let notify = Notify::builder().message("m").arg("path", "/a").arg("n", 7i64).build()?;
/// let msg = notify.messages().next().unwrap();
/// let args: Vec<_> = msg.args_ref().collect();
/// assert_eq!(args[0], (&b"path"[..], TypedRef::String(b"/a")));
/// assert_eq!(args[1].1.as_i64(), Some(7));
/// # Ok::<(), haproxy_spop::EncodeError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypedRef<'a> {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 32-bit integer.
    Int32(i32),
    /// An unsigned 32-bit integer.
    Uint32(u32),
    /// A signed 64-bit integer.
    Int64(i64),
    /// An unsigned 64-bit integer.
    Uint64(u64),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// A byte string, not checked for UTF-8.
    String(&'a [u8]),
    /// Binary data.
    Binary(&'a [u8]),
}

impl<'a> TypedRef<'a> {
    /// The value's type tag.
    pub const fn data_type(&self) -> DataType {
        match self {
            Self::Null => DataType::NULL,
            Self::Bool(_) => DataType::BOOL,
            Self::Int32(_) => DataType::INT32,
            Self::Uint32(_) => DataType::UINT32,
            Self::Int64(_) => DataType::INT64,
            Self::Uint64(_) => DataType::UINT64,
            Self::Ipv4(_) => DataType::IPV4,
            Self::Ipv6(_) => DataType::IPV6,
            Self::String(_) => DataType::STRING,
            Self::Binary(_) => DataType::BINARY,
        }
    }

    /// `true` for [`TypedRef::Null`].
    pub const fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The bytes of a STRING or BINARY value.
    pub const fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Self::String(b) | Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// A STRING or BINARY value as `&str`, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// A boolean value.
    pub const fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Any integer value that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::Int32(v) => Some(i64::from(v)),
            Self::Uint32(v) => Some(i64::from(v)),
            Self::Int64(v) => Some(v),
            Self::Uint64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int32(v) => u64::try_from(v).ok(),
            Self::Uint32(v) => Some(u64::from(v)),
            Self::Int64(v) => u64::try_from(v).ok(),
            Self::Uint64(v) => Some(v),
            _ => None,
        }
    }

    /// An IPv4 or IPv6 value.
    pub const fn as_ip(&self) -> Option<IpAddr> {
        match *self {
            Self::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Self::Ipv6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        }
    }

    /// The owned value; bytes (if any) are copied. The decoder calls it only
    /// for the other types, and makes STRING and BINARY views itself.
    pub(crate) fn into_owned(self) -> TypedData {
        match self {
            Self::Null => TypedData::Null,
            Self::Bool(v) => TypedData::Bool(v),
            Self::Int32(v) => TypedData::Int32(v),
            Self::Uint32(v) => TypedData::Uint32(v),
            Self::Int64(v) => TypedData::Int64(v),
            Self::Uint64(v) => TypedData::Uint64(v),
            Self::Ipv4(v) => TypedData::Ipv4(v),
            Self::Ipv6(v) => TypedData::Ipv6(v),
            Self::String(b) => TypedData::String(Bytes::copy_from_slice(b)),
            Self::Binary(b) => TypedData::Binary(Bytes::copy_from_slice(b)),
        }
    }
}

impl<'a> From<&'a TypedData> for TypedRef<'a> {
    fn from(value: &'a TypedData) -> Self {
        match value {
            TypedData::Null => Self::Null,
            TypedData::Bool(v) => Self::Bool(*v),
            TypedData::Int32(v) => Self::Int32(*v),
            TypedData::Uint32(v) => Self::Uint32(*v),
            TypedData::Int64(v) => Self::Int64(*v),
            TypedData::Uint64(v) => Self::Uint64(*v),
            TypedData::Ipv4(v) => Self::Ipv4(*v),
            TypedData::Ipv6(v) => Self::Ipv6(*v),
            TypedData::String(b) => Self::String(b),
            TypedData::Binary(b) => Self::Binary(b),
        }
    }
}

impl PartialEq<TypedData> for TypedRef<'_> {
    fn eq(&self, other: &TypedData) -> bool {
        *self == TypedRef::from(other)
    }
}

impl fmt::Debug for TypedRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("Null"),
            Self::Bool(v) => f.debug_tuple("Bool").field(v).finish(),
            Self::Int32(v) => f.debug_tuple("Int32").field(v).finish(),
            Self::Uint32(v) => f.debug_tuple("Uint32").field(v).finish(),
            Self::Int64(v) => f.debug_tuple("Int64").field(v).finish(),
            Self::Uint64(v) => f.debug_tuple("Uint64").field(v).finish(),
            Self::Ipv4(v) => f.debug_tuple("Ipv4").field(v).finish(),
            Self::Ipv6(v) => f.debug_tuple("Ipv6").field(v).finish(),
            Self::String(b) => f.debug_struct("String").field("len", &b.len()).finish(),
            Self::Binary(b) => f.debug_struct("Binary").field("len", &b.len()).finish(),
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for TypedData {
            fn from(value: $t) -> Self {
                Self::$v(value)
            }
        }
    )*};
}

from_scalar! {
    bool => Bool,
    i32 => Int32,
    u32 => Uint32,
    i64 => Int64,
    u64 => Uint64,
    Ipv4Addr => Ipv4,
    Ipv6Addr => Ipv6,
}

impl From<IpAddr> for TypedData {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(ip) => Self::Ipv4(ip),
            IpAddr::V6(ip) => Self::Ipv6(ip),
        }
    }
}

/// A `&'static str` becomes a STRING without copying.
impl From<&'static str> for TypedData {
    fn from(s: &'static str) -> Self {
        Self::String(Bytes::from_static(s.as_bytes()))
    }
}

/// An owned `String` becomes a STRING.
impl From<String> for TypedData {
    fn from(s: String) -> Self {
        Self::String(Bytes::from(s))
    }
}

/// `Bytes` become BINARY; wrap them in [`TypedData::String`] for a STRING.
impl From<Bytes> for TypedData {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

impl<T: Into<Self>> From<Option<T>> for TypedData {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for TypedData {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0u8..=9)? {
            0 => Self::Null,
            1 => Self::Bool(u.arbitrary()?),
            2 => Self::Int32(u.arbitrary()?),
            3 => Self::Uint32(u.arbitrary()?),
            4 => Self::Int64(u.arbitrary()?),
            5 => Self::Uint64(u.arbitrary()?),
            6 => Self::Ipv4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?)),
            7 => Self::Ipv6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?)),
            8 => Self::String(Bytes::from(u.arbitrary::<Vec<u8>>()?)),
            _ => Self::Binary(Bytes::from(u.arbitrary::<Vec<u8>>()?)),
        })
    }
}
