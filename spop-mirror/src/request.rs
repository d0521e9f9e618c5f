//! Rebuilding the client's request from the `mirror` message.
//!
//! # The rebuilding policy
//!
//! Each `mirror` message becomes one [`MirrorRequest`], or is refused with a
//! [`BadMessage`] kind (counted in `spop_mirror_bad_messages_total{kind}`,
//! never mirrored). The rules, in the order they apply:
//!
//! * **Method**: an HTTP token (RFC 9110 `tchar`s only), else `bad_method`
//!   (so CR, LF, NUL, spaces are refused).
//! * **Request target**: origin-form (`/path?query`) or `*`. An absolute URI
//!   (`http://` or `https://`, any case) loses its scheme and authority: only
//!   its path and query are kept, so nothing but the configured target is
//!   ever contacted. Anything else (relative, authority-form, other schemes,
//!   empty) is `bad_uri`. Control bytes (0x00-0x1f, 0x7f: CR, LF, NUL...)
//!   are `bad_uri`; spaces, bytes 0x80-0xff, `#` and the other bytes
//!   `http::Uri` refuses are percent-encoded (counted in
//!   `spop_mirror_uri_reencoded_total`); every other byte is kept as it came.
//! * **Header names**: tokens only (`tchar`s), else `bad_headers`: a space,
//!   a colon, CR, LF, NUL in a name refuses the request.
//! * **Header values**: any byte but the control bytes (HTAB allowed):
//!   CR, LF, NUL and other controls are `bad_headers`. obs-text (0x80-0xff)
//!   is kept and sent as it came (RFC 9110 §5.5 lets a recipient keep it,
//!   and a mirror should replay what production saw).
//! * **Content-Length**: every value (and every element of a comma list)
//!   must be the same decimal number, else `bad_framing`. It is never
//!   forwarded: the length sent is the length of the body sent.
//! * **Transfer-Encoding**: only `chunked` alone is accepted (HAProxy passes
//!   the body de-chunked), else `bad_framing` (a `gzip, chunked` body would
//!   be replayed with the wrong meaning). It is never forwarded; the body
//!   goes out with a Content-Length. With Transfer-Encoding, Content-Length
//!   is ignored for truncation (RFC 9112 §6.3).
//! * **Truncation**: the body is cut short if a Content-Length (without
//!   Transfer-Encoding) is larger than the body, or, when the optional
//!   `req.body_size` argument is configured (`--arg-body-size`) and is an
//!   integer, if it is larger than the body. Truncated requests are dropped
//!   (`truncated_body`) unless `--send-truncated`.
//! * **Hop-by-hop headers** are dropped: Connection, Keep-Alive,
//!   Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade and every
//!   header the Connection header names (except Host and Content-Length,
//!   which have rules of their own). This is one pass over the headers with
//!   a hash set of the named tokens: linear in their number.
//! * **Host**: the first one is kept apart (sent according to `--host`), the
//!   others are dropped.
//! * **Everything else** is kept, in order, duplicates included, up to
//!   [`MAX_HEADERS`] (24 000) headers; more is `too_many_headers` (an
//!   `http::HeaderMap`, which hyper sends from, holds 24 576 at most). The
//!   send-time conversion never panics either: past that size (with many
//!   `--add-header`s) it fails and counts a target error `other`.
//!
//! The request is copied out of the frame into one allocation of exactly
//! its size (method, target, version, Host, kept headers, body), so a queued
//! request holds its own bytes and nothing else: the queue's byte budget is
//! real memory.

use std::borrow::Cow;
use std::collections::HashSet;

use bytes::Bytes;
use haproxy_spop::{ArgError, Framing, Headers, Message, TypedRef};

/// The argument names of the `mirror` message.
#[derive(Debug, Clone)]
pub struct ArgNames {
    /// `method`.
    pub method: String,
    /// `url`.
    pub path: String,
    /// `req.ver`.
    pub version: String,
    /// `req.hdrs_bin`.
    pub headers: String,
    /// `req.body`.
    pub body: String,
    /// `req.body_size`, optional (`None`: not looked for): when the message
    /// has it, a body shorter than it is truncated.
    pub body_size: Option<String>,
}

