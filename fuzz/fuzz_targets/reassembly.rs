//! A sequence of fragments built from the input fed to a Reassembler: it
//! never holds more than its cap, and a completed frame is exactly the
//! concatenation of the pieces that made it.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use haproxy_spop::{Flags, Frame, FrameBody, Metadata, Reassembled, Reassembler};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Piece {
    first: bool,
    fin: bool,
    abort: bool,
    stream_id: u8,
    data: Vec<u8>,
}

const CAP: usize = 1024;

fuzz_target!(|pieces: Vec<Piece>| {
    let mut r = Reassembler::new(CAP);
    let mut expect: Vec<u8> = Vec::new();
    for p in pieces {
        let mut flags = 0;
        if p.fin {
            flags |= Flags::FIN.0;
        }
        if p.abort {
            flags |= Flags::ABORT.0;
        }
        let data = Bytes::from(p.data.clone());
        let body = if p.first {
            FrameBody::NotifyFragment(data)
        } else {
            FrameBody::Unset(data)
        };
        let metadata = Metadata {
            flags: Flags(flags),
            stream_id: u64::from(p.stream_id % 3),
            frame_id: 1,
        };
        let was_pending = r.pending_ids();
        match r.push(Frame { metadata, body }) {
            Ok(Reassembled::Pending) => {
                if p.first {
                    expect = p.data;
                } else {
                    expect.extend_from_slice(&p.data);
                }
                assert_eq!(r.held(), expect.len());
            }
            Ok(Reassembled::Frame(frame)) => {
                assert!(!p.first && p.fin && was_pending.is_some());
                expect.extend_from_slice(&p.data);
                let FrameBody::Notify(n) = frame.body else {
                    panic!("not a NOTIFY")
                };
                assert_eq!(&n.payload()[..], &expect[..]);
                expect.clear();
            }
            Ok(Reassembled::Aborted { .. }) => {
                assert!(p.abort);
                expect.clear();
            }
            Ok(_) => {}
            Err(_) => {
                assert!(!r.is_pending());
                expect.clear();
            }
        }
        assert!(r.held() <= CAP);
    }
});
