//! spop-mirror's own HTTP/1.1 path (`--pipeline N`): the request head is
//! encoded straight from [`MirrorRequest`]'s views into a reused buffer (the
//! one conversion from the `hdrs_bin` views to the bytes sent), several
//! requests go out in one write, and the answers are read in bulk and
//! counted by parsing their heads (`httparse`) and skipping their bodies
//! (Content-Length, chunked, or up to the close). The answer of a request
//! under comparison is kept instead ([`Kept`]): its header fields and its
//! body's first bytes.
//!
//! The bytes written are exactly those hyper writes for the same request
//! (see the `same_bytes_as_hyper` test): request line, then the headers in
//! `http::HeaderMap` order (Host first, then each name at its first
//! appearance with all its values), names in lower case, then the body.

use std::io::Write as _;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use crate::comparing::Kept;
use crate::config::HostRewrite;
use crate::policy::Policy;
use crate::request::{is_value, trim_ows, MirrorRequest};

/// Above this many headers, the `HeaderMap` order is computed with a hash
/// map instead of comparing each name with the previous ones.
const LINEAR_GROUPING: usize = 64;

/// The most bytes an answer's head (or a chunk-size line, or a trailer) may
/// take before the connection is given up.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The most header fields an answer may have (hyper's client limit, so that
/// a target answers the two paths alike); past it the connection is given
/// up.
const MAX_ANSWER_HEADERS: usize = 100;

/// One header to write: where it comes from.
#[derive(Clone, Copy)]
enum Field<'a> {
    /// The Host value.
    Host(&'a [u8]),
    /// Line `i` of the request's headers after the target's edits (and the
    /// loop marker last).
    Line(usize),
    /// Content-Length.
    Length,
}

/// What the request for one target depends on besides the request.
pub(crate) struct Target<'a> {
    /// The target's policy: Host handling and header edits (redaction).
    pub(crate) policy: &'a Policy,
    /// The loop marker every mirrored request carries, if any.
    pub(crate) loop_marker: Option<&'a (HeaderName, HeaderValue)>,
    /// The target's path, put in front of mirrored paths.
    pub(crate) prefix: &'a str,
    /// The target's `host:port`.
    pub(crate) authority: &'a [u8],
}

