//! One test per kind of bad input, each asserting the specific error and the
//! status code an agent sends for it; and no input makes the decoder panic.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use haproxy_spop::{
    varint, ArgError, DecodeError, Error, Flags, Frame, FrameBody, Metadata, Notify, Reassembled,
    Reassembler, SpopCodec, Status, TypedData,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// A frame payload (after LENGTH): header then `rest`.
fn frame(frame_type: u8, flags: u32, rest: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(frame_type);
    b.put_u32(flags);
    b.put_slice(&[1, 1]);
    b.put_slice(rest);
    b.freeze()
}

fn err(payload: Bytes) -> DecodeError {
    Frame::decode(payload).unwrap_err()
}

fn kv(items: &[(&str, TypedData)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in items {
        varint::encode(k.len() as u64, &mut out);
        out.put_slice(k.as_bytes());
        v.encode(&mut out);
    }
    out
}

#[test]
fn truncated_frame() {
    // Cut inside the header...
    for cut in 0..5 {
        let e = err(frame(3, 1, &[]).slice(..cut));
        assert!(matches!(e, DecodeError::Truncated { .. }), "{e:?}");
        assert_eq!(e.status(), Status::INVALID_FRAME);
    }
    // ...and inside a NOTIFY argument.
    let notify = Notify::builder()
        .message("m")
        .arg("a", "value")
        .build()
        .unwrap();
    let full = frame(3, 1, notify.payload());
    let e = err(full.slice(..full.len() - 2));
    assert_eq!(e, DecodeError::Truncated { what: "STRING" });
    assert_eq!(Status::from(&e), Status::INVALID_FRAME);
}

#[test]
fn length_over_the_limit() {
    let mut codec = SpopCodec::with_max_frame_size(16380);
    let mut buf = BytesMut::new();
    buf.put_u32(16381);
    let e = codec.decode(&mut buf).unwrap_err();
    let Error::Decode(d) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        *d,
        DecodeError::FrameTooLarge {
            len: 16381,
            max: 16380
        }
    );
    assert_eq!(e.status(), Status::TOO_BIG);
    // Refused before buffering the body.
    assert!(buf.capacity() < 16381);
}

#[test]
fn bad_varints() {
    // Stream-id longer than 10 bytes.
    let mut p = vec![3u8, 0, 0, 0, 1];
    p.extend_from_slice(&[0xff; 11]);
    let e = err(Bytes::from(p));
    assert_eq!(e, DecodeError::VarintTooLong { max: 10 });
    assert_eq!(e.status(), Status::INVALID_FRAME);
    // Frame-id overflowing u64.
    let mut p = vec![3u8, 0, 0, 0, 1, 0];
    p.extend_from_slice(&[0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0f]);
    let e = err(Bytes::from(p));
    assert_eq!(e, DecodeError::VarintOverflow);
    assert_eq!(e.status(), Status::INVALID_FRAME);
    // A varint cut by the end of the frame.
    let e = err(Bytes::from_static(&[3, 0, 0, 0, 1, 0xf5]));
    assert_eq!(e, DecodeError::Truncated { what: "varint" });
}

#[test]
fn unknown_data_type() {
    // Message "m", one argument "a" of type 10.
    let e = err(frame(3, 1, &[1, b'm', 1, 1, b'a', 0x0a]));
    assert_eq!(e, DecodeError::UnknownDataType(10));
    assert_eq!(e.status(), Status::INVALID_FRAME);
}

#[test]
fn nb_args_larger_than_what_follows() {
    // Message "m" announcing 3 arguments, carrying 1.
    let e = err(frame(3, 1, &[1, b'm', 3, 1, b'a', 0x00]));
    assert_eq!(
        e,
        DecodeError::Truncated {
            what: "argument name"
        }
    );
    assert_eq!(e.status(), Status::INVALID_FRAME);
}

