//! Entry points for the fuzz targets in `fuzz/`, behind the `fuzzing`
//! feature. Not an API: it changes with the fuzz targets.

use bytes::Bytes;

use crate::comparing::Kept;
use crate::h1::{Answers, MAX_HEAD, READ_CHUNK};

/// What was kept of an answer: fields, body, truncated.
pub type KeptParts = (Vec<(Bytes, Bytes)>, Bytes, bool);

/// One answer read by [`answers`]: its status, and what was kept of it
/// when its request asked for it.
pub type Read = (u16, Option<KeptParts>);

/// Reads the answers in `data` for requests `asks` (each: a HEAD?, and a
/// body limit when its answer is kept), as the pipelined path does: bytes
/// go into the reader's buffer at most `step` at a time (at least 1), and
/// answers are taken after each read; with `eof`, the connection then
/// ends. Returns the answers completed, in order, and whether reading
/// stopped on an error (a bad answer, or bytes with no request waiting).
///
/// # Panics
///
/// When a bound is broken: the read buffer past `MAX_HEAD + READ_CHUNK`, a
/// kept body past its limit, or more answers than requests.
pub fn answers(
    data: &[u8],
    step: usize,
    asks: &[(bool, Option<usize>)],
    eof: bool,
) -> (Vec<Read>, bool) {
    let mut a = Answers::default();
    let mut got: Vec<Read> = Vec::new();
    let step = step.max(1);
    let mut rest = data;
    loop {
        // Take what is complete.
        while let Some(&(head, keep)) = asks.get(got.len()) {
            match a.next(head, keep) {
                Ok(Some(status)) => {
                    got.push((status, kept(a.take_kept(), keep)));
                    if a.closing() {
                        return (got, false);
                    }
                }
                Ok(None) => break,
                Err(_) => return (got, true),
            }
        }
        if got.len() == asks.len() && a.buffered() > 0 {
            return (got, true);
        }
        assert!(
            a.buffer_len() <= MAX_HEAD + READ_CHUNK,
            "read buffer past its bound"
        );
        if rest.is_empty() {
            break;
        }
        let spare = a.spare();
        if spare.is_empty() {
            return (got, true);
        }
        let n = spare.len().min(step).min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        a.filled(n);
        rest = &rest[n..];
    }
    if eof {
        if let Some(status) = a.eof() {
            if let Some(&(_, keep)) = asks.get(got.len()) {
                got.push((status, kept(a.take_kept(), keep)));
            }
        }
    }
    assert!(got.len() <= asks.len());
    (got, false)
}

/// What was kept of an answer whose request asked `keep`: kept exactly
/// when asked, and within the limit.
fn kept(k: Option<Kept>, keep: Option<usize>) -> Option<KeptParts> {
    assert_eq!(k.is_some(), keep.is_some());
    k.map(|mut k| {
        let headers = std::mem::take(&mut k.headers);
        let truncated = k.truncated;
        let body = k.into_body();
        assert!(body.len() <= keep.unwrap_or(0), "kept past the limit");
        (headers, body, truncated)
    })
}