/// Appends the HTTP/1.1 request for a target to `out`; `false` (and `out`
/// unchanged) if it cannot be sent (as hyper's conversion would refuse it).
pub(crate) fn encode(t: &Target<'_>, req: &MirrorRequest, out: &mut Vec<u8>) -> bool {
    let mark = out.len();
    out.extend_from_slice(req.method().as_bytes());
    out.push(b' ');
    if !t.prefix.is_empty() && req.path() != "*" {
        out.extend_from_slice(t.prefix.as_bytes());
    }
    out.extend_from_slice(req.path().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = match &t.policy.host {
        HostRewrite::Keep => req.host().filter(|h| is_value(h)),
        HostRewrite::Target => Some(t.authority),
        HostRewrite::Fixed(v) => Some(v.as_bytes()),
    };
    // The request's headers with the target's edits (remove, redact, set,
    // add: the same as `Policy::edit` does on hyper's path), then the loop
    // marker.
    let marker = t
        .loop_marker
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    let lines = Lines::collect(t.policy.headers_out(req.headers()).chain(marker));
    let lines = lines.as_slice();
    if lines.iter().any(|(_, v)| !is_value(v)) {
        out.truncate(mark);
        return false;
    }
    let length = req.has_body_framing() || req.body_len() > 0;
    let n_lines = lines.len();
    let total = usize::from(host.is_some()) + n_lines + usize::from(length);
    if total > 24_576 {
        out.truncate(mark);
        return false;
    }
    let field = |k: usize| -> Field<'_> {
        let mut k = k;
        if let Some(h) = host {
            if k == 0 {
                return Field::Host(h);
            }
            k -= 1;
        }
        if k < n_lines {
            return Field::Line(k);
        }
        Field::Length
    };
    let name = |f: Field<'_>| -> &[u8] {
        match f {
            Field::Host(_) => b"host",
            Field::Line(i) => lines.get(i).map_or(&[][..], |(n, _)| n),
            Field::Length => b"content-length",
        }
    };
    let mut len_buf = [0u8; 20];
    let len_text = {
        let mut w = &mut len_buf[..];
        let _ = write!(w, "{}", req.body_len());
        let left = w.len();
        let used = len_buf.len() - left;
        len_buf.get(..used).unwrap_or_default()
    };
    // Content-Length is inserted (`try_insert`): a header line of that name
    // takes its value at its place, and its other values go.
    let length_in_lines = length
        && lines
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"content-length"));
    let write_field = |out: &mut Vec<u8>, f: Field<'_>| {
        let (n, v): (&[u8], &[u8]) = match f {
            Field::Host(h) => (b"host", h),
            Field::Line(i) => lines.get(i).copied().unwrap_or_default(),
            Field::Length => (b"content-length", len_text),
        };
        let v = if length_in_lines && n.eq_ignore_ascii_case(b"content-length") {
            len_text
        } else {
            v
        };
        for &b in n {
            out.push(b.to_ascii_lowercase());
        }
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    };
    let count = if length_in_lines { total - 1 } else { total };
    let mut wrote_length = false;
    let mut write_group = |out: &mut Vec<u8>, k: usize, same: &mut dyn FnMut(usize) -> bool| {
        let f = field(k);
        let is_length = name(f).eq_ignore_ascii_case(b"content-length") && length;
        if is_length {
            // One Content-Length, whatever the added headers say.
            if !wrote_length {
                write_field(out, f);
                wrote_length = true;
            }
            return;
        }
        write_field(out, f);
        for j in k + 1..count {
            if same(j) {
                write_field(out, field(j));
            }
        }
    };
    if count <= LINEAR_GROUPING {
        for k in 0..count {
            let nk = name(field(k));
            if (0..k).any(|j| name(field(j)).eq_ignore_ascii_case(nk)) {
                continue;
            }
            write_group(out, k, &mut |j| name(field(j)).eq_ignore_ascii_case(nk));
        }
    } else {
        let mut groups: std::collections::HashMap<Vec<u8>, Vec<usize>> =
            std::collections::HashMap::new();
        let mut order = Vec::new();
        for k in 0..count {
            let key = name(field(k)).to_ascii_lowercase();
            let e = groups.entry(key).or_default();
            if e.is_empty() {
                order.push(k);
            }
            e.push(k);
        }
        for k in order {
            let key = name(field(k)).to_ascii_lowercase();
            let members = groups.get(&key).cloned().unwrap_or_default();
            write_group(out, k, &mut |j| members.binary_search(&j).is_ok());
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body());
    true
}

/// Header lines [`encode`] keeps on the stack; past that, in a `Vec`.
const LINES_ON_STACK: usize = 32;

/// A request's header lines for [`encode`]: on the stack up to
/// [`LINES_ON_STACK`] of them (most requests), so that encoding allocates
/// nothing; all in a `Vec` past that.
struct Lines<'a> {
    stack: [(&'a [u8], &'a [u8]); LINES_ON_STACK],
    on_stack: usize,
    /// Empty (no allocation) unless there are more lines than the stack
    /// holds.
    heap: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Lines<'a> {
    fn collect(lines: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut this = Self {
            stack: [(&[], &[]); LINES_ON_STACK],
            on_stack: 0,
            heap: Vec::new(),
        };
        for line in lines {
            if !this.heap.is_empty() {
                this.heap.push(line);
            } else if let Some(slot) = this.stack.get_mut(this.on_stack) {
                *slot = line;
                this.on_stack += 1;
            } else {
                this.heap.reserve(2 * LINES_ON_STACK);
                this.heap.extend_from_slice(&this.stack);
                this.heap.push(line);
            }
        }
        this
    }

    fn as_slice(&self) -> &[(&'a [u8], &'a [u8])] {
        if self.heap.is_empty() {
            self.stack.get(..self.on_stack).unwrap_or_default()
        } else {
            &self.heap
        }
    }
}

