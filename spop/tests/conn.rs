//! The sans-IO connection core: bytes in, bytes and events out, time as a
//! value. No sockets, no runtime, no sleeping.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use haproxy_spop::conn::{
    AckStatus, CloseReason, Connection, Event, MemoryBudget, Settings, Stats, READ_STEP,
};
use haproxy_spop::{
    varint, Ack, Capabilities, Disconnect, Flags, Frame, FrameBody, FrameType, HaproxyHello,
    Metadata, Notify, Status, TypedData, VarScope,
};

const S: Duration = Duration::from_secs(1);

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode_framed(&mut out, u32::MAX).unwrap();
    }
    out
}

fn hello_frame(size: u32, caps: Capabilities) -> Frame {
    // Spelled out: HaproxyHello::new needs the runtime feature.
    Frame::haproxy_hello(HaproxyHello {
        supported_versions: Bytes::from_static(b"2.0"),
        max_frame_size: size,
        capabilities: caps,
        healthcheck: false,
        engine_id: None,
    })
}

fn notify(n: i64) -> Notify {
    Notify::builder().message("m").arg("n", n).build().unwrap()
}

fn settings() -> Settings {
    Settings::default()
}

/// A connection that has done its handshake at `t0` (AGENT-HELLO written).
fn open(settings: Settings, t0: Instant) -> Connection {
    let mut c = Connection::new(settings, t0);
    let hello = wire(&[hello_frame(
        16380,
        Capabilities::PIPELINING | Capabilities::FRAGMENTATION,
    )]);
    assert_eq!(c.recv(&hello), hello.len());
    assert!(matches!(c.poll_event(), Some(Event::Handshake { .. })));
    let hello_out = out(&mut c);
    assert!(matches!(
        hello_out[..],
        [Frame {
            body: FrameBody::AgentHello(_),
            ..
        }]
    ));
    c
}

/// Every frame the connection has to write, written.
fn out(c: &mut Connection) -> Vec<Frame> {
    let bytes = Bytes::copy_from_slice(c.transmit());
    c.advance(bytes.len());
    decode_all(bytes)
}

fn decode_all(mut bytes: Bytes) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        frames.push(Frame::decode(bytes.slice(4..4 + len)).unwrap());
        bytes = bytes.slice(4 + len..);
    }
    frames
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn notifies(c: &mut Connection) -> Vec<(u64, u64, i64)> {
    events(c)
        .into_iter()
        .map(|e| match e {
            Event::Notify(req) => (
                req.stream_id,
                req.frame_id,
                req.message("m").unwrap().int("n").unwrap(),
            ),
            other => panic!("expected NOTIFY, got {other:?}"),
        })
        .collect()
}

fn disconnect_of(frames: &[Frame]) -> Disconnect {
    match frames.last().map(|f| &f.body) {
        Some(FrameBody::AgentDisconnect(d)) => d.clone(),
        other => panic!("expected AGENT-DISCONNECT last, got {other:?}"),
    }
}

/// A raw HELLO from KV items, to send what a correct encoder never would.
fn raw_hello(items: &[(&str, TypedData)]) -> Vec<u8> {
    let mut payload = BytesMut::new();
    payload.put_u8(1);
    payload.put_u32(1);
    payload.put_slice(&[0, 0]);
    for (k, v) in items {
        varint::encode(k.len() as u64, &mut payload);
        payload.put_slice(k.as_bytes());
        v.encode(&mut payload);
    }
    let mut out = Vec::new();
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out
}

