//! NOTIFY: a list of messages, each a name and named typed arguments
//! (SPOE.txt §3.2.6).

use std::fmt;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::hdrs::Headers;
use crate::reader::Reader;
use crate::{varint, DataType, DecodeError, EncodeError, TypedData, TypedRef};

/// The payload of a complete NOTIFY frame.
///
/// Decoding checks the whole structure once (message names, argument counts,
/// argument names, type tags, lengths) and keeps the payload as one `Bytes`;
/// [`Notify::messages`] and [`Message::args`] then iterate without failing and
/// yield views into it. Nothing is copied and nothing is allocated per message
/// or argument.
///
/// `Debug` shows sizes, not contents.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Notify, TypedData};
/// let notify = Notify::builder()
///     .message("check-ip")
///     .arg("ip", TypedData::from(std::net::Ipv4Addr::LOCALHOST))
///     .build()
///     .unwrap();
/// let msg = notify.messages().next().unwrap();
/// assert_eq!(&msg.name()[..], b"check-ip");
/// assert_eq!(msg.ip("ip"), Ok("127.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Notify {
    payload: Bytes,
    count: usize,
}

impl Notify {
    /// Validates a LIST-OF-MESSAGES payload.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] if a message or argument runs past the end,
    /// [`DecodeError::UnknownDataType`], varint errors, out-of-range INT32/UINT32.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        match scan(&payload) {
            Some(count) => Ok(Self { payload, count }),
            None => Err(explain(&payload)),
        }
    }

    /// Starts building a NOTIFY (used by clients and tests).
    pub fn builder() -> NotifyBuilder {
        NotifyBuilder::default()
    }

    /// The messages, in order.
    pub fn messages(&self) -> Messages<'_> {
        Messages {
            reader: Reader::new(&self.payload),
            left: self.count,
            skip: 0,
        }
    }

    /// The first message with this name.
    pub fn message(&self, name: &str) -> Option<Message<'_>> {
        self.messages().find(|m| m.name() == name.as_bytes())
    }

    /// How many messages the frame carries.
    pub const fn len(&self) -> usize {
        self.count
    }

    /// `true` if the frame carries no message.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw LIST-OF-MESSAGES payload.
    pub const fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.payload.len()
    }

    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.payload);
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("messages", &self.count)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// The validation pass, tuned for the common case: walks the whole
/// LIST-OF-MESSAGES with plain indices and says only whether it is valid and
/// how many messages it holds. [`explain`] tells what is wrong when it is not;
/// the two agree on every input (checked by a property test).
#[inline]
fn scan(d: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut count = 0;
    while i < d.len() {
        i = skip_string(d, i)?; // message name
        let nb_args = *d.get(i)?;
        i += 1;
        for _ in 0..nb_args {
            i = skip_string(d, i)?; // argument name
            let tag = *d.get(i)?;
            i += 1;
            i = match DataType(tag & 0x0f) {
                DataType::STRING | DataType::BINARY => skip_string(d, i)?,
                DataType::NULL | DataType::BOOL => i,
                DataType::INT32 => {
                    let (v, used) = scan_varint(d, i)?;
                    i32::try_from(v as i64)
                        .ok()
                        .or_else(|| u32::try_from(v).ok().map(|v| v as i32))?;
                    i + used
                }
                DataType::UINT32 => {
                    let (v, used) = scan_varint(d, i)?;
                    u32::try_from(v).ok()?;
                    i + used
                }
                DataType::INT64 | DataType::UINT64 => i + scan_varint(d, i)?.1,
                DataType::IPV4 => skip_fixed(d, i, 4)?,
                DataType::IPV6 => skip_fixed(d, i, 16)?,
                _ => return None,
            };
        }
        count += 1;
    }
    Some(count)
}

#[inline(always)]
fn scan_varint(d: &[u8], i: usize) -> Option<(u64, usize)> {
    match d.get(i) {
        Some(&b) if b < 240 => Some((u64::from(b), 1)),
        _ => varint::decode_slice(d.get(i..)?).ok(),
    }
}

#[inline(always)]
fn skip_string(d: &[u8], i: usize) -> Option<usize> {
    let (len, used) = scan_varint(d, i)?;
    skip_fixed(d, i + used, usize::try_from(len).ok()?)
}

#[inline(always)]
fn skip_fixed(d: &[u8], i: usize, len: usize) -> Option<usize> {
    i.checked_add(len).filter(|&end| end <= d.len())
}

