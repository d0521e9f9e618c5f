//! The agent runtime against the in-process client: handshake cases, health
//! checks, pipelining, fragmentation, errors, timeouts, shutdown and limits.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use haproxy_spop::runtime::{
    Agent, AgentBuilder, Client, ClientError, Handler, Listener, NotifyRequest,
};
use haproxy_spop::{
    varint, Ack, Action, Capabilities, Disconnect, Flags, Frame, FrameBody, HaproxyHello, Metadata,
    Notify, Status, TypedData, VarScope,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

fn vectors() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Starts an agent on 127.0.0.1:0; returns it, its address and the serve task.
async fn start<H: Handler>(
    builder: AgentBuilder,
    handler: H,
) -> (
    Agent<H>,
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let agent = builder.build(handler);
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn({
        let agent = agent.clone();
        async move { agent.serve_listener(listener).await }
    });
    (agent, addr, task)
}

/// Echoes the `n` argument of message `m` as txn.n, sleeping `sleep_ms` first.
async fn echo(req: NotifyRequest) -> Ack {
    let msg = req.message("m");
    let n = msg.as_ref().and_then(|m| m.int("n").ok()).unwrap_or(-1);
    let sleep = msg
        .as_ref()
        .and_then(|m| m.int("sleep_ms").ok())
        .unwrap_or(0);
    if sleep > 0 {
        tokio::time::sleep(Duration::from_millis(sleep as u64)).await;
    }
    Ack::new().set_var(VarScope::TRANSACTION, "n", n)
}

fn notify(n: i64, sleep_ms: i64) -> Notify {
    Notify::builder()
        .message("m")
        .arg("n", n)
        .arg("sleep_ms", sleep_ms)
        .build()
        .unwrap()
}

fn hello() -> HaproxyHello {
    HaproxyHello::new(16380, Capabilities::PIPELINING)
}

fn ack_value(frame: &Frame) -> Option<i64> {
    let FrameBody::Ack(ack) = &frame.body else {
        return None;
    };
    match ack.actions.first()? {
        Action::SetVar { value, .. } => value.as_i64(),
        Action::UnsetVar { .. } => None,
    }
}

async fn recv(client: &mut Client<TcpStream>) -> Frame {
    timeout(T, client.recv())
        .await
        .expect("timed out")
        .expect("recv failed")
        .expect("closed")
}

/// A raw HELLO from KV items, to send what a correct encoder never would.
fn raw_hello(items: &[(&str, TypedData)]) -> Bytes {
    let mut payload = BytesMut::new();
    payload.put_u8(1);
    payload.put_u32(1);
    payload.put_slice(&[0, 0]);
    for (k, v) in items {
        varint::encode(k.len() as u64, &mut payload);
        payload.put_slice(k.as_bytes());
        v.encode(&mut payload);
    }
    let mut out = BytesMut::new();
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.freeze()
}

/// The AGENT-DISCONNECT `frame` must be.
fn expect_disconnect(frame: Frame) -> Disconnect {
    match frame.body {
        FrameBody::AgentDisconnect(d) => d,
        other => panic!("expected AGENT-DISCONNECT, got {other:?}"),
    }
}

/// Reads until the agent closes `stream`; what it sent must be one
/// AGENT-DISCONNECT.
async fn read_disconnect(stream: &mut TcpStream) -> Disconnect {
    let mut buf = Vec::new();
    timeout(T, stream.read_to_end(&mut buf))
        .await
        .expect("agent did not close")
        .unwrap();
    expect_disconnect(Frame::decode(Bytes::from(buf).slice(4..)).unwrap())
}

/// Sends raw bytes and returns the AGENT-DISCONNECT status that comes back,
/// checking that the agent then closes.
async fn disconnect_status(addr: SocketAddr, raw: &[u8]) -> Status {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    read_disconnect(&mut stream).await.status
}

#[tokio::test]
async fn handshake_negotiates_size_and_capabilities() {
    let (agent, addr, _t) = start(Agent::builder().max_frame_size(8192), echo).await;
    let mut h = hello();
    h.capabilities = Capabilities::PIPELINING | Capabilities::ASYNC | Capabilities::FRAGMENTATION;
    let client = Client::connect(addr, h).await.unwrap();
    let answer = client.agent_hello();
    assert_eq!(&answer.version[..], b"2.0");
    assert_eq!(answer.max_frame_size, 8192);
    // async is never announced: ACKs always go back on the same connection.
    assert_eq!(
        answer.capabilities,
        Capabilities::PIPELINING | Capabilities::FRAGMENTATION
    );
    drop(client);

    // By default the agent answers at most 16380 (HAProxy's default), even
    // when HAProxy proposes more; a larger setting follows tune.bufsize.
    let (_a, addr2, _t2) = start(Agent::builder(), echo).await;
    let client = Client::connect(addr2, HaproxyHello::new(131068, Capabilities::PIPELINING))
        .await
        .unwrap();
    assert_eq!(client.agent_hello().max_frame_size, 16380);
    let (_a3, addr3, _t3) = start(Agent::builder().max_frame_size(1048572), echo).await;
    let client = Client::connect(addr3, HaproxyHello::new(131068, Capabilities::PIPELINING))
        .await
        .unwrap();
    assert_eq!(client.agent_hello().max_frame_size, 131068);
    // A setting above the ceiling is lowered to it.
    let (a4, addr4, _t4) = start(Agent::builder().max_frame_size(u32::MAX), echo).await;
    assert_eq!(
        a4.config().max_frame_size,
        haproxy_spop::MAX_FRAME_SIZE_CEILING
    );
    let client = Client::connect(
        addr4,
        HaproxyHello::new(0xffff_fff0, Capabilities::PIPELINING),
    )
    .await
    .unwrap();
    assert_eq!(
        client.agent_hello().max_frame_size,
        haproxy_spop::MAX_FRAME_SIZE_CEILING
    );
    // fragmentation is what the agent can receive: announced even though
    // HAProxy's HELLO does not list it (HAProxy 2.6 never does).
    assert_eq!(
        client.agent_hello().capabilities,
        Capabilities::PIPELINING | Capabilities::FRAGMENTATION
    );
    let client = Client::connect(addr2, HaproxyHello::new(16380, Capabilities::NONE))
        .await
        .unwrap();
    assert_eq!(
        client.agent_hello().capabilities,
        Capabilities::FRAGMENTATION
    );
    assert_eq!(
        agent
            .stats()
            .frames_sent(haproxy_spop::FrameType::AGENT_HELLO),
        1
    );
}

#[tokio::test]
async fn bad_hellos_get_their_status_codes() {
    let (agent, addr, _t) = start(Agent::builder(), echo).await;
    let v = |s: &'static str| TypedData::from(s);
    let size = TypedData::Uint32(16380);
    let cases: Vec<(Bytes, Status)> = vec![
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
                ("max-frame-size", TypedData::Uint32(100)),
                ("capabilities", v("")),
            ]),
            Status::BAD_FRAME_SIZE,
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(disconnect_status(addr, &raw).await, want);
    }
    // A NOTIFY before any HELLO is an invalid frame.
    let mut wire = BytesMut::new();
    Frame::notify(1, 1, notify(1, 0))
        .encode_framed(&mut wire, 16380)
        .unwrap();
    assert_eq!(disconnect_status(addr, &wire).await, Status::INVALID_FRAME);
    assert_eq!(agent.stats().disconnects_sent(Status::BAD_VERSION), 1);
    assert_eq!(agent.stats().disconnects_sent(Status::NO_VERSION), 1);
}

