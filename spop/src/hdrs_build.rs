//! Building header blocks an agent hands back to HAProxy in one variable.
//!
//! HAProxy 3.4's `http-request` / `http-response` / `http-after-response`
//! actions take the `req.hdrs_bin` format (checked on HAProxy 3.4.7):
//!
//! - `set-headers-bin <expr> [prefix <str>]` and `add-headers-bin <expr>
//!   [prefix <str>]`: `<varint len><name><varint len><value>...` ended by two
//!   empty strings (`0x00 0x00`); without the end marker HAProxy answers 500.
//!   `set-headers-bin` sets entry after entry, so a name repeated in the
//!   block keeps its last value; `add-headers-bin` keeps every entry.
//!   Build it with [`HeadersBuilder`].
//! - `del-headers-bin <expr> [-m str|beg|end|sub]`: names only,
//!   `<varint len><name>...` ended by one empty string (`0x00`); build it with
//!   [`HeaderNames`].
//!
//! The agent sets the block as a BINARY variable, e.g.
//! `Ack::new().set_var(VarScope::TRANSACTION, "hdrs", block)`, and the
//! configuration applies it: `http-request set-headers-bin var(txn.<prefix>.hdrs)`.
//! Where the block must travel as text (a header, a map, a log line),
//! [`base64`] encodes it and HAProxy's `b64dec` converter decodes it:
//! `set-headers-bin var(txn.<prefix>.hdrs64),b64dec`.
//!
//! HAProxy does not run these headers through its HTTP parser, so the
//! builders refuse what would let a request be smuggled: empty names, names
//! that are not RFC 9110 tokens, values with NUL, CR or LF.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{varint, Headers, TypedData};

/// A header the builders refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHeader {
    /// An empty name (it would end the block early).
    #[error("empty header name")]
    EmptyName,
    /// A name byte that is no RFC 9110 token character.
    #[error("header name byte {0:#04x} is not a token character")]
    Name(u8),
    /// NUL, CR or LF in a value.
    #[error("header value byte {0:#04x} (NUL, CR or LF) is not allowed")]
    Value(u8),
}

/// RFC 9110 §5.6.2 `tchar`.
const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

fn check_name(name: &[u8]) -> Result<(), InvalidHeader> {
    if name.is_empty() {
        return Err(InvalidHeader::EmptyName);
    }
    match name.iter().find(|&&b| !is_tchar(b)) {
        Some(&b) => Err(InvalidHeader::Name(b)),
        None => Ok(()),
    }
}

fn check_value(value: &[u8]) -> Result<(), InvalidHeader> {
    match value.iter().find(|&&b| matches!(b, 0 | b'\r' | b'\n')) {
        Some(&b) => Err(InvalidHeader::Value(b)),
        None => Ok(()),
    }
}

fn put_string(buf: &mut BytesMut, s: &[u8]) {
    varint::encode(s.len() as u64, buf);
    buf.put_slice(s);
}

/// Builds a `set-headers-bin` / `add-headers-bin` block: the inverse of
/// [`Headers`].
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Ack, HeadersBuilder, VarScope};
/// let mut b = HeadersBuilder::new();
/// b.insert("x-user", "alice")?.insert("x-score", "87")?;
/// let headers = b.build();
/// assert_eq!(headers.as_bytes().as_ref(), b"\x06x-user\x05alice\x07x-score\x0287\x00\x00");
/// assert_eq!(headers.get("x-score").as_deref(), Some(&b"87"[..]));
/// // One variable carries them all: `http-request set-headers-bin var(txn.<prefix>.hdrs)`.
/// let ack = Ack::new().set_var(VarScope::TRANSACTION, "hdrs", headers);
/// assert_eq!(ack.actions.len(), 1);
/// assert!(HeadersBuilder::new().insert("bad name", "x").is_err());
/// assert!(HeadersBuilder::new().insert("x", "a\r\nb: c").is_err());
/// # Ok::<(), haproxy_spop::InvalidHeader>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct HeadersBuilder {
    buf: BytesMut,
    count: usize,
}

impl HeadersBuilder {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header (repeat a name to send it several times).
    ///
    /// # Errors
    ///
    /// [`InvalidHeader`] for an empty name, a name that is no token, a value
    /// with NUL, CR or LF; nothing is appended then.
    pub fn insert(
        &mut self,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, InvalidHeader> {
        let (name, value) = (name.as_ref(), value.as_ref());
        check_name(name)?;
        check_value(value)?;
        put_string(&mut self.buf, name);
        put_string(&mut self.buf, value);
        self.count += 1;
        Ok(self)
    }

    /// Appends every pair, stopping at the first invalid one.
    ///
    /// # Errors
    ///
    /// As [`HeadersBuilder::insert`]; the pairs before the bad one stay.
    pub fn extend<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Result<&mut Self, InvalidHeader> {
        for (n, v) in headers {
            self.insert(n, v)?;
        }
        Ok(self)
    }

    /// Headers appended so far.
    pub const fn len(&self) -> usize {
        self.count
    }

    /// `true` if no header was appended.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The block with its end marker, as a [`Headers`] (which turns into a
    /// BINARY [`TypedData`] for `Ack::set_var`).
    pub fn build(mut self) -> Headers {
        self.buf.put_slice(&[0, 0]);
        Headers::from_validated(self.buf.freeze(), self.count)
    }
}

/// A header block becomes a BINARY value (for `Ack::set_var`).
impl From<Headers> for TypedData {
    fn from(h: Headers) -> Self {
        Self::Binary(h.as_bytes().clone())
    }
}

/// Builds a `del-headers-bin` block: names, ended by one empty string.
///
/// # Examples
///
/// ```
/// use haproxy_spop::HeaderNames;
/// let mut names = HeaderNames::new();
/// names.insert("x-internal")?.insert("cookie")?;
/// assert_eq!(&names.build()[..], b"\x0ax-internal\x06cookie\x00");
/// # Ok::<(), haproxy_spop::InvalidHeader>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct HeaderNames {
    buf: BytesMut,
    count: usize,
}