/// The precise error for a payload [`scan`] refused.
#[cold]
#[inline(never)]
fn explain(payload: &Bytes) -> DecodeError {
    let mut r = Reader::new(payload);
    let mut walk = || -> Result<(), DecodeError> {
        while !r.is_empty() {
            r.string_ref("message name")?;
            let nb_args = r.u8("argument count")?;
            for _ in 0..nb_args {
                r.string_ref("argument name")?;
                r.skip_typed()?;
            }
        }
        Ok(())
    };
    // scan() refused the payload, so the walk fails; if it ever did not, the
    // payload is still refused rather than trusted.
    walk().err().unwrap_or(DecodeError::InvalidValue {
        what: "LIST-OF-MESSAGES",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// The fast scan and the precise walk agree on validity.
        #[test]
        fn scan_agrees_with_the_precise_walk(bytes: Vec<u8>) {
            let payload = Bytes::from(bytes);
            let mut r = Reader::new(&payload);
            let precise = (|| -> Result<usize, DecodeError> {
                let mut count = 0;
                while !r.is_empty() {
                    r.string_ref("message name")?;
                    for _ in 0..r.u8("argument count")? {
                        r.string_ref("argument name")?;
                        r.skip_typed()?;
                    }
                    count += 1;
                }
                Ok(count)
            })();
            proptest::prop_assert_eq!(scan(&payload), precise.ok());
        }
    }

    #[test]
    fn borrowed_views_become_shared_bytes_of_the_frame() {
        let n = Notify::builder()
            .message("m")
            .arg("a", "first")
            .arg("b", Bytes::from_static(b"second"))
            .build()
            .unwrap();
        let m = n.message("m").unwrap();
        for (name, value) in m.args_ref() {
            let view = value.as_bytes().unwrap();
            let shared = m.slice_ref(view).unwrap();
            assert_eq!(&shared[..], view);
            assert_eq!(shared.as_ptr(), view.as_ptr(), "no copy");
            assert_eq!(
                Some(shared),
                m.bytes(std::str::from_utf8(name).unwrap()).ok()
            );
        }
        // The empty view at the very end, and slices of other memory.
        let payload = n.payload();
        assert_eq!(
            m.slice_ref(&payload[payload.len()..]).as_deref(),
            Some(&b""[..])
        );
        let elsewhere = b"second".to_vec();
        assert_eq!(m.slice_ref(&elsewhere), None);
        let longer = payload.to_vec();
        assert_eq!(m.slice_ref(&longer), None);
    }

    #[test]
    fn scan_agrees_on_structured_inputs() {
        // Random bytes rarely form messages: also mutate a valid NOTIFY.
        let valid = Notify::builder()
            .message("m")
            .arg("s", "text")
            .arg("i", -5i32)
            .arg("u", 7u32)
            .arg("l", 1i64 << 40)
            .arg("ip", std::net::Ipv4Addr::LOCALHOST)
            .arg("ip6", std::net::Ipv6Addr::LOCALHOST)
            .arg("n", TypedData::Null)
            .arg("b", true)
            .message("x")
            .build()
            .unwrap();
        let base = valid.payload().to_vec();
        for i in 0..base.len() {
            for v in [0u8, 1, 2, 3, 0x0a, 0x7f, 0xef, 0xf0, 0xff] {
                let mut m = base.clone();
                m[i] = v;
                for cut in [m.len(), m.len() - 1, i] {
                    let p = Bytes::from(m[..cut].to_vec());
                    let fast = scan(&p);
                    let slow = Notify::decode(p.clone());
                    assert_eq!(fast.is_some(), slow.is_ok(), "byte {i} = {v:#x}, cut {cut}");
                    if fast.is_none() {
                        assert_eq!(slow.unwrap_err(), explain(&p));
                    }
                }
            }
        }
    }
}

/// Iterator over the messages of a [`Notify`].
#[derive(Clone)]
pub struct Messages<'a> {
    reader: Reader<'a>,
    left: usize,
    /// Arguments of the message last returned, skipped only when the next
    /// one is asked for (a single-message NOTIFY is never walked twice).
    skip: u8,
}

