//! proptest round trips: every frame type, all ten data types, varints,
//! header blocks; encode → decode gives the value back and `encoded_len` is
//! the number of bytes written.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use haproxy_spop::{
    varint, Ack, AgentHello, Capabilities, Disconnect, Flags, Frame, FrameBody, HaproxyHello,
    Headers, Metadata, Notify, SpopCodec, Status, TypedData, TypedRef, VarScope,
};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn typed() -> impl Strategy<Value = TypedData> {
    prop_oneof![
        Just(TypedData::Null),
        any::<bool>().prop_map(TypedData::Bool),
        any::<i32>().prop_map(TypedData::Int32),
        any::<u32>().prop_map(TypedData::Uint32),
        any::<i64>().prop_map(TypedData::Int64),
        any::<u64>().prop_map(TypedData::Uint64),
        any::<[u8; 4]>().prop_map(|o| TypedData::Ipv4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| TypedData::Ipv6(Ipv6Addr::from(o))),
        bytes().prop_map(TypedData::String),
        bytes().prop_map(TypedData::Binary),
    ]
}

fn caps() -> impl Strategy<Value = Capabilities> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(p, a, f)| {
        let mut c = Capabilities::NONE;
        if p {
            c = c | Capabilities::PIPELINING;
        }
        if a {
            c = c | Capabilities::ASYNC;
        }
        if f {
            c = c | Capabilities::FRAGMENTATION;
        }
        c
    })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(flags, stream_id, frame_id)| Metadata {
        flags: Flags(flags),
        stream_id,
        frame_id,
    })
}

fn scope() -> impl Strategy<Value = VarScope> {
    (0u8..5).prop_map(VarScope)
}

fn ack() -> impl Strategy<Value = Ack> {
    vec((any::<bool>(), scope(), bytes(), typed()), 0..6).prop_map(|actions| {
        actions
            .into_iter()
            .fold(Ack::new(), |ack, (set, scope, name, value)| {
                if set {
                    ack.set_var(scope, name, value)
                } else {
                    ack.unset_var(scope, name)
                }
            })
    })
}

fn notify() -> impl Strategy<Value = Notify> {
    vec((bytes(), vec((bytes(), typed()), 0..8)), 0..4).prop_map(|messages| {
        let mut b = Notify::builder();
        for (name, args) in messages {
            b = b.message(name);
            for (n, v) in args {
                b = b.arg(n, v);
            }
        }
        b.build().unwrap()
    })
}