impl HeaderNames {
    /// No name yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a name.
    ///
    /// # Errors
    ///
    /// [`InvalidHeader::EmptyName`] or [`InvalidHeader::Name`].
    pub fn insert(&mut self, name: impl AsRef<[u8]>) -> Result<&mut Self, InvalidHeader> {
        let name = name.as_ref();
        check_name(name)?;
        put_string(&mut self.buf, name);
        self.count += 1;
        Ok(self)
    }

    /// Names appended so far.
    pub const fn len(&self) -> usize {
        self.count
    }

    /// `true` if no name was appended.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The block with its end marker (one empty string).
    pub fn build(mut self) -> Bytes {
        self.buf.put_u8(0);
        self.buf.freeze()
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), what HAProxy's `b64dec`
/// converter decodes. A dozen lines rather than a dependency.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{base64, HeadersBuilder};
/// assert_eq!(base64(b"hi!"), "aGkh");
/// let mut b = HeadersBuilder::new();
/// b.insert("x", "1")?;
/// // http-request set-headers-bin var(txn.<prefix>.h64),b64dec
/// assert_eq!(base64(b.build().as_bytes()), "AXgBMQAA");
/// # Ok::<(), haproxy_spop::InvalidHeader>(())
/// ```
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbase64(s: &str) -> Vec<u8> {
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        out
    }

    #[test]
    fn rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn refusals_append_nothing() {
        let mut b = HeadersBuilder::new();
        b.insert("a", "1").unwrap();
        assert_eq!(b.insert("", "x").unwrap_err(), InvalidHeader::EmptyName);
        assert_eq!(b.insert("a b", "x").unwrap_err(), InvalidHeader::Name(b' '));
        assert_eq!(b.insert("a:", "x").unwrap_err(), InvalidHeader::Name(b':'));
        assert_eq!(
            b.insert("a", "x\ny").unwrap_err(),
            InvalidHeader::Value(b'\n')
        );
        assert_eq!(b.insert("a", "x\0").unwrap_err(), InvalidHeader::Value(0));
        assert_eq!(b.len(), 1);
        let h = b.build();
        assert_eq!(h.as_bytes().as_ref(), b"\x01a\x011\x00\x00");
        assert!(HeadersBuilder::new().build().is_empty());
        assert_eq!(&HeaderNames::new().build()[..], b"\x00");
        let mut names = HeaderNames::new();
        assert!(names.insert("").is_err());
        assert!(names.is_empty());
    }

    #[test]
    fn long_values_use_long_varints() {
        let v = "v".repeat(300);
        let mut b = HeadersBuilder::new();
        b.insert("x", &v).unwrap();
        let h = Headers::decode(b.build().as_bytes().clone()).unwrap();
        assert_eq!(h.get("x").unwrap().len(), 300);
    }

    fn token() -> impl proptest::strategy::Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9a-zA-Z-]{1,40}"
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::prelude::any::<u8>()
                .prop_filter("no NUL/CR/LF", |b| !matches!(b, 0 | 13 | 10)),
            0..300,
        )
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn roundtrip_with_headers(pairs in proptest::collection::vec((token(), value()), 0..20)) {
            let mut b = HeadersBuilder::new();
            b.extend(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_slice()))).unwrap();
            let built = b.build();
            // The same bytes as Headers::encode, and Headers decodes them back.
            proptest::prop_assert_eq!(
                built.as_bytes(),
                &Headers::encode(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())))
            );
            let decoded = Headers::decode(built.as_bytes().clone()).unwrap();
            proptest::prop_assert_eq!(&decoded, &built);
            let back: Vec<(String, Vec<u8>)> = decoded
                .iter()
                .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
                .collect();
            proptest::prop_assert_eq!(back, pairs);
        }

        #[test]
        fn base64_roundtrip(bytes: Vec<u8>) {
            let enc = base64(&bytes);
            proptest::prop_assert_eq!(enc.len(), bytes.len().div_ceil(3) * 4);
            proptest::prop_assert_eq!(unbase64(&enc), bytes);
        }

        #[test]
        fn names_block(names in proptest::collection::vec(token(), 0..20)) {
            let mut b = HeaderNames::new();
            for n in &names {
                b.insert(n).unwrap();
            }
            let block = b.build();
            // Names as a headers block without values: same shape, one end marker.
            let mut want = Vec::new();
            for n in &names {
                varint::encode(n.len() as u64, &mut want);
                want.extend_from_slice(n.as_bytes());
            }
            want.push(0);
            proptest::prop_assert_eq!(&block[..], &want[..]);
        }
    }
}
