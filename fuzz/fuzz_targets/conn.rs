//! The sans-IO connection core driven by the input: bytes from the peer in
//! chunks, answers (ACKs of arbitrary size, in any order, late or twice),
//! time, partial writes, shutdown and EOF. It never panics, its read buffer
//! stays within a few read steps of what it holds, what it writes is whole
//! frames with at most one ACK per NOTIFY it handed out, and it gives its
//! memory back to the budget when dropped.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use haproxy_spop::conn::{Connection, Event, MemoryBudget, Settings, READ_STEP};
use haproxy_spop::{Ack, Capabilities, Frame, FrameBody, HaproxyHello, VarScope};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Recv(Vec<u8>),
    Ack { pick: u8, size: u16 },
    Time(u16),
    Write(u16),
    Shutdown,
    Eof,
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (handshake, ops) = input;
    let t0 = Instant::now();
    let mut t = t0;
    let mut settings = Settings::default();
    settings.max_frame_size = 65_532;
    settings.max_in_flight = 8;
    settings.max_reassembly_bytes = 200_000;
    let budget = MemoryBudget::new(1 << 20);
    let mut c = Connection::new(settings, t0).with_budget(budget.clone());
    if handshake {
        // Past the handshake, so that the input reaches NOTIFY handling.
        let mut hello = Vec::new();
        let h = HaproxyHello {
            supported_versions: Bytes::from_static(b"2.0"),
            max_frame_size: 65_532,
            capabilities: Capabilities::PIPELINING | Capabilities::FRAGMENTATION,
            healthcheck: false,
            engine_id: None,
        };
        Frame::haproxy_hello(h)
            .encode_framed(&mut hello, 65_532)
            .unwrap();
        c.recv(&hello);
    }
    let mut written = Vec::new();
    let mut handed: Vec<(u64, u64)> = Vec::new();
    let mut delivered: HashMap<(u64, u64), usize> = HashMap::new();
    for op in ops {
        match op {
            Op::Recv(data) => {
                c.recv(&data);
            }
            Op::Ack { pick, size } => {
                if !handed.is_empty() {
                    let (s, f) = handed.remove(usize::from(pick) % handed.len());
                    let v = "v".repeat(usize::from(size));
                    c.send_ack(s, f, Ack::new().set_var(VarScope::TRANSACTION, "v", v));
                }
            }
            Op::Time(ms) => {
                t += Duration::from_millis(u64::from(ms) * 10);
                c.handle_timeout(t);
            }
            Op::Write(n) => {
                let n = usize::from(n).min(c.transmit().len());
                written.extend_from_slice(&c.transmit()[..n]);
                c.advance(n);
            }
            Op::Shutdown => c.shutdown(t),
            Op::Eof => c.handle_eof(),
        }
        let buf = c.read_buffer();
        assert!(buf.capacity() <= buf.len() + 4 * READ_STEP);
        while let Some(ev) = c.poll_event() {
            if let Event::Notify(req) = ev {
                handed.push((req.stream_id, req.frame_id));
                *delivered.entry((req.stream_id, req.frame_id)).or_default() += 1;
            }
        }
        assert!(c.in_flight() <= 8);
        if c.is_closed() {
            assert!(c.transmit().is_empty());
        }
    }
    let rest = c.transmit().to_vec();
    c.advance(rest.len());
    written.extend_from_slice(&rest);
    // Whole frames only (a write timeout or EOF may cut the last one).
    let mut out = Bytes::from(written);
    let mut acks: HashMap<(u64, u64), usize> = HashMap::new();
    while let Some(head) = out.first_chunk::<4>() {
        let len = u32::from_be_bytes(*head) as usize;
        if out.len() < 4 + len {
            break;
        }
        let frame = Frame::decode(out.slice(4..4 + len)).expect("the agent wrote a bad frame");
        if let FrameBody::Ack(_) = frame.body {
            *acks
                .entry((frame.metadata.stream_id, frame.metadata.frame_id))
                .or_default() += 1;
        }
        out = out.slice(4 + len..);
    }
    for (ids, n) in acks {
        assert!(
            n <= delivered.get(&ids).copied().unwrap_or(0),
            "two ACKs for {ids:?}"
        );
    }
    drop(c);
    assert_eq!(budget.used(), 0);
});