impl Default for ArgNames {
    fn default() -> Self {
        Self {
            method: "arg_method".into(),
            path: "arg_path".into(),
            version: "arg_ver".into(),
            headers: "arg_hdrs".into(),
            body: "arg_body".into(),
            body_size: Some("arg_body_size".into()),
        }
    }
}

/// Why a message could not become a request. Each kind is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadMessage {
    /// A required argument is absent.
    MissingArg,
    /// An argument has the wrong type (NULL included).
    WrongType,
    /// The `req.hdrs_bin` block is malformed, or a header name or value is
    /// not allowed.
    BadHeaders,
    /// The method is not a valid token.
    BadMethod,
    /// The URL cannot be used (empty, not a path, control bytes).
    BadUri,
    /// Conflicting or invalid Content-Length, or a Transfer-Encoding other
    /// than `chunked`.
    BadFraming,
    /// More than [`MAX_HEADERS`] headers to send.
    TooManyHeaders,
}

/// The most headers a rebuilt request sends (besides Host and
/// Content-Length): an `http::HeaderMap`, which hyper sends from, holds
/// 24 576 entries at most, and `--add-header`s need room too.
pub const MAX_HEADERS: usize = 24_000;

impl BadMessage {
    /// Every kind, for metrics.
    pub const ALL: [Self; 7] = [
        Self::MissingArg,
        Self::WrongType,
        Self::BadHeaders,
        Self::BadMethod,
        Self::BadUri,
        Self::BadFraming,
        Self::TooManyHeaders,
    ];

    /// The kind's label in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::MissingArg => "missing_argument",
            Self::WrongType => "wrong_type",
            Self::BadHeaders => "bad_headers",
            Self::BadMethod => "bad_method",
            Self::BadUri => "bad_uri",
            Self::BadFraming => "bad_framing",
            Self::TooManyHeaders => "too_many_headers",
        }
    }

    fn from_arg(e: ArgError) -> Self {
        match e {
            ArgError::Missing => Self::MissingArg,
            ArgError::Invalid(_) => Self::BadHeaders,
            _ => Self::WrongType,
        }
    }
}

/// A byte range of [`MirrorRequest`]'s buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One kept header: the name is `start..mid`, the value `mid..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderSpan {
    start: u32,
    mid: u32,
    end: u32,
}

impl HeaderSpan {
    const fn name(self) -> Span {
        Span {
            start: self.start,
            end: self.mid,
        }
    }

    const fn value(self) -> Span {
        Span {
            start: self.mid,
            end: self.end,
        }
    }
}

/// A request ready to mirror, shared by every target.
///
/// It owns one compact buffer holding exactly its method, target, version,
/// Host, kept headers and body, one after another; the accessors are views
/// into it (nothing of the SPOP frame is kept alive). The headers are
/// `(name, value)` byte slices in the order they came, ready to be written
/// out as they are.
#[derive(Clone)]
pub struct MirrorRequest {
    buf: Bytes,
    method: Span,
    path: Span,
    version: Span,
    host: Option<Span>,
    headers: Vec<HeaderSpan>,
    body: Span,
    has_body_framing: bool,
    truncated: bool,
    uri_reencoded: bool,
}

impl MirrorRequest {
    /// The method (an HTTP token).
    pub fn method(&self) -> &str {
        std::str::from_utf8(self.method.get(&self.buf)).unwrap_or_default()
    }

    /// Path and query in origin-form, or `*` (printable ASCII only).
    pub fn path(&self) -> &str {
        std::str::from_utf8(self.path.get(&self.buf)).unwrap_or_default()
    }

    /// The path as a view into the buffer (for a zero-copy `http::Uri`).
    pub fn path_bytes(&self) -> Bytes {
        self.slice(self.path)
    }

    /// The client's HTTP version (`1.0`, `1.1`, `2.0`), for information.
    pub fn version(&self) -> &[u8] {
        self.version.get(&self.buf)
    }