#[test]
fn handshake_answers_the_smaller_frame_size() {
    let t0 = Instant::now();
    // (HAProxy proposes, agent's setting, answer)
    let table = [
        (16380, 16380, 16380),
        (131_068, 16380, 16380),
        (16380, 8192, 8192),
        (1_048_572, 1_048_572, 1_048_572),
        (0xffff_fff0, u32::MAX, haproxy_spop::MAX_FRAME_SIZE_CEILING),
    ];
    for (proposed, mine, want) in table {
        let mut s = settings();
        s.max_frame_size = mine;
        let mut c = Connection::new(s, t0);
        c.recv(&wire(&[hello_frame(proposed, Capabilities::PIPELINING)]));
        let Some(Event::Handshake {
            answer,
            healthcheck: false,
        }) = c.poll_event()
        else {
            panic!()
        };
        assert_eq!(answer.max_frame_size, want);
        assert_eq!(c.max_frame_size(), want);
        assert_eq!(
            answer.capabilities,
            Capabilities::PIPELINING | Capabilities::FRAGMENTATION
        );
        let frames = out(&mut c);
        assert_eq!(frames, [Frame::agent_hello(answer)]);
        assert!(!c.is_closed());
    }
}

#[test]
fn refused_handshakes_get_statuses_5_to_9_and_4() {
    let t0 = Instant::now();
    let v = |s: &'static str| TypedData::from(s);
    let size = TypedData::Uint32(16380);
    let table: Vec<(Vec<u8>, Status)> = vec![
        (
            raw_hello(&[("max-frame-size", size.clone()), ("capabilities", v(""))]),
            Status::NO_VERSION,
        ),
        (
            raw_hello(&[("supported-versions", v("2.0")), ("capabilities", v(""))]),
            Status::NO_FRAME_SIZE,
        ),
        (
            raw_hello(&[
                ("supported-versions", v("2.0")),
                ("max-frame-size", size.clone()),
            ]),
            Status::NO_CAPABILITIES,
        ),
        (
            raw_hello(&[
                ("supported-versions", v("1.0,3.0")),
                ("max-frame-size", size.clone()),
                ("capabilities", v("")),
            ]),
            Status::BAD_VERSION,
        ),
        (
            raw_hello(&[
                ("supported-versions", v("2.0")),
                ("max-frame-size", TypedData::Uint32(255)),
                ("capabilities", v("")),
            ]),
            Status::BAD_FRAME_SIZE,
        ),
        (
            wire(&[Frame::notify(1, 1, notify(1))]),
            Status::INVALID_FRAME,
        ),
    ];
    let stats = Arc::new(Stats::default());
    for (raw, want) in table {
        let mut c = Connection::new(settings(), t0).with_stats(Arc::clone(&stats));
        c.recv(&raw);
        let evs = events(&mut c);
        assert!(
            matches!(&evs[..], [Event::Closed(CloseReason::Disconnected(d))] if d.status == want),
            "{want}: {evs:?}"
        );
        assert!(!c.wants_read());
        assert!(!c.is_closed(), "closed before the DISCONNECT is written");
        let frames = out(&mut c);
        assert_eq!(frames.len(), 1);
        assert_eq!(disconnect_of(&frames).status, want);
        assert!(c.is_closed());
        assert_eq!(stats.disconnects_sent(want), 1);
    }
    assert_eq!(stats.frames_sent(FrameType::AGENT_DISCONNECT), 6);
}

#[test]
fn health_check_is_answered_then_closes_normally() {
    let t0 = Instant::now();
    let mut c = Connection::new(settings(), t0);
    let raw = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/haproxy-2.6.12/check-01-haproxy-hello.bin"),
    )
    .unwrap();
    c.recv(&raw);
    let evs = events(&mut c);
    assert!(matches!(
        &evs[..],
        [
            Event::Handshake {
                healthcheck: true,
                ..
            },
            Event::Closed(CloseReason::HealthCheck)
        ]
    ));
    let frames = out(&mut c);
    assert!(matches!(
        frames[..],
        [Frame {
            body: FrameBody::AgentHello(_),
            ..
        }]
    ));
    assert!(c.is_closed());
    // HAProxy's close (or reset) that follows is no error.
    c.handle_eof();
    assert!(events(&mut c).is_empty());
    assert_eq!(c.stats().healthchecks(), 1);
    assert!(c.stats().snapshot().disconnects_sent.is_empty());
}