#[tokio::test]
async fn health_check_is_answered_and_close_is_normal() {
    let (agent, addr, _t) = start(Agent::builder(), echo).await;
    let raw = std::fs::read(vectors().join("haproxy-2.6.12/check-01-haproxy-hello.bin")).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&raw).await.unwrap();
    let mut buf = Vec::new();
    timeout(T, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let frame = Frame::decode(Bytes::from(buf).slice(4..)).unwrap();
    let FrameBody::AgentHello(answer) = frame.body else {
        panic!("{frame:?}")
    };
    assert_eq!(answer.capabilities, Capabilities::FRAGMENTATION);
    // Reset right after a check, as HAProxy does: not an error.
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    #[allow(deprecated)] // a reset is exactly what this test wants
    s.set_linger(Some(Duration::ZERO)).unwrap();
    let mut s = s.connect(addr).await.unwrap();
    s.write_all(&raw).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(agent.stats().healthchecks(), 2);
    assert!(agent.stats().snapshot().disconnects_sent.is_empty());
}

#[tokio::test]
async fn pipelined_acks_come_back_out_of_order() {
    let (agent, addr, _t) = start(Agent::builder(), echo).await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    client
        .feed(Frame::notify(1, 1, notify(1, 300)))
        .await
        .unwrap();
    client
        .feed(Frame::notify(2, 1, notify(2, 0)))
        .await
        .unwrap();
    client
        .feed(Frame::notify(3, 1, notify(3, 100)))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let order: Vec<(u64, i64)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let f = recv(&mut client).await;
            v.push((f.metadata.stream_id, ack_value(&f).unwrap()));
        }
        v
    };
    assert_eq!(order, [(2, 2), (3, 3), (1, 1)]);
    assert_eq!(agent.stats().frames_sent(haproxy_spop::FrameType::ACK), 3);
    assert_eq!(agent.stats().in_flight(), 0);
}