    /// The original Host, if any.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|s| s.get(&self.buf))
    }

    /// The original Host as a view into the buffer.
    pub fn host_bytes(&self) -> Option<Bytes> {
        self.host.map(|s| self.slice(s))
    }

    /// How many headers are sent (Host, Content-Length and hop-by-hop ones
    /// left out).
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The headers sent, in order: names as HAProxy gave them (lower case).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|h| (h.name().get(&self.buf), h.value().get(&self.buf)))
    }

    /// The headers as views into the buffer (for zero-copy header values).
    pub fn header_bytes(&self) -> impl ExactSizeIterator<Item = (&[u8], Bytes)> + '_ {
        self.headers
            .iter()
            .map(|h| (h.name().get(&self.buf), self.slice(h.value())))
    }

    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The body (possibly empty), a view into the buffer.
    pub fn body(&self) -> Bytes {
        self.slice(self.body)
    }

    /// The body's length.
    pub const fn body_len(&self) -> usize {
        (self.body.end - self.body.start) as usize
    }

    /// Whether a Content-Length is sent (the request announced a body, with
    /// a Content-Length or chunked, or has one).
    pub const fn has_body_framing(&self) -> bool {
        self.has_body_framing
    }

    /// The body is shorter than the client's (Content-Length, or
    /// `req.body_size` when configured).
    pub const fn truncated(&self) -> bool {
        self.truncated
    }

    /// The URL had bytes `http::Uri` does not take; they were percent-encoded.
    pub const fn uri_reencoded(&self) -> bool {
        self.uri_reencoded
    }

    /// Bytes of memory this request holds: its buffer, its header index and
    /// itself (what the queue's byte budget counts).
    pub fn size(&self) -> usize {
        self.buf.len()
            + self.headers.capacity() * std::mem::size_of::<HeaderSpan>()
            + std::mem::size_of::<Self>()
    }

    /// The buffer the request lives in (every view points into it).
    pub const fn buffer(&self) -> &Bytes {
        &self.buf
    }

    fn slice(&self, s: Span) -> Bytes {
        self.buf
            .slice(s.start as usize..(s.end as usize).min(self.buf.len()))
    }
}

impl std::fmt::Debug for MirrorRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header names only and the body's length: values may hold credentials.
        f.debug_struct("MirrorRequest")
            .field("method", &self.method())
            .field("path", &self.path())
            .field(
                "headers",
                &self
                    .headers()
                    .map(|(n, _)| String::from_utf8_lossy(n))
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body_len())
            .field("has_body_framing", &self.has_body_framing)
            .field("truncated", &self.truncated)
            .field("uri_reencoded", &self.uri_reencoded)
            .finish_non_exhaustive()
    }
}

/// The hop-by-hop headers never forwarded (RFC 9110 §7.6.1), besides those
/// the Connection header names.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// RFC 9110 `tchar`.
const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A field value's bytes: anything but controls (HTAB allowed).
pub(crate) fn is_value(s: &[u8]) -> bool {
    s.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// `s` without leading and trailing spaces and tabs (HTTP's OWS).
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(a), Some(b)) => s.get(a..=b).unwrap_or_default(),
        _ => &[],
    }
}

/// What becomes of a request header on its way to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Content-Length or Transfer-Encoding: the framing is the library's
    /// to check, and the target's Content-Length is written anew.
    Framing,
    /// Host (its first value is kept, apart).
    Host,
    /// Hop-by-hop, or named by the Connection header: not forwarded.
    Dropped,
    /// Sent on.
    Kept,
}

/// The class of a header `name`; `named` tells whether the Connection
/// header names it.
fn class(name: &[u8], named: impl Fn(&[u8]) -> bool) -> Class {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    if is(b"content-length") || is(b"transfer-encoding") {
        Class::Framing
    } else if is(b"host") {
        Class::Host
    } else if HOP_BY_HOP.iter().any(|h| is(h)) || named(name) {
        Class::Dropped
    } else {
        Class::Kept
    }
}

/// A STRING or BINARY argument's bytes, as `Message::bytes` reads them.
fn bytes_of(v: Option<TypedRef<'_>>) -> Result<&[u8], ArgError> {
    let v = v.ok_or(ArgError::Missing)?;
    v.as_bytes().ok_or(ArgError::WrongType {
        expected: "STRING or BINARY",
        found: v.data_type(),
    })
}