#[test]
fn pipelined_notifies_become_events_and_acks_become_bytes() {
    let t0 = Instant::now();
    let mut c = Connection::new(settings(), t0);
    let mut input = wire(&[hello_frame(16380, Capabilities::PIPELINING)]);
    input.extend(wire(&[
        Frame::notify(1, 1, notify(10)),
        Frame::notify(2, 1, notify(20)),
        Frame::notify(3, 7, notify(30)),
    ]));
    // One read brings the HELLO and three NOTIFY frames.
    assert_eq!(c.recv(&input), input.len());
    assert!(matches!(c.poll_event(), Some(Event::Handshake { .. })));
    assert_eq!(notifies(&mut c), [(1, 1, 10), (2, 1, 20), (3, 7, 30)]);
    assert_eq!(c.in_flight(), 3);
    assert_eq!(c.stats().in_flight(), 3);
    let hello_len = c.transmit().len();
    c.advance(hello_len);
    // Answered out of order; the bytes out are the ACK frames, in that order.
    let acks = [
        Frame::ack(2, 1, Ack::new().set_var(VarScope::TRANSACTION, "n", 20)),
        Frame::ack(3, 7, Ack::new().unset_var(VarScope::SESSION, "x")),
        Frame::ack(1, 1, Ack::new()),
    ];
    for ack in &acks {
        let FrameBody::Ack(a) = &ack.body else {
            unreachable!()
        };
        let (s, f) = (ack.metadata.stream_id, ack.metadata.frame_id);
        assert_eq!(c.send_ack(s, f, a.clone()), AckStatus::Queued);
    }
    let expected = wire(&acks);
    assert_eq!(c.transmit(), &expected[..]);
    // Counted as sent only once written: all but the last byte...
    c.advance(expected.len() - 1);
    assert_eq!(c.stats().frames_sent(FrameType::ACK), 2);
    c.advance(1);
    assert_eq!(c.stats().frames_sent(FrameType::ACK), 3);
    assert_eq!(c.stats().frames_received(FrameType::NOTIFY), 3);
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.stats().in_flight(), 0);
    // A second ACK for the same ids is refused, nothing is queued.
    assert_eq!(c.send_ack(2, 1, Ack::new()), AckStatus::Refused);
    assert!(c.transmit().is_empty());
    assert_eq!(c.stats().acks_refused(), 1);
}

#[test]
fn in_flight_bound_stops_reading() {
    let t0 = Instant::now();
    let mut s = settings();
    s.max_in_flight = 2;
    let mut c = open(s, t0);
    c.recv(&wire(
        &(1..=5)
            .map(|i| Frame::notify(i, 1, notify(i as i64)))
            .collect::<Vec<_>>(),
    ));
    assert_eq!(notifies(&mut c), [(1, 1, 1), (2, 1, 2)]);
    assert!(!c.wants_read());
    assert!(c.read_buf().is_none());
    c.send_ack(2, 1, Ack::new());
    assert!(c.wants_read());
    assert_eq!(notifies(&mut c), [(3, 1, 3)]);
    c.send_ack(1, 1, Ack::new());
    c.send_ack(3, 1, Ack::new());
    assert_eq!(notifies(&mut c), [(4, 1, 4), (5, 1, 5)]);
}

fn fragment(kind: FrameType, flags: u32, data: &[u8]) -> Frame {
    let data = Bytes::copy_from_slice(data);
    Frame {
        metadata: Metadata {
            flags: Flags(flags),
            stream_id: 9,
            frame_id: 4,
        },
        body: if kind == FrameType::NOTIFY {
            FrameBody::NotifyFragment(data)
        } else {
            FrameBody::Unset(data)
        },
    }
}