impl fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messages")
            .field("left", &self.left)
            .finish()
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The payload was validated: these reads cannot fail, and end the
        // iteration if they somehow did.
        for _ in 0..std::mem::take(&mut self.skip) {
            self.reader.string_ref("argument name").ok()?;
            self.reader.skip_typed().ok()?;
        }
        let name = self.reader.string_ref("message name").ok()?;
        let nb_args = self.reader.u8("argument count").ok()?;
        self.skip = nb_args;
        Some(Message {
            name,
            nb_args,
            args: self.reader.clone(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Messages<'_> {}

/// One message of a NOTIFY: a name and its arguments.
#[derive(Clone)]
pub struct Message<'a> {
    name: &'a [u8],
    nb_args: u8,
    args: Reader<'a>,
}

impl<'a> Message<'a> {
    /// The message's name (`spoe-message <name>` in HAProxy's SPOE file),
    /// borrowed from the frame.
    pub const fn name(&self) -> &'a [u8] {
        self.name
    }

    /// How many arguments the message has.
    pub const fn len(&self) -> usize {
        self.nb_args as usize
    }

    /// `true` if the message has no argument.
    pub const fn is_empty(&self) -> bool {
        self.nb_args == 0
    }

    /// The arguments: `(name, value)` pairs in order (names may be empty).
    pub fn args(&self) -> Args<'a> {
        Args {
            reader: self.args.clone(),
            left: self.nb_args,
        }
    }

    /// The arguments with borrowed values: like [`Message::args`], with
    /// strings and binaries as slices of the frame (no reference count per
    /// value), for looking at every argument as cheaply as possible.
    pub fn args_ref(&self) -> ArgsRef<'a> {
        ArgsRef(self.args())
    }

    /// A `Bytes` view of the frame for `view`, a slice borrowed from this
    /// message (from [`Message::args_ref`] or [`Message::arg_ref`]): one
    /// reference count, no copy, as [`Bytes::slice_ref`] does; `None` if
    /// `view` does not lie in the frame.
    pub fn slice_ref(&self, view: &[u8]) -> Option<Bytes> {
        let frame = self.args.bytes();
        let base = frame.as_ptr() as usize;
        let start = (view.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(view.len())?;
        if end > frame.len() {
            return None;
        }
        Some(frame.slice(start..end))
    }

    /// The value of the first argument with this name.
    pub fn arg(&self, name: &str) -> Option<TypedData> {
        let mut r = self.find(name)?;
        r.typed().ok()
    }

    /// The value of the first argument with this name, borrowed.
    pub fn arg_ref(&self, name: &str) -> Option<TypedRef<'a>> {
        let mut r = self.find(name)?;
        r.typed_ref().ok()
    }

    /// A reader at the value of the first argument with this name.
    fn find(&self, name: &str) -> Option<Reader<'a>> {
        let mut r = self.args.clone();
        for _ in 0..self.nb_args {
            let arg_name = r.string_ref("argument name").ok()?;
            if arg_name == name.as_bytes() {
                return Some(r);
            }
            r.skip_typed().ok()?;
        }
        None
    }

    fn typed<T>(
        &self,
        name: &str,
        expected: &'static str,
        pick: impl FnOnce(&TypedData) -> Option<T>,
    ) -> Result<T, ArgError> {
        let value = self.arg(name).ok_or(ArgError::Missing)?;
        pick(&value).ok_or(ArgError::WrongType {
            expected,
            found: value.data_type(),
        })
    }

    /// A STRING or BINARY argument's bytes.
    ///
    /// # Errors
    ///
    /// [`ArgError::Missing`] or [`ArgError::WrongType`] (NULL included).
    pub fn bytes(&self, name: &str) -> Result<Bytes, ArgError> {
        self.typed(name, "STRING or BINARY", |v| v.as_bytes().cloned())
    }

    /// An integer argument of any integer type, as `i64`.
    ///
    /// # Errors
    ///
    /// [`ArgError::Missing`] or [`ArgError::WrongType`].
    pub fn int(&self, name: &str) -> Result<i64, ArgError> {
        self.typed(name, "integer", TypedData::as_i64)
    }

    /// A BOOL argument.
    ///
    /// # Errors
    ///
    /// [`ArgError::Missing`] or [`ArgError::WrongType`].
    pub fn bool(&self, name: &str) -> Result<bool, ArgError> {
        self.typed(name, "BOOL", TypedData::as_bool)
    }

    /// An IPV4 or IPV6 argument.
    ///
    /// # Errors
    ///
    /// [`ArgError::Missing`] or [`ArgError::WrongType`].
    pub fn ip(&self, name: &str) -> Result<IpAddr, ArgError> {
        self.typed(name, "IPV4 or IPV6", TypedData::as_ip)
    }

    /// A `req.hdrs_bin` / `res.hdrs_bin` argument, validated.
    ///
    /// # Errors
    ///
    /// [`ArgError::Missing`], [`ArgError::WrongType`] or
    /// [`ArgError::Invalid`] if the block is malformed.
    pub fn headers(&self, name: &str) -> Result<Headers, ArgError> {
        let raw = self.bytes(name)?;
        Headers::decode(raw).map_err(ArgError::Invalid)
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("name", &String::from_utf8_lossy(self.name))
            .field("args", &self.nb_args)
            .finish()
    }
}

