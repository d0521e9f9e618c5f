//! Bytes fed to SpopCodec in chunks whose sizes come from the input: never
//! panics, never buffers past the limit, and yields the same frames (and the
//! same first error) as feeding everything at once.
#![no_main]

use bytes::BytesMut;
use haproxy_spop::SpopCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: u32 = 4096;

fn run<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<haproxy_spop::Frame>, Option<String>) {
    let mut codec = SpopCodec::with_max_frame_size(MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
        // Only an incomplete frame (bounded by the limit) may be held.
        assert!(buf.len() < 4 + MAX as usize || buf.len() <= piece.len() + 4 + MAX as usize);
    }
    (frames, None)
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (sizes, data) = input;
    let whole = run(std::iter::once(&data[..]));
    let mut rest = &data[..];
    let mut chunks = Vec::new();
    for s in sizes.iter().cycle().take(data.len() + 1) {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*s) % 64 + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    let split = run(chunks.into_iter());
    assert_eq!(split, whole);
});
