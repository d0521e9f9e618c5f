//! Entry points for the fuzz targets in `fuzz/`, behind the `fuzzing`
//! feature. Not an API: it changes with the fuzz targets.

use bytes::Bytes;

use crate::h1::{Answers, MAX_HEAD, READ_CHUNK};

/// One answer read by [`answers`]: its status, and what was kept of it
/// (fields, body, truncated) when its request asked for it.
pub type Read = (u16, Option<(Vec<(Bytes, Bytes)>, Bytes, bool)>);

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
                    let kept = a.take_kept().map(|k| {
                        let t = k.truncated;
                        let headers = k.headers.clone();
                        let body = k.into_body();
                        assert!(body.len() <= keep.unwrap_or(0), "kept past the limit");
                        (headers, body, t)
                    });
                    assert_eq!(kept.is_some(), keep.is_some());
                    got.push((status, kept));
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
                let kept = a.take_kept().map(|k| {
                    let t = k.truncated;
                    let headers = k.headers.clone();
                    (headers, k.into_body(), t)
                });
                assert_eq!(kept.is_some(), keep.is_some());
                got.push((status, kept));
            }
        }
    }
    assert!(got.len() <= asks.len());
    (got, false)
}