#[test]
fn fragments_are_reassembled_aborted_or_refused() {
    let t0 = Instant::now();
    let whole = notify(77);
    let p = whole.payload().clone();
    let (a, b) = p.split_at(3);

    // Reassembled into one NOTIFY event.
    let mut c = open(settings(), t0);
    c.recv(&wire(&[fragment(FrameType::NOTIFY, 0, a)]));
    assert!(events(&mut c).is_empty());
    c.recv(&wire(&[fragment(FrameType::UNSET, Flags::FIN.0, b)]));
    assert_eq!(notifies(&mut c), [(9, 4, 77)]);

    // ABORT: no event, no ACK, counted.
    let mut c = open(settings(), t0);
    c.recv(&wire(&[
        fragment(FrameType::NOTIFY, 0, a),
        fragment(FrameType::UNSET, Flags::FIN.0 | Flags::ABORT.0, b""),
        Frame::notify(1, 1, notify(1)),
    ]));
    assert_eq!(notifies(&mut c), [(1, 1, 1)]);
    assert_eq!(c.stats().aborted_frames(), 1);
    assert!(c.transmit().is_empty());

    // Protocol errors: 11 interlaced, 12 unknown frame-id, 13 too large.
    let mut interlaced = fragment(FrameType::UNSET, Flags::FIN.0, b);
    interlaced.metadata.frame_id = 5;
    let mut small = settings();
    small.max_reassembly_bytes = 100;
    let table = [
        (
            settings(),
            vec![fragment(FrameType::NOTIFY, 0, a), interlaced],
            Status::INTERLACED_FRAMES,
        ),
        (
            settings(),
            vec![fragment(FrameType::UNSET, Flags::FIN.0, b)],
            Status::FRAME_ID_NOT_FOUND,
        ),
        (
            small,
            vec![
                fragment(FrameType::NOTIFY, 0, &[1; 80]),
                fragment(FrameType::UNSET, 0, &[1; 80]),
            ],
            Status::RESOURCE_ALLOCATION,
        ),
    ];
    for (s, frames, want) in table {
        let mut c = open(s, t0);
        c.recv(&wire(&frames));
        assert!(events(&mut c)
            .iter()
            .any(|e| matches!(e, Event::Closed(CloseReason::Disconnected(d)) if d.status == want)));
        assert_eq!(disconnect_of(&out(&mut c)).status, want);
    }

    // Without the capability: 10.
    let mut s = settings();
    s.capabilities = Capabilities::PIPELINING;
    let mut c = open(s, t0);
    c.recv(&wire(&[fragment(FrameType::NOTIFY, 0, a)]));
    events(&mut c);
    assert_eq!(
        disconnect_of(&out(&mut c)).status,
        Status::FRAGMENTATION_NOT_SUPPORTED
    );
}

#[test]
fn frame_too_big_is_refused_without_reserving_it() {
    let t0 = Instant::now();
    let mut c = open(settings(), t0);
    // LENGTH 0xffffff00 after a 16380 handshake: status 3 at once.
    c.recv(&[0xff, 0xff, 0xff, 0x00, 3, 0, 0, 0, 1]);
    assert!(c.read_buffer().capacity() < 64 << 10);
    events(&mut c);
    assert_eq!(disconnect_of(&out(&mut c)).status, Status::TOO_BIG);
    assert!(c.is_closed());

    // With a large negotiated size, a large LENGTH reserves only what arrives.
    let mut s = settings();
    s.max_frame_size = 1_048_572;
    let mut c = Connection::new(s, t0);
    c.recv(&wire(&[hello_frame(1_048_572, Capabilities::PIPELINING)]));
    events(&mut c);
    assert_eq!(c.max_frame_size(), 1_048_572);
    let mut head = 1_000_000u32.to_be_bytes().to_vec();
    head.extend_from_slice(&[3, 1, 0, 0, 0, 1, 1]);
    c.recv(&head);
    assert!(events(&mut c).is_empty());
    assert!(
        c.read_buffer().capacity() <= 2 * READ_STEP,
        "{}",
        c.read_buffer().capacity()
    );
    let chunk = vec![0u8; 50_000];
    for _ in 0..6 {
        assert_eq!(c.recv(&chunk), chunk.len());
        let buf = c.read_buffer();
        assert!(
            buf.capacity() <= buf.len() + 4 * READ_STEP,
            "{} for {}",
            buf.capacity(),
            buf.len()
        );
    }
    assert!(c.read_buffer().capacity() < 1_000_000);
}