/// Why reading answers stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerError {
    /// Not HTTP/1.x, a bad length or chunk, a head too large, or 101.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
}

/// Reads the answers of requests sent in order on one connection.
#[derive(Debug)]
pub(crate) struct Answers {
    /// The read buffer: bytes `pos..end` are received and not consumed yet.
    /// Always initialized (reads go straight into it); it grows past
    /// [`READ_CHUNK`] only while a head is longer than that, never past
    /// [`MAX_HEAD`] + [`READ_CHUNK`].
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    state: State,
    status: u16,
    /// The answer being read says `Connection: close` (or is HTTP/1.0
    /// without keep-alive): the connection ends after it.
    closing: bool,
    /// The answer being read, kept (asked for by [`Answers::next`]'s
    /// `keep`); taken with [`Answers::take_kept`].
    kept: Option<Kept>,
}

/// How much room each read of answers has, at least.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

impl Default for Answers {
    fn default() -> Self {
        Self {
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            state: State::Head,
            status: 0,
            closing: false,
            kept: None,
        }
    }
}

impl Answers {
    /// The answer just completed said the connection ends.
    pub(crate) const fn closing(&self) -> bool {
        self.closing
    }

    /// Bytes received that no answer has consumed yet.
    pub(crate) const fn buffered(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// Room to read into (at least a quarter of [`READ_CHUNK`] unless a
    /// head over [`MAX_HEAD`] is being read, which [`Answers::next`]
    /// refuses first): consumed bytes are dropped, and the buffer grows
    /// for a long head. Report what was read with [`Answers::filled`].
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            self.shrink();
        } else if self.pos > 0
            && (self.buf.len() - self.end < READ_CHUNK / 4 || self.pos > self.buf.len() / 2)
        {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            let grown = (self.buf.len() * 2).min(MAX_HEAD + READ_CHUNK);
            self.buf.resize(grown, 0);
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// The read buffer's size (its bound is checked by the fuzz target).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// `n` bytes were read into [`Answers::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Gives back the memory a long head took, once it is consumed.
    fn shrink(&mut self) {
        if self.buf.len() > READ_CHUNK && self.pos == self.end {
            self.buf = vec![0; READ_CHUNK];
        }
    }

    /// The answer [`Answers::next`] (or [`Answers::eof`]) just completed,
    /// if it was to be kept.
    pub(crate) fn take_kept(&mut self) -> Option<Kept> {
        self.kept.take()
    }

    /// The connection ended: completes an answer read up to the close.
    pub(crate) fn eof(&mut self) -> Option<u16> {
        if matches!(self.state, State::UntilClose) {
            self.state = State::Head;
            return Some(self.status);
        }
        None
    }

    /// Consumes what is buffered; `Ok(Some(status))` when the next answer
    /// (of a request that was a HEAD if `head`) is complete, `Ok(None)` if
    /// more bytes are needed. With `keep` (a body limit; the same in every
    /// call for one answer), the answer is kept: its header fields and up to
    /// `keep` bytes of its body, for [`Answers::take_kept`].
    pub(crate) fn next(
        &mut self,
        head: bool,
        keep: Option<usize>,
    ) -> Result<Option<u16>, AnswerError> {
        loop {
            let rest = self.buf.get(self.pos..self.end).unwrap_or_default();
            match self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(rest) {
                        // The same bound whether the head came in one read
                        // or trickled in.
                        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                            return Err(AnswerError::Invalid)
                        }
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => {
                            if rest.len() > MAX_HEAD {
                                return Err(AnswerError::Invalid);
                            }
                            return Ok(None);
                        }
                        Err(_) => return Err(AnswerError::Invalid),
                    };
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(1);
                    let mut chunked = false;
                    let mut other_te = false;
                    let mut length: Option<u64> = None;
                    let mut close = version == 0;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                            if trim_ows(last).eq_ignore_ascii_case(b"chunked") {
                                chunked = true;
                            } else {
                                other_te = true;
                            }
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            for part in h.value.split(|&b| b == b',') {
                                let v = std::str::from_utf8(trim_ows(part))
                                    .ok()
                                    .and_then(|s| s.parse::<u64>().ok())
                                    .ok_or(AnswerError::Invalid)?;
                                if length.is_some_and(|l| l != v) {
                                    return Err(AnswerError::Invalid);
                                }
                                length = Some(v);
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            for token in h.value.split(|&b| b == b',') {
                                let token = trim_ows(token);
                                if token.eq_ignore_ascii_case(b"close") {
                                    close = true;
                                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0
                                {
                                    close = false;
                                }
                            }
                        }
                    }
                    self.pos += n;
                    if status == 101 {
                        return Err(AnswerError::Invalid);
                    }
                    if (100..200).contains(&status) {
                        // Informational: the final answer follows.
                        continue;
                    }
                    self.status = status;
                    self.closing = close;
                    // Only the final answer's fields; no memory reserved
                    // past the limit, whatever the length says.
                    self.kept = keep.map(|limit| {
                        let fields = resp.headers.iter().map(|h| {
                            (
                                Bytes::from(h.name.to_ascii_lowercase()),
                                Bytes::copy_from_slice(h.value),
                            )
                        });
                        let length = length.map_or(0, |l| l.min(limit as u64) as usize);
                        Kept::new(fields.collect(), limit, length)
                    });
                    if head || status == 204 || status == 304 {
                        return Ok(Some(status));
                    }
                    self.state = if chunked && !other_te {
                        State::ChunkSize
                    } else if other_te {
                        self.closing = true;
                        State::UntilClose
                    } else if let Some(l) = length {
                        if l == 0 {
                            return Ok(Some(status));
                        }
                        State::Length(l)
                    } else {
                        self.closing = true;
                        State::UntilClose
                    };
                }
                State::Length(left) => {
                    let take = (rest.len() as u64).min(left);
                    if let Some(k) = &mut self.kept {
                        k.add_body(rest.get(..take as usize).unwrap_or_default());
                    }
                    self.pos += take as usize;
                    if take == left {
                        self.state = State::Head;
                        return Ok(Some(self.status));
                    }
                    self.state = State::Length(left - take);
                    return Ok(None);
                }
                State::ChunkSize => {
                    let Some(end) = find_crlf(rest) else {
                        if rest.len() > MAX_HEAD {
                            return Err(AnswerError::Invalid);
                        }
                        return Ok(None);
                    };
                    if end > MAX_HEAD {
                        return Err(AnswerError::Invalid);
                    }
                    let line = rest.get(..end).unwrap_or_default();
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(trim_ows(size))
                        .ok()
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or(AnswerError::Invalid)?;
                    self.pos += end + 2;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(left) => {
                    let take = (rest.len() as u64).min(left);
                    if let Some(k) = &mut self.kept {
                        k.add_body(rest.get(..take as usize).unwrap_or_default());
                    }
                    self.pos += take as usize;
                    if take < left {
                        self.state = State::ChunkData(left - take);
                        return Ok(None);
                    }
                    self.state = State::ChunkDataEnd;
                }
                State::ChunkDataEnd => {
                    if rest.len() < 2 {
                        return Ok(None);
                    }
                    if rest.get(..2) != Some(b"\r\n") {
                        return Err(AnswerError::Invalid);
                    }
                    self.pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(end) = find_crlf(rest) else {
                        if rest.len() > MAX_HEAD {
                            return Err(AnswerError::Invalid);
                        }
                        return Ok(None);
                    };
                    if end > MAX_HEAD {
                        return Err(AnswerError::Invalid);
                    }
                    self.pos += end + 2;
                    if end == 0 {
                        self.state = State::Head;
                        return Ok(Some(self.status));
                    }
                }
                State::UntilClose => {
                    if let Some(k) = &mut self.kept {
                        k.add_body(rest);
                    }
                    self.pos = self.end;
                    return Ok(None);
                }
            }
        }
    }
}