#[tokio::test]
async fn fragmented_notify_is_reassembled() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        move |req: NotifyRequest| {
            let body = req.message("mirror").and_then(|m| m.bytes("arg_body").ok());
            seen.lock().unwrap().push(body.map(|b| b.len()));
            async { Ack::new() }
        }
    };
    let (_agent, addr, _t) = start(Agent::builder(), handler).await;
    let h = HaproxyHello::new(
        16380,
        Capabilities::PIPELINING | Capabilities::FRAGMENTATION,
    );
    let mut client = Client::connect(addr, h).await.unwrap();
    assert!(client
        .agent_hello()
        .capabilities
        .contains(Capabilities::FRAGMENTATION));
    for i in 1..=7 {
        let name = if i == 1 {
            "frag-01-notify.bin".to_owned()
        } else {
            format!("frag-0{i}-unset.bin")
        };
        let raw = Bytes::from(std::fs::read(vectors().join("haproxy-2.6.12").join(name)).unwrap());
        client
            .feed(Frame::decode(raw.slice(4..)).unwrap())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let ack = recv(&mut client).await;
    assert_eq!((ack.metadata.stream_id, ack.metadata.frame_id), (2, 1));
    assert_eq!(*seen.lock().unwrap(), [Some(100_000)]);
}

fn fragment(body: FrameBody, flags: u32) -> Frame {
    Frame {
        metadata: Metadata {
            flags: Flags(flags),
            stream_id: 9,
            frame_id: 4,
        },
        body,
    }
}

#[tokio::test]
async fn abort_cancels_a_fragmented_frame() {
    let (agent, addr, _t) = start(Agent::builder(), echo).await;
    let h = HaproxyHello::new(
        16380,
        Capabilities::PIPELINING | Capabilities::FRAGMENTATION,
    );
    let mut client = Client::connect(addr, h).await.unwrap();
    let payload = notify(5, 0).payload().clone();
    client
        .send(fragment(FrameBody::NotifyFragment(payload.slice(..5)), 0))
        .await
        .unwrap();
    client
        .send(fragment(
            FrameBody::Unset(Bytes::new()),
            Flags::ABORT.0 | Flags::FIN.0,
        ))
        .await
        .unwrap();
    client.notify(10, 1, notify(10, 0)).await.unwrap();
    let f = recv(&mut client).await;
    assert_eq!(
        (f.metadata.stream_id, ack_value(&f)),
        (10, Some(10)),
        "only the complete frame is ACKed"
    );
    assert_eq!(agent.stats().aborted_frames(), 1);
}

