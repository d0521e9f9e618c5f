//! A typed view of the HTTP request a message carries, for agents that look
//! at requests (a mirror, a WAF, an auth agent).
//!
//! HAProxy sends what the SPOE message's `args` line names; the usual set is
//!
//! ```text
//! spoe-message mirror
//!     args arg_method=method arg_path=url arg_ver=req.ver arg_hdrs=req.hdrs_bin arg_body=req.body arg_body_size=req.body_size
//! ```
//!
//! [`RequestView::from_message`] reads those arguments (names set in
//! [`RequestArgs`]), keeps every string as a view into the frame, and works
//! out the body's framing from the headers: its Content-Length (several equal
//! values are one; different ones are an error), whether it was chunked, and
//! whether HAProxy cut it short. `req.body` holds at most what fits in
//! HAProxy's buffer (`tune.bufsize`), so a body is **truncated** when a
//! Content-Length (without Transfer-Encoding) is larger than what arrived, or
//! when the optional `req.body_size` argument is larger than what arrived
//! (the only sign for a chunked body, which has no Content-Length).

use bytes::Bytes;

use crate::{ArgError, DataType, Headers, Message};

/// The names of the arguments that carry a request's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestArgs<'a> {
    /// The method (`method`).
    pub method: &'a str,
    /// The request target (`url`: path and query, or an absolute URI).
    pub path: &'a str,
    /// The HTTP version (`req.ver`: "1.0", "1.1", "2.0"); optional.
    pub version: &'a str,
    /// The headers (`req.hdrs_bin`).
    pub headers: &'a str,
    /// The body (`req.body`); optional (absent or NULL: empty).
    pub body: &'a str,
    /// The body's full size (`req.body_size`); optional.
    pub body_size: &'a str,
}

impl Default for RequestArgs<'_> {
    /// The names of spop-mirror's example: `arg_method`, `arg_path`,
    /// `arg_ver`, `arg_hdrs`, `arg_body`, `arg_body_size`.
    fn default() -> Self {
        Self {
            method: "arg_method",
            path: "arg_path",
            version: "arg_ver",
            headers: "arg_hdrs",
            body: "arg_body",
            body_size: "arg_body_size",
        }
    }
}

/// Why a message does not carry a usable request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A required argument (method, path or headers) is missing, has the
    /// wrong type, or (headers) is a malformed block.
    #[error("argument {name}: {error}")]
    Arg {
        /// The argument's name.
        name: String,
        /// What is wrong with it.
        error: ArgError,
    },
    /// Content-Length values that disagree or are not plain decimal numbers.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A Transfer-Encoding other than a single `chunked`.
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
}

/// How the request framed its body, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Framing {
    /// The Content-Length, if one was given.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (HAProxy passes the body de-chunked).
    pub chunked: bool,
}

/// The request a message carries: views into the frame, no copy.
///
/// # Examples
///
/// ```
/// use haproxy_spop::{Headers, Notify, RequestArgs, RequestView};
///
/// let hdrs = Headers::encode([("host", "shop.test"), ("content-length", "100000")]);
/// let notify = Notify::builder()
///     .message("mirror")
///     .arg("arg_method", "PUT")
///     .arg("arg_path", "/upload?x=1")
///     .arg("arg_ver", "1.1")
///     .arg("arg_hdrs", haproxy_spop::TypedData::Binary(hdrs))
///     .arg("arg_body", haproxy_spop::TypedData::Binary(vec![b'z'; 15_000].into()))
///     .build()
///     .unwrap();
/// let msg = notify.message("mirror").unwrap();
/// let req = RequestView::from_message(&msg, &RequestArgs::default()).unwrap();
/// assert_eq!(req.method(), b"PUT");
/// assert_eq!(req.path(), b"/upload?x=1");
/// assert_eq!(req.framing().content_length, Some(100_000));
/// assert!(req.truncated(), "HAProxy passed 15 000 of 100 000 bytes");
/// ```
#[derive(Debug, Clone)]
pub struct RequestView {
    method: Bytes,
    path: Bytes,
    version: Bytes,
    headers: Headers,
    body: Bytes,
    body_size: Option<u64>,
    framing: Framing,
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads a Content-Length value (a number, or a list of equal numbers) into
/// `seen`, which holds what earlier lines said.
fn content_length(value: &[u8], seen: &mut Option<u64>) -> Result<(), RequestError> {
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(RequestError::ContentLength);
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match seen {
            Some(prev) if *prev != n => return Err(RequestError::ContentLength),
            _ => *seen = Some(n),
        }
    }
    Ok(())
}

