//! The spop-mirror binary, driven over SPOP directly (the client side of the
//! `spop` crate plays HAProxy): bad messages are counted and still ACKed,
//! memory stays bounded under a flood towards a stuck target, and SIGTERM
//! drains the queue and exits 0.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use haproxy_spop::runtime::Client;
use haproxy_spop::{Capabilities, Frame, FrameBody, HaproxyHello, Headers, Notify, Status};
use support::{flood, free_port, scrape, Target};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> (Proc, u16, u16) {
    let (spop, metrics) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_spop-mirror"))
        .args([
            "--listen",
            &format!("127.0.0.1:{spop}"),
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", spop)).is_err() {
        assert!(Instant::now() < deadline, "spop-mirror did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), spop, metrics)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A captured mirror NOTIFY from HAProxy 3.2 (the 12 000-byte POST).
fn captured(file: &str) -> Notify {
    let path = format!(
        "{}/../spop/tests/vectors/haproxy-3.2.26/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let wire = Bytes::from(std::fs::read(path).unwrap());
    match Frame::decode(wire.slice(4..)).unwrap().body {
        FrameBody::Notify(n) => n,
        other => panic!("{other:?}"),
    }
}

async fn connect(port: u16) -> Client<tokio::net::TcpStream> {
    Client::connect(
        ("127.0.0.1", port),
        HaproxyHello::new(16380, Capabilities::PIPELINING),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_and_acked() {
    let target = Target::start(Duration::ZERO, 204).await;
    let (_p, spop, metrics) = start(&["--target", &target.url()]);
    let mut client = connect(spop).await;
    let good_hdrs = Headers::encode([("host", "x")]);
    let cases: Vec<Notify> = vec![
        // Malformed hdrs_bin.
        Notify::builder()
            .message("mirror")
            .arg("arg_method", "GET")
            .arg("arg_path", "/")
            .arg("arg_ver", "1.1")
            .arg("arg_hdrs", Bytes::from_static(b"\x04host"))
            .build()
            .unwrap(),
        // Missing path.
        Notify::builder()
            .message("mirror")
            .arg("arg_method", "GET")
            .arg("arg_hdrs", good_hdrs.clone())
            .build()
            .unwrap(),
        // Wrong type for the method.
        Notify::builder()
            .message("mirror")
            .arg("arg_method", 7i64)
            .arg("arg_path", "/")
            .arg("arg_hdrs", good_hdrs.clone())
            .build()
            .unwrap(),
        // Bad method token.
        Notify::builder()
            .message("mirror")
            .arg("arg_method", "G E T")
            .arg("arg_path", "/")
            .arg("arg_hdrs", good_hdrs.clone())
            .build()
            .unwrap(),
        // A good one.
        Notify::builder()
            .message("mirror")
            .arg("arg_method", "GET")
            .arg("arg_path", "/ok")
            .arg("arg_ver", "1.1")
            .arg("arg_hdrs", good_hdrs)
            .arg("arg_body", Bytes::new())
            .build()
            .unwrap(),
    ];
    let n = cases.len() as u64;
    for (i, notify) in cases.into_iter().enumerate() {
        client.notify(i as u64 + 1, 1, notify).await.unwrap();
    }
    for _ in 0..n {
        let f = tokio::time::timeout(Duration::from_secs(5), client.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(f.body, FrameBody::Ack(_)), "{f:?}");
    }
    let got = target.wait_for(1).await;
    assert_eq!(got[0].path, "/ok");
    for (kind, want) in [
        ("bad_headers", 1.0),
        ("missing_argument", 1.0),
        ("wrong_type", 1.0),
        ("bad_method", 1.0),
    ] {
        assert_eq!(
            scrape(
                metrics,
                &format!("spop_mirror_bad_messages_total{{kind=\"{kind}\"}}")
            )
            .await,
            want,
            "{kind}"
        );
    }
    assert_eq!(
        scrape(metrics, "spop_mirror_requests_received_total").await,
        n as f64
    );
}

/// 20 000 NOTIFY frames with 12 KB bodies (240 MB) towards a target that
/// never answers in time: the queue fills, the rest is dropped and counted,
/// and the process stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_a_stuck_target() {
    let target = Target::start(Duration::from_secs(30), 200).await;
    let (p, spop, metrics) = start(&[
        "--target",
        &target.url(),
        "--queue-size",
        "1000",
        "--max-concurrency",
        "8",
    ]);
    let pid = p.0.id();
    let before = rss_kib(pid);
    let notify = captured("mirror-06-notify.bin");
    let mut client = connect(spop).await;
    let total = 20_000u64;
    flood(&mut client, 0, total, None, |_| notify.clone()).await;
    let after = rss_kib(pid);
    let dropped = scrape(
        metrics,
        &format!(
            "spop_mirror_target_dropped_total{{target=\"{}/\",reason=\"queue_full\"}}",
            target.url()
        ),
    )
    .await;
    let depth = scrape(
        metrics,
        &format!("spop_mirror_queue_depth{{target=\"{}/\"}}", target.url()),
    )
    .await;
    eprintln!("RSS before {before} KiB, after {after} KiB; dropped {dropped}; queue depth {depth}");
    // Queued (1 000), in flight (8), and one the worker holds waiting for a slot.
    assert!(
        dropped >= (total - 1000 - 8 - 1) as f64,
        "dropped {dropped}"
    );
    assert!(depth <= 1000.0);
    // 1 000 queued requests of ~12 KB each, copied out of their frames.
    assert!(
        after < before + 100 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_queue_and_exits_zero() {
    let target = Target::start(Duration::from_millis(200), 200).await;
    let (mut p, spop, _metrics) = start(&[
        "--target",
        &target.url(),
        "--max-concurrency",
        "2",
        "--drain-timeout",
        "10s",
    ]);
    let notify = captured("mirror-03-notify.bin");
    let mut client = connect(spop).await;
    for i in 1..=10 {
        client.notify(i, 1, notify.clone()).await.unwrap();
        let f = client.recv().await.unwrap().unwrap();
        assert!(matches!(f.body, FrameBody::Ack(_)));
    }
    // 10 requests, 2 at a time, 200 ms each: about a second of work queued.
    assert!(target.count() < 10);
    let kill = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // HAProxy's connection is told goodbye...
    let f = tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let FrameBody::AgentDisconnect(d) = f.body else {
        panic!("{f:?}")
    };
    assert_eq!(d.status, Status::NORMAL);
    // ...the queue is drained, and the process exits 0.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert_eq!(target.count(), 10, "queued requests were not all sent");
    // No new connection is accepted.
    assert!(std::net::TcpStream::connect(("127.0.0.1", spop)).is_err());
}

/// A `mirror` message with a body of `body` bytes and a few headers.
fn sized(body: usize, i: usize, path: &str) -> Notify {
    let headers = Headers::encode([
        ("host", "shop.test".to_owned()),
        ("user-agent", "load/1.0".to_owned()),
        ("x-request-id", format!("r{i}")),
        ("content-length", body.to_string()),
    ]);
    Notify::builder()
        .message("mirror")
        .arg("arg_method", "POST")
        .arg("arg_path", format!("{path}/{i}?size={body}"))
        .arg("arg_ver", "1.1")
        .arg("arg_hdrs", headers)
        .arg("arg_body", Bytes::from(vec![b'b'; body]))
        .build()
        .unwrap()
}

/// 100 000 requests of mixed sizes (mostly small, one in eight of 48 KB,
/// pipelined on one connection as HAProxy does) towards a stuck target,
/// with a 16 MiB byte budget and room in the queue for all: the budget is
/// what stops them, and resident memory stays within the budget plus a
/// fixed 24 MiB. The large ones are filtered out (`--path-prefix`), as
/// sampling or filters do: requests that were views into the frames they
/// came in kept those frames' read buffers, large neighbours included,
/// alive, far past the budget.
///
/// The 24 MiB: the SPOP connection's read and write buffers (frames up to
/// 64 KiB here, buffers grow to a few of them), the queue's own blocks (an
/// `Arc` per queued request, tokio's channel blocks), `Arc` headers and
/// allocator rounding of each queued request (not counted by the budget),
/// and what glibc's malloc keeps in its arenas after ~600 MB of frames went
/// through it. With requests that were views into their frames the same
/// flood held every frame (or read buffer) of every queued request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_bounds_resident_memory() {
    const BUDGET: u64 = 16 << 20;
    const OVERHEAD_KIB: u64 = 24 * 1024;
    let target = Target::start(Duration::from_secs(60), 200).await;
    let (p, spop, metrics) = start(&[
        "--target",
        &target.url(),
        "--queue-size",
        "200000",
        "--max-concurrency",
        "4",
        "--max-queued-bytes",
        &BUDGET.to_string(),
        "--path-prefix",
        "/keep",
    ]);
    let pid = p.0.id();
    // Mostly small, some large: small requests used to pin the frames (and
    // read buffers) they came in.
    let sizes = [0usize, 200, 200, 1_000, 200, 4_000, 200, 48_000];
    let templates: Vec<Notify> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| sized(s, i, if s > 10_000 { "/skip" } else { "/keep" }))
        .collect();
    let mut client = Client::connect(
        ("127.0.0.1", spop),
        HaproxyHello::new(65_532, Capabilities::PIPELINING),
    )
    .await
    .unwrap();
    // Warm up (the runtime's buffers, the allocator), then measure.
    let mut id = 0u64;
    for t in &templates {
        id += 1;
        client.notify(id, 1, t.clone()).await.unwrap();
        client.recv().await.unwrap().unwrap();
    }
    let before = rss_kib(pid);
    let started = Instant::now();
    flood(
        &mut client,
        id,
        100_000,
        Some(Duration::from_secs(120)),
        |k| templates[(k as usize + 1) % templates.len()].clone(),
    )
    .await;
    let after = rss_kib(pid);
    let queued = scrape(metrics, "spop_mirror_queued_bytes").await;
    let over_budget = scrape(
        metrics,
        &format!(
            "spop_mirror_target_dropped_total{{target=\"{}/\",reason=\"queue_bytes\"}}",
            target.url()
        ),
    )
    .await;
    let depth = scrape(
        metrics,
        &format!("spop_mirror_queue_depth{{target=\"{}/\"}}", target.url()),
    )
    .await;
    eprintln!(
        "RSS before {before} KiB, after {after} KiB (+{} KiB); budget {} KiB, queued {queued} bytes in {depth} requests; {over_budget} dropped over budget; {:?}",
        after.saturating_sub(before),
        BUDGET / 1024,
        started.elapsed()
    );
    assert!(over_budget > 0.0, "the budget was never reached");
    assert!(queued <= BUDGET as f64);
    assert!(
        after <= before + BUDGET / 1024 + OVERHEAD_KIB,
        "RSS grew from {before} to {after} KiB: more than the {} KiB budget plus {OVERHEAD_KIB} KiB",
        BUDGET / 1024
    );
}

/// `--max-frame-size` is what the agent answers HAProxy (the smaller of
/// the two is used); by default 1 MiB - 4, so that a 64 KiB `tune.bufsize`
/// (and larger) carries its bodies whatever the runtime's own default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_frame_size_option_is_what_the_agent_accepts() {
    let target = Target::start(Duration::ZERO, 204).await;
    let url = target.url();
    for (args, proposed, want) in [
        (&[][..], 2 << 20, 1_048_572),
        (&[][..], 65_532, 65_532),
        (&["--max-frame-size", "70000"][..], 2 << 20, 70_000),
    ] {
        let mut all = vec!["--target", url.as_str()];
        all.extend_from_slice(args);
        let (_p, spop, _metrics) = start(&all);
        let mut client = Client::connect(
            ("127.0.0.1", spop),
            HaproxyHello::new(proposed, Capabilities::PIPELINING),
        )
        .await
        .unwrap();
        assert_eq!(client.agent_hello().max_frame_size, want, "{args:?}");
        if want == 65_532 {
            // A 60 000-byte body in one frame is mirrored whole.
            client.notify(1, 1, sized(60_000, 0, "/big")).await.unwrap();
            let f = client.recv().await.unwrap().unwrap();
            assert!(matches!(f.body, FrameBody::Ack(_)), "{f:?}");
            let got = target.wait_for(1).await;
            assert_eq!(got[0].body.len(), 60_000);
        }
    }
}