#[test]
fn memory_budget_disconnects_with_13_and_spares_the_others() {
    let t0 = Instant::now();
    let budget = MemoryBudget::new(256 << 10);
    let stats = Arc::new(Stats::default());
    let mut s = settings();
    s.max_frame_size = 1_048_572;
    let mut greedy = Connection::new(s.clone(), t0)
        .with_budget(budget.clone())
        .with_stats(Arc::clone(&stats));
    let mut modest = Connection::new(s, t0)
        .with_budget(budget.clone())
        .with_stats(Arc::clone(&stats));
    for c in [&mut greedy, &mut modest] {
        c.recv(&wire(&[hello_frame(1_048_572, Capabilities::PIPELINING)]));
        events(c);
        out(c);
    }
    // The greedy one sends most of a 1 MB frame.
    let mut data = 1_000_000u32.to_be_bytes().to_vec();
    data.extend_from_slice(&[3, 1, 0, 0, 0, 1, 1]);
    data.resize(600_000, 0);
    let taken = greedy.recv(&data);
    assert!(taken < data.len(), "the budget stopped it");
    let evs = events(&mut greedy);
    assert!(
        matches!(&evs[..], [Event::Closed(CloseReason::Disconnected(d))] if d.status == Status::RESOURCE_ALLOCATION),
        "{evs:?}"
    );
    assert_eq!(
        disconnect_of(&out(&mut greedy)).status,
        Status::RESOURCE_ALLOCATION
    );
    assert_eq!(stats.memory_refusals(), 1);
    assert!(budget.used() <= budget.limit());
    drop(greedy);
    // Its memory is given back; the other connection goes on.
    assert_eq!(budget.used(), modest.memory());
    modest.recv(&wire(&[Frame::notify(1, 1, notify(5))]));
    assert_eq!(notifies(&mut modest), [(1, 1, 5)]);
    modest.send_ack(1, 1, Ack::new());
    assert_eq!(out(&mut modest), [Frame::ack(1, 1, Ack::new())]);
    drop(modest);
    assert_eq!(budget.used(), 0);
}

#[test]
fn hello_and_idle_timeouts_are_numbers() {
    let t0 = Instant::now();
    let mut c = Connection::new(settings(), t0);
    assert_eq!(c.poll_timeout(), Some(t0 + 5 * S));
    c.handle_timeout(t0 + 5 * S - Duration::from_millis(1));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(t0 + 5 * S);
    events(&mut c);
    assert_eq!(disconnect_of(&out(&mut c)).status, Status::TIMEOUT);

    let mut c = open(settings(), t0);
    assert_eq!(c.poll_timeout(), Some(t0 + 300 * S));
    // A frame at t0+100 s moves the idle deadline.
    c.handle_timeout(t0 + 100 * S);
    c.recv(&wire(&[Frame::notify(1, 1, notify(1))]));
    events(&mut c);
    c.send_ack(1, 1, Ack::new());
    out(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + 400 * S));
    c.handle_timeout(t0 + 399 * S);
    assert!(c.transmit().is_empty());
    c.handle_timeout(t0 + 400 * S);
    let evs = events(&mut c);
    assert!(
        matches!(&evs[..], [Event::Closed(CloseReason::Disconnected(d))] if d.status == Status::TIMEOUT)
    );
}

#[test]
fn handler_timeout_sends_an_empty_ack_and_drops_the_late_one() {
    let t0 = Instant::now();
    let mut s = settings();
    s.handler_timeout = Duration::from_millis(200);
    let mut c = open(s, t0);
    let t1 = t0 + S;
    c.handle_timeout(t1);
    c.recv(&wire(&[
        Frame::notify(1, 1, notify(1)),
        Frame::notify(2, 1, notify(2)),
    ]));
    assert_eq!(notifies(&mut c).len(), 2);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_millis(200)));
    c.send_ack(2, 1, Ack::new().set_var(VarScope::TRANSACTION, "ok", true));
    out(&mut c);
    c.handle_timeout(t1 + Duration::from_millis(199));
    assert!(c.transmit().is_empty());
    c.handle_timeout(t1 + Duration::from_millis(200));
    let evs = events(&mut c);
    assert!(matches!(
        &evs[..],
        [Event::HandlerTimedOut {
            stream_id: 1,
            frame_id: 1
        }]
    ));
    assert_eq!(out(&mut c), [Frame::ack(1, 1, Ack::new())]);
    assert_eq!(c.stats().handler_timeouts(), 1);
    // The late answer is refused: HAProxy gets one ACK per frame.
    assert_eq!(
        c.send_ack(
            1,
            1,
            Ack::new().set_var(VarScope::TRANSACTION, "late", true)
        ),
        AckStatus::Refused
    );
    assert!(c.transmit().is_empty());
    assert_eq!(c.stats().acks_refused(), 1);
    // Back to the idle deadline, from the timeout's ACK.
    assert_eq!(
        c.poll_timeout(),
        Some(t1 + Duration::from_millis(200) + 300 * S)
    );
}

