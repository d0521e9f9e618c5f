//! Rebuilding the client's request from the `mirror` message.

use bytes::Bytes;
use haproxy_spop::{ArgError, Message};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING,
};
use http::uri::PathAndQuery;
use http::Method;

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
}

impl Default for ArgNames {
    fn default() -> Self {
        Self {
            method: "arg_method".into(),
            path: "arg_path".into(),
            version: "arg_ver".into(),
            headers: "arg_hdrs".into(),
            body: "arg_body".into(),
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
    /// The `req.hdrs_bin` block is malformed.
    BadHeaders,
    /// The method is not a valid token.
    BadMethod,
    /// The URL cannot be used (empty, or not a path after normalising).
    BadUri,
}

impl BadMessage {
    /// Every kind, for metrics.
    pub const ALL: [Self; 5] = [
        Self::MissingArg,
        Self::WrongType,
        Self::BadHeaders,
        Self::BadMethod,
        Self::BadUri,
    ];

    /// The kind's label in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::MissingArg => "missing_argument",
            Self::WrongType => "wrong_type",
            Self::BadHeaders => "bad_headers",
            Self::BadMethod => "bad_method",
            Self::BadUri => "bad_uri",
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

/// A request ready to mirror: shared by every target, cheap to clone (its
/// strings and body are views into the frame HAProxy sent).
#[derive(Debug, Clone)]
pub struct MirrorRequest {
    /// The method.
    pub method: Method,
    /// Path and query, origin-form.
    pub path: PathAndQuery,
    /// The original Host, if any.
    pub host: Option<HeaderValue>,
    /// Headers to send, in order, hop-by-hop ones, Host and Content-Length removed.
    pub headers: HeaderMap,
    /// The body (possibly empty).
    pub body: Bytes,
    /// Whether the request announced a body (a Content-Length, or chunked).
    pub has_body_framing: bool,
    /// The original Content-Length was larger than the body HAProxy passed on.
    pub truncated: bool,
    /// The URL had bytes `http::Uri` does not take; they were percent-encoded.
    pub uri_reencoded: bool,
    /// The client's HTTP version (`1.0`, `1.1`, `2.0`), for information.
    pub version: Bytes,
    /// Bytes held by this request (for the queue's memory bound).
    pub size: usize,
}

/// The hop-by-hop headers never forwarded (RFC 9110 §7.6.1), besides those
/// the Connection header names.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Rebuilds the request carried by `msg`.
///
/// # Errors
///
/// The kind of [`BadMessage`].
pub fn build(msg: &Message<'_>, names: &ArgNames) -> Result<MirrorRequest, BadMessage> {
    let method = msg.bytes(&names.method).map_err(BadMessage::from_arg)?;
    let url = msg.bytes(&names.path).map_err(BadMessage::from_arg)?;
    let version = msg.bytes(&names.version).unwrap_or_default();
    let headers = msg.headers(&names.headers).map_err(BadMessage::from_arg)?;
    // No body argument, or a NULL one, is an empty body.
    let body = match msg.bytes(&names.body) {
        Ok(b) => b,
        Err(ArgError::Missing) => Bytes::new(),
        Err(ArgError::WrongType { found, .. }) if found == haproxy_spop::DataType::NULL => {
            Bytes::new()
        }
        Err(e) => return Err(BadMessage::from_arg(e)),
    };

    let method = Method::from_bytes(&method).map_err(|_| BadMessage::BadMethod)?;
    let (path, uri_reencoded) = origin_form(url)?;

    // The headers the Connection header names are hop-by-hop too.
    let mut named_by_connection: Vec<Bytes> = Vec::new();
    for (name, value) in headers.iter() {
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if !token.is_empty() {
                    named_by_connection.push(Bytes::copy_from_slice(token));
                }
            }
        }
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut host = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for (name, value) in headers.iter() {
        let Ok(header) = HeaderName::from_bytes(&name) else {
            return Err(BadMessage::BadHeaders);
        };
        if header == CONTENT_LENGTH {
            content_length = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            continue;
        }
        if header == TRANSFER_ENCODING {
            chunked |= value
                .to_ascii_lowercase()
                .windows(7)
                .any(|w| w == b"chunked");
        }
        if HOP_BY_HOP.contains(&header.as_str())
            || header == CONNECTION
            || named_by_connection
                .iter()
                .any(|n| n.eq_ignore_ascii_case(header.as_str().as_bytes()))
        {
            continue;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(value) else {
            return Err(BadMessage::BadHeaders);
        };
        if header == HOST {
            if host.is_none() {
                host = Some(value);
            }
            continue;
        }
        out.append(header, value);
    }
    let truncated = content_length.is_some_and(|cl| cl > body.len() as u64);
    let size = body.len() + headers.as_bytes().len() + url_len(&path);
    Ok(MirrorRequest {
        method,
        path,
        host,
        headers: out,
        has_body_framing: content_length.is_some() || chunked || !body.is_empty(),
        body,
        truncated,
        uri_reencoded,
        version,
        size,
    })
}

fn url_len(p: &PathAndQuery) -> usize {
    p.as_str().len()
}

/// Turns the request target into origin-form (`/path?query`): an absolute URI
/// loses its scheme and authority; bytes `http::Uri` refuses are
/// percent-encoded (and reported), every other byte is kept as it came.
fn origin_form(url: Bytes) -> Result<(PathAndQuery, bool), BadMessage> {
    let lower_starts = |p: &[u8]| {
        url.len() >= p.len()
            && url
                .get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    let url = if lower_starts(b"http://") || lower_starts(b"https://") {
        let after_scheme = url.iter().position(|&b| b == b':').map_or(0, |i| i + 3);
        let rest = url.slice(after_scheme.min(url.len())..);
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) if rest.get(i) == Some(&b'/') => rest.slice(i..),
            Some(i) => {
                let mut v = b"/".to_vec();
                v.extend_from_slice(rest.get(i..).unwrap_or_default());
                Bytes::from(v)
            }
            None => Bytes::from_static(b"/"),
        }
    } else {
        url
    };
    if url.first() != Some(&b'/') && url.as_ref() != b"*" {
        return Err(BadMessage::BadUri);
    }
    if let Ok(p) = PathAndQuery::from_maybe_shared(url.clone()) {
        return Ok((p, false));
    }
    let mut encoded = String::with_capacity(url.len() * 3);
    for &b in url.iter() {
        if b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    PathAndQuery::from_maybe_shared(Bytes::from(encoded))
        .map(|p| (p, true))
        .map_err(|_| BadMessage::BadUri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pq(s: &'static [u8]) -> (String, bool) {
        let (p, re) = origin_form(Bytes::from_static(s)).unwrap();
        (p.as_str().to_owned(), re)
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
        assert!(origin_form(Bytes::from_static(b"relative")).is_err());
        assert!(origin_form(Bytes::new()).is_err());
    }
}
