//! Comparison of the shadow's HTTP answers with production's (issue 10).
//!
//! Everything here is sans-IO: no sockets, no tasks, no clock reads. The
//! handler and the mirror workers build [`Answer`]s, feed them to a
//! [`Store`] together with the time, and get [`Event`]s back; a consumer task
//! turns the events into metrics and, through [`DiffLog`], into a bounded
//! NDJSON log.
//!
//! ```text
//!   open(id, "GET /x", [(candidate, baseline)])      answer(id, Production, ..)
//!                 \                                   /
//!                  Store ---- compare(settings, production, candidate, baseline) ----> Event::Compared
//!                    \---- expire(now) ----> Event::Expired          (Report: differences, noise)
//! ```
//!
//! What is compared ([`compare`]): the status; the header fields (by name,
//! case-insensitively, as the list of values per name, minus an ignore list;
//! `Set-Cookie` by cookie name, value and attributes without the expiry);
//! the body, structurally when both are JSON ([`json`]) and otherwise by
//! bytes, reported as xxh3-64 digests. With a baseline (a second shadow
//! running production's version), a field that differs between production
//! and the baseline is noise and is not reported against the candidate
//! (Diffy's rule).

// Data from the wire is handled here: no indexing (the crate allows it for
// its target vectors; clippy.toml allows it in tests).
#![warn(clippy::indexing_slicing)]

pub mod diff;
pub mod json;
pub mod log;
pub mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use self::diff::compare;
pub use self::log::{DiffLog, LogSettings};
pub use self::store::{Event, Limits, Store, MAX_REQUEST_CHARS};

/// The text shown for a value that one side does not have (a header field,
/// a JSON member or array element).
pub const ABSENT: &str = "(absent)";

/// Fixed bytes counted for an [`Answer`] besides its headers and body.
const ANSWER_OVERHEAD: usize = 64;
/// Fixed bytes counted per header field besides its name and value.
const HEADER_OVERHEAD: usize = 32;

/// One HTTP answer as compared: production's (from HAProxy's compare message)
/// or a target's (read by the mirror worker).
///
/// Producers should hold compact copies (`Bytes::copy_from_slice`), not
/// slices of a larger frame buffer: [`Answer::size`] counts the bytes of the
/// slices, so a slice would pin more memory than the store accounts for.
///
/// `Debug` prints sizes, never header values or body bytes.
#[derive(Clone)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// Header fields in order; names lowercased ASCII.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body's first bytes, at most the configured body limit.
    pub body: Bytes,
    /// True when `body` is not the whole body (our limit, or HAProxy's buffer).
    pub truncated: bool,
    /// From the request's arrival at the agent to this answer being complete.
    pub latency: Duration,
}

impl Answer {
    /// The bytes this answer holds, as counted by the [`Store`]'s byte
    /// limit: the header names and values, the body, and a fixed overhead per
    /// header field and per answer.
    pub fn size(&self) -> usize {
        self.headers.iter().fold(
            ANSWER_OVERHEAD.saturating_add(self.body.len()),
            |acc, (n, v)| {
                acc.saturating_add(n.len())
                    .saturating_add(v.len())
                    .saturating_add(HEADER_OVERHEAD)
            },
        )
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .field("truncated", &self.truncated)
            .field("latency", &self.latency)
            .finish()
    }
}

/// Where an answer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Side {
    /// Production's answer, from HAProxy's compare message.
    Production,
    /// A mirror target's answer (a candidate or a baseline), by target name.
    Target(Arc<str>),
}

impl Side {
    /// `"production"`, or the target's name.
    pub fn label(&self) -> &str {
        match self {
            Self::Production => "production",
            Self::Target(name) => name,
        }
    }
}

/// What differed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The status code.
    Status,
    /// A header field, by its lowercase name.
    Header(String),
    /// The body compared by bytes (not JSON, or JSON comparison off).
    Body,
    /// A JSON member or element of the body, by its path (`$.items[3].price`).
    Json(String),
}

impl Field {
    /// The label used in metrics and the log: `"status"`, `"header:date"`,
    /// `"body"`, `"json:$.a[1]"`.
    pub fn label(&self) -> String {
        match self {
            Self::Status => "status".to_owned(),
            Self::Header(name) => format!("header:{name}"),
            Self::Body => "body".to_owned(),
            Self::Json(path) => format!("json:{path}"),
        }
    }
}