#[test]
fn bad_hdrs_bin_block() {
    // A header block without its end marker, as a BINARY argument.
    let block = Bytes::from_static(b"\x04host\x01x");
    let notify = Notify::builder()
        .message("mirror")
        .arg("arg_hdrs", block)
        .build()
        .unwrap();
    let msg = notify.message("mirror").unwrap();
    let e = msg.headers("arg_hdrs").unwrap_err();
    assert_eq!(
        e,
        ArgError::Invalid(DecodeError::InvalidHeaderBlock {
            what: "no end marker"
        })
    );
    let ArgError::Invalid(d) = e else {
        unreachable!()
    };
    assert_eq!(d.status(), Status::INVALID_FRAME);
    // Missing and mistyped arguments are told apart.
    assert_eq!(msg.headers("nope").unwrap_err(), ArgError::Missing);
    let notify = Notify::builder()
        .message("mirror")
        .arg("arg_hdrs", 5i64)
        .build()
        .unwrap();
    let e = notify
        .message("mirror")
        .unwrap()
        .headers("arg_hdrs")
        .unwrap_err();
    assert!(
        matches!(e, ArgError::WrongType { found, .. } if found == haproxy_spop::DataType::INT64)
    );
}

#[test]
fn unknown_frame_type() {
    for t in [4u8, 100, 104, 255] {
        let e = err(frame(t, 1, &[]));
        assert_eq!(e, DecodeError::UnknownFrameType(t));
        assert_eq!(e.status(), Status::INVALID_FRAME);
    }
}

#[test]
fn hello_missing_keys() {
    let v = TypedData::from("2.0");
    let size = TypedData::Uint32(16380);
    let caps = TypedData::from("pipelining");
    let cases = [
        (
            kv(&[
                ("max-frame-size", size.clone()),
                ("capabilities", caps.clone()),
            ]),
            DecodeError::MissingVersion,
            5,
        ),
        (
            kv(&[
                ("supported-versions", v.clone()),
                ("capabilities", caps.clone()),
            ]),
            DecodeError::MissingMaxFrameSize,
            6,
        ),
        (
            kv(&[
                ("supported-versions", v.clone()),
                ("max-frame-size", size.clone()),
            ]),
            DecodeError::MissingCapabilities,
            7,
        ),
    ];
    for (payload, want, code) in cases {
        let e = err(frame(1, 1, &payload));
        assert_eq!(e, want);
        assert_eq!(e.status(), Status(code));
    }
    // max-frame-size as a string counts as absent; a value above u32 is invalid.
    let e = err(frame(
        1,
        1,
        &kv(&[
            ("supported-versions", v.clone()),
            ("max-frame-size", v.clone()),
            ("capabilities", caps.clone()),
        ]),
    ));
    assert_eq!(e, DecodeError::MissingMaxFrameSize);
    let e = err(frame(
        1,
        1,
        &kv(&[
            ("supported-versions", v),
            ("max-frame-size", TypedData::Uint64(1 << 40)),
            ("capabilities", caps),
        ]),
    ));
    assert_eq!(
        e,
        DecodeError::InvalidValue {
            what: "max-frame-size"
        }
    );
    // A DISCONNECT without status-code.
    let e = err(frame(2, 1, &kv(&[("message", TypedData::from("x"))])));
    assert_eq!(e, DecodeError::MissingKey("status-code"));
}

#[test]
fn bad_ack_actions() {
    let e = err(frame(103, 1, &[9, 0]));
    assert_eq!(e, DecodeError::UnknownAction(9));
    let e = err(frame(103, 1, &[1, 2, 0, 1, b'v']));
    assert_eq!(
        e,
        DecodeError::ActionArgCount {
            action: 1,
            found: 2,
            expected: 3
        }
    );
    assert_eq!(e.status(), Status::INVALID_FRAME);
}

#[test]
fn out_of_range_integers() {
    // UINT32 carrying 2^32.
    let mut arg = vec![1u8, b'm', 1, 1, b'a', 0x03];
    varint::encode(1 << 32, &mut arg);
    assert_eq!(
        err(frame(3, 1, &arg)),
        DecodeError::InvalidValue { what: "UINT32" }
    );
}

fn frag(body: FrameBody, flags: u32, stream_id: u64) -> Frame {
    Frame {
        metadata: Metadata {
            flags: Flags(flags),
            stream_id,
            frame_id: 1,
        },
        body,
    }
}