fn find_crlf(s: &[u8]) -> Option<usize> {
    s.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::TargetSet;
    use bytes::Bytes;
    use haproxy_spop::{Headers, Notify};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn request(
        method: &'static str,
        headers: &[(&[u8], &[u8])],
        body: &'static [u8],
    ) -> MirrorRequest {
        let n = Notify::builder()
            .message("mirror")
            .arg("arg_method", method)
            .arg("arg_path", "/p?q=1")
            .arg("arg_ver", "1.1")
            .arg("arg_hdrs", Headers::encode(headers.iter().copied()))
            .arg("arg_body", Bytes::from_static(body))
            .build()
            .unwrap();
        crate::request::build(&n.message("mirror").unwrap(), &Default::default()).unwrap()
    }

    fn cfg(args: &[&str]) -> TargetSet {
        let mut all = vec!["spop-mirror", "--target", "http://127.0.0.1:9/pre"];
        all.extend_from_slice(args);
        TargetSet::build(&Config::load(all).unwrap(), 1).unwrap()
    }

    /// What hyper writes for the same request (today's path).
    /// What this module writes for the set's first target.
    fn ours(c: &TargetSet, req: &MirrorRequest) -> Vec<u8> {
        let policy = &c.targets[0];
        let t = Target {
            policy,
            loop_marker: c.loop_marker.as_ref(),
            prefix: "/pre",
            authority: b"127.0.0.1:9",
        };
        let mut out = Vec::new();
        assert!(encode(&t, req, &mut out));
        out
    }

    async fn hyper_bytes(c: &TargetSet, req: &MirrorRequest) -> Vec<u8> {
        let r = crate::mirror::build_request_for_test(c, req).unwrap();
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        let answer = tokio::spawn(async move { send.send_request(r).await.map(|_| ()) });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let want_body = req.body_len();
        loop {
            let n = server.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() >= end + 4 + want_body {
                    break;
                }
            }
        }
        server
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        let _ = answer.await;
        driver.abort();
        got
    }

    #[tokio::test]
    async fn same_bytes_as_hyper() {
        let requests = [
            request(
                "POST",
                &[
                    (b"host", b"shop.test"),
                    (b"x", b"1"),
                    (b"accept", b"*/*"),
                    (b"x", b"2"),
                    (b"content-length", b"5"),
                    (b"x-mirror", b"client"),
                ],
                b"hello",
            ),
            request(
                "GET",
                &[(b"host", b"shop.test"), (b"user-agent", b"u")],
                b"",
            ),
            request("GET", &[(b"user-agent", b"no host")], b""),
            request(
                "HEAD",
                &[(b"host", b"h"), (b"Cookie", b"a=1"), (b"cookie", b"b=2")],
                b"",
            ),
            request(
                "PUT",
                &[(b"host", b"h"), (b"transfer-encoding", b"chunked")],
                b"",
            ),
        ];
        let configs = [
            cfg(&["--redact", "credentials", "--set-header", "X-Env: test"]),
            cfg(&[
                "--remove-header",
                "cookie",
                "--redact",
                "user-agent",
                "--loop-header",
                "",
            ]),
            cfg(&[
                "--set-header",
                "Cookie: replaced",
                "--redact-value",
                "XXX",
                "--redact",
                "x-a",
            ]),
            cfg(&["--add-header", "X-Mirror: yes"]),
            cfg(&[
                "--host",
                "target",
                "--add-header",
                "x-a: 1",
                "--add-header",
                "X-A: 2",
            ]),
            cfg(&["--host", "fixed.example"]),
            cfg(&[
                "--add-header",
                "Accept: text/x",
                "--add-header",
                "user-agent: mirror",
            ]),
            cfg(&[]),
        ];
        for c in &configs {
            for r in &requests {
                let ours = ours(c, r);
                let theirs = hyper_bytes(c, r).await;
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs),
                    "{r:?} {:?}",
                    c.targets[0]
                );
            }
        }
    }

    /// Many headers (the hash-map grouping) give the same order as few;
    /// so do the counts around the lines kept on the stack
    /// ([`LINES_ON_STACK`]) and the linear grouping's limit.
    #[tokio::test]
    async fn same_bytes_as_hyper_with_many_headers() {
        let names: Vec<String> = (0..200).map(|i| format!("x-h{}", i % 70)).collect();
        let c = cfg(&["--add-header", "x-h3: added"]);
        let around = |n: usize| n - 3..=n + 2;
        for count in around(LINES_ON_STACK)
            .chain(around(LINEAR_GROUPING))
            .chain([200])
        {
            let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"h")];
            headers.extend(names.iter().take(count).map(|n| (n.as_bytes(), &b"v"[..])));
            let r = request("POST", &headers, b"abc");
            assert_eq!(ours(&c, &r), hyper_bytes(&c, &r).await, "{count} headers");
        }
    }

    fn feed(a: &mut Answers, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = a.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            a.filled(n);
            bytes = &bytes[n..];
        }
    }

    #[test]
    fn answers_are_counted_by_their_framing() {
        let stream: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n\
            HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        // Byte by byte, then all at once: the same answers.
        for step in [1, stream.len()] {
            let mut a = Answers::default();
            let mut got = Vec::new();
            let heads = [false, false, false, true, false];
            for piece in stream.chunks(step) {
                feed(&mut a, piece);
                while got.len() < heads.len() {
                    match a.next(heads[got.len()], None).unwrap() {
                        Some(s) => got.push(s),
                        None => break,
                    }
                }
            }
            assert_eq!(got, [200, 201, 204, 200, 404], "step {step}");
        }
    }

    #[test]
    fn an_answer_up_to_the_close() {
        let mut a = Answers::default();
        feed(&mut a, b"HTTP/1.1 200 OK\r\n\r\nbody");
        assert_eq!(a.next(false, None), Ok(None));
        assert!(a.closing());
        assert_eq!(a.eof(), Some(200));
        let mut a = Answers::default();
        feed(
            &mut a,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(a.next(false, None), Ok(Some(200)));
        assert!(a.closing());
        feed(&mut a, b"garbage\r\n\r\n");
        assert_eq!(a.next(false, None), Err(AnswerError::Invalid));
        let mut a = Answers::default();
        feed(&mut a, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert_eq!(a.next(false, None), Err(AnswerError::Invalid));
    }

    /// The answers of compared requests are kept (fields, body up to the
    /// limit, de-chunked), those in between are not, and a 1xx's fields are
    /// not taken for the final answer's.
    #[test]
    fn kept_answers_hold_fields_and_body() {
        let stream: &[u8] = b"HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: A\r\nx-app: b\r\n\r\nhello\
            HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nT: 1\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnot\
            HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789\
            HTTP/1.1 204 No Content\r\nX-Empty: 1\r\n\r\n";
        // (HEAD, keep): the limit 6 cuts the chunked body and the last one.
        let asks = [
            (false, Some(100)),
            (false, Some(6)),
            (false, None),
            (false, Some(6)),
            (true, Some(100)),
        ];
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let want = [
            Some((
                vec![
                    (b("content-length"), b("5")),
                    (b("x-app"), b("A")),
                    (b("x-app"), b("b")),
                ],
                &b"hello"[..],
                false,
            )),
            Some((
                vec![(b("transfer-encoding"), b("chunked"))],
                &b"abcdef"[..],
                true,
            )),
            None,
            Some((vec![(b("content-length"), b("10"))], &b"012345"[..], true)),
            Some((vec![(b("x-empty"), b("1"))], &b""[..], false)),
        ];
        for step in [1, 7, stream.len()] {
            let mut a = Answers::default();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                feed(&mut a, piece);
                while got.len() < asks.len() {
                    let (head, keep) = asks[got.len()];
                    match a.next(head, keep).unwrap() {
                        Some(s) => got.push((s, a.take_kept())),
                        None => break,
                    }
                }
            }
            assert_eq!(
                got.iter().map(|g| g.0).collect::<Vec<_>>(),
                [200, 201, 200, 200, 204],
                "step {step}"
            );
            for (i, ((_, kept), want)) in got.into_iter().zip(&want).enumerate() {
                let kept = kept.map(|k| {
                    let t = k.truncated;
                    (k.headers.clone(), k.into_body(), t)
                });
                let want = want
                    .as_ref()
                    .map(|(h, body, t)| (h.clone(), Bytes::from_static(body), *t));
                assert_eq!(kept, want, "answer {i}, step {step}");
            }
        }
    }

    /// An answer up to the close is kept up to the limit too.
    #[test]
    fn a_kept_answer_up_to_the_close() {
        let mut a = Answers::default();
        feed(&mut a, b"HTTP/1.1 200 OK\r\nServer: s\r\n\r\nbo");
        assert_eq!(a.next(false, Some(3)), Ok(None));
        feed(&mut a, b"dy");
        assert_eq!(a.next(false, Some(3)), Ok(None));
        assert_eq!(a.eof(), Some(200));
        let k = a.take_kept().unwrap();
        assert!(k.truncated);
        assert_eq!(k.headers, [(Bytes::from("server"), Bytes::from("s"))]);
        assert_eq!(k.into_body(), "bod");
        assert_eq!(a.take_kept(), None);
    }

    /// A head, a chunk-size line or a trailer over `MAX_HEAD` is refused
    /// whether it came in one read or trickled in (the buffer holds more
    /// than `MAX_HEAD`, so a whole one could pass in one read).
    #[test]
    fn long_lines_are_refused_however_they_arrive() {
        let long = "x".repeat(MAX_HEAD);
        let streams = [
            format!("HTTP/1.1 200 OK\r\nx-long: {long}\r\nContent-Length: 0\r\n\r\n"),
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{long}\r\na\r\n0\r\n\r\n"
            ),
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nt: {long}\r\n\r\n"),
        ];
        for (i, stream) in streams.iter().enumerate() {
            for step in [1000, 4096, READ_CHUNK, stream.len()] {
                let mut a = Answers::default();
                let mut result = Ok(None);
                for piece in stream.as_bytes().chunks(step) {
                    let mut piece = piece;
                    while !piece.is_empty() && result == Ok(None) {
                        let spare = a.spare();
                        let n = spare.len().min(piece.len());
                        spare[..n].copy_from_slice(&piece[..n]);
                        a.filled(n);
                        piece = &piece[n..];
                        result = a.next(false, None);
                    }
                }
                assert_eq!(result, Err(AnswerError::Invalid), "stream {i}, step {step}");
            }
        }
    }

    /// Up to 100 header fields, as hyper's client takes; 101 end the
    /// connection.
    #[test]
    fn answers_have_as_many_fields_as_hyper_allows() {
        for (fields, ok) in [(MAX_ANSWER_HEADERS, true), (MAX_ANSWER_HEADERS + 1, false)] {
            let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
            for i in 1..fields {
                head.push_str(&format!("x-{i}: v\r\n"));
            }
            head.push_str("\r\n");
            let mut a = Answers::default();
            feed(&mut a, head.as_bytes());
            let got = a.next(false, Some(10));
            if ok {
                assert_eq!(got, Ok(Some(200)));
                assert_eq!(a.take_kept().unwrap().headers.len(), fields);
            } else {
                assert_eq!(got, Err(AnswerError::Invalid), "{fields} fields");
            }
        }
    }
}