#[tokio::test]
async fn fragments_without_the_capability_are_refused() {
    let (_agent, addr, _t) = start(
        Agent::builder().capabilities(Capabilities::PIPELINING),
        echo,
    )
    .await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    client
        .send(fragment(
            FrameBody::NotifyFragment(Bytes::from_static(b"\x01m")),
            0,
        ))
        .await
        .unwrap();
    let d = expect_disconnect(recv(&mut client).await);
    assert_eq!(d.status, Status::FRAGMENTATION_NOT_SUPPORTED);
}

#[tokio::test]
async fn reassembly_over_the_cap_disconnects_with_13() {
    let (_agent, addr, _t) = start(Agent::builder().max_reassembly_bytes(1000), echo).await;
    let h = HaproxyHello::new(
        16380,
        Capabilities::PIPELINING | Capabilities::FRAGMENTATION,
    );
    let mut client = Client::connect(addr, h).await.unwrap();
    client
        .send(fragment(
            FrameBody::NotifyFragment(Bytes::from(vec![1u8; 800])),
            0,
        ))
        .await
        .unwrap();
    client
        .send(fragment(FrameBody::Unset(Bytes::from(vec![1u8; 800])), 0))
        .await
        .unwrap();
    let d = expect_disconnect(recv(&mut client).await);
    assert_eq!(d.status, Status::RESOURCE_ALLOCATION);
}

#[tokio::test]
async fn haproxy_disconnect_is_answered() {
    let (agent, addr, _t) = start(Agent::builder(), echo).await;
    let client = Client::connect(addr, hello()).await.unwrap();
    let d = timeout(T, client.disconnect()).await.unwrap().unwrap();
    assert_eq!(d.status, Status::NORMAL);
    assert_eq!(agent.stats().disconnects_received(Status::NORMAL), 1);
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let (agent, addr, _t) = start(Agent::builder(), echo).await;
    let mut good = Client::connect(addr, hello()).await.unwrap();
    let mut bad = Client::connect(addr, hello())
        .await
        .unwrap()
        .into_framed()
        .into_inner();
    // Unknown frame type 42.
    bad.write_all(&[0, 0, 0, 7, 42, 0, 0, 0, 1, 0, 0])
        .await
        .unwrap();
    let d = read_disconnect(&mut bad).await;
    assert_eq!(d.status, Status::INVALID_FRAME);
    assert!(String::from_utf8_lossy(&d.message).contains("unknown frame type 42"));
    // The other connection goes on.
    good.notify(7, 1, notify(7, 0)).await.unwrap();
    assert_eq!(ack_value(&recv(&mut good).await), Some(7));

    // A length above the negotiated size: status 3.
    let mut big = Client::connect(addr, HaproxyHello::new(1024, Capabilities::PIPELINING))
        .await
        .unwrap()
        .into_framed()
        .into_inner();
    big.write_all(&[0, 0, 0x10, 0, 3, 0, 0, 0, 1])
        .await
        .unwrap();
    let d = read_disconnect(&mut big).await;
    assert_eq!(d.status, Status::TOO_BIG);
    good.notify(8, 1, notify(8, 0)).await.unwrap();
    assert_eq!(ack_value(&recv(&mut good).await), Some(8));
    assert_eq!(agent.stats().disconnects_sent(Status::INVALID_FRAME), 1);
    assert_eq!(agent.stats().disconnects_sent(Status::TOO_BIG), 1);
}