#[test]
fn write_timeout_closes_a_peer_that_stopped_reading() {
    let t0 = Instant::now();
    let mut c = open(settings(), t0);
    let mut t = t0;
    for i in 1..=3 {
        c.recv(&wire(&[Frame::notify(i, 1, notify(1))]));
        events(&mut c);
        c.send_ack(i, 1, Ack::new());
    }
    let pending = c.transmit().len();
    assert!(pending > 0);
    assert_eq!(c.poll_timeout(), Some(t0 + 5 * S));
    // Some progress at t0+3 s pushes the deadline to t0+8 s.
    t += 3 * S;
    c.handle_timeout(t);
    c.advance(4);
    assert_eq!(c.poll_timeout(), Some(t0 + 8 * S));
    c.handle_timeout(t0 + 8 * S - Duration::from_millis(1));
    assert!(!c.is_closed());
    c.handle_timeout(t0 + 8 * S);
    let evs = events(&mut c);
    assert!(matches!(
        &evs[..],
        [Event::Closed(CloseReason::WriteTimeout)]
    ));
    assert!(c.is_closed());
    assert!(c.transmit().is_empty());
    assert_eq!(c.stats().write_timeouts(), 1);
    assert_eq!(c.stats().frames_sent(FrameType::ACK), 0);
}

#[test]
fn write_high_water_stops_reading() {
    let t0 = Instant::now();
    let mut c = open(settings(), t0);
    let big = "x".repeat(10_000);
    let mut i = 0;
    while c.wants_read() {
        i += 1;
        c.recv(&wire(&[Frame::notify(i, 1, notify(1))]));
        events(&mut c);
        c.send_ack(
            i,
            1,
            Ack::new().set_var(VarScope::TRANSACTION, "v", big.clone()),
        );
        assert!(i < 100);
    }
    assert!(c.transmit().len() >= haproxy_spop::conn::WRITE_HIGH_WATER);
    out(&mut c);
    assert!(c.wants_read());
}

#[test]
fn oversized_ack_becomes_empty() {
    let t0 = Instant::now();
    let mut c = open(settings(), t0);
    c.recv(&wire(&[Frame::notify(1, 1, notify(1))]));
    events(&mut c);
    let big = "x".repeat(20_000);
    assert_eq!(
        c.send_ack(1, 1, Ack::new().set_var(VarScope::TRANSACTION, "v", big)),
        AckStatus::Emptied
    );
    assert_eq!(out(&mut c), [Frame::ack(1, 1, Ack::new())]);
    assert_eq!(c.stats().acks_too_large(), 1);
}

#[test]
fn haproxy_disconnect_is_answered_with_0() {
    let t0 = Instant::now();
    let mut c = open(settings(), t0);
    c.recv(&wire(&[Frame::haproxy_disconnect(Status::NORMAL, "bye")]));
    let evs = events(&mut c);
    assert!(
        matches!(&evs[..], [Event::Closed(CloseReason::PeerDisconnected(d))] if d.status == Status::NORMAL)
    );
    assert_eq!(disconnect_of(&out(&mut c)).status, Status::NORMAL);
    assert!(c.is_closed());
    assert_eq!(c.stats().disconnects_received(Status::NORMAL), 1);
}