fn body() -> impl Strategy<Value = FrameBody> {
    prop_oneof![
        (
            bytes(),
            any::<u32>(),
            caps(),
            any::<bool>(),
            proptest::option::of(bytes())
        )
            .prop_map(
                |(v, size, c, hc, id)| FrameBody::HaproxyHello(HaproxyHello {
                    supported_versions: v,
                    max_frame_size: size,
                    capabilities: c,
                    healthcheck: hc,
                    engine_id: id,
                })
            ),
        (bytes(), any::<u32>(), caps()).prop_map(|(v, size, c)| FrameBody::AgentHello(
            AgentHello {
                version: v,
                max_frame_size: size,
                capabilities: c,
            }
        )),
        (any::<u32>(), bytes())
            .prop_map(|(s, m)| FrameBody::HaproxyDisconnect(Disconnect::new(Status(s), m))),
        (any::<u32>(), bytes())
            .prop_map(|(s, m)| FrameBody::AgentDisconnect(Disconnect::new(Status(s), m))),
        notify().prop_map(FrameBody::Notify),
        bytes().prop_map(FrameBody::NotifyFragment),
        bytes().prop_map(FrameBody::Unset),
        ack().prop_map(FrameBody::Ack),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (metadata(), body()).prop_map(|(mut metadata, body)| {
        // A NOTIFY's FIN bit says whether it is whole or a fragment.
        match body {
            FrameBody::Notify(_) => metadata.flags.0 |= Flags::FIN.0,
            FrameBody::NotifyFragment(_) => metadata.flags.0 &= !Flags::FIN.0,
            _ => {}
        }
        Frame { metadata, body }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn typed_data_roundtrip(v in typed()) {
        let mut buf = Vec::new();
        v.encode(&mut buf);
        prop_assert_eq!(buf.len(), v.encoded_len());
        let (back, used) = TypedData::decode(&Bytes::from(buf.clone())).unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, v);
    }

    #[test]
    fn frame_roundtrip(f in frame()) {
        let mut buf = Vec::new();
        f.encode(&mut buf);
        prop_assert_eq!(buf.len(), f.encoded_len());
        let back = Frame::decode(Bytes::from(buf)).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn codec_roundtrip(frames in vec(frame(), 1..8)) {
        let mut codec = SpopCodec::with_max_frame_size(u32::MAX);
        let mut buf = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut buf).unwrap();
        }
        let mut back = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            back.push(f);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(back, frames);
    }

    #[test]
    fn varint_roundtrip(v: u64) {
        let mut buf = Vec::new();
        varint::encode(v, &mut buf);
        prop_assert_eq!(buf.len(), varint::encoded_len(v));
        prop_assert_eq!(varint::decode_slice(&buf), Ok((v, buf.len())));
    }

    #[test]
    fn notify_args_are_found_by_name(args in vec((bytes(), typed()), 1..10)) {
        let mut b = Notify::builder().message("m");
        for (n, v) in &args {
            b = b.arg(n, v.clone());
        }
        let notify = b.build().unwrap();
        let msg = notify.message("m").unwrap();
        for (n, v) in &args {
            if let Ok(name) = std::str::from_utf8(n) {
                let first = args.iter().find(|(m, _)| m == n).map(|(_, v)| v.clone());
                prop_assert_eq!(msg.arg_ref(name), first.as_ref().map(TypedRef::from));
                prop_assert_eq!(msg.arg(name), first);
            }
            let _ = v;
        }
        // The borrowed iterator yields what the owned one does, in order.
        prop_assert_eq!(msg.args_ref().len(), args.len());
        for ((n, r), (want_n, want)) in msg.args_ref().zip(&args) {
            prop_assert_eq!(n, &want_n[..]);
            prop_assert_eq!(r, TypedRef::from(want));
            prop_assert_eq!(r.data_type(), want.data_type());
            prop_assert_eq!(r.as_i64(), want.as_i64());
        }
    }

    #[test]
    fn header_block_roundtrip(pairs in vec((vec(any::<u8>(), 1..20), vec(any::<u8>(), 0..40)), 0..20)) {
        let block = Headers::encode(pairs.iter().map(|(n, v)| (n, v)));
        let h = Headers::decode(block).unwrap();
        let back: Vec<(Vec<u8>, Vec<u8>)> = h.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(back, pairs);
    }
}

/// (value, wire bytes) in both directions, at the length boundaries.
#[test]
fn varint_boundary_table() {
    let table: &[(u64, &[u8])] = &[
        (239, &[0xef]),
        (240, &[0xf0, 0x00]),
        (2287, &[0xff, 0x7f]),
        (2288, &[0xf0, 0x80, 0x00]),
        (264431, &[0xff, 0xff, 0x7f]),
        (264432, &[0xf0, 0x80, 0x80, 0x00]),
        (
            u64::MAX,
            &[0xff, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
        ),
    ];
    for &(value, wire) in table {
        let mut buf = Vec::new();
        varint::encode(value, &mut buf);
        assert_eq!(buf, wire, "encode {value}");
        assert_eq!(
            varint::decode_slice(wire),
            Ok((value, wire.len())),
            "decode {value}"
        );
    }
}

/// Every scope, both actions and the empty ACK, byte for byte.
#[test]
fn ack_wire_format() {
    let mut buf = Vec::new();
    Frame::ack(1, 2, Ack::new()).encode(&mut buf);
    assert_eq!(buf, [103, 0, 0, 0, 1, 1, 2]);
    for s in 0..5u8 {
        let ack = Ack::new()
            .set_var(VarScope(s), "v", 1i32)
            .unset_var(VarScope(s), "w");
        let mut buf = Vec::new();
        Frame::ack(0, 0, ack.clone()).encode(&mut buf);
        assert_eq!(&buf[7..], [1, 3, s, 1, b'v', 2, 1, 2, 2, s, 1, b'w']);
        assert_eq!(
            Frame::decode(Bytes::from(buf)).unwrap(),
            Frame::ack(0, 0, ack)
        );
    }
}