#[tokio::test]
async fn failing_panicking_and_slow_handlers_get_empty_acks() {
    let handler = |req: NotifyRequest| async move {
        let mode = req.message("m").and_then(|m| m.int("n").ok()).unwrap_or(0);
        match mode {
            1 => Err("boom".into()),
            2 => panic!("handler panic (expected by the test)"),
            3 => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(Ack::new().set_var(VarScope::TRANSACTION, "late", true))
            }
            _ => Ok::<_, haproxy_spop::runtime::BoxError>(Ack::new().set_var(
                VarScope::TRANSACTION,
                "ok",
                true,
            )),
        }
    };
    let (agent, addr, _t) = start(
        Agent::builder().handler_timeout(Duration::from_millis(200)),
        handler,
    )
    .await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    for (id, mode) in [(1, 1), (2, 2), (3, 3), (4, 0)] {
        client
            .feed(Frame::notify(id, 1, notify(mode, 0)))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut acks = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let f = recv(&mut client).await;
        let FrameBody::Ack(ack) = f.body else {
            panic!("{f:?}")
        };
        acks.insert(f.metadata.stream_id, ack.actions.len());
    }
    assert_eq!(
        acks.into_iter().collect::<Vec<_>>(),
        [(1, 0), (2, 0), (3, 0), (4, 1)]
    );
    let s = agent.stats();
    assert_eq!(
        (s.handler_errors(), s.handler_panics(), s.handler_timeouts()),
        (1, 1, 1)
    );
    // The timed-out handler's ACK never arrives late.
    assert!(timeout(Duration::from_millis(300), client.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (_agent, addr, _t) = start(
        Agent::builder().idle_timeout(Duration::from_millis(200)),
        echo,
    )
    .await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    let d = expect_disconnect(recv(&mut client).await);
    assert_eq!(d.status, Status::TIMEOUT);
}

#[tokio::test]
async fn hello_timeout_disconnects() {
    let (_agent, addr, _t) = start(
        Agent::builder().hello_timeout(Duration::from_millis(100)),
        echo,
    )
    .await;
    assert_eq!(disconnect_status(addr, &[]).await, Status::TIMEOUT);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_frames() {
    let (agent, addr, task) = start(Agent::builder(), echo).await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    client.notify(1, 1, notify(1, 300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    agent.shutdown();
    let f = recv(&mut client).await;
    assert_eq!(
        ack_value(&f),
        Some(1),
        "the in-flight frame is answered first"
    );
    let d = expect_disconnect(recv(&mut client).await);
    assert_eq!(d.status, Status::NORMAL);
    timeout(T, task)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    // No new connection is accepted.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_deadline_bounds_slow_handlers() {
    let builder = Agent::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .handler_timeout(Duration::from_secs(30));
    let (agent, addr, task) = start(builder, echo).await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    client.notify(1, 1, notify(1, 20_000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = std::time::Instant::now();
    agent.shutdown();
    let d = expect_disconnect(recv(&mut client).await);
    assert_eq!(d.status, Status::NORMAL);
    timeout(T, task).await.unwrap().unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn connection_limit_holds_extra_connections_back() {
    let (agent, addr, _t) = start(Agent::builder().max_connections(1), echo).await;
    let mut first = Client::connect(addr, hello()).await.unwrap();
    // The second connection is queued in the backlog: no answer to its HELLO.
    let second = tokio::spawn(async move { Client::connect(addr, hello()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());
    assert_eq!(agent.stats().connections_active(), 1);
    first.notify(1, 1, notify(1, 0)).await.unwrap();
    assert_eq!(ack_value(&recv(&mut first).await), Some(1));
    drop(first);
    let mut second = timeout(T, second).await.unwrap().unwrap().unwrap();
    second.notify(2, 1, notify(2, 0)).await.unwrap();
    assert_eq!(ack_value(&recv(&mut second).await), Some(2));
}

#[tokio::test]
async fn in_flight_limit_applies_back_pressure() {
    let (agent, addr, _t) = start(Agent::builder().max_in_flight(2), echo).await;
    let mut client = Client::connect(addr, hello()).await.unwrap();
    for id in 1..=6 {
        client
            .feed(Frame::notify(id, 1, notify(id as i64, 200)))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(agent.stats().in_flight(), 2);
    for _ in 0..6 {
        recv(&mut client).await;
    }
    assert_eq!(agent.stats().frames_sent(haproxy_spop::FrameType::ACK), 6);
}

#[tokio::test]
async fn unix_socket_and_user_accepted_connections() {
    let dir = std::env::temp_dir().join(format!("spop-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.sock");
    let agent = Agent::builder().build(echo);
    let addr: haproxy_spop::runtime::ListenAddr =
        format!("unix:{}", path.display()).parse().unwrap();
    let task = tokio::spawn({
        let agent = agent.clone();
        async move { agent.serve(addr).await }
    });
    let mut stream = None;
    for _ in 0..50 {
        if let Ok(s) = tokio::net::UnixStream::connect(&path).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = Client::handshake(stream.expect("unix socket"), hello())
        .await
        .unwrap();
    client.notify(1, 1, notify(42, 0)).await.unwrap();
    let f = timeout(T, client.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(ack_value(&f), Some(42));
    agent.shutdown();
    timeout(T, task).await.unwrap().unwrap().unwrap();

    // A connection the user accepted.
    let (a, b) = tokio::io::duplex(64 << 10);
    let agent2 = Agent::builder().build(echo);
    tokio::spawn(async move { agent2.serve_connection(a).await });
    let mut client = Client::handshake(b, hello()).await.unwrap();
    client.notify(3, 1, notify(3, 0)).await.unwrap();
    let f = timeout(T, client.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(ack_value(&f), Some(3));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn refused_handshake_is_a_client_error() {
    let (_agent, addr, _t) = start(Agent::builder(), echo).await;
    let mut h = hello();
    h.supported_versions = Bytes::from_static(b"1.0");
    match Client::connect(addr, h).await {
        Err(ClientError::Disconnected(d)) => assert_eq!(d.status, Status::BAD_VERSION),
        other => panic!("{other:?}"),
    }
}

/// A NOTIFY stream whose reader stops: the writer runs in its own task.
async fn stalled_peer(
    addr: SocketAddr,
    n: u64,
) -> (
    futures::stream::SplitStream<tokio_util::codec::Framed<TcpStream, haproxy_spop::SpopCodec>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::{SinkExt, StreamExt};
    // A small receive buffer, so that the kernel cannot absorb the ACKs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let client = Client::handshake(stream, hello()).await.unwrap();
    let (mut sink, stream) = client.into_framed().split();
    let writer = tokio::spawn(async move {
        for i in 1..=n {
            if sink
                .feed(Frame::notify(i, 1, notify(i as i64, 0)))
                .await
                .is_err()
            {
                return;
            }
            if i % 64 == 0 && sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
    });
    (stream, writer)
}

/// Waits until the agent has stopped receiving NOTIFY frames.
async fn wait_for_stall(stats: &haproxy_spop::runtime::Stats) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = stats.frames_received(haproxy_spop::FrameType::NOTIFY);
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    panic!("the agent never stalled");
}

fn two_hundred_bytes(req: NotifyRequest) -> std::future::Ready<Ack> {
    let n = req.message("m").and_then(|m| m.int("n").ok()).unwrap_or(-1);
    let mut s = format!("{n:08}");
    s.extend(std::iter::repeat_n('x', 192));
    std::future::ready(Ack::new().set_var(VarScope::TRANSACTION, "v", s))
}

#[tokio::test]
async fn a_peer_that_stops_reading_gets_every_ack_once_it_reads() {
    use futures::StreamExt;
    const N: u64 = 40_000;
    let (agent, addr, _t) = start(
        Agent::builder().write_timeout(Duration::from_secs(60)),
        two_hundred_bytes,
    )
    .await;
    let (mut reader, writer) = stalled_peer(addr, N).await;
    wait_for_stall(agent.stats()).await;
    // The agent is stuck on writing: not every ACK could go out yet.
    let sent = agent.stats().frames_sent(haproxy_spop::FrameType::ACK);
    assert!(sent < N, "no back-pressure happened ({sent} ACKs sent)");
    // Reading again: exactly one ACK per NOTIFY, each with its value.
    let mut seen = std::collections::HashSet::new();
    while (seen.len() as u64) < N {
        let f = timeout(T, reader.next())
            .await
            .expect("an ACK is missing")
            .expect("closed")
            .unwrap();
        let FrameBody::Ack(ack) = &f.body else {
            panic!("{f:?}")
        };
        let [Action::SetVar { value, .. }] = &ack.actions[..] else {
            panic!("{ack:?}")
        };
        let v = value.as_str().unwrap();
        assert_eq!(v.len(), 200);
        assert_eq!(v[..8].parse::<u64>().unwrap(), f.metadata.stream_id);
        assert!(seen.insert(f.metadata.stream_id), "duplicate ACK");
    }
    timeout(T, writer).await.unwrap().unwrap();
    assert!(timeout(Duration::from_millis(200), reader.next())
        .await
        .is_err());
    let s = agent.stats();
    assert_eq!(s.frames_sent(haproxy_spop::FrameType::ACK), N);
    assert_eq!((s.write_timeouts(), s.acks_refused()), (0, 0));
}

#[tokio::test]
async fn a_peer_that_never_reads_is_closed_by_the_write_timeout() {
    let (agent, addr, _t) = start(
        Agent::builder().write_timeout(Duration::from_millis(300)),
        two_hundred_bytes,
    )
    .await;
    let mut good = Client::connect(addr, hello()).await.unwrap();
    let (_reader, writer) = stalled_peer(addr, 40_000).await;
    let s = Arc::clone(agent.stats());
    timeout(Duration::from_secs(20), async {
        while s.write_timeouts() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no write timeout");
    assert_eq!(s.write_timeouts(), 1);
    // The writer stops on the closed connection; the other one goes on.
    let _ = timeout(T, writer).await.unwrap();
    good.notify(1, 1, notify(1, 0)).await.unwrap();
    assert!(matches!(recv(&mut good).await.body, FrameBody::Ack(_)));
    assert_eq!(s.connections_active(), 1);
}

#[tokio::test]
async fn memory_budget_refuses_one_connection_and_the_others_go_on() {
    let builder = Agent::builder()
        .max_frame_size(1_048_572)
        .max_memory(512 << 10);
    let (agent, addr, _t) = start(builder, echo).await;
    let mut good = Vec::new();
    for _ in 0..3 {
        good.push(Client::connect(addr, hello()).await.unwrap());
    }
    let big = Client::connect(addr, HaproxyHello::new(1_048_572, Capabilities::PIPELINING))
        .await
        .unwrap();
    assert_eq!(big.agent_hello().max_frame_size, 1_048_572);
    let mut big = big.into_framed().into_inner();
    let (mut rd, mut wr) = big.split();
    // Most of a 1 MB frame, which the budget cannot hold.
    let writer = async move {
        let mut data = 1_000_000u32.to_be_bytes().to_vec();
        data.extend_from_slice(&[3, 1, 0, 0, 0, 1, 1]);
        data.resize(900_000, 0);
        let _ = wr.write_all(&data).await;
    };
    let reader = async move {
        let mut buf = Vec::new();
        let _ = timeout(T, rd.read_to_end(&mut buf)).await;
        buf
    };
    let ((), buf) = tokio::join!(writer, reader);
    let s = agent.stats();
    assert_eq!(s.memory_refusals(), 1);
    assert_eq!(s.disconnects_sent(Status::RESOURCE_ALLOCATION), 1);
    // The frame arrives unless the reset overtook it.
    if buf.len() > 4 {
        let d = expect_disconnect(Frame::decode(Bytes::from(buf).slice(4..)).unwrap());
        assert_eq!(d.status, Status::RESOURCE_ALLOCATION);
    }
    for (i, c) in good.iter_mut().enumerate() {
        let n = i as i64 + 1;
        c.notify(n as u64, 1, notify(n, 0)).await.unwrap();
        assert_eq!(ack_value(&recv(c).await), Some(n));
    }
}