impl Framing {
    /// `true` if a body of `got` bytes is less than the request has: a
    /// Content-Length (without chunked) larger than it, or a `req.body_size`
    /// (`body_size`) larger than it.
    pub fn truncated(&self, got: u64, body_size: Option<u64>) -> bool {
        (!self.chunked && self.content_length.is_some_and(|cl| cl > got))
            || body_size.is_some_and(|size| size > got)
    }

    /// The framing the headers declare.
    ///
    /// # Errors
    ///
    /// [`RequestError::ContentLength`] for values that disagree or are not
    /// decimal; [`RequestError::TransferEncoding`] for anything but one
    /// `chunked`.
    pub fn of(headers: &Headers) -> Result<Self, RequestError> {
        let mut framing = Self::default();
        for (name, value) in headers.iter_ref() {
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length(value, &mut framing.content_length)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if framing.chunked || !trim_ows(value).eq_ignore_ascii_case(b"chunked") {
                    return Err(RequestError::TransferEncoding);
                }
                framing.chunked = true;
            }
        }
        Ok(framing)
    }
}

impl RequestView {
    /// Reads the request from `msg`'s arguments named in `names`.
    ///
    /// # Errors
    ///
    /// [`RequestError::Arg`] when the method, path or headers are missing,
    /// of the wrong type or malformed (or the body or version has a type
    /// other than a string, binary or NULL); the framing errors of
    /// [`Framing::of`].
    pub fn from_message(msg: &Message<'_>, names: &RequestArgs<'_>) -> Result<Self, RequestError> {
        let arg = |name: &str, error| RequestError::Arg {
            name: name.to_owned(),
            error,
        };
        let optional = |name: &str| match msg.bytes(name) {
            Ok(b) => Ok(b),
            Err(ArgError::Missing) => Ok(Bytes::new()),
            Err(ArgError::WrongType { found, .. }) if found == DataType::NULL => Ok(Bytes::new()),
            Err(e) => Err(arg(name, e)),
        };
        let method = msg.bytes(names.method).map_err(|e| arg(names.method, e))?;
        let path = msg.bytes(names.path).map_err(|e| arg(names.path, e))?;
        let headers = msg
            .headers(names.headers)
            .map_err(|e| arg(names.headers, e))?;
        let version = optional(names.version)?;
        let body = optional(names.body)?;
        // HAProxy sends integers as INT64; a negative or absent size is none.
        let body_size = msg
            .int(names.body_size)
            .ok()
            .and_then(|n| u64::try_from(n).ok());
        let framing = Framing::of(&headers)?;
        Ok(Self {
            method,
            path,
            version,
            headers,
            body,
            body_size,
            framing,
        })
    }

    /// The method, as sent.
    pub fn method(&self) -> &[u8] {
        &self.method
    }

    /// The request target as HAProxy's `url` gives it (path and query, or an
    /// absolute URI).
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The HTTP version ("1.1"...), empty if not sent.
    pub fn version(&self) -> &[u8] {
        &self.version
    }

    /// The headers, in order, repeats kept.
    pub const fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<Bytes> {
        self.headers.get(name)
    }

    /// The body as HAProxy passed it (possibly cut short: see
    /// [`RequestView::truncated`]).
    pub const fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body's full size, when the message carries `req.body_size`.
    pub const fn body_size(&self) -> Option<u64> {
        self.body_size
    }

    /// The body's framing, from the headers.
    pub const fn framing(&self) -> Framing {
        self.framing
    }