#[test]
fn shutdown_drains_in_flight_frames_then_says_0() {
    let t0 = Instant::now();
    let mut c = open(settings(), t0);
    c.recv(&wire(&[
        Frame::notify(1, 1, notify(1)),
        Frame::notify(2, 1, notify(2)),
    ]));
    assert_eq!(notifies(&mut c).len(), 2);
    let t1 = t0 + Duration::from_millis(500);
    c.shutdown(t1);
    assert!(!c.wants_read());
    // The handlers' deadline (t0 + 1 s) comes before the drain's (t1 + 5 s).
    assert_eq!(c.poll_timeout(), Some(t0 + S));
    c.recv(&wire(&[Frame::notify(3, 1, notify(3))]));
    // Frames that arrive now are not handed out.
    c.send_ack(1, 1, Ack::new());
    assert!(events(&mut c).is_empty());
    c.send_ack(2, 1, Ack::new());
    let evs = events(&mut c);
    assert!(
        matches!(&evs[..], [Event::Closed(CloseReason::Disconnected(d))] if d.status == Status::NORMAL)
    );
    let frames = out(&mut c);
    assert_eq!(
        frames[..2],
        [Frame::ack(1, 1, Ack::new()), Frame::ack(2, 1, Ack::new())]
    );
    assert_eq!(disconnect_of(&frames).status, Status::NORMAL);
    assert!(c.is_closed());

    // A frame that is not answered by the drain deadline gets no ACK.
    let mut s = settings();
    s.handler_timeout = 60 * S;
    s.shutdown_timeout = 2 * S;
    let mut c = open(s, t0);
    c.recv(&wire(&[Frame::notify(1, 1, notify(1))]));
    events(&mut c);
    c.shutdown(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + 2 * S));
    c.handle_timeout(t0 + 2 * S);
    let frames = out(&mut c);
    assert_eq!(frames.len(), 1);
    assert_eq!(disconnect_of(&frames).status, Status::NORMAL);
    assert_eq!(c.stats().in_flight(), 0);
    assert_eq!(c.send_ack(1, 1, Ack::new()), AckStatus::Refused);
}

#[test]
fn huge_durations_mean_never_not_a_panic() {
    let t0 = Instant::now();
    let mut s = settings();
    s.hello_timeout = Duration::MAX;
    s.idle_timeout = Duration::MAX;
    s.handler_timeout = Duration::MAX;
    s.write_timeout = Duration::MAX;
    s.shutdown_timeout = Duration::MAX;
    let mut c = Connection::new(s.clone(), t0);
    assert!(c.poll_timeout().unwrap() > t0 + 3650 * 86_400 * S);
    let mut c2 = open(s, t0);
    c2.recv(&wire(&[Frame::notify(1, 1, notify(1))]));
    events(&mut c2);
    c2.shutdown(t0 + S);
    c2.handle_timeout(t0 + 1000 * S);
    assert!(!c2.is_closed());
    assert_eq!(c2.send_ack(1, 1, Ack::new()), AckStatus::Queued);
    c.handle_timeout(t0 + 1000 * S);
    assert!(events(&mut c).is_empty());
}

