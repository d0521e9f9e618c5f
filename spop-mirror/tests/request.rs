//! Requests rebuilt from the mirror NOTIFY frames captured from real HAProxy.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use haproxy_spop::{Frame, FrameBody};
use spop_mirror::request::{build, ArgNames};

#[test]
fn captured_frames_become_requests() {
    // (file, method, path, body length, truncated)
    let want = [
        (
            "mirror-02-notify.bin",
            "GET",
            "/index.html?x=1&y=%20z",
            0,
            false,
        ),
        ("mirror-03-notify.bin", "POST", "/submit", 14, false),
        ("mirror-04-notify.bin", "GET", "/v10", 0, false),
        ("mirror-05-notify.bin", "POST", "/chunked", 12, false),
        ("mirror-06-notify.bin", "PUT", "/b12k", 12_000, false),
        // Cut to what fits the buffer: 15 096 to 15 112 bytes by version.
        ("mirror-07-notify.bin", "PUT", "/b100k", 15_000, true),
    ];
    for version in [
        "haproxy-2.6.12",
        "haproxy-3.0.11",
        "haproxy-3.2.26",
        "haproxy-3.4.7",
    ] {
        for (file, method, path, body_len, truncated) in want {
            let p = format!(
                "{}/../spop/tests/vectors/{version}/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let wire = Bytes::from(std::fs::read(&p).unwrap());
            let frame = Frame::decode(wire.slice(4..)).unwrap();
            let FrameBody::Notify(n) = &frame.body else {
                panic!()
            };
            let msg = n.message("mirror").unwrap();
            let r = build(&msg, &ArgNames::default()).unwrap();
            let what = format!("{version}/{file}");
            assert_eq!(r.method.as_str(), method, "{what}");
            assert_eq!(r.path.as_str(), path, "{what}");
            if truncated {
                assert!((body_len..16_384).contains(&r.body.len()), "{what}");
            } else {
                assert_eq!(r.body.len(), body_len, "{what}");
            }
            assert_eq!(r.truncated, truncated, "{what}");
            let host = r.host.as_ref().map(|h| h.as_bytes()).unwrap_or_default();
            assert!(host.starts_with(b"127.0.0.1:"), "{what}: {host:?}");
            assert!(
                r.headers.get("content-length").is_none(),
                "{what}: length is recomputed"
            );
            // The body is a view into the frame, not a copy.
            if body_len > 0 {
                let start = wire.as_ptr() as usize;
                let at = r.body.as_ptr() as usize;
                assert!(at > start && at < start + wire.len(), "{what}: body copied");
            }
        }
    }
}