    /// `true` if HAProxy passed less of the body than the request has: a
    /// Content-Length (without Transfer-Encoding) larger than the body, or a
    /// `req.body_size` larger than the body.
    pub fn truncated(&self) -> bool {
        self.framing
            .truncated(self.body.len() as u64, self.body_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Notify, TypedData};

    fn view(
        hdrs: &[(&str, &str)],
        body: &[u8],
        size: Option<i64>,
    ) -> Result<RequestView, RequestError> {
        let mut b = Notify::builder()
            .message("m")
            .arg("arg_method", "POST")
            .arg("arg_path", "/p")
            .arg(
                "arg_hdrs",
                TypedData::Binary(Headers::encode(hdrs.iter().copied())),
            )
            .arg("arg_body", TypedData::Binary(Bytes::copy_from_slice(body)));
        if let Some(s) = size {
            b = b.arg("arg_body_size", s);
        }
        let notify = b.build().unwrap();
        let msg = notify.message("m").unwrap();
        RequestView::from_message(&msg, &RequestArgs::default())
    }

    /// (headers, body length, `req.body_size`, `Ok(truncated)` or the error)
    type Row = (
        &'static [(&'static str, &'static str)],
        usize,
        Option<i64>,
        Result<bool, RequestError>,
    );

    #[test]
    fn framing_and_truncation_table() {
        use RequestError::{ContentLength as Cl, TransferEncoding as Te};
        let rows: &[Row] = &[
            (&[], 0, None, Ok(false)),
            (&[("content-length", "5")], 5, None, Ok(false)),
            (&[("content-length", "9")], 5, None, Ok(true)),
            (&[("content-length", "5, 5")], 5, None, Ok(false)),
            (
                &[("content-length", "5"), ("content-length", "5")],
                5,
                None,
                Ok(false),
            ),
            (
                &[("content-length", "5"), ("content-length", "6")],
                5,
                None,
                Err(Cl),
            ),
            (&[("content-length", "5,6")], 5, None, Err(Cl)),
            (&[("content-length", "-1")], 0, None, Err(Cl)),
            (&[("content-length", "")], 0, None, Err(Cl)),
            (
                &[("content-length", "99999999999999999999")],
                0,
                None,
                Err(Cl),
            ),
            (&[("Content-Length", " 7 ")], 7, None, Ok(false)),
            (&[("transfer-encoding", "chunked")], 5, None, Ok(false)),
            (&[("transfer-encoding", "chunked")], 5, Some(5), Ok(false)),
            (
                &[("transfer-encoding", "chunked")],
                15_000,
                Some(100_000),
                Ok(true),
            ),
            // Content-Length is ignored beside chunked (RFC 9112 §6.3).
            (
                &[("transfer-encoding", "chunked"), ("content-length", "9")],
                5,
                None,
                Ok(false),
            ),
            (&[("transfer-encoding", "gzip, chunked")], 5, None, Err(Te)),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                5,
                None,
                Err(Te),
            ),
            (&[], 5, Some(5), Ok(false)),
            (&[], 5, Some(6), Ok(true)),
            (&[], 5, Some(-1), Ok(false)),
        ];
        for (i, (hdrs, len, size, want)) in rows.iter().enumerate() {
            let got = view(hdrs, &vec![b'x'; *len], *size).map(|v| v.truncated());
            assert_eq!(&got, want, "row {i}: {hdrs:?} body {len} size {size:?}");
        }
    }

    #[test]
    fn arguments_are_views_and_optional_ones_may_be_absent_or_null() {
        let notify = Notify::builder()
            .message("m")
            .arg("arg_method", "GET")
            .arg("arg_path", "/x?y")
            .arg(
                "arg_hdrs",
                TypedData::Binary(Headers::encode([("host", "h")])),
            )
            .arg("arg_body", TypedData::Null)
            .build()
            .unwrap();
        let msg = notify.message("m").unwrap();
        let v = RequestView::from_message(&msg, &RequestArgs::default()).unwrap();
        assert_eq!(
            (v.method(), v.path(), v.version()),
            (&b"GET"[..], &b"/x?y"[..], &b""[..])
        );
        assert!(v.body().is_empty());
        assert_eq!(v.header("HOST").as_deref(), Some(&b"h"[..]));
        assert!(!v.truncated());
        let start = notify.payload().as_ptr() as usize;
        let at = v.path().as_ptr() as usize;
        assert!(
            at >= start && at < start + notify.payload().len(),
            "a view, not a copy"
        );
    }

    #[test]
    fn missing_or_mistyped_required_arguments_are_named() {
        let notify = Notify::builder()
            .message("m")
            .arg("arg_method", 3i64)
            .build()
            .unwrap();
        let msg = notify.message("m").unwrap();
        let err = RequestView::from_message(&msg, &RequestArgs::default()).unwrap_err();
        assert!(
            matches!(&err, RequestError::Arg { name, error: ArgError::WrongType { .. } } if name == "arg_method"),
            "{err}"
        );
        let names = RequestArgs {
            method: "nope",
            ..RequestArgs::default()
        };
        let err = RequestView::from_message(&msg, &names).unwrap_err();
        assert_eq!(err.to_string(), "argument nope: argument missing");
    }
}