/// Rebuilds the request carried by `msg` (see the module's policy).
///
/// # Errors
///
/// The kind of [`BadMessage`].
pub fn build<'a>(msg: &Message<'a>, names: &ArgNames) -> Result<MirrorRequest, BadMessage> {
    // One pass over the arguments, as borrowed views (the first of each
    // name counts, as `Message::arg` has it).
    let (mut method, mut url, mut version, mut hdrs, mut body, mut body_size) =
        (None, None, None, None, None, None);
    let first = |slot: &mut Option<TypedRef<'a>>, v: TypedRef<'a>| {
        if slot.is_none() {
            *slot = Some(v);
        }
    };
    let body_size_name = names.body_size.as_deref().map(str::as_bytes);
    for (name, value) in msg.args_ref() {
        if name == names.method.as_bytes() {
            first(&mut method, value);
        }
        if name == names.path.as_bytes() {
            first(&mut url, value);
        }
        if name == names.version.as_bytes() {
            first(&mut version, value);
        }
        if name == names.headers.as_bytes() {
            first(&mut hdrs, value);
        }
        if name == names.body.as_bytes() {
            first(&mut body, value);
        }
        if Some(name) == body_size_name {
            first(&mut body_size, value);
        }
    }
    let method = bytes_of(method).map_err(BadMessage::from_arg)?;
    let url = bytes_of(url).map_err(BadMessage::from_arg)?;
    let version = bytes_of(version).unwrap_or_default();
    let headers = bytes_of(hdrs).map_err(BadMessage::from_arg)?;
    // Validated where it lies: the one copy is the compact one below.
    let headers = msg
        .slice_ref(headers)
        .ok_or(BadMessage::BadHeaders)
        .and_then(|b| Headers::decode(b).map_err(|_| BadMessage::BadHeaders))?;
    // No body argument, or a NULL one, is an empty body.
    let body: &[u8] = match body {
        None | Some(TypedRef::Null) => b"",
        v => bytes_of(v).map_err(BadMessage::from_arg)?,
    };
    // The body's true size, when configured and given as an integer.
    let body_size = body_size
        .and_then(|v| v.as_i64())
        .and_then(|n| u64::try_from(n).ok());

    if !is_token(method) {
        return Err(BadMessage::BadMethod);
    }
    // What `http::Uri` takes (hyper's path): checked on a view of the
    // frame where the path lies in it, so that checking copies nothing.
    let valid = |p: &[u8]| match msg.slice_ref(p) {
        Some(view) => http::uri::PathAndQuery::from_maybe_shared(view).is_ok(),
        None => http::uri::PathAndQuery::try_from(p).is_ok(),
    };
    let (path, uri_reencoded) = origin_form(url, valid)?;
    let version: &[u8] = if version.len() <= 16 && is_value(version) {
        version
    } else {
        b""
    };

    // First pass: the Connection tokens (a set: linear in all).
    let mut named_by_connection: HashSet<Vec<u8>> = HashSet::new();
    for (name, value) in headers.iter_ref() {
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if !token.is_empty() {
                    named_by_connection.insert(token.to_ascii_lowercase());
                }
            }
        }
    }
    // Whether the Connection header names this header (no allocation for
    // names up to 64 bytes).
    let named = |name: &[u8]| -> bool {
        if named_by_connection.is_empty() {
            return false;
        }
        let mut small = [0u8; 64];
        match small.get_mut(..name.len()) {
            Some(lowered) => {
                lowered.copy_from_slice(name);
                lowered.make_ascii_lowercase();
                named_by_connection.contains(&*lowered)
            }
            None => named_by_connection.contains(name.to_ascii_lowercase().as_slice()),
        }
    };
    // Second pass: validate, classify, measure (the headers are copied in
    // a third pass, so that nothing is allocated to remember them).
    let mut host: Option<&[u8]> = None;
    let mut kept = 0usize;
    let mut size = method.len() + path.len() + version.len() + body.len();
    for (name, value) in headers.iter_ref() {
        if !is_token(name) {
            return Err(BadMessage::BadHeaders);
        }
        if !is_value(value) {
            return Err(BadMessage::BadHeaders);
        }
        match class(name, named) {
            Class::Host if host.is_none() => {
                size += value.len();
                host = Some(value);
            }
            Class::Kept => {
                if kept == MAX_HEADERS {
                    return Err(BadMessage::TooManyHeaders);
                }
                size += name.len() + value.len();
                kept += 1;
            }
            _ => {}
        }
    }
    if u32::try_from(size).is_err() {
        return Err(BadMessage::BadHeaders);
    }
    // Content-Length values that agree, at most one `chunked`.
    let framing = Framing::of(&headers).map_err(|_| BadMessage::BadFraming)?;
    let truncated = framing.truncated(body.len() as u64, body_size);

    // The compact copy: exactly `size` bytes.
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let put = |buf: &mut Vec<u8>, bytes: &[u8]| {
        let start = buf.len() as u32;
        buf.extend_from_slice(bytes);
        Span {
            start,
            end: buf.len() as u32,
        }
    };
    let method = put(&mut buf, method);
    let path = put(&mut buf, &path);
    let version = put(&mut buf, version);
    let host = host.map(|h| put(&mut buf, h));
    let mut spans = Vec::with_capacity(kept);
    for (name, value) in headers.iter_ref() {
        if class(name, named) == Class::Kept {
            let n = put(&mut buf, name);
            let v = put(&mut buf, value);
            spans.push(HeaderSpan {
                start: n.start,
                mid: n.end,
                end: v.end,
            });
        }
    }
    let body_span = put(&mut buf, body);
    Ok(MirrorRequest {
        buf: Bytes::from(buf),
        method,
        path,
        version,
        host,
        headers: spans,
        body: body_span,
        has_body_framing: framing.content_length.is_some() || framing.chunked || !body.is_empty(),
        truncated,
        uri_reencoded,
    })
}