#[test]
fn reassembly_errors() {
    let piece = || Bytes::from_static(b"\x01m");
    // Interlaced: a new fragmented NOTIFY while one is under way.
    let mut r = Reassembler::new(1000);
    r.push(frag(FrameBody::NotifyFragment(piece()), 0, 1))
        .unwrap();
    let e = r
        .push(frag(FrameBody::NotifyFragment(piece()), 0, 2))
        .unwrap_err();
    assert_eq!(
        (e, e.status()),
        (DecodeError::InterlacedFrames, Status::INTERLACED_FRAMES)
    );
    assert!(!r.is_pending());
    // Interlaced: an UNSET for other ids.
    r.push(frag(FrameBody::NotifyFragment(piece()), 0, 1))
        .unwrap();
    let e = r.push(frag(FrameBody::Unset(piece()), 1, 2)).unwrap_err();
    assert_eq!(e.status(), Status::INTERLACED_FRAMES);
    // An UNSET with nothing under way.
    let e = r.push(frag(FrameBody::Unset(piece()), 1, 1)).unwrap_err();
    assert_eq!(
        (e, e.status()),
        (DecodeError::FrameIdNotFound, Status::FRAME_ID_NOT_FOUND)
    );
    // Over the cap: an error, not growth.
    let mut r = Reassembler::new(10);
    r.push(frag(
        FrameBody::NotifyFragment(Bytes::from_static(b"123456")),
        0,
        1,
    ))
    .unwrap();
    let e = r
        .push(frag(FrameBody::Unset(Bytes::from_static(b"123456")), 0, 1))
        .unwrap_err();
    assert_eq!(
        (e, e.status()),
        (
            DecodeError::ReassemblyTooLarge { max: 10 },
            Status::RESOURCE_ALLOCATION
        )
    );
    assert_eq!(r.held(), 0);
    let e = r
        .push(frag(
            FrameBody::NotifyFragment(Bytes::from(vec![0; 11])),
            0,
            1,
        ))
        .unwrap_err();
    assert_eq!(e, DecodeError::ReassemblyTooLarge { max: 10 });
    // ABORT cancels what was held.
    let mut r = Reassembler::new(1000);
    r.push(frag(FrameBody::NotifyFragment(piece()), 0, 7))
        .unwrap();
    let out = r
        .push(frag(FrameBody::Unset(Bytes::new()), Flags::ABORT.0, 7))
        .unwrap();
    assert_eq!(
        out,
        Reassembled::Aborted {
            stream_id: 7,
            frame_id: 1
        }
    );
    assert!(!r.is_pending());
    // A complete but malformed reassembled NOTIFY is reported as such.
    r.push(frag(
        FrameBody::NotifyFragment(Bytes::from_static(b"\x01m\x01")),
        0,
        1,
    ))
    .unwrap();
    let e = r
        .push(frag(
            FrameBody::Unset(Bytes::from_static(b"\x01a\x0b")),
            1,
            1,
        ))
        .unwrap_err();
    assert_eq!(e, DecodeError::UnknownDataType(11));
}

fn captured() -> Vec<Bytes> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for v in [
        "haproxy-2.6.12",
        "haproxy-3.0.11",
        "haproxy-3.2.26",
        "haproxy-3.4.7",
    ] {
        for e in std::fs::read_dir(root.join(v)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "bin") {
                let b = Bytes::from(std::fs::read(p).unwrap());
                // Keep the small ones: proptest mutates them many times.
                if b.len() < 4096 {
                    out.push(b.slice(4..));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(frame) = Frame::decode(Bytes::from(bytes)) {
            // Whatever decodes re-encodes to something that decodes the same.
            let mut buf = Vec::new();
            frame.encode(&mut buf);
            prop_assert_eq!(Frame::decode(Bytes::from(buf)).unwrap(), frame);
        }
    }

    #[test]
    fn mutated_vectors_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let frames = captured();
        let original = which.get(&frames);
        let mut bytes = original.to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        let len = cut.index(bytes.len() + 1);
        bytes.truncate(len.max(bytes.len() / 2));
        if let Ok(Frame { body: FrameBody::Notify(n), .. }) = Frame::decode(Bytes::from(bytes)) {
            for m in n.messages() {
                for (_, v) in m.args() {
                    let _ = v.as_str();
                }
                let _ = m.headers("arg_hdrs").map(|h| h.iter().count());
            }
        }
    }
}