/// One field that differs between production and the candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// What differed.
    pub field: Field,
    /// Production's value, cut to [`Settings::value_cut`] chars; [`ABSENT`]
    /// when production does not have the field.
    pub production: String,
    /// The candidate's value, cut the same way.
    pub candidate: String,
}

/// The outcome of one comparison of a candidate's answer with production's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The differences reported against the candidate, at most
    /// [`Settings::max_differences`] of them (status first, then headers by
    /// name, then the body).
    pub differences: Vec<Difference>,
    /// Fields that differed between production and the candidate AND between
    /// production and the baseline: noise, not reported (at most
    /// [`Settings::max_differences`] listed).
    pub noise: Vec<Field>,
    /// A body (production's or the candidate's) was cut: compared by what
    /// arrived.
    pub truncated: bool,
    /// JSON comparison was asked and a body looked like JSON (by its
    /// content-type or its first byte) but could not be compared as JSON
    /// (not parseable, or truncated): compared by digest instead.
    pub json_fallback: bool,
    /// Differences found beyond [`Settings::max_differences`]: counted, not
    /// listed.
    pub omitted: usize,
}

impl Report {
    /// True when nothing was reported against the candidate.
    pub fn is_equal(&self) -> bool {
        self.differences.is_empty() && self.omitted == 0
    }
}

/// What is compared and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Header names not compared, lowercase; a trailing `*` is a prefix
    /// match (`"x-request-*"`). Matched case-insensitively.
    pub ignore_headers: Vec<String>,
    /// JSON paths not compared, with their whole subtree; `[*]` matches any
    /// index and `.*` any member name, e.g. `"$.items[*].ts"`. See
    /// [`json::PathPattern`]; a pattern that does not parse matches nothing
    /// (check them with [`json::PathPattern::parse`] when reading the
    /// configuration).
    pub ignore_paths: Vec<String>,
    /// Structural JSON diff when both bodies parse (else by digest).
    pub json: bool,
    /// Chars kept per reported value.
    pub value_cut: usize,
    /// Differences listed per report (more are counted in
    /// [`Report::omitted`]).
    pub max_differences: usize,
}

/// The default `ignore_headers`: fields that differ between any two servers
/// or any two answers of one server. `set-cookie` is not among them: it is
/// compared without its expiry (add it to ignore cookies altogether).
pub const DEFAULT_IGNORE_HEADERS: &[&str] = &[
    "date",
    "server",
    "x-request-id",
    "x-correlation-id",
    "x-amzn-trace-id",
    "traceparent",
    "tracestate",
    "age",
    "expires",
    "last-modified",
    "etag",
    "content-length",
    "via",
    "connection",
    "keep-alive",
    "transfer-encoding",
];

impl Default for Settings {
    fn default() -> Self {
        Self {
            ignore_headers: DEFAULT_IGNORE_HEADERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ignore_paths: Vec::new(),
            json: true,
            value_cut: 200,
            max_differences: 32,
        }
    }
}

/// Keeps at most `max` chars of `s` (cut on a char boundary).
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s.get(..at).unwrap_or_default().to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Field::Status.label(), "status");
        assert_eq!(Field::Header("date".into()).label(), "header:date");
        assert_eq!(Field::Body.label(), "body");
        assert_eq!(Field::Json("$.a[1]".into()).label(), "json:$.a[1]");
        assert_eq!(Side::Production.label(), "production");
        assert_eq!(Side::Target("c".into()).label(), "c");
    }

    #[test]
    fn cut_on_char_boundaries() {
        assert_eq!(cut("héllo", 2), "hé");
        assert_eq!(cut("héllo", 0), "");
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo", 50), "héllo");
        assert_eq!(cut("日本語", 1), "日");
    }

    #[test]
    fn answer_size_and_debug() {
        let a = Answer {
            status: 200,
            headers: vec![(Bytes::from_static(b"ab"), Bytes::from_static(b"secret"))],
            body: Bytes::from_static(b"0123456789"),
            truncated: false,
            latency: Duration::ZERO,
        };
        assert_eq!(a.size(), ANSWER_OVERHEAD + 10 + 2 + 6 + HEADER_OVERHEAD);
        let d = format!("{a:?}");
        assert!(!d.contains("secret") && !d.contains("0123"), "{d}");
    }

    #[test]
    fn default_settings() {
        let s = Settings::default();
        assert!(s.json);
        assert_eq!(s.value_cut, 200);
        assert_eq!(s.max_differences, 32);
        assert!(s.ignore_headers.iter().any(|h| h == "date"));
        assert!(!s.ignore_headers.iter().any(|h| h == "set-cookie"));
    }
}
