//! Every captured vector fed to `SpopCodec` in 1-byte pieces, split at every
//! offset, and all of a folder in one stream, yields the same frames as
//! decoding it whole.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use haproxy_spop::{Frame, SpopCodec};
use tokio_util::codec::Decoder;

fn files() -> Vec<(PathBuf, Bytes)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for version in [
        "haproxy-2.6.12",
        "haproxy-3.0.11",
        "haproxy-3.2.26",
        "haproxy-3.4.7",
    ] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(root.join(version))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        names.sort();
        for p in names {
            let b = Bytes::from(std::fs::read(&p).unwrap());
            out.push((p, b));
        }
    }
    assert_eq!(out.len(), 2 * 17 + 2 * 9);
    out
}

fn codec() -> SpopCodec {
    SpopCodec::with_max_frame_size(1 << 20)
}

/// Feeds `pieces` one after another, collecting every frame that comes out.
fn feed<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut codec = codec();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    frames
}

#[test]
fn one_byte_at_a_time() {
    for (path, wire) in files() {
        let whole = vec![Frame::decode(wire.slice(4..)).unwrap()];
        let got = feed(wire.chunks(1));
        assert_eq!(got, whole, "{}", path.display());
    }
}

#[test]
fn split_at_every_offset() {
    for (path, wire) in files() {
        let whole = vec![Frame::decode(wire.slice(4..)).unwrap()];
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            assert_eq!(feed([a, b]), whole, "{} cut at {cut}", path.display());
        }
    }
}

#[test]
fn whole_folders_as_one_stream() {
    let files = files();
    let whole: Vec<Frame> = files
        .iter()
        .map(|(_, w)| Frame::decode(w.slice(4..)).unwrap())
        .collect();
    let stream: Vec<u8> = files.iter().flat_map(|(_, w)| w.iter().copied()).collect();
    assert_eq!(feed([&stream[..]]), whole);
    // In uneven pieces (prime sizes), across frame boundaries.
    for size in [3, 7, 61, 1021, 4099] {
        assert_eq!(feed(stream.chunks(size)), whole, "pieces of {size}");
    }
}

#[test]
fn incomplete_frame_is_none_until_complete() {
    let (_, wire) = &files()[0];
    let mut codec = codec();
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        assert!(
            codec.decode(&mut buf).unwrap().is_none(),
            "frame before byte {i}"
        );
        buf.extend_from_slice(&[*byte]);
    }
    assert!(codec.decode(&mut buf).unwrap().is_some());
}