/// Why a typed argument lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// No argument has that name.
    #[error("argument missing")]
    Missing,
    /// The argument has another type.
    #[error("argument is {found}, expected {expected}")]
    WrongType {
        /// The types accepted.
        expected: &'static str,
        /// The type received.
        found: DataType,
    },
    /// The argument's content is malformed (e.g. a bad `hdrs_bin` block).
    #[error("invalid argument: {0}")]
    Invalid(DecodeError),
}

/// Iterator over a message's `(name, value)` arguments: names borrowed from
/// the frame, values owned (strings and binaries are `Bytes` views).
#[derive(Clone)]
pub struct Args<'a> {
    reader: Reader<'a>,
    left: u8,
}

impl fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args").field("left", &self.left).finish()
    }
}

impl<'a> Args<'a> {
    /// The next argument's name, and its value as `value` reads it.
    #[inline(always)]
    fn next_arg<T>(
        &mut self,
        value: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Option<(&'a [u8], T)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = self.reader.string_ref("argument name").ok()?;
        let value = value(&mut self.reader).ok()?;
        Some((name, value))
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = (&'a [u8], TypedData);

    #[inline]
    fn next(&mut self) -> Option<(&'a [u8], TypedData)> {
        self.next_arg(Reader::typed)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left.into(), Some(self.left.into()))
    }
}

impl ExactSizeIterator for Args<'_> {}

/// Iterator over a message's `(name, value)` arguments, names and values
/// borrowed from the frame: see [`Message::args_ref`].
#[derive(Clone, Debug)]
pub struct ArgsRef<'a>(Args<'a>);

impl<'a> Iterator for ArgsRef<'a> {
    type Item = (&'a [u8], TypedRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<(&'a [u8], TypedRef<'a>)> {
        self.0.next_arg(Reader::typed_ref)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for ArgsRef<'_> {}

/// Builds a NOTIFY payload message by message.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Notify, TypedData};
/// let n = Notify::builder()
///     .message("a").arg("x", TypedData::from(1i64))
///     .message("b")
///     .build()
///     .unwrap();
/// assert_eq!(n.len(), 2);
/// ```
#[derive(Debug, Default)]
pub struct NotifyBuilder {
    buf: BytesMut,
    count_at: Option<usize>,
    error: Option<EncodeError>,
}

impl NotifyBuilder {
    /// Starts a new message.
    #[must_use]
    pub fn message(mut self, name: impl AsRef<[u8]>) -> Self {
        let name = name.as_ref();
        varint::encode(name.len() as u64, &mut self.buf);
        self.buf.put_slice(name);
        self.count_at = Some(self.buf.len());
        self.buf.put_u8(0);
        self
    }

    /// Adds an argument to the current message.
    #[must_use]
    pub fn arg(mut self, name: impl AsRef<[u8]>, value: impl Into<TypedData>) -> Self {
        let Some(count) = self.count_at.and_then(|at| self.buf.get_mut(at)) else {
            self.error.get_or_insert(EncodeError::ArgWithoutMessage);
            return self;
        };
        let Some(next) = count.checked_add(1) else {
            self.error.get_or_insert(EncodeError::TooMany {
                what: "arguments in a message",
            });
            return self;
        };
        *count = next;
        let name = name.as_ref();
        varint::encode(name.len() as u64, &mut self.buf);
        self.buf.put_slice(name);
        value.into().encode(&mut self.buf);
        self
    }

    /// The finished NOTIFY.
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooMany`] if a message got more than 255 arguments,
    /// [`EncodeError::ArgWithoutMessage`] if an argument came before any message.
    pub fn build(self) -> Result<Notify, EncodeError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        Notify::decode(self.buf.freeze()).map_err(|_| EncodeError::TooMany {
            what: "bytes (invalid NOTIFY)",
        })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Notify {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut b = Self::builder();
        for _ in 0..u.int_in_range(0u8..=4)? {
            b = b.message(u.arbitrary::<Vec<u8>>()?);
            for _ in 0..u.int_in_range(0u8..=8)? {
                b = b.arg(u.arbitrary::<Vec<u8>>()?, u.arbitrary::<TypedData>()?);
            }
        }
        b.build().map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}
