//! Bytes from a target → spop-mirror's pipelined answer reader (HTTP/1.1
//! status lines, Content-Length, chunked, 1xx, up to the close; kept
//! answers for the comparison). No panic, the read buffer and kept bodies
//! within their bounds, and the same answers however the bytes are split
//! into reads.
//!
//! Input: `n` (a byte: requests, at most 64), per request a flags byte (1:
//! HEAD, 2: its answer is kept) and the kept body's limit (u16, little
//! endian), the read size (u16, little endian, 0 taken as 1), a byte whose
//! low bit says the target closes after the bytes, then the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spop_mirror::fuzzing::answers;

/// Per request: a HEAD?, and the body limit when its answer is kept.
type Asks = Vec<(bool, Option<usize>)>;

fn split(data: &[u8]) -> Option<(Asks, usize, bool, &[u8])> {
    let (&n, mut rest) = data.split_first()?;
    let mut asks = Vec::new();
    for _ in 0..n.min(64) {
        let (ask, more) = rest.split_at_checked(3)?;
        let limit = usize::from(u16::from_le_bytes([ask[1], ask[2]]));
        asks.push((ask[0] & 1 != 0, (ask[0] & 2 != 0).then_some(limit)));
        rest = more;
    }
    let (head, bytes) = rest.split_at_checked(3)?;
    let step = usize::from(u16::from_le_bytes([head[0], head[1]]));
    Some((asks, step, head[2] & 1 != 0, bytes))
}

fuzz_target!(|data: &[u8]| {
    let Some((asks, step, eof, bytes)) = split(data) else {
        return;
    };
    let whole = answers(bytes, usize::MAX, &asks, eof);
    let pieces = answers(bytes, step, &asks, eof);
    assert_eq!(whole, pieces, "step {step}");
});