/// One step of a random peer and application.
#[derive(Debug, Clone)]
enum Op {
    Notify(u64, u64),
    Fragment {
        start: bool,
        fin: bool,
        abort: bool,
        len: usize,
    },
    Garbage(Vec<u8>),
    Disconnect,
    Ack(usize, usize),
    Time(u64),
    Write(usize),
    Shutdown,
    Eof,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        8 => (0u64..4, 0u64..4).prop_map(|(s, f)| Op::Notify(s, f)),
        3 => (any::<bool>(), any::<bool>(), any::<bool>(), 0usize..40_000)
            .prop_map(|(start, fin, abort, len)| Op::Fragment { start, fin, abort, len }),
        1 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::Garbage),
        1 => Just(Op::Disconnect),
        6 => (0usize..8, 0usize..20_000).prop_map(|(i, len)| Op::Ack(i, len)),
        4 => (0u64..3000).prop_map(Op::Time),
        4 => (0usize..70_000).prop_map(Op::Write),
        1 => Just(Op::Shutdown),
        1 => Just(Op::Eof),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// Whatever the peer sends and the application does: no panic, the read
    /// buffer stays within a few steps of what it holds, the bytes out are
    /// whole frames, and no frame gets two ACKs.
    #[test]
    fn random_peers_and_applications(ops in proptest::collection::vec(op(), 0..60)) {
        let t0 = Instant::now();
        let mut t = t0;
        let mut s = settings();
        s.max_frame_size = 65_532;
        s.max_in_flight = 4;
        let budget = MemoryBudget::new(1 << 20);
        let mut c = Connection::new(s, t0).with_budget(budget.clone());
        c.recv(&wire(&[hello_frame(65_532, Capabilities::PIPELINING | Capabilities::FRAGMENTATION)]));
        let mut written = Vec::new();
        let mut handed: Vec<(u64, u64)> = Vec::new();
        let mut delivered = std::collections::HashMap::<(u64, u64), usize>::new();
        for op in ops {
            let bytes = match op {
                Op::Notify(s, f) => wire(&[Frame::notify(s, f, notify(1))]),
                Op::Fragment { start, fin, abort, len } => {
                    let flags = if fin { Flags::FIN.0 } else { 0 } | if abort { Flags::ABORT.0 } else { 0 };
                    let kind = if start { FrameType::NOTIFY } else { FrameType::UNSET };
                    wire(&[fragment(kind, flags, &vec![0u8; len])])
                }
                Op::Garbage(g) => g,
                Op::Disconnect => wire(&[Frame::haproxy_disconnect(Status::NORMAL, "bye")]),
                Op::Ack(i, len) => {
                    if !handed.is_empty() {
                        let (s, f) = handed.remove(i % handed.len());
                        let v = "v".repeat(len);
                        c.send_ack(s, f, Ack::new().set_var(VarScope::TRANSACTION, "v", v));
                    }
                    Vec::new()
                }
                Op::Time(ms) => {
                    t += Duration::from_millis(ms);
                    c.handle_timeout(t);
                    Vec::new()
                }
                Op::Write(n) => {
                    let n = n.min(c.transmit().len());
                    written.extend_from_slice(&c.transmit()[..n]);
                    c.advance(n);
                    Vec::new()
                }
                Op::Shutdown => {
                    c.shutdown(t);
                    Vec::new()
                }
                Op::Eof => {
                    c.handle_eof();
                    Vec::new()
                }
            };
            c.recv(&bytes);
            let buf = c.read_buffer();
            proptest::prop_assert!(buf.capacity() <= buf.len() + 4 * READ_STEP);
            while let Some(ev) = c.poll_event() {
                if let Event::Notify(req) = ev {
                    handed.push((req.stream_id, req.frame_id));
                    *delivered.entry((req.stream_id, req.frame_id)).or_default() += 1;
                }
            }
            proptest::prop_assert!(c.in_flight() <= 4);
            if c.is_closed() {
                proptest::prop_assert!(c.transmit().is_empty());
            }
        }
        let rest = c.transmit().to_vec();
        c.advance(rest.len());
        written.extend_from_slice(&rest);
        let mut acks = std::collections::HashMap::<(u64, u64), usize>::new();
        // A write timeout or EOF may cut the last frame: whole ones only.
        let mut whole = Bytes::from(written);
        let mut frames = Vec::new();
        while let Some(head) = whole.first_chunk::<4>() {
            let len = u32::from_be_bytes(*head) as usize;
            if whole.len() < 4 + len {
                break;
            }
            frames.push(Frame::decode(whole.slice(4..4 + len)).unwrap());
            whole = whole.slice(4 + len..);
        }
        for f in frames {
            if let FrameBody::Ack(_) = f.body {
                *acks.entry((f.metadata.stream_id, f.metadata.frame_id)).or_default() += 1;
            }
        }
        for (ids, n) in acks {
            proptest::prop_assert!(n <= delivered.get(&ids).copied().unwrap_or(0), "{ids:?}");
        }
        drop(c);
        proptest::prop_assert_eq!(budget.used(), 0);
    }
}