/// Bytes kept as they are in a path: what `http::uri::PathAndQuery` takes,
/// but `#` (it would end the path there).
fn path_byte_ok(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
        )
}

/// Turns the request target into origin-form (`/path?query`): an absolute URI
/// loses its scheme and authority; control bytes are refused; bytes
/// `http::Uri` refuses are percent-encoded (and reported), every other byte
/// is kept as it came. `valid` tells whether `http::Uri` takes a path.
fn origin_form(
    url: &[u8],
    valid: impl Fn(&[u8]) -> bool,
) -> Result<(Cow<'_, [u8]>, bool), BadMessage> {
    let starts = |p: &[u8]| {
        url.get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    let url: Cow<'_, [u8]> = if starts(b"http://") || starts(b"https://") {
        let after_scheme = url.iter().position(|&b| b == b':').map_or(0, |i| i + 3);
        let rest = url.get(after_scheme..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) if rest.get(i) == Some(&b'/') => {
                Cow::Borrowed(rest.get(i..).unwrap_or_default())
            }
            Some(i) => {
                let mut v = b"/".to_vec();
                v.extend_from_slice(rest.get(i..).unwrap_or_default());
                Cow::Owned(v)
            }
            None => Cow::Borrowed(b"/"),
        }
    } else {
        Cow::Borrowed(url)
    };
    if url.first() != Some(&b'/') && url.as_ref() != b"*" {
        return Err(BadMessage::BadUri);
    }
    if url.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(BadMessage::BadUri);
    }
    if url.iter().all(|&b| path_byte_ok(b)) && valid(&url) {
        return Ok((url, false));
    }
    let mut encoded = Vec::with_capacity(url.len() * 3);
    for &b in url.iter() {
        if path_byte_ok(b) {
            encoded.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            encoded.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    if !valid(&encoded) {
        return Err(BadMessage::BadUri);
    }
    Ok((Cow::Owned(encoded), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_valid(p: &[u8]) -> bool {
        http::uri::PathAndQuery::try_from(p).is_ok()
    }

    fn pq(s: &'static [u8]) -> (String, bool) {
        let (p, re) = origin_form(s, http_valid).unwrap();
        (String::from_utf8(p.into_owned()).unwrap(), re)
    }

    #[test]
    fn origin_form_keeps_bytes_and_strips_authority() {
        assert_eq!(
            pq(b"/a%00b%ff/%2F?x=%20&y"),
            ("/a%00b%ff/%2F?x=%20&y".into(), false)
        );
        assert_eq!(
            pq(b"http://example.com:8080/p?q=1"),
            ("/p?q=1".into(), false)
        );
        assert_eq!(pq(b"HTTPS://example.com"), ("/".into(), false));
        assert_eq!(pq(b"http://example.com?x=1"), ("/?x=1".into(), false));
        assert_eq!(pq(b"/a b\xff"), ("/a%20b%FF".into(), true));
        assert_eq!(pq(b"/a#frag"), ("/a%23frag".into(), true));
        assert!(origin_form(b"relative", http_valid).is_err());
        assert!(origin_form(b"", http_valid).is_err());
        assert!(origin_form(b"/a\r\nb", http_valid).is_err());
    }
}
