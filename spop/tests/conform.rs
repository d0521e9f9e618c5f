//! `spop-conform` against this crate's runtime (everything passes or is not
//! applicable), against a deliberately broken agent (the cases it breaks
//! fail, with reasons), and `--haproxy` against HAProxy 3.4.
//!
//! Runs the built binary (`CARGO_BIN_EXE_spop-conform`), so the target needs
//! the feature: `cargo test -p haproxy-spop --features conform --test conform`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "support/haproxy.rs"]
mod haproxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use haproxy_spop::runtime::{Agent, Listener, NotifyRequest};
use haproxy_spop::{Ack, AgentHello, Capabilities, Frame, FrameBody, Status, VarScope};
use serde_json::Value;

/// An agent on this crate's runtime, as `examples/set_var` builds it.
fn runtime_agent() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let agent = Agent::builder().build(|req: NotifyRequest| async move {
                let score = match req.message("check-client-ip").map(|m| m.ip("ip")) {
                    Some(Ok(ip)) if ip.is_loopback() => 100,
                    Some(Ok(_)) => 50,
                    _ => 0,
                };
                Ack::new().set_var(VarScope::TRANSACTION, "ip_score", score)
            });
            let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            agent.serve_listener(listener).await
        })
    });
    rx.recv().unwrap()
}

/// A broken agent: answers "2.0" whatever is offered, echoes any
/// max-frame-size (255 too), writes its AGENT-HELLO in two writes 30 ms
/// apart, disconnects with status 99 on every error, and ACKs at most 4
/// NOTIFYs of what one read brings (never more than 4 in flight).
fn broken_agent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || broken_conn(conn));
        }
    });
    addr
}

fn broken_conn(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut in_this_read = 0;
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..4 + len).collect();
            let mut out = BytesMut::new();
            match Frame::decode(Bytes::from(frame).slice(4..)) {
                Ok(Frame {
                    body: FrameBody::HaproxyHello(h),
                    ..
                }) => {
                    let answer = AgentHello::new(h.max_frame_size, Capabilities::PIPELINING);
                    Frame::agent_hello(answer)
                        .encode_framed(&mut out, u32::MAX)
                        .unwrap();
                    let _ = s.write_all(&out[..3]);
                    std::thread::sleep(Duration::from_millis(30));
                    let _ = s.write_all(&out[3..]);
                    continue;
                }
                Ok(Frame {
                    metadata,
                    body: FrameBody::Notify(_),
                }) => {
                    in_this_read += 1;
                    if in_this_read > 4 {
                        continue;
                    }
                    Frame::ack(metadata.stream_id, metadata.frame_id, Ack::new())
                        .encode_framed(&mut out, u32::MAX)
                        .unwrap();
                }
                _ => {
                    Frame::agent_disconnect(Status::UNKNOWN, "error")
                        .encode_framed(&mut out, u32::MAX)
                        .unwrap();
                    let _ = s.write_all(&out);
                    return;
                }
            }
            let _ = s.write_all(&out);
        }
    }
}

fn conform(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_spop-conform"))
        .args(args)
        .args(["--json", "--timing-ms", "300", "--idle-ms", "500"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "spop-conform printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn case<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id} in {report:#}"))
}

fn failures(report: &Value) -> Vec<String> {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "fail")
        .map(|c| format!("{}: {}", c["id"], c["detail"]))
        .collect()
}

#[test]
fn runtime_agent_passes_every_case() {
    let addr = runtime_agent().to_string();
    let report = conform(&[
        "--agent",
        &addr,
        "--message",
        "check-client-ip",
        "--arg",
        "ip=ipv4:127.0.0.1",
    ]);
    assert_eq!(failures(&report), Vec::<String>::new(), "{report:#}");
    let score = &report["score"];
    assert!(score["passed"].as_u64().unwrap() >= 50, "{report:#}");
    // Not applicable only where the runtime announces fragmentation.
    for c in report["cases"].as_array().unwrap() {
        if c["result"] == "n/a" {
            assert_eq!(c["id"], "fragmentation.not-announced", "{c:#}");
        }
    }
    assert_eq!(report["frames_split_across_reads"], 0);
    let ack = case(&report, "notify.user-message")["detail"]
        .as_str()
        .unwrap();
    assert!(ack.contains("ip_score"), "{ack}");
}

#[test]
fn broken_agent_fails_with_reasons() {
    let addr = broken_agent().to_string();
    let report = conform(&[
        "--agent",
        &addr,
        "--case",
        "hello.",
        "--case",
        "frame.agent-hello.one-read",
        "--case",
        "pipelining.20-in-flight",
        "--case",
        "notify.unknown-data-type",
        "--case",
        "fragmentation.not-announced",
    ]);
    let expect = [
        ("hello.version.none-common", "expected AGENT-DISCONNECT 8"),
        ("hello.version.missing", "AGENT-DISCONNECT status 99"),
        ("hello.max-frame-size.255", "expected AGENT-DISCONNECT 9"),
        ("hello.capabilities.missing", "AGENT-DISCONNECT status 99"),
        ("frame.agent-hello.one-read", "split across reads"),
        ("pipelining.20-in-flight", "4 of 20 pipelined NOTIFYs ACKed"),
        ("notify.unknown-data-type", "AGENT-DISCONNECT status 99"),
        (
            "fragmentation.not-announced",
            "expected AGENT-DISCONNECT 10",
        ),
    ];
    for (id, why) in expect {
        let c = case(&report, id);
        assert_eq!(c["result"], "fail", "{c:#}");
        let detail = c["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{id}: {detail:?} lacks {why:?}");
    }
    // What it does right still passes.
    assert_eq!(case(&report, "hello.version.2.0")["result"], "pass");
    assert_eq!(
        case(&report, "hello.max-frame-size.16380")["result"],
        "pass"
    );
    assert!(report["score"]["failed"].as_u64().unwrap() >= 8);
}

#[test]
fn behind_haproxy_3_4() {
    let addr = runtime_agent().to_string();
    let haproxy = haproxy::binary(haproxy::Version::V34);
    let report = conform(&[
        "--agent",
        &addr,
        "--message",
        "check-client-ip",
        "--arg",
        "ip=ipv4:127.0.0.1",
        "--case",
        "haproxy.requests",
        "--haproxy",
        haproxy.to_str().unwrap(),
    ]);
    let c = case(&report, "haproxy.requests");
    assert_eq!(c["result"], "pass", "{c:#}");
    assert!(
        c["detail"].as_str().unwrap().contains("ip_score=100"),
        "{c:#}"
    );
}

#[test]
fn haproxy_mode_reports_a_missing_haproxy() {
    let addr = broken_agent();
    let report = conform(&[
        "--agent",
        &addr.to_string(),
        "--case",
        "haproxy.requests",
        "--haproxy",
        "/nonexistent/haproxy",
    ]);
    let c = case(&report, "haproxy.requests");
    assert_eq!(c["result"], "fail", "{c:#}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/haproxy"),
        "{c:#}"
    );
}
